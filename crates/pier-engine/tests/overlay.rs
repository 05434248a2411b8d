//! Networks across the pool in the engine test tier: two members ("h1", "h2"), each a
//! `Networks` over its own store and fake host, sharing one `FaultyStore` as the pool's
//! store. Pool create and remove, the mirror on the other member, addresses claimed in
//! the pool (racing attaches on both members, failures at each step), the overlay sync
//! (forwarding entries and names of the other member's endpoints) and its repairs.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::str::FromStr;
use std::sync::Arc;

use pier_api::containers::{ContainerCreate, ContainerInspect, ContainerState, ContainerStatus};
use pier_api::networks::{NetworkCreate, NetworkScope};
use pier_api::{Digest, ErrorKind, ProjectName};
use pier_cluster::member::{member_key, MemberRecord};
use pier_cluster::networks::{self as pool, OverlayView, PoolLease};
use pier_cluster::scheduler::{keys, HostRecord, HostState};
use pier_engine::host::net::fake::{CallKind, FakeFirewall, FakeLink, FakeNetHost, Fault};
use pier_engine::host::net::FdbEntry;
use pier_engine::instances::record;
use pier_engine::networks::Networks;
use pier_engine::{Caller, EngineError, RequestContext};
use pier_net::names::HostNames;
use pier_store::{Batch, FaultyStore, MemStore, Store, Table};

const VTEP1: Ipv4Addr = Ipv4Addr::new(10, 251, 0, 1);
const VTEP2: Ipv4Addr = Ipv4Addr::new(10, 251, 0, 2);

struct Member {
    host_id: String,
    db: Arc<MemStore>,
    host: Arc<FakeNetHost>,
    fw: Arc<FakeFirewall>,
    nets: Arc<Networks>,
    _dir: tempfile::TempDir,
}

fn cx() -> RequestContext {
    RequestContext::new(ProjectName::default(), Caller::Local { uid: 0, pid: None })
}

/// Member `id` at `vtep` of the pool whose store is `pool`, with its default network.
async fn member(pool: &Arc<FaultyStore>, id: &str, vtep: Ipv4Addr) -> Member {
    let dir = tempfile::tempdir().unwrap();
    let db = Arc::new(MemStore::default());
    let (host, fw) = (FakeNetHost::new(), FakeFirewall::new());
    let nets = Networks::new(
        dir.path(),
        HostNames::for_root(dir.path(), false),
        db.clone(),
        host.clone(),
        fw.clone(),
    )
    .unwrap();
    nets.set_pool_identity(id, vtep);
    nets.set_pool_store(Some(pool.clone()));
    nets.reconcile(&ProjectName::default()).await.unwrap();
    let mut b = Batch::new();
    b.put_json(
        Table::Cluster,
        member_key(id),
        &MemberRecord {
            id: id.into(),
            address: vtep.to_string(),
            cluster_addr: format!("{vtep}:7443"),
            etcd_client_url: None,
            joined: 1,
            signs: false,
        },
    );
    b.commit(pool.as_ref()).unwrap();
    pool.commit(vec![keys::put_host(&HostRecord {
        id: id.into(),
        labels: Default::default(),
        state: HostState::Up,
        capacity: Default::default(),
    })])
    .unwrap();
    Member {
        host_id: id.into(),
        db,
        host,
        fw,
        nets: Arc::new(nets),
        _dir: dir,
    }
}

async fn two() -> (Arc<FaultyStore>, Member, Member) {
    let p = Arc::new(FaultyStore::default());
    let h1 = member(&p, "h1", VTEP1).await;
    let h2 = member(&p, "h2", VTEP2).await;
    (p, h1, h2)
}

/// A network of one host (`-d bridge`), even in a pool.
fn bridge_req(name: &str) -> NetworkCreate {
    NetworkCreate {
        driver: Some("bridge".into()),
        ..req(name)
    }
}

fn req(name: &str) -> NetworkCreate {
    NetworkCreate {
        name: name.into(),
        ..Default::default()
    }
}

