//! This crate's error: what was being done (the operation), to what (a link, an
//! address, a namespace file, Pier's nftables table), and what the kernel or a tool (nft,
//! tc) answered; and whose fault that is ([`ErrorKind`]), so that the engine maps it
//! without reading its text.

use std::io;
use std::path::{Path, PathBuf};

pub use pier_api::host_error::{HostErrorKind as ErrorKind, ToolFailure};

/// How a netlink request failed.
#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    /// The kernel refused it.
    #[error("{0}")]
    Kernel(rustix::io::Errno),
    /// The exchange itself went wrong (an unexpected or malformed answer).
    #[error(transparent)]
    Protocol(rtnetlink::Error),
}

impl From<rtnetlink::Error> for NetlinkError {
    fn from(e: rtnetlink::Error) -> Self {
        match &e {
            rtnetlink::Error::NetlinkError(m) if m.raw_code() != 0 => {
                NetlinkError::Kernel(rustix::io::Errno::from_raw_os_error(m.raw_code().abs()))
            }
            _ => NetlinkError::Protocol(e),
        }
    }
}

impl NetlinkError {
    /// The kernel's errno, if it refused the request.
    pub fn errno(&self) -> Option<i32> {
        match self {
            NetlinkError::Kernel(e) => Some(e.raw_os_error()),
            NetlinkError::Protocol(_) => None,
        }
    }
}

/// What went wrong in the kernel or its tools.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No netlink socket could be opened.
    #[error("netlink: cannot open a socket")]
    Socket(#[source] io::Error),
    /// A netlink request about `object` (a link, an address, a route) failed.
    #[error("netlink: cannot {op} {object}")]
    Netlink {
        op: &'static str,
        object: String,
        #[source]
        source: NetlinkError,
    },
    /// The kernel has no VXLAN support (a module not loaded, or not built).
    #[error("netlink: cannot create VXLAN link {name}: this kernel has no VXLAN support; load it with `modprobe vxlan` (or use a kernel built with CONFIG_VXLAN)")]
    NoVxlan {
        name: String,
        #[source]
        source: NetlinkError,
    },
    /// A link by the name of one of Pier's VXLAN links is of another kind.
    #[error("netlink: link {name} is not a VXLAN link")]
    NotVxlan { name: String },
    /// A link Pier made (or was about to use) is not there.
    #[error("netlink: link {name} is missing")]
    LinkMissing { name: String },
    /// A file operation (a namespace file, a sysctl) on `path` failed.
    #[error("cannot {op} {}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
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
    /// Talking to a tool that runs failed (writing its input, waiting for it).
    #[error("cannot {op} {tool}")]
    Pipe {
        op: &'static str,
        tool: &'static str,
        #[source]
        source: io::Error,
    },
    /// nft refused Pier's rules for `table`.
    #[error("nftables refused Pier's rules for table {table}")]
    Nft {
        table: String,
        #[source]
        source: ToolFailure,
    },
    /// tc refused a queueing discipline on `dev`.
    #[error("tc could not {op} on {dev}")]
    Tc {
        op: &'static str,
        dev: String,
        #[source]
        source: ToolFailure,
    },
    /// A helper thread (in another network namespace) died.
    #[error("the thread that should {op} panicked")]
    Panicked { op: &'static str },
}

impl Error {
    /// Whose fault this is.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Netlink { source, .. } | Error::NoVxlan { source, .. } => {
                source.errno().map_or(ErrorKind::Host, ErrorKind::of_errno)
            }
            Error::Io { source, .. } | Error::Socket(source) | Error::Pipe { source, .. } => {
                ErrorKind::of_io(source)
            }
            Error::Nft { source, .. } | Error::Tc { source, .. } => {
                source.errno().map_or(ErrorKind::Host, ErrorKind::of_errno)
            }
            Error::NotVxlan { .. } => ErrorKind::Conflict,
            Error::LinkMissing { .. } | Error::Spawn { .. } | Error::Panicked { .. } => {
                ErrorKind::Host
            }
        }
    }

    /// The message with its chain of causes, for users.
    pub fn chain(&self) -> String {
        pier_api::error::chain(self)
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Maps a failed netlink request of `op` on `object`.
pub(crate) fn nl(
    op: &'static str,
    object: impl Into<String>,
) -> impl FnOnce(rtnetlink::Error) -> Error {
    let object = object.into();
    move |e| Error::Netlink {
        op,
        object,
        source: e.into(),
    }
}

/// Maps an I/O error of `op` on `path`.
pub(crate) fn io<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> Error + 'a {
    move |source| Error::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::process::ExitStatusExt;
    use std::process::ExitStatus;

    use rtnetlink::packet_core::ErrorMessage;

    use super::*;

    /// A netlink error as the kernel sends it: the negated errno.
    fn kernel(errno: i32) -> rtnetlink::Error {
        let mut m = ErrorMessage::default();
        m.code = std::num::NonZeroI32::new(-errno);
        rtnetlink::Error::NetlinkError(m)
    }

    #[test]
    fn netlink_errors_are_classified_by_the_kernels_errno() {
        let e = nl("create veth", "eth0/pv1234")(kernel(libc::EEXIST));
        assert_eq!(e.kind(), ErrorKind::Conflict);
        assert_eq!(
            e.chain(),
            "netlink: cannot create veth eth0/pv1234: File exists (os error 17)"
        );
        let e = nl("add", "10.0.0.1/24 to pier0")(kernel(libc::EADDRINUSE));
        assert_eq!(e.kind(), ErrorKind::Conflict);
        let e = nl("create bridge", "pier0")(kernel(libc::EBUSY));
        assert_eq!(e.kind(), ErrorKind::Busy);
        let e = nl("create bridge", "pier0")(kernel(libc::EPERM));
        assert_eq!(e.kind(), ErrorKind::Host);
        let e = nl("list", "links")(rtnetlink::Error::RequestFailed);
        assert_eq!(e.kind(), ErrorKind::Host);
    }

    #[test]
    fn tools_and_files_are_classified_by_what_they_report() {
        let tool = |stderr: &str| ToolFailure {
            status: ExitStatus::from_raw(2 << 8),
            stderr: stderr.into(),
        };
        let nft = Error::Nft {
            table: "pier".into(),
            source: tool("netlink: Error: Could not process rule: No space left on device"),
        };
        assert_eq!(nft.kind(), ErrorKind::NoSpace);
        let nft = Error::Nft {
            table: "pier".into(),
            source: tool("Error: syntax error"),
        };
        assert_eq!(nft.kind(), ErrorKind::Host);
        let tc = Error::Tc {
            op: "set a rate limit",
            dev: "pv12".into(),
            source: tool("RTNETLINK answers: File exists"),
        };
        assert_eq!(tc.kind(), ErrorKind::Conflict);
        assert_eq!(
            tc.chain(),
            "tc could not set a rate limit on pv12: RTNETLINK answers: File exists"
        );
        let full = io("create", Path::new("/run/pier/netns/x"))(io::Error::from_raw_os_error(
            libc::ENOSPC,
        ));
        assert_eq!(full.kind(), ErrorKind::NoSpace);
        let denied = io("write", Path::new("/proc/sys/net/ipv4/ip_forward"))(
            io::Error::from_raw_os_error(libc::EROFS),
        );
        assert_eq!(denied.kind(), ErrorKind::Host);
    }
}
