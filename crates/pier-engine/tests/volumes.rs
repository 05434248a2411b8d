//! The engine tier of volumes: `Volumes` over `MemStore` and the recording storage fake,
//! no root. Creates, attaches and removes fail at every step (host calls and store
//! transactions) and leave nothing; options, quotas (also under concurrent creates),
//! projects, holders, prune, snapshots, the layout migration and the reconciler.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pier_api::volumes::{MountKind, MountSpec, VolumeCreate, VolumeInspect};
use pier_api::{ErrorKind, ProjectName};
use pier_engine::host::storage::fake::{Call, CallKind, FakeStorage, Image};
use pier_engine::projects::Projects;
use pier_engine::volumes::reconcile::{VolumeReconciler, CREATE_LEASE_TTL, CREATING_PREFIX};
use pier_engine::volumes::record::{committed_key, count_key};
use pier_engine::volumes::Volumes;
use pier_engine::{Caller, EngineError, EngineResult, RequestContext};
use pier_store::{Batch, FaultyStore, ManualClock, Store, Table};

// ---- a store that can fail or slow its transactions ------------------------------------

// ---- the test environment ---------------------------------------------------------------

/// A request in project `p` by a local caller (the engine tier's tests ask as uid 0).
fn cx(p: &ProjectName) -> RequestContext {
    RequestContext::new(p.clone(), Caller::Local { uid: 0, pid: None })
}

struct Env {
    t: tempfile::TempDir,
    db: Arc<FaultyStore>,
    /// The clock of the store's leases.
    clock: Arc<ManualClock>,
    host: FakeStorage,
    projects: Arc<Projects>,
    vols: Arc<Volumes>,
}

fn open(root: &Path, db: Arc<FaultyStore>, host: &FakeStorage) -> (Arc<Projects>, Volumes) {
    let store: Arc<dyn Store> = db;
    let projects = Arc::new(Projects::new(store.clone()).unwrap());
    let vols = Volumes::new(
        root,
        store,
        projects.clone(),
        Arc::new(host.clone()),
        Arc::new(host.clone()),
    )
    .unwrap();
    (projects, vols)
}

fn env() -> Env {
    let t = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new());
    let db = Arc::new(FaultyStore::with_clock(clock.clone()));
    let host = FakeStorage::new();
    let (projects, vols) = open(t.path(), db.clone(), &host);
    host.clear_calls();
    Env {
        t,
        db,
        clock,
        host,
        projects,
        vols: Arc::new(vols),
    }
}

impl Env {
    fn root(&self) -> &Path {
        self.t.path()
    }
    fn vdir(&self, project: &str, name: &str) -> PathBuf {
        self.root().join("volumes").join(project).join(name)
    }
    fn reopen(&self) -> Volumes {
        open(self.root(), self.db.clone(), &self.host).1
    }

    /// Nothing is left: no record, no volume directory, nothing on the modelled host, no
    /// bytes or volumes charged to any project.
    fn assert_clean(&self) {
        let records = self.db.list(Table::Volumes, "").unwrap();
        assert!(records.is_empty(), "records left: {records:?}");
        let creating = self.db.list(Table::Meta, CREATING_PREFIX).unwrap();
        assert!(creating.is_empty(), "create keys left: {creating:?}");
        let state = self.host.state();
        assert!(state.is_clean(), "host left: {state:?}");
        for p in std::fs::read_dir(self.root().join("volumes")).unwrap() {
            let p = p.unwrap().path();
            let left: Vec<_> = std::fs::read_dir(&p).unwrap().collect();
            assert!(
                left.is_empty(),
                "directories left in {}: {left:?}",
                p.display()
            );
        }
        for p in self.projects.list().unwrap() {
            assert_eq!(
                self.vols.committed(&cx(&p)).unwrap(),
                0,
                "bytes charged to {p}"
            );
            assert_eq!(
                self.vols.volume_count(&cx(&p)).unwrap(),
                0,
                "volumes counted in {p}"
            );
        }
    }
}

fn default() -> ProjectName {
    ProjectName::default_project()
}

fn project(s: &str) -> ProjectName {
    ProjectName::try_from(s.to_string()).unwrap()
}

fn req(name: Option<&str>, driver: Option<&str>, opts: &[(&str, &str)]) -> VolumeCreate {
    VolumeCreate {
        name: name.map(str::to_string),
        driver: driver.map(str::to_string),
        options: opts
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        labels: BTreeMap::new(),
    }
}

fn create(
    e: &Env,
    name: &str,
    driver: Option<&str>,
    opts: &[(&str, &str)],
) -> EngineResult<VolumeInspect> {
    e.vols
        .create(&cx(&default()), req(Some(name), driver, opts), false)
}

fn err_of<T: std::fmt::Debug>(r: EngineResult<T>) -> EngineError {
    r.expect_err("expected an error")
}

fn vol_mount(source: Option<&str>, target: &str) -> MountSpec {
    MountSpec {
        kind: MountKind::Volume,
        source: source.map(str::to_string),
        target: target.to_string(),
        ..Default::default()
    }
}

/// A container record, so that a holder counts as live.
fn container_record(e: &Env, project: &ProjectName, id: &str) {
    let mut b = Batch::new();
    b.put_json(
        Table::Containers,
        format!("{project}/{id}"),
        &serde_json::json!({"id": id}),
    );
    b.commit(e.db.as_ref()).unwrap();
}

fn drop_container_record(e: &Env, project: &ProjectName, id: &str) {
    let mut b = Batch::new();
    b.delete(Table::Containers, format!("{project}/{id}"));
    b.commit(e.db.as_ref()).unwrap();
}

/// Runs `op` once on a fresh environment to count its fallible host calls, then once
/// per call on fresh environments, failing that call; `check` sees each failure.
fn at_every_host_step(
    setup: &dyn Fn(&Env),
    op: &dyn Fn(&Env) -> EngineResult<()>,
    check: &dyn Fn(&Env, usize, EngineError),
) -> usize {
    let e = env();
    setup(&e);
    let before = e.host.fallible_calls();
    op(&e).expect("the operation works when nothing fails");
    let n = e.host.fallible_calls() - before;
    assert!(n > 0, "the operation made no fallible host call");
    for i in 0..n {
        let e = env();
        setup(&e);
        e.host.fail_nth(i, libc::EIO);
        let err = op(&e).expect_err(&format!("failing host call {i} of {n} fails the operation"));
        e.host.heal();
        check(&e, i, err);
    }
    n
}

/// As [`at_every_host_step`], for store transactions.
fn at_every_store_step(
    setup: &dyn Fn(&Env),
    op: &dyn Fn(&Env) -> EngineResult<()>,
    check: &dyn Fn(&Env, usize, EngineError),
) -> usize {
    let e = env();
    setup(&e);
    let before = e.db.txns();
    op(&e).expect("the operation works when nothing fails");
    let n = e.db.txns() - before;
    assert!(n > 0, "the operation made no store transaction");
    for i in 0..n {
        let e = env();
        setup(&e);
        e.db.fail_txn(i);
        let err = op(&e).expect_err(&format!(
            "failing transaction {i} of {n} fails the operation"
        ));
        check(&e, i, err);
    }
    n
}

fn nothing(_: &Env) {}

// ---- create: named, anonymous, options --------------------------------------------------

#[test]
fn a_plain_volume_is_a_directory_and_a_record() {
    let e = env();
    let v = create(&e, "data", None, &[]).unwrap();
    assert_eq!(v.driver, "local");
    assert!(!v.anonymous);
    assert_eq!((v.size_limit, v.inode_limit), (None, None));
    let data = e.vdir("default", "data").join("_data");
    assert!(data.is_dir());
    assert_eq!(v.mountpoint, data.display().to_string());
    assert_eq!(e.host.calls(), vec![Call::CreateDir(data)]);
    assert_eq!(e.vols.get(&default(), "data").unwrap().name, "data");
    assert_eq!(e.vols.list(&default()).unwrap().len(), 1);
    e.vols.remove(&default(), "data").unwrap();
    e.assert_clean();
}

