//! The container driver: a container is an OCI bundle in `ROOT/containers/<id>/`, an
//! overlay rootfs over the image's layers (the writable layer on an ext4 filesystem of
//! its own with `--storage-opt size`), a cgroup, and a monitor process forked by the
//! zygote that runs the runtime (Pier's, or runc with `--runtime runc`: a monitor
//! option), holds the container's streams and log, and records its exit.
//!
//! Everything here touches the host; the engine reaches it only through [`Driver`].

use std::collections::{HashMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pier_api::containers::{ContainerCreate, ContainerInspect, ContainerUpdate, ExecCreate};
use pier_api::time::now_rfc3339;
use pier_api::volumes::{MountKind, MountSpec};
use pier_api::{ByteSize, ErrorKind};
use pier_image::ImageStore;
use pier_runtime::cgroups::Cgroup;
use pier_runtime::error::{Answer, ErrorKind as StartKind};
use pier_runtime::spec::{self, NetMode, Rlimit, SpecInput};
use pier_runtime::state::{read_json, write_json, Exited, MonitorConfig, Running};

use super::driver::{
    BoxFuture, Driver, ExitInfo, Found, InstanceHandle, InstanceStats, NetworkAttachment, Started,
    VolumeAttachment,
};
use crate::error::{internal, invalid};
use crate::error::{EngineError, EngineResult};
use crate::instances::service::{log_limits, ulimit_resource};

const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// A copy of a `--rm` container's record in its directory: its record is written
/// lazily, and a crash that loses it leaves this copy, from which a running container
/// is adopted again ([`Driver::sweep`]).
pub const RECORD_COPY: &str = "record.json";

/// Turns `--user` into uid, gid and supplementary gids.
type UserLookup<'a> =
    dyn Fn(&str) -> Result<(u32, u32, Vec<u32>), pier_runtime::rootfs::UserError> + 'a;

/// The stored form of a container (as in the store).
#[derive(serde::Serialize, serde::Deserialize)]
struct Record(ContainerInspect);

/// Instances as instances: see the module doc.
pub struct ContainerDriver {
    dir: PathBuf,
    /// Where removed containers' directories go to be deleted in the background.
    trash: PathBuf,
    images: Arc<ImageStore>,
    /// Forks the containers' monitors.
    zygote: pier_runtime::zygote::Zygote,
    /// Seccomp profiles compiled to BPF, by the profile's JSON.
    seccomp_cache: Mutex<HashMap<String, Arc<Vec<u8>>>>,
    /// What the host's cgroups offer (checked against every create's limits).
    cgroups: pier_runtime::cgroups::Host,
    /// The parent of the containers' cgroups (see `Instances::new`).
    cgroup_parent: String,
}

/// How long a starting daemon waits for the monitor zygote a killed one left to go.
const PREDECESSOR_PATIENCE: Duration = Duration::from_secs(5);

impl ContainerDriver {
    /// The driver of the containers under `root/containers`.
    pub fn new(
        root: &Path,
        images: Arc<ImageStore>,
        cgroups: pier_runtime::cgroups::Host,
        cgroup_parent: String,
    ) -> std::io::Result<Self> {
        let dir = root.join("containers");
        fs::create_dir_all(&dir)?;
        fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o711))?;
        let trash = root.join("trash");
        fs::create_dir_all(&trash)?;
        // What `pier exec` and the zygote run: a sealed copy of this binary, never the
        // host's file (see pier_runtime::sealed); made once, while the daemon starts up.
        pier_runtime::sealed::prepare_in_background();
        // A monitor the last daemon's zygote was forking as it died must show itself
        // before the containers are looked at (see pier_runtime::zygote).
        let outlasted = pier_runtime::zygote::outlast_predecessors(&dir, PREDECESSOR_PATIENCE);
        if outlasted != Default::default() {
            tracing::info!(
                gone = outlasted.gone,
                killed = outlasted.killed,
                "waited for the monitor zygote the last daemon left"
            );
        }
        Ok(ContainerDriver {
            zygote: pier_runtime::zygote::Zygote::new(&dir),
            dir,
            trash,
            images,
            seccomp_cache: Mutex::new(HashMap::new()),
            cgroups,
            cgroup_parent,
        })
    }

    fn cdir(&self, id: &str) -> PathBuf {
        self.dir.join(id)
    }

    /// Container `c`'s cgroup path: under its `--cgroup-parent`, else under the engine's.
    fn cgroup_path(&self, c: &ContainerInspect) -> String {
        super::cgroup_parent::cgroup_path(&self.cgroup_parent, c)
    }

    fn cgroup(&self, c: &ContainerInspect) -> Cgroup {
        Cgroup::at(&self.cgroup_path(c))
    }

    /// The cgroup of the container whose bundle is `dir` when no record of it is at
    /// hand: the one its spec names (its `--cgroup-parent` is in it), else where the
    /// engine puts containers.
    fn bundle_cgroup(&self, dir: &Path, id: &str) -> Cgroup {
        let named = fs::read(dir.join("config.json"))
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .and_then(|v| v["linux"]["cgroupsPath"].as_str().map(String::from))
            // Written by this engine from a checked parent; a path that would leave its
            // hierarchy is not followed all the same.
            .filter(|p| p.starts_with('/') && !p.split('/').any(|n| n == ".." || n == "."));
        Cgroup::at(
            &named.unwrap_or_else(|| pier_runtime::cgroups::path_for(&self.cgroup_parent, id)),
        )
    }

    /// Kills every process left in container `id`'s cgroup and waits for it to be empty:
    /// what runs there without a live monitor is watched by nobody.
    fn kill_leftovers(&self, id: &str, cgroup: &Cgroup) {
        let left = pier_runtime::reap::kill_all(cgroup, Duration::from_secs(10));
        if !left.is_empty() {
            tracing::error!(container = %id, pids = ?left, "processes in the container's cgroup survived SIGKILL");
        }
    }

    /// Takes a removed container's directory out of the way at once (a rename) and
    /// deletes it in the background: nothing waits for its files to go. What a crash
    /// leaves in the trash, [`Driver::sweep`] deletes.
    fn discard_dir(&self, id: &str) {
        let dir = self.cdir(id);
        let target = self.trash.join(id);
        match fs::rename(&dir, &target) {
            Ok(()) => match tokio::runtime::Handle::try_current() {
                Ok(rt) => {
                    rt.spawn_blocking(move || {
                        let _ = fs::remove_dir_all(target);
                    });
                }
                Err(_) => {
                    let _ = fs::remove_dir_all(target);
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(_) => {
                let _ = fs::remove_dir_all(&dir);
            }
        }
    }

    /// Lets the container's cgroup use the block devices attached to it (the rules of
    /// an earlier start are replaced, not stacked).
    fn allow_devices(
        &self,
        c: &ContainerInspect,
        volumes: &[VolumeAttachment],
    ) -> EngineResult<()> {
        let minors: Vec<u32> = volumes.iter().filter_map(|v| v.minor).collect();
        if minors.is_empty() {
            return Ok(());
        }
        let path = self.cdir(&c.id).join("config.json");
        let mut spec: serde_json::Value = serde_json::from_slice(
            &fs::read(&path).map_err(|e| internal(format!("cannot read config.json: {e}")))?,
        )
        .map_err(|e| internal(format!("config.json: {e}")))?;
        let devices = &mut spec["linux"]["resources"]["devices"];
        if !devices.is_array() {
            *devices = serde_json::json!([]);
        }
        let list = devices.as_array_mut().expect("an array");
        list.retain(|d| d["major"] != 7);
        for minor in minors {
            list.push(serde_json::json!({"allow": true, "type": "b", "major": 7, "minor": minor, "access": "rwm"}));
        }
        fs::write(&path, serde_json::to_vec(&spec).expect("json"))
            .map_err(|e| internal(format!("cannot write config.json: {e}")))
    }

    /// The monitor's start, after the rootfs is mounted: devices, copy-up, the monitor.
    fn start_monitor(
        &self,
        c: &ContainerInspect,
        volumes: &[VolumeAttachment],
    ) -> EngineResult<Answer> {
        let dir = self.cdir(&c.id);
        self.allow_devices(c, volumes)?;
        self.copy_up(c, volumes)?;
        for f in ["state.json", "exit.json"] {
            let _ = fs::remove_file(dir.join(f));
        }
        // The monitor's command line is what `ps` shows inside the container under
        // `--init`: no host path in it. It finds its directory as its working one.
        self.zygote
            .start_monitor(&dir)
            .map_err(|e| internal(format!("cannot start the monitor: {e}")))
    }

    /// Makes the container's directory: the overlay's directories (the writable layer
    /// on a filesystem of its own with `--storage-opt size`), the log, and the bundle.
    fn make_files(
        &self,
        c: &ContainerInspect,
        img: &serde_json::Value,
        layer_limit: Option<u64>,
        net: &NetMode,
        volumes: &[VolumeAttachment],
    ) -> EngineResult<()> {
        let dir = self.cdir(&c.id);
        for d in ["rootfs", "upper", "work"] {
            fs::create_dir_all(dir.join(d))
                .map_err(|e| internal(format!("cannot create {}: {e}", dir.display())))?;
        }
        dir_permissions(&dir, c)
            .map_err(|e| invalid(format!("cannot run in a user namespace: {e}")))?;
        if let Some(limit) = layer_limit {
            make_layer_fs(&dir, limit)?;
        }
        // Exists from the start, so a client following it holds the same file the
        // monitor appends to.
        fs::File::create(dir.join("container.log"))
            .map_err(|e| internal(format!("cannot create the log: {e}")))?;
        // The user is looked up in the image's /etc/passwd and /etc/group, read from
        // the layers; only when a symlink is on the way is the rootfs mounted.
        let image = self.images.resolve(&c.project, c.image_id.as_str())?;
        let layers: Vec<PathBuf> = image
            .layers
            .iter()
            .rev()
            .map(|l| self.images.layer_dir(&l.diff_id))
            .collect();
        let lookups = [
            pier_runtime::rootfs::find_in_layers(&layers, "etc/passwd"),
            pier_runtime::rootfs::find_in_layers(&layers, "etc/group"),
        ];
        if lookups.contains(&pier_runtime::rootfs::Layered::NeedsMount) {
            self.mount_rootfs(c)?;
            let rootfs = dir.join("rootfs");
            let r = self.write_bundle(c, img, net, volumes, &|u: &str| {
                pier_runtime::rootfs::resolve_user(&rootfs, u)
            });
            unmount(&rootfs);
            return r;
        }
        let read = |l: &pier_runtime::rootfs::Layered| match l {
            pier_runtime::rootfs::Layered::File(p) => fs::read(p).unwrap_or_default(),
            _ => Vec::new(),
        };
        let (passwd, group) = (read(&lookups[0]), read(&lookups[1]));
        self.write_bundle(c, img, net, volumes, &|u: &str| {
            pier_runtime::rootfs::resolve_user_from(&passwd, &group, u)
        })
    }

    /// Fills each empty volume with what the image has at its mount point, as Docker
    /// does on a volume's first use (not with the `nocopy` option). Both sides are
    /// reached through descriptors ([`pier_runtime::in_root`]): the mount point is
    /// resolved inside the container's root, and neither the image's tree nor the volume
    /// (which another running container may share) is ever followed through a symlink.
    fn copy_up(&self, c: &ContainerInspect, volumes: &[VolumeAttachment]) -> EngineResult<()> {
        use rustix::fs::{Mode, OFlags};
        let rootfs = self.cdir(&c.id).join("rootfs");
        let mut root = None;
        for m in volumes.iter().filter(|v| v.copy_up) {
            let (name, data) = (&m.name, &m.host_path);
            if !pier_storage::tree::is_empty(data) {
                continue;
            }
            let fail = |e: std::io::Error| {
                internal(format!(
                    "cannot copy the image's {} into volume {name}: {e}",
                    m.target
                ))
            };
            if root.is_none() {
                root = Some(pier_runtime::in_root::InRoot::open(&rootfs).map_err(fail)?);
            }
            let root = root.as_ref().expect("opened above");
            let src = match root.open_path(Path::new(&m.target), OFlags::PATH | OFlags::DIRECTORY) {
                Ok(fd) => fd,
                // Nothing there, or not a directory: nothing to copy.
                Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT) | Some(libc::ENOTDIR)) => {
                    continue
                }
                Err(e) => return Err(fail(e)),
            };
            let dest = rustix::fs::openat(
                rustix::fs::CWD,
                data,
                OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(|e| fail(e.into()))?;
            pier_runtime::in_root::copy_tree(std::os::fd::AsFd::as_fd(&src), dest).map_err(fail)?;
        }
        Ok(())
    }

    /// A seccomp profile compiled to BPF: each distinct profile once (most containers
    /// share Docker's default, resolved for the default capabilities).
    fn compiled_seccomp(
        &self,
        profile: &oci_spec::runtime::LinuxSeccomp,
    ) -> EngineResult<Arc<Vec<u8>>> {
        let json =
            serde_json::to_value(profile).map_err(|e| internal(format!("seccomp profile: {e}")))?;
        let key = json.to_string();
        let mut cache = self.seccomp_cache.lock().unwrap();
        if let Some(b) = cache.get(&key) {
            return Ok(b.clone());
        }
        let filter = pier_runtime::seccomp::compile(&json)
            .map_err(|e| invalid(format!("the seccomp profile cannot be used: {e}")))?;
        let bytes = Arc::new(pier_runtime::seccomp::to_bytes(&filter));
        if cache.len() >= 64 {
            cache.clear();
        }
        cache.insert(key, bytes.clone());
        Ok(bytes)
    }

    /// The directories of a container's overlay rootfs.
    fn overlay_dirs(&self, c: &ContainerInspect) -> EngineResult<pier_runtime::state::OverlayDirs> {
        overlay_dirs(&self.images, &self.cdir(&c.id), c)
    }

    fn mount_rootfs(&self, c: &ContainerInspect) -> EngineResult<()> {
        mount_rootfs(&self.images, &self.cdir(&c.id), c)
    }
}

