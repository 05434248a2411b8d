//! The agent's service loop, one poll(2) over the port, a signalfd for SIGCHLD and the
//! sessions' stdio.
//!
//! ```text
//!   boot ──> Ready ──Run──> setup ──> Started(0) ──> relay ──(0 exits)──> Exit(0)
//!                             │                     │  Exec n ─> Started(n) / Failed(n)
//!                             └─ Failed(0) ─┐       │  n exits ─> Exit(n)
//!                                           └───────┴──> kill all, sync, unmount, power off
//! ```
//!
//! A session's `Exit` goes out once its output is drained (both streams at their end,
//! or quiet for [`GRACE`] after the exit when something else holds them open, such as
//! a background child: the wait restarts with each read, and does not run while the
//! port is backed up). Output is read
//! only while the port's queue is below [`OUT_LIMIT`], and the port only while no
//! session's input is backed up past [`IN_LIMIT`]: a slow side slows the other down
//! instead of growing memory.

use std::collections::BTreeMap;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;
use std::time::{Duration, Instant};

use pier_guest::{Failed, Frame, Kind, ProcessConfig, Ready, RunConfig, VERSION};

use crate::port::{Incoming, Port};
use crate::setup::{self, Mounts, NEWROOT};
use crate::spawn::{self, Spawned};
use crate::{net, sys};

/// How long after a process exits (and after each later read) its output may stay
/// open and silent before the session ends without waiting for its end.
const GRACE: Duration = Duration::from_millis(200);
/// Stop reading sessions' output while this much waits for the port.
const OUT_LIMIT: usize = 256 << 10;
/// Stop reading the port while a session's input has this much waiting.
const IN_LIMIT: usize = 1 << 20;
/// How long the agent waits for the host to take its last frames before power-off.
const LAST_WORDS: Duration = Duration::from_secs(10);
/// How long the agent then waits, when the host may be behind, for it to close the
/// connection (its "I have read everything") before powering off anyway.
const HANGUP_WAIT: Duration = Duration::from_secs(10);

struct Session {
    pid: libc::pid_t,
    tty: bool,
    stdin: Option<OwnedFd>,
    stdin_buf: Vec<u8>,
    /// Close stdin once `stdin_buf` is written.
    stdin_eof: bool,
    stdout: Option<OwnedFd>,
    stderr: Option<OwnedFd>,
    master: Option<OwnedFd>,
    /// The exit code, and when the session last showed life (its exit, or a read
    /// after it).
    exited: Option<(i32, Instant)>,
}

impl Session {
    fn new(s: Spawned, tty: bool) -> Session {
        Session {
            pid: s.pid,
            tty,
            stdin: s.stdin,
            stdin_buf: Vec::new(),
            stdin_eof: false,
            stdout: Some(s.stdout),
            stderr: s.stderr,
            master: s.master,
            exited: None,
        }
    }
}

#[derive(Clone, Copy)]
enum Slot {
    Child,
    Port,
    Out(u32),
    Err(u32),
    In(u32),
}

pub struct Agent {
    port: Port,
    sigfd: OwnedFd,
    sessions: BTreeMap<u32, Session>,
    started: bool,
    mounts: Mounts,
}

