//! Two schedulers on one store race many placements onto a few hosts: no host is ever
//! over capacity or holds a host port twice, and every placement either landed or got a
//! "no host fits" answer saying why.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::Duration;

use pier_cluster::scheduler::{
    keys, Allocation, Assignment, HostRecord, HostState, InstanceRequest, Resources, SchedError,
    Scheduler, SchedulerConfig, Strategy,
};
use pier_store::{Event, FaultyStore, RedbStore, Store, StoreExt};

const MIB: u64 = 1 << 20;
const HOSTS: usize = 3;
/// Per host: room for this many instances of [`each`].
const ROOM: u64 = 8;
const PER_SCHEDULER: usize = 40;

fn each() -> Resources {
    Resources {
        cpu_millis: 500,
        memory_bytes: 512 * MIB,
        disk_bytes: MIB,
    }
}

fn capacity() -> Resources {
    Resources {
        cpu_millis: each().cpu_millis * ROOM,
        memory_bytes: each().memory_bytes * ROOM,
        disk_bytes: each().disk_bytes * ROOM,
    }
}

fn hosts() -> Vec<HostRecord> {
    let mut hosts: Vec<_> = (0..HOSTS)
        .map(|i| HostRecord {
            id: format!("h{i}"),
            labels: [("zone".to_string(), "a".to_string())].into(),
            state: HostState::Up,
            capacity: capacity(),
        })
        .collect();
    hosts.push(HostRecord {
        id: "cordoned".into(),
        labels: Default::default(),
        state: HostState::Cordoned,
        capacity: capacity(),
    });
    hosts
}

fn request(scheduler: usize, i: usize) -> InstanceRequest {
    InstanceRequest {
        project: "default".into(),
        id: format!("s{scheduler}-{i}"),
        name: format!("s{scheduler}-{i}"),
        resources: each(),
        // Every fourth publishes the same host port: one per host at most.
        ports: if i.is_multiple_of(4) {
            vec!["8080/tcp".parse().unwrap()]
        } else {
            Vec::new()
        },
        strategy: if i.is_multiple_of(2) {
            Strategy::Spread
        } else {
            Strategy::Binpack
        },
        ..Default::default()
    }
}

fn race(store: Arc<dyn Store>, expect_conflicts: bool) {
    store
        .commit(hosts().iter().map(keys::put_host).collect())
        .unwrap();
    // Sees every allocation ever written from here on.
    let mut allocations = store.watch(keys::TABLE, keys::ALLOCATIONS, 0).unwrap();
    let start = Arc::new(Barrier::new(2));
    let runs: Vec<_> = (0..2)
        .map(|n| {
            let (store, start) = (store.clone(), start.clone());
            thread::spawn(move || {
                let mut s = Scheduler::new(store, SchedulerConfig::default()).unwrap();
                start.wait();
                let results: Vec<_> = (0..PER_SCHEDULER)
                    .map(|i| s.place(&request(n, i)))
                    .collect();
                (results, s.conflicts())
            })
        })
        .collect();
    let mut landed = BTreeMap::<String, String>::new();
    let mut conflicts = 0;
    for (n, run) in runs.into_iter().enumerate() {
        let (results, lost) = run.join().unwrap();
        conflicts += lost;
        for (i, r) in results.into_iter().enumerate() {
            match r {
                Ok(p) => {
                    landed.insert(format!("default/s{n}-{i}"), p.host);
                }
                Err(SchedError::NoHostFits(why)) => {
                    let why = why.to_string();
                    assert!(
                        why.starts_with(&format!(
                            "no host fits instance default/s{n}-{i}: 0 of 4 hosts fit: "
                        )) && why.contains("1 is cordoned")
                            && (why.contains("lack memory (need 512 MiB)")
                                || why.contains("have host port 8080/tcp in use")),
                        "{why}"
                    );
                }
                Err(e) => panic!("placement s{n}-{i} failed otherwise: {e}"),
            }
        }
    }
    // At every revision, every host's allocation was within its capacity.
    let mut writes = 0;
    while let Some(e) = allocations.try_next() {
        if let Event::Put { kv, key, .. } = e.unwrap() {
            let a: Allocation = serde_json::from_slice(&kv.value).unwrap();
            assert!(a.used.fits_in(&capacity()), "{key} overbooked: {a:?}");
            writes += 1;
        }
    }
    assert_eq!(writes, landed.len(), "one allocation write per placement");

    // The hosts are exactly full (capacity binds, nothing was lost), every placement is
    // stored where it was reported, and each allocation is the sum of its assignments.
    assert_eq!(landed.len(), HOSTS * ROOM as usize);
    let stored: Vec<(String, Assignment)> =
        store.list_json(keys::TABLE, keys::ASSIGNMENTS).unwrap();
    assert_eq!(stored.len(), landed.len());
    let mut per_host: BTreeMap<String, (Resources, BTreeSet<String>, u64)> = BTreeMap::new();
    for (key, a) in &stored {
        let instance = key.strip_prefix(keys::ASSIGNMENTS).unwrap();
        assert_eq!(landed.get(instance), Some(&a.host));
        let entry = per_host.entry(a.host.clone()).or_default();
        entry.0 = entry.0.plus(&a.resources);
        for p in &a.ports {
            assert!(entry.1.insert(p.to_string()), "{p} twice on {}", a.host);
        }
        entry.2 += 1;
    }
    assert_eq!(per_host.len(), HOSTS, "the cordoned host took nothing");
    for (host, (used, ports, count)) in per_host {
        let alloc: Allocation = store
            .get_json(keys::TABLE, &keys::allocation(&host))
            .unwrap()
            .unwrap();
        assert_eq!(alloc.used, capacity(), "{host}");
        assert_eq!((alloc.used, alloc.instances), (used, count), "{host}");
        let alloc_ports: BTreeSet<String> = alloc.ports.iter().map(|p| p.to_string()).collect();
        assert_eq!(alloc_ports, ports, "{host}");
    }
    if expect_conflicts {
        assert!(conflicts > 0, "the schedulers never raced");
    }
}

#[test]
fn two_schedulers_never_overbook_a_host() {
    // The commit waits a little, so that both schedulers choose on the same view and
    // the loser has to read the winner's placement and choose again.
    let store = Arc::new(FaultyStore::default());
    store.delay_txns(Some(Duration::from_millis(1)));
    race(store, true);
}

#[test]
fn two_schedulers_never_overbook_a_host_on_redb() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(RedbStore::open(&dir.path().join("state.redb")).unwrap());
    race(store, false);
}
