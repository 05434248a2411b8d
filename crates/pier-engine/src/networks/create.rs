//! Network create and remove, each a step list with an undo per step
//! ([`crate::steps`]): a create that fails at any step leaves no record, bridge, DNS
//! server or rule; a remove that fails leaves the network as it was.
//!
//! Create: `Record` (the network's record, under a compare on the networks' epoch key,
//! so that names, bridges and subnets stay unique across racing creates), `Routes` (no
//! other route of the host on its subnet), `Bridge`, `Vxlan` (a pool network's link),
//! `Sysctls`, `Dns`, `Firewall`. Remove: `Record`, `Dns`, `Vxlan`, `Bridge`, `Firewall`.
//! A pool network's mirror on this host ([`super::pool`]) is made by the same steps,
//! from the pool's record.

use std::collections::{BTreeMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use pier_api::networks::{NetworkCreate, NetworkInspect, NetworkMode, NetworkScope};
use pier_api::time::now_rfc3339;
use pier_api::{ErrorKind, Ipv4Address, Ipv6Net, ProjectName};
use pier_net::ipam::Ipv4Net;
use pier_store::{Batch, Expect, StoreError, StoreExt, Table};

use super::names::NetRecords;
use super::{key, net_err, Networks, DEFAULT_NETWORK};
use crate::error::{conflict, internal, invalid};
use crate::error::{EngineError, EngineResult};
use crate::host::net::Bridge;
use crate::steps::{self, Saga};
use crate::RequestContext;

/// The key every network create and remove rewrites under a compare on its revision:
/// of two racing changes to the set of networks, one wins and the other checks again.
pub(super) const EPOCH: &str = "network-epoch";

/// How many times a create re-reads and checks again after losing a race.
pub(super) const ATTEMPTS: usize = 32;

/// The steps of network create.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CreateStep {
    Record,
    Routes,
    Bridge,
    Vxlan,
    Sysctls,
    Dns,
    Firewall,
}

/// The steps of network remove.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RemoveStep {
    Record,
    Dns,
    Vxlan,
    Bridge,
    Firewall,
}

pub(super) struct CreateSaga<'a> {
    pub(super) nets: &'a Networks,
    pub(super) project: &'a ProjectName,
    pub(super) req: &'a NetworkCreate,
    pub(super) default: bool,
    pub(super) bridge: String,
    pub(super) mtu: u32,
    pub(super) mode: NetworkMode,
    /// A pool network's mirror: the record to write (checked against this host's).
    pub(super) preset: Option<NetworkInspect>,
    pub(super) n: Option<NetworkInspect>,
}

impl Saga for CreateSaga<'_> {
    type Step = CreateStep;
    type Error = EngineError;

    fn steps(&self) -> Vec<CreateStep> {
        use CreateStep::*;
        vec![Record, Routes, Bridge, Vxlan, Sysctls, Dns, Firewall]
    }

    async fn run(&mut self, step: CreateStep) -> EngineResult<()> {
        let nets = self.nets;
        if step == CreateStep::Record {
            self.n = Some(match &self.preset {
                Some(n) => nets.record_mirror(n)?,
                None => nets.record_network(self)?,
            });
            return Ok(());
        }
        let n = self.n.as_ref().expect("recorded first");
        match step {
            CreateStep::Record => Ok(()),
            CreateStep::Routes => nets.check_routes(n),
            CreateStep::Bridge => nets.ensure_bridge(n).await.map(drop),
            CreateStep::Vxlan => nets.ensure_overlay_link(n).await,
            CreateStep::Sysctls => nets.sysctls(n),
            CreateStep::Dns => nets.serve_dns(n).await,
            CreateStep::Firewall => nets.firewall(),
        }
    }

    async fn undo(&mut self, step: CreateStep) {
        let nets = self.nets;
        let n = self.n.as_ref().expect("recorded first");
        match step {
            CreateStep::Record => {
                let mut b = Batch::new();
                b.delete(Table::Networks, key(&n.project, &n.id));
                b.put_json(Table::Meta, EPOCH, &n.id);
                if let Err(e) = b.commit(nets.db.as_ref()) {
                    tracing::warn!(network = %n.name, error = %e, "cannot remove the record of a network that failed to be made; the reconciler will set it up");
                }
            }
            CreateStep::Bridge => {
                if let Err(e) = nets.host.delete_link(&n.bridge).await {
                    tracing::warn!(bridge = %n.bridge, error = %e.chain(), "cannot remove the bridge of a network that failed to be made; the reconciler will");
                }
            }
            CreateStep::Vxlan => nets.delete_overlay_link(n).await,
            CreateStep::Dns => nets.host.stop_dns(&n.id),
            // Nothing to undo: routes and sysctls change nothing of ours, and the
            // firewall is the last step.
            CreateStep::Routes | CreateStep::Sysctls | CreateStep::Firewall => {}
        }
    }
}

