//! Control groups, v1 (per-controller hierarchies, as on this hybrid host) and v2 (the
//! unified hierarchy most hosts run today), detected at start.
//!
//! Each container gets `pier/<id>` in every hierarchy it uses. Limits come from the OCI
//! spec's `linux.resources`; the same numbers map onto v1 and v2 files. Devices are
//! restricted through the v1 devices controller (Docker's default allowlist); on v2 that
//! needs a BPF program, which Pier does not load yet.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use oci_spec::runtime::LinuxResources;

const BASE: &str = "/sys/fs/cgroup";
const V1_CONTROLLERS: [&str; 8] = [
    "memory", "pids", "cpu", "cpuacct", "cpuset", "blkio", "freezer", "devices",
];

/// Docker's default device allowlist: null, zero, full, random, urandom, tty, ptmx,
/// pseudo-terminals, tun; and mknod of anything.
const DEVICE_ALLOW: [&str; 11] = [
    "c *:* m",
    "b *:* m",
    "c 1:3 rwm",
    "c 1:5 rwm",
    "c 1:7 rwm",
    "c 1:8 rwm",
    "c 1:9 rwm",
    "c 5:0 rwm",
    "c 5:2 rwm",
    "c 136:* rwm",
    "c 10:200 rwm",
];

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

/// A container's cgroup(s).
#[derive(Debug, Clone)]
pub struct Cgroup {
    pub layout: Layout,
    /// v1: one directory per controller; v2: one directory.
    pub dirs: Vec<PathBuf>,
}

fn write(path: &Path, value: &str) -> Result<(), CgroupError> {
    fs::write(path, value).map_err(err("write", path))
}

impl Cgroup {
    /// The cgroup of container `id` (not created).
    pub fn for_container(id: &str) -> Cgroup {
        let layout = Layout::detect();
        let dirs = match layout {
            Layout::V2 => vec![Path::new(BASE).join("pier").join(id)],
            Layout::V1 => V1_CONTROLLERS
                .iter()
                .map(|c| Path::new(BASE).join(c))
                .filter(|p| p.exists())
                .map(|p| p.join("pier").join(id))
                .collect(),
        };
        Cgroup { layout, dirs }
    }

    fn dir(&self, controller: &str) -> Option<&Path> {
        match self.layout {
            Layout::V2 => self.dirs.first().map(PathBuf::as_path),
            Layout::V1 => self
                .dirs
                .iter()
                .find(|d| {
                    d.parent()
                        .and_then(Path::parent)
                        .is_some_and(|c| c.ends_with(controller))
                })
                .map(PathBuf::as_path),
        }
    }

    /// Creates the cgroup and applies `resources`.
    pub fn create(&self, resources: Option<&LinuxResources>) -> Result<(), CgroupError> {
        match self.layout {
            Layout::V2 => {
                let parent = Path::new(BASE).join("pier");
                if !parent.exists() {
                    fs::create_dir(&parent)
                        .or_else(ignore_exists)
                        .map_err(err("create", &parent))?;
                }
                // Delegate the controllers Pier sets to the pier/ subtree.
                let root_ctl = Path::new(BASE).join("cgroup.subtree_control");
                let _ = fs::write(&root_ctl, "+memory +pids +cpu +cpuset +io");
                let _ = fs::write(
                    parent.join("cgroup.subtree_control"),
                    "+memory +pids +cpu +cpuset +io",
                );
            }
            Layout::V1 => {}
        }
        for d in &self.dirs {
            fs::create_dir_all(d).map_err(err("create", d))?;
        }
        if let Some(cpuset) = self.dir("cpuset").filter(|_| self.layout == Layout::V1) {
            // A new v1 cpuset is empty and refuses tasks until given cpus and mems.
            for parent in [cpuset.parent().expect("pier dir"), cpuset] {
                for f in ["cpuset.cpus", "cpuset.mems"] {
                    let cur = fs::read_to_string(parent.join(f)).unwrap_or_default();
                    if cur.trim().is_empty() {
                        let from = fs::read_to_string(parent.parent().expect("has parent").join(f))
                            .map_err(err("read", parent))?;
                        write(&parent.join(f), from.trim())?;
                    }
                }
            }
        }
        if let (Layout::V1, Some(devices)) = (self.layout, self.dir("devices")) {
            write(&devices.join("devices.deny"), "a")?;
            for rule in DEVICE_ALLOW {
                write(&devices.join("devices.allow"), rule)?;
            }
        }
        if let Some(r) = resources {
            self.apply(r)?;
        }
        Ok(())
    }

