//! Recording fakes of [`NetHost`] and [`Firewall`] for the engine test tier (no root).
//!
//! Each fake records every call in order ([`FakeNetHost::calls`]), keeps a model of the
//! host as the calls left it ([`NetModel`], [`FwModel`]: namespaces, links, DNS servers,
//! the firewall's networks and ports) so that a test can assert that nothing was left,
//! and fails the calls a test asks it to ([`Fault`]) with a typed `pier_net::Error` of
//! a chosen errno. The model behaves as the kernel does where the engine relies on it:
//! removing a namespace removes the veths in it, a bridge with an address routes its
//! subnet, a second link by one name is `EEXIST`; a VXLAN link keeps its forwarding and
//! neighbour entries (gone with it, its bridge entries gone with its bridge), a remote
//! MAC points at one host at a time, flood entries add up, deleting an absent entry is
//! done.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use pier_net::dns::Records;
use pier_net::ipam::Ipv4Net;
use pier_net::nft::{FwNetwork, FwPort, Proto};

use super::{
    BoxFuture, Bridge, FdbEntry, Firewall, Link, NetHost, NetResult, OverlayEntries, Plumb,
    RateLimit, Vxlan,
};

/// One call to a fake, with its arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetCall {
    CreateNetns(PathBuf),
    BindNetns {
        path: PathBuf,
        source: PathBuf,
    },
    RemoveNetns(PathBuf),
    EnsureBridge(Bridge),
    Links,
    LinkIndex(String),
    DeleteLink(String),
    Plumb(Plumb),
    AttachToBridge {
        host_ifname: String,
        bridge: u32,
    },
    LimitRate(RateLimit),
    Sysctl {
        key: String,
        value: String,
    },
    EphemeralPort(Proto),
    PortFree(Proto, u16),
    ServeDns {
        network_id: String,
        addr: SocketAddr,
    },
    StopDns(String),
    EnsureVxlan(Vxlan),
    OverlayEntries(String),
    FdbAdd {
        vxlan: String,
        entry: FdbEntry,
    },
    FdbDel {
        vxlan: String,
        entry: FdbEntry,
    },
    NeighSet {
        vxlan: String,
        ip: Ipv4Addr,
        mac: [u8; 6],
    },
    NeighDel {
        vxlan: String,
        ip: Ipv4Addr,
    },
    FirewallApply {
        networks: usize,
        ports: usize,
    },
}

/// The kind of a call, to fail every call of a kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CallKind {
    CreateNetns,
    BindNetns,
    EnsureBridge,
    Links,
    LinkIndex,
    DeleteLink,
    Plumb,
    AttachToBridge,
    LimitRate,
    Sysctl,
    EphemeralPort,
    PortFree,
    ServeDns,
    EnsureVxlan,
    OverlayEntries,
    FdbAdd,
    FdbDel,
    NeighSet,
    NeighDel,
    FirewallApply,
}

impl CallKind {
    fn name(self) -> &'static str {
        match self {
            CallKind::CreateNetns => "create namespace",
            CallKind::BindNetns => "bind namespace",
            CallKind::EnsureBridge => "ensure bridge",
            CallKind::Links => "list links",
            CallKind::LinkIndex => "look up link",
            CallKind::DeleteLink => "delete link",
            CallKind::Plumb => "plumb",
            CallKind::AttachToBridge => "attach to bridge",
            CallKind::LimitRate => "limit rate",
            CallKind::Sysctl => "sysctl",
            CallKind::EphemeralPort => "pick a port",
            CallKind::PortFree => "probe a port",
            CallKind::ServeDns => "serve DNS",
            CallKind::EnsureVxlan => "ensure VXLAN link",
            CallKind::OverlayEntries => "list overlay entries",
            CallKind::FdbAdd => "add forwarding entry",
            CallKind::FdbDel => "delete forwarding entry",
            CallKind::NeighSet => "set neighbour entry",
            CallKind::NeighDel => "delete neighbour entry",
            CallKind::FirewallApply => "apply the firewall",
        }
    }
}

