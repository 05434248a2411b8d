//! Instances placed across the pool: `POST /v1/containers` on a member places the
//! instance with the scheduler, writes the assignment with the create request, and waits
//! for the chosen host's agent to answer at `placed/PROJECT/ID`; this member's agent
//! ([`Cluster::start_agent`]) realises the assignments naming this host through the
//! engine, and releases an assignment when its instance is removed here.
//!
//! At a member's start, restarts by restart policy are held until the agent's first sweep
//! (which removes the copies of instances moved elsewhere while this host was down).
//!
//! The chosen host may be this one: it goes through the same path. Only the owner's agent
//! creates an instance; the member that took the request never does.

use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use pier_api::containers::{ContainerCreate, Created};
use pier_api::{ContainerId, ErrorKind, ImageRef, ProjectName};
use pier_cluster::agent::{Agent, Failure, Placed, Realiser};
use pier_cluster::scheduler::{
    keys, AffinityRule, Assignment, HostPort, InstanceRequest, ParseError, Resources, SchedError,
    Scheduler, SchedulerConfig,
};
use pier_engine::{Engine, RequestContext};
use pier_store::{Store, StoreExt};

use super::{store_error, Cluster, Member};
use crate::error::ApiError;
use crate::metrics::PlacementOutcome;

/// How long the member that took a create waits for the chosen host's answer.
pub const PLACE_TIMEOUT: Duration = Duration::from_secs(120);

/// The scheduler of a member: made on first use, over the pool's store, and made again
/// after the store failed under it.
#[derive(Default)]
pub(super) struct Placer {
    scheduler: Mutex<Option<Scheduler>>,
}

impl Placer {
    /// Runs `f` on the scheduler (blocking: call it off the runtime's threads).
    fn with<T>(
        &self,
        store: &Arc<dyn Store>,
        f: impl FnOnce(&mut Scheduler) -> Result<T, SchedError>,
    ) -> Result<T, SchedError> {
        let mut guard = self.scheduler.lock().unwrap_or_else(|e| e.into_inner());
        if guard.is_none() {
            let config = SchedulerConfig {
                require_heartbeat: true,
                ..Default::default()
            };
            *guard = Some(Scheduler::new(store.clone(), config)?);
        }
        let r = f(guard.as_mut().expect("made above"));
        if matches!(r, Err(SchedError::Store(_))) {
            *guard = None;
        }
        r
    }

    /// Moves `req`'s instance off host `from` (see [`Scheduler::relocate`]); its new host.
    pub(super) fn relocate(
        &self,
        store: &Arc<dyn Store>,
        req: &InstanceRequest,
        from: &str,
        start: bool,
    ) -> Result<String, SchedError> {
        self.with(store, |s| s.relocate(req, from, start))
            .map(|p| p.host)
    }

