//! Test helpers: a small seeded PRNG and a random command generator.
//! Test-only; owns nothing the service uses.

use super::{Command, SessionId, State};

/// SplitMix64: tiny, seedable, good enough to drive tests reproducibly.
pub struct Prng(u64);

impl Prng {
    pub fn new(seed: u64) -> Prng {
        Prng(seed)
    }

    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform-ish in `0..bound` (`bound` > 0).
    pub fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound.max(1)
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len() as u64) as usize]
    }
}

/// A random command over a small pool of names, mostly for live sessions
/// of `state`, so that commands collide on the same resources and sessions.
pub fn random_command(prng: &mut Prng, state: &State) -> Command {
    let high = state.high();
    let live: Vec<SessionId> = state.sessions().map(|(id, _)| id).collect();
    let session = match live.len() {
        0 => 1 + prng.below(high + 1),
        n if prng.below(8) > 0 => live[prng.below(n as u64) as usize],
        _ => 1 + prng.below(high + 1),
    };
    let resource = prng.pick(&["r1", "r2", "l1", "l2", "ü<&>"]).to_owned();
    let name = prng.pick(&["a", "b", "c"]).to_owned();
    match prng.below(12) {
        0 => Command::ReserveIds {
            count: prng.below(3),
        },
        1 | 2 => Command::OpenSession {
            name: prng.pick(&["w", "x\"y", ""]).to_owned(),
            src: "127.0.0.1:1".to_owned(),
            ttl_ms: prng.below(10_000),
        },
        3 => Command::CloseSession { id: session },
        4 => Command::ExpireSessions {
            ids: (0..prng.below(3))
                .map(|_| 1 + prng.below(high + 1))
                .collect(),
        },
        5 | 6 => {
            let data = (0..prng.below(5)).map(|_| prng.next() as u8).collect();
            Command::IssueTicket {
                session,
                resource,
                name,
                data,
            }
        }
        7 => Command::RevokeTicket {
            session,
            resource,
            name,
        },
        8 => Command::Claim { session, resource },
        9 => Command::Release {
            session,
            resource,
            name,
        },
        10 => Command::Lock { session, resource },
        _ => Command::Unlock { session, resource },
    }
}
