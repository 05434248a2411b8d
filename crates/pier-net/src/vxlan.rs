//! VXLAN links for networks that span a pool of hosts, and the forwarding state Pier
//! programs on them: the link itself, its forwarding database (FDB) and its neighbour
//! (ARP) entries, all through netlink.
//!
//! One network across the pool is a bridge on every host plus a `vxlan` link on that
//! bridge (one VNI per network, UDP [`VXLAN_PORT`], the host's pool address as the
//! local tunnel end). Nothing is learned and nothing is multicast: the link is made with
//! `nolearning` and `proxy`, its bridge port with `learning off`, and every entry comes
//! from the pool's records:
//!
//! | entry ([`FdbEntry`]) | what it does | `bridge fdb` equivalent |
//! |---|---|---|
//! | `00:00:00:00:00:00`, `dst` = a remote host | broadcast, unknown unicast and multicast frames are sent to that host (one entry per remote host with endpoints on the network) | `append 00:.. dev VX dst IP self permanent` |
//! | MAC of a remote endpoint, `dst` = its host | frames for it are tunnelled there | `replace MAC dev VX dst IP self permanent` |
//! | MAC of a remote endpoint, `master` | the bridge forwards frames for it to the VXLAN port (static, not learned, never aged) | `replace MAC dev VX master static` |
//!
//! and one neighbour entry per remote endpoint (`ip neigh replace IP lladdr MAC dev VX
//! nud permanent`), from which the `proxy` link answers ARP locally: ARP never crosses
//! the tunnel.
//!
//! The kernel's answers the calls rely on: replacing an all-zero entry is refused (so
//! those are appended: `NLM_F_APPEND`, which rtnetlink's request does not send), a second
//! append of one remote is accepted, deleting an absent entry or remote is ENOENT (taken
//! as done here).

use std::net::{IpAddr, Ipv4Addr};

use futures_util::{StreamExt, TryStreamExt};
use rtnetlink::packet_core::{
    NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_APPEND, NLM_F_CREATE, NLM_F_REQUEST,
};
use rtnetlink::packet_route::link::{
    InfoBridgePort, InfoData, InfoKind, InfoPortData, InfoVxlan, LinkAttribute, LinkInfo,
    LinkMessage,
};
use rtnetlink::packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use rtnetlink::packet_route::{AddressFamily, RouteNetlinkMessage};
use rtnetlink::{LinkBridgePort, LinkUnspec, LinkVxlan};

use crate::error::{nl, NetlinkError};
use crate::netlink::{is_errno, Netlink};
use crate::{Error, Result};

/// The UDP port of every overlay (IANA's VXLAN port, as Linux's `dstport 4789`).
pub const VXLAN_PORT: u16 = 4789;

/// The all-zero MAC of flood entries.
pub const FLOOD_MAC: [u8; 6] = [0; 6];

/// A VXLAN link as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VxlanLink {
    pub index: u32,
    pub vni: u32,
    /// The local tunnel end.
    pub local: Option<Ipv4Addr>,
    /// The UDP destination port.
    pub port: u16,
    /// Whether the link learns remote MACs from received packets (Pier's: no).
    pub learning: bool,
    /// Whether the link answers ARP from its neighbour table (Pier's: yes).
    pub proxy: bool,
    pub mtu: u32,
    /// The bridge it is a port of.
    pub controller: Option<u32>,
    /// Whether its bridge port learns MACs (None when it is no bridge port).
    pub port_learning: Option<bool>,
    pub up: bool,
}

/// One forwarding entry of a VXLAN link; see the module doc for the three shapes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FdbEntry {
    pub mac: [u8; 6],
    /// The remote tunnel end (an entry of the link itself, `self`).
    pub dst: Option<Ipv4Addr>,
    /// An entry of the bridge the link is a port of (`master`), pointing the MAC at it.
    pub master: bool,
}

impl FdbEntry {
    /// Flood frames (broadcast, unknown unicast, multicast) to `dst`.
    pub fn flood(dst: Ipv4Addr) -> FdbEntry {
        FdbEntry {
            mac: FLOOD_MAC,
            dst: Some(dst),
            master: false,
        }
    }

    /// Tunnel frames for `mac` to `dst`.
    pub fn remote(mac: [u8; 6], dst: Ipv4Addr) -> FdbEntry {
        FdbEntry {
            mac,
            dst: Some(dst),
            master: false,
        }
    }

