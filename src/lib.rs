//! ticketd: a replicated service for unique 64-bit IDs, sessions, tickets
//! and locks.

pub mod cli;
pub mod crc32;
pub mod ids;
pub mod raft;
pub mod store;
