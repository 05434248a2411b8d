//! The system endpoints' vocabulary: `pier version` (`/v1/version`), `pier system df`
//! (`/v1/system/df`), `pier system prune` (`/v1/system/prune`), `pier login`
//! (`/v1/system/login`) and the event query (`/v1/events?since=&until=&filters=`).

use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::types::PruneReport;

/// What `GET /v1/version` answers: the daemon's build and the host it runs on.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct VersionInfo {
    /// Pier's version.
    pub version: String,
    /// The native API version (`v1`).
    pub api_version: String,
    /// The newest Docker Engine API version the Docker socket speaks.
    pub docker_api_version: String,
    /// The oldest Docker Engine API version it accepts.
    pub docker_min_api_version: String,
    /// The commit the daemon was built from, when the build knew it.
    pub git_commit: Option<String>,
    /// `linux`.
    pub os: String,
    /// `amd64`, `arm64`, ... (Go's names, as Docker prints them).
    pub arch: String,
    /// The kernel's release.
    pub kernel: String,
}

/// One image of `pier system df -v`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DfImage {
    pub id: String,
    pub repo_tags: Vec<String>,
    pub created: Option<String>,
    /// Bytes of its layers, uncompressed.
    pub size: u64,
    /// Bytes of its layers another image has too (on disk once).
    #[serde(default)]
    pub shared_size: u64,
    /// Containers created from it.
    pub containers: u64,
}

/// One container of `pier system df -v`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DfContainer {
    pub id: String,
    pub name: String,
    pub image: String,
    pub command: String,
    pub created: String,
    /// `running`, `exited`, ...
    pub state: String,
    /// Bytes its writable layer holds.
    pub size_rw: u64,
    /// Volumes it mounts.
    pub volumes: u64,
}

/// One volume of `pier system df -v`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DfVolume {
    pub name: String,
    /// Containers that mount it.
    pub links: u64,
    /// Bytes it holds.
    pub size: u64,
}

/// The build cache of `pier system df`: the intermediate images of builds.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct DfBuildCache {
    pub count: u64,
    pub size: u64,
}

/// What `GET /v1/system/df` answers: the project's disk usage by kind.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SystemDf {
    /// Bytes of the images' layers on disk: a layer images share counts once.
    #[serde(default)]
    pub layers_size: u64,
    pub images: Vec<DfImage>,
    pub containers: Vec<DfContainer>,
    pub volumes: Vec<DfVolume>,
    pub build_cache: DfBuildCache,
}

/// Query of `POST /v1/system/prune`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[serde(deny_unknown_fields, default)]
pub struct SystemPruneQuery {
    /// Every image no container uses, not only dangling ones.
    pub all: bool,
    /// Anonymous volumes no container uses too.
    pub volumes: bool,
}

/// What `POST /v1/system/prune` removed.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SystemPruneReport {
    /// IDs of the removed containers.
    pub containers: Vec<String>,
    /// Names of the removed networks.
    pub networks: Vec<String>,
    /// Names of the removed volumes.
    pub volumes: Vec<String>,
    pub images: PruneReport,
    pub build_cache: PruneReport,
    /// Bytes freed on disk in all.
    pub reclaimed_bytes: u64,
}

/// Body of `POST /v1/system/login`: credentials to check against a registry.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    /// `host[:port]`; empty for Docker Hub.
    pub server: String,
    pub username: String,
    pub password: String,
}

/// What `POST /v1/system/login` answers when the registry took the credentials.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct LoginReport {
    /// The registry host the credentials are for (the key to store them under).
    pub host: String,
}

/// Query of `GET /v1/events`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[serde(deny_unknown_fields, default)]
pub struct EventsQuery {
    /// Replay the kept events from this time: Unix seconds or RFC 3339.
    pub since: Option<String>,
    /// End the stream at this time: Unix seconds or RFC 3339.
    pub until: Option<String>,
    /// Docker's filters as JSON: `{"type":["container"],"event":["start"]}`; keys
    /// `type`, `event`, `container`, `image`, `network`, `volume`, `label`.
    pub filters: Option<String>,
}

/// Query of `GET /v1/metrics/history`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsHistoryQuery {
    /// Also give this instance's use in each sample (name or ID, in the request's
    /// project).
    pub instance: Option<String>,
    /// Only the samples after this time (Unix seconds).
    pub since: Option<f64>,
}

/// What an instance used, as of one sample (totals since it started, and gauges).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct InstanceUsageSample {
    pub cpu_seconds: f64,
    pub memory_bytes: u64,
    pub network_receive_bytes: u64,
    pub network_transmit_bytes: u64,
    pub io_read_bytes: u64,
    pub io_write_bytes: u64,
}

/// One sample of the daemon's recent history.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct MetricsSample {
    /// When it was taken (Unix seconds).
    pub time: f64,
    pub host_memory_available_bytes: u64,
    pub host_disk_free_bytes: u64,
    /// Seconds the host's CPUs have spent busy since boot, all CPUs together (a counter:
    /// the difference between two samples over their interval is the CPUs in use).
    #[serde(default)]
    pub host_cpu_seconds: f64,
    /// Bytes the host's outward interfaces (not loopback, not the daemon's bridges and
    /// veths) received since boot (a counter).
    #[serde(default)]
    pub host_network_receive_bytes: u64,
    /// Bytes they sent since boot (a counter).
    #[serde(default)]
    pub host_network_transmit_bytes: u64,
    /// Instances running (or paused) then.
    pub instances_running: u64,
    /// The asked instance's use, when it ran then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<InstanceUsageSample>,
}

/// The daemon's recent metrics (`GET /v1/metrics/history`): what its graphs draw without
/// a Prometheus, oldest first.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct MetricsHistory {
    /// Seconds between samples.
    pub period_seconds: f64,
    /// The host's memory, for the samples' available memory.
    pub host_memory_bytes: u64,
    pub host_disk_bytes: u64,
    pub samples: Vec<MetricsSample>,
}

/// A one-time link into the web dashboard (`POST /v1/dashboard/links`, `pier dashboard url`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct DashboardLink {
    /// `https://ADDR/login?token=...`: opens a dashboard session once.
    pub url: String,
    /// How long the link works, unused.
    pub expires_in_seconds: u64,
}
