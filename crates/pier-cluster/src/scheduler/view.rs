//! [`HostView`]: the scheduler's in-memory copy of the pool (hosts, their allocations, the
//! assignments) and the indexes that make a placement cheap.
//!
//! It is built by reading [`keys::TABLE`] at a revision R and kept exact by applying the
//! table's watch events from R + 1 ([`HostView::follow`], [`HostView::apply`]): after the
//! events up to revision N it equals a fresh read at N (a test checks this).
//!
//! It also follows the members' heartbeats: with [`HostView::require_heartbeats`], a host
//! without one is not open to placements.
//!
//! Indexes, all kept in step by every event:
//! - `up`: the hosts open to placements (state up), ordered by their free share (what is
//!   free of their most used resource, as a share of its capacity: see [`Host::free_share`])
//!   then host ID, so that spread takes the first host from the top that passes the
//!   filters and binpack the first from the least share that may fit, without scanning
//!   every host.
//! - `by_label`: the same order per host label `KEY=VALUE`, for `host.label.KEY==VALUE`.
//! - `capacities`: the capacities of the open hosts, per resource, for the largest one
//!   (which bounds the least free share a host that fits can have).
//! - `tags`: per instance name and instance label (within a project), the hosts running
//!   such instances and how many, for affinity.
//!
//! Each index holds only non-empty entries, so two views of the same records are equal.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use pier_store::{Event, KeyValue, Revision, Store, StoreError, Watcher};

use super::keys::{self, Key};
use super::model::{share, Allocation, Assignment, HostRecord, HostState, Resources, Selector};
use super::SchedError;

/// An entry of the ordered host indexes: free share, then host ID.
pub(crate) type Slot = (u64, Arc<str>);

/// How many times [`HostView::follow`] reads again when its read fell out of the watch
/// history before it could start watching.
const FOLLOW_ATTEMPTS: usize = 3;

/// One host as the view knows it. A host with an allocation but no record (removed from
/// the pool with instances left) is known but never chosen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    id: Arc<str>,
    record: Option<HostRecord>,
    record_rev: Revision,
    alloc: Allocation,
    alloc_rev: Option<Revision>,
    /// Whether its heartbeat (`heartbeats/ID`) is there.
    beating: bool,
}

impl Host {
    fn new(id: Arc<str>) -> Self {
        Host {
            id,
            record: None,
            record_rev: 0,
            alloc: Allocation::default(),
            alloc_rev: None,
            beating: false,
        }
    }

    /// Whether the host heartbeats (its `heartbeats/ID` record exists).
    pub fn beating(&self) -> bool {
        self.beating
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    pub(crate) fn id_arc(&self) -> &Arc<str> {
        &self.id
    }

    pub fn record(&self) -> Option<&HostRecord> {
        self.record.as_ref()
    }

    /// The mod revision of the host record (0: none).
    pub fn record_revision(&self) -> Revision {
        self.record_rev
    }

    pub fn allocation(&self) -> &Allocation {
        &self.alloc
    }

    /// The mod revision of the allocation record, or None if the host has none yet.
    pub fn allocation_revision(&self) -> Option<Revision> {
        self.alloc_rev
    }

    /// Capacity minus allocation (nothing without a record).
    pub fn free(&self) -> Resources {
        match &self.record {
            Some(r) => r.capacity.minus(&self.alloc.used),
            None => Resources::default(),
        }
    }

    /// Whether placements may choose it (heartbeating too, if `require_heartbeat`).
    fn open(&self, require_heartbeat: bool) -> bool {
        self.record
            .as_ref()
            .is_some_and(|r| r.state == HostState::Up)
            && (self.beating || !require_heartbeat)
    }

    /// What is free of the host's most used resource, in millionths of its capacity
    /// (resources it has none of do not count; 0 without a record).
    pub fn free_share(&self) -> u64 {
        let Some(record) = &self.record else {
            return 0;
        };
        let free = self.free().amounts();
        let cap = record.capacity.amounts();
        (0..3)
            .filter(|&r| cap[r] > 0)
            .map(|r| share(free[r], cap[r]))
            .min()
            .unwrap_or(0)
    }

    fn slot(&self) -> Slot {
        (self.free_share(), self.id.clone())
    }
}

/// What the instances' indexes are keyed by: a name or a label, within a project.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Tag {
    Name {
        project: String,
        name: String,
    },
    Label {
        project: String,
        key: String,
        value: String,
    },
}

