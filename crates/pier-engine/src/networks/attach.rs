//! A container's interfaces: attach when it starts (its namespace, one interface per
//! network, published ports, firewall, names), plug and unplug while it runs (`network
//! connect` and `disconnect`), detach when it stops, and recover after a crash.
//!
//! Attach and plug are step lists with an undo per step ([`crate::steps`]):
//! attach is `Netns`, `Iface(i)` per network (itself the plug steps `Lease`, `Veth`,
//! `Bridge`, `Rate`), `Ports`, `Firewall`, `Names`; a failure at any step leaves no
//! lease, port reservation, namespace, link or rule.

use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use pier_api::containers::ContainerInspect;
use pier_api::networks::{Endpoint, NetworkInspect, NetworkScope, PortBinding};
use pier_api::ports::PortRequest;
use pier_api::{Ipv4Address, MacAddress};
use pier_net::nft::Proto;
use pier_store::{Batch, StoreExt, Table};

use super::pool::Claimed;
use super::{net_err, ports_key, Attached, Networks};
use crate::error::{internal, invalid};
use crate::error::{EngineError, EngineResult};
use crate::host::net::{Plumb, RateLimit};
use crate::steps::{self, Saga};

/// The steps of attach.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttachStep {
    Netns,
    /// The interface on the container's network number `i` (in interface order).
    Iface(usize),
    Ports,
    Firewall,
    Names,
}

/// The steps of plugging one interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlugStep {
    Lease,
    Veth,
    Bridge,
    Rate,
}

/// What plugging an interface made: for its undo.
struct Plugged {
    /// The address's claim in the pool, on a pool network (released before the lease).
    claim: Option<Claimed>,
    lease_key: String,
    /// The IPv6 lease's, on a dual-stack network.
    lease6_key: Option<String>,
}

struct AttachSaga<'a> {
    nets: &'a Networks,
    c: &'a ContainerInspect,
    ns: PathBuf,
    ordered: Vec<(String, Endpoint)>,
    requests: Vec<PortRequest>,
    plugged: Vec<Option<Plugged>>,
    out: Attached,
}

impl Saga for AttachSaga<'_> {
    type Step = AttachStep;
    type Error = EngineError;

    fn steps(&self) -> Vec<AttachStep> {
        let mut v = vec![AttachStep::Netns];
        v.extend((0..self.ordered.len()).map(AttachStep::Iface));
        if !self.requests.is_empty() {
            v.extend([AttachStep::Ports, AttachStep::Firewall]);
        }
        v.push(AttachStep::Names);
        v
    }

    async fn run(&mut self, step: AttachStep) -> EngineResult<()> {
        let (nets, c) = (self.nets, self.c);
        match step {
            AttachStep::Netns => nets.host.create_netns(&self.ns).await.map_err(net_err),
            AttachStep::Iface(i) => {
                let (name, ep) = self.ordered[i].clone();
                let (ep, plugged) = nets.plug_one(c, &self.ns, i, &name, ep).await?;
                self.out.endpoints.insert(name, ep);
                self.plugged.push(Some(plugged));
                Ok(())
            }
            AttachStep::Ports => {
                // Published ports go to the first network's address.
                let first = self
                    .ordered
                    .first()
                    .and_then(|(name, _)| self.out.endpoints.get(name));
                let ip = first.and_then(|e| Some(e.ip_address?.addr()));
                let ip6 = first.and_then(|e| e.ip6_address);
                self.out.ports = nets.reserve_ports(c, (ip, ip6), &self.requests)?;
                Ok(())
            }
            AttachStep::Firewall => nets.firewall(),
            AttachStep::Names => {
                nets.index_names(c, &self.out.endpoints);
                Ok(())
            }
        }
    }

    async fn undo(&mut self, step: AttachStep) {
        let (nets, c) = (self.nets, self.c);
        match step {
            // The veths go with the namespace.
            AttachStep::Netns => nets.host.remove_netns(&self.ns).await,
            AttachStep::Iface(i) => {
                if let Some(p) = self.plugged.get_mut(i).and_then(Option::take) {
                    if let Some(claim) = &p.claim {
                        nets.release_claim(claim).await;
                    }
                    nets.drop_lease(&p.lease_key);
                    if let Some(k) = &p.lease6_key {
                        nets.drop_lease(k);
                    }
                }
            }
            AttachStep::Ports => {
                if let Err(e) = nets.release(&c.id, false) {
                    tracing::warn!(container = %c.id, error = %e.message(), "cannot release the host ports of a container that failed to start; the reconciler will");
                }
            }
            AttachStep::Firewall => {
                let r = nets.release(&c.id, false).and_then(|_| nets.firewall());
                if let Err(e) = r {
                    tracing::warn!(container = %c.id, error = %e.message(), "cannot take the ports of a container that failed to start out of the firewall");
                }
            }
            AttachStep::Names => {
                let ips: Vec<(String, Ipv4Addr)> = self
                    .out
                    .endpoints
                    .values()
                    .filter_map(|e| Some((e.network_id.clone(), e.ip_address?.addr())))
                    .collect();
                nets.unindex(&ips);
            }
        }
    }
}

