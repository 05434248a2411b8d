//! Volume and mount types of the native API.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::names::ProjectName;

/// What is mounted into a container.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum MountKind {
    /// A host path.
    Bind,
    /// A named volume (made on first use), or an anonymous one when `source` is absent.
    #[default]
    Volume,
    /// A memory-backed filesystem.
    Tmpfs,
}

/// One mount of a container (`-v`, `--mount`, `--tmpfs`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct MountSpec {
    #[serde(rename = "type")]
    pub kind: MountKind,
    /// Host path (bind) or volume name (volume; absent for an anonymous volume).
    pub source: Option<String>,
    /// Absolute path in the container.
    pub target: String,
    pub read_only: bool,
    /// bind: `propagation` (rprivate, private, rshared, shared, rslave, slave);
    /// tmpfs: `size` (bytes or 64m), `mode` (octal); volume: `nocopy`.
    pub options: BTreeMap<String, String>,
}

/// Body of `POST /v1/volumes` (`pier volume create`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct VolumeCreate {
    /// Generated when absent.
    pub name: Option<String>,
    /// `local` (the default).
    pub driver: Option<String>,
    /// `size=10m` and `inodes=N`: limits the kernel enforces (the volume is then an ext4
    /// filesystem image of its own).
    pub options: BTreeMap<String, String>,
    pub labels: BTreeMap<String, String>,
}

/// A volume as stored and as `pier volume inspect` shows it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct VolumeInspect {
    pub name: String,
    pub project: ProjectName,
    pub driver: String,
    pub created: String,
    /// Where its data is on the host.
    pub mountpoint: String,
    pub labels: BTreeMap<String, String>,
    pub options: BTreeMap<String, String>,
    /// Bytes it may hold, when limited.
    pub size_limit: Option<u64>,
    /// Files and directories it may hold, when limited (ext4 rounds the asked number up).
    pub inode_limit: Option<u64>,
    /// Made for a container's anonymous mount; removed with the container by `rm -v`.
    #[serde(default)]
    pub anonymous: bool,
    /// Containers using it (filled in when inspected).
    #[serde(default)]
    pub used_by: Vec<String>,
    /// Bytes and inodes in use (filled in when inspected).
    #[serde(default)]
    pub usage: Option<VolumeUsage>,
}

/// One of a volume's snapshots (`pier volume snapshots`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SnapshotInfo {
    pub name: String,
    /// When it was taken (RFC 3339).
    pub created: String,
    /// Bytes it takes on the host's disk.
    pub size: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct VolumeUsage {
    pub bytes: u64,
    pub inodes: u64,
}