    /// Releases `project/id`; an instance that is not placed is fine (released already).
    fn release(&self, store: &Arc<dyn Store>, project: &str, id: &str) -> Result<(), SchedError> {
        match self.with(store, |s| s.release(project, id)) {
            Ok(_) | Err(SchedError::NotPlaced { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

fn sched_error(e: SchedError) -> ApiError {
    let kind = match &e {
        SchedError::Invalid(_) => ErrorKind::InvalidInput,
        // Out of capacity: the architecture's 507 (a name taken is a conflict).
        SchedError::NoHostFits(_) => ErrorKind::InsufficientStorage,
        SchedError::NameTaken { .. }
        | SchedError::AlreadyPlaced { .. }
        | SchedError::NotPlaced { .. }
        | SchedError::NotOn { .. } => ErrorKind::Conflict,
        SchedError::Contended { .. } => ErrorKind::Unavailable,
        SchedError::Store(s) => return store_error(s),
        SchedError::Corrupt { .. } | SchedError::Mismatch { .. } => ErrorKind::Internal,
    };
    ApiError::new(kind, pier_api::error::chain(&e))
}

/// Whether the request asks for a placement in a pool.
pub fn has_placement_options(req: &ContainerCreate) -> bool {
    !req.constraints.is_empty()
        || !req.affinity.is_empty()
        || !req.anti_affinity.is_empty()
        || req.placement.is_some()
}

/// The refusal of placement options by a daemon that is not in a pool.
pub fn not_in_pool() -> ApiError {
    ApiError::invalid(
        "this daemon is not in a pool: --constraint, --affinity, --anti-affinity and --placement choose among a pool's hosts; leave them out, or make or join a pool (`pier cluster init`, `pier cluster join`)",
    )
}

/// What the scheduler is asked for `req` (named `name`, with ID `id`) in `project`.
pub(super) fn instance_request(
    project: &str,
    id: &str,
    name: &str,
    req: &ContainerCreate,
) -> Result<InstanceRequest, ParseError> {
    let mut ports = Vec::new();
    for p in &req.publish {
        if let Some((lo, hi)) = p.host_ports().filter(|(lo, _)| *lo != 0) {
            for port in lo..=hi {
                ports.push(format!("{port}/{}", p.proto().as_str()).parse::<HostPort>()?);
            }
        }
    }
    ports.sort();
    ports.dedup();
    let rules = |sels: &[String], anti: bool| -> Result<Vec<AffinityRule>, ParseError> {
        sels.iter()
            .map(|s| {
                Ok(AffinityRule {
                    anti,
                    selector: s.parse()?,
                })
            })
            .collect()
    };
    let mut affinity = rules(&req.affinity, false)?;
    affinity.extend(rules(&req.anti_affinity, true)?);
    Ok(InstanceRequest {
        project: project.to_string(),
        id: id.to_string(),
        name: name.to_string(),
        labels: req.labels.clone(),
        resources: Resources {
            cpu_millis: req.cpus.map_or(0, |c| (c.max(0.0) * 1000.0).round() as u64),
            memory_bytes: req.memory.map_or(0, |m| u64::try_from(m).unwrap_or(0)),
            disk_bytes: 0,
        },
        ports,
        constraints: req
            .constraints
            .iter()
            .map(|c| c.parse())
            .collect::<Result<_, _>>()?,
        affinity,
        strategy: req
            .placement
            .as_deref()
            .map(str::parse)
            .transpose()?
            .unwrap_or_default(),
        spec: None,
    })
}

impl Cluster {
    /// Whether this daemon is a member of a pool (its creates are placed).
    pub fn in_pool(&self) -> bool {
        self.member().is_some()
    }

    /// `POST /v1/containers` in a pool: places the instance, waits for its host to make
    /// it; see the module doc.
    pub async fn create(
        &self,
        ctx: &RequestContext,
        mut req: ContainerCreate,
    ) -> Result<Created, ApiError> {
        let m = self.member_or_refuse()?;
        // A host cut off from the pool's store says so at once (see [`super::quorum`]).
        let store = self.pool_store(&m, "cannot place the instance").await?;
        let id = pier_api::random_hex(32);
        let name = match req.name.as_deref().map(|n| n.trim_start_matches('/')) {
            Some(n) if !n.is_empty() => n.to_string(),
            _ => pier_engine::instances::service::random_name(&id),
        };
        if !pier_engine::names::valid_name(&name) {
            return Err(ApiError::invalid(format!(
                "invalid container name {name:?}: use 1 to 128 letters, digits, '_', '.' or '-', starting with a letter or digit"
            )));
        }
        req.name = Some(name.clone());
        let project = ctx.project().to_string();
        let mut ireq = instance_request(&project, &id, &name, &req)
            .map_err(|e| ApiError::invalid(e.to_string()))?;
        ireq.spec = Some(serde_json::to_value(&req).map_err(|e| {
            ApiError::new(
                ErrorKind::Internal,
                format!("cannot encode the request: {e}"),
            )
        })?);
        let (m2, s2) = (m.clone(), store.clone());
        let t0 = Instant::now();
        let placed =
            tokio::task::spawn_blocking(move || m2.placer.with(&s2, |s| s.place(&ireq))).await?;
        let committed_in = t0.elapsed();
        let count = |outcome| self.metrics.placement(outcome, Some(committed_in));
        let placement = placed.map_err(|e| {
            let refused = matches!(
                e,
                SchedError::Invalid(_) | SchedError::NoHostFits(_) | SchedError::NameTaken { .. }
            );
            self.metrics.placement(
                if refused {
                    PlacementOutcome::Refused
                } else {
                    PlacementOutcome::Error
                },
                None,
            );
            sched_error(e)
        })?;
        let host = placement.host;
        tracing::info!(instance = %format!("{project}/{id}"), host = %host, "instance placed");
        let instance = format!("{project}/{id}");
        let outcome = wait_placed(&store, &instance).await;
        if let Ok(Some(Placed {
            host: by,
            error: None,
        })) = &outcome
        {
            // Read-your-writes: listed and found through this member once answered.
            if *by != m.local.name && !m.records.wait_for(&store, &project, &id).await {
                tracing::warn!(instance = %instance, host = %by, "the instance's record did not come; it is listed once its host writes it");
            }
        }
        let release = || {
            let (m, store, project, id) = (m.clone(), store.clone(), project.clone(), id.clone());
            async move {
                let r =
                    tokio::task::spawn_blocking(move || m.placer.release(&store, &project, &id))
                        .await;
                if let Ok(Err(e)) = r {
                    tracing::warn!(error = %pier_api::error::chain(&e), "cannot release a placement");
                }
            }
        };
        count(match &outcome {
            Ok(Some(Placed { error: None, .. })) => PlacementOutcome::Placed,
            Ok(Some(_)) => PlacementOutcome::Failed,
            Ok(None) => PlacementOutcome::TimedOut,
            Err(_) => PlacementOutcome::Error,
        });
        match outcome {
            Ok(Some(Placed { error: None, .. })) => Ok(Created {
                id: ContainerId::try_from(id)
                    .map_err(|e| ApiError::new(ErrorKind::Internal, e.to_string()))?,
                name,
            }),
            Ok(Some(Placed {
                host: by,
                error: Some(f),
            })) => {
                release().await;
                let kind = serde_json::from_value(serde_json::Value::String(f.kind.clone()))
                    .unwrap_or(ErrorKind::Internal);
                Err(ApiError::new(
                    kind,
                    format!("host {by} could not create the instance: {}", f.message),
                ))
            }
            Ok(None) => {
                release().await;
                Err(ApiError::new(
                    ErrorKind::Unavailable,
                    format!(
                        "host {host} did not create the instance within {} s; the placement was released: check that the host is up (`pier host ls`) and try again",
                        PLACE_TIMEOUT.as_secs()
                    ),
                ))
            }
            Err(e) => {
                release().await;
                Err(e)
            }
        }
    }

    /// A rename of an instance of this host: outside a pool, or for an instance without
    /// an assignment (made before the pool), the engine's alone; for a placed one, its
    /// name in the pool moves first (refused if the new one is taken in the pool), then
    /// the engine's, and the pool's is moved back if the engine refuses.
    pub async fn rename(
        &self,
        ctx: &RequestContext,
        engine: &Arc<Engine>,
        name_or_id: &str,
        new_name: &str,
    ) -> Result<(), ApiError> {
        let Some(m) = self.member() else {
            engine.instances.rename(ctx, name_or_id, new_name).await?;
            return Ok(());
        };
        if !pier_engine::names::valid_name(new_name) {
            return Err(ApiError::invalid(format!(
                "invalid container name {new_name:?}: use 1 to 128 letters, digits, '_', '.' or '-', starting with a letter or digit"
            )));
        }
        let id = engine.instances.get(ctx, name_or_id)?.id;
        let store = m.store()?;
        let project = ctx.project().to_string();
        let moved = {
            let (m, store, project, id, new) = (
                m.clone(),
                store.clone(),
                project.clone(),
                id.clone(),
                new_name.to_string(),
            );
            tokio::task::spawn_blocking(move || {
                match m.placer.with(&store, |s| s.rename(&project, &id, &new)) {
                    Ok(old) => Ok(Some(old)),
                    Err(SchedError::NotPlaced { .. }) => Ok(None),
                    Err(e) => Err(e),
                }
            })
            .await?
            .map_err(sched_error)?
        };
        let renamed = engine.instances.rename(ctx, &id, new_name).await;
        if let (Err(_), Some(old)) = (&renamed, moved) {
            let back = tokio::task::spawn_blocking(move || {
                m.placer.with(&store, |s| s.rename(&project, &id, &old))
            })
            .await;
            if let Ok(Err(e)) = back {
                tracing::warn!(error = %pier_api::error::chain(&e), "cannot give a placed instance its name back in the pool");
            }
        }
        Ok(renamed?)
    }

    /// The agent of this member (see [`pier_cluster::agent`]): realises the assignments
    /// naming this host, following `assignments/` again after the watch ends; and releases
    /// the assignment of an instance removed here.
    pub(super) fn start_agent(&self, m: &Arc<Member>) {
        let Some(store) = m.store.get().cloned() else {
            return;
        };
        let realiser = Arc::new(EngineRealiser {
            engine: self.engine.clone(),
            handle: tokio::runtime::Handle::current(),
        });
        let agent = Arc::new(Mutex::new(Agent::new(&m.local.name)));
        let m2 = m.clone();
        let engine = self.engine.clone();
        let follow = tokio::spawn(async move {
            loop {
                let (s, r, a) = (store.clone(), realiser.clone(), agent.clone());
                let swept = tokio::task::spawn_blocking(move || {
                    let sweep = a
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .sweep(s.as_ref(), r.as_ref())?;
                    let watch = s.watch(keys::TABLE, keys::ASSIGNMENTS, sweep.revision + 1)?;
                    Ok::<_, pier_cluster::agent::AgentError>((sweep, watch))
                })
                .await;
                match swept {
                    Ok(Ok((sweep, mut watch))) => {
                        // Old copies of moved instances are gone: restarts may go.
                        if let Some(e) = engine.upgrade() {
                            e.instances.release_restarts();
                        }
                        for instance in sweep.gone {
                            release_instance(&m2, &store, &instance).await;
                        }
                        while let Some(Ok(ev)) = watch.recv().await {
                            let (s, r, a) = (store.clone(), realiser.clone(), agent.clone());
                            let done = tokio::task::spawn_blocking(move || {
                                a.lock().unwrap_or_else(|e| e.into_inner()).on_event(
                                    s.as_ref(),
                                    r.as_ref(),
                                    &ev,
                                )
                            })
                            .await;
                            if let Ok(Err(e)) = done {
                                tracing::warn!(error = %pier_api::error::chain(&e), "the host agent failed; following the pool again");
                                break;
                            }
                        }
                    }
                    Ok(Err(e)) => {
                        tracing::warn!(error = %pier_api::error::chain(&e), "the host agent cannot read the pool's assignments; retrying");
                    }
                    Err(_) => {}
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
        let Some(engine) = self.engine.upgrade() else {
            return;
        };
        let mut events = engine.instances.events.subscribe();
        drop(engine);
        let (m2, store) = (m.clone(), m.store.get().cloned().expect("checked above"));
        let removed = tokio::spawn(async move {
            use tokio::sync::broadcast::error::RecvError;
            loop {
                match events.recv().await {
                    Ok(ev) if ev.event.kind == "container" && ev.event.action == "destroy" => {
                        let instance = format!("{}/{}", ev.project, ev.event.id);
                        release_instance(&m2, &store, &instance).await;
                    }
                    Ok(_) => {}
                    // Missed ones are found by the agent's next sweep.
                    Err(RecvError::Lagged(_)) => {}
                    Err(RecvError::Closed) => return,
                }
            }
        });
        let mut tasks = m.tasks.lock().unwrap_or_else(|e| e.into_inner());
        tasks.push(follow);
        tasks.push(removed);
    }
}

/// Releases the assignment of `instance` (`project/id`) if it is placed on this host.
async fn release_instance(m: &Arc<Member>, store: &Arc<dyn Store>, instance: &str) {
    let (m, store, instance) = (m.clone(), store.clone(), instance.to_string());
    let r = tokio::task::spawn_blocking(move || {
        let key = keys::assignment(&instance);
        let Some(a) = store.get_json::<Assignment>(keys::TABLE, &key)? else {
            return Ok(());
        };
        if a.host != m.local.name {
            return Ok(());
        }
        m.placer.release(&store, &a.project, &a.id)?;
        tracing::info!(instance = %instance, "instance removed; its placement released");
        Ok::<_, SchedError>(())
    })
    .await;
    if let Ok(Err(e)) = r {
        tracing::warn!(error = %pier_api::error::chain(&e), "cannot release the placement of a removed instance");
    }
}

/// Waits for the outcome of `instance`'s placement; None after [`PLACE_TIMEOUT`].
async fn wait_placed(store: &Arc<dyn Store>, instance: &str) -> Result<Option<Placed>, ApiError> {
    let key = keys::placed(instance);
    let until = Instant::now() + PLACE_TIMEOUT;
    let mut pause = Duration::from_millis(20);
    loop {
        let (s, k) = (store.clone(), key.clone());
        let got = tokio::task::spawn_blocking(move || s.get_json::<Placed>(keys::TABLE, &k))
            .await?
            .map_err(|e| store_error(&e))?;
        if got.is_some() {
            return Ok(got);
        }
        if Instant::now() >= until {
            return Ok(None);
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(250));
    }
}

/// The agent's hands on this host: the engine's create with the assignment's ID (pulling
/// a missing image first), in the request's project.
struct EngineRealiser {
    engine: Weak<Engine>,
    handle: tokio::runtime::Handle,
}

fn failure(e: ApiError) -> Failure {
    let kind = serde_json::to_value(e.kind)
        .ok()
        .and_then(|v| v.as_str().map(String::from))
        .unwrap_or_else(|| "internal".into());
    Failure::new(kind, e.message)
}

impl EngineRealiser {
    fn engine(&self) -> Result<Arc<Engine>, Failure> {
        self.engine
            .upgrade()
            .ok_or_else(|| Failure::new("unavailable", "the daemon is stopping"))
    }

    fn ctx(project: &str) -> Result<RequestContext, Failure> {
        let p = ProjectName::try_from(project.to_string())
            .map_err(|e| Failure::new("invalid_input", format!("bad project {project:?}: {e}")))?;
        Ok(RequestContext::system(p, "cluster"))
    }

    fn pull(&self, engine: &Engine, ctx: &RequestContext, image: &str) -> Result<(), Failure> {
        let reference: ImageRef = image.parse().map_err(|e: pier_api::reference::RefError| {
            Failure::new("invalid_input", e.to_string())
        })?;
        let progress: pier_registry_client::transfer::Progress = Arc::new(|_| {});
        self.handle
            .block_on(engine.pull_image(ctx, &reference, None, progress))
            .map(drop)
            .map_err(|e| match e {
                pier_registry_client::RemoteError::Image(i) => failure(ApiError::from(i)),
                e => {
                    let kind = match &e {
                        pier_registry_client::RemoteError::Unauthorized { .. }
                        | pier_registry_client::RemoteError::Denied(_) => "not_found",
                        _ => "unavailable",
                    };
                    Failure::new(kind, format!("cannot pull {image}: {}", e.chain()))
                }
            })
    }
}

/// The label of an instance moved to its host: the host it was moved from.
pub const MOVED_FROM_LABEL: &str = "org.pier.moved-from";
/// The label of an instance moved to its host: the named volumes its new host made anew,
/// empty (comma-separated), as volumes are local to their host.
pub const VOLUMES_RECREATED_LABEL: &str = "org.pier.volumes-recreated";

/// A moved instance's create on its new host: labelled with where it came from and which
/// of its named volumes this host does not have (and so makes anew, empty); those names.
fn moved_here(
    engine: &Engine,
    ctx: &RequestContext,
    req: &mut ContainerCreate,
    from: &str,
) -> Vec<String> {
    let missing: Vec<String> = super::failover::named_volumes(req)
        .into_iter()
        .filter(|v| {
            matches!(engine.volumes.get(&ctx.project, v), Err(e) if e.kind() == ErrorKind::NotFound)
        })
        .collect();
    req.labels
        .insert(MOVED_FROM_LABEL.to_string(), from.to_string());
    if missing.is_empty() {
        req.labels.remove(VOLUMES_RECREATED_LABEL);
    } else {
        req.labels
            .insert(VOLUMES_RECREATED_LABEL.to_string(), missing.join(","));
    }
    missing
}

impl Realiser for EngineRealiser {
    fn realise(&self, a: &Assignment) -> Result<(), Failure> {
        let Some(spec) = &a.spec else {
            return Err(Failure::new(
                "invalid_input",
                "the assignment has no create request (written by an older Pier); remove it",
            ));
        };
        let req: ContainerCreate = serde_json::from_value(spec.clone()).map_err(|e| {
            Failure::new(
                "invalid_input",
                format!("bad create request in the assignment: {e}"),
            )
        })?;
        let id = ContainerId::try_from(a.id.clone()).map_err(|e| {
            Failure::new("invalid_input", format!("bad instance ID {:?}: {e}", a.id))
        })?;
        let engine = self.engine()?;
        let ctx = Self::ctx(&a.project)?;
        let mut req = req;
        let recreated = match &a.moved_from {
            Some(from) => moved_here(&engine, &ctx, &mut req, from),
            None => Vec::new(),
        };
        match engine.instances.create_with_id(&ctx, req.clone(), &id) {
            Ok(_) => {}
            Err(e)
                if e.kind() == ErrorKind::NotFound && e.to_string().contains("no such image") =>
            {
                self.pull(&engine, &ctx, &req.image)?;
                engine
                    .instances
                    .create_with_id(&ctx, req, &id)
                    .map_err(|e| failure(ApiError::from(e)))?;
            }
            Err(e) => return Err(failure(ApiError::from(e))),
        }
        if let Some(from) = &a.moved_from {
            for v in &recreated {
                engine.emit(
                    &ctx,
                    "volume",
                    "recreate",
                    v,
                    &[
                        ("container", a.id.as_str()),
                        ("from", from.as_str()),
                        (
                            "reason",
                            "its instance moved here; the volume's data stays on the host it left",
                        ),
                    ],
                );
                tracing::warn!(instance = %format!("{}/{}", a.project, a.id), volume = %v, %from, "made a moved instance's volume anew, empty: its data stays on the host it left");
            }
        }
        if a.start {
            // A moved instance that was running: the instance exists either way, so a
            // start that fails is reported and the instance kept (its owner's API can
            // start it); the restart policy does not apply to a start never made.
            if let Err(e) = self.handle.block_on(engine.instances.start(&ctx, &a.id)) {
                let from = a.moved_from.as_deref().unwrap_or("another host");
                tracing::warn!(instance = %format!("{}/{}", a.project, a.id), error = %e, "cannot start an instance moved here from {from}");
                return Err(failure(ApiError::from(e)));
            }
            tracing::info!(instance = %format!("{}/{}", a.project, a.id), from = ?a.moved_from, "instance moved here and started");
        }
        Ok(())
    }

    fn exists(&self, project: &str, id: &str) -> Result<bool, Failure> {
        let engine = self.engine()?;
        let ctx = Self::ctx(project)?;
        match engine.instances.get(&ctx, id) {
            Ok(c) => Ok(c.id == id),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
            Err(e) => Err(failure(ApiError::from(e))),
        }
    }

    fn discard(&self, project: &str, id: &str) {
        let (Ok(engine), Ok(ctx)) = (self.engine(), Self::ctx(project)) else {
            return;
        };
        if let Err(e) = self
            .handle
            .block_on(engine.instances.remove(&ctx, id, true, true))
        {
            tracing::warn!(instance = %format!("{project}/{id}"), error = %e, "cannot remove an instance whose placement was released");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn create(f: impl FnOnce(&mut ContainerCreate)) -> ContainerCreate {
        let mut r = ContainerCreate {
            image: "bb".into(),
            ..Default::default()
        };
        f(&mut r);
        r
    }

    #[test]
    fn a_create_request_becomes_a_placement_request() {
        let req = create(|r| {
            r.cpus = Some(1.5);
            r.memory = Some(64 << 20);
            r.publish = [
                "8080:80",
                "127.0.0.1:5353:53/udp",
                "9000-9001:9000-9001",
                "80",
            ]
            .iter()
            .map(|p| p.parse().unwrap())
            .collect();
            r.labels = [("app".to_string(), "web".to_string())].into();
            r.constraints = vec!["host.label.zone==a".into()];
            r.affinity = vec!["instance.name==db".into()];
            r.anti_affinity = vec!["instance.label.app==web".into()];
            r.placement = Some("binpack".into());
        });
        let i = instance_request("default", "id1", "web", &req).unwrap();
        assert_eq!(i.resources.cpu_millis, 1500);
        assert_eq!(i.resources.memory_bytes, 64 << 20);
        let ports: Vec<String> = i.ports.iter().map(|p| p.to_string()).collect();
        // A port without a host port takes any free one: nothing to hold.
        assert_eq!(ports, ["8080/tcp", "9000/tcp", "9001/tcp", "5353/udp"]);
        assert_eq!(i.constraints[0].to_string(), "host.label.zone==a");
        let rules: Vec<String> = i.affinity.iter().map(|r| r.to_string()).collect();
        assert_eq!(
            rules,
            [
                "affinity instance.name==db",
                "anti-affinity instance.label.app==web"
            ]
        );
        assert_eq!(i.strategy, pier_cluster::scheduler::Strategy::Binpack);
        assert_eq!(i.labels.get("app").map(String::as_str), Some("web"));
        // No limits: nothing reserved (an unlimited memory of -1 too).
        let plain = create(|r| r.memory = Some(-1));
        let i = instance_request("default", "id2", "x", &plain).unwrap();
        assert_eq!(i.resources, Resources::default());
        assert_eq!(i.strategy, pier_cluster::scheduler::Strategy::Spread);
    }

    /// A change to a request, and the start of the error it must give.
    type Case = (fn(&mut ContainerCreate), &'static str);

    #[test]
    fn bad_placement_expressions_are_named() {
        let cases: [Case; 4] = [
            (
                |r| r.constraints = vec!["zone=a".into()],
                "bad constraint \"zone=a\"",
            ),
            (
                |r| r.affinity = vec!["app==web".into()],
                "bad instance selector \"app==web\"",
            ),
            (
                |r| r.anti_affinity = vec!["instance.label.app!=x".into()],
                "bad instance selector \"instance.label.app!=x\"",
            ),
            (
                |r| r.placement = Some("random".into()),
                "bad placement strategy \"random\"",
            ),
        ];
        for (f, want) in cases {
            let e = instance_request("default", "i", "n", &create(f)).unwrap_err();
            assert!(e.to_string().starts_with(want), "{e}");
        }
    }
}
