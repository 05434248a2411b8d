//! Moving instances off a host: `pier host drain` (cordon, then move), `pier host
//! evacuate` (a down host's instances, on purpose) and the failover of down hosts (one
//! member at a time, the holder of the `leader/failover` lease, moves the instances of a
//! host whose heartbeat has been gone longer than `--host-down-after`).
//!
//! What moves: an instance placed on the host (it has an assignment) whose create
//! request has a restart policy. Its assignment is moved by the scheduler
//! ([`pier_cluster::scheduler::Scheduler::relocate`]: the filters of its request, the old
//! host excluded, both allocations in one transaction); the new host's agent makes it
//! with the same ID and request and starts it, and the old host's agent removes its copy
//! (at once if it is up, at its next start if it is down: fencing). What stays, and says
//! why: instances without a restart policy, without a create request, or that no other
//! host fits. Named volumes are local to their host and do not move: their data stays on
//! the old host, and the new host's agent makes each anew, empty, unless it has one of
//! that name, saying so in the instance's labels and a `volume` `recreate` event (see
//! `place::EngineRealiser`). Each move is an event (`container`, `reschedule`, with
//! `from`, `to` and the `volumes` left behind) in the event log of the member that moved
//! it.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pier_api::cluster::{HostMoves, InstanceKept, InstanceMove};
use pier_api::containers::{ContainerCreate, RestartPolicy};
use pier_api::volumes::MountKind;
use pier_api::ErrorKind;
use pier_cluster::instances::{self, InstanceRecord};
use pier_cluster::member::{self, HostStatus};
use pier_cluster::scheduler::{keys, Assignment, HostState, InstanceRequest};
use pier_store::{Compare, Expect, LeaseId, Op, Store, StoreError, Txn};

use super::{blocking, member_error, place, Cluster, Member};
use crate::error::ApiError;

/// The key whose holder runs the failover of down hosts.
pub const LEADER_KEY: &str = "leader/failover";

/// How often the failover tries again the instances of a down host that stayed for a
/// reason that may pass.
pub const RETRY_MOVES: Duration = Duration::from_secs(5);

/// Why instances are moved off a host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Why {
    /// `pier host drain`: the host is up and cordoned.
    Drain,
    /// `pier host evacuate`, or the failover: the host is down.
    Down,
}

/// Whether `a` moves and, if so, the scheduler's request for it and whether its new host
/// starts it; else why it stays. `record` is the pool's instance record (its last known
/// state).
pub(super) fn plan_move(
    a: &Assignment,
    record: Option<&InstanceRecord>,
) -> Result<(InstanceRequest, bool, Vec<String>), String> {
    let Some(spec) = &a.spec else {
        return Err("its assignment has no create request (made by an older Pier)".into());
    };
    let req: ContainerCreate = serde_json::from_value(spec.clone())
        .map_err(|e| format!("its create request does not read: {e}"))?;
    if req.restart_policy == RestartPolicy::No {
        return Err(
            "it has no restart policy; give it one (`pier update --restart always`) to have it moved"
                .into(),
        );
    }
    let running = record.map(|r| r.state == "running" || r.state == "restarting");
    let start = match req.restart_policy {
        RestartPolicy::Always | RestartPolicy::OnFailure { .. } => true,
        // Unless a user stopped it: its last record says whether it ran.
        RestartPolicy::UnlessStopped => running.unwrap_or(true),
        RestartPolicy::No => false,
    };
    let ir = place::instance_request(&a.project, &a.id, &a.name, &req)
        .map_err(|e| format!("its placement options do not read: {e}"))?;
    Ok((ir, start, named_volumes(&req)))
}

/// The named volumes `req` mounts (an anonymous one is made anew at any create).
pub(super) fn named_volumes(req: &ContainerCreate) -> Vec<String> {
    let mut names: Vec<String> = req
        .mounts
        .iter()
        .filter(|m| m.kind == MountKind::Volume)
        .filter_map(|m| m.source.clone())
        .collect();
    names.sort();
    names.dedup();
    names
}

impl Cluster {
    /// `pier host drain ID`: cordons the host, then moves its instances.
    pub(super) async fn drain(&self, id: String) -> Result<HostMoves, ApiError> {
        let m = self.member_or_refuse()?;
        let store = self
            .pool_store(&m, &format!("cannot drain host {id}"))
            .await?;
        let h = id.clone();
        blocking(move || member::set_cordon(store.as_ref(), &h, true).map_err(member_error))
            .await?;
        self.move_off(&m, &id, Why::Drain).await
    }

