//! Behaviour every backend must share, run against each of them (see [`run`] and
//! [`run_with`]).

use std::any::Any;
use std::sync::Arc;
use std::time::Duration;

use tempfile::TempDir;

use crate::*;

/// A check of one part of the contract, on a fresh store and its [`Env`].
type Check = fn(&dyn Store, &dyn Env);

/// How the checks move a backend's time and history. With a [`ManualClock`] (the embedded
/// backends) lease time is exact; etcd's leases run on real time in etcd's leader.
pub trait Env {
    /// The time to live of the leases the checks grant.
    fn lease_ttl(&self) -> Duration {
        Duration::from_secs(10)
    }
    /// Lets `by` pass for the store's leases.
    fn advance(&self, by: Duration);
    /// How long after its deadline a lease may still be there (none with a manual clock).
    fn expiry_slack(&self) -> Duration {
        Duration::ZERO
    }
    /// Called once the store's history before `upto` should be gone. A backend with a
    /// bounded history already forgot it when [`HISTORY_EVENTS`] newer events were
    /// committed; etcd keeps history until it is compacted.
    fn compact(&self, _upto: Revision) {}
}

/// A store to check, its [`Env`], and whatever must live as long as it (a directory, a
/// server).
pub struct Fixture {
    pub store: Arc<dyn Store>,
    pub env: Box<dyn Env>,
    pub keep: Box<dyn Any>,
}

pub const CHECKS: &[(&str, Check)] = &[
    ("basics", basics),
    ("revisions", revisions),
    ("compares", compares),
    ("atomic_across_tables", atomic_across_tables),
    ("watch_order_and_filter", watch_order_and_filter),
    ("watch_replays_from_revision", watch_replays_from_revision),
    ("watch_compacted", watch_compacted),
    ("watch_lagged", watch_lagged),
    ("lease_expiry", lease_expiry),
    ("lease_keep_alive", lease_keep_alive),
    ("lease_revoke", lease_revoke),
];

/// Runs every check, each on a store made by `fresh` (with the directory holding its
/// files, if any, removed after the check).
pub fn run(fresh: &dyn Fn(Arc<ManualClock>) -> (Box<dyn Store>, Option<TempDir>)) {
    run_with(&|| {
        let clock = Arc::new(ManualClock::new());
        let (store, dir) = fresh(clock.clone());
        Fixture {
            store: Arc::from(store),
            env: Box::new(ClockEnv(clock)),
            keep: Box::new(dir),
        }
    });
}

/// Runs every check, each on a fixture made by `fresh` and dropped after the check.
pub fn run_with(fresh: &dyn Fn() -> Fixture) {
    for (name, check) in CHECKS {
        eprintln!("conformance: {name}");
        let Fixture { store, env, keep } = fresh();
        check(store.as_ref(), env.as_ref());
        // The store goes before what it lives on.
        drop((store, env));
        drop(keep);
    }
}

/// The embedded backends' lease time: a [`ManualClock`].
struct ClockEnv(Arc<ManualClock>);

impl Env for ClockEnv {
    fn advance(&self, by: Duration) {
        self.0.advance(by);
    }
}

fn put(table: Table, key: &str, value: &str) -> Op {
    Op::Put {
        table,
        key: key.into(),
        value: value.into(),
    }
}

fn del(table: Table, key: &str) -> Op {
    Op::Delete {
        table,
        key: key.into(),
    }
}

fn when(table: Table, key: &str, expect: Expect) -> Compare {
    Compare {
        table,
        key: key.into(),
        expect,
    }
}

fn txn(store: &dyn Store, compares: Vec<Compare>, ops: Vec<Op>) -> Result<Revision, StoreError> {
    store.txn(Txn { compares, ops }, true)
}

fn value(store: &dyn Store, table: Table, key: &str) -> Option<String> {
    let v = store.get(table, key).unwrap()?;
    Some(String::from_utf8(v).unwrap())
}

/// Every event waiting on `w`, panicking on an error.
fn drain(w: &mut Watcher) -> Vec<Event> {
    std::iter::from_fn(|| w.try_next())
        .map(|e| e.unwrap())
        .collect()
}

