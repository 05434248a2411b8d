//! The pool's membership in the store: who the members are, whether each is alive, and
//! the changes `pier host cordon/uncordon/rm` make. Blocking, over any [`Store`] (etcd in
//! a pool, [`pier_store::MemStore`] in tests).
//!
//! Each member has three records in [`Table::Cluster`] besides its allocation:
//! - `hosts/ID` ([`HostRecord`], the scheduler's): labels, capacity and the state an
//!   operator sets (`up`, `cordoned`); written at join and by cordon/uncordon only, each
//!   time with a conditional write on the revision read, so no change is lost;
//! - `members/ID` ([`MemberRecord`]): where it is (its address, its cluster listener)
//!   and whether it runs an etcd member (its client URL); written once, at join;
//! - `heartbeats/ID` ([`Heartbeat`]): attached to a lease of the member's own that
//!   [`Heartbeater`] keeps alive and rewrites each beat. When the member stops (or is cut
//!   off) the lease expires and etcd deletes the key: the host shows `down`. Kept apart
//!   from the host record, so that beats never disturb placements (which compare that
//!   record's revision).
//!
//! A host's ID is its name (`--name`, by default the machine's host name), unique in the
//! pool: registering a taken name is refused.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use pier_store::{Compare, Expect, LeaseId, Op, Store, StoreError, Table, Txn};
use serde::{Deserialize, Serialize};

use crate::networks::NetPoolError;
use crate::scheduler::keys;
use crate::scheduler::{Allocation, HostRecord, HostState, Resources};

/// The pool's own record ([`PoolRecord`]), written once by `pier cluster init`.
pub const POOL: &str = "pool";
/// Member records ([`MemberRecord`]) by host ID.
pub const MEMBERS: &str = "members/";
/// Heartbeats ([`Heartbeat`]) by host ID, each on its member's lease.
pub const HEARTBEATS: &str = "heartbeats/";

pub fn member_key(id: &str) -> String {
    format!("{MEMBERS}{id}")
}

pub fn heartbeat_key(id: &str) -> String {
    format!("{HEARTBEATS}{id}")
}

/// What makes a pool: its ID and CA.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolRecord {
    pub cluster_id: String,
    pub ca_fingerprint: String,
    /// Unix seconds.
    pub created: u64,
}

/// Where a member is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemberRecord {
    pub id: String,
    /// The address it advertises to the pool (an IP).
    pub address: String,
    /// Its cluster listener (`IP:PORT`), where hosts join and members talk.
    pub cluster_addr: String,
    /// The client URL of the etcd member it runs, if it runs one.
    #[serde(default)]
    pub etcd_client_url: Option<String>,
    /// When it joined, Unix seconds.
    pub joined: u64,
    /// Whether it keeps the pool's CA key (the host that made the pool, and those that
    /// joined to run its etcd): hosts join through it.
    #[serde(default)]
    pub signs: bool,
}

/// A member's last beat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Heartbeat {
    /// Unix seconds, by the member's clock.
    pub at: u64,
    /// The lease's time to live, seconds.
    pub ttl: u64,
}

/// Why a membership change failed.
#[derive(Debug, thiserror::Error)]
pub enum MemberError {
    #[error("bad host name {0:?}: use 1-63 lower-case letters, digits and '-', starting with a letter or digit")]
    BadName(String),
    #[error("a host named {0} is in the pool already; give this one another --name, or remove the old one with `pier host rm {0}` on a member")]
    NameTaken(String),
    #[error("this etcd holds a Pier pool already (cluster {0}); join that pool with `pier cluster join`, or give another etcd")]
    PoolExists(String),
    #[error("no host {0} in the pool; `pier host ls` lists them")]
    NotFound(String),
    #[error("host {0} is up; stop its daemon first (or give --force to remove it anyway)")]
    Up(String),
    #[error(
        "host {id} still has {instances} instances assigned; move them off first (or give --force)"
    )]
    HasInstances { id: String, instances: u64 },
    #[error("host {0} runs the pool's last voting etcd member (or one of an etcd Pier does not run); removing it would lose the pool's state (give --force only if that etcd is gone for good)")]
    EtcdMember(String),
    #[error("this host ({0}) was removed from the pool (`pier host rm`), so it stopped its heartbeat; to be a member again, delete ROOT/cluster and join with a new token")]
    Removed(String),
    #[error("host {0} changed under this request too many times in a row; try again")]
    Contended(String),
    #[error("record {key} of the pool is corrupt; rewrite or delete it")]
    Corrupt {
        key: String,
        #[source]
        source: serde_json::Error,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Checks a host name: it is the host's ID in the pool, an etcd member name and a DNS
/// name in its certificate.
pub fn check_name(name: &str) -> Result<(), MemberError> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && !name.starts_with('-')
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(MemberError::BadName(name.to_string()))
    }
}

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn json(v: &impl Serialize) -> Vec<u8> {
    serde_json::to_vec(v).expect("pool records serialize to JSON")
}

