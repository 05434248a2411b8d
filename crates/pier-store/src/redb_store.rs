//! The embedded backend: one redb file, one redb table per [`Table`].
//!
//! Schema versions: the `meta` table holds `schema_version` (raw, so that any older binary
//! reads it and refuses a newer file). At open, a store older than [`SCHEMA_VERSION`] is
//! migrated step by step inside one write transaction; a newer one is refused, so an old
//! binary never misreads newer state.
//!
//! Since schema 5 every value starts with a header: create revision, mod revision and
//! lease ID (0: none), 8 bytes little-endian each. The `store` table holds the store
//! revision and the lease epoch (raised at every open; lease IDs are `epoch << 32 | n`, so
//! an ID from an earlier process never names a new lease). `store_leased` indexes the
//! keys attached to leases (`table/key`), so that opening deletes them without a scan:
//! leases live in memory and end with the process.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};

use crate::state::{Backend, Body, Change, Core, Tx};
use crate::{
    Clock, KeyValue, LeaseId, Listing, Revision, Store, StoreError, SystemClock, Table, Txn,
    Watcher,
};

/// The schema this build writes.
pub const SCHEMA_VERSION: u32 = 8;
const SCHEMA_KEY: &str = "schema_version";

const STORE: TableDefinition<'static, &'static str, u64> = TableDefinition::new("store");
const LEASED: TableDefinition<'static, &'static str, u64> = TableDefinition::new("store_leased");
const REVISION_KEY: &str = "revision";
const EPOCH_KEY: &str = "lease_epoch";
const HEADER: usize = 24;

fn def(table: Table) -> TableDefinition<'static, &'static str, &'static [u8]> {
    TableDefinition::new(table.name())
}

fn backend<E: std::error::Error + Send + Sync + 'static>(e: E) -> StoreError {
    StoreError::Backend(Box::new(e))
}

/// Whether the key is the store's own rather than a record.
fn reserved(table: Table, key: &str) -> bool {
    table == Table::Meta && key == SCHEMA_KEY
}

fn encode(kv: &KeyValue) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER + kv.value.len());
    out.extend_from_slice(&kv.create_revision.to_le_bytes());
    out.extend_from_slice(&kv.mod_revision.to_le_bytes());
    out.extend_from_slice(&kv.lease.map_or(0, |l| l.0).to_le_bytes());
    out.extend_from_slice(&kv.value);
    out
}

fn decode(table: Table, key: &str, bytes: &[u8]) -> Result<KeyValue, StoreError> {
    let damaged = || StoreError::Damaged {
        table,
        key: key.to_string(),
    };
    let word = |i: usize| -> Result<u64, StoreError> {
        let b = bytes.get(i * 8..i * 8 + 8).ok_or_else(damaged)?;
        Ok(u64::from_le_bytes(b.try_into().map_err(|_| damaged())?))
    };
    let lease = word(2)?;
    Ok(KeyValue {
        create_revision: word(0)?,
        mod_revision: word(1)?,
        lease: (lease != 0).then_some(LeaseId(lease)),
        value: bytes[HEADER..].to_vec(),
    })
}

fn leased_id(table: Table, key: &str) -> String {
    format!("{}/{key}", table.name())
}

/// A migration from version `n` to `n + 1`, at index `n`.
type Migration = fn(&WriteTransaction) -> Result<(), StoreError>;

const MIGRATIONS: [Migration; SCHEMA_VERSION as usize] = [
    // 0 -> 1: the first schema; every table exists.
    create_tables,
    // 1 -> 2: networks and address leases.
    create_tables,
    // 2 -> 3: volumes.
    create_tables,
    // 3 -> 4: the registry's blob links, manifests, tags and tag history.
    create_tables,
    // 4 -> 5: revisions and leases.
    add_revisions,
    // 5 -> 6: the image store's durable pins (`image_users`). The pins of existing
    // containers are written by the engine when it opens, since only it reads their records.
    create_tables,
    // 6 -> 7: instance statuses (`container_status`), split from the records of
    // `containers` (which keep the specs). The engine splits existing records when it
    // opens, since only it reads them.
    create_tables,
    // 7 -> 8: the pool of hosts (`cluster`): hosts, allocations, assignments.
    create_tables,
];