pub(super) struct RemoveSaga<'a> {
    pub(super) nets: &'a Networks,
    pub(super) n: NetworkInspect,
}

impl Saga for RemoveSaga<'_> {
    type Step = RemoveStep;
    type Error = EngineError;

    fn steps(&self) -> Vec<RemoveStep> {
        use RemoveStep::*;
        vec![Record, Dns, Vxlan, Bridge, Firewall]
    }

    async fn run(&mut self, step: RemoveStep) -> EngineResult<()> {
        let (nets, n) = (self.nets, &self.n);
        match step {
            RemoveStep::Record => {
                let mut b = Batch::new();
                let k = key(&n.project, &n.id);
                b.require(Table::Networks, k.clone(), Expect::Present);
                b.delete(Table::Networks, k);
                b.put_json(Table::Meta, EPOCH, &n.id);
                b.commit(nets.db.as_ref()).map_err(|e| match e {
                    StoreError::Conflict { .. } => not_there(n),
                    e => e.into(),
                })
            }
            RemoveStep::Dns => {
                nets.host.stop_dns(&n.id);
                Ok(())
            }
            RemoveStep::Vxlan => match n.scope {
                NetworkScope::Pool => nets
                    .host
                    .delete_link(&nets.names.vxlan(&n.id))
                    .await
                    .map_err(net_err),
                NetworkScope::Local => Ok(()),
            },
            RemoveStep::Bridge => nets.host.delete_link(&n.bridge).await.map_err(net_err),
            RemoveStep::Firewall => nets.firewall(),
        }
    }

    async fn undo(&mut self, step: RemoveStep) {
        let (nets, n) = (self.nets, &self.n);
        let r = match step {
            RemoveStep::Record => {
                let mut b = Batch::new();
                b.put_json(Table::Networks, key(&n.project, &n.id), n);
                b.put_json(Table::Meta, EPOCH, &n.id);
                b.commit(nets.db.as_ref()).map_err(EngineError::from)
            }
            RemoveStep::Dns => nets.serve_dns(n).await,
            RemoveStep::Vxlan => nets.ensure_overlay_link(n).await,
            RemoveStep::Bridge => match nets.ensure_bridge(n).await {
                Ok(_) => nets.sysctls(n),
                Err(e) => Err(e),
            },
            RemoveStep::Firewall => Ok(()),
        };
        if let Err(e) = r {
            tracing::warn!(network = %n.name, ?step, error = %e.message(), "cannot undo a step of a failed network remove; the reconciler will set the network up");
        }
    }
}

fn not_there(n: &NetworkInspect) -> EngineError {
    EngineError::NotFound(format!(
        "network {} was removed meanwhile (see `pier network ls`)",
        n.name
    ))
}

impl Networks {
    /// Creates a network in the context's project (`pier network create`).
    pub async fn create(
        &self,
        ctx: &RequestContext,
        req: NetworkCreate,
    ) -> EngineResult<NetworkInspect> {
        let n = self.create_inner(ctx.project(), req, false).await?;
        tracing::info!(project = %ctx.project, caller = %ctx.caller, network = %n.name, bridge = %n.bridge, "network created");
        Ok(n)
    }