fn decode<T: serde::de::DeserializeOwned>(key: &str, bytes: &[u8]) -> Result<T, MemberError> {
    serde_json::from_slice(bytes).map_err(|source| MemberError::Corrupt {
        key: key.to_string(),
        source,
    })
}

/// Adds a member: its host record and member record, both required absent (a taken name
/// is [`MemberError::NameTaken`]).
pub fn register(
    store: &dyn Store,
    host: &HostRecord,
    member: &MemberRecord,
) -> Result<(), MemberError> {
    match add_member(store, None, host, member) {
        Err(MemberError::Store(StoreError::Conflict { .. })) => {
            Err(MemberError::NameTaken(host.id.clone()))
        }
        r => r,
    }
}

/// Makes the pool in an empty store: its record and its first member's, in one
/// transaction (a store holding a pool already is [`MemberError::PoolExists`]).
pub fn found_pool(
    store: &dyn Store,
    pool: &PoolRecord,
    host: &HostRecord,
    member: &MemberRecord,
) -> Result<(), MemberError> {
    match add_member(store, Some(pool), host, member) {
        Err(MemberError::Store(StoreError::Conflict { .. })) => {
            let found = store
                .get(keys::TABLE, POOL)?
                .and_then(|b| serde_json::from_slice::<PoolRecord>(&b).ok())
                .map_or_else(|| "unknown".to_string(), |p| p.cluster_id);
            Err(MemberError::PoolExists(found))
        }
        r => r,
    }
}

/// Writes a member's host and member records (and, founding the pool, its record), each
/// required absent; a [`StoreError::Conflict`] when one is there already.
fn add_member(
    store: &dyn Store,
    pool: Option<&PoolRecord>,
    host: &HostRecord,
    member: &MemberRecord,
) -> Result<(), MemberError> {
    check_name(&host.id)?;
    let mut txn = Txn::default();
    let mut add = |key: String, value: Vec<u8>| {
        txn.compares.push(Compare {
            table: keys::TABLE,
            key: key.clone(),
            expect: Expect::Absent,
        });
        txn.ops.push(Op::Put {
            table: keys::TABLE,
            key,
            value,
        });
    };
    if let Some(p) = pool {
        add(POOL.to_string(), json(p));
    }
    add(keys::host(&host.id), json(host));
    add(member_key(&host.id), json(member));
    store.txn(txn, true)?;
    Ok(())
}

/// Undoes [`found_pool`] (a failed init).
pub fn unfound_pool(store: &dyn Store, id: &str) -> Result<(), MemberError> {
    delete_keys(
        store,
        [
            POOL.to_string(),
            keys::host(id),
            member_key(id),
            heartbeat_key(id),
        ],
    )
}

/// Deletes `keys` of the pool's table in one transaction.
fn delete_keys(
    store: &dyn Store,
    keys: impl IntoIterator<Item = String>,
) -> Result<(), MemberError> {
    let ops = keys
        .into_iter()
        .map(|key| Op::Delete {
            table: keys::TABLE,
            key,
        })
        .collect();
    store.txn(
        Txn {
            compares: vec![],
            ops,
        },
        true,
    )?;
    Ok(())
}

/// Whether a host named `id` is in the pool.
pub fn exists(store: &dyn Store, id: &str) -> Result<bool, MemberError> {
    Ok(store.get_kv(keys::TABLE, &keys::host(id))?.is_some())
}

/// A host as `pier host ls/inspect` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostStatus {
    pub record: HostRecord,
    pub member: Option<MemberRecord>,
    pub allocation: Allocation,
    pub heartbeat: Option<Heartbeat>,
}

