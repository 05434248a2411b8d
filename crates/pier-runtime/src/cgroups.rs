//! Control groups, v1 (per-controller hierarchies, as on this hybrid host) and v2 (the
//! unified hierarchy most hosts run today), detected at start.
//!
//! Each container gets the spec's `cgroupsPath` (`/pier/<id>` for the default daemon) in
//! every hierarchy it uses. Limits come from the OCI spec's `linux.resources`; the same
//! numbers map onto v1 and v2 files. Device rules ([`crate::devices`]) go to the v1
//! devices controller, or on v2 into a BPF device program attached to the cgroup.
//!
//! Pier fails closed: [`Host::detect`] refuses a host with no cgroup hierarchy (or a v1
//! host without the devices and freezer controllers), and a limit asked for on a host
//! whose controller for it is missing is an error, never silently dropped.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use oci_spec::runtime::LinuxResources;

use crate::devices;

const BASE: &str = "/sys/fs/cgroup";
const V1_CONTROLLERS: [&str; 8] = [
    "memory", "pids", "cpu", "cpuacct", "cpuset", "blkio", "freezer", "devices",
];
/// v1 controllers without which no container runs: device rules, and freezing
/// (pause, and stopping every process at once).
const V1_REQUIRED: [&str; 2] = ["devices", "freezer"];

#[derive(Debug, thiserror::Error)]
#[error("cgroup {path}: cannot {op}")]
pub struct CgroupError {
    pub op: &'static str,
    pub path: String,
    #[source]
    pub source: io::Error,
}

fn err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> CgroupError + 'a {
    move |source| CgroupError {
        op,
        path: path.display().to_string(),
        source,
    }
}

/// Which cgroup layout the host has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    V1,
    V2,
}

impl Layout {
    pub fn detect() -> Layout {
        if Path::new(BASE).join("cgroup.controllers").exists() {
            Layout::V2
        } else {
            Layout::V1
        }
    }
}

/// Why the host cannot confine containers.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error(
        "no cgroup hierarchy is mounted at {BASE}, so containers could be neither limited nor \
         stopped: mount cgroup2 there (mount -t cgroup2 none {BASE}) or the v1 controllers; \
         a daemon started with `ip netns exec` sees none (it remounts /sys): start it with \
         `nsenter --net=/run/netns/NAME` instead"
    )]
    NoHierarchy,
    #[error(
        "the cgroup v1 {0} controller is not mounted at {BASE}/{0}; Pier needs it to confine \
         containers: mount it (mount -t cgroup -o {0} cgroup {BASE}/{0}) or boot with the \
         unified hierarchy (systemd.unified_cgroup_hierarchy=1)"
    )]
    MissingController(&'static str),
}

/// The cgroups the host offers, found at start: the layout and the controllers that
/// can take limits.
#[derive(Debug, Clone)]
pub struct Host {
    pub layout: Layout,
    pub controllers: Vec<String>,
}

impl Host {
    /// Finds the host's cgroups; an error when containers could not be confined.
    pub fn detect() -> Result<Host, HostError> {
        Self::detect_at(Path::new(BASE))
    }

    fn detect_at(base: &Path) -> Result<Host, HostError> {
        if let Ok(list) = fs::read_to_string(base.join("cgroup.controllers")) {
            return Ok(Host {
                layout: Layout::V2,
                controllers: list.split_whitespace().map(str::to_string).collect(),
            });
        }
        let present: Vec<String> = V1_CONTROLLERS
            .iter()
            .filter(|c| base.join(c).join("cgroup.procs").exists())
            .map(|c| c.to_string())
            .collect();
        if present.is_empty() {
            return Err(HostError::NoHierarchy);
        }
        if let Some(missing) = V1_REQUIRED
            .iter()
            .find(|c| !present.iter().any(|p| p == *c))
        {
            return Err(HostError::MissingController(missing));
        }
        Ok(Host {
            layout: Layout::V1,
            controllers: present,
        })
    }

    /// An error naming the first limit in `r` that this host has no controller for.
    pub fn check(&self, r: &LinuxResources) -> Result<(), MissingController> {
        for (asked, controller, option) in wanted_controllers(self.layout, r) {
            if asked && !self.controllers.iter().any(|c| c == controller) {
                return Err(MissingController { controller, option });
            }
        }
        // Limits only cgroup v1 has, and only some kernels.
        let mem = r.memory().as_ref();
        let cpu = r.cpu().as_ref();
        for (asked, controller, file, option) in [
            (
                mem.is_some_and(|m| m.kernel().is_some() || m.kernel_tcp().is_some()),
                "memory",
                "memory.kmem.limit_in_bytes",
                "--kernel-memory",
            ),
            (
                cpu.is_some_and(|c| {
                    c.realtime_period().is_some() || c.realtime_runtime().is_some()
                }),
                "cpu",
                "cpu.rt_runtime_us",
                "--cpu-rt-runtime",
            ),
        ] {
            let offered =
                self.layout == Layout::V1 && Path::new(BASE).join(controller).join(file).exists();
            if asked && !offered {
                return Err(MissingController {
                    controller: if controller == "cpu" {
                        "cgroup v1 real-time cpu"
                    } else {
                        "cgroup v1 kernel memory"
                    },
                    option,
                });
            }
        }
        Ok(())
    }
}

