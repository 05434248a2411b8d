//! `pier __vm DIR`: the host side of one running VM, in a single-threaded process the
//! instance's monitor runs with the instance's stdio and fd 3, a "ready" pipe.
//!
//! ```text
//! read DIR/vm.json ─ private mount namespace (/ rslave) ─ bind shares into DIR/rootfs
//!  ─ virtiofsd on DIR/rootfs (inherits its listening socket)
//!  ─ [netns: setns, tapN + tc redirects to ethN]
//!  ─ QEMU (cwd DIR; inherits the taps, the agent's and our QMP socketpair ends)
//!  ─ QMP query-kvm → DIR/vm-state.json
//!  Booting ──Ready──> send Run ─> Starting ──Started──> "ok" on fd 3 ─> Running
//!     │ timeout (120 s) / QEMU gone            │ Failed → "err CODE MSG", exit CODE
//!     └─> "err 125 the VM did not boot: <console tail>", exit 125
//!  Running: fd 0 → Stdin; Stdout/Stderr → fd 1/2; TERM INT HUP QUIT USR1 USR2 → Signal;
//!           WINCH → Resize; DIR/vm-exec.sock clients ↔ their own sessions
//!     ──Exit(code)──> Exiting: close the agent's channel (the protocol's "all read": the
//!           guest powers off at once); QEMU ends (after 10 s QMP quit, then SIGKILL) → code
//!     ──QEMU gone──> "the VM stopped without its entrypoint's exit: <tail>", exit 255
//! ```
//!
//! QEMU and virtiofsd die with this process (`PR_SET_PDEATHSIG`, set from this, the only
//! thread), and on every way out it kills and reaps them and removes its sockets; the
//! binds vanish with its mount namespace, the taps with QEMU.
//!
//! The agent's channel is a socketpair (QEMU's end inherited as `-chardev socket,fd=N`):
//! nothing to connect to, retry or leave behind. Writes to it are queued and sent as it
//! drains, so a guest that is busy writing never deadlocks against this process.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use pier_guest::{Decoder, Frame, Kind};

use crate::config::{self, VmConfig, VmState};
use crate::qemu::{QemuCommand, VmFds};
use crate::qmp::Qmp;
use crate::sys::{poll, pollfd, read_fd, write_fd};

/// How long the guest has to say Ready and start its entrypoint.
pub const BOOT_TIMEOUT: Duration = Duration::from_secs(120);
/// How long the guest has to power off after its entrypoint's exit.
pub const POWEROFF_TIMEOUT: Duration = Duration::from_secs(10);
/// Console lines quoted in a boot failure.
const TAIL_LINES: usize = 12;
/// Stop reading input while this much waits to go to the guest.
const HIGH_WATER: usize = 1 << 20;
/// Signals passed on to the entrypoint.
const FORWARDED: [i32; 6] = [
    libc::SIGTERM,
    libc::SIGINT,
    libc::SIGHUP,
    libc::SIGQUIT,
    libc::SIGUSR1,
    libc::SIGUSR2,
];

/// A failure before the entrypoint started: its code and the one-line message.
#[derive(Debug)]
struct Fail(i32, String);

fn fail(msg: impl std::fmt::Display) -> Fail {
    Fail(125, msg.to_string())
}

/// fd 3, the monitor's "ready" pipe: one line, then closed.
struct ReadyPipe(Option<File>);

impl ReadyPipe {
    fn take() -> ReadyPipe {
        // SAFETY: F_GETFD/F_SETFD on fd 3 only ask and set its close-on-exec flag.
        let open = unsafe { libc::fcntl(3, libc::F_SETFD, libc::FD_CLOEXEC) } == 0;
        // SAFETY: fd 3 is open and was handed to this process to own.
        ReadyPipe(open.then(|| unsafe { File::from_raw_fd(3) }))
    }
    fn say(&mut self, line: &str) {
        match self.0.take() {
            Some(mut f) => {
                let _ = f.write_all(format!("{line}\n").as_bytes());
            }
            // Run by hand, without the pipe: only a failure is worth saying.
            None if line.starts_with("err") => eprintln!("pier __vm: {line}"),
            None => {}
        }
    }
}