/// Which calls fail, and with what errno.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The call numbered `n` among the fallible calls counted from when the fault was
    /// set (0: the next one).
    Nth { n: usize, errno: i32 },
    /// Every call of this kind, until cleared.
    Kind { kind: CallKind, errno: i32 },
}

/// Shared bookkeeping of a fake: its calls, its fault, the count of fallible calls.
#[derive(Debug, Default)]
struct Recorder {
    calls: Vec<NetCall>,
    fault: Option<Fault>,
    fallible: usize,
}

impl Recorder {
    /// Records `call`; fails it if the fault says so.
    fn call(&mut self, call: NetCall, kind: Option<CallKind>) -> Result<(), i32> {
        self.calls.push(call);
        let Some(kind) = kind else { return Ok(()) };
        let n = self.fallible;
        self.fallible += 1;
        match self.fault {
            Some(Fault::Nth { n: at, errno }) if at == n => Err(errno),
            Some(Fault::Kind { kind: k, errno }) if k == kind => Err(errno),
            _ => Ok(()),
        }
    }
}

fn fail(kind: CallKind, errno: i32) -> pier_net::Error {
    pier_net::Error::Io {
        op: kind.name(),
        path: PathBuf::from("/fake"),
        source: io::Error::from_raw_os_error(errno),
    }
}

/// A link in the model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FakeLink {
    Bridge {
        gateway: Ipv4Addr,
        prefix: u8,
        mtu: u32,
        up: bool,
    },
    /// A veth pair, by its host end's name.
    Veth {
        netns: PathBuf,
        ifname: String,
        addr: Ipv4Addr,
        prefix: u8,
        mac: [u8; 6],
        gateway: Option<Ipv4Addr>,
        /// The bridge it is plugged into, by name.
        bridge: Option<String>,
        rate: Option<(Option<u64>, Option<u64>)>,
    },
    /// The VXLAN link of a network across the pool.
    Vxlan {
        vni: u32,
        local: Ipv4Addr,
        mtu: u32,
        /// The bridge it is a port of, by name.
        master: Option<String>,
        fdb: BTreeSet<FdbEntry>,
        neigh: BTreeMap<Ipv4Addr, [u8; 6]>,
    },
}

/// The host as a [`FakeNetHost`]'s calls left it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetModel {
    /// Namespace files, with the namespace they hold (themselves, or a bound source).
    pub namespaces: BTreeMap<PathBuf, PathBuf>,
    /// Links in the daemon's namespace by name (veths by their host end).
    pub links: BTreeMap<String, FakeLink>,
    pub sysctls: BTreeMap<String, String>,
    /// Networks with a DNS server, by network ID, and its address.
    pub dns: BTreeMap<String, SocketAddr>,
}

impl NetModel {
    /// The veths (host ends) in the model.
    pub fn veths(&self) -> Vec<&str> {
        self.links
            .iter()
            .filter(|(_, l)| matches!(l, FakeLink::Veth { .. }))
            .map(|(n, _)| n.as_str())
            .collect()
    }

    /// The VXLAN links in the model.
    pub fn vxlans(&self) -> Vec<&str> {
        self.links
            .iter()
            .filter(|(_, l)| matches!(l, FakeLink::Vxlan { .. }))
            .map(|(n, _)| n.as_str())
            .collect()
    }

    /// The entries of VXLAN link `name`, as [`NetHost::overlay_entries`] lists them.
    pub fn overlay(&self, name: &str) -> Option<OverlayEntries> {
        match self.links.get(name)? {
            FakeLink::Vxlan { fdb, neigh, .. } => Some(OverlayEntries {
                fdb: fdb.iter().copied().collect(),
                neigh: neigh.iter().map(|(ip, mac)| (*ip, *mac)).collect(),
            }),
            _ => None,
        }
    }

    /// The bridges in the model.
    pub fn bridges(&self) -> Vec<&str> {
        self.links
            .iter()
            .filter(|(_, l)| matches!(l, FakeLink::Bridge { .. }))
            .map(|(n, _)| n.as_str())
            .collect()
    }
}

