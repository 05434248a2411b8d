//! [`FakeStorage`]: a recording fake of [`VolumeBackend`] and [`Mounts`] for the engine
//! test tier (no root).
//!
//! What needs no privilege is done for real under the test's own directory (directories,
//! renames, empty files standing for images, tree copies), so the engine's file logic runs
//! as it does on a host. What needs root is modelled: filesystem and disk images, loop
//! devices, mounts, frozen filesystems. Every call is recorded in order as a [`Call`];
//! [`FakeStorage::state`] says what is left on the modelled host, so a test can assert
//! that nothing is. A test can make the Nth fallible call, or every call of a kind, fail
//! with an errno ([`FakeStorage::fail_nth`], [`FakeStorage::fail_kind`]). As the kernel
//! does, removing a directory with a mount under it fails with EBUSY, and an image is never
//! attached twice.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use pier_api::volumes::VolumeUsage;
use pier_storage::block::Disk;
use pier_storage::ext4::Capacity;
use pier_storage::{Error, Result};

use super::{remove_path, walk_usage, FreezeGuard, Mounts, VolumeBackend};

/// One call made to the fake, with its arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    CreateDir(PathBuf),
    Remove(PathBuf),
    Rename(PathBuf, PathBuf),
    FreeBytes(PathBuf),
    MakeFsImage {
        image: PathBuf,
        bytes: u64,
        inodes: Option<u64>,
    },
    CreateDisk {
        image: PathBuf,
        size: u64,
        ext4: bool,
    },
    AttachDisk(PathBuf),
    ReleaseDisk(PathBuf),
    LoopMinor(PathBuf),
    CopyImage(PathBuf, PathBuf),
    CopyTree(PathBuf, PathBuf),
    ClearTree(PathBuf),
    Usage(PathBuf),
    DirUsage(PathBuf),
    FileUsage(PathBuf),
    Freeze(PathBuf),
    MountImage {
        image: PathBuf,
        target: PathBuf,
    },
    MountDevice {
        dev: PathBuf,
        target: PathBuf,
    },
    BindDevice {
        dev: PathBuf,
        node: PathBuf,
    },
    Unmount(PathBuf),
    IsMounted(PathBuf),
}

/// The kind of a [`Call`], to fail every call of a kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CallKind {
    CreateDir,
    Remove,
    Rename,
    FreeBytes,
    MakeFsImage,
    CreateDisk,
    AttachDisk,
    ReleaseDisk,
    LoopMinor,
    CopyImage,
    CopyTree,
    ClearTree,
    Usage,
    DirUsage,
    FileUsage,
    Freeze,
    MountImage,
    MountDevice,
    BindDevice,
    Unmount,
    IsMounted,
}

impl Call {
    pub fn kind(&self) -> CallKind {
        match self {
            Call::CreateDir(_) => CallKind::CreateDir,
            Call::Remove(_) => CallKind::Remove,
            Call::Rename(..) => CallKind::Rename,
            Call::FreeBytes(_) => CallKind::FreeBytes,
            Call::MakeFsImage { .. } => CallKind::MakeFsImage,
            Call::CreateDisk { .. } => CallKind::CreateDisk,
            Call::AttachDisk(_) => CallKind::AttachDisk,
            Call::ReleaseDisk(_) => CallKind::ReleaseDisk,
            Call::LoopMinor(_) => CallKind::LoopMinor,
            Call::CopyImage(..) => CallKind::CopyImage,
            Call::CopyTree(..) => CallKind::CopyTree,
            Call::ClearTree(_) => CallKind::ClearTree,
            Call::Usage(_) => CallKind::Usage,
            Call::DirUsage(_) => CallKind::DirUsage,
            Call::FileUsage(_) => CallKind::FileUsage,
            Call::Freeze(_) => CallKind::Freeze,
            Call::MountImage { .. } => CallKind::MountImage,
            Call::MountDevice { .. } => CallKind::MountDevice,
            Call::BindDevice { .. } => CallKind::BindDevice,
            Call::Unmount(_) => CallKind::Unmount,
            Call::IsMounted(_) => CallKind::IsMounted,
        }
    }

