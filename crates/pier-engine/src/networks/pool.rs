//! Networks across the pool, on this host: the member's identity and the pool's store,
//! pool network create and remove, the mirror of a pool network in this host's store
//! (made and realised by the steps of a local create, with a VXLAN link on its bridge),
//! and the addresses this host's endpoints claim in the pool.
//!
//! The pool's records are `pier_cluster::networks`'. A pool network is mirrored into
//! `Table::Networks` with its own ID, `scope: pool` and its VNI, so that listing,
//! inspect, attach, the DNS servers, the firewall and the reconciler treat it as any
//! network of this host. What differs is where its addresses come from: each is
//! journalled here first (the local lease, as on a local network) and then claimed in
//! the pool's store; it is released there first and then dropped from the journal.
//! So the claims of this host are always among its journal's entries, except for the
//! moments between a claim's release and its journal's removal, and
//! [`Networks::repair_pool_claims`] releases a claim whose journal entry is gone (and
//! claims again the address of a running endpoint whose claim is gone).
//!
//! The pool's store is etcd, reached by blocking calls: each runs off the async threads.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::Ipv4Addr;
use std::sync::Arc;

use pier_api::containers::{ContainerInspect, ContainerStatus};
use pier_api::networks::{Endpoint, NetworkCreate, NetworkInspect, NetworkMode, NetworkScope};
use pier_api::time::now_rfc3339;
use pier_api::{ErrorKind, MacAddress, ProjectName};
use pier_cluster::networks::{
    self as pool, NetPoolError, OverlayView, PoolLease, PoolNetwork, PoolNetworks,
};
use pier_net::ipam::Ipv4Net;
use pier_store::{Batch, Expect, Store, StoreError, StoreExt, Table};

use super::create::{self, CreateSaga, ATTEMPTS, EPOCH};
use super::{key, net_err, Lease, Networks};
use crate::error::{conflict, invalid, EngineError, EngineResult};
use crate::host::net::Vxlan;
use crate::steps;

/// The MTU of pool networks unless a smaller one is given: VXLAN over IPv4 adds 50
/// bytes to a 1500-byte underlay.
pub const POOL_MTU: u32 = 1450;

/// The driver options a pool network takes.
const POOL_OPTIONS: [&str; 2] = ["mtu", "com.docker.network.driver.mtu"];

/// This host as a member of a pool: its host ID and its address in the pool (the
/// local end of every VXLAN tunnel).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolIdentity {
    pub host: String,
    pub vtep: Ipv4Addr,
}

/// A pool network's claim made by a plug: for its undo.
#[derive(Debug, Clone)]
pub(super) struct Claimed {
    pub(super) net_id: String,
    pub(super) ip: Ipv4Addr,
    pub(super) lease: PoolLease,
}

/// A failure of the pool's records as the engine answers it.
pub(super) fn pool_err(e: NetPoolError) -> EngineError {
    use NetPoolError as P;
    let kind = match &e {
        P::NameTaken { .. }
        | P::VniTaken(_)
        | P::SubnetOverlaps { .. }
        | P::InUse { .. }
        | P::AddressTaken { .. }
        | P::MacTaken { .. }
        | P::HostNotInPool(_) => ErrorKind::Conflict,
        P::VniOutOfRange(_) | P::NotInSubnet { .. } | P::BadMac(_) => ErrorKind::InvalidInput,
        P::NoFreeVni | P::NoFreeSubnet => ErrorKind::InsufficientStorage,
        P::NotFound(_) => ErrorKind::NotFound,
        P::Contended => ErrorKind::Unavailable,
        P::Corrupt { .. } => ErrorKind::Internal,
        P::Store(StoreError::Unreachable { .. } | StoreError::Backend(_)) => {
            return EngineError::new(
                ErrorKind::Unavailable,
                format!(
                    "the pool's store is not reachable ({}): pool networks and their addresses are kept there; retry when `pier host ls` answers",
                    pier_api::error::chain(&e)
                ),
            )
        }
        P::Store(_) => ErrorKind::Internal,
    };
    EngineError::new(kind, pier_api::error::chain(&e))
}

