//! The names each network's DNS server answers: containers by name, short ID and alias
//! on the networks they are on (A records, and AAAA on dual-stack networks), kept in
//! memory and rebuilt from the running containers at start. On a pool network, the
//! endpoints of other hosts too, as their claims in the pool name them (replaced
//! whole by each overlay sync); this host's own names come first.

use std::collections::{BTreeMap, HashMap};
use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::{Arc, RwLock};

use pier_api::containers::ContainerInspect;
use pier_api::networks::Endpoint;
use pier_api::Ipv4Address;
use pier_net::dns::Records;

use super::Networks;

/// The names a network's DNS server answers, by network ID.
#[derive(Default)]
pub(super) struct NameIndex {
    /// network ID -> name -> addresses.
    pub(super) names: HashMap<String, HashMap<String, Vec<Ipv4Addr>>>,
    /// (network ID, address) -> the networks of the container holding it, so that a
    /// container on several networks resolves names on all of them, as on Docker.
    pub(super) networks_of: HashMap<(String, Ipv4Addr), Vec<String>>,
    /// (network ID, address) -> the links of the container holding it there: alias ->
    /// the linked container's name, answered to that container only.
    pub(super) links: HashMap<(String, Ipv4Addr), HashMap<String, String>>,
    /// The IPv6 address of the endpoint holding an IPv4 address, on a dual-stack network
    /// (a daemon's subnets do not overlap, so the IPv4 address names the endpoint).
    pub(super) v6_of: HashMap<Ipv4Addr, Ipv6Addr>,
    /// Pool network ID -> name -> addresses of other hosts' endpoints.
    pub(super) remote: HashMap<String, HashMap<String, Vec<Ipv4Addr>>>,
    /// Pool network ID -> other hosts' endpoints, for inspect.
    pub(super) remote_endpoints: HashMap<String, Vec<RemoteName>>,
}

/// An endpoint of another host on a pool network: its address and its claim.
#[derive(Debug, Clone)]
pub(super) struct RemoteName {
    pub(super) ip: Ipv4Addr,
    pub(super) lease: pier_cluster::networks::PoolLease,
}

impl NameIndex {
    /// What a link of the container at `client` makes of `name`: the linked
    /// container's addresses on the network.
    fn linked(&self, network: &str, client: Ipv4Addr, name: &str) -> Option<Vec<Ipv4Addr>> {
        let target = self
            .links
            .get(&(network.to_string(), client))?
            .get(&name.to_ascii_lowercase())?;
        self.names.get(network)?.get(target).cloned()
    }
}

pub(super) struct NetRecords {
    pub(super) network: String,
    pub(super) network_name: String,
    /// Container names resolve on user networks only, as on Docker.
    pub(super) answers_names: bool,
    pub(super) index: Arc<RwLock<NameIndex>>,
}

impl Records for NetRecords {
    fn lookup(&self, name: &str) -> Option<Vec<Ipv4Addr>> {
        if !self.answers_names {
            return None;
        }
        let suffix = format!(".{}", self.network_name.to_ascii_lowercase());
        let short = name.strip_suffix(&suffix).unwrap_or(name);
        let idx = self.index.read().unwrap();
        idx.names
            .get(&self.network)
            .and_then(|m| m.get(short))
            .or_else(|| idx.remote.get(&self.network)?.get(short))
            .cloned()
    }

    fn lookup_from(&self, client: std::net::IpAddr, name: &str) -> Option<Vec<Ipv4Addr>> {
        if let std::net::IpAddr::V4(v4) = client {
            if self.answers_names {
                let suffix = format!(".{}", self.network_name.to_ascii_lowercase());
                let short = name.strip_suffix(&suffix).unwrap_or(name);
                let idx = self.index.read().unwrap();
                if let Some(found) = idx.linked(&self.network, v4, short) {
                    return Some(found);
                }
            }
        }
        if let Some(found) = self.lookup(name) {
            return Some(found);
        }
        let std::net::IpAddr::V4(client) = client else {
            return None;
        };
        // The asker's other networks (user networks only: the default one has no names).
        let idx = self.index.read().unwrap();
        let others = idx.networks_of.get(&(self.network.clone(), client))?;
        others.iter().filter(|n| **n != self.network).find_map(|n| {
            idx.names
                .get(n)
                .and_then(|m| m.get(name))
                .or_else(|| idx.remote.get(n)?.get(name))
                .cloned()
        })
    }

    fn lookup6(&self, name: &str) -> Option<Vec<Ipv6Addr>> {
        let v4 = self.lookup(name)?;
        Some(self.v6_of(&v4))
    }

    fn lookup6_from(&self, client: std::net::IpAddr, name: &str) -> Option<Vec<Ipv6Addr>> {
        let v4 = self.lookup_from(client, name)?;
        Some(self.v6_of(&v4))
    }

    fn reverse6(&self, ip: Ipv6Addr) -> Option<String> {
        let v4 = {
            let idx = self.index.read().unwrap();
            idx.v6_of
                .iter()
                .find(|(_, v6)| **v6 == ip)
                .map(|(v4, _)| *v4)?
        };
        self.reverse(v4)
    }