/// The directories of a container's overlay rootfs, for the container in `dir`.
fn overlay_dirs(
    images: &ImageStore,
    dir: &Path,
    c: &ContainerInspect,
) -> EngineResult<pier_runtime::state::OverlayDirs> {
    {
        let image = images.resolve(&c.project, c.image_id.as_str())?;
        // An image may hold one layer twice (two build steps that changed the same
        // nothing): overlayfs refuses a directory twice (ELOOP), and the upper copy hides
        // the lower one anyway, so only the upper one is kept.
        let mut seen = std::collections::HashSet::new();
        let lower = image
            .layers
            .iter()
            .rev()
            .map(|l| images.layer_dir(&l.diff_id))
            .filter(|d| seen.insert(d.clone()))
            .collect();
        Ok(pier_runtime::state::OverlayDirs {
            lower,
            upper: dir.join("upper"),
            work: dir.join("work"),
            // What a `--rm` container writes goes with it: overlayfs need not sync it to
            // disk, which it would do at every unmount (a sync of the whole filesystem
            // under it, about a millisecond here). Not in a user namespace: overlayfs
            // refuses it over ID-mapped layers, and a volatile mount leaves a mark in the
            // work directory that a mount without it refuses.
            volatile: c.config.auto_remove && c.config.uid_maps.is_empty(),
        })
    }
}