#[derive(Default)]
struct HostState {
    rec: Recorder,
    model: NetModel,
    /// Link indexes (not part of the model: a recreated link gets another).
    index: BTreeMap<String, u32>,
    next_index: u32,
    /// Routes of other programs (not bridges of the model).
    routes: Vec<(String, Ipv4Net)>,
    /// Ports other programs listen on.
    busy_ports: BTreeSet<(Proto, u16)>,
    next_port: u16,
    records: BTreeMap<String, Arc<dyn Records>>,
}

/// A recording [`NetHost`]; see the module doc.
#[derive(Default)]
pub struct FakeNetHost {
    state: Mutex<HostState>,
}

impl FakeNetHost {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    fn lock(&self) -> MutexGuard<'_, HostState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Every call so far, in order.
    pub fn calls(&self) -> Vec<NetCall> {
        self.lock().rec.calls.clone()
    }

    /// The number of fallible calls so far (what [`Fault::Nth`] counts).
    pub fn fallible_calls(&self) -> usize {
        self.lock().rec.fallible
    }

    /// Forgets the calls so far (the model stays).
    pub fn clear_calls(&self) {
        let mut s = self.lock();
        s.rec.calls.clear();
        s.rec.fallible = 0;
    }

    /// Fails calls as `fault` says (counting from now), or none.
    pub fn set_fault(&self, fault: Option<Fault>) {
        let mut s = self.lock();
        s.rec.fault = fault;
        s.rec.fallible = 0;
    }

    /// What exists on the fake host.
    pub fn model(&self) -> NetModel {
        self.lock().model.clone()
    }

    /// Adds a route of another program (e.g. a VPN's) on `dev`.
    pub fn add_route(&self, dev: &str, net: Ipv4Net) {
        self.lock().routes.push((dev.to_string(), net));
    }

    /// Makes another program listen on a port.
    pub fn occupy_port(&self, proto: Proto, port: u16) {
        self.lock().busy_ports.insert((proto, port));
    }

    /// Sets the next port [`NetHost::ephemeral_port`] hands out (then counting up).
    pub fn set_next_port(&self, port: u16) {
        self.lock().next_port = port;
    }

    /// Adds a link someone else made (e.g. a stray veth of a crashed daemon).
    pub fn add_link(&self, name: &str, link: FakeLink) {
        let mut s = self.lock();
        s.next_index += 1;
        let i = s.next_index;
        s.index.insert(name.to_string(), i);
        s.model.links.insert(name.to_string(), link);
    }

    /// Removes a link behind the engine's back (as a user's `ip link del` would).
    pub fn remove_link(&self, name: &str) {
        let mut s = self.lock();
        s.model.links.remove(name);
        s.index.remove(name);
    }

    /// Adds a namespace file someone else made.
    pub fn add_netns(&self, path: &Path) {
        self.lock()
            .model
            .namespaces
            .insert(path.to_path_buf(), path.to_path_buf());
    }

    /// What the DNS server of `network_id` answers for `name`, as a container asks it.
    pub fn dns_lookup(&self, network_id: &str, name: &str) -> Option<Vec<Ipv4Addr>> {
        let r = self.lock().records.get(network_id)?.clone();
        r.lookup(name)
    }

    /// As [`FakeNetHost::dns_lookup`], from the client address `client`.
    pub fn dns_lookup_from(
        &self,
        network_id: &str,
        client: Ipv4Addr,
        name: &str,
    ) -> Option<Vec<Ipv4Addr>> {
        let r = self.lock().records.get(network_id)?.clone();
        r.lookup_from(client.into(), name)
    }

    fn record(&self, call: NetCall, kind: CallKind) -> NetResult<MutexGuard<'_, HostState>> {
        let mut s = self.lock();
        s.rec.call(call, Some(kind)).map_err(|e| fail(kind, e))?;
        Ok(s)
    }
}

