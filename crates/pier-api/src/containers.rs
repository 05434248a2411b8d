//! Container types of the native API.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::names::{Digest, ProjectName};

/// A resource limit (`--ulimit nofile=1024:2048`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Ulimit {
    /// `nofile`, `nproc`, `core`, ...
    pub name: String,
    pub soft: u64,
    pub hard: u64,
}

/// When the engine restarts a container that exited.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case", tag = "name")]
pub enum RestartPolicy {
    #[default]
    No,
    /// After a non-zero exit, up to `max_retries` times (0: no limit).
    OnFailure {
        #[serde(default)]
        max_retries: u32,
    },
    Always,
    UnlessStopped,
}

/// Body of `POST /v1/containers`: what `pier create` and `pier run` ask for.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct ContainerCreate {
    /// Image reference or ID.
    pub image: String,
    pub name: Option<String>,
    /// Replaces the image's Cmd.
    pub cmd: Option<Vec<String>>,
    /// Replaces the image's Entrypoint (an empty list clears it).
    pub entrypoint: Option<Vec<String>>,
    /// `KEY=VALUE`, added to the image's environment.
    pub env: Vec<String>,
    pub workdir: Option<String>,
    /// `user`, `uid`, `user:group` or `uid:gid`.
    pub user: Option<String>,
    pub hostname: Option<String>,
    /// `bridge` (the default), `none`, `host`, a network's name or ID, or
    /// `container:NAME` to share another container's network namespace.
    pub network: Option<String>,
    /// `--ip`: a static address on the first network.
    pub ip: Option<String>,
    /// `--mac-address` on the first network.
    pub mac_address: Option<String>,
    /// `--network-alias`: more names on the first network (user networks only).
    pub network_aliases: Vec<String>,
    /// `-p [hostip:][hostport:]containerport[/tcp|udp]`, port ranges allowed.
    pub publish: Vec<String>,
    /// `-P`: publish every port the image exposes on a free host port.
    pub publish_all: bool,
    /// `--dns`: name servers written to the container's /etc/resolv.conf.
    pub dns: Vec<String>,
    pub dns_search: Vec<String>,
    pub dns_options: Vec<String>,
    /// `--add-host name:ip`, added to the container's /etc/hosts.
    pub extra_hosts: Vec<String>,
    /// `--network-opt rate=10mbit` (both ways), `ingress-rate=`, `egress-rate=`.
    pub network_opts: BTreeMap<String, String>,
    /// Volumes, bind mounts and tmpfs mounts.
    pub mounts: Vec<crate::volumes::MountSpec>,
    /// `--storage-opt size=1g`: a limit on the container's writable layer.
    pub storage_opts: BTreeMap<String, String>,
    pub read_only: bool,
    pub privileged: bool,
    pub cap_add: Vec<String>,
    pub cap_drop: Vec<String>,
    /// `seccomp=unconfined`, `no-new-privileges`, ...
    pub security_opt: Vec<String>,
    /// Bytes.
    pub memory: Option<i64>,
    /// Memory plus swap, bytes; -1 for unlimited swap.
    pub memory_swap: Option<i64>,
    /// CPUs, e.g. 1.5.
    pub cpus: Option<f64>,
    pub cpu_shares: Option<u64>,
    pub cpuset_cpus: Option<String>,
    pub pids_limit: Option<i64>,
    pub blkio_weight: Option<u16>,
    pub ulimits: Vec<Ulimit>,
    /// Remove the container when it exits (`--rm`).
    pub auto_remove: bool,
    /// Run a minimal init as PID 1 that forwards signals and reaps zombies.
    pub init: bool,
    /// `pier` (default) or `runc`, to run the same bundle under Debian's runc.
    pub runtime: Option<String>,
    /// Give the container a terminal (`-t`).
    pub tty: bool,
    /// Keep stdin open for attached clients (`-i`).
    pub interactive: bool,
    pub restart_policy: RestartPolicy,
    pub labels: BTreeMap<String, String>,
    /// Log options as Docker's json-file driver takes them: `max-size` (bytes, default
    /// 10 MiB) and `max-file` (files kept, rotated ones included, default 3).
    pub log_opts: BTreeMap<String, String>,
}

/// Where a container is in its life.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ContainerStatus {
    #[default]
    Created,
    Running,
    Paused,
    Restarting,
    Exited,
    Removing,
}

impl ContainerStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ContainerStatus::Created => "created",
            ContainerStatus::Running => "running",
            ContainerStatus::Paused => "paused",
            ContainerStatus::Restarting => "restarting",
            ContainerStatus::Exited => "exited",
            ContainerStatus::Removing => "removing",
        }
    }
}

/// A container's state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ContainerState {
    pub status: ContainerStatus,
    /// Host pid of the container's init while it runs.
    pub pid: Option<i32>,
    /// Pid of its monitor.
    pub monitor_pid: Option<i32>,
    pub exit_code: Option<i32>,
    /// Why it failed to start or stopped unexpectedly.
    pub error: Option<String>,
    pub oom_killed: bool,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub restart_count: u32,
    /// Stopped by a user (`stop`, `kill`): restart policies leave it alone.
    pub stopped_by_user: bool,
}