/// For each kind of limit: whether `r` asks for it, the controller that applies it, and
/// the option that asks.
fn wanted_controllers(
    layout: Layout,
    r: &LinuxResources,
) -> [(bool, &'static str, &'static str); 5] {
    let mem = r.memory().as_ref();
    let cpu = r.cpu().as_ref();
    let bio = r.block_io().as_ref();
    let per_device = bio.is_some_and(|b| {
        [
            b.throttle_read_bps_device(),
            b.throttle_write_bps_device(),
            b.throttle_read_iops_device(),
            b.throttle_write_iops_device(),
        ]
        .iter()
        .any(|l| l.as_ref().is_some_and(|l| !l.is_empty()))
            || b.weight_device().as_ref().is_some_and(|l| !l.is_empty())
    });
    [
        (
            mem.is_some_and(|m| {
                m.limit().is_some()
                    || m.swap().is_some()
                    || m.reservation().is_some()
                    || m.disable_oom_killer() == Some(true)
            }),
            "memory",
            "--memory",
        ),
        (
            r.pids().is_some_and(|p| p.limit() > 0),
            "pids",
            "--pids-limit",
        ),
        (
            cpu.is_some_and(|c| c.quota().is_some() || c.shares().is_some()),
            "cpu",
            "--cpus/--cpu-quota/--cpu-shares",
        ),
        (
            cpu.is_some_and(|c| c.cpus().is_some() || c.mems().is_some()),
            "cpuset",
            "--cpuset-cpus/--cpuset-mems",
        ),
        (
            bio.is_some_and(|b| b.weight().is_some()) || per_device,
            if layout == Layout::V2 { "io" } else { "blkio" },
            "--blkio-weight/--device-read-bps",
        ),
    ]
}

/// Checks a `--cpuset-cpus` list (`0-3,5`) against the CPUs this host has online, so that
/// a CPU it lacks is refused at create with the CPUs there are, not at start with the
/// kernel's `EINVAL` from `cpuset.cpus`.
pub fn check_cpuset(asked: &str) -> Result<(), String> {
    let online = fs::read_to_string("/sys/devices/system/cpu/online").unwrap_or_default();
    cpuset_error(asked, online.trim()).map_or(Ok(()), Err)
}

/// The CPUs of a list such as `0-3,5`, or `None` when it is not one.
fn cpu_list(list: &str) -> Option<Vec<u32>> {
    let mut cpus = Vec::new();
    for part in list.split(',') {
        let (a, b): (u32, u32) = match part.split_once('-') {
            Some((a, b)) => (a.trim().parse().ok()?, b.trim().parse().ok()?),
            None => {
                let n = part.trim().parse().ok()?;
                (n, n)
            }
        };
        if a > b || b - a > 65_536 {
            return None;
        }
        cpus.extend(a..=b);
    }
    Some(cpus)
}

/// Why `asked` cannot be used on a host whose online CPUs are `online` (`0-1`), if so.
fn cpuset_error(asked: &str, online: &str) -> Option<String> {
    let Some(want) = cpu_list(asked) else {
        return Some(format!(
            "--cpuset-cpus {asked:?} is not a list of CPUs such as 0-3,5; this host's CPUs are {online}"
        ));
    };
    // An unreadable online list checks nothing: the kernel will.
    let have = cpu_list(online)?;
    let missing: Vec<String> = want
        .iter()
        .filter(|c| !have.contains(c))
        .map(u32::to_string)
        .collect();
    (!missing.is_empty()).then(|| {
        format!(
            "--cpuset-cpus {asked}: this host has no CPU {}; its CPUs are {online}",
            missing.join(", ")
        )
    })
}

/// A limit the host has no controller for: the user's to drop (or the host's to enable).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{option} needs the {controller} cgroup controller, which this host does not offer \
     (enable it, or run without {option})"
)]
pub struct MissingController {
    pub controller: &'static str,
    /// The option that asked for the limit (`--memory`).
    pub option: &'static str,
}

impl MissingController {
    /// Whose fault this is: the request's, which asks for what the host cannot give.
    pub fn kind(&self) -> crate::ErrorKind {
        crate::ErrorKind::Invalid
    }
}

/// Sets `favordynmods` on the cgroup2 mount (the whole host on v2; the `unified`
/// hierarchy on a hybrid host), unless it is set already. Returns whether it is on.
///
/// Moving a process into a cgroup takes a global lock that, by default, costs an RCU
/// grace period on the first move of a burst: measured here at 13-20 ms, most of a
/// container's start. With `favordynmods` the kernel keeps that lock cheap for writers,
/// at a small cost on fork and exit (see the kernel's cgroup-v2 documentation). The
/// setting is global to the host and outlives the daemon; `pier daemon
/// --cgroup-favordynmods=false` leaves it alone.
pub fn favor_dynamic_modifications() -> io::Result<bool> {
    let mounts = fs::read_to_string("/proc/self/mounts")?;
    let Some((target, opts)) = mounts.lines().find_map(|l| {
        let f: Vec<&str> = l.split(' ').collect();
        (f.len() > 3 && f[2] == "cgroup2" && (f[1] == BASE || f[1] == "/sys/fs/cgroup/unified"))
            .then(|| (f[1].to_string(), f[3].to_string()))
    }) else {
        return Ok(false);
    };
    if opts.split(',').any(|o| o == "favordynmods") {
        return Ok(true);
    }
    // A remount resets the root's flags to what it is given: keep the others.
    let keep: Vec<&str> = opts
        .split(',')
        .filter(|o| {
            matches!(
                *o,
                "nsdelegate"
                    | "memory_localevents"
                    | "memory_recursiveprot"
                    | "memory_hugetlb_accounting"
            )
        })
        .collect();
    let data =
        std::ffi::CString::new([&keep[..], &["favordynmods"]].concat().join(",")).expect("no NUL");
    let flags = opts
        .split(',')
        .fold(rustix::mount::MountFlags::empty(), |f, o| match o {
            "ro" => f | rustix::mount::MountFlags::RDONLY,
            "nosuid" => f | rustix::mount::MountFlags::NOSUID,
            "nodev" => f | rustix::mount::MountFlags::NODEV,
            "noexec" => f | rustix::mount::MountFlags::NOEXEC,
            "relatime" => f | rustix::mount::MountFlags::RELATIME,
            _ => f,
        });
    rustix::mount::mount_remount(target.as_str(), flags, data.as_c_str())?;
    Ok(true)
}

