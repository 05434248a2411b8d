//! The logic both backends share: checking and applying a transaction, the revision
//! counter, and the watch hub and lease registry it keeps up to date.
//!
//! A backend only provides a write transaction over its data ([`Backend`], [`Tx`]) and its
//! own reads. Every write (transaction, revoke, expiry) and every watch registration runs
//! under [`Core`]'s one lock, so revisions are handed out, committed and published in
//! order.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use crate::lease::Leases;
use crate::watch::Hub;
use crate::{Clock, Event, KeyValue, LeaseId, Op, Revision, StoreError, Table, Txn, Watcher};

/// A backend's view of its data inside one write transaction.
pub(crate) trait Tx {
    fn get(&mut self, table: Table, key: &str) -> Result<Option<KeyValue>, StoreError>;
    /// Writes `kv`; `prev` is what the key held before.
    fn put(
        &mut self,
        table: Table,
        key: &str,
        kv: &KeyValue,
        prev: Option<&KeyValue>,
    ) -> Result<(), StoreError>;
    /// Deletes the key, which held `prev`.
    fn delete(&mut self, table: Table, key: &str, prev: &KeyValue) -> Result<(), StoreError>;
}

/// One applied change: its event, and the lease the key was attached to before.
#[derive(Debug)]
pub(crate) struct Change {
    pub event: Event,
    pub prev_lease: Option<LeaseId>,
}

pub(crate) type Body<'a> = dyn FnMut(&mut dyn Tx) -> Result<Vec<Change>, StoreError> + 'a;

pub(crate) trait Backend {
    /// Runs `body` in one write transaction. If it returns changes, records `revision` as
    /// the store's and commits; if it returns none or fails, writes nothing.
    fn write(
        &self,
        durable: bool,
        revision: Revision,
        body: &mut Body<'_>,
    ) -> Result<Vec<Change>, StoreError>;
}

#[derive(Debug)]
struct State {
    revision: Revision,
    hub: Hub,
    leases: Leases,
}

/// The shared write side of a store.
#[derive(Debug)]
pub(crate) struct Core {
    state: Mutex<State>,
    clock: Arc<dyn Clock>,
}

