//! The scheduler's filters, scores, commits and races, over a [`MemStore`].

use std::sync::{Arc, Mutex};
use std::time::Duration;

use pier_store::{
    KeyValue, LeaseId, Listing, MemStore, Revision, Store, StoreError, StoreExt, Table, Txn,
    Watcher, WATCH_BUFFER,
};

use super::*;

const GIB: u64 = 1 << 30;

fn res(cpu_millis: u64, memory_gib: u64, disk_gib: u64) -> Resources {
    Resources {
        cpu_millis,
        memory_bytes: memory_gib * GIB,
        disk_bytes: disk_gib * GIB,
    }
}

fn host(id: &str, labels: &[(&str, &str)], state: HostState, capacity: Resources) -> HostRecord {
    HostRecord {
        id: id.to_string(),
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        state,
        capacity,
    }
}

fn up(id: &str, labels: &[(&str, &str)]) -> HostRecord {
    host(id, labels, HostState::Up, res(4000, 8, 100))
}

fn pool(store: Arc<dyn Store>, hosts: &[HostRecord]) -> Scheduler {
    store
        .commit(hosts.iter().map(keys::put_host).collect())
        .unwrap();
    Scheduler::new(store, SchedulerConfig::default()).unwrap()
}

fn mem_pool(hosts: &[HostRecord]) -> Scheduler {
    pool(Arc::new(MemStore::default()), hosts)
}

fn req(id: &str, resources: Resources) -> InstanceRequest {
    InstanceRequest {
        project: "default".into(),
        id: id.into(),
        name: id.into(),
        resources,
        ..Default::default()
    }
}

fn with(mut r: InstanceRequest, f: impl FnOnce(&mut InstanceRequest)) -> InstanceRequest {
    f(&mut r);
    r
}

fn host_of(s: &mut Scheduler, r: &InstanceRequest) -> String {
    s.place(r).unwrap().host
}

fn no_fit(s: &mut Scheduler, r: &InstanceRequest) -> String {
    match s.place(r) {
        Err(SchedError::NoHostFits(n)) => n.to_string(),
        other => panic!("expected no host to fit, got {other:?}"),
    }
}

#[test]
fn only_hosts_that_are_up_take_instances() {
    let mut s = mem_pool(&[
        host("a", &[], HostState::Cordoned, res(4000, 8, 100)),
        host("b", &[], HostState::Draining, res(4000, 8, 100)),
        host("c", &[], HostState::Down, res(4000, 8, 100)),
        host("d", &[], HostState::Cordoned, res(4000, 8, 100)),
    ]);
    assert_eq!(
        no_fit(&mut s, &req("i1", res(100, 1, 0))),
        "no host fits instance default/i1: 0 of 4 hosts fit: 2 are cordoned, 1 is down, 1 is draining"
    );
    s.store.commit(vec![keys::put_host(&up("b", &[]))]).unwrap();
    assert_eq!(host_of(&mut s, &req("i1", res(100, 1, 0))), "b");
}

#[test]
fn constraints_select_hosts_by_label_and_id() {
    let mut s = mem_pool(&[
        up("a", &[("zone", "1"), ("disk", "hdd")]),
        up("b", &[("zone", "2"), ("disk", "ssd")]),
        up("c", &[("zone", "2")]),
    ]);
    let r = |id: &str, c: &[&str]| {
        with(req(id, res(10, 0, 0)), |r| {
            r.constraints = c.iter().map(|c| c.parse().unwrap()).collect()
        })
    };
    assert_eq!(host_of(&mut s, &r("i1", &["host.label.zone==1"])), "a");
    // `!=` admits a host without the label.
    let ne = r("i2", &["host.label.disk!=ssd", "host.label.zone==2"]);
    assert_eq!(host_of(&mut s, &ne), "c");
    assert_eq!(host_of(&mut s, &r("i3", &["host.id==b"])), "b");
    let not_a_or_b = r("i4", &["host.id!=a", "host.id!=b"]);
    assert_eq!(host_of(&mut s, &not_a_or_b), "c");
    assert_eq!(
        no_fit(&mut s, &r("i5", &["host.label.zone==3"])),
        "no host fits instance default/i5: 0 of 3 hosts fit: 3 do not match host.label.zone==3"
    );
    assert_eq!(
        no_fit(
            &mut s,
            &r("i6", &["host.label.zone==2", "host.label.disk==hdd"])
        ),
        "no host fits instance default/i6: 0 of 3 hosts fit: 2 do not match host.label.disk==hdd, \
         1 does not match host.label.zone==2"
    );
    assert!(no_fit(&mut s, &r("i7", &["host.id==nope"])).contains("3 do not match host.id==nope"));
}