/// Counters read from a container's cgroup.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Stats {
    pub cpu_usage_ns: u64,
    pub memory_usage: u64,
    /// `u64::MAX` when unlimited.
    pub memory_limit: u64,
    pub pids_current: u64,
    pub pids_limit: u64,
    pub io_read_bytes: u64,
    pub io_write_bytes: u64,
}

/// New limits for an existing cgroup ([`Cgroup::update`]); `None` leaves one as it is.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LimitsUpdate {
    /// Bytes; 0 or -1 lifts the limit.
    pub memory: Option<i64>,
    /// Memory plus swap in bytes; -1 lifts the limit.
    pub memory_swap: Option<i64>,
    /// Microseconds of CPU per 100 ms period; 0 or -1 lifts the limit.
    pub cpu_quota: Option<i64>,
    /// Relative weight (0: the default, 1024).
    pub cpu_shares: Option<u64>,
    /// Processes at once; 0 or -1 lifts the limit.
    pub pids_limit: Option<i64>,
}

/// A container's cgroup(s).
#[derive(Debug, Clone)]
pub struct Cgroup {
    pub layout: Layout,
    /// v1: the controller and its directory, for each controller the host has; v2: one
    /// directory, named "".
    pub dirs: Vec<(String, PathBuf)>,
}

fn write(path: &Path, value: &str) -> Result<(), CgroupError> {
    fs::write(path, value).map_err(err("write", path))
}

/// Writes a limit's file, which some kernels or devices do not offer: its absence is an
/// error saying `why`, since a limit is never dropped.
fn write_offered(
    path: &Path,
    value: &str,
    op: &'static str,
    why: &'static str,
) -> Result<(), CgroupError> {
    if !path.exists() {
        return Err(CgroupError {
            op,
            path: path.display().to_string(),
            source: io::Error::new(io::ErrorKind::Unsupported, why),
        });
    }
    write(path, value)
}