fn errno(kind: CallKind, e: i32) -> pier_net::Error {
    fail(kind, e)
}

fn ready<'a, T: Send + 'a>(v: T) -> BoxFuture<'a, T> {
    Box::pin(std::future::ready(v))
}

impl FakeNetHost {
    fn do_plumb(&self, p: &Plumb) -> NetResult<()> {
        let mut s = self.record(NetCall::Plumb(p.clone()), CallKind::Plumb)?;
        if !s.model.namespaces.contains_key(&p.netns) {
            return Err(errno(CallKind::Plumb, libc::ENOENT));
        }
        let clash = s.model.links.values().any(|l| {
            matches!(l, FakeLink::Veth { netns, ifname, .. } if *netns == p.netns && *ifname == p.ifname)
        });
        if clash || s.model.links.contains_key(&p.host_ifname) {
            return Err(errno(CallKind::Plumb, libc::EEXIST));
        }
        s.next_index += 1;
        let i = s.next_index;
        s.index.insert(p.host_ifname.clone(), i);
        s.model.links.insert(
            p.host_ifname.clone(),
            FakeLink::Veth {
                netns: p.netns.clone(),
                ifname: p.ifname.clone(),
                addr: p.addr,
                prefix: p.prefix,
                mac: p.mac,
                gateway: p.gateway,
                bridge: None,
                rate: None,
            },
        );
        Ok(())
    }

    fn do_bridge(&self, b: &Bridge) -> NetResult<u32> {
        let mut s = self.record(NetCall::EnsureBridge(b.clone()), CallKind::EnsureBridge)?;
        if let Some(i) = s.index.get(&b.name).copied() {
            if let Some(FakeLink::Bridge { up, .. }) = s.model.links.get_mut(&b.name) {
                *up = true;
                return Ok(i);
            }
            return Err(errno(CallKind::EnsureBridge, libc::EEXIST));
        }
        s.next_index += 1;
        let i = s.next_index;
        s.index.insert(b.name.clone(), i);
        s.model.links.insert(
            b.name.clone(),
            FakeLink::Bridge {
                gateway: b.gateway,
                prefix: b.prefix,
                mtu: b.mtu,
                up: true,
            },
        );
        Ok(i)
    }

    fn do_attach(&self, host_ifname: &str, bridge: u32) -> NetResult<()> {
        let call = NetCall::AttachToBridge {
            host_ifname: host_ifname.to_string(),
            bridge,
        };
        let mut s = self.record(call, CallKind::AttachToBridge)?;
        let Some(name) = s
            .index
            .iter()
            .find(|(_, i)| **i == bridge)
            .map(|(n, _)| n.clone())
        else {
            return Err(errno(CallKind::AttachToBridge, libc::ENODEV));
        };
        match s.model.links.get_mut(host_ifname) {
            Some(FakeLink::Veth { bridge, .. }) => {
                *bridge = Some(name);
                Ok(())
            }
            _ => Err(pier_net::Error::LinkMissing {
                name: host_ifname.to_string(),
            }),
        }
    }

    fn do_rate(&self, l: &RateLimit) -> NetResult<()> {
        let mut s = self.record(NetCall::LimitRate(l.clone()), CallKind::LimitRate)?;
        match s.model.links.get_mut(&l.host_ifname) {
            Some(FakeLink::Veth { rate, .. }) => {
                *rate = Some((l.ingress, l.egress));
                Ok(())
            }
            _ => Err(errno(CallKind::LimitRate, libc::ENODEV)),
        }
    }

