//! Container types of the native API.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::ids::ContainerId;
use crate::names::{Digest, ProjectName};
use crate::net::{Ipv4Address, MacAddress};
use crate::ports::PortSpec;

/// A resource limit (`--ulimit nofile=1024:2048`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Ulimit {
    /// `nofile`, `nproc`, `core`, ...
    pub name: String,
    pub soft: u64,
    pub hard: u64,
}

/// One range of a user namespace's ID mapping (`--uidmap 0:100000:65536`): IDs
/// `container_id..container_id+size` in the container are `host_id..host_id+size` on the
/// host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct IdMap {
    pub container_id: u32,
    pub host_id: u32,
    pub size: u32,
}

impl IdMap {
    /// Parses `CONTAINER:HOST:SIZE`, as podman's `--uidmap` takes it.
    pub fn parse(s: &str) -> Result<IdMap, String> {
        let bad = || {
            format!("invalid ID mapping {s:?}: use CONTAINER_ID:HOST_ID:SIZE, e.g. 0:100000:65536")
        };
        let parts: Vec<&str> = s.split(':').collect();
        let [c, h, n] = parts.as_slice() else {
            return Err(bad());
        };
        let num = |v: &str| v.trim().parse::<u32>().map_err(|_| bad());
        Ok(IdMap {
            container_id: num(c)?,
            host_id: num(h)?,
            size: num(n)?,
        })
    }

    /// Checks a whole mapping as the kernel would take it: non-empty ranges that fit in
    /// 32 bits and overlap neither on the container's side nor on the host's, at most 340
    /// of them; `what` names it in messages (`--uidmap`).
    pub fn check_all(maps: &[IdMap], what: &str) -> Result<(), String> {
        if maps.len() > 340 {
            return Err(format!("{what}: at most 340 ranges"));
        }
        for (i, m) in maps.iter().enumerate() {
            if m.size == 0 {
                return Err(format!(
                    "{what} {}:{}:0: a range needs a size",
                    m.container_id, m.host_id
                ));
            }
            for (start, side) in [(m.container_id, "container"), (m.host_id, "host")] {
                if u64::from(start) + u64::from(m.size) > u64::from(u32::MAX) {
                    return Err(format!(
                        "{what} {}:{}:{}: the {side} range passes the largest ID",
                        m.container_id, m.host_id, m.size
                    ));
                }
            }
            for o in &maps[..i] {
                let overlaps = |a: u32, b: u32| {
                    let (a, b) = (u64::from(a), u64::from(b));
                    a < b + u64::from(o.size) && b < a + u64::from(m.size)
                };
                if overlaps(m.container_id, o.container_id) || overlaps(m.host_id, o.host_id) {
                    return Err(format!(
                        "{what}: the ranges {}:{}:{} and {}:{}:{} overlap",
                        o.container_id, o.host_id, o.size, m.container_id, m.host_id, m.size
                    ));
                }
            }
        }
        Ok(())
    }
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

/// One per-device I/O limit of a container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct DeviceIoLimit {
    /// The device on the host (`/dev/sda`).
    pub path: String,
    pub kind: DeviceIoKind,
    /// Bytes or operations per second, or the weight (10 to 1000).
    pub value: u64,
}