#[test]
fn anonymous_volumes_get_a_random_name_and_are_marked() {
    let e = env();
    let a = e
        .vols
        .create(&cx(&default()), VolumeCreate::default(), true)
        .unwrap();
    let b = e
        .vols
        .create(&cx(&default()), VolumeCreate::default(), true)
        .unwrap();
    assert_ne!(a.name, b.name);
    assert!(a.anonymous && b.anonymous);
    assert!(a.name.len() >= 12, "{}", a.name);
    for v in [a, b] {
        e.vols.remove(&default(), &v.name).unwrap();
    }
    e.assert_clean();
}

#[test]
fn a_second_volume_of_the_same_name_is_a_conflict_and_touches_nothing() {
    let e = env();
    create(&e, "data", None, &[]).unwrap();
    e.host.clear_calls();
    let err = err_of(create(&e, "data", None, &[("size", "10m")]));
    assert_eq!(err.kind(), ErrorKind::Conflict);
    assert!(
        err.message().contains("volume data already exists"),
        "{}",
        err.message()
    );
    assert!(
        !e.host.calls().iter().any(|c| c.fallible()),
        "{:?}",
        e.host.calls()
    );
    assert_eq!(e.vols.committed(&cx(&default())).unwrap(), 0);
}

#[test]
fn invalid_names_are_refused_with_the_rule() {
    let e = env();
    let long = "a".repeat(65);
    for bad in ["", "-x", ".hidden", "a/b", "a b", long.as_str()] {
        let err = err_of(create(&e, bad, None, &[]));
        assert_eq!(err.kind(), ErrorKind::InvalidInput, "{bad:?}");
        assert!(
            err.message().contains("use up to 64 letters"),
            "{}",
            err.message()
        );
    }
    assert!(e.host.calls().is_empty());
    e.assert_clean();
}

#[test]
fn an_unknown_driver_is_refused_naming_the_supported_ones() {
    let e = env();
    let err = err_of(create(&e, "v", Some("nfs"), &[]));
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    assert!(
        err.message().contains("use local or block"),
        "{}",
        err.message()
    );
    e.assert_clean();
}

#[test]
fn a_size_makes_an_ext4_image_mounted_on_the_data_directory() {
    let e = env();
    let v = create(&e, "db", None, &[("size", "10m")]).unwrap();
    assert_eq!(v.size_limit, Some(10 << 20));
    let vdir = e.vdir("default", "db");
    let img = vdir.join("disk.img");
    let calls = e.host.calls();
    assert!(calls.contains(&Call::MakeFsImage {
        image: img.clone(),
        bytes: 10 << 20,
        inodes: None
    }));
    assert!(calls.contains(&Call::MountImage {
        image: img.clone(),
        target: vdir.join("_data")
    }));
    let state = e.host.state();
    assert_eq!(state.images.len(), 1);
    assert_eq!(state.loops.len(), 1);
    assert!(state.mounts.contains_key(&vdir.join("_data")));
    assert_eq!(e.vols.committed(&cx(&default())).unwrap(), 10 << 20);
    e.vols.remove(&default(), "db").unwrap();
    e.assert_clean();
}

#[test]
fn sizes_too_small_or_unreadable_are_refused() {
    let e = env();
    let err = err_of(create(&e, "v", None, &[("size", "1k")]));
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    assert!(
        err.message().contains("give at least 1m"),
        "{}",
        err.message()
    );
    let err = err_of(create(&e, "v", None, &[("size", "lots")]));
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    assert!(err.message().contains("--opt size"), "{}", err.message());
    e.assert_clean();
}

#[test]
fn inodes_alone_make_a_capped_image_with_an_inode_limit() {
    let e = env();
    let v = create(&e, "many", None, &[("inodes", "500")]).unwrap();
    assert_eq!(v.size_limit, None);
    assert_eq!(v.inode_limit, Some(501));
    assert!(e.host.calls().contains(&Call::MakeFsImage {
        image: e.vdir("default", "many").join("disk.img"),
        bytes: 1 << 30,
        inodes: Some(500)
    }));
    // No size limit: nothing charged.
    assert_eq!(e.vols.committed(&cx(&default())).unwrap(), 0);
    e.vols.remove(&default(), "many").unwrap();
    e.assert_clean();
}

#[test]
fn bad_inode_counts_and_unknown_options_are_refused() {
    let e = env();
    for bad in ["0", "-3", "many"] {
        let err = err_of(create(&e, "v", None, &[("inodes", bad)]));
        assert_eq!(err.kind(), ErrorKind::InvalidInput);
        assert!(
            err.message().contains("give a positive number"),
            "{}",
            err.message()
        );
    }
    let err = err_of(create(&e, "v", None, &[("format", "qcow2")]));
    assert!(
        err.message().contains("use size=BYTES or inodes=N"),
        "{}",
        err.message()
    );
    e.assert_clean();
}

#[test]
fn block_volumes_need_a_size_and_check_their_options() {
    let e = env();
    let cases: [(&[(&str, &str)], &str); 5] = [
        (&[], "a block volume needs a size"),
        (&[("size", "10m"), ("format", "vmdk")], "use raw or qcow2"),
        (&[("size", "10m"), ("fs", "xfs")], "use ext4 or none"),
        (
            &[("size", "10m"), ("inodes", "10")],
            "inodes= is for local volumes",
        ),
        (
            &[("size", "10m"), ("color", "red")],
            "unknown block volume option",
        ),
    ];
    for (opts, want) in cases {
        let err = err_of(create(&e, "disk", Some("block"), opts));
        assert_eq!(err.kind(), ErrorKind::InvalidInput);
        assert!(err.message().contains(want), "{opts:?}: {}", err.message());
    }
    e.assert_clean();
}

#[test]
fn a_qcow2_block_volume_with_a_filesystem_is_one_disk_image() {
    let e = env();
    let v = create(
        &e,
        "disk",
        Some("block"),
        &[("size", "20m"), ("format", "qcow2"), ("fs", "ext4")],
    )
    .unwrap();
    assert_eq!(v.driver, "block");
    assert_eq!(v.size_limit, Some(20 << 20));
    let img = e.vdir("default", "disk").join("disk.qcow2");
    assert_eq!(
        e.host.state().images.get(&img),
        Some(&Image::Disk {
            size: 20 << 20,
            ext4: true
        })
    );
    assert!(Volumes::has_fs(&v));
    // Nothing attached until a container starts.
    assert!(e.host.state().loops.is_empty());
    e.vols.remove(&default(), "disk").unwrap();
    e.assert_clean();
}

#[test]
fn a_size_larger_than_the_free_space_is_no_space_and_makes_nothing() {
    let e = env();
    e.host.set_free_bytes(5 << 20);
    let err = err_of(create(&e, "big", None, &[("size", "10m")]));
    assert_eq!(err.kind(), ErrorKind::InsufficientStorage);
    assert!(
        err.message().contains("free space on the host"),
        "{}",
        err.message()
    );
    e.assert_clean();
}

#[test]
fn refused_requests_write_nothing_to_the_store() {
    let e = env();
    let rev = e.db.revision().unwrap();
    let _ = create(&e, "bad name", None, &[]);
    let _ = create(&e, "v", None, &[("size", "x")]);
    let _ = create(&e, "v", Some("block"), &[]);
    assert_eq!(e.db.revision().unwrap(), rev);
}

// ---- create: failure at every step ------------------------------------------------------

fn create_fails_cleanly(
    driver: Option<&str>,
    opts: &'static [(&'static str, &'static str)],
) -> usize {
    let op = |e: &Env| create(e, "vol", driver, opts).map(drop);
    let n = at_every_host_step(&nothing, &op, &|e, i, err| {
        assert_eq!(
            err.kind(),
            ErrorKind::Internal,
            "step {i}: {}",
            err.message()
        );
        assert!(
            err.message().contains("cannot create volume vol"),
            "step {i}: {}",
            err.message()
        );
        e.assert_clean();
        // And the name is free again.
        create(e, "vol", driver, opts).unwrap();
    });
    at_every_store_step(&nothing, &op, &|e, i, _| {
        let _ = i;
        e.assert_clean();
    });
    n
}

