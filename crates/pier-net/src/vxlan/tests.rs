//! Root tier: two "hosts" (network namespaces of their own, joined by a LAN), a
//! "container" namespace on each, and an overlay between them built with this module's
//! calls; traffic crosses it, its settings and entries read back, and nothing is left.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::*;
use crate::ipam::mac_for;
use crate::netlink::{create_netns, plumb, remove_netns, Plumb};

const VNI: u32 = 4242;
const VX: &str = "pvx-t0000001";
const GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
const A_VTEP: Ipv4Addr = Ipv4Addr::new(10, 251, 9, 1);
const B_VTEP: Ipv4Addr = Ipv4Addr::new(10, 251, 9, 2);
const A_IP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 2);
const B_IP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 3);
/// A host with no link: a second flood remote and a moved MAC's new home.
const OTHER_VTEP: Ipv4Addr = Ipv4Addr::new(10, 251, 9, 99);

/// Namespace files in a directory of their own, released when dropped (also when the
/// test fails half way).
struct Namespaces {
    files: Vec<PathBuf>,
    _dir: tempfile::TempDir,
}

impl Namespaces {
    fn new(names: &[&str]) -> Namespaces {
        let dir = tempfile::tempdir().unwrap();
        let mut me = Namespaces {
            files: Vec::new(),
            _dir: dir,
        };
        for n in names {
            let p = me._dir.path().join(n);
            create_netns(&p).unwrap();
            me.files.push(p);
        }
        me
    }

    fn get(&self, i: usize) -> PathBuf {
        self.files[i].clone()
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for f in &self.files {
            remove_netns(f);
        }
    }
}

/// Runs `f` on a thread inside the namespace `ns`, with a runtime and a netlink
/// connection there.
fn in_ns<T: Send + 'static>(
    ns: &Path,
    f: impl FnOnce(&tokio::runtime::Runtime, &Netlink) -> T + Send + 'static,
) -> T {
    let ns = ns.to_path_buf();
    std::thread::spawn(move || {
        let file = std::fs::File::open(&ns).unwrap();
        rustix::thread::move_into_link_name_space(
            file.as_fd(),
            Some(rustix::thread::LinkNameSpaceType::Network),
        )
        .unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let nl = rt.block_on(async { Netlink::new() }).unwrap();
        f(&rt, &nl)
    })
    .join()
    .unwrap()
}

/// One host's half of the overlay: the network's bridge, a container on it, the VXLAN
/// link and the entries for the other host's container. Returns the bridge's and the
/// link's indexes.
fn build_host(host: &Path, container: &Path, local: Ipv4Addr, me: Ipv4Addr) -> (u32, u32) {
    let (remote, peer) = if local == A_VTEP {
        (B_VTEP, B_IP)
    } else {
        (A_VTEP, A_IP)
    };
    let container = container.to_path_buf();
    in_ns(host, move |rt, nl| {
        let br = rt
            .block_on(nl.ensure_bridge("pvtbr0", GATEWAY, 24, None, 1450))
            .unwrap();
        plumb(&Plumb {
            netns: container,
            ifname: "eth0".into(),
            host_ifname: "pvtc0".into(),
            addr: me,
            prefix: 24,
            mac: mac_for(me),
            mtu: 1450,
            gateway: Some(GATEWAY),
            addr6: None,
            gateway6: None,
        })
        .unwrap();
        rt.block_on(nl.attach("pvtc0", br, false)).unwrap();
        let vx = rt
            .block_on(nl.ensure_vxlan(VX, VNI, local, 1450, br))
            .unwrap();
        // Again: the same link, kept.
        let again = rt
            .block_on(nl.ensure_vxlan(VX, VNI, local, 1450, br))
            .unwrap();
        assert_eq!(vx, again);
        let mac = mac_for(peer);
        for e in [
            FdbEntry::flood(remote),
            FdbEntry::remote(mac, remote),
            FdbEntry::bridge(mac),
        ] {
            rt.block_on(nl.fdb_add(vx, &e)).unwrap();
            // Every add is idempotent (the sync passes repeat them).
            rt.block_on(nl.fdb_add(vx, &e)).unwrap();
        }
        rt.block_on(nl.neigh_replace(vx, peer, mac)).unwrap();
        (br, vx)
    })
}