    /// `pier host evacuate ID`: moves a down host's instances.
    pub(super) async fn evacuate(&self, id: String) -> Result<HostMoves, ApiError> {
        let m = self.member_or_refuse()?;
        let store = self
            .pool_store(&m, &format!("cannot evacuate host {id}"))
            .await?;
        let h = id.clone();
        let status =
            blocking(move || member::host(store.as_ref(), &h).map_err(member_error)).await?;
        if status.state() != HostState::Down {
            return Err(ApiError::new(
                ErrorKind::Conflict,
                format!("host {id} is not down (its heartbeat is live): use `pier host drain {id}` to move instances off a running host"),
            ));
        }
        self.move_off(&m, &id, Why::Down).await
    }

    /// Moves what can move off host `id`; see the module doc.
    pub(super) async fn move_off(
        &self,
        m: &Arc<Member>,
        id: &str,
        why: Why,
    ) -> Result<HostMoves, ApiError> {
        self.move_off_counting(m, id, why)
            .await
            .map(|(moves, _)| moves)
    }

    /// As [`Cluster::move_off`], with how many instances stayed for a reason that may
    /// pass (no other host fits now, lost races, the store failed), worth another try.
    async fn move_off_counting(
        &self,
        m: &Arc<Member>,
        id: &str,
        why: Why,
    ) -> Result<(HostMoves, usize), ApiError> {
        let store = m.store()?;
        let (m2, host) = (m.clone(), id.to_string());
        let moves = blocking(move || {
            let listing = store
                .range(keys::TABLE, keys::ASSIGNMENTS)
                .map_err(|e| super::store_error(&e))?;
            let records: HashMap<String, InstanceRecord> = instances::list(store.as_ref(), None)
                .map_err(|e| super::store_error(&e))?
                .into_iter()
                .map(|r| (format!("{}/{}", r.project, r.id), r))
                .collect();
            let mut out = HostMoves {
                host: host.clone(),
                ..Default::default()
            };
            let mut retry = 0;
            for (key, kv) in &listing.kvs {
                let Ok(a) = serde_json::from_slice::<Assignment>(&kv.value) else {
                    tracing::warn!(key = %key, "an assignment does not read; left where it is");
                    continue;
                };
                if a.host != host {
                    continue;
                }
                let instance = format!("{}/{}", a.project, a.id);
                let kept = |reason: String| InstanceKept {
                    project: a.project.clone(),
                    id: a.id.clone(),
                    name: a.name.clone(),
                    reason,
                };
                let (req, start, volumes) = match plan_move(&a, records.get(&instance)) {
                    Ok(p) => p,
                    Err(reason) => {
                        out.not_moved.push(kept(reason));
                        continue;
                    }
                };
                match m2.placer.relocate(&store, &req, &host, start) {
                    Ok(to) => out.moved.push(InstanceMove {
                        project: a.project.clone(),
                        id: a.id.clone(),
                        name: a.name.clone(),
                        from: host.clone(),
                        to,
                        start,
                        volumes,
                    }),
                    Err(e) => {
                        retry += 1;
                        out.not_moved.push(kept(pier_api::error::chain(&e)))
                    }
                }
            }
            Ok::<_, ApiError>((out, retry))
        })
        .await?;
        let (moves, retry) = moves;
        if let Some(engine) = self.engine.upgrade() {
            for mv in &moves.moved {
                let Ok(project) = pier_api::ProjectName::try_from(mv.project.clone()) else {
                    continue;
                };
                let ctx = pier_engine::RequestContext::system(project, "cluster");
                let reason = match why {
                    Why::Drain => "drain",
                    Why::Down => "host down",
                };
                let volumes = mv.volumes.join(",");
                let mut attrs = vec![
                    ("name", mv.name.as_str()),
                    ("from", mv.from.as_str()),
                    ("to", mv.to.as_str()),
                    ("reason", reason),
                ];
                if !volumes.is_empty() {
                    attrs.push(("volumes", &volumes));
                }
                engine.emit(&ctx, "container", "reschedule", &mv.id, &attrs);
            }
        }
        for mv in &moves.moved {
            tracing::info!(instance = %format!("{}/{}", mv.project, mv.id), from = %mv.from, to = %mv.to, "instance moved");
        }
        for k in &moves.not_moved {
            tracing::info!(instance = %format!("{}/{}", k.project, k.id), host = %id, reason = %k.reason, "instance not moved");
        }
        Ok((moves, retry))
    }

