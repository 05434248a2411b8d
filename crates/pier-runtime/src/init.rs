//! The container's first moments, in the freshly cloned child: mounts, pivot_root,
//! masked paths, hostname, rlimits, user, capabilities, then exec. It runs in a
//! single-threaded process (the monitor cloned it), so plain syscalls are safe here.
//!
//! A failure is returned as a [`StartError`] with the step that failed and Docker's exit
//! code: 127 when the command is missing, 126 when it cannot be run, 125 for everything
//! the engine or the host got wrong.

use std::ffi::{CString, OsStr};
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};

use oci_spec::runtime::{LinuxNamespaceType, Mount, Spec};

use crate::error::{ErrorKind, StartError, Step};
use crate::rootfs::resolve_in_root;

/// A failure of the engine's or host's part at `step`, without an errno.
fn fail(step: Step, what: impl Into<String>) -> StartError {
    StartError::new(ErrorKind::Host, step, what)
}

/// A failed system call of `what` at `step`.
fn sys(step: Step, what: impl std::fmt::Display) -> impl FnOnce(io::Error) -> StartError {
    move |e| StartError::io(step, what.to_string(), e)
}

/// Checks a libc return value.
fn check(ret: libc::c_int) -> io::Result<()> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn cstr(p: impl AsRef<OsStr>) -> CString {
    CString::new(p.as_ref().as_bytes()).unwrap_or_else(|_| CString::new("invalid").expect("no NUL"))
}

fn mount(
    src: Option<&str>,
    dst: &Path,
    fstype: Option<&str>,
    flags: libc::c_ulong,
    data: Option<&str>,
) -> io::Result<()> {
    let src = src.map(cstr);
    let dst = cstr(dst);
    let fstype = fstype.map(cstr);
    let data = data.filter(|d| !d.is_empty()).map(cstr);
    // SAFETY: every pointer is either null or a valid NUL-terminated string that lives
    // until the call returns.
    let ret = unsafe {
        libc::mount(
            src.as_ref().map_or(std::ptr::null(), |s| s.as_ptr()),
            dst.as_ptr(),
            fstype.as_ref().map_or(std::ptr::null(), |s| s.as_ptr()),
            flags,
            data.as_ref()
                .map_or(std::ptr::null(), |s| s.as_ptr().cast()),
        )
    };
    check(ret)
}

/// Splits OCI mount options into mount flags and filesystem data.
fn parse_options(options: &[String]) -> (libc::c_ulong, Vec<String>, bool) {
    let mut flags = 0;
    let mut data = Vec::new();
    let mut bind = false;
    for o in options {
        match o.as_str() {
            "ro" => flags |= libc::MS_RDONLY,
            "rw" => {}
            "nosuid" => flags |= libc::MS_NOSUID,
            "nodev" => flags |= libc::MS_NODEV,
            "noexec" => flags |= libc::MS_NOEXEC,
            "strictatime" => flags |= libc::MS_STRICTATIME,
            "relatime" => flags |= libc::MS_RELATIME,
            "noatime" => flags |= libc::MS_NOATIME,
            "bind" => bind = true,
            "rbind" => {
                bind = true;
                flags |= libc::MS_REC;
            }
            "private" | "rprivate" | "slave" | "rslave" | "shared" | "rshared" => {}
            other => data.push(other.to_string()),
        }
    }
    (flags, data, bind)
}

fn propagation(options: &[String]) -> Option<libc::c_ulong> {
    options.iter().rev().find_map(|o| match o.as_str() {
        "private" => Some(libc::MS_PRIVATE),
        "rprivate" => Some(libc::MS_PRIVATE | libc::MS_REC),
        "slave" => Some(libc::MS_SLAVE),
        "rslave" => Some(libc::MS_SLAVE | libc::MS_REC),
        "shared" => Some(libc::MS_SHARED),
        "rshared" => Some(libc::MS_SHARED | libc::MS_REC),
        _ => None,
    })
}