/// What the VM's processes are; killed, reaped and cleaned on drop.
struct Processes {
    qemu: Option<Child>,
    virtiofsd: Option<Child>,
}

impl Drop for Processes {
    fn drop(&mut self) {
        for c in [self.qemu.take(), self.virtiofsd.take()]
            .into_iter()
            .flatten()
        {
            let mut c = c;
            if matches!(c.try_wait(), Ok(None)) {
                let _ = c.kill();
            }
            let _ = c.wait();
        }
        for s in [
            config::CONSOLE_SOCKET,
            config::QMP_SOCKET,
            config::VIRTIOFSD_SOCKET,
            config::EXEC_SOCKET,
        ] {
            let _ = std::fs::remove_file(s);
        }
    }
}

/// `pier __vm DIR`: runs the VM of `DIR/vm.json`; the entrypoint's exit code.
pub fn main(dir: &Path) -> i32 {
    let mut ready = ReadyPipe::take();
    let mut procs = Processes {
        qemu: None,
        virtiofsd: None,
    };
    let code = match run(dir, &mut ready, &mut procs) {
        Ok(code) => code,
        Err(Fail(code, msg)) => {
            ready.say(&format!("err {code} {}", one_line(&msg)));
            code
        }
    };
    drop(procs);
    code
}

fn one_line(s: &str) -> String {
    s.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" / ")
}

fn console_tail() -> String {
    // The console, else what QEMU and virtiofsd said (they failed before the kernel ran).
    let t = crate::sys::tail(Path::new(config::CONSOLE_LOG), TAIL_LINES);
    if !t.is_empty() {
        return t;
    }
    let q = [config::QEMU_LOG, config::VIRTIOFSD_LOG]
        .map(|f| crate::sys::tail(Path::new(f), TAIL_LINES / 2))
        .into_iter()
        .filter(|t| !t.is_empty())
        .collect::<Vec<_>>()
        .join("\n");
    if q.is_empty() {
        "(the console printed nothing)".into()
    } else {
        q
    }
}