    fn apply(&self, r: &LinuxResources) -> Result<(), CgroupError> {
        let v2 = self.layout == Layout::V2;
        // Devices the spec allows beyond the defaults (block volumes' loop devices).
        if let (Layout::V1, Some(dir), Some(devices)) =
            (self.layout, self.dir("devices"), r.devices().as_ref())
        {
            for d in devices.iter().filter(|d| d.allow()) {
                let kind = match d.typ() {
                    Some(oci_spec::runtime::LinuxDeviceType::B) => "b",
                    Some(oci_spec::runtime::LinuxDeviceType::C) => "c",
                    _ => continue,
                };
                let num = |n: Option<i64>| n.map_or("*".to_string(), |n| n.to_string());
                let rule = format!(
                    "{kind} {}:{} {}",
                    num(d.major()),
                    num(d.minor()),
                    d.access().as_deref().unwrap_or("rwm")
                );
                write(&dir.join("devices.allow"), &rule)?;
            }
        }
        if let Some(mem) = r.memory() {
            if let Some(dir) = self.dir("memory") {
                if let Some(limit) = mem.limit() {
                    write(
                        &dir.join(if v2 {
                            "memory.max"
                        } else {
                            "memory.limit_in_bytes"
                        }),
                        &limit.to_string(),
                    )?;
                }
                if let Some(swap) = mem.swap() {
                    if v2 {
                        // v2 counts swap apart from memory; the spec counts them together.
                        let swap_only = match (swap, mem.limit()) {
                            (-1, _) => "max".to_string(),
                            (s, Some(l)) => (s - l).max(0).to_string(),
                            (s, None) => s.to_string(),
                        };
                        let _ = fs::write(dir.join("memory.swap.max"), swap_only);
                    } else {
                        // Absent when the host has no swap accounting.
                        let p = dir.join("memory.memsw.limit_in_bytes");
                        if p.exists() {
                            write(&p, &swap.to_string())?;
                        }
                    }
                }
            }
        }
        if let Some(pids) = r.pids() {
            if let Some(dir) = self.dir("pids") {
                let v = if pids.limit() > 0 {
                    pids.limit().to_string()
                } else {
                    "max".into()
                };
                write(&dir.join("pids.max"), &v)?;
            }
        }
        if let Some(cpu) = r.cpu() {
            if let Some(dir) = self.dir("cpu") {
                if let (Some(quota), period) = (cpu.quota(), cpu.period().unwrap_or(100_000)) {
                    if v2 {
                        write(&dir.join("cpu.max"), &format!("{quota} {period}"))?;
                    } else {
                        write(&dir.join("cpu.cfs_period_us"), &period.to_string())?;
                        write(&dir.join("cpu.cfs_quota_us"), &quota.to_string())?;
                    }
                }
                if let Some(shares) = cpu.shares() {
                    if v2 {
                        // The conversion runc and crun use.
                        let weight = 1 + ((shares.clamp(2, 262_144) - 2) * 9999) / 262_142;
                        write(&dir.join("cpu.weight"), &weight.to_string())?;
                    } else {
                        write(&dir.join("cpu.shares"), &shares.to_string())?;
                    }
                }
            }
            if let (Some(cpus), Some(dir)) = (cpu.cpus(), self.dir("cpuset")) {
                write(&dir.join("cpuset.cpus"), cpus)?;
            }
        }
        if let Some(weight) = r.block_io().as_ref().and_then(|b| b.weight()) {
            if let Some(dir) = self.dir(if v2 { "io" } else { "blkio" }) {
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
                // Not every kernel's I/O scheduler offers weights.
                let p = dir.join(file);
                if p.exists() {
                    write(&p, &value)?;
                }
            }
        }
        Ok(())
    }

    /// Moves process `pid` into the cgroup.
    pub fn add(&self, pid: i32) -> Result<(), CgroupError> {
        for d in &self.dirs {
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
                &self.dirs[0].join("cgroup.freeze"),
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
            .or_else(|| self.dirs.first().map(PathBuf::as_path));
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
        for d in &self.dirs {
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
        self.dirs.iter().any(|d| d.exists())
    }
}

fn ignore_exists(e: io::Error) -> io::Result<()> {
    if e.kind() == io::ErrorKind::AlreadyExists {
        Ok(())
    } else {
        Err(e)
    }
}