    /// Whether the call can fail (queries and releases cannot).
    pub fn fallible(&self) -> bool {
        !matches!(
            self.kind(),
            CallKind::FreeBytes
                | CallKind::ReleaseDisk
                | CallKind::DirUsage
                | CallKind::FileUsage
                | CallKind::IsMounted
        )
    }

    /// The path the call acts on, named in an injected error.
    fn path(&self) -> &Path {
        match self {
            Call::CreateDir(p)
            | Call::Remove(p)
            | Call::Rename(p, _)
            | Call::FreeBytes(p)
            | Call::AttachDisk(p)
            | Call::ReleaseDisk(p)
            | Call::LoopMinor(p)
            | Call::CopyImage(p, _)
            | Call::CopyTree(p, _)
            | Call::ClearTree(p)
            | Call::Usage(p)
            | Call::DirUsage(p)
            | Call::FileUsage(p)
            | Call::Freeze(p)
            | Call::Unmount(p)
            | Call::IsMounted(p) => p,
            Call::MakeFsImage { image, .. } | Call::CreateDisk { image, .. } => image,
            Call::MountImage { target, .. } | Call::MountDevice { target, .. } => target,
            Call::BindDevice { node, .. } => node,
        }
    }
}

/// What a modelled image is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Image {
    /// An ext4 image of a limited volume.
    Fs { bytes: u64, inodes: Option<u64> },
    /// A block volume's disk.
    Disk { size: u64, ext4: bool },
}

/// A modelled loop device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loop {
    pub backing: PathBuf,
    /// Released by the kernel when its last mount goes.
    pub autoclear: bool,
}

/// What is on the modelled host.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostState {
    /// Images by path (a snapshot's copy is one too).
    pub images: BTreeMap<PathBuf, Image>,
    /// Loop devices by minor.
    pub loops: BTreeMap<u32, Loop>,
    /// Mounts by target: the loop device minor they use.
    pub mounts: BTreeMap<PathBuf, u32>,
    pub frozen: BTreeSet<PathBuf>,
}

impl HostState {
    /// Whether nothing is attached, mounted or frozen, and no image exists.
    pub fn is_clean(&self) -> bool {
        self.images.is_empty()
            && self.loops.is_empty()
            && self.mounts.is_empty()
            && self.frozen.is_empty()
    }

    fn attached(&self, image: &Path) -> Option<u32> {
        self.loops
            .iter()
            .find(|(_, l)| l.backing == image)
            .map(|(n, _)| *n)
    }

    fn free_loop(&self) -> u32 {
        (0..)
            .find(|n| !self.loops.contains_key(n))
            .expect("a free minor")
    }

    /// Drops an autoclear loop device no mount uses any more.
    fn autoclear(&mut self, minor: u32) {
        let used = self.mounts.values().any(|m| *m == minor);
        if !used && self.loops.get(&minor).is_some_and(|l| l.autoclear) {
            self.loops.remove(&minor);
        }
    }
}

#[derive(Debug, Default)]
struct Inner {
    calls: Vec<Call>,
    host: HostState,
    /// Fallible calls made so far.
    fallible: usize,
    fail_nth: Option<(usize, i32)>,
    fail_kinds: BTreeMap<u8, i32>,
    free_bytes: Option<u64>,
}

fn kind_key(k: CallKind) -> u8 {
    k as u8
}

/// The recording fake; see the module doc. Cheap to clone (shared state).
#[derive(Debug, Clone, Default)]
pub struct FakeStorage {
    inner: Arc<Mutex<Inner>>,
}

fn errno(call: &Call, errno: i32) -> Error {
    Error::Io {
        op: "fake",
        path: call.path().to_path_buf(),
        source: std::io::Error::from_raw_os_error(errno),
    }
}

fn real(call: &Call, r: std::io::Result<()>) -> Result<()> {
    r.map_err(|source| Error::Io {
        op: "fake",
        path: call.path().to_path_buf(),
        source,
    })
}

fn loop_path(minor: u32) -> PathBuf {
    PathBuf::from(format!("/dev/loop{minor}"))
}

