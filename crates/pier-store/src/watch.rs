//! Watch: the bounded in-memory history of events and the registered watchers.
//!
//! Both backends publish every committed change here while holding their write lock, and
//! register watchers under the same lock, so a watcher sees its replayed history and then
//! the live events in revision order, with neither gaps nor repeats.

use std::collections::VecDeque;

use tokio::sync::mpsc;

use crate::{KeyValue, Revision, StoreError, Table};

/// How many events each store keeps for watchers that start in the past.
pub const HISTORY_EVENTS: usize = 4096;
/// How many events may wait for a watcher before it is stopped with
/// [`StoreError::WatchLagged`]; larger than the history so a full replay fits.
pub const WATCH_BUFFER: usize = 2 * HISTORY_EVENTS;

/// One change seen by a watcher.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The key was written; `kv.mod_revision` is the event's revision.
    Put {
        table: Table,
        key: String,
        kv: KeyValue,
    },
    /// The key was deleted (explicitly or by its lease ending) at `revision`.
    Delete {
        table: Table,
        key: String,
        revision: Revision,
    },
}

impl Event {
    pub fn revision(&self) -> Revision {
        match self {
            Event::Put { kv, .. } => kv.mod_revision,
            Event::Delete { revision, .. } => *revision,
        }
    }
    pub fn table(&self) -> Table {
        match self {
            Event::Put { table, .. } | Event::Delete { table, .. } => *table,
        }
    }
    pub fn key(&self) -> &str {
        match self {
            Event::Put { key, .. } | Event::Delete { key, .. } => key,
        }
    }
}

/// The receiving end of [`Store::watch`](crate::Store::watch). Events come in revision
/// order; an `Err` is the last item. Dropping it ends the watch.
#[derive(Debug)]
pub struct Watcher {
    rx: mpsc::Receiver<Result<Event, StoreError>>,
}

impl Watcher {
    /// The next event; None once the store is gone or after an error.
    pub async fn recv(&mut self) -> Option<Result<Event, StoreError>> {
        self.rx.recv().await
    }
    /// As [`Watcher::recv`], blocking the thread (not for use inside an async task).
    pub fn blocking_recv(&mut self) -> Option<Result<Event, StoreError>> {
        self.rx.blocking_recv()
    }
    /// The next event if one is waiting. Events are queued before the change that made
    /// them returns, so after a commit its events are already here.
    pub fn try_next(&mut self) -> Option<Result<Event, StoreError>> {
        self.rx.try_recv().ok()
    }
}

#[derive(Debug)]
struct Sink {
    table: Table,
    prefix: String,
    tx: mpsc::Sender<Result<Event, StoreError>>,
}

impl Sink {
    fn wants(&self, e: &Event) -> bool {
        e.table() == self.table && e.key().starts_with(&self.prefix)
    }

    fn send(&self, e: &Event) -> bool {
        queue(&self.tx, e)
    }
}

/// Queues `e` for a watcher; false once the watcher is gone or lagged (its last item is
/// then the error).
pub(crate) fn queue(tx: &mpsc::Sender<Result<Event, StoreError>>, e: &Event) -> bool {
    if tx.capacity() <= 1 {
        let _ = tx.try_send(Err(StoreError::WatchLagged));
        return false;
    }
    tx.try_send(Ok(e.clone())).is_ok()
}

/// A watcher fed by a backend of its own (etcd's watch streams) rather than a [`Hub`]:
/// the sending end (see [`queue`]) and the watcher.
pub(crate) fn feed() -> (mpsc::Sender<Result<Event, StoreError>>, Watcher) {
    let (tx, rx) = mpsc::channel(WATCH_BUFFER);
    (tx, Watcher { rx })
}

/// The event history and the watchers of one store.
#[derive(Debug)]
pub(crate) struct Hub {
    history: VecDeque<Event>,
    /// Every event up to this revision may be gone from `history`.
    compacted: Revision,
    sinks: Vec<Sink>,
}

impl Hub {
    /// A hub whose history starts after `compacted`.
    pub(crate) fn new(compacted: Revision) -> Self {
        Hub {
            history: VecDeque::new(),
            compacted,
            sinks: Vec::new(),
        }
    }

    /// Registers a watcher, replaying the history from `from` (0: after `current`).
    pub(crate) fn watch(
        &mut self,
        table: Table,
        prefix: &str,
        from: Revision,
        current: Revision,
    ) -> Result<Watcher, StoreError> {
        let from = if from == 0 { current + 1 } else { from };
        if from <= self.compacted {
            return Err(StoreError::Compacted {
                requested: from,
                compacted: self.compacted,
            });
        }
        let (tx, rx) = mpsc::channel(WATCH_BUFFER);
        let sink = Sink {
            table,
            prefix: prefix.to_string(),
            tx,
        };
        let missed = self.history.iter().filter(|e| e.revision() >= from);
        for e in missed.filter(|e| sink.wants(e)) {
            if !sink.send(e) {
                return Ok(Watcher { rx });
            }
        }
        self.sinks.push(sink);
        Ok(Watcher { rx })
    }

    /// Sends one transaction's events to the watchers and keeps them in the history.
    pub(crate) fn publish(&mut self, events: Vec<Event>) {
        // Forget dropped watchers even if nothing they watch changes.
        self.sinks.retain(|s| !s.tx.is_closed());
        for e in &events {
            self.sinks.retain(|s| !s.wants(e) || s.send(e));
        }
        self.history.extend(events);
        while self.history.len() > HISTORY_EVENTS {
            // Drop whole revisions only, so a replay never starts halfway through one.
            let gone = self.history.pop_front().map_or(0, |e| e.revision());
            while self.history.front().is_some_and(|e| e.revision() == gone) {
                self.history.pop_front();
            }
            self.compacted = gone;
        }
    }
}
