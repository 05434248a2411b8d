//! The network side of the host: [`NetHost`] (namespaces, bridges, veth pairs, sysctls,
//! rate limits, host routes and ports, the networks' DNS servers, the VXLAN links of
//! networks across the pool and their forwarding entries) and [`Firewall`] (the
//! daemon's nftables tables). The network control plane (`crate::networks`) asks the
//! kernel for nothing except through these.
//!
//! [`RealNetHost`] and [`NftFirewall`] carry the calls out through `pier-net`;
//! [`fake::FakeNetHost`] and [`fake::FakeFirewall`] record them, keep a model of what
//! exists, and fail the calls a test asks them to.

pub mod fake;

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use pier_net::dns::{DnsServer, Records};
use pier_net::ipam::Ipv4Net;
use pier_net::names::HostNames;
use pier_net::netlink::{self, Netlink};
use pier_net::nft::{self, FwNetwork, FwPort, Proto};

pub use pier_net::netlink::{Link, Plumb};
pub use pier_net::vxlan::FdbEntry;

/// A boxed future, for the async methods of the traits (which are used as `dyn`).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What the host's network calls answer.
pub type NetResult<T> = Result<T, pier_net::Error>;

/// A bridge as a network wants it: its name, gateway address and MTU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bridge {
    pub name: String,
    pub gateway: Ipv4Addr,
    pub prefix: u8,
    /// On a dual-stack network: its IPv6 address and prefix length.
    pub gateway6: Option<(Ipv6Addr, u8)>,
    pub mtu: u32,
}

/// The VXLAN link of a network across the pool on this host, as the network wants it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vxlan {
    /// Its name ([`HostNames::vxlan`]).
    pub name: String,
    /// The network's VXLAN network identifier, the same on every host.
    pub vni: u32,
    /// This host's address in the pool: the local tunnel end.
    pub local: Ipv4Addr,
    pub mtu: u32,
    /// The network's bridge on this host, which the link is a port of.
    pub bridge: String,
}

/// What a VXLAN link forwards: its entries and its bridge's entries pointing at it
/// ([`FdbEntry`]), and its permanent neighbour entries (IP, MAC), each sorted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OverlayEntries {
    pub fdb: Vec<FdbEntry>,
    pub neigh: Vec<(Ipv4Addr, [u8; 6])>,
}

/// Rate limits of one interface, in bits per second.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimit {
    /// The host end of the veth.
    pub host_ifname: String,
    pub netns: PathBuf,
    /// The container end.
    pub ifname: String,
    pub ingress: Option<u64>,
    pub egress: Option<u64>,
}