    /// The failover task of member `m`: every second, takes or keeps the
    /// `leader/failover` lease; while it holds it, moves the instances of each host whose
    /// heartbeat has been gone for `down_after`: once per time the host is down, and
    /// again every [`RETRY_MOVES`] while some stayed for a reason that may pass (no other
    /// host fits now: after a network split, the majority's own heartbeats may lapse for
    /// a while; lost races; the store failed).
    pub(super) fn start_failover(self: &Arc<Self>, m: &Arc<Member>) {
        let Some(down_after) = self.host_down_after else {
            return;
        };
        let Some(store) = m.store.get().cloned() else {
            return;
        };
        let (me, m2) = (self.clone(), m.clone());
        let ttl = self.heartbeat_ttl.max(Duration::from_secs(2));
        let task = tokio::spawn(async move {
            let mut leader = Leader::new(&m2.local.name, ttl);
            let mut missing: BTreeMap<String, Instant> = BTreeMap::new();
            // The hosts moved off while down: None when done, else when to try again.
            let mut handled: BTreeMap<String, Option<Instant>> = BTreeMap::new();
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let (s, mut l) = (store.clone(), leader);
                let (l, hosts) = tokio::task::spawn_blocking(move || {
                    let held = l.hold(s.as_ref());
                    let hosts = match held {
                        Ok(true) => member::hosts(s.as_ref()).ok(),
                        Ok(false) => None,
                        Err(e) => {
                            tracing::debug!(error = %e, "cannot take the failover lease");
                            None
                        }
                    };
                    (l, hosts)
                })
                .await
                .unwrap_or_else(|_| (Leader::new(&m2.local.name, ttl), None));
                leader = l;
                let Some(hosts) = hosts else {
                    missing.clear();
                    continue;
                };
                let now = Instant::now();
                let down: Vec<&HostStatus> = hosts
                    .iter()
                    .filter(|h| h.heartbeat.is_none() && h.record.id != m2.local.name)
                    .collect();
                missing.retain(|id, _| down.iter().any(|h| &h.record.id == id));
                handled.retain(|id, _| down.iter().any(|h| &h.record.id == id));
                for h in down {
                    let id = h.record.id.clone();
                    let since = *missing.entry(id.clone()).or_insert(now);
                    if now.duration_since(since) < down_after {
                        continue;
                    }
                    match handled.get(&id) {
                        Some(None) => continue,
                        Some(Some(at)) if now < *at => continue,
                        Some(Some(_)) => {
                            tracing::info!(host = %id, "host still down; moving what stayed")
                        }
                        None => {
                            tracing::warn!(host = %id, after = ?down_after, "host down; moving its instances")
                        }
                    }
                    let again = match me.move_off_counting(&m2, &id, Why::Down).await {
                        Ok((_, 0)) => None,
                        Ok(_) => Some(Instant::now() + RETRY_MOVES),
                        Err(e) => {
                            tracing::warn!(host = %id, error = %e.message, "cannot move a down host's instances; trying again");
                            Some(Instant::now())
                        }
                    };
                    handled.insert(id, again);
                }
            }
        });
        m.tasks.lock().unwrap_or_else(|e| e.into_inner()).push(task);
    }
}

/// This member's hold on the `leader/failover` key: a key on a lease of its own,
/// created only when absent, renewed while held.
pub(super) struct Leader {
    name: String,
    ttl: Duration,
    lease: Option<LeaseId>,
}

impl Leader {
    pub(super) fn new(name: &str, ttl: Duration) -> Self {
        Leader {
            name: name.to_string(),
            ttl,
            lease: None,
        }
    }

