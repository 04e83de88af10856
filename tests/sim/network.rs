//! The simulated network: messages in flight with per-message delays
//! (which also reorders them), loss, duplication, rare long delays, and
//! partitions given as blocked directed links. Owns only messages between
//! `send` and delivery; knows nothing about nodes or Raft rules.

use std::collections::{BTreeMap, BTreeSet};

use ticketd::raft::{Message, NodeId};

use crate::rng::Rng;

/// How badly the network behaves; drawn once per seed.
#[derive(Clone, Copy, Debug, Default)]
pub struct NetParams {
    /// Every message takes `1..=delay_ticks_max` ticks.
    pub delay_ticks_max: u64,
    pub loss_per_mille: u64,
    pub duplicate_per_mille: u64,
    /// A few messages sit in a queue for up to `long_delay_ticks_max`
    /// instead (a congested TCP connection), far beyond the usual delay.
    pub long_delay_per_mille: u64,
    pub long_delay_ticks_max: u64,
}

pub struct Network {
    pub params: NetParams,
    /// Directed links `(from, to)` that currently drop everything. A
    /// message is checked when it would be delivered, so a partition also
    /// swallows what was already on the wire.
    pub blocked: BTreeSet<(NodeId, NodeId)>,
    /// Keyed by (delivery tick, send order): the order is total, so a
    /// run never depends on anything but the seed.
    in_flight: BTreeMap<(u64, u64), Message>,
    sent_total: u64,
    rng: Rng,
}

impl Network {
    pub fn new(params: NetParams, rng: Rng) -> Network {
        Network {
            params,
            blocked: BTreeSet::new(),
            in_flight: BTreeMap::new(),
            sent_total: 0,
            rng,
        }
    }

    pub fn send(&mut self, now: u64, message: Message) {
        if self.rng.chance(self.params.loss_per_mille) {
            return;
        }
        if self.rng.chance(self.params.duplicate_per_mille) {
            let copy = message.clone();
            self.enqueue(now, copy);
        }
        self.enqueue(now, message);
    }

    fn enqueue(&mut self, now: u64, message: Message) {
        let delay = if self.rng.chance(self.params.long_delay_per_mille) {
            self.rng.range(1, self.params.long_delay_ticks_max.max(1))
        } else {
            self.rng.range(1, self.params.delay_ticks_max.max(1))
        };
        self.sent_total += 1;
        self.in_flight
            .insert((now + delay, self.sent_total), message);
    }

    /// Everything due at `now`, in random order, minus what a partition
    /// eats.
    pub fn take_due(&mut self, now: u64) -> Vec<Message> {
        let mut due = Vec::new();
        while let Some(entry) = self.in_flight.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let message = entry.remove();
            if !self.blocked.contains(&(message.from, message.to)) {
                due.push(message);
            }
        }
        self.rng.shuffle(&mut due);
        due
    }

    /// Every message in flight, delivered in send order with no delay: for
    /// hand-driven scenarios.
    pub fn take_all(&mut self) -> Vec<Message> {
        let mut all: Vec<((u64, u64), Message)> =
            std::mem::take(&mut self.in_flight).into_iter().collect();
        all.sort_by_key(|(key, _)| key.1);
        all.into_iter()
            .map(|(_, m)| m)
            .filter(|m| !self.blocked.contains(&(m.from, m.to)))
            .collect()
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// Cuts both directions between the two groups.
    pub fn partition(&mut self, side_a: &[NodeId], side_b: &[NodeId]) {
        for &a in side_a {
            for &b in side_b {
                self.blocked.insert((a, b));
                self.blocked.insert((b, a));
            }
        }
    }

    /// Cuts `from -> to` only.
    pub fn block_one_way(&mut self, from: NodeId, to: NodeId) {
        self.blocked.insert((from, to));
    }

    pub fn heal(&mut self) {
        self.blocked.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ticketd::raft::MessageBody;

    fn message(from: NodeId, to: NodeId) -> Message {
        Message {
            from,
            to,
            term: 1,
            body: MessageBody::TimeoutNow,
        }
    }

    #[test]
    fn delays_stay_in_bounds_and_partitions_swallow_in_flight_messages() {
        let params = NetParams {
            delay_ticks_max: 3,
            ..NetParams::default()
        };
        let mut net = Network::new(params, Rng::new(1));
        for _ in 0..10 {
            net.send(0, message(1, 2));
            net.send(0, message(2, 1));
        }
        net.block_one_way(1, 2);
        let due: usize = (0..=3).map(|now| net.take_due(now).len()).sum();
        assert_eq!(due, 10, "only 2 -> 1 gets through, all within 3 ticks");
        assert_eq!(net.in_flight(), 0);
        net.heal();
        net.partition(&[1], &[2, 3]);
        net.send(0, message(3, 1));
        net.send(0, message(2, 3));
        assert_eq!(net.take_all(), vec![message(2, 3)]);
    }
}