/// The network plumbing of the host (netlink, namespace files, sysctls, tc, sockets).
pub trait NetHost: Send + Sync + 'static {
    /// Makes a network namespace held by the file `path`.
    fn create_netns<'a>(&'a self, path: &'a Path) -> BoxFuture<'a, NetResult<()>>;
    /// Holds the namespace `source` (another's file or `/proc/PID/ns/net`) at `path`.
    fn bind_netns<'a>(&'a self, path: &'a Path, source: &'a Path) -> BoxFuture<'a, NetResult<()>>;
    /// Releases the namespace file `path` (missing is fine); the kernel removes the
    /// namespace, and the veths in it, once nothing else holds it.
    fn remove_netns<'a>(&'a self, path: &'a Path) -> BoxFuture<'a, ()>;
    /// The namespace files in `dir`.
    fn netns_files(&self, dir: &Path) -> Vec<PathBuf>;
    /// Makes the bridge if missing, with its address, and brings it up; its index.
    fn ensure_bridge<'a>(&'a self, bridge: &'a Bridge) -> BoxFuture<'a, NetResult<u32>>;
    fn links(&self) -> BoxFuture<'_, NetResult<Vec<Link>>>;
    fn link_index<'a>(&'a self, name: &'a str) -> BoxFuture<'a, NetResult<Option<u32>>>;
    /// Deletes a link (both ends of a veth); a missing one is not an error.
    fn delete_link<'a>(&'a self, name: &'a str) -> BoxFuture<'a, NetResult<()>>;
    /// Makes the veth pair of `p`: its container end set up in `p.netns`, its host end
    /// in the daemon's namespace, down.
    fn plumb<'a>(&'a self, p: &'a Plumb) -> BoxFuture<'a, NetResult<()>>;
    /// Adds more addresses (`addr/prefix`) to interface `ifname` in namespace `netns`
    /// (link-local ones). The fake host has none to add.
    fn add_addresses<'a>(
        &'a self,
        _netns: &'a Path,
        _ifname: &'a str,
        _addrs: Vec<(std::net::Ipv4Addr, u8)>,
    ) -> BoxFuture<'a, NetResult<()>> {
        Box::pin(std::future::ready(Ok(())))
    }
    /// Plugs a veth's host end into the bridge of index `bridge` and brings it up;
    /// `isolated`, it reaches the bridge but no other isolated port.
    fn attach_to_bridge<'a>(
        &'a self,
        host_ifname: &'a str,
        bridge: u32,
        isolated: bool,
    ) -> BoxFuture<'a, NetResult<()>>;
    fn limit_rate<'a>(&'a self, limit: &'a RateLimit) -> BoxFuture<'a, NetResult<()>>;
    /// Writes a sysctl under `/proc/sys/net` (e.g. `ipv4/ip_forward`).
    fn sysctl(&self, key: &str, value: &str) -> NetResult<()>;
    /// The host's IPv4 routes but the default one: (device, destination).
    fn routes(&self) -> Vec<(String, Ipv4Net)>;
    /// A host port nothing uses, as the kernel picks one for a socket bound to port 0.
    fn ephemeral_port(&self, proto: Proto, ip: Option<IpAddr>) -> io::Result<u16>;
    /// Whether a program on the host listens on the port (a published port would hide
    /// it): Ok when free.
    fn port_free(&self, proto: Proto, ip: Option<IpAddr>, port: u16) -> io::Result<()>;
    /// Serves DNS for network `network_id` on `addr` from `records` (a second call for
    /// the same network keeps the first server).
    fn serve_dns<'a>(
        &'a self,
        network_id: &'a str,
        addr: SocketAddr,
        records: Arc<dyn Records>,
    ) -> BoxFuture<'a, io::Result<()>>;
    /// Stops a network's DNS server (none running is fine).
    fn stop_dns(&self, network_id: &str);
    /// Stops every DNS server (daemon shutdown).
    fn stop_all_dns(&self);
    /// Makes the VXLAN link `v` a port of its bridge (which must exist), up; one there
    /// with the same VNI and local end is kept, one that differs is made again (with no
    /// entries). Its index.
    fn ensure_vxlan<'a>(&'a self, v: &'a Vxlan) -> BoxFuture<'a, NetResult<u32>>;
    /// The entries of the VXLAN link `vxlan` (a missing link is
    /// [`pier_net::Error::LinkMissing`]).
    fn overlay_entries<'a>(&'a self, vxlan: &'a str) -> BoxFuture<'a, NetResult<OverlayEntries>>;
    /// Adds `entry` to the VXLAN link `vxlan`: a flood entry beside the others, a remote
    /// MAC replacing where it pointed, a bridge entry (`master`) pointing the MAC at the
    /// link. Adding one that is there is fine.
    fn fdb_add<'a>(&'a self, vxlan: &'a str, entry: &'a FdbEntry) -> BoxFuture<'a, NetResult<()>>;
    /// Deletes `entry` from the VXLAN link `vxlan`; one not there is fine.
    fn fdb_del<'a>(&'a self, vxlan: &'a str, entry: &'a FdbEntry) -> BoxFuture<'a, NetResult<()>>;
    /// Sets the neighbour entry `ip -> mac` on the VXLAN link `vxlan` (its ARP answer).
    fn neigh_set<'a>(
        &'a self,
        vxlan: &'a str,
        ip: Ipv4Addr,
        mac: [u8; 6],
    ) -> BoxFuture<'a, NetResult<()>>;
    /// Deletes the neighbour entry of `ip` on the VXLAN link `vxlan`; none is fine.
    fn neigh_del<'a>(&'a self, vxlan: &'a str, ip: Ipv4Addr) -> BoxFuture<'a, NetResult<()>>;
}

/// The daemon's nftables table: NAT, published ports, isolation between networks.
pub trait Firewall: Send + Sync + 'static {
    /// Replaces the whole table with the rules for `nets` and `ports`.
    fn apply(&self, nets: &[FwNetwork], ports: &[FwPort]) -> NetResult<()>;
    /// Whether this daemon's table is on the host (with its owner mark): false when it
    /// was never applied or someone deleted it.
    fn in_place(&self) -> bool;
    /// The owner mark of another daemon found on this daemon's table, if any.
    fn foreign_owner(&self) -> Option<String>;
    /// Ports other Pier daemons of this host publish: (their table, protocol, address,
    /// port).
    fn others_ports(&self) -> Vec<(String, Proto, Option<IpAddr>, u16)>;
}

/// [`NetHost`] over `pier-net`: rtnetlink, namespace files, tc and DNS servers.
pub struct RealNetHost {
    nl: Netlink,
    dns: Mutex<HashMap<String, DnsServer>>,
    upstreams: Vec<SocketAddr>,
}

impl RealNetHost {
    /// Opens a netlink connection; must be called inside the tokio runtime. The DNS
    /// servers forward what they do not know to the host's resolvers.
    pub fn new() -> NetResult<Self> {
        let resolv = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
        Ok(RealNetHost {
            nl: Netlink::new()?,
            dns: Mutex::new(HashMap::new()),
            upstreams: pier_net::dns::upstreams_from_resolv_conf(&resolv),
        })
    }
}

