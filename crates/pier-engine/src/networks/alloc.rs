//! Address leases and host-port reservations, as store transactions on index keys.
//!
//! - A lease is the key `project/network-id/ip` of `Table::Leases`, created under an
//!   "absent" compare (and a "present" compare on its network's record): of two
//!   requests racing for one address, one wins and the other picks again (or, for an
//!   address asked for, is told it is taken).
//! - A host port is the key `hostport/<proto>/<port>` of `Table::Meta`, holding every
//!   binding of that port ([`PortHolder`]: which container, which host address, where
//!   it goes). A reservation writes it under a compare on the revision it was read at,
//!   so that two containers cannot both take a port; the firewall's port rules are
//!   built from these keys.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use pier_api::containers::ContainerInspect;
use pier_api::networks::{Endpoint, NetworkInspect, PortBinding};
use pier_api::ports::PortRequest;
use pier_api::{ErrorKind, Ipv4Address, Ipv6Net};
use pier_net::ipam;
use pier_net::nft::Proto;
use pier_store::{Batch, Expect, Op, Revision, StoreError, StoreExt, Table};
use serde::{Deserialize, Serialize};

use super::{key, ports_key, Lease, Networks};
use crate::error::{conflict, internal, invalid};
use crate::error::{EngineError, EngineResult};

/// What a lease of one address family needs ([`Networks::lease_in`]).
struct Family<A, P> {
    /// The address asked for, if any.
    want: Option<A>,
    /// Addresses of the network no container may take (its auxiliary addresses; for
    /// IPv6 its gateway too).
    reserved: HashSet<A>,
    /// The `Table::Meta` key of the last picked address, where the next pick starts.
    cursor: String,
    /// `""` or `"IPv6 "`, for messages.
    label: &'static str,
    /// A free address, given the used ones and the cursor.
    pick: P,
    /// What else to do when the network is full.
    full: &'static str,
}

/// How many times an allocation re-reads and tries again after losing a race.
pub(super) const ATTEMPTS: usize = 64;

pub(super) const PORT_PREFIX: &str = "hostport/";

pub(super) fn port_key(proto: Proto, port: u16) -> String {
    format!("{PORT_PREFIX}{}/{port}", proto.as_str())
}

/// One binding of a host port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortHolder {
    pub container: String,
    /// The container's name, for error messages.
    pub name: String,
    /// Only this host address; every one when None.
    pub host_ip: Option<IpAddr>,
    /// Where the port goes: the container's address on its first network.
    pub container_ip: Option<Ipv4Addr>,
    /// And its IPv6 address there, on a dual-stack network.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_ip6: Option<Ipv6Addr>,
    pub container_port: u16,
}

fn clashes(a: Option<IpAddr>, b: Option<IpAddr>) -> bool {
    a.is_none() || b.is_none() || a == b
}

/// The keys of one reservation attempt: each as read (its revision) and as it will be.
#[derive(Default)]
struct Seen {
    keys: BTreeMap<String, (Option<Revision>, Vec<PortHolder>)>,
    touched: BTreeSet<String>,
}

impl Networks {
    /// Every reserved host port: (protocol, port, its bindings).
    pub(super) fn port_reservations(&self) -> EngineResult<Vec<(Proto, u16, Vec<PortHolder>)>> {
        let mut out = Vec::new();
        for (k, holders) in self
            .db
            .list_json::<Vec<PortHolder>>(Table::Meta, PORT_PREFIX)?
        {
            let mut parts = k[PORT_PREFIX.len()..].split('/');
            let proto = match parts.next() {
                Some("udp") => Proto::Udp,
                _ => Proto::Tcp,
            };
            if let Some(port) = parts.next().and_then(|p| p.parse().ok()) {
                out.push((proto, port, holders));
            }
        }
        Ok(out)
    }

    /// Leases an IPv4 address on `n` for container `cid`: the one `ep` asks for, or the
    /// next free one of the network's range; never one of `claimed` (those other hosts
    /// of the pool hold, on a pool network).
    pub(super) fn lease(
        &self,
        n: &NetworkInspect,
        cid: &str,
        ep: &Endpoint,
        names: (&str, &str),
        claimed: &HashSet<Ipv4Addr>,
    ) -> EngineResult<Ipv4Addr> {
        if let Some(ip) = ep
            .static_ip
            .map(Ipv4Address::addr)
            .filter(|ip| claimed.contains(ip))
        {
            return Err(conflict(format!(
                "address {ip} on network {} is claimed by another host of the pool: choose another --ip, or leave it out to get a free one",
                n.name
            )));
        }
        let reserved = n
            .aux_addresses
            .values()
            .filter_map(|a| match a {
                IpAddr::V4(ip) => Some(*ip),
                IpAddr::V6(_) => None,
            })
            .collect();
        let range = n.ip_range.unwrap_or(n.subnet);
        self.lease_in(
            n,
            cid,
            names,
            Family {
                want: ep.static_ip.map(Ipv4Address::addr),
                reserved,
                cursor: format!("last-ip/{}", n.id),
                label: "",
                // The gateway is taken, but not "reserved" to one who asks for it.
                pick: |used: &HashSet<Ipv4Addr>, last| {
                    let mut used = used.clone();
                    used.insert(n.gateway.addr());
                    used.extend(claimed);
                    ipam::allocate(&n.subnet, &range, &used, last)
                },
                full: "create a network with a larger subnet",
            },
        )
    }