/// Serves one connection on `addr` from namespace `ns`: reads 5 bytes, answers them
/// reversed and then `big` bytes. Returns once it is listening.
fn serve_once(ns: &Path, addr: SocketAddr, big: usize) -> std::thread::JoinHandle<()> {
    let ns = ns.to_path_buf();
    let (tx, rx) = std::sync::mpsc::channel();
    let h = std::thread::spawn(move || {
        let file = std::fs::File::open(&ns).unwrap();
        rustix::thread::move_into_link_name_space(
            file.as_fd(),
            Some(rustix::thread::LinkNameSpaceType::Network),
        )
        .unwrap();
        let l = TcpListener::bind(addr).unwrap();
        l.set_nonblocking(true).unwrap();
        tx.send(()).unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut s = loop {
            match l.accept() {
                Ok((s, _)) => break s,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    assert!(
                        Instant::now() < deadline,
                        "no connection came over the overlay"
                    );
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => panic!("accept: {e}"),
            }
        };
        s.set_nonblocking(false).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut buf = [0u8; 5];
        s.read_exact(&mut buf).unwrap();
        buf.reverse();
        s.write_all(&buf).unwrap();
        s.write_all(&vec![7u8; big]).unwrap();
    });
    rx.recv_timeout(Duration::from_secs(10)).unwrap();
    h
}

/// Connects from namespace `ns` to `addr` and checks the answers of [`serve_once`].
fn talk(ns: &Path, addr: SocketAddr, big: usize) {
    let ns = ns.to_path_buf();
    std::thread::spawn(move || {
        let file = std::fs::File::open(&ns).unwrap();
        rustix::thread::move_into_link_name_space(
            file.as_fd(),
            Some(rustix::thread::LinkNameSpaceType::Network),
        )
        .unwrap();
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(10))
            .unwrap_or_else(|e| panic!("connect to {addr} over the overlay: {e}"));
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(b"hello").unwrap();
        let mut buf = [0u8; 5];
        s.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"olleh");
        let mut rest = vec![0u8; big];
        s.read_exact(&mut rest).unwrap();
        assert!(rest.iter().all(|b| *b == 7));
    })
    .join()
    .unwrap();
}

