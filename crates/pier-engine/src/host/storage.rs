//! The storage side of the host: [`VolumeBackend`] (volume directories, filesystem images
//! with limits, block disks on loop devices, copies for snapshots, usage, freezing) and
//! [`Mounts`] (mount, unmount, is-mounted), which is all [`crate::volumes`] asks of the
//! kernel. [`HostStorage`] is the real host over `pier-storage` and rustix;
//! [`fake::FakeStorage`] records every call and models what exists, for the engine test
//! tier (no root).
//!
//! Errors are `pier-storage`'s typed [`pier_storage::Error`]: its kind says whose fault a
//! failure is (a full disk, a busy device, a broken host), and the engine maps it once.

use std::fs;
use std::path::{Path, PathBuf};

use pier_api::volumes::VolumeUsage;
use pier_storage::block::Disk;
use pier_storage::ext4::Capacity;
use pier_storage::{ext4, loopdev, tree, Error, Result};

pub mod fake;

/// Holds a filesystem frozen (writes block) until dropped.
pub type FreezeGuard = Box<dyn Send>;

/// What the volumes do to the host's files and devices, one operation per method.
pub trait VolumeBackend: Send + Sync {
    /// Makes a directory and its parents.
    fn create_dir(&self, path: &Path) -> Result<()>;
    /// Removes a file or a directory tree; a missing one is not an error.
    fn remove(&self, path: &Path) -> Result<()>;
    /// Renames a file or directory.
    fn rename(&self, from: &Path, to: &Path) -> Result<()>;
    /// Bytes free for unprivileged use on the filesystem holding `dir`.
    fn free_bytes(&self, dir: &Path) -> u64;
    /// Makes an ext4 image at `image` holding at least `bytes` (and `inodes` files).
    fn make_fs_image(&self, image: &Path, bytes: u64, inodes: Option<u64>) -> Result<Capacity>;
    /// Makes a block volume's disk image, with an ext4 filesystem on it when `ext4`.
    fn create_disk(&self, disk: &Disk, size: u64, ext4: bool) -> Result<()>;
    /// A loop device for the disk (the same one when attached already).
    fn attach_disk(&self, disk: &Disk) -> Result<PathBuf>;
    /// Detaches the disk's loop devices and stops its export.
    fn release_disk(&self, disk: &Disk);
    /// The minor number of a loop device.
    fn loop_minor(&self, dev: &Path) -> Result<u32>;
    /// Copies an image file, keeping its holes.
    fn copy_image(&self, from: &Path, to: &Path) -> Result<()>;
    /// Copies the content of directory `from` into the existing directory `to`.
    fn copy_tree(&self, from: &Path, to: &Path) -> Result<()>;
    /// Removes everything inside `dir`.
    fn clear_tree(&self, dir: &Path) -> Result<()>;
    /// Bytes and inodes used on the filesystem mounted at `mountpoint`.
    fn usage(&self, mountpoint: &Path) -> Result<(u64, u64)>;
    /// Bytes and inodes under a plain directory.
    fn dir_usage(&self, dir: &Path) -> VolumeUsage;
    /// Bytes a (sparse) file takes on the host's disk: a block volume's image.
    fn file_usage(&self, file: &Path) -> u64;
    /// Freezes the filesystem mounted at `mountpoint` until the guard is dropped.
    fn freeze(&self, mountpoint: &Path) -> Result<FreezeGuard>;
}

