//! The deterministic simulator for ticketd's Raft core (`ticketd::raft`).
//!
//! Runs the real core on 3 and 5 nodes under a seeded scheduler with a
//! simulated network, disk and clock, and checks the Raft safety properties
//! after every event and liveness once the faults heal. It also holds the
//! paper's classic scenarios, driven by hand. Owns only these tests; it
//! never reaches into the core beyond its public API.
//!
//! - `cargo test --release --test sim` runs `SEEDS_DEFAULT` seeds split over
//!   a few tests (so they use both cores) plus the scenarios.
//! - `SIM_SEEDS=N` runs N seeds, starting at `SIM_SEED_START` (default 0).
//! - `SIM_SEED=S` replays one seed; add `SIM_TRACE=1` for its event log
//!   (`SIM_TRACE_MESSAGES=1` also lists every delivered message).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod app;
mod chaos;
mod checks;
mod classic;
mod cluster;
mod disk;
mod ids;
mod membership;
mod network;
mod node;
mod paper;
mod rng;
mod stall;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::Instant;

use chaos::Outcome;

const SEEDS_DEFAULT: u64 = 600;
/// The seed range is split over this many tests, which cargo runs in
/// parallel.
const SHARDS: u64 = 4;

fn env_u64(name: &str) -> Option<u64> {
    let text = std::env::var(name).ok()?;
    match text.trim().parse() {
        Ok(value) => Some(value),
        Err(_) => panic!("{name}={text:?} is not a number"),
    }
}

/// Runs one seed, turning a core panic into a failure that names the seed.
fn run_one(seed: u64) -> Result<Outcome, String> {
    match catch_unwind(AssertUnwindSafe(|| chaos::run_seed(seed))) {
        Ok(result) => result,
        Err(panic) => {
            let what = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            Err(format!("panicked: {what}"))
        }
    }
}

fn run_shard(shard: u64) {
    let seeds: Vec<u64> = match env_u64("SIM_SEED") {
        Some(seed) if shard == 0 => vec![seed],
        Some(_) => Vec::new(),
        None => {
            let total = env_u64("SIM_SEEDS").unwrap_or(SEEDS_DEFAULT);
            let start = env_u64("SIM_SEED_START").unwrap_or(0);
            (shard..total)
                .step_by(SHARDS as usize)
                .map(|k| start + k)
                .collect()
        }
    };
    let began = Instant::now();
    let mut sum = Outcome::default();
    let mut worst = Outcome::default();
    for &seed in &seeds {
        let outcome = match run_one(seed) {
            Ok(outcome) => outcome,
            Err(why) => panic!(
                "simulation failed, seed {seed}: {why}\nreproduce with: SIM_SEED={seed} cargo test --release --test sim"
            ),
        };
        sum.ticks += outcome.ticks;
        sum.committed += outcome.committed;
        sum.leaders += outcome.leaders;
        sum.snapshots_installed += outcome.snapshots_installed;
        sum.torn_installs += outcome.torn_installs;
        worst.liveness_ticks = worst.liveness_ticks.max(outcome.liveness_ticks);
        worst.catch_up_ticks = worst.catch_up_ticks.max(outcome.catch_up_ticks);
    }
    println!(
        "shard {shard}: {} seeds in {:.2?}: {} ticks, {} entries committed, {} leaders, {} \
         snapshots installed ({} torn by a crash); worst liveness {} ticks, worst catch-up {} ticks",
        seeds.len(),
        began.elapsed(),
        sum.ticks,
        sum.committed,
        sum.leaders,
        sum.snapshots_installed,
        sum.torn_installs,
        worst.liveness_ticks,
        worst.catch_up_ticks
    );
}

#[test]
fn seeds_shard_0() {
    run_shard(0);
}

#[test]
fn seeds_shard_1() {
    run_shard(1);
}

#[test]
fn seeds_shard_2() {
    run_shard(2);
}

#[test]
fn seeds_shard_3() {
    run_shard(3);
}
