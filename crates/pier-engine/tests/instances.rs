//! The engine test tier for instances: create, start, stop, remove, restart policies and
//! restore over `MemStore` and the fake driver, with no root and no host networking
//! (`--network none`). Failures are injected at each step (the driver's, and the
//! store's commits through [`FaultyStore`]) and every test checks that nothing is left.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pier_api::containers::{ContainerCreate, ContainerInspect, ContainerStatus, RestartPolicy};
use pier_api::volumes::{MountKind, MountSpec};
use pier_api::{ErrorKind, ProjectName};
use pier_engine::host::net::fake::{FakeFirewall, FakeNetHost};
use pier_engine::host::storage::fake::FakeStorage;
use pier_engine::instances::driver::{Driver, NetworkAttachment, VolumeKind};
use pier_engine::instances::fake::{FakeDriver, Op};
use pier_engine::instances::record::{self, Run};
use pier_engine::instances::{InstanceReconciler, Instances, Peers};
use pier_engine::networks::Networks;
use pier_engine::projects::Projects;
use pier_engine::reconcile::Loops;
use pier_engine::sessions::exec::{ExecError, ExecSpec, StartOptions};
use pier_engine::volumes::Volumes;
use pier_engine::{Caller, EngineError, RequestContext};
use pier_image::ImageStore;
use pier_store::{FaultyStore, Store, StoreExt, Table};
use sha2::Digest;

// ---- the engine over the fakes ----------------------------------------------------------

/// A request in project `p` by a local caller (the engine tier's tests ask as uid 0).
fn cx(p: &ProjectName) -> RequestContext {
    RequestContext::new(p.clone(), Caller::Local { uid: 0, pid: None })
}

struct Env {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    store: Arc<FaultyStore>,
    images: Arc<ImageStore>,
    networks: Arc<Networks>,
    volumes: Arc<Volumes>,
    projects: Arc<Projects>,
    driver: Arc<FakeDriver>,
    c: Arc<Instances>,
    p: ProjectName,
    /// A request in `p`.
    ctx: RequestContext,
}

/// A `docker save` archive of one image with an empty layer and `config`.
fn image_archive(tag: &str, config: serde_json::Value) -> Vec<u8> {
    let layer = {
        let mut b = tar::Builder::new(Vec::new());
        b.finish().unwrap();
        b.into_inner().unwrap()
    };
    let diff_id = format!("sha256:{:x}", sha2::Sha256::digest(&layer));
    let config = serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": config,
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
    });
    let config = serde_json::to_vec(&config).unwrap();
    let manifest = serde_json::to_vec(&serde_json::json!([
        {"Config": "config.json", "RepoTags": [tag], "Layers": ["layer.tar"]}
    ]))
    .unwrap();
    let mut b = tar::Builder::new(Vec::new());
    for (name, data) in [
        ("config.json", &config),
        ("layer.tar", &layer),
        ("manifest.json", &manifest),
    ] {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, name, data.as_slice()).unwrap();
    }
    b.into_inner().unwrap()
}

impl Env {
    async fn new() -> Env {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().to_path_buf();
        let store = Arc::new(FaultyStore::default());
        let db: Arc<dyn Store> = store.clone();
        let images = Arc::new(ImageStore::open(&root.join("images"), db.clone()).unwrap());
        let p = ProjectName::default_project();
        for (tag, config) in [
            ("img:latest", serde_json::json!({"Cmd": ["true"]})),
            (
                "vol:latest",
                serde_json::json!({"Cmd": ["true"], "Volumes": {"/data": {}}}),
            ),
            ("nocmd:latest", serde_json::json!({})),
        ] {
            pier_image::archive::load(&images, &p, image_archive(tag, config).as_slice()).unwrap();
        }
        let projects = Arc::new(Projects::new(db.clone()).unwrap());
        let names = pier_net::names::HostNames::for_root(&root, false);
        let networks = Arc::new(
            Networks::new(
                &root,
                names,
                db.clone(),
                FakeNetHost::new(),
                FakeFirewall::new(),
            )
            .unwrap(),
        );
        let storage = FakeStorage::new();
        let volumes = Arc::new(
            Volumes::new(
                &root,
                db.clone(),
                projects.clone(),
                Arc::new(storage.clone()),
                Arc::new(storage),
            )
            .unwrap(),
        );
        let driver = Arc::new(FakeDriver::new());
        let c = containers(
            &root, &store, &images, &networks, &volumes, &projects, &driver,
        );
        Env {
            _tmp: tmp,
            root,
            store,
            images,
            networks,
            volumes,
            projects,
            driver,
            c,
            ctx: cx(&p),
            p,
        }
    }

    /// A new engine over the same store and driver, as after a daemon restart, restored.
    async fn restart(&mut self) {
        self.restart_with(|_| {}).await;
    }

    /// As [`Env::restart`], with `before` run on the new service before its restore.
    async fn restart_with(&mut self, before: impl FnOnce(&Instances)) {
        self.driver.daemon_restart();
        self.c = containers(
            &self.root,
            &self.store,
            &self.images,
            &self.networks,
            &self.volumes,
            &self.projects,
            &self.driver,
        );
        before(&self.c);
        self.c.restore().await.unwrap();
    }

    fn create_with(
        &self,
        name: Option<&str>,
        f: impl FnOnce(&mut ContainerCreate),
    ) -> Result<String, EngineError> {
        let mut req = ContainerCreate {
            image: "img:latest".into(),
            name: name.map(String::from),
            network: Some("none".into()),
            ..Default::default()
        };
        f(&mut req);
        self.c.create(&self.ctx, req).map(|c| c.id.to_string())
    }

    fn create(&self, name: &str) -> String {
        self.create_with(Some(name), |_| {}).unwrap()
    }

    async fn run(&self, name: &str) -> String {
        let id = self.create(name);
        self.c.start(&self.ctx, &id).await.unwrap();
        id
    }

    fn get(&self, id: &str) -> ContainerInspect {
        self.c.get(&self.ctx, id).unwrap()
    }

    fn status(&self, id: &str) -> ContainerStatus {
        self.get(id).state.status
    }

