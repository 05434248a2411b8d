//! Mounts a container takes from another container's mount namespace: the `/dev/shm` of
//! the container whose IPC it joins (`--ipc container:NAME`). The spec names such a
//! mount as a bind whose source is `/proc/PID/root/PATH`; a bind mount cannot reach into
//! another namespace, so the monitor clones the mount there (`open_tree` in a short-lived
//! child that joined that namespace) and the container's init attaches the clone where
//! the spec says (`move_mount`). Nothing is mounted on the host, so nothing is left
//! behind if anything dies.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use oci_spec::runtime::Spec;

use crate::error::{StartError, Step};

/// The mounts cloned for one start, by their destination in the container.
#[derive(Default)]
pub struct ForeignMounts(Vec<(PathBuf, OwnedFd)>);

/// `(pid, path in its mount namespace)` for a source `/proc/PID/root/PATH`.
fn foreign_source(source: &Path) -> Option<(u32, PathBuf)> {
    let rest = source.strip_prefix("/proc").ok()?;
    let mut parts = rest.components();
    let pid: u32 = parts.next()?.as_os_str().to_str()?.parse().ok()?;
    if parts.next()?.as_os_str() != "root" {
        return None;
    }
    Some((pid, Path::new("/").join(parts.as_path())))
}

impl ForeignMounts {
    /// Clones, for each bind mount of `spec` whose source lies in another process's
    /// root, that mount from its namespace. Call from the (single-threaded) monitor.
    pub fn clone_for(spec: &Spec) -> Result<ForeignMounts, StartError> {
        let mut out = Vec::new();
        for m in spec.mounts().iter().flatten() {
            let Some((pid, inner)) = m.source().as_deref().and_then(foreign_source) else {
                continue;
            };
            let fd = clone_mount(pid, &inner).map_err(|e| {
                StartError::io(
                    Step::Mounts,
                    format!(
                        "cannot take {} from process {pid}'s mount namespace for {}",
                        inner.display(),
                        m.destination().display()
                    ),
                    e,
                )
            })?;
            out.push((m.destination().clone(), fd));
        }
        Ok(ForeignMounts(out))
    }

    /// The cloned mount for `destination`, if one was made.
    pub(crate) fn take(&mut self, destination: &Path) -> Option<OwnedFd> {
        let i = self.0.iter().position(|(d, _)| d == destination)?;
        Some(self.0.remove(i).1)
    }
}

/// Attaches a cloned mount at `dest` (a directory made if missing).
pub(crate) fn attach(fd: OwnedFd, dest: &Path) -> io::Result<()> {
    std::fs::create_dir_all(dest)?;
    rustix::mount::move_mount(
        fd.as_fd(),
        "",
        rustix::fs::CWD,
        dest,
        rustix::mount::MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH,
    )?;
    Ok(())
}

/// Clones the mount at `inner` in process `pid`'s mount namespace: a forked child joins
/// that namespace (which a process sharing its filesystem context with threads could
/// not), clones the mount into a detached tree and sends its descriptor back.
fn clone_mount(pid: u32, inner: &Path) -> io::Result<OwnedFd> {
    let ns = std::fs::File::open(format!("/proc/{pid}/ns/mnt"))?;
    let (ours, theirs) = rustix::net::socketpair(
        rustix::net::AddressFamily::UNIX,
        rustix::net::SocketType::STREAM,
        rustix::net::SocketFlags::CLOEXEC,
        None,
    )?;
    // SAFETY: fork in the single-threaded monitor; the child only makes system calls
    // and leaves with _exit.
    let child = unsafe { libc::fork() };
    if child < 0 {
        return Err(io::Error::last_os_error());
    }
    if child == 0 {
        drop(ours);
        let cloned = rustix::thread::move_into_link_name_space(
            ns.as_fd(),
            Some(rustix::thread::LinkNameSpaceType::Mount),
        )
        .and_then(|()| {
            rustix::mount::open_tree(
                rustix::fs::CWD,
                inner,
                rustix::mount::OpenTreeFlags::OPEN_TREE_CLONE
                    | rustix::mount::OpenTreeFlags::OPEN_TREE_CLOEXEC,
            )
        });
        // The descriptor with one byte, or the errno alone.
        let sent = match cloned {
            Ok(fd) => {
                let fds = [fd.as_fd()];
                let mut space =
                    [std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
                let mut control = rustix::net::SendAncillaryBuffer::new(&mut space);
                control.push(rustix::net::SendAncillaryMessage::ScmRights(&fds));
                rustix::net::sendmsg(
                    &theirs,
                    &[io::IoSlice::new(b"m")],
                    &mut control,
                    rustix::net::SendFlags::empty(),
                )
                .map(drop)
            }
            Err(e) => rustix::net::send(
                &theirs,
                &e.raw_os_error().to_le_bytes(),
                rustix::net::SendFlags::empty(),
            )
            .map(drop),
        };
        // SAFETY: leaving the forked child without running the parent's destructors.
        unsafe { libc::_exit(i32::from(sent.is_err())) }
    }
    drop(theirs);
    let mut buf = [0u8; 4];
    let mut space = [std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = rustix::net::RecvAncillaryBuffer::new(&mut space);
    let got = rustix::net::recvmsg(
        &ours,
        &mut [io::IoSliceMut::new(&mut buf)],
        &mut control,
        rustix::net::RecvFlags::CMSG_CLOEXEC | rustix::net::RecvFlags::WAITALL,
    );
    let fd = control.drain().find_map(|msg| match msg {
        rustix::net::RecvAncillaryMessage::ScmRights(mut fds) => fds.next(),
        _ => None,
    });
    let mut status = 0;
    // SAFETY: reaping the child forked above.
    unsafe { libc::waitpid(child, &mut status, 0) };
    match (fd, got) {
        (Some(fd), _) => Ok(fd),
        (None, Ok(r)) if r.bytes == 4 => Err(io::Error::from_raw_os_error(i32::from_le_bytes(buf))),
        (None, Ok(_)) => Err(io::Error::other(
            "the cloning process ended without an answer",
        )),
        (None, Err(e)) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_sources_in_a_process_root_are_foreign() {
        assert_eq!(
            foreign_source(Path::new("/proc/42/root/dev/shm")),
            Some((42, PathBuf::from("/dev/shm")))
        );
        assert_eq!(foreign_source(Path::new("/proc/42/cwd/dev/shm")), None);
        assert_eq!(foreign_source(Path::new("/proc/self/root/dev/shm")), None);
        assert_eq!(foreign_source(Path::new("/var/lib/x")), None);
    }
}
