//! Both ends of the join exchange (see `crate::wire`'s join frames): a
//! member's reader thread that hands a joiner's request to the node and
//! writes its answer, and the joiner's side, which asks a member and
//! follows it to the leader, retrying until admitted, refused for good,
//! or out of time.

use std::io::{Read, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::{debug, info, warn};

use super::outbound::dial;
use super::{ConnError, DeadlineReader, IO_TIMEOUT, Shared, authenticate, lock};
use crate::raft::NodeId;
use crate::secret::Secret;
use crate::wire::{
    Handshake, JoinAnswer, JoinRequest, LeaveRequest, MemberRequest, Role, SealedReader,
    SealedWriter, WireError, read_join_answer, read_member_request, write_handshake,
    write_join_answer, write_join_request, write_leave_request,
};

/// What a member asks its node to decide about a joiner (or a member
/// that leaves); it blocks (bounded by the node) until the answer is
/// known.
pub type Admit = Arc<dyn Fn(MemberRequest) -> JoinAnswer + Send + Sync>;

/// Leaders followed in a row before the joiner goes back to the member
/// it was given (a stale leader can point at another stale one).
const REDIRECTS_MAX: u32 = 4;
/// Between two attempts after an unreachable member or a refusal that
/// may pass.
const RETRY_PAUSE: Duration = Duration::from_millis(500);
/// The longest a joiner waits for one answer: the member waits for the
/// entry to commit, a few seconds at most.
const ANSWER_WAIT_MAX: Duration = Duration::from_secs(15);

/// A member's reader thread, after a handshake with node id 0: one
/// request, one answer, then the connection closes.
pub(super) fn serve_joiner(
    shared: &Shared,
    reader: &mut impl Read,
    writer: &mut impl Write,
    peer: &Handshake,
) -> Result<(), ConnError> {
    if peer.cluster_id != 0 {
        return Err(ConnError::Refused(format!(
            "a joiner (node id 0) names cluster {:#x}",
            peer.cluster_id
        )));
    }
    // `reader` is still under the handshake's deadline, and (sealed) may
    // hold the request in the handshake's record.
    let request = read_member_request(reader)?;
    let admit = lock(&shared.admit).clone();
    let answer = match admit {
        Some(admit) => admit(request.clone()),
        None => JoinAnswer::Refused {
            retry: true,
            message: "this node is not ready to admit members".into(),
        },
    };
    match &request {
        MemberRequest::Join(join) => info!(
            "join request from {} (http {}, wanted id {}): {answer:?}",
            join.peer_addr, join.http_addr, join.wanted_id
        ),
        MemberRequest::Leave(leave) => {
            info!("leave request from node {}: {answer:?}", leave.node_id);
        }
    }
    write_join_answer(writer, &answer)?;
    writer.flush()?;
    Ok(())
}

/// What the joiner was given.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Admission {
    pub cluster_id: u64,
    pub node_id: NodeId,
}

