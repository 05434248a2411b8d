//! The network control plane in the engine test tier: `Networks` over `MemStore` and
//! the recording fakes of `host::net`, without root. Failure injection at every step of
//! create, remove, attach, plug and unplug checks that nothing is left; races for the
//! last address and the same host port check that the store keeps them unique.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::path::Path;
use std::str::FromStr;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use pier_api::containers::{ContainerCreate, ContainerInspect, ContainerState, ContainerStatus};
use pier_api::networks::{NetworkCreate, NetworkInspect, NetworkMode};
use pier_api::ports::{PortSpec, Proto};
use pier_api::{Digest, ErrorKind, ProjectName};
use pier_engine::host::net::fake::{
    CallKind, FakeFirewall, FakeLink, FakeNetHost, Fault, FwNet, NetCall, NetModel,
};
use pier_engine::instances::record;
use pier_engine::networks::{Networks, DEFAULT_NETWORK};
use pier_engine::{Caller, EngineError, RequestContext};
use pier_net::names::HostNames;
use pier_net::nft::FwPort;
use pier_store::{Batch, FaultyStore, Store, Table};

// ---- a store that can fail or hold back ------------------------------------------------

/// A request in project `p` by a local caller (the engine tier's tests ask as uid 0).
fn cx(p: &ProjectName) -> RequestContext {
    RequestContext::new(p.clone(), Caller::Local { uid: 0, pid: None })
}

/// A barrier that gives up after a while (so that a test whose code serializes what it
/// should race fails instead of hanging).
struct Gate {
    table: Table,
    prefix: String,
    waiting: Mutex<(usize, usize)>,
    cv: Condvar,
    met: Mutex<bool>,
}

impl Gate {
    /// Holds the first `n` reads of keys under `prefix` of `table` until all `n` came.
    fn new(table: Table, prefix: &str, n: usize) -> Gate {
        Gate {
            table,
            prefix: prefix.to_string(),
            waiting: Mutex::new((n, 0)),
            cv: Condvar::new(),
            met: Mutex::new(false),
        }
    }

    fn pass(&self, table: Table, key: &str) {
        if table != self.table || !key.starts_with(&self.prefix) {
            return;
        }
        let mut w = self.waiting.lock().unwrap();
        if w.0 == 0 {
            return;
        }
        w.0 -= 1;
        w.1 += 1;
        if w.0 == 0 {
            *self.met.lock().unwrap() = true;
            self.cv.notify_all();
            return;
        }
        let (w, _) = self
            .cv
            .wait_timeout_while(w, Duration::from_secs(5), |w| w.0 > 0)
            .unwrap();
        drop(w);
    }

    /// Whether every racer got to the read before any went on.
    fn met(&self) -> bool {
        *self.met.lock().unwrap()
    }
}

/// Holds the store's reads at `g` (None: no more).
fn hold_reads(db: &FaultyStore, g: Option<Arc<Gate>>) {
    db.on_read(g.map(|g| Arc::new(move |t: Table, k: &str| g.pass(t, k)) as pier_store::ReadHook));
}

// ---- the environment -------------------------------------------------------------------

struct Env {
    db: Arc<FaultyStore>,
    host: Arc<FakeNetHost>,
    fw: Arc<FakeFirewall>,
    nets: Arc<Networks>,
    project: ProjectName,
    dir: tempfile::TempDir,
}

fn env_on(db: Arc<FaultyStore>, host: Arc<FakeNetHost>, fw: Arc<FakeFirewall>) -> Env {
    let dir = tempfile::tempdir().unwrap();
    let nets = Networks::new(
        dir.path(),
        HostNames::for_root(dir.path(), false),
        db.clone(),
        host.clone(),
        fw.clone(),
    )
    .unwrap();
    Env {
        db,
        host,
        fw,
        nets: Arc::new(nets),
        project: ProjectName::default(),
        dir,
    }
}

/// A fresh environment, with the default network made as at a daemon's start.
async fn env() -> Env {
    let e = env_on(Default::default(), FakeNetHost::new(), FakeFirewall::new());
    e.nets.reconcile(&e.project).await.unwrap();
    e
}

fn net_req(name: &str, subnet: Option<&str>) -> NetworkCreate {
    NetworkCreate {
        name: name.into(),
        subnet: subnet.map(|s| s.parse().unwrap()),
        ..Default::default()
    }
}

async fn mknet(e: &Env, name: &str, subnet: &str) -> NetworkInspect {
    e.nets
        .create(&cx(&e.project), net_req(name, Some(subnet)))
        .await
        .unwrap()
}

fn ports(specs: &[&str]) -> Vec<PortSpec> {
    specs
        .iter()
        .map(|s| PortSpec::from_str(s).unwrap())
        .collect()
}

fn req(network: &str) -> ContainerCreate {
    ContainerCreate {
        image: "busybox".into(),
        network: Some(network.into()),
        ..Default::default()
    }
}

