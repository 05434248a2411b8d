//! Pier's state store: the trait every subsystem keeps its desired state behind, and its
//! backends.
//!
//! The contract is etcd v3's, so that a clustered backend fits later without touching
//! callers: named tables of string keys and byte values (etcd: one keyspace; a table is a
//! key prefix there). Keys begin with the owning project (`default/...`) wherever a resource
//! belongs to one.
//!
//! - **Revisions.** The store has one revision counter. Every transaction that changes
//!   something raises it by one, and every key it wrote carries that revision as its
//!   `mod_revision` (and, when it created the key, its `create_revision`). Reads return it:
//!   [`Store::get_kv`] gives a key's [`KeyValue`], [`Store::range`] a prefix's entries and
//!   the store revision they were read at. A transaction that changes nothing (its compares
//!   held but it only deleted absent keys) does not raise it. A fresh store is at 0 (etcd: 1).
//! - **Transactions.** [`Store::txn`] takes a [`Txn`]: compares and then ops. If every
//!   compare holds, all ops apply atomically at one new revision; if one fails, nothing is
//!   written and the call fails with [`StoreError::Conflict`] naming the key (etcd answers
//!   `succeeded: false` and runs an else branch; Pier has no else branch). A compare is
//!   "absent" (create-if-absent), "present", or "mod revision == N". Ops apply in order and
//!   may name a key twice (etcd refuses that). This is how uniqueness (names, addresses,
//!   ports, quotas) is kept: a create puts an index key under an "absent" compare, so two
//!   racing creates cannot both win, in one process or many. [`Batch::require`] adds
//!   compares to a batch; [`Store::commit`] and [`Batch::commit`] are the unconditional
//!   forms callers used before revisions existed.
//! - **Watch.** [`Store::watch`] streams the puts and deletes under a prefix of one table,
//!   in revision order, from a given revision: a watcher that read at revision R and
//!   watches from R + 1 misses nothing. Each embedded backend keeps the last [`HISTORY_EVENTS`]
//!   events in memory to replay; older starts fail with [`StoreError::Compacted`] (etcd
//!   keeps history until compaction). A watcher that falls [`WATCH_BUFFER`] events behind
//!   gets [`StoreError::WatchLagged`] and is closed. Either way the answer is the same:
//!   read again, watch from that read's revision + 1.
//! - **Leases.** [`Store::grant`] a lease with a time to live, attach keys to it
//!   ([`Op::PutLeased`]), renew it with [`Store::keep_alive`]; when it is revoked or expires
//!   its keys are deleted in one transaction, with watch events. Time comes from a
//!   [`Clock`] given at construction ([`ManualClock`] in tests). Expiry happens in
//!   [`Store::expire_leases`], which the store's owner calls periodically (every second or
//!   so; etcd's leader does this itself): the engine's lease tick (`pier_engine::reconcile`). Leases live in memory in the embedded
//!   backends: a restarted [`RedbStore`] deletes the keys of the previous process's leases
//!   when it opens ([`EtcdStore`]: etcd persists leases and extends them on restart).
//!
//! Backends:
//! - [`RedbStore`]: the embedded, crash-safe backend (redb: copy-on-write B-trees with
//!   checksummed commits, so a kill -9 leaves the last committed state). It carries a
//!   schema version and runs migrations at open. Revisions persist; watch history does not
//!   (a watch from before the open is [`StoreError::Compacted`]).
//! - [`MemStore`]: an in-memory backend for unit tests.
//! - [`EtcdStore`]: a pool's store, on an etcd v3 cluster (see its module for how the
//!   contract maps onto etcd and where etcd differs: leases expire in etcd's leader, not
//!   in [`Store::expire_leases`]; history lasts until compaction).
//!
//! The first two share the transaction, watch and lease logic (`state`, `watch`,
//! `lease`), so they cannot drift apart; the conformance suite in `conformance` runs
//! against all three (against etcd with a real `etcd` process and real time).

