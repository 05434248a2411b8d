//! The per-container monitor: `pier __monitor DIR`, started by the daemon, outliving it.
//!
//! It detaches (fork, setsid), becomes a child subreaper, creates the cgroup, clones the
//! container's init with its namespaces, moves it into the cgroup, lets it go, and tells
//! the daemon on stdout how the start went (an [`Answer`]: `ok PID`, or `err` and the
//! [`StartError`] as JSON). Then it copies the container's
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
use std::path::{Path, PathBuf};

use oci_spec::runtime::{LinuxNamespaceType, Spec};

use crate::foreign_mounts::ForeignMounts;

use crate::attach;
use crate::cgroups::{Cgroup, Layout};
use crate::error::{Answer, ErrorKind, StartError, Step};
use crate::logs::LogWriter;
use crate::state::{read_json, write_json, Exited, MonitorConfig, Running};

/// What a monitor is called (its second argument): `pier __monitor`.
pub const ARG: &str = "__monitor";

/// The working directory of process `pid` if it is one of Pier's helpers called `name`
/// (its second argument: [`ARG`], [`crate::zygote::ARG`]). A monitor works in its
/// container's directory and a zygote in its containers' one: this is how a daemon
/// tells which are its own.
pub fn helper_dir(pid: i32, name: &str) -> Option<PathBuf> {
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    if cmdline.split(|&b| b == 0).nth(1) != Some(name.as_bytes()) {
        return None;
    }
    std::fs::read_link(format!("/proc/{pid}/cwd")).ok()
}

/// Every process now that is one of Pier's helpers called `name`, with its working
/// directory (see [`helper_dir`]).
pub fn helpers(name: &str) -> Vec<(i32, PathBuf)> {
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    rd.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(|pid| Some((pid, helper_dir(pid, name)?)))
        .collect()
}

pub(crate) fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let (r, w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?;
    Ok((r, w))
}

fn now() -> String {
    pier_api::time::format_rfc3339_nanos(std::time::SystemTime::now())
}

/// Runs the monitor for the container in `dir` as a spawned process (`pier __monitor`,
/// used when the zygote is not); returns the process exit code.
pub fn main(dir: &Path) -> i32 {
    // Detach from the daemon: the daemon reaps the first process, the second carries on.
    // SAFETY: the monitor is single-threaded at this point (no runtime was started).
    match unsafe { libc::fork() } {
        -1 => {
            answer(&Answer::Failed(StartError::io(
                Step::Monitor,
                "cannot fork the monitor",
                io::Error::last_os_error(),
            )));
            1
        }
        0 => run(dir),
        _ => 0,
    }
}

