//! Networks: bridge networks and their records, address leases (IPAM), the plumbing of
//! a container's interfaces when it starts and their removal when it stops, published
//! ports, the embedded DNS servers, and the reconciler that repairs all of it after a
//! crash.
//!
//! A network is IPv4, or dual stack (`--ipv6` with an IPv6 subnet, as Docker 20.10,
//! which has no default IPv6 pool): then the bridge and each container get an IPv6
//! address too, leased as the IPv4 ones are, and the firewall keeps the same rules for
//! IPv6 in an `ip6` table of the same name (NAT66, isolation, published ports).
//!
//! Desired state is in the store: networks (`Table::Networks`), leases
//! (`Table::Leases`, one per address, naming its container and interfaces), host-port
//! reservations (`Table::Meta`, `hostport/<proto>/<port>`) and the containers' endpoints.
//! Uniqueness is kept by the store, not by locks of this process: a lease is created
//! under an "absent" compare on its address's key, a port reservation under a compare on
//! its port's key, and a network under a compare on the networks' epoch key
//! (`network-epoch`), so that racing requests (in one process or several) cannot both
//! win. Actual state is the host's, reached only through [`NetHost`] and [`Firewall`]
//! (`crate::host::net`): bridges, veth pairs, namespace files under `ROOT/netns/`, the
//! DNS servers, and the daemon's nftables table, always rebuilt whole from the store.
//!
//! Networks across a pool of hosts ([`pool`]) are mirrored here from the pool's records
//! and realised as any network, plus a VXLAN link on their bridge; their addresses are
//! claimed in the pool's store too, and [`overlay`] keeps each link's forwarding
//! entries and the other hosts' names as the pool's claims say.
//!
//! Create, remove, attach and connect are step lists with an undo per step
//! ([`crate::steps`]): a failure at any step leaves nothing (no lease, port, link, rule
//! or record). At daemon start [`Networks::reconcile`] makes the host match the store.
//!
//! The names the daemon owns in its network namespace depend on its root
//! ([`pier_net::names`]): the default daemon's are the bridges `pier0` (the default
//! network, named `bridge` as Docker's) and `pier-<id8>`, host veth ends
//! `pv<id6><nonce4><n>` and the table `ip pier`; a daemon on another root puts its tag in
//! each (`pier3fa0`, `pv3fa0...`, `ip pier_3fa0`). Its repairs remove only names of its
//! own shape, so daemons side by side never remove each other's; published ports of
//! the others (read from their tables) count as taken.

mod alloc;
mod attach;
mod create;
mod link_local;
mod names;
pub mod overlay;
mod pool;
mod reconcile;

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use pier_api::containers::ContainerInspect;
use pier_api::networks::{Endpoint, NetworkInspect, NetworkMode, NetworkScope, PortBinding};
use pier_api::{ErrorKind, Ipv4Address, MacAddress, ProjectName};
use pier_net::names::HostNames;
use pier_net::nft::{FwNetwork, FwPort};
use pier_store::{Store, StoreExt, Table};
use serde::{Deserialize, Serialize};

use crate::error::{conflict, internal, invalid};
use crate::error::{EngineError, EngineResult};
use crate::host::net::{Firewall, NetHost};
use crate::RequestContext;

pub use alloc::PortHolder;
use names::NameIndex;
pub use overlay::OverlaySync;
pub use pool::{PoolIdentity, POOL_MTU};
pub use reconcile::NetworkReconciler;

/// The default network's name, as Docker's.
pub const DEFAULT_NETWORK: &str = "bridge";

/// A pier-net error as the engine answers it: its kind decides the status (a host failure
/// is a 500), its message carries the chain of causes.
fn net_err(e: pier_net::Error) -> EngineError {
    use pier_net::ErrorKind as Net;
    let kind = match e.kind() {
        Net::Invalid => ErrorKind::InvalidInput,
        Net::NotFound => ErrorKind::NotFound,
        Net::Conflict => ErrorKind::Conflict,
        Net::Busy => ErrorKind::Unavailable,
        Net::NoSpace => ErrorKind::InsufficientStorage,
        Net::Host => ErrorKind::Internal,
    };
    EngineError::new(kind, e.chain())
}

fn not_found(what: &str) -> EngineError {
    EngineError::new(
        ErrorKind::NotFound,
        format!("no such network: {what} (see `pier network ls`)"),
    )
}

fn key(project: &ProjectName, id: &str) -> String {
    format!("{project}/{id}")
}