/// A v1 cgroup file holding one number.
fn read_u64(path: &Path) -> Option<u64> {
    fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// A real-time budget as the kernel weighs it against its parent's (`to_ratio`).
fn rt_ratio(period: u64, runtime: u64) -> u128 {
    (u128::from(runtime) << 20) / u128::from(period.max(1))
}

/// Makes room, in `dir`'s parent and up to the hierarchy's root, for `dir` to hold
/// `runtime` of each `period` microseconds of real-time scheduling. A new group has no
/// budget, and the kernel refuses a child more than its parent holds; so each ancestor
/// below the root is given what its children then hold (Docker asks for the parent's
/// budget as a daemon flag instead). The root keeps the kernel's own budget.
fn grant_realtime(dir: &Path, period: u64, runtime: u64) -> Result<(), CgroupError> {
    let Some(parent) = dir.parent() else {
        return Ok(());
    };
    let file = "cpu.rt_runtime_us";
    // The hierarchy's root is the last directory with the file but no parent that has it.
    if !parent.parent().is_some_and(|pp| pp.join(file).exists()) {
        return Ok(());
    }
    let mut need = rt_ratio(period, runtime);
    for sibling in fs::read_dir(parent).map_err(err("read", parent))?.flatten() {
        let path = sibling.path();
        if path == dir || !path.join(file).exists() {
            continue;
        }
        let (Some(p), Some(r)) = (
            read_u64(&path.join("cpu.rt_period_us")),
            read_u64(&path.join(file)),
        ) else {
            continue;
        };
        need += rt_ratio(p, r);
    }
    let parent_period = read_u64(&parent.join("cpu.rt_period_us")).unwrap_or(1_000_000);
    let held = read_u64(&parent.join(file)).unwrap_or(0);
    if rt_ratio(parent_period, held) >= need {
        return Ok(());
    }
    let wanted = u64::try_from((need * u128::from(parent_period)).div_ceil(1 << 20) + 1)
        .unwrap_or(u64::MAX)
        .min(parent_period);
    grant_realtime(parent, parent_period, wanted)?;
    write(&parent.join(file), &wanted.to_string())
}

/// The cgroup path of container `id` under `parent` (the spec's `cgroupsPath`); a
/// parent of `/` (or none) is the hierarchies' root.
pub fn path_for(parent: &str, id: &str) -> String {
    match parent.trim_matches('/') {
        "" => format!("/{id}"),
        p => format!("/{p}/{id}"),
    }
}

impl Cgroup {
    /// The cgroup a spec names (`linux.cgroupsPath`); `/pier/<id>` when it names none.
    pub fn of_spec(spec: &oci_spec::runtime::Spec, id: &str) -> Cgroup {
        match spec
            .linux()
            .as_ref()
            .and_then(|l| l.cgroups_path().as_ref())
        {
            Some(p) => Cgroup::at(&p.to_string_lossy()),
            None => Cgroup::at(&path_for("pier", id)),
        }
    }

    /// The cgroup at `path` (the spec's `cgroupsPath`, such as `/pier/<id>`), not created.
    pub fn at(path: &str) -> Cgroup {
        let layout = Layout::detect();
        let rel = path.trim_start_matches('/');
        let dirs = match layout {
            Layout::V2 => vec![(String::new(), Path::new(BASE).join(rel))],
            Layout::V1 => V1_CONTROLLERS
                .iter()
                .map(|c| (c.to_string(), Path::new(BASE).join(c)))
                .filter(|(_, p)| p.exists())
                .map(|(c, p)| (c, p.join(rel)))
                .collect(),
        };
        Cgroup { layout, dirs }
    }

    /// The directory that holds `controller`'s files.
    fn dir(&self, controller: &str) -> Option<&Path> {
        match self.layout {
            Layout::V2 => self.dirs.first().map(|(_, d)| d.as_path()),
            Layout::V1 => self
                .dirs
                .iter()
                .find(|(c, _)| c == controller)
                .map(|(_, d)| d.as_path()),
        }
    }

    /// Like [`Self::dir`], but an error when the controller is missing: a limit that
    /// cannot be applied is refused, never dropped.
    fn dir_for_limit(
        &self,
        controller: &'static str,
        option: &'static str,
    ) -> Result<&Path, CgroupError> {
        let missing = || CgroupError {
            op: "apply a limit",
            path: self
                .dirs
                .first()
                .map(|(_, d)| d.display().to_string())
                .unwrap_or_default(),
            source: io::Error::new(
                io::ErrorKind::Unsupported,
                MissingController { controller, option },
            ),
        };
        let dir = self.dir(controller).ok_or_else(missing)?;
        if self.layout == Layout::V2 {
            // On v2 a controller's files exist only where it is enabled.
            let enabled = fs::read_to_string(dir.join("cgroup.controllers")).unwrap_or_default();
            if !enabled.split_whitespace().any(|c| c == controller) {
                return Err(missing());
            }
        }
        Ok(dir)
    }

    /// Creates the cgroup, loads its device rules and applies `resources`. Refuses to
    /// make a cgroup that could not confine the container.
    pub fn create(&self, resources: Option<&LinuxResources>) -> Result<(), CgroupError> {
        let refuse = |e: HostError| CgroupError {
            op: "create",
            path: self
                .dirs
                .first()
                .map(|(_, d)| d.display().to_string())
                .unwrap_or_default(),
            source: io::Error::new(io::ErrorKind::Unsupported, e.to_string()),
        };
        if self.layout == Layout::V1 {
            if self.dirs.is_empty() {
                return Err(refuse(HostError::NoHierarchy));
            }
            if let Some(c) = V1_REQUIRED.iter().find(|c| self.dir(c).is_none()) {
                return Err(refuse(HostError::MissingController(c)));
            }
        }
        let rules =
            devices::rules_of(resources.and_then(|r| r.devices().as_ref())).map_err(|m| {
                CgroupError {
                    op: "read the device rules",
                    path: String::new(),
                    source: io::Error::new(io::ErrorKind::InvalidInput, m),
                }
            })?;
        if self.layout == Layout::V2 {
            let dir = &self.dirs[0].1;
            if let Some(parent) = dir.parent() {
                if !parent.exists() {
                    fs::create_dir_all(parent)
                        .or_else(ignore_exists)
                        .map_err(err("create", parent))?;
                }
                delegate_controllers(parent);
            }
        }
        for (_, d) in &self.dirs {
            fs::create_dir_all(d).map_err(err("create", d))?;
        }
        if let Some(cpuset) = self.dir("cpuset").filter(|_| self.layout == Layout::V1) {
            fill_cpusets(&Path::new(BASE).join("cpuset"), cpuset)?;
        }
        match (self.layout, self.dir("devices")) {
            (Layout::V1, Some(devices)) => {
                for r in &rules {
                    let file = if r.allow {
                        "devices.allow"
                    } else {
                        "devices.deny"
                    };
                    write(&devices.join(file), &r.to_v1())?;
                }
            }
            (Layout::V2, Some(dir)) => {
                devices::attach(dir, &rules).map_err(err("attach the device program to", dir))?
            }
            (_, None) => unreachable!("v1 is checked above; v2 always has its directory"),
        }
        if let Some(r) = resources {
            self.apply(r)?;
        }
        Ok(())
    }

    fn apply(&self, r: &LinuxResources) -> Result<(), CgroupError> {
        let v2 = self.layout == Layout::V2;
        if let Some(mem) = r.memory() {
            if mem.limit().is_some() || mem.swap().is_some() {
                let dir = self.dir_for_limit("memory", "--memory")?;
                if let Some(limit) = mem.limit() {
                    let file = if v2 {
                        "memory.max"
                    } else {
                        "memory.limit_in_bytes"
                    };
                    write(&dir.join(file), &limit.to_string())?;
                }
                if let Some(swap) = mem.swap() {
                    // v2 counts swap apart from memory; the spec counts them together.
                    let (file, value) = if v2 {
                        let swap_only = match (swap, mem.limit()) {
                            (-1, _) => "max".to_string(),
                            (s, Some(l)) => (s - l).max(0).to_string(),
                            (s, None) => s.to_string(),
                        };
                        ("memory.swap.max", swap_only)
                    } else {
                        ("memory.memsw.limit_in_bytes", swap.to_string())
                    };
                    write_offered(
                        &dir.join(file),
                        &value,
                        "apply --memory-swap",
                        "this host's kernel does not account swap (boot it with \
                         swapaccount=1), so --memory-swap cannot be applied: run without it",
                    )?;
                }
            }
        }
        if let Some(mem) = r.memory() {
            for (value, file, option) in [
                (
                    mem.kernel(),
                    "memory.kmem.limit_in_bytes",
                    "--kernel-memory",
                ),
                (
                    mem.kernel_tcp(),
                    "memory.kmem.tcp.limit_in_bytes",
                    "KernelMemoryTCP",
                ),
            ] {
                if let Some(v) = value {
                    let dir = self.dir_for_limit("memory", option)?;
                    let path = dir.join(file);
                    write_offered(
                        &path,
                        &v.to_string(),
                        "apply --kernel-memory",
                        "this host's cgroups have no kernel memory limit (cgroup v1 has \
                         one), so --kernel-memory cannot be applied: run without it",
                    )?;
                    // Linux 5.16 and later keep the file for kernel memory but ignore
                    // what is written (the limit stays unlimited): refused, not dropped.
                    let kept = read_u64(&path).unwrap_or(0);
                    if kept > v.max(0) as u64 {
                        return Err(CgroupError {
                            op: "apply --kernel-memory",
                            path: path.display().to_string(),
                            source: io::Error::new(
                                io::ErrorKind::Unsupported,
                                format!(
                                    "this host's kernel ignores {option} (kernel memory is \
                                     counted with --memory since Linux 5.16): run without it"
                                ),
                            ),
                        });
                    }
                }
            }
            if let Some(res) = mem.reservation() {
                let dir = self.dir_for_limit("memory", "--memory-reservation")?;
                let file = if v2 {
                    "memory.low"
                } else {
                    "memory.soft_limit_in_bytes"
                };
                write(&dir.join(file), &res.to_string())?;
            }
            // cgroup v2 cannot turn the OOM killer off for a group: Docker discards the
            // option there (with a warning), and so does Pier.
            if mem.disable_oom_killer() == Some(true) && !v2 {
                let dir = self.dir_for_limit("memory", "--oom-kill-disable")?;
                write(&dir.join("memory.oom_control"), "1")?;
            }
        }
        // cgroup v2 has no swappiness: Docker discards it there too.
        if let Some(s) = r.memory().as_ref().and_then(|m| m.swappiness()) {
            if !v2 {
                let dir = self.dir_for_limit("memory", "--memory-swappiness")?;
                write(&dir.join("memory.swappiness"), &s.to_string())?;
            }
        }
        if let Some(pids) = r.pids() {
            if pids.limit() > 0 {
                let dir = self.dir_for_limit("pids", "--pids-limit")?;
                write(&dir.join("pids.max"), &pids.limit().to_string())?;
            }
        }
        if let Some(cpu) = r.cpu() {
            if let Some(quota) = cpu.quota() {
                let dir = self.dir_for_limit("cpu", "--cpus/--cpu-quota")?;
                let period = cpu.period().unwrap_or(100_000);
                if v2 {
                    write(&dir.join("cpu.max"), &format!("{quota} {period}"))?;
                } else {
                    write(&dir.join("cpu.cfs_period_us"), &period.to_string())?;
                    write(&dir.join("cpu.cfs_quota_us"), &quota.to_string())?;
                }
            }
            if let Some(shares) = cpu.shares() {
                let dir = self.dir_for_limit("cpu", "--cpu-shares")?;
                if v2 {
                    // The conversion runc and crun use.
                    let weight = 1 + ((shares.clamp(2, 262_144) - 2) * 9999) / 262_142;
                    write(&dir.join("cpu.weight"), &weight.to_string())?;
                } else {
                    write(&dir.join("cpu.shares"), &shares.to_string())?;
                }
            }
            if cpu.realtime_period().is_some() || cpu.realtime_runtime().is_some() {
                let dir = self.dir_for_limit("cpu", "--cpu-rt-runtime")?;
                if !dir.join("cpu.rt_runtime_us").exists() {
                    return Err(CgroupError {
                        op: "apply --cpu-rt-runtime",
                        path: dir.display().to_string(),
                        source: io::Error::new(
                            io::ErrorKind::Unsupported,
                            "this host's cgroups offer no real-time budgets (cgroup v1 with \
                             CONFIG_RT_GROUP_SCHED does), so --cpu-rt-period/--cpu-rt-runtime \
                             cannot be applied: run without them",
                        ),
                    });
                }
                let period = match cpu.realtime_period() {
                    Some(p) => {
                        write(&dir.join("cpu.rt_period_us"), &p.to_string())?;
                        p
                    }
                    None => read_u64(&dir.join("cpu.rt_period_us")).unwrap_or(1_000_000),
                };
                if let Some(runtime) = cpu.realtime_runtime() {
                    if let Ok(runtime) = u64::try_from(runtime) {
                        grant_realtime(dir, period, runtime)?;
                    }
                    write(&dir.join("cpu.rt_runtime_us"), &runtime.to_string())?;
                }
            }
            if let Some(cpus) = cpu.cpus() {
                let dir = self.dir_for_limit("cpuset", "--cpuset-cpus")?;
                write(&dir.join("cpuset.cpus"), cpus)?;
            }
            if let Some(mems) = cpu.mems() {
                let dir = self.dir_for_limit("cpuset", "--cpuset-mems")?;
                write(&dir.join("cpuset.mems"), mems)?;
            }
        }
        if let Some(weight) = r.block_io().as_ref().and_then(|b| b.weight()) {
            let dir = self.dir_for_limit(if v2 { "io" } else { "blkio" }, "--blkio-weight")?;
            let (file, value) = if v2 {
                (
                    "io.weight",
                    format!(
                        "default {}",
                        1 + (u32::from(weight).saturating_sub(10)) * 9999 / 990
                    ),
                )
            } else {
                ("blkio.weight", weight.to_string())
            };
            write_offered(
                &dir.join(file),
                &value,
                "apply --blkio-weight",
                "this host's I/O scheduler offers no weights (use BFQ on the disk), so \
                 --blkio-weight cannot be applied: run without it",
            )?;
        }
        if let Some(b) = r.block_io() {
            self.apply_device_io(b)?;
        }
        Ok(())
    }

    /// `--device-read-bps` and friends (throttles), and `--blkio-weight-device`.
    fn apply_device_io(&self, b: &oci_spec::runtime::LinuxBlockIo) -> Result<(), CgroupError> {
        let v2 = self.layout == Layout::V2;
        let throttles = [
            (
                b.throttle_read_bps_device(),
                "blkio.throttle.read_bps_device",
                "rbps",
            ),
            (
                b.throttle_write_bps_device(),
                "blkio.throttle.write_bps_device",
                "wbps",
            ),
            (
                b.throttle_read_iops_device(),
                "blkio.throttle.read_iops_device",
                "riops",
            ),
            (
                b.throttle_write_iops_device(),
                "blkio.throttle.write_iops_device",
                "wiops",
            ),
        ];
        for (list, v1_file, v2_key) in throttles {
            for t in list.iter().flatten() {
                let dir =
                    self.dir_for_limit(if v2 { "io" } else { "blkio" }, "--device-read-bps")?;
                let (file, line) = if v2 {
                    (
                        "io.max",
                        format!("{}:{} {v2_key}={}", t.major(), t.minor(), t.rate()),
                    )
                } else {
                    (v1_file, format!("{}:{} {}", t.major(), t.minor(), t.rate()))
                };
                write(&dir.join(file), &line)?;
            }
        }
        for w in b.weight_device().iter().flatten() {
            let Some(weight) = w.weight() else { continue };
            let dir =
                self.dir_for_limit(if v2 { "io" } else { "blkio" }, "--blkio-weight-device")?;
            let (file, line) = if v2 {
                let w2 = 1 + (u32::from(weight).saturating_sub(10)) * 9999 / 990;
                ("io.weight", format!("{}:{} {w2}", w.major(), w.minor()))
            } else {
                (
                    "blkio.weight_device",
                    format!("{}:{} {weight}", w.major(), w.minor()),
                )
            };
            write_offered(
                &dir.join(file),
                &line,
                "apply --blkio-weight-device",
                "this host's I/O scheduler offers no weights (use BFQ on the disk), so \
                 --blkio-weight-device cannot be applied: run without it",
            )?;
        }
        Ok(())
    }

    /// Changes the limits of an existing cgroup (`pier update`): each `Some` of `u` is
    /// written, a lifted limit as the kernel's "no limit". On v1, memory and memory+swap
    /// are written in the order the kernel accepts (memory+swap is never below memory).
    pub fn update(&self, u: &LimitsUpdate) -> Result<(), CgroupError> {
        let v2 = self.layout == Layout::V2;
        let unlimited = || {
            if v2 {
                "max".to_string()
            } else {
                "-1".to_string()
            }
        };
        if u.memory.is_some() || u.memory_swap.is_some() {
            let dir = self.dir_for_limit("memory", "--memory")?;
            let limit_file = dir.join(if v2 {
                "memory.max"
            } else {
                "memory.limit_in_bytes"
            });
            let mem = u
                .memory
                .map(|m| if m > 0 { m.to_string() } else { unlimited() });
            let swap = u.memory_swap.map(|s| {
                if v2 {
                    // v2 counts swap apart from memory; Pier's limit counts them together.
                    match (s, u.memory) {
                        (s, _) if s < 0 => "max".to_string(),
                        (s, Some(m)) => (s - m).max(0).to_string(),
                        (s, None) => s.to_string(),
                    }
                } else {
                    s.to_string()
                }
            });
            let swap_file = dir.join(if v2 {
                "memory.swap.max"
            } else {
                "memory.memsw.limit_in_bytes"
            });
            let write_swap = |v: &str| {
                write_offered(
                    &swap_file,
                    v,
                    "apply --memory-swap",
                    "this host's kernel does not account swap (boot it with swapaccount=1), \
                     so --memory-swap cannot be applied: update without it",
                )
            };
            // v1 refuses a memory limit above memory+swap, and memory+swap below memory:
            // raise memory+swap first when memory grows past it.
            let current_swap = fs::read_to_string(&swap_file)
                .ok()
                .and_then(|s| s.trim().parse::<i64>().ok());
            let swap_first = !v2
                && matches!((u.memory, current_swap), (Some(m), Some(cur)) if m > cur || m <= 0);
            if swap_first {
                if let Some(s) = &swap {
                    write_swap(s)?;
                }
            }
            if let Some(m) = &mem {
                write(&limit_file, m)?;
            }
            if !swap_first {
                if let Some(s) = &swap {
                    write_swap(s)?;
                }
            }
        }
        if let Some(p) = u.pids_limit {
            let dir = self.dir_for_limit("pids", "--pids-limit")?;
            let v = if p > 0 { p.to_string() } else { "max".into() };
            write(&dir.join("pids.max"), &v)?;
        }
        if let Some(quota) = u.cpu_quota {
            let dir = self.dir_for_limit("cpu", "--cpus")?;
            let period = 100_000;
            if v2 {
                let q = if quota > 0 {
                    quota.to_string()
                } else {
                    "max".into()
                };
                write(&dir.join("cpu.max"), &format!("{q} {period}"))?;
            } else {
                write(&dir.join("cpu.cfs_period_us"), &period.to_string())?;
                let q = if quota > 0 { quota } else { -1 };
                write(&dir.join("cpu.cfs_quota_us"), &q.to_string())?;
            }
        }
        if let Some(shares) = u.cpu_shares {
            let dir = self.dir_for_limit("cpu", "--cpu-shares")?;
            let shares = if shares == 0 { 1024 } else { shares };
            if v2 {
                let weight = 1 + ((shares.clamp(2, 262_144) - 2) * 9999) / 262_142;
                write(&dir.join("cpu.weight"), &weight.to_string())?;
            } else {
                write(&dir.join("cpu.shares"), &shares.to_string())?;
            }
        }
        Ok(())
    }

    /// Moves process `pid` into the cgroup.
    pub fn add(&self, pid: i32) -> Result<(), CgroupError> {
        for (_, d) in &self.dirs {
            write(&d.join("cgroup.procs"), &pid.to_string())?;
        }
        Ok(())
    }

    /// Whether the kernel's OOM killer killed something in this cgroup.
    pub fn oom_killed(&self) -> bool {
        let (file, key) = match self.layout {
            Layout::V2 => ("memory.events", "oom_kill"),
            Layout::V1 => ("memory.oom_control", "oom_kill"),
        };
        let Some(dir) = self.dir("memory") else {
            return false;
        };
        fs::read_to_string(dir.join(file))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split_once(' '))
            .any(|(k, v)| k == key && v.trim().parse::<u64>().unwrap_or(0) > 0)
    }

    /// Freezes or thaws every process in the cgroup (pause/unpause).
    pub fn freeze(&self, frozen: bool) -> Result<(), CgroupError> {
        match self.layout {
            Layout::V2 => write(
                &self.dirs[0].1.join("cgroup.freeze"),
                if frozen { "1" } else { "0" },
            ),
            Layout::V1 => match self.dir("freezer") {
                Some(d) => write(
                    &d.join("freezer.state"),
                    if frozen { "FROZEN" } else { "THAWED" },
                ),
                None => Ok(()),
            },
        }
    }

    /// Pids of every process in the cgroup.
    pub fn pids(&self) -> Vec<i32> {
        let dir = self
            .dir("pids")
            .or_else(|| self.dirs.first().map(|(_, d)| d.as_path()));
        dir.and_then(|d| fs::read_to_string(d.join("cgroup.procs")).ok())
            .map(|s| s.lines().filter_map(|l| l.trim().parse().ok()).collect())
            .unwrap_or_default()
    }

    fn read_u64(&self, controller: &str, file: &str) -> Option<u64> {
        let v = fs::read_to_string(self.dir(controller)?.join(file)).ok()?;
        let v = v.trim();
        if v == "max" {
            return Some(u64::MAX);
        }
        v.parse().ok()
    }

    fn read_keyed(&self, controller: &str, file: &str, key: &str) -> Option<u64> {
        let text = fs::read_to_string(self.dir(controller)?.join(file)).ok()?;
        text.lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix(' ')?.trim().parse().ok())
    }

    /// Resource usage counters, for `pier stats`.
    pub fn stats(&self) -> Stats {
        let v2 = self.layout == Layout::V2;
        let cpu_usage_ns = if v2 {
            self.read_keyed("cpu", "cpu.stat", "usage_usec")
                .map(|u| u * 1000)
        } else {
            self.read_u64("cpuacct", "cpuacct.usage")
        };
        let (memory_usage, memory_limit) = if v2 {
            (
                self.read_u64("memory", "memory.current"),
                self.read_u64("memory", "memory.max"),
            )
        } else {
            // Page cache counts as usage in v1; Docker subtracts the inactive file pages.
            let usage = self.read_u64("memory", "memory.usage_in_bytes");
            let inactive = self
                .read_keyed("memory", "memory.stat", "total_inactive_file")
                .unwrap_or(0);
            (
                usage.map(|u| u.saturating_sub(inactive)),
                self.read_u64("memory", "memory.limit_in_bytes"),
            )
        };
        let (mut read, mut write) = (0, 0);
        if v2 {
            if let Some(text) = self
                .dir("io")
                .and_then(|d| fs::read_to_string(d.join("io.stat")).ok())
            {
                for field in text.split_whitespace() {
                    if let Some(v) = field.strip_prefix("rbytes=") {
                        read += v.parse::<u64>().unwrap_or(0);
                    } else if let Some(v) = field.strip_prefix("wbytes=") {
                        write += v.parse::<u64>().unwrap_or(0);
                    }
                }
            }
        } else if let Some(text) = self
            .dir("blkio")
            .and_then(|d| fs::read_to_string(d.join("blkio.throttle.io_service_bytes")).ok())
        {
            for l in text.lines() {
                let f: Vec<&str> = l.split_whitespace().collect();
                match f.as_slice() {
                    [_, "Read", v] => read += v.parse::<u64>().unwrap_or(0),
                    [_, "Write", v] => write += v.parse::<u64>().unwrap_or(0),
                    _ => {}
                }
            }
        }
        Stats {
            cpu_usage_ns: cpu_usage_ns.unwrap_or(0),
            memory_usage: memory_usage.unwrap_or(0),
            memory_limit: memory_limit.unwrap_or(u64::MAX),
            pids_current: self.read_u64("pids", "pids.current").unwrap_or(0),
            pids_limit: self.read_u64("pids", "pids.max").unwrap_or(u64::MAX),
            io_read_bytes: read,
            io_write_bytes: write,
        }
    }

    /// Removes the cgroup; it must hold no process. Absent directories are fine.
    pub fn remove(&self) -> Result<(), CgroupError> {
        for (_, d) in &self.dirs {
            for _ in 0..50 {
                match fs::remove_dir(d) {
                    Ok(()) => break,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => break,
                    // EBUSY while the last task is still exiting.
                    Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                        std::thread::sleep(std::time::Duration::from_millis(2))
                    }
                    Err(e) => return Err(err("remove", d)(e)),
                }
            }
        }
        Ok(())
    }

    pub fn exists(&self) -> bool {
        self.dirs.iter().any(|(_, d)| d.exists())
    }
}

