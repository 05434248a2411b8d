//! Networks across the pool: their records in the pool's store, the addresses claimed
//! on them, and ([`view`]) what each member reads off them to program its VXLAN link.
//! Blocking, over any [`Store`] (etcd in a pool, [`pier_store::MemStore`] in tests).
//!
//! A pool network has one VNI, one subnet and one address space for the whole pool;
//! every member mirrors it into its own store and realises it (a bridge and a VXLAN
//! link). Its records, all in [`Table::Cluster`]:
//!
//! | key | value | written by |
//! |---|---|---|
//! | `networks/<project>/<net-id>` | [`PoolNetwork`] | create (required absent), remove |
//! | `netnames/<project>/<name>` | the net ID | the same transactions (absent): one name per project |
//! | `vnis/<vni>` | the net ID | the same transactions (absent): one network per VNI |
//! | `netepoch` | the net ID of the last change | every create and remove |
//! | `netusers/<net-id>` | a counter | every claim and release |
//! | `leases/<net-id>/<ip>` | [`PoolLease`] | claim (absent), release |
//! | `netmacs/<net-id>/<mac>` | the IP | with its lease (absent): one MAC per network |
//!
//! How the rules hold with writers racing on several members:
//! - **Name and VNI** are index keys required absent by the create.
//! - **Subnets** cannot be keyed (overlap is not equality): a create reads every network
//!   and `netepoch` first, checks its subnet against them, and requires `netepoch`
//!   unchanged, so a create or remove committed meanwhile makes it read again.
//! - **An address** is claimed once: its lease key is required absent (its MAC's too).
//! - **Remove vs claim**: a claim requires the network's record present; a remove reads
//!   `netusers` and then the leases, and requires `netusers` unchanged, so a claim that
//!   commits in between makes the remove read again and find it in use.
//! - **A host removed** from the pool (`pier host rm`) has its claims released
//!   ([`release_host`]), and makes no more: a claim requires its host's record
//!   (`hosts/<id>`). A host that is only down keeps them (its instances may run).

pub mod view;

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use pier_api::networks::NetworkInspect;
use pier_api::Ipv4Net;
use pier_store::{Compare, Expect, KeyValue, Op, Revision, Store, StoreError, Table, Txn};
use serde::{Deserialize, Serialize};

pub use view::{desired, Desired, OverlayView};

/// The table of the pool.
pub const TABLE: Table = Table::Cluster;
/// Pool networks ([`PoolNetwork`]) by `project/net-id`.
pub const NETWORKS: &str = "networks/";
/// Network IDs by `project/name`.
pub const NETNAMES: &str = "netnames/";
/// Network IDs by VNI.
pub const VNIS: &str = "vnis/";
/// The ID of the network last created or removed; see the module doc.
pub const NETEPOCH: &str = "netepoch";
/// Per network: rewritten by every claim and release.
pub const NETUSERS: &str = "netusers/";
/// Address claims ([`PoolLease`]) by `net-id/ip`.
pub const LEASES: &str = "leases/";
/// The address holding each MAC, by `net-id/mac`.
pub const NETMACS: &str = "netmacs/";

/// The VNIs Pier gives pool networks: below 4096 is left to VLAN-numbered setups.
pub const VNI_MIN: u32 = 4096;
/// The largest VNI (24 bits).
pub const VNI_MAX: u32 = (1 << 24) - 1;

/// Where pool networks get their subnets when none is asked for: the /24s of this.
pub const POOL_SUBNETS: (Ipv4Addr, u8) = (Ipv4Addr::new(10, 210, 0, 0), 16);

/// How often a transaction is tried again after another writer came first.
const ATTEMPTS: usize = 16;

pub fn network_key(project: &str, id: &str) -> String {
    format!("{NETWORKS}{project}/{id}")
}

pub fn name_key(project: &str, name: &str) -> String {
    format!("{NETNAMES}{project}/{name}")
}

pub fn vni_key(vni: u32) -> String {
    format!("{VNIS}{vni}")
}

pub fn users_key(net_id: &str) -> String {
    format!("{NETUSERS}{net_id}")
}