/// Where a running container's published ports are kept durably (`Table::Meta`): its
/// record is saved lazily at a start, and a crash right after one must not lose them.
fn ports_key(container_id: &str) -> String {
    format!("ports/{container_id}")
}

/// One leased address: which container holds it, on which interfaces.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Lease {
    pub container: String,
    pub network: String,
    pub ifname: String,
    pub host_ifname: String,
}

/// What a started container needs from its networks.
#[derive(Debug, Default)]
pub struct Attached {
    pub endpoints: BTreeMap<String, Endpoint>,
    pub ports: Vec<PortBinding>,
}

/// The firewall's networks and published ports.
type FwRules = (Vec<FwNetwork>, Vec<FwPort>);

/// The network manager.
pub struct Networks {
    db: Arc<dyn Store>,
    netns_dir: PathBuf,
    /// The names of this daemon's bridges, veths and table.
    names: HostNames,
    host: Arc<dyn NetHost>,
    fw: Arc<dyn Firewall>,
    /// Serializes the firewall's rebuilds (each reads the store and replaces the whole
    /// table, so the last one must see the last change). Allocation takes no lock: the
    /// store's compares keep it unique.
    fw_lock: Mutex<()>,
    /// The rules the last successful rebuild applied: a reconcile pass that would apply
    /// the same, with the table in place, does nothing.
    fw_applied: Mutex<Option<FwRules>>,
    /// The interface index each bridge had when this daemon last made sure of it.
    bridge_index: Mutex<HashMap<String, u32>>,
    /// Creates and removes hold it shared; a reconcile pass holds it alone, so that a pass
    /// never realises a network a failing create is undoing or a remove is taking down.
    pub(super) host_pass: tokio::sync::RwLock<()>,
    index: Arc<RwLock<NameIndex>>,
    /// This daemon as a pool member (None: in no pool).
    pool_id: RwLock<Option<PoolIdentity>>,
    /// The pool's store, while connected.
    pool_store: RwLock<Option<Arc<dyn Store>>>,
}

impl Networks {
    /// Whether `interface` is one this daemon made in its network namespace: a bridge or
    /// VXLAN link of its networks, or the host end of an instance's veth.
    pub fn owns_interface(&self, interface: &str) -> bool {
        self.names.owns_bridge(interface)
            || self.names.owns_veth(interface)
            || self.names.owns_vxlan(interface)
    }

    /// `root` is canonical; `names` are those of the daemon on it
    /// ([`HostNames::for_root`]); `host` and `fw` reach the kernel
    /// ([`crate::host::net::RealNetHost`], [`crate::host::net::NftFirewall`]) or fake it.
    pub fn new(
        root: &Path,
        names: HostNames,
        db: Arc<dyn Store>,
        host: Arc<dyn NetHost>,
        fw: Arc<dyn Firewall>,
    ) -> EngineResult<Self> {
        let netns_dir = root.join("netns");
        fs::create_dir_all(&netns_dir)
            .map_err(|e| internal(format!("cannot create {}: {e}", netns_dir.display())))?;
        // A daemon whose tag collides with a running or stopped daemon's on another root
        // would take its table, bridges and veths for its own: touch nothing of them.
        if let Some(other) = fw.foreign_owner() {
            return Err(conflict(format!(
                "the nftables table ip {} belongs to the Pier daemon of another state root (marked {other}): its root's path and this one's ({}) give the same tag {:?}, which names the table, bridges and veths of both; give this daemon another --root",
                names.table(),
                root.display(),
                names.tag()
            )));
        }
        Ok(Networks {
            db,
            netns_dir,
            names,
            host,
            fw,
            fw_lock: Mutex::new(()),
            fw_applied: Mutex::new(None),
            bridge_index: Mutex::new(HashMap::new()),
            host_pass: tokio::sync::RwLock::new(()),
            index: Arc::new(RwLock::new(NameIndex::default())),
            pool_id: RwLock::new(None),
            pool_store: RwLock::new(None),
        })
    }

    pub fn netns_path(&self, container_id: &str) -> PathBuf {
        self.netns_dir.join(container_id)
    }

    fn all(&self, project: &ProjectName) -> EngineResult<Vec<NetworkInspect>> {
        Ok(self
            .db
            .list_json::<NetworkInspect>(Table::Networks, &format!("{project}/"))?
            .into_iter()
            .map(|(_, n)| n)
            .collect())
    }