#[test]
fn a_plain_create_that_fails_at_any_step_leaves_nothing() {
    assert_eq!(create_fails_cleanly(None, &[]), 1);
}

#[test]
fn a_limited_create_that_fails_at_any_step_leaves_nothing() {
    assert_eq!(create_fails_cleanly(None, &[("size", "10m")]), 3);
}

#[test]
fn an_inode_limited_create_that_fails_at_any_step_leaves_nothing() {
    assert_eq!(
        create_fails_cleanly(None, &[("inodes", "100"), ("size", "2m")]),
        3
    );
}

#[test]
fn a_block_create_that_fails_at_any_step_leaves_nothing() {
    assert_eq!(
        create_fails_cleanly(
            Some("block"),
            &[("size", "10m"), ("format", "qcow2"), ("fs", "ext4")]
        ),
        2
    );
}

#[test]
fn a_full_disk_while_creating_is_no_space() {
    let e = env();
    e.host.fail_kind(CallKind::MakeFsImage, libc::ENOSPC);
    let err = err_of(create(&e, "v", None, &[("size", "10m")]));
    assert_eq!(
        err.kind(),
        ErrorKind::InsufficientStorage,
        "{}",
        err.message()
    );
    e.assert_clean();
}

#[test]
fn a_create_whose_ready_step_fails_gives_its_quota_charge_back() {
    let e = env();
    e.vols.set_quota(&cx(&default()), Some(15 << 20)).unwrap();
    // Reserve, then ready: fail the second transaction.
    e.db.fail_txn(1);
    err_of(create(&e, "v", None, &[("size", "10m")]));
    e.assert_clean();
    // The full quota is there for the next one.
    create(&e, "v", None, &[("size", "15m")]).unwrap();
}

// ---- remove ----------------------------------------------------------------------------

fn remove_fails_then_finishes(setup: &'static dyn Fn(&Env)) {
    let op = |e: &Env| e.vols.remove(&default(), "vol");
    // Either the volume is still there as it was, or it is being removed and a retry
    // finishes; either way it is listed until removed.
    let finish = |e: &Env| {
        e.vols.get(&default(), "vol").expect("listed until removed");
        e.vols.remove(&default(), "vol").unwrap();
        e.assert_clean();
    };
    at_every_host_step(setup, &op, &|e, i, err| {
        let msg = err.message();
        assert!(
            msg.contains("cannot release volume vol") || msg.contains("retry `pier volume rm vol`"),
            "step {i}: {msg}"
        );
        finish(e);
    });
    at_every_store_step(setup, &op, &|e, _, _| finish(e));
}

#[test]
fn a_plain_remove_that_fails_at_any_step_can_be_finished() {
    remove_fails_then_finishes(&|e| {
        create(e, "vol", None, &[]).unwrap();
    });
}

#[test]
fn a_limited_remove_that_fails_at_any_step_can_be_finished() {
    remove_fails_then_finishes(&|e| {
        create(e, "vol", None, &[("size", "10m")]).unwrap();
    });
}

#[test]
fn an_attached_block_remove_that_fails_at_any_step_can_be_finished() {
    remove_fails_then_finishes(&|e| {
        create(e, "vol", Some("block"), &[("size", "10m"), ("fs", "ext4")]).unwrap();
        e.vols.attach_device(&default(), "vol").unwrap();
        e.vols.mount_fs(&default(), "vol").unwrap();
    });
}

#[test]
fn a_failed_release_leaves_the_volume_ready_and_mounted() {
    let e = env();
    create(&e, "vol", None, &[("size", "10m")]).unwrap();
    e.host.fail_kind(CallKind::Unmount, libc::EBUSY);
    let err = err_of(e.vols.remove(&default(), "vol"));
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{}", err.message());
    e.host.heal();
    // Still usable: it can be held by a container.
    let mut mounts = vec![vol_mount(Some("vol"), "/v")];
    e.vols.attach(&default(), "c1", &mut mounts).unwrap();
    assert!(e
        .host
        .state()
        .mounts
        .contains_key(&e.vdir("default", "vol").join("_data")));
}

#[test]
fn removing_what_does_not_exist_is_not_found_with_a_hint() {
    let e = env();
    let err = err_of(e.vols.remove(&default(), "ghost"));
    assert_eq!(err.kind(), ErrorKind::NotFound);
    assert!(
        err.message().contains("pier volume ls"),
        "{}",
        err.message()
    );
    let err = err_of(e.vols.get(&default(), "ghost"));
    assert_eq!(err.kind(), ErrorKind::NotFound);
}

#[test]
fn a_remove_cut_short_is_finished_by_the_next_start() {
    let e = env();
    create(&e, "vol", None, &[("size", "10m")]).unwrap();
    // The directory's removal fails: the volume stays `removing`.
    e.host.fail_kind(CallKind::Remove, libc::EIO);
    let err = err_of(e.vols.remove(&default(), "vol"));
    assert!(
        err.message().contains("retry `pier volume rm vol`"),
        "{}",
        err.message()
    );
    e.host.heal();
    let err = err_of(create(&e, "vol", None, &[]));
    assert!(
        err.message().contains("is being removed"),
        "{}",
        err.message()
    );
    e.reopen().reconcile().unwrap();
    e.assert_clean();
}

// ---- attach -------------------------------------------------------------------------------

#[test]
fn attach_makes_named_and_anonymous_volumes_and_holds_them() {
    let e = env();
    let mut mounts = vec![
        vol_mount(Some("data"), "/data"),
        vol_mount(None, "/cache"),
        MountSpec {
            kind: MountKind::Tmpfs,
            target: "/tmp".into(),
            ..Default::default()
        },
    ];
    let made = e.vols.attach(&default(), "c1", &mut mounts).unwrap();
    assert_eq!(made.len(), 1);
    assert_eq!(mounts[1].source.as_deref(), Some(made[0].as_str()));
    assert!(e.vols.get(&default(), &made[0]).unwrap().anonymous);
    assert!(!e.vols.get(&default(), "data").unwrap().anonymous);
    assert_eq!(e.vols.list(&default()).unwrap().len(), 2);
    // Held by c1 while its record exists.
    container_record(&e, &default(), "c1");
    let err = err_of(e.vols.remove(&default(), "data"));
    assert_eq!(err.kind(), ErrorKind::Conflict);
    e.vols.detach(&default(), "c1", &mounts);
    drop_container_record(&e, &default(), "c1");
    for v in e.vols.list(&default()).unwrap() {
        e.vols.remove(&default(), &v.name).unwrap();
    }
    e.assert_clean();
}

#[test]
fn attach_uses_an_existing_named_volume_as_it_is() {
    let e = env();
    create(&e, "data", None, &[("size", "10m")]).unwrap();
    e.host.clear_calls();
    let mut mounts = vec![vol_mount(Some("data"), "/data")];
    assert!(e
        .vols
        .attach(&default(), "c1", &mut mounts)
        .unwrap()
        .is_empty());
    assert!(
        !e.host.calls().iter().any(|c| c.fallible()),
        "{:?}",
        e.host.calls()
    );
    assert_eq!(
        e.vols.get(&default(), "data").unwrap().size_limit,
        Some(10 << 20)
    );
}

fn attach_op(e: &Env) -> EngineResult<()> {
    let mut mounts = vec![
        vol_mount(Some("kept"), "/kept"),
        vol_mount(Some("new"), "/new"),
        vol_mount(None, "/anon"),
        vol_mount(Some("disk"), "/dev/vdb"),
    ];
    e.vols.attach(&default(), "c1", &mut mounts).map(drop)
}

fn attach_setup(e: &Env) {
    create(e, "kept", None, &[("size", "5m")]).unwrap();
    create(e, "disk", Some("block"), &[("size", "5m")]).unwrap();
}