    pub(super) async fn create_inner(
        &self,
        project: &ProjectName,
        req: NetworkCreate,
        default: bool,
    ) -> EngineResult<NetworkInspect> {
        let name = req.name.clone();
        // Docker's rule: any name but the empty one (spaces and all).
        if name.is_empty() {
            return Err(invalid("the network needs a name"));
        }
        if ["none", "host"].contains(&name.as_str()) || (!default && name == DEFAULT_NETWORK) {
            return Err(conflict(format!(
                "{name:?} is a predefined network; choose another name"
            )));
        }
        let overlay = match req.driver.as_deref() {
            None => !default && self.in_pool(),
            Some("bridge") => false,
            Some("overlay") if self.in_pool() => true,
            Some("overlay") => return Err(EngineError::new(
                ErrorKind::InvalidInput,
                "this host is not in a pool, so it makes no overlay network: join a pool first (`pier cluster init` or `pier cluster join`), or use the bridge driver",
            )),
            Some(d) => {
                return Err(invalid(format!(
                    "network driver {d:?} is not supported; use bridge, or overlay in a pool"
                )))
            }
        };
        if overlay {
            return self.create_pool(project, req).await;
        }
        let _pass = self.host_pass.read().await;
        // The bridge's name is fixed here when options give it; else per ID, at Record.
        let BridgeOptions { mtu, mode, bridge } =
            BridgeOptions::parse(&req.options, String::new())?;
        if req.ipv6 && req.subnet6.is_none() {
            // Docker 20.10's default address pools are IPv4 only.
            return Err(EngineError::new(ErrorKind::NotFound, "could not find an available, non-overlapping IPv6 address pool among the defaults to assign to the network: give an IPv6 subnet (--subnet fd00:1::/64)"));
        }
        let mut saga = CreateSaga {
            nets: self,
            project,
            req: &req,
            default,
            bridge,
            mtu,
            mode,
            preset: None,
            n: None,
        };
        match steps::run(&mut saga).await {
            Ok(()) => Ok(saga.n.expect("recorded")),
            Err(f) => {
                tracing::debug!(network = %name, step = ?f.step, "network create failed");
                Err(f.error)
            }
        }
    }

