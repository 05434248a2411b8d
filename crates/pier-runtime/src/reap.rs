//! Killing what a container left in its cgroup: the processes of a container whose
//! monitor is gone, found by the daemon at its start or before removing the container.
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
            let Some(p) = rustix::process::Pid::from_raw(pid) else {
                continue;
            };
            let Ok(fd) = rustix::process::pidfd_open(p, rustix::process::PidfdFlags::empty())
            else {
                continue; // gone already
            };
            if cgroup.pids().contains(&pid) {
                let _ = rustix::process::pidfd_send_signal(&fd, rustix::process::Signal::KILL);
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}
