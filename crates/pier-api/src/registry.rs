//! Types of the registry's management API (`/v1/registry/...`) and of the engine's
//! `pull` and `push` (`/v1/images/pull`, `/v1/images/push`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::names::Digest;

/// One repository of the built-in registry.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RepositorySummary {
    pub name: String,
    pub tags: u64,
    pub manifests: u64,
    /// Bytes of the blobs its manifests reference, each counted once.
    pub size: u64,
    /// When a manifest was last pushed (RFC 3339).
    pub updated: Option<String>,
}

/// One tag of a registry repository, with what it points at.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RegistryTag {
    pub repository: String,
    pub tag: String,
    pub digest: Digest,
    pub media_type: String,
    /// Bytes of the manifest, its config and layers (for an index: of every child).
    pub size: u64,
    /// Creation time from the image config.
    pub created: Option<String>,
    /// When the tag was last set.
    pub updated: String,
    /// `os/architecture[/variant]` of each image.
    pub platforms: Vec<String>,
    /// Labels from the image config.
    pub labels: BTreeMap<String, String>,
}

/// One change of a tag.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TagHistoryEntry {
    /// The manifest the tag pointed to from then on; absent once deleted.
    pub digest: Option<Digest>,
    /// When (RFC 3339, nanoseconds).
    pub at: String,
    /// `push`, `edit`, `retag` (set to a manifest the repository held) or `delete`.
    pub action: String,
}

/// Query of `GET /v1/registry/search`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct RegistrySearchQuery {
    /// A substring of the repository name.
    pub name: Option<String>,
    /// A label key, or `key=value`.
    pub label: Option<String>,
}

/// Query of `POST /v1/registry/gc`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct RegistryGcQuery {
    /// Blobs uploaded less than this many seconds ago are kept even when no manifest
    /// references them yet (pushes in flight upload blobs before their manifest).
    /// Default 3600.
    pub grace_secs: Option<u64>,
}

/// What a registry garbage collection did.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct RegistryGcReport {
    /// Blob links removed from repositories (blobs no manifest references).
    pub unlinked: u64,
    /// Bytes freed on disk (blobs neither the registry nor an engine image uses).
    pub reclaimed_bytes: u64,
}

/// Body of `POST /v1/registry/edit`: a server-side change of an image's config.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegistryEditRequest {
    /// `repository:tag` in the registry.
    pub reference: String,
    /// `KEY=VALUE` environment variables to set (replacing the same key).
    #[serde(default)]
    pub env: Vec<String>,
    /// `KEY=VALUE` labels to set.
    #[serde(default)]
    pub labels: Vec<String>,
    /// A new command.
    #[serde(default)]
    pub cmd: Option<Vec<String>>,
    /// A new entrypoint.
    #[serde(default)]
    pub entrypoint: Option<Vec<String>>,
    /// Tag the result with this tag instead of moving `reference`'s tag.
    #[serde(default)]
    pub new_tag: Option<String>,
    /// Names of environment variables to remove (before `env` is applied).
    #[serde(default)]
    pub unset_env: Vec<String>,
    /// Label keys to remove (before `labels` is applied).
    #[serde(default)]
    pub unset_labels: Vec<String>,
    /// A new working directory (an absolute path, or empty for none).
    #[serde(default)]
    pub working_dir: Option<String>,
    /// A new user (`name`, `uid`, `uid:gid`..., or empty for the default).
    #[serde(default)]
    pub user: Option<String>,
    /// The ports the image exposes, replacing the old set: `PORT` or `PORT/PROTO`
    /// (`tcp`, `udp`, `sctp`; `tcp` when absent).
    #[serde(default)]
    pub exposed_ports: Option<Vec<String>>,
}

/// One layer of a tag's image, as pushed.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RegistryLayer {
    /// The blob's digest.
    pub digest: Digest,
    pub media_type: String,
    /// Bytes of the blob as stored (compressed or not).
    pub size: u64,
    /// The step that made it, from the image config's history, when it says.
    pub created_by: Option<String>,
}

/// One step of an image's history, from its config.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RegistryImageStep {
    pub created: Option<String>,
    pub created_by: String,
    /// True for a step that made no layer (an `ENV`, a `pier registry edit`...).
    pub empty_layer: bool,
}

/// One image of an index (a multi-platform tag).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RegistryIndexEntry {
    pub digest: Digest,
    pub size: u64,
    /// `os/architecture[/variant]`, when the index says.
    pub platform: Option<String>,
}

/// A tag in depth (`GET /v1/registry/repositories/{repo}/tags/{tag}`): its summary, the
/// image config's runtime part, its layers and its steps. An index has no config or
/// layers of its own; `manifests` lists its images.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RegistryTagInspect {
    #[serde(flatten)]
    pub tag: RegistryTag,
    /// The digest of the image config blob (absent for an index).
    pub config_digest: Option<Digest>,
    /// The runtime part of the image config (`Env`, `Cmd`, `Entrypoint`, `WorkingDir`,
    /// `User`, `ExposedPorts`, `Labels`, ...): an empty object for an index.
    #[schema(value_type = Object)]
    pub config: serde_json::Value,
    /// The layers, base first.
    pub layers: Vec<RegistryLayer>,
    /// The steps that made the image, oldest first.
    pub history: Vec<RegistryImageStep>,
    /// For an index: its images.
    pub manifests: Vec<RegistryIndexEntry>,
}

/// Body of `PUT /v1/registry/repositories/{repo}/tags/{tag}`: point the tag at a
/// manifest the repository holds (e.g. an earlier one from the tag's history).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegistrySetTagRequest {
    pub digest: Digest,
}

/// What an edit made.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RegistryEditReport {
    pub repository: String,
    pub tag: String,
    /// The new manifest.
    pub digest: Digest,
    /// The new config.
    pub config: Digest,
}

/// Blob bytes the registry has moved since it started.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct RegistryStats {
    pub blob_bytes_received: u64,
    pub blob_bytes_sent: u64,
}

/// Credentials for another registry.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegistryAuth {
    pub username: String,
    pub password: String,
}

/// Body of `POST /v1/images/pull`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PullRequest {
    /// `registry/repository[:tag|@digest]`.
    pub reference: String,
    #[serde(default)]
    pub auth: Option<RegistryAuth>,
}

/// Body of `POST /v1/images/push`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PushRequest {
    /// A local image, named `registry/repository:tag`.
    pub reference: String,
    #[serde(default)]
    pub auth: Option<RegistryAuth>,
}

/// One line of the ndjson stream of a pull or push.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct TransferProgress {
    /// The blob this line is about (absent for whole-image lines).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blob: Option<Digest>,
    /// `waiting`, `exists`, `downloading`, `uploading`, `done`, or (last line) `complete`
    /// or `error`.
    pub status: String,
    #[serde(default)]
    pub current: u64,
    #[serde(default)]
    pub total: u64,
    /// On `complete`: the manifest digest; on `error`: the message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}