/// A container as `create` records it, on the networks `req` asks for.
fn container(e: &Env, name: &str, req: ContainerCreate) -> ContainerInspect {
    let hex: String = name.bytes().map(|b| format!("{b:02x}")).collect();
    let id = format!("{hex:0<64}");
    let networks = e.nets.endpoints_for_create(&e.project, &req).unwrap();
    let c = ContainerInspect {
        id,
        name: name.into(),
        project: e.project.clone(),
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
    save(e, &c);
    c
}

fn save(e: &Env, c: &ContainerInspect) {
    let mut b = Batch::new();
    record::put(&mut b, &record::Instance::new(c.clone()));
    b.commit(e.db.as_ref()).unwrap();
}

/// Starts `c`'s networking as the container lifecycle does and records it running.
async fn start(e: &Env, c: &mut ContainerInspect) -> Result<(), EngineError> {
    let a = e.nets.attach(c, &[], None).await?;
    for (name, ep) in a.endpoints {
        c.networks.insert(name, ep);
    }
    c.ports = a.ports;
    c.state.status = ContainerStatus::Running;
    save(e, c);
    Ok(())
}

/// Stops `c`'s networking as the container lifecycle does and records it exited.
async fn stop(e: &Env, c: &mut ContainerInspect) {
    e.nets.detach(c).await;
    for ep in c.networks.values_mut() {
        ep.ip_address = None;
        ep.interface = None;
        ep.mac_address = None;
    }
    c.ports.clear();
    c.state.status = ContainerStatus::Exited;
    save(e, c);
}

fn ip_of(c: &ContainerInspect, network: &str) -> Ipv4Addr {
    c.networks[network].ip_address.unwrap().addr()
}

/// What must be as it was after a failed operation: the host model, the firewall's
/// rules and the store's networks, leases and port reservations.
#[derive(Debug, PartialEq)]
struct Snapshot {
    host: NetModel,
    fw_nets: BTreeSet<FwNet>,
    fw_ports: Vec<FwPort>,
    store: BTreeMap<String, Vec<u8>>,
}

fn snapshot(e: &Env) -> Snapshot {
    let mut store = BTreeMap::new();
    for (t, prefix) in [
        (Table::Networks, ""),
        (Table::Leases, ""),
        (Table::Meta, "hostport/"),
        (Table::Meta, "ports/"),
    ] {
        for (k, v) in e.db.list(t, prefix).unwrap() {
            store.insert(format!("{t}/{k}"), v);
        }
    }
    let fw = e.fw.model();
    Snapshot {
        host: e.host.model(),
        fw_nets: fw.networks,
        fw_ports: fw.ports,
        store,
    }
}

fn leases(e: &Env) -> Vec<String> {
    e.db.list(Table::Leases, "")
        .unwrap()
        .into_iter()
        .map(|(k, _)| k)
        .collect()
}

fn port_keys(e: &Env) -> Vec<String> {
    e.db.list(Table::Meta, "hostport/")
        .unwrap()
        .into_iter()
        .map(|(k, _)| k)
        .collect()
}

fn assert_kind(r: Result<impl std::fmt::Debug, EngineError>, kind: ErrorKind, says: &str) {
    let e = r.expect_err("should fail");
    assert_eq!(e.kind(), kind, "{}", e.message());
    assert!(
        e.message().contains(says),
        "{:?} lacks {says:?}",
        e.message()
    );
}

/// Runs `op` once per fallible call it makes (on the host, then the firewall, then the
/// store), failing that call, on a fresh environment from `setup` each time; checks
/// that each run fails and leaves everything as before. Returns how many runs.
async fn fail_every_step<S, SF, O, OF, T>(setup: S, op: O) -> usize
where
    S: Fn() -> SF,
    SF: std::future::Future<Output = (Env, ContainerInspect)>,
    O: Fn(Arc<Networks>, ContainerInspect) -> OF,
    OF: std::future::Future<Output = Result<T, EngineError>>,
{
    // Count the calls of a run that succeeds.
    let (e, c) = setup().await;
    e.host.clear_calls();
    e.host.set_fault(None);
    e.fw.set_fault(None);
    e.db.heal();
    let t0 = e.db.txns();
    op(e.nets.clone(), c)
        .await
        .map(drop)
        .expect("the run without faults succeeds");
    let (host_n, fw_n, txn_n) = (
        e.host.fallible_calls(),
        e.fw.fallible_calls(),
        e.db.txns() - t0,
    );
    assert!(host_n + fw_n + txn_n > 0);
    let mut runs = 0;
    for (which, count) in [(0, host_n), (1, fw_n), (2, txn_n)] {
        for n in 0..count {
            let (e, c) = setup().await;
            let before = snapshot(&e);
            match which {
                0 => e.host.set_fault(Some(Fault::Nth {
                    n,
                    errno: libc::EIO,
                })),
                1 => e.fw.set_fault(Some(Fault::Nth {
                    n,
                    errno: libc::EIO,
                })),
                _ => e.db.fail_txn(n),
            }
            let r = op(e.nets.clone(), c).await;
            e.host.set_fault(None);
            e.fw.set_fault(None);
            e.db.heal();
            assert!(
                r.is_err(),
                "failing call {n} of {which} did not fail the operation"
            );
            assert_eq!(
                snapshot(&e),
                before,
                "failing call {n} of {which} left something"
            );
            runs += 1;
        }
    }
    runs
}

// ---- create ------------------------------------------------------------------------------

#[tokio::test]
async fn create_makes_the_record_bridge_sysctls_dns_and_rules() {
    let e = env().await;
    let n = mknet(&e, "web", "10.10.0.0/24").await;
    assert_eq!(n.gateway.addr(), Ipv4Addr::new(10, 10, 0, 1));
    let m = e.host.model();
    assert_eq!(
        m.links.get(&n.bridge),
        Some(&FakeLink::Bridge {
            gateway: Ipv4Addr::new(10, 10, 0, 1),
            prefix: 24,
            mtu: 1500,
            up: true
        })
    );
    assert_eq!(
        m.sysctls.get("ipv4/ip_forward").map(String::as_str),
        Some("1")
    );
    assert!(m
        .sysctls
        .contains_key(&format!("ipv4/conf/{}/route_localnet", n.bridge)));
    assert_eq!(
        m.dns.get(&n.id).map(|a| a.to_string()),
        Some("10.10.0.1:53".into())
    );
    assert!(e
        .fw
        .model()
        .networks
        .iter()
        .any(|f| f.bridge == n.bridge && f.subnet == "10.10.0.0/24"));
    assert_eq!(e.nets.get(&e.project, "web").unwrap().id, n.id);
}

#[tokio::test]
async fn create_picks_free_subnets_that_avoid_other_networks_and_host_routes() {
    let e = env().await;
    e.host.add_route("eth9", "172.18.0.0/16".parse().unwrap());
    let default = e.nets.get(&e.project, DEFAULT_NETWORK).unwrap();
    let a = e
        .nets
        .create(&cx(&e.project), net_req("a", None))
        .await
        .unwrap();
    let b = e
        .nets
        .create(&cx(&e.project), net_req("b", None))
        .await
        .unwrap();
    let subnets: BTreeSet<String> = [&default, &a, &b]
        .iter()
        .map(|n| n.subnet.to_string())
        .collect();
    assert_eq!(subnets.len(), 3, "{subnets:?}");
    assert!(!subnets.contains("172.18.0.0/16"), "{subnets:?}");
}

#[tokio::test]
async fn create_refuses_a_taken_name_with_a_conflict() {
    let e = env().await;
    mknet(&e, "web", "10.10.0.0/24").await;
    let r = e
        .nets
        .create(&cx(&e.project), net_req("web", Some("10.11.0.0/24")))
        .await;
    assert_kind(
        r,
        ErrorKind::Conflict,
        "already exists: choose another name",
    );
}

#[tokio::test]
async fn create_refuses_predefined_and_invalid_names_and_drivers() {
    let e = env().await;
    for name in ["none", "host", DEFAULT_NETWORK] {
        let r = e.nets.create(&cx(&e.project), net_req(name, None)).await;
        assert_kind(
            r,
            ErrorKind::Conflict,
            "predefined network; choose another name",
        );
    }
    // Docker's rule: any name but the empty one.
    let r = e.nets.create(&cx(&e.project), net_req("", None)).await;
    assert_kind(r, ErrorKind::InvalidInput, "needs a name");
    let mut q = net_req("x", None);
    q.driver = Some("macvlan".into());
    assert_kind(
        e.nets.create(&cx(&e.project), q).await,
        ErrorKind::InvalidInput,
        "use bridge",
    );
    // Overlay networks span a pool: this host is in none.
    let mut q = net_req("x", None);
    q.driver = Some("overlay".into());
    assert_kind(
        e.nets.create(&cx(&e.project), q).await,
        ErrorKind::InvalidInput,
        "not in a pool",
    );
    let mut q = net_req("x", None);
    q.options.insert("mtu".into(), "9".into());
    assert_kind(
        e.nets.create(&cx(&e.project), q).await,
        ErrorKind::InvalidInput,
        "from 68 to 65535",
    );
    assert_eq!(
        e.nets.list(&cx(&e.project)).unwrap().len(),
        1,
        "only the default network"
    );
}

#[tokio::test]
async fn create_checks_subnet_gateway_and_range() {
    let e = env().await;
    mknet(&e, "a", "10.10.0.0/16").await;
    let r = e
        .nets
        .create(&cx(&e.project), net_req("b", Some("10.10.5.0/24")))
        .await;
    assert_kind(r, ErrorKind::Conflict, "overlaps 10.10.0.0/16");
    e.host.add_route("vpn0", "10.20.0.0/24".parse().unwrap());
    let r = e
        .nets
        .create(&cx(&e.project), net_req("b", Some("10.20.0.0/24")))
        .await;
    assert_kind(
        r,
        ErrorKind::Conflict,
        "a route of this host; choose another",
    );
    let r = e
        .nets
        .create(&cx(&e.project), net_req("b", Some("10.30.0.0/31")))
        .await;
    assert_kind(r, ErrorKind::InvalidInput, "give a /30 or larger");
    let mut q = net_req("b", Some("10.30.0.0/24"));
    q.gateway = Some("10.31.0.1".parse().unwrap());
    assert_kind(
        e.nets.create(&cx(&e.project), q).await,
        ErrorKind::InvalidInput,
        "not a host address",
    );
    let mut q = net_req("b", Some("10.30.0.0/24"));
    q.ip_range = Some("10.30.1.0/28".parse().unwrap());
    assert_kind(
        e.nets.create(&cx(&e.project), q).await,
        ErrorKind::InvalidInput,
        "not inside subnet",
    );
}

#[tokio::test]
async fn create_refuses_a_bridge_name_another_network_uses() {
    let e = env().await;
    let mut q = net_req("a", Some("10.10.0.0/24"));
    q.options.insert("bridge_name".into(), "br-mine".into());
    e.nets.create(&cx(&e.project), q.clone()).await.unwrap();
    q.name = "b".into();
    q.subnet = Some("10.11.0.0/24".parse().unwrap());
    assert_kind(
        e.nets.create(&cx(&e.project), q).await,
        ErrorKind::Conflict,
        "give another bridge_name",
    );
}

#[tokio::test]
async fn create_failing_at_every_step_leaves_nothing() {
    let runs = fail_every_step(
        || async {
            let e = env().await;
            let c = container(&e, "unused", req("none"));
            (e, c)
        },
        |nets, _| async move {
            nets.create(
                &cx(&ProjectName::default()),
                net_req("web", Some("10.10.0.0/24")),
            )
            .await
        },
    )
    .await;
    // Bridge, two sysctls, DNS on the host; the firewall; the record in the store.
    assert!(runs >= 6, "{runs}");
}

#[tokio::test]
async fn create_undoes_in_reverse_order_when_the_firewall_fails() {
    let e = env().await;
    e.host.clear_calls();
    e.fw.set_fault(Some(Fault::Kind {
        kind: CallKind::FirewallApply,
        errno: libc::ENOSPC,
    }));
    let r = e
        .nets
        .create(&cx(&e.project), net_req("web", Some("10.10.0.0/24")))
        .await;
    // The host's failure keeps its class: no space is a 507, not a bug.
    assert_kind(r, ErrorKind::InsufficientStorage, "apply the firewall");
    let calls = e.host.calls();
    let pos = |f: &dyn Fn(&NetCall) -> bool| calls.iter().position(f).unwrap();
    let made = pos(&|c| matches!(c, NetCall::EnsureBridge(_)));
    let dns_stop = pos(&|c| matches!(c, NetCall::StopDns(_)));
    let bridge_del = pos(&|c| matches!(c, NetCall::DeleteLink(_)));
    assert!(made < dns_stop && dns_stop < bridge_del, "{calls:?}");
    assert!(e.nets.get(&e.project, "web").is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_creates_of_one_name_make_one_network() {
    let e = env().await;
    let gate = Arc::new(Gate::new(Table::Networks, "", 2));
    hold_reads(&e.db, Some(gate.clone()));
    let results: Vec<_> = std::thread::scope(|s| {
        let hs: Vec<_> = ["10.10.0.0/24", "10.11.0.0/24"]
            .into_iter()
            .map(|subnet| {
                let nets = e.nets.clone();
                s.spawn(move || {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .build()
                        .unwrap();
                    rt.block_on(
                        nets.create(&cx(&ProjectName::default()), net_req("web", Some(subnet))),
                    )
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(
        gate.met(),
        "both creates should have read before either wrote"
    );
    assert_eq!(
        results.iter().filter(|r| r.is_ok()).count(),
        1,
        "{results:?}"
    );
    let err = results.into_iter().find_map(|r| r.err()).unwrap();
    assert_eq!(err.kind(), ErrorKind::Conflict, "{}", err.message());
    let webs = e
        .nets
        .list(&cx(&e.project))
        .unwrap()
        .into_iter()
        .filter(|n| n.name == "web")
        .count();
    assert_eq!(webs, 1);
    // The loser made no bridge.
    assert_eq!(e.host.model().bridges().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_creates_without_a_subnet_get_different_subnets() {
    let e = env().await;
    let gate = Arc::new(Gate::new(Table::Networks, "", 2));
    hold_reads(&e.db, Some(gate.clone()));
    let results: Vec<NetworkInspect> = std::thread::scope(|s| {
        let hs: Vec<_> = ["a", "b"]
            .into_iter()
            .map(|name| {
                let nets = e.nets.clone();
                s.spawn(move || {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .build()
                        .unwrap();
                    rt.block_on(nets.create(&cx(&ProjectName::default()), net_req(name, None)))
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap().unwrap()).collect()
    });
    assert!(gate.met());
    assert_ne!(results[0].subnet, results[1].subnet);
    assert!(!results[0].subnet.overlaps(&results[1].subnet));
}

#[tokio::test]
async fn a_table_marked_by_another_daemon_is_left_alone() {
    let fw = FakeFirewall::new();
    fw.set_foreign_owner(Some("root_0123456789abcdef"));
    let dir = tempfile::tempdir().unwrap();
    let r = Networks::new(
        dir.path(),
        HostNames::for_root(dir.path(), false),
        Arc::new(FaultyStore::default()),
        FakeNetHost::new(),
        fw.clone(),
    );
    assert_kind(
        r.map(drop),
        ErrorKind::Conflict,
        "give this daemon another --root",
    );
    assert!(fw.calls().is_empty(), "nothing applied");
}

// ---- remove and prune ------------------------------------------------------------------

#[tokio::test]
async fn remove_takes_the_record_bridge_dns_and_rules_away() {
    let e = env().await;
    let before = snapshot(&e);
    let n = mknet(&e, "web", "10.10.0.0/24").await;
    e.nets.remove(&cx(&e.project), "web").await.unwrap();
    assert_eq!(snapshot(&e), before);
    assert!(!e.host.model().dns.contains_key(&n.id));
    assert_kind(
        e.nets.get(&e.project, "web"),
        ErrorKind::NotFound,
        "pier network ls",
    );
}

#[tokio::test]
async fn remove_refuses_the_default_network_and_one_in_use() {
    let e = env().await;
    assert_kind(
        e.nets.remove(&cx(&e.project), DEFAULT_NETWORK).await,
        ErrorKind::Conflict,
        "cannot be removed",
    );
    mknet(&e, "web", "10.10.0.0/24").await;
    container(&e, "app", req("web"));
    assert_kind(
        e.nets.remove(&cx(&e.project), "web").await,
        ErrorKind::Conflict,
        "used by container(s) app: remove them or disconnect them first",
    );
    assert_kind(
        e.nets.remove(&cx(&e.project), "nope").await,
        ErrorKind::NotFound,
        "no such network",
    );
}

#[tokio::test]
async fn remove_failing_at_every_step_leaves_the_network_as_it_was() {
    let runs = fail_every_step(
        || async {
            let e = env().await;
            mknet(&e, "web", "10.10.0.0/24").await;
            let c = container(&e, "unused", req("none"));
            (e, c)
        },
        |nets, _| async move { nets.remove(&cx(&ProjectName::default()), "web").await },
    )
    .await;
    assert!(runs >= 3, "{runs}");
}

#[tokio::test]
async fn prune_removes_only_networks_no_container_uses() {
    let e = env().await;
    mknet(&e, "used", "10.10.0.0/24").await;
    mknet(&e, "idle", "10.11.0.0/24").await;
    container(&e, "app", req("used"));
    let removed = e.nets.prune(&cx(&e.project)).await.unwrap();
    assert_eq!(removed, ["idle"]);
    let names: Vec<String> = e
        .nets
        .list(&cx(&e.project))
        .unwrap()
        .into_iter()
        .map(|n| n.name)
        .collect();
    assert_eq!(names, [DEFAULT_NETWORK, "used"]);
}

#[tokio::test]
async fn networks_are_found_by_unique_id_prefix_only() {
    let e = env().await;
    let n = mknet(&e, "web", "10.10.0.0/24").await;
    assert_eq!(e.nets.get(&e.project, &n.id[..10]).unwrap().name, "web");
    assert_kind(
        e.nets.get(&e.project, "zzzz"),
        ErrorKind::NotFound,
        "no such network",
    );
    // The empty prefix names nothing, rather than everything.
    assert_kind(
        e.nets.get(&e.project, ""),
        ErrorKind::NotFound,
        "no such network",
    );
}

// ---- attach and IPAM ---------------------------------------------------------------------

#[tokio::test]
async fn attach_leases_the_first_free_address_and_plumbs_a_veth_into_the_bridge() {
    let e = env().await;
    let n = mknet(&e, "web", "10.10.0.0/24").await;
    let mut c = container(&e, "app", req("web"));
    start(&e, &mut c).await.unwrap();
    let ep = &c.networks["web"];
    assert_eq!(ep.ip_address.unwrap().addr(), Ipv4Addr::new(10, 10, 0, 2));
    assert_eq!(ep.interface.as_deref(), Some("eth0"));
    assert_eq!(ep.mac_address.unwrap().to_string(), "02:42:0a:0a:00:02");
    let m = e.host.model();
    let ns = e.nets.netns_path(&c.id);
    assert!(m.namespaces.contains_key(&ns));
    let veths = m.veths();
    assert_eq!(veths.len(), 1);
    match &m.links[veths[0]] {
        FakeLink::Veth {
            netns,
            ifname,
            addr,
            gateway,
            bridge,
            ..
        } => {
            assert_eq!(
                (netns, ifname.as_str(), *addr),
                (&ns, "eth0", Ipv4Addr::new(10, 10, 0, 2))
            );
            assert_eq!(*gateway, Some(Ipv4Addr::new(10, 10, 0, 1)));
            assert_eq!(bridge.as_deref(), Some(n.bridge.as_str()));
        }
        l => panic!("{l:?}"),
    }
    assert_eq!(leases(&e), [format!("default/{}/10.10.0.2", n.id)]);
    let inspected = e.nets.inspect(&cx(&e.project), "web").unwrap();
    assert!(inspected.containers.contains_key(&c.id));
}

#[tokio::test]
async fn addresses_are_handed_out_in_turn_and_a_released_one_not_at_once() {
    let e = env().await;
    mknet(&e, "web", "10.10.0.0/29").await; // .2 to .6 for containers
    let mut a = container(&e, "a", req("web"));
    let mut b = container(&e, "b", req("web"));
    start(&e, &mut a).await.unwrap();
    start(&e, &mut b).await.unwrap();
    assert_eq!(ip_of(&b, "web"), Ipv4Addr::new(10, 10, 0, 3));
    stop(&e, &mut a).await;
    let mut c = container(&e, "c", req("web"));
    start(&e, &mut c).await.unwrap();
    assert_eq!(
        ip_of(&c, "web"),
        Ipv4Addr::new(10, 10, 0, 4),
        "not .2 again at once"
    );
}

#[tokio::test]
async fn a_full_network_answers_no_space_and_a_released_address_is_reused() {
    let e = env().await;
    mknet(&e, "tiny", "10.10.0.0/30").await; // only .2
    let mut a = container(&e, "a", req("tiny"));
    start(&e, &mut a).await.unwrap();
    let mut b = container(&e, "b", req("tiny"));
    let before = snapshot(&e);
    assert_kind(
        start(&e, &mut b).await,
        ErrorKind::InsufficientStorage,
        "has no free address left: stop or disconnect",
    );
    assert_eq!(snapshot(&e), before, "the failed start left something");
    stop(&e, &mut a).await;
    start(&e, &mut b).await.unwrap();
    assert_eq!(ip_of(&b, "tiny"), Ipv4Addr::new(10, 10, 0, 2));
}

#[tokio::test]
async fn addresses_come_from_the_ip_range() {
    let e = env().await;
    let mut q = net_req("web", Some("10.10.0.0/24"));
    q.ip_range = Some("10.10.0.128/25".parse().unwrap());
    e.nets.create(&cx(&e.project), q).await.unwrap();
    let mut a = container(&e, "a", req("web"));
    start(&e, &mut a).await.unwrap();
    assert_eq!(ip_of(&a, "web"), Ipv4Addr::new(10, 10, 0, 128));
}

#[tokio::test]
async fn a_given_address_is_leased_and_a_taken_one_refused() {
    let e = env().await;
    mknet(&e, "web", "10.10.0.0/24").await;
    let mut q = req("web");
    q.ip = Some("10.10.0.50".parse().unwrap());
    let mut a = container(&e, "a", q.clone());
    start(&e, &mut a).await.unwrap();
    assert_eq!(ip_of(&a, "web"), Ipv4Addr::new(10, 10, 0, 50));
    let mut b = container(&e, "b", q);
    let before = snapshot(&e);
    assert_kind(
        start(&e, &mut b).await,
        ErrorKind::Conflict,
        "is in use by container 610000000000: choose another --ip",
    );
    assert_eq!(snapshot(&e), before);
    // An automatic address skips the given one.
    let mut c = container(&e, "c", req("web"));
    start(&e, &mut c).await.unwrap();
    assert_ne!(ip_of(&c, "web"), Ipv4Addr::new(10, 10, 0, 50));
}

#[tokio::test]
async fn given_addresses_aliases_and_options_are_checked_at_create() {
    let e = env().await;
    mknet(&e, "web", "10.10.0.0/24").await;
    let with = |f: &dyn Fn(&mut ContainerCreate)| {
        let mut q = req("web");
        f(&mut q);
        e.nets.endpoints_for_create(&e.project, &q)
    };
    assert_kind(
        with(&|q| q.ip = Some("10.99.0.5".parse().unwrap())),
        ErrorKind::InvalidInput,
        "not a free host address",
    );
    assert_kind(
        with(&|q| q.ip = Some("10.10.0.1".parse().unwrap())),
        ErrorKind::InvalidInput,
        "gateway 10.10.0.1",
    );
    assert_kind(
        with(&|q| q.network_aliases = vec!["-x".into()]),
        ErrorKind::InvalidInput,
        "invalid network alias",
    );
    assert_kind(
        with(&|q| {
            q.network_opts.insert("rate".into(), "fast".into());
        }),
        ErrorKind::InvalidInput,
        "give a rate such as 10mbit",
    );
    assert_kind(
        with(&|q| {
            q.network_opts.insert("burst".into(), "1".into());
        }),
        ErrorKind::InvalidInput,
        "use rate, ingress-rate or egress-rate",
    );
    let mut q = req(DEFAULT_NETWORK);
    q.ip = Some("172.17.0.9".parse().unwrap());
    assert_kind(
        e.nets.endpoints_for_create(&e.project, &q),
        ErrorKind::InvalidInput,
        "create one with `pier network create`",
    );
    let mut q = req("none");
    q.publish = ports(&["80"]);
    assert_kind(
        e.nets.endpoints_for_create(&e.project, &q),
        ErrorKind::InvalidInput,
        "no network of its own",
    );
    // A network that does not exist is Docker's start-time error, not the create's:
    // the endpoint waits without a network ID, and its resolution names the network.
    let mut pending = e
        .nets
        .endpoints_for_create(&e.project, &req("nope"))
        .unwrap();
    assert_eq!(pending["nope"].network_id, "");
    assert_kind(
        e.nets.resolve_pending(&e.project, &mut pending),
        ErrorKind::NotFound,
        "network nope not found",
    );
    mknet(&e, "nope", "10.12.0.0/24").await;
    e.nets.resolve_pending(&e.project, &mut pending).unwrap();
    assert!(!pending["nope"].network_id.is_empty());
}

#[tokio::test]
async fn a_container_on_two_networks_gets_eth0_on_its_first_and_eth1() {
    let e = env().await;
    mknet(&e, "zeta", "10.10.0.0/24").await;
    mknet(&e, "alpha", "10.11.0.0/24").await;
    let mut c = container(&e, "app", req("zeta"));
    let alpha = e.nets.get(&e.project, "alpha").unwrap();
    c.networks.insert(
        "alpha".into(),
        pier_api::networks::Endpoint {
            network_id: alpha.id,
            ..Default::default()
        },
    );
    start(&e, &mut c).await.unwrap();
    assert_eq!(
        c.networks["zeta"].interface.as_deref(),
        Some("eth0"),
        "the network it was created on first"
    );
    assert_eq!(c.networks["alpha"].interface.as_deref(), Some("eth1"));
    assert_eq!(e.host.model().veths().len(), 2);
}

#[tokio::test]
async fn an_internal_network_gives_no_default_route_and_rules_say_internal() {
    let e = env().await;
    let mut q = net_req("sealed", Some("10.10.0.0/24"));
    q.internal = true;
    let n = e.nets.create(&cx(&e.project), q).await.unwrap();
    let mut c = container(&e, "app", req("sealed"));
    start(&e, &mut c).await.unwrap();
    assert_eq!(c.networks["sealed"].gateway, None);
    let m = e.host.model();
    assert!(matches!(
        &m.links[m.veths()[0]],
        FakeLink::Veth { gateway: None, .. }
    ));
    assert!(e.fw.model().networks.contains(&FwNet {
        bridge: n.bridge,
        subnet: "10.10.0.0/24".into(),
        internal: true,
        routed: false,
        overlay: None,
    }));
}

#[tokio::test]
async fn each_network_gets_its_own_isolation_rules() {
    let e = env().await;
    let a = mknet(&e, "a", "10.10.0.0/24").await;
    let mut q = net_req("b", Some("10.11.0.0/24"));
    q.options.insert("mode".into(), "routed".into());
    let b = e.nets.create(&cx(&e.project), q).await.unwrap();
    assert_eq!(b.mode, NetworkMode::Routed);
    let fw = e.fw.model();
    assert_eq!(fw.networks.len(), 3, "{fw:?}");
    assert!(fw
        .networks
        .iter()
        .any(|f| f.bridge == a.bridge && !f.routed && !f.internal));
    assert!(fw.networks.iter().any(|f| f.bridge == b.bridge && f.routed));
    e.nets.remove(&cx(&e.project), "a").await.unwrap();
    assert!(!e.fw.model().networks.iter().any(|f| f.bridge == a.bridge));
}

#[tokio::test]
async fn rate_limits_are_set_on_the_veth() {
    let e = env().await;
    mknet(&e, "web", "10.10.0.0/24").await;
    let mut q = req("web");
    q.network_opts.insert("rate".into(), "10mbit".into());
    q.network_opts.insert("egress-rate".into(), "1mbit".into());
    let mut c = container(&e, "app", q);
    start(&e, &mut c).await.unwrap();
    let m = e.host.model();
    assert!(matches!(
        &m.links[m.veths()[0]],
        FakeLink::Veth {
            rate: Some((Some(10_000_000), Some(1_000_000))),
            ..
        }
    ));
}

#[tokio::test]
async fn attach_failing_at_every_step_leaves_nothing() {
    let runs = fail_every_step(
        || async {
            let e = env().await;
            mknet(&e, "web", "10.10.0.0/24").await;
            mknet(&e, "db", "10.11.0.0/24").await;
            let mut q = req("web");
            q.publish = ports(&["8080:80", "53:53/udp"]);
            q.network_opts.insert("rate".into(), "10mbit".into());
            let mut c = container(&e, "app", q);
            let db = e.nets.get(&e.project, "db").unwrap();
            c.networks.insert(
                "db".into(),
                pier_api::networks::Endpoint {
                    network_id: db.id,
                    ..Default::default()
                },
            );
            (e, c)
        },
        |nets, c| async move { nets.attach(&c, &[], None).await },
    )
    .await;
    // Namespace, two interfaces of four steps each, ports, firewall; and the store's.
    assert!(runs >= 14, "{runs}");
}

#[tokio::test]
async fn attach_to_a_network_removed_meanwhile_fails_and_leaves_nothing() {
    let e = env().await;
    mknet(&e, "web", "10.10.0.0/24").await;
    let mut c = container(&e, "app", req("web"));
    // Removed behind the container's back (as by an older daemon).
    let n = e.nets.get(&e.project, "web").unwrap();
    let mut b = Batch::new();
    b.delete(Table::Networks, format!("default/{}", n.id));
    b.commit(e.db.as_ref()).unwrap();
    let before = snapshot(&e);
    assert_kind(
        start(&e, &mut c).await,
        ErrorKind::InvalidInput,
        "disconnect it or recreate the network",
    );
    assert_eq!(snapshot(&e), before);
}

#[tokio::test]
async fn a_bridge_deleted_behind_pier_is_made_again_at_attach() {
    let e = env().await;
    let n = mknet(&e, "web", "10.10.0.0/24").await;
    e.host.remove_link(&n.bridge);
    let mut c = container(&e, "app", req("web"));
    start(&e, &mut c).await.unwrap();
    let m = e.host.model();
    assert!(m.links.contains_key(&n.bridge));
    assert!(
        matches!(&m.links[m.veths()[0]], FakeLink::Veth { bridge: Some(b), .. } if *b == n.bridge)
    );
}

#[tokio::test]
async fn sharing_another_containers_namespace_binds_it_and_detach_releases_it() {
    let e = env().await;
    let c = container(&e, "side", req("none"));
    let src = e.dir.path().join("other-ns");
    let a = e.nets.attach(&c, &[], Some(src.clone())).await.unwrap();
    assert!(a.endpoints.is_empty() && a.ports.is_empty());
    assert_eq!(
        e.host.model().namespaces.get(&e.nets.netns_path(&c.id)),
        Some(&src)
    );
    e.nets.detach(&c).await;
    assert!(e.host.model().namespaces.is_empty());
}

#[tokio::test]
async fn detach_gives_back_addresses_ports_namespace_and_rules() {
    let e = env().await;
    mknet(&e, "web", "10.10.0.0/24").await;
    let before = snapshot(&e);
    let mut q = req("web");
    q.publish = ports(&["8080:80"]);
    let mut c = container(&e, "app", q);
    start(&e, &mut c).await.unwrap();
    assert_ne!(snapshot(&e), before);
    stop(&e, &mut c).await;
    assert_eq!(snapshot(&e), before);
    // Twice is fine.
    e.nets.detach(&c).await;
    assert_eq!(snapshot(&e), before);
}

#[tokio::test]
async fn detach_goes_on_past_a_failing_firewall_and_the_next_rebuild_cleans_up() {
    let e = env().await;
    mknet(&e, "web", "10.10.0.0/24").await;
    let mut q = req("web");
    q.publish = ports(&["8080:80"]);
    let mut c = container(&e, "app", q);
    start(&e, &mut c).await.unwrap();
    e.fw.set_fault(Some(Fault::Kind {
        kind: CallKind::FirewallApply,
        errno: libc::EIO,
    }));
    stop(&e, &mut c).await;
    e.fw.set_fault(None);
    assert!(leases(&e).is_empty() && port_keys(&e).is_empty());
    assert!(e.host.model().namespaces.is_empty());
    assert_eq!(
        e.fw.model().host_ports(),
        [8080],
        "the failed rebuild left the rule"
    );
    mknet(&e, "other", "10.11.0.0/24").await;
    assert!(
        e.fw.model().ports.is_empty(),
        "the next rebuild took it away"
    );
}

// ---- published ports -----------------------------------------------------------------------

async fn publisher(e: &Env, name: &str, specs: &[&str]) -> ContainerInspect {
    let mut q = req("web");
    q.publish = ports(specs);
    container(e, name, q)
}

async fn web_env() -> Env {
    let e = env().await;
    mknet(&e, "web", "10.10.0.0/24").await;
    e
}

#[tokio::test]
async fn a_published_port_is_reserved_and_forwarded_to_the_first_address() {
    let e = web_env().await;
    let mut c = publisher(&e, "app", &["8080:80", "127.0.0.1:5353:53/udp"]).await;
    start(&e, &mut c).await.unwrap();
    let got: Vec<(String, String, u16, u16)> = c
        .ports
        .iter()
        .map(|p| {
            (
                p.proto.clone(),
                p.host_ip.clone(),
                p.host_port,
                p.container_port,
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("tcp".into(), "".into(), 8080, 80),
            ("udp".into(), "127.0.0.1".into(), 5353, 53)
        ]
    );
    assert_eq!(port_keys(&e), ["hostport/tcp/8080", "hostport/udp/5353"]);
    let fw = e.fw.model();
    assert!(fw.ports.contains(&FwPort {
        proto: Proto::Tcp,
        host_ip: None,
        host_port: 8080,
        container_ip: Ipv4Addr::new(10, 10, 0, 2),
        container_ip6: None,
        container_port: 80
    }));
    assert_eq!(fw.host_ports(), [5353, 8080]);
}

#[tokio::test]
async fn a_port_another_container_publishes_is_refused_and_nothing_is_left() {
    let e = web_env().await;
    let mut a = publisher(&e, "first", &["8080:80"]).await;
    start(&e, &mut a).await.unwrap();
    let mut b = publisher(&e, "second", &["8080:80"]).await;
    let before = snapshot(&e);
    assert_kind(
        start(&e, &mut b).await,
        ErrorKind::Conflict,
        "host port 8080 is already published by container first; choose another host port",
    );
    assert_eq!(snapshot(&e), before);
}

#[tokio::test]
async fn a_range_takes_its_first_free_port_and_a_full_range_is_refused() {
    let e = web_env().await;
    let mut a = publisher(&e, "a", &["8080:80"]).await;
    start(&e, &mut a).await.unwrap();
    e.host.occupy_port(Proto::Tcp, 8081);
    let mut b = publisher(&e, "b", &["8080-8082:80"]).await;
    start(&e, &mut b).await.unwrap();
    assert_eq!(b.ports[0].host_port, 8082);
    let mut c = publisher(&e, "c", &["8080-8082:80"]).await;
    assert_kind(start(&e, &mut c).await, ErrorKind::Conflict, "no host port of the range is free (the last: host port 8082 is already published by container b)");
}

#[tokio::test]
async fn a_port_a_host_program_listens_on_is_refused() {
    let e = web_env().await;
    e.host.occupy_port(Proto::Tcp, 9000);
    let mut c = publisher(&e, "app", &["9000:80"]).await;
    assert_kind(
        start(&e, &mut c).await,
        ErrorKind::Conflict,
        "is in use on this host",
    );
    assert!(port_keys(&e).is_empty() && leases(&e).is_empty());
}

#[tokio::test]
async fn a_port_another_pier_daemon_publishes_is_refused() {
    let e = web_env().await;
    e.fw.set_others_ports(vec![("pier_abcd".into(), Proto::Tcp, None, 7000)]);
    let mut c = publisher(&e, "app", &["7000:80"]).await;
    assert_kind(
        start(&e, &mut c).await,
        ErrorKind::Conflict,
        "another Pier daemon on this host (nftables table ip pier_abcd)",
    );
}

#[tokio::test]
async fn publish_all_takes_free_ephemeral_ports_around_reserved_ones() {
    let e = web_env().await;
    let mut a = publisher(&e, "a", &["40000:80"]).await;
    start(&e, &mut a).await.unwrap();
    e.host.set_next_port(40000);
    let mut q = req("web");
    q.publish_all = true;
    q.publish = ports(&["9090:90"]);
    let mut b = container(&e, "b", q);
    let a2 = e
        .nets
        .attach(
            &b,
            &[(80, Proto::Tcp), (90, Proto::Tcp), (53, Proto::Udp)],
            None,
        )
        .await
        .unwrap();
    b.ports = a2.ports;
    let mut got: Vec<(u16, u16)> = b
        .ports
        .iter()
        .map(|p| (p.container_port, p.host_port))
        .collect();
    got.sort();
    // 40000 is the other container's: the next one is taken; 90 keeps its given port.
    assert_eq!(got, [(53, 40002), (80, 40001), (90, 9090)]);
}

#[tokio::test]
async fn one_port_on_different_addresses_or_protocols_coexists_but_not_with_every_address() {
    let e = web_env().await;
    let mut a = publisher(&e, "a", &["127.0.0.1:8080:80"]).await;
    start(&e, &mut a).await.unwrap();
    let mut b = publisher(&e, "b", &["127.0.0.2:8080:80", "8080:80/udp"]).await;
    start(&e, &mut b).await.unwrap();
    let mut c = publisher(&e, "c", &["8080:80"]).await;
    assert_kind(
        start(&e, &mut c).await,
        ErrorKind::Conflict,
        "already published by container a",
    );
    assert_eq!(e.fw.model().ports.len(), 3);
}

#[tokio::test]
async fn ports_are_released_at_stop_and_can_be_taken_again() {
    let e = web_env().await;
    let mut a = publisher(&e, "a", &["8080:80"]).await;
    start(&e, &mut a).await.unwrap();
    stop(&e, &mut a).await;
    assert!(port_keys(&e).is_empty());
    assert!(e.fw.model().ports.is_empty());
    let mut b = publisher(&e, "b", &["8080:80"]).await;
    start(&e, &mut b).await.unwrap();
    assert_eq!(b.ports[0].host_port, 8080);
}

// ---- races -----------------------------------------------------------------------------------

/// Attaches `cs` at once, each from a thread of its own, with every attach held at the
/// gate until all have read what the gate guards.
fn race(
    e: &Env,
    gate: &Arc<Gate>,
    cs: &[ContainerInspect],
) -> Vec<Result<ContainerInspect, EngineError>> {
    hold_reads(&e.db, Some(gate.clone()));
    let out = std::thread::scope(|s| {
        let hs: Vec<_> = cs
            .iter()
            .map(|c| {
                let nets = e.nets.clone();
                s.spawn(move || {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .build()
                        .unwrap();
                    let a = rt.block_on(nets.attach(c, &[], None))?;
                    let mut c = c.clone();
                    c.networks.extend(a.endpoints);
                    c.ports = a.ports;
                    Ok(c)
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    hold_reads(&e.db, None);
    out
}

#[test]
fn two_attaches_racing_for_the_last_address_get_one_and_a_clean_refusal() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let e = rt.block_on(env());
    let n = rt.block_on(mknet(&e, "tiny", "10.10.0.0/30"));
    let cs = [
        container(&e, "a", req("tiny")),
        container(&e, "b", req("tiny")),
    ];
    let gate = Arc::new(Gate::new(Table::Leases, &format!("default/{}/", n.id), 2));
    let results = race(&e, &gate, &cs);
    assert!(
        gate.met(),
        "both attaches should have read the leases before either wrote"
    );
    let ok: Vec<&ContainerInspect> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
    assert_eq!(ok.len(), 1, "{results:?}");
    let err = results.iter().find_map(|r| r.as_ref().err()).unwrap();
    assert_eq!(
        err.kind(),
        ErrorKind::InsufficientStorage,
        "{}",
        err.message()
    );
    assert_eq!(leases(&e).len(), 1);
    assert_eq!(e.host.model().veths().len(), 1, "the loser left no veth");
    assert_eq!(
        e.host.model().namespaces.len(),
        1,
        "the loser left no namespace"
    );
}

#[test]
fn attaches_racing_on_one_network_get_different_addresses() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let e = rt.block_on(env());
    let n = rt.block_on(mknet(&e, "web", "10.10.0.0/24"));
    let cs: Vec<ContainerInspect> = (0..4)
        .map(|i| container(&e, &format!("c{i}"), req("web")))
        .collect();
    let gate = Arc::new(Gate::new(Table::Leases, &format!("default/{}/", n.id), 4));
    let results = race(&e, &gate, &cs);
    assert!(gate.met());
    let ips: BTreeSet<Ipv4Addr> = results
        .iter()
        .map(|r| ip_of(r.as_ref().unwrap(), "web"))
        .collect();
    assert_eq!(ips.len(), 4, "{ips:?}");
    assert_eq!(leases(&e).len(), 4);
}

#[test]
fn two_attaches_racing_for_one_host_port_get_it_once() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let e = rt.block_on(web_env());
    let cs = [
        rt.block_on(publisher(&e, "a", &["8080:80"])),
        rt.block_on(publisher(&e, "b", &["8080:80"])),
    ];
    let gate = Arc::new(Gate::new(Table::Meta, "hostport/tcp/8080", 2));
    let results = race(&e, &gate, &cs);
    assert!(
        gate.met(),
        "both attaches should have read the port before either wrote"
    );
    assert_eq!(
        results.iter().filter(|r| r.is_ok()).count(),
        1,
        "{results:?}"
    );
    let err = results.iter().find_map(|r| r.as_ref().err()).unwrap();
    assert_eq!(err.kind(), ErrorKind::Conflict, "{}", err.message());
    assert_eq!(port_keys(&e), ["hostport/tcp/8080"]);
    assert_eq!(leases(&e).len(), 1, "the loser's lease went");
    assert_eq!(e.fw.model().host_ports(), [8080]);
}

// ---- connect and disconnect of a running container --------------------------------------------

async fn running_on_two(e: &Env) -> (ContainerInspect, NetworkInspect) {
    mknet(e, "web", "10.10.0.0/24").await;
    let db = mknet(e, "db", "10.11.0.0/24").await;
    let mut c = container(e, "app", req("web"));
    start(e, &mut c).await.unwrap();
    (c, db)
}

#[tokio::test]
async fn plug_gives_a_running_container_another_interface() {
    let e = env().await;
    let (c, db) = running_on_two(&e).await;
    let ep = pier_api::networks::Endpoint {
        network_id: db.id.clone(),
        ..Default::default()
    };
    let ns = e.nets.netns_path(&c.id);
    let ep = e.nets.plug(&c, &ns, 1, "db", ep).await.unwrap();
    assert_eq!(ep.interface.as_deref(), Some("eth1"));
    assert_eq!(ep.ip_address.unwrap().addr(), Ipv4Addr::new(10, 11, 0, 2));
    assert_eq!(e.host.model().veths().len(), 2);
    assert_eq!(leases(&e).len(), 2);
}

#[tokio::test]
async fn plug_failing_at_every_step_leaves_nothing() {
    let runs = fail_every_step(
        || async {
            let e = env().await;
            let (c, _) = running_on_two(&e).await;
            (e, c)
        },
        |nets, c| async move {
            let db = nets.get(&ProjectName::default(), "db")?;
            let ep = pier_api::networks::Endpoint {
                network_id: db.id,
                ..Default::default()
            };
            let ns = nets.netns_path(&c.id);
            nets.plug(&c, &ns, 1, "db", ep).await
        },
    )
    .await;
    assert!(runs >= 4, "{runs}");
}

#[tokio::test]
async fn unplug_takes_the_veth_lease_and_names_away() {
    let e = env().await;
    let (mut c, db) = running_on_two(&e).await;
    let before = snapshot(&e);
    let ep = pier_api::networks::Endpoint {
        network_id: db.id.clone(),
        ..Default::default()
    };
    let ep = e
        .nets
        .plug(&c, &e.nets.netns_path(&c.id), 1, "db", ep)
        .await
        .unwrap();
    let one = BTreeMap::from([("db".to_string(), ep.clone())]);
    e.nets.index_names(&c, &one);
    c.networks.insert("db".into(), ep);
    assert_eq!(
        e.host.dns_lookup(&db.id, "app"),
        Some(vec![Ipv4Addr::new(10, 11, 0, 2)])
    );
    e.nets.unplug(&c, &db.id).await.unwrap();
    assert_eq!(snapshot(&e), before);
    assert_eq!(e.host.dns_lookup(&db.id, "app"), None);
}

#[tokio::test]
async fn unplug_whose_veth_cannot_go_keeps_the_lease_and_says_so() {
    let e = env().await;
    let (c, db) = running_on_two(&e).await;
    let ep = pier_api::networks::Endpoint {
        network_id: db.id.clone(),
        ..Default::default()
    };
    e.nets
        .plug(&c, &e.nets.netns_path(&c.id), 1, "db", ep)
        .await
        .unwrap();
    let before = snapshot(&e);
    e.host.set_fault(Some(Fault::Kind {
        kind: CallKind::DeleteLink,
        errno: libc::EBUSY,
    }));
    assert_kind(
        e.nets.unplug(&c, &db.id).await,
        ErrorKind::Unavailable,
        "delete link",
    );
    assert_eq!(snapshot(&e), before, "a failed unplug changes nothing");
    e.host.set_fault(None);
    e.nets.unplug(&c, &db.id).await.unwrap();
    assert_eq!(leases(&e).len(), 1);
}

// ---- names -----------------------------------------------------------------------------------

#[tokio::test]
async fn names_resolve_on_user_networks_only_with_aliases_and_across_networks() {
    let e = env().await;
    let web = mknet(&e, "web", "10.10.0.0/24").await;
    let default = e.nets.get(&e.project, DEFAULT_NETWORK).unwrap();
    let mut q = req("web");
    q.network_aliases = vec!["api".into()];
    let mut a = container(&e, "app", q);
    start(&e, &mut a).await.unwrap();
    let ip = vec![Ipv4Addr::new(10, 10, 0, 2)];
    assert_eq!(e.host.dns_lookup(&web.id, "app"), Some(ip.clone()));
    assert_eq!(e.host.dns_lookup(&web.id, "api"), Some(ip.clone()));
    assert_eq!(e.host.dns_lookup(&web.id, "app.web"), Some(ip.clone()));
    assert_eq!(e.host.dns_lookup(&web.id, &a.id[..12]), Some(ip.clone()));
    let mut b = container(&e, "plain", req(DEFAULT_NETWORK));
    start(&e, &mut b).await.unwrap();
    assert_eq!(
        e.host.dns_lookup(&default.id, "plain"),
        None,
        "no names on the default network, as on Docker"
    );
    stop(&e, &mut a).await;
    assert_eq!(e.host.dns_lookup(&web.id, "app"), None, "names go at stop");
}

#[tokio::test]
async fn a_container_on_two_networks_resolves_names_of_both() {
    let e = env().await;
    let web = mknet(&e, "web", "10.10.0.0/24").await;
    let db = mknet(&e, "db", "10.11.0.0/24").await;
    let mut store = container(&e, "store", req("db"));
    start(&e, &mut store).await.unwrap();
    let mut app = container(&e, "app", req("web"));
    app.networks.insert(
        "db".into(),
        pier_api::networks::Endpoint {
            network_id: db.id.clone(),
            ..Default::default()
        },
    );
    start(&e, &mut app).await.unwrap();
    let app_web_ip = ip_of(&app, "web");
    // Asked on web's server, from app's web address: a name of db.
    assert_eq!(
        e.host.dns_lookup_from(&web.id, app_web_ip, "store"),
        Some(vec![ip_of(&store, "db")])
    );
    assert_eq!(
        e.host.dns_lookup(&web.id, "store"),
        None,
        "others on web do not see db's names"
    );
}

// ---- reconcile and recover -----------------------------------------------------------------

#[tokio::test]
async fn reconcile_makes_the_default_network_once() {
    let e = env_on(Default::default(), FakeNetHost::new(), FakeFirewall::new());
    e.nets.reconcile(&e.project).await.unwrap();
    let first = snapshot(&e);
    let n = e.nets.get(&e.project, DEFAULT_NETWORK).unwrap();
    assert!(first.host.links.contains_key(&n.bridge));
    e.nets.reconcile(&e.project).await.unwrap();
    assert_eq!(snapshot(&e), first, "a second reconcile changes nothing");
    assert_eq!(e.nets.list(&cx(&e.project)).unwrap().len(), 1);
}

#[tokio::test]
async fn reconcile_after_a_reboot_restores_bridges_dns_rules_and_forwarding() {
    let e = env().await;
    let mut c0 = container(&e, "x", req("none"));
    c0.state.status = ContainerStatus::Exited;
    save(&e, &c0);
    let web = mknet(&e, "web", "10.10.0.0/24").await;
    let before = snapshot(&e);
    // The same store on a host that lost everything.
    let e2 = env_on(e.db.clone(), FakeNetHost::new(), FakeFirewall::new());
    e2.nets.reconcile(&e2.project).await.unwrap();
    let after = snapshot(&e2);
    assert_eq!(after.host.links, before.host.links);
    assert_eq!(after.host.dns, before.host.dns);
    assert_eq!(after.fw_nets, before.fw_nets);
    assert_eq!(
        after
            .host
            .sysctls
            .get("ipv4/ip_forward")
            .map(String::as_str),
        Some("1")
    );
    assert!(after.host.dns.contains_key(&web.id));
}

#[tokio::test]
async fn reconcile_removes_what_no_running_container_owns() {
    let e = env().await;
    mknet(&e, "web", "10.10.0.0/24").await;
    let mut dead = publisher(&e, "dead", &["8080:80"]).await;
    start(&e, &mut dead).await.unwrap();
    // It died while the daemon was down: its record says exited, the rest stayed.
    dead.state.status = ContainerStatus::Exited;
    save(&e, &dead);
    let names = HostNames::for_root(e.dir.path(), false);
    let stray_veth = names.host_veth(&"f".repeat(64), "abcd", 0);
    e.host.add_link(
        &stray_veth,
        FakeLink::Veth {
            netns: "/gone".into(),
            ifname: "eth0".into(),
            addr: Ipv4Addr::new(10, 9, 9, 9),
            prefix: 24,
            mac: [2, 0, 0, 0, 0, 1],
            gateway: None,
            bridge: None,
            rate: None,
        },
    );
    let stray_bridge = names.network_bridge(&"e".repeat(64));
    e.host.add_link(
        &stray_bridge,
        FakeLink::Bridge {
            gateway: Ipv4Addr::new(10, 8, 0, 1),
            prefix: 24,
            mtu: 1500,
            up: true,
        },
    );
    e.host.add_link(
        "docker0",
        FakeLink::Bridge {
            gateway: Ipv4Addr::new(172, 30, 0, 1),
            prefix: 16,
            mtu: 1500,
            up: true,
        },
    );
    // VXLAN links: one of ours whose network is gone, another daemon's, another
    // program's.
    let vxlan = |local| FakeLink::Vxlan {
        vni: 4096,
        local,
        mtu: 1450,
        master: None,
        fdb: Default::default(),
        neigh: Default::default(),
    };
    let stray_vxlan = names.vxlan(&"c".repeat(64));
    e.host
        .add_link(&stray_vxlan, vxlan(Ipv4Addr::new(10, 251, 0, 1)));
    let others_vxlan =
        HostNames::for_root(std::path::Path::new("/srv/other"), false).vxlan(&"c".repeat(64));
    e.host
        .add_link(&others_vxlan, vxlan(Ipv4Addr::new(10, 251, 0, 1)));
    e.host
        .add_link("vxlan0", vxlan(Ipv4Addr::new(10, 251, 0, 1)));
    e.host.add_netns(&e.nets.netns_path(&"d".repeat(64)));
    e.nets.reconcile(&e.project).await.unwrap();
    let m = e.host.model();
    assert_eq!(m.vxlans(), vec![others_vxlan.as_str(), "vxlan0"]);
    assert!(e.nets.owns_interface(&stray_vxlan) && !e.nets.owns_interface(&others_vxlan));
    assert!(leases(&e).is_empty());
    assert!(port_keys(&e).is_empty());
    assert!(e.db.list(Table::Meta, "ports/").unwrap().is_empty());
    assert!(e.fw.model().ports.is_empty());
    let m = e.host.model();
    assert!(m.namespaces.is_empty(), "{:?}", m.namespaces);
    assert!(m.veths().is_empty(), "{:?}", m.veths());
    assert!(!m.links.contains_key(&stray_bridge));
    assert!(
        m.links.contains_key("docker0"),
        "another program's bridge stays"
    );
}

#[tokio::test]
async fn reconcile_keeps_running_containers_and_indexes_ports_an_older_pier_did_not() {
    let e = env().await;
    let web = mknet(&e, "web", "10.10.0.0/24").await;
    let mut c = publisher(&e, "app", &["8080:80"]).await;
    start(&e, &mut c).await.unwrap();
    // An older Pier kept no port reservations.
    let mut b = Batch::new();
    b.delete(Table::Meta, "hostport/tcp/8080");
    b.commit(e.db.as_ref()).unwrap();
    let e2 = env_on(e.db.clone(), e.host.clone(), FakeFirewall::new());
    e2.nets.reconcile(&e2.project).await.unwrap();
    assert_eq!(leases(&e2).len(), 1);
    assert_eq!(e2.host.model().veths().len(), 1, "its veth stays");
    assert_eq!(port_keys(&e2), ["hostport/tcp/8080"]);
    assert_eq!(e2.fw.model().host_ports(), [8080]);
    assert_eq!(
        e2.host.dns_lookup(&web.id, "app"),
        Some(vec![Ipv4Addr::new(10, 10, 0, 2)])
    );
    let mut other = publisher(&e2, "other", &["8080:80"]).await;
    assert_kind(
        start(&e2, &mut other).await,
        ErrorKind::Conflict,
        "already published by container app",
    );
}

#[tokio::test]
async fn recover_fills_in_what_a_lost_record_had() {
    let e = env().await;
    mknet(&e, "web", "10.10.0.0/24").await;
    let fresh = publisher(&e, "app", &["8080:80"]).await;
    let mut c = fresh.clone();
    start(&e, &mut c).await.unwrap();
    // The record as it was before the start was saved.
    let mut lost = fresh;
    lost.state.status = ContainerStatus::Running;
    e.nets.recover(&mut lost).unwrap();
    assert_eq!(lost.networks["web"], c.networks["web"]);
    assert_eq!(lost.ports, c.ports);
}

#[tokio::test]
async fn host_errors_keep_their_class() {
    let e = web_env().await;
    let mut c = container(&e, "app", req("web"));
    e.host.set_fault(Some(Fault::Kind {
        kind: CallKind::Plumb,
        errno: libc::EEXIST,
    }));
    assert_kind(start(&e, &mut c).await, ErrorKind::Conflict, "plumb");
    e.host.set_fault(Some(Fault::Kind {
        kind: CallKind::CreateNetns,
        errno: libc::EIO,
    }));
    assert_kind(
        start(&e, &mut c).await,
        ErrorKind::Internal,
        "create namespace",
    );
    e.host.set_fault(None);
    start(&e, &mut c).await.unwrap();
}

#[test]
fn the_fake_host_behaves_as_the_kernel_where_the_engine_relies_on_it() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(async {
        use pier_engine::host::net::{Bridge, NetHost, Plumb};
        let h = FakeNetHost::new();
        let ns = Path::new("/run/test/ns");
        let p = Plumb {
            netns: ns.into(),
            ifname: "eth0".into(),
            host_ifname: "pv0".into(),
            addr: Ipv4Addr::new(10, 0, 0, 2),
            prefix: 24,
            mac: [2, 0, 0, 0, 0, 2],
            mtu: 1500,
            gateway: None,
            addr6: None,
            gateway6: None,
        };
        // No namespace: no veth.
        assert!(h.plumb(&p).await.is_err());
        h.create_netns(ns).await.unwrap();
        h.plumb(&p).await.unwrap();
        // The same again: EEXIST, a conflict.
        let e = h.plumb(&p).await.unwrap_err();
        assert_eq!(e.kind(), pier_net::ErrorKind::Conflict);
        let b = Bridge {
            name: "br0".into(),
            gateway: Ipv4Addr::new(10, 0, 0, 1),
            prefix: 24,
            gateway6: None,
            mtu: 1500,
        };
        let i = h.ensure_bridge(&b).await.unwrap();
        assert_eq!(
            h.ensure_bridge(&b).await.unwrap(),
            i,
            "ensure is idempotent"
        );
        assert!(h
            .routes()
            .iter()
            .any(|(d, n)| d == "br0" && n.to_string() == "10.0.0.0/24"));
        // The veths go with their namespace.
        h.remove_netns(ns).await;
        assert!(h.model().veths().is_empty());
        assert!(h.calls().contains(&NetCall::RemoveNetns(ns.into())));
    });
}

// ---- the runtime reconciler -----------------------------------------------------------------

#[tokio::test]
async fn a_reconcile_pass_puts_back_what_was_deleted_by_hand() {
    let e = env().await;
    let n = mknet(&e, "web", "10.10.0.0/24").await;
    let before = (e.host.model().links, e.fw.model().networks);
    e.host.remove_link(&n.bridge);
    assert!(!e.host.model().links.contains_key(&n.bridge));
    let applied = e.fw.model().applied;
    assert_eq!(e.nets.realize_all().await.unwrap(), 2, "default and web");
    assert_eq!((e.host.model().links, e.fw.model().networks), before);
    assert_eq!(e.fw.model().applied, applied + 1, "the firewall is rebuilt");
}

#[tokio::test]
async fn a_reconcile_pass_sets_up_every_network_it_can_and_reports_the_first_failure() {
    let e = env().await;
    let web = mknet(&e, "web", "10.10.0.0/24").await;
    let db = mknet(&e, "db", "10.11.0.0/24").await;
    let default = e.nets.get(&e.project, DEFAULT_NETWORK).unwrap();
    let bridges = [&default.bridge, &web.bridge, &db.bridge];
    for b in bridges {
        e.host.remove_link(b);
    }
    // The pass's first host call fails: that of whichever network it visits first.
    e.host.set_fault(Some(Fault::Nth {
        n: 0,
        errno: libc::EPERM,
    }));
    let r = e.nets.realize_all().await;
    assert!(r.is_err(), "a failed network is reported: {r:?}");
    e.host.set_fault(None);
    let links = e.host.model().links;
    let missing: Vec<_> = bridges
        .iter()
        .filter(|b| !links.contains_key(**b))
        .collect();
    assert_eq!(
        missing.len(),
        1,
        "only the failed network is left down: {links:?}"
    );
    assert_eq!(e.nets.realize_all().await.unwrap(), 3);
    let links = e.host.model().links;
    assert!(bridges.iter().all(|b| links.contains_key(*b)), "{links:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_network_reconciler_repairs_drift_after_a_change_of_the_networks() {
    use pier_engine::networks::NetworkReconciler;
    use pier_engine::reconcile::Loops;
    let e = env().await;
    let mut loops = Loops::default();
    let stats = loops.spawn(
        e.db.clone(),
        Arc::new(NetworkReconciler {
            networks: e.nets.clone(),
            period: Duration::from_secs(3600),
        }),
    );
    let until = |what: &str, f: &dyn Fn() -> bool| {
        let t0 = std::time::Instant::now();
        while !f() {
            assert!(t0.elapsed() < Duration::from_secs(5), "timed out: {what}");
            std::thread::sleep(Duration::from_millis(5));
        }
    };
    let bridge = e.nets.get(&e.project, DEFAULT_NETWORK).unwrap().bridge;
    e.host.remove_link(&bridge);
    // No pass at start (the daemon's start has just reconciled), and deleting a link is
    // no change of the store: only the next change (or the period) wakes a pass.
    std::thread::sleep(Duration::from_millis(100));
    assert!(!e.host.model().links.contains_key(&bridge));
    mknet(&e, "web", "10.10.0.0/24").await;
    until("the default bridge to come back", &|| {
        e.host.model().links.contains_key(&bridge)
    });
    assert_eq!(stats.failures.load(std::sync::atomic::Ordering::Relaxed), 0);
    drop(loops);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pass_leaves_the_firewall_a_create_or_remove_has_just_applied() {
    use pier_engine::networks::NetworkReconciler;
    use pier_engine::reconcile::Loops;
    use std::sync::atomic::Ordering::Relaxed;
    let e = env().await;
    let mut loops = Loops::default();
    let stats = loops.spawn(
        e.db.clone(),
        Arc::new(NetworkReconciler {
            networks: e.nets.clone(),
            period: Duration::from_secs(3600),
        }),
    );
    let until = |what: &str, f: &dyn Fn() -> bool| {
        let t0 = std::time::Instant::now();
        while !f() {
            assert!(t0.elapsed() < Duration::from_secs(5), "timed out: {what}");
            std::thread::sleep(Duration::from_millis(5));
        }
    };
    let applied = e.fw.model().applied;
    let web = mknet(&e, "web", "10.10.0.0/24").await;
    assert_eq!(e.fw.model().applied, applied + 1, "the create applies it");
    until("the pass the create wakes", &|| {
        stats.passes.load(Relaxed) >= 1
    });
    assert_eq!(
        e.fw.model().applied,
        applied + 1,
        "the pass applied the same rules again"
    );
    e.nets.remove(&cx(&e.project), &web.id).await.unwrap();
    assert_eq!(e.fw.model().applied, applied + 2, "the remove applies it");
    until("the pass the remove wakes", &|| {
        stats.passes.load(Relaxed) >= 2
    });
    assert_eq!(e.fw.model().applied, applied + 2);
    assert_eq!(stats.failures.load(Relaxed), 0);
    drop(loops);
    // A pass with nothing changed does nothing; one that finds the table gone puts it
    // back, whole.
    let rules = e.fw.model();
    assert_eq!(e.nets.realize_all().await.unwrap(), 1);
    assert_eq!(e.fw.model(), rules);
    e.fw.flush();
    assert!(e.fw.model().networks.is_empty());
    e.nets.realize_all().await.unwrap();
    assert_eq!(e.fw.model().applied, applied + 3);
    assert_eq!(e.fw.model().networks, rules.networks);
}

#[tokio::test]
async fn each_projects_default_network_has_its_own_bridge_and_subnet() {
    let e = env().await;
    let p1 = ProjectName::try_from("p1".to_string()).unwrap();
    // As `Engine::start` sets up every project's networks.
    e.nets.reconcile(&p1).await.unwrap();
    e.nets.reconcile(&e.project).await.unwrap();
    let d = e.nets.get(&e.project, DEFAULT_NETWORK).unwrap();
    let n1 = e.nets.get(&p1, DEFAULT_NETWORK).unwrap();
    // The default project keeps the bridge name it always had.
    let names = HostNames::for_root(e.dir.path(), false);
    assert_eq!(d.bridge, names.default_bridge());
    assert!(names.owns_bridge(&n1.bridge), "{}", n1.bridge);
    assert_ne!(n1.bridge, d.bridge);
    assert!(!n1.subnet.overlaps(&d.subnet), "{} {}", n1.subnet, d.subnet);
    assert_eq!(n1.project, p1);
    let links = e.host.model().links;
    assert!(links.contains_key(&d.bridge) && links.contains_key(&n1.bridge));
    let fw: Vec<String> =
        e.fw.model()
            .networks
            .iter()
            .map(|n| n.bridge.clone())
            .collect();
    assert!(fw.contains(&d.bridge) && fw.contains(&n1.bridge), "{fw:?}");
    // A request in one project sees its own default network only.
    let listed = e.nets.list(&cx(&p1)).unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].id, n1.id);
    // Reconciling again keeps both as they are.
    e.nets.reconcile(&p1).await.unwrap();
    let again = e.nets.get(&p1, DEFAULT_NETWORK).unwrap();
    assert_eq!(
        (again.id, again.bridge, again.subnet),
        (n1.id, n1.bridge, n1.subnet)
    );
}
