//! Clients that keep taking IDs while nodes are killed under them, and
//! the checks of what they were acknowledged: no ID twice, and an ID
//! acknowledged after another finished is larger (real-time order).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use super::{Response, request_following};

/// One acknowledged `POST /` and when it ran.
#[derive(Debug, Clone)]
pub struct Batch {
    pub started: Instant,
    pub finished: Instant,
    pub ids: Vec<u64>,
}

/// The body of an answer that arrived whole: a body cut short by a kill
/// (fewer bytes than its `Content-Length`, or a last line without its
/// newline) is no answer at all, whatever its status line said.
pub fn whole_body(response: &Response) -> Option<&str> {
    if !response.body.ends_with('\n') {
        return None;
    }
    if let Some(length) = response.header("content-length")
        && length.parse::<usize>().ok()? != response.body.len()
    {
        return None;
    }
    Some(&response.body)
}

/// The IDs of a whole 200 answer (see [`whole_body`]): anything less is
/// no acknowledgement.
pub fn acknowledged_ids(response: &Response, count: u64) -> Option<Vec<u64>> {
    if response.status != 200 {
        return None;
    }
    let ids: Vec<u64> = whole_body(response)?
        .lines()
        .map(|l| l.parse().ok())
        .collect::<Option<_>>()?;
    (ids.len() as u64 == count).then_some(ids)
}

/// A sequential client: it cycles over `addrs` and `counts`, one request
/// at a time (each starts after the previous one answered), until
/// stopped, keeping every acknowledged batch.
pub struct Client {
    stop: Arc<AtomicBool>,
    pub batches: Arc<Mutex<Vec<Batch>>>,
    thread: Option<JoinHandle<()>>,
}

impl Client {
    pub fn start(addrs: Vec<String>, counts: &'static [u64]) -> Client {
        let stop = Arc::new(AtomicBool::new(false));
        let batches = Arc::new(Mutex::new(Vec::new()));
        let thread = {
            let (stop, batches) = (Arc::clone(&stop), Arc::clone(&batches));
            thread::spawn(move || {
                let mut turn = 0usize;
                while !stop.load(Ordering::SeqCst) {
                    turn += 1;
                    let count = counts[turn % counts.len()];
                    let addr = &addrs[turn % addrs.len()];
                    let path = format!("/?count={count}");
                    let started = Instant::now();
                    let answer = request_following("POST", addr, &path, b"");
                    match answer.as_ref().and_then(|r| acknowledged_ids(r, count)) {
                        Some(ids) => batches.lock().unwrap().push(Batch {
                            started,
                            finished: Instant::now(),
                            ids,
                        }),
                        None => thread::sleep(Duration::from_millis(10)),
                    }
                }
            })
        };
        Client {
            stop,
            batches,
            thread: Some(thread),
        }
    }

    /// Acknowledged batches so far.
    pub fn acknowledged(&self) -> usize {
        self.batches.lock().unwrap().len()
    }

    /// Stops the client; its batches in the order they were answered.
    pub fn stop(mut self) -> Vec<Batch> {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            thread.join().expect("the client thread");
        }
        self.batches.lock().unwrap().clone()
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// Checks batches from any number of clients: no ID acknowledged twice,
/// and every batch's IDs larger than those of each batch that finished
/// before it started. Returns the number of distinct IDs.
pub fn check_batches(batches: &[Batch]) -> Result<usize, String> {
    let mut all: Vec<u64> = batches.iter().flat_map(|b| b.ids.iter().copied()).collect();
    all.sort_unstable();
    if let Some(w) = all.windows(2).find(|w| w[0] == w[1]) {
        return Err(format!("ID {} acknowledged twice", w[0]));
    }
    let mut by_finish: Vec<&Batch> = batches.iter().collect();
    by_finish.sort_by_key(|b| b.finished);
    // The largest ID of the batches finished so far, after each.
    let mut highest = Vec::with_capacity(by_finish.len());
    let mut high = 0;
    for batch in &by_finish {
        high = high.max(batch.ids.iter().copied().max().unwrap_or(0));
        highest.push(high);
    }
    for batch in batches {
        let before = by_finish.partition_point(|b| b.finished < batch.started);
        let Some(low) = batch.ids.iter().copied().min() else {
            continue;
        };
        if before > 0 && highest[before - 1] >= low {
            return Err(format!(
                "a batch from {low} started after ID {} had been acknowledged",
                highest[before - 1]
            ));
        }
    }
    Ok(all.len())
}

/// Milliseconds in `range` from a small xorshift state (varied kill
/// moments; the seed is printed by the test on failure).
pub fn pause_ms(state: &mut u64, range: std::ops::Range<u64>) -> Duration {
    let mut x = (*state).max(1);
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    *state = x;
    Duration::from_millis(range.start + x % (range.end - range.start))
}
