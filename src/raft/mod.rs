//! The Raft consensus core: a pure, deterministic state machine.
//!
//! No I/O, no threads, no clock, no global state. Time enters only as
//! [`Raft::tick`] calls; randomness (election timeouts) only from the seed
//! in [`Config`]. The driver feeds the core messages ([`Raft::step`]),
//! ticks and proposals, and drains a [`Ready`]: what to persist, what to
//! send, what to apply. Many `step`s and `propose`s may come between two
//! `Ready`s — that is how one fsync covers a whole batch (group commit).
//!
//! # The ordering contract
//!
//! For each `Ready`, in this order:
//! 1. persist the snapshot, the entries (truncating the log at the first
//!    of them) and the hard state, in one atomic write, fsynced when
//!    `must_sync` (it is false only when nothing but the commit index
//!    changed, which may be lost in a crash without harm: the log it
//!    points into is durable and a leader re-establishes it);
//! 2. only then send the messages — a vote or an acknowledgement must
//!    never leave before the term, vote and entries it speaks for are
//!    on disk;
//! 3. apply the committed entries, in order;
//! 4. call [`Raft::advance`], with no other call in between.
//!
//! The leader counts its own log towards a commit only up to what
//! `advance` has confirmed is on disk (Raft thesis §10.2.1 in reverse:
//! it may send before it syncs, never count before it syncs).
//!
//! # Time
//!
//! The core counts ticks; the driver must keep that count honest:
//! 1. **The clock never lags a message.** Before a message is stepped,
//!    every tick whose time had come when it arrived has run. A node
//!    whose thread stalled (a long fsync, a blocked disk) catches up its
//!    missed ticks *first* and only then steps what queued up meanwhile.
//!    The other order records a leader's contact at the pre-stall tick:
//!    the follower acknowledges (renewing the leader's lease from a
//!    recent tick), then runs the stall's ticks and stops refusing votes
//!    up to a stall's length before that lease ends — two leaders.
//!    A clock that runs *late* by up to a tick (granularity) is absorbed
//!    by `lease_margin_ticks`; one that skips ticks only runs slow.
//! 2. **The leader measures its lease in real time**, from when the tick
//!    it counts from ran ([`TickTimes`]), not in its own ticks, which
//!    stop while its thread stalls. Serving under the lease compares that
//!    deadline with a clock that keeps running through a stall and a
//!    suspension of the host (the driver uses `CLOCK_BOOTTIME`:
//!    `CLOCK_MONOTONIC` stops while the host sleeps, so a leader would
//!    wake up trusting a lease the others no longer honour).
//! 3. Followers may measure their side (ticks of vote refusal) on any
//!    clock that does not run fast: a suspended or stalled follower only
//!    refuses for longer.
//! 4. Clocks drift between nodes by less than `lease_margin_ticks` over
//!    an election timeout (the simulator runs drift up to a third of it).
//!
//! # Asynchronous leader writes
//!
//! A durable leader's batch ([`Ready::may_write_async`]: no term, vote or
//! snapshot in it, only its own new entries and the commit index) need
//! not hold the node up while it is written: the driver sends the
//! AppendEntries, applies the committed entries, queues the write and
//! calls [`Raft::advance_async`] at once, then keeps stepping messages
//! and handing out `Ready`s. When a write is on disk the driver sends that
//! batch's remaining messages and calls [`Raft::persisted`]; only then
//! does the leader count itself for those entries, so a commit still
//! needs a majority of disks. Writes complete in the order handed out. A
//! `Ready` that may not be written asynchronously (a follower's, or one
//! with a new term or vote) waits for every queued write first and then
//! follows the contract above. A failed write rewinds the log to what is
//! on disk ([`Raft::write_failed`]). Committed entries applied before this
//! node's own copy is on disk are on a majority of disks already.
//!
//! # Choices
//!
//! * **The commit index rides on the next append.** A leader whose
//!   commit index moves sends no message for that alone: under load the
//!   next batch's AppendEntries follows within a fraction of a tick and
//!   carries it, and a message of its own (with the follower's answer)
//!   would double the peer traffic per batch. A follower that no append
//!   has told gets a heartbeat at the leader's next tick, so it learns a
//!   commit at most a tick late. Followers only apply what is committed;
//!   nothing a client sees waits for this.
//! * **Pre-vote and check-quorum** (thesis §9.6, §6.2). A node whose
//!   timer fires first asks whether it could win, without changing terms;
//!   a node that heard from a leader within the minimum election timeout
//!   ignores vote and pre-vote requests (unless the request comes from a
//!   leadership transfer its leader announced, see below). A leader that
//!   has not heard from a quorum for an election timeout steps down.
//! * **Announced leadership transfer** (thesis §3.10, hardened). While a
//!   leader transfers to X, every AppendEntries it sends names X
//!   (`transfer_to`); a follower remembers what the leader of its term
//!   said last by the leader's clock (`lease_tick`: an older append
//!   delivered late does not bring back a withdrawn announcement). The leader sends TimeoutNow only once X holds its whole
//!   log *and* a quorum of voters (itself and X among them) has answered
//!   an append sent after the transfer began (the answer echoes a
//!   `lease_tick` later than the start). X's vote request then carries
//!   `force`, which skips the voter's lease check only if the voter's
//!   leader of the term before announced X (or the voter is that leader
//!   and sent X its TimeoutNow); otherwise `force` is ignored and the vote
//!   judged like any other. The announcing quorum is what keeps the
//!   transfer live: without it X could be refused by every voter still
//!   within its lease. A transfer that does not finish within the minimum
//!   election timeout is abandoned (and the leader steps down if its
//!   TimeoutNow had gone out).
//! * **Single-server membership changes** (thesis §4.1) rather than joint
//!   consensus: a cluster of 1, 3 or 5 changes one member at a time, and
//!   new members first join as learners so that adding one never costs
//!   availability while it catches up. A configuration is in force from
//!   the moment it is appended; only one may be uncommitted, and only
//!   after the leader committed an entry of its own term (the 2015 fix to
//!   single-server changes). A removed leader steps down once its removal
//!   is committed; a leader asked to remove itself hands leadership to its
//!   most up-to-date voter first ([`ProposeError::Transferring`]) and the
//!   new leader removes it.
//! * **Node IDs are never reused**: every configuration carries the
//!   highest ID ever assigned (`Membership::max_id`); a new member gets an
//!   ID above it, and an ID at or below it that is not a member is
//!   refused (the old process may still run under it).
//! * **A removed member learns it**: the leader keeps replicating to it
//!   until it holds the removal and has heard that it is committed (or
//!   gives up after four maximal election timeouts), and hears its
//!   answers meanwhile; once the removal is committed, its messages are
//!   dropped everywhere, so its pre-votes disturb nobody.
//! * **A log with nothing beyond the bootstrap vouches only for an empty
//!   one.** Such a log may be a wiped data directory under a member's ID:
//!   its node may have voted for, or acknowledged, entries it no longer
//!   has. Granting votes only to candidates whose log is empty too keeps
//!   a brand-new cluster electable and stops a wiped node from handing a
//!   lagging candidate the majority (which could lose committed entries).
//!   The cost: in a brand-new cluster whose first leader dies before a
//!   second node got any entry, the others wait for it to come back.
//!   Each member also publishes an incarnation through the log, which the
//!   transport checks, so a wiped node is told and stops (`node/`).
//! * **The log lives in memory** from the last snapshot on; the driver's
//!   compaction keeps it short. A driver with a large state may take the
//!   snapshot's meta now ([`Raft::snapshot_meta`]), encode and store the
//!   state elsewhere, and compact later ([`Raft::compact_to`]): the log up
//!   to an applied index never changes, and a snapshot older than one the
//!   leader installed meanwhile is refused. The driver's disk must
//!   store such a snapshot before it stores any snapshot the leader sends
//!   later.
//!
//! # What a message must be
//!
//! [`Raft::step`] drops, without an answer or any change, every message
//! that no correct peer sends, so that one frame from a stranger (or from
//! a removed node) changes nothing:
//! * a term over [`TERM_MAX`] (2^63 − 1; the wire decoder refuses such a
//!   frame too). No term ever wraps: a node at the cap does not campaign,
//!   and [`Raft::new`] refuses a persisted term over it;
//! * a log position from a later term than the message's own (a vote's
//!   `last_term`, an append's `prev_term` or entry terms, a snapshot's
//!   term), entries that do not follow `prev_index` one by one with terms
//!   that never decrease, a snapshot without a membership;
//! * a sender outside the configuration in force (voters and learners,
//!   uncommitted entries included), unless this node has no configuration
//!   yet (a joining node before its first snapshot). One narrow exception
//!   keeps a node with a stale configuration live when a member added
//!   since then leads: AppendEntries and snapshots (never votes or
//!   answers) from a non-member are heard by a node that is no voter of
//!   its own configuration (it never campaigns, so it could learn the
//!   new term from nobody else), and by a voter only in a term it already
//!   holds and from the one leader it knows in it (a stale voter learns
//!   the term from a member refusing its pre-vote). A non-member never
//!   raises a voter's term, and is never voted for;
//! * AppendEntries, snapshots and TimeoutNow of the current term from a
//!   node other than the leader already known in it (a term has one
//!   leader), and a TimeoutNow from a later term (a transfer target has
//!   acknowledged its leader's whole log in the leader's term).
//!
//! A snapshot replaces a follower's log only when it comes from the leader
//! of the follower's term and reaches past its commit index; one at or
//! below the commit index is answered with an acknowledgement of the
//! commit index and replaces nothing. A snapshot naming this node the
//! only voter replaces nothing either: had it been the only voter at that
//! index, it would have written every entry up to it itself. The
//! application state inside a snapshot is opaque here; the driver checks
//! it before a peer's snapshot reaches `step`.
//!
//! None of this authenticates a peer: a stranger that speaks in a
//! member's name within the term bounds is believed until the peer
//! protocol carries a MAC.
//!
//! # The lease
//!
//! [`Raft::lease_valid`] tells a leader that no other leader can exist
//! right now, so it may serve reads and IDs without a round trip.
//! Every AppendEntries carries the leader's clock (`lease_tick`); a
//! follower echoes it back. If a quorum has echoed a tick ≥ `t`, every
//! member of that quorum heard from this leader at or after `t` by the
//! leader's clock. Such a follower refuses every vote and pre-vote until
//! it has not heard from a leader for `election_ticks_min` of its own
//! ticks, so no other candidate can gather a quorum before `t +
//! election_ticks_min`. The lease therefore runs until `t +
//! election_ticks_min − lease_margin_ticks`, the margin absorbing clock
//! drift between nodes. This holds only together with:
//! * check-quorum and vote refusal within the minimum election timeout,
//!   as above;
//! * a restarted node counting its start as contact with a leader (it may
//!   have acknowledged one just before it crashed);
//! * leadership transfer: the `force` flag overrides the refusal, but only
//!   at followers whose leader announced the transfer to that candidate.
//!   A leader holds no lease while a transfer is under way, none for the
//!   rest of its term once TimeoutNow went out, and after abandoning a
//!   transfer whose TimeoutNow never went out its lease counts only from
//!   acknowledgements of appends sent after the abandonment (which no
//!   longer announce it), so every follower counted has forgotten the
//!   announcement;
//! * every node running the same `election_ticks_min` and tick length
//!   (the driver derives both from constants, not from flags);
//! * a new leader's lease starting only once its no-op entry is
//!   committed: by then its log holds every entry any earlier leader
//!   committed, so what it serves is at least as new.

