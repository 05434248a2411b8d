//! The pool's network records over a [`MemStore`]: the rules of the module doc, with
//! writers racing on one store from several threads as members do on etcd.

use std::sync::{Arc, Barrier};

use pier_store::{Batch, MemStore};

use super::*;
use crate::member::{member_key, MemberRecord};

fn record(project: &str, id: &str, name: &str, vni: u32, subnet: &str) -> PoolNetwork {
    let network: NetworkInspect = serde_json::from_value(serde_json::json!({
        "id": id,
        "name": name,
        "project": project,
        "driver": "overlay",
        "created": "2026-12-07T10:00:00Z",
        "subnet": subnet,
        "gateway": subnet.parse::<Ipv4Net>().unwrap().nth(1).unwrap().to_string(),
        "internal": false,
        "mode": "nat",
        "mtu": 1450,
        "bridge": "",
        "options": {},
        "labels": {},
    }))
    .unwrap();
    PoolNetwork { vni, network }
}

fn lease(host: &str, container: &str, mac: &str) -> PoolLease {
    PoolLease {
        host: host.into(),
        project: "default".into(),
        container: container.into(),
        name: format!("{container}-name"),
        aliases: vec!["web".into()],
        short_id: container.chars().take(12).collect(),
        mac: mac.into(),
        ifname: "eth0".into(),
    }
}

fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

/// A `pick` for [`create_network`]: the lowest free VNI and the first free /24.
fn auto(
    project: &'static str,
    id: String,
    name: &'static str,
) -> impl FnMut(&PoolNetworks) -> Result<PoolNetwork, NetPoolError> {
    move |cur| {
        let vni = pick_vni(&cur.vnis()).ok_or(NetPoolError::NoFreeVni)?;
        let subnet = pick_subnet(&cur.subnets()).ok_or(NetPoolError::NoFreeSubnet)?;
        Ok(record(project, &id, name, vni, &subnet.to_string()))
    }
}

/// Puts the host records of `ids` (claims require them).
fn hosts(s: &MemStore, ids: &[&str]) {
    for id in ids {
        let host = crate::scheduler::HostRecord {
            id: id.to_string(),
            labels: Default::default(),
            state: crate::scheduler::HostState::Up,
            capacity: Default::default(),
        };
        s.commit(vec![crate::scheduler::keys::put_host(&host)])
            .unwrap();
    }
}

/// A store with hosts h1, h2 and h3.
fn pool() -> MemStore {
    let s = MemStore::default();
    hosts(&s, &["h1", "h2", "h3"]);
    s
}

fn keys_under(s: &MemStore, prefix: &str) -> Vec<String> {
    s.list(TABLE, prefix)
        .unwrap()
        .into_iter()
        .map(|(k, _)| k)
        .collect()
}

#[test]
fn picks_are_the_lowest_free_vni_and_the_first_free_subnet() {
    assert_eq!(pick_vni(&BTreeSet::new()), Some(VNI_MIN));
    assert_eq!(pick_vni(&[4096, 4097, 4099].into()), Some(4098));
    let taken: Vec<Ipv4Net> = vec![
        "10.210.0.0/24".parse().unwrap(),
        // A host route over part of the next /24.
        "10.210.1.128/25".parse().unwrap(),
    ];
    assert_eq!(pick_subnet(&taken), Some("10.210.2.0/24".parse().unwrap()));
    assert_eq!(pick_subnet(&["10.0.0.0/8".parse().unwrap()]), None);
    assert_eq!(
        parse_mac("02:42:0A:d2:00:02"),
        Some([2, 0x42, 10, 0xd2, 0, 2])
    );
    for bad in [
        "",
        "02:42:0a:d2:00",
        "02:42:0a:d2:00:02:03",
        "2:42:0a:d2:00:02",
        "zz:42:0a:d2:00:02",
    ] {
        assert_eq!(parse_mac(bad), None, "{bad}");
    }
}

