//! The monitor's start of a VM instance (`--runtime pier-vm`): in place of a container
//! init, the monitor spawns the VM's host side, `pier __vm DIR` (crate `pier-vm`), in the
//! instance's cgroup, with the instance's stdio (a terminal's slave with `-t`, of which
//! it is the session leader, so that a resize reaches it as SIGWINCH) and a pipe on
//! fd 3, where it says once whether the guest's entrypoint started:
//!
//! ```text
//! monitor ──spawn──> pier __vm DIR ──> virtiofsd, QEMU ──boot──> guest agent ──> entrypoint
//!    ^                   │
//!    └── fd 3: "ok" | "err CODE MESSAGE"   (its exit code is the entrypoint's)
//! ```
//!
//! Everything else (the log, attached clients, signals through the control socket, the
//! exit) is the monitor's as for a container: the helper's exit is the instance's.

use std::io::{self, BufRead};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::Path;

use crate::attach;
use crate::cgroups::Cgroup;
use crate::error::{ErrorKind, StartError, Step};
use crate::state::MonitorConfig;

/// The runtime name that selects a VM.
pub const RUNTIME: &str = "pier-vm";

/// The argument that runs the VM's host side (`pier __vm DIR`).
pub const HELPER_ARG: &str = "__vm";

/// The argument that runs an exec in a VM (`pier __vm-exec DIR REQUEST`).
pub const EXEC_ARG: &str = "__vm-exec";

/// A started VM, as the monitor supervises it.
pub struct StartedVm {
    /// The host side's pid (signals go to it; its exit is the instance's).
    pub pid: i32,
    pub outputs: Vec<(OwnedFd, u8)>,
    pub stdin: Option<OwnedFd>,
    pub tty: Option<OwnedFd>,
}

/// The instance's stdio for the helper: its three descriptors, and the monitor's ends.
struct VmStdio {
    child: [Option<OwnedFd>; 3],
    outputs: Vec<(OwnedFd, u8)>,
    stdin: Option<OwnedFd>,
    tty: Option<OwnedFd>,
}

fn stdio(config: &MonitorConfig) -> Result<VmStdio, StartError> {
    let io_err = |what: &str, e: io::Error| StartError::io(Step::Stdio, what.to_string(), e);
    if config.tty {
        use rustix::pty::OpenptFlags;
        let flags = OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC;
        let master = rustix::pty::openpt(flags)
            .map_err(|e| StartError::errno(Step::Terminal, "cannot open a terminal", e))?;
        rustix::pty::unlockpt(&master)
            .map_err(|e| StartError::errno(Step::Terminal, "unlockpt", e))?;
        let slave = rustix::pty::ioctl_tiocgptpeer(&master, flags)
            .map_err(|e| StartError::errno(Step::Terminal, "cannot open the terminal", e))?;
        let dup = |fd: &OwnedFd| fd.try_clone().map_err(|e| io_err("dup", e));
        let child = [Some(dup(&slave)?), Some(dup(&slave)?), Some(slave)];
        return Ok(VmStdio {
            child,
            stdin: Some(dup(&master)?),
            tty: Some(dup(&master)?),
            outputs: vec![(master, attach::STDOUT)],
        });
    }
    // Pipes, as a container's.
    let crate::monitor::Stdio {
        outputs,
        child_stdio,
        stdin,
        ..
    } = crate::monitor::open_stdio(config)?;
    let mut child = child_stdio.into_iter();
    Ok(VmStdio {
        child: [
            child.next().flatten(),
            child.next().flatten(),
            child.next().flatten(),
        ],
        outputs,
        stdin,
        tty: None,
    })
}

/// Spawns the VM's host side in `cgroup` and waits until it says how the guest's start
/// went. On error nothing of it runs.
pub fn start(dir: &Path, config: &MonitorConfig, cgroup: &Cgroup) -> Result<StartedVm, StartError> {
    let VmStdio {
        child,
        outputs,
        stdin,
        tty,
    } = stdio(config)?;
    let (ready_r, ready_w) =
        crate::monitor::pipe().map_err(|e| StartError::io(Step::Stdio, "pipe", e))?;
    // The monitor's own binary (the daemon's sealed copy of pier): the child's
    // /proc/self/exe until its exec is the same file.
    let mut cmd = std::process::Command::new("/proc/self/exe");
    cmd.arg0("pier").arg(HELPER_ARG).arg(dir).current_dir(dir);
    let [c_in, c_out, c_err] = child;
    cmd.stdin(c_in.map_or_else(std::process::Stdio::null, Into::into));
    cmd.stdout(c_out.map_or_else(std::process::Stdio::null, Into::into));
    cmd.stderr(c_err.map_or_else(std::process::Stdio::null, Into::into));
    let ready_fd = ready_w.as_raw_fd();
    let cgroup_procs: Vec<std::path::PathBuf> = cgroup
        .dirs
        .iter()
        .map(|(_, d)| d.join("cgroup.procs"))
        .collect();
    let with_tty = config.tty;
    // SAFETY: the monitor is single-threaded; the closure only makes system calls
    // (setsid, ioctl, dup2, open/write of cgroup files) on values prepared before fork.
    unsafe {
        cmd.pre_exec(move || {
            // Into the instance's cgroup before anything of the VM runs: QEMU and
            // virtiofsd, its children, are born there.
            for p in &cgroup_procs {
                std::fs::write(p, b"0")?;
            }
            if libc::setsid() < 0 {
                return Err(io::Error::last_os_error());
            }
            if with_tty && libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                return Err(io::Error::last_os_error());
            }
            if libc::dup2(ready_fd, 3) < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut helper = cmd
        .spawn()
        .map_err(|e| StartError::io(Step::Vm, "cannot start the VM's host side (pier __vm)", e))?;
    drop(ready_w);
    drop(cmd);
    let pid = helper.id() as i32;
    let mut line = String::new();
    let read = io::BufReader::new(std::fs::File::from(ready_r)).read_line(&mut line);
    let line = line.trim_end();
    if read.is_ok() && line == "ok" {
        return Ok(StartedVm {
            pid,
            outputs,
            stdin,
            tty,
        });
    }
    // It failed: it exits with its code; make sure, and take what it says.
    // SAFETY: signalling our own child, not yet reaped.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    let status = helper.wait();
    let (code, message) = match line.strip_prefix("err ") {
        Some(rest) => {
            let (code, msg) = rest.split_once(' ').unwrap_or((rest, ""));
            (code.parse().unwrap_or(125), msg.to_string())
        }
        None => (
            125,
            format!(
                "the VM's host side ended before the guest started ({})",
                status.map_or_else(|e| e.to_string(), |s| s.to_string())
            ),
        ),
    };
    let kind = match code {
        126 | 127 => ErrorKind::Invalid,
        _ => ErrorKind::Host,
    };
    Err(StartError {
        code,
        ..StartError::new(kind, Step::Vm, "the VM did not start").with_detail(message)
    })
}
