//! What a member reads off the pool's table to program its overlays: the pool networks,
//! every address claim, and each member's tunnel end (its pool address). Built by one
//! read ([`OverlayView::read`]) and kept current by the watch that follows it
//! ([`OverlayView::apply`]); [`desired`] turns it into the entries one host's VXLAN
//! link of one network should have.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use pier_store::{Event, Revision, Store};

use super::{decode, NetPoolError, PoolLease, PoolNetwork, LEASES, NETWORKS, TABLE};
use crate::member::{MemberRecord, MEMBERS};

/// The pool's networks, claims and tunnel ends as of `revision`.
#[derive(Debug, Clone, Default)]
pub struct OverlayView {
    /// The store revision it is current to.
    pub revision: Revision,
    /// By network ID.
    pub networks: BTreeMap<String, PoolNetwork>,
    /// By network ID and address.
    pub leases: BTreeMap<(String, Ipv4Addr), PoolLease>,
    /// Each member's pool address, by host ID.
    pub vteps: BTreeMap<String, Ipv4Addr>,
}

/// `leases/<net-id>/<ip>`'s network ID and address.
pub(crate) fn parse_lease_key(key: &str) -> Option<(&str, Ipv4Addr)> {
    let (net, ip) = key.strip_prefix(LEASES)?.split_once('/')?;
    Some((net, ip.parse().ok()?))
}

/// `networks/<project>/<net-id>`'s network ID.
fn parse_network_key(key: &str) -> Option<&str> {
    let (_, id) = key.strip_prefix(NETWORKS)?.split_once('/')?;
    (!id.is_empty() && !id.contains('/')).then_some(id)
}

fn member_id(key: &str) -> Option<&str> {
    key.strip_prefix(MEMBERS).filter(|id| !id.contains('/'))
}

impl OverlayView {
    /// Reads the whole table at one revision; a watch from `revision + 1` misses nothing.
    pub fn read(store: &dyn Store) -> Result<OverlayView, NetPoolError> {
        let all = store.range(TABLE, "")?;
        let mut v = OverlayView {
            revision: all.revision,
            ..OverlayView::default()
        };
        for (key, kv) in &all.kvs {
            v.put(key, &kv.value)?;
        }
        Ok(v)
    }

    /// Takes in one watch event of the table; whether the view changed.
    pub fn apply(&mut self, event: &Event) -> Result<bool, NetPoolError> {
        if event.table() != TABLE {
            return Ok(false);
        }
        self.revision = self.revision.max(event.revision());
        match event {
            Event::Put { key, kv, .. } => self.put(key, &kv.value),
            Event::Delete { key, .. } => Ok(self.delete(key)),
        }
    }

    fn put(&mut self, key: &str, value: &[u8]) -> Result<bool, NetPoolError> {
        if let Some(id) = parse_network_key(key) {
            let n: PoolNetwork = decode(key, value)?;
            self.networks.insert(id.to_string(), n);
        } else if let Some((net, ip)) = parse_lease_key(key) {
            let l: PoolLease = decode(key, value)?;
            self.leases.insert((net.to_string(), ip), l);
        } else if let Some(id) = member_id(key) {
            let m: MemberRecord = decode(key, value)?;
            match m.address.parse() {
                Ok(a) => self.vteps.insert(id.to_string(), a),
                // Not an IPv4 address: no overlay to that host (`desired` says so).
                Err(_) => self.vteps.remove(id),
            };
        } else {
            return Ok(false);
        }
        Ok(true)
    }

    fn delete(&mut self, key: &str) -> bool {
        if let Some(id) = parse_network_key(key) {
            self.networks.remove(id).is_some()
        } else if let Some((net, ip)) = parse_lease_key(key) {
            self.leases.remove(&(net.to_string(), ip)).is_some()
        } else if let Some(id) = member_id(key) {
            self.vteps.remove(id).is_some()
        } else {
            false
        }
    }

    /// The claims of network `net_id`, by address.
    pub fn leases_of<'a>(
        &'a self,
        net_id: &'a str,
    ) -> impl Iterator<Item = (Ipv4Addr, &'a PoolLease)> + 'a {
        self.leases
            .range((net_id.to_string(), Ipv4Addr::UNSPECIFIED)..)
            .take_while(move |((n, _), _)| n == net_id)
            .map(|((_, ip), l)| (*ip, l))
    }
}

/// What one host's VXLAN link of one network should forward.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Desired {
    /// Hosts to flood to: those with an endpoint on the network.
    pub flood: BTreeSet<Ipv4Addr>,
    /// Each remote endpoint's MAC, and its host's address.
    pub fdb: BTreeMap<[u8; 6], Ipv4Addr>,
    /// Each remote endpoint's address, and its MAC (the link's ARP answers).
    pub neigh: BTreeMap<Ipv4Addr, [u8; 6]>,
    /// Claims left out: their host has no usable pool address, or their MAC does not
    /// read (host, address); for a warning.
    pub skipped: Vec<(String, Ipv4Addr)>,
}

/// The entries the VXLAN link of network `net_id` on host `self_host` should have: one
/// per endpoint on another host. This host's own endpoints get none (its bridge
/// reaches them), so an address that moved here drops its old entries.
pub fn desired(view: &OverlayView, net_id: &str, self_host: &str) -> Desired {
    let mut d = Desired::default();
    for (ip, lease) in view.leases_of(net_id) {
        if lease.host == self_host {
            continue;
        }
        let (Some(vtep), Some(mac)) = (view.vteps.get(&lease.host), lease.mac_bytes()) else {
            d.skipped.push((lease.host.clone(), ip));
            continue;
        };
        d.flood.insert(*vtep);
        d.fdb.insert(mac, *vtep);
        d.neigh.insert(ip, mac);
    }
    d
}
