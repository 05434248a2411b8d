//! The VM driver: an instance run as a QEMU microVM from the same OCI image
//! (`--runtime pier-vm`, `pier run --vm`).
//!
//! On the host a VM is what a container is, but for what runs: its directory, its
//! overlay rootfs over the image's layers (no copy of the image per VM), its cgroup and
//! its monitor (holding its streams, log and exit, and outliving the daemon, so that a
//! restarted daemon adopts a running VM as it adopts a container) are the containers'
//! driver's, which this driver uses for them. What the monitor runs differs: instead of a
//! container's init, `pier __vm DIR` (crate `pier-vm`), which shares the rootfs with
//! virtio-fs, boots the kernel with QEMU in the instance's network namespace (a tap
//! joined to the namespace's veth, so that the VM has the address, names and published
//! ports a container would), and speaks to the guest agent that runs the entrypoint.
//!
//! At each start this driver writes `DIR/vm.json` ([`pier_vm::config::VmConfig`]): the
//! kernel, initramfs and accelerator, the guest's size, its NICs (from the endpoints the
//! engine attached), its shares (volumes and bind mounts) and the entrypoint (from the
//! bundle the containers' driver wrote: the same user, environment and working
//! directory a container of the image gets).
//!
//! Sizes: `--memory` is the guest's memory (default [`DEFAULT_MEMORY_MIB`]); the cgroup
//! QEMU runs in gets it plus [`VMM_OVERHEAD`] for QEMU itself. `--cpus` is the number of
//! vCPUs (rounded up) and, as for a container, the CPU quota.

use std::collections::HashSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use pier_api::containers::{ContainerCreate, ContainerInspect, ContainerUpdate, ExecCreate};
use pier_api::ErrorKind;
use pier_guest::{GuestFile, GuestMount, GuestNic, ProcessConfig, RunConfig};
use pier_vm::config::{Accel, Disk, Share, VmConfig};

use super::container::ContainerDriver;
use super::driver::{
    BoxFuture, Driver, ExitInfo, Found, InstanceHandle, InstanceStats, NetworkAttachment, Started,
    VolumeAttachment, VolumeKind,
};
use crate::error::{internal, invalid, EngineError, EngineResult};

/// The runtime name that makes an instance a VM.
pub const RUNTIME: &str = pier_runtime::vm_start::RUNTIME;

/// What an instance is, as listings and metrics name it: `vm` or `container`.
pub fn kind(config: &pier_api::containers::ContainerCreate) -> &'static str {
    if config.runtime.as_deref() == Some(RUNTIME) {
        "vm"
    } else {
        "container"
    }
}

/// A VM's memory when `--memory` does not say.
pub const DEFAULT_MEMORY_MIB: u64 = 256;

/// What the VM's cgroup allows QEMU beyond the guest's memory.
pub const VMM_OVERHEAD: i64 = 256 << 20;

/// Where this host's VM assets are, and which accelerator to use.
#[derive(Debug, Clone)]
pub struct VmSettings {
    /// The kernel, its modules and the guest agent (`scripts/vm-assets.sh` installs them).
    pub assets: PathBuf,
    pub accel: pier_vm::accel::AccelPref,
}

impl Default for VmSettings {
    fn default() -> Self {
        VmSettings {
            assets: pier_vm::assets::Assets::default_dir(),
            accel: pier_vm::accel::AccelPref::Auto,
        }
    }
}

/// VMs as instances: see the module doc.
pub struct VmDriver {
    /// Where instances' directories are (the containers' layout).
    dir: PathBuf,
    /// Where the initramfs built from the assets is kept.
    cache: PathBuf,
    containers: Arc<ContainerDriver>,
    settings: VmSettings,
    /// The accelerator, detected once (or why the one asked for cannot be had).
    accel: std::sync::OnceLock<Result<Accel, String>>,
    /// Builds of the initramfs, one at a time.
    initramfs: std::sync::Mutex<()>,
}