fn attach_left_as_before(e: &Env, i: usize) {
    let names: Vec<String> = e
        .vols
        .list(&default())
        .unwrap()
        .into_iter()
        .map(|v| v.name)
        .collect();
    assert_eq!(names, ["disk", "kept"], "step {i}");
    for n in ["disk", "kept"] {
        // Not held: removable, and that leaves nothing at all.
        container_record(e, &default(), "c1");
        e.vols
            .remove(&default(), n)
            .unwrap_or_else(|err| panic!("step {i}: {}", err.message()));
    }
    e.assert_clean();
}

#[test]
fn an_attach_that_fails_at_any_host_step_leaves_only_what_was_there() {
    let n = at_every_host_step(&attach_setup, &attach_op, &|e, i, _| {
        attach_left_as_before(e, i)
    });
    assert_eq!(n, 2, "a directory for each new volume");
}

#[test]
fn an_attach_that_fails_at_any_store_step_leaves_only_what_was_there() {
    let n = at_every_store_step(&attach_setup, &attach_op, &|e, i, _| {
        attach_left_as_before(e, i)
    });
    // Two volumes made (reserve, ready each), four holds.
    assert_eq!(n, 8);
}

#[test]
fn a_block_volume_without_a_filesystem_must_be_a_device() {
    let e = env();
    create(&e, "raw", Some("block"), &[("size", "5m")]).unwrap();
    let mut mounts = vec![vol_mount(None, "/anon"), vol_mount(Some("raw"), "/mnt")];
    let err = err_of(e.vols.attach(&default(), "c1", &mut mounts));
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    assert!(
        err.message().contains("target=/dev/vdb"),
        "{}",
        err.message()
    );
    // The anonymous volume made before is gone.
    assert_eq!(e.vols.list(&default()).unwrap().len(), 1);
}

#[test]
fn attach_says_how_each_block_volume_is_given() {
    let e = env();
    create(
        &e,
        "fsdisk",
        Some("block"),
        &[("size", "5m"), ("fs", "ext4")],
    )
    .unwrap();
    let mut mounts = vec![
        vol_mount(Some("fsdisk"), "/dev/vdb"),
        vol_mount(Some("fsdisk"), "/mnt"),
    ];
    e.vols.attach(&default(), "c1", &mut mounts).unwrap();
    assert_eq!(
        mounts[0].options.get("block").map(String::as_str),
        Some("device")
    );
    assert_eq!(
        mounts[1].options.get("block").map(String::as_str),
        Some("fs")
    );
}

#[test]
fn undo_attach_removes_the_anonymous_volumes_and_forgets_the_holder() {
    let e = env();
    create(&e, "data", None, &[]).unwrap();
    let mut mounts = vec![vol_mount(Some("data"), "/d"), vol_mount(None, "/a")];
    let made = e.vols.attach(&default(), "c1", &mut mounts).unwrap();
    container_record(&e, &default(), "c1");
    e.vols.undo_attach(&default(), "c1", &mounts, &made);
    assert!(e.vols.get(&default(), &made[0]).is_err());
    // No longer held although c1's record exists.
    e.vols.remove(&default(), "data").unwrap();
    e.assert_clean();
}

fn block_mounts() -> Vec<MountSpec> {
    let mut dev = vol_mount(Some("dev"), "/dev/vdb");
    dev.options.insert("block".into(), "device".into());
    let mut fs = vol_mount(Some("fs"), "/mnt");
    fs.options.insert("block".into(), "fs".into());
    vec![dev, fs]
}

fn block_setup(e: &Env) {
    create(e, "dev", Some("block"), &[("size", "5m")]).unwrap();
    create(
        e,
        "fs",
        Some("block"),
        &[("size", "5m"), ("fs", "ext4"), ("format", "qcow2")],
    )
    .unwrap();
}

#[test]
fn starting_attaches_block_devices_and_mounts_block_filesystems() {
    let e = env();
    block_setup(&e);
    let minors = e.vols.attach_block(&default(), &block_mounts()).unwrap();
    assert_eq!(minors, vec![0]);
    let state = e.host.state();
    assert_eq!(state.loops.len(), 2);
    assert!(state
        .mounts
        .contains_key(&e.vols.device_node(&default(), "dev")));
    assert!(state
        .mounts
        .contains_key(&e.vdir("default", "fs").join("_data")));
    // Stopping releases both.
    e.vols.release(&default(), "dev");
    e.vols.release(&default(), "fs");
    let state = e.host.state();
    assert!(
        state.loops.is_empty() && state.mounts.is_empty(),
        "{state:?}"
    );
    assert!(!e.vols.device_node(&default(), "dev").exists());
}

#[test]
fn a_start_whose_block_attach_fails_at_any_step_leaves_nothing_attached() {
    let op = |e: &Env| e.vols.attach_block(&default(), &block_mounts()).map(drop);
    let n = at_every_host_step(&block_setup, &op, &|e, i, _| {
        let state = e.host.state();
        assert!(state.loops.is_empty(), "step {i}: {state:?}");
        assert!(state.mounts.is_empty(), "step {i}: {state:?}");
    });
    assert_eq!(n, 5, "attach, bind, minor; attach, mount");
}

#[test]
fn a_failed_start_keeps_what_another_container_attached() {
    let e = env();
    block_setup(&e);
    // Another running container uses `dev`.
    e.vols.attach_device(&default(), "dev").unwrap();
    e.host.fail_kind(CallKind::MountDevice, libc::EIO);
    err_of(e.vols.attach_block(&default(), &block_mounts()));
    e.host.heal();
    let state = e.host.state();
    assert_eq!(state.loops.len(), 1, "{state:?}");
    assert!(state
        .mounts
        .contains_key(&e.vols.device_node(&default(), "dev")));
}

// ---- in use, prune ------------------------------------------------------------------------

#[test]
fn a_volume_held_by_a_container_cannot_be_removed() {
    let e = env();
    let mut mounts = vec![vol_mount(Some("data"), "/d")];
    e.vols.attach(&default(), "c1", &mut mounts).unwrap();
    container_record(&e, &default(), "c1");
    let err = err_of(e.vols.remove(&default(), "data"));
    assert_eq!(err.kind(), ErrorKind::Conflict);
    assert_eq!(
        err.message(),
        "volume data is in use by container(s) c1: remove them first"
    );
    assert!(e.vols.get(&default(), "data").is_ok());
    // Once the container's record is gone, its hold is stale.
    drop_container_record(&e, &default(), "c1");
    e.vols.remove(&default(), "data").unwrap();
    e.assert_clean();
}

#[test]
fn a_volume_being_removed_cannot_be_attached() {
    let e = env();
    create(&e, "vol", None, &[]).unwrap();
    e.host.fail_kind(CallKind::Remove, libc::EIO);
    err_of(e.vols.remove(&default(), "vol"));
    e.host.heal();
    let mut mounts = vec![vol_mount(Some("vol"), "/v")];
    let err = err_of(e.vols.attach(&default(), "c1", &mut mounts));
    assert_eq!(err.kind(), ErrorKind::Conflict);
    assert!(
        err.message().contains("is being removed"),
        "{}",
        err.message()
    );
}

#[test]
fn prune_removes_unused_anonymous_volumes_or_all_unused() {
    let e = env();
    create(&e, "named", None, &[]).unwrap();
    create(&e, "busy", None, &[]).unwrap();
    let anon = e
        .vols
        .create(&cx(&default()), VolumeCreate::default(), true)
        .unwrap();
    let mut held = vec![vol_mount(None, "/h")];
    let made = e.vols.attach(&default(), "c1", &mut held).unwrap();
    container_record(&e, &default(), "c1");
    let in_use = |v: &pier_api::volumes::VolumeInspect| Ok(v.name == "busy");
    let removed = e.vols.prune(&default(), false, &in_use).unwrap();
    assert_eq!(removed, vec![anon.name.clone()]);
    let mut removed = e.vols.prune(&default(), true, &in_use).unwrap();
    removed.sort();
    assert_eq!(removed, vec!["named".to_string()]);
    let mut left: Vec<String> = e
        .vols
        .list(&default())
        .unwrap()
        .into_iter()
        .map(|v| v.name)
        .collect();
    left.sort();
    let mut want = vec!["busy".to_string(), made[0].clone()];
    want.sort();
    assert_eq!(left, want);
}

