//! Filesystem images with enforced limits: an ext4 filesystem made in a sparse file,
//! sized so that exactly (or just over) the bytes and inodes asked for are usable, and
//! mounted through a loop device.

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::Command;

use crate::error::{io, run, sys};
use crate::{loopdev, Error, Result};

/// What a freshly made filesystem can hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capacity {
    /// Bytes a user can write.
    pub bytes: u64,
    /// Files and directories a user can make.
    pub inodes: u64,
}

/// What a user can write on the filesystem in `image`, as the kernel reports it once
/// mounted (ext4 keeps some blocks back for its own metadata; statfs accounts for them).
fn capacity(image: &Path) -> Result<Capacity> {
    let dir = image.with_extension("probe");
    std::fs::create_dir_all(&dir).map_err(io("create", &dir))?;
    let r = mount(image, &dir).and_then(|()| {
        let s = rustix::fs::statvfs(&dir).map_err(sys("statvfs", &dir));
        let _ = unmount(&dir);
        let s = s?;
        Ok(Capacity {
            bytes: s.f_bavail * s.f_frsize,
            inodes: s.f_favail,
        })
    });
    let _ = std::fs::remove_dir(&dir);
    r
}

fn mkfs(image: &Path, file_size: u64, inodes: Option<u64>) -> Result<Capacity> {
    let f = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(image)
        .map_err(io("create", image))?;
    f.set_len(file_size).map_err(io("size", image))?;
    drop(f);
    let mut cmd = Command::new("mkfs.ext4");
    // No blocks reserved for root: the limit is the limit for everybody.
    cmd.args(["-q", "-F", "-m", "0", "-E", "nodiscard"]);
    if let Some(n) = inodes {
        cmd.arg("-N").arg(n.to_string());
    }
    cmd.arg(image);
    run(&mut cmd, "mkfs.ext4", "e2fsprogs", image)?;
    capacity(image)
}

/// Makes `image` a filesystem on which at least `bytes` bytes (and, if given, at least
/// `inodes` files) fit, and not much more: within 1% or 512 KiB of the bytes asked for,
/// and the inodes rounded up to ext4's inode-table granularity.
pub fn make(image: &Path, bytes: u64, inodes: Option<u64>) -> Result<Capacity> {
    if let Some(i) = inodes {
        if i.saturating_add(11).saturating_mul(256) >= bytes {
            return Err(Error::TooManyInodes { bytes, inodes: i });
        }
    }
    // ext4 keeps 11 inodes for itself (root, lost+found, journal, ...).
    let mut n = inodes.map(|i| i + 11);
    let slack = (bytes / 100).max(512 << 10);
    let mut file_size = bytes + bytes / 32 + (3 << 19);
    // mkfs.ext4 rounds the inode count to whole inode-table blocks in every block group,
    // so a few more asked for often change nothing: the step doubles until it does.
    let mut step = 8;
    let mut last = Capacity {
        bytes: 0,
        inodes: 0,
    };
    for _ in 0..12 {
        let cap = mkfs(image, file_size, n)?;
        last = cap;
        if let (Some(want), Some(asked)) = (inodes, n) {
            if cap.inodes < want {
                n = Some(asked + (want - cap.inodes).max(step));
                step *= 2;
                continue;
            }
        }
        if cap.bytes < bytes {
            file_size += bytes - cap.bytes + (64 << 10);
        } else if cap.bytes > bytes + slack {
            file_size -= (cap.bytes - bytes) - (64 << 10).min(cap.bytes - bytes);
        } else {
            return Ok(cap);
        }
    }
    let cap = capacity(image)?;
    if cap.bytes >= bytes && inodes.is_none_or(|i| cap.inodes >= i) {
        return Ok(cap);
    }
    Err(Error::Sizing {
        bytes,
        inodes,
        got: (last.bytes, last.inodes),
    })
}