#[test]
fn each_resource_must_fit() {
    let mut s = mem_pool(&[
        host("a", &[], HostState::Up, res(1000, 2, 10)),
        host("b", &[], HostState::Up, res(8000, 1, 10)),
        host("c", &[], HostState::Up, res(8000, 8, 5)),
    ]);
    assert_eq!(
        no_fit(&mut s, &req("i1", res(2000, 2, 10))),
        "no host fits instance default/i1: 0 of 3 hosts fit: 1 lacks memory (need 2 GiB), \
         1 lacks CPU (need 2 CPUs), 1 lacks disk (need 10 GiB)"
    );
    assert_eq!(host_of(&mut s, &req("i2", res(1000, 2, 10))), "a");
    // a is now full: its allocation counts.
    assert_eq!(
        no_fit(&mut s, &req("i3", res(500, 2, 6))),
        "no host fits instance default/i3: 0 of 3 hosts fit: 2 lack memory (need 2 GiB), \
         1 lacks disk (need 6 GiB)"
    );
    let alloc = &s.view().host("a").unwrap().allocation().used;
    assert_eq!(*alloc, res(1000, 2, 10));
}

#[test]
fn a_host_port_is_held_by_one_instance_per_host() {
    let mut s = mem_pool(&[up("a", &[]), up("b", &[])]);
    let web = |id: &str, ports: &[&str]| {
        with(req(id, res(10, 0, 0)), |r| {
            r.ports = ports.iter().map(|p| p.parse().unwrap()).collect()
        })
    };
    let first = host_of(&mut s, &web("w1", &["80", "443"]));
    let second = host_of(&mut s, &web("w2", &["443/tcp"]));
    assert_ne!(first, second);
    // Another protocol is another port.
    host_of(&mut s, &web("w3", &["443/udp"]));
    assert_eq!(
        no_fit(&mut s, &web("w4", &["8080", "443"])),
        "no host fits instance default/w4: 0 of 2 hosts fit: 2 have host port 443/tcp in use"
    );
    // Releasing gives the port back.
    s.release("default", "w1").unwrap();
    assert_eq!(host_of(&mut s, &web("w4", &["8080", "443"])), first);
    let ports = &s.view().host(&first).unwrap().allocation().ports;
    let ports: Vec<String> = ports.iter().map(|p| p.to_string()).collect();
    assert!(ports.contains(&"443/tcp".to_string()) && ports.contains(&"8080/tcp".to_string()));
    assert!(!ports.contains(&"80/tcp".to_string()), "{ports:?}");
}

/// A 1 GiB instance labelled `app=APP` with affinity rules (selector, anti).
fn labelled(id: &str, app: &str, rules: &[(&str, bool)]) -> InstanceRequest {
    with(req(id, res(10, 1, 0)), |r| {
        r.labels = [("app".to_string(), app.to_string())].into();
        r.affinity = rules
            .iter()
            .map(|(sel, anti)| AffinityRule {
                anti: *anti,
                selector: sel.parse().unwrap(),
            })
            .collect();
    })
}

#[test]
fn affinity_follows_matching_instances_and_anti_affinity_avoids_them() {
    let mut s = mem_pool(&[up("a", &[]), up("b", &[]), up("c", &[])]);
    let db = host_of(&mut s, &labelled("db1", "db", &[]));
    // Spread alone would go to another host (the db took memory on its own); affinity
    // to the db pins the cache there.
    let cache = labelled("cache1", "cache", &[("instance.label.app==db", false)]);
    assert_eq!(host_of(&mut s, &cache), db);
    assert_ne!(host_of(&mut s, &labelled("free", "free", &[])), db);
    let by_name = labelled("cache2", "cache", &[("instance.name==db1", false)]);
    assert_eq!(host_of(&mut s, &by_name), db);
    // One web per host.
    let anti = [("instance.label.app==web", true)];
    let mut webs: Vec<String> = (1..=3)
        .map(|i| host_of(&mut s, &labelled(&format!("web{i}"), "web", &anti)))
        .collect();
    webs.sort();
    assert_eq!(webs, ["a", "b", "c"]);
    assert_eq!(
        no_fit(&mut s, &labelled("web4", "web", &anti)),
        "no host fits instance default/web4: 0 of 3 hosts fit: \
         3 run an instance matching instance.label.app==web (anti-affinity)"
    );
    // Both rules at once: with the db, without the other caches.
    let both = labelled(
        "x",
        "x",
        &[
            ("instance.label.app==db", false),
            ("instance.label.app==cache", true),
        ],
    );
    assert_eq!(
        no_fit(&mut s, &both),
        "no host fits instance default/x: 0 of 3 hosts fit: \
         2 run no instance matching instance.label.app==db (affinity), \
         1 runs an instance matching instance.label.app==cache (anti-affinity)"
    );
    let missing = labelled("y", "y", &[("instance.name==nothing", false)]);
    assert!(no_fit(&mut s, &missing).contains("3 run no instance matching instance.name==nothing"));
}