/// Whether host `me` is the last of `hosts` to keep the pool's CA key: with it gone, no
/// host could join the others. False when it is the only host, or others keep it too.
pub fn last_to_sign(hosts: &[HostStatus], me: &str) -> bool {
    let others = hosts.iter().filter(|h| h.record.id != me);
    let mut others = others.peekable();
    others.peek().is_some() && !others.any(|h| h.member.as_ref().is_some_and(|m| m.signs))
}

impl HostStatus {
    /// `down` when its heartbeat is gone, whatever its record says; else the record's
    /// state (`up`, `cordoned`, ...).
    pub fn state(&self) -> HostState {
        if self.heartbeat.is_none() {
            HostState::Down
        } else {
            self.record.state
        }
    }
}

/// Every host of the pool, by ID.
pub fn hosts(store: &dyn Store) -> Result<Vec<HostStatus>, MemberError> {
    let records = store.range(keys::TABLE, keys::HOSTS)?;
    let members = store.range(keys::TABLE, MEMBERS)?;
    let allocations = store.range(keys::TABLE, keys::ALLOCATIONS)?;
    let beats = store.range(keys::TABLE, HEARTBEATS)?;
    let find = |l: &pier_store::Listing, prefix: &str, id: &str| {
        let key = format!("{prefix}{id}");
        l.kvs
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(k, kv)| (k.clone(), kv.value.clone()))
    };
    let mut out = Vec::new();
    for (key, kv) in &records.kvs {
        let record: HostRecord = decode(key, &kv.value)?;
        let id = record.id.clone();
        let member = find(&members, MEMBERS, &id)
            .map(|(k, v)| decode(&k, &v))
            .transpose()?;
        let allocation = find(&allocations, keys::ALLOCATIONS, &id)
            .map(|(k, v)| decode(&k, &v))
            .transpose()?
            .unwrap_or_default();
        let heartbeat = find(&beats, HEARTBEATS, &id)
            .map(|(k, v)| decode(&k, &v))
            .transpose()?;
        out.push(HostStatus {
            record,
            member,
            allocation,
            heartbeat,
        });
    }
    Ok(out)
}

/// One host.
pub fn host(store: &dyn Store, id: &str) -> Result<HostStatus, MemberError> {
    let get = |key: String| -> Result<Option<Vec<u8>>, MemberError> {
        Ok(store.get_kv(keys::TABLE, &key)?.map(|kv| kv.value))
    };
    let key = keys::host(id);
    let Some(bytes) = get(key.clone())? else {
        return Err(MemberError::NotFound(id.to_string()));
    };
    let record = decode(&key, &bytes)?;
    let member = get(member_key(id))?
        .map(|b| decode(&member_key(id), &b))
        .transpose()?;
    let allocation = get(keys::allocation(id))?
        .map(|b| decode(&keys::allocation(id), &b))
        .transpose()?
        .unwrap_or_default();
    let heartbeat = get(heartbeat_key(id))?
        .map(|b| decode(&heartbeat_key(id), &b))
        .transpose()?;
    Ok(HostStatus {
        record,
        member,
        allocation,
        heartbeat,
    })
}

/// Cordons the host (`cordon`: it keeps its instances but takes no new ones) or opens it
/// again, with a conditional write on the record as read; returns the host as it is now.
pub fn set_cordon(store: &dyn Store, id: &str, cordon: bool) -> Result<HostStatus, MemberError> {
    update_record(store, id, |r| {
        r.state = if cordon {
            HostState::Cordoned
        } else {
            HostState::Up
        };
    })
}

/// Records what the host has now (a daemon start may find more or less memory, CPUs or
/// disk than at its join); returns the host as it is now.
pub fn set_capacity(
    store: &dyn Store,
    id: &str,
    capacity: Resources,
) -> Result<HostStatus, MemberError> {
    update_record(store, id, |r| r.capacity = capacity)
}