/// Mounts the filesystem image on `target` through a loop device released on unmount.
pub fn mount(image: &Path, target: &Path) -> Result<()> {
    // An image must never be attached twice: two ext4 instances on one file corrupt it.
    // A mount just unmounted can still hold its loop device for a moment (a copy of it
    // lives on in a mount namespace being created, until that namespace drops it).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while !loopdev::backed_by(image).is_empty() {
        if std::time::Instant::now() > deadline {
            return Err(Error::StillAttached {
                image: image.to_path_buf(),
            });
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let (dev, _keep) = loopdev::attach(image, true)?;
    mount_device(&dev, target).map_err(|e| match e {
        Error::Mount { target, source, .. } => Error::Mount {
            device: image.to_path_buf(),
            target,
            source,
        },
        other => other,
    })
}

/// Mounts the ext4 filesystem on block device `dev` on `target`.
pub fn mount_device(dev: &Path, target: &Path) -> Result<()> {
    rustix::mount::mount(
        dev,
        target,
        "ext4",
        rustix::mount::MountFlags::NOSUID | rustix::mount::MountFlags::NODEV,
        None::<&std::ffi::CStr>,
    )
    .map_err(|e| Error::Mount {
        device: dev.to_path_buf(),
        target: target.to_path_buf(),
        source: e.into(),
    })
}

/// Unmounts `target` (a missing mount is not an error).
pub fn unmount(target: &Path) -> Result<()> {
    match rustix::mount::unmount(target, rustix::mount::UnmountFlags::empty()) {
        Ok(()) => Ok(()),
        Err(rustix::io::Errno::INVAL) | Err(rustix::io::Errno::NOENT) => Ok(()),
        Err(e) => Err(sys("unmount", target)(e)),
    }
}

/// Whether `path` is a mount point (its device differs from its parent's).
pub fn is_mounted(path: &Path) -> bool {
    let p = path.to_string_lossy();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .any(|l| l.split(' ').nth(4) == Some(&p))
}

/// Bytes and inodes used on the filesystem holding `path`.
pub fn usage(path: &Path) -> Result<(u64, u64)> {
    let s = rustix::fs::statvfs(path).map_err(sys("statvfs", path))?;
    Ok(((s.f_blocks - s.f_bfree) * s.f_frsize, s.f_files - s.f_ffree))
}

const FIFREEZE: libc::c_ulong = 0xC004_5877;
const FITHAW: libc::c_ulong = 0xC004_5878;

/// A frozen filesystem: writes block until it is dropped. Its on-disk state is then
/// consistent (journal flushed), so a copy of the image taken meanwhile is
/// crash-consistent.
pub struct Frozen(File);

///
/// `mountpoint` must be the root of a mount: FIFREEZE freezes whatever filesystem holds
/// the descriptor, and a volume's directory whose own filesystem is not mounted sits on
/// the host's, which would freeze every writer on the machine.
pub fn freeze(mountpoint: &Path) -> Result<Frozen> {
    use rustix::fs::{AtFlags, StatxAttributes, StatxFlags};
    let f = File::open(mountpoint).map_err(io("open", mountpoint))?;
    let st = rustix::fs::statx(&f, "", AtFlags::EMPTY_PATH, StatxFlags::empty())
        .map_err(sys("statx", mountpoint))?;
    let root = if st.stx_attributes_mask.contains(StatxAttributes::MOUNT_ROOT) {
        st.stx_attributes.contains(StatxAttributes::MOUNT_ROOT)
    } else {
        is_mounted(mountpoint)
    };
    if !root {
        return Err(io("freeze", mountpoint)(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not a mount point: its filesystem is not mounted there (restart the daemon to remount it)",
        )));
    }
    // SAFETY: FIFREEZE takes no pointer argument that we pass; the fd is valid.
    if unsafe { libc::ioctl(f.as_raw_fd(), FIFREEZE, 0) } < 0 {
        return Err(io("freeze", mountpoint)(std::io::Error::last_os_error()));
    }
    Ok(Frozen(f))
}

impl Drop for Frozen {
    fn drop(&mut self) {
        // SAFETY: as above; thawing a filesystem we froze.
        unsafe { libc::ioctl(self.0.as_raw_fd(), FITHAW, 0) };
    }
}

