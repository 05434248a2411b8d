//! The engine: Pier's domain, with no HTTP in it. Every API server (native, Docker) is a
//! thin translation over it.
//!
//! - [`networks`]: the network control plane (bridges, IPAM, ports, DNS, isolation).
//! - [`instances`]: instances (containers today, VMs next): the service ([`Instances`]:
//!   lifecycle, restart policies, live restore, the instance reconciler), their stored
//!   spec and status, their actors, and the driver seam.
//! - [`system_report`]: `system info|df|prune` over every service.
//! - [`names`]: random IDs and the rule for object names.
//! - [`host`]: the kernel behind traits, with recording fakes for the engine test tier.
//! - [`volumes`]: named and anonymous volumes, their limits and snapshots.
//! - [`container_fs`]: a container's files: diff, export, commit, cp.
//! - [`health`]: health checks of running containers.
//! - [`image_pins`]: the durable pins containers hold on their images.
//! - [`sessions`]: exec sessions, attach and log follow, for every API.
//! - [`build`]: the Dockerfile builder (classic builder semantics).
//! - [`context`]: [`RequestContext`], the project and caller of each request.
//! - [`reconcile`]: the loops that realise the store's desired state, woken by its watch.
//! - [`projects`]: the projects (tenants) every resource belongs to, and their quotas.
//! - [`events`]: the event log the APIs replay (`since`, `until`, filters).
//! - [`filters`]: list filters as Docker's API sends them, and their matching rules.
//! - [`listing`]: filtered container listings, for every API.
//! - [`images`]: the image operations (pull, push, tag, remove, prune, load, import).
//! - [`images_query`]: image listings under Docker's filters, layer directories.
//! - [`networks_query`]: network listings and prune decisions the APIs share.
//! - [`volumes_query`]: volume listings, make-if-absent, usage and prune the APIs share.
//! - [`views`]: what the APIs show of a container beyond its record.
//! - [`system`]: the host's facts, disk usage and interface counters, for every API.
//! - [`error`]: [`EngineError`], which each API maps to its wire protocol once.
//! - [`steps`]: the step runner of multi-step work with an undo per step.

pub mod build;
pub mod container_fs;
pub mod context;
pub mod error;
pub mod events;
pub mod filters;
pub mod health;
pub mod host;
pub mod image_pins;
pub mod images;
pub mod images_query;
pub mod instances;
pub mod listing;
pub mod metrics;
pub mod names;
pub mod networks;
pub mod networks_query;
pub mod projects;
pub mod reconcile;
mod registry_events;
pub mod sessions;
pub mod steps;
pub mod system;
pub mod system_report;
pub mod views;
pub mod volumes;
pub mod volumes_query;

use std::path::PathBuf;
use std::sync::Arc;

pub use context::{Caller, RequestContext};
pub use error::{EngineError, EngineResult};
use pier_image::ImageStore;
use pier_net::names::HostNames;
use pier_store::RedbStore;

/// An event of the engine (`pier events`, Docker's `/events`), in the project it
/// happened in: each API shows a client its own project's.
#[derive(Debug, Clone)]
pub struct EngineEvent {
    pub project: pier_api::ProjectName,
    pub event: pier_api::containers::Event,
}

/// How often the networks are realised again without a change (see
/// [`networks::NetworkReconciler`]).
pub const NETWORK_RECONCILE_PERIOD: std::time::Duration = std::time::Duration::from_secs(30);

/// How often the volumes' dead creates are looked for without a change (see
/// [`volumes::reconcile::VolumeReconciler`]).
pub const VOLUME_RECONCILE_PERIOD: std::time::Duration = std::time::Duration::from_secs(30);

/// Where the daemon keeps its state unless told otherwise.
pub const DEFAULT_ROOT: &str = "/var/lib/pier";

/// The engine's services, shared by every API server.
pub struct Engine {
    pub root: PathBuf,
    pub images: Arc<ImageStore>,
    pub registry: Arc<pier_registry::Registry>,
    /// How `pull` and `push` reach registries (insecure hosts, mirrors).
    pub registry_client: pier_registry_client::ClientConfig,
    pub instances: Arc<instances::Instances>,
    pub networks: Arc<networks::Networks>,
    pub volumes: Arc<volumes::Volumes>,
    pub projects: Arc<projects::Projects>,
    /// The state store every service shares.
    pub store: Arc<dyn pier_store::Store>,
    pub store_schema: u32,
    /// The background loops (reconcilers, the lease tick); they stop with the engine.
    loops: std::sync::Mutex<reconcile::Loops>,
    /// The last hour of metrics samples ([`metrics::keep_history`] fills it).
    pub history: Arc<metrics::History>,
}

/// What the engine is opened with.
pub struct EngineConfig {
    /// The state directory, canonical.
    pub root: PathBuf,
    /// The names of this engine's host objects (bridges, nftables table, cgroup parent).
    pub host_names: HostNames,
    /// The host's cgroup hierarchies, detected (and checked) by the caller.
    pub cgroups: pier_runtime::cgroups::Host,
    /// The registry's users and policy.
    pub registry_auth: Option<pier_registry::auth::AuthConfig>,
    /// Whether the registry is served over TLS (its token realm says https).
    pub registry_tls: bool,
    /// Make the registry a pull-through mirror.
    pub registry_upstream: Option<pier_registry::mirror::Upstream>,
    pub registry_client: pier_registry_client::ClientConfig,
    /// Where the VMs' assets are, and their accelerator.
    pub vm: instances::vm::VmSettings,
    /// How often the metrics history takes a sample ([`metrics::HISTORY_PERIOD`]).
    pub history_period: std::time::Duration,
}