    /// Renews or takes the lease; whether this member holds it now.
    pub(super) fn hold(&mut self, store: &dyn Store) -> Result<bool, StoreError> {
        if let Some(lease) = self.lease {
            match store.keep_alive(lease) {
                Ok(_) => {
                    let holder = store.get(keys::TABLE, LEADER_KEY)?;
                    if holder.as_deref() == Some(self.name.as_bytes()) {
                        return Ok(true);
                    }
                    let _ = store.revoke(lease);
                    self.lease = None;
                }
                Err(StoreError::LeaseNotFound { .. }) => self.lease = None,
                Err(e) => return Err(e),
            }
        }
        let lease = store.grant(self.ttl)?;
        let txn = Txn {
            compares: vec![Compare {
                table: keys::TABLE,
                key: LEADER_KEY.to_string(),
                expect: Expect::Absent,
            }],
            ops: vec![Op::PutLeased {
                table: keys::TABLE,
                key: LEADER_KEY.to_string(),
                value: self.name.as_bytes().to_vec(),
                lease,
            }],
        };
        match store.txn(txn, true) {
            Ok(_) => {
                self.lease = Some(lease);
                Ok(true)
            }
            Err(StoreError::Conflict { .. }) => {
                let _ = store.revoke(lease);
                Ok(false)
            }
            Err(e) => {
                let _ = store.revoke(lease);
                Err(e)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pier_cluster::scheduler::Resources;
    use pier_store::MemStore;

    fn assignment(spec: serde_json::Value) -> Assignment {
        Assignment {
            project: "default".into(),
            id: "abc".into(),
            name: "web".into(),
            labels: Default::default(),
            host: "h1".into(),
            resources: Resources::default(),
            ports: Vec::new(),
            spec: Some(spec),
            start: false,
            moved_from: None,
        }
    }

    fn record(state: &str) -> InstanceRecord {
        serde_json::from_value(serde_json::json!({
            "project": "default", "id": "abc", "name": "web", "host": "h1",
            "kind": "container", "image": "busybox", "command": "sleep 1",
            "state": state, "status": "", "created": "2026-12-07T10:00:00Z",
        }))
        .unwrap()
    }

    #[test]
    fn what_moves_and_whether_it_starts() {
        let moves = |spec: serde_json::Value, state: Option<&str>| {
            let r = state.map(record);
            plan_move(&assignment(spec), r.as_ref())
        };
        let always = serde_json::json!({"image": "busybox", "restart_policy": {"name": "always"}});
        let (req, start, _) = moves(always.clone(), Some("exited")).unwrap();
        assert!(start);
        assert_eq!((req.id.as_str(), req.name.as_str()), ("abc", "web"));
        let unless =
            serde_json::json!({"image": "busybox", "restart_policy": {"name": "unless-stopped"}});
        assert!(!moves(unless.clone(), Some("exited")).unwrap().1);
        assert!(moves(unless.clone(), Some("running")).unwrap().1);
        assert!(moves(unless, None).unwrap().1);
        let constrained = serde_json::json!({"image": "busybox",
            "restart_policy": {"name": "on-failure", "max_retries": 2},
            "constraints": ["host.label.zone==a"]});
        let (req, start, _) = moves(constrained, Some("running")).unwrap();
        assert!(start);
        assert_eq!(req.constraints.len(), 1, "the request's filters go with it");

        let e = moves(serde_json::json!({"image": "busybox"}), Some("running")).unwrap_err();
        assert!(e.contains("no restart policy"), "{e}");
        // Named volumes move with it as names (the new host makes them empty); an
        // anonymous one is made anew at any create, so it is not named.
        let (_, _, volumes) = moves(
            serde_json::json!({"image": "busybox", "restart_policy": {"name": "always"},
                "mounts": [{"type": "volume", "source": "data", "target": "/d"},
                           {"type": "volume", "target": "/anon"},
                           {"type": "volume", "source": "data", "target": "/again"},
                           {"type": "bind", "source": "/srv", "target": "/srv"}]}),
            None,
        )
        .unwrap();
        assert_eq!(volumes, ["data"]);
    }

    #[test]
    fn one_member_holds_the_failover_lease_at_a_time() {
        let store = MemStore::default();
        let (mut a, mut b) = (
            Leader::new("h1", Duration::from_secs(5)),
            Leader::new("h2", Duration::from_secs(5)),
        );
        assert!(a.hold(&store).unwrap());
        assert!(!b.hold(&store).unwrap());
        assert!(a.hold(&store).unwrap(), "renewed");
        assert!(!b.hold(&store).unwrap());
        // a's lease ends (its member died): b takes over.
        store.revoke(a.lease.unwrap()).unwrap();
        assert!(b.hold(&store).unwrap());
        assert!(!a.hold(&store).unwrap());
        assert_eq!(
            store.get(keys::TABLE, LEADER_KEY).unwrap().as_deref(),
            Some(&b"h2"[..])
        );
    }
}