fn summary(events: &[Event]) -> Vec<(Revision, String, Option<String>)> {
    events
        .iter()
        .map(|e| {
            let value = match e {
                Event::Put { kv, .. } => Some(String::from_utf8(kv.value.clone()).unwrap()),
                Event::Delete { .. } => None,
            };
            (e.revision(), e.key().to_string(), value)
        })
        .collect()
}

fn basics(store: &dyn Store, _: &dyn Env) {
    assert_eq!(store.get(Table::Images, "default/a").unwrap(), None);
    let mut b = Batch::new();
    b.put_json(Table::Images, "default/a", &1u32)
        .put_json(Table::Images, "default/b", &2u32)
        .put_json(Table::Images, "other/c", &3u32)
        .put_json(Table::Tags, "default/a", &"x");
    b.commit(store).unwrap();
    assert_eq!(
        store.get_json::<u32>(Table::Images, "default/b").unwrap(),
        Some(2)
    );
    let listed: Vec<_> = store.list_json::<u32>(Table::Images, "default/").unwrap();
    assert_eq!(
        listed,
        vec![("default/a".to_string(), 1), ("default/b".to_string(), 2)]
    );
    assert_eq!(store.list(Table::Images, "").unwrap().len(), 3);
    // Tables are separate namespaces.
    assert_eq!(store.list(Table::Tags, "").unwrap().len(), 1);

    let mut b = Batch::new();
    b.delete(Table::Images, "default/a")
        .put_json(Table::Images, "default/b", &20u32);
    b.commit(store).unwrap();
    assert_eq!(store.get(Table::Images, "default/a").unwrap(), None);
    assert_eq!(
        store.get_json::<u32>(Table::Images, "default/b").unwrap(),
        Some(20)
    );

    // A lazy commit is visible at once, and a durable one after it carries it.
    let mut b = Batch::new();
    b.put_json(Table::Containers, "default/lazy", &7u32);
    b.commit_lazy(store).unwrap();
    assert_eq!(
        store
            .get_json::<u32>(Table::Containers, "default/lazy")
            .unwrap(),
        Some(7)
    );
    let mut b = Batch::new();
    b.delete(Table::Containers, "default/lazy");
    b.commit(store).unwrap();
    assert_eq!(store.get(Table::Containers, "default/lazy").unwrap(), None);

    // A record that is not the JSON asked for is reported as corrupt, naming it.
    store
        .commit(vec![put(Table::Images, "default/bad", "{")])
        .unwrap();
    let err = store
        .get_json::<u32>(Table::Images, "default/bad")
        .unwrap_err();
    assert!(err.to_string().contains("images/default/bad"), "{err}");
}

fn revisions(store: &dyn Store, _: &dyn Env) {
    let r0 = store.revision().unwrap();
    // One transaction, one revision, whatever the number of keys and tables.
    let r1 = txn(
        store,
        vec![],
        vec![put(Table::Images, "p/a", "1"), put(Table::Tags, "p/t", "t")],
    )
    .unwrap();
    assert_eq!(r1, r0 + 1);
    assert_eq!(store.revision().unwrap(), r1);
    let a = store.get_kv(Table::Images, "p/a").unwrap().unwrap();
    assert_eq!((a.create_revision, a.mod_revision, a.lease), (r1, r1, None));
    assert_eq!(
        store
            .get_kv(Table::Tags, "p/t")
            .unwrap()
            .unwrap()
            .mod_revision,
        r1
    );

    // An update keeps the create revision; the counter is store-wide, not per table.
    let r2 = txn(store, vec![], vec![put(Table::Images, "p/a", "2")]).unwrap();
    let r3 = txn(store, vec![], vec![put(Table::Volumes, "p/v", "v")]).unwrap();
    assert_eq!((r2, r3), (r1 + 1, r1 + 2));
    let a = store.get_kv(Table::Images, "p/a").unwrap().unwrap();
    assert_eq!(
        (a.value, a.create_revision, a.mod_revision),
        (b"2".to_vec(), r1, r2)
    );

    // A range reports the store revision it read at, and each entry's own.
    let listing = store.range(Table::Images, "p/").unwrap();
    assert_eq!(listing.revision, r3);
    assert_eq!(listing.kvs.len(), 1);
    assert_eq!(listing.kvs[0].1.mod_revision, r2);

    // Changing nothing does not raise the revision.
    let same = txn(store, vec![], vec![del(Table::Images, "p/absent")]).unwrap();
    assert_eq!(same, r3);
    assert!(Batch::new().commit_at(store, true).unwrap().is_none());
    assert_eq!(store.revision().unwrap(), r3);

    // A delete is a revision; re-creating starts a new create revision.
    let r4 = txn(store, vec![], vec![del(Table::Images, "p/a")]).unwrap();
    assert_eq!(r4, r3 + 1);
    assert_eq!(store.get_kv(Table::Images, "p/a").unwrap(), None);
    let r5 = txn(store, vec![], vec![put(Table::Images, "p/a", "3")]).unwrap();
    let a = store.get_kv(Table::Images, "p/a").unwrap().unwrap();
    assert_eq!((a.create_revision, a.mod_revision), (r5, r5));
}

