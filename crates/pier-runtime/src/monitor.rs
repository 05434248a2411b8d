//! The per-container monitor: `pier __monitor DIR`, started by the daemon, outliving it.
//!
//! It detaches (fork, setsid), becomes a child subreaper, creates the cgroup, clones the
//! container's init with its namespaces, moves it into the cgroup, lets it go, and tells
//! the daemon on stdout `ok PID` or `err CODE MESSAGE`. Then it copies the container's
//! stdout and stderr into the log file until the container exits, records how it ended
//! in `exit.json`, removes the cgroup and exits. It is single-threaded and uses blocking
//! calls only, which keeps it small and makes cloning safe.
//!
//! ```text
//! daemon ──spawn──> monitor ──fork──> monitor (detached, subreaper)
//!                     exits              │ clone(NEWNS|NEWPID|NEWUTS|NEWIPC[|NEWNET])
//!                                        └──> init ── waits for "go" ── setup ── exec
//! ```

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::Path;

use oci_spec::runtime::{LinuxNamespaceType, Spec};

use crate::cgroups::{Cgroup, Layout};
use crate::logs::LogWriter;
use crate::state::{read_json, write_json, Exited, MonitorConfig, Running};

fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let (r, w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?;
    Ok((r, w))
}

fn now() -> String {
    pier_api::time::format_rfc3339_nanos(std::time::SystemTime::now())
}

/// Runs the monitor for the container in `dir`; returns the process exit code.
pub fn main(dir: &Path) -> i32 {
    // Detach from the daemon: the daemon reaps the first process, the second carries on.
    // SAFETY: the monitor is single-threaded at this point (no runtime was started).
    match unsafe { libc::fork() } {
        -1 => {
            println!(
                "err 125 cannot fork the monitor: {}",
                io::Error::last_os_error()
            );
            return 1;
        }
        0 => {}
        _ => return 0,
    }
    // SAFETY: plain syscalls without pointers.
    unsafe {
        libc::setsid();
        libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
    }
    match start(dir) {
        Ok(Started {
            pid,
            waited,
            cgroup,
            out,
            err,
        }) => {
            let running = Running {
                pid,
                monitor_pid: std::process::id() as i32,
                started_at: now(),
            };
            if let Err(e) = write_json(&dir.join("state.json"), &running) {
                println!("err 125 cannot write state.json: {e}");
                // SAFETY: signalling the child we created.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            } else {
                println!("ok {pid}");
            }
            let _ = io::stdout().flush();
            redirect_to_null(1);
            let exit = supervise(dir, waited, &cgroup, out, err);
            let _ = write_json(&dir.join("exit.json"), &exit);
            if dir.join("runc").exists() {
                let _ = runc(dir)
                    .args(["delete", "--force"])
                    .arg(
                        read_json::<MonitorConfig>(&dir.join("monitor.json"))
                            .map(|c| c.id)
                            .unwrap_or_default(),
                    )
                    .output();
            }
            let _ = cgroup.remove();
            0
        }
        Err((code, message)) => {
            let exit = Exited {
                exit_code: code,
                finished_at: now(),
                oom_killed: false,
                error: Some(message.clone()),
            };
            let _ = write_json(&dir.join("exit.json"), &exit);
            println!("err {code} {}", message.replace('\n', " "));
            0
        }
    }
}

fn redirect_to_null(fd: RawFd) {
    if let Ok(null) = File::options().read(true).write(true).open("/dev/null") {
        // SAFETY: both fds are valid; dup2 replaces `fd` atomically.
        unsafe { libc::dup2(null.as_raw_fd(), fd) };
    }
}

/// A started container.
struct Started {
    /// The container's init, on the host.
    pid: i32,
    /// The process whose exit ends the container: the init itself, or `runc run`.
    waited: i32,
    cgroup: Cgroup,
    out: OwnedFd,
    err: OwnedFd,
}

fn runc(dir: &Path) -> std::process::Command {
    let mut c = std::process::Command::new("runc");
    c.arg("--root").arg(dir.join("runc"));
    c
}

