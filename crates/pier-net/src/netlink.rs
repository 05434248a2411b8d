//! Links, addresses and routes through netlink (`rtnetlink`), and network namespace
//! files.
//!
//! A container on a bridge network gets a network namespace held by a bind-mounted
//! file (`ROOT/netns/<id>`), created here before the runtime starts and joined by the
//! container through the runtime spec. [`plumb`] then creates a veth pair from inside
//! that namespace: its end there is `eth0` (`eth1`, ... for further networks), its peer
//! is moved to the daemon's namespace and plugged into the network's bridge.

use std::fs;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsFd, AsRawFd};
use std::path::{Path, PathBuf};

use futures_util::TryStreamExt;
use rtnetlink::packet_route::address::{AddressAttribute, AddressFlags};
use rtnetlink::packet_route::link::{InfoData, InfoKind, InfoVeth, LinkAttribute};
use rtnetlink::{Handle, LinkBridge, LinkBridgePort, LinkMessageBuilder, LinkUnspec, LinkVeth};

use crate::error::{io, nl};
use crate::{Error, Result};

pub(crate) fn is_errno(e: &rtnetlink::Error, errno: i32) -> bool {
    matches!(e, rtnetlink::Error::NetlinkError(m) if m.raw_code() == -errno)
}

/// A netlink connection in the daemon's network namespace.
#[derive(Clone)]
pub struct Netlink {
    pub(crate) handle: Handle,
}

/// A link as netlink reports it.
#[derive(Debug, Clone)]
pub struct Link {
    pub index: u32,
    pub name: String,
    /// The bridge it is plugged into.
    pub controller: Option<u32>,
}

impl Netlink {
    /// Opens a connection; must be called inside a tokio runtime.
    pub fn new() -> Result<Self> {
        let (conn, handle, _) = rtnetlink::new_connection().map_err(Error::Socket)?;
        tokio::spawn(conn);
        Ok(Netlink { handle })
    }

    pub async fn links(&self) -> Result<Vec<Link>> {
        let mut out = Vec::new();
        let mut s = self.handle.link().get().execute();
        while let Some(m) = s.try_next().await.map_err(nl("list", "links"))? {
            let mut link = Link {
                index: m.header.index,
                name: String::new(),
                controller: None,
            };
            for a in m.attributes {
                match a {
                    LinkAttribute::IfName(n) => link.name = n,
                    LinkAttribute::Controller(c) => link.controller = Some(c),
                    _ => {}
                }
            }
            out.push(link);
        }
        Ok(out)
    }

    pub async fn index(&self, name: &str) -> Result<Option<u32>> {
        let mut s = self
            .handle
            .link()
            .get()
            .match_name(name.to_string())
            .execute();
        match s.try_next().await {
            Ok(m) => Ok(m.map(|m| m.header.index)),
            Err(e) if is_errno(&e, libc::ENODEV) => Ok(None),
            Err(e) => Err(nl("look up link", name)(e)),
        }
    }

    /// Creates the bridge if it is missing, gives it `gateway/prefix` (and `gateway6`'s
    /// IPv6 address) and brings it up. Returns its index.
    pub async fn ensure_bridge(
        &self,
        name: &str,
        gateway: Ipv4Addr,
        prefix: u8,
        gateway6: Option<(Ipv6Addr, u8)>,
        mtu: u32,
    ) -> Result<u32> {
        if self.index(name).await?.is_none() {
            // A fixed MAC: otherwise the bridge takes its lowest port's, which changes as
            // containers come and go and leaves stale ARP entries behind.
            let msg = LinkBridge::new(name)
                .mtu(mtu)
                .address(crate::ipam::mac_for(gateway).to_vec())
                .build();
            match self.handle.link().add(msg).execute().await {
                Ok(()) => {}
                Err(e) if is_errno(&e, libc::EEXIST) => {}
                Err(e) => return Err(nl("create bridge", name)(e)),
            }
        }
        let index = self
            .index(name)
            .await?
            .ok_or_else(|| Error::LinkMissing { name: name.into() })?;
        match self
            .handle
            .address()
            .add(index, IpAddr::V4(gateway), prefix)
            .execute()
            .await
        {
            Ok(()) => {}
            Err(e) if is_errno(&e, libc::EEXIST) => {}
            Err(e) => return Err(nl("add", format!("{gateway}/{prefix} to {name}"))(e)),
        }
        if let Some((gw6, prefix6)) = gateway6 {
            add_v6(&self.handle, index, gw6, prefix6)
                .await
                .map_err(nl("add", format!("{gw6}/{prefix6} to {name}")))?;
        }
        self.handle
            .link()
            .set(LinkUnspec::new_with_index(index).up().build())
            .execute()
            .await
            .map_err(nl("bring up", name))?;
        Ok(index)
    }

