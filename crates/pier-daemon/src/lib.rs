//! The Pier daemon: starts the engine ([`pier_engine`]) and serves its APIs.
//!
//! - [`server`]: startup, the state-directory lock, the unix socket, shutdown.
//! - [`api`]: the native REST/JSON API (`/v1/...`) over the engine, and its OpenAPI
//!   document.
//! - [`api_registry`]: the registry's management API, and the engine's pull and push.
//! - [`cluster`]: the pool: `pier cluster init/join`, `pier host ...`, the cluster
//!   listener, the heartbeat and the etcd member a pool's host runs.
//! - [`dashboard`]: the web dashboard over HTTPS, an API client of the native API.
//! - [`docker`]: the Docker Engine API over the same engine, on a socket of its own.
//! - [`http`]: serving the sockets: header timeouts, the connection cap, body limits.
//! - [`error`]: the one mapping from subsystem errors to HTTP responses.
//! - [`stream`]: bridges between HTTP bodies and the blocking image code.

// Docker's JSON shapes are large `json!` literals.
#![recursion_limit = "256"]

pub mod api;
pub mod api_build;
pub mod api_containers;
pub mod api_networks;
pub mod api_registry;
pub mod api_system;
pub mod api_terminal;
pub mod api_volumes;
pub mod cluster;
pub mod dashboard;
pub mod docker;
pub mod error;
pub mod http;
pub mod metrics;
pub mod requests;
pub mod server;
pub mod stream;

pub use pier_engine::instances::vm::VmSettings;
pub use server::{run, DaemonConfig};
