//! An in-memory [`Store`](crate::Store) for unit tests.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::state::{Backend, Body, Change, Core, Tx};
use crate::{
    Clock, KeyValue, LeaseId, Listing, Revision, Store, StoreError, SystemClock, Table, Txn,
    Watcher,
};

type Map = BTreeMap<(Table, String), KeyValue>;

#[derive(Debug, Default)]
struct Data {
    map: Map,
    revision: Revision,
}

#[derive(Debug, Default)]
struct Shared(Mutex<Data>);

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Data> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Keeps everything in a map; lost when dropped.
#[derive(Debug)]
pub struct MemStore {
    data: Shared,
    core: Core,
}

impl Default for MemStore {
    fn default() -> Self {
        Self::with_clock(Arc::new(SystemClock))
    }
}

impl MemStore {
    /// An empty store whose leases follow `clock`.
    pub fn with_clock(clock: Arc<dyn Clock>) -> Self {
        MemStore {
            data: Shared::default(),
            core: Core::new(0, 1, clock),
        }
    }
}

/// A write transaction: changes wait in `pending` until the body succeeded, so a failure
/// halfway leaves the map untouched.
struct MemTx<'a> {
    map: &'a Map,
    pending: BTreeMap<(Table, String), Option<KeyValue>>,
}

impl Tx for MemTx<'_> {
    fn get(&mut self, table: Table, key: &str) -> Result<Option<KeyValue>, StoreError> {
        let id = (table, key.to_string());
        if let Some(kv) = self.pending.get(&id) {
            return Ok(kv.clone());
        }
        Ok(self.map.get(&id).cloned())
    }

    fn put(
        &mut self,
        table: Table,
        key: &str,
        kv: &KeyValue,
        _prev: Option<&KeyValue>,
    ) -> Result<(), StoreError> {
        self.pending
            .insert((table, key.to_string()), Some(kv.clone()));
        Ok(())
    }

    fn delete(&mut self, table: Table, key: &str, _prev: &KeyValue) -> Result<(), StoreError> {
        self.pending.insert((table, key.to_string()), None);
        Ok(())
    }
}

impl Backend for Shared {
    fn write(
        &self,
        _durable: bool,
        revision: Revision,
        body: &mut Body<'_>,
    ) -> Result<Vec<Change>, StoreError> {
        let mut data = self.lock();
        let mut tx = MemTx {
            map: &data.map,
            pending: BTreeMap::new(),
        };
        let changes = body(&mut tx)?;
        let pending = tx.pending;
        if changes.is_empty() {
            return Ok(changes);
        }
        for (id, kv) in pending {
            match kv {
                Some(kv) => data.map.insert(id, kv),
                None => data.map.remove(&id),
            };
        }
        data.revision = revision;
        Ok(changes)
    }
}

impl Store for MemStore {
    fn get_kv(&self, table: Table, key: &str) -> Result<Option<KeyValue>, StoreError> {
        Ok(self.data.lock().map.get(&(table, key.to_string())).cloned())
    }

    fn range(&self, table: Table, prefix: &str) -> Result<Listing, StoreError> {
        let data = self.data.lock();
        let kvs = data
            .map
            .range((table, prefix.to_string())..)
            .take_while(|((t, k), _)| *t == table && k.starts_with(prefix))
            .map(|((_, k), v)| (k.clone(), v.clone()))
            .collect();
        Ok(Listing {
            revision: data.revision,
            kvs,
        })
    }

    fn revision(&self) -> Result<Revision, StoreError> {
        Ok(self.data.lock().revision)
    }

    fn txn(&self, txn: Txn, durable: bool) -> Result<Revision, StoreError> {
        self.core.txn(&self.data, &txn, durable)
    }

    fn watch(&self, table: Table, prefix: &str, from: Revision) -> Result<Watcher, StoreError> {
        self.core.watch(table, prefix, from)
    }

    fn grant(&self, ttl: Duration) -> Result<LeaseId, StoreError> {
        Ok(self.core.grant(ttl))
    }

    fn keep_alive(&self, lease: LeaseId) -> Result<Duration, StoreError> {
        self.core.keep_alive(lease)
    }

    fn revoke(&self, lease: LeaseId) -> Result<Revision, StoreError> {
        self.core.revoke(&self.data, lease)
    }

    fn expire_leases(&self) -> Result<Vec<LeaseId>, StoreError> {
        self.core.expire(&self.data)
    }
}
