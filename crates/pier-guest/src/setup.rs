//! The instance's world inside the VM, built on [`Kind::Run`](pier_guest::Kind::Run):
//! its root filesystem (virtiofs) at [`NEWROOT`], the kernel filesystems inside it, its
//! volumes, the files the host gives (hosts, resolv.conf, hostname) and its hostname.
//! Paths inside the root are resolved as the instance would see them (its symlinks
//! are followed inside it, never out to the agent's own root).

use std::collections::VecDeque;
use std::ffi::OsString;
use std::fs;
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Component, Path, PathBuf};

use pier_guest::{RunConfig, ROOTFS_TAG};

use crate::sys::{self, Context, Result};

/// Where the instance's root filesystem is mounted in the agent's view.
pub const NEWROOT: &str = "/newroot";
/// Where the agent keeps the files it binds into the instance.
const FILES_DIR: &str = "/run/pier/files";

/// `path` (as the instance sees it) as a path under `root`, with every symlink on the
/// way followed as if `root` were `/`. The last component need not exist.
pub fn resolve_in_root(root: &Path, path: &str) -> PathBuf {
    let mut todo: VecDeque<OsString> = components(Path::new(path));
    let mut parts: Vec<OsString> = Vec::new();
    let mut links = 0;
    while let Some(c) = todo.pop_front() {
        if c == ".." {
            parts.pop();
            continue;
        }
        let here: PathBuf = root.join(parts.iter().collect::<PathBuf>()).join(&c);
        match fs::symlink_metadata(&here) {
            Ok(m) if m.file_type().is_symlink() && links < 40 => {
                links += 1;
                let Ok(target) = fs::read_link(&here) else {
                    parts.push(c);
                    continue;
                };
                if target.is_absolute() {
                    parts.clear();
                }
                for t in components(&target).into_iter().rev() {
                    todo.push_front(t);
                }
            }
            _ => parts.push(c),
        }
    }
    root.join(parts.iter().collect::<PathBuf>())
}

/// A path's normal components and `..`, without the root and `.`.
fn components(p: &Path) -> VecDeque<OsString> {
    p.components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_os_string()),
            Component::ParentDir => Some(OsString::from("..")),
            _ => None,
        })
        .collect()
}

/// Mounts and binds made for the instance, to undo at power-off (last first).
#[derive(Default)]
pub struct Mounts(Vec<PathBuf>);

impl Mounts {
    fn mount(
        &mut self,
        source: &str,
        target: &Path,
        fstype: &str,
        flags: libc::c_ulong,
        data: &str,
    ) -> Result<()> {
        if fs::symlink_metadata(target).is_err() {
            fs::create_dir_all(target)
                .ctx(|| format!("making the mount point {}", target.display()))?;
        }
        sys::mount(source, target, fstype, flags, data)
            .ctx(|| format!("mounting {fstype} {source} at {}", target.display()))?;
        self.0.push(target.to_path_buf());
        Ok(())
    }

    /// Unmounts everything mounted, the last first.
    pub fn unmount_all(&mut self) {
        while let Some(p) = self.0.pop() {
            let _ = sys::umount(&p);
        }
    }
}

