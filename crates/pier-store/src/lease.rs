//! The lease registry: each live lease's time to live, deadline and attached keys.
//!
//! It lives in memory in both backends (see the crate doc). It is only changed under the
//! store's write lock, after the backend committed, so it always matches the stored keys.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use crate::{LeaseId, StoreError, Table};

#[derive(Debug)]
struct Lease {
    ttl: Duration,
    deadline: Instant,
    keys: BTreeSet<(Table, String)>,
}

#[derive(Debug)]
pub(crate) struct Leases {
    next: u64,
    live: HashMap<LeaseId, Lease>,
}

impl Leases {
    /// A registry whose IDs start at `first` (never 0).
    pub(crate) fn new(first: u64) -> Self {
        Leases {
            next: first.max(1),
            live: HashMap::new(),
        }
    }

    pub(crate) fn grant(&mut self, ttl: Duration, now: Instant) -> LeaseId {
        let id = LeaseId(self.next);
        self.next += 1;
        let lease = Lease {
            ttl,
            deadline: now + ttl,
            keys: BTreeSet::new(),
        };
        self.live.insert(id, lease);
        id
    }

    /// Whether `id` exists and has not passed its deadline.
    pub(crate) fn is_live(&self, id: LeaseId, now: Instant) -> bool {
        self.live.get(&id).is_some_and(|l| now < l.deadline)
    }

    /// Restarts the lease's time to live. A lease past its deadline cannot be renewed: it
    /// is as good as expired, even if [`Leases::due`] has not been acted on yet.
    pub(crate) fn keep_alive(&mut self, id: LeaseId, now: Instant) -> Result<Duration, StoreError> {
        match self.live.get_mut(&id) {
            Some(l) if now < l.deadline => {
                l.deadline = now + l.ttl;
                Ok(l.ttl)
            }
            _ => Err(StoreError::LeaseNotFound { lease: id }),
        }
    }

    /// The keys attached to `id`, or None if there is no such lease.
    pub(crate) fn keys(&self, id: LeaseId) -> Option<Vec<(Table, String)>> {
        self.live.get(&id).map(|l| l.keys.iter().cloned().collect())
    }

    pub(crate) fn remove(&mut self, id: LeaseId) {
        self.live.remove(&id);
    }

    /// The leases whose deadline has passed.
    pub(crate) fn due(&self, now: Instant) -> Vec<LeaseId> {
        let mut due: Vec<_> = self
            .live
            .iter()
            .filter(|(_, l)| l.deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        due.sort();
        due
    }

    pub(crate) fn attach(&mut self, id: LeaseId, table: Table, key: &str) {
        if let Some(l) = self.live.get_mut(&id) {
            l.keys.insert((table, key.to_string()));
        }
    }

    pub(crate) fn detach(&mut self, id: LeaseId, table: Table, key: &str) {
        if let Some(l) = self.live.get_mut(&id) {
            l.keys.remove(&(table, key.to_string()));
        }
    }
}
