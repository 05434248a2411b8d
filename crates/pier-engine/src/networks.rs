//! Networks: bridge networks and their records, address leases (IPAM), the plumbing of
//! a container's interfaces when it starts and their removal when it stops, published
//! ports, the embedded DNS servers, and the reconciler that repairs all of it after a
//! crash.
//!
//! Desired state is in the store: networks (`Table::Networks`), leases
//! (`Table::Leases`, one per address, naming its container and interfaces) and the
//! containers' endpoints and ports. Actual state is the kernel's: bridges, veth pairs,
//! namespace files under `ROOT/netns/`, and the daemon's nftables table, which is
//! always rebuilt whole from the store. At daemon start [`Networks::reconcile`] makes the
//! kernel match: bridges made, stray veths, namespace files and leases removed.
//!
//! The names the daemon owns in its network namespace depend on its root
//! ([`pier_net::names`]): the default daemon's are the bridges `pier0` (the default
//! network, named `bridge` as Docker's) and `pier-<id8>`, host veth ends
//! `pv<id6><nonce4><n>` and the table `ip pier`; a daemon on another root puts its tag in
//! each (`pier3fa0`, `pv3fa0...`, `ip pier_3fa0`). Its repairs remove only names of its
//! own shape, so daemons side by side never remove each other's; published ports of
//! the others (read from their tables) count as taken.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use pier_api::containers::{ContainerInspect, ContainerStatus};
use pier_api::networks::{Endpoint, NetworkCreate, NetworkInspect, NetworkMode, PortBinding};
use pier_api::ports::PortRequest;
use pier_api::time::now_rfc3339;
use pier_api::{ErrorKind, Ipv4Address, MacAddress, ProjectName};
use pier_net::dns::{DnsServer, Records};
use pier_net::ipam::{self, Ipv4Net};
use pier_net::names::HostNames;
use pier_net::netlink::{self, Netlink, Plumb};
use pier_net::nft::{self, FwNetwork, FwPort, Proto};
use pier_store::{Batch, Store, StoreExt, Table};
use serde::{Deserialize, Serialize};

use crate::containers::{conflict, internal, invalid};
use crate::error::{EngineError, EngineResult};
use crate::DEFAULT_ROOT;

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
struct Lease {
    container: String,
    network: String,
    ifname: String,
    host_ifname: String,
}

/// What a started container needs from its networks.
#[derive(Debug, Default)]
pub struct Attached {
    pub endpoints: BTreeMap<String, Endpoint>,
    pub ports: Vec<PortBinding>,
}

/// The names a network's DNS server answers, by network ID.
#[derive(Default)]
struct NameIndex {
    /// network ID -> name -> addresses.
    names: HashMap<String, HashMap<String, Vec<Ipv4Addr>>>,
    /// (network ID, address) -> the networks of the container holding it, so that a
    /// container on several networks resolves names on all of them, as on Docker.
    networks_of: HashMap<(String, Ipv4Addr), Vec<String>>,
}

struct NetRecords {
    network: String,
    network_name: String,
    /// Container names resolve on user networks only, as on Docker.
    answers_names: bool,
    index: Arc<RwLock<NameIndex>>,
}

impl Records for NetRecords {
    fn lookup(&self, name: &str) -> Option<Vec<Ipv4Addr>> {
        if !self.answers_names {
            return None;
        }
        let suffix = format!(".{}", self.network_name.to_ascii_lowercase());
        let short = name.strip_suffix(&suffix).unwrap_or(name);
        let idx = self.index.read().unwrap();
        idx.names.get(&self.network)?.get(short).cloned()
    }

    fn lookup_from(&self, client: std::net::IpAddr, name: &str) -> Option<Vec<Ipv4Addr>> {
        if let Some(found) = self.lookup(name) {
            return Some(found);
        }
        let std::net::IpAddr::V4(client) = client else {
            return None;
        };
        // The asker's other networks (user networks only: the default one has no names).
        let idx = self.index.read().unwrap();
        let others = idx.networks_of.get(&(self.network.clone(), client))?;
        others
            .iter()
            .filter(|n| **n != self.network)
            .find_map(|n| idx.names.get(n)?.get(name).cloned())
    }

    fn reverse(&self, ip: Ipv4Addr) -> Option<String> {
        if !self.answers_names {
            return None;
        }
        let idx = self.index.read().unwrap();
        let names = idx.names.get(&self.network)?;
        // The longest name is the container's name rather than its short ID.
        names
            .iter()
            .filter(|(n, ips)| ips.contains(&ip) && !n.chars().all(|c| c.is_ascii_hexdigit()))
            .map(|(n, _)| format!("{n}.{}", self.network_name))
            .min()
    }
}