fn no_store() -> EngineError {
    EngineError::new(
        ErrorKind::Unavailable,
        "this host is not connected to the pool's store yet: pool networks and their addresses are kept there; retry when `pier host ls` answers",
    )
}

impl Networks {
    /// Makes this daemon a member of a pool named `host`, reached at `vtep`: pool
    /// networks get their VXLAN links from now on (before the pool's store answers:
    /// links are made from the mirrors).
    pub fn set_pool_identity(&self, host: &str, vtep: Ipv4Addr) {
        *self.pool_id.write().unwrap_or_else(|e| e.into_inner()) = Some(PoolIdentity {
            host: host.to_string(),
            vtep,
        });
    }

    /// The pool's store once it answers (None: lost, or out of the pool).
    pub fn set_pool_store(&self, store: Option<Arc<dyn Store>>) {
        *self.pool_store.write().unwrap_or_else(|e| e.into_inner()) = store;
    }

    /// Whether this daemon is a member of a pool.
    pub fn in_pool(&self) -> bool {
        self.identity().is_some()
    }

    pub(super) fn identity(&self) -> Option<PoolIdentity> {
        self.pool_id
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn store_of_pool(&self) -> EngineResult<Arc<dyn Store>> {
        self.pool_store
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .ok_or_else(no_store)
    }

    /// Runs `f` on the pool's store off the async threads.
    pub(super) async fn pool_call<T: Send + 'static>(
        &self,
        f: impl FnOnce(&dyn Store) -> Result<T, NetPoolError> + Send + 'static,
    ) -> EngineResult<Result<T, NetPoolError>> {
        let store = self.store_of_pool()?;
        tokio::task::spawn_blocking(move || f(store.as_ref()))
            .await
            .map_err(|e| crate::error::internal(format!("a call to the pool's store failed: {e}")))
    }

    // ---- create and remove ---------------------------------------------------------

    /// Creates a network across the pool: its record in the pool's store (a VNI and a
    /// subnet of its own there), then its mirror here. A mirror that cannot be made
    /// takes the pool's record back.
    pub(super) async fn create_pool(
        &self,
        project: &ProjectName,
        req: NetworkCreate,
    ) -> EngineResult<NetworkInspect> {
        let mtu = check_pool_request(&req)?;
        // Held until the mirror is made: the overlay sync, which sees the pool's record
        // as soon as it is committed, must not mirror it first.
        let _pass = self.host_pass.read().await;
        let local = self.db.list_json::<NetworkInspect>(Table::Networks, "")?;
        if local
            .iter()
            .any(|(_, n)| n.project == *project && n.name == req.name)
        {
            return Err(conflict(format!(
                "network {} already exists: choose another name, or remove it first",
                req.name
            )));
        }
        // Subnets this host routes or uses for its own networks (mirrors included).
        let taken: Vec<Ipv4Net> = self
            .host
            .routes()
            .into_iter()
            .map(|(_, n)| n)
            .chain(
                local
                    .iter()
                    .filter(|(_, n)| n.scope == NetworkScope::Local)
                    .map(|(_, n)| n.subnet),
            )
            .collect();
        let mut made = None;
        for _ in 0..ATTEMPTS {
            let current = self
                .pool_call(PoolNetworks::read)
                .await?
                .map_err(pool_err)?;
            let rec = pool_record(project, &req, mtu, &current, &taken)?;
            let r = self
                .pool_call(move |s| pool::try_create(s, &current, &rec).map(|_| rec))
                .await?;
            match r {
                Ok(rec) => {
                    made = Some(rec);
                    break;
                }
                Err(NetPoolError::Store(StoreError::Conflict { .. })) => continue,
                Err(e) => return Err(pool_err(e)),
            }
        }
        let rec = made.ok_or_else(|| {
            EngineError::Busy(
                "the pool's networks kept changing while this one was being made; retry".into(),
            )
        })?;
        match self.mirror(&rec).await {
            Ok(n) => Ok(n),
            Err(e) => {
                let (p, id) = (rec.project().to_string(), rec.id().to_string());
                match self
                    .pool_call(move |s| pool::remove_network(s, &p, &id))
                    .await
                {
                    Ok(Ok(_)) => {}
                    r => {
                        tracing::warn!(network = %rec.network.name, result = ?r.map(drop), "cannot take back the pool record of a network this host failed to make; remove it with `pier network rm`")
                    }
                }
                Err(e)
            }
        }
    }

