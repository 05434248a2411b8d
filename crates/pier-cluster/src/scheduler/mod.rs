//! The scheduler: places instances on the hosts of the pool, filters then scores, over an
//! in-memory [`HostView`] kept current by a store watch, and commits each placement with a
//! conditional write.
//!
//! A placement ([`Scheduler::place`]):
//! 1. takes in the watch events that arrived, waiting for those of revisions it knows
//!    were committed ([`Scheduler::refresh`]);
//! 2. chooses a host on the view (`place`: exact filters, then the strategy's score);
//! 3. commits in one [`Txn`]: the assignment (`assignments/PROJECT/ID`, required absent),
//!    the instance's name (`names/PROJECT/NAME`, required absent: names are unique in a
//!    project across the pool) and the host's new allocation (`allocations/HOST`), required at the mod revision the
//!    view saw, with the host record (`hosts/HOST`) required unchanged too. Every
//!    placement on a host and every release from it rewrites the allocation, so the
//!    compare fails whenever anything the choice depended on changed there (resources,
//!    ports, the instances affinity looked at, a cordon);
//! 4. on a [`StoreError::Conflict`] another scheduler came first: back to 1, at most
//!    [`SchedulerConfig::max_attempts`] times ([`SchedError::Contended`] after).
//!
//! So any number of schedulers on one store never overbook a host. A request no host
//! fits fails with [`SchedError::NoHostFits`], which counts per filter why each host was
//! turned away; one whose name is taken with [`SchedError::NameTaken`].
//!
//! [`Scheduler::relocate`] moves a placed instance to another host chosen by the same
//! filters (its old host excluded): the assignment names the new host, the old host's
//! allocation gives the instance's resources back and the new one takes them, in one
//! transaction under the compares of a placement on both hosts, so a move never
//! overbooks either. [`Scheduler::rename`] moves an instance's name. [`Scheduler::release`] deletes the
//! assignment, its name and the agent's result
//! (`placed/PROJECT/ID`, see [`crate::agent`]) and gives the resources back.
//!
//! A [`Scheduler`] is blocking and single-threaded (`&mut self`): run it on a thread of
//! its own or in `spawn_blocking`. Several schedulers each keep their own view.

pub mod keys;
mod model;
mod place;
mod view;

use std::sync::Arc;

use pier_store::{Compare, Expect, Op, Revision, Store, StoreError, Txn, Watcher};

pub use model::{
    AffinityRule, Allocation, Assignment, Constraint, HostPort, HostRecord, HostState,
    InstanceRequest, Labels, ParseError, Proto, Resources, Selector, Strategy,
};
pub use place::NoFit;
use view::Tag;
pub use view::{Host, HostView};

/// Why scheduling failed.
#[derive(Debug, thiserror::Error)]
pub enum SchedError {
    #[error(transparent)]
    Invalid(#[from] ParseError),
    #[error("{0}")]
    NoHostFits(NoFit),
    #[error("instance {instance} is placed on host {host} already; release it first")]
    AlreadyPlaced { instance: String, host: String },
    #[error("the name {name:?} is taken in project {project} by an instance of the pool; choose another name, or remove that instance first")]
    NameTaken { project: String, name: String },
    #[error("instance {instance} is not placed on any host")]
    NotPlaced { instance: String },
    #[error("instance {instance} is on host {host} now, not on {expected}; it was moved already")]
    NotOn {
        instance: String,
        host: String,
        expected: String,
    },
    #[error("placing or releasing {instance} lost {attempts} races in a row with other schedulers; try again")]
    Contended { instance: String, attempts: u32 },
    #[error("record {key} of the pool is corrupt; rewrite or delete it")]
    Corrupt {
        key: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("record {key} of the pool names {found:?}, not its key; rewrite or delete it")]
    Mismatch { key: String, found: String },
    #[error("the state store failed")]
    Store(#[from] StoreError),
}

/// How a [`Scheduler`] commits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SchedulerConfig {
    /// Tries per placement before [`SchedError::Contended`]. Each lost try means another
    /// scheduler committed, so the pool as a whole always makes progress.
    pub max_attempts: u32,
    /// Whether each placement waits for the disk (see [`Store::txn`]).
    pub durable: bool,
    /// Whether a host must heartbeat (`heartbeats/ID`) to take instances (see
    /// [`HostView::require_heartbeats`]). Members' schedulers do. A heartbeat is not
    /// compared at commit: one that ends between the choice and the commit does not
    /// undo the placement (the host is down then, as it would be a moment later).
    pub require_heartbeat: bool,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig {
            max_attempts: 16,
            durable: true,
            require_heartbeat: false,
        }
    }
}