fn create_tables(txn: &WriteTransaction) -> Result<(), StoreError> {
    for t in Table::ALL {
        txn.open_table(def(t)).map_err(backend)?;
    }
    Ok(())
}

/// Gives every existing record revision 1, and the store revision 1 if there were any.
fn add_revisions(txn: &WriteTransaction) -> Result<(), StoreError> {
    let mut any = false;
    for t in Table::ALL {
        let mut table = txn.open_table(def(t)).map_err(backend)?;
        let mut old = Vec::new();
        for item in table.iter().map_err(backend)? {
            let (k, v) = item.map_err(backend)?;
            if !reserved(t, k.value()) {
                old.push((k.value().to_string(), v.value().to_vec()));
            }
        }
        for (key, value) in old {
            let kv = KeyValue {
                value,
                create_revision: 1,
                mod_revision: 1,
                lease: None,
            };
            let bytes = encode(&kv);
            table
                .insert(key.as_str(), bytes.as_slice())
                .map_err(backend)?;
            any = true;
        }
    }
    let mut store = txn.open_table(STORE).map_err(backend)?;
    store
        .insert(REVISION_KEY, u64::from(any))
        .map_err(backend)?;
    txn.open_table(LEASED).map_err(backend)?;
    Ok(())
}

/// The redb database as a [`Backend`].
struct Disk(Database);

/// The embedded, crash-safe store.
pub struct RedbStore {
    db: Disk,
    path: PathBuf,
    core: Core,
}

impl std::fmt::Debug for RedbStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedbStore")
            .field("path", &self.path)
            .finish()
    }
}

impl RedbStore {
    /// Opens (or creates) the store at `path` and brings its schema up to date.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        Self::open_with_clock(path, Arc::new(SystemClock))
    }

    /// As [`RedbStore::open`], with leases following `clock`. Deletes the keys that were
    /// attached to leases of an earlier process (one transaction, one revision).
    pub fn open_with_clock(path: &Path, clock: Arc<dyn Clock>) -> Result<Self, StoreError> {
        let shown = path.display().to_string();
        let db = Database::create(path).map_err(|e| StoreError::Open {
            path: shown.clone(),
            source: Box::new(e),
        })?;
        migrate(&db, &shown)?;
        let (revision, epoch) = recover(&db)?;
        Ok(RedbStore {
            db: Disk(db),
            path: path.to_path_buf(),
            core: Core::new(revision, (epoch << 32) | 1, clock),
        })
    }

    /// The schema version recorded in the file.
    pub fn schema_version(&self) -> Result<u32, StoreError> {
        schema_version(&self.db.0)
    }
}

fn schema_version(db: &Database) -> Result<u32, StoreError> {
    let txn = db.begin_read().map_err(backend)?;
    let table = match txn.open_table(def(Table::Meta)) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(0),
        Err(e) => return Err(backend(e)),
    };
    let v = table.get(SCHEMA_KEY).map_err(backend)?;
    Ok(v.map(|g| parse_version(g.value())).unwrap_or(0))
}

fn migrate(db: &Database, path: &str) -> Result<(), StoreError> {
    let found = schema_version(db)?;
    if found > SCHEMA_VERSION {
        return Err(StoreError::TooNew {
            path: path.to_string(),
            found,
            supported: SCHEMA_VERSION,
        });
    }
    if found == SCHEMA_VERSION {
        return Ok(());
    }
    let txn = db.begin_write().map_err(backend)?;
    for step in &MIGRATIONS[found as usize..] {
        step(&txn)?;
    }
    {
        let mut meta = txn.open_table(def(Table::Meta)).map_err(backend)?;
        let v = SCHEMA_VERSION.to_string();
        meta.insert(SCHEMA_KEY, v.as_bytes()).map_err(backend)?;
    }
    txn.commit().map_err(backend)
}

