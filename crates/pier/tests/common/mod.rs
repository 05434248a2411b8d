//! Root-tier test harness: a real `pier daemon` per test, with its own state directory and
//! socket, driven through the real CLI. Dropping a [`Daemon`] stops it and checks that it
//! left nothing behind.

#![allow(dead_code)]

pub mod browser;

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const PIER: &str = env!("CARGO_BIN_EXE_pier");
pub const BUSYBOX: &str = "/bin/busybox";

/// Fails (never skips) when the test cannot run here, saying what to do.
pub fn require_root_and_tools(tools: &[&str]) {
    assert!(
        rustix::process::geteuid().is_root(),
        "root-tier tests need root: run them as `.ci/run` does (sudo scripts/test)"
    );
    assert!(
        Path::new(BUSYBOX).exists(),
        "{BUSYBOX} is missing: apt-get install busybox-static"
    );
    for t in tools {
        let found = Command::new("sh")
            .arg("-c")
            .arg(format!("command -v {t}"))
            .output()
            .unwrap()
            .status
            .success();
        assert!(
            found,
            "{t} is missing: .ci/run installs it (apt-get install {t})"
        );
    }
}

pub struct Daemon {
    pub dir: tempfile::TempDir,
    pub root: PathBuf,
    pub socket: PathBuf,
    /// The Docker Engine API's socket (`DOCKER_HOST=unix://...`).
    pub docker_socket: PathBuf,
    /// The network namespace the daemon lives in (`ip netns` name): its bridges,
    /// veths and nftables table are the test's alone, and outlive daemon restarts.
    pub netns: String,
    /// More `pier daemon` arguments, given at every (re)start.
    pub extra_args: Vec<String>,
    /// Whether dropping this daemon deletes its network namespace.
    owns_netns: bool,
    /// Run the daemon in a mount namespace of its own whose `/sys/fs/cgroup` is the
    /// cgroup2 hierarchy alone, as on a pure v2 host (this host is hybrid).
    pub cgroup2_only: bool,
    child: Option<Child>,
}

/// In a child about to exec: a mount namespace of its own whose `/sys/fs/cgroup` is a
/// fresh mount of `fstype` (`cgroup2`: a pure v2 host's view; `tmpfs`: no hierarchy at
/// all, as under `ip netns exec`). Only raw syscalls, as a `pre_exec` hook needs.
pub fn private_cgroup_view(fstype: &std::ffi::CStr) -> std::io::Result<()> {
    use rustix::mount::{mount, mount_change, MountFlags, MountPropagationFlags};
    // SAFETY: a new mount namespace for this (single-threaded, about to exec) child
    // changes no memory or descriptor state.
    unsafe { rustix::thread::unshare_unsafe(rustix::thread::UnshareFlags::NEWNS) }?;
    mount_change(
        c"/",
        MountPropagationFlags::PRIVATE | MountPropagationFlags::REC,
    )?;
    mount(fstype, c"/sys/fs/cgroup", fstype, MountFlags::empty(), c"")?;
    Ok(())
}

