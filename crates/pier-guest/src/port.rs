//! The agent's end of the virtio-serial port: a non-blocking character device.
//! Outgoing frames queue in memory and go out as the port takes them (writes may be
//! partial, or refused while the host has no client connected); incoming bytes are cut
//! into frames. The host may go away and come back (a daemon restart): the port then
//! reports a hang-up, which the agent waits out.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use pier_guest::{Decoder, Frame};

use crate::sys;

/// How long the agent leaves the port alone after a hang-up before looking again.
const RETRY: Duration = Duration::from_millis(50);
/// The span over which the agent judges whether the host may be behind.
const RECENT: Duration = Duration::from_secs(5);
/// More than this written within [`RECENT`] may not all have reached the host (QEMU's
/// socket buffer holds about 200 KiB).
const RECENT_BYTES: usize = 64 << 10;

pub struct Port {
    file: File,
    out: Vec<u8>,
    sent: usize,
    decoder: Decoder,
    /// While the host has no client connected: when to look again.
    pub down_until: Option<Instant>,
    /// When the port last refused (part of) a write: the host was behind.
    refused_at: Option<Instant>,
    /// Bytes written since `window_start`.
    window_bytes: usize,
    window_start: Instant,
}

/// What a read of the port gave.
pub enum Incoming {
    Frames(Vec<Frame>),
    /// The host's client went away.
    HungUp,
}

impl Port {
    pub fn new(file: File) -> Port {
        Port {
            file,
            out: Vec::new(),
            sent: 0,
            decoder: Decoder::default(),
            down_until: None,
            refused_at: None,
            window_bytes: 0,
            window_start: Instant::now(),
        }
    }

    pub fn fd(&self) -> i32 {
        self.file.as_raw_fd()
    }

    /// Bytes queued and not yet taken by the port.
    pub fn pending(&self) -> usize {
        self.out.len() - self.sent
    }

    /// Queues a frame, and writes what the port takes now.
    pub fn send(&mut self, frame: &Frame) {
        self.out.extend_from_slice(&frame.encode());
        let _ = self.flush();
    }

    /// Writes queued bytes until the port would block.
    pub fn flush(&mut self) -> io::Result<()> {
        while self.sent < self.out.len() {
            match self.file.write(&self.out[self.sent..]) {
                Ok(0) => {
                    self.refused_at = Some(Instant::now());
                    break;
                }
                Ok(n) => {
                    self.sent += n;
                    let now = Instant::now();
                    if now.duration_since(self.window_start) > RECENT {
                        self.window_start = now;
                        self.window_bytes = 0;
                    }
                    self.window_bytes += n;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.refused_at = Some(Instant::now());
                    break;
                }
                Err(e) => return Err(e),
            }
        }
        if self.sent == self.out.len() {
            self.out.clear();
            self.sent = 0;
        } else if self.sent > (1 << 16) && self.sent * 2 > self.out.len() {
            self.out.drain(..self.sent);
            self.sent = 0;
        }
        Ok(())
    }

    /// Reads what the host sent and cuts it into frames.
    pub fn read(&mut self) -> io::Result<Incoming> {
        let mut buf = [0u8; 65536];
        let mut frames = Vec::new();
        loop {
            match self.file.read(&mut buf) {
                Ok(0) => {
                    // No client: start afresh when one comes (a half frame of the
                    // one that left means nothing to the next).
                    self.decoder = Decoder::default();
                    self.down_until = Some(Instant::now() + RETRY);
                    return Ok(if frames.is_empty() {
                        Incoming::HungUp
                    } else {
                        Incoming::Frames(frames)
                    });
                }
                Ok(n) => {
                    self.decoder.feed(&buf[..n]);
                    while let Some(f) = self.decoder.next_frame()? {
                        frames.push(f);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    return Ok(Incoming::Frames(frames))
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Waits up to `deadline` for the port to take a write; false when it did not.
    fn writable(&self, deadline: Instant) -> bool {
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            let mut pfd = libc::pollfd {
                fd: self.fd(),
                events: libc::POLLOUT,
                revents: 0,
            };
            // SAFETY: one live pollfd.
            let r = unsafe { libc::poll(&mut pfd, 1, left.as_millis().min(50) as i32 + 1) };
            if r > 0 && pfd.revents & libc::POLLOUT != 0 {
                return true;
            }
            if r > 0 {
                // A hang-up: no client now; wait for one.
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    /// Writes everything queued before the VM powers off, waiting up to `timeout` for
    /// a host client.
    pub fn drain(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let _ = sys::set_nonblocking(self.fd(), false);
        while self.pending() > 0 {
            if !self.writable(deadline) || self.flush().is_err() {
                return;
            }
        }
    }

    /// Whether what was written may not all have reached the host yet: the port
    /// refused a write lately (its queue was full), or much was written lately.
    pub fn may_be_behind(&self) -> bool {
        let recent = |t: Instant| t.elapsed() < RECENT;
        self.refused_at.is_some_and(recent)
            || (recent(self.window_start) && self.window_bytes > RECENT_BYTES)
    }

    /// Waits up to `timeout` for the host to close its end, which says it has read
    /// everything. A write to the port returns once the data is in the virtqueue
    /// (even a blocking one, for a virtio-serial port); the host takes it from there
    /// as its socket has room, and what is still queued (megabytes, with a slow
    /// reader) is lost when the VM powers off.
    pub fn wait_hangup(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let mut buf = [0u8; 4096];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            let mut pfd = libc::pollfd {
                fd: self.fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one live pollfd.
            let r = unsafe { libc::poll(&mut pfd, 1, left.as_millis() as i32 + 1) };
            if r > 0 && pfd.revents & (libc::POLLHUP | libc::POLLERR) != 0 {
                return;
            }
            if r > 0 && pfd.revents & libc::POLLIN != 0 {
                // What the host still sends no longer matters; 0 is the hang-up.
                if matches!(self.file.read(&mut buf), Ok(0) | Err(_)) {
                    return;
                }
            }
        }
    }
}