mod clock;
#[cfg(test)]
mod conformance;
mod etcd_store;
mod faulty;
mod lease;
mod mem;
mod redb_store;
mod state;
mod watch;

use std::fmt;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;

pub use clock::{Clock, ManualClock, SystemClock};
pub use etcd_store::{
    EtcdConfig, EtcdError, EtcdMember, EtcdStore, EtcdTls, MemberAnswer, QuorumLost,
};
pub use faulty::{FaultyStore, ReadHook};
pub use mem::MemStore;
pub use redb_store::{RedbStore, SCHEMA_VERSION};
pub use watch::{Event, Watcher, HISTORY_EVENTS, WATCH_BUFFER};

/// A point in the store's history; see the crate doc.
pub type Revision = u64;

/// The tables of the store. Adding one is a schema change: bump [`SCHEMA_VERSION`] and add
/// a migration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Table {
    /// Store metadata. In a [`RedbStore`] the key `schema_version` is the store's own.
    Meta,
    /// Images by `project/image-id`.
    Images,
    /// Tags by `project/registry/repository:tag`, each naming an image ID.
    Tags,
    /// Unpacked layers by diff ID; shared across projects, reference-counted by images.
    Layers,
    /// The specs of instances (what was asked for them; written by the API side) by
    /// `project/instance-id`.
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
    /// The image store's durable pins by `project/image-id/holder` (e.g.
    /// `default/<hex>/container/<id>`): an image with a pin is in use and is not removed.
    /// Written by whoever holds the image, in the transaction that makes the holder.
    ImageUsers,
    /// The statuses of the instances of [`Table::Containers`] (what is; written by the
    /// host side that realises them), by the same keys.
    ContainerStatus,
    /// The pool of hosts (`pier_cluster`): host records by `hosts/<host-id>`, each host's
    /// allocation by `allocations/<host-id>`, and instance assignments by
    /// `assignments/<project>/<instance-id>`. One table, so that one watch sees them in
    /// revision order (etcd: one prefix).
    Cluster,
}

impl Table {
    pub const ALL: [Table; 17] = [
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
        Table::ImageUsers,
        Table::ContainerStatus,
        Table::Cluster,
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
            Table::ImageUsers => "image_users",
            Table::ContainerStatus => "container_status",
            Table::Cluster => "cluster",
        }
    }

    /// The table of this [`Table::name`].
    pub fn from_name(name: &str) -> Option<Table> {
        Table::ALL.into_iter().find(|t| t.name() == name)
    }
}

impl fmt::Display for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A lease's identity; see [`Store::grant`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LeaseId(pub u64);

impl fmt::Display for LeaseId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:x}", self.0)
    }
}

/// A stored value with its revisions (etcd's `KeyValue` without `version`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    pub value: Vec<u8>,
    /// The revision of the transaction that created the key (since its last delete).
    pub create_revision: Revision,
    /// The revision of the transaction that last wrote the key.
    pub mod_revision: Revision,
    /// The lease the key is attached to: it is deleted when the lease ends.
    pub lease: Option<LeaseId>,
}

/// What [`Store::range`] read: entries in key order, and the store revision they were read
/// at (etcd's header revision), from which a watch continues without a gap.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Listing {
    pub revision: Revision,
    pub kvs: Vec<(String, KeyValue)>,
}

/// What a [`Compare`] requires of its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// The key does not exist (create-if-absent).
    Absent,
    /// The key exists.
    Present,
    /// The key exists and was last written at this revision (compare-and-swap).
    ModRevision(Revision),
}

impl fmt::Display for Expect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Expect::Absent => f.write_str("absent"),
            Expect::Present => f.write_str("present"),
            Expect::ModRevision(r) => write!(f, "at revision {r}"),
        }
    }
}

/// A condition of a [`Txn`] on one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Compare {
    pub table: Table,
    pub key: String,
    pub expect: Expect,
}

