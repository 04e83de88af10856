//! The application model the simulated nodes run: it records every applied
//! entry as a fingerprint (index, term, kind, hash of the data), and its
//! snapshot is that whole list, so state-machine safety can be checked
//! across snapshot installs. It also runs the ID rule of the real state
//! machine (`Command::ReserveIds`): an entry carrying `IDS_PAYLOAD`
//! reserves the next `IDS_PER_RANGE` IDs, in log order, so every node
//! that applies the same log reserves the same ranges. Owns only the
//! applied list, the reservation counter and their encoding.

use ticketd::raft::{Entry, EntryKind, LogIndex, Term};

/// What the checks need to know about one applied entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Applied {
    pub index: LogIndex,
    pub term: Term,
    pub kind: u8,
    pub hash: u64,
}

const RECORD_BYTES: usize = 8 + 8 + 1 + 8;

impl Applied {
    pub fn of(entry: &Entry) -> Applied {
        Applied {
            index: entry.index,
            term: entry.term,
            kind: entry.kind.to_u8(),
            hash: fnv64(&entry.data),
        }
    }
}

/// FNV-1a: enough to tell two small payloads apart.
pub fn fnv64(data: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &byte in data {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// The payload of an ID reservation (the application's other payloads are
/// 8-byte counters, so it cannot be mistaken for one).
pub const IDS_PAYLOAD: &[u8] = b"ids";
/// IDs reserved by one reservation entry.
pub const IDS_PER_RANGE: u64 = 8;

fn is_reservation(applied: &Applied) -> bool {
    applied.kind == EntryKind::Normal.to_u8() && applied.hash == fnv64(IDS_PAYLOAD)
}

#[derive(Clone, Debug, Default)]
pub struct App {
    /// `applied[i].index == i + 1`: the whole history from index 1.
    pub applied: Vec<Applied>,
    /// IDs reserved so far: the next range starts at `reserved + 1`.
    pub reserved: u64,
    /// The range the last applied entry reserved, if it was a reservation.
    pub last_range: Option<(u64, u64)>,
}

impl App {
    pub fn last_index(&self) -> LogIndex {
        self.applied.len() as u64
    }

    /// Applies the next entry; the core must hand them over in order and
    /// without gaps.
    pub fn apply(&mut self, entry: &Entry) -> Result<Applied, String> {
        if entry.index != self.last_index() + 1 {
            return Err(format!(
                "committed entry {} handed over after applied index {}",
                entry.index,
                self.last_index()
            ));
        }
        let applied = Applied::of(entry);
        self.applied.push(applied);
        self.last_range = None;
        if is_reservation(&applied) {
            let first = self.reserved + 1;
            self.reserved += IDS_PER_RANGE;
            self.last_range = Some((first, self.reserved));
        }
        Ok(applied)
    }

    /// The snapshot data of the state at `index`.
    pub fn encode_up_to(&self, index: LogIndex) -> Vec<u8> {
        let count = (index as usize).min(self.applied.len());
        let mut out = Vec::with_capacity(count * RECORD_BYTES);
        for a in &self.applied[..count] {
            out.extend_from_slice(&a.index.to_be_bytes());
            out.extend_from_slice(&a.term.to_be_bytes());
            out.push(a.kind);
            out.extend_from_slice(&a.hash.to_be_bytes());
        }
        out
    }

    pub fn decode(data: &[u8]) -> Result<App, String> {
        if !data.len().is_multiple_of(RECORD_BYTES) {
            return Err(format!(
                "snapshot data of {} bytes is not a list",
                data.len()
            ));
        }
        let mut applied = Vec::with_capacity(data.len() / RECORD_BYTES);
        for chunk in data.chunks_exact(RECORD_BYTES) {
            let word = |at: usize| {
                let mut b = [0u8; 8];
                b.copy_from_slice(&chunk[at..at + 8]);
                u64::from_be_bytes(b)
            };
            let a = Applied {
                index: word(0),
                term: word(8),
                kind: chunk[16],
                hash: word(17),
            };
            if a.index != applied.len() as u64 + 1 {
                return Err(format!("snapshot list has index {} out of order", a.index));
            }
            applied.push(a);
        }
        let reserved = applied.iter().filter(|a| is_reservation(a)).count() as u64 * IDS_PER_RANGE;
        Ok(App {
            applied,
            reserved,
            last_range: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn app_snapshot_round_trips() {
        let mut app = App::default();
        for index in 1..=5 {
            let entry = Entry {
                term: 1,
                index,
                kind: EntryKind::Normal,
                data: vec![index as u8],
            };
            app.apply(&entry).unwrap();
        }
        let back = App::decode(&app.encode_up_to(3)).unwrap();
        assert_eq!(back.applied, app.applied[..3].to_vec());
        assert!(App::decode(&[1, 2, 3]).is_err());
    }
}