/// Mounts one of the spec's mounts. `own_cgroupns`: the container has a cgroup
/// namespace of its own; without one (`--cgroupns host`) a v1 hierarchy is not mounted
/// (it would show the host's whole tree) but the container's own group bound, as runc
/// does.
fn mount_one(
    rootfs: &Path,
    m: &Mount,
    cgroup_v1: &[(String, PathBuf)],
    own_cgroupns: bool,
) -> Result<(), StartError> {
    let dest = resolve_in_root(rootfs, m.destination()).map_err(sys(
        Step::Mounts,
        format!("resolve {}", m.destination().display()),
    ))?;
    let options = m.options().clone().unwrap_or_default();
    let (flags, data, bind) = parse_options(&options);
    let fstype = m.typ().clone().unwrap_or_default();
    let source = m
        .source()
        .as_ref()
        .map(|s| s.to_string_lossy().into_owned());
    let what = format!("mount {} on {}", fstype, m.destination().display());
    if bind || fstype == "bind" {
        let src = source
            .ok_or_else(|| fail(Step::Mounts, &what).with_detail("a bind mount needs a source"))?;
        let src_is_dir = fs::metadata(&src)
            .map_err(sys(Step::Mounts, format!("bind source {src}")))?
            .is_dir();
        if src_is_dir {
            fs::create_dir_all(&dest).map_err(sys(Step::Mounts, &what))?;
        } else if !dest.exists() {
            if let Some(p) = dest.parent() {
                fs::create_dir_all(p).map_err(sys(Step::Mounts, &what))?;
            }
            fs::File::create(&dest).map_err(sys(Step::Mounts, &what))?;
        }
        mount(
            Some(&src),
            &dest,
            None,
            libc::MS_BIND | (flags & libc::MS_REC),
            None,
        )
        .map_err(sys(Step::Mounts, &what))?;
        // Flags other than bind/rec only take effect on a remount.
        let extra = flags & !(libc::MS_REC);
        if extra != 0 {
            remount_bind(&dest, extra).map_err(sys(Step::Mounts, &what))?;
        }
    } else if fstype == "cgroup" {
        fs::create_dir_all(&dest).map_err(sys(Step::Mounts, &what))?;
        if cgroup_v1.is_empty() {
            mount(Some("cgroup2"), &dest, Some("cgroup2"), flags, None)
                .map_err(sys(Step::Mounts, &what))?;
        } else {
            // v1: a tmpfs holding one mount per controller; in the container's cgroup
            // namespace each shows the container's own group as its root.
            mount(
                Some("tmpfs"),
                &dest,
                Some("tmpfs"),
                libc::MS_NOSUID | libc::MS_NOEXEC | libc::MS_NODEV,
                Some("mode=755"),
            )
            .map_err(sys(Step::Mounts, &what))?;
            for (c, group) in cgroup_v1 {
                let sub = dest.join(c);
                fs::create_dir_all(&sub).map_err(sys(Step::Mounts, &what))?;
                let mounted = if own_cgroupns {
                    mount(Some("cgroup"), &sub, Some("cgroup"), flags, Some(c))
                } else {
                    Err(io::Error::from_raw_os_error(libc::EPERM))
                };
                match mounted {
                    Ok(()) => {}
                    // In a user namespace v1 hierarchies cannot be mounted: the container's
                    // own group is bound instead, as runc does.
                    Err(e) if e.raw_os_error() == Some(libc::EPERM) => {
                        mount(
                            Some(&group.to_string_lossy()),
                            &sub,
                            None,
                            libc::MS_BIND,
                            None,
                        )
                        .map_err(sys(Step::Mounts, format!("{what} ({c})")))?;
                        remount_bind(&sub, flags & !libc::MS_REC)
                            .map_err(sys(Step::Mounts, format!("{what} ({c})")))?;
                    }
                    Err(e) => return Err(sys(Step::Mounts, format!("{what} ({c})"))(e)),
                }
            }
            // The host's named systemd hierarchy, as runc shows it too (not in a user
            // namespace, which may not mount it).
            if !own_cgroupns && Path::new("/sys/fs/cgroup/systemd").is_dir() {
                // The host's namespace: its own group of the named hierarchy is bound,
                // as runc does.
                let own = fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
                let path = own
                    .lines()
                    .find_map(|l| l.split_once(":name=systemd:").map(|(_, p)| p.to_string()));
                if let Some(p) = path {
                    let src = Path::new("/sys/fs/cgroup/systemd").join(p.trim_start_matches('/'));
                    let sub = dest.join("systemd");
                    fs::create_dir_all(&sub).map_err(sys(Step::Mounts, &what))?;
                    mount(
                        Some(&src.to_string_lossy()),
                        &sub,
                        None,
                        libc::MS_BIND,
                        None,
                    )
                    .map_err(sys(Step::Mounts, format!("{what} (systemd)")))?;
                    remount_bind(&sub, flags & !libc::MS_REC)
                        .map_err(sys(Step::Mounts, format!("{what} (systemd)")))?;
                }
            } else if Path::new("/sys/fs/cgroup/systemd").is_dir() {
                let sub = dest.join("systemd");
                fs::create_dir_all(&sub).map_err(sys(Step::Mounts, &what))?;
                match mount(
                    Some("cgroup"),
                    &sub,
                    Some("cgroup"),
                    flags,
                    Some("none,name=systemd"),
                ) {
                    Ok(()) => {}
                    Err(e) if e.raw_os_error() == Some(libc::EPERM) => {
                        let _ = fs::remove_dir(&sub);
                    }
                    Err(e) => return Err(sys(Step::Mounts, format!("{what} (systemd)"))(e)),
                }
            }
            mount(
                None,
                &dest,
                None,
                libc::MS_REMOUNT
                    | libc::MS_RDONLY
                    | libc::MS_NOSUID
                    | libc::MS_NOEXEC
                    | libc::MS_NODEV,
                Some("mode=755"),
            )
            .map_err(sys(Step::Mounts, &what))?;
        }
    } else {
        fs::create_dir_all(&dest).map_err(sys(Step::Mounts, &what))?;
        let data = data.join(",");
        match mount(source.as_deref(), &dest, Some(&fstype), flags, Some(&data)) {
            Ok(()) => {}
            // Without its own network namespace a container may not mount sysfs; bind
            // the host's read-only instead, as runc does.
            Err(e) if fstype == "sysfs" && e.raw_os_error() == Some(libc::EPERM) => {
                mount(
                    Some("/sys"),
                    &dest,
                    None,
                    libc::MS_BIND | libc::MS_REC,
                    None,
                )
                .map_err(sys(Step::Mounts, &what))?;
                remount_bind(&dest, libc::MS_RDONLY).map_err(sys(Step::Mounts, &what))?;
            }
            Err(e) => return Err(sys(Step::Mounts, &what)(e)),
        }
    }
    if let Some(p) = propagation(&options) {
        mount(None, &dest, None, p, None).map_err(sys(Step::Mounts, &what))?;
    }
    Ok(())
}

