//! Resource types of the native API: what the daemon returns and accepts.
//!
//! Request bodies deny unknown fields, so a typo is an error rather than a silent default.

use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::names::{Digest, ProjectName};
use crate::reference::ImageRef;

/// The daemon's view of itself.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SystemInfo {
    /// Pier's version.
    pub version: String,
    /// The native API version (`v1`).
    pub api_version: String,
    /// The state directory this daemon owns.
    pub root: String,
    /// The schema version of the state store.
    pub store_schema: u32,
    /// How images are unpacked and stacked.
    pub storage_driver: String,
    /// Number of images.
    pub images: u64,
    /// Kernel release of the host.
    pub kernel: String,
    /// Containers of the caller's project, in all and by state.
    #[serde(default)]
    pub containers: u64,
    #[serde(default)]
    pub containers_running: u64,
    #[serde(default)]
    pub containers_paused: u64,
    #[serde(default)]
    pub containers_stopped: u64,
    /// The host's operating system (`PRETTY_NAME` of os-release).
    #[serde(default)]
    pub os: String,
    /// `amd64`, `arm64`, ...
    #[serde(default)]
    pub arch: String,
    #[serde(default)]
    pub hostname: String,
    #[serde(default)]
    pub cpus: u32,
    /// Bytes of memory of the host.
    #[serde(default)]
    pub memory: u64,
    /// 1 (v1 or hybrid hierarchies) or 2 (unified).
    #[serde(default)]
    pub cgroup_version: u8,
    /// How container cgroups are made: `cgroupfs` (Pier writes the hierarchy itself).
    #[serde(default)]
    pub cgroup_driver: String,
    /// The runtimes containers can run with; the first is the default.
    #[serde(default)]
    pub runtimes: Vec<String>,
    /// What runs VMs here (`pier run --vm`), when the daemon can.
    #[serde(default)]
    pub vm: Option<VmFacts>,
    /// Bytes free and in all on the filesystem of the state directory.
    #[serde(default)]
    pub root_free_bytes: u64,
    #[serde(default)]
    pub root_total_bytes: u64,
    /// The project this request runs in (its `X-Pier-Project` header's, `default`
    /// without one): the one its counts, volumes, networks and quotas are of.
    #[serde(default)]
    #[schema(value_type = String)]
    pub project: ProjectName,
}

/// How this host runs VMs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct VmFacts {
    /// The hypervisor's binary (QEMU).
    pub hypervisor: String,
    /// `kvm` (hardware virtualization) or `tcg` (emulation).
    pub accel: String,
    /// The guests' kernel.
    pub kernel: String,
    /// Why VMs cannot run here now, when they cannot (what to install).
    #[serde(default)]
    pub problem: Option<String>,
}

/// One row of `pier images`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ImageSummary {
    /// The image ID: the digest of its config, as Docker computes it.
    pub id: Digest,
    /// The project the image belongs to.
    pub project: ProjectName,
    /// `name:tag` references pointing at this image, in familiar form.
    pub repo_tags: Vec<String>,
    /// Digest of the manifest the image was stored under.
    pub manifest_digest: Digest,
    /// `repository@digest` of each registry repository the image was pulled from or
    /// pushed to.
    #[serde(default)]
    pub repo_digests: Vec<String>,
    /// Creation time from the image config (RFC 3339), when it has one.
    pub created: Option<String>,
    /// Bytes of all layers, uncompressed.
    pub size: u64,
    /// Number of containers using the image.
    pub containers: u64,
}

/// One entry of an image's history.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct HistoryEntry {
    /// The layer this step produced (its diff ID), absent for steps that made none.
    pub layer: Option<Digest>,
    pub created: Option<String>,
    pub created_by: String,
    /// Uncompressed size of the step's layer; 0 for empty steps.
    pub size: u64,
    pub comment: String,
    pub empty_layer: bool,
}