struct PlugSaga<'a> {
    nets: &'a Networks,
    c: &'a ContainerInspect,
    n: NetworkInspect,
    ep: Endpoint,
    plumb: Plumb,
    mac: Option<MacAddress>,
    claim: Option<Claimed>,
    lease_key: String,
    lease6_key: Option<String>,
}

impl Saga for PlugSaga<'_> {
    type Step = PlugStep;
    type Error = EngineError;

    fn steps(&self) -> Vec<PlugStep> {
        use PlugStep::*;
        vec![Lease, Veth, Bridge, Rate]
    }

    async fn run(&mut self, step: PlugStep) -> EngineResult<()> {
        let (nets, c, n) = (self.nets, self.c, &self.n);
        let p = &mut self.plumb;
        match step {
            PlugStep::Lease => {
                let names = (p.ifname.as_str(), p.host_ifname.as_str());
                let ip = if n.scope == NetworkScope::Pool {
                    let (ip, claim) = nets.lease_pool(n, c, &self.ep, names).await?;
                    self.claim = Some(claim);
                    ip
                } else {
                    nets.lease(n, &c.id, &self.ep, names, &HashSet::new())?
                };
                self.lease_key = format!("{}/{}/{ip}", n.project, n.id);
                p.addr = ip;
                let mac = self
                    .ep
                    .static_mac
                    .unwrap_or_else(|| MacAddress::for_ipv4(ip));
                p.mac = mac.octets();
                self.mac = Some(mac);
                if let Some(subnet6) = n.v6() {
                    let ip6 =
                        nets.lease6(n, subnet6, &c.id, &self.ep, (&p.ifname, &p.host_ifname))?;
                    self.lease6_key = Some(format!("{}/{}/{ip6}", n.project, n.id));
                    p.addr6 = Some((ip6, subnet6.prefix()));
                    p.gateway6 = n.gateway6.filter(|_| !n.internal);
                }
                Ok(())
            }
            PlugStep::Veth => nets.host.plumb(p).await.map_err(net_err),
            PlugStep::Bridge => {
                let bridge = match nets.host.link_index(&n.bridge).await.map_err(net_err)? {
                    Some(b) => b,
                    None => {
                        // Someone deleted the bridge: make it again.
                        nets.realize(n).await?;
                        nets.host
                            .link_index(&n.bridge)
                            .await
                            .map_err(net_err)?
                            .ok_or_else(|| internal(format!("bridge {} is missing", n.bridge)))?
                    }
                };
                nets.host
                    .attach_to_bridge(&p.host_ifname, bridge, !super::create::icc(n))
                    .await
                    .map_err(net_err)
            }
            PlugStep::Rate => {
                let rate = |k: &str| {
                    c.config
                        .network_opts
                        .get(k)
                        .or_else(|| c.config.network_opts.get("rate"))
                        .and_then(|v| pier_net::qos::parse_rate(v))
                };
                let (ingress, egress) = (rate("ingress-rate"), rate("egress-rate"));
                if ingress.is_none() && egress.is_none() {
                    return Ok(());
                }
                let limit = RateLimit {
                    host_ifname: p.host_ifname.clone(),
                    netns: p.netns.clone(),
                    ifname: p.ifname.clone(),
                    ingress,
                    egress,
                };
                nets.host.limit_rate(&limit).await.map_err(net_err)
            }
        }
    }

    async fn undo(&mut self, step: PlugStep) {
        match step {
            PlugStep::Lease => {
                if let Some(claim) = &self.claim {
                    self.nets.release_claim(claim).await;
                }
                self.nets.drop_lease(&self.lease_key);
                if let Some(k) = &self.lease6_key {
                    self.nets.drop_lease(k);
                }
            }
            PlugStep::Veth => {
                if let Err(e) = self.nets.host.delete_link(&self.plumb.host_ifname).await {
                    tracing::warn!(link = %self.plumb.host_ifname, error = %e.chain(), "cannot remove the veth of an interface that failed to be set up; the reconciler will");
                }
            }
            PlugStep::Bridge | PlugStep::Rate => {}
        }
    }
}

impl Networks {
    /// The host end's name: the daemon's tag, the container, a nonce and the interface
    /// number. The nonce lets a restart go ahead while the kernel still tears down the
    /// last run's pair in the background.
    fn host_ifname(&self, cid: &str, i: usize) -> String {
        let nonce = &crate::names::random_id()[..4];
        self.names.host_veth(cid, nonce, i)
    }

