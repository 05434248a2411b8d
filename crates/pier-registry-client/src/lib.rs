//! The engine's side of OCI distribution: a client of any registry (Pier's own
//! included) and the engine's `pull` and `push` over it. The registry server
//! (`pier-registry`) is a separate crate; it uses this one for its pull-through mirror and
//! shares the wire vocabulary kept here.
//!
//! - [`remote`]: one registry host over HTTP/1.1 and TLS, with the token handshake.
//! - [`transfer`]: pull into and push from the engine's image store.
//! - [`manifest`]: manifests and indexes (OCI and Docker schema 2) and what they reference.
//! - [`login`]: checking credentials against a registry.
//! - [`b64`]: base64 of basic credentials and Docker's `X-Registry-Auth`.
//! - [`error`]: what can fail, with the distribution spec's meaning kept.

pub mod b64;
pub mod error;
pub mod login;
pub mod manifest;
pub mod remote;
pub mod transfer;

pub use error::RemoteError;
pub use remote::{ClientConfig, Credentials, Remote};

/// The largest manifest read or accepted (the spec asks registries to take at least 4 MiB).
pub const MAX_MANIFEST: u64 = 4 << 20;