/// Remounts the bind mount at `dest` with `flags`. A mount that came from a more
/// privileged mount namespace (the host's, seen from a user namespace) has its nosuid,
/// nodev, noexec, read-only and atime flags locked: they are kept, as the kernel asks.
fn remount_bind(dest: &Path, flags: libc::c_ulong) -> io::Result<()> {
    let base = libc::MS_BIND | libc::MS_REMOUNT;
    match mount(None, dest, None, base | flags, None) {
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => {
            let st = rustix::fs::statvfs(dest)?;
            let has = |f: rustix::fs::StatVfsMountFlags| st.f_flag.contains(f);
            use rustix::fs::StatVfsMountFlags as F;
            let mut locked = 0;
            for (f, m) in [
                (F::NOSUID, libc::MS_NOSUID),
                (F::NODEV, libc::MS_NODEV),
                (F::NOEXEC, libc::MS_NOEXEC),
                (F::RDONLY, libc::MS_RDONLY),
                (F::NOATIME, libc::MS_NOATIME),
                (F::NODIRATIME, libc::MS_NODIRATIME),
                (F::RELATIME, libc::MS_RELATIME),
            ] {
                if has(f) {
                    locked |= m;
                }
            }
            mount(None, dest, None, base | flags | locked, None)
        }
        r => r,
    }
}

/// The device nodes every container gets, as Docker gives them.
const DEVICES: [(&str, u32, u32); 6] = [
    ("null", 1, 3),
    ("zero", 1, 5),
    ("full", 1, 7),
    ("random", 1, 8),
    ("urandom", 1, 9),
    ("tty", 5, 0),
];

fn make_devices(rootfs: &Path) -> Result<(), StartError> {
    let dev = rootfs.join("dev");
    for (name, major, minor) in DEVICES {
        let p = dev.join(name);
        let c = cstr(&p);
        // SAFETY: `c` is a valid path string for the duration of the call.
        let ret = unsafe {
            libc::mknod(
                c.as_ptr(),
                libc::S_IFCHR | 0o666,
                libc::makedev(major, minor),
            )
        };
        match check(ret) {
            Ok(()) => {
                // The umask trimmed the mode.
                fs::set_permissions(&p, fs::Permissions::from_mode(0o666))
                    .map_err(sys(Step::Mounts, format!("chmod /dev/{name}")))?;
            }
            // A user namespace may not make device nodes: the host's are bound, as runc does.
            Err(e) if e.raw_os_error() == Some(libc::EPERM) => {
                fs::File::create(&p).map_err(sys(Step::Mounts, format!("create /dev/{name}")))?;
                mount(Some(&format!("/dev/{name}")), &p, None, libc::MS_BIND, None)
                    .map_err(sys(Step::Mounts, format!("bind /dev/{name}")))?;
            }
            Err(e) => return Err(sys(Step::Mounts, format!("mknod /dev/{name}"))(e)),
        }
    }
    for (link, target) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
        ("ptmx", "pts/ptmx"),
        ("core", "/proc/kcore"),
    ] {
        let p = dev.join(link);
        if !p.exists() {
            symlink(target, &p).map_err(sys(Step::Mounts, format!("symlink /dev/{link}")))?;
        }
    }
    Ok(())
}

/// The spec's `linux.devices` (`--device`), made with the host's numbers and owners.
fn make_spec_devices(rootfs: &Path, linux: &oci_spec::runtime::Linux) -> Result<(), StartError> {
    for d in linux.devices().clone().unwrap_or_default() {
        let rel = d.path().strip_prefix("/").unwrap_or(d.path());
        let p = crate::rootfs::resolve_in_root(rootfs, rel)
            .map_err(sys(Step::Mounts, format!("resolve {}", d.path().display())))?;
        if let Some(parent) = p.parent() {
            fs::create_dir_all(parent)
                .map_err(sys(Step::Mounts, format!("create {}", parent.display())))?;
        }
        let _ = fs::remove_file(&p);
        let kind = match d.typ() {
            oci_spec::runtime::LinuxDeviceType::B => libc::S_IFBLK,
            _ => libc::S_IFCHR,
        };
        let mode = d.file_mode().unwrap_or(0o666);
        let c = cstr(&p);
        let dev = libc::makedev(d.major() as u32, d.minor() as u32);
        // SAFETY: `c` is a valid path string for the duration of the call.
        let ret = unsafe { libc::mknod(c.as_ptr(), kind | (mode & 0o7777), dev) };
        match check(ret) {
            Ok(()) => {
                fs::set_permissions(&p, fs::Permissions::from_mode(mode & 0o7777))
                    .map_err(sys(Step::Mounts, format!("chmod {}", d.path().display())))?;
                let (uid, gid) = (d.uid().unwrap_or(0), d.gid().unwrap_or(0));
                std::os::unix::fs::chown(&p, Some(uid), Some(gid))
                    .map_err(sys(Step::Mounts, format!("chown {}", d.path().display())))?;
            }
            Err(e) if e.raw_os_error() == Some(libc::EPERM) => {
                return Err(fail(
                    Step::Mounts,
                    format!(
                        "cannot make the device {} in a user namespace: --device needs the host's user namespace (no --uidmap)",
                        d.path().display()
                    ),
                ));
            }
            Err(e) => {
                return Err(sys(Step::Mounts, format!("mknod {}", d.path().display()))(
                    e,
                ))
            }
        }
    }
    Ok(())
}