/// Mounts the overlay rootfs of the container in `dir` (once).
pub(crate) fn mount_rootfs(
    images: &ImageStore,
    dir: &Path,
    c: &ContainerInspect,
) -> EngineResult<()> {
    {
        let rootfs = dir.join("rootfs");
        if mounted(&rootfs) {
            return Ok(());
        }
        let dirs = overlay_dirs(images, dir, c)?;
        let lowers: Vec<String> = dirs.lower.iter().map(|d| d.display().to_string()).collect();
        let data = format!(
            "lowerdir={},upperdir={},workdir={}{}",
            lowers.join(":"),
            dirs.upper.display(),
            dirs.work.display(),
            if dirs.volatile { ",volatile" } else { "" }
        );
        rustix::mount::mount(
            "overlay",
            &rootfs,
            "overlay",
            rustix::mount::MountFlags::empty(),
            Some(std::ffi::CString::new(data).expect("no NUL").as_c_str()),
        )
        .map_err(|e| {
            internal(format!(
                "cannot mount the container's rootfs (overlay): {e}"
            ))
        })
    }
}

impl ContainerDriver {
    fn write_bundle(
        &self,
        c: &ContainerInspect,
        img: &serde_json::Value,
        net: &NetMode,
        volumes: &[VolumeAttachment],
        users: &UserLookup<'_>,
    ) -> EngineResult<()> {
        let dir = self.cdir(&c.id);
        let req = &c.config;
        let rootfs = dir.join("rootfs");
        let user = req
            .user
            .clone()
            .or_else(|| image_str(img, "User"))
            .unwrap_or_else(|| "0".into());
        let (uid, gid, mut additional_gids) = users(&user).map_err(|e| invalid(e.to_string()))?;
        for g in &req.group_add {
            let gid = match g.parse::<u32>() {
                Ok(n) => n,
                Err(_) => {
                    users(&format!("0:{g}"))
                        .map_err(|e| invalid(format!("--group-add {g}: {e}")))?
                        .1
                }
            };
            if !additional_gids.contains(&gid) {
                additional_gids.push(gid);
            }
        }
        // `--uts host`: the host's name, in /etc/hostname and $HOSTNAME too.
        let host_uts = super::host_access::host_uts(req)?;
        let hostname = match &req.hostname {
            _ if host_uts => rustix::system::uname()
                .nodename()
                .to_string_lossy()
                .into_owned(),
            Some(h) => h.clone(),
            None => c.id[..12].to_string(),
        };
        let env = process_env(req, img, uid, &hostname);
        let cwd = workdir_of(req, img)?;
        let mut mounts = etc_files(&dir, net, &hostname)?;
        for m in &c.mounts {
            mounts.push(mount_entry(m, volumes)?);
        }
        let no_new_privs = req
            .security_opt
            .iter()
            .any(|o| o.starts_with("no-new-privileges") && !o.ends_with("false"));
        let seccomp = seccomp_of(req)?;
        let input = SpecInput {
            args: c.command.clone(),
            env,
            cwd,
            uid,
            gid,
            additional_gids,
            hostname,
            domainname: req.domainname.clone(),
            rootfs: rootfs.display().to_string(),
            readonly_rootfs: req.read_only,
            privileged: req.privileged,
            cap_add: req
                .cap_add
                .iter()
                .filter_map(|c| spec::normalize_cap(c))
                .collect(),
            cap_drop: req
                .cap_drop
                .iter()
                .filter_map(|c| spec::normalize_cap(c))
                .collect(),
            no_new_privileges: no_new_privs,
            rlimits: req
                .ulimits
                .iter()
                .filter_map(|u| {
                    ulimit_resource(&u.name).map(|(k, _)| Rlimit {
                        kind: k.into(),
                        soft: u.soft,
                        hard: u.hard,
                    })
                })
                .collect(),
            net: Some(net.clone()),
            memory: req.memory,
            memory_swap: req.memory_swap,
            cpu_quota: req.cpus.map(|c| (c * 100_000.0) as i64),
            cpu_period: req.cpus.map(|_| 100_000),
            // 0 is the default weight, not the smallest one.
            cpu_shares: req.cpu_shares.filter(|s| *s > 0).map(|s| s as u64),
            cpuset_cpus: req.cpuset_cpus.clone(),
            pids_limit: req.pids_limit,
            blkio_weight: req.blkio_weight,
            shm_size: pier_api::limits::shm_size(req),
            terminal: req.tty,
            mounts,
            cgroups_path: self.cgroup_path(c),
            seccomp: None,
            init: req.init,
            uid_maps: req.uid_maps.clone(),
            gid_maps: req.gid_maps.clone(),
            host_pid: super::host_access::host_pid(req)?,
            host_ipc: super::host_access::host_ipc(req)?,
            no_shm: super::host_access::ipc_none(req),
            host_uts,
            sysctls: req.sysctls.clone(),
            devices: req
                .devices
                .iter()
                .map(super::host_access::device_node)
                .collect::<EngineResult<_>>()?,
            host_cgroupns: req.cgroupns_mode.as_deref() == Some("host"),
            device_cgroup_rules: super::host_access::device_cgroup_rules(req)?,
            memory_swappiness: req.memory_swappiness.map(|s| s as u64),
            more: more_limits(req)?,
        };
        // Resolved against the capabilities the container ends up with.
        let caps = spec::capabilities(&input);
        let input = SpecInput {
            seccomp: seccomp.map(|p| pier_runtime::seccomp::resolve(&p, &caps)),
            ..input
        };
        if let Some(c) = &req.cpuset_cpus {
            pier_runtime::cgroups::check_cpuset(c).map_err(invalid)?;
        }
        let spec = spec::build(&input)
            .map_err(|e| internal(format!("the runtime spec is invalid: {e}")))?;
        // A limit this host cannot apply is refused now, not dropped at the start.
        if let Some(r) = spec.linux().as_ref().and_then(|l| l.resources().as_ref()) {
            self.cgroups.check(r).map_err(|e| invalid(e.to_string()))?;
        }
        spec.save(dir.join("config.json"))
            .map_err(|e| internal(format!("cannot write config.json: {e}")))?;
        if let Some(profile) = spec.linux().as_ref().and_then(|l| l.seccomp().as_ref()) {
            let bpf = self.compiled_seccomp(profile)?;
            fs::write(dir.join(pier_runtime::seccomp::COMPILED), &*bpf).map_err(|e| {
                internal(format!(
                    "cannot write {}: {e}",
                    pier_runtime::seccomp::COMPILED
                ))
            })?;
        }
        self.write_monitor_config(c)
    }