#[test]
fn affinity_matches_instances_of_the_same_project_only() {
    let mut s = mem_pool(&[up("a", &[]), up("b", &[])]);
    let other = with(labelled("db1", "db", &[]), |r| r.project = "other".into());
    host_of(&mut s, &other);
    let cache = labelled("c1", "cache", &[("instance.label.app==db", false)]);
    assert!(no_fit(&mut s, &cache).contains("2 run no instance matching"));
    let anti = labelled("c2", "cache", &[("instance.label.app==db", true)]);
    host_of(&mut s, &anti);
    let (a, _) = s.view().assignment("default/c2").unwrap();
    assert_eq!(a.labels.get("app").map(String::as_str), Some("cache"));
}

#[test]
fn spread_takes_the_least_allocated_host_and_binpack_the_most_allocated_that_fits() {
    // The same shape at three sizes: a host's score is the free share of its most used
    // resource, so they fill alike.
    let mut s = mem_pool(&[
        host("small", &[], HostState::Up, res(4000, 4, 100)),
        host("big", &[], HostState::Up, res(16000, 16, 100)),
        host("mid", &[], HostState::Up, res(8000, 8, 100)),
    ]);
    let spread = |id: &str, cpu: u64, gib: u64| req(id, res(cpu, gib, 0));
    let binpack = |id: &str, cpu: u64, gib: u64| {
        with(req(id, res(cpu, gib, 0)), |r| {
            r.strategy = Strategy::Binpack
        })
    };
    let share = |s: &Scheduler, id: &str| s.view().host(id).unwrap().free_share();
    // All free (ties go to the first ID): big, mid, small in turn.
    assert_eq!(host_of(&mut s, &spread("s1", 1000, 1)), "big"); // 15/16 free
    assert_eq!(host_of(&mut s, &spread("s2", 1000, 1)), "mid"); // 7/8
    assert_eq!(host_of(&mut s, &spread("s3", 1000, 1)), "small"); // 3/4
    assert_eq!(host_of(&mut s, &spread("s4", 6000, 0)), "big"); // CPU 9/16 free
    assert_eq!(share(&s, "big"), 562_500);
    // big has the most free memory (14 GiB) but its CPU is the most used: mid.
    assert_eq!(host_of(&mut s, &spread("s5", 100, 1)), "mid"); // 3/4
                                                               // Binpack: the most allocated host that fits.
    assert_eq!(host_of(&mut s, &binpack("b1", 1000, 1)), "big"); // CPU 8/16 free
    assert_eq!(host_of(&mut s, &binpack("b2", 8000, 1)), "big"); // CPU 0 free
    assert_eq!(share(&s, "big"), 0);
    // big is full and below the least share that fits: mid and small tie at 3/4.
    assert_eq!(host_of(&mut s, &binpack("b3", 1000, 1)), "mid");
    assert_eq!(host_of(&mut s, &binpack("b4", 1000, 2)), "mid"); // memory 3/8 free
                                                                 // Nobody holds 4 GiB more: small and mid lack the memory, big the CPU.
    assert_eq!(
        no_fit(&mut s, &binpack("b5", 100, 4)),
        "no host fits instance default/b5: 0 of 3 hosts fit: 2 lack memory (need 4 GiB), \
         1 lacks CPU (need 0.1 CPU)"
    );
    // The same choice through the affinity path (it scores the hosts it finds itself).
    let rule = [("instance.label.app==z", false)];
    let z1 = with(labelled("z1", "z", &[]), |r| {
        r.constraints = vec!["host.id==small".parse().unwrap()]
    });
    assert_eq!(host_of(&mut s, &z1), "small");
    let z2 = with(labelled("z2", "z", &[]), |r| {
        r.constraints = vec!["host.id==mid".parse().unwrap()]
    });
    assert_eq!(host_of(&mut s, &z2), "mid");
    let aff = |id: &str, strategy| with(labelled(id, "y", &rule), |r| r.strategy = strategy);
    assert_eq!(host_of(&mut s, &aff("y1", Strategy::Binpack)), "mid");
    assert_eq!(host_of(&mut s, &aff("y2", Strategy::Spread)), "small");
}

