//! Pier's state store: the trait every subsystem keeps its desired state behind, and its
//! backends.
//!
//! The model is deliberately the one etcd offers, so that a clustered backend fits later
//! without touching callers: named tables of string keys and byte values, prefix listing,
//! and atomic batches of puts and deletes. Keys begin with the owning project
//! (`default/...`) wherever a resource belongs to one.
//!
//! - [`RedbStore`]: the embedded, crash-safe backend (redb: copy-on-write B-trees with
//!   checksummed commits, so a kill -9 leaves the last committed state). It carries a
//!   schema version and runs migrations at open.
//! - [`MemStore`]: an in-memory backend for unit tests.

mod mem;
mod redb_store;

use serde::de::DeserializeOwned;
use serde::Serialize;

pub use mem::MemStore;
pub use redb_store::{RedbStore, SCHEMA_VERSION};

/// The tables of the store. Adding one is a schema change: bump [`SCHEMA_VERSION`] and add
/// a migration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Table {
    /// Store metadata (schema version).
    Meta,
    /// Images by `project/image-id`.
    Images,
    /// Tags by `project/registry/repository:tag`, each naming an image ID.
    Tags,
    /// Unpacked layers by diff ID; shared across projects, reference-counted by images.
    Layers,
    /// Containers by `project/container-id`.
    Containers,
    /// Networks by `project/network-id`.
    Networks,
    /// Address leases by `project/network-id/ip`, each naming a container ID.
    Leases,
    /// Volumes by `project/name`.
    Volumes,
    /// The registry's blob links by `repository@digest`: a blob pushed to (or mounted
    /// into) a repository. The image store's garbage collection keeps every linked blob.
    RegistryBlobs,
    /// The registry's manifests by `repository@digest`.
    RegistryManifests,
    /// The registry's tags by `repository:tag`, each naming a manifest digest.
    RegistryTags,
    /// What each registry tag pointed to, by `repository:tag@<zero-padded nanoseconds>`.
    RegistryTagHistory,
    /// Projects (tenants) by name.
    Projects,
    /// Quotas by `project/resource` (e.g. `default/volume-bytes`), each a number.
    Quotas,
}

impl Table {
    pub const ALL: [Table; 14] = [
        Table::Meta,
        Table::Images,
        Table::Tags,
        Table::Layers,
        Table::Containers,
        Table::Networks,
        Table::Leases,
        Table::Volumes,
        Table::RegistryBlobs,
        Table::RegistryManifests,
        Table::RegistryTags,
        Table::RegistryTagHistory,
        Table::Projects,
        Table::Quotas,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Table::Meta => "meta",
            Table::Images => "images",
            Table::Tags => "tags",
            Table::Layers => "layers",
            Table::Containers => "containers",
            Table::Networks => "networks",
            Table::Leases => "leases",
            Table::Volumes => "volumes",
            Table::RegistryBlobs => "registry_blobs",
            Table::RegistryManifests => "registry_manifests",
            Table::RegistryTags => "registry_tags",
            Table::RegistryTagHistory => "registry_tag_history",
            Table::Projects => "projects",
            Table::Quotas => "quotas",
        }
    }
}

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open the state store at {path}")]
    Open {
        path: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("the state store at {path} has schema version {found}, newer than this Pier understands ({supported}); run a newer pier")]
    TooNew {
        path: String,
        found: u32,
        supported: u32,
    },
    #[error("state store backend error")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("corrupt record {table}/{key} in the state store")]
    Corrupt {
        table: &'static str,
        key: String,
        #[source]
        source: serde_json::Error,
    },
}

/// One change in an atomic batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Put {
        table: Table,
        key: String,
        value: Vec<u8>,
    },
    Delete {
        table: Table,
        key: String,
    },
}

/// The state-store interface. Implementations are safe to share between threads; each call
/// is atomic on its own, and [`Store::commit`] applies a whole batch or nothing.
pub trait Store: Send + Sync + 'static {
    fn get(&self, table: Table, key: &str) -> Result<Option<Vec<u8>>, StoreError>;
    /// Every entry whose key starts with `prefix`, in key order.
    fn list(&self, table: Table, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError>;
    fn commit(&self, ops: Vec<Op>) -> Result<(), StoreError>;
    /// As [`Store::commit`]; with `durable` false the batch is visible at once but only
    /// reaches the disk with the next durable commit, so a crash may lose it. For
    /// records that something else can rebuild after a crash.
    fn commit_with(&self, ops: Vec<Op>, durable: bool) -> Result<(), StoreError> {
        let _ = durable;
        self.commit(ops)
    }
}