    /// Deletes a link by name; a missing link is not an error. Deleting one end of a
    /// veth pair deletes both.
    pub async fn delete(&self, name: &str) -> Result<()> {
        let Some(index) = self.index(name).await? else {
            return Ok(());
        };
        match self.handle.link().del(index).execute().await {
            Ok(()) => Ok(()),
            Err(e) if is_errno(&e, libc::ENODEV) => Ok(()),
            Err(e) => Err(nl("delete link", name)(e)),
        }
    }

    /// Plugs the host end of a veth pair into `bridge` and brings it up, with hairpin
    /// mode so that a container reaches its own published ports; `isolated` ports
    /// (Docker's `enable_icc=false`) reach the bridge but not each other.
    pub async fn attach(&self, host_if: &str, bridge: u32, isolated: bool) -> Result<()> {
        let index = self
            .index(host_if)
            .await?
            .ok_or_else(|| Error::LinkMissing {
                name: host_if.into(),
            })?;
        self.handle
            .link()
            .set(
                LinkUnspec::new_with_index(index)
                    .controller(bridge)
                    .up()
                    .build(),
            )
            .execute()
            .await
            .map_err(nl("plug into its bridge", host_if))?;
        self.handle
            .link()
            .set_port({
                let port = LinkBridgePort::new(index).hairpin(true);
                // Only when asked: older kernels know no isolation flag.
                if isolated { port.isolated(true) } else { port }.build()
            })
            .execute()
            .await
            .map_err(nl("set hairpin mode on", host_if))
    }
}

/// Adds an IPv6 address without duplicate address detection (the address is Pier's
/// to give, and DAD would leave it unusable for a second or two); one already there is
/// fine.
async fn add_v6(
    handle: &Handle,
    index: u32,
    addr: Ipv6Addr,
    prefix: u8,
) -> std::result::Result<(), rtnetlink::Error> {
    let mut req = handle.address().add(index, IpAddr::V6(addr), prefix);
    req.message_mut()
        .attributes
        .push(AddressAttribute::Flags(AddressFlags::Nodad));
    match req.execute().await {
        Err(e) if is_errno(&e, libc::EEXIST) => Ok(()),
        r => r,
    }
}

/// Creates a network namespace held by the file `path` (bind-mounted nsfs).
pub fn create_netns(path: &Path) -> Result<()> {
    fs::File::create(path).map_err(io("create", path))?;
    let p = path.to_path_buf();
    let r = std::thread::spawn(move || -> std::io::Result<()> {
        // SAFETY: this thread is ours alone and ends right after; unsharing its network
        // namespace affects no other thread.
        unsafe { rustix::thread::unshare_unsafe(rustix::thread::UnshareFlags::NEWNET) }?;
        rustix::mount::mount_bind("/proc/thread-self/ns/net", &p)?;
        Ok(())
    })
    .join()
    .unwrap_or_else(|_| Err(std::io::Error::other("the namespace thread panicked")));
    if let Err(e) = r {
        let _ = fs::remove_file(path);
        return Err(io("make a network namespace at", path)(e));
    }
    Ok(())
}

/// Releases a namespace file made by [`create_netns`]; a missing one is not an error.
pub fn remove_netns(path: &Path) {
    let _ = rustix::mount::unmount(path, rustix::mount::UnmountFlags::DETACH);
    let _ = fs::remove_file(path);
}

