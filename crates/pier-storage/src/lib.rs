//! Volume storage mechanisms: plain directories, and filesystem images whose size and
//! inode count the kernel enforces; snapshots that are crash-consistent; export of a
//! volume's content as a tar with its checksum.
//!
//! Why ext4 images on loop devices for limits: they work on any backing filesystem
//! (project quotas need XFS, or ext4 mounted with `prjquota`, which the state directory's
//! filesystem may not be), a full volume fails with ENOSPC inside the container exactly as
//! a full disk does, the inode count is fixed when the filesystem is made, and the same
//! image files are what VMs will boot from later. A loop device is set up with
//! `LOOP_CONFIGURE` and autoclear, so unmounting releases it and nothing is left behind.
//! The daemon (`pier-daemon/src/volumes.rs`) decides what to make; this crate does it.

pub mod block;
pub mod ext4;
pub mod loopdev;
pub mod tree;

/// What went wrong.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot {0}: {1}")]
    Io(String, #[source] std::io::Error),
    #[error("{0}")]
    Tool(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
    let what = what.into();
    move |e| Error::Io(what, e)
}
