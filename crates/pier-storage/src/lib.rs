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
//! The engine (`pier_engine::volumes`, through its `host::storage` traits) decides what to make; this crate does it.

pub mod block;
pub mod ext4;
pub mod loopdev;
pub mod tree;

mod error;

pub use error::{Error, ErrorKind, Result, ToolFailure};