    /// Mirrors the pool network `name_or_id` (a name, or a full ID) of `project` here
    /// now if this host has no network by that name yet: an instance can be placed on
    /// this host before its overlay sync has followed the network's create (a
    /// `network create` then `run --network` in a row). Nothing happens outside a pool,
    /// when the pool's store does not answer, or when the pool has no such network: the
    /// caller's own lookup then says what is missing.
    pub async fn mirror_on_demand(&self, project: &ProjectName, name_or_id: &str) {
        let not_a_network = matches!(name_or_id, "none" | "host" | "" | super::DEFAULT_NETWORK)
            || name_or_id.starts_with("container:");
        if not_a_network || self.identity().is_none() || self.store_of_pool().is_err() {
            return;
        }
        if self.get(project, name_or_id).is_ok() {
            return;
        }
        let found = match self.pool_call(PoolNetworks::read).await {
            Ok(Ok(all)) => all
                .by_name(project.as_str(), name_or_id)
                .or_else(|| {
                    all.networks
                        .get(name_or_id)
                        .filter(|n| n.project() == project.as_str())
                })
                .cloned(),
            Ok(Err(e)) => {
                tracing::debug!(error = %pier_api::error::chain(&e), "cannot read the pool's networks for a mirror on demand");
                None
            }
            Err(e) => {
                tracing::debug!(error = %e.message(), "cannot read the pool's networks for a mirror on demand");
                None
            }
        };
        let Some(rec) = found else { return };
        let _pass = self.host_pass.read().await;
        // The overlay sync, or another request, may have made it meanwhile.
        if self.get(project, name_or_id).is_ok() {
            return;
        }
        match self.mirror(&rec).await {
            Ok(_) => {
                tracing::info!(network = %rec.network.name, vni = rec.vni, "pool network mirrored on this host on demand")
            }
            Err(e) => {
                tracing::warn!(network = %rec.network.name, error = %e.message(), "cannot have a pool network on this host")
            }
        }
    }

    /// Makes the mirror of pool network `rec` on this host, as a create would make a
    /// network (record, bridge, VXLAN link, DNS server, rules): nothing of it is left
    /// when a step fails. The caller holds `host_pass`.
    pub(super) async fn mirror(&self, rec: &PoolNetwork) -> EngineResult<NetworkInspect> {
        let mut n = rec.network.clone();
        n.bridge = self.names.network_bridge(&n.id);
        n.containers.clear();
        n.scope = NetworkScope::Pool;
        n.vni = Some(rec.vni);
        let req = NetworkCreate::default();
        let mut saga = CreateSaga {
            nets: self,
            project: &rec.network.project,
            req: &req,
            default: false,
            bridge: String::new(),
            mtu: n.mtu,
            mode: n.mode,
            preset: Some(n),
            n: None,
        };
        match steps::run(&mut saga).await {
            Ok(()) => Ok(saga.n.expect("recorded")),
            Err(f) => {
                tracing::debug!(network = %rec.network.name, step = ?f.step, "pool network mirror failed");
                Err(f.error)
            }
        }
    }

