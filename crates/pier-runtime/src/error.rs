//! Why a container did not start, as a value that crosses processes: the container's
//! init reports a [`StartError`] to its monitor over the fail pipe, and the monitor
//! answers the daemon with an [`Answer`], both serialized (JSON), never as text to parse.
//! Each error says at which [`Step`] the start failed, what was being done to which
//! object, the errno if the kernel refused it, and whose fault it is ([`ErrorKind`]), so
//! that the engine maps it without reading its message.

use std::fmt;
use std::io;

use serde::{Deserialize, Serialize};

pub use pier_api::host_error::HostErrorKind as ErrorKind;

/// The step of a start that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    /// Starting the monitor itself: forking it, entering its directory, `state.json`.
    Monitor,
    /// Reading the bundle: `config.json`, `monitor.json`.
    Bundle,
    /// The container's cgroup: creating it, limits, moving the init in.
    Cgroup,
    /// The pipes and sockets of the container's stdio.
    Stdio,
    /// The container's log file.
    Log,
    /// Namespaces: cloning the init, the user namespace and its ID maps, joining a
    /// network namespace given by path.
    Namespaces,
    /// Mounts, devices, pivot_root, masked and read-only paths.
    Mounts,
    /// The container's terminal.
    Terminal,
    /// The process: hostname, loopback, rlimits, user, capabilities, working directory.
    Process,
    /// The seccomp filter.
    Seccomp,
    /// Finding and executing the command.
    Exec,
    /// `--runtime runc`.
    Runc,
    /// A VM (`--runtime pier-vm`): its host side, QEMU, the guest's boot.
    Vm,
}

/// Why a container did not start.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub struct StartError {
    /// The exit code Docker reports: 125 when the engine or the host failed, 126 when the
    /// command cannot be invoked, 127 when it is not found.
    pub code: i32,
    pub kind: ErrorKind,
    pub step: Step,
    /// What was being done, naming its object: `mount proc on /proc`, `exec: "sh"`.
    pub what: String,
    /// The kernel's answer, when a system call failed.
    pub errno: Option<i32>,
    /// More about it: a tool's stderr, the reason a check refused.
    pub detail: Option<String>,
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.what)?;
        if let Some(errno) = self.errno {
            write!(f, ": {}", io::Error::from_raw_os_error(errno))?;
        }
        if let Some(detail) = &self.detail {
            write!(f, ": {detail}")?;
        }
        Ok(())
    }
}

impl StartError {
    /// A failure with no errno (exit code 125); `kind` says whose fault it is.
    pub fn new(kind: ErrorKind, step: Step, what: impl Into<String>) -> Self {
        StartError {
            code: 125,
            kind,
            step,
            what: what.into(),
            errno: None,
            detail: None,
        }
    }

    /// A failed system call or file operation (exit code 125), classified by its errno.
    pub fn io(step: Step, what: impl Into<String>, e: io::Error) -> Self {
        let errno = e.raw_os_error();
        StartError {
            code: 125,
            kind: errno.map_or(ErrorKind::Host, ErrorKind::of_errno),
            step,
            what: what.into(),
            errno,
            detail: errno.is_none().then(|| e.to_string()),
        }
    }

    /// A failed system call through rustix.
    pub fn errno(step: Step, what: impl Into<String>, e: rustix::io::Errno) -> Self {
        Self::io(step, what, e.into())
    }

    /// The command cannot be run (126) or is not found (127): the user's to fix.
    pub fn command(code: i32, what: impl Into<String>) -> Self {
        StartError {
            code,
            kind: ErrorKind::Invalid,
            step: Step::Exec,
            what: what.into(),
            errno: None,
            detail: None,
        }
    }

    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    pub fn with_errno(mut self, errno: i32) -> Self {
        self.errno = Some(errno);
        self
    }

    /// The start error of a cgroup operation that failed.
    pub(crate) fn cgroup(e: crate::cgroups::CgroupError) -> Self {
        // A limit this host cannot apply is the request's to change, as a missing
        // controller is ([`crate::cgroups::MissingController::kind`]).
        let asked_too_much = e.source.kind() == io::ErrorKind::Unsupported;
        let mut out = Self::io(Step::Cgroup, e.to_string(), e.source);
        if asked_too_much {
            out.kind = ErrorKind::Invalid;
        }
        out
    }
}

/// The monitor's answer to a start, one line on its stdout (where the daemon, or the
/// zygote's reply pipe, reads it): `ok PID`, or `err` and the [`StartError`] as JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// The container runs; its init has this pid on the host.
    Started {
        pid: i32,
    },
    Failed(StartError),
}