    /// The monitor's `monitor.json`: logs, runtime, terminal and stdin, the overlay it
    /// mounts for a container in a user namespace.
    fn write_monitor_config(&self, c: &ContainerInspect) -> EngineResult<()> {
        let req = &c.config;
        let (log_max_bytes, log_max_files) = log_limits(&req.log_opts)?;
        let monitor = MonitorConfig {
            id: c.id.clone(),
            log_max_bytes,
            log_max_files,
            runtime: req.runtime.clone().unwrap_or_else(|| "pier".into()),
            tty: req.tty,
            stdin: req.interactive,
            hold_for_attach: req.attach,
            no_log: req.log_driver.as_deref() == Some("none"),
            overlay: if req.uid_maps.is_empty() {
                None
            } else {
                Some(self.overlay_dirs(c)?)
            },
        };
        write_json(&self.cdir(&c.id).join("monitor.json"), &monitor)
            .map_err(|e| internal(format!("cannot write monitor.json: {e}")))
    }

    /// Prepares `pier __exec` for a running container: the command line to spawn (for
    /// [`crate::sessions::exec`], which spawns and reaps it).
    fn exec_command(
        &self,
        c: &ContainerInspect,
        req: &ExecCreate,
    ) -> EngineResult<std::process::Command> {
        let pid = c.state.pid.ok_or_else(|| {
            EngineError::new(
                ErrorKind::Conflict,
                format!("container {} has no process", c.name),
            )
        })?;
        let dir = self.cdir(&c.id);
        let ExecProcess {
            env,
            cwd,
            uid,
            gid,
            additional_gids,
        } = exec_process(&dir, req)?;
        let request = pier_runtime::exec::ExecRequest {
            pid,
            args: req.cmd.clone(),
            env,
            cwd,
            uid,
            gid,
            additional_gids,
            tty: req.tty,
            interactive: req.interactive,
            privileged: req.privileged,
        };
        let exe = pier_runtime::sealed::current().map_err(|e| internal(e.to_string()))?;
        let mut cmd = std::process::Command::new(exe.path());
        // Its command line is visible in the container (ps): no host path in it.
        std::os::unix::process::CommandExt::arg0(&mut cmd, "pier");
        cmd.arg("__exec")
            .arg(&dir)
            .arg(serde_json::to_string(&request).expect("json"));
        Ok(cmd)
    }
}

/// Points the bundle's namespace of type `kind` (`pid`, `ipc`) at process `pid`'s (another
/// container's init), to be joined rather than made. Joining an IPC namespace takes that
/// container's `/dev/shm` too: the runtime clones it from the process's mount namespace.
pub(crate) fn join_namespace_of(dir: &Path, kind: &str, pid: i32) -> EngineResult<()> {
    let file = dir.join("config.json");
    let mut spec: serde_json::Value = serde_json::from_slice(
        &fs::read(&file).map_err(|e| internal(format!("cannot read config.json: {e}")))?,
    )
    .map_err(|e| internal(format!("config.json: {e}")))?;
    let Some(list) = spec["linux"]["namespaces"].as_array_mut() else {
        return Err(internal("config.json has no namespaces"));
    };
    list.retain(|n| n["type"] != kind);
    list.push(serde_json::json!({"type": kind, "path": format!("/proc/{pid}/ns/{kind}")}));
    if kind == "ipc" {
        let Some(mounts) = spec["mounts"].as_array_mut() else {
            return Err(internal("config.json has no mounts"));
        };
        mounts.retain(|m| m["destination"] != "/dev/shm");
        mounts.push(serde_json::json!({
            "destination": "/dev/shm",
            "type": "bind",
            "source": format!("/proc/{pid}/root/dev/shm"),
            "options": ["rbind"],
        }));
    }
    fs::write(&file, serde_json::to_vec(&spec).expect("json"))
        .map_err(|e| internal(format!("cannot write config.json: {e}")))
}

/// What an exec runs as, in the instance in `dir` (its bundle's process, with the
/// exec's user, environment and working directory over it): for a container's exec
/// helper and a VM's alike.
pub(crate) struct ExecProcess {
    pub env: Vec<String>,
    pub cwd: String,
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
}

pub(crate) fn exec_process(dir: &Path, req: &ExecCreate) -> EngineResult<ExecProcess> {
    let spec = oci_spec::runtime::Spec::load(dir.join("config.json"))
        .map_err(|e| internal(format!("cannot read the instance's spec: {e}")))?;
    let process = spec.process().clone().unwrap_or_default();
    let (uid, gid, additional_gids) = match &req.user {
        Some(u) => pier_runtime::rootfs::resolve_user(&dir.join("rootfs"), u)
            .map_err(|e| invalid(e.to_string()))?,
        None => (
            process.user().uid(),
            process.user().gid(),
            process.user().additional_gids().clone().unwrap_or_default(),
        ),
    };
    let mut env = process.env().clone().unwrap_or_default();
    for e in &req.env {
        let k = e.split('=').next().unwrap_or("");
        env.retain(|x| x.split('=').next() != Some(k));
        env.push(e.clone());
    }
    let cwd = req
        .workdir
        .clone()
        .unwrap_or_else(|| process.cwd().display().to_string());
    if !cwd.starts_with('/') {
        return Err(invalid(format!(
            "the working directory {cwd:?} must be an absolute path"
        )));
    }
    Ok(ExecProcess {
        env,
        cwd,
        uid,
        gid,
        additional_gids,
    })
}

