//! `ticketd restore`: a new one-node cluster's data directory from a
//! checked backup. The state keeps its sessions, tickets and locks; its
//! ID counter is raised so that the first ID served is at least
//! `max(--next-id, the backup's high-water mark + 1)`.
//!
//! The directory is written through the store's public API only: an
//! empty bootstrap, then one batch that installs the state as a snapshot
//! at index 1 — as a follower installs a leader's snapshot. At index 1,
//! not 0, so that a node joining later is sent the snapshot (a log that
//! starts at 1 could not give it the state).

use log::info;

use super::NodeConfig;
use super::boot::{BootError, first_identity};
use crate::backup::Backup;
use crate::raft::{HardState, Snapshot, SnapshotMeta};
use crate::store::{AppRecord, Store, Write};
use crate::ticket::State;

/// The log position the restored state is installed at.
const RESTORED_INDEX: u64 = 1;
const RESTORED_TERM: u64 = 1;

/// What a restore made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Restored {
    pub cluster_id: u64,
    pub node_id: u64,
    /// The smallest ID the new cluster may serve.
    pub ids_next: u64,
}

/// The first ID a restored cluster may serve: above the backup's
/// high-water mark and at least `next_id`.
///
/// # Errors
/// When the counter has no ID left.
pub fn first_id(backup_high: u64, next_id: u64) -> Result<u64, BootError> {
    backup_high
        .checked_add(1)
        .map(|after| after.max(next_id))
        .ok_or_else(|| BootError("the backup's ID counter is exhausted".into()))
}

/// Writes a new one-node cluster into `config.data_dir` (which must hold
/// no node) from `backup`, whose decoded state is `state`.
/// `config.bootstrap` names this node's id (`NewCluster`).
///
/// # Errors
/// `BootError` when the directory holds a node, cannot be written, or
/// the counter is exhausted.
pub fn restore(
    config: &NodeConfig,
    backup: &Backup,
    mut state: State,
    next_id: u64,
) -> Result<Restored, BootError> {
    let ids_next = first_id(backup.ids_high, next_id)?;
    // ids_next >= 1, so this cannot underflow.
    state.raise_high(ids_next - 1);
    let shown = config.data_dir.display();
    let mut store = Store::open(&config.data_dir, config.db_size_mb)
        .map_err(|e| BootError(format!("cannot open data directory {shown}: {e}")))?;
    if let Some(loaded) = store
        .load()
        .map_err(|e| BootError(format!("{shown}: {e}")))?
    {
        return Err(BootError(format!(
            "data directory {shown} holds node {} of cluster {:016x}; restore only into an empty one (`ticketd drop` it first, or give another --path)",
            loaded.identity.node_id, loaded.identity.cluster_id
        )));
    }
    let (identity, membership) = first_identity(config)?;
    let empty = Snapshot {
        meta: SnapshotMeta {
            index: 0,
            term: 0,
            membership: membership.clone(),
        },
        data: Vec::new(),
    };
    store
        .bootstrap(identity, &empty)
        .map_err(|e| BootError(format!("cannot initialise {shown}: {e}")))?;
    let snapshot = Snapshot {
        meta: SnapshotMeta {
            index: RESTORED_INDEX,
            term: RESTORED_TERM,
            membership,
        },
        data: state.encode_snapshot(),
    };
    let hard_state = HardState {
        term: RESTORED_TERM,
        vote: 0,
        commit: RESTORED_INDEX,
    };
    store
        .persist(&Write {
            snapshot: Some(&snapshot),
            entries: &[],
            hard_state: Some(&hard_state),
            app: Some(AppRecord {
                high: state.high(),
                applied: RESTORED_INDEX,
            }),
        })
        .map_err(|e| BootError(format!("cannot write the restored state to {shown}: {e}")))?;
    info!(
        "restored the backup of cluster {:016x} at index {} ({} sessions) into {shown} as node {} of new cluster {:016x}; IDs start at {ids_next}",
        backup.cluster_id,
        backup.applied_index,
        state.session_count(),
        identity.node_id,
        identity.cluster_id
    );
    Ok(Restored {
        cluster_id: identity.cluster_id,
        node_id: identity.node_id,
        ids_next,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_id_is_above_the_backup_and_at_least_next_id() {
        assert_eq!(first_id(100, 0).ok(), Some(101));
        assert_eq!(first_id(100, 50).ok(), Some(101));
        assert_eq!(first_id(100, 5000).ok(), Some(5000));
        assert_eq!(first_id(0, 1).ok(), Some(1));
        assert!(first_id(u64::MAX, 1).is_err());
    }
}
