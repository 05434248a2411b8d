//! The agent over a [`MemStore`] and a fake host, with placements made by the scheduler.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use pier_store::{MemStore, StoreExt};

use super::*;
use crate::scheduler::{HostRecord, HostState, InstanceRequest, Resources, Scheduler};

/// A host that keeps its instances in a set and fails images named `bad`.
#[derive(Default)]
struct FakeHost {
    instances: Mutex<BTreeSet<String>>,
    realised: Mutex<Vec<String>>,
    discarded: Mutex<Vec<String>>,
    started: Mutex<Vec<String>>,
    /// Called inside `realise`, to act while an instance is being made.
    during: Mutex<Option<Box<dyn FnOnce() + Send>>>,
}

impl Realiser for FakeHost {
    fn realise(&self, a: &Assignment) -> Result<(), Failure> {
        let instance = format!("{}/{}", a.project, a.id);
        self.realised.lock().unwrap().push(instance.clone());
        if let Some(f) = self.during.lock().unwrap().take() {
            f();
        }
        let image = a.spec.as_ref().and_then(|s| s["image"].as_str());
        if image == Some("bad") {
            return Err(Failure::new("not_found", "no such image: bad"));
        }
        self.instances.lock().unwrap().insert(instance.clone());
        if a.start {
            self.started.lock().unwrap().push(instance);
        }
        Ok(())
    }

    fn exists(&self, project: &str, id: &str) -> Result<bool, Failure> {
        Ok(self
            .instances
            .lock()
            .unwrap()
            .contains(&format!("{project}/{id}")))
    }

    fn discard(&self, project: &str, id: &str) {
        let instance = format!("{project}/{id}");
        self.instances.lock().unwrap().remove(&instance);
        self.discarded.lock().unwrap().push(instance);
    }
}

fn pool() -> (Arc<dyn Store>, Scheduler) {
    let store: Arc<dyn Store> = Arc::new(MemStore::default());
    let hosts: Vec<Op> = ["h1", "h2"]
        .iter()
        .map(|id| {
            keys::put_host(&HostRecord {
                id: id.to_string(),
                labels: Default::default(),
                state: HostState::Up,
                capacity: Resources {
                    cpu_millis: 4000,
                    memory_bytes: 8 << 30,
                    disk_bytes: 0,
                },
            })
        })
        .collect();
    store.commit(hosts).unwrap();
    let s = Scheduler::new(store.clone(), Default::default()).unwrap();
    (store, s)
}

/// Places instance `id` (image `image`) on `host`.
fn place(s: &mut Scheduler, id: &str, host: &str, image: &str) {
    let req = InstanceRequest {
        project: "default".into(),
        id: id.into(),
        name: format!("n-{id}"),
        constraints: vec![format!("host.id=={host}").parse().unwrap()],
        spec: Some(serde_json::json!({ "image": image })),
        ..Default::default()
    };
    assert_eq!(s.place(&req).unwrap().host, host);
}

fn placed(store: &dyn Store, id: &str) -> Option<Placed> {
    store
        .get_json(keys::TABLE, &keys::placed(&format!("default/{id}")))
        .unwrap()
}

/// Feeds every waiting event of `w` to the agent.
fn drain(agent: &mut Agent, store: &dyn Store, host: &FakeHost, w: &mut pier_store::Watcher) {
    while let Some(e) = w.try_next() {
        agent.on_event(store, host, &e.unwrap()).unwrap();
    }
}