fn mounted(path: &Path) -> bool {
    let p = path.to_string_lossy();
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .any(|l| l.split(' ').nth(4) == Some(&p))
}

/// Checks that an unprivileged user can reach `dir`: every directory above it must let
/// others search it.
fn searchable_by_others(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    for p in dir.ancestors().skip(1) {
        let mode = fs::metadata(p)?.permissions().mode();
        if mode & 0o001 == 0 {
            return Err(std::io::Error::other(format!(
                "{} is not searchable by other users, which the container's root is on the host; allow it with chmod o+x {}",
                p.display(),
                p.display()
            )));
        }
    }
    Ok(())
}

pub(crate) fn unmount(path: &Path) {
    while mounted(path) {
        if rustix::mount::unmount(path, rustix::mount::UnmountFlags::DETACH).is_err() {
            break;
        }
    }
}

/// The process's environment: the image's, then the request's (later values of a name
/// win), with PATH, HOSTNAME, TERM (with a terminal) and HOME as Docker sets them.
fn process_env(
    req: &ContainerCreate,
    img: &serde_json::Value,
    uid: u32,
    hostname: &str,
) -> Vec<String> {
    let mut env: Vec<String> = img["Env"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    if !env.iter().any(|e| e.starts_with("PATH=")) {
        env.insert(0, DEFAULT_PATH.into());
    }
    for e in &req.env {
        let k = e.split('=').next().unwrap_or("");
        env.retain(|x| x.split('=').next() != Some(k));
        env.push(e.clone());
    }
    if !env.iter().any(|e| e.starts_with("HOSTNAME=")) {
        env.push(format!("HOSTNAME={hostname}"));
    }
    if req.tty && !env.iter().any(|e| e.starts_with("TERM=")) {
        env.push("TERM=xterm".into());
    }
    if !env.iter().any(|e| e.starts_with("HOME=")) {
        env.push(if uid == 0 {
            "HOME=/root".into()
        } else {
            "HOME=/".into()
        });
    }
    env
}

/// A string field of an image's config, when set and not empty.
fn image_str(img: &serde_json::Value, key: &str) -> Option<String> {
    img[key]
        .as_str()
        .filter(|s| !s.is_empty())
        .map(String::from)
}

/// The working directory: the request's, else the image's, else `/`; absolute.
fn workdir_of(req: &ContainerCreate, img: &serde_json::Value) -> EngineResult<String> {
    let cwd = req
        .workdir
        .clone()
        .or_else(|| image_str(img, "WorkingDir"))
        .unwrap_or_else(|| "/".into());
    if !cwd.starts_with('/') {
        return Err(invalid(format!(
            "the working directory {cwd:?} must be an absolute path"
        )));
    }
    Ok(cwd)
}

/// Writes /etc/hostname and /etc/hosts in the container's directory `dir`, and the
/// empty resolv.conf each start fills (the host's own on the host network); returns the
/// bind mounts of the three.
fn etc_files(dir: &Path, net: &NetMode, hostname: &str) -> EngineResult<Vec<serde_json::Value>> {
    fs::write(dir.join("hostname"), format!("{hostname}\n"))
        .map_err(|e| internal(e.to_string()))?;
    let hosts = if *net == NetMode::Host {
        fs::read_to_string("/etc/hosts").unwrap_or_default()
    } else {
        format!("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\t{hostname}\n")
    };
    fs::write(dir.join("hosts"), hosts).map_err(|e| internal(e.to_string()))?;
    let mut mounts = vec![
        serde_json::json!({"destination": "/etc/hostname", "type": "bind", "source": dir.join("hostname"), "options": ["rbind", "rprivate"]}),
        serde_json::json!({"destination": "/etc/hosts", "type": "bind", "source": dir.join("hosts"), "options": ["rbind", "rprivate"]}),
    ];
    if *net == NetMode::Host {
        if Path::new("/etc/resolv.conf").exists() {
            mounts.push(serde_json::json!({"destination": "/etc/resolv.conf", "type": "bind", "source": "/etc/resolv.conf", "options": ["rbind", "rprivate", "ro"]}));
        }
    } else {
        // Written at each start, when the container's networks are known.
        fs::write(dir.join("resolv.conf"), "").map_err(|e| internal(e.to_string()))?;
        mounts.push(serde_json::json!({"destination": "/etc/resolv.conf", "type": "bind", "source": dir.join("resolv.conf"), "options": ["rbind", "rprivate"]}));
    }
    Ok(mounts)
}

/// The seccomp profile asked for: none when privileged or `unconfined`, a given one, or
/// Docker's default.
fn seccomp_of(req: &ContainerCreate) -> EngineResult<Option<pier_runtime::seccomp::Profile>> {
    let asked = req.security_opt.iter().rev().find_map(|o| {
        o.strip_prefix("seccomp=")
            .or_else(|| o.strip_prefix("seccomp:"))
    });
    Ok(match asked {
        _ if req.privileged => None,
        Some("unconfined") => None,
        Some(profile) => Some(
            serde_json::from_str(profile)
                .map_err(|e| invalid(format!("the seccomp profile is not valid: {e}")))?,
        ),
        None => Some(pier_runtime::seccomp::docker_default()),
    })
}

/// Only the daemon reads a container's directory; in a user namespace the container's
/// root group passes through it to the rootfs and bound files.
fn dir_permissions(dir: &Path, c: &ContainerInspect) -> std::io::Result<()> {
    let root_map = c
        .config
        .gid_maps
        .iter()
        .chain(&c.config.uid_maps)
        .find(|m| m.container_id == 0);
    let (mode, group) = match root_map {
        Some(m) => (0o710, Some(m.host_id)),
        None => (0o700, None),
    };
    fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(mode))?;
    if let Some(g) = group {
        std::os::unix::fs::chown(dir, Some(0), Some(g))?;
        searchable_by_others(dir)?;
    }
    Ok(())
}

/// Puts the writable layer on an ext4 filesystem of its own, `limit` bytes large.
fn make_layer_fs(dir: &Path, limit: u64) -> EngineResult<()> {
    let fsdir = dir.join("layer");
    fs::create_dir_all(&fsdir).map_err(|e| internal(e.to_string()))?;
    pier_storage::ext4::make(&dir.join("layer.img"), limit, None)
        .and_then(|_| pier_storage::ext4::mount(&dir.join("layer.img"), &fsdir))
        .map_err(|e| {
            let e = crate::volumes::st(e);
            EngineError::new(
                e.kind(),
                format!("cannot make the writable layer: {}", e.message()),
            )
        })?;
    for d in ["upper", "work"] {
        fs::create_dir(fsdir.join(d)).map_err(|e| internal(e.to_string()))?;
        fs::remove_dir(dir.join(d)).map_err(|e| internal(e.to_string()))?;
        std::os::unix::fs::symlink(format!("layer/{d}"), dir.join(d))
            .map_err(|e| internal(e.to_string()))?;
    }
    Ok(())
}

