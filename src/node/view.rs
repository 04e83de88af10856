//! Lease reads: the node thread only clones the applied state (cheap:
//! its maps are copy-on-write) and hands the copy over; the caller
//! renders it (dumps, lookups) on its own thread, so a large dump never
//! holds up heartbeats, proposals or IDs.

use super::{NodeError, Reply};
use crate::raft::{LogIndex, Term};
use crate::ticket::State;

/// What a backup is made of: a copy of the applied state and where in
/// the log it stands (`GET /api/v1/backup` encodes it off the node
/// thread).
#[derive(Clone, Debug)]
pub struct BackupView {
    pub state: State,
    pub cluster_id: u64,
    /// The last log index applied to `state`.
    pub applied: LogIndex,
    /// The leader's term when it answered.
    pub term: Term,
}

/// Answers a view request on the node thread: a clone of `state` if this
/// node may serve reads, else why not. Nothing else is done here.
pub(super) fn answer(serving: Result<(), NodeError>, state: &State, reply: Reply<State>) {
    let _ = reply.send(serving.map(|()| state.clone()));
}

/// Answers a backup request on the node thread: like [`answer`], with
/// the log position of the copy.
pub(super) fn answer_backup(
    serving: Result<(), NodeError>,
    state: &State,
    position: (u64, LogIndex, Term),
    reply: Reply<BackupView>,
) {
    let (cluster_id, applied, term) = position;
    let _ = reply.send(serving.map(|()| BackupView {
        state: state.clone(),
        cluster_id,
        applied,
        term,
    }));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::oneshot;
    use crate::ticket::Command;

    #[test]
    fn the_view_is_a_consistent_copy_the_node_can_keep_changing() {
        let mut state = State::new();
        for _ in 0..3 {
            let _ = state.apply(&Command::ReserveIds { count: 5 });
        }
        let before = state.clone();
        let (reply, answer_rx) = oneshot::channel();
        answer(Ok(()), &state, reply);
        let view = answer_rx.recv_timeout(std::time::Duration::from_secs(5));
        let Some(Ok(view)) = view else {
            panic!("no view sent");
        };
        // The node keeps applying after handing the view over...
        let _ = state.apply(&Command::ReserveIds { count: 5 });
        // ...and the view still shows the state as it was.
        assert_eq!(view, before);
        assert_ne!(view.high(), state.high());
    }

    #[test]
    fn a_node_that_may_not_serve_sends_the_reason() {
        let (reply, answer_rx) = oneshot::channel();
        answer(Err(NodeError::NoLeader), &State::new(), reply);
        let got = answer_rx.recv_timeout(std::time::Duration::from_secs(5));
        assert!(matches!(got, Some(Err(NodeError::NoLeader))));
    }
}
