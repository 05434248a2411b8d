//! Whose fault a host failure is: the one classification the host crates (pier-net,
//! pier-storage, pier-runtime) give their errors, from the kernel's errno or from a tool's
//! own words, so that the engine maps a host failure onto its error once, without reading
//! its text.

use std::fmt;
use std::io;
use std::process::ExitStatus;

use serde::{Deserialize, Serialize};

/// Whose fault a host failure is, and so how the engine answers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HostErrorKind {
    /// The request cannot be carried out as asked (a command that is missing, a file larger
    /// than the host's filesystem allows).
    Invalid,
    /// Something the request named does not exist.
    NotFound,
    /// Something by that name or address exists already, or the host holds what the request
    /// would replace.
    Conflict,
    /// A resource is taken for now; trying again later may succeed.
    Busy,
    /// The host is out of room: its disk, a quota, or a kernel table.
    NoSpace,
    /// The host failed: a missing tool, a refused system call.
    Host,
}

impl HostErrorKind {
    /// The kind of a failed system call, netlink request or tool, from its errno: an
    /// existing name or address is a conflict, a full disk or quota no space, a taken
    /// resource busy, a file too large for the filesystem invalid; anything else is the
    /// host's.
    pub fn of_errno(errno: i32) -> HostErrorKind {
        match errno {
            libc::EEXIST | libc::EADDRINUSE | libc::ENOTEMPTY => HostErrorKind::Conflict,
            libc::ENOSPC | libc::EDQUOT => HostErrorKind::NoSpace,
            libc::EBUSY | libc::EAGAIN => HostErrorKind::Busy,
            libc::EFBIG => HostErrorKind::Invalid,
            _ => HostErrorKind::Host,
        }
    }

    /// The kind of a failed I/O operation: by its errno, the host's when it has none.
    pub fn of_io(e: &io::Error) -> HostErrorKind {
        e.raw_os_error()
            .map_or(HostErrorKind::Host, HostErrorKind::of_errno)
    }
}

/// How a tool that ran ended (nft, tc, mkfs.ext4, qemu-img): its exit status and what it
/// wrote on stderr.
#[derive(Debug)]
pub struct ToolFailure {
    pub status: ExitStatus,
    pub stderr: String,
}

impl ToolFailure {
    /// The errno the tool reports in its own words: tools print the kernel's answer as
    /// `strerror` writes it ("No space left on device").
    pub fn errno(&self) -> Option<i32> {
        const KNOWN: [(&str, i32); 4] = [
            ("No space left on device", libc::ENOSPC),
            ("Disk quota exceeded", libc::EDQUOT),
            ("File too large", libc::EFBIG),
            ("File exists", libc::EEXIST),
        ];
        KNOWN
            .iter()
            .find(|(text, _)| self.stderr.contains(text))
            .map(|&(_, errno)| errno)
    }

    /// The kind of this failure: by the errno the tool reports, the host's otherwise.
    pub fn kind(&self) -> HostErrorKind {
        self.errno()
            .map_or(HostErrorKind::Host, HostErrorKind::of_errno)
    }
}

impl fmt::Display for ToolFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.stderr.is_empty() {
            write!(f, "{}", self.status)
        } else {
            f.write_str(&self.stderr)
        }
    }
}

impl std::error::Error for ToolFailure {}

#[cfg(test)]
mod tests {
    use std::os::unix::process::ExitStatusExt;

    use super::*;

    #[test]
    fn errnos_are_classified_by_whose_fault_they_are() {
        use HostErrorKind::*;
        let cases = [
            (libc::EEXIST, Conflict),
            (libc::EADDRINUSE, Conflict),
            (libc::ENOTEMPTY, Conflict),
            (libc::ENOSPC, NoSpace),
            (libc::EDQUOT, NoSpace),
            (libc::EBUSY, Busy),
            (libc::EAGAIN, Busy),
            (libc::EFBIG, Invalid),
            (libc::EPERM, Host),
        ];
        for (errno, kind) in cases {
            assert_eq!(HostErrorKind::of_errno(errno), kind, "errno {errno}");
            let io = io::Error::from_raw_os_error(errno);
            assert_eq!(HostErrorKind::of_io(&io), kind, "{io}");
        }
        assert_eq!(HostErrorKind::of_io(&io::Error::other("x")), Host);
    }

    #[test]
    fn a_tools_words_give_its_errno_and_kind() {
        let failed = |stderr: &str| ToolFailure {
            status: ExitStatus::from_raw(1 << 8),
            stderr: stderr.into(),
        };
        let full = failed("mkfs.ext4: No space left on device while writing");
        assert_eq!(full.errno(), Some(libc::ENOSPC));
        assert_eq!(full.kind(), HostErrorKind::NoSpace);
        assert_eq!(failed("Error: File exists").kind(), HostErrorKind::Conflict);
        let other = failed("syntax error");
        assert_eq!((other.errno(), other.kind()), (None, HostErrorKind::Host));
        assert_eq!(other.to_string(), "syntax error");
        assert_eq!(failed("").to_string(), "exit status: 1");
    }
}