/// The monitor proper, in a process the daemon does not wait for: a fork of the spawned
/// monitor, or of the zygote (see [`crate::zygote`]). Stdout is where the start is
/// answered; the working directory is `dir`.
pub fn run(dir: &Path) -> i32 {
    // SAFETY: plain syscalls without pointers. The daemon may die at any point of the
    // start (its end of stdout with it): writing the answer must then fail quietly
    // (EPIPE), never kill the monitor, which would leave its container unwatched.
    unsafe {
        libc::setsid();
        libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
    }
    // The container's init is cloned from this process: neither may be opened through
    // /proc by the container's processes (see crate::sealed).
    crate::sealed::make_non_dumpable();
    match start(dir) {
        Ok(started) => {
            let pid = started.pid;
            // Listening before the daemon hears "ok", so an attach right after the start
            // finds the socket.
            let sock_path = dir.join("attach.sock");
            let _ = std::fs::remove_file(&sock_path);
            // Socket paths are limited to 108 bytes; bind relative to the directory.
            let _ = std::env::set_current_dir(dir);
            let listener = std::os::unix::net::UnixListener::bind(attach::SOCKET).ok();
            let _ = std::fs::remove_file(attach::CONTROL_SOCKET);
            let control = std::os::unix::net::UnixListener::bind(attach::CONTROL_SOCKET).ok();
            let running = Running {
                pid,
                monitor_pid: std::process::id() as i32,
                started_at: now(),
            };
            if let Err(e) = write_json(&dir.join("state.json"), &running) {
                answer(&Answer::Failed(StartError::io(
                    Step::Monitor,
                    "cannot write state.json",
                    e,
                )));
                // SAFETY: signalling the child we created.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            } else {
                answer(&Answer::Started { pid });
            }
            redirect_to_null(1);
            // Everything start() parsed is freed; give the pages back, since this process
            // lives as long as the container.
            // SAFETY: malloc_trim only releases free heap memory.
            unsafe { libc::malloc_trim(0) };
            let cgroup = started.cgroup.clone();
            let exit = supervise(dir, started, listener, control);
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
        Err(e) => {
            let exit = Exited {
                exit_code: e.code,
                finished_at: now(),
                oom_killed: false,
                error: Some(e.to_string()),
            };
            let _ = write_json(&dir.join("exit.json"), &exit);
            answer(&Answer::Failed(e));
            0
        }
    }
}

/// Writes the start's answer line to stdout, where the daemon waits for it. A daemon
/// that died meanwhile reads nothing: the error is ignored (the state and exit files are
/// what a restarted daemon reads), and nothing here can panic.
pub fn answer(answer: &Answer) {
    let mut bytes = answer.to_line().into_bytes();
    bytes.push(b'\n');
    let mut rest = bytes.as_slice();
    while !rest.is_empty() {
        match rustix::io::write(rustix::stdio::stdout(), rest) {
            Ok(0) => return,
            Ok(n) => rest = &rest[n..],
            Err(rustix::io::Errno::INTR) => {}
            Err(_) => return,
        }
    }
}

/// How long a container's output waits for the client that said it would attach.
pub const HOLD_FOR_ATTACH: std::time::Duration = std::time::Duration::from_secs(10);

/// How often at most an idle monitor gives back the file pages it touched.
const RELEASE_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

/// Unmaps the pages of the binary and libraries the monitor has touched: its start
/// (reading the spec, cgroups, cloning) runs far more code than copying output does, and
/// the pages stay mapped, counted in its RSS, until released. Called when the monitor is
/// about to sleep; what it runs next faults back in from the page cache. Only pages that
/// are the file's own are released (text, read-only data, the unwritten part of the
/// relocated data): the file holds exactly what they map, so nothing is lost.
fn release_file_pages() {
    let Ok(smaps) = std::fs::read_to_string("/proc/self/smaps") else {
        return;
    };
    // Found first, released after, so that parsing does not fault released pages back.
    let mut whole = Vec::new();
    let mut mixed = Vec::new();
    let mut candidate: Option<(usize, usize)> = None;
    for line in smaps.lines() {
        if let Some(amount) = line.strip_prefix("Anonymous:") {
            if let Some(range) = candidate.take() {
                match amount.split_whitespace().next() {
                    Some("0") => whole.push(range),
                    Some(_) => mixed.push(range),
                    None => {}
                }
            }
            continue;
        }
        let mut fields = line.split_whitespace();
        let Some((start, end)) = fields.next().and_then(|f| f.split_once('-')) else {
            continue;
        };
        let (Ok(start), Ok(end)) = (
            usize::from_str_radix(start, 16),
            usize::from_str_radix(end, 16),
        ) else {
            continue; // a field line
        };
        let perms = fields.next().unwrap_or("");
        let path = fields.nth(3).unwrap_or("");
        let private_read_only = perms.len() == 4 && &perms[1..2] == "-" && perms.ends_with('p');
        candidate = (private_read_only && path.starts_with('/')).then_some((start, end));
    }
    // In a mapping holding private copies (relocated data), only the pages that are still
    // the file's go: /proc/self/pagemap tells, bit 63 present, bit 61 file page.
    if let Ok(pagemap) = File::open("/proc/self/pagemap") {
        use std::os::unix::fs::FileExt;
        for (start, end) in mixed {
            let pages = (end - start) / 4096;
            let mut raw = vec![0u8; pages * 8];
            if pagemap
                .read_exact_at(&mut raw, (start / 4096 * 8) as u64)
                .is_err()
            {
                continue;
            }
            for (i, entry) in raw.chunks_exact(8).enumerate() {
                let e = u64::from_ne_bytes(entry.try_into().unwrap_or_default());
                if e >> 63 == 1 && (e >> 61) & 1 == 1 {
                    whole.push((start + i * 4096, start + (i + 1) * 4096));
                }
            }
        }
    }
    for (start, end) in whole {
        // SAFETY: a range of read-only private file pages of this process, none of them a
        // private copy: MADV_DONTNEED drops their page table entries only, and the next
        // access maps the same file page again. rustix makes the system call inline, so
        // releasing libc's pages does not fault them back at once.
        unsafe {
            let _ = rustix::mm::madvise(
                start as *mut std::ffi::c_void,
                end - start,
                rustix::mm::Advice::LinuxDontNeed,
            );
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
    /// What the container writes: stdout and stderr pipes, or the terminal's master.
    outputs: Vec<(OwnedFd, u8)>,
    /// Where attached clients' input goes: a pipe, or the terminal's master.
    stdin: Option<OwnedFd>,
    /// The terminal's master, for resizing.
    tty: Option<OwnedFd>,
}

fn runc(dir: &Path) -> std::process::Command {
    let mut c = std::process::Command::new("runc");
    c.arg("--root").arg(dir.join("runc"));
    c
}

/// Runs the bundle with runc (`--runtime runc`): `runc run --keep`, so the cgroup outlives
/// the process long enough to read whether the OOM killer struck.
fn start_runc(dir: &Path, config: &MonitorConfig, cgroup: Cgroup) -> Result<Started, StartError> {
    use std::os::fd::FromRawFd;
    let (out_r, out_w) = pipe().map_err(|e| StartError::io(Step::Stdio, "pipe", e))?;
    let (err_r, err_w) = pipe().map_err(|e| StartError::io(Step::Stdio, "pipe", e))?;
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
            StartError::io(
                Step::Runc,
                "cannot run runc (install it with apt-get install runc)",
                e,
            )
        })?;
    loop {
        if let Some(pid) = std::fs::read_to_string(&pid_file)
            .ok()
            .and_then(|s| s.trim().parse::<i32>().ok())
        {
            return Ok(Started {
                pid,
                waited: child.id() as i32,
                cgroup,
                outputs: vec![(out_r, attach::STDOUT), (err_r, attach::STDERR)],
                stdin: None,
                tty: None,
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
            // runc's own code: 125 when it failed, the command's (126, 127) when that
            // could not run.
            let code = status.code().unwrap_or(125);
            let kind = if code == 125 {
                ErrorKind::Host
            } else {
                ErrorKind::Invalid
            };
            return Err(StartError {
                code,
                ..StartError::new(kind, Step::Runc, "runc failed")
                    .with_detail(String::from_utf8_lossy(&msg).trim())
            });
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}

fn start(dir: &Path) -> Result<Started, StartError> {
    let spec = Spec::load(dir.join("config.json")).map_err(|e| {
        StartError::new(ErrorKind::Host, Step::Bundle, "cannot read config.json")
            .with_detail(e.to_string())
    })?;
    let config: MonitorConfig = read_json(&dir.join("monitor.json")).ok_or_else(|| {
        StartError::new(ErrorKind::Host, Step::Bundle, "cannot read monitor.json")
    })?;
    let cgroup = Cgroup::of_spec(&spec, &config.id);
    if config.runtime == "runc" {
        return start_runc(dir, &config, cgroup);
    }
    if config.runtime == crate::vm_start::RUNTIME {
        create_cgroup(&spec, &cgroup)?;
        return crate::vm_start::start(dir, &config, &cgroup)
            .map(|s| Started {
                pid: s.pid,
                waited: s.pid,
                cgroup: cgroup.clone(),
                outputs: s.outputs,
                stdin: s.stdin,
                tty: s.tty,
            })
            .inspect_err(|_| {
                let _ = cgroup.remove();
            });
    }
    create_cgroup(&spec, &cgroup)?;
    // Controller names with the container's group in each.
    let cgroup_v1: Vec<(String, std::path::PathBuf)> = match cgroup.layout {
        Layout::V1 => cgroup.dirs.clone(),
        Layout::V2 => vec![],
    };
    let fail_early = |e: StartError| {
        let _ = cgroup.remove();
        e
    };

    let Stdio {
        mut outputs,
        child_stdio,
        mut stdin,
        console,
    } = open_stdio(&config).map_err(fail_early)?;
    let (go_r, go_w) = pipe().map_err(|e| fail_early(StartError::io(Step::Stdio, "pipe", e)))?;
    let (fail_r, fail_w) =
        pipe().map_err(|e| fail_early(StartError::io(Step::Stdio, "pipe", e)))?;

    let flags = clone_flags(&spec);
    // `--ipc container:NAME`: that container's /dev/shm, cloned from its mount namespace,
    // and its IPC namespace, which the init inherits from this monitor.
    let foreign = ForeignMounts::clone_for(&spec).map_err(fail_early)?;
    if let Some(path) = crate::init::namespace_path(&spec, LinuxNamespaceType::Ipc) {
        if let Err(e) = crate::init::join_namespace(
            path,
            rustix::thread::LinkNameSpaceType::InterProcessCommunication,
            "IPC",
        ) {
            return Err(fail_early(e));
        }
    }
    // `--pid container:NAME`: the init is cloned into that container's PID namespace,
    // which this (single-threaded) monitor joins for its children first.
    if let Some(path) = crate::init::namespace_path(&spec, LinuxNamespaceType::Pid) {
        if let Err(e) =
            crate::init::join_namespace(path, rustix::thread::LinkNameSpaceType::ProcessID, "PID")
        {
            return Err(fail_early(e));
        }
    }
    let id_maps = (flags & libc::CLONE_NEWUSER as libc::c_ulong != 0).then(|| {
        let linux = spec.linux().clone().unwrap_or_default();
        let uids = linux.uid_mappings().clone().unwrap_or_default();
        let gids = linux.gid_mappings().clone().unwrap_or_default();
        (uids, gids)
    });
    if let Some((uids, gids)) = &id_maps {
        if let Err(e) = enter_user_namespace_setup(&spec, &config, uids, gids) {
            return Err(fail_early(e));
        }
    }
    // The daemon's compiled filter, if it left one and it is whole; else init compiles.
    let seccomp = crate::seccomp::read_compiled(dir);
    if let Err(e) = LogWriter::open(
        &dir.join("container.log"),
        config.log_max_bytes,
        config.log_max_files,
    ) {
        return Err(fail_early(StartError::io(
            Step::Log,
            "cannot open the log",
            e,
        )));
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
        return Err(fail_early(StartError::io(
            Step::Namespaces,
            "cannot create the container's namespaces",
            io::Error::last_os_error(),
        )));
    }
    if pid == 0 {
        let theirs = console.map(|(_, t)| t);
        child(
            &spec,
            seccomp.as_deref(),
            &cgroup_v1,
            (go_r, fail_w),
            child_stdio,
            theirs,
            foreign,
        );
    }
    drop((go_r, fail_w, child_stdio));
    let console = console.map(|(ours, _)| ours);
    if let Some((uids, gids)) = &id_maps {
        if let Err(e) = crate::userns::write_maps(pid, uids, gids) {
            kill_child(pid);
            return Err(fail_early(StartError::io(
                Step::Namespaces,
                "user namespace",
                e,
            )));
        }
    }
    if let Err(e) = cgroup.add(pid) {
        kill_child(pid);
        return Err(fail_early(StartError::cgroup(e)));
    }
    let_go(pid, &cgroup, go_w, fail_r)?;
    let mut tty = None;
    if let Some(sock) = console {
        let master = receive_fd(&sock).map_err(|e| {
            StartError::io(Step::Terminal, "cannot receive the container's terminal", e)
        })?;
        let dup = master
            .try_clone()
            .map_err(|e| StartError::io(Step::Terminal, "dup", e))?;
        let resize = master
            .try_clone()
            .map_err(|e| StartError::io(Step::Terminal, "dup", e))?;
        outputs.push((master, attach::STDOUT));
        stdin = Some(dup);
        tty = Some(resize);
    }
    Ok(Started {
        pid,
        waited: pid,
        cgroup,
        outputs,
        stdin,
        tty,
    })
}

/// Creates the container's cgroup with its limits; refuses one that still holds
/// processes.
fn create_cgroup(spec: &Spec, cgroup: &Cgroup) -> Result<(), StartError> {
    let resources = spec.linux().as_ref().and_then(|l| l.resources().clone());
    cgroup
        .create(resources.as_ref())
        .map_err(StartError::cgroup)?;
    // A container runs alone in its cgroup: processes left there by an earlier run
    // (whose monitor died) are refused, never joined by a second init.
    let left = cgroup.pids();
    if !left.is_empty() {
        return Err(StartError::new(
            ErrorKind::Conflict,
            Step::Cgroup,
            format!(
                "the container's cgroup still holds processes of an earlier run (pids {left:?}); \
                 restart the daemon, which kills them, or remove the container with rm -f"
            ),
        ));
    }
    Ok(())
}

/// The container's stdio as made before the clone.
pub(crate) struct Stdio {
    /// The monitor's ends of stdout and stderr.
    pub(crate) outputs: Vec<(OwnedFd, u8)>,
    /// The init's stdin, stdout and stderr (`None`: /dev/null).
    pub(crate) child_stdio: Vec<Option<OwnedFd>>,
    /// The monitor's end of stdin.
    pub(crate) stdin: Option<OwnedFd>,
    /// The socket pair over which the init sends its terminal's master: ours, theirs.
    pub(crate) console: Option<(OwnedFd, OwnedFd)>,
}

/// Stdio: a terminal made by the container's init, or pipes.
pub(crate) fn open_stdio(config: &MonitorConfig) -> Result<Stdio, StartError> {
    let mut outputs = Vec::new();
    let mut child_stdio: Vec<Option<OwnedFd>> = vec![None, None, None];
    let mut stdin = None;
    let mut console = None;
    if config.tty {
        let (ours, theirs) = rustix::net::socketpair(
            rustix::net::AddressFamily::UNIX,
            rustix::net::SocketType::STREAM,
            rustix::net::SocketFlags::CLOEXEC,
            None,
        )
        .map_err(|e| StartError::errno(Step::Stdio, "socketpair", e))?;
        console = Some((ours, theirs));
    } else {
        let (out_r, out_w) = pipe().map_err(|e| StartError::io(Step::Stdio, "pipe", e))?;
        let (err_r, err_w) = pipe().map_err(|e| StartError::io(Step::Stdio, "pipe", e))?;
        outputs.push((out_r, attach::STDOUT));
        outputs.push((err_r, attach::STDERR));
        child_stdio[1] = Some(out_w);
        child_stdio[2] = Some(err_w);
        if config.stdin {
            let (in_r, in_w) = pipe().map_err(|e| StartError::io(Step::Stdio, "pipe", e))?;
            child_stdio[0] = Some(in_r);
            stdin = Some(in_w);
        }
    }
    Ok(Stdio {
        outputs,
        child_stdio,
        stdin,
        console,
    })
}

/// The clone flags for the namespaces the spec asks to create (not those it joins).
fn clone_flags(spec: &Spec) -> libc::c_ulong {
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
            LinuxNamespaceType::User => libc::CLONE_NEWUSER,
            _ => 0, // cgroup: unshared by init after it joins its cgroup
        } as libc::c_ulong;
    }
    flags
}

/// Kills and reaps the init we just cloned, which is not to run.
fn kill_child(pid: i32) {
    // SAFETY: killing and reaping the child we just created.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
        libc::waitpid(pid, std::ptr::null_mut(), 0);
    }
}

/// Lets the init (in its cgroup) go and waits for its exec; the init's error if it
/// failed, after reaping it and removing the cgroup.
fn let_go(pid: i32, cgroup: &Cgroup, go_w: OwnedFd, fail_r: OwnedFd) -> Result<(), StartError> {
    let mut go = File::from(go_w);
    let _ = go.write_all(b"g");
    drop(go);
    // The fail pipe closes on a successful exec (CLOEXEC); a StartError (JSON) means it
    // failed.
    let mut msg = Vec::new();
    let _ = File::from(fail_r).read_to_end(&mut msg);
    if !msg.is_empty() {
        let mut status = 0;
        // SAFETY: reaping our child.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        let _ = cgroup.remove();
        return Err(serde_json::from_slice(&msg).unwrap_or_else(|_| {
            StartError::new(
                ErrorKind::Host,
                Step::Namespaces,
                "the container's init failed without a readable reason",
            )
            .with_detail(String::from_utf8_lossy(&msg))
        }));
    }
    Ok(())
}

fn receive_fd(sock: &OwnedFd) -> io::Result<OwnedFd> {
    let mut space = [std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = rustix::net::RecvAncillaryBuffer::new(&mut space);
    let mut byte = [0u8; 1];
    rustix::net::recvmsg(
        sock,
        &mut [io::IoSliceMut::new(&mut byte)],
        &mut control,
        rustix::net::RecvFlags::CMSG_CLOEXEC,
    )?;
    for msg in control.drain() {
        if let rustix::net::RecvAncillaryMessage::ScmRights(mut fds) = msg {
            if let Some(fd) = fds.next() {
                return Ok(fd);
            }
        }
    }
    Err(io::Error::other("no descriptor came with the message"))
}

/// What a container in a user namespace needs before its init is cloned: the rootfs
/// mounted again through ID-mapped layers, and the network namespace given by path joined
/// here (the host owns it, so the init could not join it from its own user namespace).
fn enter_user_namespace_setup(
    spec: &Spec,
    config: &MonitorConfig,
    uids: &[oci_spec::runtime::LinuxIdMapping],
    gids: &[oci_spec::runtime::LinuxIdMapping],
) -> Result<(), StartError> {
    let userns = |e| StartError::io(Step::Namespaces, "user namespace", e);
    let (Some(root_uid), Some(root_gid)) = (
        crate::userns::host_root(uids),
        crate::userns::host_root(gids),
    ) else {
        return Err(StartError::new(
            ErrorKind::Invalid,
            Step::Namespaces,
            "user namespace: the mappings must map the container's root (ID 0)",
        ));
    };
    if let (Some(dirs), Some(root)) = (&config.overlay, spec.root()) {
        let ns = crate::userns::mapping_fd(uids, gids).map_err(userns)?;
        crate::userns::mount_rootfs(root.path(), dirs, &ns, root_uid, root_gid).map_err(userns)?;
    }
    if let Some(path) = crate::init::network_namespace_path(spec) {
        crate::init::join_network_namespace(path)?;
        // Raw sockets need CAP_NET_RAW where the host owns the namespace, which the
        // container's root lacks; ICMP echo sockets need only this, as Docker sets it.
        std::fs::write("/proc/sys/net/ipv4/ping_group_range", "0 2147483647").map_err(|e| {
            StartError::io(Step::Namespaces, "allow ping in the network namespace", e)
        })?;
    }
    Ok(())
}

/// The cloned child: wire stdio, wait for the cgroup, set up, exec.
fn child(
    spec: &Spec,
    seccomp: Option<&[crate::seccomp::Insn]>,
    cgroup_v1: &[(String, std::path::PathBuf)],
    (go, fail): (OwnedFd, OwnedFd),
    stdio: Vec<Option<OwnedFd>>,
    console: Option<OwnedFd>,
    foreign: ForeignMounts,
) -> ! {
    for (fd, src) in stdio.iter().enumerate() {
        match src {
            // SAFETY: valid fds; dup2 onto stdio.
            Some(s) => unsafe {
                libc::dup2(s.as_raw_fd(), fd as i32);
            },
            None => redirect_to_null(fd as RawFd),
        }
    }
    drop(stdio);
    let mut b = [0u8; 1];
    if !matches!(File::from(go).read(&mut b), Ok(1)) {
        // The monitor died before letting us go (and before moving us into the
        // cgroup): nobody would watch this container. Never start it.
        // SAFETY: leaving the child without running the parent's destructors.
        unsafe { libc::_exit(125) }
    }
    let e = crate::init::run(spec, cgroup_v1, console, seccomp, foreign);
    let mut f = File::from(fail);
    if let Ok(json) = serde_json::to_vec(&e) {
        let _ = f.write_all(&json);
    }
    // SAFETY: leaving the child without running the parent's destructors.
    unsafe { libc::_exit(e.code) }
}

/// An attached client of the monitor's socket.
struct Client {
    sock: std::os::unix::net::UnixStream,
    inbuf: Vec<u8>,
    outbuf: Vec<u8>,
    /// A client of the control socket: requests and answers, no output.
    control: bool,
}

/// Sends `signal` to the process behind `pidfd`; 0 or the errno.
fn send_signal(pidfd: Option<&OwnedFd>, exited: bool, signal: i32) -> i32 {
    let Some(fd) = pidfd.filter(|_| !exited) else {
        return libc::ESRCH;
    };
    // SAFETY: pidfd_send_signal with a pidfd we own, no siginfo, no flags.
    let r = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            fd.as_raw_fd(),
            signal,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    if r < 0 {
        io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EIO)
    } else {
        0
    }
}

/// Output buffered for clients that do not read; past this they are dropped.
const CLIENT_BUFFER: usize = 4 << 20;
/// Input held for a container that is slow to read it.
const STDIN_BUFFER: usize = 1 << 20;
/// Output kept for the first client to attach.
const REPLAY_BUFFER: usize = 256 << 10;

fn set_nonblocking(fd: RawFd) {
    // SAFETY: fcntl on a descriptor we own.
    unsafe {
        libc::fcntl(
            fd,
            libc::F_SETFL,
            libc::fcntl(fd, libc::F_GETFL) | libc::O_NONBLOCK,
        )
    };
}

fn pollfd(fd: RawFd, events: libc::c_short) -> libc::pollfd {
    libc::pollfd {
        fd,
        events,
        revents: 0,
    }
}

/// Copies output to the log and to attached clients, passes their input on, until the
/// container has exited and its output is drained.
fn supervise(
    dir: &Path,
    started: Started,
    listener: Option<std::os::unix::net::UnixListener>,
    control: Option<std::os::unix::net::UnixListener>,
) -> Exited {
    let mut s = Supervisor::new(dir, started, listener, control);
    while s.running() {
        if s.status.is_some() && s.streams.is_empty() && s.exited_at.is_none() {
            s.exited_at = Some(std::time::Instant::now());
        }
        let mut set = s.poll_set();
        let n = s.poll(&mut set);
        if n < 0 && io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
            break;
        }
        s.read_outputs(&set);
        s.accept_clients(&set);
        let gone = s.serve_clients(&set);
        s.feed_stdin(&set);
        if s.close_stdin && s.pending_in.is_empty() {
            s.stdin = None;
            s.close_stdin = false;
        }
        s.drop_clients(gone);
        s.reap();
        s.unblock_orphaned_streams();
    }
    s.finish(dir)
}

/// What the monitor holds while it supervises a container: the container's output
/// streams and processes, the attached clients, and the input on its way in.
struct Supervisor {
    /// The container's init, held for signals (under runc, `waited` is runc itself).
    init_pidfd: Option<OwnedFd>,
    /// The process whose exit ends the container.
    waited: i32,
    /// `waited` as a pidfd, polled for its exit.
    pidfd: Option<OwnedFd>,
    cgroup: Cgroup,
    log: Option<LogWriter>,
    /// The container's output: descriptor, stream kind, the line read so far.
    streams: Vec<(OwnedFd, u8, Vec<u8>)>,
    listener: Option<std::os::unix::net::UnixListener>,
    control: Option<std::os::unix::net::UnixListener>,
    clients: Vec<Client>,
    /// Output kept for the first client to attach, until it comes.
    replay: Option<Vec<u8>>,
    /// Input waiting for the container to read it. The monitor never blocks on a
    /// container that does not read: it stops reading clients' input instead.
    pending_in: Vec<u8>,
    close_stdin: bool,
    stdin: Option<OwnedFd>,
    tty: Option<OwnedFd>,
    buf: Vec<u8>,
    /// How `waited` ended, once it has.
    status: Option<i32>,
    released_at: Option<std::time::Instant>,
    /// A client was promised the output (`run -t`).
    hold: bool,
    /// When the container had exited and its output was drained.
    exited_at: Option<std::time::Instant>,
}

/// One round's poll array and where each kind of descriptor sits in it.
struct PollSet {
    fds: Vec<libc::pollfd>,
    n_streams: usize,
    listener_at: Option<usize>,
    control_at: Option<usize>,
    clients_at: usize,
    stdin_at: Option<usize>,
    pidfd_at: Option<usize>,
}

/// The log's name for an output stream.
fn stream_name(kind: u8) -> &'static str {
    if kind == attach::STDERR {
        "stderr"
    } else {
        "stdout"
    }
}