/// Runs `ip ARGS`, panicking with its error output on failure.
pub fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Daemon {
    pub fn start() -> Daemon {
        Self::start_with(&[])
    }

    /// Starts a daemon with more `pier daemon` arguments.
    pub fn start_with(extra_args: &[&str]) -> Daemon {
        Self::start_in(extra_args, None, false)
    }

    /// Starts a daemon that sees only the cgroup2 hierarchy, as on a pure v2 host.
    pub fn start_on_cgroup2(extra_args: &[&str]) -> Daemon {
        Self::start_in(extra_args, None, true)
    }

    /// Starts a daemon in the network namespace of `neighbour` (which must outlive it),
    /// so the two reach each other on loopback.
    pub fn start_beside(neighbour: &Daemon, extra_args: &[&str]) -> Daemon {
        Self::start_in(extra_args, Some(neighbour.netns.clone()), false)
    }

    fn start_in(extra_args: &[&str], shared_netns: Option<String>, cgroup2_only: bool) -> Daemon {
        let dir = tempfile::Builder::new()
            .prefix("pier-test-")
            .tempdir()
            .unwrap();
        let root = dir.path().join("root");
        let socket = dir.path().join("pier.sock");
        let docker_socket = dir.path().join("docker.sock");
        let suffix = dir.path().file_name().unwrap().to_string_lossy();
        let owns_netns = shared_netns.is_none();
        let netns = shared_netns
            .unwrap_or_else(|| format!("pt-{}", suffix.trim_start_matches("pier-test-")));
        if owns_netns {
            ip(&["netns", "add", &netns]);
            ip(&["-n", &netns, "link", "set", "lo", "up"]);
        }
        let mut d = Daemon {
            dir,
            root,
            socket,
            docker_socket,
            netns,
            extra_args: extra_args.iter().map(|s| s.to_string()).collect(),
            owns_netns,
            cgroup2_only,
            child: None,
        };
        d.spawn();
        d
    }

    /// Starts (again) on the same state directory.
    pub fn spawn(&mut self) {
        assert!(self.child.is_none(), "daemon already running");
        let log = fs::File::options()
            .create(true)
            .append(true)
            .open(self.dir.path().join("daemon.log"))
            .unwrap();
        let ns = fs::File::open(self.netns_path()).unwrap();
        let mut cmd = Command::new(PIER);
        cmd.args(["daemon", "--root"])
            .arg(&self.root)
            .arg("--socket")
            .arg(&self.socket)
            .arg("--docker-socket")
            .arg(&self.docker_socket)
            .args(&self.extra_args)
            .env("PIER_LOG", "debug")
            .stdout(Stdio::null())
            .stderr(log);
        // A configuration of its own (empty unless a test gives one), never the host's
        // /etc/pier/daemon.toml.
        if !self.extra_args.iter().any(|a| a == "--config") {
            let config = self.dir.path().join("daemon.toml");
            if !config.exists() {
                fs::write(&config, "").unwrap();
            }
            cmd.arg("--config").arg(config);
        }
        let cgroup2_only = self.cgroup2_only;
        // SAFETY: setns(2), unshare(2) and mount(2) only, on a descriptor kept open until
        // the child has exec'd.
        unsafe {
            use std::os::fd::AsFd;
            use std::os::unix::process::CommandExt;
            cmd.pre_exec(move || {
                rustix::thread::move_into_link_name_space(
                    ns.as_fd(),
                    Some(rustix::thread::LinkNameSpaceType::Network),
                )?;
                if cgroup2_only {
                    private_cgroup_view(c"cgroup2")?;
                }
                Ok(())
            });
        }
        let child = cmd.spawn().unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if self.socket.exists()
                && self.docker_socket.exists()
                && self.pier(&["info"]).status.success()
            {
                return;
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("daemon exited with {status} at start; log:\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "daemon did not come up; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The cgroup parent of this daemon's containers: `pier-` and its host tag.
    pub fn cgroup_parent(&self) -> String {
        format!("pier-{}", self.host_tag())
    }

    /// The directories container `id`'s cgroup may have (the parent's, for ""), in every
    /// v1 hierarchy and in the unified one.
    pub fn cgroup_dirs(&self, id: &str) -> Vec<PathBuf> {
        [
            "memory", "pids", "cpu", "freezer", "devices", "blkio", "cpuset", "cpuacct", "unified",
            "",
        ]
        .iter()
        .map(|ctl| {
            Path::new("/sys/fs/cgroup")
                .join(ctl)
                .join(self.cgroup_parent())
                .join(id)
        })
        .collect()
    }

    pub fn netns_path(&self) -> PathBuf {
        Path::new("/run/netns").join(&self.netns)
    }

    /// A command run inside the daemon's network namespace (where its host side is).
    pub fn in_netns(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.netns, program]);
        c
    }

    /// Names of the links in the daemon's network namespace.
    pub fn links(&self) -> Vec<String> {
        let out = Command::new("ip")
            .args(["-n", &self.netns, "-o", "link", "show"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| {
                let name = l.split(": ").nth(1)?;
                Some(name.split('@').next()?.to_string())
            })
            .collect()
    }

    /// The tag the daemon's root puts in the names of its host objects: four hex digits
    /// of the SHA-256 of its canonical root (only the default root, which no test uses,
    /// has none).
    pub fn host_tag(&self) -> String {
        use std::os::unix::ffi::OsStrExt;
        let root = fs::canonicalize(&self.root).unwrap();
        sha256_hex(root.as_os_str().as_bytes())[..4].to_string()
    }

    /// The daemon's nftables table (family `ip`).
    pub fn nft_table(&self) -> String {
        format!("pier_{}", self.host_tag())
    }

    /// The Linux bridge of the daemon's default network.
    pub fn default_bridge(&self) -> String {
        format!("pier{}", self.host_tag())
    }

    /// Whether `link` is the host end of one of this daemon's veths: `pv`, its tag and
    /// nine hex digits.
    pub fn owns_veth(&self, link: &str) -> bool {
        link.len() == 15
            && link
                .strip_prefix(&format!("pv{}", self.host_tag()))
                .is_some_and(|r| r.bytes().all(|b| b.is_ascii_hexdigit()))
    }

    /// Whether `link` is one of this daemon's VXLAN links (of networks across a pool):
    /// `pvx`, its tag, `-` and seven hex digits.
    pub fn owns_vxlan(&self, link: &str) -> bool {
        link.len() == 15
            && link
                .strip_prefix(&format!("pvx{}-", self.host_tag()))
                .is_some_and(|r| r.bytes().all(|b| b.is_ascii_hexdigit()))
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("daemon.log")).unwrap_or_default()
    }

    /// SIGTERM and wait: a clean stop removes the socket.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            signal(child.id(), rustix::process::Signal::TERM);
            let status = wait_timeout(&mut child, Duration::from_secs(20));
            assert!(
                status.success(),
                "daemon exited with {status} on SIGTERM; log:\n{}",
                self.log()
            );
            assert!(
                !self.socket.exists() && !self.docker_socket.exists(),
                "a stopped daemon must remove its sockets"
            );
        }
    }

    /// SIGKILL: the crash case.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    /// The real `docker` CLI (`cli` is its path: Debian's 20.10 `/usr/bin/docker` or the
    /// v28 `/usr/local/bin/docker`) talking to this daemon's Docker API, with a config
    /// directory of the test's own.
    pub fn docker_cmd(&self, cli: &str) -> Command {
        let mut c = Command::new(cli);
        c.env(
            "DOCKER_HOST",
            format!("unix://{}", self.docker_socket.display()),
        )
        .env("DOCKER_CONFIG", self.dir.path().join("docker-config"))
        .env_remove("DOCKER_API_VERSION")
        .env_remove("DOCKER_CONTEXT")
        .env_remove("DOCKER_TLS_VERIFY");
        c
    }

    /// Runs `docker ARGS` and returns its output.
    pub fn docker(&self, cli: &str, args: &[&str]) -> Output {
        self.docker_cmd(cli)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    pub fn cmd(&self) -> Command {
        let mut c = Command::new(PIER);
        c.env("PIER_HOST", &self.socket);
        c
    }

    /// Runs the CLI. One still running after [`SLOW_COMMAND`] has the state of every
    /// process under the daemon written to `slow.log` (see [`Daemon::slow_report`]), so
    /// that a stall that ends in a failure says where it stood.
    pub fn pier(&self, args: &[&str]) -> Output {
        let child = self
            .cmd()
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (done, waiting) = std::sync::mpsc::channel::<()>();
        let daemon = self.child.as_ref().map(|c| c.id() as i32);
        let (report, what) = (self.dir.path().join("slow.log"), format!("pier {args:?}"));
        let watchdog = std::thread::spawn(move || {
            if let (Err(std::sync::mpsc::RecvTimeoutError::Timeout), Some(pid)) =
                (waiting.recv_timeout(SLOW_COMMAND), daemon)
            {
                let text = format!(
                    "{what} still running after {} s; processes under the daemon:\n{}\n",
                    SLOW_COMMAND.as_secs(),
                    process_states(pid)
                );
                let _ = fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(report)
                    .and_then(|mut f| f.write_all(text.as_bytes()));
            }
        });
        let out = child.wait_with_output().unwrap();
        let _ = done.send(());
        let _ = watchdog.join();
        out
    }

    /// What [`Daemon::pier`] saw of commands that ran long (empty if none did).
    pub fn slow_report(&self) -> String {
        fs::read_to_string(self.dir.path().join("slow.log")).unwrap_or_default()
    }

    /// Runs the CLI with `input` on its stdin (closed after), capturing stdout and stderr.
    pub fn with_input(&self, args: &[&str], input: &[u8]) -> Output {
        let mut child = self
            .cmd()
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Fed from a thread while the output is read, so neither side waits on the other.
        let mut stdin = child.stdin.take().unwrap();
        let input = input.to_vec();
        let feeder = std::thread::spawn(move || stdin.write_all(&input));
        let out = child.wait_with_output().unwrap();
        feeder.join().unwrap().unwrap();
        out
    }

    /// Runs the CLI and returns stdout, failing the test on a non-zero exit.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.pier(args);
        assert!(
            out.status.success(),
            "pier {args:?} failed ({}):\nstdout: {}\nstderr: {}\n{}daemon log:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.slow_report(),
            self.log()
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Runs the CLI expecting failure; returns stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.pier(args);
        assert!(
            !out.status.success(),
            "pier {args:?} should have failed but printed {}",
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8(out.stderr).unwrap()
    }

    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut a = vec!["--format", "json"];
        a.extend_from_slice(args);
        serde_json::from_str(&self.ok(&a)).unwrap()
    }

    /// Every file under the image root except scratch space, with sizes: a snapshot to
    /// compare before and after an operation that must change nothing.
    pub fn image_files(&self) -> Vec<(String, u64)> {
        let mut out = Vec::new();
        walk(
            &self.root.join("images"),
            &self.root.join("images"),
            &mut out,
        );
        out.retain(|(p, _)| !p.starts_with("tmp/") && p != "oci/index.json");
        out.sort();
        out
    }

    pub fn tmp_is_empty(&self) -> bool {
        fs::read_dir(self.root.join("images/tmp"))
            .map(|mut d| d.next().is_none())
            .unwrap_or(true)
    }
}