impl Tag {
    pub(crate) fn of(project: &str, selector: &Selector) -> Tag {
        match selector {
            Selector::Name(name) => Tag::Name {
                project: project.to_string(),
                name: name.clone(),
            },
            Selector::Label { key, value } => Tag::Label {
                project: project.to_string(),
                key: key.clone(),
                value: value.clone(),
            },
        }
    }

    fn all(a: &Assignment) -> impl Iterator<Item = Tag> + '_ {
        let name = Tag::Name {
            project: a.project.clone(),
            name: a.name.clone(),
        };
        let labels = a.labels.iter().map(|(k, v)| Tag::Label {
            project: a.project.clone(),
            key: k.clone(),
            value: v.clone(),
        });
        std::iter::once(name).chain(labels)
    }
}

/// Hosts running instances of one tag, with how many.
pub(crate) type Tagged = HashMap<Arc<str>, u32>;

/// See the module doc.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostView {
    revision: Revision,
    hosts: HashMap<Arc<str>, Host>,
    up: BTreeSet<Slot>,
    capacities: [BTreeMap<u64, u32>; 3],
    by_label: HashMap<String, HashMap<String, BTreeSet<Slot>>>,
    assignments: HashMap<String, (Assignment, Revision)>,
    tags: HashMap<Tag, Tagged>,
    /// Whether a host must heartbeat to be open (see [`HostView::require_heartbeats`]).
    require_heartbeat: bool,
}

fn decode<T: serde::de::DeserializeOwned>(key: &str, kv: &KeyValue) -> Result<T, SchedError> {
    serde_json::from_slice(&kv.value).map_err(|source| SchedError::Corrupt {
        key: key.to_string(),
        source,
    })
}

impl HostView {
    /// The pool as read now.
    pub fn read(store: &dyn Store) -> Result<HostView, SchedError> {
        let listing = store.range(keys::TABLE, "")?;
        let mut view = HostView::default();
        for (key, kv) in &listing.kvs {
            view.put(key, kv)?;
        }
        view.revision = listing.revision;
        Ok(view)
    }