    pub(super) fn drop_lease(&self, lease_key: &str) {
        let mut b = Batch::new();
        b.delete(Table::Leases, lease_key);
        if let Err(e) = b.commit(self.db.as_ref()) {
            tracing::warn!(lease = %lease_key, error = %e, "cannot release a lease; the reconciler will");
        }
    }

    /// Sets up a container's networking before it starts: its namespace file, an
    /// interface per network, rate limits and published ports. On error everything
    /// made so far is undone.
    pub async fn attach(
        &self,
        c: &ContainerInspect,
        exposed: &[(u16, Proto)],
        share_with: Option<PathBuf>,
    ) -> EngineResult<Attached> {
        let ns = self.netns_path(&c.id);
        if let Some(src) = share_with {
            // `--network container:X`: X's namespace, held by a file of our own.
            return self
                .host
                .bind_netns(&ns, &src)
                .await
                .map(|()| Attached::default())
                .map_err(|e| {
                    internal(format!(
                        "cannot join the network namespace {}: {}",
                        src.display(),
                        e.chain()
                    ))
                });
        }
        let mut requests = Vec::new();
        for p in &c.config.publish {
            requests.extend(p.requests());
        }
        if c.config.publish_all {
            for (port, proto) in exposed {
                if !requests
                    .iter()
                    .any(|r| r.container_port == *port && r.proto == *proto)
                {
                    requests.push(PortRequest {
                        proto: *proto,
                        host_ip: None,
                        host_range: (0, 0),
                        container_port: *port,
                    });
                }
            }
        }
        let ordered = Self::ordered(c);
        // A network's `host_binding_ipv4` is where its ports go when none is given.
        if let Some((_, ep)) = ordered.first() {
            if let Some(ip) = self
                .get(&c.project, &ep.network_id)
                .ok()
                .as_ref()
                .and_then(super::create::host_binding)
            {
                for r in requests.iter_mut().filter(|r| r.host_ip.is_none()) {
                    r.host_ip = Some(ip.into());
                }
            }
        }
        let mut saga = AttachSaga {
            nets: self,
            c,
            ns,
            ordered,
            requests,
            plugged: Vec::new(),
            out: Attached::default(),
        };
        match steps::run(&mut saga).await {
            Ok(()) => Ok(saga.out),
            Err(f) => {
                tracing::debug!(container = %c.id, step = ?f.step, "network attach failed");
                Err(f.error)
            }
        }
    }

    /// Gives running-or-starting container `c` its interface number `i` on network
    /// `name`: a leased address, a veth pair plugged into the bridge, rate limits. On
    /// error nothing of it is left.
    pub async fn plug(
        &self,
        c: &ContainerInspect,
        ns: &Path,
        i: usize,
        name: &str,
        ep: Endpoint,
    ) -> EngineResult<Endpoint> {
        self.plug_one(c, ns, i, name, ep).await.map(|(ep, _)| ep)
    }

    async fn plug_one(
        &self,
        c: &ContainerInspect,
        ns: &Path,
        i: usize,
        name: &str,
        ep: Endpoint,
    ) -> EngineResult<(Endpoint, Plugged)> {
        let n = self.get(&c.project, &ep.network_id).map_err(|_| {
            invalid(format!(
                "network {name} of container {} no longer exists: disconnect it or recreate the network",
                c.name
            ))
        })?;
        let ifname = format!("eth{i}");
        let plumb = Plumb {
            netns: ns.to_path_buf(),
            ifname: ifname.clone(),
            host_ifname: self.host_ifname(&c.id, i),
            addr: Ipv4Addr::UNSPECIFIED,
            prefix: n.subnet.prefix(),
            mac: [0; 6],
            mtu: n.mtu,
            gateway: (!n.internal).then_some(n.gateway.addr()),
            addr6: None,
            gateway6: None,
        };
        let mut saga = PlugSaga {
            nets: self,
            c,
            n,
            ep,
            plumb,
            mac: None,
            claim: None,
            lease_key: String::new(),
            lease6_key: None,
        };
        steps::run(&mut saga).await.map_err(|f| f.error)?;
        let PlugSaga {
            n,
            ep,
            plumb,
            mac,
            claim,
            lease_key,
            lease6_key,
            ..
        } = saga;
        let ep = Endpoint {
            name: c.name.clone(),
            ip_address: Some(plumb.addr.into()),
            prefix_len: Some(n.subnet.prefix()),
            gateway: (!n.internal).then_some(n.gateway),
            mac_address: mac,
            interface: Some(ifname),
            ip6_address: plumb.addr6.map(|(a, _)| a),
            prefix6_len: plumb.addr6.map(|(_, p)| p),
            gateway6: plumb.gateway6,
            ..ep
        };
        let plugged = Plugged {
            claim,
            lease_key,
            lease6_key,
        };
        Ok((ep, plugged))
    }