    fn do_delete(&self, name: &str) -> NetResult<()> {
        let mut s = self.record(NetCall::DeleteLink(name.to_string()), CallKind::DeleteLink)?;
        s.model.links.remove(name);
        s.index.remove(name);
        // A link's own sysctls go with it.
        let own = format!("ipv4/conf/{name}/");
        s.model.sysctls.retain(|k, _| !k.starts_with(&own));
        // Veths and VXLAN links plugged into a deleted bridge stay, unplugged (as the
        // kernel does); the bridge's entries pointing at a VXLAN link go with it.
        for l in s.model.links.values_mut() {
            match l {
                FakeLink::Veth { bridge, .. } if bridge.as_deref() == Some(name) => {
                    *bridge = None;
                }
                FakeLink::Vxlan { master, fdb, .. } if master.as_deref() == Some(name) => {
                    *master = None;
                    fdb.retain(|e| !e.master);
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn do_vxlan(&self, v: &Vxlan) -> NetResult<u32> {
        let mut s = self.record(NetCall::EnsureVxlan(v.clone()), CallKind::EnsureVxlan)?;
        if !matches!(s.model.links.get(&v.bridge), Some(FakeLink::Bridge { .. })) {
            return Err(pier_net::Error::LinkMissing {
                name: v.bridge.clone(),
            });
        }
        match s.model.links.get_mut(&v.name) {
            Some(FakeLink::Vxlan {
                vni,
                local,
                mtu,
                master,
                ..
            }) if *vni == v.vni && *local == v.local => {
                *mtu = v.mtu;
                *master = Some(v.bridge.clone());
                return Ok(s.index[&v.name]);
            }
            // Another VNI or local end, or another kind of link under the name: made
            // again.
            _ => {
                s.model.links.remove(&v.name);
                s.index.remove(&v.name);
            }
        }
        s.next_index += 1;
        let i = s.next_index;
        s.index.insert(v.name.clone(), i);
        s.model.links.insert(
            v.name.clone(),
            FakeLink::Vxlan {
                vni: v.vni,
                local: v.local,
                mtu: v.mtu,
                master: Some(v.bridge.clone()),
                fdb: BTreeSet::new(),
                neigh: BTreeMap::new(),
            },
        );
        Ok(i)
    }

    /// Changes the VXLAN link `name` with `f`, after recording `call`; `ENODEV` when
    /// there is none (or `Ok` without change when `missing_ok`).
    fn on_vxlan<T: Default>(
        &self,
        call: NetCall,
        kind: CallKind,
        name: &str,
        missing_ok: bool,
        f: impl FnOnce(
            &mut Option<String>,
            &mut BTreeSet<FdbEntry>,
            &mut BTreeMap<Ipv4Addr, [u8; 6]>,
        ) -> NetResult<T>,
    ) -> NetResult<T> {
        let mut s = self.record(call, kind)?;
        match s.model.links.get_mut(name) {
            Some(FakeLink::Vxlan {
                master, fdb, neigh, ..
            }) => f(master, fdb, neigh),
            None if missing_ok => Ok(T::default()),
            _ => Err(pier_net::Error::LinkMissing {
                name: name.to_string(),
            }),
        }
    }

    fn do_remove_netns(&self, path: &Path) {
        let mut s = self.lock();
        let _ = s.rec.call(NetCall::RemoveNetns(path.to_path_buf()), None);
        if s.model.namespaces.remove(path).is_some() {
            // The veths in the namespace go with it.
            let gone: Vec<String> = s
                .model
                .links
                .iter()
                .filter(|(_, l)| matches!(l, FakeLink::Veth { netns, .. } if netns == path))
                .map(|(n, _)| n.clone())
                .collect();
            for n in gone {
                s.model.links.remove(&n);
                s.index.remove(&n);
            }
        }
    }
}

impl NetHost for FakeNetHost {
    fn create_netns<'a>(&'a self, path: &'a Path) -> BoxFuture<'a, NetResult<()>> {
        let r = self
            .record(
                NetCall::CreateNetns(path.to_path_buf()),
                CallKind::CreateNetns,
            )
            .map(|mut s| {
                s.model
                    .namespaces
                    .insert(path.to_path_buf(), path.to_path_buf());
            });
        ready(r)
    }

    fn bind_netns<'a>(&'a self, path: &'a Path, source: &'a Path) -> BoxFuture<'a, NetResult<()>> {
        let call = NetCall::BindNetns {
            path: path.to_path_buf(),
            source: source.to_path_buf(),
        };
        let r = self.record(call, CallKind::BindNetns).map(|mut s| {
            s.model
                .namespaces
                .insert(path.to_path_buf(), source.to_path_buf());
        });
        ready(r)
    }

    fn remove_netns<'a>(&'a self, path: &'a Path) -> BoxFuture<'a, ()> {
        self.do_remove_netns(path);
        ready(())
    }

    fn netns_files(&self, dir: &Path) -> Vec<PathBuf> {
        let s = self.lock();
        s.model
            .namespaces
            .keys()
            .filter(|p| p.parent() == Some(dir))
            .cloned()
            .collect()
    }

    fn ensure_bridge<'a>(&'a self, bridge: &'a Bridge) -> BoxFuture<'a, NetResult<u32>> {
        ready(self.do_bridge(bridge))
    }

    fn links(&self) -> BoxFuture<'_, NetResult<Vec<Link>>> {
        let r = self.record(NetCall::Links, CallKind::Links).map(|s| {
            s.model
                .links
                .iter()
                .map(|(name, l)| Link {
                    index: s.index.get(name).copied().unwrap_or(0),
                    name: name.clone(),
                    controller: match l {
                        FakeLink::Veth {
                            bridge: Some(b), ..
                        }
                        | FakeLink::Vxlan {
                            master: Some(b), ..
                        } => s.index.get(b).copied(),
                        _ => None,
                    },
                })
                .collect()
        });
        ready(r)
    }

    fn link_index<'a>(&'a self, name: &'a str) -> BoxFuture<'a, NetResult<Option<u32>>> {
        let r = self
            .record(NetCall::LinkIndex(name.to_string()), CallKind::LinkIndex)
            .map(|s| s.index.get(name).copied());
        ready(r)
    }

    fn delete_link<'a>(&'a self, name: &'a str) -> BoxFuture<'a, NetResult<()>> {
        ready(self.do_delete(name))
    }

    fn plumb<'a>(&'a self, p: &'a Plumb) -> BoxFuture<'a, NetResult<()>> {
        ready(self.do_plumb(p))
    }

    fn attach_to_bridge<'a>(
        &'a self,
        host_ifname: &'a str,
        bridge: u32,
        _isolated: bool,
    ) -> BoxFuture<'a, NetResult<()>> {
        ready(self.do_attach(host_ifname, bridge))
    }

    fn limit_rate<'a>(&'a self, limit: &'a RateLimit) -> BoxFuture<'a, NetResult<()>> {
        ready(self.do_rate(limit))
    }

    fn sysctl(&self, key: &str, value: &str) -> NetResult<()> {
        let call = NetCall::Sysctl {
            key: key.to_string(),
            value: value.to_string(),
        };
        let mut s = self.record(call, CallKind::Sysctl)?;
        s.model.sysctls.insert(key.to_string(), value.to_string());
        Ok(())
    }

    fn routes(&self) -> Vec<(String, Ipv4Net)> {
        let s = self.lock();
        let mut out = s.routes.clone();
        for (name, l) in &s.model.links {
            if let FakeLink::Bridge {
                gateway, prefix, ..
            } = l
            {
                if let Some(net) = Ipv4Net::new(*gateway, *prefix) {
                    out.push((name.clone(), net));
                }
            }
        }
        out
    }

    fn ephemeral_port(&self, proto: Proto, _ip: Option<IpAddr>) -> io::Result<u16> {
        let mut s = self
            .record(NetCall::EphemeralPort(proto), CallKind::EphemeralPort)
            .map_err(|e| io::Error::other(e.chain()))?;
        if s.next_port == 0 {
            s.next_port = 40000;
        }
        while s.busy_ports.contains(&(proto, s.next_port)) {
            s.next_port += 1;
        }
        let p = s.next_port;
        s.next_port += 1;
        Ok(p)
    }

    fn port_free(&self, proto: Proto, _ip: Option<IpAddr>, port: u16) -> io::Result<()> {
        let s = self
            .record(NetCall::PortFree(proto, port), CallKind::PortFree)
            .map_err(|e| io::Error::other(e.chain()))?;
        if s.busy_ports.contains(&(proto, port)) {
            return Err(io::Error::from_raw_os_error(libc::EADDRINUSE));
        }
        Ok(())
    }

    fn serve_dns<'a>(
        &'a self,
        network_id: &'a str,
        addr: SocketAddr,
        records: Arc<dyn Records>,
    ) -> BoxFuture<'a, io::Result<()>> {
        let call = NetCall::ServeDns {
            network_id: network_id.to_string(),
            addr,
        };
        let r = self
            .record(call, CallKind::ServeDns)
            .map_err(|e| io::Error::other(e.chain()))
            .map(|mut s| {
                if !s.model.dns.contains_key(network_id) {
                    s.model.dns.insert(network_id.to_string(), addr);
                    s.records.insert(network_id.to_string(), records);
                }
            });
        ready(r)
    }

    fn stop_dns(&self, network_id: &str) {
        let mut s = self.lock();
        let _ = s.rec.call(NetCall::StopDns(network_id.to_string()), None);
        s.model.dns.remove(network_id);
        s.records.remove(network_id);
    }

    fn stop_all_dns(&self) {
        let ids: Vec<String> = self.lock().model.dns.keys().cloned().collect();
        for id in ids {
            self.stop_dns(&id);
        }
    }

    fn ensure_vxlan<'a>(&'a self, v: &'a Vxlan) -> BoxFuture<'a, NetResult<u32>> {
        ready(self.do_vxlan(v))
    }

    fn overlay_entries<'a>(&'a self, vxlan: &'a str) -> BoxFuture<'a, NetResult<OverlayEntries>> {
        let call = NetCall::OverlayEntries(vxlan.to_string());
        ready(self.on_vxlan(
            call,
            CallKind::OverlayEntries,
            vxlan,
            false,
            |_, fdb, neigh| {
                Ok(OverlayEntries {
                    fdb: fdb.iter().copied().collect(),
                    neigh: neigh.iter().map(|(ip, mac)| (*ip, *mac)).collect(),
                })
            },
        ))
    }

    fn fdb_add<'a>(&'a self, vxlan: &'a str, entry: &'a FdbEntry) -> BoxFuture<'a, NetResult<()>> {
        let call = NetCall::FdbAdd {
            vxlan: vxlan.to_string(),
            entry: *entry,
        };
        let e = *entry;
        ready(self.on_vxlan(
            call,
            CallKind::FdbAdd,
            vxlan,
            false,
            move |master, fdb, _| {
                if e.master && master.is_none() {
                    // A bridge entry needs a bridge.
                    return Err(errno(CallKind::FdbAdd, libc::EINVAL));
                }
                if !e.master && !e.is_flood() {
                    // A remote MAC points at one host: replaced.
                    fdb.retain(|f| f.master || f.mac != e.mac);
                }
                fdb.insert(e);
                Ok(())
            },
        ))
    }

    fn fdb_del<'a>(&'a self, vxlan: &'a str, entry: &'a FdbEntry) -> BoxFuture<'a, NetResult<()>> {
        let call = NetCall::FdbDel {
            vxlan: vxlan.to_string(),
            entry: *entry,
        };
        ready(
            self.on_vxlan(call, CallKind::FdbDel, vxlan, true, |_, fdb, _| {
                fdb.remove(entry);
                Ok(())
            }),
        )
    }

    fn neigh_set<'a>(
        &'a self,
        vxlan: &'a str,
        ip: Ipv4Addr,
        mac: [u8; 6],
    ) -> BoxFuture<'a, NetResult<()>> {
        let call = NetCall::NeighSet {
            vxlan: vxlan.to_string(),
            ip,
            mac,
        };
        ready(
            self.on_vxlan(call, CallKind::NeighSet, vxlan, false, |_, _, neigh| {
                neigh.insert(ip, mac);
                Ok(())
            }),
        )
    }

    fn neigh_del<'a>(&'a self, vxlan: &'a str, ip: Ipv4Addr) -> BoxFuture<'a, NetResult<()>> {
        let call = NetCall::NeighDel {
            vxlan: vxlan.to_string(),
            ip,
        };
        ready(
            self.on_vxlan(call, CallKind::NeighDel, vxlan, true, |_, _, neigh| {
                neigh.remove(&ip);
                Ok(())
            }),
        )
    }
}