/// Asks the member at `member_addr` to admit us, following it to its
/// leader, until `deadline`. A retry sends the same request (same
/// incarnation), so a leader that admitted us but whose answer was lost
/// answers the same id again.
///
/// # Errors
/// The member's reason when it refuses for good; the last failure when
/// the deadline passes first.
pub fn request_admission(
    member_addr: &str,
    request: &JoinRequest,
    deadline: Instant,
    secret: Option<&Secret>,
) -> Result<Admission, String> {
    let mut target = member_addr.to_string();
    let mut redirects = 0;
    let mut last_failure;
    let mut warned: Option<String> = None;
    let join = MemberRequest::Join(request.clone());
    loop {
        match ask_with(&target, &join, deadline, secret) {
            Ok(JoinAnswer::Admitted {
                cluster_id,
                node_id,
            }) => {
                return Ok(Admission {
                    cluster_id,
                    node_id,
                });
            }
            Ok(JoinAnswer::AskLeader { peer_addr }) if redirects < REDIRECTS_MAX => {
                info!("{target} is not the leader; asking the leader at {peer_addr}");
                redirects += 1;
                target = peer_addr;
                continue;
            }
            Ok(JoinAnswer::AskLeader { peer_addr }) => {
                last_failure = format!("{target} sends us to {peer_addr}, and round we go");
            }
            Ok(JoinAnswer::Refused {
                retry: false,
                message,
            }) => return Err(format!("{target} refused to admit this node: {message}")),
            Ok(JoinAnswer::Refused {
                retry: true,
                message,
            }) => last_failure = format!("{target} cannot admit this node now: {message}"),
            Ok(JoinAnswer::Leaving) => {
                last_failure = format!("{target} answers a join as if it were a leave");
            }
            // A secret that does not match will not match on a retry.
            Err(why @ ConnError::Wire(WireError::BadProof(_))) => {
                return Err(format!("cannot ask {target}: {why}"));
            }
            Err(why) => last_failure = format!("cannot ask {target}: {why}"),
        }
        // Once at warn, then at debug while it fails the same way.
        if warned.as_deref() == Some(last_failure.as_str()) {
            debug!("{last_failure}; retrying");
        } else {
            warn!("{last_failure}; retrying");
            warned = Some(last_failure.clone());
        }
        // Back to the member we were given: the leader may have moved.
        target = member_addr.to_string();
        redirects = 0;
        if Instant::now() + RETRY_PAUSE >= deadline {
            return Err(last_failure);
        }
        std::thread::sleep(RETRY_PAUSE);
    }
}

/// Asks the leader at `leader_addr`, once, to remove us; the node learns
/// the outcome through the log.
///
/// # Errors
/// Why the request did not get an answer.
pub fn request_leave(
    leader_addr: &str,
    request: LeaveRequest,
    secret: Option<&Secret>,
) -> Result<JoinAnswer, String> {
    let deadline = Instant::now() + IO_TIMEOUT;
    ask_with(
        leader_addr,
        &MemberRequest::Leave(request),
        deadline,
        secret,
    )
    .map_err(|e| e.to_string())
}

/// One connection: handshake as a joiner (or leaver), the request, the
/// answer.
fn ask_with(
    addr: &str,
    request: &MemberRequest,
    deadline: Instant,
    secret: Option<&Secret>,
) -> Result<JoinAnswer, ConnError> {
    let stream = dial(addr)?;
    stream.set_nodelay(true)?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    // A joiner proves the peer secret like any member before it says
    // anything else; the request and answer then travel sealed.
    let session = authenticate(
        secret,
        &mut DeadlineReader::new(&stream, IO_TIMEOUT),
        Role::Dialer,
    )?;
    let mut writer = SealedWriter::new(&stream, session.clone());
    let hello = match request {
        MemberRequest::Join(join) => Handshake {
            cluster_id: 0,
            node_id: 0,
            peer_addr: join.peer_addr.clone(),
            http_addr: join.http_addr.clone(),
            incarnation: join.incarnation,
        },
        MemberRequest::Leave(leave) => Handshake {
            cluster_id: 0,
            node_id: 0,
            peer_addr: String::new(),
            http_addr: String::new(),
            incarnation: leave.incarnation,
        },
    };
    write_handshake(&mut writer, &hello)?;
    match request {
        MemberRequest::Join(join) => write_join_request(&mut writer, join)?,
        MemberRequest::Leave(leave) => write_leave_request(&mut writer, leave)?,
    }
    writer.flush()?;
    let wait = deadline
        .saturating_duration_since(Instant::now())
        .clamp(Duration::from_millis(100), ANSWER_WAIT_MAX);
    let mut reader = SealedReader::new(DeadlineReader::new(&stream, wait), session);
    match read_join_answer(&mut reader) {
        Ok(answer) => Ok(answer),
        Err(WireError::Refused(refusal)) => Err(ConnError::Refused(refusal.message)),
        Err(WireError::Closed) => Err(ConnError::Refused(
            "the member closed the connection (a peer secret or cluster check failed, or it is of an older build)".into(),
        )),
        Err(e) => Err(e.into()),
    }
}