    /// Waits (at most 5 s) until `f` holds of the container's record.
    async fn until(&self, id: &str, f: impl Fn(&ContainerInspect) -> bool) -> ContainerInspect {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if let Ok(c) = self.c.get(&self.ctx, id) {
                if f(&c) {
                    return c;
                }
            }
            assert!(Instant::now() < deadline, "timed out waiting on {id}");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// Waits (at most 5 s) until the container has no record.
    async fn until_gone(&self, id: &str) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.c.get(&self.ctx, id).is_ok() {
            assert!(Instant::now() < deadline, "{id} was not removed");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    fn records(&self) -> usize {
        self.store.list(Table::Containers, "").unwrap().len()
    }

    fn pins(&self) -> Vec<String> {
        self.store
            .list(Table::ImageUsers, "")
            .unwrap()
            .into_iter()
            .map(|(k, _)| k)
            .filter(|k| k.contains("/container/"))
            .collect()
    }

    fn volume_names(&self) -> Vec<String> {
        self.volumes
            .list(&self.p)
            .unwrap()
            .into_iter()
            .map(|v| v.name)
            .collect()
    }

    /// Nothing of any container is left: records, pins, the driver's instances and
    /// runs, anonymous volumes, files in the containers directory.
    fn assert_nothing_left(&self) {
        assert_eq!(self.records(), 0, "container records left");
        assert_eq!(
            self.store.list(Table::ContainerStatus, "").unwrap().len(),
            0,
            "container statuses left"
        );
        assert!(self.pins().is_empty(), "image pins left: {:?}", self.pins());
        assert!(
            self.driver.instances().is_empty(),
            "driver instances left: {:?}",
            self.driver.instances().keys().collect::<Vec<_>>()
        );
        assert!(self.driver.running().is_empty());
        let anonymous: Vec<_> = self
            .volumes
            .list(&self.p)
            .unwrap()
            .into_iter()
            .filter(|v| v.anonymous)
            .collect();
        assert!(anonymous.is_empty(), "anonymous volumes left");
        let files = std::fs::read_dir(self.root.join("containers"))
            .map(|d| d.count())
            .unwrap_or(0);
        assert_eq!(files, 0, "files left in the containers directory");
    }
}

fn containers(
    root: &std::path::Path,
    store: &Arc<FaultyStore>,
    images: &Arc<ImageStore>,
    networks: &Arc<Networks>,
    volumes: &Arc<Volumes>,
    projects: &Arc<Projects>,
    driver: &Arc<FakeDriver>,
) -> Arc<Instances> {
    let driver: Arc<dyn Driver> = driver.clone();
    Instances::with_driver(
        root,
        store.clone(),
        Peers {
            images: images.clone(),
            networks: networks.clone(),
            volumes: volumes.clone(),
            projects: projects.clone(),
        },
        driver,
        "pier-test".into(),
    )
    .unwrap()
}

fn anon_volume(target: &str) -> MountSpec {
    MountSpec {
        kind: MountKind::Volume,
        source: None,
        target: target.into(),
        ..Default::default()
    }
}

fn kind(r: Result<impl Sized, EngineError>) -> ErrorKind {
    match r {
        Ok(_) => panic!("expected an error"),
        Err(e) => e.kind(),
    }
}

// ---- create ----------------------------------------------------------------------------

#[tokio::test]
async fn create_records_the_container_and_prepares_it_with_no_network() {
    let e = Env::new().await;
    let id = e.create("web");
    let c = e.get(&id);
    assert_eq!(c.name, "web");
    assert_eq!(c.state.status, ContainerStatus::Created);
    assert_eq!(c.command, vec!["true"]);
    let i = e.driver.instance(&id).expect("prepared");
    assert_eq!(i.network, NetworkAttachment::Isolated);
    assert!(i.run.is_none());
    assert_eq!(e.pins().len(), 1, "the image is pinned by the container");
}

#[tokio::test]
async fn create_on_the_host_network_prepares_a_host_attachment() {
    let e = Env::new().await;
    let id = e
        .create_with(None, |r| r.network = Some("host".into()))
        .unwrap();
    assert_eq!(
        e.driver.instance(&id).unwrap().network,
        NetworkAttachment::Host
    );
}

#[tokio::test]
async fn create_failing_in_the_driver_leaves_nothing() {
    let e = Env::new().await;
    e.driver.fail(Op::Prepare, 1);
    assert_eq!(kind(e.create_with(Some("a"), |_| {})), ErrorKind::Internal);
    e.assert_nothing_left();
    // The name is free again.
    e.create("a");
}

#[tokio::test]
async fn create_failing_at_the_record_leaves_nothing() {
    let e = Env::new().await;
    e.store.fail_txn(0);
    assert!(e.create_with(Some("a"), |_| {}).is_err());
    assert_eq!(
        e.driver.calls_of(Op::Destroy).len(),
        1,
        "the prepared instance is destroyed"
    );
    e.assert_nothing_left();
    e.create("a");
}

#[tokio::test]
async fn create_failing_in_the_driver_removes_its_anonymous_volumes() {
    let e = Env::new().await;
    e.driver.fail(Op::Prepare, 1);
    let r = e.create_with(Some("a"), |r| r.mounts = vec![anon_volume("/v")]);
    assert!(r.is_err());
    assert!(e.volume_names().is_empty(), "{:?}", e.volume_names());
    e.assert_nothing_left();
}

#[tokio::test]
async fn create_failing_at_the_record_removes_the_image_volumes_it_made() {
    let e = Env::new().await;
    // The volume's own record is the first commit; the container's the second.
    e.store.fail_txn(1);
    let r = e.create_with(Some("a"), |r| r.image = "vol:latest".into());
    assert!(r.is_err());
    assert!(e.volume_names().is_empty(), "{:?}", e.volume_names());
    e.assert_nothing_left();
}

#[tokio::test]
async fn create_failing_keeps_a_named_volume_that_existed() {
    let e = Env::new().await;
    e.volumes
        .create(
            &cx(&e.p),
            pier_api::volumes::VolumeCreate {
                name: Some("keep".into()),
                ..Default::default()
            },
            false,
        )
        .unwrap();
    e.driver.fail(Op::Prepare, 1);
    let r = e.create_with(Some("a"), |r| {
        r.mounts = vec![MountSpec {
            source: Some("keep".into()),
            ..anon_volume("/k")
        }]
    });
    assert!(r.is_err());
    assert_eq!(e.volume_names(), vec!["keep".to_string()]);
    e.assert_nothing_left();
}

#[tokio::test]
async fn create_gives_the_driver_the_volumes_with_their_host_paths() {
    let e = Env::new().await;
    let id = e
        .create_with(None, |r| r.image = "vol:latest".into())
        .unwrap();
    let i = e.driver.instance(&id).unwrap();
    assert_eq!(i.volumes.len(), 1);
    let v = &i.volumes[0];
    assert_eq!(v.target, "/data");
    assert_eq!(v.kind, VolumeKind::Directory);
    assert!(v.copy_up, "an empty volume is filled from the image");
    assert_eq!(v.host_path, e.volumes.mountpoint(&e.p, &v.name));
    assert_eq!(e.volume_names(), vec![v.name.clone()]);
}

#[tokio::test]
async fn create_of_an_unknown_image_leaves_nothing() {
    let e = Env::new().await;
    let r = e.create_with(Some("a"), |r| r.image = "missing:latest".into());
    assert_eq!(kind(r), ErrorKind::NotFound);
    assert!(e.driver.calls().is_empty());
    e.assert_nothing_left();
}

#[tokio::test]
async fn create_with_an_invalid_name_is_refused_before_anything_is_made() {
    let e = Env::new().await;
    assert_eq!(
        kind(e.create_with(Some("-bad"), |_| {})),
        ErrorKind::InvalidInput
    );
    assert!(e.driver.calls().is_empty());
    e.assert_nothing_left();
}

#[tokio::test]
async fn create_without_a_command_is_refused() {
    let e = Env::new().await;
    let r = e.create_with(None, |r| r.image = "nocmd:latest".into());
    assert_eq!(kind(r), ErrorKind::InvalidInput);
    e.assert_nothing_left();
}

#[tokio::test]
async fn create_with_a_taken_name_conflicts() {
    let e = Env::new().await;
    e.create("a");
    assert_eq!(kind(e.create_with(Some("a"), |_| {})), ErrorKind::Conflict);
    assert_eq!(e.records(), 1);
    assert_eq!(e.driver.instances().len(), 1);
}

#[tokio::test]
async fn create_with_a_given_id_uses_it_and_refuses_an_id_in_use() {
    let e = Env::new().await;
    let id: pier_api::ContainerId = pier_api::random_hex(32).parse().unwrap();
    let req = |name: &str| ContainerCreate {
        image: "img:latest".into(),
        name: Some(name.into()),
        network: Some("none".into()),
        ..Default::default()
    };
    let made = e.c.create_with_id(&e.ctx, req("placed"), &id).unwrap();
    assert_eq!(made.id, id);
    assert_eq!(e.get("placed").id, id.to_string());
    assert!(e.driver.instance(id.as_str()).is_some());
    // In use, under another name too: refused, nothing more made.
    let again = e.c.create_with_id(&e.ctx, req("other"), &id);
    let err = again.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Conflict);
    assert!(err.to_string().contains("is in use on this host"), "{err}");
    assert_eq!(e.records(), 1);
    e.c.remove(&e.ctx, id.as_str(), false, false).await.unwrap();
    e.assert_nothing_left();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_creates_of_one_name_make_exactly_one() {
    let e = Arc::new(Env::new().await);
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let e = e.clone();
        tasks.push(tokio::task::spawn_blocking(move || {
            e.create_with(Some("same"), |_| {}).is_ok()
        }));
    }
    let mut won = 0;
    for t in tasks {
        won += t.await.unwrap() as u32;
    }
    assert_eq!(won, 1);
    assert_eq!(e.records(), 1);
    assert_eq!(e.driver.instances().len(), 1);
}

#[tokio::test]
async fn a_container_is_found_by_name_id_and_unique_prefix() {
    let e = Env::new().await;
    let id = e.create("named");
    assert_eq!(e.get("named").id, id);
    assert_eq!(e.get(&id).id, id);
    assert_eq!(e.get(&id[..12]).id, id);
    assert_eq!(kind(e.c.get(&e.ctx, "nope")), ErrorKind::NotFound);
}

#[tokio::test]
async fn a_rename_frees_the_old_name_and_refuses_a_taken_one() {
    let e = Env::new().await;
    let x = e.create("x");
    e.create("y");
    assert_eq!(
        kind(e.c.rename(&e.ctx, "x", "y").await),
        ErrorKind::Conflict
    );
    e.c.rename(&e.ctx, "x", "z").await.unwrap();
    assert_eq!(e.get("z").id, x);
    assert_eq!(kind(e.c.get(&e.ctx, "x")), ErrorKind::NotFound);
    e.create("x");
}

#[tokio::test]
async fn a_random_name_is_given_when_none_is_asked() {
    let e = Env::new().await;
    let id = e.create_with(None, |_| {}).unwrap();
    let name = e.get(&id).name;
    assert!(name.contains('_') && name.ends_with(&id[8..12]), "{name}");
}

// ---- start -----------------------------------------------------------------------------

#[tokio::test]
async fn start_runs_the_instance_and_records_its_pid() {
    let e = Env::new().await;
    let id = e.run("a").await;
    let c = e.get(&id);
    assert_eq!(c.state.status, ContainerStatus::Running);
    let run = e.driver.instance(&id).unwrap().run.unwrap();
    assert_eq!(c.state.pid, Some(run.handle.pid));
    assert_eq!(c.state.monitor_pid, run.handle.monitor_pid);
    assert_eq!(
        c.state.started_at.as_deref(),
        Some(run.handle.started_at.as_str())
    );
    assert_eq!(e.driver.running(), vec![id]);
}

#[tokio::test]
async fn starting_a_running_container_again_does_nothing() {
    let e = Env::new().await;
    let id = e.run("a").await;
    let c = e.c.start(&e.ctx, &id).await.unwrap();
    assert_eq!(c.state.status, ContainerStatus::Running);
    assert_eq!(e.driver.calls_of(Op::Start).len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_starts_start_once() {
    let e = Arc::new(Env::new().await);
    let id = e.create("a");
    let mut tasks = Vec::new();
    for _ in 0..6 {
        let (e, id) = (e.clone(), id.clone());
        tasks.push(tokio::spawn(
            async move { e.c.start(&e.ctx, &id).await.is_ok() },
        ));
    }
    for t in tasks {
        assert!(t.await.unwrap());
    }
    assert_eq!(e.driver.calls_of(Op::Start).len(), 1);
}

#[tokio::test]
async fn a_start_failing_in_the_driver_leaves_it_created_and_nothing_running() {
    let e = Env::new().await;
    let id = e.create("a");
    e.driver.fail(Op::Start, 1);
    assert_eq!(kind(e.c.start(&e.ctx, &id).await), ErrorKind::Internal);
    assert_eq!(e.status(&id), ContainerStatus::Created);
    assert!(e.driver.running().is_empty());
    // It can be started afterwards.
    e.c.start(&e.ctx, &id).await.unwrap();
    assert_eq!(e.status(&id), ContainerStatus::Running);
}

#[tokio::test]
async fn a_refused_start_records_its_exit_code_and_error() {
    let e = Env::new().await;
    let id = e.create("a");
    e.driver.refuse_starts(Some(127));
    let err = e.c.start(&e.ctx, &id).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    assert_eq!(err.exit_code(), Some(127));
    let c = e.get(&id);
    assert_eq!(c.state.status, ContainerStatus::Created, "it never ran");
    assert_eq!(c.state.exit_code, Some(127));
    assert!(c.state.error.as_deref().unwrap().contains("refuses"));
    assert!(e.driver.running().is_empty());
}

#[tokio::test]
async fn a_refused_start_of_a_container_that_ran_leaves_it_exited() {
    let e = Env::new().await;
    let id = e.run("a").await;
    e.driver.exit(&id, 0);
    e.until(&id, |c| c.state.status == ContainerStatus::Exited)
        .await;
    e.driver.refuse_starts(Some(126));
    assert!(e.c.start(&e.ctx, &id).await.is_err());
    let c = e.get(&id);
    assert_eq!(c.state.status, ContainerStatus::Exited);
    assert_eq!(c.state.exit_code, Some(126));
}

#[tokio::test]
async fn a_refused_start_of_an_rm_container_leaves_nothing() {
    let e = Env::new().await;
    let id = e
        .create_with(Some("a"), |r| {
            r.auto_remove = true;
            r.image = "vol:latest".into();
        })
        .unwrap();
    e.driver.refuse_starts(Some(127));
    assert!(e.c.start(&e.ctx, &id).await.is_err());
    e.assert_nothing_left();
}

#[tokio::test]
async fn a_start_whose_desired_state_cannot_be_recorded_runs_nothing() {
    let e = Env::new().await;
    let id = e.create("a");
    // The start's first write records that it is to run; it fails, so nothing starts.
    e.store.fail_txn(0);
    assert!(e.c.start(&e.ctx, &id).await.is_err());
    assert!(e.driver.calls_of(Op::Start).is_empty());
    assert_eq!(e.status(&id), ContainerStatus::Created);
    e.c.start(&e.ctx, &id).await.unwrap();
    assert_eq!(e.status(&id), ContainerStatus::Running);
}

#[tokio::test]
async fn a_start_whose_record_cannot_be_written_stops_the_run_again() {
    let e = Env::new().await;
    let id = e.create("a");
    // The second write is the start's status, once the run began.
    e.store.fail_txn(1);
    assert!(e.c.start(&e.ctx, &id).await.is_err());
    assert!(
        e.driver.running().is_empty(),
        "the unrecorded run was killed"
    );
    assert_eq!(e.driver.calls_of(Op::KillAll).len(), 1);
    assert_eq!(e.status(&id), ContainerStatus::Created);
    e.c.start(&e.ctx, &id).await.unwrap();
    assert_eq!(e.status(&id), ContainerStatus::Running);
}

#[tokio::test]
async fn start_gives_the_driver_the_attached_volumes() {
    let e = Env::new().await;
    let id = e
        .create_with(None, |r| r.image = "vol:latest".into())
        .unwrap();
    e.c.start(&e.ctx, &id).await.unwrap();
    let i = e.driver.instance(&id).unwrap();
    assert_eq!(i.started_with.len(), 1);
    assert_eq!(i.started_with[0].target, "/data");
}

#[tokio::test]
async fn starting_an_unknown_container_is_not_found() {
    let e = Env::new().await;
    assert_eq!(kind(e.c.start(&e.ctx, "ghost").await), ErrorKind::NotFound);
    assert!(e.driver.calls().is_empty());
}

// ---- exits, wait -----------------------------------------------------------------------

#[tokio::test]
async fn an_exit_is_recorded_with_its_code() {
    let e = Env::new().await;
    let id = e.run("a").await;
    assert!(e.driver.exit(&id, 3));
    let c = e
        .until(&id, |c| c.state.status == ContainerStatus::Exited)
        .await;
    assert_eq!(c.state.exit_code, Some(3));
    assert_eq!(c.state.pid, None);
    assert!(c.state.finished_at.is_some());
    assert_eq!(e.driver.calls_of(Op::Reap).len(), 1);
}

#[tokio::test]
async fn wait_answers_the_exit_code() {
    let e = Env::new().await;
    let id = e.run("a").await;
    let w = e.c.wait(&e.ctx, &id, false, false).unwrap();
    e.driver.exit(&id, 42);
    let r = tokio::time::timeout(Duration::from_secs(5), w)
        .await
        .unwrap();
    assert_eq!(r.exit_code, 42);
}

#[tokio::test]
async fn wait_for_the_next_exit_asked_before_the_start() {
    let e = Env::new().await;
    let id = e.run("a").await;
    e.driver.exit(&id, 1);
    e.until(&id, |c| c.state.status == ContainerStatus::Exited)
        .await;
    let w = e.c.wait(&e.ctx, &id, true, false).unwrap();
    e.c.start(&e.ctx, &id).await.unwrap();
    e.driver.exit(&id, 7);
    let r = tokio::time::timeout(Duration::from_secs(5), w)
        .await
        .unwrap();
    assert_eq!(r.exit_code, 7, "not the earlier exit's code");
}

#[tokio::test]
async fn wait_for_removal_ends_when_the_container_is_removed() {
    let e = Env::new().await;
    let id = e.create("a");
    let w = e.c.wait(&e.ctx, &id, false, true).unwrap();
    let waiting = tokio::spawn(w);
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(
        !waiting.is_finished(),
        "it waits for the removal, not the stop"
    );
    e.c.remove(&e.ctx, &id, false, false).await.unwrap();
    tokio::time::timeout(Duration::from_secs(5), waiting)
        .await
        .unwrap()
        .unwrap();
}

// ---- signals, stop, pause --------------------------------------------------------------

#[tokio::test]
async fn stop_sends_term_and_records_a_stop_by_the_user() {
    let e = Env::new().await;
    let id = e.run("a").await;
    e.c.stop(&e.ctx, &id, None, None).await.unwrap();
    let c = e.get(&id);
    assert_eq!(c.state.status, ContainerStatus::Exited);
    assert_eq!(c.state.exit_code, Some(128 + libc::SIGTERM));
    assert!(c.state.stopped_by_user);
    let sigs: Vec<_> = e
        .driver
        .calls_of(Op::Signal)
        .iter()
        .map(|c| c.arg)
        .collect();
    assert_eq!(sigs, vec![Some(libc::SIGTERM.into())]);
}

#[tokio::test]
async fn stop_kills_what_ignores_its_signal_after_the_timeout() {
    let e = Env::new().await;
    let id = e.run("a").await;
    e.driver.ignore_signal(libc::SIGTERM);
    e.c.stop(&e.ctx, &id, Some(0), None).await.unwrap();
    let sigs: Vec<_> = e
        .driver
        .calls_of(Op::Signal)
        .iter()
        .map(|c| c.arg)
        .collect();
    assert_eq!(
        sigs,
        vec![Some(libc::SIGTERM.into()), Some(libc::SIGKILL.into())]
    );
    assert_eq!(e.get(&id).state.exit_code, Some(137));
}

#[tokio::test]
async fn stop_uses_the_containers_stop_signal() {
    let e = Env::new().await;
    let id = e
        .create_with(Some("a"), |r| r.stop_signal = Some("SIGINT".into()))
        .unwrap();
    e.c.start(&e.ctx, &id).await.unwrap();
    e.c.stop(&e.ctx, &id, Some(0), None).await.unwrap();
    let sigs: Vec<_> = e
        .driver
        .calls_of(Op::Signal)
        .iter()
        .map(|c| c.arg)
        .collect();
    assert_eq!(sigs[0], Some(libc::SIGINT.into()));
}

#[tokio::test]
async fn stopping_a_stopped_container_does_nothing() {
    let e = Env::new().await;
    let id = e.create("a");
    e.c.stop(&e.ctx, &id, None, None).await.unwrap();
    assert!(e.driver.calls_of(Op::Signal).is_empty());
    assert_eq!(e.status(&id), ContainerStatus::Created);
}

#[tokio::test]
async fn kill_sends_sigkill_by_default() {
    let e = Env::new().await;
    let id = e.run("a").await;
    e.c.kill(&e.ctx, &id, None).await.unwrap();
    let c = e
        .until(&id, |c| c.state.status == ContainerStatus::Exited)
        .await;
    assert_eq!(c.state.exit_code, Some(137));
    assert!(c.state.stopped_by_user);
}

#[tokio::test]
async fn kill_with_another_signal_passes_it_and_leaves_it_running() {
    let e = Env::new().await;
    let id = e.run("a").await;
    e.c.kill(&e.ctx, &id, Some("USR1")).await.unwrap();
    let sigs: Vec<_> = e
        .driver
        .calls_of(Op::Signal)
        .iter()
        .map(|c| c.arg)
        .collect();
    assert_eq!(sigs, vec![Some(libc::SIGUSR1.into())]);
    assert_eq!(e.status(&id), ContainerStatus::Running);
    assert!(!e.get(&id).state.stopped_by_user);
}

#[tokio::test]
async fn kill_of_a_stopped_container_conflicts() {
    let e = Env::new().await;
    let id = e.create("a");
    assert_eq!(kind(e.c.kill(&e.ctx, &id, None).await), ErrorKind::Conflict);
    assert!(e.driver.calls_of(Op::Signal).is_empty());
}

#[tokio::test]
async fn kill_with_an_unknown_signal_is_invalid() {
    let e = Env::new().await;
    let id = e.run("a").await;
    assert_eq!(
        kind(e.c.kill(&e.ctx, &id, Some("NOPE")).await),
        ErrorKind::InvalidInput
    );
    assert_eq!(
        kind(e.c.kill(&e.ctx, &id, Some("99")).await),
        ErrorKind::InvalidInput
    );
    assert_eq!(e.status(&id), ContainerStatus::Running);
}

#[tokio::test]
async fn pause_and_unpause() {
    let e = Env::new().await;
    let id = e.run("a").await;
    e.c.pause(&e.ctx, &id, true).await.unwrap();
    assert_eq!(e.status(&id), ContainerStatus::Paused);
    assert!(e.driver.instance(&id).unwrap().paused);
    e.c.pause(&e.ctx, &id, false).await.unwrap();
    assert_eq!(e.status(&id), ContainerStatus::Running);
    assert!(!e.driver.instance(&id).unwrap().paused);
}

#[tokio::test]
async fn pause_of_a_stopped_or_paused_container_conflicts() {
    let e = Env::new().await;
    let id = e.create("a");
    assert_eq!(
        kind(e.c.pause(&e.ctx, &id, true).await),
        ErrorKind::Conflict
    );
    e.c.start(&e.ctx, &id).await.unwrap();
    e.c.pause(&e.ctx, &id, true).await.unwrap();
    assert_eq!(
        kind(e.c.pause(&e.ctx, &id, true).await),
        ErrorKind::Conflict
    );
}

#[tokio::test]
async fn unpause_of_a_running_container_conflicts() {
    let e = Env::new().await;
    let id = e.run("a").await;
    assert_eq!(
        kind(e.c.pause(&e.ctx, &id, false).await),
        ErrorKind::Conflict
    );
    assert!(e.driver.calls_of(Op::Pause).is_empty());
}

#[tokio::test]
async fn a_pause_the_driver_fails_leaves_it_running() {
    let e = Env::new().await;
    let id = e.run("a").await;
    e.driver.fail(Op::Pause, 1);
    assert!(e.c.pause(&e.ctx, &id, true).await.is_err());
    assert_eq!(e.status(&id), ContainerStatus::Running);
}

#[tokio::test]
async fn killing_a_paused_container_thaws_it_first() {
    let e = Env::new().await;
    let id = e.run("a").await;
    e.c.pause(&e.ctx, &id, true).await.unwrap();
    e.c.kill(&e.ctx, &id, None).await.unwrap();
    let ops: Vec<_> = e
        .driver
        .calls()
        .into_iter()
        .filter(|c| matches!(c.op, Op::Pause | Op::Signal))
        .map(|c| (c.op, c.arg))
        .collect();
    assert_eq!(
        ops,
        vec![
            (Op::Pause, Some(1)),
            (Op::Pause, Some(0)),
            (Op::Signal, Some(libc::SIGKILL.into()))
        ]
    );
    e.until(&id, |c| c.state.status == ContainerStatus::Exited)
        .await;
}

#[tokio::test]
async fn stats_and_top_ask_the_driver_while_it_runs() {
    let e = Env::new().await;
    let id = e.create("a");
    assert_eq!(kind(e.c.top(&e.ctx, &id)), ErrorKind::Conflict);
    let s = e.c.stats(&e.ctx, &id).unwrap();
    assert_eq!(s.pids_current, 0);
    assert!(
        e.driver.calls_of(Op::Stats).is_empty(),
        "not asked while stopped"
    );
    e.c.start(&e.ctx, &id).await.unwrap();
    let s = e.c.stats(&e.ctx, &id).unwrap();
    assert_eq!(s.pids_current, 1);
    assert_eq!(s.memory_limit, None, "unlimited");
    assert_eq!(e.c.top(&e.ctx, &id).unwrap().titles.len(), 8);
}

#[tokio::test]
async fn exec_needs_a_running_container_and_a_command() {
    let e = Env::new().await;
    let id = e.create("a");
    let spec = ExecSpec {
        cmd: vec!["ls".into()],
        ..Default::default()
    };
    let r = e.c.exec_create(&e.ctx, &id, spec.clone());
    assert!(matches!(r, Err(ExecError::NotRunning { .. })));
    e.c.start(&e.ctx, &id).await.unwrap();
    let r = e.c.exec_create(&e.ctx, &id, ExecSpec::default());
    assert!(matches!(r, Err(ExecError::NoCommand)));
    e.c.exec_create(&e.ctx, &id, spec).unwrap();
}

#[tokio::test]
async fn an_exec_runs_what_the_driver_prepares_and_reports_its_failure() {
    let e = Env::new().await;
    let id = e.run("a").await;
    let spec = ExecSpec {
        cmd: vec!["ls".into()],
        ..Default::default()
    };
    let x = e.c.exec_create(&e.ctx, &id, spec.clone()).unwrap();
    let mut io = e.c.exec_start(&e.ctx, &x, StartOptions::default()).unwrap();
    let code = tokio::time::timeout(Duration::from_secs(5), io.exit.wait_for(|c| c.is_some()))
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(code, 0, "the fake's command is /bin/true");
    assert_eq!(e.driver.calls_of(Op::Exec).len(), 1);
    e.driver.fail(Op::Exec, 1);
    let x = e.c.exec_create(&e.ctx, &id, spec).unwrap();
    assert!(e.c.exec_start(&e.ctx, &x, StartOptions::default()).is_err());
}

// ---- remove ----------------------------------------------------------------------------

#[tokio::test]
async fn removing_a_created_container_leaves_nothing() {
    let e = Env::new().await;
    let id = e.create("a");
    e.c.remove(&e.ctx, &id, false, false).await.unwrap();
    e.assert_nothing_left();
    assert_eq!(e.driver.calls_of(Op::Destroy).len(), 1);
}

#[tokio::test]
async fn removing_a_running_container_needs_force() {
    let e = Env::new().await;
    let id = e.run("a").await;
    assert_eq!(
        kind(e.c.remove(&e.ctx, &id, false, false).await),
        ErrorKind::Conflict
    );
    assert_eq!(e.status(&id), ContainerStatus::Running);
    e.c.remove(&e.ctx, &id, true, false).await.unwrap();
    e.assert_nothing_left();
}

#[tokio::test]
async fn a_remove_whose_record_cannot_be_deleted_can_be_retried() {
    let e = Env::new().await;
    let id = e.create("a");
    e.store.fail_txn(0);
    assert!(e.c.remove(&e.ctx, &id, false, false).await.is_err());
    assert_eq!(e.records(), 1, "the record stays, to remove again");
    e.c.remove(&e.ctx, &id, false, false).await.unwrap();
    e.assert_nothing_left();
}

#[tokio::test]
async fn remove_with_volumes_removes_its_anonymous_volumes_only() {
    let e = Env::new().await;
    let a = e
        .create_with(Some("a"), |r| r.image = "vol:latest".into())
        .unwrap();
    let b = e
        .create_with(Some("b"), |r| r.image = "vol:latest".into())
        .unwrap();
    assert_eq!(e.volume_names().len(), 2);
    e.c.remove(&e.ctx, &a, false, false).await.unwrap();
    assert_eq!(e.volume_names().len(), 2, "kept without -v");
    e.c.remove(&e.ctx, &b, false, true).await.unwrap();
    assert_eq!(e.volume_names().len(), 1, "b's went with -v");
}

#[tokio::test]
async fn an_rm_container_goes_with_its_volumes_when_it_exits() {
    let e = Env::new().await;
    let id = e
        .create_with(Some("a"), |r| {
            r.auto_remove = true;
            r.image = "vol:latest".into();
        })
        .unwrap();
    e.c.start(&e.ctx, &id).await.unwrap();
    e.driver.exit(&id, 0);
    e.until_gone(&id).await;
    e.assert_nothing_left();
}

#[tokio::test]
async fn prune_removes_the_stopped_containers_only() {
    let e = Env::new().await;
    let a = e.create("a");
    let b = e.run("b").await;
    let pruned = e.c.prune(&e.ctx).await.unwrap();
    assert_eq!(pruned, vec![a]);
    assert_eq!(e.records(), 1);
    assert_eq!(e.status(&b), ContainerStatus::Running);
}

#[tokio::test]
async fn list_reads_the_store_without_asking_the_driver() {
    let e = Env::new().await;
    e.create("a");
    e.run("b").await;
    let before = e.driver.calls().len();
    assert_eq!(e.c.list(&e.ctx, false, None).unwrap().len(), 1);
    assert_eq!(e.c.list(&e.ctx, true, None).unwrap().len(), 2);
    assert_eq!(e.c.list(&e.ctx, true, Some("name=a")).unwrap().len(), 1);
    assert_eq!(e.driver.calls().len(), before);
}

#[tokio::test]
async fn events_follow_the_life_of_a_container() {
    let e = Env::new().await;
    let mut rx = e.c.events.subscribe();
    let id = e.run("a").await;
    e.c.kill(&e.ctx, &id, None).await.unwrap();
    e.until(&id, |c| c.state.status == ContainerStatus::Exited)
        .await;
    e.c.remove(&e.ctx, &id, false, false).await.unwrap();
    let mut actions = Vec::new();
    while let Ok(ev) = rx.try_recv() {
        actions.push(ev.event.action);
    }
    assert_eq!(actions, ["create", "start", "kill", "die", "destroy"]);
}

// ---- restart policies ------------------------------------------------------------------

async fn with_policy(e: &Env, policy: RestartPolicy) -> String {
    let id = e
        .create_with(Some("r"), |r| r.restart_policy = policy)
        .unwrap();
    e.c.start(&e.ctx, &id).await.unwrap();
    id
}

/// Waits until the driver has started `id` `n` times and the record says running.
async fn started(e: &Env, id: &str, n: u32) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while e.driver.instance(id).map(|i| i.starts) != Some(n)
        || e.status(id) != ContainerStatus::Running
    {
        assert!(Instant::now() < deadline, "not started {n} times");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

#[tokio::test]
async fn policy_no_leaves_an_exited_container_exited() {
    let e = Env::new().await;
    let id = with_policy(&e, RestartPolicy::No).await;
    e.driver.exit(&id, 1);
    e.until(&id, |c| c.state.status == ContainerStatus::Exited)
        .await;
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(e.driver.instance(&id).unwrap().starts, 1);
    assert_eq!(e.status(&id), ContainerStatus::Exited);
}

#[tokio::test]
async fn policy_always_restarts_after_a_clean_exit() {
    let e = Env::new().await;
    let id = with_policy(&e, RestartPolicy::Always).await;
    e.driver.exit(&id, 0);
    started(&e, &id, 2).await;
    assert_eq!(e.get(&id).state.restart_count, 1);
}

#[tokio::test]
async fn policy_on_failure_restarts_after_a_failure_only() {
    let e = Env::new().await;
    let id = with_policy(&e, RestartPolicy::OnFailure { max_retries: 0 }).await;
    e.driver.exit(&id, 2);
    started(&e, &id, 2).await;
    e.driver.exit(&id, 0);
    e.until(&id, |c| c.state.status == ContainerStatus::Exited)
        .await;
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(e.driver.instance(&id).unwrap().starts, 2);
    assert_eq!(e.get(&id).state.exit_code, Some(0));
}

#[tokio::test]
async fn policy_on_failure_gives_up_after_its_retries() {
    let e = Env::new().await;
    let id = with_policy(&e, RestartPolicy::OnFailure { max_retries: 2 }).await;
    e.driver.exit(&id, 1);
    started(&e, &id, 2).await;
    e.driver.exit(&id, 1);
    started(&e, &id, 3).await;
    e.driver.exit(&id, 1);
    let c = e
        .until(&id, |c| c.state.status == ContainerStatus::Exited)
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(e.driver.instance(&id).unwrap().starts, 3);
    assert_eq!(c.state.restart_count, 2);
}

#[tokio::test]
async fn restarts_back_off() {
    let e = Env::new().await;
    let id = with_policy(&e, RestartPolicy::Always).await;
    let t0 = Instant::now();
    e.driver.exit(&id, 1);
    started(&e, &id, 2).await;
    let first = t0.elapsed();
    let t1 = Instant::now();
    e.driver.exit(&id, 1);
    started(&e, &id, 3).await;
    let second = t1.elapsed();
    assert!(first >= Duration::from_millis(100), "{first:?}");
    assert!(second >= Duration::from_millis(200), "{second:?}");
    assert_eq!(e.get(&id).state.restart_count, 2);
}

#[tokio::test]
async fn policy_unless_stopped_does_not_restart_after_a_stop() {
    let e = Env::new().await;
    let id = with_policy(&e, RestartPolicy::UnlessStopped).await;
    e.c.stop(&e.ctx, &id, None, None).await.unwrap();
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(e.driver.instance(&id).unwrap().starts, 1);
    assert_eq!(e.status(&id), ContainerStatus::Exited);
}

#[tokio::test]
async fn policy_always_does_not_restart_after_a_kill_by_the_user() {
    let e = Env::new().await;
    let id = with_policy(&e, RestartPolicy::Always).await;
    e.c.kill(&e.ctx, &id, None).await.unwrap();
    e.until(&id, |c| c.state.status == ContainerStatus::Exited)
        .await;
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(e.driver.instance(&id).unwrap().starts, 1);
}

#[tokio::test]
async fn a_stop_while_restarting_cancels_the_restart() {
    let e = Env::new().await;
    let id = with_policy(&e, RestartPolicy::Always).await;
    e.driver.exit(&id, 1);
    e.until(&id, |c| c.state.status == ContainerStatus::Restarting)
        .await;
    e.c.stop(&e.ctx, &id, None, None).await.unwrap();
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert_eq!(e.driver.instance(&id).unwrap().starts, 1);
    assert_eq!(e.status(&id), ContainerStatus::Exited);
}

#[tokio::test]
async fn a_restart_that_fails_leaves_it_exited() {
    let e = Env::new().await;
    let id = with_policy(&e, RestartPolicy::Always).await;
    e.driver.refuse_starts(Some(127));
    e.driver.exit(&id, 1);
    let c = e
        .until(&id, |c| {
            c.state.status == ContainerStatus::Exited && c.state.exit_code == Some(127)
        })
        .await;
    assert!(c.state.error.is_some());
    assert!(e.driver.running().is_empty());
}

// ---- restore after a daemon restart ----------------------------------------------------

#[tokio::test]
async fn restore_readopts_a_running_container() {
    let mut e = Env::new().await;
    let id = e.run("a").await;
    e.restart().await;
    assert_eq!(e.status(&id), ContainerStatus::Running);
    assert_eq!(e.driver.calls_of(Op::Adopt).len(), 1);
    // The new engine hears of its exit.
    e.driver.exit(&id, 5);
    let c = e
        .until(&id, |c| c.state.status == ContainerStatus::Exited)
        .await;
    assert_eq!(c.state.exit_code, Some(5));
}

#[tokio::test]
async fn the_old_engine_does_not_hear_of_exits_after_a_restart() {
    let mut e = Env::new().await;
    let id = e.run("a").await;
    e.driver.daemon_restart();
    e.driver.exit(&id, 5);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(e.status(&id), ContainerStatus::Running, "nobody watched");
    e.restart().await;
    let c = e
        .until(&id, |c| c.state.status == ContainerStatus::Exited)
        .await;
    assert_eq!(c.state.exit_code, Some(5));
}

#[tokio::test]
async fn restore_records_the_exit_of_a_container_that_died_meanwhile() {
    let mut e = Env::new().await;
    let id = e.run("a").await;
    e.driver.daemon_restart();
    e.driver.exit(&id, 9);
    e.restart().await;
    let c = e.get(&id);
    assert_eq!(c.state.status, ContainerStatus::Exited);
    assert_eq!(c.state.exit_code, Some(9));
}

#[tokio::test]
async fn restore_applies_the_restart_policy_to_a_container_that_died_meanwhile() {
    let mut e = Env::new().await;
    let id = with_policy(&e, RestartPolicy::Always).await;
    e.driver.daemon_restart();
    e.driver.exit(&id, 1);
    e.restart().await;
    started(&e, &id, 2).await;
}

#[tokio::test]
async fn held_restarts_wait_for_their_release() {
    let mut e = Env::new().await;
    let id = with_policy(&e, RestartPolicy::Always).await;
    e.driver.daemon_restart();
    e.driver.exit(&id, 1);
    // Held before the restore (as a pool member does until its agent swept).
    e.restart_with(|c| c.hold_restarts()).await;
    e.until(&id, |c| c.state.status == ContainerStatus::Restarting)
        .await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        e.driver.instance(&id).unwrap().starts,
        1,
        "restarted while held"
    );
    e.c.release_restarts();
    started(&e, &id, 2).await;
    // Held again, an exit's restart waits too.
    e.c.hold_restarts();
    e.driver.exit(&id, 0);
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(e.driver.instance(&id).unwrap().starts, 2);
    e.c.release_restarts();
    started(&e, &id, 3).await;
}

#[tokio::test]
async fn restore_removes_an_rm_container_that_exited_meanwhile() {
    let mut e = Env::new().await;
    let id = e.create_with(Some("a"), |r| r.auto_remove = true).unwrap();
    e.c.start(&e.ctx, &id).await.unwrap();
    e.driver.daemon_restart();
    e.driver.exit(&id, 0);
    e.restart().await;
    e.until_gone(&id).await;
    e.assert_nothing_left();
}

#[tokio::test]
async fn restore_starts_a_container_that_was_restarting() {
    let mut e = Env::new().await;
    let id = with_policy(&e, RestartPolicy::Always).await;
    e.driver.refuse_starts(Some(1));
    e.driver.exit(&id, 1);
    // A restart that failed leaves it exited; make the record say restarting, as a
    // daemon that stopped during the back-off leaves it.
    e.until(&id, |c| c.state.status == ContainerStatus::Exited)
        .await;
    let key = format!("{}/{}", e.p, id);
    let mut status: serde_json::Value = e
        .store
        .get_json(Table::ContainerStatus, &key)
        .unwrap()
        .unwrap();
    status["state"]["status"] = "restarting".into();
    e.store
        .commit(vec![pier_store::Op::Put {
            table: Table::ContainerStatus,
            key,
            value: serde_json::to_vec(&status).unwrap(),
        }])
        .unwrap();
    e.driver.refuse_starts(None);
    e.restart().await;
    started(&e, &id, 2).await;
}

#[tokio::test]
async fn restore_leaves_a_created_container_created() {
    let mut e = Env::new().await;
    let id = e.create("a");
    e.restart().await;
    assert_eq!(e.status(&id), ContainerStatus::Created);
    assert!(e.driver.instance(&id).is_some(), "still prepared");
    assert!(e.driver.running().is_empty());
}

#[tokio::test]
async fn restore_removes_instances_that_have_no_record() {
    let mut e = Env::new().await;
    let id = e.create("a");
    // The record is lost (a crash during create, before it was written).
    e.store
        .commit(vec![pier_store::Op::Delete {
            table: Table::Containers,
            key: format!("{}/{}", e.p, id),
        }])
        .unwrap();
    e.restart().await;
    assert!(e.driver.instance(&id).is_none());
    assert_eq!(e.driver.calls_of(Op::Sweep).len(), 1);
}

#[tokio::test]
async fn restore_adopts_a_running_rm_container_whose_record_was_lost() {
    let mut e = Env::new().await;
    let id = e.create_with(Some("a"), |r| r.auto_remove = true).unwrap();
    e.c.start(&e.ctx, &id).await.unwrap();
    // Its record and name were written lazily, and a crash lost both.
    e.store
        .commit(vec![
            pier_store::Op::Delete {
                table: Table::Containers,
                key: format!("{}/{}", e.p, id),
            },
            pier_store::Op::Delete {
                table: Table::Meta,
                key: format!("container-names/{}/a", e.p),
            },
        ])
        .unwrap();
    e.restart().await;
    let c = e.get(&id);
    assert_eq!(c.state.status, ContainerStatus::Running);
    assert_eq!(c.name, "a");
    assert_eq!(e.get("a").id, id, "its name is indexed again");
    assert_eq!(e.pins().len(), 1, "its image is pinned again");
    e.driver.exit(&id, 0);
    e.until_gone(&id).await;
    e.assert_nothing_left();
}

#[tokio::test]
async fn restore_adopts_a_start_that_was_not_recorded() {
    let mut e = Env::new().await;
    let id = e.create("a");
    // The daemon died between the instance's start and the record saying so.
    let c = e.get(&id);
    e.driver.start(&c, &[]).unwrap();
    e.restart().await;
    let c = e.get(&id);
    assert_eq!(c.state.status, ContainerStatus::Running);
    let run = e.driver.instance(&id).unwrap().run.unwrap();
    assert_eq!(c.state.pid, Some(run.handle.pid));
    e.driver.exit(&id, 4);
    let c = e
        .until(&id, |c| c.state.status == ContainerStatus::Exited)
        .await;
    assert_eq!(c.state.exit_code, Some(4));
}

#[tokio::test]
async fn restore_records_an_unrecorded_start_that_already_ended() {
    let mut e = Env::new().await;
    let id = e.create("a");
    let c = e.get(&id);
    e.driver.start(&c, &[]).unwrap();
    e.driver.exit(&id, 6);
    e.restart().await;
    let c = e.get(&id);
    assert_eq!(c.state.status, ContainerStatus::Exited);
    assert_eq!(c.state.exit_code, Some(6));
}

// ---- the name index --------------------------------------------------------------------

fn name_index(e: &Env) -> Vec<(String, String)> {
    e.store
        .list(Table::Meta, "container-names/")
        .unwrap()
        .into_iter()
        .map(|(k, v)| (k, serde_json::from_slice::<String>(&v).unwrap()))
        .collect()
}

#[tokio::test]
async fn names_are_kept_in_an_index_with_the_record() {
    let e = Env::new().await;
    let id = e.create("x");
    assert_eq!(
        name_index(&e),
        vec![(format!("container-names/{}/x", e.p), id.clone())]
    );
    e.c.rename(&e.ctx, "x", "y").await.unwrap();
    assert_eq!(
        name_index(&e),
        vec![(format!("container-names/{}/y", e.p), id.clone())]
    );
    e.c.remove(&e.ctx, &id, false, false).await.unwrap();
    assert!(name_index(&e).is_empty());
}

#[tokio::test]
async fn a_name_taken_between_the_check_and_the_commit_undoes_the_create() {
    let e = Env::new().await;
    // Another engine (a host of the cluster) took the name after this one checked it.
    e.store
        .commit(vec![pier_store::Op::Put {
            table: Table::Meta,
            key: format!("container-names/{}/x", e.p),
            value: serde_json::to_vec("someone-else").unwrap(),
        }])
        .unwrap();
    let r = e.create_with(Some("x"), |_| {});
    assert_eq!(kind(r), ErrorKind::Conflict);
    assert_eq!(e.records(), 0);
    assert!(e.driver.instances().is_empty());
}

#[tokio::test]
async fn the_index_is_rebuilt_for_records_that_have_no_entry() {
    let mut e = Env::new().await;
    let id = e.create("x");
    e.store
        .commit(vec![pier_store::Op::Delete {
            table: Table::Meta,
            key: format!("container-names/{}/x", e.p),
        }])
        .unwrap();
    e.restart().await;
    assert_eq!(e.get("x").id, id);
    assert_eq!(kind(e.create_with(Some("x"), |_| {})), ErrorKind::Conflict);
}

#[tokio::test]
async fn an_adopted_container_whose_name_was_taken_gets_another() {
    let mut e = Env::new().await;
    let id = e.create_with(Some("a"), |r| r.auto_remove = true).unwrap();
    e.c.start(&e.ctx, &id).await.unwrap();
    e.store
        .commit(vec![
            pier_store::Op::Delete {
                table: Table::Containers,
                key: format!("{}/{}", e.p, id),
            },
            pier_store::Op::Delete {
                table: Table::Meta,
                key: format!("container-names/{}/a", e.p),
            },
        ])
        .unwrap();
    let other = e.create("a");
    e.restart().await;
    assert_eq!(e.get("a").id, other);
    let adopted = e.get(&id);
    assert_ne!(adopted.name, "a");
    assert_eq!(e.get(&adopted.name).id, id);
}

// ---- actors ----------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_answers_busy_and_the_queued_requests_are_served() {
    use pier_engine::instances::actor::QUEUE;
    let e = Arc::new(Env::new().await);
    let id = e.create("a");
    e.driver.hold(Op::Start);
    let start = |e: Arc<Env>, id: String| tokio::spawn(async move { e.c.start(&e.ctx, &id).await });
    let first = start(e.clone(), id.clone());
    let deadline = Instant::now() + Duration::from_secs(5);
    while e.driver.calls_of(Op::Start).is_empty() {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let queued: Vec<_> = (0..QUEUE).map(|_| start(e.clone(), id.clone())).collect();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let busy = e.c.start(&e.ctx, &id).await.unwrap_err();
    assert_eq!(busy.kind(), ErrorKind::Unavailable, "{}", busy.message());
    // Other containers are not held up by this one.
    let other = e.create("b");
    e.driver.release(Op::Start);
    first.await.unwrap().unwrap();
    for q in queued {
        q.await.unwrap().unwrap();
    }
    assert_eq!(e.driver.calls_of(Op::Start).len(), 1, "started once");
    e.c.start(&e.ctx, &other).await.unwrap();
}

#[tokio::test]
async fn a_removed_container_leaves_no_actor() {
    let e = Env::new().await;
    let id = e.run("a").await;
    assert_eq!(e.c.actors(), 1);
    e.c.remove(&e.ctx, &id, true, false).await.unwrap();
    assert_eq!(e.c.actors(), 0);
    let rm = e.create_with(Some("b"), |r| r.auto_remove = true).unwrap();
    e.c.start(&e.ctx, &rm).await.unwrap();
    e.driver.exit(&rm, 0);
    e.until_gone(&rm).await;
    assert_eq!(e.c.actors(), 0);
}

#[tokio::test]
async fn a_waiter_hears_of_the_removal_through_the_actor() {
    let e = Env::new().await;
    let id = e.run("a").await;
    let mut state = e.c.state_watch(&e.get(&id));
    e.c.remove(&e.ctx, &id, true, false).await.unwrap();
    let s = state
        .wait_for(|s| s.status == ContainerStatus::Removing)
        .await
        .unwrap()
        .clone();
    assert_eq!(s.status, ContainerStatus::Removing);
}

// ---- desired state and the instance reconciler ------------------------------------------

/// Records `run` as asked for container `id` without acting on it: what a daemon that
/// died right after the request's first write leaves (or another host's API writes).
fn ask_without_acting(e: &Env, id: &str, run: Run) {
    let mut c = record::load(e.store.as_ref(), &e.p, id).unwrap().unwrap();
    c.desire(run);
    let mut b = pier_store::Batch::new();
    record::put_spec(&mut b, &c);
    b.commit(e.store.as_ref()).unwrap();
}

fn acted_on(e: &Env, id: &str) -> bool {
    record::load(e.store.as_ref(), &e.p, id)
        .unwrap()
        .unwrap()
        .acted_on()
}

#[tokio::test]
async fn requests_record_the_desired_state_and_the_generation_acted_on() {
    let e = Env::new().await;
    let id = e.run("a").await;
    let c = record::load(e.store.as_ref(), &e.p, &id).unwrap().unwrap();
    assert_eq!(c.desired.run, Run::Running);
    assert_eq!((c.desired.generation, c.observed_generation), (1, 1));
    e.c.stop(&e.ctx, &id, Some(1), None).await.unwrap();
    let c = record::load(e.store.as_ref(), &e.p, &id).unwrap().unwrap();
    assert_eq!(c.desired.run, Run::Stopped);
    assert_eq!((c.desired.generation, c.observed_generation), (2, 2));
    assert!(c.state.stopped_by_user);
    // The spec holds what was asked, the status what is: no state in the one, no
    // config in the other.
    let key = format!("{}/{}", e.p, id);
    let spec: serde_json::Value = e.store.get_json(Table::Containers, &key).unwrap().unwrap();
    let status: serde_json::Value = e
        .store
        .get_json(Table::ContainerStatus, &key)
        .unwrap()
        .unwrap();
    assert!(
        spec.get("state").is_none() && spec.get("desired").is_some(),
        "{spec}"
    );
    assert!(
        status.get("config").is_none() && status.get("state").is_some(),
        "{status}"
    );
}

#[tokio::test]
async fn the_reconciler_makes_a_start_that_was_recorded_but_not_made() {
    let e = Env::new().await;
    let id = e.create("a");
    ask_without_acting(&e, &id, Run::Running);
    assert!(!acted_on(&e, &id));
    e.c.reconcile().await.unwrap();
    assert_eq!(e.status(&id), ContainerStatus::Running);
    assert_eq!(e.driver.calls_of(Op::Start).len(), 1);
    assert!(acted_on(&e, &id));
    // Acted on: another pass does nothing.
    e.c.reconcile().await.unwrap();
    assert_eq!(e.driver.calls_of(Op::Start).len(), 1);
}

#[tokio::test]
async fn the_reconciler_stops_a_container_whose_stop_was_recorded_but_not_sent() {
    let e = Env::new().await;
    let id = e.run("a").await;
    ask_without_acting(&e, &id, Run::Stopped);
    e.c.reconcile().await.unwrap();
    let c = e
        .until(&id, |c| c.state.status == ContainerStatus::Exited)
        .await;
    assert!(c.state.stopped_by_user, "its policy leaves it stopped");
    let signals: Vec<_> = e.driver.calls_of(Op::Signal);
    assert_eq!(signals.len(), 1, "{signals:?}");
    assert!(acted_on(&e, &id));
}

#[tokio::test]
async fn the_reconciler_kills_a_container_that_ignores_its_stop_signal() {
    let e = Env::new().await;
    let id = e
        .create_with(Some("a"), |r| r.stop_timeout = Some(0))
        .unwrap();
    e.c.start(&e.ctx, &id).await.unwrap();
    e.driver.ignore_signal(libc::SIGTERM);
    ask_without_acting(&e, &id, Run::Stopped);
    e.c.reconcile().await.unwrap();
    e.until(&id, |c| c.state.status == ContainerStatus::Exited)
        .await;
    assert_eq!(e.get(&id).state.exit_code, Some(128 + libc::SIGKILL));
}

#[tokio::test]
async fn a_start_the_reconciler_cannot_make_is_recorded_once_not_retried() {
    let e = Env::new().await;
    let id = e.create("a");
    e.driver.refuse_starts(Some(127));
    ask_without_acting(&e, &id, Run::Running);
    e.c.reconcile().await.unwrap();
    let c = e.get(&id);
    assert_eq!(c.state.exit_code, Some(127));
    assert!(c.state.error.is_some());
    assert!(acted_on(&e, &id));
    e.c.reconcile().await.unwrap();
    assert_eq!(e.driver.calls_of(Op::Start).len(), 1, "not retried");
}

#[tokio::test]
async fn the_reconciler_loop_acts_on_a_spec_written_while_it_runs() {
    let e = Env::new().await;
    let id = e.create("a");
    let mut loops = Loops::default();
    let stats = loops.spawn(
        e.store.clone(),
        Arc::new(InstanceReconciler {
            instances: e.c.clone(),
            period: Duration::from_secs(3600),
        }),
    );
    // Its first pass finds nothing to do.
    let deadline = Instant::now() + Duration::from_secs(5);
    while stats.passes.load(std::sync::atomic::Ordering::SeqCst) == 0 {
        assert!(Instant::now() < deadline, "no first pass");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    // The change wakes it (the period is an hour).
    ask_without_acting(&e, &id, Run::Running);
    e.until(&id, |c| c.state.status == ContainerStatus::Running)
        .await;
    drop(loops);
}

// ---- update ------------------------------------------------------------------------------

fn limits(memory: Option<i64>) -> pier_api::containers::ContainerUpdate {
    pier_api::containers::ContainerUpdate {
        memory,
        ..Default::default()
    }
}

#[tokio::test]
async fn update_applies_new_limits_to_a_running_container_and_records_them() {
    let mut e = Env::new().await;
    let id = e.run("web").await;
    let u = pier_api::containers::ContainerUpdate {
        memory: Some(64 << 20),
        cpus: Some(0.5),
        pids_limit: Some(50),
        restart_policy: Some(RestartPolicy::Always),
        ..Default::default()
    };
    let c = e.c.update(&e.ctx, "web", u).await.unwrap();
    assert_eq!(c.config.memory, Some(64 << 20));
    let calls = e.driver.calls_of(Op::Update);
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!(
        calls[0].arg,
        Some(64 << 20),
        "the driver got the new record"
    );
    assert_eq!(
        e.driver.instance(&id).unwrap().record.config.cpus,
        Some(0.5)
    );
    assert_eq!(e.status(&id), ContainerStatus::Running, "it keeps running");
    // Recorded: a restarted daemon has them, and the restart policy.
    e.restart().await;
    let c = e.get(&id);
    assert_eq!(
        (c.config.memory, c.config.cpus, c.config.pids_limit),
        (Some(64 << 20), Some(0.5), Some(50))
    );
    assert_eq!(c.config.restart_policy, RestartPolicy::Always);
    // `--cpus 0` lifts the limit; a restart policy alone asks nothing of the driver.
    let u = pier_api::containers::ContainerUpdate {
        cpus: Some(0.0),
        ..Default::default()
    };
    assert_eq!(e.c.update(&e.ctx, &id, u).await.unwrap().config.cpus, None);
    let u = pier_api::containers::ContainerUpdate {
        restart_policy: Some(RestartPolicy::No),
        ..Default::default()
    };
    e.c.update(&e.ctx, &id, u).await.unwrap();
    assert_eq!(e.driver.calls_of(Op::Update).len(), 2);
}

#[tokio::test]
async fn update_of_a_stopped_container_changes_its_next_start() {
    let e = Env::new().await;
    let id = e.create("web");
    e.c.update(&e.ctx, &id, limits(Some(32 << 20)))
        .await
        .unwrap();
    assert_eq!(e.driver.calls_of(Op::Update).len(), 1);
    e.c.start(&e.ctx, &id).await.unwrap();
    assert_eq!(
        e.driver.instance(&id).unwrap().record.config.memory,
        Some(32 << 20)
    );
}

#[tokio::test]
async fn a_refused_update_changes_nothing() {
    let e = Env::new().await;
    let id = e
        .create_with(Some("web"), |r| r.memory = Some(64 << 20))
        .unwrap();
    e.c.start(&e.ctx, &id).await.unwrap();
    let unchanged = |e: &Env| assert_eq!(e.get(&id).config.memory, Some(64 << 20));
    // Checked as a create's limits are, before the driver hears of it.
    let err =
        e.c.update(&e.ctx, &id, limits(Some(1000)))
            .await
            .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    assert!(err.to_string().contains("minimum is 6MB"), "{err}");
    let swap_below = pier_api::containers::ContainerUpdate {
        memory_swap: Some(1 << 20),
        ..Default::default()
    };
    assert_eq!(
        kind(e.c.update(&e.ctx, &id, swap_below).await),
        ErrorKind::InvalidInput
    );
    assert!(e.driver.calls_of(Op::Update).is_empty());
    unchanged(&e);
    // The driver refuses it (a cgroup write): the record keeps the old limits.
    e.driver.fail(Op::Update, 1);
    assert!(e
        .c
        .update(&e.ctx, &id, limits(Some(128 << 20)))
        .await
        .is_err());
    unchanged(&e);
    // The record cannot be written: the driver is given the old limits back.
    e.store.fail_txn(0);
    assert!(e
        .c
        .update(&e.ctx, &id, limits(Some(128 << 20)))
        .await
        .is_err());
    unchanged(&e);
    let calls = e.driver.calls_of(Op::Update);
    assert_eq!(
        calls.last().unwrap().arg,
        Some(64 << 20),
        "undone in the driver: {calls:?}"
    );
    // A container removed at exit cannot get a restart policy.
    let rm = e
        .create_with(Some("tmp"), |r| r.auto_remove = true)
        .unwrap();
    let always = pier_api::containers::ContainerUpdate {
        restart_policy: Some(RestartPolicy::Always),
        ..Default::default()
    };
    let err = e.c.update(&e.ctx, &rm, always).await.unwrap_err();
    assert!(err.to_string().contains("--rm"), "{err}");
    assert_eq!(
        kind(e.c.update(&e.ctx, "nosuch", limits(Some(64 << 20))).await),
        ErrorKind::NotFound
    );
}
