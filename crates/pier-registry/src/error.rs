//! The registry's errors and their wire form: the OCI distribution spec's error codes in
//! `{"errors":[{"code":"...","message":"...","detail":...}]}`, each with the status the
//! spec names for it.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use pier_api::Digest;
use pier_image::ImageError;

/// One failure of a registry operation.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("blob {digest} is unknown to repository {repository}")]
    BlobUnknown { repository: String, digest: String },
    #[error("blob upload {id} is unknown (never started, finished or cancelled)")]
    UploadUnknown { id: String },
    #[error("blob upload is invalid: {0}")]
    UploadInvalid(String),
    #[error(
        "chunk starts at byte {got} but the upload holds {expected} bytes; resume from {expected}"
    )]
    RangeInvalid { expected: u64, got: u64 },
    #[error("the content hashes to {actual}, not {expected}")]
    DigestMismatch { expected: String, actual: Digest },
    #[error("{0:?} is not a valid sha256 digest")]
    DigestInvalid(String),
    #[error("manifest {reference} is unknown to repository {repository}")]
    ManifestUnknown {
        repository: String,
        reference: String,
    },
    #[error("the manifest references {digest}, which repository {repository} does not have; push it first")]
    ManifestBlobUnknown { repository: String, digest: String },
    #[error("the manifest is invalid: {0}")]
    ManifestInvalid(String),
    #[error("the manifest is {size} bytes, more than the {limit} allowed")]
    ManifestTooLarge { size: u64, limit: u64 },
    #[error("{name:?} is not a valid repository name: {reason}")]
    NameInvalid { name: String, reason: &'static str },
    #[error("repository {0} is unknown")]
    NameUnknown(String),
    #[error("{0:?} is not a valid tag")]
    TagInvalid(String),
    #[error("{0}")]
    Unsupported(String),
    #[error("authentication required")]
    Unauthorized { challenge: String },
    #[error("access to {0} is denied")]
    Denied(String),
    #[error("the registry's auth file: {0}")]
    AuthConfig(String),
    #[error("the upstream registry failed: {0}")]
    Upstream(String),
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error(transparent)]
    Store(#[from] pier_store::StoreError),
    #[error("cannot {op}: {source}")]
    Io {
        op: String,
        #[source]
        source: std::io::Error,
    },
}

impl RegistryError {
    pub fn io(op: impl Into<String>) -> impl FnOnce(std::io::Error) -> RegistryError {
        let op = op.into();
        move |source| RegistryError::Io { op, source }
    }

    /// The spec's code for this error.
    pub fn code(&self) -> &'static str {
        use RegistryError::*;
        match self {
            BlobUnknown { .. } => "BLOB_UNKNOWN",
            UploadUnknown { .. } => "BLOB_UPLOAD_UNKNOWN",
            UploadInvalid(_) | RangeInvalid { .. } => "BLOB_UPLOAD_INVALID",
            DigestMismatch { .. } | DigestInvalid(_) => "DIGEST_INVALID",
            ManifestUnknown { .. } => "MANIFEST_UNKNOWN",
            ManifestBlobUnknown { .. } => "MANIFEST_BLOB_UNKNOWN",
            ManifestInvalid(_) => "MANIFEST_INVALID",
            ManifestTooLarge { .. } => "SIZE_INVALID",
            NameInvalid { .. } => "NAME_INVALID",
            NameUnknown(_) => "NAME_UNKNOWN",
            TagInvalid(_) => "TAG_INVALID",
            Unsupported(_) => "UNSUPPORTED",
            Unauthorized { .. } => "UNAUTHORIZED",
            Denied(_) => "DENIED",
            AuthConfig(_) | Upstream(_) | Image(_) | Store(_) | Io { .. } => "UNKNOWN",
        }
    }

    pub fn status(&self) -> StatusCode {
        use RegistryError::*;
        match self {
            BlobUnknown { .. } | UploadUnknown { .. } | ManifestUnknown { .. } | NameUnknown(_) => {
                StatusCode::NOT_FOUND
            }
            RangeInvalid { .. } => StatusCode::RANGE_NOT_SATISFIABLE,
            ManifestTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            UploadInvalid(_)
            | DigestMismatch { .. }
            | DigestInvalid(_)
            | ManifestBlobUnknown { .. }
            | ManifestInvalid(_)
            | NameInvalid { .. }
            | TagInvalid(_) => StatusCode::BAD_REQUEST,
            Unsupported(_) => StatusCode::METHOD_NOT_ALLOWED,
            Unauthorized { .. } => StatusCode::UNAUTHORIZED,
            Denied(_) => StatusCode::FORBIDDEN,
            Upstream(_) => StatusCode::BAD_GATEWAY,
            Image(e) => {
                StatusCode::from_u16(e.kind().status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
            }
            AuthConfig(_) | Store(_) | Io { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The full message with its causes.
    pub fn chain(&self) -> String {
        let mut s = self.to_string();
        let mut src = std::error::Error::source(self);
        while let Some(e) = src {
            s.push_str(": ");
            s.push_str(&e.to_string());
            src = e.source();
        }
        s
    }
}

impl IntoResponse for RegistryError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::error!(error = %self.chain(), "registry request failed");
        }
        let body = serde_json::json!({
            "errors": [{ "code": self.code(), "message": self.chain(), "detail": null }]
        });
        let mut resp = (
            status,
            [(header::CONTENT_TYPE, "application/json")],
            body.to_string(),
        )
            .into_response();
        if let RegistryError::Unauthorized { challenge } = &self {
            if let Ok(v) = HeaderValue::from_str(challenge) {
                resp.headers_mut().insert(header::WWW_AUTHENTICATE, v);
            }
        }
        resp
    }
}

pub type Result<T> = std::result::Result<T, RegistryError>;