/// A network as the fake firewall keeps it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct FwNet {
    pub bridge: String,
    pub subnet: String,
    pub internal: bool,
    pub routed: bool,
    /// Its VXLAN link, on a network across the pool (the bridge table's drops).
    pub overlay: Option<String>,
}

/// The rules the last successful apply left.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FwModel {
    pub networks: BTreeSet<FwNet>,
    pub ports: Vec<FwPort>,
    /// How many times the table was replaced.
    pub applied: usize,
}

impl FwModel {
    /// The host ports published, sorted.
    pub fn host_ports(&self) -> Vec<u16> {
        let mut v: Vec<u16> = self.ports.iter().map(|p| p.host_port).collect();
        v.sort();
        v
    }
}

#[derive(Default)]
struct FwState {
    rec: Recorder,
    model: FwModel,
    /// The table was deleted by hand since the last apply.
    flushed: bool,
    foreign_owner: Option<String>,
    others: Vec<(String, Proto, Option<IpAddr>, u16)>,
}

/// A recording [`Firewall`]; see the module doc.
#[derive(Default)]
pub struct FakeFirewall {
    state: Mutex<FwState>,
}

impl FakeFirewall {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    fn lock(&self) -> MutexGuard<'_, FwState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn calls(&self) -> Vec<NetCall> {
        self.lock().rec.calls.clone()
    }

    pub fn fallible_calls(&self) -> usize {
        self.lock().rec.fallible
    }

    pub fn set_fault(&self, fault: Option<Fault>) {
        let mut s = self.lock();
        s.rec.fault = fault;
        s.rec.fallible = 0;
    }

    /// The rules in force.
    pub fn model(&self) -> FwModel {
        self.lock().model.clone()
    }

    /// Deletes the table, as someone running `nft delete table` would.
    pub fn flush(&self) {
        let mut s = self.lock();
        s.flushed = true;
        s.model.networks.clear();
        s.model.ports.clear();
    }

    /// Marks the table as another daemon's.
    pub fn set_foreign_owner(&self, mark: Option<&str>) {
        self.lock().foreign_owner = mark.map(String::from);
    }

    /// Ports another Pier daemon on the host publishes.
    pub fn set_others_ports(&self, ports: Vec<(String, Proto, Option<IpAddr>, u16)>) {
        self.lock().others = ports;
    }
}

impl Firewall for FakeFirewall {
    fn apply(&self, nets: &[FwNetwork], ports: &[FwPort]) -> NetResult<()> {
        let mut s = self.lock();
        let call = NetCall::FirewallApply {
            networks: nets.len(),
            ports: ports.len(),
        };
        s.rec
            .call(call, Some(CallKind::FirewallApply))
            .map_err(|e| fail(CallKind::FirewallApply, e))?;
        s.model.networks = nets
            .iter()
            .map(|n| FwNet {
                bridge: n.bridge.clone(),
                subnet: n.subnet.to_string(),
                internal: n.internal,
                routed: n.routed,
                overlay: n.overlay.clone(),
            })
            .collect();
        s.model.ports = ports.to_vec();
        s.model.applied += 1;
        s.flushed = false;
        Ok(())
    }

    fn in_place(&self) -> bool {
        let s = self.lock();
        s.model.applied > 0 && !s.flushed
    }

    fn foreign_owner(&self) -> Option<String> {
        self.lock().foreign_owner.clone()
    }

    fn others_ports(&self) -> Vec<(String, Proto, Option<IpAddr>, u16)> {
        self.lock().others.clone()
    }
}

#[cfg(test)]
mod tests;
