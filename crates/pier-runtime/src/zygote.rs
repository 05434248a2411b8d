//! The monitor zygote: `pier __monitor-zygote`, one small single-threaded process per daemon that
//! forks each container's monitor on request.
//!
//! Spawning a monitor as a fresh `pier __monitor` costs a vfork, an exec of the whole
//! binary, dynamic loading and the Rust runtime's start: about 3.5 ms here, more than the
//! container's own setup. A fork of this idle process costs a fraction of a millisecond.
//! The daemon still never forks: it starts the zygote once (an exec like any helper's)
//! and talks to it over a socket pair, the zygote's fd 0.
//!
//! One request is one datagram: the container's directory as bytes, with the write end
//! of a pipe attached (SCM_RIGHTS). The forked monitor has that pipe as stdout and
//! answers on it exactly as a spawned one does (an [`Answer`] line, see
//! [`crate::monitor`]); the pipe reaches end of file once the monitor has answered. The
//! zygote reaps nothing itself (SIGCHLD ignored) and exits when the daemon's end closes,
//! whether the daemon exits or is killed; the monitors it forked live on, detached. A
//! request whose reply pipe nobody reads any more (the daemon died after sending it) is
//! dropped rather than started behind the back of the daemon's successor.
//!
//! The daemon starts it from its sealed copy of `pier` ([`crate::sealed`]), so the
//! monitors it forks and the inits they clone run that copy, never the host's binary.
//!
//! Its working directory is the directory of the containers it serves. A monitor it has
//! just forked looks like it (the same command line, then the container's directory as
//! working directory) until it renames itself `pier __monitor`, and only then can a
//! daemon tell it is the monitor of its container. So a daemon that starts after a crash
//! first waits for whatever its predecessor's zygote left ([`outlast_predecessors`]):
//! a monitor still being forked is then visible to it before it decides which of its
//! containers run.

use std::ffi::OsStr;
use std::io::{self, IoSlice, IoSliceMut, Read};
use std::mem::MaybeUninit;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
};

use crate::error::{Answer, ErrorKind, StartError, Step};

/// The longest directory a request may carry.
const MAX_REQUEST: usize = 4096;

/// Serves requests on fd 0 until the daemon's end closes; returns the exit code.
pub fn main() -> i32 {
    crate::sealed::name_process();
    // SAFETY: setting a signal disposition in a single-threaded process.
    unsafe { libc::signal(libc::SIGCHLD, libc::SIG_IGN) };
    // SAFETY: fd 0 is the socket the daemon gave us; nothing else owns it.
    let sock = unsafe { OwnedFd::from_raw_fd(0) };
    let mut buf = vec![0u8; MAX_REQUEST];
    loop {
        let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
        let mut control = RecvAncillaryBuffer::new(&mut space);
        let got = match rustix::net::recvmsg(
            &sock,
            &mut [IoSliceMut::new(&mut buf)],
            &mut control,
            RecvFlags::CMSG_CLOEXEC,
        ) {
            Ok(got) => got,
            Err(rustix::io::Errno::INTR) => continue,
            Err(_) => return 0,
        };
        let mut reply = None;
        for msg in control.drain() {
            if let RecvAncillaryMessage::ScmRights(mut fds) = msg {
                reply = fds.next();
            }
        }
        if got.bytes == 0 && reply.is_none() {
            return 0; // the daemon is gone
        }
        let Some(reply) = reply else { continue };
        if got.flags.contains(rustix::net::ReturnFlags::TRUNC) {
            answer(
                &reply,
                &Answer::Failed(StartError::new(
                    ErrorKind::Host,
                    Step::Monitor,
                    "the container's directory path is too long",
                )),
            );
            continue;
        }
        if nobody_reads(&reply) {
            // The daemon died after asking (its end of the reply pipe is closed): a
            // start it will never hear of is not made. Its successor finds the container
            // not started.
            continue;
        }
        let dir = PathBuf::from(OsStr::from_bytes(&buf[..got.bytes]));
        // SAFETY: this process is single-threaded, so the child may run anything.
        match unsafe { libc::fork() } {
            0 => {
                drop(sock);
                std::process::exit(monitor_child(&dir, reply));
            }
            -1 => answer(
                &reply,
                &Answer::Failed(StartError::io(
                    Step::Monitor,
                    "cannot fork the monitor",
                    io::Error::last_os_error(),
                )),
            ),
            _ => {} // our copy of the reply pipe closes here
        }
    }
}

