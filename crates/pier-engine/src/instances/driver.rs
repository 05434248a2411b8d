//! The instance-driver seam: what the engine asks of a kind of instance (a container
//! today, a VM next) to realise the record it keeps.
//!
//! The engine owns the record (spec and state), the state machine, restart policies,
//! networks and volumes; a [`Driver`] owns what the instance is on this host. The inputs
//! are typed and say nothing of how a kind realises them: a [`NetworkAttachment`] (a
//! namespace for a container, a tap device for a VM), [`VolumeAttachment`]s (a directory
//! or a block device on the host), and the instance's record. The outputs are typed too:
//! an [`InstanceHandle`] (what finds the running instance again) and [`ExitInfo`].
//!
//! # The two kinds
//!
//! - [`super::container::ContainerDriver`]: an OCI bundle, an overlay rootfs, a cgroup,
//!   and a monitor process that runs Pier's runtime (or runc) and holds the streams.
//! - [`super::vm::VmDriver`] (`--runtime pier-vm`): the same host side (directory,
//!   overlay rootfs, cgroup, monitor), but the monitor runs `pier __vm`, which boots the
//!   image's rootfs in a QEMU microVM (shared by virtio-fs), with a tap joined to the
//!   instance's network namespace, and speaks to the guest agent that runs the
//!   entrypoint; `exec` is `pier __vm-exec` through the same agent. It takes
//!   [`NetworkAttachment::Namespace`] (the engine's plumbing is the container's) or
//!   [`NetworkAttachment::Isolated`], and refuses the host's network.
//!
//! [`Drivers`] picks one per instance from its record.

use std::collections::HashSet;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;

use pier_api::containers::{ContainerCreate, ContainerInspect, ContainerUpdate, ExecCreate};

use crate::error::EngineResult;

/// A boxed future, so that [`Driver`] stays usable as `dyn Driver`.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// How an instance reaches the network; the engine plumbs the host side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetworkAttachment {
    /// Loopback only (`--network none`).
    Isolated,
    /// The host's network (`--network host`).
    Host,
    /// A network namespace the engine makes (at this path) and plumbs at each start:
    /// what a container joins (a bridge network, or another container's), and where a
    /// VM's QEMU runs, its tap joined to the namespace's veth.
    Namespace(PathBuf),
}

/// How a volume is given to an instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VolumeKind {
    /// A directory on the host (bind-mounted into a container, virtiofs for a VM).
    Directory,
    /// A block device node (a loop device), given as a device.
    BlockDevice,
    /// A block volume's filesystem, mounted on the host at `host_path`.
    BlockFilesystem,
}

/// One volume of an instance, as the engine attached it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeAttachment {
    pub name: String,
    /// Where the instance sees it.
    pub target: String,
    /// Where it is on the host (its data directory, or its device node).
    pub host_path: PathBuf,
    pub kind: VolumeKind,
    pub read_only: bool,
    /// Filled with what the image has at `target` when it is empty (Docker's copy-up).
    pub copy_up: bool,
    /// The device's minor number, for a [`VolumeKind::BlockDevice`] attached now.
    pub minor: Option<u32>,
}

/// What finds a running instance again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceHandle {
    /// The instance's main process (a container's init, a VM's QEMU).
    pub pid: i32,
    /// The process watching it, if the kind has one (a container's monitor).
    pub monitor_pid: Option<i32>,
    /// When it started (RFC 3339).
    pub started_at: String,
}

/// How an instance ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExitInfo {
    pub exit_code: i32,
    /// RFC 3339.
    pub finished_at: String,
    pub oom_killed: bool,
    /// Why it ended, when not by itself (e.g. its monitor died).
    pub error: Option<String>,
}

/// How a start went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Started {
    /// It runs.
    Running(InstanceHandle),
    /// The instance's own start failed (a missing command, a refused limit): nothing of
    /// it runs and the driver has undone what the start made. Given to the client with
    /// `exit_code` (as `docker run` exits 125/126/127).
    Failed {
        kind: pier_api::ErrorKind,
        exit_code: i32,
        message: String,
    },
}

/// What a daemon start finds of an instance its record names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// The last start the host knows of (it may not run any more).
    pub last_start: Option<InstanceHandle>,
    /// Whether that start still runs (its watcher is alive and it has not exited).
    pub alive: bool,
    /// Whether the instance exists on this host at all (its directory).
    pub exists: bool,
}

/// Resource use of a running instance.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InstanceStats {
    pub cpu_usage_ns: u64,
    pub memory_usage: u64,
    pub memory_limit: u64,
    pub pids_current: u64,
    pub pids_limit: u64,
    pub io_read_bytes: u64,
    pub io_write_bytes: u64,
}