/// The network manager.
pub struct Networks {
    db: Arc<dyn Store>,
    netns_dir: PathBuf,
    /// The names of this daemon's bridges, veths and table.
    names: HostNames,
    nl: Netlink,
    /// Serializes address allocation, port allocation and firewall rebuilds.
    alloc: tokio::sync::Mutex<()>,
    dns: Mutex<HashMap<String, DnsServer>>,
    index: Arc<RwLock<NameIndex>>,
    upstreams: Vec<SocketAddr>,
}

impl Networks {
    /// Must be called inside the tokio runtime. `root` is canonical; `names` are those of
    /// the daemon on it ([`HostNames::for_root`]).
    pub fn new(root: &Path, names: HostNames, db: Arc<dyn Store>) -> EngineResult<Self> {
        let netns_dir = root.join("netns");
        fs::create_dir_all(&netns_dir)
            .map_err(|e| internal(format!("cannot create {}: {e}", netns_dir.display())))?;
        // A daemon whose tag collides with a running or stopped daemon's on another root
        // would take its table, bridges and veths for its own: touch nothing of them.
        let table = names.table();
        if let Some(other) = nft::owner_marks(&table, HostNames::is_owner_chain)
            .into_iter()
            .find(|m| m != names.owner_chain())
        {
            return Err(conflict(format!(
                "the nftables table ip {table} belongs to the Pier daemon of another state root (marked {other}): its root's path and this one's ({}) give the same tag {:?}, which names the table, bridges and veths of both; give this daemon another --root",
                root.display(),
                names.tag()
            )));
        }
        let resolv = fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
        Ok(Networks {
            db,
            netns_dir,
            names,
            nl: Netlink::new().map_err(net_err)?,
            alloc: tokio::sync::Mutex::new(()),
            dns: Mutex::new(HashMap::new()),
            index: Arc::new(RwLock::new(NameIndex::default())),
            upstreams: pier_net::dns::upstreams_from_resolv_conf(&resolv),
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
        Ok(self
            .db
            .list_json::<ContainerInspect>(Table::Containers, "")?
            .into_iter()
            .map(|(_, c)| c)
            .collect())
    }

    /// A network with its running containers filled in.
    pub fn inspect(&self, project: &ProjectName, name: &str) -> EngineResult<NetworkInspect> {
        let mut n = self.get(project, name)?;
        for c in self.containers()? {
            if let Some(ep) = c.networks.get(&n.name) {
                if ep.network_id == n.id && ep.ip_address.is_some() {
                    n.containers.insert(c.id.clone(), ep.clone());
                }
            }
        }
        Ok(n)
    }

    pub fn list(&self, project: &ProjectName) -> EngineResult<Vec<NetworkInspect>> {
        let mut v = self.all(project)?;
        v.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(v)
    }

    // ---- create and remove ---------------------------------------------------------

    /// Picks a free /16 (then /24) from the private ranges Docker uses, avoiding other
    /// networks and the host's routes.
    fn free_subnet(&self, taken: &[Ipv4Net]) -> Option<Ipv4Net> {
        let candidates = (17..=31)
            .map(|b| Ipv4Net::new(Ipv4Addr::new(172, b, 0, 0), 16))
            .chain((0..=255).map(|b| Ipv4Net::new(Ipv4Addr::new(192, 168, b, 0), 24)));
        candidates
            .flatten()
            .find(|c| !taken.iter().any(|t| t.overlaps(c)))
    }

    fn taken_subnets(&self) -> EngineResult<Vec<Ipv4Net>> {
        let mut taken: Vec<Ipv4Net> = ipam::host_routes().into_iter().map(|(_, n)| n).collect();
        for (_, n) in self.db.list_json::<NetworkInspect>(Table::Networks, "")? {
            taken.push(n.subnet);
        }
        Ok(taken)
    }

    pub async fn create(
        &self,
        project: &ProjectName,
        req: NetworkCreate,
    ) -> EngineResult<NetworkInspect> {
        self.create_inner(project, req, false).await
    }

    async fn create_inner(
        &self,
        project: &ProjectName,
        req: NetworkCreate,
        default: bool,
    ) -> EngineResult<NetworkInspect> {
        let _g = self.alloc.lock().await;
        let name = req.name.clone();
        if !crate::containers::valid_name(&name) {
            return Err(invalid(format!("invalid network name {name:?}: use letters, digits, '_', '.' and '-', starting with a letter or digit")));
        }
        if ["none", "host"].contains(&name.as_str()) || (!default && name == DEFAULT_NETWORK) {
            return Err(conflict(format!(
                "{name:?} is a predefined network; choose another name"
            )));
        }
        if self.all(project)?.iter().any(|n| n.name == name) {
            return Err(conflict(format!("network {name} already exists")));
        }
        match req.driver.as_deref() {
            None | Some("bridge") => {}
            Some(d) => {
                return Err(invalid(format!(
                    "network driver {d:?} is not supported; use bridge"
                )))
            }
        }
        let id = crate::containers::random_id();
        let bridge = if default {
            self.names.default_bridge()
        } else {
            self.names.network_bridge(&id)
        };
        let BridgeOptions { mtu, mode, bridge } = BridgeOptions::parse(&req.options, bridge)?;
        let (subnet, gateway, ip_range) = self.addresses(req.subnet, req.gateway, req.ip_range)?;
        if self
            .db
            .list_json::<NetworkInspect>(Table::Networks, "")?
            .iter()
            .any(|(_, n)| n.bridge == bridge)
        {
            return Err(conflict(format!(
                "bridge {bridge} is used by another network"
            )));
        }
        let n = NetworkInspect {
            id,
            name,
            project: project.clone(),
            driver: "bridge".into(),
            created: now_rfc3339(),
            subnet,
            gateway: gateway.into(),
            ip_range,
            internal: req.internal,
            mode,
            mtu,
            bridge,
            options: req.options,
            labels: req.labels,
            containers: BTreeMap::new(),
        };
        let mut b = Batch::new();
        b.put_json(Table::Networks, key(project, &n.id), &n);
        b.commit(self.db.as_ref())?;
        if let Err(e) = self.realize(&n).await {
            // Nothing half-made stays: no record, no bridge.
            let mut b = Batch::new();
            b.delete(Table::Networks, key(project, &n.id));
            let _ = b.commit(self.db.as_ref());
            let _ = self.nl.delete(&n.bridge).await;
            self.stop_dns(&n.id);
            return Err(e);
        }
        self.firewall()?;
        Ok(n)
    }

    /// The subnet (given, or a free one), gateway and allocation range of a new
    /// network, checked against the subnets in use.
    fn addresses(
        &self,
        subnet: Option<Ipv4Net>,
        gateway: Option<Ipv4Address>,
        ip_range: Option<Ipv4Net>,
    ) -> EngineResult<(Ipv4Net, Ipv4Addr, Option<Ipv4Net>)> {
        let taken = self.taken_subnets()?;
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
            None => self.free_subnet(&taken).ok_or_else(|| {
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

    /// Makes the kernel side of a network: its bridge, sysctls and DNS server.
    async fn realize(&self, n: &NetworkInspect) -> EngineResult<()> {
        let subnet = n.subnet;
        let gw = n.gateway.addr();
        // Another network of this host on the same addresses (another daemon's, made while
        // this one's bridge was gone): two bridges would answer for them. A wider route
        // (a VPN's 172.16.0.0/12) loses to the bridge's own and does no harm.
        if let Some((dev, net)) = ipam::host_routes().into_iter().find(|(dev, net)| {
            *dev != n.bridge && net.overlaps(&subnet) && net.prefix() >= subnet.prefix()
        }) {
            return Err(conflict(format!(
                "network {}'s subnet {subnet} overlaps {net}, routed through {dev} on this host (another Pier daemon's network, or another program's): remove that, or recreate network {} on another subnet",
                n.name, n.name
            )));
        }
        self.nl
            .ensure_bridge(&n.bridge, gw, subnet.prefix(), n.mtu)
            .await
            .map_err(net_err)?;
        netlink::sysctl("ipv4/ip_forward", "1").map_err(net_err)?;
        // Published ports answer on 127.0.0.1 too.
        netlink::sysctl(&format!("ipv4/conf/{}/route_localnet", n.bridge), "1").map_err(net_err)?;
        if !self.dns.lock().unwrap().contains_key(&n.id) {
            let records = Arc::new(NetRecords {
                network: n.id.clone(),
                network_name: n.name.clone(),
                answers_names: n.name != DEFAULT_NETWORK,
                index: self.index.clone(),
            });
            let server =
                DnsServer::start(SocketAddr::from((gw, 53)), records, self.upstreams.clone())
                    .await
                    .map_err(|e| {
                        internal(format!(
                            "cannot serve DNS on {gw}:53 for network {}: {e}",
                            n.name
                        ))
                    })?;
            self.dns.lock().unwrap().insert(n.id.clone(), server);
        }
        Ok(())
    }

    fn stop_dns(&self, network_id: &str) {
        if let Some(s) = self.dns.lock().unwrap().remove(network_id) {
            s.stop();
        }
    }

    pub async fn remove(&self, project: &ProjectName, name: &str) -> EngineResult<()> {
        let _g = self.alloc.lock().await;
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
        let mut b = Batch::new();
        b.delete(Table::Networks, key(project, &n.id));
        b.commit(self.db.as_ref())?;
        self.stop_dns(&n.id);
        self.nl.delete(&n.bridge).await.map_err(net_err)?;
        self.firewall()?;
        Ok(())
    }

    /// Removes every network no container uses; returns their names.
    pub async fn prune(&self, project: &ProjectName) -> EngineResult<Vec<String>> {
        let used: HashSet<String> = self
            .containers()?
            .iter()
            .flat_map(|c| c.networks.values().map(|e| e.network_id.clone()))
            .collect();
        let mut removed = Vec::new();
        for n in self.all(project)? {
            if n.name != DEFAULT_NETWORK && !used.contains(&n.id) {
                self.remove(project, &n.id).await?;
                removed.push(n.name);
            }
        }
        Ok(removed)
    }

    // ---- firewall ------------------------------------------------------------------

    /// Rebuilds Pier's nftables table from the store.
    fn firewall(&self) -> EngineResult<()> {
        self.firewall_with(None)
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
        let n = self.get(project, mode)?;
        let ep = self.endpoint_request(&n, req.ip, req.mac_address, &req.network_aliases)?;
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
        out.insert(n.name.clone(), ep);
        Ok(out)
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
            if !crate::containers::valid_name(a) {
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

    /// The container's networks in interface order: the one it was created on first.
    fn ordered(c: &ContainerInspect) -> Vec<(String, Endpoint)> {
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

    /// Leases an address on `n` for container `cid`.
    fn lease(
        &self,
        n: &NetworkInspect,
        cid: &str,
        ep: &Endpoint,
        ifname: &str,
        host_ifname: &str,
    ) -> EngineResult<Ipv4Addr> {
        let subnet = n.subnet;
        let prefix = format!("{}/{}/", n.project, n.id);
        let leases = self.db.list_json::<Lease>(Table::Leases, &prefix)?;
        let mut used: HashSet<Ipv4Addr> = leases
            .iter()
            .filter_map(|(k, _)| k.rsplit('/').next()?.parse().ok())
            .collect();
        used.insert(n.gateway.addr());
        let ip = match ep.static_ip.map(Ipv4Address::addr) {
            Some(ip) => {
                if let Some((_, l)) = leases.iter().find(|(k, _)| k.ends_with(&format!("/{ip}"))) {
                    return Err(conflict(format!(
                        "address {ip} on network {} is in use by container {}",
                        n.name,
                        &l.container[..12.min(l.container.len())]
                    )));
                }
                ip
            }
            None => {
                let range = n.ip_range.unwrap_or(subnet);
                let last = self
                    .db
                    .get(Table::Meta, &format!("last-ip/{}", n.id))?
                    .and_then(|b| String::from_utf8(b).ok()?.parse().ok());
                ipam::allocate(&subnet, &range, &used, last).ok_or_else(|| {
                    EngineError::new(
                        ErrorKind::InsufficientStorage,
                        format!("network {} has no free address left", n.name),
                    )
                })?
            }
        };
        let mut b = Batch::new();
        b.put_json(
            Table::Leases,
            format!("{prefix}{ip}"),
            &Lease {
                container: cid.to_string(),
                network: n.id.clone(),
                ifname: ifname.to_string(),
                host_ifname: host_ifname.to_string(),
            },
        );
        b.ops.push(pier_store::Op::Put {
            table: Table::Meta,
            key: format!("last-ip/{}", n.id),
            value: ip.to_string().into_bytes(),
        });
        b.commit(self.db.as_ref())?;
        Ok(ip)
    }

    fn release(&self, cid: &str) -> EngineResult<Vec<Lease>> {
        let mut b = Batch::new();
        b.delete(Table::Meta, ports_key(cid));
        let mut gone = Vec::new();
        for (k, l) in self.leases()? {
            if l.container == cid {
                b.delete(Table::Leases, k);
                gone.push(l);
            }
        }
        // Without waiting for the disk: a release a crash loses leaves a lease of a
        // container that does not run, which `reconcile` removes.
        b.commit_lazy(self.db.as_ref())?;
        Ok(gone)
    }

    /// The host end's name: the daemon's tag, the container, a nonce and the interface
    /// number. The nonce lets a restart go ahead while the kernel still tears down the
    /// last run's pair in the background.
    fn host_ifname(&self, cid: &str, i: usize) -> String {
        let nonce = &crate::containers::random_id()[..4];
        self.names.host_veth(cid, nonce, i)
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
            let (ns2, src2) = (ns.clone(), src.clone());
            tokio::task::spawn_blocking(move || {
                fs::File::create(&ns2)?;
                rustix::mount::mount_bind(&src2, &ns2).map_err(std::io::Error::from)
            })
            .await?
            .map_err(|e| {
                internal(format!(
                    "cannot join the network namespace {}: {e}",
                    src.display()
                ))
            })?;
            return Ok(Attached::default());
        }
        let r = self.attach_inner(c, exposed, &ns).await;
        if r.is_err() {
            self.detach(c).await;
        }
        r
    }

    async fn attach_inner(
        &self,
        c: &ContainerInspect,
        exposed: &[(u16, Proto)],
        ns: &Path,
    ) -> EngineResult<Attached> {
        let ns2 = ns.to_path_buf();
        tokio::task::spawn_blocking(move || {
            netlink::remove_netns(&ns2);
            netlink::create_netns(&ns2)
        })
        .await?
        .map_err(net_err)?;
        let mut out = Attached::default();
        for (i, (name, ep)) in Self::ordered(c).into_iter().enumerate() {
            let ep = self.plug(c, ns, i, &name, ep).await?;
            out.endpoints.insert(name, ep);
        }
        // Published ports go to the first network's address.
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
        if !requests.is_empty() {
            let _g = self.alloc.lock().await;
            out.ports = self.bind_ports(c, &requests)?;
            let mut b = Batch::new();
            b.put_json(Table::Meta, ports_key(&c.id), &out.ports);
            b.commit(self.db.as_ref())?;
            let mut with = c.clone();
            with.ports = out.ports.clone();
            with.networks = out.endpoints.clone();
            with.state.status = ContainerStatus::Running;
            self.firewall_with(Some(&with))?;
        }
        self.index_names(c, &out.endpoints);
        Ok(out)
    }

    /// Gives running-or-starting container `c` its interface number `i` on network
    /// `name`: a leased address, a veth pair plugged into the bridge, rate limits.
    pub(crate) async fn plug(
        &self,
        c: &ContainerInspect,
        ns: &Path,
        i: usize,
        name: &str,
        ep: Endpoint,
    ) -> EngineResult<Endpoint> {
        let n = self.get(&c.project, &ep.network_id).map_err(|_| {
            invalid(format!(
                "network {name} of container {} no longer exists: disconnect it or recreate the network",
                c.name
            ))
        })?;
        let ifname = format!("eth{i}");
        let host_ifname = self.host_ifname(&c.id, i);
        let ip = {
            let _g = self.alloc.lock().await;
            self.lease(&n, &c.id, &ep, &ifname, &host_ifname)?
        };
        let subnet = n.subnet;
        let mac = ep.static_mac.unwrap_or_else(|| MacAddress::for_ipv4(ip));
        let gateway = n.gateway.addr();
        let plumb = Plumb {
            netns: ns.to_path_buf(),
            ifname: ifname.clone(),
            host_ifname: host_ifname.clone(),
            addr: ip,
            prefix: subnet.prefix(),
            mac: mac.octets(),
            mtu: n.mtu,
            gateway: (!n.internal).then_some(gateway),
        };
        tokio::task::spawn_blocking(move || netlink::plumb(&plumb))
            .await?
            .map_err(net_err)?;
        let bridge = match self.nl.index(&n.bridge).await.map_err(net_err)? {
            Some(b) => b,
            None => {
                // Someone deleted the bridge: make it again.
                self.realize(&n).await?;
                self.nl
                    .index(&n.bridge)
                    .await
                    .map_err(net_err)?
                    .ok_or_else(|| internal(format!("bridge {} is missing", n.bridge)))?
            }
        };
        self.nl
            .attach(&host_ifname, bridge)
            .await
            .map_err(net_err)?;
        let rate = |k: &str| {
            c.config
                .network_opts
                .get(k)
                .or_else(|| c.config.network_opts.get("rate"))
                .and_then(|v| pier_net::qos::parse_rate(v))
        };
        let (ing, egr) = (rate("ingress-rate"), rate("egress-rate"));
        if ing.is_some() || egr.is_some() {
            let (h, nsp, ifn) = (host_ifname.clone(), ns.to_path_buf(), ifname.clone());
            tokio::task::spawn_blocking(move || pier_net::qos::limit(&h, &nsp, &ifn, ing, egr))
                .await?
                .map_err(net_err)?;
        }
        let ep = Endpoint {
            name: c.name.clone(),
            ip_address: Some(ip.into()),
            prefix_len: Some(subnet.prefix()),
            gateway: (!n.internal).then_some(n.gateway),
            mac_address: Some(mac),
            interface: Some(ifname),
            ..ep
        };
        Ok(ep)
    }

    /// Rebuilds the firewall from the store; `c`, when given, counts as it is here
    /// (running with its ports, or stopped) rather than as its record says.
    fn firewall_with(&self, c: Option<&ContainerInspect>) -> EngineResult<()> {
        let nets: Vec<FwNetwork> = self
            .db
            .list_json::<NetworkInspect>(Table::Networks, "")?
            .into_iter()
            .map(|(_, n)| FwNetwork {
                subnet: n.subnet,
                bridge: n.bridge,
                internal: n.internal,
                routed: n.mode == NetworkMode::Routed,
            })
            .collect();
        let running = |o: &ContainerInspect| {
            matches!(
                o.state.status,
                ContainerStatus::Running | ContainerStatus::Paused
            )
        };
        let mut ports: Vec<FwPort> = self
            .containers()?
            .iter()
            .filter(|o| c.is_none_or(|c| o.id != c.id) && running(o))
            .flat_map(|o| fw_ports(o, &o.ports))
            .collect();
        if let Some(c) = c.filter(|c| running(c)) {
            ports.extend(fw_ports(c, &c.ports));
        }
        nft::apply(&self.names.table(), self.names.owner_chain(), &nets, &ports).map_err(net_err)
    }

    /// Chooses host ports for `requests`: the asked one if it is free, else a free one.
    fn bind_ports(
        &self,
        c: &ContainerInspect,
        requests: &[PortRequest],
    ) -> EngineResult<Vec<PortBinding>> {
        let mut taken: Vec<(Proto, Option<Ipv4Addr>, u16, String)> = Vec::new();
        for o in self.containers()? {
            if o.id == c.id
                || !matches!(
                    o.state.status,
                    ContainerStatus::Running | ContainerStatus::Paused
                )
            {
                continue;
            }
            for p in &o.ports {
                let proto = if p.proto == "udp" {
                    Proto::Udp
                } else {
                    Proto::Tcp
                };
                taken.push((
                    proto,
                    p.host_ip.parse().ok(),
                    p.host_port,
                    format!("container {}", o.name),
                ));
            }
        }
        // Other daemons on this host publish through tables of their own, with no socket
        // that `port_free` would find.
        let own = self.names.table();
        for (t, proto, ip, port) in
            nft::published_ports(|t| HostNames::is_pier_table(t) && t != own)
        {
            taken.push((
                proto,
                ip,
                port,
                format!("another Pier daemon on this host (nftables table ip {t})"),
            ));
        }
        let clash = |taken: &[(Proto, Option<Ipv4Addr>, u16, String)],
                     proto: Proto,
                     ip: Option<Ipv4Addr>,
                     port: u16| {
            taken
                .iter()
                .find(|(tp, tip, tport, _)| {
                    *tp == proto && *tport == port && (tip.is_none() || ip.is_none() || *tip == ip)
                })
                .map(|t| t.3.clone())
        };
        let mut out = Vec::new();
        for r in requests {
            let port = if r.host_range == (0, 0) {
                let mut found = None;
                for _ in 0..64 {
                    let p = free_port(r.proto, r.host_ip)?;
                    if clash(&taken, r.proto, r.host_ip, p).is_none() {
                        found = Some(p);
                        break;
                    }
                }
                found.ok_or_else(|| internal("no free host port found"))?
            } else {
                let mut last_err = None;
                let mut found = None;
                for p in r.host_range.0..=r.host_range.1 {
                    if let Some(who) = clash(&taken, r.proto, r.host_ip, p) {
                        last_err = Some(format!("is already published by {who}"));
                        continue;
                    }
                    if let Err(e) = port_free(r.proto, r.host_ip, p) {
                        last_err = Some(format!("is in use on this host ({e})"));
                        continue;
                    }
                    found = Some(p);
                    break;
                }
                found.ok_or_else(|| {
                    conflict(format!(
                        "cannot publish {}{}/{}: host port {} {}",
                        r.host_ip.map(|i| format!("{i}:")).unwrap_or_default(),
                        if r.host_range.0 == r.host_range.1 {
                            r.host_range.0.to_string()
                        } else {
                            format!("{}-{}", r.host_range.0, r.host_range.1)
                        },
                        r.proto.as_str(),
                        if r.host_range.0 == r.host_range.1 {
                            ""
                        } else {
                            "range"
                        },
                        last_err.unwrap_or_default()
                    ))
                })?
            };
            taken.push((r.proto, r.host_ip, port, format!("container {}", c.name)));
            out.push(PortBinding {
                proto: r.proto.as_str().into(),
                host_ip: r.host_ip.map(|i| i.to_string()).unwrap_or_default(),
                host_port: port,
                container_port: r.container_port,
            });
        }
        Ok(out)
    }

    pub(crate) fn index_names(&self, c: &ContainerInspect, endpoints: &BTreeMap<String, Endpoint>) {
        let mut idx = self.index.write().unwrap();
        // Every network the container is on now, this call's endpoints included.
        let mut nets: Vec<String> = c
            .networks
            .values()
            .chain(endpoints.values())
            .filter(|e| e.ip_address.is_some())
            .map(|e| e.network_id.clone())
            .collect();
        nets.sort();
        nets.dedup();
        let addrs: Vec<(String, Ipv4Addr)> = c
            .networks
            .values()
            .chain(endpoints.values())
            .filter_map(|e| Some((e.network_id.clone(), e.ip_address?.addr())))
            .collect();
        for a in addrs {
            idx.networks_of.insert(a, nets.clone());
        }
        for ep in endpoints.values() {
            let Some(ip) = ep.ip_address.map(Ipv4Address::addr) else {
                continue;
            };
            let names = idx.names.entry(ep.network_id.clone()).or_default();
            let mut keys = vec![c.name.to_ascii_lowercase(), c.id[..12].to_string()];
            keys.extend(ep.aliases.iter().map(|a| a.to_ascii_lowercase()));
            for k in keys {
                let v = names.entry(k).or_default();
                if !v.contains(&ip) {
                    v.push(ip);
                }
            }
        }
    }

    fn unindex(&self, ips: &[(String, Ipv4Addr)]) {
        let mut idx = self.index.write().unwrap();
        for key in ips {
            idx.networks_of.remove(key);
        }
        for (net, ip) in ips {
            if let Some(names) = idx.names.get_mut(net) {
                for v in names.values_mut() {
                    v.retain(|x| x != ip);
                }
                names.retain(|_, v| !v.is_empty());
            }
        }
    }

    /// Takes a running container off one network: its veth, lease and names there.
    pub(crate) async fn unplug(&self, c: &ContainerInspect, network_id: &str) -> EngineResult<()> {
        let mut b = Batch::new();
        let mut ips = Vec::new();
        for (k, l) in self.leases()? {
            if l.container == c.id && l.network == network_id {
                let _ = self.nl.delete(&l.host_ifname).await;
                if let Some(ip) = k.rsplit('/').next().and_then(|i| i.parse().ok()) {
                    ips.push((network_id.to_string(), ip));
                }
                b.delete(Table::Leases, k);
            }
        }
        if !b.is_empty() {
            b.commit(self.db.as_ref())?;
        }
        self.unindex(&ips);
        Ok(())
    }

    /// For a running container whose start's record a crash lost (it is saved lazily):
    /// fills in its endpoints from its leases and its published ports from their
    /// durable copy, as [`Networks::attach`] made them. What the record has stays.
    pub(crate) fn recover(&self, c: &mut ContainerInspect) -> EngineResult<()> {
        for (k, l) in self.leases()? {
            let Some(ip) = k
                .rsplit('/')
                .next()
                .and_then(|i| i.parse::<Ipv4Addr>().ok())
            else {
                continue;
            };
            if l.container != c.id {
                continue;
            }
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

    /// Undoes [`Networks::attach`]: veths, leases, names, namespace file, ports.
    /// Safe to call more than once and on a container never attached.
    pub async fn detach(&self, c: &ContainerInspect) {
        let _ = self.release(&c.id);
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
        let ns = self.netns_path(&c.id);
        let _ = tokio::task::spawn_blocking(move || netlink::remove_netns(&ns)).await;
        if !c.ports.is_empty() {
            let _g = self.alloc.lock().await;
            let mut gone = c.clone();
            gone.state.status = ContainerStatus::Exited;
            if let Err(e) = self.firewall_with(Some(&gone)) {
                tracing::warn!(error = %e.message(), "rebuilding the firewall after a container stopped");
            }
        }
    }

    // ---- reconcile -----------------------------------------------------------------

    /// At daemon start, after containers are restored: makes the default network if
    /// missing, every network's bridge and DNS server, and removes what no running
    /// container owns (leases, veths, namespace files); then rebuilds the firewall.
    pub async fn reconcile(&self, project: &ProjectName) -> EngineResult<()> {
        if !self.all(project)?.iter().any(|n| n.name == DEFAULT_NETWORK) {
            self.create_inner(
                project,
                NetworkCreate {
                    name: DEFAULT_NETWORK.into(),
                    ..Default::default()
                },
                true,
            )
            .await?;
        }
        let nets = self.db.list_json::<NetworkInspect>(Table::Networks, "")?;
        let default_daemon = HostNames::for_root(Path::new(DEFAULT_ROOT), true);
        for (_, n) in &nets {
            if self.names != default_daemon && default_daemon.owns_bridge(&n.bridge) {
                tracing::warn!(network = %n.name, bridge = %n.bridge, "this network's bridge has a name of the default daemon's (made by an earlier Pier): a default daemon beside this one would share it; recreate the network");
            }
            if let Err(e) = self.realize(n).await {
                tracing::warn!(network = %n.name, error = %e.message(), "cannot set a network up");
            }
        }
        let running: HashMap<String, ContainerInspect> = self
            .containers()?
            .into_iter()
            .filter(|c| {
                matches!(
                    c.state.status,
                    ContainerStatus::Running | ContainerStatus::Paused
                )
            })
            .map(|c| (c.id.clone(), c))
            .collect();
        // Leases of containers that are not running.
        let mut b = Batch::new();
        let mut kept_ifs = HashSet::new();
        for (k, l) in self.leases()? {
            if running.contains_key(&l.container) {
                kept_ifs.insert(l.host_ifname.clone());
            } else {
                b.delete(Table::Leases, k);
            }
        }
        for (k, _) in self.db.list(Table::Meta, "ports/")? {
            if !running.contains_key(&k["ports/".len()..]) {
                b.delete(Table::Meta, k);
            }
        }
        if !b.is_empty() {
            b.commit(self.db.as_ref())?;
        }
        // Veths and bridges of ours that nothing owns.
        let bridges: HashSet<String> = nets.iter().map(|(_, n)| n.bridge.clone()).collect();
        for l in self.nl.links().await.map_err(net_err)? {
            if self.names.owns_veth(&l.name) && !kept_ifs.contains(&l.name) {
                tracing::info!(link = %l.name, "removing a veth no container owns");
                let _ = self.nl.delete(&l.name).await;
            }
            if self.names.owns_bridge(&l.name) && !bridges.contains(&l.name) {
                tracing::info!(link = %l.name, "removing the bridge of a network that is gone");
                let _ = self.nl.delete(&l.name).await;
            }
        }
        // Namespace files of containers that are not running.
        if let Ok(rd) = fs::read_dir(&self.netns_dir) {
            for e in rd.flatten() {
                let id = e.file_name().to_string_lossy().into_owned();
                if !running.contains_key(&id) {
                    netlink::remove_netns(&e.path());
                }
            }
        }
        for c in running.values() {
            self.index_names(c, &c.networks);
        }
        let _g = self.alloc.lock().await;
        self.firewall()
    }

    /// Stops the DNS servers (daemon shutdown). Bridges, the firewall table and running
    /// containers' interfaces stay, so that containers keep their network meanwhile.
    pub fn shutdown(&self) {
        for (_, s) in self.dns.lock().unwrap().drain() {
            s.stop();
        }
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

/// The firewall's view of a container's published ports.
fn fw_ports(c: &ContainerInspect, ports: &[PortBinding]) -> Vec<FwPort> {
    let first = Networks::ordered(c)
        .into_iter()
        .next()
        .and_then(|(name, _)| c.networks.get(&name).cloned())
        .and_then(|e| Some(e.ip_address?.addr()));
    let Some(ip) = first else {
        return Vec::new();
    };
    ports
        .iter()
        .map(|p| FwPort {
            proto: if p.proto == "udp" {
                Proto::Udp
            } else {
                Proto::Tcp
            },
            host_ip: p.host_ip.parse().ok(),
            host_port: p.host_port,
            container_ip: ip,
            container_port: p.container_port,
        })
        .collect()
}

/// A free host port, as the kernel picks one for a socket bound to port 0.
fn free_port(proto: Proto, ip: Option<Ipv4Addr>) -> EngineResult<u16> {
    let addr = SocketAddr::from((ip.unwrap_or(Ipv4Addr::UNSPECIFIED), 0));
    let port = match proto {
        Proto::Tcp => std::net::TcpListener::bind(addr).and_then(|l| l.local_addr()),
        Proto::Udp => std::net::UdpSocket::bind(addr).and_then(|s| s.local_addr()),
    }
    .map_err(|e| internal(format!("cannot find a free host port: {e}")))?
    .port();
    Ok(port)
}

/// Whether nothing on the host listens on `port` (a published port would hide it).
fn port_free(proto: Proto, ip: Option<Ipv4Addr>, port: u16) -> std::io::Result<()> {
    let addr = SocketAddr::from((ip.unwrap_or(Ipv4Addr::UNSPECIFIED), port));
    match proto {
        Proto::Tcp => std::net::TcpListener::bind(addr).map(drop),
        Proto::Udp => std::net::UdpSocket::bind(addr).map(drop),
    }
}

/// A bridge network's driver options, checked; Docker's others are accepted and kept.
struct BridgeOptions {
    mtu: u32,
    mode: NetworkMode,
    bridge: String,
}

impl BridgeOptions {
    /// Reads `options`; `bridge` is the bridge's name unless they give one.
    fn parse(options: &BTreeMap<String, String>, bridge: String) -> EngineResult<Self> {
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
                // Docker's other bridge options (icc, masquerade, ...) are accepted and kept.
                _ => {}
            }
        }
        Ok(BridgeOptions { mtu, mode, bridge })
    }
}