fn moved(p: &Path, from: &Path, to: &Path) -> PathBuf {
    match p.strip_prefix(from) {
        Ok(r) if r.as_os_str().is_empty() => to.to_path_buf(),
        Ok(r) => to.join(r),
        Err(_) => p.to_path_buf(),
    }
}

impl FakeStorage {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records `call`; an injected failure if one applies.
    fn enter(&self, call: Call) -> (MutexGuard<'_, Inner>, Result<()>) {
        let mut g = self.lock();
        let mut r = Ok(());
        if call.fallible() {
            if let Some((n, e)) = g.fail_nth {
                if g.fallible == n {
                    r = Err(errno(&call, e));
                    g.fail_nth = None;
                }
            }
            if let Some(e) = g.fail_kinds.get(&kind_key(call.kind())) {
                r = Err(errno(&call, *e));
            }
            g.fallible += 1;
        }
        g.calls.push(call);
        (g, r)
    }

    /// Makes the `n`th fallible call from now (0: the next) fail with `errno`, once.
    pub fn fail_nth(&self, n: usize, errno: i32) {
        let mut g = self.lock();
        g.fail_nth = Some((g.fallible + n, errno));
    }

    /// Makes every call of `kind` fail with `errno` until [`FakeStorage::heal`].
    pub fn fail_kind(&self, kind: CallKind, errno: i32) {
        self.lock().fail_kinds.insert(kind_key(kind), errno);
    }

    /// Stops injecting failures.
    pub fn heal(&self) {
        let mut g = self.lock();
        g.fail_nth = None;
        g.fail_kinds.clear();
    }

    /// Sets the bytes the host reports free (unlimited by default).
    pub fn set_free_bytes(&self, bytes: u64) {
        self.lock().free_bytes = Some(bytes);
    }

    /// Every call so far, in order.
    pub fn calls(&self) -> Vec<Call> {
        self.lock().calls.clone()
    }

    /// How many fallible calls were made so far.
    pub fn fallible_calls(&self) -> usize {
        self.lock().fallible
    }

    /// Forgets the calls recorded so far (not the host's state).
    pub fn clear_calls(&self) {
        self.lock().calls.clear();
    }

    /// What is on the modelled host now.
    pub fn state(&self) -> HostState {
        self.lock().host.clone()
    }

    /// As after a reboot: nothing mounted, attached or frozen; images stay.
    pub fn reboot(&self) {
        let mut g = self.lock();
        g.host.loops.clear();
        g.host.mounts.clear();
        g.host.frozen.clear();
    }
}

struct Thaw {
    inner: Arc<Mutex<Inner>>,
    path: PathBuf,
}

impl Drop for Thaw {
    fn drop(&mut self) {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        g.host.frozen.remove(&self.path);
    }
}

impl VolumeBackend for FakeStorage {
    fn create_dir(&self, path: &Path) -> Result<()> {
        let call = Call::CreateDir(path.into());
        let (_g, r) = self.enter(call.clone());
        r?;
        real(&call, fs::create_dir_all(path))
    }

    fn remove(&self, path: &Path) -> Result<()> {
        let call = Call::Remove(path.into());
        let (mut g, r) = self.enter(call.clone());
        r?;
        if g.host.mounts.keys().any(|m| m.starts_with(path)) {
            return Err(errno(&call, libc::EBUSY));
        }
        real(&call, remove_path(path))?;
        g.host.images.retain(|p, _| !p.starts_with(path));
        Ok(())
    }

    fn rename(&self, from: &Path, to: &Path) -> Result<()> {
        let call = Call::Rename(from.into(), to.into());
        let (mut g, r) = self.enter(call.clone());
        r?;
        if g.host.mounts.contains_key(from) {
            return Err(errno(&call, libc::EBUSY));
        }
        real(&call, fs::rename(from, to))?;
        let host = &mut g.host;
        host.images = std::mem::take(&mut host.images)
            .into_iter()
            .filter(|(p, _)| p != to)
            .map(|(p, i)| (moved(&p, from, to), i))
            .collect();
        host.mounts = std::mem::take(&mut host.mounts)
            .into_iter()
            .map(|(p, m)| (moved(&p, from, to), m))
            .collect();
        Ok(())
    }

