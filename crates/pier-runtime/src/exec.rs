//! `pier __exec DIR REQUEST`: runs another process in a running container (`pier exec`).
//!
//! A fresh, single-threaded process joins the container's cgroup and namespaces, forks
//! (joining a pid namespace takes effect for children), and the child goes through the
//! same last steps as the container's init: rlimits, seccomp, user and capabilities,
//! working directory, exec. The helper waits and exits with the child's status, so the
//! daemon sees the command's exit code; stdio passes straight through.

use std::fs::File;
use std::os::fd::AsFd;
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
}

fn die(code: i32, msg: impl std::fmt::Display) -> i32 {
    eprintln!("pier exec: {msg}");
    code
}

pub fn main(dir: &Path, request: &str) -> i32 {
    let req: ExecRequest = match serde_json::from_str(request) {
        Ok(r) => r,
        Err(e) => return die(125, format!("invalid request: {e}")),
    };
    let spec = match Spec::load(dir.join("config.json")) {
        Ok(s) => s,
        Err(e) => return die(125, format!("cannot read the container's spec: {e}")),
    };
    let Some(config) = read_json::<MonitorConfig>(&dir.join("monitor.json")) else {
        return die(125, "cannot read monitor.json");
    };
    let mut process = spec.process().clone().unwrap_or_default();
    let user = UserBuilder::default()
        .uid(req.uid)
        .gid(req.gid)
        .additional_gids(req.additional_gids.clone())
        .build();
    let Ok(user) = user else {
        return die(125, "invalid user");
    };
    process
        .set_args(Some(req.args.clone()))
        .set_env(Some(req.env.clone()))
        .set_cwd(req.cwd.clone().into())
        .set_user(user);
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

    // Open every namespace first: after joining the mount namespace /proc is the
    // container's.
    let kinds = ["ipc", "uts", "net", "pid", "cgroup", "mnt"];
    let mut fds = Vec::new();
    for k in kinds {
        match File::open(format!("/proc/{}/ns/{k}", req.pid)) {
            Ok(f) => fds.push((k, f)),
            Err(e) => {
                return die(
                    125,
                    format!("the container is not running ({k} namespace: {e})"),
                )
            }
        }
    }
    if let Err(e) = Cgroup::for_container(&config.id).add(std::process::id() as i32) {
        return die(125, format!("{e}: {}", e.source));
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
            return die(
                125,
                format!(
                    "cannot join the container's {k} namespace: {}",
                    std::io::Error::last_os_error()
                ),
            );
        }
    }
    // SAFETY: fork in a single-threaded process.
    let child = unsafe { libc::fork() };
    if child < 0 {
        return die(125, format!("fork: {}", std::io::Error::last_os_error()));
    }
    if child == 0 {
        let e = match crate::init::finish(&spec) {
            Ok(never) => match never {},
            Err(e) => e,
        };
        eprintln!("pier exec: {}", e.message);
        // SAFETY: leaving the child without running destructors.
        unsafe { libc::_exit(e.code) };
    }
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