#[test]
fn binpack_skips_full_hosts_without_visiting_them() {
    let hosts: Vec<_> = (0..100)
        .map(|i| host(&format!("h{i:03}"), &[], HostState::Up, res(1000, 4, 10)))
        .collect();
    let mut s = mem_pool(&hosts);
    let r = |i: usize| {
        with(req(&format!("i{i}"), res(1000, 1, 0)), |r| {
            r.strategy = Strategy::Binpack
        })
    };
    // Each instance takes a host's whole CPU: binpack fills the hosts in ID order.
    for i in 0..100 {
        assert_eq!(host_of(&mut s, &r(i)), format!("h{i:03}"));
    }
    let least = s.view().least_share(&res(1000, 1, 0));
    assert_eq!(least, 1_000_000);
    assert!(s.view().up().iter().all(|(share, _)| *share < least));
}

#[test]
fn ties_go_to_the_first_host_id() {
    let ids = ["h3", "h1", "h4", "h2"];
    for strategy in [Strategy::Spread, Strategy::Binpack] {
        let hosts: Vec<_> = ids.iter().map(|id| up(id, &[("z", "1")])).collect();
        let mut s = mem_pool(&hosts);
        let r = |id: &str| {
            with(req(id, res(10, 1, 0)), |r| {
                r.strategy = strategy;
                r.constraints = vec!["host.label.z==1".parse().unwrap()];
            })
        };
        let first = host_of(&mut s, &r("i1"));
        assert_eq!(first, "h1", "{strategy:?}");
        let second = host_of(&mut s, &r("i2"));
        let expect = match strategy {
            // h1 has less free now: the next tie among h2..h4 goes to h2.
            Strategy::Spread => "h2",
            // h1 has the least free memory that fits.
            Strategy::Binpack => "h1",
        };
        assert_eq!(second, expect, "{strategy:?}");
    }
}

#[test]
fn placing_twice_or_releasing_what_is_not_placed_is_refused() {
    let mut s = mem_pool(&[up("a", &[])]);
    let r = req("i1", res(10, 1, 0));
    host_of(&mut s, &r);
    let e = s.place(&r).unwrap_err().to_string();
    assert_eq!(
        e,
        "instance default/i1 is placed on host a already; release it first"
    );
    s.release("default", "i1").unwrap();
    let e = s.release("default", "i1").unwrap_err().to_string();
    assert_eq!(e, "instance default/i1 is not placed on any host");
    let alloc = s.store.get_json::<Allocation>(keys::TABLE, "allocations/a");
    assert_eq!(alloc.unwrap().unwrap(), Allocation::default());
    let bad = with(r, |r| r.project = "a/b".into());
    assert!(matches!(s.place(&bad), Err(SchedError::Invalid(_))));
}

#[test]
fn an_empty_pool_says_so() {
    let mut s = mem_pool(&[]);
    assert_eq!(
        no_fit(&mut s, &req("i1", res(10, 0, 0))),
        "no host fits instance default/i1: the pool has no hosts; add one"
    );
}

/// A store that runs a closure just before one transaction: what another scheduler does
/// between this one's choice and its commit.
struct Interloper {
    inner: Arc<MemStore>,
    before_txn: Mutex<Vec<Box<dyn FnOnce() + Send>>>,
}

impl Store for Interloper {
    fn get_kv(&self, table: Table, key: &str) -> Result<Option<KeyValue>, StoreError> {
        self.inner.get_kv(table, key)
    }
    fn range(&self, table: Table, prefix: &str) -> Result<Listing, StoreError> {
        self.inner.range(table, prefix)
    }
    fn revision(&self) -> Result<Revision, StoreError> {
        self.inner.revision()
    }
    fn txn(&self, txn: Txn, durable: bool) -> Result<Revision, StoreError> {
        let next = self.before_txn.lock().unwrap().pop();
        if let Some(f) = next {
            f();
        }
        self.inner.txn(txn, durable)
    }
    fn watch(&self, table: Table, prefix: &str, from: Revision) -> Result<Watcher, StoreError> {
        self.inner.watch(table, prefix, from)
    }
    fn grant(&self, ttl: Duration) -> Result<LeaseId, StoreError> {
        self.inner.grant(ttl)
    }
    fn keep_alive(&self, lease: LeaseId) -> Result<Duration, StoreError> {
        self.inner.keep_alive(lease)
    }
    fn revoke(&self, lease: LeaseId) -> Result<Revision, StoreError> {
        self.inner.revoke(lease)
    }
    fn expire_leases(&self) -> Result<Vec<LeaseId>, StoreError> {
        self.inner.expire_leases()
    }
}