    fn free_bytes(&self, dir: &Path) -> u64 {
        let (g, _) = self.enter(Call::FreeBytes(dir.into()));
        g.free_bytes.unwrap_or(u64::MAX)
    }

    fn make_fs_image(&self, image: &Path, bytes: u64, inodes: Option<u64>) -> Result<Capacity> {
        let call = Call::MakeFsImage {
            image: image.into(),
            bytes,
            inodes,
        };
        let (mut g, r) = self.enter(call.clone());
        r?;
        real(&call, fs::write(image, b""))?;
        g.host
            .images
            .insert(image.into(), Image::Fs { bytes, inodes });
        Ok(Capacity {
            bytes,
            inodes: inodes.unwrap_or(bytes / 16384),
        })
    }

    fn create_disk(&self, disk: &Disk, size: u64, ext4: bool) -> Result<()> {
        let call = Call::CreateDisk {
            image: disk.image.clone(),
            size,
            ext4,
        };
        let (mut g, r) = self.enter(call.clone());
        r?;
        real(&call, fs::write(&disk.image, b""))?;
        g.host
            .images
            .insert(disk.image.clone(), Image::Disk { size, ext4 });
        Ok(())
    }

    fn attach_disk(&self, disk: &Disk) -> Result<PathBuf> {
        let call = Call::AttachDisk(disk.image.clone());
        let (mut g, r) = self.enter(call.clone());
        r?;
        if !g.host.images.contains_key(&disk.image) {
            return Err(errno(&call, libc::ENOENT));
        }
        if let Some(n) = g.host.attached(&disk.image) {
            return Ok(loop_path(n));
        }
        let n = g.host.free_loop();
        g.host.loops.insert(
            n,
            Loop {
                backing: disk.image.clone(),
                autoclear: false,
            },
        );
        Ok(loop_path(n))
    }

    fn release_disk(&self, disk: &Disk) {
        let (mut g, _) = self.enter(Call::ReleaseDisk(disk.image.clone()));
        let host = &mut g.host;
        let mine: Vec<u32> = host
            .loops
            .iter()
            .filter(|(_, l)| l.backing == disk.image)
            .map(|(n, _)| *n)
            .collect();
        for n in mine {
            // A mounted device is detached by the kernel when its last mount goes.
            if let Some(l) = host.loops.get_mut(&n) {
                l.autoclear = true;
            }
            host.autoclear(n);
        }
    }

    fn loop_minor(&self, dev: &Path) -> Result<u32> {
        let call = Call::LoopMinor(dev.into());
        let (g, r) = self.enter(call.clone());
        r?;
        let n = dev
            .to_str()
            .and_then(|s| s.strip_prefix("/dev/loop"))
            .and_then(|n| n.parse().ok())
            .filter(|n| g.host.loops.contains_key(n));
        n.ok_or_else(|| errno(&call, libc::ENXIO))
    }

    fn copy_image(&self, from: &Path, to: &Path) -> Result<()> {
        let call = Call::CopyImage(from.into(), to.into());
        let (mut g, r) = self.enter(call.clone());
        r?;
        let Some(image) = g.host.images.get(from).copied() else {
            return Err(errno(&call, libc::ENOENT));
        };
        real(&call, fs::copy(from, to).map(drop))?;
        g.host.images.insert(to.into(), image);
        Ok(())
    }

    fn copy_tree(&self, from: &Path, to: &Path) -> Result<()> {
        let (_g, r) = self.enter(Call::CopyTree(from.into(), to.into()));
        r?;
        pier_storage::tree::copy(from, to)
    }

    fn clear_tree(&self, dir: &Path) -> Result<()> {
        let (_g, r) = self.enter(Call::ClearTree(dir.into()));
        r?;
        pier_storage::tree::clear(dir)
    }

    fn usage(&self, mountpoint: &Path) -> Result<(u64, u64)> {
        let call = Call::Usage(mountpoint.into());
        let (g, r) = self.enter(call.clone());
        r?;
        if !g.host.mounts.contains_key(mountpoint) {
            return Err(errno(&call, libc::EINVAL));
        }
        // As ext4 counts: its root and own inodes (11) besides the user's.
        let u = walk_usage(mountpoint);
        Ok((u.bytes, u.inodes + 11))
    }

