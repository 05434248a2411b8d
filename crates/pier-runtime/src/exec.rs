//! `pier __exec DIR REQUEST`: runs another process in a running container (`pier exec`).
//!
//! A fresh, single-threaded process joins the container's cgroup and namespaces, forks
//! (joining a pid namespace takes effect for children), and the child goes through the
//! same last steps as the container's init: rlimits, seccomp, user and capabilities,
//! working directory, exec. The helper waits and exits with the child's status, so the
//! daemon sees the command's exit code; stdio passes straight through.
//!
//! The daemon runs it from a sealed copy of `pier` ([`crate::sealed`]), and it makes
//! itself non-dumpable before it opens anything of the container's.

use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use oci_spec::runtime::{Spec, UserBuilder};
use serde::{Deserialize, Serialize};

use crate::cgroups::Cgroup;
use crate::state::{read_json, MonitorConfig};

/// What the daemon asks for; everything already resolved (user, full environment).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExecRequest {
    /// Host pid of the container's init.
    pub pid: i32,
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub cwd: String,
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
    /// Give the command a terminal made in the container's devpts.
    #[serde(default)]
    pub tty: bool,
    /// Standard input carries attach frames (input, resize, close) rather than nothing.
    #[serde(default)]
    pub interactive: bool,
    /// Every capability (`exec --privileged`); the spec's seccomp profile stays.
    #[serde(default)]
    pub privileged: bool,
}