/// Whether the read end of the pipe `w` writes to is closed.
fn nobody_reads(w: &OwnedFd) -> bool {
    let mut p = [libc::pollfd {
        fd: w.as_raw_fd(),
        events: 0,
        revents: 0,
    }];
    // SAFETY: `p` is a valid array of one pollfd.
    let n = unsafe { libc::poll(p.as_mut_ptr(), 1, 0) };
    n == 1 && p[0].revents & libc::POLLERR != 0
}

fn answer(reply: &OwnedFd, answer: &Answer) {
    let _ = rustix::io::write(reply, format!("{}\n", answer.to_line()).as_bytes());
}

/// The forked child: given the stdio and working directory a spawned monitor has, it
/// becomes the monitor.
fn monitor_child(dir: &Path, reply: OwnedFd) -> i32 {
    // SAFETY: plain syscalls on descriptors we own; the monitor waits for its children,
    // which needs SIGCHLD's default disposition back.
    unsafe {
        libc::signal(libc::SIGCHLD, libc::SIG_DFL);
        libc::dup2(reply.as_raw_fd(), 1);
    }
    drop(reply);
    if let Ok(null) = std::fs::File::options()
        .read(true)
        .write(true)
        .open("/dev/null")
    {
        // SAFETY: as above.
        unsafe {
            libc::dup2(null.as_raw_fd(), 0);
            libc::dup2(null.as_raw_fd(), 2);
        }
    }
    if let Err(e) = std::env::set_current_dir(dir) {
        crate::monitor::answer(&Answer::Failed(StartError::io(
            Step::Monitor,
            format!("cannot enter {}", dir.display()),
            e,
        )));
        return 1;
    }
    set_cmdline(b"pier\0__monitor\0");
    crate::monitor::run(dir)
}

/// What the zygote is called: as long as `__monitor` or longer, so that a monitor can
/// write its own name over it (see [`set_cmdline`]).
pub const ARG: &str = "__monitor-zygote";

/// Makes /proc/self/cmdline read as a spawned monitor's does (`pier __monitor`): `ps`
/// shows it, the daemon recognises its monitors by it, and `--init` shows it inside the
/// container. The new arguments are written over the inherited ones, in place, as
/// setproctitle does (renaming through prctl needs CAP_SYS_RESOURCE, which a daemon may
/// lack); the rest of the old area is zeroed.
fn set_cmdline(args: &[u8]) {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return;
    };
    // Fields after the command name in parentheses; arg_start and arg_end are the 48th
    // and 49th fields of the line, the 46th and 47th after the name.
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let (Some(Ok(start)), Some(Ok(end))) = (
        fields.get(45).map(|f| f.parse::<usize>()),
        fields.get(46).map(|f| f.parse::<usize>()),
    ) else {
        return;
    };
    if start == 0 || end < start || args.len() > end - start {
        return;
    }
    // SAFETY: [start, end) is this process's own argument area on its stack, readable
    // and writable, which nothing reads after the start (std's arguments were taken).
    unsafe {
        let area = std::slice::from_raw_parts_mut(start as *mut u8, end - start);
        area.fill(0);
        area[..args.len()].copy_from_slice(args);
    }
}

/// What [`outlast_predecessors`] found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Outlasted {
    /// Zygotes (or monitors not yet named so) that went away by themselves.
    pub gone: usize,
    /// Those still there after the wait, killed.
    pub killed: usize,
}

/// Waits (at most `patience`) until no zygote serving the containers under `dir` is
/// left, nor any monitor one forked that has not yet taken its name, then kills what
/// remains. Called by a daemon as it starts, before its own zygote exists and before it
/// looks at its containers: a predecessor's zygote exits at once when it finds the
/// predecessor gone, and the monitors it forked just before take their names within
/// microseconds of running, yet a loaded host may not run them for a while. Killing one
/// that never got to run is harmless: it has done nothing yet.
pub fn outlast_predecessors(dir: &Path, patience: Duration) -> Outlasted {
    let first = predecessors(dir);
    let deadline = Instant::now() + patience;
    let mut left = first.clone();
    while !left.is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
        left = predecessors(dir);
    }
    for &pid in &left {
        crate::reap::kill_checked(pid, || is_predecessor(pid, dir), Duration::from_secs(1));
    }
    let killed = left.len();
    Outlasted {
        gone: first.len().saturating_sub(killed),
        killed,
    }
}