impl Compare {
    /// Whether it holds for its key last written at `found` (None: absent); the
    /// [`StoreError::Conflict`] naming the key when it does not. Every backend decides so.
    pub fn check(&self, found: Option<Revision>) -> Result<(), StoreError> {
        let holds = match self.expect {
            Expect::Absent => found.is_none(),
            Expect::Present => found.is_some(),
            Expect::ModRevision(r) => found == Some(r),
        };
        if holds {
            return Ok(());
        }
        Err(StoreError::Conflict {
            table: self.table,
            key: self.key.clone(),
            expected: self.expect,
            found,
        })
    }
}

/// One change in an atomic batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Writes the key, detached from any lease (as an etcd put without a lease).
    Put {
        table: Table,
        key: String,
        value: Vec<u8>,
    },
    /// Writes the key attached to a live lease; the key goes when the lease does.
    PutLeased {
        table: Table,
        key: String,
        value: Vec<u8>,
        lease: LeaseId,
    },
    /// Deletes the key if it exists.
    Delete { table: Table, key: String },
}

/// A conditional transaction: if every compare holds, apply every op, in order, at one
/// new revision; otherwise nothing.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Txn {
    pub compares: Vec<Compare>,
    pub ops: Vec<Op>,
}

fn describe(found: &Option<Revision>) -> String {
    match found {
        None => "absent".to_string(),
        Some(r) => format!("present at revision {r}"),
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
    #[error("cannot reach the etcd cluster at {endpoints} ({reason}); check that etcd runs there and that the endpoints are right, or start one (Debian: apt-get install etcd-server)")]
    Unreachable { endpoints: String, reason: String },
    #[error("state store backend error")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("corrupt record {table}/{key} in the state store")]
    Corrupt {
        table: &'static str,
        key: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("record {table}/{key} in the state store is damaged (no revision header); restore the state file from a backup")]
    Damaged { table: Table, key: String },
    #[error("{table}/{key} was required {expected} but is {}; another change came first: read it again and retry", describe(.found))]
    Conflict {
        table: Table,
        key: String,
        expected: Expect,
        /// The key's mod revision when the compare ran, or None if it was absent.
        found: Option<Revision>,
    },
    #[error("cannot watch from revision {requested}: the store keeps the events after revision {compacted} only; read the state again and watch from that read's revision + 1")]
    Compacted {
        requested: Revision,
        compacted: Revision,
    },
    #[error("the watcher fell more than {WATCH_BUFFER} events behind and was stopped; read the state again and watch from that read's revision + 1")]
    WatchLagged,
    #[error("lease {lease} does not exist or has expired; grant a new one")]
    LeaseNotFound { lease: LeaseId },
    #[error("{table}/{key} is reserved for the state store itself; use another key")]
    Reserved { table: Table, key: String },
}

/// The state-store interface; see the crate doc for the contract. Implementations are
/// safe to share between threads and usable as `dyn Store`.
pub trait Store: Send + Sync + 'static {
    /// The key's value and revisions, or None if it does not exist.
    fn get_kv(&self, table: Table, key: &str) -> Result<Option<KeyValue>, StoreError>;
    /// Every entry whose key starts with `prefix`, in key order, with the revision read at.
    fn range(&self, table: Table, prefix: &str) -> Result<Listing, StoreError>;
    /// The store's current revision.
    fn revision(&self) -> Result<Revision, StoreError>;
    /// Applies `txn` if its compares hold (else [`StoreError::Conflict`], nothing written)
    /// and returns the store revision after it. With `durable` false the change is
    /// visible at once but only reaches the disk with the next durable commit, so a crash
    /// may lose it: for records that something else can rebuild after a crash.
    fn txn(&self, txn: Txn, durable: bool) -> Result<Revision, StoreError>;
    /// The changes under `prefix` in `table` from revision `from` on (0: from now on).
    fn watch(&self, table: Table, prefix: &str, from: Revision) -> Result<Watcher, StoreError>;
    /// A new lease that ends `ttl` from now unless kept alive.
    fn grant(&self, ttl: Duration) -> Result<LeaseId, StoreError>;
    /// Restarts the lease's time to live; returns it.
    fn keep_alive(&self, lease: LeaseId) -> Result<Duration, StoreError>;
    /// Ends the lease now, deleting its keys; returns the store revision after it.
    fn revoke(&self, lease: LeaseId) -> Result<Revision, StoreError>;
    /// Ends every lease whose time to live has passed (see the crate doc for who calls
    /// this), deleting their keys; returns the leases ended.
    fn expire_leases(&self) -> Result<Vec<LeaseId>, StoreError>;

    /// The key's value, or None.
    fn get(&self, table: Table, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.get_kv(table, key)?.map(|kv| kv.value))
    }
    /// Every entry whose key starts with `prefix`, in key order.
    fn list(&self, table: Table, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let listing = self.range(table, prefix)?;
        Ok(listing
            .kvs
            .into_iter()
            .map(|(k, kv)| (k, kv.value))
            .collect())
    }
    /// Applies all `ops` atomically, unconditionally.
    fn commit(&self, ops: Vec<Op>) -> Result<(), StoreError> {
        self.commit_with(ops, true)
    }
    /// As [`Store::commit`], durable or not as in [`Store::txn`].
    fn commit_with(&self, ops: Vec<Op>, durable: bool) -> Result<(), StoreError> {
        let txn = Txn {
            compares: Vec::new(),
            ops,
        };
        self.txn(txn, durable).map(drop)
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
            Some(bytes) => decode(table, key, &bytes).map(Some),
        }
    }

    fn list_json<T: DeserializeOwned>(
        &self,
        table: Table,
        prefix: &str,
    ) -> Result<Vec<(String, T)>, StoreError> {
        self.list(table, prefix)?
            .into_iter()
            .map(|(key, bytes)| decode(table, &key, &bytes).map(|v| (key, v)))
            .collect()
    }
}