/// What a [`DeviceIoLimit`] limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeviceIoKind {
    ReadBps,
    WriteBps,
    ReadIops,
    WriteIops,
    Weight,
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
    /// `--domainname`: the container's NIS domain name (its own UTS namespace's).
    pub domainname: Option<String>,
    /// `bridge` (the default), `none`, `host`, a network's name or ID, or
    /// `container:NAME` to share another container's network namespace.
    pub network: Option<String>,
    /// `--ip`: a static address on the first network.
    #[schema(value_type = Option<String>)]
    pub ip: Option<Ipv4Address>,
    /// `--ip6`: a static IPv6 address on the first network (a dual-stack one).
    #[schema(value_type = Option<String>)]
    pub ip6: Option<std::net::Ipv6Addr>,
    /// `--mac-address` on the first network.
    #[schema(value_type = Option<String>)]
    pub mac_address: Option<MacAddress>,
    /// `--network-alias`: more names on the first network (user networks only).
    pub network_aliases: Vec<String>,
    /// `-p [hostip:][hostport:]containerport[/tcp|udp]`, port ranges allowed.
    #[schema(value_type = Vec<String>)]
    pub publish: Vec<PortSpec>,
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
    /// `--uidmap`: run in a user namespace of its own whose users are these host IDs, so
    /// that the container's root is an unprivileged user on the host. Empty: the host's
    /// user namespace.
    pub uid_maps: Vec<IdMap>,
    /// `--gidmap`: the same for groups; the uid mapping when empty and that is given.
    pub gid_maps: Vec<IdMap>,
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
    /// Relative CPU weight, 2 to 262144 (0: the default, 1024).
    pub cpu_shares: Option<i64>,
    pub cpuset_cpus: Option<String>,
    /// Most processes at once; 0 or -1 for no limit.
    pub pids_limit: Option<i64>,
    pub blkio_weight: Option<u16>,
    pub ulimits: Vec<Ulimit>,
    /// Size of the container's `/dev/shm` in bytes (`--shm-size`); 64 MiB when absent or 0.
    pub shm_size: Option<i64>,
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
    /// The client attaches right after the start (`run -t` in the foreground): the
    /// container's output is kept for it, up to 10 s, even when the container has exited
    /// (and, with `auto_remove`, would be gone) by the time it comes.
    pub attach: bool,
    /// A command run in the container while it runs, whose exit code tells whether it is
    /// healthy (`--health-cmd`); the image's when absent.
    pub healthcheck: Option<Healthcheck>,
    /// The signal `stop` sends first (`--stop-signal`); the image's, or SIGTERM, when absent.
    pub stop_signal: Option<String>,
    /// Seconds `stop` waits before SIGKILL (`--stop-timeout`); 10 when absent.
    pub stop_timeout: Option<u64>,
    /// More ports the container listens on (`--expose 80/tcp`), published by `publish_all`.
    pub expose: Vec<String>,
    /// `--group-add`: more groups of the container's processes, by number or by a name
    /// of the image's `/etc/group`.
    pub group_add: Vec<String>,
    /// `--sysctl KEY=VALUE`: namespaced kernel parameters (`net.*`, the IPC ones of
    /// `kernel.*`, `fs.mqueue.*`) set in the container.
    pub sysctls: BTreeMap<String, String>,
    /// `--device`: host devices made in the container's `/dev` and allowed to it.
    pub devices: Vec<DeviceMapping>,
    /// `--pid`: `private` (the default: a PID namespace of its own) or `host`.
    pub pid_mode: Option<String>,
    /// `--ipc`: `private` or `shareable` (the default: an IPC namespace of its own), or
    /// `host`.
    pub ipc_mode: Option<String>,
    /// `--uts`: `private` (the default: its own hostname) or `host` (the host's).
    pub uts_mode: Option<String>,
    pub restart_policy: RestartPolicy,
    pub labels: BTreeMap<String, String>,
    /// `--constraint`: where in a pool the instance may go (`host.label.KEY==VALUE`,
    /// `host.label.KEY!=VALUE`, `host.id==ID`, `host.id!=ID`). Only a member of a pool
    /// takes placement options.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub constraints: Vec<String>,
    /// `--affinity`: only on a host running an instance of the project that matches
    /// (`instance.name==NAME`, `instance.label.KEY==VALUE`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub affinity: Vec<String>,
    /// `--anti-affinity`: only on a host running no instance of the project that matches.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub anti_affinity: Vec<String>,
    /// `--placement`: how a pool chooses among the hosts that fit, `spread` (the
    /// default) or `binpack`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub placement: Option<String>,
    /// Log options as Docker's json-file driver takes them: `max-size` (bytes, default
    /// 10 MiB) and `max-file` (files kept, rotated ones included, default 3).
    pub log_opts: BTreeMap<String, String>,
    /// The log driver: `json-file` (the default, when absent) or `none` (nothing kept;
    /// `logs` answers that the driver does not support reading).
    pub log_driver: Option<String>,
    /// `--cgroupns`: `private` (a cgroup namespace of its own) or `host`; absent: the
    /// host's default, as Docker's (`host` on cgroup v1, `private` on v2).
    pub cgroupns_mode: Option<String>,
    /// `--isolation`: only `default` on Linux; kept to be shown as given.
    pub isolation: Option<String>,
    /// `--cgroup-parent`: the cgroup the container's cgroup is made in, in every
    /// hierarchy (`/<parent>/<id>`, relative or absolute both from the hierarchy's root),
    /// made when missing and left when the container goes; the daemon's own parent when
    /// absent.
    pub cgroup_parent: Option<String>,
    /// `--device-cgroup-rule "c 7:128 rwm"`: more rules of the devices cgroup.
    pub device_cgroup_rules: Vec<String>,
    /// `--volume-driver`: the driver of the volumes `-v` names; only `local` makes them.
    pub volume_driver: Option<String>,
    /// `--memory-swappiness` 0 to 100 (cgroup v1's `memory.swappiness`).
    pub memory_swappiness: Option<i64>,
    /// `--userns host` as given (Pier remaps no user IDs daemon-wide, so it changes
    /// nothing); shown in inspect.
    pub userns_mode: Option<String>,
    /// `--memory-reservation`: a soft limit, in bytes.
    pub memory_reservation: Option<i64>,
    /// `--oom-kill-disable` (cgroup v1; v2 cannot, and discards it as Docker does).
    pub oom_kill_disable: bool,
    /// `--oom-score-adj`, -1000 to 1000.
    pub oom_score_adj: Option<i32>,
    /// `--cpuset-mems`: the memory nodes the container may use (`0-1`).
    pub cpuset_mems: Option<String>,
    /// Per-device I/O limits: `--device-read-bps` and its kin, `--blkio-weight-device`.
    pub device_io: Vec<DeviceIoLimit>,
    /// `--kernel-memory`, in bytes (cgroup v1's `memory.kmem.limit_in_bytes`; v2 has
    /// no such limit and refuses it).
    pub kernel_memory: Option<i64>,
    /// Docker's `KernelMemoryTCP`, in bytes (cgroup v1).
    pub kernel_memory_tcp: Option<i64>,
    /// `--cpu-rt-period`, in microseconds (cgroup v1 with real-time group scheduling).
    pub cpu_rt_period: Option<i64>,
    /// `--cpu-rt-runtime`, in microseconds per period of real-time scheduling.
    pub cpu_rt_runtime: Option<i64>,
    /// `--link NAME[:ALIAS]` as `NAME:ALIAS`: on the default bridge, /etc/hosts entries
    /// and the linked container's environment as `ALIAS_*` variables; on a user network,
    /// the alias resolves to it for this container only.
    pub links: Vec<String>,
    /// `--volumes-from CONTAINER[:ro|:rw]`: that container's volumes and bind mounts.
    pub volumes_from: Vec<String>,
    /// Settings of the endpoint on the first network beyond its address, MAC and
    /// aliases.
    pub endpoint: EndpointOptions,
}