/// Gives every v1 cpuset from below the hierarchy's `root` down to `dir` the cpus and
/// memory nodes of its parent where it has none: a new v1 cpuset is empty and refuses
/// tasks until given both, and a `--cgroup-parent` may have made several levels at once.
fn fill_cpusets(root: &Path, dir: &Path) -> Result<(), CgroupError> {
    let Ok(rel) = dir.strip_prefix(root) else {
        return Ok(());
    };
    let mut parent = root.to_path_buf();
    for name in rel.components() {
        let cur = parent.join(name);
        for f in ["cpuset.cpus", "cpuset.mems"] {
            let have = fs::read_to_string(cur.join(f)).map_err(err("read", &cur))?;
            if have.trim().is_empty() {
                let from = fs::read_to_string(parent.join(f)).map_err(err("read", &parent))?;
                write(&cur.join(f), from.trim())?;
            }
        }
        parent = cur;
    }
    Ok(())
}

/// Enables, in `parent`'s subtree and its ancestors', the controllers Pier sets that the
/// host has and that are not enabled yet: one at a time, since a write naming one the
/// host lacks would enable none.
fn delegate_controllers(parent: &Path) {
    const WANTED: [&str; 5] = ["memory", "pids", "cpu", "cpuset", "io"];
    let available =
        fs::read_to_string(Path::new(BASE).join("cgroup.controllers")).unwrap_or_default();
    let enabled = fs::read_to_string(parent.join("cgroup.subtree_control")).unwrap_or_default();
    let missing: Vec<&str> = WANTED
        .into_iter()
        .filter(|c| available.split_whitespace().any(|a| a == *c))
        .filter(|c| !enabled.split_whitespace().any(|e| e == *c))
        .collect();
    if missing.is_empty() {
        return;
    }
    let mut ancestors: Vec<&Path> = parent
        .ancestors()
        .take_while(|a| a.starts_with(BASE))
        .collect();
    ancestors.reverse();
    for a in ancestors {
        for c in &missing {
            let _ = fs::write(a.join("cgroup.subtree_control"), format!("+{c}"));
        }
    }
}