    fn reverse(&self, ip: Ipv4Addr) -> Option<String> {
        if !self.answers_names {
            return None;
        }
        let idx = self.index.read().unwrap();
        let local = idx.names.get(&self.network).into_iter().flatten();
        let remote = idx.remote.get(&self.network).into_iter().flatten();
        // The container's name or an alias, not its short ID (12 hex digits; a name such
        // as "c1" or "db" is all hex digits too).
        local
            .chain(remote)
            .filter(|(n, ips)| {
                ips.contains(&ip) && !(n.len() == 12 && n.chars().all(|c| c.is_ascii_hexdigit()))
            })
            .map(|(n, _)| format!("{n}.{}", self.network_name))
            .min()
    }
}

impl NetRecords {
    /// The IPv6 addresses of the endpoints holding `v4` addresses (those that have one).
    fn v6_of(&self, v4: &[Ipv4Addr]) -> Vec<Ipv6Addr> {
        let idx = self.index.read().unwrap();
        v4.iter()
            .filter_map(|a| idx.v6_of.get(a).copied())
            .collect()
    }
}

/// The links of an endpoint at `ip` (`NAME:ALIAS`), by alias.
fn index_links(idx: &mut NameIndex, ep: &Endpoint, ip: Ipv4Addr) {
    let key = (ep.network_id.clone(), ip);
    if ep.options.links.is_empty() {
        idx.links.remove(&key);
        return;
    }
    let links = ep
        .options
        .links
        .iter()
        .map(|l| {
            let (name, alias) = l.split_once(':').unwrap_or((l, l));
            (alias.to_ascii_lowercase(), name.to_ascii_lowercase())
        })
        .collect();
    idx.links.insert(key, links);
}

impl Networks {
    /// Replaces the names and endpoints of other hosts on the pool networks in
    /// `remote` (by network ID; networks not in it have none).
    pub(super) fn set_remote_names(&self, remote: HashMap<String, Vec<RemoteName>>) {
        let mut names: HashMap<String, HashMap<String, Vec<Ipv4Addr>>> = HashMap::new();
        for (net, eps) in &remote {
            let m = names.entry(net.clone()).or_default();
            for r in eps {
                let l = &r.lease;
                let mut keys = vec![l.name.to_ascii_lowercase(), l.short_id.clone()];
                keys.extend(l.aliases.iter().map(|a| a.to_ascii_lowercase()));
                for k in keys.into_iter().filter(|k| !k.is_empty()) {
                    let v = m.entry(k).or_default();
                    if !v.contains(&r.ip) {
                        v.push(r.ip);
                    }
                }
            }
        }
        let mut idx = self.index.write().unwrap();
        idx.remote = names;
        idx.remote_endpoints = remote;
    }

    /// Other hosts' endpoints on pool network `net_id`, as inspect shows them (by
    /// container ID).
    pub(super) fn remote_endpoints(
        &self,
        n: &pier_api::networks::NetworkInspect,
    ) -> BTreeMap<String, Endpoint> {
        let idx = self.index.read().unwrap();
        let Some(eps) = idx.remote_endpoints.get(&n.id) else {
            return BTreeMap::new();
        };
        eps.iter()
            .map(|r| {
                let l = &r.lease;
                let ep = Endpoint {
                    network_id: n.id.clone(),
                    name: l.name.clone(),
                    aliases: l.aliases.clone(),
                    ip_address: Some(r.ip.into()),
                    prefix_len: Some(n.subnet.prefix()),
                    gateway: (!n.internal).then_some(n.gateway),
                    mac_address: l.mac.parse().ok(),
                    interface: Some(l.ifname.clone()),
                    host: Some(l.host.clone()),
                    ..Default::default()
                };
                (l.container.clone(), ep)
            })
            .collect()
    }

    /// Adds the names of container `c` on `endpoints` (and its other networks) to the
    /// DNS index.
    pub fn index_names(&self, c: &ContainerInspect, endpoints: &BTreeMap<String, Endpoint>) {
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
            index_links(&mut idx, ep, ip);
            match ep.ip6_address {
                Some(v6) => idx.v6_of.insert(ip, v6),
                None => idx.v6_of.remove(&ip),
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

    /// Container `c` was renamed (its record has the new name): its DNS names here
    /// follow, and so do its claims on pool networks (for the other hosts' DNS); a
    /// claim that cannot be changed now is left to the overlay sync, which names each
    /// claim after its instance.
    pub async fn renamed(&self, c: &ContainerInspect) {
        let ips: Vec<(String, Ipv4Addr)> = c
            .networks
            .values()
            .filter_map(|e| Some((e.network_id.clone(), e.ip_address?.addr())))
            .collect();
        if ips.is_empty() {
            return;
        }
        self.unindex(&ips);
        self.index_names(c, &c.networks);
        self.rename_claims(c).await;
    }

    pub(super) fn unindex(&self, ips: &[(String, Ipv4Addr)]) {
        let mut idx = self.index.write().unwrap();
        for key in ips {
            idx.networks_of.remove(key);
            idx.links.remove(key);
            idx.v6_of.remove(&key.1);
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
}