/// Passes attach frames from our stdin to the command (input, resize, close) and, with a
/// terminal, its output to our stdout, until the terminal closes (or, without one,
/// until our stdin ends).
fn relay(
    child: libc::pid_t,
    master: Option<std::os::fd::OwnedFd>,
    mut stdin: Option<std::os::fd::OwnedFd>,
) {
    use std::io::{Read, Write};
    use std::os::fd::AsRawFd;
    // The command's end also ends the relay, whatever our stdin does.
    let pidfd = rustix::process::Pid::from_raw(child)
        .and_then(|p| rustix::process::pidfd_open(p, rustix::process::PidfdFlags::empty()).ok());
    let mut inbuf = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut input_open = true;
    let mut out = std::io::stdout();
    loop {
        let mut fds = Vec::new();
        if input_open {
            fds.push(libc::pollfd {
                fd: 0,
                events: libc::POLLIN,
                revents: 0,
            });
        }
        if let Some(m) = &master {
            fds.push(libc::pollfd {
                fd: m.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            });
        }
        if let Some(p) = &pidfd {
            fds.push(libc::pollfd {
                fd: p.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            });
        }
        if fds.is_empty() {
            return;
        }
        // SAFETY: `fds` is a valid array of pollfd for its length.
        if unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, -1) } < 0 {
            continue;
        }
        let mut i = 0;
        if input_open {
            if fds[0].revents != 0 {
                match std::io::stdin().read(&mut buf) {
                    Ok(0) | Err(_) => {
                        input_open = false;
                        stdin = None;
                    }
                    Ok(n) => {
                        inbuf.extend_from_slice(&buf[..n]);
                        for (kind, payload) in crate::attach::parse(&mut inbuf).unwrap_or_default()
                        {
                            match kind {
                                crate::attach::STDIN => {
                                    let target = master
                                        .as_ref()
                                        .map(|m| m.as_raw_fd())
                                        .or(stdin.as_ref().map(|s| s.as_raw_fd()));
                                    if let Some(fd) = target {
                                        // SAFETY: borrowing our own descriptor for one write.
                                        let mut f = std::mem::ManuallyDrop::new(unsafe {
                                            <File as std::os::fd::FromRawFd>::from_raw_fd(fd)
                                        });
                                        let _ = f.write_all(&payload);
                                    }
                                }
                                crate::attach::RESIZE => {
                                    if let Some(m) = &master {
                                        crate::attach::apply_resize(
                                            std::os::fd::AsFd::as_fd(m),
                                            &payload,
                                        );
                                    }
                                }
                                crate::attach::CLOSE_STDIN => stdin = None,
                                _ => {}
                            }
                        }
                    }
                }
            }
            i = 1;
        }
        if let Some(m) = &master {
            if fds.get(i).is_some_and(|f| f.revents != 0) {
                // SAFETY: reading from our own descriptor into our buffer.
                let n = unsafe { libc::read(m.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
                if n <= 0 {
                    return; // EIO: the command and everything on its terminal are gone
                }
                let _ = out.write_all(&buf[..n as usize]);
                let _ = out.flush();
            }
        } else if !input_open {
            return;
        }
        if pidfd.is_some() && fds.last().is_some_and(|f| f.revents != 0) {
            // The command is gone: pass on what its terminal still holds, then stop.
            if let Some(m) = &master {
                // SAFETY: making our own descriptor non-blocking.
                unsafe { libc::fcntl(m.as_raw_fd(), libc::F_SETFL, libc::O_NONBLOCK) };
                loop {
                    // SAFETY: reading from our own descriptor into our buffer.
                    let n =
                        unsafe { libc::read(m.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
                    if n <= 0 {
                        break;
                    }
                    let _ = out.write_all(&buf[..n as usize]);
                }
                let _ = out.flush();
            }
            return;
        }
    }
}

fn die(code: i32, msg: impl std::fmt::Display) -> i32 {
    eprintln!("pier exec: {msg}");
    code
}

pub fn main(dir: &Path, request: &str) -> i32 {
    // Out of the container's reach before joining it: its processes cannot open this
    // one's /proc files (exe, fd, mem), nor the command's until it has exec'd. The daemon
    // runs this helper from its sealed copy of `pier` (see crate::sealed).
    crate::sealed::make_non_dumpable();
    crate::sealed::name_process();
    let req: ExecRequest = match serde_json::from_str(request) {
        Ok(r) => r,
        Err(e) => return die(125, format!("invalid request: {e}")),
    };
    let spec = match Spec::load(dir.join("config.json")) {
        Ok(s) => s,
        Err(e) => return die(125, format!("cannot read the container's spec: {e}")),
    };
    // Read while the host's files are in sight, before joining the container's mounts.
    let compiled = crate::seccomp::read_compiled(dir);
    let Some(config) = read_json::<MonitorConfig>(&dir.join("monitor.json")) else {
        return die(125, "cannot read monitor.json");
    };
    let spec = match command_spec(spec, &req) {
        Ok(s) => s,
        Err(code) => return code,
    };
    if let Err(code) = join_container(&req, &spec, &config) {
        return code;
    }
    // After joining the mount namespace, /dev/ptmx is the container's.
    let pty = if req.tty {
        match open_terminal(&req) {
            Ok(p) => Some(p),
            Err(e) => return die(125, format!("cannot make a terminal in the container: {e}")),
        }
    } else {
        None
    };
    let stdin_pipe = if req.interactive && !req.tty {
        match rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC) {
            Ok(p) => Some(p),
            Err(e) => return die(125, format!("pipe: {e}")),
        }
    } else {
        None
    };
    // SAFETY: fork in a single-threaded process.
    let child = unsafe { libc::fork() };
    if child < 0 {
        return die(125, format!("fork: {}", std::io::Error::last_os_error()));
    }
    if child == 0 {
        run_command(&spec, compiled.as_deref(), &pty, &stdin_pipe);
    }
    let master = pty.map(|(m, s)| {
        drop(s);
        m
    });
    let stdin_w = stdin_pipe.map(|(r, w)| {
        drop(r);
        w
    });
    if req.interactive || master.is_some() {
        relay(child, master, stdin_w);
    }
    wait_for(child)
}

/// The container's spec with the requested command, user and environment as its process;
/// the exit code when the request is invalid (reported).
fn command_spec(spec: Spec, req: &ExecRequest) -> Result<Spec, i32> {
    let mut process = spec.process().clone().unwrap_or_default();
    let user = UserBuilder::default()
        .uid(req.uid)
        .gid(req.gid)
        .additional_gids(req.additional_gids.clone())
        .build();
    let Ok(user) = user else {
        return Err(die(125, "invalid user"));
    };
    process
        .set_args(Some(req.args.clone()))
        .set_env(Some(req.env.clone()))
        .set_cwd(req.cwd.clone().into())
        .set_user(user);
    if req.privileged {
        let all: std::collections::HashSet<oci_spec::runtime::Capability> = crate::spec::ALL_CAPS
            .iter()
            // oci-spec parses the names without their `CAP_` (serde takes them with it).
            .filter_map(|c| c.trim_start_matches("CAP_").parse().ok())
            .collect();
        let caps = oci_spec::runtime::LinuxCapabilitiesBuilder::default()
            .bounding(all.clone())
            .effective(all.clone())
            .permitted(all.clone())
            .inheritable(all)
            .build();
        if let Ok(caps) = caps {
            process.set_capabilities(Some(caps));
        }
    }
    let mut spec = spec;
    spec.set_process(Some(process));
    // A non-root user gets no effective capabilities, as in the container's own init.
    if req.uid != 0 {
        if let Some(p) = spec.process().clone() {
            let mut p = p;
            if let Some(mut caps) = p.capabilities().clone() {
                caps.set_effective(Some(Default::default()))
                    .set_permitted(Some(Default::default()));
                p.set_capabilities(Some(caps));
            }
            spec.set_process(Some(p));
        }
    }
    Ok(spec)
}

/// Joins the container's cgroup and namespaces; the exit code when that fails
/// (reported).
fn join_container(req: &ExecRequest, spec: &Spec, config: &MonitorConfig) -> Result<(), i32> {
    // Open every namespace first: after joining the mount namespace /proc is the
    // container's.
    // The network namespace first: the host may own it, and once in a container's user
    // namespace this process could join only what that namespace owns.
    let kinds = ["net", "user", "ipc", "uts", "pid", "cgroup", "mnt"];
    let mut fds = Vec::new();
    for k in kinds {
        match File::open(format!("/proc/{}/ns/{k}", req.pid)) {
            Ok(f) => fds.push((k, f)),
            Err(e) => {
                return Err(die(
                    125,
                    format!("the container is not running ({k} namespace: {e})"),
                ))
            }
        }
    }
    if let Err(e) = Cgroup::of_spec(spec, &config.id).add(std::process::id() as i32) {
        return Err(die(125, format!("{e}: {}", e.source)));
    }
    for (k, f) in &fds {
        // Skip namespaces we already share (host network, for one).
        let ours = std::fs::read_link(format!("/proc/self/ns/{k}")).ok();
        let theirs = std::fs::read_link(format!("/proc/{}/ns/{k}", req.pid)).ok();
        if ours.is_some() && ours == theirs {
            continue;
        }
        // SAFETY: setns on a namespace fd we own; this process is single-threaded.
        if unsafe { libc::setns(std::os::fd::AsRawFd::as_raw_fd(&f.as_fd()), 0) } < 0 {
            return Err(die(
                125,
                format!(
                    "cannot join the container's {k} namespace: {}",
                    std::io::Error::last_os_error()
                ),
            ));
        }
    }
    Ok(())
}

/// A terminal in the current mount namespace's devpts, its slave owned by the command's
/// user: master and slave.
fn open_terminal(req: &ExecRequest) -> rustix::io::Result<(OwnedFd, OwnedFd)> {
    use rustix::pty::OpenptFlags;
    rustix::pty::openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC).and_then(
        |m| {
            rustix::pty::unlockpt(&m)?;
            let s = rustix::pty::ioctl_tiocgptpeer(&m, OpenptFlags::RDWR | OpenptFlags::NOCTTY)?;
            rustix::fs::fchown(
                &s,
                Some(rustix::fs::Uid::from_raw(req.uid)),
                Some(rustix::fs::Gid::from_raw(req.gid)),
            )?;
            Ok((m, s))
        },
    )
}