    /// The bridge sends frames for `mac` to the VXLAN port.
    pub fn bridge(mac: [u8; 6]) -> FdbEntry {
        FdbEntry {
            mac,
            dst: None,
            master: true,
        }
    }

    pub fn is_flood(&self) -> bool {
        self.mac == FLOOD_MAC && !self.master
    }
}

/// `aa:bb:..` of a MAC, for messages.
pub fn mac_str(mac: &[u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn mac_of(attrs: &[NeighbourAttribute]) -> Option<[u8; 6]> {
    attrs.iter().find_map(|a| match a {
        NeighbourAttribute::LinkLayerAddress(l) => l.as_slice().try_into().ok(),
        _ => None,
    })
}

fn dst_of(attrs: &[NeighbourAttribute]) -> Option<Ipv4Addr> {
    attrs.iter().find_map(|a| match a {
        NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)) => Some(*ip),
        // Bridge-family messages carry it unparsed.
        NeighbourAttribute::Destination(NeighbourAddress::Other(b)) => {
            <[u8; 4]>::try_from(b.as_slice()).ok().map(Ipv4Addr::from)
        }
        _ => None,
    })
}

/// The bridge-family message naming `e` on link `ifindex` (for add, append and delete).
fn fdb_message(ifindex: u32, e: &FdbEntry) -> NeighbourMessage {
    let mut m = NeighbourMessage::default();
    m.header.family = AddressFamily::Bridge;
    m.header.ifindex = ifindex;
    if e.master {
        m.header.flags = NeighbourFlags::Controller;
        m.header.state = NeighbourState::Noarp;
    } else {
        m.header.flags = NeighbourFlags::Own;
        m.header.state = NeighbourState::Permanent;
    }
    m.attributes
        .push(NeighbourAttribute::LinkLayerAddress(e.mac.to_vec()));
    if let Some(dst) = e.dst {
        m.attributes
            .push(NeighbourAttribute::Destination(NeighbourAddress::Inet(dst)));
    }
    m
}