/// The spec's `linux.sysctl`, written to /proc/sys before it is made read-only.
fn set_sysctls(linux: &oci_spec::runtime::Linux) -> Result<(), StartError> {
    for (k, v) in linux.sysctl().clone().unwrap_or_default() {
        let path = Path::new("/proc/sys").join(k.replace('.', "/"));
        fs::write(&path, v.as_bytes()).map_err(sys(Step::Mounts, format!("set the sysctl {k}")))?;
    }
    Ok(())
}

fn pivot_root(rootfs: &Path) -> Result<(), StartError> {
    std::env::set_current_dir(rootfs).map_err(sys(Step::Mounts, "chdir to the rootfs"))?;
    rustix::process::pivot_root(".", ".")
        .map_err(|e| StartError::errno(Step::Mounts, "pivot_root", e))?;
    // SAFETY: a constant path; detaches the old root stacked under the new one.
    check(unsafe { libc::umount2(c".".as_ptr(), libc::MNT_DETACH) })
        .map_err(sys(Step::Mounts, "detach the old root"))?;
    std::env::set_current_dir("/").map_err(sys(Step::Mounts, "chdir /"))
}

fn mask_paths(spec: &Spec) -> Result<(), StartError> {
    let Some(linux) = spec.linux() else {
        return Ok(());
    };
    for p in linux.masked_paths().clone().unwrap_or_default() {
        let path = Path::new(&p);
        match fs::symlink_metadata(path) {
            Ok(m) if m.is_dir() => mount(Some("tmpfs"), path, Some("tmpfs"), libc::MS_RDONLY, None)
                .map_err(sys(Step::Mounts, format!("mask {p}")))?,
            Ok(_) => mount(Some("/dev/null"), path, None, libc::MS_BIND, None)
                .map_err(sys(Step::Mounts, format!("mask {p}")))?,
            Err(_) => {}
        }
    }
    for p in linux.readonly_paths().clone().unwrap_or_default() {
        let path = Path::new(&p);
        if path.exists() {
            mount(Some(&p), path, None, libc::MS_BIND | libc::MS_REC, None)
                .map_err(sys(Step::Mounts, format!("read-only {p}")))?;
            mount(
                None,
                path,
                None,
                libc::MS_BIND
                    | libc::MS_REC
                    | libc::MS_REMOUNT
                    | libc::MS_RDONLY
                    | libc::MS_NOSUID
                    | libc::MS_NODEV
                    | libc::MS_NOEXEC,
                None,
            )
            .map_err(sys(Step::Mounts, format!("read-only {p}")))?;
        }
    }
    Ok(())
}

/// Sets IFF_UP on `lo` in a new network namespace.
fn loopback_up() -> io::Result<()> {
    // SAFETY: plain socket(2); the fd is closed below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    check(fd)?;
    // SAFETY: ifreq is plain data; zeroed is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (i, b) in b"lo".iter().enumerate() {
        req.ifr_name[i] = *b as libc::c_char;
    }
    // SAFETY: `req` is a valid ifreq for SIOCGIFFLAGS/SIOCSIFFLAGS on `fd`; the union
    // field read is the one the kernel filled in.
    let r = unsafe {
        let mut r = libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut req);
        if r >= 0 {
            req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
            r = libc::ioctl(fd, libc::SIOCSIFFLAGS, &req);
        }
        libc::close(fd);
        r
    };
    check(r)
}

fn rlimit_resource(name: &str) -> Option<libc::__rlimit_resource_t> {
    Some(match name {
        "RLIMIT_CPU" => libc::RLIMIT_CPU,
        "RLIMIT_FSIZE" => libc::RLIMIT_FSIZE,
        "RLIMIT_DATA" => libc::RLIMIT_DATA,
        "RLIMIT_STACK" => libc::RLIMIT_STACK,
        "RLIMIT_CORE" => libc::RLIMIT_CORE,
        "RLIMIT_RSS" => libc::RLIMIT_RSS,
        "RLIMIT_NPROC" => libc::RLIMIT_NPROC,
        "RLIMIT_NOFILE" => libc::RLIMIT_NOFILE,
        "RLIMIT_MEMLOCK" => libc::RLIMIT_MEMLOCK,
        "RLIMIT_AS" => libc::RLIMIT_AS,
        "RLIMIT_LOCKS" => libc::RLIMIT_LOCKS,
        "RLIMIT_SIGPENDING" => libc::RLIMIT_SIGPENDING,
        "RLIMIT_MSGQUEUE" => libc::RLIMIT_MSGQUEUE,
        "RLIMIT_NICE" => libc::RLIMIT_NICE,
        "RLIMIT_RTPRIO" => libc::RLIMIT_RTPRIO,
        "RLIMIT_RTTIME" => libc::RLIMIT_RTTIME,
        _ => return None,
    })
}

/// Capability numbers named in a list of OCI capabilities.
fn cap_mask(caps: &Option<oci_spec::runtime::Capabilities>) -> u64 {
    let mut mask = 0u64;
    for c in caps.iter().flatten() {
        if let Some(n) =
            crate::spec::cap_number(&format!("CAP_{}", c.to_string().trim_start_matches("CAP_")))
        {
            mask |= 1 << n;
        }
    }
    mask
}