    /// Finds a network by name, full ID or unique ID prefix.
    pub fn get(&self, project: &ProjectName, name_or_id: &str) -> EngineResult<NetworkInspect> {
        let all = self.all(project)?;
        if let Some(n) = all
            .iter()
            .find(|n| n.name == name_or_id || n.id == name_or_id)
        {
            return Ok(n.clone());
        }
        let by_prefix: Vec<&NetworkInspect> = all
            .iter()
            .filter(|n| !name_or_id.is_empty() && n.id.starts_with(name_or_id))
            .collect();
        match by_prefix.as_slice() {
            [n] => Ok((*n).clone()),
            [] => Err(not_found(name_or_id)),
            _ => Err(invalid(format!(
                "network ID prefix {name_or_id:?} matches several networks; give more of it"
            ))),
        }
    }

    fn containers(&self) -> EngineResult<Vec<ContainerInspect>> {
        Ok(crate::instances::record::load_all(self.db.as_ref(), "")?
            .into_iter()
            .map(crate::instances::record::Instance::into_inspect)
            .collect())
    }

    /// A network with its running containers filled in.
    pub fn inspect(&self, ctx: &RequestContext, name: &str) -> EngineResult<NetworkInspect> {
        let mut n = self.get(ctx.project(), name)?;
        fill_endpoints(std::slice::from_mut(&mut n), &self.containers()?);
        self.fill_pool_endpoints(std::slice::from_mut(&mut n));
        Ok(n)
    }

    /// On pool networks: this host's endpoints name it, and the other hosts' are added.
    fn fill_pool_endpoints(&self, networks: &mut [NetworkInspect]) {
        let Some(me) = self.identity() else {
            return;
        };
        for n in networks
            .iter_mut()
            .filter(|n| n.scope == NetworkScope::Pool)
        {
            for ep in n.containers.values_mut() {
                ep.host = Some(me.host.clone());
            }
            let remote = self.remote_endpoints(n);
            for (id, ep) in remote {
                n.containers.entry(id).or_insert(ep);
            }
        }
    }

    /// The context's project's networks, by name.
    pub fn list(&self, ctx: &RequestContext) -> EngineResult<Vec<NetworkInspect>> {
        let mut v = self.all(ctx.project())?;
        v.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(v)
    }

    /// As [`Networks::list`], each with its running containers filled in as
    /// [`Networks::inspect`] does, from one read of the container records.
    pub fn list_with_endpoints(&self, ctx: &RequestContext) -> EngineResult<Vec<NetworkInspect>> {
        let mut v = self.list(ctx)?;
        fill_endpoints(&mut v, &self.containers()?);
        self.fill_pool_endpoints(&mut v);
        Ok(v)
    }

    // ---- container endpoints -------------------------------------------------------

    /// The endpoints a new container asks for: its first network with `--ip`,
    /// `--mac-address` and `--network-alias`. None for `none`, `host`, `container:`.
    pub fn endpoints_for_create(
        &self,
        project: &ProjectName,
        req: &pier_api::containers::ContainerCreate,
    ) -> EngineResult<BTreeMap<String, Endpoint>> {
        let mode = req.network.as_deref().unwrap_or(DEFAULT_NETWORK);
        let mut out = BTreeMap::new();
        let no_net = matches!(mode, "none" | "host") || mode.starts_with("container:");
        if no_net {
            if req.ip.is_some() || req.mac_address.is_some() || !req.network_aliases.is_empty() {
                return Err(invalid(format!(
                    "--ip, --mac-address and --network-alias need a bridge network, not --network {mode}"
                )));
            }
            if !req.publish.is_empty() || req.publish_all {
                return Err(invalid(format!(
                    "ports cannot be published with --network {mode}: the container has no network of its own"
                )));
            }
            return Ok(out);
        }
        for (k, v) in &req.network_opts {
            match k.as_str() {
                "rate" | "ingress-rate" | "egress-rate" => {
                    pier_net::qos::parse_rate(v).ok_or_else(|| {
                        invalid(format!("--network-opt {k}={v}: give a rate such as 10mbit, 500kbit or 1gbit (at least 8kbit)"))
                    })?;
                }
                _ => {
                    return Err(invalid(format!(
                        "unknown --network-opt {k:?}: use rate, ingress-rate or egress-rate"
                    )))
                }
            }
        }
        let n = match self.get(project, mode) {
            Ok(n) => n,
            // As Docker's: a network that does not exist (yet) is looked for again at
            // the start, which fails then if it still does not ([`Self::resolve_pending`]).
            Err(e) if e.kind() == ErrorKind::NotFound && mode != DEFAULT_NETWORK => {
                let pending = Endpoint {
                    aliases: req.network_aliases.clone(),
                    static_ip: req.ip,
                    static_mac: req.mac_address,
                    static_ip6: req.ip6,
                    ..Default::default()
                };
                out.insert(mode.to_string(), pending);
                return Ok(out);
            }
            Err(e) => return Err(e),
        };
        let mut ep = self.endpoint_request(&n, req.ip, req.mac_address, &req.network_aliases)?;
        ep.static_ip6 = self.check_ip6(&n, req.ip6)?;
        out.insert(n.name.clone(), ep);
        Ok(out)
    }