/// JSON helpers over any [`Store`].
pub trait StoreExt: Store {
    fn get_json<T: DeserializeOwned>(
        &self,
        table: Table,
        key: &str,
    ) -> Result<Option<T>, StoreError> {
        match self.get(table, key)? {
            None => Ok(None),
            Some(bytes) => {
                serde_json::from_slice(&bytes)
                    .map(Some)
                    .map_err(|source| StoreError::Corrupt {
                        table: table.name(),
                        key: key.to_string(),
                        source,
                    })
            }
        }
    }

    fn list_json<T: DeserializeOwned>(
        &self,
        table: Table,
        prefix: &str,
    ) -> Result<Vec<(String, T)>, StoreError> {
        self.list(table, prefix)?
            .into_iter()
            .map(|(key, bytes)| match serde_json::from_slice(&bytes) {
                Ok(v) => Ok((key, v)),
                Err(source) => Err(StoreError::Corrupt {
                    table: table.name(),
                    key,
                    source,
                }),
            })
            .collect()
    }
}

impl<S: Store + ?Sized> StoreExt for S {}

/// Builds an atomic batch of JSON puts and deletes.
#[derive(Debug, Default)]
pub struct Batch {
    pub ops: Vec<Op>,
}

impl Batch {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn put_json<T: Serialize>(
        &mut self,
        table: Table,
        key: impl Into<String>,
        value: &T,
    ) -> &mut Self {
        let value = serde_json::to_vec(value).expect("store records serialize to JSON");
        self.ops.push(Op::Put {
            table,
            key: key.into(),
            value,
        });
        self
    }
    pub fn delete(&mut self, table: Table, key: impl Into<String>) -> &mut Self {
        self.ops.push(Op::Delete {
            table,
            key: key.into(),
        });
        self
    }
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
    pub fn commit(self, store: &dyn Store) -> Result<(), StoreError> {
        if self.ops.is_empty() {
            return Ok(());
        }
        store.commit(self.ops)
    }

    /// Commits without waiting for the disk (see [`Store::commit_with`]).
    pub fn commit_lazy(self, store: &dyn Store) -> Result<(), StoreError> {
        if self.ops.is_empty() {
            return Ok(());
        }
        store.commit_with(self.ops, false)
    }
}

#[cfg(test)]
pub(crate) mod conformance {
    //! Behaviour every backend must share, run against each of them.
    use super::*;

    pub fn check(store: &dyn Store) {
        assert_eq!(store.get(Table::Images, "default/a").unwrap(), None);
        let mut b = Batch::new();
        b.put_json(Table::Images, "default/a", &1u32)
            .put_json(Table::Images, "default/b", &2u32)
            .put_json(Table::Images, "other/c", &3u32)
            .put_json(Table::Tags, "default/a", &"x");
        b.commit(store).unwrap();
        assert_eq!(
            store.get_json::<u32>(Table::Images, "default/b").unwrap(),
            Some(2)
        );
        let listed: Vec<_> = store.list_json::<u32>(Table::Images, "default/").unwrap();
        assert_eq!(
            listed,
            vec![("default/a".to_string(), 1), ("default/b".to_string(), 2)]
        );
        assert_eq!(store.list(Table::Images, "").unwrap().len(), 3);
        // Tables are separate namespaces.
        assert_eq!(store.list(Table::Tags, "").unwrap().len(), 1);

        let mut b = Batch::new();
        b.delete(Table::Images, "default/a")
            .put_json(Table::Images, "default/b", &20u32);
        b.commit(store).unwrap();
        assert_eq!(store.get(Table::Images, "default/a").unwrap(), None);
        assert_eq!(
            store.get_json::<u32>(Table::Images, "default/b").unwrap(),
            Some(20)
        );

        // A lazy commit is visible at once, and a durable one after it carries it.
        let mut b = Batch::new();
        b.put_json(Table::Containers, "default/lazy", &7u32);
        b.commit_lazy(store).unwrap();
        assert_eq!(
            store
                .get_json::<u32>(Table::Containers, "default/lazy")
                .unwrap(),
            Some(7)
        );
        let mut b = Batch::new();
        b.delete(Table::Containers, "default/lazy");
        b.commit(store).unwrap();
        assert_eq!(store.get(Table::Containers, "default/lazy").unwrap(), None);

        // A record that is not the JSON asked for is reported as corrupt, naming it.
        store
            .commit(vec![Op::Put {
                table: Table::Images,
                key: "default/bad".into(),
                value: b"{".to_vec(),
            }])
            .unwrap();
        let err = store
            .get_json::<u32>(Table::Images, "default/bad")
            .unwrap_err();
        assert!(err.to_string().contains("images/default/bad"), "{err}");
    }

    #[test]
    fn mem_store() {
        check(&MemStore::default());
    }
}