// ---- quotas --------------------------------------------------------------------------------

#[test]
fn under_a_quota_a_volume_needs_a_size() {
    let e = env();
    e.vols.set_quota(&cx(&default()), Some(100 << 20)).unwrap();
    let err = err_of(create(&e, "v", None, &[]));
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    assert!(err.message().contains("--opt size="), "{}", err.message());
    e.assert_clean();
}

#[test]
fn a_quota_counts_size_limits_and_refuses_past_it() {
    let e = env();
    e.vols.set_quota(&cx(&default()), Some(30 << 20)).unwrap();
    assert_eq!(e.vols.quota(&cx(&default())).unwrap(), Some(30 << 20));
    create(&e, "a", None, &[("size", "20m")]).unwrap();
    let err = err_of(create(&e, "b", None, &[("size", "20m")]));
    assert_eq!(err.kind(), ErrorKind::InsufficientStorage);
    assert!(
        err.message().contains("remove volumes or raise the quota"),
        "{}",
        err.message()
    );
    // In human units (issue 15): what was asked, what is committed, the quota.
    assert!(
        err.message()
            .contains("20 MiB requested, 20 MiB of 30 MiB committed"),
        "{}",
        err.message()
    );
    create(&e, "b", None, &[("size", "10m")]).unwrap();
    assert_eq!(e.vols.committed(&cx(&default())).unwrap(), 30 << 20);
    e.vols.remove(&default(), "a").unwrap();
    assert_eq!(e.vols.committed(&cx(&default())).unwrap(), 10 << 20);
    e.vols.set_quota(&cx(&default()), None).unwrap();
    create(&e, "c", None, &[]).unwrap();
}

#[test]
fn the_committed_bytes_are_a_counter_charged_with_the_record() {
    let e = env();
    create(&e, "a", None, &[("size", "3m")]).unwrap();
    let kv =
        e.db.get(Table::Quotas, &committed_key(&default()))
            .unwrap()
            .unwrap();
    assert_eq!(String::from_utf8(kv).unwrap(), (3u64 << 20).to_string());
    e.vols.remove(&default(), "a").unwrap();
    let kv =
        e.db.get(Table::Quotas, &committed_key(&default()))
            .unwrap()
            .unwrap();
    assert_eq!(String::from_utf8(kv).unwrap(), "0");
}

#[test]
fn a_store_of_an_older_pier_without_the_counter_sums_its_records() {
    let e = env();
    create(&e, "a", None, &[("size", "3m")]).unwrap();
    create(&e, "b", None, &[("size", "2m")]).unwrap();
    let mut b = Batch::new();
    b.delete(Table::Quotas, committed_key(&default()));
    b.commit(e.db.as_ref()).unwrap();
    assert_eq!(e.vols.committed(&cx(&default())).unwrap(), 5 << 20);
    e.vols.set_quota(&cx(&default()), Some(6 << 20)).unwrap();
    let err = err_of(create(&e, "c", None, &[("size", "2m")]));
    assert_eq!(err.kind(), ErrorKind::InsufficientStorage);
    create(&e, "c", None, &[("size", "1m")]).unwrap();
    assert_eq!(e.vols.committed(&cx(&default())).unwrap(), 6 << 20);
}