impl Answer {
    /// The line the monitor writes (without its newline).
    pub fn to_line(&self) -> String {
        match self {
            Answer::Started { pid } => format!("ok {pid}"),
            Answer::Failed(e) => match serde_json::to_string(e) {
                Ok(json) => format!("err {json}"),
                // A StartError has nothing that fails to serialize; should it, the
                // daemon still learns that the start failed.
                Err(_) => "err".into(),
            },
        }
    }

    /// Reads the monitor's line; one the monitor did not write (it died before
    /// answering) is a failure of the monitor.
    pub fn parse(line: &str) -> Answer {
        let line = line.trim();
        if let Some(pid) = line.strip_prefix("ok ").and_then(|p| p.parse().ok()) {
            return Answer::Started { pid };
        }
        if let Some(e) = line
            .strip_prefix("err ")
            .and_then(|json| serde_json::from_str(json).ok())
        {
            return Answer::Failed(e);
        }
        Answer::Failed(StartError::new(
            ErrorKind::Host,
            Step::Monitor,
            format!("the monitor failed without a reason ({line:?})"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_follow_the_cause() {
        let full = StartError::io(
            Step::Mounts,
            "mount tmpfs on /tmp",
            io::Error::from_raw_os_error(libc::ENOSPC),
        );
        assert_eq!(full.kind, ErrorKind::NoSpace);
        let quota = StartError::errno(Step::Log, "cannot open the log", rustix::io::Errno::DQUOT);
        assert_eq!(quota.kind, ErrorKind::NoSpace);
        let limit = StartError::io(
            Step::Namespaces,
            "cannot create the container's namespaces",
            io::Error::from_raw_os_error(libc::EAGAIN),
        );
        assert_eq!(limit.kind, ErrorKind::Busy);
        let denied = StartError::io(
            Step::Process,
            "setuid 1000",
            io::Error::from_raw_os_error(libc::EPERM),
        );
        assert_eq!((denied.kind, denied.code), (ErrorKind::Host, 125));
        let missing = StartError::command(127, "exec: \"nosuchcmd\"")
            .with_detail("executable file not found in $PATH");
        assert_eq!(missing.kind, ErrorKind::Invalid);
        // An io::Error without an errno keeps its text as the detail.
        let other = StartError::io(Step::Bundle, "cannot read", io::Error::other("bad json"));
        assert_eq!((other.kind, other.errno), (ErrorKind::Host, None));
        assert_eq!(other.to_string(), "cannot read: bad json");
    }

    #[test]
    fn messages_read_as_they_always_have() {
        let e = StartError::io(
            Step::Exec,
            "exec: \"/etc/passwd\"",
            io::Error::from_raw_os_error(libc::EACCES),
        );
        assert_eq!(
            e.to_string(),
            "exec: \"/etc/passwd\": Permission denied (os error 13)"
        );
        let e = StartError::command(127, "exec: \"x\"")
            .with_detail("executable file not found in $PATH");
        assert_eq!(
            e.to_string(),
            "exec: \"x\": executable file not found in $PATH"
        );
        let e = StartError::new(ErrorKind::Host, Step::Runc, "runc failed").with_detail("boom");
        assert_eq!(e.to_string(), "runc failed: boom");
    }

    #[test]
    fn answers_round_trip_and_garbage_is_a_monitor_failure() {
        let failed = Answer::Failed(
            StartError::io(
                Step::Cgroup,
                "cgroup /sys/fs/cgroup/pids/x: cannot create",
                io::Error::from_raw_os_error(libc::ENOSPC),
            )
            .with_detail("a\nmultiline\ndetail"),
        );
        let line = failed.to_line();
        assert!(!line.contains('\n'), "{line}");
        assert_eq!(Answer::parse(&format!("{line}\n")), failed);
        let started = Answer::Started { pid: 4242 };
        assert_eq!(started.to_line(), "ok 4242");
        assert_eq!(Answer::parse("ok 4242\n"), started);
        for garbage in ["", "ok", "ok x", "err 125 text", "err {"] {
            let Answer::Failed(e) = Answer::parse(garbage) else {
                panic!("{garbage:?} parsed as a start");
            };
            assert_eq!(
                (e.code, e.kind, e.step),
                (125, ErrorKind::Host, Step::Monitor)
            );
            assert!(
                e.what.starts_with("the monitor failed without a reason"),
                "{e}"
            );
        }
    }
}