/// One interface of a container on a network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plumb {
    /// The namespace file (or `/proc/PID/ns/net`).
    pub netns: PathBuf,
    /// Name inside the container: `eth0`, ...
    pub ifname: String,
    /// Name of the host end.
    pub host_ifname: String,
    pub addr: Ipv4Addr,
    pub prefix: u8,
    pub mac: [u8; 6],
    pub mtu: u32,
    /// Default route through this gateway (none on internal networks).
    pub gateway: Option<Ipv4Addr>,
    /// On a dual-stack network: the IPv6 address and prefix length.
    pub addr6: Option<(Ipv6Addr, u8)>,
    /// The IPv6 default route's gateway (none on internal networks).
    pub gateway6: Option<Ipv6Addr>,
}

/// Creates the veth pair of `p` from inside its namespace and sets the container end
/// up: MAC, MTU, address, default route, and `lo` up. The host end lands in the
/// calling thread's namespace, down; [`Netlink::attach`] plugs it in.
pub fn plumb(p: &Plumb) -> Result<()> {
    let p = p.clone();
    std::thread::spawn(move || plumb_in_thread(&p))
        .join()
        .unwrap_or(Err(Error::Panicked {
            op: "plumb a container's interface",
        }))
}

fn plumb_in_thread(p: &Plumb) -> Result<()> {
    let own = Path::new("/proc/thread-self/ns/net");
    let host_ns = fs::File::open(own).map_err(io("open the daemon's network namespace", own))?;
    let ns = fs::File::open(&p.netns).map_err(io("open network namespace", &p.netns))?;
    rustix::thread::move_into_link_name_space(
        ns.as_fd(),
        Some(rustix::thread::LinkNameSpaceType::Network),
    )
    .map_err(|e| io("join", &p.netns)(e.into()))?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .map_err(io("start a netlink runtime in", &p.netns))?;
    rt.block_on(async {
        let (conn, handle, _) = rtnetlink::new_connection().map_err(Error::Socket)?;
        tokio::spawn(conn);
        let peer = LinkUnspec::new_with_name(&p.host_ifname)
            .setns_by_fd(host_ns.as_raw_fd())
            .build();
        let veth = LinkMessageBuilder::<LinkVeth>::new_with_info_kind(InfoKind::Veth)
            .name(p.ifname.clone())
            .address(p.mac.to_vec())
            .mtu(p.mtu)
            .set_info_data(InfoData::Veth(InfoVeth::Peer(peer)))
            .build();
        handle
            .link()
            .add(veth)
            .execute()
            .await
            .map_err(nl("create veth", format!("{}/{}", p.ifname, p.host_ifname)))?;
        let index = |name: &str| {
            let h = handle.clone();
            let name = name.to_string();
            async move {
                h.link()
                    .get()
                    .match_name(name.clone())
                    .execute()
                    .try_next()
                    .await
                    .map_err(nl("look up link", name.clone()))?
                    .map(|m| m.header.index)
                    .ok_or(Error::LinkMissing { name })
            }
        };
        let eth = index(&p.ifname).await?;
        handle
            .address()
            .add(eth, IpAddr::V4(p.addr), p.prefix)
            .execute()
            .await
            .map_err(nl(
                "add",
                format!("{}/{} to {}", p.addr, p.prefix, p.ifname),
            ))?;
        if let Some((a6, p6)) = p.addr6 {
            add_v6(&handle, eth, a6, p6)
                .await
                .map_err(nl("add", format!("{a6}/{p6} to {}", p.ifname)))?;
        }
        for i in [eth, index("lo").await?] {
            handle
                .link()
                .set(LinkUnspec::new_with_index(i).up().build())
                .execute()
                .await
                .map_err(nl("bring up", format!("link {i} in {}", p.netns.display())))?;
        }
        if let Some(gw) = p.gateway {
            let route = rtnetlink::RouteMessageBuilder::<Ipv4Addr>::new()
                .gateway(gw)
                .output_interface(eth)
                .build();
            match handle.route().add(route).execute().await {
                Ok(()) => {}
                // A second network does not replace the first one's default route.
                Err(e) if is_errno(&e, libc::EEXIST) => {}
                Err(e) => return Err(nl("add the default route via", gw.to_string())(e)),
            }
        }
        if let Some(gw6) = p.gateway6 {
            let route = rtnetlink::RouteMessageBuilder::<Ipv6Addr>::new()
                .gateway(gw6)
                .output_interface(eth)
                .build();
            match handle.route().add(route).execute().await {
                Ok(()) => {}
                Err(e) if is_errno(&e, libc::EEXIST) => {}
                Err(e) => return Err(nl("add the IPv6 default route via", gw6.to_string())(e)),
            }
        }
        Ok(())
    })
}