/// Settings of one endpoint (a container on a network) that Docker's `EndpointConfig`
/// carries beyond its address, MAC and aliases.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct EndpointOptions {
    /// `NAME:ALIAS`: the alias resolves to container NAME for this container only.
    pub links: Vec<String>,
    /// Link-local addresses (`169.254.0.0/16`) added to the interface.
    pub link_local_ips: Vec<String>,
    /// Options of the network driver for this endpoint, kept as given.
    pub driver_opts: BTreeMap<String, String>,
}

/// A host device given to a container (`--device /dev/x[:/dev/y[:rwm]]`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct DeviceMapping {
    /// The device node on the host.
    pub path_on_host: String,
    /// Where it appears in the container (the host's path when empty).
    pub path_in_container: String,
    /// What the container may do with it: `r`, `w` and `m` (mknod); `rwm` when empty.
    pub permissions: String,
}

impl DeviceMapping {
    /// Docker's `--device` syntax: `HOST[:CONTAINER][:PERMISSIONS]`.
    pub fn parse(s: &str) -> Result<DeviceMapping, String> {
        let perms = |p: &str| !p.is_empty() && p.chars().all(|c| matches!(c, 'r' | 'w' | 'm'));
        let parts: Vec<&str> = s.split(':').collect();
        let (host, container, permissions) = match parts[..] {
            [h] => (h, h, "rwm"),
            [h, p] if perms(p) => (h, h, p),
            [h, c] => (h, c, "rwm"),
            [h, c, p] if perms(p) => (h, c, p),
            _ => {
                return Err(format!(
                    "invalid --device {s:?}: use HOST_PATH[:CONTAINER_PATH][:PERMISSIONS], permissions of r, w and m"
                ))
            }
        };
        for p in [host, container] {
            if !p.starts_with('/') {
                return Err(format!(
                    "invalid --device {s:?}: {p:?} is not an absolute path"
                ));
            }
        }
        Ok(DeviceMapping {
            path_on_host: host.to_string(),
            path_in_container: container.to_string(),
            permissions: permissions.to_string(),
        })
    }
}

