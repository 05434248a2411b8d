//! The engine: Pier's domain, with no HTTP in it. Every API server (native, Docker) is a
//! thin translation over it.
//!
//! - [`containers`]: container lifecycle, restart policies, live restore.
//! - [`networks`]: the network control plane (bridges, IPAM, ports, DNS, isolation).
//! - [`volumes`]: named and anonymous volumes, their limits and snapshots.
//! - [`container_fs`]: a container's files: diff, export, commit, cp.
//! - [`health`]: health checks of running containers.
//! - [`build`]: the Dockerfile builder (classic builder semantics).
//! - [`context`]: [`RequestContext`], the project and caller of each request.
//! - [`projects`]: the projects (tenants) every resource belongs to, and their quotas.
//! - [`error`]: [`EngineError`], which each API maps to its wire protocol once.

pub mod build;
pub mod container_fs;
pub mod containers;
pub mod context;
pub mod error;
pub mod health;
pub mod networks;
pub mod projects;
pub mod volumes;

use std::path::PathBuf;
use std::sync::Arc;

pub use context::{Caller, RequestContext};
pub use error::{EngineError, EngineResult};
use pier_image::ImageStore;

/// An event of the engine (`pier events`, Docker's `/events`), in the project it
/// happened in: each API shows a client its own project's.
#[derive(Debug, Clone)]
pub struct EngineEvent {
    pub project: pier_api::ProjectName,
    pub event: pier_api::containers::Event,
}

/// Where the daemon keeps its state unless told otherwise.
pub const DEFAULT_ROOT: &str = "/var/lib/pier";

/// The engine's services, shared by every API server.
pub struct Engine {
    pub root: PathBuf,
    pub images: Arc<ImageStore>,
    pub registry: Arc<pier_registry::Registry>,
    /// How `pull` and `push` reach registries (insecure hosts, mirrors).
    pub registry_client: pier_registry_client::ClientConfig,
    pub containers: Arc<containers::Containers>,
    pub projects: Arc<projects::Projects>,
    pub store_schema: u32,
}