    /// The Record step of a mirror: writes `n` unless a network of this host has its
    /// name (in its project), its bridge or an overlapping subnet; under the networks'
    /// epoch as a create.
    pub(super) fn record_mirror(&self, n: &NetworkInspect) -> EngineResult<NetworkInspect> {
        for _ in 0..ATTEMPTS {
            let epoch = self
                .db
                .get_kv(Table::Meta, EPOCH)?
                .map(|kv| kv.mod_revision);
            let all = self.db.list_json::<NetworkInspect>(Table::Networks, "")?;
            if let Some((_, o)) = all.iter().find(|(_, o)| o.id == n.id) {
                return Err(conflict(format!(
                    "network {} is already on this host",
                    o.name
                )));
            }
            if let Some((_, o)) = all.iter().find(|(_, o)| {
                (o.project == n.project && o.name == n.name)
                    || o.bridge == n.bridge
                    || o.subnet.overlaps(&n.subnet)
            }) {
                return Err(conflict(format!(
                    "pool network {} ({}) clashes with network {} of this host ({}, bridge {}): remove or rename that network to have the pool's on this host",
                    n.name, n.subnet, o.name, o.subnet, o.bridge
                )));
            }
            let mut b = Batch::new();
            b.require(
                Table::Meta,
                EPOCH,
                epoch.map_or(Expect::Absent, Expect::ModRevision),
            );
            b.put_json(Table::Meta, EPOCH, &n.id);
            b.put_json(Table::Networks, key(&n.project, &n.id), n);
            match b.commit(self.db.as_ref()) {
                Ok(()) => return Ok(n.clone()),
                Err(StoreError::Conflict { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(EngineError::Busy(
            "networks kept changing while a pool network was being mirrored; retry".into(),
        ))
    }

    /// Takes pool network `n` out of the pool (refused while any host claims an
    /// address of it, naming them). One already gone is fine: its mirror goes next.
    pub(super) async fn remove_from_pool(&self, n: &NetworkInspect) -> EngineResult<()> {
        let (p, id) = (n.project.to_string(), n.id.clone());
        match self
            .pool_call(move |s| pool::remove_network(s, &p, &id))
            .await?
        {
            Ok(_) | Err(NetPoolError::NotFound(_)) => Ok(()),
            Err(e) => Err(pool_err(e)),
        }
    }

    /// Makes sure pool network `n` has its VXLAN link on its bridge (the bridge must
    /// be there). Nothing for a local network, nor outside a pool (warned).
    pub(super) async fn ensure_overlay_link(&self, n: &NetworkInspect) -> EngineResult<()> {
        let Some(v) = self.vxlan_of(n) else {
            if n.scope == NetworkScope::Pool {
                tracing::warn!(network = %n.name, "this host is not a pool member: pool network left without its VXLAN link");
            }
            return Ok(());
        };
        self.host.ensure_vxlan(&v).await.map(drop).map_err(net_err)
    }

    pub(super) async fn delete_overlay_link(&self, n: &NetworkInspect) {
        if n.scope != NetworkScope::Pool {
            return;
        }
        let name = self.names.vxlan(&n.id);
        if let Err(e) = self.host.delete_link(&name).await {
            tracing::warn!(link = %name, error = %e.chain(), "cannot remove the VXLAN link of a network that failed to be made; the reconciler will");
        }
    }

    /// The VXLAN link pool network `n` wants on this host (None: a local network, or
    /// no pool identity).
    pub(super) fn vxlan_of(&self, n: &NetworkInspect) -> Option<Vxlan> {
        if n.scope != NetworkScope::Pool {
            return None;
        }
        let id = self.identity()?;
        Some(Vxlan {
            name: self.names.vxlan(&n.id),
            vni: n.vni?,
            local: id.vtep,
            mtu: n.mtu,
            bridge: n.bridge.clone(),
        })
    }

    // ---- addresses -----------------------------------------------------------------

    /// The Lease step on pool network `n`: picks an address no host claims, journals
    /// it here, then claims it in the pool; an address another host claimed meanwhile
    /// is dropped from the journal and another picked. Returns it with its claim.
    pub(super) async fn lease_pool(
        &self,
        n: &NetworkInspect,
        c: &ContainerInspect,
        ep: &Endpoint,
        names: (&str, &str),
    ) -> EngineResult<(Ipv4Addr, Claimed)> {
        let id = self.identity().ok_or_else(|| {
            invalid(format!(
                "network {} spans a pool this host is not a member of any more: disconnect the container from it",
                n.name
            ))
        })?;
        let rec = PoolNetwork {
            vni: n.vni.unwrap_or_default(),
            network: NetworkInspect {
                bridge: String::new(),
                containers: BTreeMap::new(),
                ..n.clone()
            },
        };
        for _ in 0..super::alloc::ATTEMPTS {
            let net_id = n.id.clone();
            let claimed: HashSet<Ipv4Addr> = self
                .pool_call(move |s| {
                    Ok(s.range(pool::TABLE, &pool::leases_of(&net_id))?
                        .kvs
                        .into_iter()
                        .filter_map(|(k, _)| k.rsplit('/').next()?.parse().ok())
                        .collect())
                })
                .await?
                .map_err(pool_err)?;
            let ip = self.lease(n, &c.id, ep, names, &claimed)?;
            let lease_key = format!("{}/{}/{ip}", n.project, n.id);
            let mac = ep.static_mac.unwrap_or_else(|| MacAddress::for_ipv4(ip));
            let lease = PoolLease {
                host: id.host.clone(),
                project: n.project.to_string(),
                container: c.id.clone(),
                name: c.name.clone(),
                aliases: ep.aliases.clone(),
                short_id: c.id[..12.min(c.id.len())].to_string(),
                mac: mac.to_string(),
                ifname: names.0.to_string(),
            };
            let (r2, l2) = (rec.clone(), lease.clone());
            let r = self.pool_call(move |s| pool::claim(s, &r2, ip, &l2)).await;
            match r {
                Ok(Ok(_)) => {
                    return Ok((
                        ip,
                        Claimed {
                            net_id: n.id.clone(),
                            ip,
                            lease,
                        },
                    ))
                }
                // Another host came first: pick again (unless this one was asked for).
                Ok(Err(NetPoolError::AddressTaken { .. })) if ep.static_ip.is_none() => {
                    self.drop_lease(&lease_key);
                    continue;
                }
                Ok(Err(e)) => {
                    self.drop_lease(&lease_key);
                    return Err(pool_err(e));
                }
                Err(e) => {
                    self.drop_lease(&lease_key);
                    return Err(e);
                }
            }
        }
        Err(EngineError::Busy(format!(
            "the addresses of pool network {} kept being claimed by other hosts while one was being leased; retry",
            n.name
        )))
    }

    /// Releases the pool claim `c` (the undo of a plug's lease, before its journal
    /// entry goes). A failure is left to [`Networks::repair_pool_claims`].
    pub(super) async fn release_claim(&self, c: &Claimed) {
        let (net, ip, lease) = (c.net_id.clone(), c.ip, c.lease.clone());
        match self
            .pool_call(move |s| pool::release(s, &net, ip, &lease))
            .await
        {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                tracing::warn!(ip = %c.ip, error = %pier_api::error::chain(&e), "cannot release an address claimed in the pool; the overlay sync will");
            }
            Err(e) => {
                tracing::warn!(ip = %c.ip, error = %e.message(), "cannot release an address claimed in the pool; the overlay sync will");
            }
        }
    }

    /// Releases the pool claims of container `cid` (on network `network` only, if
    /// given) that this host's journal holds: before the journal's entries go.
    pub(super) async fn release_pool_claims(&self, cid: &str, network: Option<&str>) {
        let Some(id) = self.identity() else {
            return;
        };
        let Ok(leases) = self.leases() else {
            return;
        };
        let Ok(nets) = self.db.list_json::<NetworkInspect>(Table::Networks, "") else {
            return;
        };
        let pool_nets: HashSet<&str> = nets
            .iter()
            .filter(|(_, n)| n.scope == NetworkScope::Pool)
            .map(|(_, n)| n.id.as_str())
            .collect();
        for (k, l) in leases {
            if l.container != cid
                || !pool_nets.contains(l.network.as_str())
                || network.is_some_and(|n| n != l.network)
            {
                continue;
            }
            let Some(ip) = k.rsplit('/').next().and_then(|i| i.parse().ok()) else {
                continue;
            };
            let lease = PoolLease {
                host: id.host.clone(),
                project: String::new(),
                container: cid.to_string(),
                name: String::new(),
                aliases: Vec::new(),
                short_id: String::new(),
                mac: String::new(),
                ifname: String::new(),
            };
            self.release_claim(&Claimed {
                net_id: l.network.clone(),
                ip,
                lease,
            })
            .await;
        }
    }

    /// Whether the pool's store has pool network `id` of `project` now (None: it does
    /// not answer). The overlay sync asks before it mirrors or removes a network after
    /// its view: a pass that waited for a create or remove to finish has a view from
    /// before it.
    pub(super) async fn pool_has(&self, project: &str, id: &str) -> Option<bool> {
        let key = pool::network_key(project, id);
        match self
            .pool_call(move |s| Ok(s.get(pool::TABLE, &key)?.is_some()))
            .await
        {
            Ok(Ok(has)) => Some(has),
            _ => None,
        }
    }

    /// Gives container `c`'s claims on pool networks its name and aliases now.
    pub(super) async fn rename_claims(&self, c: &ContainerInspect) {
        let Some(me) = self.identity() else {
            return;
        };
        let Ok(nets) = self.db.list_json::<NetworkInspect>(Table::Networks, "") else {
            return;
        };
        for ep in c.networks.values() {
            let pooled = nets
                .iter()
                .any(|(_, n)| n.id == ep.network_id && n.scope == NetworkScope::Pool);
            let Some(ip) = ep.ip_address.map(|a| a.addr()).filter(|_| pooled) else {
                continue;
            };
            let holder = named_holder(&me.host, c, ep);
            let net = ep.network_id.clone();
            match self
                .pool_call(move |s| pool::rename_claim(s, &net, ip, &holder))
                .await
            {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => {
                    tracing::warn!(%ip, error = %pier_api::error::chain(&e), "cannot rename a pool claim; the overlay sync will")
                }
                Err(e) => {
                    tracing::warn!(%ip, error = %e.message(), "cannot rename a pool claim; the overlay sync will")
                }
            }
        }
    }

    /// Mends this host's claims in `view` (read before this call) against its journal
    /// and its instances: releases the claims its journal no longer holds (a release
    /// that failed, or a crash between a claim and its journal's removal), names each
    /// held claim after its instance (a rename whose claim change failed), and claims
    /// again the address of a running instance's endpoint that no claim holds (lost
    /// from the pool's store, or released by `pier host rm` while this host was away).
    /// Safe while attaches run: a journal entry is written before its claim and removed
    /// after its release, and an endpoint is recorded after its claim. Returns how many
    /// it released and claimed again.
    pub async fn repair_pool_claims(&self, view: &OverlayView) -> EngineResult<(usize, usize)> {
        let Some(id) = self.identity() else {
            return Ok((0, 0));
        };
        let mine: Vec<(String, Ipv4Addr, PoolLease)> = view
            .leases
            .iter()
            .filter(|(_, l)| l.host == id.host)
            .map(|((net, ip), l)| (net.clone(), *ip, l.clone()))
            .collect();
        let journal: HashSet<(String, String)> = self
            .leases()?
            .into_iter()
            .filter_map(|(k, l): (String, Lease)| {
                Some((
                    l.network.clone(),
                    format!("{}|{}", k.rsplit('/').next()?, l.container),
                ))
            })
            .collect();
        let containers: HashMap<String, ContainerInspect> = self
            .containers()?
            .into_iter()
            .map(|c| (c.id.clone(), c))
            .collect();
        let mut released = 0;
        for (net, ip, lease) in mine {
            if journal.contains(&(net.clone(), format!("{ip}|{}", lease.container))) {
                // Held: named after its instance (a rename whose claim change failed).
                let Some(c) = containers.get(&lease.container) else {
                    continue;
                };
                let Some(ep) = c.networks.values().find(|e| e.network_id == net) else {
                    continue;
                };
                let holder = named_holder(&id.host, c, ep);
                if (&holder.name, &holder.aliases) != (&lease.name, &lease.aliases) {
                    let n = net.clone();
                    if let Ok(Ok(true)) = self
                        .pool_call(move |s| pool::rename_claim(s, &n, ip, &holder))
                        .await
                    {
                        tracing::info!(network = %net, %ip, container = %c.name, "a pool claim renamed after its instance");
                    }
                }
                continue;
            }
            tracing::info!(network = %net, %ip, container = %lease.container, "releasing a pool address this host no longer holds");
            let c = Claimed {
                net_id: net,
                ip,
                lease,
            };
            self.release_claim(&c).await;
            released += 1;
        }
        let reclaimed = self
            .reclaim_lost(view, &id.host, &journal, containers.values())
            .await;
        Ok((released, reclaimed))
    }

    /// The claims again of running instances' endpoints on pool networks whose
    /// addresses no claim holds in `view` (see [`Networks::repair_pool_claims`]); an
    /// address another host claimed meanwhile is said, not taken. Returns how many.
    async fn reclaim_lost<'a>(
        &self,
        view: &OverlayView,
        host: &str,
        journal: &HashSet<(String, String)>,
        containers: impl Iterator<Item = &'a ContainerInspect>,
    ) -> usize {
        let mut lost = Vec::new();
        for c in containers.filter(|c| c.state.status == ContainerStatus::Running) {
            for ep in c.networks.values() {
                let (Some(rec), Some(ip)) = (
                    view.networks.get(&ep.network_id),
                    ep.ip_address.map(|a| a.addr()),
                ) else {
                    continue;
                };
                let journalled =
                    journal.contains(&(ep.network_id.clone(), format!("{ip}|{}", c.id)));
                if !journalled || view.leases.contains_key(&(ep.network_id.clone(), ip)) {
                    continue;
                }
                let (Some(mac), Some(ifname)) = (ep.mac_address, ep.interface.clone()) else {
                    continue;
                };
                let lease = PoolLease {
                    mac: mac.to_string(),
                    short_id: c.id[..12.min(c.id.len())].to_string(),
                    ifname,
                    ..named_holder(host, c, ep)
                };
                lost.push((rec.clone(), ip, lease));
            }
        }
        let mut reclaimed = 0;
        for (rec, ip, lease) in lost {
            let (net, name, id) = (
                rec.network.name.clone(),
                lease.name.clone(),
                lease.container.clone(),
            );
            match self
                .pool_call(move |s| pool::claim(s, &rec, ip, &lease))
                .await
            {
                Ok(Ok(_)) => {
                    tracing::info!(network = %net, %ip, container = %name, "a running instance's pool address claimed again (its claim was gone)");
                    reclaimed += 1;
                }
                // Ours already: claimed after `view` was read.
                Ok(Err(NetPoolError::AddressTaken {
                    host: h,
                    container: c,
                    ..
                })) if h == host && c == id => {}
                Ok(Err(NetPoolError::AddressTaken {
                    host, container, ..
                })) => {
                    tracing::warn!(network = %net, %ip, container = %name, other_host = %host, other = %container, "a running instance's pool address is claimed by another instance: both answer to it until one is disconnected from the network and connected again")
                }
                Ok(Err(e)) => {
                    tracing::warn!(network = %net, %ip, container = %name, error = %pier_api::error::chain(&e), "cannot claim a running instance's pool address again; the next pass tries again")
                }
                Err(e) => {
                    tracing::warn!(network = %net, %ip, container = %name, error = %e.message(), "cannot claim a running instance's pool address again; the next pass tries again")
                }
            }
        }
        reclaimed
    }
}

/// The holder of a claim of host `host` for container `c`'s endpoint `ep`, with the
/// names the claim should give (what [`pool::rename_claim`] compares and sets).
fn named_holder(host: &str, c: &ContainerInspect, ep: &Endpoint) -> PoolLease {
    PoolLease {
        host: host.to_string(),
        project: c.project.to_string(),
        container: c.id.clone(),
        name: c.name.clone(),
        aliases: ep.aliases.clone(),
        short_id: String::new(),
        mac: String::new(),
        ifname: String::new(),
    }
}

/// What a pool network may not be (this step builds plain IPv4 overlays), and its MTU.
fn check_pool_request(req: &NetworkCreate) -> EngineResult<u32> {
    if req.ipv6 {
        return Err(invalid(
            "pool networks are IPv4 only for now: leave out --ipv6, or make a bridge network (-d bridge)",
        ));
    }
    if let Some(k) = req
        .options
        .keys()
        .find(|k| !POOL_OPTIONS.contains(&k.as_str()))
    {
        return Err(invalid(format!(
            "option {k:?} is not one a pool network takes (only mtu): leave it out, or make a bridge network (-d bridge)"
        )));
    }
    let create::BridgeOptions { mtu, .. } =
        create::BridgeOptions::parse(&req.options, String::new())?;
    if req.options.is_empty() {
        return Ok(POOL_MTU);
    }
    if mtu > POOL_MTU {
        return Err(invalid(format!(
            "mtu {mtu} is too large for a pool network: VXLAN takes 50 bytes of the hosts' 1500, so give at most {POOL_MTU}"
        )));
    }
    Ok(mtu)
}

/// The record of a new pool network, given the pool's networks and the subnets this
/// host uses (`taken`).
fn pool_record(
    project: &ProjectName,
    req: &NetworkCreate,
    mtu: u32,
    current: &PoolNetworks,
    taken: &[Ipv4Net],
) -> EngineResult<PoolNetwork> {
    let vni = pool::pick_vni(&current.vnis()).ok_or_else(|| pool_err(NetPoolError::NoFreeVni))?;
    let mut all_taken = taken.to_vec();
    all_taken.extend(current.subnets());
    let subnet = match req.subnet {
        Some(s) => Some(s),
        None => Some(
            pool::pick_subnet(&all_taken).ok_or_else(|| pool_err(NetPoolError::NoFreeSubnet))?,
        ),
    };
    let (subnet, gateway, ip_range) = create::addresses(taken, subnet, req.gateway, req.ip_range)?;
    create::check_aux(&req.aux_addresses, subnet, None)?;
    let network = NetworkInspect {
        id: crate::names::random_id(),
        name: req.name.clone(),
        project: project.clone(),
        driver: "overlay".into(),
        created: now_rfc3339(),
        subnet,
        gateway: gateway.into(),
        ip_range,
        internal: req.internal,
        mode: NetworkMode::Nat,
        mtu,
        bridge: String::new(),
        options: req.options.clone(),
        labels: req.labels.clone(),
        containers: BTreeMap::new(),
        ipv6: false,
        subnet6: None,
        gateway6: None,
        ip_range6: None,
        aux_addresses: req.aux_addresses.clone(),
        ipam_options: req.ipam_options.clone(),
        attachable: req.attachable,
        scope: NetworkScope::Pool,
        vni: Some(vni),
    };
    let rec = PoolNetwork { vni, network };
    current.check_new(&rec).map_err(pool_err)?;
    Ok(rec)
}