fn walk(base: &Path, dir: &Path, out: &mut Vec<(String, u64)>) {
    let Ok(rd) = fs::read_dir(dir) else { return };
    for e in rd.flatten() {
        let p = e.path();
        let m = fs::symlink_metadata(&p).unwrap();
        let rel = p.strip_prefix(base).unwrap().to_string_lossy().into_owned();
        if m.is_dir() {
            out.push((format!("{rel}/"), 0));
            walk(base, &p, out);
        } else {
            out.push((rel, m.len()));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let panicking = std::thread::panicking();
        if self.child.is_some() {
            // Containers outlive the daemon by design: remove them first.
            let ids = String::from_utf8(self.pier(&["ps", "-aq", "--no-trunc"]).stdout)
                .unwrap_or_default();
            for id in ids.lines() {
                self.pier(&["rm", "-f", "-v", id]);
            }
            // Volumes outlive containers by design: remove them too.
            self.pier(&["volume", "prune", "--all", "--force"]);
            if !panicking {
                let left: Vec<_> = fs::read_dir(self.root.join("containers"))
                    .map(|d| d.flatten().map(|e| e.file_name()).collect())
                    .unwrap_or_default();
                assert!(left.is_empty(), "container directories left: {left:?}");
                for id in ids.lines() {
                    for cg in self.cgroup_dirs(id) {
                        assert!(!cg.exists(), "cgroup left: {}", cg.display());
                    }
                }
            }
        }
        if let Some(mut child) = self.child.take() {
            signal(child.id(), rustix::process::Signal::TERM);
            let status = wait_timeout(&mut child, Duration::from_secs(20));
            if !panicking {
                assert!(
                    status.success(),
                    "daemon exited with {status}; log:\n{}",
                    self.log()
                );
            }
        }
        if !panicking {
            // The containers' cgroup parent goes with the daemon when it is empty.
            for cg in self.cgroup_dirs("") {
                assert!(!cg.exists(), "cgroup parent left: {}", cg.display());
            }
            // Nothing of this daemon may stay mounted.
            let mounts = fs::read_to_string("/proc/self/mountinfo").unwrap();
            let root = self.dir.path().to_string_lossy().into_owned();
            assert!(
                !mounts.contains(&root),
                "mounts left under {root}:\n{mounts}"
            );
            assert!(!self.socket.exists(), "socket left behind");
            assert!(!self.docker_socket.exists(), "Docker socket left behind");
            // No loop device still backed by a file of this daemon's.
            let loops = Command::new("losetup").arg("-a").output().unwrap();
            let loops = String::from_utf8_lossy(&loops.stdout);
            assert!(
                !loops.contains(&root),
                "loop devices left under {root}:\n{loops}"
            );
            // With every container gone, no veth of theirs may stay (only this daemon's:
            // a daemon beside it keeps its own), and their namespace files are gone.
            // (The kernel removes a dead namespace's veths in the background.) Nor may a
            // VXLAN link of a network across a pool.
            let deadline = Instant::now() + Duration::from_secs(10);
            let veths = loop {
                let v: Vec<String> = self
                    .links()
                    .into_iter()
                    .filter(|l| self.owns_veth(l) || self.owns_vxlan(l))
                    .collect();
                if v.is_empty() || Instant::now() > deadline {
                    break v;
                }
                std::thread::sleep(Duration::from_millis(50));
            };
            assert!(veths.is_empty(), "veths or VXLAN links left: {veths:?}");
            let netns_left: Vec<_> = fs::read_dir(self.root.join("netns"))
                .map(|d| d.flatten().map(|e| e.file_name()).collect())
                .unwrap_or_default();
            assert!(
                netns_left.is_empty(),
                "namespace files left: {netns_left:?}"
            );
        }
        if self.owns_netns {
            let _ = Command::new("ip")
                .args(["netns", "del", &self.netns])
                .status();
        }
    }
}

fn signal(pid: u32, sig: rustix::process::Signal) {
    let pid = rustix::process::Pid::from_raw(pid as i32).unwrap();
    let _ = rustix::process::kill_process(pid, sig);
}

fn wait_timeout(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        if Instant::now() > deadline {
            child.kill().unwrap();
            return child.wait().unwrap();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Polls `f` until it holds, for at most 20 seconds.
/// A daemon started with `extra` arguments, with busybox imported as the image `bb`.
pub fn with_busybox(extra: &[&str]) -> Daemon {
    require_root_and_tools(&["ldd"]);
    let d = Daemon::start_with(extra);
    d.ok(&["image", "from-host", "bb", BUSYBOX]);
    d
}

/// A finished command's exit code (-1 for a signal), standard output and error.
pub fn outcome(o: &Output) -> (i32, String, String) {
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

pub fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Runs a throwaway container (`run --rm ARGS`); returns its exit code and its
/// stdout followed by its stderr.
pub fn try_run(d: &Daemon, args: &[&str]) -> (i32, String) {
    let mut full = vec!["run", "--rm"];
    full.extend_from_slice(args);
    let out = d.pier(&full);
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

// ---- archives made by the tests ----------------------------------------------------------

/// A busybox rootfs as a tar: /bin/busybox (static) plus applet symlinks and /etc files.
pub fn busybox_rootfs_tar() -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for d in ["bin", "etc", "tmp", "proc", "sys", "dev", "root"] {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_mode(0o755);
        h.set_mtime(1_700_000_000);
        h.set_size(0);
        b.append_data(&mut h, d, std::io::empty()).unwrap();
    }
    let bin = fs::read(BUSYBOX).unwrap();
    let mut h = tar::Header::new_gnu();
    h.set_mode(0o755);
    h.set_size(bin.len() as u64);
    h.set_mtime(1_700_000_000);
    b.append_data(&mut h, "bin/busybox", &bin[..]).unwrap();
    for applet in ["sh", "ls", "cat", "echo", "true"] {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_mode(0o777);
        h.set_size(0);
        b.append_link(&mut h, format!("bin/{applet}"), "busybox")
            .unwrap();
    }
    let passwd = b"root:x:0:0:root:/root:/bin/sh\n";
    let mut h = tar::Header::new_gnu();
    h.set_mode(0o644);
    h.set_size(passwd.len() as u64);
    b.append_data(&mut h, "etc/passwd", &passwd[..]).unwrap();
    b.into_inner().unwrap()
}

pub fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A `docker save` archive with one image whose layers are the given tars.
pub fn docker_archive(tag: &str, layers: &[Vec<u8>], diff_ids: Option<Vec<String>>) -> Vec<u8> {
    docker_archive_with(
        tag,
        layers,
        diff_ids,
        serde_json::json!({ "Cmd": ["/bin/sh"], "Env": ["PATH=/bin"] }),
    )
}

/// A `docker save` archive whose image config (`config` in the OCI config) is `image_config`.
pub fn docker_archive_with(
    tag: &str,
    layers: &[Vec<u8>],
    diff_ids: Option<Vec<String>>,
    image_config: serde_json::Value,
) -> Vec<u8> {
    let diff_ids = diff_ids.unwrap_or_else(|| {
        layers
            .iter()
            .map(|l| format!("sha256:{}", sha256_hex(l)))
            .collect()
    });
    let config = serde_json::json!({
        "architecture": "amd64", "os": "linux", "created": "2026-01-02T03:04:05Z",
        "config": image_config,
        "rootfs": { "type": "layers", "diff_ids": diff_ids },
        "history": layers.iter().map(|_| serde_json::json!({"created_by": "test"})).collect::<Vec<_>>(),
    });
    let config = serde_json::to_vec(&config).unwrap();
    let config_name = format!("{}.json", sha256_hex(&config));
    let mut files: Vec<(String, Vec<u8>)> = vec![(config_name.clone(), config)];
    let mut layer_names = Vec::new();
    for l in layers {
        let name = format!("{}/layer.tar", sha256_hex(l));
        files.push((name.clone(), l.clone()));
        layer_names.push(name);
    }
    let manifest =
        serde_json::json!([{ "Config": config_name, "RepoTags": [tag], "Layers": layer_names }]);
    files.push((
        "manifest.json".into(),
        serde_json::to_vec(&manifest).unwrap(),
    ));
    tar_of(&files)
}

pub fn tar_of(files: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, data) in files {
        let mut h = tar::Header::new_gnu();
        h.set_mode(0o644);
        h.set_size(data.len() as u64);
        b.append_data(&mut h, name, &data[..]).unwrap();
    }
    b.into_inner().unwrap()
}

/// Writes `bytes` to a file in the daemon's test directory and returns its path.
pub fn write_file(d: &Daemon, name: &str, bytes: &[u8]) -> String {
    let p = d.dir.path().join(name);
    fs::File::create(&p).unwrap().write_all(bytes).unwrap();
    p.to_string_lossy().into_owned()
}

/// The Python of the venv holding docker-py 7.2.0 (`ensure_docker_py` in scripts/lib.sh
/// makes it; scripts/test.sh runs that).
pub const DOCKER_PY: &str = "/var/cache/pier/docker-py-venv/bin/python";

impl Daemon {
    /// Runs a Python `script` with docker-py, `DOCKER_HOST` at this daemon's Docker API:
    /// its exit code, stdout and stderr.
    pub fn docker_py(&self, script: &str) -> (i32, String, String) {
        assert!(
            Path::new(DOCKER_PY).exists(),
            "{DOCKER_PY} is missing: scripts/test.sh makes it (ensure_docker_py in scripts/lib.sh)"
        );
        let out = Command::new(DOCKER_PY)
            .args(["-c", script])
            .env(
                "DOCKER_HOST",
                format!("unix://{}", self.docker_socket.display()),
            )
            .stdin(Stdio::null())
            .output()
            .unwrap();
        outcome(&out)
    }
}

/// One request to the Docker API socket, from this process (no client in between, so
/// two requests follow each other within microseconds): the status and the body (chunks
/// joined). `path` is under `/v1.41` unless it names its own version (`/v1.43/...`).
pub fn docker_api(d: &Daemon, method: &str, path: &str, body: &[u8]) -> (u16, String) {
    use std::io::Read;
    let mut s = std::os::unix::net::UnixStream::connect(&d.docker_socket).unwrap();
    let path = if path.starts_with("/v1.") {
        path.to_string()
    } else {
        format!("/v1.41{path}")
    };
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: docker\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .unwrap();
    s.write_all(body).unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    let out = String::from_utf8_lossy(&out).into_owned();
    let (head, rest) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    if !chunked {
        return (status, rest.to_string());
    }
    let mut body = String::new();
    let mut rest = rest;
    while let Some((size, tail)) = rest.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || tail.len() < n {
            break;
        }
        body.push_str(&tail[..n]);
        rest = tail[n..].trim_start_matches("\r\n");
    }
    (status, body)
}

/// Runs `cmd` (a shell line) in a pseudo-terminal of 40x100, typing each of `input`
/// 0.7 s after the one before; its exit code and what the terminal showed.
pub fn in_pty(cmd: &str, input: &[&[u8]]) -> (i32, String) {
    let mut child = std::process::Command::new("script")
        .args([
            "-qec",
            &format!("stty rows 40 cols 100; {cmd}"),
            "/dev/null",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let input: Vec<Vec<u8>> = input.iter().map(|i| i.to_vec()).collect();
    let feeder = std::thread::spawn(move || {
        for i in input {
            std::thread::sleep(Duration::from_millis(700));
            let _ = stdin.write_all(&i);
        }
        std::thread::sleep(Duration::from_millis(3000));
    });
    let out = child.wait_with_output().unwrap();
    feeder.join().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

// ---- several hosts on one machine ----------------------------------------------------------

/// A network standing for the hosts' physical one, as Incus tests clusters: a bridge in a
/// network namespace of its own, to which each daemon's namespace connects by a veth
/// (`lan0`, with an address of the LAN's /24). Dropping it deletes its namespace (the
/// bridge and the veths' ends go with it; a daemon's own end goes with the daemon's
/// namespace) and checks that nothing of it is left.
pub struct Lan {
    pub netns: String,
    /// The first three octets of the LAN's /24.
    prefix: String,
    hosts: u8,
}

impl Lan {
    pub fn new() -> Lan {
        let tag = &random_tag()[..6];
        let b = u8::from_str_radix(&tag[..2], 16).unwrap();
        let lan = Lan {
            netns: format!("pl-{tag}"),
            // 10.250-253.x.0/24: apart from Pier's 10.88.0.0/16 and private to the test.
            prefix: format!("10.{}.{b}", 250 + b % 4),
            hosts: 0,
        };
        ip(&["netns", "add", &lan.netns]);
        ip(&["-n", &lan.netns, "link", "set", "lo", "up"]);
        ip(&["-n", &lan.netns, "link", "add", "br0", "type", "bridge"]);
        ip(&["-n", &lan.netns, "link", "set", "br0", "up"]);
        lan
    }

    /// Connects the daemon's namespace to the LAN; returns its address there.
    pub fn connect(&mut self, d: &Daemon) -> String {
        self.hosts += 1;
        let end = format!("h{}", self.hosts);
        let addr = format!("{}.{}", self.prefix, self.hosts);
        ip(&[
            "-n",
            &self.netns,
            "link",
            "add",
            &end,
            "type",
            "veth",
            "peer",
            "name",
            "lan0",
            "netns",
            &d.netns,
        ]);
        ip(&[
            "-n",
            &self.netns,
            "link",
            "set",
            &end,
            "master",
            "br0",
            "up",
        ]);
        ip(&[
            "-n",
            &d.netns,
            "addr",
            "add",
            &format!("{addr}/24"),
            "dev",
            "lan0",
        ]);
        ip(&["-n", &d.netns, "link", "set", "lan0", "up"]);
        addr
    }
}

/// Makes a pool of `daemons` on `lan`: each connected to it, the first making the pool
/// (`h1`), the others joining it in turn (`h2`, `h3`, ...) with a fresh token; returns
/// their LAN addresses once every member is up on the last one.
pub fn pool_of(lan: &mut Lan, daemons: &[&Daemon]) -> Vec<String> {
    let addrs: Vec<String> = daemons.iter().map(|d| lan.connect(d)).collect();
    let h1 = daemons[0];
    h1.ok(&["cluster", "init", "--advertise", &addrs[0], "--name", "h1"]);
    let join_addr = format!("{}:7443", addrs[0]);
    for (i, d) in daemons.iter().enumerate().skip(1) {
        let token = h1.json(&["cluster", "token"])["token"]
            .as_str()
            .unwrap()
            .to_string();
        let name = format!("h{}", i + 1);
        d.ok(&["cluster", "join", &join_addr, &token, "--name", &name]);
    }
    let last = daemons[daemons.len() - 1];
    wait_until("every member up", || {
        last.json(&["host", "ls"])
            .as_array()
            .unwrap()
            .iter()
            .filter(|h| h["state"] == "up")
            .count()
            == daemons.len()
    });
    addrs
}

impl Drop for Lan {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.netns])
            .status();
        if !std::thread::panicking() {
            assert!(
                !Path::new("/run/netns").join(&self.netns).exists(),
                "the LAN's namespace {} is left",
                self.netns
            );
        }
    }
}

/// Twelve random hex digits.
pub fn random_tag() -> String {
    let mut b = [0u8; 6];
    fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut b))
        .unwrap();
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// How long a CLI command runs before [`Daemon::pier`] notes the processes' states.
pub const SLOW_COMMAND: Duration = Duration::from_secs(10);

/// Every process descended from `root`: pid, parent, state, wait channel, command line,
/// and the kernel stack of those not running.
pub fn process_states(root: i32) -> String {
    let stat = |pid: i32| -> Option<(i32, String)> {
        let s = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // After the command's closing parenthesis: state, then the parent's pid.
        let rest = &s[s.rfind(')')? + 2..];
        let mut f = rest.split(' ');
        let state = f.next()?.to_string();
        Some((f.next()?.parse().ok()?, state))
    };
    let mut parents = std::collections::HashMap::new();
    for e in fs::read_dir("/proc").into_iter().flatten().flatten() {
        if let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) {
            if let Some((ppid, state)) = stat(pid) {
                parents.insert(pid, (ppid, state));
            }
        }
    }
    let under = |mut pid: i32| {
        for _ in 0..64 {
            if pid == root {
                return true;
            }
            match parents.get(&pid) {
                Some((ppid, _)) if *ppid > 0 => pid = *ppid,
                _ => return false,
            }
        }
        false
    };
    let mut pids: Vec<_> = parents.keys().copied().filter(|p| under(*p)).collect();
    pids.sort();
    let mut out = String::new();
    for pid in pids {
        let (ppid, state) = &parents[&pid];
        let cmdline = fs::read(format!("/proc/{pid}/cmdline"))
            .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
            .unwrap_or_default();
        let wchan = fs::read_to_string(format!("/proc/{pid}/wchan")).unwrap_or_default();
        out += &format!(
            "  {pid} ppid {ppid} {state} wchan={wchan} {}\n",
            cmdline.trim()
        );
        if state != "R" {
            let stack = fs::read_to_string(format!("/proc/{pid}/stack")).unwrap_or_default();
            for l in stack.lines().take(12) {
                out += &format!("      {l}\n");
            }
        }
    }
    out
}