#[test]
fn realises_its_own_assignments_once_and_reports_each() {
    let (store, mut s) = pool();
    let (fake, mut agent) = (FakeHost::default(), Agent::new("h1"));
    let sweep = agent.sweep(store.as_ref(), &fake).unwrap();
    assert!(sweep.gone.is_empty());
    let mut w = store
        .watch(keys::TABLE, keys::ASSIGNMENTS, sweep.revision + 1)
        .unwrap();
    place(&mut s, "a", "h1", "busybox");
    place(&mut s, "b", "h2", "busybox");
    place(&mut s, "c", "h1", "bad");
    drain(&mut agent, store.as_ref(), &fake, &mut w);
    assert_eq!(*fake.realised.lock().unwrap(), ["default/a", "default/c"]);
    assert_eq!(
        placed(store.as_ref(), "a"),
        Some(Placed {
            host: "h1".into(),
            error: None
        })
    );
    // Not this host's: another agent answers it.
    assert_eq!(placed(store.as_ref(), "b"), None);
    let c = placed(store.as_ref(), "c").unwrap();
    assert_eq!(
        c.error,
        Some(Failure::new("not_found", "no such image: bad"))
    );
    // A sweep (a restart, a watch that ended) does nothing more: every one has a result.
    let mut again = Agent::new("h1");
    let sweep = again.sweep(store.as_ref(), &fake).unwrap();
    assert!(sweep.gone.is_empty());
    assert_eq!(fake.realised.lock().unwrap().len(), 2);
}

#[test]
fn a_restart_resumes_what_was_not_done() {
    let (store, mut s) = pool();
    // Placed while the agent was not running; "made" was created before a crash that
    // lost its result.
    place(&mut s, "todo", "h1", "busybox");
    place(&mut s, "made", "h1", "busybox");
    let fake = FakeHost::default();
    fake.instances.lock().unwrap().insert("default/made".into());
    let mut agent = Agent::new("h1");
    agent.sweep(store.as_ref(), &fake).unwrap();
    assert_eq!(*fake.realised.lock().unwrap(), ["default/todo"]);
    assert!(placed(store.as_ref(), "todo").unwrap().error.is_none());
    assert!(placed(store.as_ref(), "made").unwrap().error.is_none());
}

#[test]
fn a_sweep_finds_instances_removed_while_the_agent_was_away() {
    let (store, mut s) = pool();
    place(&mut s, "a", "h1", "busybox");
    place(&mut s, "b", "h1", "busybox");
    let fake = FakeHost::default();
    Agent::new("h1").sweep(store.as_ref(), &fake).unwrap();
    fake.instances.lock().unwrap().remove("default/a");
    let sweep = Agent::new("h1").sweep(store.as_ref(), &fake).unwrap();
    assert_eq!(sweep.gone, ["default/a"]);
    // Releasing frees the allocation, the name and the result.
    s.release("default", "a").unwrap();
    assert_eq!(placed(store.as_ref(), "a"), None);
    assert_eq!(
        store
            .get(keys::TABLE, &keys::name("default", "n-a"))
            .unwrap(),
        None
    );
    assert_eq!(s.view().host("h1").unwrap().allocation().instances, 1);
    assert!(Agent::new("h1")
        .sweep(store.as_ref(), &fake)
        .unwrap()
        .gone
        .is_empty());
}

#[test]
fn an_instance_made_for_a_released_placement_is_discarded() {
    let (store, mut s) = pool();
    let fake = FakeHost::default();
    let mut agent = Agent::new("h1");
    let rev = agent.sweep(store.as_ref(), &fake).unwrap().revision;
    let mut w = store
        .watch(keys::TABLE, keys::ASSIGNMENTS, rev + 1)
        .unwrap();
    place(&mut s, "late", "h1", "busybox");
    // The requester gives up while the host makes it.
    let s = Arc::new(Mutex::new(s));
    let s2 = s.clone();
    *fake.during.lock().unwrap() = Some(Box::new(move || {
        s2.lock().unwrap().release("default", "late").unwrap();
    }));
    drain(&mut agent, store.as_ref(), &fake, &mut w);
    assert_eq!(*fake.discarded.lock().unwrap(), ["default/late"]);
    assert!(fake.instances.lock().unwrap().is_empty());
    assert_eq!(placed(store.as_ref(), "late"), None);
}

/// The request to move `default/id` with (no filters beyond the old host's exclusion).
fn moving(id: &str) -> InstanceRequest {
    InstanceRequest {
        project: "default".into(),
        id: id.into(),
        name: format!("n-{id}"),
        ..Default::default()
    }
}