pub fn lease_key(net_id: &str, ip: Ipv4Addr) -> String {
    format!("{LEASES}{net_id}/{ip}")
}

/// The prefix of a network's claims.
pub fn leases_of(net_id: &str) -> String {
    format!("{LEASES}{net_id}/")
}

pub fn mac_key(net_id: &str, mac: &str) -> String {
    format!("{NETMACS}{net_id}/{}", mac.to_ascii_lowercase())
}

/// A network across the pool, as every member mirrors it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolNetwork {
    /// Its VXLAN network identifier.
    pub vni: u32,
    /// The network as its creator recorded it; `bridge` and `containers` are empty (each
    /// member names its own bridge; endpoints are the claims).
    pub network: NetworkInspect,
}

impl PoolNetwork {
    pub fn id(&self) -> &str {
        &self.network.id
    }

    pub fn project(&self) -> &str {
        self.network.project.as_str()
    }

    pub fn key(&self) -> String {
        network_key(self.project(), self.id())
    }
}

/// One address claimed on a pool network: which host's endpoint holds it, and what the
/// other members need to reach it (its MAC) and to name it (its names).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolLease {
    /// The host the endpoint is on.
    pub host: String,
    pub project: String,
    /// The instance's ID.
    pub container: String,
    /// Its name, and more names it answers to on this network.
    pub name: String,
    #[serde(default)]
    pub aliases: Vec<String>,
    /// The first 12 digits of its ID (a DNS name too).
    pub short_id: String,
    /// `aa:bb:cc:dd:ee:ff`.
    pub mac: String,
    /// Its interface in the instance (`eth0`, ...).
    pub ifname: String,
}

impl PoolLease {
    /// The MAC as bytes, or None when the record's is not one.
    pub fn mac_bytes(&self) -> Option<[u8; 6]> {
        parse_mac(&self.mac)
    }
}

/// `aa:bb:cc:dd:ee:ff` as bytes.
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut out = [0u8; 6];
    let mut parts = s.split(':');
    for b in &mut out {
        let p = parts.next()?;
        if p.len() != 2 {
            return None;
        }
        *b = u8::from_str_radix(p, 16).ok()?;
    }
    parts.next().is_none().then_some(out)
}