async fn sync(m: &Member, p: &FaultyStore) -> pier_engine::networks::OverlaySync {
    let view = OverlayView::read(p).unwrap();
    m.nets.sync_overlay(&view).await.unwrap()
}

/// A container on `network` as `create` records it on member `m`.
fn container(m: &Member, name: &str, network: &str) -> ContainerInspect {
    let hex: String = name.bytes().map(|b| format!("{b:02x}")).collect();
    let id = format!("{hex:0<64}");
    let req = ContainerCreate {
        image: "busybox".into(),
        network: Some(network.into()),
        ..Default::default()
    };
    let networks = m
        .nets
        .endpoints_for_create(&ProjectName::default(), &req)
        .unwrap();
    let c = ContainerInspect {
        id,
        name: name.into(),
        project: ProjectName::default(),
        image: "busybox".into(),
        image_id: Digest::from_str(&format!("sha256:{}", "0".repeat(64))).unwrap(),
        created: String::new(),
        command: Vec::new(),
        config: req,
        state: ContainerState::default(),
        log_path: String::new(),
        networks,
        ports: Vec::new(),
        mounts: Vec::new(),
        vm: None,
    };
    save(m, &c);
    c
}

fn save(m: &Member, c: &ContainerInspect) {
    let mut b = Batch::new();
    record::put(&mut b, &record::Instance::new(c.clone()));
    b.commit(m.db.as_ref()).unwrap();
}

async fn start(m: &Member, c: &mut ContainerInspect) -> Result<(), EngineError> {
    start_on(&m.nets, &m.db, c).await
}

async fn start_on(
    nets: &Networks,
    db: &MemStore,
    c: &mut ContainerInspect,
) -> Result<(), EngineError> {
    let a = nets.attach(c, &[], None).await?;
    for (name, ep) in a.endpoints {
        c.networks.insert(name, ep);
    }
    c.state.status = ContainerStatus::Running;
    let mut b = Batch::new();
    record::put(&mut b, &record::Instance::new(c.clone()));
    b.commit(db).unwrap();
    Ok(())
}

/// Starts every container of `cs` on member `m` at once.
fn start_all(
    m: &Member,
    cs: Vec<ContainerInspect>,
) -> Vec<tokio::task::JoinHandle<ContainerInspect>> {
    cs.into_iter()
        .map(|mut c| {
            let (nets, db) = (m.nets.clone(), m.db.clone());
            tokio::spawn(async move {
                start_on(&nets, &db, &mut c).await.unwrap();
                c
            })
        })
        .collect()
}

async fn stop(m: &Member, c: &mut ContainerInspect) {
    m.nets.detach(c).await;
    for ep in c.networks.values_mut() {
        ep.ip_address = None;
        ep.interface = None;
        ep.mac_address = None;
    }
    c.state.status = ContainerStatus::Exited;
    save(m, c);
}

fn ip_of(c: &ContainerInspect, network: &str) -> Ipv4Addr {
    c.networks[network].ip_address.unwrap().addr()
}

/// The pool's claims: (network ID, address) -> claim.
fn claims(p: &FaultyStore) -> Vec<(String, Ipv4Addr, PoolLease)> {
    pool::claims(p)
        .unwrap()
        .into_iter()
        .map(|(n, ip, _, l)| (n, ip, l))
        .collect()
}

fn journal(m: &Member) -> Vec<String> {
    m.db.list(Table::Leases, "")
        .unwrap()
        .into_iter()
        .map(|(k, _)| k)
        .collect()
}

fn assert_kind<T: std::fmt::Debug>(r: Result<T, EngineError>, kind: ErrorKind, says: &str) {
    let e = r.unwrap_err();
    assert_eq!(e.kind(), kind, "{}", e.message());
    assert!(
        e.message().contains(says),
        "{:?} lacks {says:?}",
        e.message()
    );
}