/// Adds IPv4 addresses (`addr/prefix`) to interface `ifname` of the namespace held at
/// `netns` (a container's link-local addresses, Docker's `--link-local-ip`).
pub fn add_addresses(netns: &Path, ifname: &str, addrs: &[(Ipv4Addr, u8)]) -> Result<()> {
    let (netns, ifname, addrs) = (netns.to_path_buf(), ifname.to_string(), addrs.to_vec());
    std::thread::spawn(move || add_addresses_in_thread(&netns, &ifname, &addrs))
        .join()
        .unwrap_or(Err(Error::Panicked {
            op: "add addresses to a container's interface",
        }))
}

fn add_addresses_in_thread(netns: &Path, ifname: &str, addrs: &[(Ipv4Addr, u8)]) -> Result<()> {
    let ns = fs::File::open(netns).map_err(io("open network namespace", netns))?;
    rustix::thread::move_into_link_name_space(
        ns.as_fd(),
        Some(rustix::thread::LinkNameSpaceType::Network),
    )
    .map_err(|e| io("join", netns)(e.into()))?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .map_err(io("start a netlink runtime in", netns))?;
    rt.block_on(async {
        let (conn, handle, _) = rtnetlink::new_connection().map_err(Error::Socket)?;
        tokio::spawn(conn);
        let index = handle
            .link()
            .get()
            .match_name(ifname.to_string())
            .execute()
            .try_next()
            .await
            .map_err(nl("look up link", ifname.to_string()))?
            .map(|m| m.header.index)
            .ok_or(Error::LinkMissing {
                name: ifname.to_string(),
            })?;
        for (addr, prefix) in addrs {
            match handle
                .address()
                .add(index, IpAddr::V4(*addr), *prefix)
                .execute()
                .await
            {
                Ok(()) => {}
                Err(e) if is_errno(&e, libc::EEXIST) => {}
                Err(e) => return Err(nl("add", format!("{addr}/{prefix} to {ifname}"))(e)),
            }
        }
        Ok(())
    })
}

/// Writes a sysctl under /proc/sys/net of the calling thread's namespace, e.g.
/// `("ipv4/ip_forward", "1")`.
pub fn sysctl(key: &str, value: &str) -> Result<()> {
    let path = Path::new("/proc/sys/net").join(key);
    fs::write(&path, value).map_err(io("write", &path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[ignore = "root tier: needs root; scripts/test.sh runs it (--run-ignored all)"]
    fn a_second_interface_by_the_same_name_is_a_conflict() {
        // All of it from a thread in a network namespace of its own, which stands in for
        // the daemon's: nothing is made in the host's, and everything goes with the thread.
        std::thread::spawn(|| {
            // SAFETY: this thread is ours alone and ends with the test.
            unsafe { rustix::thread::unshare_unsafe(rustix::thread::UnshareFlags::NEWNET) }
                .unwrap();
            let dir = tempfile::tempdir().unwrap();
            let ns = dir.path().join("ns");
            create_netns(&ns).unwrap();
            let p = Plumb {
                netns: ns.clone(),
                ifname: "eth0".into(),
                host_ifname: "pvtest0".into(),
                addr: Ipv4Addr::new(10, 99, 0, 2),
                prefix: 24,
                mac: [2, 0, 0, 0, 0, 2],
                mtu: 1500,
                gateway: None,
                addr6: None,
                gateway6: None,
            };
            let first = plumb(&p);
            let second = plumb(&p);
            remove_netns(&ns);
            first.unwrap();
            let e = second.unwrap_err();
            assert!(
                matches!(
                    &e,
                    Error::Netlink {
                        op: "create veth",
                        ..
                    }
                ),
                "{e:?}"
            );
            assert_eq!(e.kind(), crate::ErrorKind::Conflict, "{}", e.chain());
            assert!(e.chain().contains("File exists"), "{}", e.chain());
        })
        .join()
        .unwrap();
    }
}