/// The drivers of a host, one per kind of instance.
#[derive(Clone)]
pub struct Drivers {
    pub container: std::sync::Arc<dyn Driver>,
    /// VMs, where the engine was built with them (a fake engine in tests has none).
    pub vm: Option<std::sync::Arc<dyn Driver>>,
}

impl Drivers {
    /// The driver of an instance made from `config`: the VM driver for `--runtime
    /// pier-vm`, the containers' otherwise.
    pub fn of(&self, config: &ContainerCreate) -> &std::sync::Arc<dyn Driver> {
        match (&self.vm, config.runtime.as_deref()) {
            (Some(vm), Some(super::vm::RUNTIME)) => vm,
            _ => &self.container,
        }
    }
}

/// A kind of instance. Blocking methods are called from a blocking context
/// (`spawn_blocking`) by the engine where they may take long; [`Driver::wait`] and
/// [`Driver::adopt`] are async.
pub trait Driver: Send + Sync + 'static {
    /// The kind's name (`container`, `vm`), for messages.
    fn kind(&self) -> &'static str;

    /// What runs this kind on this host, for `pier info` (a VM's hypervisor).
    fn host_facts(&self) -> Option<pier_api::types::VmFacts> {
        None
    }

    /// Realises a created instance on this host (a container's bundle, directories and
    /// log; a VM's disk). On error nothing of it is left. `volumes` are planned, not yet
    /// attached (block devices have no minor yet).
    fn prepare(
        &self,
        instance: &ContainerInspect,
        image_config: &serde_json::Value,
        network: &NetworkAttachment,
        volumes: &[VolumeAttachment],
    ) -> EngineResult<()>;

    /// Starts a prepared instance with its volumes attached. Any error or
    /// [`Started::Failed`] leaves nothing of this start behind (mounts, processes).
    fn start(
        &self,
        instance: &ContainerInspect,
        volumes: &[VolumeAttachment],
    ) -> EngineResult<Started>;

    /// Resolves when the running instance of `handle` has exited (or cannot be
    /// watched: then at once). The engine then calls [`Driver::reap`].
    fn wait(&self, instance: &ContainerInspect, handle: &InstanceHandle) -> BoxFuture<'static, ()>;

    /// After an exit: how it ended, and everything the run held released (what is left
    /// of its processes killed, its root filesystem unmounted, its cgroup removed).
    fn reap(&self, instance: &ContainerInspect) -> ExitInfo;

    /// Sends a signal to the instance's main process.
    fn signal(&self, instance: &ContainerInspect, signal: i32) -> EngineResult<()>;

    /// Freezes (`true`) or thaws the instance.
    fn pause(&self, instance: &ContainerInspect, paused: bool) -> EngineResult<()>;

    /// Applies the instance's limits as its record now has them (`pier update`;
    /// `changes` names the ones that changed): to its next starts, and, when it runs
    /// (`running`), to what runs now. On error the caller keeps the old record.
    fn update(
        &self,
        instance: &ContainerInspect,
        changes: &ContainerUpdate,
        running: bool,
    ) -> EngineResult<()>;

    /// Resizes the instance's terminal.
    fn resize(&self, instance: &ContainerInspect, rows: u16, cols: u16) -> EngineResult<()>;

    /// Resource use now (zero when it does not run).
    fn stats(&self, instance: &ContainerInspect) -> InstanceStats;

    /// The processes of the running instance, by host pid.
    fn processes(&self, instance: &ContainerInspect) -> Vec<i32>;

    /// The command that runs `req` inside the running instance (spawned and reaped by
    /// the exec sessions).
    fn exec(
        &self,
        instance: &ContainerInspect,
        req: &ExecCreate,
    ) -> EngineResult<std::process::Command>;

    /// A connection to the instance's standard streams.
    fn attach(
        &self,
        instance: &ContainerInspect,
    ) -> std::io::Result<std::os::unix::net::UnixStream>;

    /// The instance's log file.
    fn logs(&self, instance: &ContainerInspect) -> PathBuf;

    /// Kills whatever of the instance runs, and waits until nothing does.
    fn kill_all(&self, instance: &ContainerInspect);

    /// Removes everything of the instance from this host. Called for a stopped instance,
    /// and to undo a failed create; never fails (what it cannot remove, it logs).
    fn destroy(&self, instance: &ContainerInspect);

    /// At daemon start: what the host has of an instance that has a record.
    fn adopt<'a>(&'a self, instance: &'a ContainerInspect) -> BoxFuture<'a, Found>;

    /// At daemon start: removes what the host has of instances that have no record
    /// (ids not in `known`), except running ones that carry a copy of their record,
    /// which are returned with their handle for the engine to adopt.
    fn sweep(&self, known: &HashSet<String>) -> Vec<(ContainerInspect, InstanceHandle)>;
}