/// A container's health check, as Docker's `HEALTHCHECK` (durations in nanoseconds; 0
/// means the default).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Healthcheck {
    /// `["CMD", arg...]`, `["CMD-SHELL", "command"]`, or `["NONE"]` to turn the image's off.
    pub test: Vec<String>,
    /// Between two checks (default 30 s).
    pub interval_ns: u64,
    /// A check running longer fails (default 30 s).
    pub timeout_ns: u64,
    /// Failures in a row that make the container unhealthy (default 3).
    pub retries: u32,
    /// Failures in this time after the start do not count (default 0).
    pub start_period_ns: u64,
}

/// What a container's health checks found so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum HealthStatus {
    #[default]
    Starting,
    Healthy,
    Unhealthy,
}

impl HealthStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            HealthStatus::Starting => "starting",
            HealthStatus::Healthy => "healthy",
            HealthStatus::Unhealthy => "unhealthy",
        }
    }
}

/// One run of a health check.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct HealthResult {
    /// RFC 3339 with nanoseconds.
    pub start: String,
    pub end: String,
    /// -1 when the check could not run or timed out.
    pub exit_code: i32,
    /// The start of its output.
    pub output: String,
}

/// A running container's health.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Health {
    pub status: HealthStatus,
    /// Failed checks in a row.
    pub failing_streak: u32,
    /// The last few checks, oldest first.
    pub log: Vec<HealthResult>,
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
    /// Present while a container with a health check runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<Health>,
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
    /// For a VM (`--runtime pier-vm`), what runs it; filled by inspect, never stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vm: Option<VmInspect>,
}

/// What runs a VM instance, as `pier inspect` shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct VmInspect {
    /// `vm`.
    pub kind: String,
    /// The hypervisor's binary (QEMU).
    pub hypervisor: String,
    /// The guest's kernel.
    pub kernel: String,
    /// `kvm` (hardware virtualization) or `tcg` (emulation): as QEMU reported it when it
    /// last ran, else as it will run.
    pub accel: String,
    pub cpus: u32,
    pub memory_mib: u64,
}

/// One row of `pier ps`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ContainerSummary {
    pub id: String,
    pub name: String,
    pub image: String,
    pub command: String,
    pub created: String,
    /// `container`, or `vm` for a VM (created with `--vm`, runtime `pier-vm`).
    #[serde(default)]
    pub kind: String,
    pub state: ContainerStatus,
    /// `Up 3 minutes`, `Exited (0) 2 seconds ago`, ...
    pub status: String,
    /// Published ports while it runs.
    #[serde(default)]
    pub ports: Vec<crate::networks::PortBinding>,
    /// The pool's host it runs on, when this daemon is a member of a pool (listings of a
    /// member show every host's instances); absent on a host outside any pool.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
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

/// Body of `POST /v1/containers/{id}/update` (`pier update`): the limits and restart
/// policy to change; an absent one stays as it is. A running container's cgroup gets the
/// new limits at once; every later start has them too.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct ContainerUpdate {
    /// Bytes.
    pub memory: Option<i64>,
    /// Memory plus swap, bytes; -1 for unlimited swap.
    pub memory_swap: Option<i64>,
    /// CPUs, e.g. 1.5; 0 lifts the limit.
    pub cpus: Option<f64>,
    /// Relative CPU weight, 2 to 262144 (0: the default, 1024).
    pub cpu_shares: Option<i64>,
    /// Most processes at once; 0 or -1 for no limit.
    pub pids_limit: Option<i64>,
    pub restart_policy: Option<RestartPolicy>,
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