    /// Leases an IPv6 address on dual-stack network `n` for container `cid`: the one
    /// `ep` asks for, or the next free one of the network's IPv6 range. Its key sits
    /// beside the IPv4 leases (`project/network-id/ip`), under the same compares.
    pub(super) fn lease6(
        &self,
        n: &NetworkInspect,
        subnet: Ipv6Net,
        cid: &str,
        ep: &Endpoint,
        names: (&str, &str),
    ) -> EngineResult<Ipv6Addr> {
        let reserved = n
            .aux_addresses
            .values()
            .filter_map(|a| match a {
                IpAddr::V6(ip) => Some(*ip),
                IpAddr::V4(_) => None,
            })
            .chain(n.gateway6)
            .collect();
        let range = n.ip_range6.unwrap_or(subnet);
        self.lease_in(
            n,
            cid,
            names,
            Family {
                want: ep.static_ip6,
                reserved,
                cursor: format!("last-ip6/{}", n.id),
                label: "IPv6 ",
                pick: |used: &HashSet<Ipv6Addr>, last| ipam::allocate6(&subnet, &range, used, last),
                full: "choose a network with a larger IPv6 subnet",
            },
        )
    }

    /// One lease of either family: reads the network's leases, takes the asked or a
    /// picked address, and commits its key under an "absent" compare (and a "present"
    /// compare on the network), reading again when another request won the race.
    fn lease_in<A, P>(
        &self,
        n: &NetworkInspect,
        cid: &str,
        (ifname, host_ifname): (&str, &str),
        f: Family<A, P>,
    ) -> EngineResult<A>
    where
        A: Copy + Eq + std::hash::Hash + std::fmt::Display + std::str::FromStr + Into<IpAddr>,
        P: Fn(&HashSet<A>, Option<A>) -> Option<A>,
    {
        let prefix = format!("{}/{}/", n.project, n.id);
        for _ in 0..ATTEMPTS {
            let leases = self.db.list_json::<Lease>(Table::Leases, &prefix)?;
            let ip = match f.want {
                Some(ip) => {
                    if let Some((_, l)) =
                        leases.iter().find(|(k, _)| k.ends_with(&format!("/{ip}")))
                    {
                        return Err(in_use(n, ip.into(), &l.container));
                    }
                    if f.reserved.contains(&ip) {
                        return Err(reserved(n, ip.into()));
                    }
                    ip
                }
                None => {
                    let mut used: HashSet<A> = leases
                        .iter()
                        .filter_map(|(k, _)| k.rsplit('/').next()?.parse().ok())
                        .collect();
                    used.extend(&f.reserved);
                    let last = self
                        .db
                        .get(Table::Meta, &f.cursor)?
                        .and_then(|b| String::from_utf8(b).ok()?.parse().ok());
                    (f.pick)(&used, last).ok_or_else(|| {
                        EngineError::new(
                            ErrorKind::InsufficientStorage,
                            format!(
                                "network {} has no free {}address left: stop or disconnect a container on it, or {}",
                                n.name, f.label, f.full
                            ),
                        )
                    })?
                }
            };
            let mut b = Batch::new();
            let lease_key = format!("{prefix}{ip}");
            b.require(Table::Leases, lease_key.clone(), Expect::Absent);
            b.require(Table::Networks, key(&n.project, &n.id), Expect::Present);
            b.put_json(
                Table::Leases,
                lease_key.clone(),
                &Lease {
                    container: cid.to_string(),
                    network: n.id.clone(),
                    ifname: ifname.to_string(),
                    host_ifname: host_ifname.to_string(),
                },
            );
            // Only a picked address moves the cursor: one asked for does not.
            if f.want.is_none() {
                b.ops.push(Op::Put {
                    table: Table::Meta,
                    key: f.cursor.clone(),
                    value: ip.to_string().into_bytes(),
                });
            }
            match b.commit(self.db.as_ref()) {
                Ok(()) => return Ok(ip),
                Err(StoreError::Conflict {
                    table: Table::Networks,
                    ..
                }) => {
                    return Err(invalid(format!(
                        "network {} was removed meanwhile: recreate it or choose another",
                        n.name
                    )))
                }
                Err(StoreError::Conflict { .. }) if f.want.is_some() => {
                    let holder = self
                        .db
                        .get_json::<Lease>(Table::Leases, &lease_key)?
                        .map(|l| l.container)
                        .unwrap_or_default();
                    return Err(in_use(n, ip.into(), &holder));
                }
                // Another request took the address first: read again.
                Err(StoreError::Conflict { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(EngineError::Busy(format!(
            "the {}addresses of network {} kept changing while one was being leased; retry",
            f.label, n.name
        )))
    }

    /// Chooses and reserves host ports for `requests` of container `c`, whose first
    /// address is `container_ip`: the asked one if it is free, else a free one. Also
    /// keeps the bindings durably for [`Networks::recover`].
    pub(super) fn reserve_ports(
        &self,
        c: &ContainerInspect,
        (container_ip, container_ip6): (Option<Ipv4Addr>, Option<Ipv6Addr>),
        requests: &[PortRequest],
    ) -> EngineResult<Vec<PortBinding>> {
        // Ports are forwarded without a proxy, so an IPv6 host address reaches only an
        // IPv6 container address.
        if let Some(r) = requests
            .iter()
            .find(|r| r.host_ip.is_some_and(|i| i.is_ipv6()) && container_ip6.is_none())
        {
            return Err(invalid(format!(
                "cannot publish [{}]:{}: container {} has no IPv6 address on its first network; connect it to an IPv6 network first (docker network create --ipv6), or publish on an IPv4 host address",
                r.host_ip.expect("v6"),
                r.container_port,
                c.name
            )));
        }
        // Other daemons on this host publish through tables of their own, with no socket
        // that `port_free` would find.
        let others = self.fw.others_ports();
        for _ in 0..ATTEMPTS {
            let mut seen = Seen::default();
            let mut out = Vec::new();
            for r in requests {
                let port = self.pick_port(c, r, &others, &mut seen)?;
                let k = port_key(r.proto, port);
                seen.keys.get_mut(&k).expect("read").1.push(PortHolder {
                    container: c.id.clone(),
                    name: c.name.clone(),
                    host_ip: r.host_ip,
                    container_ip,
                    container_ip6,
                    container_port: r.container_port,
                });
                seen.touched.insert(k);
                out.push(PortBinding {
                    proto: r.proto.as_str().into(),
                    host_ip: r.host_ip.map(|i| i.to_string()).unwrap_or_default(),
                    host_port: port,
                    container_port: r.container_port,
                });
            }
            let mut b = Batch::new();
            for k in &seen.touched {
                let (rev, holders) = &seen.keys[k];
                b.require(
                    Table::Meta,
                    k.clone(),
                    rev.map_or(Expect::Absent, Expect::ModRevision),
                );
                b.put_json(Table::Meta, k.clone(), holders);
            }
            b.put_json(Table::Meta, ports_key(&c.id), &out);
            match b.commit(self.db.as_ref()) {
                Ok(()) => return Ok(out),
                // Another container took one of these ports first: choose again.
                Err(StoreError::Conflict { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(EngineError::Busy(
            "the host ports kept changing while this container's were being reserved; retry".into(),
        ))
    }

    /// Who holds `port` for a binding of `ip` (None: nobody), reading its key once.
    fn holder(
        &self,
        c: &ContainerInspect,
        proto: Proto,
        ip: Option<IpAddr>,
        port: u16,
        others: &[(String, Proto, Option<IpAddr>, u16)],
        seen: &mut Seen,
    ) -> EngineResult<Option<String>> {
        // A pool member's VXLAN tunnels arrive there: a published port would take them.
        if proto == Proto::Udp && port == pier_net::vxlan::VXLAN_PORT && self.in_pool() {
            return Ok(Some(
                "this host's pool networks (their VXLAN tunnels arrive on it)".into(),
            ));
        }
        let k = port_key(proto, port);
        if !seen.keys.contains_key(&k) {
            let read = match self.db.get_kv(Table::Meta, &k)? {
                Some(kv) => (
                    Some(kv.mod_revision),
                    serde_json::from_slice(&kv.value).map_err(|source| StoreError::Corrupt {
                        table: Table::Meta.name(),
                        key: k.clone(),
                        source,
                    })?,
                ),
                None => (None, Vec::new()),
            };
            seen.keys.insert(k.clone(), read);
        }
        let (_, holders) = &seen.keys[&k];
        if let Some(h) = holders
            .iter()
            .find(|h| (h.container != c.id || seen.touched.contains(&k)) && clashes(h.host_ip, ip))
        {
            return Ok(Some(format!("container {}", h.name)));
        }
        Ok(others
            .iter()
            .find(|(_, p, oip, oport)| *p == proto && *oport == port && clashes(*oip, ip))
            .map(|(t, ..)| format!("another Pier daemon on this host (nftables table ip {t})")))
    }

    fn pick_port(
        &self,
        c: &ContainerInspect,
        r: &PortRequest,
        others: &[(String, Proto, Option<IpAddr>, u16)],
        seen: &mut Seen,
    ) -> EngineResult<u16> {
        if r.host_range == (0, 0) {
            for _ in 0..64 {
                let p = self
                    .host
                    .ephemeral_port(r.proto, r.host_ip)
                    .map_err(|e| internal(format!("cannot find a free host port: {e}")))?;
                if self
                    .holder(c, r.proto, r.host_ip, p, others, seen)?
                    .is_none()
                {
                    return Ok(p);
                }
            }
            return Err(EngineError::Busy(
                "no free host port found: the host's ephemeral ports are taken; retry, or publish a given port".into(),
            ));
        }
        let mut last_err = None;
        for p in r.host_range.0..=r.host_range.1 {
            if let Some(who) = self.holder(c, r.proto, r.host_ip, p, others, seen)? {
                last_err = Some(format!("host port {p} is already published by {who}"));
                continue;
            }
            if let Err(e) = self.host.port_free(r.proto, r.host_ip, p) {
                last_err = Some(format!("host port {p} is in use on this host ({e})"));
                continue;
            }
            return Ok(p);
        }
        let last_err = last_err.unwrap_or_default();
        let ip = match r.host_ip {
            Some(IpAddr::V6(i)) => format!("[{i}]:"),
            Some(i) => format!("{i}:"),
            None => String::new(),
        };
        let proto = r.proto.as_str();
        let (lo, hi) = r.host_range;
        Err(conflict(if lo == hi {
            format!("cannot publish {ip}{lo}/{proto}: {last_err}; choose another host port, or stop what holds it")
        } else {
            format!("cannot publish {ip}{lo}-{hi}/{proto}: no host port of the range is free (the last: {last_err}); choose another range, or stop what holds them")
        }))
    }

    /// Gives back container `cid`'s host ports and the durable copy of its ports, and
    /// with `leases` its leases too; whether it held ports. Without waiting for the
    /// disk: a release a crash loses leaves reservations of a container that does not
    /// run, which `reconcile` removes.
    pub(super) fn release(&self, cid: &str, leases: bool) -> EngineResult<bool> {
        for _ in 0..ATTEMPTS {
            let mut b = Batch::new();
            b.delete(Table::Meta, ports_key(cid));
            let mut had_ports = false;
            if leases {
                for (k, l) in self.leases()? {
                    if l.container == cid {
                        b.delete(Table::Leases, k);
                    }
                }
            }
            for (k, kv) in self.db.range(Table::Meta, PORT_PREFIX)?.kvs {
                let holders: Vec<PortHolder> =
                    serde_json::from_slice(&kv.value).unwrap_or_default();
                if !holders.iter().any(|h| h.container == cid) {
                    continue;
                }
                had_ports = true;
                let rest: Vec<&PortHolder> =
                    holders.iter().filter(|h| h.container != cid).collect();
                b.require(Table::Meta, k.clone(), Expect::ModRevision(kv.mod_revision));
                if rest.is_empty() {
                    b.delete(Table::Meta, k);
                } else {
                    b.put_json(Table::Meta, k, &rest);
                }
            }
            match b.commit_lazy(self.db.as_ref()) {
                Ok(()) => return Ok(had_ports),
                Err(StoreError::Conflict { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(EngineError::Busy(format!(
            "the host ports kept changing while container {cid}'s were being released; retry"
        )))
    }
}

fn in_use(n: &NetworkInspect, ip: IpAddr, container: &str) -> EngineError {
    conflict(format!(
        "address {ip} on network {} is in use by container {}: choose another --ip, or leave it out to get a free one",
        n.name,
        &container[..12.min(container.len())]
    ))
}

fn reserved(n: &NetworkInspect, ip: IpAddr) -> EngineError {
    conflict(format!(
        "address {ip} on network {} is reserved (its gateway or an auxiliary address): choose another, or leave it out to get a free one",
        n.name
    ))
}