/// Copies a (sparse) file, keeping holes: data ranges found with SEEK_DATA/SEEK_HOLE.
pub fn copy_sparse(from: &Path, to: &Path) -> Result<()> {
    let src = File::open(from).map_err(io("open", from))?;
    let dst = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(to)
        .map_err(io("create", to))?;
    let len = src.metadata().map_err(io("stat", from))?.len();
    dst.set_len(len).map_err(io("size", to))?;
    let mut off: i64 = 0;
    while (off as u64) < len {
        // SAFETY: lseek on a valid fd.
        let data = unsafe { libc::lseek(src.as_raw_fd(), off, libc::SEEK_DATA) };
        if data < 0 {
            break; // ENXIO: no more data
        }
        // SAFETY: as above.
        let hole = unsafe { libc::lseek(src.as_raw_fd(), data, libc::SEEK_HOLE) };
        let end = if hole < 0 { len as i64 } else { hole };
        let mut from_off = data;
        let mut to_off = data;
        while from_off < end {
            // SAFETY: copy_file_range between two valid fds with valid offset pointers.
            let n = unsafe {
                libc::copy_file_range(
                    src.as_raw_fd(),
                    &mut from_off,
                    dst.as_raw_fd(),
                    &mut to_off,
                    (end - from_off) as usize,
                    0,
                )
            };
            if n <= 0 {
                return Err(Error::Copy {
                    from: from.to_path_buf(),
                    to: to.to_path_buf(),
                    source: std::io::Error::last_os_error(),
                });
            }
        }
        off = end;
    }
    dst.sync_all().map_err(io("sync", to))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[ignore = "root tier: needs root; scripts/test.sh runs it (--run-ignored all)"]
    fn sizes_land_close_to_what_is_asked() {
        let d = tempfile::tempdir().unwrap();
        let img = d.path().join("v.img");
        for (bytes, inodes) in [
            (10u64 << 20, None),
            (3 << 20, Some(100u64)),
            (64 << 20, Some(5000)),
            // Once "could not size a filesystem": a few more inodes asked for changed
            // nothing (ext4 rounds them per block group) until the tries ran out.
            (100 << 20, Some(1000)),
        ] {
            let cap = make(&img, bytes, inodes).unwrap();
            assert!(cap.bytes >= bytes, "{bytes}: {cap:?}");
            assert!(
                cap.bytes <= bytes + (bytes / 100).max(512 << 10),
                "{bytes}: {cap:?}"
            );
            if let Some(i) = inodes {
                assert!(cap.inodes >= i && cap.inodes < i + 128, "{i}: {cap:?}");
            }
            // Sparse: the file takes far less room on disk than its size.
            let used =
                std::os::unix::fs::MetadataExt::blocks(&std::fs::metadata(&img).unwrap()) * 512;
            assert!(used < bytes, "{used} of {bytes}");
        }
    }

    #[test]
    #[ignore = "root tier: needs root; scripts/test.sh runs it (--run-ignored all)"]
    fn only_a_mounts_root_is_frozen() {
        let d = tempfile::tempdir().unwrap();
        let (img, m) = (d.path().join("v.img"), d.path().join("m"));
        make(&img, 8 << 20, None).unwrap();
        std::fs::create_dir(&m).unwrap();
        mount(&img, &m).unwrap();
        std::fs::create_dir(m.join("sub")).unwrap();
        // A directory inside the filesystem (as a volume's `_data` whose own filesystem
        // is not mounted is inside the host's) is refused, and freezes nothing.
        let e = freeze(&m.join("sub")).err().expect("refused");
        assert!(e.chain().contains("not a mount point"), "{}", e.chain());
        std::fs::write(m.join("written"), b"x").unwrap();
        let frozen = freeze(&m).unwrap();
        drop(frozen);
        std::fs::write(m.join("written"), b"y").unwrap();
        unmount(&m).unwrap();
    }

    #[test]
    fn more_inodes_than_the_size_holds_is_the_callers_error() {
        let d = tempfile::tempdir().unwrap();
        let e = make(&d.path().join("v.img"), 1 << 20, Some(100_000)).unwrap_err();
        assert!(matches!(e, Error::TooManyInodes { .. }), "{e:?}");
        assert_eq!(e.kind(), crate::ErrorKind::Invalid);
        assert_eq!(
            e.to_string(),
            "100000 inodes do not fit in 1 MiB: ext4 needs 256 bytes for each, 24.4 MiB in all; give a larger size or fewer inodes"
        );
        assert!(!d.path().join("v.img").exists(), "refused before any file");
    }

    #[test]
    #[ignore = "root tier: needs root; scripts/test.sh runs it (--run-ignored all)"]
    fn a_full_host_disk_is_reported_as_no_space() {
        // A host filesystem with 256 KiB free: mkfs.ext4 runs out of room writing the
        // new filesystem's metadata, and says so in its own words.
        let d = tempfile::tempdir().unwrap();
        rustix::mount::mount(
            "tmpfs",
            d.path(),
            "tmpfs",
            rustix::mount::MountFlags::empty(),
            Some(c"size=256k"),
        )
        .unwrap();
        let r = make(&d.path().join("v.img"), 64 << 20, None);
        unmount(d.path()).unwrap();
        let e = r.unwrap_err();
        assert!(matches!(e, Error::Tool { .. }), "{e:?}");
        assert_eq!(e.kind(), crate::ErrorKind::NoSpace, "{}", e.chain());
    }
}