/// Why a change of the pool's networks failed.
#[derive(Debug, thiserror::Error)]
pub enum NetPoolError {
    #[error("network {name} already exists in the pool (project {project}); choose another name")]
    NameTaken { project: String, name: String },
    #[error("VNI {0} is taken by another network of the pool; choose another")]
    VniTaken(u32),
    #[error("VNI {0} is out of range: pool networks use {VNI_MIN}-{VNI_MAX}")]
    VniOutOfRange(u32),
    #[error("every VNI of the pool ({VNI_MIN}-{VNI_MAX}) is taken; remove unused networks")]
    NoFreeVni,
    #[error("subnet {subnet} overlaps subnet {other_subnet} of network {other} in the pool; choose another --subnet")]
    SubnetOverlaps {
        subnet: Ipv4Net,
        other: String,
        other_subnet: Ipv4Net,
    },
    #[error(
        "no /24 of {} is free for another pool network; give --subnet",
        pool_subnets()
    )]
    NoFreeSubnet,
    #[error("network {0} is not in the pool (was it removed meanwhile?)")]
    NotFound(String),
    #[error("network {network} is in use by {endpoints} endpoints on {}: remove them first", hosts.join(", "))]
    InUse {
        network: String,
        endpoints: usize,
        hosts: Vec<String>,
    },
    #[error("address {ip} of network {network} is claimed by {container} on host {host}")]
    AddressTaken {
        network: String,
        ip: Ipv4Addr,
        host: String,
        container: String,
    },
    #[error(
        "MAC address {mac} is in use on network {network} (by {ip}); choose another --mac-address"
    )]
    MacTaken {
        network: String,
        mac: String,
        ip: String,
    },
    #[error("address {ip} is not one network {network} gives out ({subnet}, gateway {gateway} excepted)")]
    NotInSubnet {
        network: String,
        ip: Ipv4Addr,
        subnet: Ipv4Net,
        gateway: Ipv4Addr,
    },
    #[error(
        "host {0} is not in the pool (removed with `pier host rm`?), so it claims no addresses"
    )]
    HostNotInPool(String),
    #[error("bad MAC address {0:?} in an address claim: use aa:bb:cc:dd:ee:ff")]
    BadMac(String),
    #[error(
        "the pool's network records changed under this request too many times in a row; try again"
    )]
    Contended,
    #[error("record {key} of the pool is corrupt; rewrite or delete it")]
    Corrupt {
        key: String,
        #[source]
        source: serde_json::Error,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The range pool subnets are picked from.
pub fn pool_subnets() -> Ipv4Net {
    Ipv4Net::new(POOL_SUBNETS.0, POOL_SUBNETS.1).expect("a valid network")
}

fn json(v: &impl Serialize) -> Vec<u8> {
    serde_json::to_vec(v).expect("pool records serialize to JSON")
}

pub(crate) fn decode<T: serde::de::DeserializeOwned>(
    key: &str,
    bytes: &[u8],
) -> Result<T, NetPoolError> {
    serde_json::from_slice(bytes).map_err(|source| NetPoolError::Corrupt {
        key: key.to_string(),
        source,
    })
}

fn put(key: String, value: Vec<u8>) -> Op {
    Op::Put {
        table: TABLE,
        key,
        value,
    }
}

fn del(key: String) -> Op {
    Op::Delete { table: TABLE, key }
}

fn require(key: String, expect: Expect) -> Compare {
    Compare {
        table: TABLE,
        key,
        expect,
    }
}

/// The compare that `kv` (None: absent) is still as read.
fn unchanged(key: String, kv: &Option<KeyValue>) -> Compare {
    require(
        key,
        kv.as_ref()
            .map_or(Expect::Absent, |kv| Expect::ModRevision(kv.mod_revision)),
    )
}

/// The pool's networks as read at one `netepoch`.
#[derive(Debug, Clone, Default)]
pub struct PoolNetworks {
    /// `netepoch` as read (None: no network was ever made).
    pub epoch: Option<KeyValue>,
    /// By network ID.
    pub networks: BTreeMap<String, PoolNetwork>,
}

impl PoolNetworks {
    /// Reads `netepoch`, then every network: a create checked against these and
    /// requiring `netepoch` unchanged saw every network there is.
    pub fn read(store: &dyn Store) -> Result<PoolNetworks, NetPoolError> {
        let epoch = store.get_kv(TABLE, NETEPOCH)?;
        let mut networks = BTreeMap::new();
        for (key, kv) in store.range(TABLE, NETWORKS)?.kvs {
            let n: PoolNetwork = decode(&key, &kv.value)?;
            networks.insert(n.id().to_string(), n);
        }
        Ok(PoolNetworks { epoch, networks })
    }

    /// The network named `name` in `project`.
    pub fn by_name(&self, project: &str, name: &str) -> Option<&PoolNetwork> {
        self.networks
            .values()
            .find(|n| n.project() == project && n.network.name == name)
    }

    pub fn vnis(&self) -> BTreeSet<u32> {
        self.networks.values().map(|n| n.vni).collect()
    }

    pub fn subnets(&self) -> Vec<Ipv4Net> {
        self.networks.values().map(|n| n.network.subnet).collect()
    }

    /// Whether `rec` may join these: its name, VNI and subnet are its own.
    pub fn check_new(&self, rec: &PoolNetwork) -> Result<(), NetPoolError> {
        if !(VNI_MIN..=VNI_MAX).contains(&rec.vni) {
            return Err(NetPoolError::VniOutOfRange(rec.vni));
        }
        if self.by_name(rec.project(), &rec.network.name).is_some() {
            return Err(NetPoolError::NameTaken {
                project: rec.project().to_string(),
                name: rec.network.name.clone(),
            });
        }
        if self.vnis().contains(&rec.vni) {
            return Err(NetPoolError::VniTaken(rec.vni));
        }
        if let Some(o) = self
            .networks
            .values()
            .find(|o| o.network.subnet.overlaps(&rec.network.subnet))
        {
            return Err(NetPoolError::SubnetOverlaps {
                subnet: rec.network.subnet,
                other: o.network.name.clone(),
                other_subnet: o.network.subnet,
            });
        }
        Ok(())
    }
}

/// The lowest free VNI from [`VNI_MIN`].
pub fn pick_vni(used: &BTreeSet<u32>) -> Option<u32> {
    (VNI_MIN..=VNI_MAX).find(|v| !used.contains(v))
}

/// The first /24 of [`POOL_SUBNETS`] that overlaps none of `taken` (the pool's networks,
/// and what the creating host routes).
pub fn pick_subnet(taken: &[Ipv4Net]) -> Option<Ipv4Net> {
    let range = pool_subnets();
    (0..1u32 << (24 - range.prefix()))
        .filter_map(|i| Ipv4Net::new(Ipv4Addr::from(u32::from(range.network()) + (i << 8)), 24))
        .find(|c| !taken.iter().any(|t| t.overlaps(c)))
}

/// Adds the network `rec` if it fits `current` (what the caller read): its name, VNI and
/// network keys required absent and `netepoch` as read. A [`StoreError::Conflict`] means
/// another change came first: read again.
pub fn try_create(
    store: &dyn Store,
    current: &PoolNetworks,
    rec: &PoolNetwork,
) -> Result<Revision, NetPoolError> {
    current.check_new(rec)?;
    let id = rec.id().to_string();
    let txn = Txn {
        compares: vec![
            unchanged(NETEPOCH.to_string(), &current.epoch),
            require(name_key(rec.project(), &rec.network.name), Expect::Absent),
            require(vni_key(rec.vni), Expect::Absent),
            require(rec.key(), Expect::Absent),
        ],
        ops: vec![
            put(rec.key(), json(rec)),
            put(
                name_key(rec.project(), &rec.network.name),
                id.clone().into_bytes(),
            ),
            put(vni_key(rec.vni), id.clone().into_bytes()),
            put(NETEPOCH.to_string(), id.into_bytes()),
        ],
    };
    Ok(store.txn(txn, true)?)
}

/// Creates a pool network: `pick` makes the record from the networks there are (choosing
/// its VNI and subnet), and is asked again when another create or remove came first.
/// Fails with what `pick` or [`PoolNetworks::check_new`] says (a name taken, ...).
pub fn create_network(
    store: &dyn Store,
    mut pick: impl FnMut(&PoolNetworks) -> Result<PoolNetwork, NetPoolError>,
) -> Result<PoolNetwork, NetPoolError> {
    for _ in 0..ATTEMPTS {
        let current = PoolNetworks::read(store)?;
        let rec = pick(&current)?;
        match try_create(store, &current, &rec) {
            Ok(_) => return Ok(rec),
            Err(NetPoolError::Store(StoreError::Conflict { .. })) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(NetPoolError::Contended)
}

/// Removes the pool network `project/id` and its name and VNI; refused while an address
/// of it is claimed ([`NetPoolError::InUse`], naming the hosts). Returns what it was.
pub fn remove_network(
    store: &dyn Store,
    project: &str,
    id: &str,
) -> Result<PoolNetwork, NetPoolError> {
    let key = network_key(project, id);
    for _ in 0..ATTEMPTS {
        let Some(kv) = store.get_kv(TABLE, &key)? else {
            return Err(NetPoolError::NotFound(id.to_string()));
        };
        let rec: PoolNetwork = decode(&key, &kv.value)?;
        // `netusers` before the claims: a claim after this read changes it.
        let users = store.get_kv(TABLE, &users_key(id))?;
        let claims = store.range(TABLE, &leases_of(id))?;
        if !claims.kvs.is_empty() {
            let mut hosts = BTreeSet::new();
            for (k, kv) in &claims.kvs {
                hosts.insert(decode::<PoolLease>(k, &kv.value)?.host);
            }
            return Err(NetPoolError::InUse {
                network: rec.network.name.clone(),
                endpoints: claims.kvs.len(),
                hosts: hosts.into_iter().collect(),
            });
        }
        let txn = Txn {
            compares: vec![
                require(key.clone(), Expect::ModRevision(kv.mod_revision)),
                unchanged(users_key(id), &users),
            ],
            ops: vec![
                del(key.clone()),
                del(name_key(project, &rec.network.name)),
                del(vni_key(rec.vni)),
                del(users_key(id)),
                put(NETEPOCH.to_string(), id.as_bytes().to_vec()),
            ],
        };
        match store.txn(txn, true) {
            Ok(_) => return Ok(rec),
            Err(StoreError::Conflict { .. }) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(NetPoolError::Contended)
}

/// Claims `ip` of `net` for `lease` (and its MAC), while the network and the lease's
/// host are in the pool; returns the revision of the claim. [`NetPoolError::AddressTaken`]
/// (read another address), [`NetPoolError::MacTaken`], [`NetPoolError::NotFound`] and
/// [`NetPoolError::HostNotInPool`] say which rule it broke.
pub fn claim(
    store: &dyn Store,
    net: &PoolNetwork,
    ip: Ipv4Addr,
    lease: &PoolLease,
) -> Result<Revision, NetPoolError> {
    if lease.mac_bytes().is_none() {
        return Err(NetPoolError::BadMac(lease.mac.clone()));
    }
    let (subnet, gateway) = (net.network.subnet, net.network.gateway.addr());
    if !subnet.contains(ip) || ip == gateway || ip == subnet.network() || ip == subnet.broadcast() {
        return Err(NetPoolError::NotInSubnet {
            network: net.network.name.clone(),
            ip,
            subnet,
            gateway,
        });
    }
    let id = net.id();
    let (lkey, mkey) = (lease_key(id, ip), mac_key(id, &lease.mac));
    let hkey = crate::scheduler::keys::host(&lease.host);
    let txn = Txn {
        compares: vec![
            require(hkey.clone(), Expect::Present),
            require(net.key(), Expect::Present),
            require(lkey.clone(), Expect::Absent),
            require(mkey.clone(), Expect::Absent),
        ],
        ops: vec![
            put(lkey.clone(), json(lease)),
            put(mkey.clone(), ip.to_string().into_bytes()),
            put(users_key(id), lkey.clone().into_bytes()),
        ],
    };
    match store.txn(txn, true) {
        Ok(rev) => Ok(rev),
        Err(StoreError::Conflict { key, .. }) if key == hkey => {
            Err(NetPoolError::HostNotInPool(lease.host.clone()))
        }
        Err(StoreError::Conflict { key, .. }) if key == net.key() => {
            Err(NetPoolError::NotFound(net.network.name.clone()))
        }
        Err(StoreError::Conflict { key, .. }) if key == lkey => {
            let holder = match store.get(TABLE, &lkey)? {
                Some(b) => Some(decode::<PoolLease>(&lkey, &b)?),
                None => None,
            };
            let (host, container) = holder.map_or_else(
                || ("(released meanwhile)".to_string(), String::new()),
                |h| (h.host, h.container),
            );
            Err(NetPoolError::AddressTaken {
                network: net.network.name.clone(),
                ip,
                host,
                container,
            })
        }
        Err(StoreError::Conflict { key, .. }) if key == mkey => Err(NetPoolError::MacTaken {
            network: net.network.name.clone(),
            mac: lease.mac.clone(),
            ip: store
                .get(TABLE, &mkey)?
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .unwrap_or_default(),
        }),
        Err(e) => Err(e.into()),
    }
}

/// The ops releasing the claim `key` (read as `kv`, holding `lease`) of network `net_id`.
fn release_ops(net_id: &str, key: &str, kv: &KeyValue, lease: &PoolLease, txn: &mut Txn) {
    txn.compares.push(require(
        key.to_string(),
        Expect::ModRevision(kv.mod_revision),
    ));
    txn.ops.push(del(key.to_string()));
    txn.ops.push(del(mac_key(net_id, &lease.mac)));
    txn.ops
        .push(put(users_key(net_id), key.as_bytes().to_vec()));
}

/// Releases `ip` of network `net_id` if `holder`'s host and instance hold it: true when
/// released, false when the address is free or held by another (nothing of theirs to
/// release).
pub fn release(
    store: &dyn Store,
    net_id: &str,
    ip: Ipv4Addr,
    holder: &PoolLease,
) -> Result<bool, NetPoolError> {
    change_held(store, net_id, ip, holder, |key, kv, lease| {
        let mut txn = Txn::default();
        release_ops(net_id, key, kv, &lease, &mut txn);
        Some(txn)
    })
}

/// Gives the claim of `ip` on network `net_id` the names of `holder` (its name and
/// aliases: the instance was renamed) if `holder`'s host and instance hold it: true
/// when changed, false when the address is free, held by another, or already named so.
pub fn rename_claim(
    store: &dyn Store,
    net_id: &str,
    ip: Ipv4Addr,
    holder: &PoolLease,
) -> Result<bool, NetPoolError> {
    change_held(store, net_id, ip, holder, |key, kv, mut lease| {
        if lease.name == holder.name && lease.aliases == holder.aliases {
            return None;
        }
        lease.name = holder.name.clone();
        lease.aliases = holder.aliases.clone();
        Some(Txn {
            compares: vec![require(
                key.to_string(),
                Expect::ModRevision(kv.mod_revision),
            )],
            ops: vec![put(key.to_string(), json(&lease))],
        })
    })
}

/// Commits what `change` makes of the claim of `ip` on network `net_id` (its key, as
/// read, and its record) while `holder`'s host and instance hold it; the transaction must
/// require the claim as read, and a conflict reads it again. True when committed; false
/// when the address is free, held by another, or `change` has nothing to do (None).
fn change_held(
    store: &dyn Store,
    net_id: &str,
    ip: Ipv4Addr,
    holder: &PoolLease,
    mut change: impl FnMut(&str, &KeyValue, PoolLease) -> Option<Txn>,
) -> Result<bool, NetPoolError> {
    let key = lease_key(net_id, ip);
    for _ in 0..ATTEMPTS {
        let Some(kv) = store.get_kv(TABLE, &key)? else {
            return Ok(false);
        };
        let lease: PoolLease = decode(&key, &kv.value)?;
        if lease.host != holder.host || lease.container != holder.container {
            return Ok(false);
        }
        let Some(txn) = change(&key, &kv, lease) else {
            return Ok(false);
        };
        match store.txn(txn, true) {
            Ok(_) => return Ok(true),
            Err(StoreError::Conflict { .. }) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(NetPoolError::Contended)
}

/// Every claim, by network ID and address.
pub fn claims(
    store: &dyn Store,
) -> Result<Vec<(String, Ipv4Addr, KeyValue, PoolLease)>, NetPoolError> {
    let mut out = Vec::new();
    for (key, kv) in store.range(TABLE, LEASES)?.kvs {
        let Some((net, ip)) = view::parse_lease_key(&key) else {
            continue;
        };
        let lease: PoolLease = decode(&key, &kv.value)?;
        out.push((net.to_string(), ip, kv, lease));
    }
    Ok(out)
}

/// Claims released per transaction by [`release_host`]: three ops each stays under
/// etcd's default limit of 128 per transaction.
const RELEASE_CHUNK: usize = 32;

/// Releases every claim of host `host` (removed from the pool: its endpoints are gone
/// with it), in transactions of [`RELEASE_CHUNK`] claims; returns how many.
pub fn release_host(store: &dyn Store, host: &str) -> Result<usize, NetPoolError> {
    let mut released = 0;
    let mut conflicts = 0;
    loop {
        let mine: Vec<_> = claims(store)?
            .into_iter()
            .filter(|(_, _, _, lease)| lease.host == host)
            .collect();
        if mine.is_empty() {
            return Ok(released);
        }
        let mut txn = Txn::default();
        let chunk = &mine[..mine.len().min(RELEASE_CHUNK)];
        for (net, ip, kv, lease) in chunk {
            release_ops(net, &lease_key(net, *ip), kv, lease, &mut txn);
        }
        match store.txn(txn, true) {
            Ok(_) => released += chunk.len(),
            Err(StoreError::Conflict { .. }) if conflicts < ATTEMPTS => conflicts += 1,
            Err(StoreError::Conflict { .. }) => return Err(NetPoolError::Contended),
            Err(e) => return Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests;