/// The forked child: wires stdio to the terminal, the input pipe or /dev/null, goes
/// through the init's last steps and execs the command.
fn run_command(
    spec: &Spec,
    compiled: Option<&[crate::seccomp::Insn]>,
    pty: &Option<(OwnedFd, OwnedFd)>,
    stdin_pipe: &Option<(OwnedFd, OwnedFd)>,
) -> ! {
    if let Some((_, slave)) = pty {
        let _ = rustix::process::setsid();
        let _ = rustix::process::ioctl_tiocsctty(slave);
        for fd in 0..3 {
            // SAFETY: duplicating a valid descriptor onto stdio.
            unsafe { libc::dup2(std::os::fd::AsRawFd::as_raw_fd(slave), fd) };
        }
    } else if let Some((r, _)) = stdin_pipe {
        // SAFETY: duplicating a valid descriptor onto stdin.
        unsafe { libc::dup2(std::os::fd::AsRawFd::as_raw_fd(r), 0) };
    } else if let Ok(null) = File::open("/dev/null") {
        // SAFETY: duplicating a valid descriptor onto stdin.
        unsafe { libc::dup2(std::os::fd::AsRawFd::as_raw_fd(&null), 0) };
    }
    let e = match crate::init::finish(spec, compiled) {
        Ok(never) => match never {},
        Err(e) => e,
    };
    eprintln!("pier exec: {e}");
    // SAFETY: leaving the child without running destructors.
    unsafe { libc::_exit(e.code) };
}

/// Waits for the command; its exit code, or 128 and the signal that killed it.
fn wait_for(child: i32) -> i32 {
    let mut status = 0;
    loop {
        // SAFETY: waiting for our own child.
        let r = unsafe { libc::waitpid(child, &mut status, 0) };
        if r == child
            || (r < 0 && std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR))
        {
            break;
        }
    }
    if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else if libc::WIFSIGNALED(status) {
        128 + libc::WTERMSIG(status)
    } else {
        255
    }
}