/// Builds the instance's root at [`NEWROOT`] as `cfg` says, up to (not including) its
/// network and its process.
pub fn prepare(cfg: &RunConfig, mounts: &mut Mounts) -> Result<()> {
    let root = Path::new(NEWROOT);
    let tag = if cfg.rootfs.is_empty() {
        ROOTFS_TAG
    } else {
        &cfg.rootfs
    };
    fs::create_dir_all(root).ctx(|| format!("making {NEWROOT}"))?;
    sys::mount(tag, root, "virtiofs", 0, "")
        .ctx(|| format!("mounting the root filesystem (virtiofs tag {tag}) at {NEWROOT}"))?;
    mounts.0.push(root.to_path_buf());

    let nosuid = libc::MS_NOSUID;
    let hardened = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
    let at = |p: &str| resolve_in_root(root, p);
    mounts.mount("proc", &at("/proc"), "proc", hardened, "")?;
    mounts.mount("sysfs", &at("/sys"), "sysfs", hardened, "")?;
    let dev = at("/dev");
    mounts.mount("devtmpfs", &dev, "devtmpfs", nosuid, "")?;
    let pts = dev.join("pts");
    mounts.mount(
        "devpts",
        &pts,
        "devpts",
        libc::MS_NOSUID | libc::MS_NOEXEC,
        "newinstance,ptmxmode=0666,mode=0620,gid=5",
    )?;
    mounts.mount(
        &pts.join("ptmx").to_string_lossy(),
        &dev.join("ptmx"),
        "",
        libc::MS_BIND,
        "",
    )?;
    mounts.mount(
        "shm",
        &dev.join("shm"),
        "tmpfs",
        libc::MS_NOSUID | libc::MS_NODEV,
        "mode=1777",
    )?;

    for d in cfg.devices.iter().filter(|d| d.source != d.target) {
        make_device_node(&d.source, &at(&d.target))
            .ctx(|| format!("making the device {} at {}", d.source, d.target))?;
    }

    for m in &cfg.mounts {
        let target = at(&m.target);
        let flags = if m.read_only { libc::MS_RDONLY } else { 0 };
        mounts
            .mount(&m.source, &target, &m.fstype, flags, "")
            .map_err(|e| sys::Error {
                what: format!("the volume {} at {}: {}", m.source, m.target, e.what),
                source: e.source,
            })?;
    }

    fs::create_dir_all(FILES_DIR).ctx(|| format!("making {FILES_DIR}"))?;
    for (i, f) in cfg.files.iter().enumerate() {
        let staged = Path::new(FILES_DIR).join(i.to_string());
        fs::write(&staged, &f.content).ctx(|| format!("writing {}", staged.display()))?;
        let target = at(&f.target);
        place_file(&staged, &target, mounts).ctx(|| format!("placing {}", f.target))?;
    }

    if !cfg.hostname.is_empty() {
        // SAFETY: a pointer and length of a live string.
        sys::check(unsafe { libc::sethostname(cfg.hostname.as_ptr().cast(), cfg.hostname.len()) })
            .ctx(|| format!("setting the hostname {}", cfg.hostname))?;
    }
    Ok(())
}

/// A block device node at `target` for the device `source` is (its major and minor).
fn make_device_node(source: &str, target: &Path) -> io::Result<()> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let meta = fs::metadata(source)?;
    if !meta.file_type().is_block_device() {
        return Err(io::Error::other(format!("{source} is not a block device")));
    }
    if let Some(parent) = target.parent() {
        fs::create_dir_all(parent)?;
    }
    let _ = fs::remove_file(target);
    let path = std::ffi::CString::new(target.as_os_str().as_encoded_bytes())
        .map_err(|_| io::Error::other("a path with a NUL byte"))?;
    // SAFETY: a NUL-terminated path, a mode and a device number.
    let r = unsafe { libc::mknod(path.as_ptr(), libc::S_IFBLK | 0o660, meta.rdev()) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Binds `staged` over `target`, making `target` (an empty file) when missing.
fn place_file(staged: &Path, target: &Path, mounts: &mut Mounts) -> io::Result<()> {
    if let Some(parent) = target.parent() {
        fs::create_dir_all(parent)?;
    }
    if fs::symlink_metadata(target).is_err() {
        fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o644)
            .open(target)?;
    }
    sys::mount(&staged.to_string_lossy(), target, "", libc::MS_BIND, "")?;
    mounts.0.push(target.to_path_buf());
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::*;

    #[test]
    fn paths_resolve_inside_the_root() {
        let root = std::env::temp_dir().join(format!("pier-guest-root-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        fs::create_dir_all(root.join("run/real")).unwrap();
        fs::create_dir_all(root.join("etc")).unwrap();
        symlink("/run", root.join("var-run")).unwrap();
        symlink("../run/real/resolv.conf", root.join("etc/resolv.conf")).unwrap();
        symlink("/../../..", root.join("escape")).unwrap();
        symlink("loop", root.join("loop")).unwrap();

        assert_eq!(resolve_in_root(&root, "/etc/hosts"), root.join("etc/hosts"));
        assert_eq!(resolve_in_root(&root, "/var-run/x"), root.join("run/x"));
        assert_eq!(
            resolve_in_root(&root, "/etc/resolv.conf"),
            root.join("run/real/resolv.conf")
        );
        assert_eq!(resolve_in_root(&root, "/escape/etc"), root.join("etc"));
        assert_eq!(resolve_in_root(&root, "/../../etc/./x"), root.join("etc/x"));
        // A loop ends (the link is then taken as a name) instead of spinning.
        assert!(resolve_in_root(&root, "/loop").starts_with(&root));
        fs::remove_dir_all(&root).unwrap();
    }
}