fn run(dir: &Path, ready: &mut ReadyPipe, procs: &mut Processes) -> Result<i32, Fail> {
    let dir = std::fs::canonicalize(dir)
        .map_err(|e| fail(format!("cannot find {}: {e}", dir.display())))?;
    std::env::set_current_dir(&dir)
        .map_err(|e| fail(format!("cannot enter {}: {e}", dir.display())))?;
    let config = VmConfig::load(&dir).map_err(|e| fail(error_chain(&e)))?;
    let signals = Signals::block().map_err(|e| fail(format!("signalfd: {e}")))?;
    private_mounts().map_err(|e| fail(format!("cannot make a private mount namespace: {e}")))?;
    for s in &config.shares {
        bind_share(&dir.join(config::ROOTFS), s).map_err(|e| {
            fail(format!(
                "cannot share {} at {}: {e}",
                s.source.display(),
                s.target
            ))
        })?;
    }
    procs.virtiofsd = Some(start_virtiofsd(&config, &dir)?);
    let taps = match &config.netns {
        Some(ns) => {
            enter_netns(ns).map_err(|e| {
                fail(format!(
                    "cannot enter the network namespace {}: {e}",
                    ns.display()
                ))
            })?;
            crate::net::setup(config.run.nics.len()).map_err(|e| fail(error_chain(&e)))?
        }
        None => Vec::new(),
    };
    let (agent, agent_qemu) = UnixStream::pair().map_err(|e| fail(format!("socketpair: {e}")))?;
    let (qmp, qmp_qemu) = UnixStream::pair().map_err(|e| fail(format!("socketpair: {e}")))?;
    let fds = VmFds {
        agent: agent_qemu.as_raw_fd(),
        qmp: qmp_qemu.as_raw_fd(),
        taps: taps.iter().map(|t| t.fd.as_raw_fd()).collect(),
    };
    let qemu = QemuCommand::for_vm(&config, &fds);
    let mut keep: Vec<RawFd> = vec![fds.agent, fds.qmp];
    keep.extend(&fds.taps);
    // What a previous boot printed must not pass for this one's.
    let _ = std::fs::remove_file(config::CONSOLE_LOG);
    let log = File::create(config::QEMU_LOG)
        .map_err(|e| fail(format!("cannot create {}: {e}", config::QEMU_LOG)))?;
    let mut cmd = Command::new(&qemu.binary);
    cmd.args(qemu.args())
        .current_dir(&dir)
        .stdin(Stdio::null())
        .stdout(log.try_clone().map_err(|e| fail(e.to_string()))?)
        .stderr(log);
    child_setup(&mut cmd, keep);
    let child = cmd
        .spawn()
        .map_err(|e| fail(format!("cannot run {}: {e}", qemu.binary.display())))?;
    drop(cmd); // its copies of the log and /dev/null
    let qemu_pid = child.id();
    procs.qemu = Some(child);
    drop((agent_qemu, qmp_qemu, taps));
    let pidfd = pidfd(qemu_pid).map_err(|e| fail(format!("pidfd_open: {e}")))?;
    let mut qmp = match Qmp::handshake(qmp, Duration::from_secs(30)) {
        Ok(q) => q,
        Err(e) => {
            return Err(fail(format!(
                "the VM did not boot (QEMU did not start: {e}): {}",
                console_tail()
            )))
        }
    };
    if let Ok(k) = qmp.query_kvm() {
        let accel = if k.enabled {
            config::Accel::Kvm
        } else {
            config::Accel::Tcg
        };
        let _ = VmState { accel, qemu_pid }.save(&dir);
    }
    let mut relay = Relay::new(config, agent, signals, pidfd, qmp);
    relay.run(ready, procs)
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// Blocked signals, read from a signalfd.
struct Signals(OwnedFd);

impl Signals {
    fn block() -> io::Result<Signals> {
        // SAFETY: building a signal set in a local and blocking it in this (only) thread.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            for s in FORWARDED.iter().chain(&[libc::SIGWINCH, libc::SIGCHLD]) {
                libc::sigaddset(&mut set, *s);
            }
            libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
            let fd = libc::signalfd(-1, &set, libc::SFD_CLOEXEC | libc::SFD_NONBLOCK);
            if fd < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(Signals(OwnedFd::from_raw_fd(fd)))
        }
    }

    /// The signals waiting, in order.
    fn read(&self) -> Vec<i32> {
        let mut out = Vec::new();
        // SAFETY: signalfd_siginfo is plain data.
        let mut info: libc::signalfd_siginfo = unsafe { std::mem::zeroed() };
        let size = std::mem::size_of::<libc::signalfd_siginfo>();
        loop {
            // SAFETY: reading one siginfo into a buffer of its size.
            let n = unsafe {
                libc::read(
                    self.0.as_raw_fd(),
                    (&mut info as *mut libc::signalfd_siginfo).cast(),
                    size,
                )
            };
            if n as usize != size {
                return out;
            }
            out.push(info.ssi_signo as i32);
        }
    }
}

/// The pre-exec steps of QEMU and virtiofsd: die with this process, default signal
/// mask, and inherit exactly stdio and `keep`.
fn child_setup(cmd: &mut Command, keep: Vec<RawFd>) {
    // SAFETY: the closure only makes async-signal-safe system calls.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) < 0 {
                return Err(io::Error::last_os_error());
            }
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
            libc::syscall(
                libc::SYS_close_range,
                3u32,
                u32::MAX,
                libc::CLOSE_RANGE_CLOEXEC,
            );
            for fd in &keep {
                if libc::fcntl(*fd, libc::F_SETFD, 0) < 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            // The parent may have died before the death signal was armed.
            if libc::getppid() == 1 {
                return Err(io::Error::other("the parent is gone"));
            }
            Ok(())
        })
    };
}

/// A private mount namespace whose mounts no longer propagate back to the host.
fn private_mounts() -> io::Result<()> {
    // SAFETY: this process is single-threaded and shares no file table or fs state
    // with another; a new mount namespace changes nothing Rust relies on.
    unsafe { rustix::thread::unshare_unsafe(rustix::thread::UnshareFlags::NEWNS)? };
    rustix::mount::mount_change(
        "/",
        rustix::mount::MountPropagationFlags::DOWNSTREAM
            | rustix::mount::MountPropagationFlags::REC,
    )?;
    Ok(())
}