#[test]
fn a_lost_race_reads_the_winner_and_chooses_again() {
    let inner = Arc::new(MemStore::default());
    // Room for one 6 GiB instance per host.
    let hosts = [up("a", &[]), up("b", &[])];
    let mut other = pool(inner.clone(), &hosts);
    let store = Arc::new(Interloper {
        inner: inner.clone(),
        before_txn: Mutex::new(Vec::new()),
    });
    let mut s = Scheduler::new(store.clone(), SchedulerConfig::default()).unwrap();
    // Both choose a (ties go to the first ID); the other commits first.
    let theirs = Arc::new(Mutex::new(None));
    let slot = theirs.clone();
    store.before_txn.lock().unwrap().push(Box::new(move || {
        *slot.lock().unwrap() = Some(other.place(&req("x", res(100, 6, 0))).unwrap());
    }));
    let mine = s.place(&req("y", res(100, 6, 0))).unwrap();
    assert_eq!(theirs.lock().unwrap().as_ref().unwrap().host, "a");
    assert_eq!((mine.host.as_str(), mine.attempts), ("b", 2));
    assert_eq!(s.conflicts(), 1);

    // A release racing with a placement on the same host: the placement retries on the
    // fresh allocation and fits.
    let mut other = Scheduler::new(inner.clone(), SchedulerConfig::default()).unwrap();
    store.before_txn.lock().unwrap().push(Box::new(move || {
        other.release("default", "x").unwrap();
    }));
    let r = with(req("z", res(100, 2, 0)), |r| {
        r.constraints = vec!["host.id==a".parse().unwrap()]
    });
    let z = s.place(&r).unwrap();
    assert_eq!((z.host.as_str(), z.attempts), ("a", 2));
    let alloc: Allocation = inner
        .get_json(keys::TABLE, "allocations/a")
        .unwrap()
        .unwrap();
    assert_eq!((alloc.used, alloc.instances), (res(100, 2, 0), 1));
}

#[test]
fn a_race_lost_on_the_last_room_ends_in_no_host_fits() {
    let inner = Arc::new(MemStore::default());
    let mut other = pool(inner.clone(), &[up("a", &[])]);
    let store = Arc::new(Interloper {
        inner,
        before_txn: Mutex::new(Vec::new()),
    });
    let mut s = Scheduler::new(store.clone(), SchedulerConfig::default()).unwrap();
    store.before_txn.lock().unwrap().push(Box::new(move || {
        other.place(&req("x", res(100, 6, 0))).unwrap();
    }));
    assert_eq!(
        no_fit(&mut s, &req("y", res(100, 6, 0))),
        "no host fits instance default/y: 0 of 1 host fit: 1 lacks memory (need 6 GiB)"
    );
}

#[test]
fn a_cordon_between_choice_and_commit_is_seen() {
    let inner = Arc::new(MemStore::default());
    let _ = pool(inner.clone(), &[up("a", &[]), up("b", &[])]);
    let store = Arc::new(Interloper {
        inner: inner.clone(),
        before_txn: Mutex::new(Vec::new()),
    });
    let mut s = Scheduler::new(store.clone(), SchedulerConfig::default()).unwrap();
    store.before_txn.lock().unwrap().push(Box::new(move || {
        let cordoned = host("a", &[], HostState::Cordoned, res(4000, 8, 100));
        inner.commit(vec![keys::put_host(&cordoned)]).unwrap();
    }));
    let p = s.place(&req("i", res(100, 1, 0))).unwrap();
    assert_eq!((p.host.as_str(), p.attempts), ("b", 2));
}

#[test]
fn a_watch_that_fell_behind_is_read_again() {
    let store = Arc::new(MemStore::default());
    let mut s = pool(store.clone(), &[up("a", &[])]);
    // More events than a watcher holds, none taken in.
    for i in 0..=WATCH_BUFFER {
        let h = up(&format!("h{i}"), &[]);
        store.commit(vec![keys::put_host(&h)]).unwrap();
    }
    s.refresh().unwrap();
    assert_eq!(s.reloads(), 1);
    assert_eq!(*s.view(), HostView::read(store.as_ref()).unwrap());
    assert_eq!(s.view().hosts().count(), WATCH_BUFFER + 2);
    // And it keeps following.
    let p = s.place(&req("i", res(1, 0, 0))).unwrap();
    s.refresh().unwrap();
    assert_eq!(*s.view(), HostView::read(store.as_ref()).unwrap());
    assert!(s
        .view()
        .assignment("default/i")
        .is_some_and(|(a, _)| a.host == p.host));
}