// One line of a container's output: an item of `GET /v1/containers/{id}/logs` (JSON
// lines) and, in the same JSON, a line of the log file on disk (Docker's json-file
// format), so its fields and their order are that file's format. (Plain comments here: a
// doc comment would become the schema's description and change the OpenAPI document.)
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct LogLine {
    /// The text, with its newline.
    pub log: String,
    /// `stdout` or `stderr`.
    pub stream: String,
    /// RFC 3339 with nanoseconds.
    pub time: String,
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
    #[schema(value_type = String)]
    pub id: ContainerId,
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
    /// The keys that detach from the command's terminal, leaving it running
    /// (`ctrl-p,ctrl-q` when absent).
    pub detach_keys: Option<crate::detach::DetachKeys>,
    /// `--privileged`: every capability for this command (the container's seccomp
    /// profile and devices stay), as Docker's `exec --privileged`.
    #[serde(default)]
    pub privileged: bool,
}

/// The state of an attached exec session (`GET /v1/exec/{id}`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct ExecInspect {
    pub id: String,
    pub running: bool,
    pub exit_code: Option<i32>,
}

impl ExecCreate {
    /// What the session runs: both outputs, the client's input when interactive.
    pub fn spec(&self) -> ExecSpec {
        ExecSpec {
            cmd: self.cmd.clone(),
            env: self.env.clone(),
            user: self.user.clone(),
            workdir: self.workdir.clone(),
            tty: self.tty,
            stdin: self.interactive,
            stdout: true,
            stderr: true,
            detach_keys: self.detach_keys.clone(),
            privileged: self.privileged,
        }
    }
}

/// What an exec session runs (both APIs' exec, the engine's sessions).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecSpec {
    pub cmd: Vec<String>,
    /// `KEY=VALUE`, added to the container's environment.
    pub env: Vec<String>,
    pub user: Option<String>,
    pub workdir: Option<String>,
    /// Give the command a terminal.
    pub tty: bool,
    /// Pass the caller's input to the command.
    pub stdin: bool,
    /// Which of the command's outputs the caller receives.
    pub stdout: bool,
    pub stderr: bool,
    /// The keys that detach a caller from the command's terminal (the default,
    /// ctrl-p ctrl-q, when none).
    pub detach_keys: Option<crate::detach::DetachKeys>,
    /// Every capability for the command (`exec --privileged`).
    pub privileged: bool,
}

/// What an exec session's inspect shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecInfo {
    pub id: String,
    pub container_id: String,
    pub spec: ExecSpec,
    pub running: bool,
    pub exit_code: Option<i32>,
    /// The helper's pid once started (0 before).
    pub pid: i32,
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
    /// The host's memory (`MemTotal`): what `pier stats` shows as the limit of a
    /// container without one, as Docker does.
    #[serde(default)]
    pub host_memory: u64,
    pub pids_current: u64,
    pub pids_limit: Option<u64>,
    pub io_read_bytes: u64,
    pub io_write_bytes: u64,
    /// The counters of the container's interfaces (but loopback), by name.
    #[serde(default)]
    pub networks: BTreeMap<String, InterfaceCounters>,
}

/// Traffic counters of one network interface.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct InterfaceCounters {
    pub rx_bytes: u64,
    pub rx_packets: u64,
    pub rx_errors: u64,
    pub rx_dropped: u64,
    pub tx_bytes: u64,
    pub tx_packets: u64,
    pub tx_errors: u64,
    pub tx_dropped: u64,
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

/// One change in a container's filesystem (`pier diff`); `kind` as Docker: 0 modified,
/// 1 added, 2 deleted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Change {
    pub path: String,
    pub kind: u8,
}

/// Body of `POST /v1/containers/{id}/commit`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct CommitRequest {
    /// `name[:tag]` for the new image; untagged when absent.
    pub reference: Option<String>,
    pub message: String,
    pub author: String,
    /// Dockerfile instructions applied to the new image's config (`--change`): CMD,
    /// ENTRYPOINT, ENV, EXPOSE, HEALTHCHECK, LABEL, ONBUILD, STOPSIGNAL, USER, VOLUME,
    /// WORKDIR.
    pub changes: Vec<String>,
}