impl Agent {
    /// Blocks SIGCHLD (it is read from a signalfd) and says Ready on `port`.
    pub fn new(port: Port) -> sys::Result<Agent> {
        use crate::sys::Context;
        // SAFETY: building a signal set and blocking it in this single-threaded process.
        let fd = unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, libc::SIGCHLD);
            libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
            libc::signalfd(-1, &set, libc::SFD_NONBLOCK | libc::SFD_CLOEXEC)
        };
        sys::check(fd).ctx(|| "making a signalfd for SIGCHLD".into())?;
        let mut agent = Agent {
            port,
            // SAFETY: a fresh descriptor nothing else owns.
            sigfd: unsafe { OwnedFd::from_raw_fd(fd) },
            sessions: BTreeMap::new(),
            started: false,
            mounts: Mounts::default(),
        };
        agent
            .port
            .send(&Frame::json(Kind::Ready, 0, &Ready { version: VERSION }));
        Ok(agent)
    }

    /// Serves until the main process exits, then powers the VM off.
    pub fn serve(mut self) -> ! {
        loop {
            if let Err(e) = self.step() {
                self.fatal(&e.to_string());
            }
        }
    }

    /// Says what went wrong on the console and to the host, and powers off.
    pub fn fatal(&mut self, msg: &str) -> ! {
        sys::console(&format!("fatal: {msg}"));
        let failed = Failed {
            code: 125,
            message: format!("the VM's agent failed: {msg}"),
        };
        self.port.send(&Frame::json(Kind::Failed, 0, &failed));
        self.power_off();
    }

    fn step(&mut self) -> io::Result<()> {
        let now = Instant::now();
        let mut pfds: Vec<libc::pollfd> = Vec::new();
        let mut slots: Vec<Slot> = Vec::new();
        let mut add = |fd: RawFd, events: libc::c_short, slot: Slot| {
            pfds.push(libc::pollfd {
                fd,
                events,
                revents: 0,
            });
            slots.push(slot);
        };
        add(self.sigfd.as_raw_fd(), libc::POLLIN, Slot::Child);
        let mut timeout: Option<Duration> = None;
        let mut wake_at = |t: Instant| {
            let d = t.saturating_duration_since(now);
            timeout = Some(timeout.map_or(d, |old| old.min(d)));
        };
        match self.port.down_until {
            Some(t) if t > now => wake_at(t),
            _ => {
                self.port.down_until = None;
                let backed_up = self.sessions.values().any(|s| s.stdin_buf.len() > IN_LIMIT);
                let mut ev = 0;
                if !backed_up {
                    ev |= libc::POLLIN;
                }
                if self.port.pending() > 0 {
                    ev |= libc::POLLOUT;
                }
                add(self.port.fd(), ev, Slot::Port);
            }
        }
        let reading = self.port.pending() < OUT_LIMIT;
        for (&id, s) in &self.sessions {
            if reading {
                if let Some(fd) = &s.stdout {
                    add(fd.as_raw_fd(), libc::POLLIN, Slot::Out(id));
                }
                if let Some(fd) = &s.stderr {
                    add(fd.as_raw_fd(), libc::POLLIN, Slot::Err(id));
                }
            }
            if let (Some(fd), false) = (&s.stdin, s.stdin_buf.is_empty()) {
                add(fd.as_raw_fd(), libc::POLLOUT, Slot::In(id));
            }
            if let (Some((_, at)), true) = (s.exited, reading) {
                wake_at(at + GRACE);
            }
        }
        let ms = timeout.map_or(-1, |d| d.as_millis().min(60_000) as libc::c_int + 1);
        // SAFETY: `pfds` is a live array of its length.
        let n = unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, ms) };
        if n < 0 {
            let e = io::Error::last_os_error();
            return if e.kind() == io::ErrorKind::Interrupted {
                Ok(())
            } else {
                Err(e)
            };
        }
        for (pfd, slot) in pfds.iter().zip(slots) {
            if pfd.revents == 0 {
                continue;
            }
            match slot {
                Slot::Child => self.reap(),
                Slot::Port => self.port_ready(pfd.revents)?,
                Slot::Out(id) => self.read_output(id, false),
                Slot::Err(id) => self.read_output(id, true),
                Slot::In(id) => self.write_input(id),
            }
        }
        self.finish_sessions();
        Ok(())
    }

    fn port_ready(&mut self, revents: libc::c_short) -> io::Result<()> {
        if revents & libc::POLLOUT != 0 {
            self.port.flush()?;
        }
        if revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0 {
            match self.port.read()? {
                Incoming::HungUp => {}
                Incoming::Frames(frames) => {
                    for f in frames {
                        self.handle(f);
                    }
                }
            }
        }
        Ok(())
    }

    fn handle(&mut self, f: Frame) {
        let id = f.session;
        match f.kind {
            Kind::Run => match f.parse::<RunConfig>() {
                Ok(cfg) if id == 0 && !self.started => self.run(&cfg),
                Ok(_) => self.fail(id, 125, "Run is for session 0, once"),
                Err(e) => self.fail(id, 125, &e.to_string()),
            },
            Kind::Exec => match f.parse::<ProcessConfig>() {
                Ok(_) if !self.started => {
                    self.fail(id, 125, "exec before the VM's main process started")
                }
                Ok(_) if id == 0 || self.sessions.contains_key(&id) => {
                    self.fail(id, 125, &format!("session {id} is taken"))
                }
                Ok(p) => {
                    self.start(id, &p);
                }
                Err(e) => self.fail(id, 125, &e.to_string()),
            },
            Kind::Stdin => {
                if let Some(s) = self.sessions.get_mut(&id) {
                    if s.stdin.is_some() && !s.stdin_eof {
                        s.stdin_buf.extend_from_slice(&f.payload);
                    }
                }
            }
            Kind::StdinEof => {
                if let Some(s) = self.sessions.get_mut(&id) {
                    if s.tty {
                        // A terminal has no end of input but its EOF character.
                        if s.stdin.is_some() {
                            s.stdin_buf.push(0x04);
                        }
                    } else {
                        s.stdin_eof = true;
                        if s.stdin_buf.is_empty() {
                            s.stdin = None;
                        }
                    }
                }
            }
            Kind::Signal => {
                if let (Some(s), Ok(sig)) = (self.sessions.get(&id), f.int_payload()) {
                    if s.exited.is_none() {
                        // SAFETY: kill(2) with integers.
                        unsafe { libc::kill(s.pid, sig) };
                    }
                }
            }
            Kind::Resize => {
                if let (Some(s), Ok((rows, cols))) = (self.sessions.get(&id), f.size_payload()) {
                    if let Some(m) = &s.master {
                        let _ = spawn::resize(m, rows, cols);
                    }
                }
            }
            other => sys::console(&format!("ignoring a {other:?} frame from the host")),
        }
    }

    fn fail(&mut self, id: u32, code: i32, message: &str) {
        let failed = Failed {
            code,
            message: message.to_string(),
        };
        self.port.send(&Frame::json(Kind::Failed, id, &failed));
    }

    /// Sets the VM up as `cfg` says and starts its main process; a failure is
    /// reported and powers the VM off.
    fn run(&mut self, cfg: &RunConfig) {
        self.started = true;
        let setup = setup::prepare(cfg, &mut self.mounts).and_then(|()| net::configure(&cfg.nics));
        if let Err(e) = setup {
            let msg = format!("setting up the VM: {e}");
            sys::console(&msg);
            self.fail(0, 125, &msg);
            self.power_off();
        }
        if !self.start(0, &cfg.process) {
            self.power_off();
        }
    }

    /// Spawns a session's process and says Started or Failed; true when it started.
    fn start(&mut self, id: u32, p: &ProcessConfig) -> bool {
        match spawn::spawn(Path::new(NEWROOT), p) {
            Ok(s) => {
                let pid = s.pid;
                self.sessions.insert(id, Session::new(s, p.tty));
                self.port.send(&Frame::int(Kind::Started, id, pid));
                true
            }
            Err(f) => {
                self.port.send(&Frame::json(Kind::Failed, id, &f));
                false
            }
        }
    }

    /// Reaps every child that exited (PID 1 inherits orphans too).
    fn reap(&mut self) {
        let mut info = [0u8; 128];
        // SAFETY: draining the signalfd into a buffer of one siginfo's size.
        while unsafe { libc::read(self.sigfd.as_raw_fd(), info.as_mut_ptr().cast(), 128) } > 0 {}
        loop {
            let mut status = 0;
            // SAFETY: waitpid without blocking.
            let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
            if pid <= 0 {
                break;
            }
            if let Some(s) = self.sessions.values_mut().find(|s| s.pid == pid) {
                s.exited = Some((spawn::exit_code(status), Instant::now()));
            }
        }
    }

    /// Relays what a session wrote; returns when it would block, at its end, or once
    /// a frame went out (so one busy session does not starve the others).
    fn read_output(&mut self, id: u32, err: bool) {
        let Some(s) = self.sessions.get_mut(&id) else {
            return;
        };
        let slot = if err { &mut s.stderr } else { &mut s.stdout };
        let Some(fd) = slot else { return };
        let mut buf = vec![0u8; 32 << 10];
        // SAFETY: reading into a live buffer of its length.
        let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if n > 0 {
            buf.truncate(n as usize);
            if let Some((_, at)) = &mut s.exited {
                *at = Instant::now();
            }
            let kind = if err { Kind::Stderr } else { Kind::Stdout };
            self.port.send(&Frame::new(kind, id, buf));
            return;
        }
        let e = io::Error::last_os_error();
        if n < 0
            && matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
            )
        {
            return;
        }
        // The end (0), or EIO from a terminal whose other side is all closed.
        *slot = None;
    }

    fn write_input(&mut self, id: u32) {
        let Some(s) = self.sessions.get_mut(&id) else {
            return;
        };
        let Some(fd) = &s.stdin else { return };
        // SAFETY: writing from a live buffer of its length.
        let n = unsafe {
            libc::write(
                fd.as_raw_fd(),
                s.stdin_buf.as_ptr().cast(),
                s.stdin_buf.len(),
            )
        };
        if n >= 0 {
            s.stdin_buf.drain(..n as usize);
        } else {
            let e = io::Error::last_os_error();
            if !matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
            ) {
                // The process closed its input: drop what it will never read.
                s.stdin_buf.clear();
                s.stdin = None;
            }
        }
        if s.stdin_buf.is_empty() && s.stdin_eof {
            s.stdin = None;
        }
    }

    /// Sends the Exit of each session whose process exited and whose output is
    /// drained (or held open past [`GRACE`]); the main one's powers the VM off.
    fn finish_sessions(&mut self) {
        let now = Instant::now();
        let reading = self.port.pending() < OUT_LIMIT;
        let done: Vec<u32> = self
            .sessions
            .iter()
            .filter(|(_, s)| {
                s.exited.is_some_and(|(_, at)| {
                    (s.stdout.is_none() && s.stderr.is_none()) || (reading && now >= at + GRACE)
                })
            })
            .map(|(&id, _)| id)
            .collect();
        for id in done {
            // What is readable now still goes out first.
            for err in [false, true] {
                for _ in 0..64 {
                    let before = self.port.pending();
                    self.read_output(id, err);
                    if self.port.pending() == before {
                        break;
                    }
                }
            }
            let Some(s) = self.sessions.remove(&id) else {
                continue;
            };
            let code = s.exited.map_or(255, |(c, _)| c);
            self.port.send(&Frame::int(Kind::Exit, id, code));
            if id == 0 {
                self.power_off();
            }
        }
    }

    /// Ends every process, gives the host the last frames, syncs, unmounts and powers
    /// the VM off.
    fn power_off(&mut self) -> ! {
        // SAFETY: from PID 1, kill(-1) signals every other process.
        unsafe { libc::kill(-1, libc::SIGKILL) };
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            // SAFETY: waitpid without blocking.
            let pid = unsafe { libc::waitpid(-1, std::ptr::null_mut(), libc::WNOHANG) };
            if pid < 0 || Instant::now() >= deadline {
                break;
            }
            if pid == 0 {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        self.sessions.clear();
        self.port.drain(LAST_WORDS);
        // Small outputs went straight through to the host's socket; after much output,
        // or while the host was slow, give it time to read the rest.
        if self.port.may_be_behind() {
            self.port.wait_hangup(HANGUP_WAIT);
        }
        // SAFETY: sync takes nothing.
        unsafe { libc::sync() };
        self.mounts.unmount_all();
        sys::power_off()
    }
}