/// The MAC host `ns` resolved `ip` to on its bridge `pvtbr0` after trying to reach it
/// (None when ARP got no answer within a second and a half).
fn host_resolves(ns: &Path, ip: Ipv4Addr) -> Option<[u8; 6]> {
    in_ns(ns, move |rt, nl| {
        let br = rt.block_on(nl.index("pvtbr0")).unwrap().unwrap();
        rt.block_on(nl.neigh_del(br, ip)).unwrap();
        // Any packet will do: it makes the host ask for the address.
        let _ = TcpStream::connect_timeout(
            &SocketAddr::new(ip.into(), 7009),
            Duration::from_millis(300),
        );
        let deadline = Instant::now() + Duration::from_millis(1500);
        loop {
            let found = rt.block_on(async {
                let mut s = nl
                    .handle
                    .neighbours()
                    .get()
                    .set_address_family(AddressFamily::Inet)
                    .execute();
                let mut found = None;
                while let Some(m) = s.try_next().await.unwrap() {
                    let resolved = matches!(
                        m.header.state,
                        NeighbourState::Reachable
                            | NeighbourState::Stale
                            | NeighbourState::Delay
                            | NeighbourState::Probe
                    );
                    if m.header.ifindex == br && resolved && dst_of(&m.attributes) == Some(ip) {
                        found = mac_of(&m.attributes);
                    }
                }
                found
            });
            if found.is_some() || Instant::now() > deadline {
                return found;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    })
}

#[test]
#[ignore = "root tier: needs root; scripts/test.sh runs it (--run-ignored all)"]
fn an_overlay_joins_two_hosts_and_leaves_nothing_behind() {
    let ns = Namespaces::new(&["a", "b", "ca", "cb"]);
    let (a, b, ca, cb) = (ns.get(0), ns.get(1), ns.get(2), ns.get(3));

    // The LAN: a bridge on host a with a's address, and a veth to host b.
    let b2 = b.clone();
    in_ns(&a, move |rt, nl| {
        let lan = rt
            .block_on(nl.ensure_bridge("pvtlan", A_VTEP, 24, None, 1500))
            .unwrap();
        plumb(&Plumb {
            netns: b2,
            ifname: "lan0".into(),
            host_ifname: "pvtlan0".into(),
            addr: B_VTEP,
            prefix: 24,
            mac: [2, 0, 0, 0, 9, 2],
            mtu: 1500,
            gateway: None,
            addr6: None,
            gateway6: None,
        })
        .unwrap();
        rt.block_on(nl.attach("pvtlan0", lan, false)).unwrap();
    });

    let (a_br, a_vx) = build_host(&a, &ca, A_VTEP, A_IP);
    let (b_br, b_vx) = build_host(&b, &cb, B_VTEP, B_IP);

    // The link's settings and entries as the kernel has them.
    for (host, br, vx, local, remote, peer) in [
        (&a, a_br, a_vx, A_VTEP, B_VTEP, B_IP),
        (&b, b_br, b_vx, B_VTEP, A_VTEP, A_IP),
    ] {
        in_ns(host, move |rt, nl| {
            let v = rt.block_on(nl.vxlan(VX)).unwrap().unwrap();
            assert_eq!(
                v,
                VxlanLink {
                    index: vx,
                    vni: VNI,
                    local: Some(local),
                    port: VXLAN_PORT,
                    learning: false,
                    proxy: true,
                    mtu: 1450,
                    controller: Some(br),
                    port_learning: Some(false),
                    up: true,
                }
            );
            let mac = mac_for(peer);
            let mut want = vec![
                FdbEntry::flood(remote),
                FdbEntry::remote(mac, remote),
                FdbEntry::bridge(mac),
            ];
            want.sort();
            assert_eq!(rt.block_on(nl.fdb_list(vx)).unwrap(), want);
            assert_eq!(rt.block_on(nl.neigh_list(vx)).unwrap(), vec![(peer, mac)]);
            // Not a VXLAN link: said so.
            assert!(matches!(
                rt.block_on(nl.vxlan("pvtbr0")),
                Err(Error::NotVxlan { .. })
            ));
            assert_eq!(rt.block_on(nl.vxlan("pvx-absent0")).unwrap(), None);
        });
    }

    // Across the overlay both ways, with more than one MTU's worth of data.
    let server = serve_once(&cb, SocketAddr::new(B_IP.into(), 7000), 64 * 1024);
    talk(&ca, SocketAddr::new(B_IP.into(), 7000), 64 * 1024);
    server.join().unwrap();
    let server = serve_once(&ca, SocketAddr::new(A_IP.into(), 7001), 1024);
    talk(&cb, SocketAddr::new(A_IP.into(), 7001), 1024);
    server.join().unwrap();

    // Without Pier's bridge table, host a's own ARP crosses into the VXLAN port (and
    // is answered by its proxy): the host itself reaches into the overlay.
    assert_eq!(host_resolves(&a, B_IP), Some(mac_for(B_IP)));

    // With Pier's tables on both hosts (the overlay's bridge table, and the ip table,
    // whose forward chain sees the bridged traffic: bridge-nf-call-iptables is on in a
    // new namespace) the containers still talk.
    let net = crate::nft::FwNetwork {
        bridge: "pvtbr0".into(),
        subnet: "10.77.0.0/24".parse().unwrap(),
        subnet6: None,
        internal: false,
        routed: false,
        masquerade: true,
        overlay: Some(VX.into()),
    };
    for host in [&a, &b] {
        let net = net.clone();
        in_ns(host, move |_, _| {
            crate::nft::apply("pier_t0", "root_0123456789abcdef", &[net], &[]).unwrap();
            let nf = std::fs::read_to_string("/proc/sys/net/bridge/bridge-nf-call-iptables");
            assert_eq!(nf.map(|s| s.trim().to_string()).ok().as_deref(), Some("1"));
        });
    }
    let server = serve_once(&cb, SocketAddr::new(B_IP.into(), 7002), 64 * 1024);
    talk(&ca, SocketAddr::new(B_IP.into(), 7002), 64 * 1024);
    server.join().unwrap();
    // ... and the host itself no longer does: its frames never leave by a VXLAN port.
    assert_eq!(host_resolves(&a, B_IP), None);
    for host in [&a, &b] {
        in_ns(host, |_, _| {
            assert!(crate::nft::exists("pier_t0"));
            crate::nft::delete("pier_t0").unwrap();
            assert!(!crate::nft::exists("pier_t0"));
        });
    }

    // What the sync relies on, on host a.
    in_ns(&a, move |rt, nl| {
        let mac = mac_for(B_IP);
        // A second flood remote is appended beside the first; deleting it leaves the
        // first.
        rt.block_on(nl.fdb_add(a_vx, &FdbEntry::flood(OTHER_VTEP)))
            .unwrap();
        let floods = |nl: &Netlink| {
            rt.block_on(nl.fdb_list(a_vx))
                .unwrap()
                .into_iter()
                .filter(FdbEntry::is_flood)
                .map(|e| e.dst.unwrap())
                .collect::<Vec<_>>()
        };
        assert_eq!(floods(nl), vec![B_VTEP, OTHER_VTEP]);
        rt.block_on(nl.fdb_del(a_vx, &FdbEntry::flood(OTHER_VTEP)))
            .unwrap();
        assert_eq!(floods(nl), vec![B_VTEP]);
        // A MAC that moves to another host is replaced, not added beside.
        rt.block_on(nl.fdb_add(a_vx, &FdbEntry::remote(mac, OTHER_VTEP)))
            .unwrap();
        let remotes = |nl: &Netlink| {
            rt.block_on(nl.fdb_list(a_vx))
                .unwrap()
                .into_iter()
                .filter(|e| e.mac == mac && !e.master)
                .collect::<Vec<_>>()
        };
        assert_eq!(remotes(nl), vec![FdbEntry::remote(mac, OTHER_VTEP)]);
        rt.block_on(nl.fdb_add(a_vx, &FdbEntry::remote(mac, B_VTEP)))
            .unwrap();
        assert_eq!(remotes(nl), vec![FdbEntry::remote(mac, B_VTEP)]);
        // Deleting what is not there is done.
        rt.block_on(nl.fdb_del(a_vx, &FdbEntry::remote([2, 9, 9, 9, 9, 9], B_VTEP)))
            .unwrap();
        rt.block_on(nl.fdb_del(a_vx, &FdbEntry::bridge([2, 9, 9, 9, 9, 9])))
            .unwrap();
        rt.block_on(nl.neigh_del(a_vx, Ipv4Addr::new(10, 77, 0, 99)))
            .unwrap();
        // A neighbour entry replaced and deleted.
        let moved = [2, 1, 2, 3, 4, 5];
        rt.block_on(nl.neigh_replace(a_vx, B_IP, moved)).unwrap();
        assert_eq!(
            rt.block_on(nl.neigh_list(a_vx)).unwrap(),
            vec![(B_IP, moved)]
        );
        rt.block_on(nl.neigh_del(a_vx, B_IP)).unwrap();
        assert_eq!(rt.block_on(nl.neigh_list(a_vx)).unwrap(), vec![]);
        // The host's pool address changed: the link is made again, with no entries.
        let vx = rt
            .block_on(nl.ensure_vxlan(VX, VNI, OTHER_VTEP, 1450, a_br))
            .unwrap();
        let v = rt.block_on(nl.vxlan(VX)).unwrap().unwrap();
        assert_eq!(v.local, Some(OTHER_VTEP));
        assert_eq!(v.controller, Some(a_br));
        assert_eq!(rt.block_on(nl.fdb_list(vx)).unwrap(), vec![]);
    });

    // Deleted: no link, no entry with a remote end, no static bridge entry, no
    // permanent neighbour entry is left on either host.
    for host in [&a, &b] {
        in_ns(host, |rt, nl| {
            let index = rt.block_on(nl.index(VX)).unwrap().unwrap();
            rt.block_on(nl.delete(VX)).unwrap();
            assert_eq!(rt.block_on(nl.vxlan(VX)).unwrap(), None);
            let left: Vec<FdbEntry> = rt
                .block_on(nl.fdb_dump(|_| true))
                .unwrap()
                .into_iter()
                .filter(|e| e.dst.is_some() || e.master)
                .collect();
            assert_eq!(left, vec![]);
            assert_eq!(rt.block_on(nl.neigh_list(index)).unwrap(), vec![]);
            // Deleting again is fine.
            rt.block_on(nl.delete(VX)).unwrap();
        });
    }
    let files = ns.files.clone();
    drop(ns);
    assert!(files.iter().all(|f| !f.exists()));
}