#[tokio::test]
async fn a_pool_network_is_made_once_for_the_pool_and_mirrored_with_its_link_on_each_member() {
    let (p, h1, h2) = two().await;
    let ov = h1.nets.create(&cx(), req("ov")).await.unwrap();
    assert_eq!(ov.scope, NetworkScope::Pool);
    assert_eq!(ov.driver, "overlay");
    assert_eq!((ov.vni, ov.mtu), (Some(pool::VNI_MIN), 1450));
    assert_eq!(ov.subnet.to_string(), "10.210.0.0/24");
    // h1's link: the VNI, its own tunnel end, a port of the network's bridge.
    assert!(h1.nets.owns_interface(&ov.bridge));
    let links = h1.host.model().links;
    let (vname, link) = links
        .iter()
        .find(|(_, l)| matches!(l, FakeLink::Vxlan { .. }))
        .expect("a VXLAN link on h1");
    match link {
        FakeLink::Vxlan {
            vni, local, master, ..
        } => {
            assert_eq!((*vni, *local), (pool::VNI_MIN, VTEP1));
            assert_eq!(master.as_deref(), Some(ov.bridge.as_str()));
        }
        _ => unreachable!(),
    }
    assert!(h1
        .fw
        .model()
        .networks
        .iter()
        .any(|n| n.overlay.as_deref() == Some(vname.as_str())));
    // h2 has it after a sync: same ID, VNI and subnet, its own bridge and tunnel end.
    assert_eq!(h2.nets.list(&cx()).unwrap().len(), 1);
    let r = sync(&h2, &p).await;
    assert_eq!(r.mirrored, 1);
    let m = h2.nets.get(&ProjectName::default(), "ov").unwrap();
    assert_eq!(
        (m.id.as_str(), m.vni, m.subnet),
        (ov.id.as_str(), ov.vni, ov.subnet)
    );
    let l2 = h2.host.model().links;
    assert!(l2.values().any(
        |l| matches!(l, FakeLink::Vxlan { vni, local, .. } if *vni == pool::VNI_MIN && *local == VTEP2)
    ));
    // A second sync changes nothing; a name taken in the pool is refused on h2 too.
    assert_eq!(sync(&h2, &p).await.mirrored, 0);
    assert_kind(
        h2.nets.create(&cx(), req("ov")).await,
        ErrorKind::Conflict,
        "already exists",
    );
    // Racing creates on both members get their own VNIs and subnets.
    let ctx = cx();
    let (a, b) = tokio::join!(
        h1.nets.create(&ctx, req("a")),
        h2.nets.create(&ctx, req("b"))
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    let vnis: BTreeSet<_> = [ov.vni, a.vni, b.vni].into_iter().collect();
    assert_eq!(vnis.len(), 3);
    assert!(!a.subnet.overlaps(&b.subnet) && !a.subnet.overlaps(&ov.subnet));
    // A bridge network stays on its host.
    let local = h1.nets.create(&cx(), bridge_req("loc")).await.unwrap();
    assert_eq!(local.scope, NetworkScope::Local);
    sync(&h2, &p).await;
    assert!(h2.nets.get(&ProjectName::default(), "loc").is_err());
    assert!(h2.nets.get(&ProjectName::default(), "a").is_ok());
}

#[tokio::test]
async fn what_a_pool_network_cannot_be_is_refused_saying_what_to_do() {
    let (_p, h1, _h2) = two().await;
    let with = |f: fn(&mut NetworkCreate)| {
        let mut r = req("x");
        f(&mut r);
        r
    };
    let cases: [(NetworkCreate, &str); 4] = [
        (
            with(|r| {
                r.ipv6 = true;
                r.subnet6 = Some("fd00:9::/64".parse().unwrap());
            }),
            "IPv4 only",
        ),
        (
            with(|r| {
                r.options
                    .insert("com.docker.network.bridge.name".into(), "br9".into());
            }),
            "only mtu",
        ),
        (
            with(|r| {
                r.options.insert("mtu".into(), "9000".into());
            }),
            "at most 1450",
        ),
        (
            with(|r| {
                r.driver = Some("macvlan".into());
            }),
            "overlay in a pool",
        ),
    ];
    for (r, says) in cases {
        assert_kind(
            h1.nets.create(&cx(), r).await,
            ErrorKind::InvalidInput,
            says,
        );
    }
    assert!(h1.nets.list(&cx()).unwrap().iter().all(|n| n.name != "x"));
    // Outside a pool, overlay is refused and no driver means bridge.
    let dir = tempfile::tempdir().unwrap();
    let alone = Networks::new(
        dir.path(),
        HostNames::for_root(dir.path(), false),
        Arc::new(MemStore::default()),
        FakeNetHost::new(),
        FakeFirewall::new(),
    )
    .unwrap();
    let r = NetworkCreate {
        driver: Some("overlay".into()),
        ..req("o")
    };
    assert_kind(
        alone.create(&cx(), r).await,
        ErrorKind::InvalidInput,
        "not in a pool",
    );
    assert_eq!(
        alone.create(&cx(), req("b")).await.unwrap().driver,
        "bridge"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_attaches_on_both_members_never_share_an_address_and_stops_release_them() {
    let (p, h1, h2) = two().await;
    h1.nets.create(&cx(), req("ov")).await.unwrap();
    sync(&h2, &p).await;
    const N: usize = 16;
    let cs1: Vec<_> = (0..N)
        .map(|i| container(&h1, &format!("a{i}"), "ov"))
        .collect();
    let cs2: Vec<_> = (0..N)
        .map(|i| container(&h2, &format!("b{i}"), "ov"))
        .collect();
    let (t1, t2) = (start_all(&h1, cs1), start_all(&h2, cs2));
    let (mut cs1, mut cs2) = (Vec::new(), Vec::new());
    for t in t1 {
        cs1.push(t.await.unwrap());
    }
    for t in t2 {
        cs2.push(t.await.unwrap());
    }
    let ips: BTreeSet<Ipv4Addr> = cs1.iter().chain(&cs2).map(|c| ip_of(c, "ov")).collect();
    assert_eq!(ips.len(), 2 * N, "an address given twice");
    let cl = claims(&p);
    assert_eq!(cl.len(), 2 * N);
    for c in &cs1 {
        let (_, _, l) = cl.iter().find(|(_, ip, _)| *ip == ip_of(c, "ov")).unwrap();
        assert_eq!(
            (l.host.as_str(), l.container.as_str()),
            ("h1", c.id.as_str())
        );
        assert_eq!(l.mac, c.networks["ov"].mac_address.unwrap().to_string());
    }
    assert_eq!(journal(&h1).len(), N);
    assert_eq!(journal(&h2).len(), N);
    for c in &mut cs1 {
        stop(&h1, c).await;
    }
    for c in &mut cs2 {
        stop(&h2, c).await;
    }
    assert_eq!(claims(&p), vec![]);
    assert_eq!(journal(&h1), Vec::<String>::new());
    assert_eq!(journal(&h2), Vec::<String>::new());
}

#[tokio::test]
async fn a_plug_failing_at_any_step_leaves_no_claim_and_no_journal() {
    let (p, h1, _h2) = two().await;
    h1.nets.create(&cx(), req("ov")).await.unwrap();
    // The host's steps after the claim.
    for kind in [
        CallKind::Plumb,
        CallKind::AttachToBridge,
        CallKind::CreateNetns,
    ] {
        let mut c = container(&h1, &format!("f{}", kind as usize), "ov");
        h1.host.set_fault(Some(Fault::Kind {
            kind,
            errno: libc::EIO,
        }));
        start(&h1, &mut c).await.unwrap_err();
        h1.host.set_fault(None);
        assert_eq!(claims(&p), vec![], "{kind:?}");
        assert_eq!(journal(&h1), Vec::<String>::new(), "{kind:?}");
    }
    // The pool's store failing the claim: the journal entry goes too.
    let mut c = container(&h1, "g", "ov");
    p.fail_txn(0);
    let e = start(&h1, &mut c).await.unwrap_err();
    assert!(e.message().contains("pool"), "{}", e.message());
    assert_eq!(claims(&p), vec![]);
    assert_eq!(journal(&h1), Vec::<String>::new());
    // No pool store at all: refused with what to do.
    h1.nets.set_pool_store(None);
    assert_kind(
        start(&h1, &mut c).await,
        ErrorKind::Unavailable,
        "pool's store",
    );
    assert_eq!(journal(&h1), Vec::<String>::new());
    h1.nets.set_pool_store(Some(p.clone()));
    start(&h1, &mut c).await.unwrap();
    assert_eq!(claims(&p).len(), 1);
}

#[tokio::test]
async fn the_sync_programs_the_other_members_endpoints_and_names_and_removes_them_after() {
    let (p, h1, h2) = two().await;
    let ov = h1.nets.create(&cx(), req("ov")).await.unwrap();
    sync(&h2, &p).await;
    let mut web = container(&h2, "web", "ov");
    start(&h2, &mut web).await.unwrap();
    let mut cli = container(&h1, "cli", "ov");
    start(&h1, &mut cli).await.unwrap();
    let (wip, wmac) = (
        ip_of(&web, "ov"),
        web.networks["ov"].mac_address.unwrap().octets(),
    );
    let r1 = sync(&h1, &p).await;
    assert_eq!(r1.entries.added, 4);
    let vx1 = h1
        .host
        .model()
        .vxlans()
        .into_iter()
        .next()
        .unwrap()
        .to_string();
    let e1 = h1.host.model().overlay(&vx1).unwrap();
    assert_eq!(
        e1.fdb.into_iter().collect::<BTreeSet<_>>(),
        [
            FdbEntry::flood(VTEP2),
            FdbEntry::remote(wmac, VTEP2),
            FdbEntry::bridge(wmac)
        ]
        .into_iter()
        .collect()
    );
    assert_eq!(e1.neigh, vec![(wip, wmac)]);
    // h1's DNS server answers web's name, short ID, and name.network; h2's cli's.
    assert_eq!(h1.host.dns_lookup(&ov.id, "web"), Some(vec![wip]));
    assert_eq!(h1.host.dns_lookup(&ov.id, "web.ov"), Some(vec![wip]));
    assert_eq!(h1.host.dns_lookup(&ov.id, &web.id[..12]), Some(vec![wip]));
    sync(&h2, &p).await;
    assert_eq!(
        h2.host.dns_lookup(&ov.id, "cli"),
        Some(vec![ip_of(&cli, "ov")])
    );
    // Each member's link has the other's endpoint only.
    let vx2 = h2
        .host
        .model()
        .vxlans()
        .into_iter()
        .next()
        .unwrap()
        .to_string();
    let e2 = h2.host.model().overlay(&vx2).unwrap();
    assert!(e2.fdb.iter().all(|e| e.dst.is_none_or(|d| d == VTEP1)));
    assert!(!e2.neigh.iter().any(|(ip, _)| *ip == wip));
    // Inspect on h1 shows both, each with its host.
    let n = h1.nets.inspect(&cx(), "ov").unwrap();
    assert_eq!(n.containers[&web.id].host.as_deref(), Some("h2"));
    assert_eq!(n.containers[&cli.id].host.as_deref(), Some("h1"));
    // web stops: h1 drops its entries and its name; cli keeps its own.
    stop(&h1, &mut cli).await;
    stop(&h2, &mut web).await;
    sync(&h1, &p).await;
    assert_eq!(h1.host.model().overlay(&vx1).unwrap(), Default::default());
    assert_eq!(h1.host.dns_lookup(&ov.id, "web"), None);
}

/// A crash after the claim, before the container ran: at the next start the journal
/// entry goes (the container is not running) and the sync releases the claim.
#[tokio::test]
async fn a_claim_left_by_a_crash_is_released_after_the_restart() {
    let (p, h1, _h2) = two().await;
    h1.nets.create(&cx(), req("ov")).await.unwrap();
    let mut c = container(&h1, "crashed", "ov");
    start(&h1, &mut c).await.unwrap();
    assert_eq!(claims(&p).len(), 1);
    // The daemon dies; the container never ran.
    c.state.status = ContainerStatus::Exited;
    save(&h1, &c);
    let dir = tempfile::tempdir().unwrap();
    let again = Networks::new(
        dir.path(),
        HostNames::for_root(h1._dir.path(), false),
        h1.db.clone(),
        h1.host.clone(),
        h1.fw.clone(),
    )
    .unwrap();
    again.set_pool_identity("h1", VTEP1);
    again.reconcile(&ProjectName::default()).await.unwrap();
    assert_eq!(journal(&h1), Vec::<String>::new());
    assert_eq!(claims(&p).len(), 1, "released before the store answered");
    again.set_pool_store(Some(p.clone()));
    let r = again
        .sync_overlay(&OverlayView::read(p.as_ref()).unwrap())
        .await
        .unwrap();
    assert_eq!(r.released, 1);
    assert_eq!(claims(&p), vec![]);
    // The mirror and its link survived the restart.
    assert_eq!(h1.host.model().vxlans().len(), 1);
}

#[tokio::test]
async fn a_member_keeps_udp_4789_for_its_tunnels() {
    let (p, h1, _h2) = two().await;
    h1.nets.create(&cx(), req("ov")).await.unwrap();
    let mut c = container(&h1, "p", "ov");
    c.config.publish = vec![pier_api::ports::PortSpec::from_str("4789:80/udp").unwrap()];
    save(&h1, &c);
    assert_kind(start(&h1, &mut c).await, ErrorKind::Conflict, "VXLAN");
    assert_eq!(claims(&p), vec![]);
    // TCP 4789 is any port.
    c.config.publish = vec![pier_api::ports::PortSpec::from_str("4789:80").unwrap()];
    save(&h1, &c);
    start(&h1, &mut c).await.unwrap();
}

#[tokio::test]
async fn a_removed_pool_network_leaves_every_member_and_claims_left_behind_are_released() {
    let (p, h1, h2) = two().await;
    let ov = h1.nets.create(&cx(), req("ov")).await.unwrap();
    sync(&h2, &p).await;
    // A claim of h2 with no journal entry (a crash after the journal's removal).
    let rec = pool::PoolNetworks::read(p.as_ref()).unwrap().networks[&ov.id].clone();
    let stray = PoolLease {
        host: h2.host_id.clone(),
        project: "default".into(),
        container: "f".repeat(64),
        name: "gone".into(),
        aliases: vec![],
        short_id: "f".repeat(12),
        mac: "02:42:0a:d2:00:09".into(),
        ifname: "eth0".into(),
    };
    pool::claim(p.as_ref(), &rec, Ipv4Addr::new(10, 210, 0, 9), &stray).unwrap();
    assert_kind(h1.nets.remove(&cx(), "ov").await, ErrorKind::Conflict, "h2");
    let r = sync(&h2, &p).await;
    assert_eq!(r.released, 1);
    assert_eq!(claims(&p), vec![]);
    h1.nets.remove(&cx(), "ov").await.unwrap();
    assert!(h1.host.model().vxlans().is_empty());
    let r = sync(&h2, &p).await;
    assert_eq!(r.unmirrored, 1);
    assert!(h2.nets.get(&ProjectName::default(), "ov").is_err());
    assert!(h2.host.model().vxlans().is_empty());
    assert!(h2.fw.model().networks.iter().all(|n| n.overlay.is_none()));
    // The VNI is free again.
    let again = h2.nets.create(&cx(), req("ov")).await.unwrap();
    assert_eq!(again.vni, Some(pool::VNI_MIN));
}

#[tokio::test]
async fn a_member_mirrors_a_pool_network_on_demand_before_its_sync_has_followed_it() {
    let (p, h1, h2) = two().await;
    let project = ProjectName::default();
    let od = h1.nets.create(&cx(), req("od")).await.unwrap();
    let byid = h1.nets.create(&cx(), req("byid")).await.unwrap();
    let local = h1.nets.create(&cx(), bridge_req("loc")).await.unwrap();
    // h2's sync has not run: it has none of them, and a lookup says not found.
    assert_kind(h2.nets.get(&project, "od"), ErrorKind::NotFound, "od");
    // Asked for by name (a placement's start or connect), it is mirrored there and then.
    h2.nets.mirror_on_demand(&project, "od").await;
    let m = h2.nets.get(&project, "od").unwrap();
    assert_eq!(
        (m.id.as_str(), m.scope, m.vni, m.subnet),
        (od.id.as_str(), NetworkScope::Pool, od.vni, od.subnet)
    );
    assert!(h2.host.model().links.values().any(
        |l| matches!(l, FakeLink::Vxlan { vni, local, .. } if Some(*vni) == od.vni && *local == VTEP2)
    ));
    // By full ID too; a name the pool does not have, a network local to h1, and the
    // modes that are no network leave h2 as it was.
    h2.nets.mirror_on_demand(&project, &byid.id).await;
    assert_eq!(h2.nets.get(&project, "byid").unwrap().id, byid.id);
    for name in [
        "nope",
        local.name.as_str(),
        &local.id,
        "none",
        "host",
        "bridge",
    ] {
        h2.nets.mirror_on_demand(&project, name).await;
    }
    let mut names: Vec<String> = h2
        .nets
        .list(&cx())
        .unwrap()
        .into_iter()
        .map(|n| n.name)
        .collect();
    names.sort();
    assert_eq!(names, ["bridge", "byid", "od"]);
    // Another project's network of that name is not this project's.
    let other = ProjectName::try_from("other".to_string()).unwrap();
    h2.nets.mirror_on_demand(&other, "od").await;
    assert_kind(h2.nets.get(&other, "od"), ErrorKind::NotFound, "od");
    // A container on h2 then joins it and claims its address in the pool; the next
    // sync finds nothing left to mirror.
    let mut c = container(&h2, "c1", "od");
    start(&h2, &mut c).await.unwrap();
    let ip = ip_of(&c, "od");
    assert!(claims(&p)
        .iter()
        .any(|(net, a, l)| *net == od.id && *a == ip && l.host == "h2"));
    assert_eq!(sync(&h2, &p).await.mirrored, 0);
    // Without the pool's store (cut off), nothing is tried: the lookup says not found.
    let later = h1.nets.create(&cx(), req("later")).await.unwrap();
    h2.nets.set_pool_store(None);
    h2.nets.mirror_on_demand(&project, &later.name).await;
    assert_kind(h2.nets.get(&project, "later"), ErrorKind::NotFound, "later");
}

#[tokio::test]
async fn a_rename_moves_the_name_on_this_host_and_in_the_pool_and_the_sync_mends_a_failed_one() {
    let (p, h1, h2) = two().await;
    let ov = h1.nets.create(&cx(), req("ov")).await.unwrap();
    sync(&h2, &p).await;
    let mut web = container(&h1, "web", "ov");
    start(&h1, &mut web).await.unwrap();
    let wip = ip_of(&web, "ov");
    sync(&h2, &p).await;
    assert_eq!(h2.host.dns_lookup(&ov.id, "web"), Some(vec![wip]));
    // Renamed (the record first, as the instance service does): h1's DNS server answers
    // the new name and no longer the old one, the claim carries it, and h2 follows.
    web.name = "site".into();
    save(&h1, &web);
    h1.nets.renamed(&web).await;
    assert_eq!(h1.host.dns_lookup(&ov.id, "site"), Some(vec![wip]));
    assert_eq!(h1.host.dns_lookup(&ov.id, "web"), None);
    assert_eq!(h1.host.dns_lookup(&ov.id, &web.id[..12]), Some(vec![wip]));
    let named = |p: &FaultyStore| {
        claims(p)
            .into_iter()
            .find(|(_, a, _)| *a == wip)
            .map(|(_, _, l)| l.name)
    };
    assert_eq!(named(&p).as_deref(), Some("site"));
    sync(&h2, &p).await;
    assert_eq!(h2.host.dns_lookup(&ov.id, "site"), Some(vec![wip]));
    assert_eq!(h2.host.dns_lookup(&ov.id, "web"), None);
    // A rename while the pool's store is away changes the names here only; the next
    // sync (the store back) names the claim after the instance.
    web.name = "www".into();
    save(&h1, &web);
    h1.nets.set_pool_store(None);
    h1.nets.renamed(&web).await;
    h1.nets.set_pool_store(Some(p.clone()));
    assert_eq!(h1.host.dns_lookup(&ov.id, "www"), Some(vec![wip]));
    assert_eq!(named(&p).as_deref(), Some("site"));
    sync(&h1, &p).await;
    assert_eq!(named(&p).as_deref(), Some("www"));
    sync(&h2, &p).await;
    assert_eq!(h2.host.dns_lookup(&ov.id, "www"), Some(vec![wip]));
    assert_eq!(h2.host.dns_lookup(&ov.id, "site"), None);
}

#[tokio::test]
async fn a_running_endpoints_lost_claim_is_made_again_unless_another_took_the_address() {
    let (p, h1, _h2) = two().await;
    let ov = h1.nets.create(&cx(), req("ov")).await.unwrap();
    let mut web = container(&h1, "web", "ov");
    start(&h1, &mut web).await.unwrap();
    let mut idle = container(&h1, "idle", "ov");
    start(&h1, &mut idle).await.unwrap();
    stop(&h1, &mut idle).await;
    let wip = ip_of(&web, "ov");
    let held = claims(&p);
    assert_eq!(held.len(), 1);
    let (_, _, before) = held[0].clone();
    // Lost from the pool's store: the next pass claims it again, as it was.
    assert!(pool::release(p.as_ref(), &ov.id, wip, &before).unwrap());
    let r = sync(&h1, &p).await;
    assert_eq!((r.reclaimed, r.released), (1, 0));
    assert_eq!(claims(&p), vec![(ov.id.clone(), wip, before.clone())]);
    assert_eq!(sync(&h1, &p).await.reclaimed, 0);
    // Lost, and taken by another host's instance meanwhile: left to it (and said).
    assert!(pool::release(p.as_ref(), &ov.id, wip, &before).unwrap());
    let rec = OverlayView::read(p.as_ref()).unwrap().networks[&ov.id].clone();
    let other = PoolLease {
        host: "h2".into(),
        container: "f".repeat(64),
        name: "intruder".into(),
        mac: "02:42:0a:d2:00:99".into(),
        ..before.clone()
    };
    pool::claim(p.as_ref(), &rec, wip, &other).unwrap();
    assert_eq!(sync(&h1, &p).await.reclaimed, 0);
    assert_eq!(claims(&p), vec![(ov.id.clone(), wip, other)]);
}

/// A pass can wait for a create or remove to finish (they hold the pass off), and then
/// runs with a view from before it: it neither removes the new mirror nor makes the
/// removed one again.
#[tokio::test]
async fn a_pass_with_a_view_from_before_a_create_or_remove_leaves_it_be() {
    let (p, h1, _h2) = two().await;
    let before = OverlayView::read(p.as_ref()).unwrap();
    let ov = h1.nets.create(&cx(), req("ov")).await.unwrap();
    let r = h1.nets.sync_overlay(&before).await.unwrap();
    assert_eq!((r.mirrored, r.unmirrored), (0, 0));
    assert_eq!(
        h1.nets.get(&ProjectName::default(), "ov").unwrap().id,
        ov.id
    );
    assert_eq!(h1.host.model().vxlans().len(), 1);
    let with = OverlayView::read(p.as_ref()).unwrap();
    h1.nets.remove(&cx(), "ov").await.unwrap();
    let r = h1.nets.sync_overlay(&with).await.unwrap();
    assert_eq!((r.mirrored, r.unmirrored), (0, 0));
    assert_kind(
        h1.nets.get(&ProjectName::default(), "ov"),
        ErrorKind::NotFound,
        "ov",
    );
    assert!(h1.host.model().vxlans().is_empty());
}
