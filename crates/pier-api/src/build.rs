//! Types of image builds (`POST /v1/build`).
//!
//! The progress stream is JSON lines of the shapes Docker's `POST /build` sends, so the
//! Docker API layer can pass them through: `{"stream": "Step 1/3 : FROM bb\n"}`, one
//! `{"error": "...", "errorDetail": {"message": "..."}}` on failure, and
//! `{"aux": {"ID": "sha256:..."}}` once the image is built.

use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::names::Digest;

/// Query of `POST /v1/build` (keys may repeat: `t`, `buildarg`). The body is the build
/// context: a tar, plain or gzip/zstd-compressed.
#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct BuildQuery {
    /// A `name[:tag]` for the image; repeat for more.
    pub t: Vec<String>,
    /// The Dockerfile's path in the context (default `Dockerfile`).
    pub dockerfile: Option<String>,
    /// A build argument `KEY=VALUE`; repeat for more.
    pub buildarg: Vec<String>,
    /// Build up to this stage only.
    pub target: Option<String>,
    /// A label `KEY=VALUE` for the image; repeat for more.
    pub label: Vec<String>,
    /// Build every step afresh, using no cached one.
    pub no_cache: Option<bool>,
    /// The network of `RUN` steps: empty or absent for the default network, `none`,
    /// `host`, or a network's name.
    pub network: Option<String>,
}

/// One line of the build progress stream.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct BuildLine {
    /// Output text, as the classic builder prints it (`Step 1/3 : ...`, ` ---> 3f2a...`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<String>,
    /// The build failed: why. Always the last line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(
        default,
        rename = "errorDetail",
        skip_serializing_if = "Option::is_none"
    )]
    pub error_detail: Option<BuildErrorDetail>,
    /// The built image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aux: Option<BuildAux>,
}

/// Details of a build error (Docker's `errorDetail`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct BuildErrorDetail {
    /// The exit code of a failed `RUN`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<i32>,
    pub message: String,
}

/// The image a build made (Docker's `aux`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct BuildAux {
    #[serde(rename = "ID")]
    pub id: Digest,
}

impl BuildLine {
    pub fn stream(text: impl Into<String>) -> Self {
        BuildLine {
            stream: Some(text.into()),
            ..Default::default()
        }
    }

    pub fn error(message: impl Into<String>, code: Option<i32>) -> Self {
        let message = message.into();
        BuildLine {
            error: Some(message.clone()),
            error_detail: Some(BuildErrorDetail { code, message }),
            ..Default::default()
        }
    }

    pub fn aux(id: Digest) -> Self {
        BuildLine {
            aux: Some(BuildAux { id }),
            ..Default::default()
        }
    }

    /// The line as sent: JSON and a newline.
    pub fn to_line(&self) -> String {
        let mut s = serde_json::to_string(self).expect("a build line serializes");
        s.push('\n');
        s
    }
}
