//! Host events: what happened to the pool's hosts, read off a watch of the pool's table,
//! so that every member reports every host's events whoever caused them (a join on one
//! member, a cordon on another, a host whose heartbeat lapsed).
//!
//! | change in the store | event |
//! |---|---|
//! | `hosts/<id>` created | `join` |
//! | `hosts/<id>` rewritten into or out of `cordoned` | `cordon`, `uncordon` |
//! | `hosts/<id>` deleted | `remove` |
//! | `heartbeats/<id>` created | `up` |
//! | `heartbeats/<id>` deleted (its lease ended or was revoked) | `down` |

use std::collections::HashMap;

use pier_store::{Event, Store, StoreError, Watcher};

use crate::member::HEARTBEATS;
use crate::scheduler::keys;
use crate::scheduler::{HostRecord, HostState};

/// One thing that happened to a host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostEvent {
    /// The host's ID (its name).
    pub host: String,
    /// `join`, `cordon`, `uncordon`, `remove`, `up` or `down`.
    pub action: &'static str,
}

/// Turns the pool table's watch events into [`HostEvent`]s; it remembers whether each
/// host is cordoned, to tell a cordon from another rewrite of its record.
#[derive(Debug, Default)]
pub struct HostEvents {
    cordoned: HashMap<String, bool>,
}

impl HostEvents {
    /// The hosts as they are now, and the watch of what changes after.
    pub fn follow(store: &dyn Store) -> Result<(HostEvents, Watcher), StoreError> {
        let now = store.range(keys::TABLE, keys::HOSTS)?;
        let mut me = HostEvents::default();
        for (key, kv) in &now.kvs {
            if let Some((id, record)) = host_record(key, &kv.value) {
                me.cordoned
                    .insert(id.to_string(), record.state == HostState::Cordoned);
            }
        }
        let watcher = store.watch(keys::TABLE, "", now.revision + 1)?;
        Ok((me, watcher))
    }

    /// The host event `event` stands for, if any.
    pub fn apply(&mut self, event: &Event) -> Option<HostEvent> {
        if event.table() != keys::TABLE {
            return None;
        }
        let key = event.key();
        let ev = |host: &str, action| {
            Some(HostEvent {
                host: host.to_string(),
                action,
            })
        };
        if let Some(id) = key.strip_prefix(HEARTBEATS) {
            return match event {
                Event::Put { kv, .. } if kv.create_revision == kv.mod_revision => ev(id, "up"),
                Event::Put { .. } => None,
                Event::Delete { .. } => ev(id, "down"),
            };
        }
        match event {
            Event::Put { key, kv, .. } => {
                let (id, record) = host_record(key, &kv.value)?;
                let cordoned = record.state == HostState::Cordoned;
                match self.cordoned.insert(id.to_string(), cordoned) {
                    None => ev(id, "join"),
                    Some(false) if cordoned => ev(id, "cordon"),
                    Some(true) if !cordoned => ev(id, "uncordon"),
                    Some(_) => None,
                }
            }
            Event::Delete { key, .. } => {
                let id = host_id(key)?;
                self.cordoned.remove(id)?;
                ev(id, "remove")
            }
        }
    }
}

/// `hosts/<id>`'s ID (not the keys under other prefixes).
fn host_id(key: &str) -> Option<&str> {
    key.strip_prefix(keys::HOSTS).filter(|id| !id.contains('/'))
}

/// A host's ID and record; None for other keys, and for a record that does not read
/// (the store's own writers never leave one).
fn host_record<'a>(key: &'a str, value: &[u8]) -> Option<(&'a str, HostRecord)> {
    Some((host_id(key)?, serde_json::from_slice(value).ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::member::heartbeat_key;
    use crate::scheduler::{Labels, Resources};
    use pier_store::{Batch, MemStore};
    use std::time::Duration;

    fn record(id: &str, state: HostState) -> Vec<u8> {
        serde_json::to_vec(&HostRecord {
            id: id.into(),
            labels: Labels::default(),
            state,
            capacity: Resources::default(),
        })
        .unwrap()
    }

    fn put(store: &MemStore, key: &str, value: Vec<u8>) {
        let mut b = Batch::new();
        b.ops.push(pier_store::Op::Put {
            table: keys::TABLE,
            key: key.into(),
            value,
        });
        b.commit(store).unwrap();
    }

    fn delete(store: &MemStore, key: &str) {
        let mut b = Batch::new();
        b.ops.push(pier_store::Op::Delete {
            table: keys::TABLE,
            key: key.into(),
        });
        b.commit(store).unwrap();
    }

    /// Every event the watch has now, as host events.
    fn drain(me: &mut HostEvents, w: &mut Watcher) -> Vec<(String, &'static str)> {
        let mut out = Vec::new();
        while let Some(Ok(e)) = w.try_next() {
            if let Some(h) = me.apply(&e) {
                out.push((h.host, h.action));
            }
        }
        out
    }

    #[test]
    fn the_pools_changes_read_as_host_events() {
        let store = MemStore::default();
        // A host there before the watch: rewriting it is not a join.
        put(&store, &keys::host("old"), record("old", HostState::Up));
        let (mut me, mut w) = HostEvents::follow(&store).unwrap();
        put(&store, &keys::host("old"), record("old", HostState::Up));
        put(&store, &keys::host("h2"), record("h2", HostState::Up));
        let lease = store.grant(Duration::from_secs(60)).unwrap();
        let mut b = Batch::new();
        for _ in 0..2 {
            b.ops.push(pier_store::Op::PutLeased {
                table: keys::TABLE,
                key: heartbeat_key("h2"),
                value: b"{}".to_vec(),
                lease,
            });
            b.commit(&store).unwrap();
            b = Batch::new();
        }
        // A heartbeat's rewrite is no event; its lease ending is `down`.
        store.keep_alive(lease).unwrap();
        put(&store, &keys::host("h2"), record("h2", HostState::Cordoned));
        put(&store, &keys::host("h2"), record("h2", HostState::Cordoned));
        put(&store, &keys::host("h2"), record("h2", HostState::Up));
        store.revoke(lease).unwrap();
        // Keys under other prefixes are no hosts.
        put(&store, &keys::allocation("h2"), b"{}".to_vec());
        delete(&store, &keys::host("h2"));
        assert_eq!(
            drain(&mut me, &mut w),
            [
                ("h2".to_string(), "join"),
                ("h2".to_string(), "up"),
                ("h2".to_string(), "cordon"),
                ("h2".to_string(), "uncordon"),
                ("h2".to_string(), "down"),
                ("h2".to_string(), "remove"),
            ]
        );
    }
}