    /// Fills in the endpoints a create recorded for networks that did not exist then
    /// (no network ID): each is checked against its network now, or the start fails as
    /// Docker's does, with 404 "network NAME not found".
    pub fn resolve_pending(
        &self,
        project: &ProjectName,
        endpoints: &mut BTreeMap<String, Endpoint>,
    ) -> EngineResult<()> {
        let pending: Vec<String> = endpoints
            .iter()
            .filter(|(_, ep)| ep.network_id.is_empty())
            .map(|(name, _)| name.clone())
            .collect();
        for name in pending {
            let n = self.get(project, &name).map_err(|e| match e.kind() {
                ErrorKind::NotFound => {
                    EngineError::new(ErrorKind::NotFound, format!("network {name} not found"))
                }
                _ => e,
            })?;
            let old = endpoints.remove(&name).unwrap_or_default();
            let mut ep = self.endpoint_request(&n, old.static_ip, old.static_mac, &old.aliases)?;
            ep.static_ip6 = self.check_ip6(&n, old.static_ip6)?;
            ep.options = old.options;
            endpoints.insert(n.name.clone(), ep);
        }
        Ok(())
    }

    /// Checks `--ip`, `--mac-address` and aliases for network `n`.
    pub(crate) fn endpoint_request(
        &self,
        n: &NetworkInspect,
        ip: Option<Ipv4Address>,
        mac: Option<MacAddress>,
        aliases: &[String],
    ) -> EngineResult<Endpoint> {
        if let Some(addr) = ip.map(Ipv4Address::addr) {
            let subnet = n.subnet;
            if !subnet.contains(addr)
                || addr == subnet.network()
                || addr == subnet.broadcast()
                || n.gateway == addr
            {
                return Err(invalid(format!(
                    "--ip {addr} is not a free host address of network {} ({subnet}, gateway {})",
                    n.name, n.gateway
                )));
            }
            if n.name == DEFAULT_NETWORK {
                return Err(invalid("--ip works on user networks only, as on Docker: create one with `pier network create`"));
            }
        }
        if !aliases.is_empty() && n.name == DEFAULT_NETWORK {
            return Err(invalid(
                "--network-alias works on user networks only, as on Docker",
            ));
        }
        for a in aliases {
            if !crate::names::valid_name(a) {
                return Err(invalid(format!("invalid network alias {a:?}")));
            }
        }
        Ok(Endpoint {
            network_id: n.id.clone(),
            name: String::new(),
            aliases: aliases.to_vec(),
            static_ip: ip,
            static_mac: mac,
            ..Default::default()
        })
    }

    /// Checks `--ip6` (`IPAMConfig.IPv6Address`) for network `n`: a host address of its
    /// IPv6 subnet, on a dual-stack network.
    pub(crate) fn check_ip6(
        &self,
        n: &NetworkInspect,
        ip6: Option<std::net::Ipv6Addr>,
    ) -> EngineResult<Option<std::net::Ipv6Addr>> {
        let Some(ip) = ip6 else { return Ok(None) };
        let Some(subnet) = n.v6() else {
            return Err(invalid(format!(
                "--ip6 {ip} needs an IPv6 network: network {} was created without --ipv6 and an IPv6 subnet",
                n.name
            )));
        };
        if !subnet.contains(ip) || ip == subnet.network() || n.gateway6 == Some(ip) {
            return Err(invalid(format!(
                "--ip6 {ip} is not a free host address of network {} ({subnet}, gateway {})",
                n.name,
                n.gateway6.map(|g| g.to_string()).unwrap_or_default()
            )));
        }
        Ok(Some(ip))
    }

    /// The container's networks in interface order: the one it was created on first.
    pub(super) fn ordered(c: &ContainerInspect) -> Vec<(String, Endpoint)> {
        let first = c
            .config
            .network
            .clone()
            .unwrap_or_else(|| DEFAULT_NETWORK.into());
        let mut v: Vec<(String, Endpoint)> = c
            .networks
            .iter()
            .map(|(k, e)| (k.clone(), e.clone()))
            .collect();
        v.sort_by_key(|(k, _)| (k != &first, k.clone()));
        v
    }