    /// Takes a running container off one network: its veth, lease and names there.
    /// If its veth cannot be removed, its lease stays (and the error is returned).
    pub async fn unplug(&self, c: &ContainerInspect, network_id: &str) -> EngineResult<()> {
        let mut ips = Vec::new();
        for (k, l) in self.leases()? {
            if l.container == c.id && l.network == network_id {
                self.host
                    .delete_link(&l.host_ifname)
                    .await
                    .map_err(net_err)?;
                self.release_pool_claims(&c.id, Some(network_id)).await;
                let mut b = Batch::new();
                b.delete(Table::Leases, k.clone());
                b.commit(self.db.as_ref())?;
                if let Some(ip) = k.rsplit('/').next().and_then(|i| i.parse().ok()) {
                    ips.push((network_id.to_string(), ip));
                }
            }
        }
        self.unindex(&ips);
        Ok(())
    }

    /// Undoes [`Networks::attach`]: leases, host ports, names, namespace file (and the
    /// veths with it), then the firewall. Safe to call more than once and on a
    /// container never attached; it goes on past a failed step (logged), so that what
    /// it can give back is given back.
    pub async fn detach(&self, c: &ContainerInspect) {
        // Pool claims before the journal entries they rest on.
        self.release_pool_claims(&c.id, None).await;
        let had_ports = match self.release(&c.id, true) {
            Ok(had_ports) => had_ports,
            Err(e) => {
                tracing::warn!(container = %c.id, error = %e.message(), "cannot release a stopped container's addresses and ports; the reconciler will");
                true
            }
        };
        let mut ips = Vec::new();
        // The veth pairs go with the namespace: once its file is unmounted and the
        // container's processes are gone, the kernel removes the namespace and its
        // interfaces in the background, in batches, without the 20 ms RCU wait that
        // deleting each veth here would cost.
        for ep in c.networks.values() {
            if let Some(ip) = ep.ip_address.map(Ipv4Address::addr) {
                ips.push((ep.network_id.clone(), ip));
            }
        }
        self.unindex(&ips);
        self.host.remove_netns(&self.netns_path(&c.id)).await;
        if had_ports || !c.ports.is_empty() {
            if let Err(e) = self.firewall() {
                tracing::warn!(error = %e.message(), "rebuilding the firewall after a container stopped");
            }
        }
    }

    /// For a running container whose start's record a crash lost (it is saved lazily):
    /// fills in its endpoints from its leases and its published ports from their
    /// durable copy, as [`Networks::attach`] made them. What the record has stays.
    pub fn recover(&self, c: &mut ContainerInspect) -> EngineResult<()> {
        for (k, l) in self.leases()? {
            if l.container != c.id {
                continue;
            }
            let Some(ip) = k
                .rsplit('/')
                .next()
                .and_then(|i| i.parse::<std::net::IpAddr>().ok())
            else {
                continue;
            };
            let ip = match ip {
                std::net::IpAddr::V4(ip) => ip,
                std::net::IpAddr::V6(ip6) => {
                    // The IPv6 half of a dual-stack endpoint.
                    let Ok(n) = self.get(&c.project, &l.network) else {
                        continue;
                    };
                    let ep = c
                        .networks
                        .entry(n.name.clone())
                        .or_insert_with(|| Endpoint {
                            network_id: n.id.clone(),
                            ..Default::default()
                        });
                    if ep.ip6_address.is_none() {
                        ep.ip6_address = Some(ip6);
                        ep.prefix6_len = n.subnet6.map(|s| s.prefix());
                        ep.gateway6 = n.gateway6.filter(|_| !n.internal);
                    }
                    continue;
                }
            };
            let Ok(n) = self.get(&c.project, &l.network) else {
                continue;
            };
            let subnet = n.subnet;
            let ep = c
                .networks
                .entry(n.name.clone())
                .or_insert_with(|| Endpoint {
                    network_id: n.id.clone(),
                    ..Default::default()
                });
            if ep.ip_address.is_some() {
                continue;
            }
            let mac = ep.static_mac.unwrap_or_else(|| MacAddress::for_ipv4(ip));
            ep.name = c.name.clone();
            ep.ip_address = Some(ip.into());
            ep.prefix_len = Some(subnet.prefix());
            ep.gateway = (!n.internal).then_some(n.gateway);
            ep.mac_address = Some(mac);
            ep.interface = Some(l.ifname);
        }
        if c.ports.is_empty() {
            if let Some(ports) = self
                .db
                .get_json::<Vec<PortBinding>>(Table::Meta, &ports_key(&c.id))?
            {
                c.ports = ports;
            }
        }
        Ok(())
    }
}