#[test]
fn names_vnis_and_subnets_are_the_pools_once() {
    let s = MemStore::default();
    let a = create_network(&s, auto("default", "a".repeat(64), "ov")).unwrap();
    assert_eq!(
        (a.vni, a.network.subnet.to_string()),
        (4096, "10.210.0.0/24".into())
    );
    assert_eq!(
        s.get(TABLE, &name_key("default", "ov")).unwrap().unwrap(),
        a.id().as_bytes()
    );
    assert_eq!(
        s.get(TABLE, &vni_key(4096)).unwrap().unwrap(),
        a.id().as_bytes()
    );
    // The same name in the project: refused, saying so.
    let e = create_network(&s, auto("default", "b".repeat(64), "ov")).unwrap_err();
    assert!(
        matches!(&e, NetPoolError::NameTaken { name, .. } if name == "ov"),
        "{e}"
    );
    assert!(e.to_string().contains("already exists in the pool"), "{e}");
    // In another project it is another network.
    let other = create_network(&s, auto("team", "c".repeat(64), "ov")).unwrap();
    assert_eq!(
        (other.vni, other.network.subnet.to_string()),
        (4097, "10.210.1.0/24".into())
    );
    // A VNI or subnet given that is taken, or a VNI out of range: refused.
    let cur = PoolNetworks::read(&s).unwrap();
    for (rec, want) in [
        (
            record("default", &"d".repeat(64), "x", 4096, "10.99.0.0/24"),
            "VNI 4096 is taken",
        ),
        (
            record("default", &"d".repeat(64), "x", 7, "10.99.0.0/24"),
            "out of range",
        ),
        (
            record("default", &"d".repeat(64), "x", 5000, "10.210.0.0/16"),
            "overlaps subnet 10.210.0.0/24 of network ov",
        ),
    ] {
        let e = try_create(&s, &cur, &rec).unwrap_err();
        assert!(e.to_string().contains(want), "{e}");
    }
    // A create that read before another change is a conflict, and reads again.
    let stale = PoolNetworks::default();
    let e = try_create(
        &s,
        &stale,
        &record("default", &"d".repeat(64), "x", 5000, "10.99.0.0/24"),
    )
    .unwrap_err();
    assert!(
        matches!(e, NetPoolError::Store(StoreError::Conflict { .. })),
        "{e}"
    );
    assert_eq!(PoolNetworks::read(&s).unwrap().networks.len(), 2);
}

#[test]
fn racing_creators_never_share_a_name_vni_or_subnet() {
    let s = Arc::new(MemStore::default());
    let n = 8;
    let barrier = Arc::new(Barrier::new(2 * n));
    let mut threads = Vec::new();
    for i in 0..n {
        // Two creators of each name; every creator picks the lowest free VNI and subnet.
        for twin in 0..2 {
            let (s, barrier) = (s.clone(), barrier.clone());
            threads.push(std::thread::spawn(move || {
                let name: &'static str = Box::leak(format!("net{i}").into_boxed_str());
                let id = format!("{i:02x}{twin:02x}{}", "0".repeat(60));
                barrier.wait();
                create_network(&*s, auto("default", id, name))
            }));
        }
    }
    let results: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    let won: Vec<&PoolNetwork> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
    // One winner per name; the other was told the name is taken.
    assert_eq!(won.len(), n);
    for r in &results {
        if let Err(e) = r {
            assert!(matches!(e, NetPoolError::NameTaken { .. }), "{e}");
        }
    }
    let nets = PoolNetworks::read(&*s).unwrap();
    assert_eq!(nets.networks.len(), n);
    let vnis = nets.vnis();
    assert_eq!(vnis.len(), n);
    assert_eq!(vnis, (4096..4096 + n as u32).collect());
    let subnets = nets.subnets();
    for (i, a) in subnets.iter().enumerate() {
        for b in &subnets[i + 1..] {
            assert!(!a.overlaps(b), "{a} and {b}");
        }
    }
    // Every index key names the winner.
    assert_eq!(keys_under(&s, NETNAMES).len(), n);
    assert_eq!(keys_under(&s, VNIS).len(), n);
    for w in &won {
        let name = s.get(TABLE, &name_key("default", &w.network.name)).unwrap();
        assert_eq!(name.unwrap(), w.id().as_bytes());
    }
}