fn parse_version(bytes: &[u8]) -> u32 {
    std::str::from_utf8(bytes)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// Raises the lease epoch and deletes the keys of the leases of an earlier process.
/// Returns the store revision and the new epoch.
fn recover(db: &Database) -> Result<(Revision, u64), StoreError> {
    let txn = db.begin_write().map_err(backend)?;
    let mut store = txn.open_table(STORE).map_err(backend)?;
    let mut revision = store
        .get(REVISION_KEY)
        .map_err(backend)?
        .map_or(0, |g| g.value());
    let epoch = store
        .get(EPOCH_KEY)
        .map_err(backend)?
        .map_or(0, |g| g.value())
        + 1;
    store.insert(EPOCH_KEY, epoch).map_err(backend)?;
    let mut leased = txn.open_table(LEASED).map_err(backend)?;
    let mut stale = Vec::new();
    for item in leased.iter().map_err(backend)? {
        stale.push(item.map_err(backend)?.0.value().to_string());
    }
    if !stale.is_empty() {
        for id in &stale {
            let (name, key) = id.split_once('/').unwrap_or((id, ""));
            if let Some(table) = Table::from_name(name) {
                let mut t = txn.open_table(def(table)).map_err(backend)?;
                t.remove(key).map_err(backend)?;
            }
        }
        leased.retain(|_, _| false).map_err(backend)?;
        revision += 1;
        store.insert(REVISION_KEY, revision).map_err(backend)?;
    }
    drop((store, leased));
    txn.commit().map_err(backend)?;
    Ok((revision, epoch))
}

/// One redb write transaction as a [`Tx`].
struct DiskTx<'a>(&'a WriteTransaction);

impl Tx for DiskTx<'_> {
    fn get(&mut self, table: Table, key: &str) -> Result<Option<KeyValue>, StoreError> {
        if reserved(table, key) {
            return Ok(None);
        }
        let t = self.0.open_table(def(table)).map_err(backend)?;
        let v = t.get(key).map_err(backend)?;
        v.map(|g| decode(table, key, g.value())).transpose()
    }

    fn put(
        &mut self,
        table: Table,
        key: &str,
        kv: &KeyValue,
        prev: Option<&KeyValue>,
    ) -> Result<(), StoreError> {
        if reserved(table, key) {
            return Err(StoreError::Reserved {
                table,
                key: key.to_string(),
            });
        }
        let bytes = encode(kv);
        let mut t = self.0.open_table(def(table)).map_err(backend)?;
        t.insert(key, bytes.as_slice()).map_err(backend)?;
        let prev_lease = prev.and_then(|p| p.lease);
        if kv.lease != prev_lease {
            let mut leased = self.0.open_table(LEASED).map_err(backend)?;
            let id = leased_id(table, key);
            match kv.lease {
                Some(l) => leased.insert(id.as_str(), l.0).map_err(backend)?,
                None => leased.remove(id.as_str()).map_err(backend)?,
            };
        }
        Ok(())
    }

    fn delete(&mut self, table: Table, key: &str, prev: &KeyValue) -> Result<(), StoreError> {
        let mut t = self.0.open_table(def(table)).map_err(backend)?;
        t.remove(key).map_err(backend)?;
        if prev.lease.is_some() {
            let mut leased = self.0.open_table(LEASED).map_err(backend)?;
            leased
                .remove(leased_id(table, key).as_str())
                .map_err(backend)?;
        }
        Ok(())
    }
}

impl Backend for Disk {
    fn write(
        &self,
        durable: bool,
        revision: Revision,
        body: &mut Body<'_>,
    ) -> Result<Vec<Change>, StoreError> {
        let mut txn = self.0.begin_write().map_err(backend)?;
        if !durable {
            txn.set_durability(redb::Durability::None)
                .map_err(backend)?;
        }
        let changes = match body(&mut DiskTx(&txn)) {
            Ok(c) if !c.is_empty() => c,
            other => {
                // Nothing to keep: a failed compare, an error, or no change.
                txn.abort().map_err(backend)?;
                return other;
            }
        };
        let mut store = txn.open_table(STORE).map_err(backend)?;
        store.insert(REVISION_KEY, revision).map_err(backend)?;
        drop(store);
        txn.commit().map_err(backend)?;
        Ok(changes)
    }
}