impl Core {
    /// A store at `revision`, whose watch history starts after it, handing out lease IDs
    /// from `first_lease`.
    pub(crate) fn new(revision: Revision, first_lease: u64, clock: Arc<dyn Clock>) -> Self {
        let state = State {
            revision,
            hub: Hub::new(revision),
            leases: Leases::new(first_lease),
        };
        Core {
            state: Mutex::new(state),
            clock,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic under the lock leaves the state as consistent as the backend's data
        // (both are only changed after a successful commit).
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn revision(&self) -> Revision {
        self.lock().revision
    }

    pub(crate) fn txn(
        &self,
        backend: &dyn Backend,
        txn: &Txn,
        durable: bool,
    ) -> Result<Revision, StoreError> {
        let mut st = self.lock();
        let now = self.clock.now();
        let revision = st.revision + 1;
        let leases = &st.leases;
        let changes = backend.write(durable, revision, &mut |tx| {
            check(tx, txn)?;
            for op in &txn.ops {
                if let Op::PutLeased { lease, .. } = op {
                    if !leases.is_live(*lease, now) {
                        return Err(StoreError::LeaseNotFound { lease: *lease });
                    }
                }
            }
            apply(tx, &txn.ops, revision)
        })?;
        Ok(st.finish(changes, revision))
    }

    pub(crate) fn watch(
        &self,
        table: Table,
        prefix: &str,
        from: Revision,
    ) -> Result<Watcher, StoreError> {
        let mut st = self.lock();
        let current = st.revision;
        st.hub.watch(table, prefix, from, current)
    }

    pub(crate) fn grant(&self, ttl: Duration) -> LeaseId {
        let now = self.clock.now();
        self.lock().leases.grant(ttl, now)
    }

    pub(crate) fn keep_alive(&self, lease: LeaseId) -> Result<Duration, StoreError> {
        let now = self.clock.now();
        self.lock().leases.keep_alive(lease, now)
    }

    pub(crate) fn revoke(
        &self,
        backend: &dyn Backend,
        lease: LeaseId,
    ) -> Result<Revision, StoreError> {
        let mut st = self.lock();
        st.revoke(backend, lease)
    }

    pub(crate) fn expire(&self, backend: &dyn Backend) -> Result<Vec<LeaseId>, StoreError> {
        let mut st = self.lock();
        let due = st.leases.due(self.clock.now());
        for lease in &due {
            st.revoke(backend, *lease)?;
        }
        Ok(due)
    }
}

impl State {
    /// Deletes the lease's keys in one transaction, then forgets the lease.
    fn revoke(&mut self, backend: &dyn Backend, lease: LeaseId) -> Result<Revision, StoreError> {
        let keys = self
            .leases
            .keys(lease)
            .ok_or(StoreError::LeaseNotFound { lease })?;
        let ops: Vec<Op> = keys
            .into_iter()
            .map(|(table, key)| Op::Delete { table, key })
            .collect();
        let revision = self.revision + 1;
        let changes = backend.write(true, revision, &mut |tx| apply(tx, &ops, revision))?;
        self.leases.remove(lease);
        Ok(self.finish(changes, revision))
    }

    /// Takes in a committed transaction: the revision, lease attachments and events.
    fn finish(&mut self, changes: Vec<Change>, revision: Revision) -> Revision {
        if changes.is_empty() {
            return self.revision;
        }
        self.revision = revision;
        let mut events = Vec::with_capacity(changes.len());
        for Change { event, prev_lease } in changes {
            let (table, key) = (event.table(), event.key());
            let lease = match &event {
                Event::Put { kv, .. } => kv.lease,
                Event::Delete { .. } => None,
            };
            if prev_lease != lease {
                if let Some(prev) = prev_lease {
                    self.leases.detach(prev, table, key);
                }
                if let Some(new) = lease {
                    self.leases.attach(new, table, key);
                }
            }
            events.push(event);
        }
        self.hub.publish(events);
        revision
    }
}

/// Fails with [`StoreError::Conflict`] on the first compare that does not hold.
fn check(tx: &mut dyn Tx, txn: &Txn) -> Result<(), StoreError> {
    for c in &txn.compares {
        c.check(tx.get(c.table, &c.key)?.map(|kv| kv.mod_revision))?;
    }
    Ok(())
}

/// Applies `ops` in order at `revision`, returning what changed.
fn apply(tx: &mut dyn Tx, ops: &[Op], revision: Revision) -> Result<Vec<Change>, StoreError> {
    let mut changes = Vec::with_capacity(ops.len());
    for op in ops {
        let (table, key, value, lease) = match op {
            Op::Put { table, key, value } => (*table, key, value, None),
            Op::PutLeased {
                table,
                key,
                value,
                lease,
            } => (*table, key, value, Some(*lease)),
            Op::Delete { table, key } => {
                if let Some(prev) = tx.get(*table, key)? {
                    tx.delete(*table, key, &prev)?;
                    changes.push(Change {
                        event: Event::Delete {
                            table: *table,
                            key: key.clone(),
                            revision,
                        },
                        prev_lease: prev.lease,
                    });
                }
                continue;
            }
        };
        let prev = tx.get(table, key)?;
        let kv = KeyValue {
            value: value.clone(),
            create_revision: prev.as_ref().map_or(revision, |p| p.create_revision),
            mod_revision: revision,
            lease,
        };
        tx.put(table, key, &kv, prev.as_ref())?;
        changes.push(Change {
            event: Event::Put {
                table,
                key: key.clone(),
                kv,
            },
            prev_lease: prev.and_then(|p| p.lease),
        });
    }
    Ok(changes)
}