/// Checks a VM's create request: what a VM cannot be given.
pub fn validate(req: &ContainerCreate) -> EngineResult<()> {
    let net = req.network.as_deref().unwrap_or("");
    if net == "host" || net.starts_with("container:") {
        return Err(invalid(format!(
            "a VM has a network stack of its own: --network {net} is not available with --vm; \
             use a bridge network (the default) or none"
        )));
    }
    if !req.uid_maps.is_empty() {
        return Err(invalid(
            "--uidmap is not available with --vm: a VM's users are its own already",
        ));
    }
    if let Some((kind, _)) = super::host_access::shared_with(req).first() {
        return Err(invalid(format!(
            "--{kind} container:NAME is not available with --vm: a VM's kernel has its own processes and IPC"
        )));
    }
    if req.domainname.is_some() {
        return Err(invalid(
            "--domainname is not available with --vm: the guest agent sets the hostname only",
        ));
    }
    if req.uts_mode.as_deref() == Some("host") {
        return Err(invalid(
            "--uts host is not available with --vm: a VM's kernel has its own hostname",
        ));
    }
    if req.init {
        return Err(invalid(
            "--init is not available with --vm: Pier's guest agent is a VM's init and reaps its processes",
        ));
    }
    if let Some(m) = req.memory {
        if m < 64 << 20 {
            return Err(invalid(format!(
                "--memory {m} is too small for a VM: give it at least 64m"
            )));
        }
    }
    Ok(())
}

impl VmDriver {
    pub fn new(root: &Path, containers: Arc<ContainerDriver>, settings: VmSettings) -> Self {
        VmDriver {
            dir: root.join("containers"),
            cache: root.join("vm"),
            containers,
            settings,
            accel: Default::default(),
            initramfs: Default::default(),
        }
    }

    fn cdir(&self, id: &str) -> PathBuf {
        self.dir.join(id)
    }

    /// The accelerator VMs run with on this host (KVM, or emulation).
    pub fn accel(&self) -> EngineResult<Accel> {
        self.accel
            .get_or_init(|| pier_vm::accel::detect(self.settings.accel).map_err(|e| e.to_string()))
            .clone()
            .map_err(|e| invalid(format!("cannot run a VM on this host: {e}")))
    }

    /// The assets and QEMU, or why VMs cannot run here (the user's to fix: say how).
    fn assets(&self) -> EngineResult<(pier_vm::assets::Assets, pier_vm::assets::Tools)> {
        let missing =
            |e: pier_vm::assets::Missing| invalid(format!("cannot run a VM on this host: {e}"));
        let assets = pier_vm::assets::Assets::find(&self.settings.assets).map_err(missing)?;
        let tools = pier_vm::assets::Tools::find().map_err(missing)?;
        Ok((assets, tools))
    }

    /// The initramfs made from the assets (the guest agent and the kernel's modules),
    /// built once and again only when they change.
    fn initramfs(&self, assets: &pier_vm::assets::Assets) -> EngineResult<PathBuf> {
        let _one = self.initramfs.lock().unwrap_or_else(|e| e.into_inner());
        fs::create_dir_all(&self.cache)
            .map_err(|e| internal(format!("cannot create {}: {e}", self.cache.display())))?;
        let out = self.cache.join("initramfs.cpio");
        pier_vm::initramfs::build(assets, &out)
            .map_err(|e| internal(format!("cannot build the VMs' initramfs: {e}")))?;
        Ok(out)
    }

    /// The instance as the containers' driver realises its host side: its memory limit
    /// is the guest's plus what QEMU needs.
    fn host_view(c: &ContainerInspect) -> ContainerInspect {
        let mut h = c.clone();
        let guest = c.config.memory.unwrap_or((DEFAULT_MEMORY_MIB as i64) << 20);
        h.config.memory = Some(guest + VMM_OVERHEAD);
        h.config.memory_swap = None;
        h
    }