/// Is `pid` still the monitor of the container in `dir`? Its working directory is the
/// container's (see `start_locked`); a monitor forked by the zygote renamed itself
/// `pier __monitor`.
fn monitor_alive(pid: i32, dir: &Path) -> bool {
    pier_runtime::monitor::helper_dir(pid, pier_runtime::monitor::ARG).is_some_and(|cwd| cwd == dir)
}

/// The monitors running now, by their container's directory (their working directory).
fn live_monitors() -> HashMap<PathBuf, i32> {
    pier_runtime::monitor::helpers(pier_runtime::monitor::ARG)
        .into_iter()
        .map(|(pid, cwd)| (cwd, pid))
        .collect()
}

/// Waits (at most 10 s) until the monitor `pid` of the container in `dir` has said how
/// its start went (its state or exit file is there) or is gone.
async fn settle(pid: i32, dir: &Path) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while monitor_alive(pid, dir)
        && !dir.join("state.json").exists()
        && !dir.join("exit.json").exists()
        && std::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Kills the monitor `pid` of the container in `dir`, if it still is that, and waits
/// (at most 5 s) for it to be gone.
fn kill_monitor(pid: i32, dir: &Path) {
    pier_runtime::reap::kill_checked(pid, || monitor_alive(pid, dir), Duration::from_secs(5));
}

/// The runtime spec's entry of one of the container's mounts.
/// Docker's memory reservation, OOM, memory-node and per-device I/O limits for the
/// runtime: each device named by its host path is looked up for its numbers, and must be
/// a block device.
fn more_limits(req: &ContainerCreate) -> EngineResult<pier_runtime::spec::MoreLimits> {
    use pier_runtime::spec::DeviceIo;
    let mut device_io = Vec::new();
    for d in &req.device_io {
        let st = rustix::fs::stat(d.path.as_str()).map_err(|e| {
            invalid(format!(
                "the device {} for a per-device I/O limit: {e}",
                d.path
            ))
        })?;
        if rustix::fs::FileType::from_raw_mode(st.st_mode) != rustix::fs::FileType::BlockDevice {
            return Err(invalid(format!(
                "{} is not a block device: per-device I/O limits take a disk such as /dev/sda",
                d.path
            )));
        }
        device_io.push(DeviceIo {
            major: u64::from(rustix::fs::major(st.st_rdev)),
            minor: u64::from(rustix::fs::minor(st.st_rdev)),
            kind: d.kind,
            value: d.value,
        });
    }
    Ok(pier_runtime::spec::MoreLimits {
        memory_reservation: req.memory_reservation,
        oom_kill_disable: req.oom_kill_disable,
        oom_score_adj: req.oom_score_adj,
        cpuset_mems: req.cpuset_mems.clone(),
        device_io,
        kernel_memory: req.kernel_memory,
        kernel_memory_tcp: req.kernel_memory_tcp,
        cpu_rt_period: req.cpu_rt_period.map(|p| p as u64),
        cpu_rt_runtime: req.cpu_rt_runtime,
    })
}

fn mount_entry(m: &MountSpec, volumes: &[VolumeAttachment]) -> EngineResult<serde_json::Value> {
    let mut options: Vec<String> = Vec::new();
    let entry = match m.kind {
        MountKind::Tmpfs => {
            options.extend(["nosuid".to_string(), "nodev".to_string()]);
            if let Some(sz) = m.options.get("size") {
                let n = sz.parse::<ByteSize>().map_err(|e| invalid(e.to_string()))?;
                options.push(format!("size={n}"));
            }
            options.push(format!(
                "mode={}",
                m.options.get("mode").map(String::as_str).unwrap_or("1777")
            ));
            for k in ["uid", "gid", "nr_inodes", "nr_blocks"] {
                if let Some(v) = m.options.get(k) {
                    options.push(format!("{k}={v}"));
                }
            }
            if m.read_only {
                options.push("ro".into());
            }
            serde_json::json!({"destination": m.target, "type": "tmpfs", "source": "tmpfs", "options": options})
        }
        MountKind::Volume if m.options.get("block").map(String::as_str) == Some("device") => {
            let node = volume_path(m, volumes)?;
            options.extend(["bind".to_string(), "rprivate".to_string()]);
            if m.read_only {
                options.push("ro".into());
            }
            serde_json::json!({"destination": m.target, "type": "bind", "source": node, "options": options})
        }
        MountKind::Bind | MountKind::Volume => {
            let source = match m.kind {
                MountKind::Bind => PathBuf::from(m.source.clone().unwrap_or_default()),
                _ => volume_path(m, volumes)?,
            };
            // `BindOptions.NonRecursive`: the source without the mounts below it.
            options.push(if m.options.contains_key("non_recursive") {
                "bind".into()
            } else {
                "rbind".into()
            });
            options.push(
                m.options
                    .get("propagation")
                    .cloned()
                    .unwrap_or_else(|| "rprivate".into()),
            );
            if m.read_only {
                options.push("ro".into());
            }
            serde_json::json!({"destination": m.target, "type": "bind", "source": source, "options": options})
        }
    };
    Ok(entry)
}

/// Where the volume mounted by `m` is on the host, as the engine attached it.
fn volume_path(m: &MountSpec, volumes: &[VolumeAttachment]) -> EngineResult<PathBuf> {
    volumes
        .iter()
        .find(|v| v.target == m.target)
        .map(|v| v.host_path.clone())
        .ok_or_else(|| internal(format!("the volume on {} was not attached", m.target)))
}

/// The runtime's view of a [`NetworkAttachment`].
fn net_mode(net: &NetworkAttachment) -> EngineResult<NetMode> {
    Ok(match net {
        NetworkAttachment::Isolated => NetMode::None,
        NetworkAttachment::Host => NetMode::Host,
        NetworkAttachment::Namespace(p) => NetMode::Path(p.display().to_string()),
    })
}

fn handle_of(s: Running) -> InstanceHandle {
    InstanceHandle {
        pid: s.pid,
        monitor_pid: Some(s.monitor_pid),
        started_at: s.started_at,
    }
}

fn start_error_kind(kind: StartKind) -> ErrorKind {
    match kind {
        StartKind::Invalid => ErrorKind::InvalidInput,
        StartKind::NotFound => ErrorKind::NotFound,
        StartKind::Conflict => ErrorKind::Conflict,
        StartKind::Busy => ErrorKind::Unavailable,
        StartKind::NoSpace => ErrorKind::InsufficientStorage,
        StartKind::Host => ErrorKind::Internal,
    }
}

