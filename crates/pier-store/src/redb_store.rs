//! The embedded backend: one redb file, one redb table per [`Table`].
//!
//! Schema versions: the `meta` table holds `schema_version`. At open, a store older than
//! [`SCHEMA_VERSION`] is migrated step by step inside one write transaction; a newer one is
//! refused, so an old binary never misreads newer state.

use std::path::{Path, PathBuf};

use redb::{Database, ReadableDatabase, TableDefinition, WriteTransaction};

use crate::{Op, Store, StoreError, Table};

/// The schema this build writes.
pub const SCHEMA_VERSION: u32 = 4;
const SCHEMA_KEY: &str = "schema_version";

fn def(table: Table) -> TableDefinition<'static, &'static str, &'static [u8]> {
    TableDefinition::new(table.name())
}

fn backend<E: std::error::Error + Send + Sync + 'static>(e: E) -> StoreError {
    StoreError::Backend(Box::new(e))
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
];

fn create_tables(txn: &WriteTransaction) -> Result<(), StoreError> {
    for t in Table::ALL {
        txn.open_table(def(t)).map_err(backend)?;
    }
    Ok(())
}

/// The embedded, crash-safe store.
pub struct RedbStore {
    db: Database,
    path: PathBuf,
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
        let shown = path.display().to_string();
        let db = Database::create(path).map_err(|e| StoreError::Open {
            path: shown.clone(),
            source: Box::new(e),
        })?;
        let store = RedbStore {
            db,
            path: path.to_path_buf(),
        };
        store.migrate()?;
        Ok(store)
    }

    /// The schema version recorded in the file.
    pub fn schema_version(&self) -> Result<u32, StoreError> {
        let txn = self.db.begin_read().map_err(backend)?;
        let table = match txn.open_table(def(Table::Meta)) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(0),
            Err(e) => return Err(backend(e)),
        };
        let v = table.get(SCHEMA_KEY).map_err(backend)?;
        Ok(v.map(|g| parse_version(g.value())).unwrap_or(0))
    }

    fn migrate(&self) -> Result<(), StoreError> {
        let found = self.schema_version()?;
        if found > SCHEMA_VERSION {
            return Err(StoreError::TooNew {
                path: self.path.display().to_string(),
                found,
                supported: SCHEMA_VERSION,
            });
        }
        if found == SCHEMA_VERSION {
            return Ok(());
        }
        let txn = self.db.begin_write().map_err(backend)?;
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
}

fn parse_version(bytes: &[u8]) -> u32 {
    std::str::from_utf8(bytes)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

impl Store for RedbStore {
    fn get(&self, table: Table, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let txn = self.db.begin_read().map_err(backend)?;
        let t = txn.open_table(def(table)).map_err(backend)?;
        Ok(t.get(key).map_err(backend)?.map(|g| g.value().to_vec()))
    }

    fn list(&self, table: Table, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let txn = self.db.begin_read().map_err(backend)?;
        let t = txn.open_table(def(table)).map_err(backend)?;
        let mut out = Vec::new();
        for item in t.range(prefix..).map_err(backend)? {
            let (k, v) = item.map_err(backend)?;
            if !k.value().starts_with(prefix) {
                break;
            }
            out.push((k.value().to_string(), v.value().to_vec()));
        }
        Ok(out)
    }

    fn commit(&self, ops: Vec<Op>) -> Result<(), StoreError> {
        self.commit_with(ops, true)
    }

    fn commit_with(&self, ops: Vec<Op>, durable: bool) -> Result<(), StoreError> {
        let mut txn = self.db.begin_write().map_err(backend)?;
        if !durable {
            txn.set_durability(redb::Durability::None)
                .map_err(backend)?;
        }
        for op in &ops {
            match op {
                Op::Put { table, key, value } => {
                    let mut t = txn.open_table(def(*table)).map_err(backend)?;
                    t.insert(key.as_str(), value.as_slice()).map_err(backend)?;
                }
                Op::Delete { table, key } => {
                    let mut t = txn.open_table(def(*table)).map_err(backend)?;
                    t.remove(key.as_str()).map_err(backend)?;
                }
            }
        }
        txn.commit().map_err(backend)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conformance_and_persistence() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.redb");
        {
            let store = RedbStore::open(&path).unwrap();
            assert_eq!(store.schema_version().unwrap(), SCHEMA_VERSION);
            crate::conformance::check(&store);
        }
        let store = RedbStore::open(&path).unwrap();
        assert_eq!(
            store.get(Table::Images, "default/b").unwrap(),
            Some(b"20".to_vec())
        );
    }

    #[test]
    fn migrates_an_unversioned_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.redb");
        drop(Database::create(&path).unwrap());
        let store = RedbStore::open(&path).unwrap();
        assert_eq!(store.schema_version().unwrap(), SCHEMA_VERSION);
        assert_eq!(store.list(Table::Containers, "").unwrap(), vec![]);
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