#[test]
fn an_address_and_a_mac_are_claimed_once_and_released_by_their_holder() {
    let s = pool();
    let net = create_network(&s, auto("default", "a".repeat(64), "ov")).unwrap();
    let id = net.id().to_string();
    let web = lease("h2", "c-web", "02:42:0a:d2:00:02");
    let rev = claim(&s, &net, ip("10.210.0.2"), &web).unwrap();
    assert_eq!(
        s.get_kv(TABLE, &lease_key(&id, ip("10.210.0.2")))
            .unwrap()
            .unwrap()
            .mod_revision,
        rev
    );
    // The address again, from another host: taken, naming the holder.
    let e = claim(
        &s,
        &net,
        ip("10.210.0.2"),
        &lease("h3", "c-cli", "02:42:0a:d2:00:03"),
    )
    .unwrap_err();
    assert!(
        matches!(&e, NetPoolError::AddressTaken { host, container, .. } if host == "h2" && container == "c-web"),
        "{e}"
    );
    // The MAC again, on another address: refused.
    let e = claim(
        &s,
        &net,
        ip("10.210.0.9"),
        &lease("h3", "c-cli", "02:42:0A:D2:00:02"),
    )
    .unwrap_err();
    assert!(
        matches!(&e, NetPoolError::MacTaken { ip, .. } if ip == "10.210.0.2"),
        "{e}"
    );
    let e = claim(&s, &net, ip("10.210.0.9"), &lease("h3", "c-cli", "nope")).unwrap_err();
    assert!(matches!(e, NetPoolError::BadMac(_)), "{e}");
    // Only the network's own addresses, and never its gateway (every host has it).
    for bad in ["10.210.1.5", "10.210.0.1", "10.210.0.0", "10.210.0.255"] {
        let e = claim(
            &s,
            &net,
            ip(bad),
            &lease("h3", "c-cli", "02:42:0a:d2:00:09"),
        )
        .unwrap_err();
        assert!(matches!(e, NetPoolError::NotInSubnet { .. }), "{bad}: {e}");
    }
    // Only its holder releases it; a second release finds nothing.
    assert!(!release(&s, &id, ip("10.210.0.2"), &lease("h3", "c-web", "")).unwrap());
    assert!(!release(&s, &id, ip("10.210.0.2"), &lease("h2", "c-other", "")).unwrap());
    assert!(release(&s, &id, ip("10.210.0.2"), &web).unwrap());
    assert!(!release(&s, &id, ip("10.210.0.2"), &web).unwrap());
    assert!(keys_under(&s, LEASES).is_empty());
    assert!(keys_under(&s, NETMACS).is_empty());
    // Free again, for anyone.
    claim(
        &s,
        &net,
        ip("10.210.0.2"),
        &lease("h3", "c-cli", "02:42:0a:d2:00:02"),
    )
    .unwrap();
}

#[test]
fn a_claim_takes_its_holders_new_names_and_no_one_elses() {
    let s = pool();
    let net = create_network(&s, auto("default", "a".repeat(64), "ov")).unwrap();
    let id = net.id().to_string();
    let a = ip("10.210.0.2");
    let web = lease("h2", "c-web", "02:42:0a:d2:00:02");
    claim(&s, &net, a, &web).unwrap();
    let read = |s: &MemStore| -> PoolLease {
        decode("", &s.get(TABLE, &lease_key(&id, a)).unwrap().unwrap()).unwrap()
    };
    let renamed = PoolLease {
        name: "site".into(),
        aliases: vec!["www".into()],
        ..web.clone()
    };
    // Not its holder (another host, another instance), or no claim: nothing changes.
    for other in [
        PoolLease {
            host: "h3".into(),
            ..renamed.clone()
        },
        PoolLease {
            container: "c-other".into(),
            ..renamed.clone()
        },
    ] {
        assert!(!rename_claim(&s, &id, a, &other).unwrap());
    }
    assert!(!rename_claim(&s, &id, ip("10.210.0.7"), &renamed).unwrap());
    assert_eq!(read(&s), web);
    // Its holder: the names change, the rest stays; the same names again change nothing.
    assert!(rename_claim(&s, &id, a, &renamed).unwrap());
    let now = read(&s);
    assert_eq!(
        (now.name.as_str(), now.aliases.as_slice()),
        ("site", &["www".to_string()][..])
    );
    assert_eq!((now.mac, now.short_id), (web.mac, web.short_id));
    assert!(!rename_claim(&s, &id, a, &renamed).unwrap());
}