    /// `DIR/vm.json` for this start.
    fn vm_config(
        &self,
        c: &ContainerInspect,
        volumes: &[VolumeAttachment],
    ) -> EngineResult<VmConfig> {
        let (assets, tools) = self.assets()?;
        let initramfs = self.initramfs(&assets)?;
        let dir = self.cdir(&c.id);
        let spec = oci_spec::runtime::Spec::load(dir.join("config.json"))
            .map_err(|e| internal(format!("cannot read the VM's bundle: {e}")))?;
        let mut files = Vec::new();
        let mut shares = Vec::new();
        let mut mounts = Vec::new();
        for m in spec.mounts().iter().flatten() {
            let target = m.destination().display().to_string();
            let source = m.source().clone().unwrap_or_default();
            let read_only = m.options().iter().flatten().any(|o| o == "ro");
            match m.typ().as_deref() {
                // The files the engine writes (hosts, hostname, resolv.conf): their
                // content now; the guest places them.
                Some("bind") if source.starts_with(&dir) => files.push(GuestFile {
                    target,
                    content: fs::read_to_string(&source).unwrap_or_default(),
                }),
                Some("bind") if !source.as_os_str().is_empty() => shares.push(Share {
                    source,
                    target,
                    read_only,
                }),
                Some("tmpfs") if !is_system_mount(&target) => mounts.push(GuestMount {
                    source: "tmpfs".into(),
                    target,
                    fstype: "tmpfs".into(),
                    read_only,
                }),
                _ => {}
            }
        }
        // Raw block volumes: virtio-blk disks, /dev/vda, /dev/vdb... in order, each seen
        // by the instance where it asked for it.
        let mut disks = Vec::new();
        let mut devices = Vec::new();
        for v in volumes.iter().filter(|v| v.kind == VolumeKind::BlockDevice) {
            let letter = (b'a' + (disks.len() as u8 % 26)) as char;
            devices.push(pier_guest::GuestDevice {
                source: format!("/dev/vd{letter}"),
                target: v.target.clone(),
            });
            disks.push(Disk {
                path: v.host_path.clone(),
                read_only: v.read_only,
            });
        }
        let p = spec.process().clone().unwrap_or_default();
        let process = ProcessConfig {
            args: p.args().clone().unwrap_or_default(),
            env: p.env().clone().unwrap_or_default(),
            cwd: p.cwd().display().to_string(),
            uid: p.user().uid(),
            gid: p.user().gid(),
            additional_gids: p.user().additional_gids().clone().unwrap_or_default(),
            tty: c.config.tty,
            stdin: c.config.interactive,
            size: None,
        };
        let mut eps: Vec<_> = c.networks.values().collect();
        eps.sort_by_key(|e| e.interface.clone());
        let mut nics = Vec::new();
        for e in eps {
            let (Some(ip), Some(mac)) = (e.ip_address, e.mac_address) else {
                continue;
            };
            nics.push(GuestNic {
                mac: mac.to_string(),
                address: ip.addr().to_string(),
                prefix: e.prefix_len.unwrap_or(24),
                gateway: e.gateway.map(|g| g.addr().to_string()),
                mtu: None,
            });
        }
        let netns = read_netns(&dir);
        let cpus = c.config.cpus.map_or(1, |n| n.ceil().max(1.0) as u32);
        let memory_mib = c
            .config
            .memory
            .map_or(DEFAULT_MEMORY_MIB, |m| (m as u64) >> 20);
        Ok(VmConfig {
            qemu: tools.qemu,
            virtiofsd: tools.virtiofsd,
            kernel: assets.kernel,
            initramfs,
            accel: self.accel()?,
            cpus,
            memory_mib,
            netns: if nics.is_empty() { None } else { netns },
            shares,
            disks,
            run: RunConfig {
                hostname: spec.hostname().clone().unwrap_or_default(),
                rootfs: pier_guest::ROOTFS_TAG.into(),
                mounts,
                files,
                nics,
                devices,
                process,
            },
            append: None,
        })
    }
}

/// What runs the VM in `dir`, from its `vm.json` and `vm-state.json` (empty before its
/// first start).
pub fn inspect(dir: &Path) -> pier_api::containers::VmInspect {
    let mut v = pier_api::containers::VmInspect {
        kind: "vm".into(),
        ..Default::default()
    };
    if let Ok(c) = VmConfig::load(dir) {
        v.hypervisor = c.qemu.display().to_string();
        v.kernel = c.kernel.display().to_string();
        v.accel = c.accel.to_string();
        v.cpus = c.cpus;
        v.memory_mib = c.memory_mib;
    }
    if let Ok(s) = pier_vm::config::VmState::load(dir) {
        v.accel = s.accel.to_string();
    }
    v
}