fn last_cap() -> u32 {
    fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(40)
}

pub(crate) fn capset(effective: u64, permitted: u64, inheritable: u64) -> io::Result<()> {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    let mut header = Header {
        version: 0x2008_0522,
        pid: 0,
    }; // _LINUX_CAPABILITY_VERSION_3
    let data = [
        Data {
            effective: effective as u32,
            permitted: permitted as u32,
            inheritable: inheritable as u32,
        },
        Data {
            effective: (effective >> 32) as u32,
            permitted: (permitted >> 32) as u32,
            inheritable: (inheritable >> 32) as u32,
        },
    ];
    // SAFETY: header and data match the kernel's v3 capability structures.
    check(unsafe { libc::syscall(libc::SYS_capset, &mut header, data.as_ptr()) as libc::c_int })
}

/// The permitted set of this process: a container never gets more than the engine has.
pub(crate) fn own_permitted() -> u64 {
    let status = fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapPrm:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .unwrap_or(u64::MAX)
}

fn set_user_and_caps(spec: &Spec) -> Result<(), StartError> {
    let process = spec
        .process()
        .as_ref()
        .ok_or_else(|| fail(Step::Bundle, "the spec has no process"))?;
    let user = process.user();
    let caps = process.capabilities().clone().unwrap_or_default();
    let bounding = cap_mask(caps.bounding());
    let own = own_permitted();
    let effective = cap_mask(caps.effective()) & own;
    let permitted = cap_mask(caps.permitted()) & own;
    let inheritable = cap_mask(caps.inheritable()) & own;

    // Bounding set first: dropping needs CAP_SETPCAP, which root still has here.
    for cap in 0..=last_cap() {
        if bounding & (1 << cap) == 0 {
            // SAFETY: prctl with integer arguments only.
            check(unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) })
                .map_err(sys(Step::Process, format!("drop capability {cap}")))?;
        }
    }
    // Keep permitted capabilities across the uid change, then set them explicitly.
    // SAFETY: prctl with integer arguments only.
    check(unsafe { libc::prctl(libc::PR_SET_KEEPCAPS, 1, 0, 0, 0) })
        .map_err(sys(Step::Process, "keep capabilities"))?;
    let gids: Vec<libc::gid_t> = user.additional_gids().clone().unwrap_or_default();
    // SAFETY: `gids` outlives the call and its length is passed alongside.
    check(unsafe { libc::setgroups(gids.len(), gids.as_ptr()) })
        .map_err(sys(Step::Process, "setgroups"))?;
    // SAFETY: integer arguments only.
    check(unsafe { libc::setresgid(user.gid(), user.gid(), user.gid()) })
        .map_err(sys(Step::Process, format!("setgid {}", user.gid())))?;
    // SAFETY: integer arguments only.
    check(unsafe { libc::setresuid(user.uid(), user.uid(), user.uid()) })
        .map_err(sys(Step::Process, format!("setuid {}", user.uid())))?;
    capset(effective, permitted, inheritable).map_err(sys(Step::Process, "set capabilities"))?;
    // SAFETY: prctl with integer arguments only.
    check(unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
            0,
            0,
            0,
        )
    })
    .map_err(sys(Step::Process, "clear ambient capabilities"))?;
    if process.no_new_privileges().unwrap_or(false) {
        // SAFETY: prctl with integer arguments only.
        check(unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) })
            .map_err(sys(Step::Process, "set no_new_privs"))?;
    }
    Ok(())
}

/// The spec annotation asking for a minimal init as PID 1 (`--init`).
pub const INIT_ANNOTATION: &str = "org.pier.init";

/// PID 1 for `--init`: forwards signals to the command, reaps every zombie, and exits
/// with the command's status. It is this process, already set up (user, capabilities,
/// seccomp), so the image needs no init binary of its own.
fn reaper(child: libc::pid_t) -> ! {
    // Drop our copies of every descriptor but stdio, so the monitor sees the command's
    // start and output end when the command's own copies close.
    // SAFETY: integer arguments only.
    unsafe { libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32) };
    // Every signal is blocked already (since before the fork): each waits for
    // sigwaitinfo.
    // SAFETY: a zeroed sigset is valid input to sigfillset, which then fills it.
    let mut all: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `all` is a valid sigset.
    unsafe { libc::sigfillset(&mut all) };
    loop {
        // SAFETY: siginfo is plain data; sigwaitinfo fills it in.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: `all` and `info` are valid for the call.
        let sig = unsafe { libc::sigwaitinfo(&all, &mut info) };
        if sig < 0 {
            continue;
        }
        if sig != libc::SIGCHLD {
            // SAFETY: forwarding a signal to our child.
            unsafe { libc::kill(child, sig) };
            continue;
        }
        loop {
            let mut status = 0;
            // SAFETY: reaping any child without blocking.
            let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
            if pid <= 0 {
                break;
            }
            if pid == child {
                let code = if libc::WIFEXITED(status) {
                    libc::WEXITSTATUS(status)
                } else {
                    128 + libc::WTERMSIG(status)
                };
                // SAFETY: leaving without running destructors, as an init does.
                unsafe { libc::_exit(code) };
            }
        }
    }
}