/// Changes the host's record with a conditional write on the record as read, reading
/// again when another writer came first.
fn update_record(
    store: &dyn Store,
    id: &str,
    change: impl Fn(&mut HostRecord),
) -> Result<HostStatus, MemberError> {
    let key = keys::host(id);
    for _ in 0..16 {
        let Some(kv) = store.get_kv(keys::TABLE, &key)? else {
            return Err(MemberError::NotFound(id.to_string()));
        };
        let mut record: HostRecord = decode(&key, &kv.value)?;
        change(&mut record);
        let txn = Txn {
            compares: vec![Compare {
                table: keys::TABLE,
                key: key.clone(),
                expect: Expect::ModRevision(kv.mod_revision),
            }],
            ops: vec![keys::put_host(&record)],
        };
        match store.txn(txn, true) {
            Ok(_) => return host(store, id),
            Err(StoreError::Conflict { .. }) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(MemberError::Contended(id.to_string()))
}

/// Removes a host from the pool: its records, allocation, heartbeat, instance records
/// ([`crate::instances`]) and the network addresses its endpoints claimed
/// ([`crate::networks::release_host`]); the last two after the host's record (too), so
/// that a daemon still running cannot write one back. An `up` host (one that
/// heartbeats), one running an etcd member of the pool, or one with instances assigned
/// is refused unless `force`.
pub fn remove(store: &dyn Store, id: &str, force: bool) -> Result<(), MemberError> {
    remove_with(store, id, force, |_| Ok(false))
}

/// As [`remove`], for a pool whose etcd members Pier runs: `leave_etcd` is called, once
/// the host passed the other checks, for a host that runs an etcd member, and removes that
/// member from etcd (`Ok(true)`), or says it cannot be (`Ok(false)`: refused unless
/// `force`).
pub fn remove_with(
    store: &dyn Store,
    id: &str,
    force: bool,
    leave_etcd: impl FnOnce(&MemberRecord) -> Result<bool, MemberError>,
) -> Result<(), MemberError> {
    let status = host(store, id)?;
    if !force {
        if status.heartbeat.is_some() {
            return Err(MemberError::Up(id.to_string()));
        }
        if status.allocation.instances > 0 {
            return Err(MemberError::HasInstances {
                id: id.to_string(),
                instances: status.allocation.instances,
            });
        }
    }
    if let Some(m) = status
        .member
        .as_ref()
        .filter(|m| m.etcd_client_url.is_some())
    {
        if !leave_etcd(m)? && !force {
            return Err(MemberError::EtcdMember(id.to_string()));
        }
    }
    // Its claims before (should that fail, the host is still there to remove again) and
    // after (a claim requires its host's record, so none comes after).
    release_claims(store, id)?;
    delete_keys(
        store,
        [
            keys::host(id),
            member_key(id),
            keys::allocation(id),
            heartbeat_key(id),
        ],
    )?;
    // Its instance records, which it can no longer write (nor delete).
    crate::instances::forget_host(store, id)?;
    release_claims(store, id)?;
    Ok(())
}

/// Releases the network addresses host `id` claimed.
fn release_claims(store: &dyn Store, id: &str) -> Result<(), MemberError> {
    crate::networks::release_host(store, id).map_err(|e| match e {
        NetPoolError::Store(e) => MemberError::Store(e),
        NetPoolError::Corrupt { key, source } => MemberError::Corrupt { key, source },
        // Releasing can otherwise only lose to other writers every time.
        _ => MemberError::Contended(id.to_string()),
    })?;
    Ok(())
}

/// Keeps a member's heartbeat: [`Heartbeater::beat`] every [`Heartbeater::period`].
pub struct Heartbeater {
    id: String,
    ttl: Duration,
    lease: Option<LeaseId>,
}

impl Heartbeater {
    /// A heartbeat of host `id` whose lease lives `ttl` (at least a second: etcd's
    /// leases are whole seconds).
    pub fn new(id: &str, ttl: Duration) -> Self {
        Heartbeater {
            id: id.to_string(),
            ttl: ttl.max(Duration::from_secs(1)),
            lease: None,
        }
    }

    /// How often to beat: three times per time to live, so that one late beat does not
    /// let the lease expire.
    pub fn period(&self) -> Duration {
        self.ttl / 3
    }

    /// Renews the lease (granting a new one when it expired, after the member was cut
    /// off) and rewrites the heartbeat with the time; [`MemberError::Removed`] when the
    /// pool has no record of this host any more.
    pub fn beat(&mut self, store: &dyn Store) -> Result<(), MemberError> {
        let lease = match self.lease {
            Some(l) => match store.keep_alive(l) {
                Ok(_) => l,
                Err(StoreError::LeaseNotFound { .. }) => store.grant(self.ttl)?,
                Err(e) => return Err(e.into()),
            },
            None => store.grant(self.ttl)?,
        };
        self.lease = Some(lease);
        let beat = Heartbeat {
            at: unix_now(),
            ttl: self.ttl.as_secs(),
        };
        let put = Op::PutLeased {
            table: keys::TABLE,
            key: heartbeat_key(&self.id),
            value: json(&beat),
            lease,
        };
        // Only while its record is there: a host removed from the pool does not write a
        // heartbeat for a host the pool no longer has.
        let present = Compare {
            table: keys::TABLE,
            key: keys::host(&self.id),
            expect: Expect::Present,
        };
        match store.txn(
            Txn {
                compares: vec![present],
                ops: vec![put],
            },
            false,
        ) {
            Ok(_) => Ok(()),
            Err(StoreError::Conflict { .. }) => {
                let _ = store.revoke(lease);
                self.lease = None;
                Err(MemberError::Removed(self.id.clone()))
            }
            // Expired between the renewal and the put: a new lease next beat.
            Err(StoreError::LeaseNotFound { .. }) => {
                self.lease = None;
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Ends the heartbeat at once (a clean stop): the host shows `down` without waiting
    /// for the lease to expire.
    pub fn stop(&mut self, store: &dyn Store) -> Result<(), MemberError> {
        if let Some(l) = self.lease.take() {
            match store.revoke(l) {
                Ok(_) | Err(StoreError::LeaseNotFound { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }
}

/// The table a member's records live in (for callers that watch it).
pub const TABLE: Table = keys::TABLE;

#[cfg(test)]
mod tests {
    use super::*;
    use pier_store::MemStore;

    fn record(id: &str) -> HostRecord {
        HostRecord {
            id: id.into(),
            labels: [("zone".to_string(), "a".to_string())].into(),
            state: HostState::Up,
            capacity: Resources {
                cpu_millis: 2000,
                memory_bytes: 1 << 30,
                disk_bytes: 1 << 34,
            },
        }
    }

    fn member(id: &str) -> MemberRecord {
        MemberRecord {
            id: id.into(),
            address: "10.0.0.1".into(),
            cluster_addr: "10.0.0.1:7443".into(),
            etcd_client_url: None,
            joined: 1,
            signs: false,
        }
    }

    #[test]
    fn the_last_host_keeping_the_ca_key_is_told_apart() {
        let host = |id: &str, signs: bool| HostStatus {
            record: record(id),
            member: Some(MemberRecord {
                signs,
                ..member(id)
            }),
            allocation: Allocation::default(),
            heartbeat: None,
        };
        let alone = [host("h1", true)];
        assert!(!last_to_sign(&alone, "h1"), "the only host");
        let pool = [host("h1", true), host("h2", true), host("h4", false)];
        assert!(!last_to_sign(&pool, "h1"), "h2 keeps it too");
        assert!(!last_to_sign(&pool, "h4"));
        let left = [host("h1", true), host("h4", false), host("h5", false)];
        assert!(last_to_sign(&left, "h1"));
        let unrecorded = [
            host("h1", true),
            HostStatus {
                member: None,
                ..host("h4", false)
            },
        ];
        assert!(last_to_sign(&unrecorded, "h1"));
    }

    #[test]
    fn names_are_unique_and_checked() {
        let s = MemStore::default();
        register(&s, &record("h1"), &member("h1")).unwrap();
        let e = register(&s, &record("h1"), &member("h1")).unwrap_err();
        assert!(matches!(e, MemberError::NameTaken(_)), "{e}");
        assert!(e.to_string().contains("--name"), "{e}");
        for bad in ["", "H1", "-a", "a_b", &"a".repeat(64)] {
            assert!(matches!(check_name(bad), Err(MemberError::BadName(_))));
        }
        check_name("host-1").unwrap();
        assert!(exists(&s, "h1").unwrap());
        assert!(!exists(&s, "h2").unwrap());
    }

    #[test]
    fn a_pool_is_founded_once() {
        let s = MemStore::default();
        let pool = PoolRecord {
            cluster_id: "c1".into(),
            ca_fingerprint: "ab".into(),
            created: 1,
        };
        found_pool(&s, &pool, &record("h1"), &member("h1")).unwrap();
        let e = found_pool(&s, &pool, &record("h9"), &member("h9")).unwrap_err();
        assert!(matches!(&e, MemberError::PoolExists(c) if c == "c1"), "{e}");
        assert!(!exists(&s, "h9").unwrap());
        unfound_pool(&s, "h1").unwrap();
        assert!(s.list(TABLE, "").unwrap().is_empty());
    }

    #[test]
    fn a_host_is_down_without_its_heartbeat_and_up_with_it() {
        let s = MemStore::default();
        register(&s, &record("h1"), &member("h1")).unwrap();
        assert_eq!(host(&s, "h1").unwrap().state(), HostState::Down);
        let mut hb = Heartbeater::new("h1", Duration::from_secs(3));
        assert_eq!(hb.period(), Duration::from_secs(1));
        hb.beat(&s).unwrap();
        let h = host(&s, "h1").unwrap();
        assert_eq!(h.state(), HostState::Up);
        assert_eq!(h.heartbeat.as_ref().unwrap().ttl, 3);
        assert_eq!(h.member, Some(member("h1")));
        // Cordoned shows while it heartbeats; down wins when the beat is gone.
        assert_eq!(
            set_cordon(&s, "h1", true).unwrap().state(),
            HostState::Cordoned
        );
        assert_eq!(hosts(&s).unwrap()[0].state(), HostState::Cordoned);
        hb.stop(&s).unwrap();
        assert_eq!(host(&s, "h1").unwrap().state(), HostState::Down);
        assert_eq!(host(&s, "h1").unwrap().record.state, HostState::Cordoned);
        // A beat after the lease went grants a new one.
        hb.beat(&s).unwrap();
        assert_eq!(set_cordon(&s, "h1", false).unwrap().state(), HostState::Up);
        assert!(matches!(
            set_cordon(&s, "nope", true),
            Err(MemberError::NotFound(_))
        ));
        // A new capacity keeps the rest of the record.
        set_cordon(&s, "h1", true).unwrap();
        let bigger = Resources {
            cpu_millis: 64_000,
            memory_bytes: 1 << 40,
            disk_bytes: 1 << 42,
        };
        let h = set_capacity(&s, "h1", bigger).unwrap();
        assert_eq!(h.record.capacity, bigger);
        assert_eq!(h.record.state, HostState::Cordoned);
    }

    #[test]
    fn remove_refuses_an_up_host_unless_forced_and_takes_everything() {
        let s = MemStore::default();
        register(&s, &record("h1"), &member("h1")).unwrap();
        let mut hb = Heartbeater::new("h1", Duration::from_secs(30));
        hb.beat(&s).unwrap();
        let e = remove(&s, "h1", false).unwrap_err();
        assert!(e.to_string().contains("stop its daemon first"), "{e}");
        let instance = crate::instances::InstanceRecord {
            project: "default".into(),
            id: "c1".into(),
            name: "web".into(),
            host: "h1".into(),
            kind: "container".into(),
            image: "bb".into(),
            command: String::new(),
            state: "running".into(),
            status: "Up".into(),
            created: "2026-12-07T10:00:00Z".into(),
            started_at: None,
            finished_at: None,
            exit_code: None,
            ports: vec![],
            labels: Default::default(),
        };
        crate::instances::put(&s, &instance).unwrap();
        remove(&s, "h1", true).unwrap();
        assert!(s
            .list(TABLE, crate::instances::INSTANCES)
            .unwrap()
            .is_empty());
        for prefix in [keys::HOSTS, MEMBERS, HEARTBEATS, keys::ALLOCATIONS] {
            assert!(s.list(TABLE, prefix).unwrap().is_empty(), "{prefix}");
        }
        assert!(matches!(
            remove(&s, "h1", false),
            Err(MemberError::NotFound(_))
        ));
        // Its daemon, still running, beats no more: it was removed.
        assert!(matches!(hb.beat(&s), Err(MemberError::Removed(h)) if h == "h1"));
        assert!(s.list(TABLE, HEARTBEATS).unwrap().is_empty());
        // A down host with instances is refused too, until forced.
        register(&s, &record("h2"), &member("h2")).unwrap();
        s.commit(vec![Op::Put {
            table: TABLE,
            key: keys::allocation("h2"),
            value: json(&Allocation {
                instances: 2,
                ..Default::default()
            }),
        }])
        .unwrap();
        assert!(matches!(
            remove(&s, "h2", false),
            Err(MemberError::HasInstances { instances: 2, .. })
        ));
        remove(&s, "h2", true).unwrap();
        // A down host running the pool's etcd: refused until forced.
        let mut m = member("h3");
        m.etcd_client_url = Some("https://10.0.0.3:2379".into());
        register(&s, &record("h3"), &m).unwrap();
        let e = remove(&s, "h3", false).unwrap_err();
        assert!(matches!(e, MemberError::EtcdMember(_)), "{e}");
        remove(&s, "h3", true).unwrap();
    }
}
