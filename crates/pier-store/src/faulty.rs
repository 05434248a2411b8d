//! [`FaultyStore`]: a [`MemStore`] for tests that fails a chosen transaction, slows
//! transactions down, and lets a test see (and hold) every read: what the engine tier
//! uses to inject a store failure at each step of an operation and to make racers act on
//! one snapshot.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::{
    KeyValue, LeaseId, Listing, MemStore, Revision, Store, StoreError, Table, Txn, Watcher,
};

/// Called after each read with its table and key (or prefix).
pub type ReadHook = Arc<dyn Fn(Table, &str) + Send + Sync>;

/// A [`MemStore`] with failures on demand; see the module doc.
#[derive(Default)]
pub struct FaultyStore {
    inner: MemStore,
    txns: AtomicUsize,
    fail_at: Mutex<Option<usize>>,
    delay: Mutex<Option<Duration>>,
    on_read: Mutex<Option<ReadHook>>,
}

impl FaultyStore {
    /// One whose leases follow `clock` (a [`crate::ManualClock`] in tests).
    pub fn with_clock(clock: Arc<dyn crate::Clock>) -> Self {
        FaultyStore {
            inner: MemStore::with_clock(clock),
            ..Default::default()
        }
    }

    /// Transactions tried so far (failed ones included).
    pub fn txns(&self) -> usize {
        self.txns.load(Ordering::SeqCst)
    }

    /// Fails the `n`th transaction from now (0: the next), once, with
    /// [`StoreError::Backend`].
    pub fn fail_txn(&self, n: usize) {
        *self.fail_at.lock().unwrap() = Some(self.txns() + n);
    }

    /// Forgets a failure asked for and not yet met.
    pub fn heal(&self) {
        *self.fail_at.lock().unwrap() = None;
    }

    /// Makes every transaction take at least `d` (None: no delay).
    pub fn delay_txns(&self, d: Option<Duration>) {
        *self.delay.lock().unwrap() = d;
    }

    /// Calls `hook` after every read (None: no hook).
    pub fn on_read(&self, hook: Option<ReadHook>) {
        *self.on_read.lock().unwrap() = hook;
    }

    fn read(&self, table: Table, key: &str) {
        let hook = self.on_read.lock().unwrap().clone();
        if let Some(h) = hook {
            h(table, key);
        }
    }
}

impl Store for FaultyStore {
    fn get_kv(&self, table: Table, key: &str) -> Result<Option<KeyValue>, StoreError> {
        // Read first, then the hook: a racer held there keeps what it read.
        let r = self.inner.get_kv(table, key);
        self.read(table, key);
        r
    }
    fn range(&self, table: Table, prefix: &str) -> Result<Listing, StoreError> {
        let r = self.inner.range(table, prefix);
        self.read(table, prefix);
        r
    }
    fn revision(&self) -> Result<Revision, StoreError> {
        self.inner.revision()
    }
    fn txn(&self, txn: Txn, durable: bool) -> Result<Revision, StoreError> {
        let n = self.txns.fetch_add(1, Ordering::SeqCst);
        if *self.fail_at.lock().unwrap() == Some(n) {
            return Err(StoreError::Backend("injected store failure".into()));
        }
        let delay = *self.delay.lock().unwrap();
        if let Some(d) = delay {
            std::thread::sleep(d);
        }
        self.inner.txn(txn, durable)
    }
    fn watch(&self, table: Table, prefix: &str, from: Revision) -> Result<Watcher, StoreError> {
        self.inner.watch(table, prefix, from)
    }
    fn grant(&self, ttl: Duration) -> Result<LeaseId, StoreError> {
        self.inner.grant(ttl)
    }
    fn keep_alive(&self, lease: LeaseId) -> Result<Duration, StoreError> {
        self.inner.keep_alive(lease)
    }
    fn revoke(&self, lease: LeaseId) -> Result<Revision, StoreError> {
        self.inner.revoke(lease)
    }
    fn expire_leases(&self) -> Result<Vec<LeaseId>, StoreError> {
        self.inner.expire_leases()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Batch, StoreExt};

    fn put(s: &FaultyStore, v: u32) -> Result<(), StoreError> {
        let mut b = Batch::new();
        b.put_json(Table::Meta, "k", &v);
        b.commit(s)
    }

    #[test]
    fn fails_the_chosen_transaction_once_and_sees_reads() {
        let s = FaultyStore::default();
        s.fail_txn(1);
        put(&s, 1).unwrap();
        assert!(matches!(put(&s, 2), Err(StoreError::Backend(_))));
        put(&s, 3).unwrap();
        assert_eq!(s.txns(), 3);
        assert_eq!(s.get_json::<u32>(Table::Meta, "k").unwrap(), Some(3));
        s.fail_txn(0);
        s.heal();
        put(&s, 4).unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        s.on_read(Some(Arc::new(move |t, k| {
            log.lock().unwrap().push(format!("{t}/{k}"))
        })));
        s.get(Table::Meta, "k").unwrap();
        s.list(Table::Meta, "").unwrap();
        assert_eq!(*seen.lock().unwrap(), ["meta/k", "meta/"]);
    }
}