    fn leases(&self) -> EngineResult<Vec<(String, Lease)>> {
        Ok(self.db.list_json::<Lease>(Table::Leases, "")?)
    }

    // ---- firewall ------------------------------------------------------------------

    /// Rebuilds the daemon's nftables table from the store: every network, and every
    /// reserved host port (each reservation names its container's address).
    fn firewall(&self) -> EngineResult<()> {
        self.rebuild_firewall(true).map(drop)
    }

    /// The bridges' interface indexes, as last seen.
    pub(super) fn bridge_indexes(&self) -> HashMap<String, u32> {
        self.bridge_index
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// As [`Networks::firewall`]; with `always` false, only if the rules differ from
    /// those last applied or the table is not in place. Whether it applied them.
    pub(super) fn rebuild_firewall(&self, always: bool) -> EngineResult<bool> {
        let _g = self.fw_lock.lock().unwrap_or_else(|e| e.into_inner());
        let rules = self.firewall_rules()?;
        let mut applied = self.fw_applied.lock().unwrap_or_else(|e| e.into_inner());
        if !always && applied.as_ref() == Some(&rules) && self.fw.in_place() {
            return Ok(false);
        }
        // Forgotten first: after a failed apply, the table is unknown.
        *applied = None;
        self.fw.apply(&rules.0, &rules.1).map_err(net_err)?;
        *applied = Some(rules);
        Ok(true)
    }

    /// The rules the store asks for.
    fn firewall_rules(&self) -> EngineResult<FwRules> {
        let nets: Vec<FwNetwork> = self
            .db
            .list_json::<NetworkInspect>(Table::Networks, "")?
            .into_iter()
            .map(|(_, n)| FwNetwork {
                overlay: self.vxlan_of(&n).map(|v| v.name),
                subnet: n.subnet,
                subnet6: n.v6(),
                masquerade: create::masquerade(&n),
                bridge: n.bridge,
                internal: n.internal,
                routed: n.mode == NetworkMode::Routed,
            })
            .collect();
        let ports: Vec<FwPort> = self
            .port_reservations()?
            .into_iter()
            .flat_map(|(proto, port, holders)| {
                holders.into_iter().filter_map(move |h| {
                    Some(FwPort {
                        proto,
                        host_ip: h.host_ip,
                        host_port: port,
                        container_ip: h.container_ip?,
                        container_ip6: h.container_ip6,
                        container_port: h.container_port,
                    })
                })
            })
            .collect();
        Ok((nets, ports))
    }

    /// Stops the DNS servers (daemon shutdown). Bridges, the firewall table and running
    /// containers' interfaces stay, so that containers keep their network meanwhile.
    pub fn shutdown(&self) {
        self.host.stop_all_dns();
    }

    // ---- resolv.conf and hosts -----------------------------------------------------

    /// `/etc/resolv.conf` for a container: the network's DNS server (its gateway), or
    /// the `--dns` servers given.
    pub fn resolv_conf(&self, c: &ContainerInspect, first: Option<&NetworkInspect>) -> String {
        let mut s = String::new();
        if !c.config.dns.is_empty() {
            for d in &c.config.dns {
                s.push_str(&format!("nameserver {d}\n"));
            }
        } else if let Some(n) = first {
            s.push_str(&format!("nameserver {}\n", n.gateway));
        } else {
            let host = fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
            for l in host.lines().filter(|l| l.starts_with("nameserver")) {
                s.push_str(l);
                s.push('\n');
            }
        }
        if !c.config.dns_search.is_empty() {
            s.push_str(&format!("search {}\n", c.config.dns_search.join(" ")));
        }
        if !c.config.dns_options.is_empty() {
            s.push_str(&format!("options {}\n", c.config.dns_options.join(" ")));
        }
        s
    }
}

/// Fills each network's `containers` with the endpoints of the containers running on it,
/// each with its container's name.
fn fill_endpoints(networks: &mut [NetworkInspect], containers: &[ContainerInspect]) {
    for n in networks {
        for c in containers {
            if let Some(ep) = c.networks.get(&n.name) {
                if ep.network_id == n.id && ep.ip_address.is_some() {
                    let ep = Endpoint {
                        name: c.name.clone(),
                        ..ep.clone()
                    };
                    n.containers.insert(c.id.clone(), ep);
                }
            }
        }
    }
}