/// Finds the program the way execvp would, using the container's PATH.
fn find_program(arg0: &str, env: &[String]) -> Result<PathBuf, StartError> {
    if arg0.contains('/') {
        let p = PathBuf::from(arg0);
        return match fs::metadata(&p) {
            Ok(_) => Ok(p),
            Err(_) => Err(StartError::command(127, format!("exec: \"{arg0}\""))
                .with_detail(format!("stat {arg0}: no such file or directory"))),
        };
    }
    let path = env
        .iter()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
    for dir in path.split(':').filter(|d| !d.is_empty()) {
        let p = Path::new(dir).join(arg0);
        if fs::metadata(&p).is_ok_and(|m| m.is_file()) {
            return Ok(p);
        }
    }
    Err(StartError::command(127, format!("exec: \"{arg0}\""))
        .with_detail("executable file not found in $PATH"))
}

/// Everything from mounts to exec. Returns only on failure. With `console`, the
/// container gets a terminal made in its own devpts, whose master goes to the monitor
/// over that socket.
/// The network namespace a spec names by path, to join rather than make.
pub(crate) fn network_namespace_path(spec: &Spec) -> Option<&Path> {
    namespace_path(spec, LinuxNamespaceType::Network)
}

/// The namespace of type `typ` a spec names by path (another container's, for
/// `--pid`/`--ipc container:NAME`), to join rather than make.
pub(crate) fn namespace_path(spec: &Spec, typ: LinuxNamespaceType) -> Option<&Path> {
    spec.linux()
        .as_ref()?
        .namespaces()
        .as_ref()?
        .iter()
        .find(|n| n.typ() == typ)?
        .path()
        .as_deref()
}

/// Joins the namespace at `path` (`kind` names it in errors): for the PID namespace
/// this sets the one of this process's next children, which is why the monitor joins it
/// before it clones the init.
pub(crate) fn join_namespace(
    path: &Path,
    ty: rustix::thread::LinkNameSpaceType,
    kind: &str,
) -> Result<(), StartError> {
    let what = |e: io::Error| {
        StartError::io(
            Step::Namespaces,
            format!("join the {kind} namespace {}", path.display()),
            e,
        )
    };
    let f = fs::File::open(path).map_err(what)?;
    rustix::thread::move_into_link_name_space(std::os::fd::AsFd::as_fd(&f), Some(ty))
        .map_err(|e| what(e.into()))
}

/// Joins the network namespace at `path`, unless this process is in it already (in a
/// user namespace the monitor joined it before cloning the init; see monitor.rs).
pub(crate) fn join_network_namespace(path: &Path) -> Result<(), StartError> {
    use std::os::unix::fs::MetadataExt;
    let what = |e: io::Error| {
        StartError::io(
            Step::Namespaces,
            format!("join network namespace {}", path.display()),
            e,
        )
    };
    let f = fs::File::open(path).map_err(what)?;
    let ours = fs::metadata("/proc/self/ns/net").map_err(what)?;
    let theirs = f.metadata().map_err(what)?;
    if ours.dev() == theirs.dev() && ours.ino() == theirs.ino() {
        return Ok(());
    }
    rustix::thread::move_into_link_name_space(
        std::os::fd::AsFd::as_fd(&f),
        Some(rustix::thread::LinkNameSpaceType::Network),
    )
    .map_err(|e| what(e.into()))
}

/// Sets the container up and execs its process; returns only on failure. `cgroup_v1`:
/// each v1 controller with the container's group in it (empty on v2).
pub fn run(
    spec: &Spec,
    cgroup_v1: &[(String, PathBuf)],
    console: Option<std::os::fd::OwnedFd>,
    seccomp: Option<&[crate::seccomp::Insn]>,
    foreign: crate::foreign_mounts::ForeignMounts,
) -> StartError {
    match setup(spec, cgroup_v1, console, seccomp, foreign) {
        Ok(never) => match never {},
        Err(e) => e,
    }
}

/// Makes a terminal in the container's devpts: the master goes to the monitor, the slave
/// becomes this process's controlling terminal and stdio.
fn setup_console(console: &std::os::fd::OwnedFd, uid: u32, gid: u32) -> Result<(), StartError> {
    use rustix::pty::OpenptFlags;
    let e = |what: &'static str| {
        move |err: rustix::io::Errno| {
            StartError::errno(Step::Terminal, format!("terminal: {what}"), err)
        }
    };
    let master = rustix::pty::openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY)
        .map_err(e("open /dev/ptmx"))?;
    rustix::pty::unlockpt(&master).map_err(e("unlock"))?;
    let slave = rustix::pty::ioctl_tiocgptpeer(&master, OpenptFlags::RDWR | OpenptFlags::NOCTTY)
        .map_err(e("open the slave"))?;
    rustix::fs::fchown(
        &slave,
        Some(rustix::fs::Uid::from_raw(uid)),
        Some(rustix::fs::Gid::from_raw(gid)),
    )
    .map_err(e("chown"))?;
    let fds = [std::os::fd::AsFd::as_fd(&master)];
    let mut space = [std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = rustix::net::SendAncillaryBuffer::new(&mut space);
    control.push(rustix::net::SendAncillaryMessage::ScmRights(&fds));
    rustix::net::sendmsg(
        console,
        &[io::IoSlice::new(b"m")],
        &mut control,
        rustix::net::SendFlags::empty(),
    )
    .map_err(e("send the master"))?;
    drop(master);
    rustix::process::setsid().map_err(e("setsid"))?;
    rustix::process::ioctl_tiocsctty(&slave).map_err(e("make it the controlling terminal"))?;
    for fd in 0..3 {
        // SAFETY: duplicating a valid descriptor onto stdio.
        check(unsafe { libc::dup2(std::os::fd::AsRawFd::as_raw_fd(&slave), fd) })
            .map_err(sys(Step::Terminal, "dup the terminal"))?;
    }
    Ok(())
}