#[test]
fn names_are_unique_in_a_project_across_the_pool_until_released() {
    let mut s = mem_pool(&[up("a", &[]), up("b", &[])]);
    let named = |id: &str, project: &str| {
        with(req(id, res(10, 0, 0)), |r| {
            r.name = "web".into();
            r.project = project.into();
        })
    };
    host_of(&mut s, &named("i1", "default"));
    // On another host too.
    let e = s
        .place(&with(named("i2", "default"), |r| {
            r.constraints = vec!["host.id==b".parse().unwrap()]
        }))
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "the name \"web\" is taken in project default by an instance of the pool; \
         choose another name, or remove that instance first"
    );
    // Another project has names of its own.
    host_of(&mut s, &named("i3", "other"));
    let held = s.store.get_json::<String>(keys::TABLE, "names/default/web");
    assert_eq!(held.unwrap().as_deref(), Some("i1"));
    s.release("default", "i1").unwrap();
    assert_eq!(s.store.get(keys::TABLE, "names/default/web").unwrap(), None);
    host_of(&mut s, &named("i2", "default"));
}

#[test]
fn a_name_record_without_its_assignment_still_holds_the_name() {
    let mut s = mem_pool(&[up("a", &[])]);
    s.store
        .commit(vec![put("names/default/db".into(), &"gone")])
        .unwrap();
    let r = with(req("i1", res(10, 0, 0)), |r| r.name = "db".into());
    assert!(matches!(s.place(&r), Err(SchedError::NameTaken { .. })));
    // Releasing another instance of that name leaves a name it does not hold.
    let other = with(req("i2", res(10, 0, 0)), |r| r.name = "db2".into());
    host_of(&mut s, &other);
    s.release("default", "i2").unwrap();
    assert!(s
        .store
        .get(keys::TABLE, "names/default/db")
        .unwrap()
        .is_some());
}