/// The mounts volumes make.
pub trait Mounts: Send + Sync {
    /// Mounts the ext4 image on `target` through a loop device released on unmount.
    fn mount_image(&self, image: &Path, target: &Path) -> Result<()>;
    /// Mounts the ext4 filesystem on block device `dev` on `target`.
    fn mount_device(&self, dev: &Path, target: &Path) -> Result<()>;
    /// Makes `node` a file and bind-mounts device `dev` on it.
    fn bind_device(&self, dev: &Path, node: &Path) -> Result<()>;
    /// Unmounts `target`; nothing mounted there is not an error.
    fn unmount(&self, target: &Path) -> Result<()>;
    /// Whether something is mounted on `target`.
    fn is_mounted(&self, target: &Path) -> bool;
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> Error + 'a {
    move |source| Error::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// Bytes and inodes under a directory (a walk: directory volumes have no counter).
pub fn walk_usage(p: &Path) -> VolumeUsage {
    let mut u = VolumeUsage::default();
    let Ok(rd) = fs::read_dir(p) else {
        return u;
    };
    for e in rd.flatten() {
        let Ok(m) = e.path().symlink_metadata() else {
            continue;
        };
        u.inodes += 1;
        if m.is_dir() {
            let sub = walk_usage(&e.path());
            u.bytes += sub.bytes;
            u.inodes += sub.inodes;
        } else {
            u.bytes += m.len();
        }
    }
    u
}

/// Removes a file or tree; missing is fine.
fn remove_path(path: &Path) -> std::io::Result<()> {
    let r = match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) => Err(e),
    };
    match r {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        r => r,
    }
}

/// The real host, through `pier-storage` and rustix.
#[derive(Debug, Default, Clone, Copy)]
pub struct HostStorage;

impl VolumeBackend for HostStorage {
    fn create_dir(&self, path: &Path) -> Result<()> {
        fs::create_dir_all(path).map_err(io_err("create", path))
    }

    fn remove(&self, path: &Path) -> Result<()> {
        remove_path(path).map_err(io_err("remove", path))
    }

    fn rename(&self, from: &Path, to: &Path) -> Result<()> {
        fs::rename(from, to).map_err(io_err("move", from))
    }

    fn free_bytes(&self, dir: &Path) -> u64 {
        rustix::fs::statvfs(dir)
            .map(|v| v.f_bavail * v.f_frsize)
            .unwrap_or(u64::MAX)
    }

    fn make_fs_image(&self, image: &Path, bytes: u64, inodes: Option<u64>) -> Result<Capacity> {
        ext4::make(image, bytes, inodes)
    }

    fn create_disk(&self, disk: &Disk, size: u64, ext4: bool) -> Result<()> {
        disk.create(size, ext4)
    }

    fn attach_disk(&self, disk: &Disk) -> Result<PathBuf> {
        disk.attach()
    }

    fn release_disk(&self, disk: &Disk) {
        disk.release()
    }

    fn loop_minor(&self, dev: &Path) -> Result<u32> {
        loopdev::minor(dev)
    }

    fn copy_image(&self, from: &Path, to: &Path) -> Result<()> {
        ext4::copy_sparse(from, to)
    }

    fn copy_tree(&self, from: &Path, to: &Path) -> Result<()> {
        tree::copy(from, to)
    }

    fn clear_tree(&self, dir: &Path) -> Result<()> {
        tree::clear(dir)
    }

    fn usage(&self, mountpoint: &Path) -> Result<(u64, u64)> {
        ext4::usage(mountpoint)
    }

    fn dir_usage(&self, dir: &Path) -> VolumeUsage {
        walk_usage(dir)
    }

    fn file_usage(&self, file: &Path) -> u64 {
        use std::os::unix::fs::MetadataExt;
        fs::metadata(file).map_or(0, |m| m.blocks() * 512)
    }

    fn freeze(&self, mountpoint: &Path) -> Result<FreezeGuard> {
        Ok(Box::new(ext4::freeze(mountpoint)?))
    }
}

impl Mounts for HostStorage {
    fn mount_image(&self, image: &Path, target: &Path) -> Result<()> {
        ext4::mount(image, target)
    }

    fn mount_device(&self, dev: &Path, target: &Path) -> Result<()> {
        ext4::mount_device(dev, target)
    }

    fn bind_device(&self, dev: &Path, node: &Path) -> Result<()> {
        fs::write(node, b"").map_err(io_err("create", node))?;
        rustix::mount::mount_bind(dev, node).map_err(|e| Error::Mount {
            device: dev.to_path_buf(),
            target: node.to_path_buf(),
            source: e.into(),
        })
    }

    fn unmount(&self, target: &Path) -> Result<()> {
        ext4::unmount(target)
    }

    fn is_mounted(&self, target: &Path) -> bool {
        ext4::is_mounted(target)
    }
}