/// The processes that look like a zygote of the containers under `dir`: named as one,
/// working in `dir` or in a container's directory inside it.
fn predecessors(dir: &Path) -> Vec<i32> {
    crate::monitor::helpers(ARG)
        .into_iter()
        .filter(|(_, cwd)| serves(cwd, dir))
        .map(|(pid, _)| pid)
        .collect()
}

fn is_predecessor(pid: i32, dir: &Path) -> bool {
    crate::monitor::helper_dir(pid, ARG).is_some_and(|cwd| serves(&cwd, dir))
}

/// Whether a zygote (or a monitor it forked, not yet named) working in `cwd` serves the
/// containers under `dir`.
fn serves(cwd: &Path, dir: &Path) -> bool {
    cwd == dir || cwd.parent() == Some(dir)
}

/// The daemon's handle on its zygote, started on first use and again if it died.
pub struct Zygote {
    /// The directory of the containers it serves: its working directory.
    dir: PathBuf,
    running: Mutex<Option<(Child, OwnedFd)>>,
}

impl Zygote {
    /// A zygote that will run the daemon's sealed copy of `pier` ([`crate::sealed`]),
    /// for the containers under `dir`.
    pub fn new(dir: &Path) -> Self {
        Zygote {
            dir: dir.to_path_buf(),
            running: Mutex::new(None),
        }
    }

    /// Starts the monitor of the container in `dir`; returns its answer. Blocks until the
    /// monitor has answered. An error means the zygote could not be asked at all.
    pub fn start_monitor(&self, dir: &Path) -> io::Result<Answer> {
        let (r, w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?;
        self.send(dir, w)?;
        let mut out = String::new();
        std::fs::File::from(r).read_to_string(&mut out)?;
        Ok(Answer::parse(&out))
    }

    fn send(&self, dir: &Path, reply: OwnedFd) -> io::Result<()> {
        let bytes = dir.as_os_str().as_bytes();
        if bytes.len() >= MAX_REQUEST {
            return Err(io::Error::other(
                "the container's directory path is too long",
            ));
        }
        let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        let mut last = None;
        for _ in 0..2 {
            if running.is_none() {
                *running = Some(self.spawn()?);
            }
            let Some((_, sock)) = running.as_ref() else {
                continue;
            };
            let fds = [std::os::fd::AsFd::as_fd(&reply)];
            let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
            let mut control = SendAncillaryBuffer::new(&mut space);
            control.push(SendAncillaryMessage::ScmRights(&fds));
            match rustix::net::sendmsg(
                sock,
                &[IoSlice::new(bytes)],
                &mut control,
                SendFlags::NOSIGNAL,
            ) {
                Ok(_) => return Ok(()),
                Err(e) => {
                    // The zygote died (killed, or out of memory): reap it, start another.
                    if let Some((mut child, _)) = running.take() {
                        let _ = child.kill();
                        let _ = child.wait();
                    }
                    last = Some(io::Error::from(e));
                }
            }
        }
        Err(last.unwrap_or_else(|| io::Error::other("the monitor zygote is gone")))
    }

    fn spawn(&self) -> io::Result<(Child, OwnedFd)> {
        let (ours, theirs) = rustix::net::socketpair(
            rustix::net::AddressFamily::UNIX,
            rustix::net::SocketType::SEQPACKET,
            rustix::net::SocketFlags::CLOEXEC,
            None,
        )?;
        let exe = crate::sealed::current()?;
        let child = Command::new(exe.path())
            .arg0("pier")
            .arg(ARG)
            .current_dir(&self.dir)
            .stdin(Stdio::from(theirs))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        Ok((child, ours))
    }
}

impl Drop for Zygote {
    fn drop(&mut self) {
        let running = self.running.get_mut().unwrap_or_else(|e| e.into_inner());
        if let Some((mut child, sock)) = running.take() {
            drop(sock); // end of file: the zygote exits
            let _ = child.wait();
        }
    }
}