    fn dir_usage(&self, dir: &Path) -> VolumeUsage {
        let _ = self.enter(Call::DirUsage(dir.into()));
        walk_usage(dir)
    }

    fn file_usage(&self, file: &Path) -> u64 {
        let _ = self.enter(Call::FileUsage(file.into()));
        fs::metadata(file).map_or(0, |m| m.len())
    }

    fn freeze(&self, mountpoint: &Path) -> Result<FreezeGuard> {
        let call = Call::Freeze(mountpoint.into());
        let (mut g, r) = self.enter(call.clone());
        r?;
        if !g.host.mounts.contains_key(mountpoint) || !g.host.frozen.insert(mountpoint.into()) {
            return Err(errno(&call, libc::EINVAL));
        }
        Ok(Box::new(Thaw {
            inner: self.inner.clone(),
            path: mountpoint.into(),
        }))
    }
}

/// The minor number of `/dev/loopN` if that loop device is attached in `host`.
fn attached_loop(host: &HostState, dev: &Path) -> Option<u32> {
    dev.to_str()
        .and_then(|s| s.strip_prefix("/dev/loop"))
        .and_then(|n| n.parse::<u32>().ok())
        .filter(|n| host.loops.contains_key(n))
}

impl Mounts for FakeStorage {
    fn mount_image(&self, image: &Path, target: &Path) -> Result<()> {
        let call = Call::MountImage {
            image: image.into(),
            target: target.into(),
        };
        let (mut g, r) = self.enter(call.clone());
        r?;
        if !g.host.images.contains_key(image) || !target.is_dir() {
            return Err(errno(&call, libc::ENOENT));
        }
        if g.host.attached(image).is_some() || g.host.mounts.contains_key(target) {
            return Err(errno(&call, libc::EBUSY));
        }
        let n = g.host.free_loop();
        g.host.loops.insert(
            n,
            Loop {
                backing: image.into(),
                autoclear: true,
            },
        );
        g.host.mounts.insert(target.into(), n);
        Ok(())
    }

    fn mount_device(&self, dev: &Path, target: &Path) -> Result<()> {
        let call = Call::MountDevice {
            dev: dev.into(),
            target: target.into(),
        };
        let (mut g, r) = self.enter(call.clone());
        r?;
        let minor = attached_loop(&g.host, dev).ok_or_else(|| errno(&call, libc::ENXIO))?;
        if g.host.mounts.contains_key(target) || !target.is_dir() {
            return Err(errno(&call, libc::EBUSY));
        }
        g.host.mounts.insert(target.into(), minor);
        Ok(())
    }

    fn bind_device(&self, dev: &Path, node: &Path) -> Result<()> {
        let call = Call::BindDevice {
            dev: dev.into(),
            node: node.into(),
        };
        let (mut g, r) = self.enter(call.clone());
        r?;
        let minor = attached_loop(&g.host, dev).ok_or_else(|| errno(&call, libc::ENXIO))?;
        real(&call, fs::write(node, b""))?;
        g.host.mounts.insert(node.into(), minor);
        Ok(())
    }

    fn unmount(&self, target: &Path) -> Result<()> {
        let call = Call::Unmount(target.into());
        let (mut g, r) = self.enter(call.clone());
        r?;
        if g.host.frozen.contains(target) {
            return Err(errno(&call, libc::EBUSY));
        }
        if let Some(minor) = g.host.mounts.remove(target) {
            g.host.autoclear(minor);
        }
        Ok(())
    }