/// The actions of `host`'s events in `d`'s log, oldest first.
pub fn host_events(d: &Daemon, host: &str) -> Vec<String> {
    past_events(d, "10m", &["type=host", &format!("host={host}")])
        .into_iter()
        .map(|v| {
            assert_eq!(v["kind"], "host", "{v}");
            assert_eq!(v["attributes"]["name"], host, "{v}");
            v["action"].as_str().unwrap().to_string()
        })
        .collect()
}

/// The events `d` logged from `since` (`10m`, `30s`, ...) until now that pass every
/// `--filter` of `filters`, as `pier --format json events` prints them.
pub fn past_events(d: &Daemon, since: &str, filters: &[&str]) -> Vec<serde_json::Value> {
    let mut args = vec![
        "--format", "json", "events", "--since", since, "--until", "0s",
    ];
    for f in filters {
        args.extend(["--filter", f]);
    }
    d.ok(&args)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// The pid of the etcd the daemon on `d` runs (its data directory names the daemon's root).
pub fn etcd_pid(d: &Daemon) -> Option<i32> {
    let want = format!("--data-dir={}", d.root.join("etcd/data").display());
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: i32 = e.file_name().to_str()?.parse().ok()?;
        let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
        cmdline
            .split(|b| *b == 0)
            .any(|a| a == want.as_bytes())
            .then_some(pid)
    })
}