fn compares(store: &dyn Store, _: &dyn Env) {
    let t = Table::Containers;
    // Absent: create-if-absent wins once.
    let r1 = txn(
        store,
        vec![when(t, "p/name", Expect::Absent)],
        vec![put(t, "p/name", "one")],
    )
    .unwrap();
    let err = txn(
        store,
        vec![when(t, "p/name", Expect::Absent)],
        vec![put(t, "p/name", "two"), put(t, "p/other", "x")],
    )
    .unwrap_err();
    match &err {
        StoreError::Conflict {
            table,
            key,
            expected,
            found,
        } => assert_eq!(
            (*table, key.as_str(), *expected, *found),
            (t, "p/name", Expect::Absent, Some(r1))
        ),
        other => panic!("expected a conflict, got {other:?}"),
    }
    assert!(err.to_string().contains("containers/p/name"), "{err}");
    assert_eq!(value(store, t, "p/name").as_deref(), Some("one"));
    assert_eq!(value(store, t, "p/other"), None);
    assert_eq!(
        store.revision().unwrap(),
        r1,
        "a failed txn raised the revision"
    );

    // Present.
    let err = txn(
        store,
        vec![when(t, "p/missing", Expect::Present)],
        vec![put(t, "p/other", "x")],
    )
    .unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::Conflict {
                found: None,
                expected: Expect::Present,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(value(store, t, "p/other"), None);
    txn(
        store,
        vec![when(t, "p/name", Expect::Present)],
        vec![put(t, "p/other", "x")],
    )
    .unwrap();
    assert_eq!(value(store, t, "p/other").as_deref(), Some("x"));

    // ModRevision: compare-and-swap; a stale revision loses and learns the current one.
    let r2 = txn(
        store,
        vec![when(t, "p/name", Expect::ModRevision(r1))],
        vec![put(t, "p/name", "swapped")],
    )
    .unwrap();
    let err = txn(
        store,
        vec![when(t, "p/name", Expect::ModRevision(r1))],
        vec![put(t, "p/name", "stale")],
    )
    .unwrap_err();
    assert!(
        matches!(err, StoreError::Conflict { found: Some(f), .. } if f == r2),
        "{err:?}"
    );
    assert_eq!(value(store, t, "p/name").as_deref(), Some("swapped"));
    let err = txn(
        store,
        vec![when(t, "p/missing", Expect::ModRevision(r1))],
        vec![],
    )
    .unwrap_err();
    assert!(
        matches!(err, StoreError::Conflict { found: None, .. }),
        "{err:?}"
    );

    // A guard without ops answers without writing; Batch carries compares too.
    assert_eq!(
        txn(store, vec![when(t, "p/name", Expect::Present)], vec![]).unwrap(),
        r2
    );
    let mut b = Batch::new();
    b.require(t, "p/name", Expect::Absent)
        .put_json(t, "p/x", &1u32);
    assert!(matches!(b.commit(store), Err(StoreError::Conflict { .. })));
    assert_eq!(value(store, t, "p/x"), None);
}

fn atomic_across_tables(store: &dyn Store, _: &dyn Env) {
    txn(store, vec![], vec![put(Table::Tags, "p/guard", "g")]).unwrap();
    let before = store.revision().unwrap();
    let ops = || {
        vec![
            put(Table::Images, "p/i", "i"),
            put(Table::Containers, "p/c", "c"),
            del(Table::Tags, "p/guard"),
        ]
    };
    // The second of two compares fails: nothing in any table changes.
    let err = txn(
        store,
        vec![
            when(Table::Tags, "p/guard", Expect::Present),
            when(Table::Volumes, "p/v", Expect::Present),
        ],
        ops(),
    )
    .unwrap_err();
    assert!(
        matches!(
            &err,
            StoreError::Conflict {
                table: Table::Volumes,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(value(store, Table::Images, "p/i"), None);
    assert_eq!(value(store, Table::Containers, "p/c"), None);
    assert_eq!(value(store, Table::Tags, "p/guard").as_deref(), Some("g"));

    // An op that cannot apply (a put on a lease that does not exist), listed after
    // others, fails the whole transaction.
    let mut bad = ops();
    bad.push(Op::PutLeased {
        table: Table::Volumes,
        key: "p/leased".into(),
        value: b"l".to_vec(),
        lease: LeaseId(999_999),
    });
    let err = txn(store, vec![], bad).unwrap_err();
    assert!(matches!(err, StoreError::LeaseNotFound { .. }), "{err:?}");
    assert_eq!(value(store, Table::Images, "p/i"), None);
    assert_eq!(value(store, Table::Tags, "p/guard").as_deref(), Some("g"));
    assert_eq!(store.revision().unwrap(), before);

    // When it succeeds, every table changes at the same revision.
    let r = txn(
        store,
        vec![when(Table::Tags, "p/guard", Expect::Present)],
        ops(),
    )
    .unwrap();
    assert_eq!(r, before + 1);
    assert_eq!(
        store
            .get_kv(Table::Images, "p/i")
            .unwrap()
            .unwrap()
            .mod_revision,
        r
    );
    assert_eq!(
        store
            .get_kv(Table::Containers, "p/c")
            .unwrap()
            .unwrap()
            .mod_revision,
        r
    );
    assert_eq!(value(store, Table::Tags, "p/guard"), None);
}

fn watch_order_and_filter(store: &dyn Store, _: &dyn Env) {
    let mut w = store.watch(Table::Images, "p/", 0).unwrap();
    assert!(w.try_next().is_none());
    let r1 = txn(store, vec![], vec![put(Table::Images, "p/a", "1")]).unwrap();
    // Neither another prefix nor another table is seen.
    txn(store, vec![], vec![put(Table::Images, "q/a", "x")]).unwrap();
    txn(store, vec![], vec![put(Table::Tags, "p/a", "x")]).unwrap();
    let r2 = txn(
        store,
        vec![],
        vec![
            put(Table::Images, "p/b", "2"),
            put(Table::Images, "p/a", "3"),
        ],
    )
    .unwrap();
    let r3 = txn(store, vec![], vec![del(Table::Images, "p/a")]).unwrap();
    // A failed transaction sends nothing.
    txn(
        store,
        vec![when(Table::Images, "p/b", Expect::Absent)],
        vec![put(Table::Images, "p/c", "c")],
    )
    .unwrap_err();
    let events = drain(&mut w);
    let some = |s: &str| Some(s.to_string());
    assert_eq!(
        summary(&events),
        vec![
            (r1, "p/a".into(), some("1")),
            (r2, "p/b".into(), some("2")),
            (r2, "p/a".into(), some("3")),
            (r3, "p/a".into(), None),
        ]
    );
    match &events[2] {
        Event::Put { table, kv, .. } => {
            assert_eq!(*table, Table::Images);
            assert_eq!((kv.create_revision, kv.mod_revision), (r1, r2));
        }
        other => panic!("expected a put, got {other:?}"),
    }
}

fn watch_replays_from_revision(store: &dyn Store, _: &dyn Env) {
    let r1 = txn(store, vec![], vec![put(Table::Networks, "p/a", "1")]).unwrap();
    let r2 = txn(store, vec![], vec![put(Table::Networks, "p/b", "2")]).unwrap();
    let r3 = txn(store, vec![], vec![del(Table::Networks, "p/a")]).unwrap();
    // Read, then watch from the read's revision + 1: nothing missed, nothing repeated.
    let mut from_r2 = store.watch(Table::Networks, "p/", r2).unwrap();
    let mut from_now = store.watch(Table::Networks, "p/", 0).unwrap();
    let listing = store.range(Table::Networks, "p/").unwrap();
    let mut after_read = store
        .watch(Table::Networks, "p/", listing.revision + 1)
        .unwrap();
    let r4 = txn(store, vec![], vec![put(Table::Networks, "p/c", "4")]).unwrap();
    let revs = |w: &mut Watcher| drain(w).iter().map(Event::revision).collect::<Vec<_>>();
    assert_eq!(revs(&mut from_r2), vec![r2, r3, r4]);
    assert_eq!(revs(&mut from_now), vec![r4]);
    assert_eq!(revs(&mut after_read), vec![r4]);
    let mut from_r1 = store.watch(Table::Networks, "p/", r1).unwrap();
    assert_eq!(revs(&mut from_r1), vec![r1, r2, r3, r4]);
}

fn watch_compacted(store: &dyn Store, env: &dyn Env) {
    let r1 = txn(store, vec![], vec![put(Table::Layers, "old", "1")]).unwrap();
    // One transaction of exactly HISTORY_EVENTS events pushes r1 out of the history.
    let many = (0..HISTORY_EVENTS)
        .map(|i| put(Table::Layers, &format!("k/{i:05}"), "v"))
        .collect();
    let r2 = store
        .txn(
            Txn {
                compares: vec![],
                ops: many,
            },
            false,
        )
        .unwrap();
    env.compact(r2);
    let err = store.watch(Table::Layers, "", r1).unwrap_err();
    assert!(
        matches!(err, StoreError::Compacted { requested, compacted } if requested == r1 && compacted >= r1),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .contains("watch from that read's revision + 1"),
        "{err}"
    );
    // The whole of r2 is still there.
    let mut w = store.watch(Table::Layers, "k/", r2).unwrap();
    let events = drain(&mut w);
    assert_eq!(events.len(), HISTORY_EVENTS);
    assert!(events.iter().all(|e| e.revision() == r2));
}

fn watch_lagged(store: &dyn Store, _: &dyn Env) {
    let mut w = store.watch(Table::Layers, "", 0).unwrap();
    let many = (0..WATCH_BUFFER)
        .map(|i| put(Table::Layers, &format!("k/{i:05}"), "v"))
        .collect();
    store
        .txn(
            Txn {
                compares: vec![],
                ops: many,
            },
            false,
        )
        .unwrap();
    let mut ok = 0;
    let last = loop {
        match w.try_next() {
            Some(Ok(_)) => ok += 1,
            other => break other,
        }
    };
    assert!(
        matches!(last, Some(Err(StoreError::WatchLagged))),
        "{last:?}"
    );
    assert_eq!(ok, WATCH_BUFFER - 1);
    // The lagged watcher is closed; later changes do not reach it.
    txn(store, vec![], vec![put(Table::Layers, "later", "v")]).unwrap();
    assert!(w.try_next().is_none());
}

fn leased(table: Table, key: &str, lease: LeaseId) -> Op {
    Op::PutLeased {
        table,
        key: key.into(),
        value: b"l".to_vec(),
        lease,
    }
}

fn lease_expiry(store: &dyn Store, env: &dyn Env) {
    let t = Table::Leases;
    let ttl = env.lease_ttl();
    let lease = store.grant(ttl).unwrap();
    let other = store.grant(ttl * 6).unwrap();
    assert_ne!(lease, other);
    txn(
        store,
        vec![],
        vec![
            leased(t, "p/a", lease),
            leased(t, "p/b", lease),
            put(t, "p/plain", "x"),
        ],
    )
    .unwrap();
    txn(store, vec![], vec![leased(t, "p/c", other)]).unwrap();
    assert_eq!(store.get_kv(t, "p/a").unwrap().unwrap().lease, Some(lease));
    let mut w = store.watch(t, "p/", 0).unwrap();

    env.advance(ttl * 9 / 10);
    assert_eq!(store.expire_leases().unwrap(), vec![]);
    assert!(value(store, t, "p/a").is_some());
    // Read before the deadline passes: etcd expires the lease by itself, in its leader.
    let before = store.revision().unwrap();
    env.advance(ttl / 10 + env.expiry_slack());
    assert_eq!(store.expire_leases().unwrap(), vec![lease]);
    assert_eq!(store.revision().unwrap(), before + 1);
    assert_eq!(value(store, t, "p/a"), None);
    assert_eq!(value(store, t, "p/b"), None);
    assert!(value(store, t, "p/plain").is_some());
    assert!(
        value(store, t, "p/c").is_some(),
        "another lease's key went too"
    );
    assert_eq!(
        summary(&drain(&mut w)),
        vec![
            (before + 1, "p/a".into(), None),
            (before + 1, "p/b".into(), None)
        ]
    );

    // An expired lease can be neither renewed nor used.
    let err = store.keep_alive(lease).unwrap_err();
    assert!(
        matches!(err, StoreError::LeaseNotFound { lease: l } if l == lease),
        "{err:?}"
    );
    let err = txn(
        store,
        vec![],
        vec![put(t, "p/d", "x"), leased(t, "p/e", lease)],
    )
    .unwrap_err();
    assert!(matches!(err, StoreError::LeaseNotFound { .. }), "{err:?}");
    assert_eq!(value(store, t, "p/d"), None);
    assert_eq!(store.expire_leases().unwrap(), vec![]);
}

fn lease_keep_alive(store: &dyn Store, env: &dyn Env) {
    let t = Table::Leases;
    let ttl = env.lease_ttl();
    let lease = store.grant(ttl).unwrap();
    txn(store, vec![], vec![leased(t, "p/a", lease)]).unwrap();
    env.advance(ttl * 4 / 5);
    assert_eq!(store.keep_alive(lease).unwrap(), ttl);
    env.advance(ttl * 4 / 5);
    assert_eq!(store.expire_leases().unwrap(), vec![]);
    assert!(value(store, t, "p/a").is_some());
    // Past its deadline a lease cannot be renewed, even before the expiry tick runs.
    env.advance(ttl / 5 + env.expiry_slack());
    assert!(matches!(
        store.keep_alive(lease),
        Err(StoreError::LeaseNotFound { .. })
    ));
    assert_eq!(store.expire_leases().unwrap(), vec![lease]);
    assert_eq!(value(store, t, "p/a"), None);
}

fn lease_revoke(store: &dyn Store, env: &dyn Env) {
    let t = Table::Leases;
    let lease = store.grant(env.lease_ttl()).unwrap();
    txn(
        store,
        vec![],
        vec![
            leased(t, "p/a", lease),
            leased(t, "p/b", lease),
            leased(t, "p/gone", lease),
        ],
    )
    .unwrap();
    // A put without the lease detaches the key; a deleted key is no longer the lease's.
    txn(store, vec![], vec![put(t, "p/b", "kept"), del(t, "p/gone")]).unwrap();
    assert_eq!(store.get_kv(t, "p/b").unwrap().unwrap().lease, None);
    let mut w = store.watch(t, "p/", 0).unwrap();
    let before = store.revision().unwrap();
    assert_eq!(store.revoke(lease).unwrap(), before + 1);
    assert_eq!(
        summary(&drain(&mut w)),
        vec![(before + 1, "p/a".into(), None)]
    );
    assert_eq!(value(store, t, "p/b").as_deref(), Some("kept"));
    assert!(matches!(
        store.revoke(lease),
        Err(StoreError::LeaseNotFound { .. })
    ));
    // Revoking a lease without keys changes nothing.
    let empty = store.grant(env.lease_ttl()).unwrap();
    assert_eq!(store.revoke(empty).unwrap(), before + 1);
}

#[test]
fn mem_store() {
    run(&|clock| (Box::new(MemStore::with_clock(clock)), None));
}