#[test]
fn a_moved_instance_is_made_and_started_on_its_new_host_and_removed_from_the_old() {
    let (store, mut s) = pool();
    let (h1, h2) = (FakeHost::default(), FakeHost::default());
    let (mut a1, mut a2) = (Agent::new("h1"), Agent::new("h2"));
    let rev = a1.sweep(store.as_ref(), &h1).unwrap().revision;
    a2.sweep(store.as_ref(), &h2).unwrap();
    let mut w1 = store
        .watch(keys::TABLE, keys::ASSIGNMENTS, rev + 1)
        .unwrap();
    let mut w2 = store
        .watch(keys::TABLE, keys::ASSIGNMENTS, rev + 1)
        .unwrap();
    place(&mut s, "m", "h1", "busybox");
    drain(&mut a1, store.as_ref(), &h1, &mut w1);
    drain(&mut a2, store.as_ref(), &h2, &mut w2);
    assert_eq!(*h1.realised.lock().unwrap(), ["default/m"]);
    assert!(
        h1.started.lock().unwrap().is_empty(),
        "a create is not started"
    );
    assert!(h2.realised.lock().unwrap().is_empty());

    assert_eq!(s.relocate(&moving("m"), "h1", true).unwrap().host, "h2");
    drain(&mut a2, store.as_ref(), &h2, &mut w2);
    drain(&mut a1, store.as_ref(), &h1, &mut w1);
    assert_eq!(*h2.realised.lock().unwrap(), ["default/m"]);
    assert_eq!(*h2.started.lock().unwrap(), ["default/m"]);
    assert_eq!(
        placed(store.as_ref(), "m"),
        Some(Placed {
            host: "h2".into(),
            error: None
        })
    );
    // The old host fenced its copy; the new one keeps its own.
    assert_eq!(*h1.discarded.lock().unwrap(), ["default/m"]);
    assert!(h1.instances.lock().unwrap().is_empty());
    assert!(h2.discarded.lock().unwrap().is_empty());
    // A sweep of the new host finds nothing to do, nor gone.
    let sweep = Agent::new("h2").sweep(store.as_ref(), &h2).unwrap();
    assert!(
        sweep.gone.is_empty() && sweep.fenced.is_empty(),
        "{sweep:?}"
    );

    // And back to h1: made again there (its agent had realised it once before).
    assert_eq!(s.relocate(&moving("m"), "h2", false).unwrap().host, "h1");
    drain(&mut a1, store.as_ref(), &h1, &mut w1);
    drain(&mut a2, store.as_ref(), &h2, &mut w2);
    assert_eq!(h1.realised.lock().unwrap().len(), 2);
    assert_eq!(h1.started.lock().unwrap().len(), 0, "not asked to start");
    assert_eq!(*h2.discarded.lock().unwrap(), ["default/m"]);
    assert_eq!(placed(store.as_ref(), "m").unwrap().host, "h1");
}

#[test]
fn a_host_back_after_its_instance_moved_removes_its_old_copy_at_its_sweep() {
    let (store, mut s) = pool();
    place(&mut s, "m", "h1", "busybox");
    place(&mut s, "stay", "h1", "busybox");
    let h1 = FakeHost::default();
    Agent::new("h1").sweep(store.as_ref(), &h1).unwrap();
    assert_eq!(h1.instances.lock().unwrap().len(), 2);
    // h1 is away (no agent); its instance is moved to h2 and made there.
    s.relocate(&moving("m"), "h1", true).unwrap();
    let h2 = FakeHost::default();
    Agent::new("h2").sweep(store.as_ref(), &h2).unwrap();
    assert_eq!(*h2.started.lock().unwrap(), ["default/m"]);
    // h1 comes back: its first sweep removes the old copy, keeps the other, and reports
    // nothing gone (the moved one is not its to release).
    let sweep = Agent::new("h1").sweep(store.as_ref(), &h1).unwrap();
    assert_eq!(sweep.fenced, ["default/m"]);
    assert!(sweep.gone.is_empty());
    assert_eq!(
        h1.instances.lock().unwrap().iter().collect::<Vec<_>>(),
        ["default/stay"]
    );
    // Nothing more to do the next time.
    let sweep = Agent::new("h1").sweep(store.as_ref(), &h1).unwrap();
    assert!(sweep.fenced.is_empty());
    assert_eq!(placed(store.as_ref(), "m").unwrap().host, "h2");
}