/// Mounts every instance gets from its own kernel (the guest agent makes them).
fn is_system_mount(target: &str) -> bool {
    target.starts_with("/proc") || target.starts_with("/sys") || target.starts_with("/dev")
}

/// Lets the instance's cgroup open /dev/kvm (char 10:232), which a container's device
/// rules do not: QEMU runs in it.
fn allow_kvm(dir: &Path) -> std::io::Result<()> {
    let path = dir.join("config.json");
    let mut spec: serde_json::Value = serde_json::from_slice(&fs::read(&path)?)?;
    let rule =
        serde_json::json!({"allow": true, "type": "c", "major": 10, "minor": 232, "access": "rwm"});
    match spec["linux"]["resources"]["devices"].as_array_mut() {
        Some(rules) => rules.push(rule),
        None => return Ok(()), // no device rules: everything is allowed
    }
    fs::write(&path, serde_json::to_vec(&spec)?)
}

/// The network namespace the engine makes for the instance, as recorded at prepare.
const NETNS_FILE: &str = "vm-netns";

fn read_netns(dir: &Path) -> Option<PathBuf> {
    fs::read_to_string(dir.join(NETNS_FILE))
        .ok()
        .map(|s| PathBuf::from(s.trim()))
        .filter(|p| !p.as_os_str().is_empty())
}