/// Runs blocking host work off the async threads.
async fn blocking<T: Send + 'static>(
    op: &'static str,
    f: impl FnOnce() -> NetResult<T> + Send + 'static,
) -> NetResult<T> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or(Err(pier_net::Error::Panicked { op }))
}

impl NetHost for RealNetHost {
    fn create_netns<'a>(&'a self, path: &'a Path) -> BoxFuture<'a, NetResult<()>> {
        let p = path.to_path_buf();
        Box::pin(blocking("make a network namespace", move || {
            netlink::remove_netns(&p);
            netlink::create_netns(&p)
        }))
    }

    fn bind_netns<'a>(&'a self, path: &'a Path, source: &'a Path) -> BoxFuture<'a, NetResult<()>> {
        let (p, s) = (path.to_path_buf(), source.to_path_buf());
        Box::pin(blocking("join a network namespace", move || {
            std::fs::File::create(&p).map_err(|source| pier_net::Error::Io {
                op: "create",
                path: p.clone(),
                source,
            })?;
            rustix::mount::mount_bind(&s, &p).map_err(|e| pier_net::Error::Io {
                op: "join the network namespace",
                path: s.clone(),
                source: e.into(),
            })
        }))
    }

    fn remove_netns<'a>(&'a self, path: &'a Path) -> BoxFuture<'a, ()> {
        let p = path.to_path_buf();
        Box::pin(async move {
            let _ = tokio::task::spawn_blocking(move || netlink::remove_netns(&p)).await;
        })
    }

    fn netns_files(&self, dir: &Path) -> Vec<PathBuf> {
        std::fs::read_dir(dir)
            .map(|rd| rd.flatten().map(|e| e.path()).collect())
            .unwrap_or_default()
    }

    fn ensure_bridge<'a>(&'a self, b: &'a Bridge) -> BoxFuture<'a, NetResult<u32>> {
        Box::pin(
            self.nl
                .ensure_bridge(&b.name, b.gateway, b.prefix, b.gateway6, b.mtu),
        )
    }

    fn links(&self) -> BoxFuture<'_, NetResult<Vec<Link>>> {
        Box::pin(self.nl.links())
    }

    fn link_index<'a>(&'a self, name: &'a str) -> BoxFuture<'a, NetResult<Option<u32>>> {
        Box::pin(self.nl.index(name))
    }

    fn delete_link<'a>(&'a self, name: &'a str) -> BoxFuture<'a, NetResult<()>> {
        Box::pin(self.nl.delete(name))
    }

    fn plumb<'a>(&'a self, p: &'a Plumb) -> BoxFuture<'a, NetResult<()>> {
        let p = p.clone();
        Box::pin(blocking("plumb a container's interface", move || {
            netlink::plumb(&p)
        }))
    }

    fn add_addresses<'a>(
        &'a self,
        netns: &'a Path,
        ifname: &'a str,
        addrs: Vec<(std::net::Ipv4Addr, u8)>,
    ) -> BoxFuture<'a, NetResult<()>> {
        let (netns, ifname) = (netns.to_path_buf(), ifname.to_string());
        Box::pin(blocking("add link-local addresses", move || {
            netlink::add_addresses(&netns, &ifname, &addrs)
        }))
    }

    fn attach_to_bridge<'a>(
        &'a self,
        host_ifname: &'a str,
        bridge: u32,
        isolated: bool,
    ) -> BoxFuture<'a, NetResult<()>> {
        Box::pin(self.nl.attach(host_ifname, bridge, isolated))
    }

    fn limit_rate<'a>(&'a self, l: &'a RateLimit) -> BoxFuture<'a, NetResult<()>> {
        let l = l.clone();
        Box::pin(blocking("limit an interface's rate", move || {
            pier_net::qos::limit(&l.host_ifname, &l.netns, &l.ifname, l.ingress, l.egress)
        }))
    }

    fn sysctl(&self, key: &str, value: &str) -> NetResult<()> {
        netlink::sysctl(key, value)
    }

    fn routes(&self) -> Vec<(String, Ipv4Net)> {
        pier_net::ipam::host_routes()
    }

    fn ephemeral_port(&self, proto: Proto, ip: Option<IpAddr>) -> io::Result<u16> {
        let addr = SocketAddr::new(ip.unwrap_or(Ipv4Addr::UNSPECIFIED.into()), 0);
        match proto {
            Proto::Tcp => std::net::TcpListener::bind(addr).and_then(|l| l.local_addr()),
            Proto::Udp => std::net::UdpSocket::bind(addr).and_then(|s| s.local_addr()),
        }
        .map(|a| a.port())
    }

    fn port_free(&self, proto: Proto, ip: Option<IpAddr>, port: u16) -> io::Result<()> {
        let addr = SocketAddr::new(ip.unwrap_or(Ipv4Addr::UNSPECIFIED.into()), port);
        match proto {
            Proto::Tcp => std::net::TcpListener::bind(addr).map(drop),
            Proto::Udp => std::net::UdpSocket::bind(addr).map(drop),
        }
    }

    fn serve_dns<'a>(
        &'a self,
        network_id: &'a str,
        addr: SocketAddr,
        records: Arc<dyn Records>,
    ) -> BoxFuture<'a, io::Result<()>> {
        Box::pin(async move {
            if self.dns.lock().unwrap().contains_key(network_id) {
                return Ok(());
            }
            let server = DnsServer::start(addr, records, self.upstreams.clone()).await?;
            self.dns
                .lock()
                .unwrap()
                .insert(network_id.to_string(), server);
            Ok(())
        })
    }

    fn stop_dns(&self, network_id: &str) {
        if let Some(s) = self.dns.lock().unwrap().remove(network_id) {
            s.stop();
        }
    }

    fn stop_all_dns(&self) {
        for (_, s) in self.dns.lock().unwrap().drain() {
            s.stop();
        }
    }

    fn ensure_vxlan<'a>(&'a self, v: &'a Vxlan) -> BoxFuture<'a, NetResult<u32>> {
        Box::pin(async move {
            let bridge = self.must_index(&v.bridge).await?;
            self.nl
                .ensure_vxlan(&v.name, v.vni, v.local, v.mtu, bridge)
                .await
        })
    }

    fn overlay_entries<'a>(&'a self, vxlan: &'a str) -> BoxFuture<'a, NetResult<OverlayEntries>> {
        Box::pin(async move {
            let i = self.must_index(vxlan).await?;
            Ok(OverlayEntries {
                fdb: self.nl.fdb_list(i).await?,
                neigh: self.nl.neigh_list(i).await?,
            })
        })
    }

    fn fdb_add<'a>(&'a self, vxlan: &'a str, entry: &'a FdbEntry) -> BoxFuture<'a, NetResult<()>> {
        Box::pin(async move {
            let i = self.must_index(vxlan).await?;
            self.nl.fdb_add(i, entry).await
        })
    }

    fn fdb_del<'a>(&'a self, vxlan: &'a str, entry: &'a FdbEntry) -> BoxFuture<'a, NetResult<()>> {
        Box::pin(async move {
            match self.nl.index(vxlan).await? {
                Some(i) => self.nl.fdb_del(i, entry).await,
                // Its entries went with it.
                None => Ok(()),
            }
        })
    }

    fn neigh_set<'a>(
        &'a self,
        vxlan: &'a str,
        ip: Ipv4Addr,
        mac: [u8; 6],
    ) -> BoxFuture<'a, NetResult<()>> {
        Box::pin(async move {
            let i = self.must_index(vxlan).await?;
            self.nl.neigh_replace(i, ip, mac).await
        })
    }

    fn neigh_del<'a>(&'a self, vxlan: &'a str, ip: Ipv4Addr) -> BoxFuture<'a, NetResult<()>> {
        Box::pin(async move {
            match self.nl.index(vxlan).await? {
                Some(i) => self.nl.neigh_del(i, ip).await,
                None => Ok(()),
            }
        })
    }
}