impl<S: Store + ?Sized> StoreExt for S {}

fn decode<T: DeserializeOwned>(table: Table, key: &str, bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|source| StoreError::Corrupt {
        table: table.name(),
        key: key.to_string(),
        source,
    })
}

/// Builds an atomic batch of JSON puts and deletes, optionally conditional.
#[derive(Debug, Default)]
pub struct Batch {
    pub ops: Vec<Op>,
    pub compares: Vec<Compare>,
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
    /// A put attached to `lease` (see [`Store::grant`]).
    pub fn put_json_leased<T: Serialize>(
        &mut self,
        table: Table,
        key: impl Into<String>,
        value: &T,
        lease: LeaseId,
    ) -> &mut Self {
        let value = serde_json::to_vec(value).expect("store records serialize to JSON");
        self.ops.push(Op::PutLeased {
            table,
            key: key.into(),
            value,
            lease,
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
    /// Makes the batch conditional on the key meeting `expect`.
    pub fn require(&mut self, table: Table, key: impl Into<String>, expect: Expect) -> &mut Self {
        self.compares.push(Compare {
            table,
            key: key.into(),
            expect,
        });
        self
    }
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty() && self.compares.is_empty()
    }
    pub fn commit(self, store: &dyn Store) -> Result<(), StoreError> {
        self.commit_at(store, true).map(drop)
    }

    /// Commits without waiting for the disk (see [`Store::txn`]).
    pub fn commit_lazy(self, store: &dyn Store) -> Result<(), StoreError> {
        self.commit_at(store, false).map(drop)
    }

    /// Commits and returns the store revision after the commit (None for an empty batch,
    /// which is not sent).
    pub fn commit_at(
        self,
        store: &dyn Store,
        durable: bool,
    ) -> Result<Option<Revision>, StoreError> {
        if self.is_empty() {
            return Ok(None);
        }
        let txn = Txn {
            compares: self.compares,
            ops: self.ops,
        };
        store.txn(txn, durable).map(Some)
    }
}