/// Why the engine could not open or start.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("cannot open the state store")]
    Store(#[from] pier_store::StoreError),
    #[error("cannot open the image store")]
    Image(#[from] pier_image::ImageError),
    #[error("registry: {}", .0.chain())]
    Registry(#[from] pier_registry::RegistryError),
    #[error("{part}: {}", source.message())]
    Part {
        part: &'static str,
        source: EngineError,
    },
}

fn part(part: &'static str) -> impl FnOnce(EngineError) -> OpenError {
    move |source| OpenError::Part { part, source }
}

impl Engine {
    /// Opens the engine's state under `config.root`, repairing what a crash left
    /// (interrupted builds, half-made volumes, an older volume layout). Blocking.
    pub fn open(config: EngineConfig) -> Result<Engine, OpenError> {
        let root = config.root;
        let history_period = config.history_period;
        let store = Arc::new(RedbStore::open(&root.join("state.redb"))?);
        // What interrupted builds left (mounts, work directories).
        build::cleanup(&root);
        let store_schema = store.schema_version()?;
        let images = Arc::new(ImageStore::open(&root.join("images"), store.clone())?);
        // Instances an older Pier made pin their images too.
        image_pins::reconcile(store.as_ref(), &images).map_err(part("image pins"))?;
        let projects = Arc::new(projects::Projects::new(store.clone()).map_err(part("projects"))?);
        let net_host = host::net::RealNetHost::new()
            .map_err(|e| part("networks")(EngineError::Internal(e.chain())))?;
        let networks = Arc::new(
            networks::Networks::new(
                &root,
                config.host_names.clone(),
                store.clone(),
                Arc::new(net_host),
                Arc::new(host::net::NftFirewall::new(config.host_names.clone())),
            )
            .map_err(part("networks"))?,
        );
        let volumes = Arc::new(
            volumes::Volumes::new(
                &root,
                store.clone(),
                projects.clone(),
                Arc::new(host::storage::HostStorage),
                Arc::new(host::storage::HostStorage),
            )
            .map_err(part("volumes"))?,
        );
        volumes.reconcile().map_err(part("volumes"))?;
        let registry = Arc::new(
            pier_registry::Registry::new(images.clone(), config.registry_auth, config.registry_tls)
                .map(|r| r.with_upstream(config.registry_upstream))?,
        );
        let instances = instances::Instances::new(
            &root,
            store.clone(),
            instances::Peers {
                images: images.clone(),
                networks: networks.clone(),
                volumes: volumes.clone(),
                projects: projects.clone(),
            },
            config.cgroups,
            config.host_names.cgroup_parent(),
            config.vm,
        )
        .map_err(|e| part("containers")(EngineError::host("create", root.join("containers"), e)))?;
        Ok(Engine {
            root,
            images,
            registry,
            registry_client: config.registry_client,
            instances,
            networks,
            volumes,
            projects,
            store,
            store_schema,
            loops: Default::default(),
            history: Arc::new(metrics::History::new(history_period)),
        })
    }

    /// Brings the host in line with the state: re-adopts or restarts the containers,
    /// removes what interrupted builds left, sets up every project's networks, and starts
    /// the health checks.
    pub async fn start(&self) -> Result<(), OpenError> {
        // The reconcilers' watches replay every change from here on: what happens between
        // the passes below (and the volumes' at open) and their loops' start wakes them.
        let from = self.store.revision().map_err(OpenError::Store)? + 1;
        self.instances.restore().await.map_err(part("containers"))?;
        // No build survives a restart: the containers of their RUN steps go.
        build::remove_orphans(&self.instances).await;
        for project in self.projects.list().map_err(part("projects"))? {
            self.networks
                .reconcile(&project)
                .await
                .map_err(part("networks"))?;
        }
        health::spawn(self.instances.clone());
        let mut loops = self.loops.lock().unwrap_or_else(|e| e.into_inner());
        loops.spawn_lease_tick(self.store.clone(), reconcile::LEASE_TICK);
        for task in registry_events::spawn(self.store.clone(), from, self.instances.events.clone())
        {
            loops.keep(task);
        }
        loops.spawn_from(
            self.store.clone(),
            Arc::new(networks::NetworkReconciler {
                networks: self.networks.clone(),
                period: NETWORK_RECONCILE_PERIOD,
            }),
            from,
        );
        loops.spawn_from(
            self.store.clone(),
            Arc::new(volumes::reconcile::VolumeReconciler {
                volumes: self.volumes.clone(),
                period: VOLUME_RECONCILE_PERIOD,
            }),
            from,
        );
        loops.spawn(
            self.store.clone(),
            Arc::new(instances::InstanceReconciler {
                instances: self.instances.clone(),
                period: instances::INSTANCE_RECONCILE_PERIOD,
            }),
        );
        Ok(())
    }

    /// What the engine leaves when the daemon stops (containers outlive it; their cgroup
    /// parent goes when none is left).
    pub fn shutdown(&self) {
        self.instances.remove_cgroup_parent();
    }
}