/// Where an instance landed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    pub host: String,
    /// The store revision of the commit.
    pub revision: Revision,
    /// How many tries it took (1: no race lost).
    pub attempts: u32,
}

/// A scheduler over one store; see the module doc. Several may share a store (in one
/// process or many).
pub struct Scheduler {
    store: Arc<dyn Store>,
    view: HostView,
    watcher: Watcher,
    config: SchedulerConfig,
    conflicts: u64,
    reloads: u64,
    /// The view missed an event it could not take in: read again before using it.
    stale: bool,
    /// A revision of the pool's table known committed, which the view waits for.
    wait_for: Revision,
}

impl Scheduler {
    /// Reads the pool and starts following it.
    pub fn new(store: Arc<dyn Store>, config: SchedulerConfig) -> Result<Self, SchedError> {
        let (mut view, watcher) = HostView::follow(store.as_ref())?;
        view.require_heartbeats(config.require_heartbeat);
        Ok(Scheduler {
            store,
            view,
            watcher,
            config,
            conflicts: 0,
            reloads: 0,
            stale: false,
            wait_for: 0,
        })
    }

    /// The view as of the last [`Scheduler::refresh`] (each placement and release starts
    /// with one and ends with one after its commit).
    pub fn view(&self) -> &HostView {
        &self.view
    }

    /// Commits lost to another scheduler so far.
    pub fn conflicts(&self) -> u64 {
        self.conflicts
    }

    /// Times the view was read again because its watch fell behind.
    pub fn reloads(&self) -> u64 {
        self.reloads
    }

    /// Takes in the watch events that arrived, and waits for those of the revisions this
    /// scheduler knows were committed (its own last commit, the winner of a race it lost:
    /// a backend may deliver them after the commit returned). Reads the pool again if the
    /// watch fell behind (lagged or compacted). Blocking: call it (and
    /// [`Scheduler::place`], [`Scheduler::release`]) off the async runtime's threads.
    pub fn refresh(&mut self) -> Result<(), SchedError> {
        self.take_in(true)
    }