impl Store for RedbStore {
    fn get_kv(&self, table: Table, key: &str) -> Result<Option<KeyValue>, StoreError> {
        if reserved(table, key) {
            return Ok(None);
        }
        let txn = self.db.0.begin_read().map_err(backend)?;
        let t = txn.open_table(def(table)).map_err(backend)?;
        let v = t.get(key).map_err(backend)?;
        v.map(|g| decode(table, key, g.value())).transpose()
    }

    fn range(&self, table: Table, prefix: &str) -> Result<Listing, StoreError> {
        let txn = self.db.0.begin_read().map_err(backend)?;
        let store = txn.open_table(STORE).map_err(backend)?;
        let revision = store
            .get(REVISION_KEY)
            .map_err(backend)?
            .map_or(0, |g| g.value());
        let t = txn.open_table(def(table)).map_err(backend)?;
        let mut kvs = Vec::new();
        for item in t.range(prefix..).map_err(backend)? {
            let (k, v) = item.map_err(backend)?;
            let key = k.value();
            if !key.starts_with(prefix) {
                break;
            }
            if !reserved(table, key) {
                kvs.push((key.to_string(), decode(table, key, v.value())?));
            }
        }
        Ok(Listing { revision, kvs })
    }

    fn revision(&self) -> Result<Revision, StoreError> {
        Ok(self.core.revision())
    }

    fn txn(&self, txn: Txn, durable: bool) -> Result<Revision, StoreError> {
        self.core.txn(&self.db, &txn, durable)
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
        self.core.revoke(&self.db, lease)
    }

    fn expire_leases(&self) -> Result<Vec<LeaseId>, StoreError> {
        self.core.expire(&self.db)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Batch, Compare, Expect, ManualClock, Op, StoreExt};

    fn put(table: Table, key: &str, value: &str) -> Op {
        Op::Put {
            table,
            key: key.into(),
            value: value.into(),
        }
    }

    #[test]
    fn conformance() {
        crate::conformance::run(&|clock| {
            let dir = tempfile::tempdir().unwrap();
            let store = RedbStore::open_with_clock(&dir.path().join("state.redb"), clock);
            (Box::new(store.unwrap()), Some(dir))
        });
    }