/// Waits until process `pid` exits (through a pidfd); at once if it cannot be watched.
async fn wait_pid(pid: i32) {
    let Some(pid) = rustix::process::Pid::from_raw(pid) else {
        return;
    };
    let Ok(fd) = rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty()) else {
        return;
    };
    // SAFETY: the AsyncFd owns the pidfd and is the only user of it.
    let registered = unsafe {
        tokio::io::unix::AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE)
    };
    if let Ok(afd) = registered {
        let _ = afd.readable().await;
    }
}

impl ContainerDriver {
    /// The live monitor of the container in `dir`, if any.
    fn live_monitor(&self, dir: &Path) -> Option<i32> {
        live_monitors().get(dir).copied()
    }

    /// A running `--rm` container whose record a crash lost: its directory's copy of
    /// the record, and its handle.
    fn unrecorded(&self, dir: &Path) -> Option<(ContainerInspect, InstanceHandle)> {
        let Record(c) = read_json::<Record>(&dir.join(RECORD_COPY))?;
        let s = read_json::<Running>(&dir.join("state.json"))?;
        let named = c.id == dir.file_name().unwrap_or_default().to_string_lossy();
        (named && monitor_alive(s.monitor_pid, dir)).then(|| (c, handle_of(s)))
    }
}

impl Driver for ContainerDriver {
    fn kind(&self) -> &'static str {
        "container"
    }

    fn prepare(
        &self,
        c: &ContainerInspect,
        image_config: &serde_json::Value,
        network: &NetworkAttachment,
        volumes: &[VolumeAttachment],
    ) -> EngineResult<()> {
        let made = net_mode(network).and_then(|net| {
            let limit = crate::instances::service::layer_limit(&c.config)?;
            self.make_files(c, image_config, limit, &net, volumes)?;
            if c.config.auto_remove {
                write_json(&self.cdir(&c.id).join(RECORD_COPY), &Record(c.clone()))
                    .map_err(|e| internal(format!("cannot write {RECORD_COPY}: {e}")))?;
            }
            Ok(())
        });
        if made.is_err() {
            let dir = self.cdir(&c.id);
            unmount(&dir.join("rootfs"));
            let _ = pier_storage::ext4::unmount(&dir.join("layer"));
            let _ = fs::remove_dir_all(&dir);
        }
        made
    }

    fn update(
        &self,
        c: &ContainerInspect,
        changes: &ContainerUpdate,
        running: bool,
    ) -> EngineResult<()> {
        let req = &c.config;
        if running {
            let u = pier_runtime::cgroups::LimitsUpdate {
                memory: changes.memory.map(|_| req.memory.unwrap_or(-1)),
                memory_swap: changes.memory_swap.map(|_| req.memory_swap.unwrap_or(-1)),
                cpu_quota: changes
                    .cpus
                    .map(|_| req.cpus.map_or(-1, |c| (c * 100_000.0) as i64)),
                cpu_shares: changes
                    .cpu_shares
                    .map(|_| req.cpu_shares.unwrap_or(0).max(0) as u64),
                pids_limit: changes.pids_limit,
            };
            self.cgroup(c)
                .update(&u)
                .map_err(|e| invalid(format!("cannot update container {}: {e}", c.name)))?;
        }
        // The bundle's spec, which every later start reads.
        let path = self.cdir(&c.id).join("config.json");
        let mut spec: serde_json::Value = serde_json::from_slice(
            &fs::read(&path).map_err(|e| internal(format!("cannot read config.json: {e}")))?,
        )
        .map_err(|e| internal(format!("config.json: {e}")))?;
        let r = &mut spec["linux"]["resources"];
        if !r.is_object() {
            *r = serde_json::json!({});
        }
        let r = r.as_object_mut().expect("an object");
        let mut set = |section: &str, key: &str, v: Option<serde_json::Value>| {
            let sec = r.entry(section).or_insert_with(|| serde_json::json!({}));
            if !sec.is_object() {
                *sec = serde_json::json!({});
            }
            let sec = sec.as_object_mut().expect("an object");
            match v {
                Some(v) => {
                    sec.insert(key.to_string(), v);
                }
                None => {
                    sec.remove(key);
                }
            }
        };
        set("memory", "limit", req.memory.map(Into::into));
        set("memory", "swap", req.memory_swap.map(Into::into));
        set(
            "cpu",
            "quota",
            req.cpus.map(|c| ((c * 100_000.0) as i64).into()),
        );
        set("cpu", "period", req.cpus.map(|_| 100_000u64.into()));
        set(
            "cpu",
            "shares",
            req.cpu_shares.filter(|s| *s > 0).map(Into::into),
        );
        // The spec's pids section needs its limit: no limit is no section.
        match req.pids_limit.filter(|p| *p > 0) {
            Some(p) => {
                r.insert("pids".into(), serde_json::json!({ "limit": p }));
            }
            None => {
                r.remove("pids");
            }
        }
        fs::write(&path, serde_json::to_vec(&spec).expect("json"))
            .map_err(|e| internal(format!("cannot write config.json: {e}")))
    }

    fn start(&self, c: &ContainerInspect, volumes: &[VolumeAttachment]) -> EngineResult<Started> {
        let rootfs = self.cdir(&c.id).join("rootfs");
        self.mount_rootfs(c)?;
        match self.start_monitor(c, volumes) {
            Ok(Answer::Started { pid }) => {
                let running: Option<Running> = read_json(&self.cdir(&c.id).join("state.json"));
                Ok(Started::Running(InstanceHandle {
                    pid,
                    monitor_pid: running.as_ref().map(|r| r.monitor_pid),
                    started_at: running.map(|r| r.started_at).unwrap_or_else(now_rfc3339),
                }))
            }
            Ok(Answer::Failed(failure)) => {
                unmount(&rootfs);
                Ok(Started::Failed {
                    kind: start_error_kind(failure.kind),
                    exit_code: failure.code,
                    message: failure.to_string(),
                })
            }
            Err(e) => {
                unmount(&rootfs);
                Err(e)
            }
        }
    }

    fn wait(&self, _c: &ContainerInspect, handle: &InstanceHandle) -> BoxFuture<'static, ()> {
        let monitor = handle.monitor_pid;
        Box::pin(async move {
            if let Some(m) = monitor {
                wait_pid(m).await;
            }
        })
    }

    fn reap(&self, c: &ContainerInspect) -> ExitInfo {
        let dir = self.cdir(&c.id);
        let exit: Exited = read_json(&dir.join("exit.json")).unwrap_or(Exited {
            exit_code: 255,
            finished_at: now_rfc3339(),
            oom_killed: false,
            error: Some("the container's monitor died without recording an exit".into()),
        });
        // A monitor that died without recording an exit may have left the container
        // running: nothing may stay in its cgroup (an empty or absent one costs a read).
        let cgroup = self.cgroup(c);
        self.kill_leftovers(&c.id, &cgroup);
        unmount(&dir.join("rootfs"));
        let _ = cgroup.remove();
        ExitInfo {
            exit_code: exit.exit_code,
            finished_at: exit.finished_at,
            oom_killed: exit.oom_killed,
            error: exit.error,
        }
    }

    /// Sends `sig` to the container's init through its monitor, which holds a pidfd of
    /// it: no reused pid can be hit, and no cgroup needs to be found. When no monitor
    /// answers (it died, or an older Pier started it), the pid is signalled if it still
    /// sits in the container's cgroup.
    fn signal(&self, c: &ContainerInspect, sig: i32) -> EngineResult<()> {
        use pier_runtime::attach::SignalError;
        let Some(pid) = c.state.pid else {
            return Err(EngineError::new(
                ErrorKind::Conflict,
                format!("container {} is not running", c.name),
            ));
        };
        match pier_runtime::attach::send_signal(&self.cdir(&c.id), sig) {
            Ok(()) | Err(SignalError::Exited) => return Ok(()),
            Err(SignalError::Refused(e)) => {
                return Err(internal(format!("cannot signal container {}: {e}", c.name)))
            }
            Err(SignalError::NoMonitor(e)) => {
                tracing::debug!(container = %c.id, error = %e, "no monitor answers; signalling the pid")
            }
        }
        let cgroup = fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
        if !cgroup.contains(&self.cgroup_path(c)) {
            return Ok(()); // already gone
        }
        // SAFETY: kill(2) with a checked pid and signal number.
        if unsafe { libc::kill(pid, sig) } < 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::ESRCH) {
                return Err(internal(format!("cannot signal container {}: {e}", c.name)));
            }
        }
        Ok(())
    }

    fn pause(&self, c: &ContainerInspect, paused: bool) -> EngineResult<()> {
        self.cgroup(c)
            .freeze(paused)
            .map_err(|e| internal(format!("{e}: {}", e.source)))
    }

    fn resize(&self, c: &ContainerInspect, rows: u16, cols: u16) -> EngineResult<()> {
        use std::io::Write;
        let mut s = pier_runtime::attach::connect(&self.cdir(&c.id))
            .map_err(|e| internal(format!("cannot reach container {}: {e}", c.name)))?;
        s.write_all(&pier_runtime::attach::resize(rows, cols))
            .map_err(|e| internal(format!("cannot resize container {}: {e}", c.name)))
    }

    fn stats(&self, c: &ContainerInspect) -> InstanceStats {
        let s = self.cgroup(c).stats();
        InstanceStats {
            cpu_usage_ns: s.cpu_usage_ns,
            memory_usage: s.memory_usage,
            memory_limit: s.memory_limit,
            pids_current: s.pids_current,
            pids_limit: s.pids_limit,
            io_read_bytes: s.io_read_bytes,
            io_write_bytes: s.io_write_bytes,
        }
    }

    fn processes(&self, c: &ContainerInspect) -> Vec<i32> {
        self.cgroup(c).pids()
    }

    fn exec(&self, c: &ContainerInspect, req: &ExecCreate) -> EngineResult<std::process::Command> {
        self.exec_command(c, req)
    }

    fn attach(&self, c: &ContainerInspect) -> std::io::Result<std::os::unix::net::UnixStream> {
        pier_runtime::attach::connect(&self.cdir(&c.id))
    }

    fn logs(&self, c: &ContainerInspect) -> PathBuf {
        self.cdir(&c.id).join("container.log")
    }

    fn kill_all(&self, c: &ContainerInspect) {
        let dir = self.cdir(&c.id);
        if let Some(m) = c.state.monitor_pid.or_else(|| self.live_monitor(&dir)) {
            kill_monitor(m, &dir);
        }
        self.kill_leftovers(&c.id, &self.cgroup(c));
    }

    fn destroy(&self, c: &ContainerInspect) {
        let dir = self.cdir(&c.id);
        let cgroup = self.cgroup(c);
        self.kill_leftovers(&c.id, &cgroup);
        unmount(&dir.join("rootfs"));
        unmount(&dir.join("layer"));
        let _ = cgroup.remove();
        self.discard_dir(&c.id);
    }

    fn adopt<'a>(&'a self, c: &'a ContainerInspect) -> BoxFuture<'a, Found> {
        Box::pin(async move {
            let dir = self.cdir(&c.id);
            // A writable layer of limited size lives on its own filesystem.
            let layer = dir.join("layer.img");
            if layer.exists() && !mounted(&dir.join("layer")) {
                if let Err(e) = pier_storage::ext4::mount(&layer, &dir.join("layer")) {
                    tracing::warn!(container = %c.id, error = %e.chain(), "cannot mount a writable layer");
                }
            }
            // A monitor the last daemon started may not have answered yet.
            let live = self.live_monitor(&dir);
            if let Some(m) = live {
                settle(m, &dir).await;
            }
            let last: Option<Running> = read_json(&dir.join("state.json"));
            let recorded = c.state.monitor_pid.is_some_and(|p| monitor_alive(p, &dir));
            let alive = match &last {
                Some(s) if c.state.started_at.as_deref() != Some(s.started_at.as_str()) => {
                    monitor_alive(s.monitor_pid, &dir) && !dir.join("exit.json").exists()
                }
                _ => recorded,
            };
            if !alive {
                // Nothing of it may run unwatched.
                if let Some(m) = live {
                    kill_monitor(m, &dir);
                }
                self.kill_leftovers(&c.id, &self.cgroup(c));
            }
            Found {
                last_start: last.map(handle_of),
                alive,
                exists: dir.exists(),
            }
        })
    }

    fn sweep(&self, known: &HashSet<String>) -> Vec<(ContainerInspect, InstanceHandle)> {
        let mut adopt = Vec::new();
        let monitors = live_monitors();
        if let Ok(rd) = fs::read_dir(&self.dir) {
            for e in rd.flatten() {
                let id = e.file_name().to_string_lossy().into_owned();
                if known.contains(&id) {
                    continue;
                }
                if let Some(found) = self.unrecorded(&e.path()) {
                    adopt.push(found);
                    continue;
                }
                if let Some(&m) = monitors.get(&e.path()) {
                    kill_monitor(m, &e.path());
                }
                let cgroup = self.bundle_cgroup(&e.path(), &id);
                self.kill_leftovers(&id, &cgroup);
                unmount(&e.path().join("rootfs"));
                unmount(&e.path().join("layer"));
                let _ = cgroup.remove();
                let _ = fs::remove_dir_all(e.path());
                tracing::info!(container = %id, "removed the leftovers of a container with no record");
            }
        }
        // Directories of removed containers whose deletion a stop interrupted.
        if let Ok(rd) = fs::read_dir(&self.trash) {
            for e in rd.flatten() {
                let _ = fs::remove_dir_all(e.path());
            }
        }
        adopt
    }
}
