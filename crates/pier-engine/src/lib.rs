//! The engine: Pier's domain, with no HTTP in it. Every API server (native, Docker) is a
//! thin translation over it.
//!
//! - [`containers`]: container lifecycle, restart policies, live restore.
//! - [`networks`]: the network control plane (bridges, IPAM, ports, DNS, isolation).
//! - [`volumes`]: named and anonymous volumes, their limits and snapshots.
//! - [`container_fs`]: a container's files: diff, export, commit, cp.
//! - [`health`]: health checks of running containers.
//! - [`sessions`]: exec sessions, attach and log follow, for every API.
//! - [`build`]: the Dockerfile builder (classic builder semantics).
//! - [`error`]: [`EngineError`], which each API maps to its wire protocol once.

pub mod build;
pub mod container_fs;
pub mod containers;
pub mod error;
pub mod health;
pub mod networks;
pub mod sessions;
pub mod volumes;

use std::path::PathBuf;
use std::sync::Arc;

pub use error::{EngineError, EngineResult};
use pier_image::ImageStore;

/// Where the daemon keeps its state unless told otherwise.
pub const DEFAULT_ROOT: &str = "/var/lib/pier";

/// The engine's services, shared by every API server.
pub struct Engine {
    pub root: PathBuf,
    pub images: Arc<ImageStore>,
    pub registry: Arc<pier_registry::Registry>,
    /// How `pull` and `push` reach registries (insecure hosts, mirrors).
    pub registry_client: pier_registry::client::ClientConfig,
    pub containers: Arc<containers::Containers>,
    pub store_schema: u32,
}