impl Driver for VmDriver {
    fn kind(&self) -> &'static str {
        "vm"
    }

    fn host_facts(&self) -> Option<pier_api::types::VmFacts> {
        let assets = self.assets();
        let accel = self.accel();
        Some(pier_api::types::VmFacts {
            hypervisor: assets
                .as_ref()
                .map(|(_, t)| t.qemu.display().to_string())
                .unwrap_or_default(),
            accel: accel.as_ref().map(|a| a.to_string()).unwrap_or_default(),
            kernel: assets
                .as_ref()
                .map(|(a, _)| a.kernel.display().to_string())
                .unwrap_or_default(),
            problem: assets.err().or(accel.err()).map(|e| e.message().clone()),
        })
    }

    fn prepare(
        &self,
        c: &ContainerInspect,
        image_config: &serde_json::Value,
        network: &NetworkAttachment,
        volumes: &[VolumeAttachment],
    ) -> EngineResult<()> {
        validate(&c.config)?;
        // A VM that cannot run here is refused before anything is made.
        self.assets()?;
        self.accel()?;
        let netns = match network {
            NetworkAttachment::Namespace(p) => Some(p.clone()),
            NetworkAttachment::Isolated => None,
            other => {
                return Err(invalid(format!(
                    "a VM cannot have the network {other:?}; use a bridge network or none"
                )))
            }
        };
        self.containers
            .prepare(&Self::host_view(c), image_config, network, volumes)?;
        let dir = self.cdir(&c.id);
        let path = netns.map(|p| p.display().to_string()).unwrap_or_default();
        let written = fs::write(dir.join(NETNS_FILE), path).and_then(|()| allow_kvm(&dir));
        if let Err(e) = written {
            self.containers.destroy(c);
            return Err(internal(format!("cannot write the VM's files: {e}")));
        }
        Ok(())
    }

    fn start(&self, c: &ContainerInspect, volumes: &[VolumeAttachment]) -> EngineResult<Started> {
        let config = self.vm_config(c, volumes)?;
        config
            .save(&self.cdir(&c.id))
            .map_err(|e| internal(format!("cannot write the VM's vm.json: {e}")))?;
        self.containers.start(&Self::host_view(c), volumes)
    }

    fn wait(&self, c: &ContainerInspect, handle: &InstanceHandle) -> BoxFuture<'static, ()> {
        self.containers.wait(c, handle)
    }

    fn reap(&self, c: &ContainerInspect) -> ExitInfo {
        let exit = self.containers.reap(c);
        // What a killed `pier __vm` could not remove; the next start binds them again.
        let dir = self.cdir(&c.id);
        use pier_vm::config::{CONSOLE_SOCKET, EXEC_SOCKET, QMP_SOCKET, VIRTIOFSD_SOCKET};
        for s in [CONSOLE_SOCKET, QMP_SOCKET, EXEC_SOCKET, VIRTIOFSD_SOCKET] {
            let _ = fs::remove_file(dir.join(s));
        }
        exit
    }

    fn signal(&self, c: &ContainerInspect, signal: i32) -> EngineResult<()> {
        self.containers.signal(c, signal)
    }

    fn pause(&self, c: &ContainerInspect, paused: bool) -> EngineResult<()> {
        self.containers.pause(c, paused)
    }

    fn update(
        &self,
        c: &ContainerInspect,
        changes: &ContainerUpdate,
        running: bool,
    ) -> EngineResult<()> {
        if running && changes.memory.is_some() {
            return Err(invalid(format!(
                "cannot change the memory of VM {} while it runs: stop it first",
                c.name
            )));
        }
        self.containers
            .update(&Self::host_view(c), changes, running)
    }

    fn resize(&self, c: &ContainerInspect, rows: u16, cols: u16) -> EngineResult<()> {
        self.containers.resize(c, rows, cols)
    }

    fn stats(&self, c: &ContainerInspect) -> InstanceStats {
        self.containers.stats(c)
    }

    fn processes(&self, c: &ContainerInspect) -> Vec<i32> {
        self.containers.processes(c)
    }

    fn exec(&self, c: &ContainerInspect, req: &ExecCreate) -> EngineResult<std::process::Command> {
        if c.state.pid.is_none() {
            return Err(EngineError::new(
                ErrorKind::Conflict,
                format!("VM {} is not running", c.name),
            ));
        }
        let dir = self.cdir(&c.id);
        let super::container::ExecProcess {
            env,
            cwd,
            uid,
            gid,
            additional_gids,
        } = super::container::exec_process(&dir, req)?;
        let request = ProcessConfig {
            args: req.cmd.clone(),
            env,
            cwd,
            uid,
            gid,
            additional_gids,
            tty: req.tty,
            stdin: req.interactive,
            size: None,
        };
        let exe = pier_runtime::sealed::current().map_err(|e| internal(e.to_string()))?;
        let mut cmd = std::process::Command::new(exe.path());
        std::os::unix::process::CommandExt::arg0(&mut cmd, "pier");
        cmd.arg(pier_runtime::vm_start::EXEC_ARG)
            .arg(&dir)
            .arg(serde_json::to_string(&request).expect("json"));
        Ok(cmd)
    }

    fn attach(&self, c: &ContainerInspect) -> std::io::Result<std::os::unix::net::UnixStream> {
        self.containers.attach(c)
    }

    fn logs(&self, c: &ContainerInspect) -> PathBuf {
        self.containers.logs(c)
    }

    fn kill_all(&self, c: &ContainerInspect) {
        self.containers.kill_all(c)
    }

    fn destroy(&self, c: &ContainerInspect) {
        self.containers.destroy(c)
    }

    fn adopt<'a>(&'a self, c: &'a ContainerInspect) -> BoxFuture<'a, Found> {
        self.containers.adopt(c)
    }

    fn sweep(&self, known: &HashSet<String>) -> Vec<(ContainerInspect, InstanceHandle)> {
        self.containers.sweep(known)
    }
}

impl super::Instances {
    /// A connection to the serial console of running VM `id` (`pier vm console`): the
    /// guest kernel's messages, and whatever the guest runs on its console.
    pub async fn console(
        &self,
        ctx: &crate::context::RequestContext,
        id: &str,
    ) -> EngineResult<tokio::net::UnixStream> {
        let c = self.lookup(ctx.project(), id)?;
        if c.config.runtime.as_deref() != Some(RUNTIME) {
            return Err(invalid(format!(
                "{} is a container, not a VM: it has no console; use pier attach",
                c.name
            )));
        }
        if c.state.pid.is_none() {
            return Err(EngineError::new(
                ErrorKind::Conflict,
                format!("VM {} is not running", c.name),
            ));
        }
        let dir = self.driver_of(&c).logs(&c);
        let dir = dir.parent().unwrap_or(Path::new("/"));
        let s = pier_runtime::attach::connect_to(dir, pier_vm::config::CONSOLE_SOCKET)
            .and_then(|s| {
                s.set_nonblocking(true)?;
                tokio::net::UnixStream::from_std(s)
            })
            .map_err(|e| internal(format!("cannot reach the console of VM {}: {e}", c.name)))?;
        Ok(s)
    }
}
