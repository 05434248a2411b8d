//! The registry's errors and their wire form: the OCI distribution spec's error codes in
//! `{"errors":[{"code":"...","message":"...","detail":...}]}`, each with the status the
//! spec names for it.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use pier_api::Digest;
use pier_image::ImageError;
use pier_registry_client::manifest::InvalidManifest;
use pier_registry_client::RemoteError;

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
        pier_api::error::chain(self)
    }
}

/// What a remote registry (the mirror's upstream) did wrong, in the words of the same
/// failure here.
impl From<RemoteError> for RegistryError {
    fn from(e: RemoteError) -> Self {
        match e {
            RemoteError::DigestMismatch { expected, actual } => {
                RegistryError::DigestMismatch { expected, actual }
            }
            RemoteError::ManifestInvalid(m) => RegistryError::ManifestInvalid(m),
            RemoteError::ManifestTooLarge { size, limit } => {
                RegistryError::ManifestTooLarge { size, limit }
            }
            RemoteError::Unauthorized { challenge } => RegistryError::Unauthorized { challenge },
            RemoteError::Denied(m) => RegistryError::Denied(m),
            RemoteError::Upstream(m) => RegistryError::Upstream(m),
            RemoteError::Image(e) => RegistryError::Image(e),
            RemoteError::Io { op, source } => RegistryError::Io { op, source },
        }
    }
}

impl From<InvalidManifest> for RegistryError {
    fn from(e: InvalidManifest) -> Self {
        RegistryError::ManifestInvalid(e.0)
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A mirror passes on what its upstream did wrong with the spec's code, status and
    /// words, as it did when the client's errors were this type.
    #[test]
    fn upstream_failures_keep_their_code_status_and_message() {
        let d: Digest = "sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
            .parse()
            .unwrap();
        let cases: Vec<(RemoteError, &str, u16, String)> = vec![
            (
                RemoteError::DigestMismatch {
                    expected: "sha256:00".into(),
                    actual: d.clone(),
                },
                "DIGEST_INVALID",
                400,
                format!("the content hashes to {d}, not sha256:00"),
            ),
            (
                RemoteError::ManifestInvalid("no config".into()),
                "MANIFEST_INVALID",
                400,
                "the manifest is invalid: no config".into(),
            ),
            (
                RemoteError::ManifestTooLarge { size: 9, limit: 8 },
                "SIZE_INVALID",
                413,
                "the manifest is 9 bytes, more than the 8 allowed".into(),
            ),
            (
                RemoteError::Unauthorized {
                    challenge: "Bearer realm=\"x\"".into(),
                },
                "UNAUTHORIZED",
                401,
                "authentication required".into(),
            ),
            (
                RemoteError::Denied("up:5000".into()),
                "DENIED",
                403,
                "access to up:5000 is denied".into(),
            ),
            (
                RemoteError::Upstream("gone".into()),
                "UNKNOWN",
                502,
                "the upstream registry failed: gone".into(),
            ),
            (
                RemoteError::Image(ImageError::MissingBlob { digest: d.clone() }),
                "UNKNOWN",
                500,
                format!(
                    "blob {d} is missing from the image store; remove the image and load it again"
                ),
            ),
            (
                RemoteError::io("write a blob")(std::io::Error::other("EIO")),
                "UNKNOWN",
                500,
                "cannot write a blob: EIO: EIO".into(),
            ),
        ];
        for (remote, code, status, message) in cases {
            let e = RegistryError::from(remote);
            assert_eq!(
                (e.code(), e.status().as_u16(), e.chain()),
                (code, status, message)
            );
        }
        let e = RegistryError::from(InvalidManifest("bad".into()));
        assert_eq!(e.code(), "MANIFEST_INVALID");
        assert_eq!(e.chain(), "the manifest is invalid: bad");
        let resp = RegistryError::from(RemoteError::Unauthorized {
            challenge: "Bearer realm=\"x\"".into(),
        })
        .into_response();
        assert_eq!(
            resp.headers()[header::WWW_AUTHENTICATE],
            "Bearer realm=\"x\""
        );
    }
}
