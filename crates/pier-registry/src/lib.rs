//! Pier's built-in OCI registry.
//!
//! - [`server`]: the OCI Distribution API v1.1 (`/v2/...`) on axum.
//! - [`repo`]: repositories' blob links, manifests, tags and tag history in the state
//!   store; the blobs themselves live in the engine's content-addressed blob store
//!   ([`pier_image::blobs`]), so a layer the engine and the registry both hold is stored
//!   once.
//! - [`upload`]: blob upload sessions (monolithic, streamed, chunked, resumable).
//! - [`mirror`]: pull-through mirroring of an upstream registry, over the registry client
//!   of `pier-registry-client` (the engine's pull and push live there too, with the
//!   manifest parsing both sides share).
//! - [`auth`]: who may pull and push: token auth as Docker's registry does it, basic
//!   credentials, per-repository scopes (hashed passwords: `pier-password`); [`token`]:
//!   signed bearer tokens.
//! - [`gc`]: garbage collection that is safe while pushes run.
//! - [`manage`]: the management view (repositories, tags with platform and labels,
//!   search, history) and server-side config edits.
//! - [`names`]: repository names and tags, checked at the edge.
//! - [`error`]: the spec's error codes.

pub mod auth;
pub mod error;
pub mod gc;
pub mod manage;
pub mod mirror;
pub mod names;
pub mod repo;
pub mod server;
pub mod token;
pub mod upload;

use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use pier_image::ImageStore;
use pier_store::Store;

pub use error::RegistryError;
/// The largest manifest the registry accepts (the client reads no larger ones either).
pub use pier_registry_client::MAX_MANIFEST;

/// The registry of one host.
pub struct Registry {
    pub images: Arc<ImageStore>,
    db: Arc<dyn Store>,
    uploads: upload::Uploads,
    auth: Option<auth::Auth>,
    upstream: Option<mirror::Upstream>,
    /// Blob bytes received by uploads and sent by blob GETs since start.
    pub bytes_in: AtomicU64,
    pub bytes_out: AtomicU64,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry").finish_non_exhaustive()
    }
}

impl Registry {
    /// A registry keeping its blobs in `images`' blob store and its records in the same
    /// state store. Upload sessions live in the image store's scratch space, which is
    /// emptied at start.
    /// `auth`: who may pull and push (open when absent); `tls`: whether it is served
    /// over TLS.
    pub fn new(
        images: Arc<ImageStore>,
        auth: Option<auth::AuthConfig>,
        tls: bool,
    ) -> Result<Self, RegistryError> {
        let db = images.db().clone();
        let uploads = upload::Uploads::new(&images.tmp_dir().join("uploads"))?;
        Ok(Registry {
            images,
            db,
            uploads,
            auth: auth.map(|a| auth::Auth::new(a, tls)).transpose()?,
            upstream: None,
            bytes_in: AtomicU64::new(0),
            bytes_out: AtomicU64::new(0),
        })
    }

    /// Makes this registry a pull-through mirror of `upstream`.
    pub fn with_upstream(mut self, upstream: Option<mirror::Upstream>) -> Self {
        self.upstream = upstream;
        self
    }

    pub fn db(&self) -> &dyn Store {
        self.db.as_ref()
    }

    pub fn stats(&self) -> pier_api::registry::RegistryStats {
        use std::sync::atomic::Ordering::Relaxed;
        pier_api::registry::RegistryStats {
            blob_bytes_received: self.bytes_in.load(Relaxed),
            blob_bytes_sent: self.bytes_out.load(Relaxed),
        }
    }
}