    #[test]
    fn persists_values_and_revisions() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.redb");
        let (rev, lazy_rev) = {
            let store = RedbStore::open(&path).unwrap();
            assert_eq!(store.schema_version().unwrap(), SCHEMA_VERSION);
            assert_eq!(store.revision().unwrap(), 0);
            let mut b = Batch::new();
            b.put_json(Table::Images, "default/b", &20u32);
            b.commit(&store).unwrap();
            let rev = store.commit_at_rev(put(Table::Tags, "t", "1"));
            // A lazy commit followed by a durable one reaches the disk.
            store
                .commit_with(vec![put(Table::Containers, "lazy", "l")], false)
                .unwrap();
            let lazy_rev = store.revision().unwrap();
            store.commit(vec![put(Table::Tags, "u", "2")]).unwrap();
            (rev, lazy_rev)
        };
        let store = RedbStore::open(&path).unwrap();
        assert_eq!(
            store.get_json::<u32>(Table::Images, "default/b").unwrap(),
            Some(20)
        );
        assert_eq!(store.revision().unwrap(), lazy_rev + 1);
        let t = store.get_kv(Table::Tags, "t").unwrap().unwrap();
        assert_eq!((t.create_revision, t.mod_revision), (rev, rev));
        assert_eq!(
            store
                .get_kv(Table::Containers, "lazy")
                .unwrap()
                .unwrap()
                .mod_revision,
            lazy_rev
        );
        assert_eq!(store.range(Table::Tags, "").unwrap().revision, lazy_rev + 1);
        // The counter continues; history from before the open is gone.
        assert_eq!(
            store.commit_at_rev(put(Table::Tags, "t", "2")),
            lazy_rev + 2
        );
        let err = store.watch(Table::Tags, "", lazy_rev + 1).unwrap_err();
        assert!(matches!(err, StoreError::Compacted { .. }), "{err:?}");
        let mut w = store.watch(Table::Tags, "", lazy_rev + 2).unwrap();
        assert_eq!(w.try_next().unwrap().unwrap().revision(), lazy_rev + 2);
    }

    impl RedbStore {
        fn commit_at_rev(&self, op: Op) -> Revision {
            let txn = Txn {
                compares: vec![],
                ops: vec![op],
            };
            self.txn(txn, true).unwrap()
        }
    }

    #[test]
    fn reopening_deletes_the_keys_of_leases() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.redb");
        let clock = Arc::new(ManualClock::new());
        let (old_lease, rev) = {
            let store = RedbStore::open_with_clock(&path, clock.clone()).unwrap();
            let lease = store.grant(Duration::from_secs(3600)).unwrap();
            let mut b = Batch::new();
            b.put_json_leased(Table::Leases, "p/a", &1u32, lease)
                .put_json_leased(Table::Leases, "p/b", &1u32, lease)
                .put_json(Table::Leases, "p/plain", &1u32);
            b.commit(&store).unwrap();
            // Detached again: survives.
            b = Batch::new();
            b.put_json_leased(Table::Leases, "p/c", &1u32, lease);
            b.commit(&store).unwrap();
            store.commit(vec![put(Table::Leases, "p/c", "3")]).unwrap();
            (lease, store.revision().unwrap())
        };
        let store = RedbStore::open_with_clock(&path, clock).unwrap();
        assert_eq!(store.get(Table::Leases, "p/a").unwrap(), None);
        assert_eq!(store.get(Table::Leases, "p/b").unwrap(), None);
        assert!(store.get(Table::Leases, "p/plain").unwrap().is_some());
        assert!(store.get(Table::Leases, "p/c").unwrap().is_some());
        assert_eq!(
            store.revision().unwrap(),
            rev + 1,
            "the deletes are one revision"
        );
        assert!(matches!(
            store.keep_alive(old_lease),
            Err(StoreError::LeaseNotFound { .. })
        ));
        let new_lease = store.grant(Duration::from_secs(1)).unwrap();
        assert_ne!(new_lease, old_lease, "a lease ID was reused across opens");
        // Nothing left to delete at the next open.
        drop(store);
        let store = RedbStore::open(&path).unwrap();
        assert_eq!(store.revision().unwrap(), rev + 1);
    }

    #[test]
    fn migrates_a_version_4_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.redb");
        {
            let db = Database::create(&path).unwrap();
            let txn = db.begin_write().unwrap();
            create_tables(&txn).unwrap();
            let mut meta = txn.open_table(def(Table::Meta)).unwrap();
            meta.insert(SCHEMA_KEY, b"4".as_slice()).unwrap();
            meta.insert("last-ip/n", b"10.0.0.2".as_slice()).unwrap();
            drop(meta);
            let mut images = txn.open_table(def(Table::Images)).unwrap();
            images.insert("default/a", b"7".as_slice()).unwrap();
            drop(images);
            txn.commit().unwrap();
        }
        let store = RedbStore::open(&path).unwrap();
        assert_eq!(store.schema_version().unwrap(), SCHEMA_VERSION);
        assert_eq!(store.revision().unwrap(), 1);
        let a = store.get_kv(Table::Images, "default/a").unwrap().unwrap();
        assert_eq!((a.value.as_slice(), a.mod_revision), (b"7".as_slice(), 1));
        assert_eq!(
            store.list(Table::Meta, "").unwrap(),
            vec![("last-ip/n".to_string(), b"10.0.0.2".to_vec())]
        );
    }

    #[test]
    fn migrates_a_version_5_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.redb");
        {
            // What schema 5 had: every table but `image_users`, records with headers.
            let db = Database::create(&path).unwrap();
            let txn = db.begin_write().unwrap();
            for t in Table::ALL
                .into_iter()
                .filter(|t| !matches!(t, Table::ImageUsers | Table::ContainerStatus))
            {
                txn.open_table(def(t)).unwrap();
            }
            add_revisions(&txn).unwrap();
            let mut meta = txn.open_table(def(Table::Meta)).unwrap();
            meta.insert(SCHEMA_KEY, b"5".as_slice()).unwrap();
            drop(meta);
            let kv = KeyValue {
                value: b"c".to_vec(),
                create_revision: 3,
                mod_revision: 4,
                lease: None,
            };
            let mut containers = txn.open_table(def(Table::Containers)).unwrap();
            containers
                .insert("default/c", encode(&kv).as_slice())
                .unwrap();
            drop(containers);
            txn.open_table(STORE)
                .unwrap()
                .insert(REVISION_KEY, 4)
                .unwrap();
            txn.commit().unwrap();
        }
        let store = RedbStore::open(&path).unwrap();
        assert_eq!(store.schema_version().unwrap(), SCHEMA_VERSION);
        // The new table exists and is empty; the records and revisions are as they were.
        assert_eq!(store.list(Table::ImageUsers, "").unwrap(), vec![]);
        assert_eq!(store.list(Table::ContainerStatus, "").unwrap(), vec![]);
        assert_eq!(store.revision().unwrap(), 4);
        let c = store
            .get_kv(Table::Containers, "default/c")
            .unwrap()
            .unwrap();
        assert_eq!(
            (c.value.as_slice(), c.create_revision, c.mod_revision),
            (b"c".as_slice(), 3, 4)
        );
        store
            .commit(vec![
                put(Table::ImageUsers, "default/i/container/c", "{}"),
                put(Table::ContainerStatus, "default/c", "{}"),
            ])
            .unwrap();
        drop(store);
        // Opening again migrates nothing.
        let store = RedbStore::open(&path).unwrap();
        assert_eq!(store.revision().unwrap(), 5);
        assert_eq!(store.list(Table::ImageUsers, "").unwrap().len(), 1);
        assert_eq!(store.list(Table::ContainerStatus, "").unwrap().len(), 1);
    }

    #[test]
    fn the_schema_key_is_reserved() {
        let dir = tempfile::tempdir().unwrap();
        let store = RedbStore::open(&dir.path().join("state.redb")).unwrap();
        assert_eq!(store.get(Table::Meta, SCHEMA_KEY).unwrap(), None);
        let err = store
            .commit(vec![
                put(Table::Meta, "x", "1"),
                put(Table::Meta, SCHEMA_KEY, "1"),
            ])
            .unwrap_err();
        assert!(matches!(err, StoreError::Reserved { .. }), "{err:?}");
        assert_eq!(store.get(Table::Meta, "x").unwrap(), None);
        let err = store
            .txn(
                Txn {
                    compares: vec![Compare {
                        table: Table::Meta,
                        key: SCHEMA_KEY.into(),
                        expect: Expect::Present,
                    }],
                    ops: vec![],
                },
                true,
            )
            .unwrap_err();
        assert!(matches!(err, StoreError::Conflict { .. }), "{err:?}");
        assert_eq!(store.schema_version().unwrap(), SCHEMA_VERSION);
    }

    #[test]
    fn migrates_an_unversioned_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.redb");
        drop(Database::create(&path).unwrap());
        let store = RedbStore::open(&path).unwrap();
        assert_eq!(store.schema_version().unwrap(), SCHEMA_VERSION);
        assert_eq!(store.list(Table::Containers, "").unwrap(), vec![]);
        assert_eq!(store.revision().unwrap(), 0);
    }

    #[test]
    fn refuses_a_newer_schema() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.redb");
        {
            let db = Database::create(&path).unwrap();
            let txn = db.begin_write().unwrap();
            txn.open_table(def(Table::Meta))
                .unwrap()
                .insert(SCHEMA_KEY, b"99".as_slice())
                .unwrap();
            txn.commit().unwrap();
        }
        let err = RedbStore::open(&path).unwrap_err();
        assert!(matches!(err, StoreError::TooNew { found: 99, .. }), "{err}");
        assert!(err.to_string().contains("newer pier"), "{err}");
    }
}
