//! The errors of a registry client: a remote registry that fails, refuses or sends what
//! does not check out, and the local image store that takes what it sends. The variants
//! that a registry server also answers with (digest, manifest, auth) carry the same words
//! as `pier-registry`'s errors, which a pull-through mirror converts them into.

use pier_api::Digest;
use pier_image::ImageError;

/// One failure of a pull, a push or another exchange with a remote registry.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    #[error("the content hashes to {actual}, not {expected}")]
    DigestMismatch { expected: String, actual: Digest },
    #[error("the manifest is invalid: {0}")]
    ManifestInvalid(String),
    #[error("the manifest is {size} bytes, more than the {limit} allowed")]
    ManifestTooLarge { size: u64, limit: u64 },
    /// The registry asks for credentials none were given for (`challenge`: its
    /// `WWW-Authenticate`).
    #[error("authentication required")]
    Unauthorized { challenge: String },
    #[error("access to {0} is denied")]
    Denied(String),
    #[error("the upstream registry failed: {0}")]
    Upstream(String),
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error("cannot {op}: {source}")]
    Io {
        op: String,
        #[source]
        source: std::io::Error,
    },
}

impl RemoteError {
    pub fn io(op: impl Into<String>) -> impl FnOnce(std::io::Error) -> RemoteError {
        let op = op.into();
        move |source| RemoteError::Io { op, source }
    }

    /// The full message with its causes.
    pub fn chain(&self) -> String {
        pier_api::error::chain(self)
    }
}

impl From<crate::manifest::InvalidManifest> for RemoteError {
    fn from(e: crate::manifest::InvalidManifest) -> Self {
        RemoteError::ManifestInvalid(e.0)
    }
}

pub type Result<T> = std::result::Result<T, RemoteError>;
