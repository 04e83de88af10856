//! ticketd: a replicated service for unique 64-bit IDs, sessions, tickets
//! and locks.

pub mod backup;
pub mod bytes;
pub mod cli;
pub mod clock;
pub mod crc32;
pub mod http;
pub mod ids;
pub mod metrics;
pub mod node;
pub mod notify;
pub mod operate;
pub mod raft;
pub mod secret;
pub mod store;
pub mod ticket;
pub mod transport;
pub mod wire;