/// What the vxlan link `m` is, or None when `m` is another kind of link.
fn vxlan_of(m: &LinkMessage) -> Option<VxlanLink> {
    let mut v = VxlanLink {
        index: m.header.index,
        vni: 0,
        local: None,
        port: 0,
        learning: true,
        proxy: false,
        mtu: 0,
        controller: None,
        port_learning: None,
        up: m
            .header
            .flags
            .contains(rtnetlink::packet_route::link::LinkFlags::Up),
    };
    let mut is_vxlan = false;
    for a in &m.attributes {
        match a {
            LinkAttribute::Mtu(mtu) => v.mtu = *mtu,
            LinkAttribute::Controller(c) => v.controller = Some(*c),
            LinkAttribute::LinkInfo(infos) => {
                for i in infos {
                    match i {
                        LinkInfo::Kind(InfoKind::Vxlan) => is_vxlan = true,
                        LinkInfo::Data(InfoData::Vxlan(data)) => {
                            for d in data {
                                match d {
                                    InfoVxlan::Id(id) => v.vni = *id,
                                    InfoVxlan::Local(l) => v.local = Some(*l),
                                    InfoVxlan::Port(p) => v.port = *p,
                                    InfoVxlan::Learning(l) => v.learning = *l,
                                    InfoVxlan::Proxy(p) => v.proxy = *p,
                                    _ => {}
                                }
                            }
                        }
                        LinkInfo::PortData(InfoPortData::BridgePort(port)) => {
                            for p in port {
                                if let InfoBridgePort::Learning(l) = p {
                                    v.port_learning = Some(*l);
                                }
                            }
                        }
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    is_vxlan.then_some(v)
}

impl Netlink {
    /// The VXLAN link `name`: None when there is no link by that name, an error when
    /// there is one of another kind.
    pub async fn vxlan(&self, name: &str) -> Result<Option<VxlanLink>> {
        let mut s = self
            .handle
            .link()
            .get()
            .match_name(name.to_string())
            .execute();
        let m = match s.try_next().await {
            Ok(Some(m)) => m,
            Ok(None) => return Ok(None),
            Err(e) if is_errno(&e, libc::ENODEV) => return Ok(None),
            Err(e) => return Err(nl("look up link", name)(e)),
        };
        vxlan_of(&m).map(Some).ok_or_else(|| Error::NotVxlan {
            name: name.to_string(),
        })
    }

    /// Makes the VXLAN link `name` of network `vni` (local end `local`, UDP
    /// [`VXLAN_PORT`], no learning, ARP answered locally), a port of the bridge of index
    /// `bridge` without MAC learning, up, with `mtu`; returns its index. A link already
    /// there with that VNI, local address and port is kept (its MTU, bridge and state are
    /// set again); one that differs (the host's pool address changed) is made again.
    pub async fn ensure_vxlan(
        &self,
        name: &str,
        vni: u32,
        local: Ipv4Addr,
        mtu: u32,
        bridge: u32,
    ) -> Result<u32> {
        let index = match self.vxlan(name).await {
            Ok(Some(v)) if v.vni == vni && v.local == Some(local) && v.port == VXLAN_PORT => {
                self.handle
                    .link()
                    .set(
                        LinkUnspec::new_with_index(v.index)
                            .mtu(mtu)
                            .controller(bridge)
                            .up()
                            .build(),
                    )
                    .execute()
                    .await
                    .map_err(nl("set up VXLAN link", name))?;
                v.index
            }
            found => {
                // Another VNI or local end, or a link of another kind under Pier's name:
                // made again.
                if matches!(found, Ok(Some(_)) | Err(Error::NotVxlan { .. })) {
                    self.delete(name).await?;
                } else {
                    found?;
                }
                let msg = LinkVxlan::new(name, vni)
                    .local(local)
                    .port(VXLAN_PORT)
                    .learning(false)
                    .proxy(true)
                    .mtu(mtu)
                    .controller(bridge)
                    .up()
                    .build();
                match self.handle.link().add(msg).execute().await {
                    Ok(()) => {}
                    // Made meanwhile by another call: checked below.
                    Err(e) if is_errno(&e, libc::EEXIST) => {}
                    Err(e) if is_errno(&e, libc::EOPNOTSUPP) => {
                        return Err(Error::NoVxlan {
                            name: name.to_string(),
                            source: e.into(),
                        })
                    }
                    Err(e) => return Err(nl("create VXLAN link", name)(e)),
                }
                let v = self
                    .vxlan(name)
                    .await?
                    .ok_or_else(|| Error::LinkMissing { name: name.into() })?;
                if v.vni != vni || v.local != Some(local) {
                    return Err(Error::Netlink {
                        op: "create VXLAN link",
                        object: name.to_string(),
                        source: NetlinkError::Kernel(rustix::io::Errno::EXIST),
                    });
                }
                v.index
            }
        };
        // Remote MACs are programmed, never learned, on the bridge side too.
        self.handle
            .link()
            .set_port(LinkBridgePort::new(index).learning(false).build())
            .execute()
            .await
            .map_err(nl("turn off MAC learning on bridge port", name))?;
        Ok(index)
    }

    /// Adds `e` to the VXLAN link `ifindex` (see the module doc): flood entries are
    /// appended (one per remote), the others replace what the MAC had.
    pub async fn fdb_add(&self, ifindex: u32, e: &FdbEntry) -> Result<()> {
        let what = || fdb_object(ifindex, e);
        if e.is_flood() {
            let mut req =
                NetlinkMessage::from(RouteNetlinkMessage::NewNeighbour(fdb_message(ifindex, e)));
            req.header.flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_APPEND;
            let mut handle = self.handle.clone();
            let mut answers = handle
                .request(req)
                .map_err(nl("append forwarding entry", what()))?;
            while let Some(m) = answers.next().await {
                if let NetlinkPayload::Error(err) = m.payload {
                    if err.code.is_some() {
                        return Err(nl("append forwarding entry", what())(
                            rtnetlink::Error::NetlinkError(err),
                        ));
                    }
                }
            }
            return Ok(());
        }
        let mut req = self
            .handle
            .neighbours()
            .add_bridge(ifindex, &e.mac)
            .replace();
        *req.message_mut() = fdb_message(ifindex, e);
        req.execute()
            .await
            .map_err(nl("replace forwarding entry", what()))
    }

    /// Deletes `e` from link `ifindex` (a flood entry: only that remote); an entry that
    /// is not there is fine.
    pub async fn fdb_del(&self, ifindex: u32, e: &FdbEntry) -> Result<()> {
        match self
            .handle
            .neighbours()
            .del(fdb_message(ifindex, e))
            .execute()
            .await
        {
            Ok(()) => Ok(()),
            Err(err) if is_errno(&err, libc::ENOENT) => Ok(()),
            Err(err) => Err(nl("delete forwarding entry", fdb_object(ifindex, e))(err)),
        }
    }

    /// The entries Pier programs on link `ifindex`: its own (with a remote end) and its
    /// bridge's static ones pointing at it. Learned entries and the link's own address
    /// (which its bridge lists as permanent) are left out.
    pub async fn fdb_list(&self, ifindex: u32) -> Result<Vec<FdbEntry>> {
        let mut out = self.fdb_dump(|i| i == ifindex).await?;
        out.sort();
        out.dedup();
        Ok(out)
    }

    /// The permanent or static bridge-family entries of the links `pick` selects.
    pub(crate) async fn fdb_dump(&self, pick: impl Fn(u32) -> bool) -> Result<Vec<FdbEntry>> {
        let mut s = self
            .handle
            .neighbours()
            .get()
            .set_address_family(AddressFamily::Bridge)
            .execute();
        let mut out = Vec::new();
        while let Some(m) = s
            .try_next()
            .await
            .map_err(nl("list", "forwarding entries"))?
        {
            if !pick(m.header.ifindex) {
                continue;
            }
            let Some(mac) = mac_of(&m.attributes) else {
                continue;
            };
            // The kernel names the bridge of a bridge-side entry in an attribute
            // (`NDA_MASTER`), not in the flags it was added with.
            let master = m.header.flags.contains(NeighbourFlags::Controller)
                || m.attributes
                    .iter()
                    .any(|a| matches!(a, NeighbourAttribute::Controller(_)));
            let keep = match m.header.state {
                NeighbourState::Noarp => true,
                // Permanent on the bridge side is a local address, not Pier's.
                NeighbourState::Permanent => !master,
                _ => false,
            };
            if keep {
                out.push(FdbEntry {
                    mac,
                    dst: dst_of(&m.attributes),
                    master,
                });
            }
        }
        Ok(out)
    }

    /// Sets the permanent neighbour entry `ip -> mac` on link `ifindex` (replacing one
    /// there), from which a `proxy` VXLAN link answers ARP.
    pub async fn neigh_replace(&self, ifindex: u32, ip: Ipv4Addr, mac: [u8; 6]) -> Result<()> {
        self.handle
            .neighbours()
            .add(ifindex, IpAddr::V4(ip))
            .link_layer_address(&mac)
            .state(NeighbourState::Permanent)
            .replace()
            .execute()
            .await
            .map_err(nl(
                "set neighbour entry",
                format!("{ip} lladdr {} on link {ifindex}", mac_str(&mac)),
            ))
    }

    /// Deletes the neighbour entry of `ip` on link `ifindex`; none there is fine.
    pub async fn neigh_del(&self, ifindex: u32, ip: Ipv4Addr) -> Result<()> {
        let mut m = NeighbourMessage::default();
        m.header.family = AddressFamily::Inet;
        m.header.ifindex = ifindex;
        m.attributes
            .push(NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)));
        match self.handle.neighbours().del(m).execute().await {
            Ok(()) => Ok(()),
            Err(e) if is_errno(&e, libc::ENOENT) => Ok(()),
            Err(e) => Err(nl(
                "delete neighbour entry",
                format!("{ip} on link {ifindex}"),
            )(e)),
        }
    }

    /// The permanent IPv4 neighbour entries of link `ifindex`, sorted.
    pub async fn neigh_list(&self, ifindex: u32) -> Result<Vec<(Ipv4Addr, [u8; 6])>> {
        let mut s = self
            .handle
            .neighbours()
            .get()
            .set_address_family(AddressFamily::Inet)
            .execute();
        let mut out = Vec::new();
        while let Some(m) = s
            .try_next()
            .await
            .map_err(nl("list", "neighbour entries"))?
        {
            if m.header.ifindex != ifindex || m.header.state != NeighbourState::Permanent {
                continue;
            }
            if let (Some(ip), Some(mac)) = (dst_of(&m.attributes), mac_of(&m.attributes)) {
                out.push((ip, mac));
            }
        }
        out.sort();
        Ok(out)
    }
}

fn fdb_object(ifindex: u32, e: &FdbEntry) -> String {
    let mut s = format!("{} on link {ifindex}", mac_str(&e.mac));
    if let Some(dst) = e.dst {
        s.push_str(&format!(" to {dst}"));
    }
    if e.master {
        s.push_str(" (bridge)");
    }
    s
}

#[cfg(test)]
mod tests;
