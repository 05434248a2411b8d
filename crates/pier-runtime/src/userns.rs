//! User namespaces (`--uidmap`): the container's root is an unprivileged host user.
//!
//! The image's files stay as they are on disk (owned by 0 for root): the monitor mounts
//! the rootfs again through ID-mapped mounts of each layer and of the writable layer, so
//! that inside the container's namespace they show with their own owners, and what the
//! container writes lands on disk with container IDs too (commit, diff and export read
//! it as they do any container's). Overlayfs cannot itself be ID-mapped here, but takes
//! ID-mapped layers.
//!
//! ```text
//! monitor: mapping_fd()  ── fork ── helper: unshare(NEWUSER), waits
//!          write the helper's uid_map/gid_map, open its ns/user, kill it
//!          open_tree(layer, CLONE) + mount_setattr(IDMAP, ns)   for each layer, upper
//!          mount overlay (lowerdir=/proc/self/fd/N...) as the mapped root (fsuid)
//!          clone(NEWUSER|NEWNS|...) ── init; write its uid_map/gid_map; "go"
//! ```

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

use oci_spec::runtime::LinuxIdMapping;

use crate::state::OverlayDirs;

/// The kernel's `struct mount_attr`.
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;
const OPEN_TREE_CLONE: libc::c_uint = 1;

fn last_error(what: &str) -> io::Error {
    let e = io::Error::last_os_error();
    io::Error::new(e.kind(), format!("{what}: {e}"))
}

fn map_text(maps: &[LinuxIdMapping]) -> String {
    maps.iter()
        .map(|m| format!("{} {} {}\n", m.container_id(), m.host_id(), m.size()))
        .collect()
}

/// The host ID that the container's ID 0 is.
pub fn host_root(maps: &[LinuxIdMapping]) -> Option<u32> {
    maps.iter()
        .find(|m| m.container_id() == 0)
        .map(|m| m.host_id())
}

/// Writes the mappings of the user namespace of process `pid` (made with CLONE_NEWUSER,
/// waiting for them).
pub fn write_maps(pid: i32, uids: &[LinuxIdMapping], gids: &[LinuxIdMapping]) -> io::Result<()> {
    for (file, maps) in [("uid_map", uids), ("gid_map", gids)] {
        std::fs::write(format!("/proc/{pid}/{file}"), map_text(maps))
            .map_err(|e| io::Error::new(e.kind(), format!("write {file}: {e}")))?;
    }
    Ok(())
}

/// A user namespace with these mappings, for ID-mapping mounts: a forked helper makes
/// it, the mappings are written, and the helper goes; the namespace lives on in the fd.
pub fn mapping_fd(uids: &[LinuxIdMapping], gids: &[LinuxIdMapping]) -> io::Result<OwnedFd> {
    let (ready_r, ready_w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?;
    let (hold_r, hold_w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?;
    // SAFETY: the monitor is single-threaded; the child only makes system calls and
    // leaves with _exit.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(last_error("fork"));
    }
    if pid == 0 {
        drop((ready_r, hold_w));
        // SAFETY: plain system calls; _exit skips the parent's destructors.
        unsafe {
            if libc::unshare(libc::CLONE_NEWUSER) == 0 {
                libc::write(ready_w.as_raw_fd(), b"r".as_ptr().cast(), 1);
                let mut b = 0u8;
                libc::read(hold_r.as_raw_fd(), (&mut b as *mut u8).cast(), 1);
            }
            libc::_exit(0);
        }
    }
    drop((ready_w, hold_r));
    let result = (|| {
        let mut b = [0u8; 1];
        if rustix::io::read(&ready_r, &mut b)? != 1 {
            return Err(io::Error::other("cannot make a user namespace"));
        }
        write_maps(pid, uids, gids)?;
        let ns = std::fs::File::open(format!("/proc/{pid}/ns/user"))?;
        Ok(OwnedFd::from(ns))
    })();
    drop(hold_w);
    // SAFETY: reaping the child we forked.
    unsafe { libc::waitpid(pid, std::ptr::null_mut(), 0) };
    result
}

/// An ID-mapped copy of the directory `path`, not attached anywhere.
fn idmapped(path: &Path, userns: &OwnedFd) -> io::Result<OwnedFd> {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| io::Error::other("a path holds a NUL byte"))?;
    // SAFETY: open_tree with a valid path string; returns a new descriptor or -1.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            libc::AT_FDCWD,
            c.as_ptr(),
            OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint,
        )
    };
    if fd < 0 {
        return Err(last_error(&format!("open_tree {}", path.display())));
    }
    // SAFETY: a descriptor the kernel just gave us.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_IDMAP,
        attr_clr: 0,
        propagation: 0,
        userns_fd: userns.as_raw_fd() as u64,
    };
    // SAFETY: mount_setattr on our detached mount, with a valid attribute struct.
    let r = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            fd.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if r < 0 {
        return Err(last_error(&format!(
            "ID-map {} (its filesystem must support ID-mapped mounts)",
            path.display()
        )));
    }
    Ok(fd)
}

