//! Lock and claim requests parked with `?wait=`: kept per resource on
//! the leader, woken when an applied command may have freed the
//! resource (nothing polls), answered "not granted" when their wait
//! runs out.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Instant;

use super::{NodeError, Reply};
use crate::ticket::{Command, Outcome, State};

/// One parked request.
pub struct Waiter {
    pub command: Command,
    pub reply: Reply<Outcome>,
    pub deadline: Instant,
}

#[derive(Default)]
pub struct Waiters {
    queues: BTreeMap<String, VecDeque<Waiter>>,
    /// Resources that may have been freed since the last look.
    dirty: BTreeSet<String>,
    all_dirty: bool,
}

/// The resource a lock or claim is for.
pub fn resource_of(command: &Command) -> Option<&str> {
    match command {
        Command::Lock { resource, .. } | Command::Claim { resource, .. } => Some(resource),
        _ => None,
    }
}

fn not_granted(command: &Command) -> Outcome {
    match command {
        Command::Claim { .. } => Outcome::Claim {
            claimed: false,
            ticket: None,
            fencing_token: None,
        },
        _ => Outcome::Lock {
            granted: false,
            fencing_token: None,
        },
    }
}

impl Waiters {
    pub fn park(&mut self, waiter: Waiter) {
        if let Some(resource) = resource_of(&waiter.command) {
            let resource = resource.to_string();
            self.queues.entry(resource).or_default().push_back(waiter);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.queues.is_empty()
    }

    /// How many requests are parked, over every resource.
    pub fn len(&self) -> usize {
        self.queues.values().map(VecDeque::len).sum()
    }

    /// An applied command may have freed something on `resource`.
    pub fn mark(&mut self, resource: &str) {
        if self.queues.contains_key(resource) {
            self.dirty.insert(resource.to_string());
        }
    }

    /// An applied command may have freed anything (a session ended).
    pub fn mark_all(&mut self) {
        self.all_dirty = true;
    }

    /// Answers the waiters whose time is up.
    pub fn expire(&mut self, now: Instant) {
        for queue in self.queues.values_mut() {
            if queue.iter().all(|w| w.deadline > now) {
                continue;
            }
            let (due, keep): (VecDeque<Waiter>, VecDeque<Waiter>) = std::mem::take(queue)
                .into_iter()
                .partition(|w| w.deadline <= now);
            *queue = keep;
            for w in due {
                let outcome = not_granted(&w.command);
                let _ = w.reply.send(Ok(outcome));
            }
        }
        self.queues.retain(|_, q| !q.is_empty());
    }

    /// The first waiter of every marked resource that is free now.
    pub fn take_ready(&mut self, state: &State) -> Vec<Waiter> {
        let marked: Vec<String> = if std::mem::take(&mut self.all_dirty) {
            self.dirty.clear();
            self.queues.keys().cloned().collect()
        } else {
            std::mem::take(&mut self.dirty).into_iter().collect()
        };
        let mut ready = Vec::new();
        for resource in marked {
            let Some(queue) = self.queues.get_mut(&resource) else {
                continue;
            };
            let free = match queue.front().map(|w| &w.command) {
                Some(Command::Lock { .. }) => state.lock_holder(&resource).is_none(),
                Some(Command::Claim { .. }) => state.has_free_ticket(&resource),
                _ => false,
            };
            if free && let Some(waiter) = queue.pop_front() {
                ready.push(waiter);
            }
            if queue.is_empty() {
                self.queues.remove(&resource);
            }
        }
        ready
    }

    /// Leadership is gone: every waiter is told to retry elsewhere.
    pub fn fail_all(&mut self) {
        for (_, queue) in std::mem::take(&mut self.queues) {
            for waiter in queue {
                let _ = waiter.reply.send(Err(NodeError::NoLeader));
            }
        }
        self.dirty.clear();
        self.all_dirty = false;
    }
}