/// One layer of an image as stored.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct LayerInfo {
    /// Digest of the uncompressed tar (the diff ID).
    pub diff_id: Digest,
    /// Digest of the blob as stored (compressed or not).
    pub blob_digest: Digest,
    /// Media type of the stored blob.
    pub media_type: String,
    /// Bytes of the stored blob.
    pub blob_size: u64,
    /// Bytes of the uncompressed tar.
    pub size: u64,
}

/// `pier image inspect`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ImageInspect {
    #[serde(flatten)]
    pub summary: ImageSummary,
    pub architecture: String,
    pub os: String,
    /// The runtime part of the OCI image config (`Env`, `Cmd`, `Entrypoint`, ...).
    #[schema(value_type = Object)]
    pub config: serde_json::Value,
    pub layers: Vec<LayerInfo>,
    pub history: Vec<HistoryEntry>,
    /// For an image a build step made: the image the step ran on (Docker's `Parent`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<Digest>,
}

/// Body of `POST /v1/images/{reference}/tag`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TagRequest {
    /// The new `name[:tag]`.
    pub target: ImageRef,
}

/// Query of `DELETE /v1/images/{reference}`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct RemoveQuery {
    /// Remove even when several tags or containers use the image.
    #[serde(default)]
    pub force: bool,
}

/// What `pier image rm` did.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct RemoveReport {
    /// Tags removed, in familiar form.
    pub untagged: Vec<String>,
    /// Image IDs deleted.
    pub deleted: Vec<Digest>,
}

/// Query of `POST /v1/images/prune`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct PruneQuery {
    /// Remove every image no container uses, not only untagged ones.
    #[serde(default)]
    pub all: bool,
}

/// What `pier image prune` did.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct PruneReport {
    pub deleted: Vec<Digest>,
    /// The tags removed with them, in familiar form (`name:tag`).
    #[serde(default)]
    pub untagged: Vec<String>,
    /// Bytes freed on disk (blobs and unpacked layers).
    pub reclaimed_bytes: u64,
}

/// An image created by a load, an import or a build.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct LoadedImage {
    pub id: Digest,
    /// Tags set by the operation, in familiar form.
    pub repo_tags: Vec<String>,
}

/// What `pier image load` or `import` did.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct LoadReport {
    pub images: Vec<LoadedImage>,
}

/// Query of `POST /v1/images/import`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ImportQuery {
    /// Name to give the image; untagged when absent.
    #[param(value_type = Option<String>)]
    pub name: Option<ImageRef>,
    /// Dockerfile instructions for the image's config, one per line (`--change`): CMD,
    /// ENTRYPOINT, ENV, EXPOSE, HEALTHCHECK, LABEL, ONBUILD, STOPSIGNAL, USER, VOLUME,
    /// WORKDIR.
    pub change: Option<String>,
}

/// Archive formats `pier image save` writes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum ArchiveFormat {
    /// The `docker save` layout (`manifest.json`), readable by `docker load` and `podman load`.
    #[default]
    DockerArchive,
    /// An OCI image layout in a tar (`oci-layout`, `index.json`, `blobs/`).
    OciArchive,
}

/// Query of `GET /v1/images/save`.
#[derive(Debug, Clone, Serialize, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct SaveQuery {
    /// Comma-separated image references or IDs.
    pub names: String,
    #[serde(default)]
    #[param(value_type = Option<ArchiveFormat>)]
    pub format: ArchiveFormat,
}

/// Body of `POST /v1/images/from-host`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FromHostRequest {
    /// Name of the image to make.
    pub name: ImageRef,
    /// Absolute paths of host executables; each is copied with the shared libraries it needs.
    pub binaries: Vec<String>,
}

/// Query of `GET /v1/images`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ImageListQuery {
    /// Also list the intermediate images of builds (untagged images another image was
    /// built on), which are hidden by default as `docker images` hides them.
    #[serde(default)]
    pub all: bool,
}