    /// Checks a new network against the others and records it, under a compare on the
    /// networks' epoch: a racing create or remove makes it read and check again.
    fn record_network(&self, s: &CreateSaga<'_>) -> EngineResult<NetworkInspect> {
        for _ in 0..ATTEMPTS {
            let epoch = self
                .db
                .get_kv(Table::Meta, EPOCH)?
                .map(|kv| kv.mod_revision);
            let all = self.db.list_json::<NetworkInspect>(Table::Networks, "")?;
            let name = &s.req.name;
            if all
                .iter()
                .any(|(_, n)| n.project == *s.project && n.name == *name)
            {
                return Err(conflict(format!(
                    "network {name} already exists: choose another name, or remove it first"
                )));
            }
            let id = crate::names::random_id();
            let bridge = if !s.bridge.is_empty() {
                s.bridge.clone()
            } else if s.default && s.project.as_str() == ProjectName::default_project().as_str() {
                self.names.default_bridge()
            } else {
                // Other projects' default networks are named by ID like any network, so
                // each project has a bridge of its own (the default project's keeps the
                // name it always had).
                self.names.network_bridge(&id)
            };
            let taken: Vec<Ipv4Net> = self
                .host
                .routes()
                .into_iter()
                .map(|(_, n)| n)
                .chain(all.iter().map(|(_, n)| n.subnet))
                .collect();
            let (subnet, gateway, ip_range) =
                addresses(&taken, s.req.subnet, s.req.gateway, s.req.ip_range)?;
            let taken6: Vec<Ipv6Net> = all.iter().filter_map(|(_, n)| n.subnet6).collect();
            let (subnet6, gateway6) =
                addresses6(&taken6, s.req.subnet6, s.req.gateway6, s.req.ip_range6)?;
            check_aux(&s.req.aux_addresses, subnet, subnet6)?;
            if all.iter().any(|(_, n)| n.bridge == bridge) {
                return Err(conflict(format!(
                    "bridge {bridge} is used by another network; give another bridge_name"
                )));
            }
            let n = NetworkInspect {
                id,
                name: name.clone(),
                project: s.project.clone(),
                driver: "bridge".into(),
                created: now_rfc3339(),
                subnet,
                gateway: gateway.into(),
                ip_range,
                internal: s.req.internal,
                mode: s.mode,
                mtu: s.mtu,
                bridge,
                options: s.req.options.clone(),
                labels: s.req.labels.clone(),
                containers: BTreeMap::new(),
                ipv6: s.req.ipv6,
                subnet6,
                gateway6,
                ip_range6: s.req.ip_range6,
                aux_addresses: s.req.aux_addresses.clone(),
                ipam_options: s.req.ipam_options.clone(),
                attachable: s.req.attachable,
                scope: NetworkScope::Local,
                vni: None,
            };
            let mut b = Batch::new();
            b.require(
                Table::Meta,
                EPOCH,
                epoch.map_or(Expect::Absent, Expect::ModRevision),
            );
            b.put_json(Table::Meta, EPOCH, &n.id);
            b.put_json(Table::Networks, key(s.project, &n.id), &n);
            match b.commit(self.db.as_ref()) {
                Ok(()) => return Ok(n),
                // Another network was made or removed meanwhile: check again.
                Err(StoreError::Conflict { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(EngineError::Busy(
            "networks kept changing while this one was being made; retry".into(),
        ))
    }

    /// Another network of this host on the same addresses (another daemon's, made while
    /// this one's bridge was gone): two bridges would answer for them. A wider route
    /// (a VPN's 172.16.0.0/12) loses to the bridge's own and does no harm.
    pub(super) fn check_routes(&self, n: &NetworkInspect) -> EngineResult<()> {
        let subnet = n.subnet;
        if let Some((dev, net)) = self.host.routes().into_iter().find(|(dev, net)| {
            *dev != n.bridge && net.overlaps(&subnet) && net.prefix() >= subnet.prefix()
        }) {
            return Err(conflict(format!(
                "network {}'s subnet {subnet} overlaps {net}, routed through {dev} on this host (another Pier daemon's network, or another program's): remove that, or recreate network {} on another subnet",
                n.name, n.name
            )));
        }
        Ok(())
    }

    pub(super) async fn ensure_bridge(&self, n: &NetworkInspect) -> EngineResult<u32> {
        let b = Bridge {
            name: n.bridge.clone(),
            gateway: n.gateway.addr(),
            prefix: n.subnet.prefix(),
            gateway6: n.v6().zip(n.gateway6).map(|(s, g)| (g, s.prefix())),
            mtu: n.mtu,
        };
        let index = self.host.ensure_bridge(&b).await.map_err(net_err)?;
        self.bridge_index
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(n.bridge.clone(), index);
        Ok(index)
    }

    pub(super) fn sysctls(&self, n: &NetworkInspect) -> EngineResult<()> {
        self.host.sysctl("ipv4/ip_forward", "1").map_err(net_err)?;
        if n.v6().is_some() {
            self.host
                .sysctl("ipv6/conf/all/forwarding", "1")
                .map_err(net_err)?;
        }
        // Published ports answer on 127.0.0.1 too.
        self.host
            .sysctl(&format!("ipv4/conf/{}/route_localnet", n.bridge), "1")
            .map_err(net_err)
    }

    pub(super) async fn serve_dns(&self, n: &NetworkInspect) -> EngineResult<()> {
        let gw = n.gateway.addr();
        let records = Arc::new(NetRecords {
            network: n.id.clone(),
            network_name: n.name.clone(),
            answers_names: n.name != DEFAULT_NETWORK,
            index: self.index.clone(),
        });
        self.host
            .serve_dns(&n.id, SocketAddr::from((gw, 53)), records)
            .await
            .map_err(|e| {
                internal(format!(
                    "cannot serve DNS on {gw}:53 for network {}: {e}",
                    n.name
                ))
            })
    }

    /// Makes the host side of a network that is recorded: its bridge, sysctls and DNS
    /// server (for the reconciler, and for a bridge someone deleted).
    pub(super) async fn realize(&self, n: &NetworkInspect) -> EngineResult<()> {
        self.check_routes(n)?;
        self.ensure_bridge(n).await?;
        self.ensure_overlay_link(n).await?;
        self.sysctls(n)?;
        self.serve_dns(n).await
    }

    /// Removes a network no container uses (`pier network rm`).
    pub async fn remove(&self, ctx: &RequestContext, name: &str) -> EngineResult<()> {
        let project = ctx.project();
        let _pass = self.host_pass.read().await;
        let n = self.get(project, name)?;
        if n.name == DEFAULT_NETWORK {
            return Err(conflict("the default bridge network cannot be removed"));
        }
        let users: Vec<String> = self
            .containers()?
            .into_iter()
            .filter(|c| c.networks.values().any(|e| e.network_id == n.id))
            .map(|c| c.name)
            .collect();
        if !users.is_empty() {
            return Err(conflict(format!(
                "network {} is used by container(s) {}: remove them or disconnect them first",
                n.name,
                users.join(", ")
            )));
        }
        let name = n.name.clone();
        if n.scope == NetworkScope::Pool {
            // Out of the pool first (refused while an address of it is claimed on any
            // host); the mirrors go with it, this one now, the others' at their sync.
            self.remove_from_pool(&n).await?;
        }
        let mut saga = RemoveSaga { nets: self, n };
        steps::run(&mut saga).await.map_err(|f| f.error)?;
        tracing::info!(project = %ctx.project, caller = %ctx.caller, network = %name, "network removed");
        Ok(())
    }

    /// Removes every network no container uses; returns their names.
    pub async fn prune(&self, ctx: &RequestContext) -> EngineResult<Vec<String>> {
        let project = ctx.project();
        let used: HashSet<String> = self
            .containers()?
            .iter()
            .flat_map(|c| c.networks.values().map(|e| e.network_id.clone()))
            .collect();
        let mut removed = Vec::new();
        for n in self.all(project)? {
            if n.name != DEFAULT_NETWORK && !used.contains(&n.id) {
                match self.remove(ctx, &n.id).await {
                    Ok(()) => removed.push(n.name),
                    // A pool network used on another host stays.
                    Err(e) if n.scope == NetworkScope::Pool && e.kind() == ErrorKind::Conflict => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(removed)
    }
}

/// The subnet (given, or a free one), gateway and allocation range of a new network,
/// checked against the subnets in use (`taken`).
pub(super) fn addresses(
    taken: &[Ipv4Net],
    subnet: Option<Ipv4Net>,
    gateway: Option<Ipv4Address>,
    ip_range: Option<Ipv4Net>,
) -> EngineResult<(Ipv4Net, Ipv4Addr, Option<Ipv4Net>)> {
    let subnet: Ipv4Net = match subnet {
        Some(net) => {
            if net.prefix() > 30 {
                return Err(invalid(format!(
                    "subnet {net} is too small: give a /30 or larger"
                )));
            }
            if let Some(t) = taken.iter().find(|t| t.overlaps(&net)) {
                return Err(conflict(format!(
                    "subnet {net} overlaps {t}, already used by another network or a route of this host; choose another"
                )));
            }
            net
        }
        None => free_subnet(taken).ok_or_else(|| {
            EngineError::new(
                ErrorKind::InsufficientStorage,
                "no free private subnet is left; give one with --subnet",
            )
        })?,
    };
    let gateway = match gateway {
        Some(g) => {
            let ip = g.addr();
            if !subnet.contains(ip) || ip == subnet.network() || ip == subnet.broadcast() {
                return Err(invalid(format!(
                    "gateway {ip} is not a host address of subnet {subnet}"
                )));
            }
            ip
        }
        None => subnet.first_host().expect("prefix checked"),
    };
    let ip_range = match ip_range {
        Some(range) => {
            if !subnet.covers(&range) {
                return Err(invalid(format!(
                    "ip range {range} is not inside subnet {subnet}"
                )));
            }
            Some(range)
        }
        None => None,
    };
    Ok((subnet, gateway, ip_range))
}

/// The IPv6 subnet of a new network (kept even without `--ipv6`, as Docker keeps it)
/// and its gateway (the given one, or the subnet's first host), checked against the
/// other networks' IPv6 subnets (`taken`).
fn addresses6(
    taken: &[Ipv6Net],
    subnet: Option<Ipv6Net>,
    gateway: Option<Ipv6Addr>,
    ip_range: Option<Ipv6Net>,
) -> EngineResult<(Option<Ipv6Net>, Option<Ipv6Addr>)> {
    let Some(net) = subnet else {
        if gateway.is_some() || ip_range.is_some() {
            return Err(invalid(
                "an IPv6 gateway or ip range needs its IPv6 subnet: give --subnet too",
            ));
        }
        return Ok((None, None));
    };
    if net.prefix() > 126 {
        return Err(invalid(format!(
            "IPv6 subnet {net} is too small: give a /126 or larger (a /64 is usual)"
        )));
    }
    if let Some(t) = taken.iter().find(|t| t.overlaps(&net)) {
        return Err(conflict(format!(
            "IPv6 subnet {net} overlaps {t}, already used by another network; choose another"
        )));
    }
    let gateway = match gateway {
        Some(g) if !net.contains(g) || g == net.network() => {
            return Err(invalid(format!(
                "gateway {g} is not a host address of IPv6 subnet {net}"
            )))
        }
        Some(g) => g,
        None => net.nth(1).expect("prefix checked"),
    };
    if let Some(r) = ip_range.filter(|r| !net.covers(r)) {
        return Err(invalid(format!(
            "ip range {r} is not inside IPv6 subnet {net}"
        )));
    }
    Ok((Some(net), Some(gateway)))
}

/// Each auxiliary address must be inside the subnet of its family.
pub(super) fn check_aux(
    aux: &BTreeMap<String, IpAddr>,
    subnet: Ipv4Net,
    subnet6: Option<Ipv6Net>,
) -> EngineResult<()> {
    for (k, a) in aux {
        let (inside, pool) = match a {
            IpAddr::V4(ip) => (subnet.contains(*ip), subnet.to_string()),
            IpAddr::V6(ip) => (
                subnet6.is_some_and(|s| s.contains(*ip)),
                subnet6.map_or_else(|| "(no IPv6 subnet)".into(), |s| s.to_string()),
            ),
        };
        if !inside {
            return Err(invalid(format!(
                "auxiliary address: ({k}:{a}) must belong to the master pool: {pool}"
            )));
        }
    }
    Ok(())
}

/// Docker's boolean driver options: `true`/`false` (and Go's other spellings).
fn bool_option(k: &str, v: &str) -> EngineResult<bool> {
    match v {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok(false),
        _ => Err(invalid(format!("option {k}={v:?}: give true or false"))),
    }
}

/// Whether members of network `n` reach each other (`enable_icc`, default true).
pub(super) fn icc(n: &NetworkInspect) -> bool {
    n.options
        .get("com.docker.network.bridge.enable_icc")
        .is_none_or(|v| bool_option("", v).unwrap_or(true))
}

/// Whether traffic leaving `n` is masqueraded (`enable_ip_masquerade`, default true).
pub(super) fn masquerade(n: &NetworkInspect) -> bool {
    n.options
        .get("com.docker.network.bridge.enable_ip_masquerade")
        .is_none_or(|v| bool_option("", v).unwrap_or(true))
}

/// The host address ports published from `n` without one bind to
/// (`host_binding_ipv4`; every address when absent or 0.0.0.0).
pub(super) fn host_binding(n: &NetworkInspect) -> Option<Ipv4Addr> {
    n.options
        .get("com.docker.network.bridge.host_binding_ipv4")
        .and_then(|v| v.parse().ok())
        .filter(|ip: &Ipv4Addr| !ip.is_unspecified())
}

/// A bridge network's driver options, checked; Docker's others are accepted and kept.
pub(super) struct BridgeOptions {
    pub(super) mtu: u32,
    pub(super) mode: NetworkMode,
    pub(super) bridge: String,
}

impl BridgeOptions {
    /// Reads `options`; `bridge` is the bridge's name unless they give one.
    pub(super) fn parse(options: &BTreeMap<String, String>, bridge: String) -> EngineResult<Self> {
        let mut mtu = 1500u32;
        let mut mode = NetworkMode::Nat;
        let mut bridge = bridge;
        for (k, v) in options {
            match k.as_str() {
                "mtu" | "com.docker.network.driver.mtu" => {
                    mtu = v
                        .parse()
                        .ok()
                        .filter(|m| (68..=65535).contains(m))
                        .ok_or_else(|| {
                            invalid(format!("mtu {v:?} must be a number from 68 to 65535"))
                        })?;
                }
                "mode" | "com.docker.network.bridge.gateway_mode_ipv4" => {
                    mode = match v.as_str() {
                        "nat" => NetworkMode::Nat,
                        "routed" => NetworkMode::Routed,
                        _ => return Err(invalid(format!("network mode {v:?}: use nat or routed"))),
                    }
                }
                "bridge_name" | "com.docker.network.bridge.name" => {
                    if v.is_empty()
                        || v.len() > 15
                        || !v
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
                    {
                        return Err(invalid(format!(
                            "bridge name {v:?} must be 1-15 letters, digits, '-', '_' or '.'"
                        )));
                    }
                    bridge = v.clone();
                }
                "com.docker.network.bridge.enable_icc"
                | "com.docker.network.bridge.enable_ip_masquerade" => {
                    bool_option(k, v)?;
                }
                "com.docker.network.bridge.host_binding_ipv4" => {
                    v.parse::<Ipv4Addr>().map_err(|_| {
                        invalid(format!(
                            "option {k}={v:?}: give an IPv4 address of this host"
                        ))
                    })?;
                }
                // Docker's other bridge options are accepted and kept.
                _ => {}
            }
        }
        Ok(BridgeOptions { mtu, mode, bridge })
    }
}

/// Picks a free /16 (then /24) from the private ranges Docker uses, avoiding other
/// networks and the host's routes.
fn free_subnet(taken: &[Ipv4Net]) -> Option<Ipv4Net> {
    let candidates = (17..=31)
        .map(|b| Ipv4Net::new(Ipv4Addr::new(172, b, 0, 0), 16))
        .chain((0..=255).map(|b| Ipv4Net::new(Ipv4Addr::new(192, 168, b, 0), 24)));
    candidates
        .flatten()
        .find(|c| !taken.iter().any(|t| t.overlaps(c)))
}