mod core;
mod election;
mod lease;
mod log;
mod membership;
mod progress;
mod replication;
mod rng;
mod types;

#[cfg(test)]
mod tests;

pub use self::core::Raft;
pub use lease::TickTimes;
pub use membership::FRESH_REFUSAL_TIMEOUTS;
pub use types::*;

/// Settings of one core, validated once by [`Config::validate`].
#[derive(Clone, Debug)]
pub struct Config {
    /// This node's id (never 0).
    pub id: NodeId,
    /// Election timeouts are drawn uniformly from `[min, max)` ticks.
    pub election_ticks_min: u64,
    pub election_ticks_max: u64,
    /// A leader sends heartbeats every this many ticks.
    pub heartbeat_ticks: u64,
    /// The lease is `election_ticks_min - lease_margin_ticks` long, to
    /// absorb clock drift between nodes.
    pub lease_margin_ticks: u64,
    /// Caps on one AppendEntries message.
    pub max_append_entries: usize,
    pub max_append_bytes: usize,
    /// Unacknowledged AppendEntries messages per follower.
    pub max_inflight: usize,
    /// Seed of the core's private PRNG (election timeouts).
    pub seed: u64,
}

/// What the driver found on disk (or the bootstrap state for an empty
/// data directory: default hard state, a snapshot at index 0 holding the
/// initial membership, no entries).
#[derive(Clone, Debug, Default)]
pub struct Persisted {
    pub hard_state: HardState,
    pub snapshot: Snapshot,
    /// The entries after `snapshot.meta.index`, contiguous.
    pub entries: Vec<Entry>,
}

