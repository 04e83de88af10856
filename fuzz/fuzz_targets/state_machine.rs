//! The state machine (src/ticket/apply.rs) and its snapshot
//! (src/ticket/snapshot.rs), driven by sequences of well-formed commands
//! over a few sessions and names, so that the fuzzer explores states
//! (tickets claimed, locks held, sessions closed and expired) rather than
//! decoder rejections.
//!
//! Properties, after every command:
//! - a snapshot of the state decodes, and re-encodes to the same bytes;
//! - a node restored from that snapshot answers every later command
//!   exactly as the node that never stopped (a follower catching up by
//!   snapshot cannot diverge);
//! - every command survives the log codec unchanged;
//! - IDs are unique and increasing: reserved ranges and session ids never
//!   overlap and each starts above the previous high-water mark, which
//!   never goes down;
//! - a granted lock or claim carries either a fresh fencing token, minted
//!   from the same counter as IDs (so above the high-water mark), or,
//!   re-granted to its holder, the token of that same grant.
#![no_main]

use std::collections::BTreeSet;

use libfuzzer_sys::fuzz_target;
use ticketd::ticket::{Command, Outcome, State};

const RESOURCES: [&str; 3] = ["a", "b", "ü/c"];
const NAMES: [&str; 3] = ["t1", "t2", ""];

fuzz_target!(|data: &[u8]| {
    let mut live = State::new();
    // The follower restored from a snapshot taken after a chosen step.
    let mut restored: Option<State> = None;
    let mut sessions: Vec<u64> = Vec::new();
    let mut high = live.high();
    let mut tokens = BTreeSet::new();
    for (step, window) in data.chunks(3).enumerate() {
        let [op, x, y] = match *window {
            [op, x, y] => [op, x, y],
            _ => return,
        };
        let command = command(op, x, y, &sessions);
        assert_eq!(Command::decode(&command.encode()).as_ref(), Ok(&command));
        let outcome = live.apply(&command);
        if let Some(follower) = restored.as_mut() {
            assert_eq!(
                follower.apply(&command),
                outcome,
                "step {step}: {command:?}"
            );
        }
        match &outcome {
            Outcome::Ids { first, last } => {
                assert!(
                    *first > high && first <= last,
                    "ids {first}..{last} after {high}"
                );
                high = *last;
            }
            Outcome::SessionOpened { id } => {
                assert!(*id > high, "session {id} after {high}");
                high = *id;
                sessions.push(*id);
            }
            Outcome::Lock {
                granted: true,
                fencing_token: Some(token),
            }
            | Outcome::Claim {
                claimed: true,
                fencing_token: Some(token),
                ..
            } => {
                if *token > high {
                    high = *token;
                    tokens.insert(*token);
                } else {
                    assert!(
                        tokens.contains(token),
                        "token {token} neither fresh nor a re-grant"
                    );
                }
            }
            Outcome::Lock {
                granted,
                fencing_token,
            } => {
                assert_eq!(*granted, fencing_token.is_some());
            }
            Outcome::Claim {
                claimed,
                fencing_token,
                ..
            } => assert_eq!(*claimed, fencing_token.is_some()),
            Outcome::Done | Outcome::Failed(_) => {}
        }
        assert!(live.high() >= high, "the counter went down");
        high = live.high();
        let snapshot = live.encode_snapshot();
        let decoded = State::decode_snapshot(&snapshot).expect("a state's snapshot decodes");
        assert_eq!(decoded.encode_snapshot(), snapshot);
        if restored.is_none() && op & 0x80 != 0 {
            restored = Some(decoded);
        }
    }
    if let Some(follower) = restored {
        assert_eq!(follower.encode_snapshot(), live.encode_snapshot());
    }
});

/// One command from three bytes: `op` picks the kind (its low 4 bits),
/// `x` and `y` pick a session, resource, name or count.
fn command(op: u8, x: u8, y: u8, sessions: &[u64]) -> Command {
    // Mostly sessions that exist; sometimes one that never did.
    let session = match sessions.len() {
        0 => u64::from(x),
        _ if x % 8 == 7 => u64::from(y) + 1_000_000,
        n => sessions[usize::from(x) % n],
    };
    let resource = RESOURCES[usize::from(y) % RESOURCES.len()].to_string();
    let name = NAMES[usize::from(y / 4) % NAMES.len()].to_string();
    match op & 0x0f {
        0 | 1 => Command::ReserveIds {
            count: u64::from(x) * 16 + u64::from(y % 16),
        },
        2 | 3 => Command::OpenSession {
            name: format!("s{}", x % 4),
            src: "127.0.0.1:1".into(),
            ttl_ms: u64::from(y) * 100,
        },
        4 => Command::CloseSession { id: session },
        5 => Command::ExpireSessions {
            ids: sessions
                .iter()
                .copied()
                .filter(|id| id % 3 == u64::from(y % 3))
                .collect(),
        },
        6 | 7 => Command::IssueTicket {
            session,
            resource,
            name,
            data: vec![y; usize::from(x % 4)],
        },
        8 => Command::RevokeTicket {
            session,
            resource,
            name,
        },
        9 | 10 => Command::Claim { session, resource },
        11 => Command::Release {
            session,
            resource,
            name,
        },
        12 | 13 => Command::Lock { session, resource },
        _ => Command::Unlock { session, resource },
    }
}
