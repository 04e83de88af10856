//! ticketd: a replicated service for unique 64-bit IDs, sessions, tickets
//! and locks.

pub mod crc32;
pub mod raft;
pub mod transport;
pub mod wire;