#[test]
fn racing_claimants_of_one_address_get_it_once() {
    let s = Arc::new(pool());
    let net = Arc::new(create_network(&*s, auto("default", "a".repeat(64), "ov")).unwrap());
    let n = 16;
    let barrier = Arc::new(Barrier::new(n));
    let threads: Vec<_> = (0..n)
        .map(|i| {
            let (s, net, barrier) = (s.clone(), net.clone(), barrier.clone());
            std::thread::spawn(move || {
                let l = lease(
                    &format!("h{}", i % 3 + 1),
                    &format!("c{i}"),
                    &format!("02:00:00:00:00:{i:02x}"),
                );
                barrier.wait();
                claim(&*s, &net, ip("10.210.0.7"), &l).map(|_| l)
            })
        })
        .collect();
    let results: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    let winners: Vec<&PoolLease> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
    assert_eq!(winners.len(), 1);
    for r in &results {
        if let Err(e) = r {
            assert!(matches!(e, NetPoolError::AddressTaken { .. }), "{e}");
        }
    }
    let held: PoolLease = decode(
        "",
        &s.get(TABLE, &lease_key(net.id(), ip("10.210.0.7")))
            .unwrap()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(&held, winners[0]);
    // Only the winner's MAC is recorded.
    assert_eq!(keys_under(&s, NETMACS), vec![mac_key(net.id(), &held.mac)]);
}

#[test]
fn a_network_in_use_is_not_removed_and_a_claim_loses_to_a_remove() {
    let s = pool();
    let net = create_network(&s, auto("default", "a".repeat(64), "ov")).unwrap();
    let id = net.id().to_string();
    claim(
        &s,
        &net,
        ip("10.210.0.2"),
        &lease("h2", "c1", "02:00:00:00:00:01"),
    )
    .unwrap();
    claim(
        &s,
        &net,
        ip("10.210.0.3"),
        &lease("h3", "c2", "02:00:00:00:00:02"),
    )
    .unwrap();
    claim(
        &s,
        &net,
        ip("10.210.0.4"),
        &lease("h3", "c3", "02:00:00:00:00:03"),
    )
    .unwrap();
    let e = remove_network(&s, "default", &id).unwrap_err();
    assert_eq!(
        e.to_string(),
        "network ov is in use by 3 endpoints on h2, h3: remove them first"
    );
    for (a, c) in [
        ("10.210.0.2", "c1"),
        ("10.210.0.3", "c2"),
        ("10.210.0.4", "c3"),
    ] {
        let holder = PoolLease {
            container: c.into(),
            ..lease(if c == "c1" { "h2" } else { "h3" }, c, "")
        };
        assert!(release(&s, &id, ip(a), &holder).unwrap());
    }
    let gone = remove_network(&s, "default", &id).unwrap();
    assert_eq!(gone.vni, net.vni);
    // Its name, VNI and counter went with it; the epoch says it changed.
    for prefix in [NETWORKS, NETNAMES, VNIS, NETUSERS, LEASES, NETMACS] {
        assert!(keys_under(&s, prefix).is_empty(), "{prefix}");
    }
    assert_eq!(s.get(TABLE, NETEPOCH).unwrap().unwrap(), id.as_bytes());
    // A claim after the remove: the network is gone.
    let e = claim(
        &s,
        &net,
        ip("10.210.0.2"),
        &lease("h2", "c9", "02:00:00:00:00:09"),
    )
    .unwrap_err();
    assert!(e.to_string().contains("removed meanwhile"), "{e}");
    assert!(matches!(
        remove_network(&s, "default", &id),
        Err(NetPoolError::NotFound(_))
    ));
    // The name and VNI are free again: the lowest pick is the same VNI.
    let again = create_network(&s, auto("default", "b".repeat(64), "ov")).unwrap();
    assert_eq!(again.vni, net.vni);
}

#[test]
fn a_claim_racing_a_remove_either_wins_and_blocks_it_or_loses() {
    // Many rounds of one claim against one remove, started together.
    for round in 0..32 {
        let s = Arc::new(pool());
        let net =
            Arc::new(create_network(&*s, auto("default", format!("{round:064x}"), "ov")).unwrap());
        let barrier = Arc::new(Barrier::new(2));
        let claimer = {
            let (s, net, barrier) = (s.clone(), net.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                claim(
                    &*s,
                    &net,
                    ip("10.210.0.2"),
                    &lease("h2", "c1", "02:00:00:00:00:01"),
                )
            })
        };
        let remover = {
            let (s, net, barrier) = (s.clone(), net.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                remove_network(&*s, "default", net.id())
            })
        };
        let (claimed, removed) = (claimer.join().unwrap(), remover.join().unwrap());
        match (&claimed, &removed) {
            // The claim came first: the remove saw it.
            (Ok(_), Err(NetPoolError::InUse { .. })) => {
                assert_eq!(keys_under(&s, NETWORKS).len(), 1);
                assert_eq!(keys_under(&s, LEASES).len(), 1);
            }
            // The remove came first: the claim found the network gone, and left nothing.
            (Err(NetPoolError::NotFound(_)), Ok(_)) => {
                assert!(keys_under(&s, NETWORKS).is_empty());
                assert!(keys_under(&s, LEASES).is_empty());
                assert!(keys_under(&s, NETMACS).is_empty());
            }
            other => panic!("round {round}: {other:?}"),
        }
    }
}