#[test]
fn concurrent_creates_cannot_pass_a_quota_together() {
    let e = env();
    e.vols.set_quota(&cx(&default()), Some(30 << 20)).unwrap();
    // Every transaction waits a little: checks that read before another's commit and
    // wrote after it would let every create pass.
    e.db.delay_txns(Some(Duration::from_millis(3)));
    let vols = &e.vols;
    let results: Vec<bool> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|i| {
                s.spawn(move || {
                    vols.create(
                        &cx(&default()),
                        req(Some(&format!("v{i}")), None, &[("size", "10m")]),
                        false,
                    )
                    .map_err(|e| {
                        assert_eq!(e.kind(), ErrorKind::InsufficientStorage, "{}", e.message())
                    })
                    .is_ok()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(results.iter().filter(|ok| **ok).count(), 3, "{results:?}");
    assert_eq!(e.vols.list(&default()).unwrap().len(), 3);
    assert_eq!(e.vols.committed(&cx(&default())).unwrap(), 30 << 20);
    assert_eq!(e.host.state().mounts.len(), 3);
}

#[test]
fn a_count_quota_refuses_volumes_past_it_and_a_remove_frees_a_slot() {
    let e = env();
    let ctx = cx(&default());
    e.vols.set_count_quota(&ctx, Some(2)).unwrap();
    assert_eq!(e.vols.count_quota(&ctx).unwrap(), Some(2));
    create(&e, "a", None, &[]).unwrap();
    // Anonymous volumes count too.
    e.vols.create(&ctx, VolumeCreate::default(), true).unwrap();
    assert_eq!(e.vols.volume_count(&ctx).unwrap(), 2);
    let txns = e.db.txns();
    let err = err_of(create(&e, "c", None, &[]));
    assert_eq!(err.kind(), ErrorKind::InsufficientStorage);
    assert!(
        err.message().contains("2 of its quota of 2 volumes"),
        "{}",
        err.message()
    );
    assert_eq!(e.db.txns(), txns, "a refused create writes nothing");
    assert!(!e.vdir("default", "c").exists());
    // A remove gives its slot back.
    e.vols.remove(&default(), "a").unwrap();
    assert_eq!(e.vols.volume_count(&ctx).unwrap(), 1);
    create(&e, "c", None, &[]).unwrap();
    // Another project's count is its own; clearing the quota lifts it.
    let team = project("team-a");
    e.projects.create(&team).unwrap();
    e.vols
        .create(&cx(&team), req(Some("t"), None, &[]), false)
        .unwrap();
    assert_eq!(e.vols.volume_count(&cx(&team)).unwrap(), 1);
    e.vols.set_count_quota(&ctx, None).unwrap();
    create(&e, "d", None, &[]).unwrap();
    assert_eq!(e.vols.volume_count(&ctx).unwrap(), 3);
    let kv = e.db.get(Table::Quotas, &count_key(&default())).unwrap();
    assert_eq!(String::from_utf8(kv.unwrap()).unwrap(), "3");
}

#[test]
fn a_failed_create_gives_its_count_slot_back() {
    let e = env();
    let ctx = cx(&default());
    e.vols.set_count_quota(&ctx, Some(1)).unwrap();
    e.host.fail_kind(CallKind::MountImage, libc::EIO);
    err_of(create(&e, "a", None, &[("size", "10m")]));
    e.host.heal();
    assert_eq!(e.vols.volume_count(&ctx).unwrap(), 0);
    create(&e, "a", None, &[]).unwrap();
}

#[test]
fn a_store_of_an_older_pier_without_the_count_counts_its_records() {
    let e = env();
    create(&e, "a", None, &[]).unwrap();
    create(&e, "b", None, &[]).unwrap();
    let mut b = Batch::new();
    b.delete(Table::Quotas, count_key(&default()));
    b.commit(e.db.as_ref()).unwrap();
    let ctx = cx(&default());
    assert_eq!(e.vols.volume_count(&ctx).unwrap(), 2);
    e.vols.set_count_quota(&ctx, Some(2)).unwrap();
    err_of(create(&e, "c", None, &[]));
    e.vols.remove(&default(), "a").unwrap();
    create(&e, "c", None, &[]).unwrap();
    assert_eq!(e.vols.volume_count(&ctx).unwrap(), 2);
}

#[test]
fn concurrent_creates_cannot_pass_a_count_quota_together() {
    let e = env();
    e.vols.set_count_quota(&cx(&default()), Some(3)).unwrap();
    // Every transaction waits a little: checks that read before another's commit and
    // wrote after it would let every create pass.
    e.db.delay_txns(Some(Duration::from_millis(3)));
    let vols = &e.vols;
    let results: Vec<bool> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|i| {
                s.spawn(move || {
                    let r = req(Some(&format!("v{i}")), None, &[]);
                    vols.create(&cx(&default()), r, false)
                        .map_err(|e| {
                            assert_eq!(e.kind(), ErrorKind::InsufficientStorage, "{}", e.message())
                        })
                        .is_ok()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(results.iter().filter(|ok| **ok).count(), 3, "{results:?}");
    assert_eq!(e.vols.list(&default()).unwrap().len(), 3);
    assert_eq!(e.vols.volume_count(&cx(&default())).unwrap(), 3);
}

#[test]
fn concurrent_creates_of_one_name_make_one_volume() {
    let e = env();
    e.db.delay_txns(Some(Duration::from_millis(2)));
    let vols = &e.vols;
    let ok = std::thread::scope(|s| {
        let hs: Vec<_> = (0..6)
            .map(|_| {
                s.spawn(move || {
                    vols.create(
                        &cx(&default()),
                        req(Some("same"), None, &[("size", "4m")]),
                        false,
                    )
                    .is_ok()
                })
            })
            .collect();
        hs.into_iter()
            .map(|h| h.join().unwrap())
            .filter(|ok| *ok)
            .count()
    });
    assert_eq!(ok, 1);
    assert_eq!(e.host.state().images.len(), 1);
    assert_eq!(e.vols.committed(&cx(&default())).unwrap(), 4 << 20);
}

// ---- projects ------------------------------------------------------------------------------

#[test]
fn the_same_name_in_two_projects_is_two_volumes() {
    let e = env();
    let team = project("team-a");
    e.projects.create(&team).unwrap();
    let a = e
        .vols
        .create(
            &cx(&default()),
            req(Some("data"), None, &[("size", "2m")]),
            false,
        )
        .unwrap();
    let b = e
        .vols
        .create(
            &cx(&team),
            req(Some("data"), None, &[("size", "3m")]),
            false,
        )
        .unwrap();
    assert_ne!(a.mountpoint, b.mountpoint);
    assert!(
        b.mountpoint.contains("/volumes/team-a/data/"),
        "{}",
        b.mountpoint
    );
    assert_eq!(e.vols.committed(&cx(&default())).unwrap(), 2 << 20);
    assert_eq!(e.vols.committed(&cx(&team)).unwrap(), 3 << 20);
    // A quota of one project does not see the other's.
    e.vols.set_quota(&cx(&team), Some(4 << 20)).unwrap();
    e.vols
        .create(
            &cx(&default()),
            req(Some("more"), None, &[("size", "5m")]),
            false,
        )
        .unwrap();
    e.vols.remove(&default(), "data").unwrap();
    assert_eq!(e.vols.get(&team, "data").unwrap().size_limit, Some(3 << 20));
    assert!(e.vdir("team-a", "data").join("_data").is_dir());
    assert_eq!(e.vols.list(&team).unwrap().len(), 1);
    assert_eq!(e.vols.list(&default()).unwrap().len(), 1);
}

#[test]
fn a_request_acts_in_the_project_its_context_names() {
    let e = env();
    let p1 = project("p1");
    e.projects.create(&p1).unwrap();
    let (in_p1, in_default) = (cx(&p1), cx(&default()));
    let v = e
        .vols
        .create(&in_p1, req(Some("data"), None, &[("size", "2m")]), false)
        .unwrap();
    assert_eq!(v.project, p1);
    assert!(
        v.mountpoint.contains("/volumes/p1/data/"),
        "{}",
        v.mountpoint
    );
    assert!(e.vdir("p1", "data").join("_data").is_dir());
    assert!(!e.vdir("default", "data").exists());
    // Not visible to a request in another project.
    let err = err_of(e.vols.inspect(&in_default, "data"));
    assert_eq!(err.kind(), ErrorKind::NotFound, "{}", err.message());
    assert!(e.vols.list(&default()).unwrap().is_empty());
    assert_eq!(e.vols.committed(&in_default).unwrap(), 0);
    // Visible, charged and snapshotted in its own.
    assert_eq!(e.vols.inspect(&in_p1, "data").unwrap().name, "data");
    assert_eq!(e.vols.committed(&in_p1).unwrap(), 2 << 20);
    let err = err_of(e.vols.remove_snapshot(&in_default, "data", "s"));
    assert_eq!(err.kind(), ErrorKind::NotFound, "{}", err.message());
}

#[test]
fn holders_are_per_project() {
    let e = env();
    let team = project("team-a");
    e.projects.create(&team).unwrap();
    let mut mounts = vec![vol_mount(Some("data"), "/d")];
    e.vols.attach(&team, "c1", &mut mounts.clone()).unwrap();
    e.vols.attach(&default(), "c2", &mut mounts).unwrap();
    // c1 exists in the default project only: team-a's hold by c1 is stale.
    container_record(&e, &default(), "c1");
    e.vols.remove(&team, "data").unwrap();
    container_record(&e, &default(), "c2");
    err_of(e.vols.remove(&default(), "data"));
}

// ---- snapshots -------------------------------------------------------------------------------

#[test]
fn a_directory_volume_snapshot_copies_its_files_and_restore_puts_them_back() {
    let e = env();
    create(&e, "vol", None, &[]).unwrap();
    let data = e.vdir("default", "vol").join("_data");
    std::fs::write(data.join("f"), "one").unwrap();
    let paused = Mutex::new(Vec::new());
    let quiesce = |on: bool| paused.lock().unwrap().push(on);
    e.vols.snapshot(&default(), "vol", "s1", &quiesce).unwrap();
    assert_eq!(*paused.lock().unwrap(), vec![true, false]);
    assert_eq!(e.vols.snapshots(&cx(&default()), "vol"), vec!["s1"]);
    std::fs::write(data.join("f"), "two").unwrap();
    std::fs::write(data.join("g"), "new").unwrap();
    e.vols.restore(&default(), "vol", "s1").unwrap();
    assert_eq!(std::fs::read_to_string(data.join("f")).unwrap(), "one");
    assert!(!data.join("g").exists());
    e.vols
        .remove_snapshot(&cx(&default()), "vol", "s1")
        .unwrap();
    assert!(e.vols.snapshots(&cx(&default()), "vol").is_empty());
}

#[test]
fn a_limited_volume_snapshot_is_a_frozen_copy_of_its_image() {
    let e = env();
    create(&e, "vol", None, &[("size", "10m")]).unwrap();
    e.host.clear_calls();
    e.vols.snapshot(&default(), "vol", "s1", &|_| {}).unwrap();
    let data = e.vdir("default", "vol").join("_data");
    let calls = e.host.calls();
    let freeze = calls
        .iter()
        .position(|c| *c == Call::Freeze(data.clone()))
        .expect("frozen");
    let copy = calls
        .iter()
        .position(|c| c.kind() == CallKind::CopyImage)
        .expect("copied");
    assert!(freeze < copy, "{calls:?}");
    let state = e.host.state();
    assert!(state.frozen.is_empty(), "thawed after");
    assert!(state
        .images
        .contains_key(&e.vdir("default", "vol").join("snapshots/s1/disk.img")));
    // Restore swaps the image under an unmount and mounts it again.
    e.vols.restore(&default(), "vol", "s1").unwrap();
    assert!(e.host.state().mounts.contains_key(&data));
    e.vols.remove(&default(), "vol").unwrap();
    e.assert_clean();
}

#[test]
fn a_block_volume_snapshot_pauses_its_users_while_copying_the_disk() {
    let e = env();
    create(&e, "disk", Some("block"), &[("size", "5m"), ("fs", "ext4")]).unwrap();
    e.vols.mount_fs(&default(), "disk").unwrap();
    let paused = Mutex::new(Vec::new());
    e.vols
        .snapshot(&default(), "disk", "s1", &|on| {
            paused.lock().unwrap().push(on)
        })
        .unwrap();
    assert_eq!(*paused.lock().unwrap(), vec![true, false]);
    assert!(e
        .host
        .state()
        .images
        .contains_key(&e.vdir("default", "disk").join("snapshots/s1/disk.raw")));
    // Restore releases the disk first.
    e.vols.restore(&default(), "disk", "s1").unwrap();
    assert!(e.host.state().loops.is_empty());
    e.vols.remove(&default(), "disk").unwrap();
    e.assert_clean();
}

#[test]
fn a_snapshot_that_fails_leaves_no_half_copy_and_nothing_frozen() {
    let e = env();
    create(&e, "vol", None, &[("size", "10m")]).unwrap();
    e.host.fail_kind(CallKind::CopyImage, libc::ENOSPC);
    let err = err_of(e.vols.snapshot(&default(), "vol", "s1", &|_| {}));
    assert_eq!(err.kind(), ErrorKind::InsufficientStorage);
    e.host.heal();
    assert!(e.host.state().frozen.is_empty());
    let snaps = e.vdir("default", "vol").join("snapshots");
    assert_eq!(std::fs::read_dir(&snaps).unwrap().count(), 0);
    assert_eq!(e.host.state().images.len(), 1);
}

#[test]
fn snapshot_names_are_checked_and_unknown_ones_are_not_found() {
    let e = env();
    create(&e, "vol", None, &[]).unwrap();
    let err = err_of(e.vols.snapshot(&default(), "vol", "../x", &|_| {}));
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    e.vols.snapshot(&default(), "vol", "s1", &|_| {}).unwrap();
    let err = err_of(e.vols.snapshot(&default(), "vol", "s1", &|_| {}));
    assert_eq!(err.kind(), ErrorKind::Conflict);
    for err in [
        err_of(e.vols.restore(&default(), "vol", "nope")),
        err_of(e.vols.remove_snapshot(&cx(&default()), "vol", "nope")),
    ] {
        assert_eq!(err.kind(), ErrorKind::NotFound);
        assert!(
            err.message().contains("pier volume snapshots vol"),
            "{}",
            err.message()
        );
    }
    // Snapshots go with their volume.
    e.vols.remove(&default(), "vol").unwrap();
    e.assert_clean();
}

// ---- inspect, ensure, export and import --------------------------------------------------

#[test]
fn inspect_fills_in_usage() {
    let e = env();
    create(&e, "plain", None, &[]).unwrap();
    create(&e, "lim", None, &[("size", "10m")]).unwrap();
    for n in ["plain", "lim"] {
        let data = e.vdir("default", n).join("_data");
        std::fs::write(data.join("f"), [0u8; 100]).unwrap();
        std::fs::create_dir(data.join("d")).unwrap();
        let u = e.vols.inspect(&cx(&default()), n).unwrap().usage.unwrap();
        assert_eq!((u.bytes >= 100, u.inodes), (true, 2), "{n}");
    }
}

#[test]
fn ensure_makes_a_volume_once() {
    let e = env();
    let a = e.vols.ensure(&default(), "data").unwrap();
    let b = e.vols.ensure(&default(), "data").unwrap();
    assert_eq!(a.created, b.created);
    assert_eq!(e.vols.list(&default()).unwrap().len(), 1);
}

#[test]
fn export_and_import_round_trip_and_a_bad_checksum_leaves_no_volume() {
    let e = env();
    create(&e, "src", None, &[]).unwrap();
    let data = e.vdir("default", "src").join("_data");
    std::fs::write(data.join("f"), "hello").unwrap();
    let mut tar = Vec::new();
    e.vols.export(&cx(&default()), "src", &mut tar).unwrap();
    let v = e
        .vols
        .import(
            &cx(&default()),
            req(Some("copy"), None, &[]),
            &tar[..],
            None,
        )
        .unwrap();
    let copied = e.vdir("default", &v.name).join("_data/f");
    assert_eq!(std::fs::read_to_string(copied).unwrap(), "hello");
    let err = err_of(e.vols.import(
        &cx(&default()),
        req(Some("bad"), None, &[]),
        &tar[..],
        Some("sha256:00"),
    ));
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    assert!(
        err.message().contains("is corrupt or not the one exported"),
        "{}",
        err.message()
    );
    assert!(e.vols.get(&default(), "bad").is_err());
    assert!(!e.vdir("default", "bad").exists());
}

#[test]
fn block_volumes_are_not_exported() {
    let e = env();
    create(&e, "disk", Some("block"), &[("size", "5m")]).unwrap();
    let err = err_of(e.vols.export(&cx(&default()), "disk", std::io::sink()));
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    assert!(err.message().contains("qemu-img"), "{}", err.message());
}

// ---- layout and reconcile ----------------------------------------------------------------------

#[test]
fn the_old_layout_moves_over_the_fakes_with_renames() {
    let t = tempfile::tempdir().unwrap();
    let db = Arc::new(FaultyStore::default());
    let old = t.path().join("volumes/data");
    std::fs::create_dir_all(old.join("_data")).unwrap();
    std::fs::write(old.join("_data/f"), "x").unwrap();
    let mut b = Batch::new();
    b.put_json(
        Table::Volumes,
        "default/data",
        &serde_json::json!({"name": "data", "project": "default", "driver": "local",
            "created": "2026-01-01T00:00:00Z", "mountpoint": old.join("_data"),
            "labels": {}, "options": {}}),
    );
    b.commit(db.as_ref()).unwrap();
    let host = FakeStorage::new();
    let (_, vols) = open(t.path(), db.clone(), &host);
    let new = t.path().join("volumes/default/data");
    assert!(host.calls().contains(&Call::Rename(
        t.path().join("volumes/.v1/data"),
        new.clone()
    )));
    assert_eq!(std::fs::read_to_string(new.join("_data/f")).unwrap(), "x");
    assert_eq!(
        vols.get(&default(), "data").unwrap().mountpoint,
        new.join("_data").display().to_string()
    );
    // Once moved, a second open does nothing to the host.
    host.clear_calls();
    open(t.path(), db, &host);
    assert!(!host.calls().iter().any(|c| c.kind() == CallKind::Rename));
}

#[test]
fn after_a_reboot_reconcile_mounts_limited_volumes_again() {
    let e = env();
    create(&e, "lim", None, &[("size", "10m")]).unwrap();
    create(&e, "plain", None, &[]).unwrap();
    e.host.reboot();
    e.reopen().reconcile().unwrap();
    let state = e.host.state();
    assert_eq!(state.mounts.len(), 1);
    assert!(state
        .mounts
        .contains_key(&e.vdir("default", "lim").join("_data")));
    // Reconciling again changes nothing.
    e.reopen().reconcile().unwrap();
    assert_eq!(e.host.state(), state);
}

#[test]
fn a_create_cut_short_by_a_crash_is_taken_apart_at_the_next_start() {
    let e = env();
    // As a crash between the mount and the ready step leaves it.
    e.host.fail_kind(CallKind::Remove, libc::EIO);
    e.db.fail_txn(1);
    err_of(create(&e, "half", None, &[("size", "10m")]));
    e.host.heal();
    // The undo's record delete worked; put the record back as a crash would leave it.
    let mut b = Batch::new();
    b.put_json(
        Table::Volumes,
        "default/half",
        &serde_json::json!({"name": "half", "project": "default", "driver": "local",
            "created": "2026-01-01T00:00:00Z", "mountpoint": "", "labels": {}, "options": {},
            "size_limit": 10 << 20, "phase": "creating"}),
    );
    b.commit(e.db.as_ref()).unwrap();
    assert!(
        e.vols.get(&default(), "half").is_err(),
        "hidden while creating"
    );
    assert!(e.vols.list(&default()).unwrap().is_empty());
    e.reopen().reconcile().unwrap();
    e.assert_clean();
}

#[test]
fn reconcile_removes_directories_no_record_owns() {
    let e = env();
    create(&e, "kept", None, &[]).unwrap();
    std::fs::create_dir_all(e.vdir("default", "orphan").join("_data")).unwrap();
    e.reopen().reconcile().unwrap();
    assert!(!e.vdir("default", "orphan").exists());
    assert!(e.vdir("default", "kept").join("_data").is_dir());
}

// ---- the reconciler beside the API -------------------------------------------------------

/// Starts creating volume `name` (limited, so it has an image and a mount) on a thread
/// that the store holds at the create's ready step (its second read of the record) until
/// the returned sender is dropped or sent to; the join handle gives the create's result.
fn held_create(
    e: &Env,
    name: &'static str,
) -> (
    std::sync::mpsc::Sender<()>,
    std::thread::JoinHandle<EngineResult<VolumeInspect>>,
) {
    let (held_tx, held_rx) = std::sync::mpsc::channel::<()>();
    let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
    let go_rx = Mutex::new(Some(go_rx));
    let reads = std::sync::atomic::AtomicUsize::new(0);
    let held_tx = Mutex::new(held_tx);
    let record = format!("default/{name}");
    e.db.on_read(Some(Arc::new(move |table, key| {
        if table != Table::Volumes
            || key != record
            || std::thread::current().name() != Some("creator")
        {
            return;
        }
        if reads.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 1 {
            let _ = held_tx.lock().unwrap().send(());
            if let Some(rx) = go_rx.lock().unwrap().take() {
                let _ = rx.recv();
            }
        }
    })));
    let vols = e.vols.clone();
    let h = std::thread::Builder::new()
        .name("creator".into())
        .spawn(move || {
            vols.create(
                &cx(&default()),
                req(Some(name), None, &[("size", "10m")]),
                false,
            )
        })
        .unwrap();
    held_rx
        .recv_timeout(Duration::from_secs(5))
        .expect("the create reached its ready step");
    (go_tx, h)
}

#[test]
fn a_create_in_flight_survives_a_reconcile_pass() {
    let e = env();
    let (go, creator) = held_create(&e, "held");
    // Mid-way: its record is `creating`, its directory and mount are made.
    assert!(
        e.vols.get(&default(), "held").is_err(),
        "hidden while creating"
    );
    let data = e.vdir("default", "held").join("_data");
    assert!(e.host.state().mounts.contains_key(&data));
    // Its lease lives: a pass (and the start's reconcile) leave it be.
    assert!(e.vols.reap_dead_creates().unwrap().is_empty());
    e.vols.reconcile().unwrap();
    assert!(e.host.state().mounts.contains_key(&data));
    assert_eq!(e.db.list(Table::Volumes, "").unwrap().len(), 1);
    go.send(()).unwrap();
    let v = creator.join().unwrap().unwrap();
    assert_eq!(v.size_limit, Some(10 << 20));
    assert!(e.vols.get(&default(), "held").is_ok());
    assert!(
        e.db.list(Table::Meta, CREATING_PREFIX).unwrap().is_empty(),
        "the create's key went with its ready step"
    );
    e.db.on_read(None);
    e.vols.remove(&default(), "held").unwrap();
    e.assert_clean();
}

#[test]
fn a_create_whose_lease_expired_is_reaped_with_its_directory() {
    let e = env();
    e.vols.set_count_quota(&cx(&default()), Some(1)).unwrap();
    let (go, creator) = held_create(&e, "stalled");
    // Its owner stalls past the lease's time to live: the lease ends, and with it the
    // create's key.
    e.clock.advance(CREATE_LEASE_TTL + Duration::from_secs(1));
    assert_eq!(e.db.expire_leases().unwrap().len(), 1);
    assert_eq!(e.vols.reap_dead_creates().unwrap(), vec!["stalled"]);
    assert!(!e.vdir("default", "stalled").exists());
    assert!(e.host.state().is_clean(), "{:?}", e.host.state());
    assert!(e.db.list(Table::Volumes, "").unwrap().is_empty());
    assert_eq!(e.vols.volume_count(&cx(&default())).unwrap(), 0);
    // The owner, woken, finds it given up and leaves nothing either.
    go.send(()).unwrap();
    let err = err_of(creator.join().unwrap());
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{}", err.message());
    assert!(err.message().contains("lease"), "{}", err.message());
    e.db.on_read(None);
    e.assert_clean();
    // Its slot is free again.
    create(&e, "stalled", None, &[]).unwrap();
}

#[test]
fn a_create_that_becomes_ready_during_a_pass_keeps_its_directory() {
    let e = env();
    let (go, creator) = held_create(&e, "racing");
    // A pass lists the records while the create is mid-way, and is held there...
    let (listed_tx, listed_rx) = std::sync::mpsc::channel::<()>();
    let (on_tx, on_rx) = std::sync::mpsc::channel::<()>();
    let (listed_tx, on_rx) = (Mutex::new(listed_tx), Mutex::new(on_rx));
    e.db.on_read(Some(Arc::new(move |table, _| {
        if table == Table::Volumes && std::thread::current().name() == Some("reaper") {
            let _ = listed_tx.lock().unwrap().send(());
            let _ = on_rx.lock().unwrap().recv();
        }
    })));
    let vols = e.vols.clone();
    let reaper = std::thread::Builder::new()
        .name("reaper".into())
        .spawn(move || vols.reap_dead_creates())
        .unwrap();
    listed_rx
        .recv_timeout(Duration::from_secs(5))
        .expect("the pass listed the records");
    // ... while the create becomes ready, its key going with it.
    go.send(()).unwrap();
    creator.join().unwrap().unwrap();
    drop(on_tx);
    // The pass then finds the key gone, but the volume is a live one.
    assert!(reaper.join().unwrap().unwrap().is_empty());
    e.db.on_read(None);
    let data = e.vdir("default", "racing").join("_data");
    assert!(data.is_dir(), "the pass removed a live volume's directory");
    assert!(e.host.state().mounts.contains_key(&data));
    assert!(e.vols.get(&default(), "racing").is_ok());
    e.vols.remove(&default(), "racing").unwrap();
    e.assert_clean();
}

#[tokio::test]
async fn the_reconciler_reaps_a_dead_create_when_its_lease_ends() {
    let e = env();
    // As a create whose daemon died mid-way leaves it: a `creating` record, its
    // directory, and its key on a lease nobody keeps alive.
    let lease = e.db.grant(Duration::from_secs(5)).unwrap();
    let mut b = Batch::new();
    b.put_json(
        Table::Volumes,
        "default/dead",
        &serde_json::json!({"name": "dead", "project": "default", "driver": "local",
            "created": "2026-01-01T00:00:00Z", "mountpoint": "", "labels": {}, "options": {},
            "phase": "creating"}),
    );
    b.put_json_leased(
        Table::Meta,
        format!("{CREATING_PREFIX}default/dead"),
        &true,
        lease,
    );
    b.commit(e.db.as_ref()).unwrap();
    std::fs::create_dir_all(e.vdir("default", "dead").join("_data")).unwrap();
    let store: Arc<dyn Store> = e.db.clone();
    let mut loops = pier_engine::reconcile::Loops::default();
    loops.spawn_lease_tick(store.clone(), Duration::from_millis(10));
    loops.spawn(
        store,
        Arc::new(VolumeReconciler {
            volumes: e.vols.clone(),
            period: Duration::from_secs(3600),
        }),
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        e.vdir("default", "dead").exists(),
        "reaped while its lease lived"
    );
    assert_eq!(e.db.list(Table::Volumes, "").unwrap().len(), 1);
    e.clock.advance(Duration::from_secs(6));
    let t0 = std::time::Instant::now();
    while e.vdir("default", "dead").exists() || !e.db.list(Table::Volumes, "").unwrap().is_empty() {
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "the dead create was not reaped"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    drop(loops);
    e.assert_clean();
}