    fn take_in(&mut self, wait: bool) -> Result<(), SchedError> {
        if self.stale {
            return self.reload();
        }
        loop {
            let event = match self.watcher.try_next() {
                Some(e) => e,
                None if wait && self.view.revision() < self.wait_for => {
                    match self.watcher.blocking_recv() {
                        Some(e) => e,
                        // The store is gone; the next commit says so.
                        None => return Ok(()),
                    }
                }
                None => return Ok(()),
            };
            match event {
                Ok(e) => {
                    if let Err(err) = self.view.apply(&e) {
                        // The event is consumed: read everything again next time.
                        self.stale = true;
                        return Err(err);
                    }
                }
                Err(StoreError::WatchLagged | StoreError::Compacted { .. }) => {
                    return self.reload();
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    fn reload(&mut self) -> Result<(), SchedError> {
        let (mut view, watcher) = HostView::follow(self.store.as_ref())?;
        view.require_heartbeats(self.config.require_heartbeat);
        self.view = view;
        self.watcher = watcher;
        self.reloads += 1;
        self.stale = false;
        Ok(())
    }

    /// Places the instance on the best host that fits and commits it; see the module doc.
    pub fn place(&mut self, req: &InstanceRequest) -> Result<Placement, SchedError> {
        req.validate()?;
        let instance = req.instance();
        let assignment_key = keys::assignment(&instance);
        for attempt in 1..=self.config.max_attempts {
            self.refresh()?;
            if let Some((a, _)) = self.view.assignment(&instance) {
                return Err(SchedError::AlreadyPlaced {
                    instance,
                    host: a.host.clone(),
                });
            }
            let name_tag = Tag::Name {
                project: req.project.clone(),
                name: req.name.clone(),
            };
            if self.view.tagged(&name_tag).is_some() {
                return Err(name_taken(req));
            }
            let plan = place::Plan::new(&self.view, req);
            let Some(id) = plan.choose(&self.view) else {
                return Err(SchedError::NoHostFits(plan.diagnose(&self.view)));
            };
            let host = self.view.host(&id).expect("a chosen host is in the view");
            let mut alloc = host.allocation().clone();
            alloc.used = alloc.used.plus(&req.resources);
            alloc.ports.extend(req.ports.iter().copied());
            alloc.instances += 1;
            let mut compares = host_compares(host);
            let name_key = keys::name(&req.project, &req.name);
            compares.push(Compare {
                table: keys::TABLE,
                key: assignment_key.clone(),
                expect: Expect::Absent,
            });
            compares.push(Compare {
                table: keys::TABLE,
                key: name_key.clone(),
                expect: Expect::Absent,
            });
            let ops = vec![
                put(assignment_key.clone(), &req.assignment(&id)),
                put(name_key.clone(), &req.id),
                put(keys::allocation(&id), &alloc),
            ];
            match self.commit(compares, ops)? {
                Ok(revision) => {
                    self.catch_up();
                    return Ok(Placement {
                        host: id.to_string(),
                        revision,
                        attempts: attempt,
                    });
                }
                // Taken by an instance the view does not show (a name record left
                // without its assignment): retrying cannot help.
                Err(key) if key == name_key => return Err(name_taken(req)),
                Err(_) => continue,
            }
        }
        Err(SchedError::Contended {
            instance,
            attempts: self.config.max_attempts,
        })
    }

    /// Removes the instance's assignment, its name and its agent's result, and gives its
    /// resources and ports back to its host, under the same compares as a placement.
    pub fn release(&mut self, project: &str, id: &str) -> Result<Revision, SchedError> {
        let instance = format!("{project}/{id}");
        let key = keys::assignment(&instance);
        for _ in 0..self.config.max_attempts {
            self.refresh()?;
            let Some((a, rev)) = self.view.assignment(&instance) else {
                return Err(SchedError::NotPlaced { instance });
            };
            let mut compares = vec![Compare {
                table: keys::TABLE,
                key: key.clone(),
                expect: Expect::ModRevision(rev),
            }];
            let mut ops = vec![
                Op::Delete {
                    table: keys::TABLE,
                    key: key.clone(),
                },
                Op::Delete {
                    table: keys::TABLE,
                    key: keys::placed(&instance),
                },
            ];
            // The name, if this instance holds it (assignments written before names
            // were taken hold none).
            let name_key = keys::name(&a.project, &a.name);
            if let Some(kv) = self.store.get_kv(keys::TABLE, &name_key)? {
                if serde_json::from_slice::<String>(&kv.value).ok().as_deref() == Some(id) {
                    compares.push(Compare {
                        table: keys::TABLE,
                        key: name_key.clone(),
                        expect: Expect::ModRevision(kv.mod_revision),
                    });
                    ops.push(Op::Delete {
                        table: keys::TABLE,
                        key: name_key,
                    });
                }
            }
            if let Some(host) = self.view.host(&a.host) {
                compares.extend(host_compares(host));
                if host.allocation_revision().is_some() {
                    let mut alloc = host.allocation().clone();
                    alloc.used = alloc.used.minus(&a.resources);
                    for p in &a.ports {
                        alloc.ports.remove(p);
                    }
                    alloc.instances = alloc.instances.saturating_sub(1);
                    ops.push(put(keys::allocation(&a.host), &alloc));
                }
            }
            if let Ok(revision) = self.commit(compares, ops)? {
                self.catch_up();
                return Ok(revision);
            }
        }
        Err(SchedError::Contended {
            instance,
            attempts: self.config.max_attempts,
        })
    }

    /// Moves the placed instance `req.project/req.id` off host `from` to the best other
    /// host that fits, as [`Scheduler::place`] chooses (the request's constraints,
    /// affinity and strategy, and `host.id!=FROM`; its resources, ports, labels and name
    /// are the assignment's). One transaction rewrites the assignment (its host, `start`
    /// for the new host's agent, `moved_from`), deletes the old host's result
    /// (`placed/...`, so the new host's agent realises it) and writes both hosts'
    /// allocations, requiring the assignment and both hosts' records and allocations as
    /// the view saw them. Refused with [`SchedError::NotOn`] when the assignment names
    /// another host than `from` (moved already).
    pub fn relocate(
        &mut self,
        req: &InstanceRequest,
        from: &str,
        start: bool,
    ) -> Result<Placement, SchedError> {
        let instance = req.instance();
        let key = keys::assignment(&instance);
        for attempt in 1..=self.config.max_attempts {
            self.refresh()?;
            let Some((a, rev)) = self.view.assignment(&instance) else {
                return Err(SchedError::NotPlaced { instance });
            };
            if a.host != from {
                return Err(SchedError::NotOn {
                    instance,
                    host: a.host.clone(),
                    expected: from.to_string(),
                });
            }
            let mut wanted = req.clone();
            wanted.name = a.name.clone();
            wanted.labels = a.labels.clone();
            wanted.resources = a.resources;
            wanted.ports = a.ports.clone();
            wanted.constraints.push(Constraint::HostId {
                id: from.to_string(),
                equal: false,
            });
            let plan = place::Plan::new(&self.view, &wanted);
            let Some(id) = plan.choose(&self.view) else {
                return Err(SchedError::NoHostFits(plan.diagnose(&self.view)));
            };
            let target = self.view.host(&id).expect("a chosen host is in the view");
            let mut alloc = target.allocation().clone();
            alloc.used = alloc.used.plus(&a.resources);
            alloc.ports.extend(a.ports.iter().copied());
            alloc.instances += 1;
            let mut compares = host_compares(target);
            compares.push(Compare {
                table: keys::TABLE,
                key: key.clone(),
                expect: Expect::ModRevision(rev),
            });
            let mut moved = a.clone();
            moved.host = id.to_string();
            moved.start = start;
            moved.moved_from = Some(from.to_string());
            let mut ops = vec![
                put(key.clone(), &moved),
                Op::Delete {
                    table: keys::TABLE,
                    key: keys::placed(&instance),
                },
                put(keys::allocation(&id), &alloc),
            ];
            // The old host gives the instance back (a removed host has nothing to give).
            if let Some(old) = self.view.host(from) {
                compares.extend(host_compares(old));
                if old.allocation_revision().is_some() {
                    let mut freed = old.allocation().clone();
                    freed.used = freed.used.minus(&a.resources);
                    for p in &a.ports {
                        freed.ports.remove(p);
                    }
                    freed.instances = freed.instances.saturating_sub(1);
                    ops.push(put(keys::allocation(from), &freed));
                }
            }
            if let Ok(revision) = self.commit(compares, ops)? {
                self.catch_up();
                return Ok(Placement {
                    host: id.to_string(),
                    revision,
                    attempts: attempt,
                });
            }
        }
        Err(SchedError::Contended {
            instance,
            attempts: self.config.max_attempts,
        })
    }

    /// Gives a placed instance the name `new` in its project (required free in the pool,
    /// as at placement) and frees its old one; returns the old name. The host's
    /// allocation is rewritten (unchanged) under the same compares as a placement, since
    /// affinity by name looked at the instances there.
    pub fn rename(&mut self, project: &str, id: &str, new: &str) -> Result<String, SchedError> {
        let instance = format!("{project}/{id}");
        let key = keys::assignment(&instance);
        if new.is_empty() || new.contains('/') {
            return Err(SchedError::Invalid(ParseError::Name {
                what: "instance name",
                value: new.to_string(),
            }));
        }
        for _ in 0..self.config.max_attempts {
            self.refresh()?;
            let Some((a, rev)) = self.view.assignment(&instance) else {
                return Err(SchedError::NotPlaced { instance });
            };
            if a.name == new {
                return Ok(a.name.clone());
            }
            let taken = SchedError::NameTaken {
                project: project.to_string(),
                name: new.to_string(),
            };
            let tag = Tag::Name {
                project: project.to_string(),
                name: new.to_string(),
            };
            if self.view.tagged(&tag).is_some() {
                return Err(taken);
            }
            let Some(host) = self.view.host(&a.host) else {
                return Err(SchedError::NotPlaced { instance });
            };
            let new_key = keys::name(project, new);
            let mut compares = host_compares(host);
            compares.push(Compare {
                table: keys::TABLE,
                key: key.clone(),
                expect: Expect::ModRevision(rev),
            });
            compares.push(Compare {
                table: keys::TABLE,
                key: new_key.clone(),
                expect: Expect::Absent,
            });
            let mut renamed = a.clone();
            renamed.name = new.to_string();
            let mut ops = vec![
                put(key.clone(), &renamed),
                put(new_key.clone(), &id),
                put(keys::allocation(&a.host), host.allocation()),
            ];
            let old_key = keys::name(project, &a.name);
            if let Some(kv) = self.store.get_kv(keys::TABLE, &old_key)? {
                if serde_json::from_slice::<String>(&kv.value).ok().as_deref() == Some(id) {
                    compares.push(Compare {
                        table: keys::TABLE,
                        key: old_key.clone(),
                        expect: Expect::ModRevision(kv.mod_revision),
                    });
                    ops.push(Op::Delete {
                        table: keys::TABLE,
                        key: old_key,
                    });
                }
            }
            let old = a.name.clone();
            match self.commit(compares, ops)? {
                Ok(_) => {
                    self.catch_up();
                    return Ok(old);
                }
                Err(k) if k == new_key => return Err(taken),
                Err(_) => continue,
            }
        }
        Err(SchedError::Contended {
            instance,
            attempts: self.config.max_attempts,
        })
    }

    /// Takes in our own commit's events if they are there already (they are with the
    /// embedded backends, which queue them before the commit returns), so that
    /// [`Scheduler::view`] shows it; the next refresh waits for them otherwise. The commit stands whatever happens here: a failure
    /// only makes the next refresh read everything again (and report it).
    fn catch_up(&mut self) {
        if self.take_in(false).is_err() {
            self.stale = true;
        }
    }

    /// Commits; `Err(key)` with the key whose compare failed (a race lost).
    fn commit(
        &mut self,
        compares: Vec<Compare>,
        ops: Vec<Op>,
    ) -> Result<Result<Revision, String>, SchedError> {
        match self.store.txn(Txn { compares, ops }, self.config.durable) {
            Ok(revision) => {
                self.wait_for = self.wait_for.max(revision);
                Ok(Ok(revision))
            }
            Err(StoreError::Conflict { found, key, .. }) => {
                self.conflicts += 1;
                // The winner's write; a key found absent was deleted at a revision the
                // error does not give: the retry may then lose once more.
                self.wait_for = self.wait_for.max(found.unwrap_or(0));
                Ok(Err(key))
            }
            Err(e) => Err(e.into()),
        }
    }
}

fn name_taken(req: &InstanceRequest) -> SchedError {
    SchedError::NameTaken {
        project: req.project.clone(),
        name: req.name.clone(),
    }
}

/// The host record and allocation as the view saw them.
fn host_compares(host: &Host) -> Vec<Compare> {
    let record = match host.record() {
        Some(_) => Expect::ModRevision(host.record_revision()),
        None => Expect::Absent,
    };
    let alloc = match host.allocation_revision() {
        Some(r) => Expect::ModRevision(r),
        None => Expect::Absent,
    };
    vec![
        Compare {
            table: keys::TABLE,
            key: keys::host(host.id()),
            expect: record,
        },
        Compare {
            table: keys::TABLE,
            key: keys::allocation(host.id()),
            expect: alloc,
        },
    ]
}

fn put(key: String, value: &impl serde::Serialize) -> Op {
    Op::Put {
        table: keys::TABLE,
        key,
        value: serde_json::to_vec(value).expect("pool records serialize to JSON"),
    }
}

#[cfg(test)]
mod tests;