fn setup(
    spec: &Spec,
    cgroup_v1: &[(String, PathBuf)],
    console: Option<std::os::fd::OwnedFd>,
    seccomp: Option<&[crate::seccomp::Insn]>,
    mut foreign: crate::foreign_mounts::ForeignMounts,
) -> Result<std::convert::Infallible, StartError> {
    let process = spec
        .process()
        .as_ref()
        .ok_or_else(|| fail(Step::Bundle, "the spec has no process"))?;
    let root = spec
        .root()
        .as_ref()
        .ok_or_else(|| fail(Step::Bundle, "the spec has no root"))?;
    let rootfs = root.path().clone();
    let linux = spec.linux().clone().unwrap_or_default();
    let namespaces = linux.namespaces().clone().unwrap_or_default();
    let has_ns = |t: LinuxNamespaceType| {
        namespaces
            .iter()
            .any(|n| n.typ() == t && n.path().is_none())
    };

    if has_ns(LinuxNamespaceType::User) {
        // The monitor has written the mappings; this process is still the host's root,
        // which the new namespace does not map. Becoming its root (a mapped user, with
        // all capabilities in the namespace) makes what follows happen as that user.
        // SAFETY: plain system calls in a single-threaded process.
        check(unsafe { libc::setresgid(0, 0, 0) }).map_err(sys(
            Step::Namespaces,
            "become the user namespace's root group",
        ))?;
        // SAFETY: as above.
        check(unsafe { libc::setresuid(0, 0, 0) })
            .map_err(sys(Step::Namespaces, "become the user namespace's root"))?;
    }
    // Join a network namespace given by path.
    if let Some(path) = network_namespace_path(spec) {
        join_network_namespace(path)?;
    }

    if has_ns(LinuxNamespaceType::Cgroup) {
        // SAFETY: a new cgroup namespace changes no memory or file-descriptor state.
        unsafe { rustix::thread::unshare_unsafe(rustix::thread::UnshareFlags::NEWCGROUP) }
            .map_err(|e| StartError::errno(Step::Namespaces, "new cgroup namespace", e))?;
    }

    // Mounts stay in this namespace.
    mount(
        None,
        Path::new("/"),
        None,
        libc::MS_REC | libc::MS_SLAVE,
        None,
    )
    .map_err(sys(Step::Mounts, "make / a slave mount"))?;
    mount(
        Some(&rootfs.to_string_lossy()),
        &rootfs,
        None,
        libc::MS_BIND | libc::MS_REC,
        None,
    )
    .map_err(sys(Step::Mounts, "bind the rootfs"))?;
    for m in spec.mounts().clone().unwrap_or_default() {
        if let Some(fd) = foreign.take(m.destination()) {
            let what = format!(
                "attach {} from another container",
                m.destination().display()
            );
            let dest =
                resolve_in_root(&rootfs, m.destination()).map_err(sys(Step::Mounts, &what))?;
            crate::foreign_mounts::attach(fd, &dest).map_err(sys(Step::Mounts, &what))?;
            continue;
        }
        mount_one(&rootfs, &m, cgroup_v1, has_ns(LinuxNamespaceType::Cgroup))?;
    }
    make_devices(&rootfs)?;
    make_spec_devices(&rootfs, &linux)?;
    pivot_root(&rootfs)?;
    set_sysctls(&linux)?;
    mask_paths(spec)?;
    if root.readonly().unwrap_or(false) {
        remount_bind(Path::new("/"), libc::MS_RDONLY | libc::MS_REC)
            .map_err(sys(Step::Mounts, "make the rootfs read-only"))?;
    }

    if let Some(console) = &console {
        setup_console(console, process.user().uid(), process.user().gid())?;
    }
    drop(console);
    if has_ns(LinuxNamespaceType::Uts) {
        if let Some(h) = spec.hostname() {
            rustix::system::sethostname(h.as_bytes())
                .map_err(|e| StartError::errno(Step::Process, "sethostname", e))?;
        }
        if let Some(d) = spec.domainname() {
            rustix::system::setdomainname(d.as_bytes())
                .map_err(|e| StartError::errno(Step::Process, "setdomainname", e))?;
        }
    }
    if has_ns(LinuxNamespaceType::Network) {
        loopback_up().map_err(sys(Step::Process, "bring up lo"))?;
    }
    let cwd = process.cwd();
    if !cwd.exists() {
        fs::create_dir_all(cwd).map_err(sys(
            Step::Process,
            format!("create working directory {}", cwd.display()),
        ))?;
    }
    finish(spec, seccomp)
}