impl RealNetHost {
    /// The index of link `name`; [`pier_net::Error::LinkMissing`] when there is none.
    async fn must_index(&self, name: &str) -> NetResult<u32> {
        self.nl
            .index(name)
            .await?
            .ok_or_else(|| pier_net::Error::LinkMissing {
                name: name.to_string(),
            })
    }
}

/// [`Firewall`] over `nft`: the table and owner mark of the daemon's [`HostNames`].
pub struct NftFirewall {
    names: HostNames,
}

impl NftFirewall {
    pub fn new(names: HostNames) -> Self {
        NftFirewall { names }
    }
}

impl Firewall for NftFirewall {
    fn apply(&self, nets: &[FwNetwork], ports: &[FwPort]) -> NetResult<()> {
        nft::apply(&self.names.table(), self.names.owner_chain(), nets, ports)
    }

    fn in_place(&self) -> bool {
        nft::owner_marks(&self.names.table(), HostNames::is_owner_chain)
            .iter()
            .any(|m| m == self.names.owner_chain())
    }

    fn foreign_owner(&self) -> Option<String> {
        nft::owner_marks(&self.names.table(), HostNames::is_owner_chain)
            .into_iter()
            .find(|m| m != self.names.owner_chain())
    }

    fn others_ports(&self) -> Vec<(String, Proto, Option<IpAddr>, u16)> {
        let own = self.names.table();
        nft::published_ports(|t| HostNames::is_pier_table(t) && t != own)
    }
}