    /// The pool as read now, and the watch that keeps it current from there: apply its
    /// events with [`HostView::apply`].
    pub fn follow(store: &dyn Store) -> Result<(HostView, Watcher), SchedError> {
        let mut attempt = 0;
        loop {
            let view = Self::read(store)?;
            match store.watch(keys::TABLE, "", view.revision + 1) {
                Ok(watcher) => return Ok((view, watcher)),
                Err(StoreError::Compacted { .. }) if attempt + 1 < FOLLOW_ATTEMPTS => attempt += 1,
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Takes in one watch event of the pool's table. Events of other tables and keys
    /// that are not the scheduler's are ignored.
    pub fn apply(&mut self, event: &Event) -> Result<(), SchedError> {
        if event.table() != keys::TABLE {
            return Ok(());
        }
        match event {
            Event::Put { key, kv, .. } => self.put(key, kv)?,
            Event::Delete { key, .. } => self.delete(key),
        }
        self.revision = self.revision.max(event.revision());
        Ok(())
    }

    /// Makes a heartbeat (`heartbeats/ID`, see [`crate::member`]) a condition of being
    /// open to placements, or not (the default: the records' states alone decide). A
    /// member's scheduler requires it, so that a host whose heartbeat expired takes no
    /// new instances even before anyone marks its record down.
    pub fn require_heartbeats(&mut self, on: bool) {
        let ids: Vec<Arc<str>> = self.hosts.keys().cloned().collect();
        for id in &ids {
            self.unindex(id);
        }
        self.require_heartbeat = on;
        for id in &ids {
            self.index(id);
        }
    }

    /// Whether a host must heartbeat to be open.
    pub fn requires_heartbeats(&self) -> bool {
        self.require_heartbeat
    }

    /// The revision the view is current at (of its read, or of the last event applied).
    pub fn revision(&self) -> Revision {
        self.revision
    }

    pub fn host(&self, id: &str) -> Option<&Host> {
        self.hosts.get(id)
    }

    /// Every known host, in no order.
    pub fn hosts(&self) -> impl Iterator<Item = &Host> {
        self.hosts.values()
    }

    /// The assignment of `project/instance-id` and its mod revision.
    pub fn assignment(&self, instance: &str) -> Option<(&Assignment, Revision)> {
        self.assignments.get(instance).map(|(a, r)| (a, *r))
    }

    pub fn assignments(&self) -> impl Iterator<Item = &Assignment> {
        self.assignments.values().map(|(a, _)| a)
    }

    /// The hosts open to placements, by free share.
    pub(crate) fn up(&self) -> &BTreeSet<Slot> {
        &self.up
    }

    /// A free share below which no open host can hold `need`: a host that holds it has
    /// at least `need` free of each resource, so of its most used one too, and that is
    /// at least `need`'s share of the largest capacity of that resource.
    pub(crate) fn least_share(&self, need: &Resources) -> u64 {
        let need = need.amounts();
        (0..3)
            .map(|r| match self.capacities[r].last_key_value() {
                Some((&largest, _)) => share(need[r], largest),
                None => 0,
            })
            .max()
            .unwrap_or(0)
    }

    /// The open hosts labelled `key=value`, by free share; None if there are none.
    pub(crate) fn labelled(&self, key: &str, value: &str) -> Option<&BTreeSet<Slot>> {
        self.by_label.get(key)?.get(value)
    }

    /// The hosts running an instance of `tag`; None if there are none.
    pub(crate) fn tagged(&self, tag: &Tag) -> Option<&Tagged> {
        self.tags.get(tag)
    }

    fn put(&mut self, key: &str, kv: &KeyValue) -> Result<(), SchedError> {
        match keys::parse(key) {
            Some(Key::Host(id)) => {
                let record: HostRecord = decode(key, kv)?;
                if record.id != id {
                    return Err(SchedError::Mismatch {
                        key: key.to_string(),
                        found: record.id,
                    });
                }
                self.set_host(id, |h| {
                    h.record = Some(record);
                    h.record_rev = kv.mod_revision;
                });
            }
            Some(Key::Allocation(id)) => {
                let alloc: Allocation = decode(key, kv)?;
                self.set_host(id, |h| {
                    h.alloc = alloc;
                    h.alloc_rev = Some(kv.mod_revision);
                });
            }
            Some(Key::Assignment(instance)) => {
                let a: Assignment = decode(key, kv)?;
                if format!("{}/{}", a.project, a.id) != instance {
                    return Err(SchedError::Mismatch {
                        key: key.to_string(),
                        found: format!("{}/{}", a.project, a.id),
                    });
                }
                self.set_assignment(instance, Some((a, kv.mod_revision)));
            }
            Some(Key::Heartbeat(id)) => self.set_host(id, |h| h.beating = true),
            None => {}
        }
        Ok(())
    }

    fn delete(&mut self, key: &str) {
        match keys::parse(key) {
            Some(Key::Host(id)) => self.set_host(id, |h| {
                h.record = None;
                h.record_rev = 0;
            }),
            Some(Key::Allocation(id)) => self.set_host(id, |h| {
                h.alloc = Allocation::default();
                h.alloc_rev = None;
            }),
            Some(Key::Assignment(instance)) => self.set_assignment(instance, None),
            Some(Key::Heartbeat(id)) => self.set_host(id, |h| h.beating = false),
            None => {}
        }
    }

    /// Changes a host, keeping the indexes in step; forgets it once it has neither a
    /// record nor an allocation.
    fn set_host(&mut self, id: &str, change: impl FnOnce(&mut Host)) {
        let id = match self.hosts.get_key_value(id) {
            Some((k, _)) => k.clone(),
            None => Arc::from(id),
        };
        self.unindex(&id);
        let host = self
            .hosts
            .entry(id.clone())
            .or_insert_with(|| Host::new(id.clone()));
        change(host);
        if host.record.is_none() && host.alloc_rev.is_none() && !host.beating {
            self.hosts.remove(&id);
        } else {
            self.index(&id);
        }
    }

    fn index(&mut self, id: &str) {
        let require = self.require_heartbeat;
        let Some(host) = self.hosts.get(id).filter(|h| h.open(require)) else {
            return;
        };
        let slot = host.slot();
        if let Some(r) = &host.record {
            for (set, cap) in self.capacities.iter_mut().zip(r.capacity.amounts()) {
                *set.entry(cap).or_insert(0) += 1;
            }
        }
        for (k, v) in host.record.iter().flat_map(|r| &r.labels) {
            let values = match self.by_label.get_mut(k) {
                Some(values) => values,
                None => self.by_label.entry(k.clone()).or_default(),
            };
            match values.get_mut(v) {
                Some(set) => set.insert(slot.clone()),
                None => values.entry(v.clone()).or_default().insert(slot.clone()),
            };
        }
        self.up.insert(slot);
    }

    fn unindex(&mut self, id: &str) {
        let require = self.require_heartbeat;
        let Some(host) = self.hosts.get(id).filter(|h| h.open(require)) else {
            return;
        };
        let slot = host.slot();
        if let Some(r) = &host.record {
            for (set, cap) in self.capacities.iter_mut().zip(r.capacity.amounts()) {
                if let Some(n) = set.get_mut(&cap) {
                    *n -= 1;
                    if *n == 0 {
                        set.remove(&cap);
                    }
                }
            }
        }
        for (k, v) in host.record.iter().flat_map(|r| &r.labels) {
            let Some(values) = self.by_label.get_mut(k) else {
                continue;
            };
            if let Some(set) = values.get_mut(v) {
                set.remove(&slot);
                if set.is_empty() {
                    values.remove(v);
                }
            }
            if values.is_empty() {
                self.by_label.remove(k);
            }
        }
        self.up.remove(&slot);
    }

    fn set_assignment(&mut self, instance: &str, new: Option<(Assignment, Revision)>) {
        if let Some((old, _)) = self.assignments.remove(instance) {
            for tag in Tag::all(&old) {
                let Some(hosts) = self.tags.get_mut(&tag) else {
                    continue;
                };
                if let Some(n) = hosts.get_mut(old.host.as_str()) {
                    *n -= 1;
                    if *n == 0 {
                        hosts.remove(old.host.as_str());
                    }
                }
                if hosts.is_empty() {
                    self.tags.remove(&tag);
                }
            }
        }
        let Some((a, rev)) = new else {
            return;
        };
        let host: Arc<str> = match self.hosts.get_key_value(a.host.as_str()) {
            Some((k, _)) => k.clone(),
            None => Arc::from(a.host.as_str()),
        };
        for tag in Tag::all(&a) {
            *self
                .tags
                .entry(tag)
                .or_default()
                .entry(host.clone())
                .or_insert(0) += 1;
        }
        self.assignments.insert(instance.to_string(), (a, rev));
    }
}

#[cfg(test)]
mod tests {
    use pier_store::{MemStore, Op, Table};

    use super::*;
    use crate::scheduler::model::Labels;

    fn host(id: &str, labels: &[(&str, &str)], state: HostState, mem: u64) -> HostRecord {
        HostRecord {
            id: id.to_string(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<Labels>(),
            state,
            capacity: Resources {
                cpu_millis: 4000,
                memory_bytes: mem,
                disk_bytes: 1 << 40,
            },
        }
    }

    fn put(key: String, value: &impl serde::Serialize) -> Op {
        Op::Put {
            table: keys::TABLE,
            key,
            value: serde_json::to_vec(value).unwrap(),
        }
    }

    fn del(key: String) -> Op {
        Op::Delete {
            table: keys::TABLE,
            key,
        }
    }

    fn assignment(project: &str, id: &str, name: &str, app: &str, host: &str) -> Assignment {
        Assignment {
            project: project.into(),
            id: id.into(),
            name: name.into(),
            labels: [("app".to_string(), app.to_string())].into(),
            host: host.into(),
            resources: Resources {
                cpu_millis: 100,
                memory_bytes: 1 << 20,
                disk_bytes: 0,
            },
            ports: Vec::new(),
            spec: None,
            start: false,
            moved_from: None,
        }
    }

    /// Applies every event waiting on the watcher.
    fn drain(view: &mut HostView, w: &mut Watcher) {
        while let Some(e) = w.try_next() {
            view.apply(&e.unwrap()).unwrap();
        }
    }

    #[test]
    fn a_view_following_the_watch_equals_a_fresh_read_after_every_change() {
        let store = MemStore::default();
        store
            .commit(vec![keys::put_host(&host("h1", &[], HostState::Up, 100))])
            .unwrap();
        // Built at R, following from R + 1.
        let (mut view, mut w) = HostView::follow(&store).unwrap();
        let steps: Vec<Vec<Op>> = vec![
            vec![
                keys::put_host(&host("h2", &[("zone", "a")], HostState::Up, 200)),
                keys::put_host(&host("h3", &[("zone", "b")], HostState::Up, 300)),
            ],
            vec![put(
                keys::allocation("h2"),
                &Allocation {
                    used: Resources {
                        memory_bytes: 50,
                        ..Default::default()
                    },
                    ports: ["80".parse().unwrap()].into(),
                    instances: 1,
                },
            )],
            vec![put(
                keys::assignment("p/i1"),
                &assignment("p", "i1", "web", "web", "h2"),
            )],
            vec![put(
                keys::assignment("p/i2"),
                &assignment("p", "i2", "db", "db", "h2"),
            )],
            // An assignment moved to another host, and a label changed.
            vec![put(
                keys::assignment("p/i2"),
                &assignment("p", "i2", "db", "db", "h3"),
            )],
            vec![keys::put_host(&host(
                "h2",
                &[("zone", "c")],
                HostState::Up,
                200,
            ))],
            vec![keys::put_host(&host(
                "h3",
                &[("zone", "b")],
                HostState::Cordoned,
                300,
            ))],
            vec![del(keys::assignment("p/i1"))],
            vec![del(keys::host("h2"))],
            vec![del(keys::allocation("h2"))],
            // Not the scheduler's: ignored by both.
            vec![put("tokens/t1".to_string(), &"x")],
            vec![keys::put_host(&host(
                "h3",
                &[("zone", "b")],
                HostState::Up,
                300,
            ))],
        ];
        for ops in steps {
            store.commit(ops).unwrap();
            drain(&mut view, &mut w);
            assert_eq!(view, HostView::read(&store).unwrap());
        }
        assert!(
            view.host("h2").is_none(),
            "a host with nothing left is forgotten"
        );
        assert_eq!(view.labelled("zone", "b").unwrap().len(), 1);
        assert!(view.labelled("zone", "c").is_none());
        let db = Tag::of("p", &"instance.label.app==db".parse().unwrap());
        assert_eq!(view.tagged(&db).unwrap().get("h3"), Some(&1));
        let web = Tag::of("p", &"instance.name==web".parse().unwrap());
        assert!(view.tagged(&web).is_none());
    }

    #[test]
    fn a_watch_from_the_read_revision_replays_what_came_between() {
        let store = MemStore::default();
        store
            .commit(vec![keys::put_host(&host("h1", &[], HostState::Up, 100))])
            .unwrap();
        let mut view = HostView::read(&store).unwrap();
        // Changes after the read, before the watch starts.
        store
            .commit(vec![keys::put_host(&host(
                "h2",
                &[("zone", "a")],
                HostState::Up,
                1,
            ))])
            .unwrap();
        store.commit(vec![del(keys::host("h1"))]).unwrap();
        let mut w = store.watch(keys::TABLE, "", view.revision() + 1).unwrap();
        drain(&mut view, &mut w);
        assert_eq!(view, HostView::read(&store).unwrap());
        assert_eq!(view.hosts().map(Host::id).collect::<Vec<_>>(), ["h2"]);
    }

    #[test]
    fn the_open_hosts_are_ordered_by_the_free_share_of_their_most_used_resource() {
        let store = MemStore::default();
        let alloc = |cpu_millis, memory_bytes| Allocation {
            used: Resources {
                cpu_millis,
                memory_bytes,
                disk_bytes: 0,
            },
            ..Default::default()
        };
        store
            .commit(vec![
                keys::put_host(&host("a", &[], HostState::Up, 300)),
                keys::put_host(&host("b", &[], HostState::Up, 200)),
                keys::put_host(&host("c", &[], HostState::Draining, 900)),
                keys::put_host(&host("d", &[], HostState::Up, 400)),
                put(keys::allocation("a"), &alloc(0, 250)),
                put(keys::allocation("b"), &alloc(3000, 0)),
            ])
            .unwrap();
        let view = HostView::read(&store).unwrap();
        let order: Vec<_> = view.up().iter().map(|(f, id)| (*f, &**id)).collect();
        // a: memory 50/300 free; b: CPU 1000/4000; d: all free; c is not open.
        assert_eq!(order, [(166_666, "a"), (250_000, "b"), (1_000_000, "d")]);
        assert_eq!(view.host("a").unwrap().free().memory_bytes, 50);
        // The largest open capacities are 4000 millicores and 400 bytes of memory (not
        // c's 900): a host that holds 200 bytes has at least half its memory free.
        let need = Resources {
            cpu_millis: 1000,
            memory_bytes: 200,
            disk_bytes: 0,
        };
        assert_eq!(view.least_share(&need), 500_000);
    }

    #[test]
    fn a_corrupt_or_misnamed_record_is_named() {
        let store = MemStore::default();
        store
            .commit(vec![Op::Put {
                table: Table::Cluster,
                key: keys::host("h1"),
                value: b"{".to_vec(),
            }])
            .unwrap();
        let e = HostView::read(&store).unwrap_err();
        assert!(e.to_string().contains("hosts/h1"), "{e}");
        store
            .commit(vec![put(
                keys::host("h1"),
                &host("h2", &[], HostState::Up, 1),
            )])
            .unwrap();
        let e = HostView::read(&store).unwrap_err();
        assert!(
            e.to_string().contains("hosts/h1") && e.to_string().contains("h2"),
            "{e}"
        );
    }
}