/// Binds `share.source` onto `rootfs/<target>`, the target resolved inside `rootfs` by
/// the kernel (`RESOLVE_IN_ROOT`: the image's symlinks cannot lead it out), made
/// when missing (a directory, or a file for a file source).
fn bind_share(rootfs: &Path, share: &config::Share) -> io::Result<()> {
    use rustix::fs::{Mode, OFlags, ResolveFlags};
    let root = rustix::fs::open(
        rootfs,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let src_is_dir = std::fs::metadata(&share.source)?.is_dir();
    let resolve = ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS;
    let mut cur = rustix::fs::openat2(
        &root,
        ".",
        OFlags::PATH | OFlags::CLOEXEC,
        Mode::empty(),
        resolve,
    )?;
    let parts: Vec<&str> = share
        .target
        .split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .collect();
    if parts.is_empty() {
        return Err(io::Error::other(
            "a share cannot replace the root filesystem",
        ));
    }
    for (i, part) in parts.iter().enumerate() {
        let last = i + 1 == parts.len();
        let open = |d: &OwnedFd| {
            rustix::fs::openat2(
                d,
                *part,
                OFlags::PATH | OFlags::CLOEXEC,
                Mode::empty(),
                resolve,
            )
        };
        let next = match open(&cur) {
            Ok(fd) => fd,
            Err(rustix::io::Errno::NOENT) => {
                if last && !src_is_dir {
                    let dir = reopen_dir(&cur)?;
                    drop(rustix::fs::openat(
                        &dir,
                        *part,
                        OFlags::CREATE | OFlags::WRONLY | OFlags::CLOEXEC | OFlags::NOFOLLOW,
                        Mode::from_raw_mode(0o644),
                    )?);
                } else {
                    let dir = reopen_dir(&cur)?;
                    match rustix::fs::mkdirat(&dir, *part, Mode::from_raw_mode(0o755)) {
                        Ok(()) | Err(rustix::io::Errno::EXIST) => {}
                        Err(e) => return Err(e.into()),
                    }
                }
                open(&cur)?
            }
            Err(e) => return Err(e.into()),
        };
        cur = next;
    }
    let target = format!("/proc/self/fd/{}", cur.as_raw_fd());
    rustix::mount::mount_bind_recursive(&share.source, target.as_str())?;
    if share.read_only {
        // Remount the new mount (now at the path the descriptor reached) read-only.
        let at = rustix::fs::openat2(
            &root,
            parts.join("/").as_str(),
            OFlags::PATH | OFlags::CLOEXEC,
            Mode::empty(),
            resolve,
        )?;
        let path = format!("/proc/self/fd/{}", at.as_raw_fd());
        rustix::mount::mount_remount(
            path.as_str(),
            rustix::mount::MountFlags::BIND | rustix::mount::MountFlags::RDONLY,
            "",
        )?;
    }
    Ok(())
}

fn reopen_dir(path_fd: &OwnedFd) -> io::Result<OwnedFd> {
    use rustix::fs::{Mode, OFlags};
    Ok(rustix::fs::open(
        format!("/proc/self/fd/{}", path_fd.as_raw_fd()).as_str(),
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?)
}

/// virtiofsd serving `DIR/rootfs` on a socket this process binds (it inherits the
/// listening socket, so QEMU can connect as soon as it starts).
fn start_virtiofsd(config: &VmConfig, dir: &Path) -> Result<Child, Fail> {
    let _ = std::fs::remove_file(config::VIRTIOFSD_SOCKET);
    let listener = UnixListener::bind(config::VIRTIOFSD_SOCKET).map_err(|e| {
        fail(format!(
            "cannot listen on {}: {e}",
            config::VIRTIOFSD_SOCKET
        ))
    })?;
    let source = dir.join(config::ROOTFS);
    // fuse's option syntax: a comma or backslash in the path is escaped with a backslash.
    let source = source
        .to_string_lossy()
        .replace('\\', "\\\\")
        .replace(',', "\\,");
    let log = File::create(config::VIRTIOFSD_LOG)
        .map_err(|e| fail(format!("cannot create {}: {e}", config::VIRTIOFSD_LOG)))?;
    let mut cmd = Command::new(&config.virtiofsd);
    cmd.arg(format!("--fd={}", listener.as_raw_fd()))
        .arg("-o")
        .arg(format!("source={source}"))
        .args(["-o", "cache=auto", "--rlimit-nofile=0"])
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log);
    child_setup(&mut cmd, vec![listener.as_raw_fd()]);
    cmd.spawn()
        .map_err(|e| fail(format!("cannot run {}: {e}", config.virtiofsd.display())))
}

fn enter_netns(path: &Path) -> io::Result<()> {
    let f = File::open(path)?;
    rustix::thread::move_into_link_name_space(
        std::os::fd::AsFd::as_fd(&f),
        Some(rustix::thread::LinkNameSpaceType::Network),
    )?;
    Ok(())
}

fn pidfd(pid: u32) -> io::Result<OwnedFd> {
    let pid =
        rustix::process::Pid::from_raw(pid as i32).ok_or_else(|| io::Error::other("pid 0"))?;
    Ok(rustix::process::pidfd_open(
        pid,
        rustix::process::PidfdFlags::empty(),
    )?)
}

/// The terminal size of fd 0, when it is a terminal.
fn winsize() -> Option<(u16, u16)> {
    // SAFETY: isatty on fd 0.
    if unsafe { libc::isatty(0) } != 1 {
        return None;
    }
    let ws = rustix::termios::tcgetwinsize(rustix::stdio::stdin()).ok()?;
    Some((ws.ws_row, ws.ws_col))
}

/// With a terminal on fd 0, puts it in raw mode: the guest's own terminal echoes,
/// edits lines and translates newlines; this one must pass bytes through untouched.
fn raw_terminal() {
    let stdin = rustix::stdio::stdin();
    if let Ok(mut t) = rustix::termios::tcgetattr(stdin) {
        t.make_raw();
        let _ = rustix::termios::tcsetattr(stdin, rustix::termios::OptionalActions::Now, &t);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting for the agent's Ready.
    Booting,
    /// Run sent; waiting for Started or Failed.
    Starting,
    Running,
    /// The entrypoint exited with this code; waiting for QEMU to end.
    Exiting(i32),
}

/// An exec client on `vm-exec.sock`.
struct Client {
    stream: UnixStream,
    decoder: Decoder,
    out: Vec<u8>,
    /// Its session, once it sent its Exec.
    session: Option<u32>,
    tty: bool,
    /// Its session ended: close once `out` is written.
    done: bool,
    /// It hung up.
    gone: bool,
}

struct Relay {
    config: VmConfig,
    agent: UnixStream,
    decoder: Decoder,
    to_agent: Vec<u8>,
    agent_open: bool,
    signals: Signals,
    pidfd: OwnedFd,
    qmp: Qmp,
    phase: Phase,
    stdin_open: bool,
    listener: Option<UnixListener>,
    clients: HashMap<u64, Client>,
    next_client: u64,
    next_session: u32,
    deadline: Instant,
    quit_sent: bool,
    killed: bool,
}

enum Token {
    Signals,
    Pidfd,
    Agent,
    Stdin,
    Listener,
    Client(u64),
}

impl Relay {
    fn new(
        config: VmConfig,
        agent: UnixStream,
        signals: Signals,
        pidfd: OwnedFd,
        qmp: Qmp,
    ) -> Relay {
        let _ = agent.set_nonblocking(true);
        Relay {
            config,
            agent,
            decoder: Decoder::default(),
            to_agent: Vec::new(),
            agent_open: true,
            signals,
            pidfd,
            qmp,
            phase: Phase::Booting,
            stdin_open: false,
            listener: None,
            clients: HashMap::new(),
            next_client: 0,
            next_session: 1,
            deadline: Instant::now() + BOOT_TIMEOUT,
            quit_sent: false,
            killed: false,
        }
    }

    fn send(&mut self, f: Frame) {
        self.to_agent.extend_from_slice(&f.encode());
        self.flush_agent();
    }

    fn flush_agent(&mut self) {
        while !self.to_agent.is_empty() {
            match self.agent.write(&self.to_agent) {
                Ok(0) => break,
                Ok(n) => {
                    self.to_agent.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
    }

    fn run(&mut self, ready: &mut ReadyPipe, procs: &mut Processes) -> Result<i32, Fail> {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let now = Instant::now();
            if now >= self.deadline {
                match self.phase {
                    Phase::Booting | Phase::Starting => {
                        return Err(fail(format!(
                            "the VM did not boot in {} s: {}",
                            BOOT_TIMEOUT.as_secs(),
                            console_tail()
                        )))
                    }
                    Phase::Exiting(code) => {
                        if !self.quit_sent {
                            self.quit_sent = true;
                            let _ = self.qmp.quit();
                            self.deadline = now + Duration::from_secs(3);
                        } else if !self.killed {
                            self.killed = true;
                            if let Some(q) = procs.qemu.as_mut() {
                                let _ = q.kill();
                            }
                            self.deadline = now + Duration::from_secs(3);
                        } else {
                            return Ok(code);
                        }
                    }
                    Phase::Running => {}
                }
            }
            let mut fds = Vec::new();
            let mut tokens = Vec::new();
            fds.push(pollfd(self.signals.0.as_raw_fd(), libc::POLLIN));
            tokens.push(Token::Signals);
            fds.push(pollfd(self.pidfd.as_raw_fd(), libc::POLLIN));
            tokens.push(Token::Pidfd);
            if self.agent_open {
                let mut ev = libc::POLLIN;
                if !self.to_agent.is_empty() {
                    ev |= libc::POLLOUT;
                }
                fds.push(pollfd(self.agent.as_raw_fd(), ev));
                tokens.push(Token::Agent);
            }
            if self.stdin_open && self.to_agent.len() < HIGH_WATER {
                fds.push(pollfd(0, libc::POLLIN));
                tokens.push(Token::Stdin);
            }
            if let Some(l) = &self.listener {
                fds.push(pollfd(l.as_raw_fd(), libc::POLLIN));
                tokens.push(Token::Listener);
            }
            for (id, c) in &self.clients {
                let mut ev = 0;
                if !c.gone && !c.done && self.to_agent.len() < HIGH_WATER {
                    ev |= libc::POLLIN;
                }
                if !c.out.is_empty() {
                    ev |= libc::POLLOUT;
                }
                fds.push(pollfd(c.stream.as_raw_fd(), ev));
                tokens.push(Token::Client(*id));
            }
            let timeout = self.deadline.saturating_duration_since(Instant::now());
            let timeout_ms = if matches!(self.phase, Phase::Running) {
                -1
            } else {
                timeout.as_millis().min(i32::MAX as u128) as i32 + 1
            };
            poll(&mut fds, timeout_ms).map_err(|e| fail(format!("poll: {e}")))?;
            for (pfd, token) in fds.iter().zip(tokens) {
                if pfd.revents == 0 {
                    continue;
                }
                match token {
                    Token::Signals => {
                        for s in self.signals.read() {
                            self.on_signal(s)?;
                        }
                    }
                    Token::Agent => {
                        if pfd.revents & libc::POLLOUT != 0 {
                            self.flush_agent();
                        }
                        if pfd.revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0 {
                            self.read_agent(&mut buf, ready)?;
                        }
                    }
                    Token::Pidfd => {
                        // QEMU is gone: take what the agent had sent, then conclude.
                        while self.agent_open {
                            self.read_agent(&mut buf, ready)?;
                        }
                        if let Some(mut q) = procs.qemu.take() {
                            let _ = q.wait();
                        }
                        return match self.phase {
                            Phase::Exiting(code) => Ok(code),
                            Phase::Booting | Phase::Starting => {
                                Err(fail(format!("the VM did not boot: {}", console_tail())))
                            }
                            Phase::Running => {
                                eprintln!(
                                    "the VM stopped without its entrypoint's exit: {}",
                                    console_tail()
                                );
                                Ok(255)
                            }
                        };
                    }
                    Token::Stdin => match read_fd(0, &mut buf) {
                        Ok(0) | Err(_) => {
                            self.stdin_open = false;
                            self.send(Frame::new(Kind::StdinEof, 0, Vec::new()));
                        }
                        Ok(n) => self.send(Frame::new(Kind::Stdin, 0, buf[..n].to_vec())),
                    },
                    Token::Listener => self.accept(),
                    Token::Client(id) => self.on_client(id, pfd.revents, &mut buf),
                }
            }
            self.clients
                .retain(|_, c| !(c.out.is_empty() && (c.done || c.gone)));
        }
    }

    fn on_signal(&mut self, s: i32) -> Result<(), Fail> {
        match (s, self.phase) {
            (libc::SIGCHLD, _) => {}
            (libc::SIGWINCH, Phase::Running) => {
                if let Some((rows, cols)) = winsize() {
                    self.send(Frame::resize(0, rows, cols));
                }
            }
            (libc::SIGWINCH, _) => {}
            (s, Phase::Running) => self.send(Frame::int(Kind::Signal, 0, s)),
            (_, Phase::Exiting(_)) => {}
            (s, Phase::Booting | Phase::Starting) => {
                return Err(Fail(
                    128 + s,
                    format!("the VM was stopped by signal {s} before its entrypoint started"),
                ))
            }
        }
        Ok(())
    }

    fn read_agent(&mut self, buf: &mut [u8], ready: &mut ReadyPipe) -> Result<(), Fail> {
        match self.agent.read(buf) {
            Ok(0) => {
                self.agent_open = false;
                return Ok(());
            }
            Ok(n) => self.decoder.feed(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                // Nothing more now; when QEMU is gone, that is the end.
                // SAFETY: a zero-timeout poll on our pidfd.
                let mut p = [pollfd(self.pidfd.as_raw_fd(), libc::POLLIN)];
                let _ = poll(&mut p, 0);
                if p[0].revents != 0 {
                    self.agent_open = false;
                }
                return Ok(());
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(()),
            Err(_) => {
                self.agent_open = false;
                return Ok(());
            }
        }
        loop {
            let frame = match self.decoder.next_frame() {
                Ok(Some(f)) => f,
                Ok(None) => return Ok(()),
                Err(e) => return Err(fail(format!("the guest agent sent a bad frame: {e}"))),
            };
            if frame.session == 0 {
                self.on_main_frame(frame, ready)?;
            } else {
                self.route_to_client(frame);
            }
        }
    }

    fn on_main_frame(&mut self, frame: Frame, ready: &mut ReadyPipe) -> Result<(), Fail> {
        match (frame.kind, self.phase) {
            (Kind::Ready, Phase::Booting) => {
                let r: pier_guest::Ready = frame.parse().map_err(|e| fail(e.to_string()))?;
                if r.version != pier_guest::VERSION {
                    return Err(fail(format!(
                        "the guest agent speaks protocol {}, this pier speaks {}: run scripts/vm-assets.sh to install the matching agent",
                        r.version,
                        pier_guest::VERSION
                    )));
                }
                let mut run = self.config.run.clone();
                if run.process.tty {
                    if run.process.size.is_none() {
                        run.process.size = winsize();
                    }
                    raw_terminal();
                }
                self.send(Frame::json(Kind::Run, 0, &run));
                self.phase = Phase::Starting;
            }
            (Kind::Started, Phase::Starting) => {
                self.phase = Phase::Running;
                self.stdin_open = self.config.run.process.stdin;
                let _ = std::fs::remove_file(config::EXEC_SOCKET);
                match UnixListener::bind(config::EXEC_SOCKET) {
                    Ok(l) => {
                        let _ = l.set_nonblocking(true);
                        self.listener = Some(l);
                    }
                    Err(e) => eprintln!("pier __vm: cannot listen on {}: {e}", config::EXEC_SOCKET),
                }
                ready.say("ok");
            }
            (Kind::Failed, Phase::Booting | Phase::Starting) => {
                let f: pier_guest::Failed = frame.parse().map_err(|e| fail(e.to_string()))?;
                let _ = self.qmp.quit();
                return Err(Fail(f.code, f.message));
            }
            (Kind::Stdout, _) => {
                let _ = write_fd(1, &frame.payload);
            }
            (Kind::Stderr, _) => {
                let _ = write_fd(2, &frame.payload);
            }
            (Kind::Exit, Phase::Running) => {
                let code = frame.int_payload().map_err(|e| fail(e.to_string()))?;
                self.phase = Phase::Exiting(code);
                self.deadline = Instant::now() + POWEROFF_TIMEOUT;
                self.stdin_open = false;
                // The protocol's shutdown handshake: closing tells the agent all it sent
                // was read, so it powers off without waiting. What the buffer still holds
                // is decoded; exec sessions end with the VM.
                let _ = self.agent.shutdown(std::net::Shutdown::Both);
                self.agent_open = false;
            }
            _ => {}
        }
        Ok(())
    }

    fn accept(&mut self) {
        let Some(l) = &self.listener else { return };
        while let Ok((stream, _)) = l.accept() {
            let _ = stream.set_nonblocking(true);
            self.next_client += 1;
            self.clients.insert(
                self.next_client,
                Client {
                    stream,
                    decoder: Decoder::default(),
                    out: Vec::new(),
                    session: None,
                    tty: false,
                    done: false,
                    gone: false,
                },
            );
        }
    }

    fn route_to_client(&mut self, frame: Frame) {
        let Some(c) = self
            .clients
            .values_mut()
            .find(|c| c.session == Some(frame.session))
        else {
            return;
        };
        if matches!(frame.kind, Kind::Exit | Kind::Failed) {
            c.done = true;
        }
        if !c.gone {
            c.out
                .extend_from_slice(&Frame::new(frame.kind, 0, frame.payload).encode());
            flush_client(c);
        }
    }

    fn on_client(&mut self, id: u64, revents: i16, buf: &mut [u8]) {
        let mut frames = Vec::new();
        {
            let Some(c) = self.clients.get_mut(&id) else {
                return;
            };
            if revents & libc::POLLOUT != 0 {
                flush_client(c);
            }
            if revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0 && !c.gone {
                match c.stream.read(buf) {
                    Ok(0) | Err(_) => {
                        c.gone = true;
                        c.out.clear();
                    }
                    Ok(n) => c.decoder.feed(&buf[..n]),
                }
                while let Ok(Some(f)) = c.decoder.next_frame() {
                    frames.push(f);
                }
            }
        }
        let mut hangup = None;
        for f in frames {
            self.on_client_frame(id, f);
        }
        if let Some(c) = self.clients.get(&id) {
            if c.gone && !c.done {
                hangup = c.session.map(|s| (s, c.tty));
            }
        }
        // It hung up while its command runs: its input ends (and its terminal hangs up).
        if let Some((s, tty)) = hangup {
            self.send(Frame::new(Kind::StdinEof, s, Vec::new()));
            if tty {
                self.send(Frame::int(Kind::Signal, s, libc::SIGHUP));
            }
            if let Some(c) = self.clients.get_mut(&id) {
                c.done = true;
            }
        }
    }

    fn on_client_frame(&mut self, id: u64, f: Frame) {
        let Some(c) = self.clients.get_mut(&id) else {
            return;
        };
        match (f.kind, c.session) {
            (Kind::Exec, None) => {
                let Ok(p) = f.parse::<pier_guest::ProcessConfig>() else {
                    c.out.extend_from_slice(
                        &Frame::json(
                            Kind::Failed,
                            0,
                            &pier_guest::Failed {
                                code: 125,
                                message: "invalid exec request".into(),
                            },
                        )
                        .encode(),
                    );
                    c.done = true;
                    flush_client(c);
                    return;
                };
                let s = self.next_session;
                self.next_session += 1;
                c.session = Some(s);
                c.tty = p.tty;
                self.send(Frame::json(Kind::Exec, s, &p));
            }
            (Kind::Stdin | Kind::StdinEof | Kind::Signal | Kind::Resize, Some(s)) => {
                self.send(Frame::new(f.kind, s, f.payload));
            }
            _ => {}
        }
    }
}

fn flush_client(c: &mut Client) {
    while !c.out.is_empty() {
        match c.stream.write(&c.out) {
            Ok(0) => break,
            Ok(n) => {
                c.out.drain(..n);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(_) => {
                c.gone = true;
                c.out.clear();
            }
        }
    }
}
