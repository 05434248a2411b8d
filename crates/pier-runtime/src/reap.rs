//! Killing what a container left in its cgroup: the processes of a container whose
//! monitor is gone, found by the daemon at its start or before removing the container;
//! and killing one process known by its pid without hitting another that took the pid
//! ([`kill_checked`]).
//!
//! Each process is signalled through a pidfd opened while it is listed in the cgroup and
//! checked to be listed still after, so a pid reused meanwhile by another process is
//! never hit. A frozen cgroup is thawed first (a frozen process does not die), and the
//! cgroup is read again until it is empty, which also catches a process forked while the
//! others were being killed.

use std::time::{Duration, Instant};

use crate::cgroups::Cgroup;

/// Kills every process in `cgroup` and waits until it holds none, for at most `timeout`.
/// Returns the pids still there at the end (empty: the cgroup is empty).
pub fn kill_all(cgroup: &Cgroup, timeout: Duration) -> Vec<i32> {
    let deadline = Instant::now() + timeout;
    let mut thawed = false;
    loop {
        let pids = cgroup.pids();
        if pids.is_empty() || Instant::now() >= deadline {
            return pids;
        }
        if !thawed {
            let _ = cgroup.freeze(false);
            thawed = true;
        }
        for pid in pids {
            kill_checked(pid, || cgroup.pids().contains(&pid), Duration::ZERO);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// SIGKILL to `pid` if `is_it()` holds once a pidfd names it (a pidfd cannot come to
/// name another process, so a pid reused meanwhile is never hit), then a wait of at most
/// `wait` for it to be gone. Returns whether the signal was sent.
pub fn kill_checked(pid: i32, is_it: impl FnOnce() -> bool, wait: Duration) -> bool {
    let Some(p) = rustix::process::Pid::from_raw(pid) else {
        return false;
    };
    let Ok(fd) = rustix::process::pidfd_open(p, rustix::process::PidfdFlags::empty()) else {
        return false; // gone already
    };
    if !is_it() {
        return false;
    }
    let _ = rustix::process::pidfd_send_signal(&fd, rustix::process::Signal::KILL);
    if !wait.is_zero() {
        let mut p = [libc::pollfd {
            fd: std::os::fd::AsRawFd::as_raw_fd(&fd),
            events: libc::POLLIN,
            revents: 0,
        }];
        let ms = i32::try_from(wait.as_millis()).unwrap_or(i32::MAX);
        // SAFETY: `p` is a valid array of one pollfd; a pidfd polls readable once it exits.
        unsafe { libc::poll(p.as_mut_ptr(), 1, ms) };
    }
    true
}