/// Runs the bundle with runc (`--runtime runc`): `runc run --keep`, so the cgroup outlives
/// the process long enough to read whether the OOM killer struck.
fn start_runc(dir: &Path, config: &MonitorConfig) -> Result<Started, (i32, String)> {
    use std::os::fd::FromRawFd;
    let e125 = |m: String| (125, m);
    let (out_r, out_w) = pipe().map_err(|e| e125(format!("pipe: {e}")))?;
    let (err_r, err_w) = pipe().map_err(|e| e125(format!("pipe: {e}")))?;
    let pid_file = dir.join("runc.pid");
    let _ = std::fs::remove_file(&pid_file);
    let mut child = runc(dir)
        .args(["run", "--keep", "--pid-file"])
        .arg(&pid_file)
        .arg("--bundle")
        .arg(dir)
        .arg(&config.id)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::from(out_w))
        .stderr(std::process::Stdio::from(err_w))
        .spawn()
        .map_err(|e| {
            e125(format!(
                "cannot run runc ({e}); install it with apt-get install runc"
            ))
        })?;
    let cgroup = Cgroup::for_container(&config.id);
    loop {
        if let Some(pid) = std::fs::read_to_string(&pid_file)
            .ok()
            .and_then(|s| s.trim().parse::<i32>().ok())
        {
            return Ok(Started {
                pid,
                waited: child.id() as i32,
                cgroup,
                out: out_r,
                err: err_r,
            });
        }
        if let Ok(Some(status)) = child.try_wait() {
            let mut msg = Vec::new();
            // SAFETY: the read end is ours; wrapping a dup keeps `err_r` valid.
            let dup = unsafe { libc::dup(err_r.as_raw_fd()) };
            // SAFETY: `dup` is a fresh descriptor we own.
            let mut f = unsafe { File::from_raw_fd(dup) };
            // SAFETY: making our own descriptor non-blocking.
            unsafe { libc::fcntl(dup, libc::F_SETFL, libc::O_NONBLOCK) };
            let _ = f.read_to_end(&mut msg);
            let _ = runc(dir)
                .args(["delete", "--force"])
                .arg(&config.id)
                .output();
            return Err((
                status.code().unwrap_or(125),
                format!("runc failed: {}", String::from_utf8_lossy(&msg).trim()),
            ));
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}

fn start(dir: &Path) -> Result<Started, (i32, String)> {
    let e125 = |m: String| (125, m);
    let spec = Spec::load(dir.join("config.json"))
        .map_err(|e| e125(format!("cannot read config.json: {e}")))?;
    let config: MonitorConfig = read_json(&dir.join("monitor.json"))
        .ok_or_else(|| e125("cannot read monitor.json".into()))?;
    if config.runtime == "runc" {
        return start_runc(dir, &config);
    }
    let cgroup = Cgroup::for_container(&config.id);
    let resources = spec.linux().as_ref().and_then(|l| l.resources().clone());
    cgroup
        .create(resources.as_ref())
        .map_err(|e| e125(format!("{e}: {}", e.source)))?;
    let cgroup_v1: Vec<String> = match cgroup.layout {
        Layout::V1 => cgroup
            .dirs
            .iter()
            .filter_map(|d| {
                d.parent()?
                    .parent()?
                    .file_name()
                    .map(|f| f.to_string_lossy().into_owned())
            })
            .collect(),
        Layout::V2 => vec![],
    };

    let (out_r, out_w) = pipe().map_err(|e| e125(format!("pipe: {e}")))?;
    let (err_r, err_w) = pipe().map_err(|e| e125(format!("pipe: {e}")))?;
    let (go_r, go_w) = pipe().map_err(|e| e125(format!("pipe: {e}")))?;
    let (fail_r, fail_w) = pipe().map_err(|e| e125(format!("pipe: {e}")))?;

    let namespaces = spec
        .linux()
        .as_ref()
        .and_then(|l| l.namespaces().clone())
        .unwrap_or_default();
    let mut flags = libc::CLONE_NEWNS as libc::c_ulong;
    for ns in &namespaces {
        if ns.path().is_some() {
            continue;
        }
        flags |= match ns.typ() {
            LinuxNamespaceType::Pid => libc::CLONE_NEWPID,
            LinuxNamespaceType::Uts => libc::CLONE_NEWUTS,
            LinuxNamespaceType::Ipc => libc::CLONE_NEWIPC,
            LinuxNamespaceType::Network => libc::CLONE_NEWNET,
            _ => 0, // cgroup: unshared by init after it joins its cgroup
        } as libc::c_ulong;
    }

    let log = LogWriter::open(
        &dir.join("container.log"),
        config.log_max_bytes,
        config.log_max_files,
    );
    if let Err(e) = log {
        let _ = cgroup.remove();
        return Err(e125(format!("cannot open the log: {e}")));
    }
    // SAFETY: fork-like clone (no new stack, SIGCHLD on exit) in a single-threaded process.
    let pid = unsafe {
        libc::syscall(
            libc::SYS_clone,
            flags | libc::SIGCHLD as libc::c_ulong,
            0usize,
            0usize,
            0usize,
            0usize,
        )
    } as i32;
    if pid < 0 {
        let e = io::Error::last_os_error();
        let _ = cgroup.remove();
        return Err(e125(format!(
            "cannot create the container's namespaces: {e}"
        )));
    }
    if pid == 0 {
        child(&spec, &cgroup_v1, go_r, fail_w, out_w, err_w);
    }
    drop((go_r, fail_w, out_w, err_w));

    let result = cgroup
        .add(pid)
        .map_err(|e| e125(format!("{e}: {}", e.source)));
    if let Err(e) = result {
        // SAFETY: killing and reaping the child we just created.
        unsafe {
            libc::kill(pid, libc::SIGKILL);
            libc::waitpid(pid, std::ptr::null_mut(), 0);
        }
        let _ = cgroup.remove();
        return Err(e);
    }
    let mut go = File::from(go_w);
    let _ = go.write_all(b"g");
    drop(go);
    // The fail pipe closes on a successful exec (CLOEXEC); a message means it failed.
    let mut msg = String::new();
    let _ = File::from(fail_r).read_to_string(&mut msg);
    if !msg.is_empty() {
        let mut status = 0;
        // SAFETY: reaping our child.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        let _ = cgroup.remove();
        let (code, text) = msg.split_once('\n').unwrap_or(("125", &msg));
        return Err((code.parse().unwrap_or(125), text.to_string()));
    }
    Ok(Started {
        pid,
        waited: pid,
        cgroup,
        out: out_r,
        err: err_r,
    })
}

/// The cloned child: wire stdio, wait for the cgroup, set up, exec.
fn child(
    spec: &Spec,
    cgroup_v1: &[String],
    go: OwnedFd,
    fail: OwnedFd,
    out: OwnedFd,
    err: OwnedFd,
) -> ! {
    // SAFETY: valid fds; dup2 onto stdio. /dev/null for stdin.
    unsafe {
        libc::dup2(out.as_raw_fd(), 1);
        libc::dup2(err.as_raw_fd(), 2);
    }
    redirect_to_null(0);
    drop((out, err));
    let mut b = [0u8; 1];
    let _ = File::from(go).read(&mut b);
    let e = crate::init::run(spec, cgroup_v1);
    let mut f = File::from(fail);
    let _ = write!(f, "{}\n{}", e.code, e.message);
    // SAFETY: leaving the child without running the parent's destructors.
    unsafe { libc::_exit(e.code) }
}

/// Copies output to the log until the container's init exits and its output is drained.
fn supervise(dir: &Path, pid: i32, cgroup: &Cgroup, out: OwnedFd, err: OwnedFd) -> Exited {
    let config: Option<MonitorConfig> = read_json(&dir.join("monitor.json"));
    let (max, files) = config.map_or((10 << 20, 2), |c| (c.log_max_bytes, c.log_max_files));
    let mut log = LogWriter::open(&dir.join("container.log"), max, files).ok();
    let mut streams = vec![(out, "stdout", Vec::new()), (err, "stderr", Vec::new())];
    let mut buf = vec![0u8; 64 * 1024];
    let mut status: Option<i32> = None;
    let pidfd = rustix::process::pidfd_open(
        rustix::process::Pid::from_raw(pid).expect("positive pid"),
        rustix::process::PidfdFlags::empty(),
    )
    .ok();

    while !streams.is_empty() || status.is_none() {
        let mut fds: Vec<libc::pollfd> = streams
            .iter()
            .map(|(fd, _, _)| libc::pollfd {
                fd: fd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        if let (Some(p), None) = (&pidfd, status) {
            fds.push(libc::pollfd {
                fd: p.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            });
        }
        // Without a pidfd, wake up now and then to check on the child.
        let timeout = if pidfd.is_some() { -1 } else { 200 };
        // SAFETY: `fds` is a valid array of pollfd for its length.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout) };
        if n < 0 && io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
            break;
        }
        let mut closed = Vec::new();
        for (i, (fd, name, partial)) in streams.iter_mut().enumerate() {
            if fds[i].revents == 0 {
                continue;
            }
            // SAFETY: reading into our buffer from an fd we own.
            let r = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if r <= 0 {
                if r == 0 || io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
                    closed.push(i);
                }
                continue;
            }
            partial.extend_from_slice(&buf[..r as usize]);
            while let Some(pos) = partial.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = partial.drain(..=pos).collect();
                if let Some(l) = log.as_mut() {
                    let _ = l.write(name, &line);
                }
            }
            if partial.len() >= 16 * 1024 {
                if let Some(l) = log.as_mut() {
                    let _ = l.write(name, partial);
                }
                partial.clear();
            }
        }
        for i in closed.into_iter().rev() {
            let (_, name, partial) = streams.remove(i);
            if !partial.is_empty() {
                if let Some(l) = log.as_mut() {
                    let _ = l.write(name, &partial);
                }
            }
        }
        // Reap everything that ended; note the container's init.
        loop {
            let mut st = 0;
            // SAFETY: waitpid on any child, non-blocking.
            let r = unsafe { libc::waitpid(-1, &mut st, libc::WNOHANG) };
            if r <= 0 {
                break;
            }
            if r == pid {
                status = Some(st);
            }
        }
        // The init is gone but something it started still holds the pipes: in a pid
        // namespace the kernel kills those; give them a moment, then stop reading.
        if status.is_some() && !streams.is_empty() && cgroup.pids().is_empty() {
            for (fd, _, _) in &streams {
                // SAFETY: setting O_NONBLOCK on an fd we own.
                unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, libc::O_NONBLOCK) };
            }
        }
    }
    let st = status.unwrap_or(0);
    let code = if libc::WIFEXITED(st) {
        libc::WEXITSTATUS(st)
    } else if libc::WIFSIGNALED(st) {
        128 + libc::WTERMSIG(st)
    } else {
        255
    };
    Exited {
        exit_code: code,
        finished_at: now(),
        oom_killed: cgroup.oom_killed(),
        error: None,
    }
}