impl Supervisor {
    /// Opens the log and the pidfds and readies the descriptors of a started container.
    fn new(
        dir: &Path,
        started: Started,
        listener: Option<std::os::unix::net::UnixListener>,
        control: Option<std::os::unix::net::UnixListener>,
    ) -> Self {
        let Started {
            pid: init_pid,
            waited,
            cgroup,
            outputs,
            stdin,
            tty,
        } = started;
        let init_pidfd = rustix::process::Pid::from_raw(init_pid).and_then(|p| {
            rustix::process::pidfd_open(p, rustix::process::PidfdFlags::empty()).ok()
        });
        let config: Option<MonitorConfig> = read_json(&dir.join("monitor.json"));
        let (max, files) = config
            .as_ref()
            .map_or((10 << 20, 2), |c| (c.log_max_bytes, c.log_max_files));
        let no_log = config.as_ref().is_some_and(|c| c.no_log);
        let log = (!no_log)
            .then(|| LogWriter::open(&dir.join("container.log"), max, files).ok())
            .flatten();
        let streams: Vec<(OwnedFd, u8, Vec<u8>)> = outputs
            .into_iter()
            .map(|(fd, k)| (fd, k, Vec::new()))
            .collect();
        for l in listener.iter().chain(control.iter()) {
            let _ = l.set_nonblocking(true);
        }
        if let Some(s) = &stdin {
            set_nonblocking(s.as_raw_fd());
        }
        let buf = vec![0u8; 64 * 1024];
        let pidfd = rustix::process::pidfd_open(
            rustix::process::Pid::from_raw(waited).expect("positive pid"),
            rustix::process::PidfdFlags::empty(),
        )
        .ok();
        Supervisor {
            init_pidfd,
            waited,
            pidfd,
            cgroup,
            log,
            streams,
            listener,
            control,
            clients: Vec::new(),
            replay: Some(Vec::new()),
            pending_in: Vec::new(),
            close_stdin: false,
            stdin,
            tty,
            buf,
            status: None,
            released_at: None,
            // A client waiting for this start to attach (and nothing in a log for it):
            // held for it once, as `hold_for_attach` holds for every start.
            hold: config.as_ref().is_some_and(|c| c.hold_for_attach)
                || std::fs::remove_file(dir.join(crate::state::ATTACH_PENDING)).is_ok(),
            exited_at: None,
        }
    }

