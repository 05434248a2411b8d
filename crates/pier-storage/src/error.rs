//! This crate's error: what was being done, to which file or device, and what the kernel
//! or a tool (mkfs.ext4, qemu-img, qemu-storage-daemon) answered; and whose fault that is
//! ([`ErrorKind`]), so that the engine maps it without reading its text.

use std::io;
use std::path::{Path, PathBuf};

pub use pier_api::host_error::{HostErrorKind as ErrorKind, ToolFailure};

/// What went wrong.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file or device operation on `path` failed.
    #[error("cannot {op} {}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// Copying one file to another failed.
    #[error("cannot copy {} to {}", from.display(), to.display())]
    Copy {
        from: PathBuf,
        to: PathBuf,
        #[source]
        source: io::Error,
    },
    /// Mounting a filesystem image or device failed.
    #[error("cannot mount {} on {}", device.display(), target.display())]
    Mount {
        device: PathBuf,
        target: PathBuf,
        #[source]
        source: io::Error,
    },
    /// A tool could not be run at all.
    #[error("cannot run {tool} (install Debian's {package})")]
    Spawn {
        tool: &'static str,
        package: &'static str,
        #[source]
        source: io::Error,
    },
    /// A tool ran on `path` and failed.
    #[error("{tool} failed on {}", path.display())]
    Tool {
        tool: &'static str,
        path: PathBuf,
        #[source]
        source: ToolFailure,
    },
    /// Every free loop device was taken by someone else before it could be set up.
    #[error("every loop device was busy; try again")]
    LoopDevicesBusy,
    /// An image is still attached to a loop device (a mount just released).
    #[error("{} is still attached to a loop device; try again", image.display())]
    StillAttached { image: PathBuf },
    /// No filesystem size gave the capacity asked for.
    #[error("could not make an ext4 filesystem on which {} and {} fit (the closest held {} and {} files); ask for a different size or number of inodes", pier_api::size::human(*bytes), inodes.map_or("any number of files".to_string(), |n| format!("{n} files")), pier_api::size::human(got.0), got.1)]
    Sizing {
        bytes: u64,
        inodes: Option<u64>,
        /// Bytes and inodes of the last try.
        got: (u64, u64),
    },
    /// More inodes than a filesystem of that size can hold (ext4 needs 256 bytes of inode
    /// table for each).
    #[error("{inodes} inodes do not fit in {}: ext4 needs 256 bytes for each, {} in all; give a larger size or fewer inodes", pier_api::size::human(*bytes), pier_api::size::human(inodes.saturating_mul(256)))]
    TooManyInodes { bytes: u64, inodes: u64 },
}

impl Error {
    /// Whose fault this is.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Io { source, .. } | Error::Copy { source, .. } | Error::Mount { source, .. } => {
                ErrorKind::of_io(source)
            }
            Error::Tool { source, .. } => {
                source.errno().map_or(ErrorKind::Host, ErrorKind::of_errno)
            }
            Error::LoopDevicesBusy | Error::StillAttached { .. } => ErrorKind::Busy,
            Error::Sizing { .. } | Error::TooManyInodes { .. } => ErrorKind::Invalid,
            Error::Spawn { .. } => ErrorKind::Host,
        }
    }

    /// The message with its chain of causes, for users.
    pub fn chain(&self) -> String {
        pier_api::error::chain(self)
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Maps an I/O error of `op` on `path`.
pub(crate) fn io<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> Error + 'a {
    move |source| Error::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// Maps a failed system call of `op` on `path`.
pub(crate) fn sys<'a>(
    op: &'static str,
    path: &'a Path,
) -> impl FnOnce(rustix::io::Errno) -> Error + 'a {
    move |e| io(op, path)(e.into())
}

