//! The VM's first moments, before the host says anything: the agent's own /proc, /sys
//! and /dev, the console as its stdio, the kernel modules the initramfs carries, and
//! the virtio-serial port it speaks on.

use std::collections::BTreeSet;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::sys::{self, Context, Result};

/// Where the initramfs keeps its modules, and their load order.
pub const MODULES_DIR: &str = "/lib/modules";

/// Mounts the agent's own /proc, /sys and /dev (the kernel does not mount devtmpfs on
/// an initramfs) and makes the console its stdio.
pub fn mount_basics() -> Result<()> {
    for (fstype, target) in [("proc", "/proc"), ("sysfs", "/sys"), ("devtmpfs", "/dev")] {
        let target = Path::new(target);
        fs::create_dir_all(target).ctx(|| format!("making {}", target.display()))?;
        match sys::mount(fstype, target, fstype, libc::MS_NOSUID, "") {
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {}
            r => r.ctx(|| format!("mounting {fstype} at {}", target.display()))?,
        }
    }
    fs::create_dir_all("/run/pier").ctx(|| "making /run/pier".into())?;
    console_stdio();
    Ok(())
}

/// Points fds 0, 1 and 2 at the console when the kernel could not (an initramfs
/// without /dev/console), so what the agent prints reaches the console log.
fn console_stdio() {
    let Ok(con) = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY)
        .open("/dev/console")
    else {
        return;
    };
    for fd in 0..3 {
        // SAFETY: F_GETFD only asks whether the descriptor is open.
        if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
            // SAFETY: dup2 onto a closed standard descriptor.
            unsafe { libc::dup2(con.as_raw_fd(), fd) };
        }
    }
}

/// The module files named by a `modules.order` (one per line, with or without a
/// directory), in order, each once.
pub fn parse_modules_order(text: &str) -> Vec<String> {
    let mut seen = BTreeSet::new();
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.rsplit('/').next())
        .filter(|name| seen.insert(name.to_string()))
        .map(str::to_string)
        .collect()
}

/// Loads the modules in `dir` in the order of its `modules.order` (every `*.ko` in
/// name order without one). A module whose dependency comes later is retried until a
/// pass loads nothing more; what still fails is returned, with why.
pub fn load_modules(dir: &Path) -> Vec<(String, io::Error)> {
    let names = match fs::read_to_string(dir.join("modules.order")) {
        Ok(text) => parse_modules_order(&text),
        Err(_) => {
            let mut names: Vec<String> = fs::read_dir(dir)
                .into_iter()
                .flatten()
                .flatten()
                .filter_map(|e| e.file_name().to_str().map(str::to_string))
                .filter(|n| n.ends_with(".ko"))
                .collect();
            names.sort();
            names
        }
    };
    let said = std::env::var(pier_guest::DEVICES_PARAM).ok();
    let names = names
        .into_iter()
        .filter(|n| needed(n, |kind| has_device(said.as_deref(), kind)))
        .collect();
    load_in_passes(names, |name| load_module(&dir.join(name)))
}

/// Kinds of virtio devices a driver module can be for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceKind {
    Net,
    Block,
    Vsock,
}

/// Whether the host said (in [`pier_guest::DEVICES_PARAM`]: `net,block`) the VM has a
/// device of `kind`; when it said nothing, any may be there.
pub fn has_device(said: Option<&str>, kind: DeviceKind) -> bool {
    let Some(said) = said else {
        return true;
    };
    let name = match kind {
        DeviceKind::Net => "net",
        DeviceKind::Block => "block",
        DeviceKind::Vsock => "vsock",
    };
    said.split(',').any(|k| k.trim() == name)
}

/// Whether module `name` is worth loading: a driver for a kind of device the VM does
/// not have is not (a VM without a NIC or a disk boots without their drivers, each tens
/// of milliseconds under emulation). `present` says whether the VM has a kind.
pub fn needed(name: &str, present: impl Fn(DeviceKind) -> bool) -> bool {
    let kind = match name.trim_end_matches(".ko") {
        "virtio_net" | "net_failover" | "failover" => DeviceKind::Net,
        "virtio_blk" => DeviceKind::Block,
        "vsock" | "vmw_vsock_virtio_transport_common" | "vmw_vsock_virtio_transport" => {
            DeviceKind::Vsock
        }
        // The instance's root is the host's overlay, shared by virtio-fs: the guest
        // mounts none of its own (and the module is the largest, ~0.1 s to load).
        "overlay" => return false,
        _ => return true,
    };
    present(kind)
}

/// Calls `load` on each name in order, then again on the failed ones while a pass
/// makes progress. Returns the names that never loaded, with the last error.
pub fn load_in_passes(
    names: Vec<String>,
    mut load: impl FnMut(&str) -> io::Result<()>,
) -> Vec<(String, io::Error)> {
    let mut pending = names;
    loop {
        let before = pending.len();
        let mut failed = Vec::new();
        for name in pending {
            if let Err(e) = load(&name) {
                failed.push((name, e));
            }
        }
        if failed.is_empty() || failed.len() == before {
            return failed;
        }
        pending = failed.into_iter().map(|(n, _)| n).collect();
    }
}