    /// Whether there is more to do: output to drain, an exit to wait for, or a
    /// promised client to wait for.
    fn running(&self) -> bool {
        !self.streams.is_empty() || self.status.is_none() || self.holding()
    }

    /// A client was promised the output (`run -t`): a container faster than its attach
    /// waits here for it (the replay buffer is still ours while no client came).
    fn holding(&self) -> bool {
        self.hold
            && self.replay.is_some()
            && self.exited_at.is_none_or(|t| t.elapsed() < HOLD_FOR_ATTACH)
    }

    /// The descriptors to wait on this round.
    fn poll_set(&self) -> PollSet {
        let mut fds: Vec<libc::pollfd> = self
            .streams
            .iter()
            .map(|(fd, _, _)| pollfd(fd.as_raw_fd(), libc::POLLIN))
            .collect();
        let n_streams = fds.len();
        let listener_at = self.listener.as_ref().map(|l| {
            fds.push(pollfd(l.as_raw_fd(), libc::POLLIN));
            fds.len() - 1
        });
        let control_at = self.control.as_ref().map(|l| {
            fds.push(pollfd(l.as_raw_fd(), libc::POLLIN));
            fds.len() - 1
        });
        let clients_at = fds.len();
        let input_full = self.pending_in.len() >= STDIN_BUFFER;
        for c in &self.clients {
            let read = if input_full { 0 } else { libc::POLLIN };
            let write = if c.outbuf.is_empty() {
                0
            } else {
                libc::POLLOUT
            };
            fds.push(pollfd(c.sock.as_raw_fd(), read | write));
        }
        let stdin_at = match (&self.stdin, self.pending_in.is_empty()) {
            (Some(s), false) => {
                fds.push(pollfd(s.as_raw_fd(), libc::POLLOUT));
                Some(fds.len() - 1)
            }
            _ => None,
        };
        let pidfd_at = match (&self.pidfd, self.status) {
            (Some(p), None) => {
                fds.push(pollfd(p.as_raw_fd(), libc::POLLIN));
                Some(fds.len() - 1)
            }
            _ => None,
        };
        PollSet {
            fds,
            n_streams,
            listener_at,
            control_at,
            clients_at,
            stdin_at,
            pidfd_at,
        }
    }