    fn is_mounted(&self, target: &Path) -> bool {
        let (g, _) = self.enter(Call::IsMounted(target.into()));
        g.host.mounts.contains_key(target)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn disk(dir: &Path) -> Disk {
        Disk::new(dir, pier_storage::block::Format::Raw)
    }

    #[test]
    fn an_image_mount_holds_an_autoclear_loop_until_unmounted() {
        let t = tempfile::tempdir().unwrap();
        let f = FakeStorage::new();
        let (img, data) = (t.path().join("disk.img"), t.path().join("_data"));
        f.create_dir(&data).unwrap();
        f.make_fs_image(&img, 1 << 20, None).unwrap();
        f.mount_image(&img, &data).unwrap();
        assert!(f.is_mounted(&data));
        assert_eq!(f.state().loops.len(), 1);
        // Never attached twice.
        let e = f.mount_image(&img, &data).unwrap_err();
        assert_eq!(e.kind(), pier_storage::ErrorKind::Busy);
        // A directory with a mount under it cannot go.
        let e = f.remove(t.path()).unwrap_err();
        assert_eq!(e.kind(), pier_storage::ErrorKind::Busy);
        f.unmount(&data).unwrap();
        assert!(f.state().loops.is_empty());
        f.remove(&img).unwrap();
        assert!(f.state().is_clean());
    }

    #[test]
    fn a_released_disk_still_mounted_goes_with_its_last_mount() {
        let t = tempfile::tempdir().unwrap();
        let f = FakeStorage::new();
        let d = disk(t.path());
        let data = t.path().join("_data");
        f.create_dir(&data).unwrap();
        f.create_disk(&d, 1 << 20, true).unwrap();
        let dev = f.attach_disk(&d).unwrap();
        assert_eq!(f.attach_disk(&d).unwrap(), dev, "the same device again");
        assert_eq!(f.loop_minor(&dev).unwrap(), 0);
        f.mount_device(&dev, &data).unwrap();
        f.release_disk(&d);
        assert_eq!(f.state().loops.len(), 1, "busy until unmounted");
        f.unmount(&data).unwrap();
        assert!(f.state().loops.is_empty());
        assert_eq!(
            f.loop_minor(&dev).unwrap_err().kind(),
            pier_storage::ErrorKind::Host
        );
    }

    #[test]
    fn the_nth_fallible_call_fails_once_and_queries_do_not_count() {
        let t = tempfile::tempdir().unwrap();
        let f = FakeStorage::new();
        f.fail_nth(1, libc::ENOSPC);
        f.create_dir(&t.path().join("a")).unwrap();
        assert!(!f.is_mounted(t.path()));
        let e = f.create_dir(&t.path().join("b")).unwrap_err();
        assert_eq!(e.kind(), pier_storage::ErrorKind::NoSpace);
        assert!(!t.path().join("b").exists(), "a failed call does nothing");
        f.create_dir(&t.path().join("b")).unwrap();
        assert_eq!(f.fallible_calls(), 3);
        assert_eq!(
            f.calls().iter().map(Call::kind).collect::<Vec<_>>(),
            [
                CallKind::CreateDir,
                CallKind::IsMounted,
                CallKind::CreateDir,
                CallKind::CreateDir
            ]
        );
    }

    #[test]
    fn a_failing_kind_fails_until_healed() {
        let t = tempfile::tempdir().unwrap();
        let f = FakeStorage::new();
        f.fail_kind(CallKind::CreateDir, libc::EIO);
        for _ in 0..2 {
            let e = f.create_dir(&t.path().join("a")).unwrap_err();
            assert_eq!(e.kind(), pier_storage::ErrorKind::Host);
        }
        f.heal();
        f.create_dir(&t.path().join("a")).unwrap();
    }

    #[test]
    fn renames_and_copies_carry_the_model_along() {
        let t = tempfile::tempdir().unwrap();
        let f = FakeStorage::new();
        let (a, b) = (t.path().join("a"), t.path().join("b"));
        f.create_dir(&a).unwrap();
        f.make_fs_image(&a.join("disk.img"), 1 << 20, Some(10))
            .unwrap();
        f.rename(&a, &b).unwrap();
        f.copy_image(&b.join("disk.img"), &b.join("copy.img"))
            .unwrap();
        let images: Vec<PathBuf> = f.state().images.into_keys().collect();
        assert_eq!(images, [b.join("copy.img"), b.join("disk.img")]);
        // A frozen filesystem must be mounted, and thaws when its guard goes.
        assert!(f.freeze(&b).is_err());
        f.remove(&b).unwrap();
        assert!(f.state().is_clean());
    }
}