/// finit_module(2) of one file; already loaded (built in, or loaded before) is fine.
fn load_module(path: &Path) -> io::Result<()> {
    let f = File::open(path)?;
    // SAFETY: a valid descriptor and an empty NUL-terminated parameter string.
    let r = unsafe {
        libc::syscall(
            libc::SYS_finit_module,
            f.as_raw_fd(),
            c"".as_ptr(),
            0 as libc::c_int,
        )
    };
    if r < 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EEXIST) {
            return Err(e);
        }
    }
    Ok(())
}

/// The device name (`vport0p1`) of the virtio-serial port called `name`, looked up in
/// a `/sys/class/virtio-ports` directory.
pub fn find_port(class_dir: &Path, name: &str) -> Option<String> {
    let mut found: Vec<String> = fs::read_dir(class_dir)
        .ok()?
        .flatten()
        .filter(|e| fs::read_to_string(e.path().join("name")).is_ok_and(|n| n.trim_end() == name))
        .filter_map(|e| e.file_name().to_str().map(str::to_string))
        .collect();
    found.sort();
    found.into_iter().next()
}

/// Opens the port named `name` (non-blocking, read-write), waiting up to `timeout`
/// for the driver to announce it and devtmpfs to make its node.
pub fn open_port(name: &str, timeout: Duration) -> Result<File> {
    let deadline = Instant::now() + timeout;
    let class = Path::new("/sys/class/virtio-ports");
    loop {
        if let Some(dev) = find_port(class, name) {
            let path = PathBuf::from("/dev").join(&dev);
            match OpenOptions::new()
                .read(true)
                .write(true)
                .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
                .open(&path)
            {
                Ok(f) => return Ok(f),
                Err(e) if Instant::now() >= deadline => {
                    return Err(e).ctx(|| format!("opening the agent port {}", path.display()))
                }
                Err(_) => {}
            }
        } else if Instant::now() >= deadline {
            return Err(sys::other(
                format!("finding the virtio-serial port named {name}"),
                format!(
                    "no port in {} has that name after {} s (is virtio_console loaded, and \
                     does QEMU have -device virtserialport,name={name}?)",
                    class.display(),
                    timeout.as_secs()
                ),
            ));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modules_order_gives_file_names_in_order_once() {
        let text = "kernel/drivers/virtio/virtio_ring.ko\n\nvirtio.ko\n# a comment\n  \
                    drivers/virtio/virtio_mmio.ko \nvirtio.ko\n";
        assert_eq!(
            parse_modules_order(text),
            ["virtio_ring.ko", "virtio.ko", "virtio_mmio.ko"]
        );
        assert!(parse_modules_order("").is_empty());
    }

    #[test]
    fn modules_load_in_passes_until_no_progress() {
        // b needs a, which comes after it; c never loads.
        let mut loaded: Vec<String> = Vec::new();
        let names = ["b.ko", "a.ko", "c.ko"].map(String::from).to_vec();
        let failed = load_in_passes(names, |n| {
            let ok = match n {
                "a.ko" => true,
                "b.ko" => loaded.iter().any(|l| l == "a.ko"),
                _ => false,
            };
            if ok {
                loaded.push(n.to_string());
                Ok(())
            } else {
                Err(io::Error::from_raw_os_error(libc::ENOENT))
            }
        });
        assert_eq!(loaded, ["a.ko", "b.ko"]);
        assert_eq!(failed.len(), 1);
        assert_eq!(failed[0].0, "c.ko");
    }

    #[test]
    fn drivers_load_only_for_devices_the_vm_has() {
        let only_net = |k| has_device(Some("net"), k);
        assert!(needed("virtio_net.ko", only_net));
        assert!(needed("failover.ko", only_net));
        assert!(!needed("virtio_blk.ko", only_net));
        assert!(!needed("vsock.ko", only_net));
        assert!(!needed("overlay.ko", |_| true));
        let both = |k| has_device(Some("net,block"), k);
        assert!(needed("virtio_blk.ko", both) && needed("virtio_net.ko", both));
        let none = |k| has_device(Some("none"), k);
        assert!(!needed("virtio_net.ko", none) && !needed("virtio_blk.ko", none));
        // A host that says nothing: every driver.
        assert!(needed("virtio_blk.ko", |k| has_device(None, k)));
        // What every VM needs does not depend on its devices.
        for m in [
            "virtio_ring.ko",
            "virtio.ko",
            "virtio_mmio.ko",
            "virtio_console.ko",
            "fuse.ko",
            "virtiofs.ko",
        ] {
            assert!(needed(m, |_| false), "{m}");
        }
    }

    #[test]
    fn the_port_is_found_by_its_name() {
        let dir = std::env::temp_dir().join(format!("pier-guest-ports-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        for (dev, name) in [("vport0p0", "other"), ("vport0p2", "pier.agent\n")] {
            fs::create_dir_all(dir.join(dev)).unwrap();
            fs::write(dir.join(dev).join("name"), name).unwrap();
        }
        fs::create_dir_all(dir.join("vport0p1")).unwrap(); // no name file
        assert_eq!(find_port(&dir, "pier.agent").as_deref(), Some("vport0p2"));
        assert_eq!(find_port(&dir, "nope"), None);
        assert_eq!(find_port(&dir.join("missing"), "pier.agent"), None);
        fs::remove_dir_all(&dir).unwrap();
    }
}