    /// Waits for something to do, giving file pages back before going to sleep; returns
    /// what poll returned (errno is poll's when negative).
    fn poll(&mut self, set: &mut PollSet) -> i32 {
        let fds = &mut set.fds;
        // Without a pidfd, or with output still draining, wake up now and then.
        let timeout = if set.pidfd_at.is_some() { -1 } else { 100 };
        let mut n = -1;
        if self
            .released_at
            .is_none_or(|t| t.elapsed() >= RELEASE_EVERY)
        {
            // SAFETY: `fds` is a valid array of pollfd for its length.
            n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, 0) };
            if n == 0 {
                // Nothing to do: the monitor is going to sleep.
                release_file_pages();
                self.released_at = Some(std::time::Instant::now());
            }
        }
        if n <= 0 {
            // SAFETY: as above.
            n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout) };
        }
        n
    }

    /// Output from the container: to the clients, the replay buffer and the log.
    fn read_outputs(&mut self, set: &PollSet) {
        let fds = &set.fds;
        let buf = &mut self.buf;
        let mut closed = Vec::new();
        for (i, (fd, kind, partial)) in self.streams.iter_mut().enumerate().take(set.n_streams) {
            if fds[i].revents == 0 {
                continue;
            }
            // SAFETY: reading into our buffer from an fd we own.
            let r = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if r <= 0 {
                // EIO: a terminal whose every slave is closed. EAGAIN: a terminal's master
                // shares its non-blocking flag with the input side.
                let kind = io::Error::last_os_error().kind();
                if r == 0 || !matches!(kind, io::ErrorKind::Interrupted | io::ErrorKind::WouldBlock)
                {
                    closed.push(i);
                }
                continue;
            }
            let data = &buf[..r as usize];
            let f = attach::frame(*kind, data);
            for c in self.clients.iter_mut().filter(|c| !c.control) {
                c.outbuf.extend_from_slice(&f);
            }
            if let Some(rp) = self.replay.as_mut() {
                if rp.len() + f.len() <= REPLAY_BUFFER {
                    rp.extend_from_slice(&f);
                }
            }
            let name = stream_name(*kind);
            partial.extend_from_slice(data);
            while let Some(pos) = partial.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = partial.drain(..=pos).collect();
                if let Some(l) = self.log.as_mut() {
                    let _ = l.write(name, &line);
                }
            }
            if partial.len() >= 16 * 1024 {
                if let Some(l) = self.log.as_mut() {
                    let _ = l.write(name, partial);
                }
                partial.clear();
            }
        }
        for i in closed.into_iter().rev() {
            let (_, kind, partial) = self.streams.remove(i);
            if !partial.is_empty() {
                if let Some(l) = self.log.as_mut() {
                    let _ = l.write(stream_name(kind), &partial);
                }
            }
        }
    }

    /// New clients; the first one gets what was written before it came.
    fn accept_clients(&mut self, set: &PollSet) {
        if let (Some(l), Some(i)) = (&self.listener, set.listener_at) {
            if set.fds[i].revents != 0 {
                while let Ok((sock, _)) = l.accept() {
                    let _ = sock.set_nonblocking(true);
                    let outbuf = self.replay.take().unwrap_or_default();
                    self.clients.push(Client {
                        sock,
                        inbuf: Vec::new(),
                        outbuf,
                        control: false,
                    });
                }
            }
        }
        if let (Some(l), Some(i)) = (&self.control, set.control_at) {
            if set.fds[i].revents != 0 {
                while let Ok((sock, _)) = l.accept() {
                    let _ = sock.set_nonblocking(true);
                    self.clients.push(Client {
                        sock,
                        inbuf: Vec::new(),
                        outbuf: Vec::new(),
                        control: true,
                    });
                }
            }
        }
    }

    /// Clients: input in, output out; returns the indices of clients that are gone.
    fn serve_clients(&mut self, set: &PollSet) -> Vec<usize> {
        let mut clients = std::mem::take(&mut self.clients);
        let mut gone = Vec::new();
        for (j, c) in clients.iter_mut().enumerate() {
            let Some(pfd) = set.fds.get(set.clients_at + j) else {
                continue;
            };
            if pfd.revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0 {
                match c.sock.read(&mut self.buf) {
                    Ok(0) => {
                        gone.push(j);
                        continue;
                    }
                    Ok(k) => c.inbuf.extend_from_slice(&self.buf[..k]),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(_) => {
                        gone.push(j);
                        continue;
                    }
                }
                match attach::parse(&mut c.inbuf) {
                    Ok(frames) => {
                        for (kind, payload) in frames {
                            self.on_frame(c, kind, &payload);
                        }
                    }
                    Err(_) => gone.push(j),
                }
            }
            if !c.outbuf.is_empty() {
                match c.sock.write(&c.outbuf) {
                    Ok(k) => {
                        c.outbuf.drain(..k);
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(_) => gone.push(j),
                }
            }
            if c.outbuf.len() > CLIENT_BUFFER {
                gone.push(j);
            }
        }
        self.clients = clients;
        gone
    }

    /// Acts on one frame from client `c`: input, a resize, closing input, a signal.
    fn on_frame(&mut self, c: &mut Client, kind: u8, payload: &[u8]) {
        match kind {
            attach::STDIN if self.stdin.is_some() => self.pending_in.extend_from_slice(payload),
            attach::RESIZE => {
                if let Some(t) = &self.tty {
                    attach::apply_resize(std::os::fd::AsFd::as_fd(t), payload);
                }
            }
            // A terminal's input cannot be closed apart from its output.
            attach::CLOSE_STDIN if self.tty.is_none() => self.close_stdin = true,
            attach::SIGNAL if c.control => {
                let errno = match <[u8; 4]>::try_from(payload) {
                    Ok(b) => send_signal(
                        self.init_pidfd.as_ref(),
                        self.status.is_some(),
                        i32::from_be_bytes(b),
                    ),
                    Err(_) => libc::EINVAL,
                };
                c.outbuf
                    .extend_from_slice(&attach::frame(attach::SIGNALED, &errno.to_be_bytes()));
            }
            _ => {}
        }
    }

    /// Input to the container, as much as it takes now.
    fn feed_stdin(&mut self, set: &PollSet) {
        if let (Some(s), Some(i)) = (&self.stdin, set.stdin_at) {
            if set.fds[i].revents & libc::POLLOUT != 0 {
                let pending_in = &mut self.pending_in;
                // SAFETY: writing from our buffer to a non-blocking fd we own.
                let w = unsafe {
                    libc::write(s.as_raw_fd(), pending_in.as_ptr().cast(), pending_in.len())
                };
                if w > 0 {
                    pending_in.drain(..w as usize);
                } else if w < 0 && io::Error::last_os_error().kind() != io::ErrorKind::WouldBlock {
                    pending_in.clear(); // the reader is gone
                    self.close_stdin = true;
                }
            }
        }
    }

    /// Forgets the clients at the indices in `gone`.
    fn drop_clients(&mut self, mut gone: Vec<usize>) {
        gone.sort_unstable();
        gone.dedup();
        for j in gone.into_iter().rev() {
            self.clients.remove(j);
        }
    }

    /// Reaps everything that ended; notes the container's end.
    fn reap(&mut self) {
        loop {
            let mut st = 0;
            // SAFETY: waitpid on any child, non-blocking.
            let r = unsafe { libc::waitpid(-1, &mut st, libc::WNOHANG) };
            if r <= 0 {
                break;
            }
            if r == self.waited {
                self.status = Some(st);
            }
        }
    }

    /// The init is gone but something still holds the pipes: in a pid namespace the
    /// kernel kills the rest; once the cgroup is empty, stop waiting on them.
    fn unblock_orphaned_streams(&self) {
        if self.status.is_some() && !self.streams.is_empty() && self.cgroup.pids().is_empty() {
            for (fd, _, _) in &self.streams {
                set_nonblocking(fd.as_raw_fd());
            }
        }
    }

    /// Gives attached clients the rest of the output, hangs up, removes the sockets and
    /// says how the container ended.
    fn finish(self, dir: &Path) -> Exited {
        let Supervisor {
            mut clients,
            status,
            cgroup,
            ..
        } = self;
        for c in &mut clients {
            let _ = c.sock.set_nonblocking(false);
            let _ = c
                .sock
                .set_write_timeout(Some(std::time::Duration::from_secs(2)));
            let _ = c.sock.write_all(&c.outbuf);
        }
        drop(clients);
        let _ = std::fs::remove_file(dir.join("attach.sock"));
        let _ = std::fs::remove_file(dir.join(attach::CONTROL_SOCKET));
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bundle_that_cannot_be_read_is_reported_as_such() {
        let d = tempfile::tempdir().unwrap();
        let Err(e) = start(d.path()) else {
            panic!("an empty directory started a container");
        };
        assert_eq!(
            (e.code, e.kind, e.step),
            (125, ErrorKind::Host, Step::Bundle),
            "{e}"
        );
        assert!(e.to_string().starts_with("cannot read config.json"), "{e}");
        // As the daemon reads it from the monitor's answer.
        let line = Answer::Failed(e.clone()).to_line();
        assert_eq!(Answer::parse(&line), Answer::Failed(e));
    }
}