/// A batch of work for the driver. Handle it in this order:
/// 1. persist `snapshot` (replacing state and log), then truncate the log
///    at `entries[0].index` and append `entries`, then `hard_state` — all
///    in one durable write, fsynced when `must_sync`;
/// 2. send `messages`;
/// 3. apply `committed`, in order;
/// 4. call [`Raft::advance`].
///
/// Two things may go earlier, to take the disk off the critical path:
/// [`Ready::take_early_messages`] (a leader's AppendEntries, which speak
/// only for entries: Raft thesis §10.2.1 — the leader counts itself
/// towards a commit only once `advance` confirms its own write) may be
/// sent before step 1, and the first [`Ready::committed_durable`] of
/// `committed` are already on disk and may be applied before step 1. If step 1 fails the core hands the same work out again: a
/// driver applying early must then skip what it already applied.
pub struct Ready {
    pub hard_state: Option<HardState>,
    pub must_sync: bool,
    pub snapshot: Option<Snapshot>,
    pub entries: Vec<Entry>,
    pub messages: Vec<Message>,
    pub committed: Vec<Entry>,
    /// This node is a leader whose term and vote are on disk.
    pub leader_durable: bool,
}

impl Ready {
    /// Moves out the messages that may be sent before persisting: a
    /// durable leader's AppendEntries and snapshots.
    pub fn take_early_messages(&mut self) -> Vec<Message> {
        if !self.leader_durable {
            return Vec::new();
        }
        let (early, late) = std::mem::take(&mut self.messages)
            .into_iter()
            .partition(|m| {
                matches!(
                    m.body,
                    MessageBody::Append { .. } | MessageBody::Snapshot { .. }
                )
            });
        self.messages = late;
        early
    }

    /// Whether this batch may be written while the node goes on (see
    /// [`Raft::advance_async`]): a durable leader's, without a snapshot.
    pub fn may_write_async(&self) -> bool {
        self.leader_durable && self.snapshot.is_none()
    }

    /// How many of `committed` are already on disk (and so may be
    /// applied before this `Ready` is persisted). With asynchronous leader
    /// writes still queued, "on disk" means on a majority's: those entries
    /// are committed, which is what applying needs.
    pub fn committed_durable(&self) -> usize {
        if self.snapshot.is_some() {
            return 0;
        }
        match self.entries.first() {
            Some(first) => self.committed.partition_point(|e| e.index < first.index),
            None => self.committed.len(),
        }
    }
}
