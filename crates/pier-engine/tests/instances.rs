//! The engine test tier for instances: create, start, stop, remove, restart policies and
//! restore over `MemStore` and the fake driver, with no root and no host networking
//! (`--network none`). Failures are injected at each step (the driver's, and the
//! store's commits through [`FlakyStore`]) and every test checks that nothing is left.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pier_api::containers::{
    ContainerCreate, ContainerInspect, ContainerStatus, ExecCreate, RestartPolicy,
};
use pier_api::volumes::{MountKind, MountSpec};
use pier_api::{ErrorKind, ProjectName};
use pier_engine::containers::{Containers, Peers};
use pier_engine::instances::driver::{Driver, NetworkAttachment, VolumeKind};
use pier_engine::instances::fake::{FakeDriver, Op};
use pier_engine::networks::Networks;
use pier_engine::projects::Projects;
use pier_engine::volumes::Volumes;
use pier_engine::EngineError;
use pier_image::ImageStore;
use pier_store::{
    KeyValue, LeaseId, Listing, MemStore, Revision, Store, StoreError, StoreExt, Table, Txn,
    Watcher,
};
use sha2::Digest;

// ---- a store whose commits can be made to fail ------------------------------------------

/// `MemStore`, with the Nth transaction from some point on failing.
#[derive(Default)]
struct FlakyStore {
    inner: MemStore,
    count: AtomicU32,
    fail_at: AtomicU32,
}

impl FlakyStore {
    /// The `nth` transaction from now (1: the next one) fails.
    fn fail_txn(&self, nth: u32) {
        self.fail_at
            .store(self.count.load(Ordering::SeqCst) + nth, Ordering::SeqCst);
    }
}

impl Store for FlakyStore {
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
        let n = self.count.fetch_add(1, Ordering::SeqCst) + 1;
        if n == self.fail_at.load(Ordering::SeqCst) {
            return Err(StoreError::Backend("injected store failure".into()));
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

// ---- the engine over the fakes ----------------------------------------------------------

struct Env {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    store: Arc<FlakyStore>,
    images: Arc<ImageStore>,
    networks: Arc<Networks>,
    volumes: Arc<Volumes>,
    projects: Arc<Projects>,
    driver: Arc<FakeDriver>,
    c: Arc<Containers>,
    p: ProjectName,
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
        let store = Arc::new(FlakyStore::default());
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
        let networks = Arc::new(Networks::new(&root, names, db.clone()).unwrap());
        let volumes = Arc::new(Volumes::new(&root, db.clone(), projects.clone()).unwrap());
        let driver = Arc::new(FakeDriver::new());
        let c = containers(&root, &store, &images, &networks, &volumes, &projects, &driver);
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
            p,
        }
    }

    /// A new engine over the same store and driver, as after a daemon restart, restored.
    async fn restart(&mut self) {
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
        self.c.create(&self.p, req).map(|c| c.id.to_string())
    }

    fn create(&self, name: &str) -> String {
        self.create_with(Some(name), |_| {}).unwrap()
    }

    async fn run(&self, name: &str) -> String {
        let id = self.create(name);
        self.c.start(&self.p, &id).await.unwrap();
        id
    }

    fn get(&self, id: &str) -> ContainerInspect {
        self.c.get(&self.p, id).unwrap()
    }

    fn status(&self, id: &str) -> ContainerStatus {
        self.get(id).state.status
    }

    /// Waits (at most 5 s) until `f` holds of the container's record.
    async fn until(&self, id: &str, f: impl Fn(&ContainerInspect) -> bool) -> ContainerInspect {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if let Ok(c) = self.c.get(&self.p, id) {
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
        while self.c.get(&self.p, id).is_ok() {
            assert!(Instant::now() < deadline, "{id} was not removed");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    fn records(&self) -> usize {
        self.store
            .list(Table::Containers, "")
            .unwrap()
            .len()
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
    store: &Arc<FlakyStore>,
    images: &Arc<ImageStore>,
    networks: &Arc<Networks>,
    volumes: &Arc<Volumes>,
    projects: &Arc<Projects>,
    driver: &Arc<FakeDriver>,
) -> Arc<Containers> {
    let driver: Arc<dyn Driver> = driver.clone();
    Containers::with_driver(
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
    let id = e.create_with(None, |r| r.network = Some("host".into())).unwrap();
    assert_eq!(e.driver.instance(&id).unwrap().network, NetworkAttachment::Host);
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
    e.store.fail_txn(1);
    assert!(e.create_with(Some("a"), |_| {}).is_err());
    assert_eq!(e.driver.calls_of(Op::Destroy).len(), 1, "the prepared instance is destroyed");
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
    e.store.fail_txn(2);
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
            &e.p,
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
    assert_eq!(kind(e.create_with(Some("-bad"), |_| {})), ErrorKind::InvalidInput);
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
    assert_eq!(kind(e.c.get(&e.p, "nope")), ErrorKind::NotFound);
}

#[tokio::test]
async fn a_rename_frees_the_old_name_and_refuses_a_taken_one() {
    let e = Env::new().await;
    let a = e.create("a");
    e.create("b");
    assert_eq!(kind(e.c.rename(&e.p, "a", "b")), ErrorKind::Conflict);
    e.c.rename(&e.p, "a", "c").unwrap();
    assert_eq!(e.get("c").id, a);
    assert_eq!(kind(e.c.get(&e.p, "a")), ErrorKind::NotFound);
    e.create("a");
}

#[tokio::test]
async fn a_random_name_is_given_when_none_is_asked() {
    let e = Env::new().await;
    let id = e.create_with(None, |_| {}).unwrap();
    let name = e.get(&id).name;
    assert!(name.contains('_') && name.ends_with(&id[8..12]), "{name}");
}