#[test]
fn a_removed_hosts_claims_are_released_with_it() {
    let s = pool();
    let a = create_network(&s, auto("default", "a".repeat(64), "a")).unwrap();
    let b = create_network(&s, auto("default", "b".repeat(64), "b")).unwrap();
    // More claims than one transaction releases.
    for i in 0..40u8 {
        let net = if i % 2 == 0 { &a } else { &b };
        let l = lease("h2", &format!("c{i}"), &format!("02:00:00:00:01:{i:02x}"));
        claim(&s, net, Ipv4Addr::new(10, 210, i % 2, i + 2), &l).unwrap();
    }
    claim(
        &s,
        &a,
        ip("10.210.0.200"),
        &lease("h3", "keep", "02:00:00:00:02:00"),
    )
    .unwrap();
    assert_eq!(release_host(&s, "h2").unwrap(), 40);
    assert_eq!(release_host(&s, "h2").unwrap(), 0);
    let left = claims(&s).unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].3.host, "h3");
    assert_eq!(
        keys_under(&s, NETMACS),
        vec![mac_key(a.id(), "02:00:00:00:02:00")]
    );
    // `pier host rm` does it: the host's records and its claims go, and the removed
    // host (its daemon may still run) claims no more.
    put_member(&s, "h3", "10.0.0.3");
    crate::member::remove(&s, "h3", false).unwrap();
    assert!(claims(&s).unwrap().is_empty());
    assert!(keys_under(&s, NETMACS).is_empty());
    let e = claim(
        &s,
        &a,
        ip("10.210.0.201"),
        &lease("h3", "late", "02:00:00:00:02:01"),
    )
    .unwrap_err();
    assert!(
        matches!(&e, NetPoolError::HostNotInPool(h) if h == "h3"),
        "{e}"
    );
    assert!(e.to_string().contains("pier host rm"), "{e}");
    assert!(claims(&s).unwrap().is_empty());
    // The networks stay, free to remove.
    remove_network(&s, "default", a.id()).unwrap();
    remove_network(&s, "default", b.id()).unwrap();
}

fn member(id: &str, address: &str) -> MemberRecord {
    MemberRecord {
        id: id.into(),
        address: address.into(),
        cluster_addr: format!("{address}:7443"),
        etcd_client_url: None,
        joined: 1,
        signs: false,
    }
}

fn put_member(s: &MemStore, id: &str, address: &str) {
    let mut b = Batch::new();
    b.put_json(TABLE, member_key(id), &member(id, address));
    b.commit(s).unwrap();
}