/// Runs `cmd` (the `tool` of Debian's `package`) on `path`; its failure, with its stderr.
pub(crate) fn run(
    cmd: &mut std::process::Command,
    tool: &'static str,
    package: &'static str,
    path: &Path,
) -> Result<()> {
    let out = cmd.output().map_err(|source| Error::Spawn {
        tool,
        package,
        source,
    })?;
    if !out.status.success() {
        return Err(Error::Tool {
            tool,
            path: path.to_path_buf(),
            source: ToolFailure {
                status: out.status,
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            },
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::unix::process::ExitStatusExt;
    use std::process::ExitStatus;

    use super::*;

    fn tool(stderr: &str) -> Error {
        Error::Tool {
            tool: "mkfs.ext4",
            path: "/v/disk.img".into(),
            source: ToolFailure {
                status: ExitStatus::from_raw(1 << 8),
                stderr: stderr.into(),
            },
        }
    }

    #[test]
    fn a_full_disk_is_no_space_whoever_reports_it() {
        let full = Error::Io {
            op: "size",
            path: "/v/disk.img".into(),
            source: io::Error::from_raw_os_error(libc::ENOSPC),
        };
        assert_eq!(full.kind(), ErrorKind::NoSpace);
        let quota = Error::Copy {
            from: "/a".into(),
            to: "/b".into(),
            source: io::Error::from_raw_os_error(libc::EDQUOT),
        };
        assert_eq!(quota.kind(), ErrorKind::NoSpace);
        let e =
            tool("mkfs.ext4: No space left on device while writing out and closing file system");
        assert_eq!(e.kind(), ErrorKind::NoSpace);
        assert_eq!(
            tool("qemu-img: /v/disk.qcow2: Disk quota exceeded").kind(),
            ErrorKind::NoSpace
        );
    }

    #[test]
    fn other_failures_are_classified_by_cause() {
        assert_eq!(
            tool("mkfs.ext4: invalid blocks count").kind(),
            ErrorKind::Host
        );
        assert_eq!(tool("").kind(), ErrorKind::Host);
        let exists = Error::Io {
            op: "create",
            path: "/v/x".into(),
            source: io::Error::from_raw_os_error(libc::EEXIST),
        };
        assert_eq!(exists.kind(), ErrorKind::Conflict);
        let too_large = Error::Io {
            op: "size",
            path: "/v/disk.img".into(),
            source: io::Error::from_raw_os_error(libc::EFBIG),
        };
        assert_eq!(too_large.kind(), ErrorKind::Invalid);
        let busy = Error::Mount {
            device: "/dev/loop3".into(),
            target: "/v/_data".into(),
            source: io::Error::from_raw_os_error(libc::EBUSY),
        };
        assert_eq!(busy.kind(), ErrorKind::Busy);
        assert_eq!(Error::LoopDevicesBusy.kind(), ErrorKind::Busy);
        let denied = Error::Io {
            op: "open",
            path: "/dev/loop-control".into(),
            source: io::Error::from_raw_os_error(libc::EACCES),
        };
        assert_eq!(denied.kind(), ErrorKind::Host);
        let missing = Error::Spawn {
            tool: "qemu-img",
            package: "qemu-utils",
            source: io::Error::from_raw_os_error(libc::ENOENT),
        };
        assert_eq!(missing.kind(), ErrorKind::Host);
    }

    #[test]
    fn messages_name_the_object_and_the_cause_once() {
        let e = Error::Mount {
            device: "/v/disk.img".into(),
            target: "/v/_data".into(),
            source: io::Error::from_raw_os_error(libc::EINVAL),
        };
        assert_eq!(
            e.chain(),
            "cannot mount /v/disk.img on /v/_data: Invalid argument (os error 22)"
        );
        assert_eq!(
            tool("mkfs.ext4: Device size reported to be zero.").chain(),
            "mkfs.ext4 failed on /v/disk.img: mkfs.ext4: Device size reported to be zero."
        );
        assert_eq!(
            tool("").chain(),
            "mkfs.ext4 failed on /v/disk.img: exit status: 1"
        );
    }
}