/// The last steps, shared by a container's init and by `exec`: rlimits, seccomp, user and
/// capabilities, working directory, exec. Returns only on failure.
/// `seccomp`: the spec's filter compiled already (see [`crate::seccomp::COMPILED`]).
pub fn finish(
    spec: &Spec,
    seccomp: Option<&[crate::seccomp::Insn]>,
) -> Result<std::convert::Infallible, StartError> {
    let process = spec
        .process()
        .as_ref()
        .ok_or_else(|| fail(Step::Bundle, "the spec has no process"))?;
    let linux = spec.linux().clone().unwrap_or_default();
    if let Some(adj) = process.oom_score_adj() {
        std::fs::write("/proc/self/oom_score_adj", adj.to_string()).map_err(sys(
            Step::Process,
            format!("set the OOM score adjustment to {adj}"),
        ))?;
    }
    for r in process.rlimits().clone().unwrap_or_default() {
        let name = format!("{:?}", r.typ());
        let name = if name.starts_with("RLIMIT_") {
            name
        } else {
            format!(
                "RLIMIT_{}",
                name.trim_start_matches("Rlimit").to_uppercase()
            )
        };
        let res = rlimit_resource(&name)
            .ok_or_else(|| fail(Step::Process, format!("unknown rlimit {name}")))?;
        let lim = libc::rlimit {
            rlim_cur: r.soft(),
            rlim_max: r.hard(),
        };
        // SAFETY: `lim` is a valid rlimit.
        check(unsafe { libc::setrlimit(res, &lim) })
            .map_err(sys(Step::Process, format!("setrlimit {name}")))?;
    }
    let cwd = process.cwd();
    // Seccomp last but for the user and capability changes, which the filter allows;
    // installing it still needs the CAP_SYS_ADMIN init has until then.
    if let Some(profile) = linux.seccomp() {
        let compiled;
        let filter = match seccomp {
            Some(f) => f,
            None => {
                let json = serde_json::to_value(profile).map_err(|e| {
                    fail(Step::Seccomp, "seccomp profile").with_detail(e.to_string())
                })?;
                compiled = crate::seccomp::compile(&json).map_err(|e| {
                    StartError::new(e.kind(), Step::Seccomp, "seccomp profile")
                        .with_detail(e.to_string())
                })?;
                &compiled
            }
        };
        crate::seccomp::install(filter)
            .map_err(sys(Step::Seccomp, "install the seccomp filter"))?;
    }
    set_user_and_caps(spec)?;
    std::env::set_current_dir(cwd)
        .map_err(sys(Step::Process, format!("chdir to {}", cwd.display())))?;

    let args = process.args().clone().unwrap_or_default();
    let arg0 = args.first().ok_or_else(|| {
        StartError::new(
            ErrorKind::Invalid,
            Step::Exec,
            "no command given and the image has none; give one after the image name",
        )
    })?;
    let env = process.env().clone().unwrap_or_default();
    let program = find_program(arg0, &env)?;
    let wants_init = spec
        .annotations()
        .as_ref()
        .is_some_and(|a| a.get(INIT_ANNOTATION).is_some_and(|v| v == "true"));
    if wants_init {
        // Every signal is blocked before the fork, so none meant for the init (the
        // command's SIGCHLD above all: a command that exits at once) arrives before the
        // reaper waits for it; the default action would drop it, and the init would
        // wait forever over a zombie. The command gets the mask back before its exec.
        // SAFETY: zeroed sigsets are valid input to sigfillset and sigprocmask.
        let (mut all, mut old): (libc::sigset_t, libc::sigset_t) =
            unsafe { (std::mem::zeroed(), std::mem::zeroed()) };
        // SAFETY: both sets are valid for the calls.
        unsafe {
            libc::sigfillset(&mut all);
            libc::sigprocmask(libc::SIG_BLOCK, &all, &mut old);
        }
        // SAFETY: fork in a single-threaded process.
        let child = unsafe { libc::fork() };
        if child > 0 {
            reaper(child);
        }
        // SAFETY: `old` is the mask read above.
        unsafe { libc::sigprocmask(libc::SIG_SETMASK, &old, std::ptr::null_mut()) };
        if child < 0 {
            return Err(sys(Step::Exec, "fork the command under the init")(
                io::Error::last_os_error(),
            ));
        }
    }
    let c_prog = cstr(&program);
    let c_args: Vec<CString> = args.iter().map(cstr).collect();
    let c_env: Vec<CString> = env.iter().map(cstr).collect();
    let mut argv: Vec<*const libc::c_char> = c_args.iter().map(|a| a.as_ptr()).collect();
    argv.push(std::ptr::null());
    let mut envp: Vec<*const libc::c_char> = c_env.iter().map(|a| a.as_ptr()).collect();
    envp.push(std::ptr::null());
    // Nothing but stdio crosses into the container.
    // SAFETY: integer arguments only.
    unsafe {
        libc::syscall(
            libc::SYS_close_range,
            3u32,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    };
    // SAFETY: argv and envp are NULL-terminated arrays of valid strings that outlive the
    // call; execve only returns on failure.
    unsafe { libc::execve(c_prog.as_ptr(), argv.as_ptr(), envp.as_ptr()) };
    let e = io::Error::last_os_error();
    let code = match e.raw_os_error() {
        Some(libc::ENOENT) => 127,
        _ => 126,
    };
    let mut err = StartError::command(code, format!("exec: \"{arg0}\""));
    match e.raw_os_error() {
        Some(errno) => err = err.with_errno(errno),
        None => err = err.with_detail(e.to_string()),
    }
    Err(err)
}