fn ignore_exists(e: io::Error) -> io::Result<()> {
    if e.kind() == io::ErrorKind::AlreadyExists {
        Ok(())
    } else {
        Err(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpuset_lists_are_checked_against_the_hosts_cpus() {
        assert_eq!(cpuset_error("0", "0-1"), None);
        assert_eq!(cpuset_error("0-1", "0-1"), None);
        assert_eq!(cpuset_error("1,0", "0-1"), None);
        assert_eq!(
            cpuset_error("7", "0-1").as_deref(),
            Some("--cpuset-cpus 7: this host has no CPU 7; its CPUs are 0-1")
        );
        assert_eq!(
            cpuset_error("1-3", "0-1").as_deref(),
            Some("--cpuset-cpus 1-3: this host has no CPU 2, 3; its CPUs are 0-1")
        );
        assert_eq!(
            cpuset_error("x", "0-1").as_deref(),
            Some(
                "--cpuset-cpus \"x\" is not a list of CPUs such as 0-3,5; this host's CPUs are 0-1"
            )
        );
        assert_eq!(cpuset_error("3", ""), None);
    }

    fn fake_v1(controllers: &[&str]) -> tempfile::TempDir {
        let t = tempfile::tempdir().unwrap();
        for c in controllers {
            fs::create_dir_all(t.path().join(c)).unwrap();
            fs::write(t.path().join(c).join("cgroup.procs"), "").unwrap();
        }
        t
    }

    #[test]
    fn every_new_cpuset_level_gets_its_parents_cpus_and_mems() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("cpuset");
        let leaf = root.join("a/b/id");
        fs::create_dir_all(&leaf).unwrap();
        for (d, cpus) in [(&root, "0-1"), (&root.join("a"), "1")] {
            fs::write(d.join("cpuset.cpus"), format!("{cpus}\n")).unwrap();
            fs::write(d.join("cpuset.mems"), "0\n").unwrap();
        }
        for d in [root.join("a/b"), leaf.clone()] {
            fs::write(d.join("cpuset.cpus"), "\n").unwrap();
            fs::write(d.join("cpuset.mems"), "").unwrap();
        }
        fill_cpusets(&root, &leaf).unwrap();
        for d in [root.join("a/b"), leaf] {
            // What an existing level has is kept, and passed down.
            assert_eq!(fs::read_to_string(d.join("cpuset.cpus")).unwrap(), "1");
            assert_eq!(fs::read_to_string(d.join("cpuset.mems")).unwrap(), "0");
        }
        assert_eq!(
            fs::read_to_string(root.join("a/cpuset.cpus")).unwrap(),
            "1\n"
        );
    }

    #[test]
    fn no_hierarchy_is_refused() {
        let t = tempfile::tempdir().unwrap();
        let e = Host::detect_at(t.path()).unwrap_err();
        assert!(matches!(e, HostError::NoHierarchy));
        assert!(e.to_string().contains("nsenter --net"), "{e}");
    }

    #[test]
    fn v1_without_devices_is_refused() {
        let t = fake_v1(&["memory", "pids", "freezer"]);
        let e = Host::detect_at(t.path()).unwrap_err();
        assert!(matches!(e, HostError::MissingController("devices")), "{e}");
    }

    #[test]
    fn limits_need_their_controller() {
        let t = fake_v1(&["devices", "freezer", "pids"]);
        let host = Host::detect_at(t.path()).unwrap();
        assert_eq!(host.layout, Layout::V1);
        let r: LinuxResources =
            serde_json::from_value(serde_json::json!({"memory": {"limit": 1 << 26}})).unwrap();
        let e = host.check(&r).unwrap_err();
        assert_eq!(
            (e.controller, e.kind()),
            ("memory", crate::ErrorKind::Invalid)
        );
        assert!(
            e.to_string()
                .contains("--memory needs the memory cgroup controller"),
            "{e}"
        );
        let r: LinuxResources =
            serde_json::from_value(serde_json::json!({"pids": {"limit": 10}})).unwrap();
        host.check(&r).unwrap();
        let r: LinuxResources = serde_json::from_value(serde_json::json!({})).unwrap();
        host.check(&r).unwrap();
    }

    #[test]
    fn v2_controllers_are_read() {
        let t = tempfile::tempdir().unwrap();
        fs::write(t.path().join("cgroup.controllers"), "cpu io pids\n").unwrap();
        let host = Host::detect_at(t.path()).unwrap();
        assert_eq!(host.layout, Layout::V2);
        let r: LinuxResources =
            serde_json::from_value(serde_json::json!({"blockIO": {"weight": 500}})).unwrap();
        host.check(&r).unwrap();
        let r: LinuxResources =
            serde_json::from_value(serde_json::json!({"memory": {"limit": 1 << 26}})).unwrap();
        assert!(host.check(&r).is_err());
    }
}