#[test]
fn two_schedulers_racing_for_one_name_give_it_to_one() {
    let inner = Arc::new(MemStore::default());
    let mut other = pool(inner.clone(), &[up("a", &[]), up("b", &[])]);
    let store = Arc::new(Interloper {
        inner: inner.clone(),
        before_txn: Mutex::new(Vec::new()),
    });
    let mut s = Scheduler::new(store.clone(), SchedulerConfig::default()).unwrap();
    // The other takes the name on host b between this one's choice (a) and its commit:
    // the allocation of a did not change, only the name did.
    store.before_txn.lock().unwrap().push(Box::new(move || {
        let theirs = with(req("x", res(10, 0, 0)), |r| {
            r.name = "db".into();
            r.constraints = vec!["host.id==b".parse().unwrap()];
        });
        other.place(&theirs).unwrap();
    }));
    let mine = with(req("y", res(10, 0, 0)), |r| {
        r.name = "db".into();
        r.constraints = vec!["host.id==a".parse().unwrap()];
    });
    assert!(matches!(
        s.place(&mine),
        Err(SchedError::NameTaken { ref name, .. }) if name == "db"
    ));
    assert_eq!(s.conflicts(), 1);
    assert!(inner
        .get(keys::TABLE, "assignments/default/y")
        .unwrap()
        .is_none());
    let alloc: Option<Allocation> = inner.get_json(keys::TABLE, "allocations/a").unwrap();
    assert!(alloc.is_none(), "{alloc:?}");

    // Many threads, each its own scheduler, one name: exactly one wins.
    let winners: Vec<bool> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..8)
            .map(|i| {
                let inner = inner.clone();
                scope.spawn(move || {
                    let mut s = Scheduler::new(inner, SchedulerConfig::default()).unwrap();
                    let r = with(req(&format!("t{i}"), res(10, 0, 0)), |r| {
                        r.name = "shared".into()
                    });
                    match s.place(&r) {
                        Ok(_) => true,
                        Err(SchedError::NameTaken { .. }) => false,
                        Err(e) => panic!("{e}"),
                    }
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(winners.iter().filter(|w| **w).count(), 1, "{winners:?}");
}

#[test]
fn assignments_written_before_specs_are_read() {
    let store = Arc::new(MemStore::default());
    let old = serde_json::json!({
        "project": "default", "id": "old", "name": "old", "host": "a",
        "resources": {"cpu_millis": 10, "memory_bytes": 0, "disk_bytes": 0}
    });
    store
        .commit(vec![put("assignments/default/old".into(), &old)])
        .unwrap();
    let mut s = pool(store, &[up("a", &[])]);
    let (a, _) = s.view().assignment("default/old").unwrap();
    assert_eq!(a.spec, None);
    // It holds its name for the scheduler though no name record was written for it.
    let r = with(req("new", res(10, 0, 0)), |r| r.name = "old".into());
    assert!(matches!(s.place(&r), Err(SchedError::NameTaken { .. })));
    let spec = serde_json::json!({"image": "busybox"});
    let r = with(req("new", res(10, 0, 0)), |r| r.spec = Some(spec.clone()));
    host_of(&mut s, &r);
    assert_eq!(
        s.view().assignment("default/new").unwrap().0.spec,
        Some(spec)
    );
}

#[test]
fn a_host_whose_heartbeat_is_gone_takes_nothing_when_heartbeats_are_required() {
    use crate::member::Heartbeater;
    let store = Arc::new(MemStore::default());
    store
        .commit(vec![
            keys::put_host(&up("a", &[])),
            keys::put_host(&up("b", &[])),
        ])
        .unwrap();
    let config = SchedulerConfig {
        require_heartbeat: true,
        ..Default::default()
    };
    let mut s = Scheduler::new(store.clone(), config).unwrap();
    assert_eq!(
        no_fit(&mut s, &req("i1", res(10, 0, 0))),
        "no host fits instance default/i1: 0 of 2 hosts fit: 2 are down"
    );
    let mut beat_a = Heartbeater::new("a", Duration::from_secs(5));
    beat_a.beat(store.as_ref()).unwrap();
    assert_eq!(host_of(&mut s, &req("i1", res(10, 0, 0))), "a");
    let mut beat_b = Heartbeater::new("b", Duration::from_secs(5));
    beat_b.beat(store.as_ref()).unwrap();
    // Beats rewrite the record: still open.
    beat_a.beat(store.as_ref()).unwrap();
    assert_eq!(host_of(&mut s, &req("i2", res(10, 0, 0))), "b");
    beat_a.stop(store.as_ref()).unwrap();
    let on_a = with(req("i3", res(10, 0, 0)), |r| {
        r.constraints = vec!["host.id==a".parse().unwrap()]
    });
    assert_eq!(
        no_fit(&mut s, &on_a),
        "no host fits instance default/i3: 0 of 2 hosts fit: 1 is down, 1 does not match host.id==a"
    );
    assert_eq!(host_of(&mut s, &req("i4", res(10, 0, 0))), "b");
    // The view followed by events equals a fresh read.
    s.refresh().unwrap();
    let mut fresh = HostView::read(store.as_ref()).unwrap();
    fresh.require_heartbeats(true);
    assert_eq!(*s.view(), fresh);
    // Without the requirement (the default), the records' states alone decide.
    let mut plain = mem_pool(&[up("a", &[])]);
    assert_eq!(host_of(&mut plain, &req("i1", res(10, 0, 0))), "a");
}

#[test]
fn a_rename_moves_the_name_in_the_pool() {
    let mut s = mem_pool(&[up("a", &[]), up("b", &[])]);
    let named = |id: &str, name: &str| with(req(id, res(10, 0, 0)), |r| r.name = name.into());
    host_of(&mut s, &named("i1", "web"));
    host_of(&mut s, &named("i2", "db"));
    assert!(matches!(
        s.rename("default", "i1", "db"),
        Err(SchedError::NameTaken { .. })
    ));
    assert_eq!(s.rename("default", "i1", "front").unwrap(), "web");
    let held = |s: &Scheduler, name: &str| {
        s.store
            .get_json::<String>(keys::TABLE, &format!("names/default/{name}"))
            .unwrap()
    };
    assert_eq!(held(&s, "front").as_deref(), Some("i1"));
    assert_eq!(held(&s, "web"), None);
    assert_eq!(s.view().assignment("default/i1").unwrap().0.name, "front");
    // The old name is free, the new one taken.
    host_of(&mut s, &named("i3", "web"));
    assert!(matches!(
        s.place(&named("i4", "front")),
        Err(SchedError::NameTaken { .. })
    ));
    // Affinity by name follows the rename.
    let near = with(req("i5", res(10, 0, 0)), |r| {
        r.affinity = vec![AffinityRule {
            anti: false,
            selector: "instance.name==front".parse().unwrap(),
        }]
    });
    let front_host = s.view().assignment("default/i1").unwrap().0.host.clone();
    assert_eq!(host_of(&mut s, &near), front_host);
    assert!(matches!(
        s.rename("default", "nope", "x"),
        Err(SchedError::NotPlaced { .. })
    ));
    assert!(matches!(
        s.rename("default", "i1", "a/b"),
        Err(SchedError::Invalid(_))
    ));
}

fn allocation(store: &dyn Store, host: &str) -> Allocation {
    store
        .get_json(keys::TABLE, &keys::allocation(host))
        .unwrap()
        .unwrap_or_default()
}

#[test]
fn a_relocation_moves_the_assignment_and_the_resources_to_another_host() {
    let store = Arc::new(MemStore::default());
    let mut s = pool(store.clone(), &[up("a", &[]), up("b", &[("zone", "x")])]);
    let r = with(req("i1", res(500, 2, 0)), |r| {
        r.ports = vec!["8080/tcp".parse().unwrap()];
        r.constraints = vec!["host.id==a".parse().unwrap()];
        r.spec = Some(serde_json::json!({"image": "busybox"}));
    });
    assert_eq!(host_of(&mut s, &r), "a");
    store
        .commit(vec![Op::Put {
            table: keys::TABLE,
            key: keys::placed("default/i1"),
            value: b"{}".to_vec(),
        }])
        .unwrap();
    // The request's pin to a cannot hold once a is excluded.
    assert!(matches!(
        s.relocate(&r, "a", true),
        Err(SchedError::NoHostFits(_))
    ));
    let free = with(r.clone(), |r| r.constraints.clear());
    let moved = s.relocate(&free, "a", true).unwrap();
    assert_eq!(moved.host, "b");
    let (a, _) = s.view().assignment("default/i1").unwrap();
    assert_eq!(
        (a.host.as_str(), a.start, a.moved_from.as_deref()),
        ("b", true, Some("a"))
    );
    assert_eq!(a.spec, r.spec, "the create request moves with it");
    assert!(store
        .get(keys::TABLE, &keys::placed("default/i1"))
        .unwrap()
        .is_none());
    let (old, new) = (
        allocation(store.as_ref(), "a"),
        allocation(store.as_ref(), "b"),
    );
    assert_eq!(
        (old.used, old.instances, old.ports.len()),
        (res(0, 0, 0), 0, 0)
    );
    assert_eq!(
        (new.used, new.instances, new.ports.len()),
        (res(500, 2, 0), 1, 1)
    );
    // Moved already: a second move off a is refused, naming where it is.
    let e = s.relocate(&free, "a", true).unwrap_err();
    assert!(
        matches!(&e, SchedError::NotOn { host, .. } if host == "b"),
        "{e}"
    );
    // Back to a (b excluded), and nothing else fits: b is the only other host.
    assert_eq!(s.relocate(&free, "b", false).unwrap().host, "a");
    assert!(!s.view().assignment("default/i1").unwrap().0.start);
    assert!(matches!(
        s.relocate(&req("nope", res(1, 0, 0)), "a", true),
        Err(SchedError::NotPlaced { .. })
    ));
    // Its release still gives everything back.
    s.release("default", "i1").unwrap();
    assert_eq!(allocation(store.as_ref(), "a").instances, 0);
    assert_eq!(allocation(store.as_ref(), "b").instances, 0);
}

#[test]
fn a_relocation_racing_a_placement_never_overbooks() {
    let inner = Arc::new(MemStore::default());
    // Room for one 6 GiB instance per host.
    let mut other = pool(inner.clone(), &[up("a", &[]), up("b", &[]), up("c", &[])]);
    let store = Arc::new(Interloper {
        inner: inner.clone(),
        before_txn: Mutex::new(Vec::new()),
    });
    let mut s = Scheduler::new(store.clone(), SchedulerConfig::default()).unwrap();
    let x = with(req("x", res(100, 6, 0)), |r| {
        r.constraints = vec!["host.id==a".parse().unwrap()]
    });
    assert_eq!(host_of(&mut other, &x), "a");
    // The move chooses b (ties go to the first ID); the other scheduler fills b first.
    store.before_txn.lock().unwrap().push(Box::new(move || {
        let y = with(req("y", res(100, 6, 0)), |r| {
            r.constraints = vec!["host.id==b".parse().unwrap()]
        });
        other.place(&y).unwrap();
    }));
    let free = with(x.clone(), |r| r.constraints.clear());
    let moved = s.relocate(&free, "a", true).unwrap();
    assert_eq!((moved.host.as_str(), moved.attempts), ("c", 2));
    assert_eq!(s.conflicts(), 1);
    for h in ["a", "b", "c"] {
        let alloc = allocation(inner.as_ref(), h);
        assert!(alloc.used.memory_bytes <= 8 * GIB, "{h}: {alloc:?}");
    }
    assert_eq!(allocation(inner.as_ref(), "a").instances, 0);
    assert_eq!(allocation(inner.as_ref(), "c").instances, 1);

    // Many schedulers moving one instance off c at once: one moves it, the others
    // find it moved (or no room left: a is the only free host).
    let winners: Vec<bool> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..6)
            .map(|_| {
                let (inner, free) = (inner.clone(), free.clone());
                scope.spawn(move || {
                    let mut s = Scheduler::new(inner, SchedulerConfig::default()).unwrap();
                    match s.relocate(&free, "c", true) {
                        Ok(p) => {
                            assert_eq!(p.host, "a");
                            true
                        }
                        Err(SchedError::NotOn { .. }) => false,
                        Err(e) => panic!("{e}"),
                    }
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(winners.iter().filter(|w| **w).count(), 1, "{winners:?}");
    assert_eq!(allocation(inner.as_ref(), "a").instances, 1);
    assert_eq!(allocation(inner.as_ref(), "c").instances, 0);
}