/// A container as stored and as `pier inspect` shows it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ContainerInspect {
    pub id: String,
    pub name: String,
    pub project: ProjectName,
    /// The reference the container was created from.
    pub image: String,
    pub image_id: Digest,
    pub created: String,
    /// The command run: entrypoint and cmd joined.
    pub command: Vec<String>,
    pub config: ContainerCreate,
    pub state: ContainerState,
    pub log_path: String,
    /// Networks the container is on, by network name.
    #[serde(default)]
    pub networks: BTreeMap<String, crate::networks::Endpoint>,
    /// Ports published while it runs.
    #[serde(default)]
    pub ports: Vec<crate::networks::PortBinding>,
    /// Its mounts as resolved at create: anonymous volumes named, the image's VOLUMEs
    /// added, bind sources absolute.
    #[serde(default)]
    pub mounts: Vec<crate::volumes::MountSpec>,
}

/// One row of `pier ps`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ContainerSummary {
    pub id: String,
    pub name: String,
    pub image: String,
    pub command: String,
    pub created: String,
    pub state: ContainerStatus,
    /// `Up 3 minutes`, `Exited (0) 2 seconds ago`, ...
    pub status: String,
    /// Published ports while it runs.
    #[serde(default)]
    pub ports: Vec<crate::networks::PortBinding>,
}

/// Query of `GET /v1/containers`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[serde(deny_unknown_fields, default)]
pub struct ListQuery {
    /// Include containers that are not running.
    pub all: bool,
    /// Filters as `key=value`, comma-separated: `status=exited`, `name=web`, `id=abc`, `label=k=v`.
    pub filter: Option<String>,
}

/// Query of `DELETE /v1/containers/{id}`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[serde(deny_unknown_fields, default)]
pub struct ContainerRemoveQuery {
    /// Kill a running container first.
    pub force: bool,
    /// Remove its anonymous volumes too.
    pub volumes: bool,
}

/// Query of `POST /v1/containers/{id}/stop` and `restart`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[serde(deny_unknown_fields, default)]
pub struct StopQuery {
    /// Seconds to wait before SIGKILL (default 10).
    pub t: Option<u64>,
    /// Signal to send first (default SIGTERM).
    pub signal: Option<String>,
}

/// Query of `POST /v1/containers/{id}/kill`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[serde(deny_unknown_fields, default)]
pub struct KillQuery {
    /// Signal name or number (default SIGKILL).
    pub signal: Option<String>,
}

/// Query of `GET /v1/containers/{id}/logs`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[serde(deny_unknown_fields, default)]
pub struct LogsQuery {
    /// Keep streaming until the container stops.
    pub follow: bool,
    /// Only the last N lines.
    pub tail: Option<usize>,
    /// Only lines at or after this time (RFC 3339 or Unix seconds).
    pub since: Option<String>,
    /// With `follow`: stream until the container's next exit, even if it has not started
    /// yet (how `pier run` attaches before starting).
    pub attach: bool,
}

/// Answer of `POST /v1/containers/{id}/wait`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct WaitResponse {
    pub exit_code: i32,
    pub error: Option<String>,
}

/// Answer of `POST /v1/containers`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Created {
    pub id: String,
    pub name: String,
}

/// Body of `POST /v1/containers/{id}/exec`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct ExecCreate {
    pub cmd: Vec<String>,
    /// `KEY=VALUE`, added to the container's environment.
    pub env: Vec<String>,
    /// `user`, `uid`, `user:group` or `uid:gid`; the container's user by default.
    pub user: Option<String>,
    pub workdir: Option<String>,
    /// Start it and return at once.
    pub detach: bool,
    /// Give the command a terminal (`-t`); the request is then upgraded to a stream.
    pub tty: bool,
    /// Pass the client's input to the command (`-i`); the request is then upgraded.
    pub interactive: bool,
}

/// The state of an attached exec session (`GET /v1/exec/{id}`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct ExecInspect {
    pub id: String,
    pub running: bool,
    pub exit_code: Option<i32>,
}

/// One line of the answer of `exec`: output, then finally the exit code.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct ExecOutput {
    /// `stdout` or `stderr`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stream: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<String>,
    /// Present on the last line.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
}

/// One reading of a container's resource usage (`pier stats`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct ContainerStats {
    pub id: String,
    pub name: String,
    /// When it was read (RFC 3339 with nanoseconds).
    pub read: String,
    /// CPU time the container used, in nanoseconds.
    pub cpu_usage_ns: u64,
    /// CPU time the whole host used, in nanoseconds (for percentages).
    pub system_cpu_ns: u64,
    pub online_cpus: u32,
    pub memory_usage: u64,
    /// Absent when unlimited.
    pub memory_limit: Option<u64>,
    pub pids_current: u64,
    pub pids_limit: Option<u64>,
    pub io_read_bytes: u64,
    pub io_write_bytes: u64,
}

/// The processes of a container (`pier top`), as `ps` would show them.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct TopResponse {
    pub titles: Vec<String>,
    pub processes: Vec<Vec<String>>,
}

/// A lifecycle event (`pier events`).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Event {
    /// RFC 3339 with nanoseconds.
    pub time: String,
    /// `container` or `image`.
    pub kind: String,
    /// `create`, `start`, `die`, `stop`, `kill`, `destroy`, `restart`, `oom`, `rename`...
    pub action: String,
    pub id: String,
    pub attributes: BTreeMap<String, String>,
}