#[test]
fn the_view_follows_the_watch_and_says_what_each_host_should_forward() {
    // Host h3 has a host record but no member record yet.
    let s = pool();
    put_member(&s, "h1", "10.251.0.1");
    put_member(&s, "h2", "10.251.0.2");
    let net = create_network(&s, auto("default", "a".repeat(64), "ov")).unwrap();
    let id = net.id().to_string();
    claim(
        &s,
        &net,
        ip("10.210.0.2"),
        &lease("h1", "c1", "02:00:00:00:00:01"),
    )
    .unwrap();
    let mut view = OverlayView::read(&s).unwrap();
    assert_eq!(view.revision, s.revision().unwrap());
    assert_eq!(view.networks.len(), 1);
    assert_eq!(view.vteps["h2"], ip("10.251.0.2"));
    let mut watch = s.watch(TABLE, "", view.revision + 1).unwrap();
    let mut follow = |view: &mut OverlayView| {
        let mut changed = false;
        while let Some(ev) = watch.try_next() {
            changed |= view.apply(&ev.unwrap()).unwrap();
        }
        changed
    };

    // h2 sees h1's endpoint; h1 sees nothing of its own.
    let mac1 = [2, 0, 0, 0, 0, 1];
    let d = desired(&view, &id, "h2");
    assert_eq!(d.flood, [ip("10.251.0.1")].into());
    assert_eq!(d.fdb, [(mac1, ip("10.251.0.1"))].into());
    assert_eq!(d.neigh, [(ip("10.210.0.2"), mac1)].into());
    assert_eq!(desired(&view, &id, "h1"), Desired::default());

    // An endpoint on a host with no member record yet: skipped, and said so.
    claim(
        &s,
        &net,
        ip("10.210.0.3"),
        &lease("h3", "c3", "02:00:00:00:00:03"),
    )
    .unwrap();
    assert!(follow(&mut view));
    let d = desired(&view, &id, "h2");
    assert_eq!(d.skipped, vec![("h3".to_string(), ip("10.210.0.3"))]);
    assert_eq!(d.neigh.len(), 1);
    put_member(&s, "h3", "10.251.0.3");
    assert!(follow(&mut view));
    let d = desired(&view, &id, "h2");
    assert!(d.skipped.is_empty());
    assert_eq!(d.flood, [ip("10.251.0.1"), ip("10.251.0.3")].into());

    // The address moves from h1 to h2: h2 drops its entries, h1 gets them.
    assert!(release(&s, &id, ip("10.210.0.2"), &lease("h1", "c1", "")).unwrap());
    claim(
        &s,
        &net,
        ip("10.210.0.2"),
        &lease("h2", "c2", "02:00:00:00:00:02"),
    )
    .unwrap();
    assert!(follow(&mut view));
    let d = desired(&view, &id, "h2");
    assert_eq!(d.flood, [ip("10.251.0.3")].into());
    assert!(!d.neigh.contains_key(&ip("10.210.0.2")));
    let d = desired(&view, &id, "h1");
    assert_eq!(d.neigh[&ip("10.210.0.2")], [2, 0, 0, 0, 0, 2]);
    assert_eq!(d.fdb[&[2, 0, 0, 0, 0, 2]], ip("10.251.0.2"));

    // Other networks' claims and other keys do not leak in; a read from scratch agrees.
    let other = create_network(&s, auto("default", "b".repeat(64), "other")).unwrap();
    claim(
        &s,
        &other,
        ip("10.210.1.2"),
        &lease("h3", "c4", "02:00:00:00:00:04"),
    )
    .unwrap();
    s.commit(vec![Op::Put {
        table: TABLE,
        key: "instances/default/x".into(),
        value: b"{}".to_vec(),
    }])
    .unwrap();
    follow(&mut view);
    assert_eq!(view.leases_of(&id).count(), 2);
    assert_eq!(desired(&view, &id, "h1").neigh.len(), 2);
    let fresh = OverlayView::read(&s).unwrap();
    assert_eq!(fresh.revision, view.revision);
    assert_eq!(fresh.leases, view.leases);
    assert_eq!(fresh.vteps, view.vteps);
    assert_eq!(
        fresh.networks.keys().collect::<Vec<_>>(),
        view.networks.keys().collect::<Vec<_>>()
    );

    // A member gone: its tunnel end is gone from the view, and its endpoints skipped.
    s.commit(vec![Op::Delete {
        table: TABLE,
        key: member_key("h3"),
    }])
    .unwrap();
    assert!(follow(&mut view));
    assert!(!view.vteps.contains_key("h3"));
    assert_eq!(desired(&view, &id, "h1").skipped.len(), 1);
}