/// Mounts the container's overlay at `rootfs` over ID-mapped layers, replacing the plain
/// one the daemon mounted. Overlayfs does its work on the writable layer with the
/// mounter's credentials, so the mount is made as the container's root (filesystem IDs
/// `root_uid`/`root_gid`, all capabilities kept): through the ID-mapped writable layer
/// those are 0 on disk.
pub fn mount_rootfs(
    rootfs: &Path,
    dirs: &OverlayDirs,
    userns: &OwnedFd,
    root_uid: u32,
    root_gid: u32,
) -> io::Result<()> {
    let mut keep = Vec::new();
    let mut lower = Vec::new();
    for l in &dirs.lower {
        let fd = idmapped(l, userns)?;
        lower.push(format!("/proc/self/fd/{}", fd.as_raw_fd()));
        keep.push(fd);
    }
    // The writable layer may be on a filesystem of its own, reached by symlinks.
    let upper_path = std::fs::canonicalize(&dirs.upper)?;
    let work_path = std::fs::canonicalize(&dirs.work)?;
    let (Some(rw), Some(upper), Some(work)) = (
        upper_path.parent(),
        upper_path.file_name(),
        work_path.file_name(),
    ) else {
        return Err(io::Error::other(
            "the writable layer has no parent directory",
        ));
    };
    if work_path.parent() != Some(rw) {
        return Err(io::Error::other(
            "the upper and work directories must be side by side",
        ));
    }
    let rw_fd = idmapped(rw, userns)?;
    // Never `volatile`: overlayfs refuses it over ID-mapped layers here.
    let data = format!(
        "lowerdir={},upperdir=/proc/self/fd/{fd}/{},workdir=/proc/self/fd/{fd}/{}",
        lower.join(":"),
        upper.to_string_lossy(),
        work.to_string_lossy(),
        fd = rw_fd.as_raw_fd()
    );
    let data = std::ffi::CString::new(data).map_err(|_| io::Error::other("NUL in a path"))?;
    let target = std::ffi::CString::new(rootfs.as_os_str().as_encoded_bytes())
        .map_err(|_| io::Error::other("NUL in a path"))?;
    // SAFETY: plain system calls with valid strings. The daemon's plain overlay goes
    // first; then the filesystem IDs change for the mount only (setfsuid clears the
    // effective file capabilities, which capset gives back from the permitted set) and
    // are restored after.
    unsafe {
        libc::umount2(target.as_ptr(), libc::MNT_DETACH);
        libc::setfsgid(root_gid);
        libc::setfsuid(root_uid);
        let all = crate::init::own_permitted();
        let _ = crate::init::capset(all, all, 0);
        let r = libc::mount(
            c"overlay".as_ptr(),
            target.as_ptr(),
            c"overlay".as_ptr(),
            0,
            data.as_ptr().cast(),
        );
        let err = last_error("mount the ID-mapped rootfs (overlay)");
        libc::setfsuid(0);
        libc::setfsgid(0);
        if r < 0 {
            return Err(err);
        }
    }
    // The overlay holds private copies of its layers' mounts; ours can go.
    drop((keep, rw_fd));
    Ok(())
}
