//! Root tier: a container stays in its box when cgroups are not what the daemon expects.
//! Devices on a pure cgroup v2 host (a BPF device program), a host with no cgroup
//! hierarchy (the daemon refuses to start), limits a host cannot apply (refused), and
//! signals that reach a container whose processes left its cgroup (through the
//! monitor's pidfd).

mod common;

use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

const SECRET: &str = "PIER-HOST-SECRET";

/// A host block device with a secret on it: a loop device over a file of the test's,
/// detached when dropped.
struct HostDisk {
    device: String,
    _file: tempfile::NamedTempFile,
}

impl HostDisk {
    fn new() -> HostDisk {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        let mut data = SECRET.as_bytes().to_vec();
        data.resize(1 << 20, 0);
        std::io::Write::write_all(&mut file, &data).unwrap();
        let out = Command::new("losetup")
            .args(["-f", "--show"])
            .arg(file.path())
            .output()
            .unwrap();
        assert!(out.status.success(), "losetup: {out:?}");
        HostDisk {
            device: String::from_utf8(out.stdout).unwrap().trim().to_string(),
            _file: file,
        }
    }

    /// `major minor`.
    fn numbers(&self) -> (u32, u32) {
        let rdev = std::fs::metadata(&self.device).unwrap().rdev();
        (rustix::fs::major(rdev), rustix::fs::minor(rdev))
    }
}

impl Drop for HostDisk {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["-d", &self.device]).status();
    }
}

fn assert_disk_unreadable(d: &Daemon) {
    let disk = HostDisk::new();
    let (major, minor) = disk.numbers();
    // The host itself reads it.
    let host = std::fs::read(&disk.device).unwrap();
    assert!(host.starts_with(SECRET.as_bytes()));
    let out = d.ok(&[
        "run",
        "--rm",
        "bb",
        "sh",
        "-c",
        &format!("mknod /tmp/disk b {major} {minor} && echo made; head -c 16 /tmp/disk 2>&1; true"),
    ]);
    assert!(
        out.starts_with("made\n"),
        "mknod is allowed (Docker's default): {out}"
    );
    assert!(
        out.contains("Operation not permitted") && !out.contains(SECRET),
        "a host disk must not be readable from a container: {out}"
    );
    // The devices the defaults allow still work.
    let out = d.ok(&[
        "run",
        "--rm",
        "bb",
        "sh",
        "-c",
        "echo hi > /dev/null && head -c 4 /dev/zero | wc -c && head -c 4 /dev/urandom | wc -c",
    ]);
    assert_eq!(out, "4\n4\n");
}

#[test]
#[ignore = "root tier: needs root; scripts/test.sh runs it (--run-ignored all)"]
fn a_container_cannot_read_a_host_disk_on_cgroup_v1() {
    require_root_and_tools(&["ldd", "losetup"]);
    let d = Daemon::start();
    d.ok(&["image", "from-host", "bb", BUSYBOX]);
    assert_disk_unreadable(&d);
}

#[test]
#[ignore = "root tier: needs root; scripts/test.sh runs it (--run-ignored all)"]
fn a_bpf_device_program_confines_containers_on_cgroup_v2() {
    require_root_and_tools(&["ldd", "docker", "losetup"]);
    let d = Daemon::start_on_cgroup2(&[]);
    d.ok(&["image", "from-host", "bb", BUSYBOX]);
    let info = d.docker("docker", &["info", "--format", "{{.CgroupVersion}}"]);
    let version = String::from_utf8_lossy(&info.stdout);
    assert_eq!(version.trim(), "2", "the daemon sees cgroup v2");
    assert_disk_unreadable(&d);
    // The container's cgroup is in the unified hierarchy, with the program attached.
    let id = d
        .ok(&["run", "-d", "bb", "sleep", "1000"])
        .trim()
        .to_string();
    let cg = std::path::Path::new("/sys/fs/cgroup/unified")
        .join(d.cgroup_parent())
        .join(&id);
    assert!(cg.join("cgroup.procs").exists(), "{}", cg.display());
    let procs = std::fs::read_to_string(cg.join("cgroup.procs")).unwrap();
    assert_eq!(procs.lines().count(), 1, "the init is in it: {procs}");
    // stop reaches it; pause freezes it through cgroup.freeze.
    d.ok(&["pause", &id]);
    assert_eq!(
        std::fs::read_to_string(cg.join("cgroup.freeze"))
            .unwrap()
            .trim(),
        "1"
    );
    d.ok(&["unpause", &id]);
    d.ok(&["stop", "-t", "1", &id]);
    d.ok(&["rm", &id]);
    assert!(!cg.exists(), "cgroup removed with the container");
    // No controller is enabled in this hierarchy on a hybrid host: a limit that cannot
    // be applied is refused, not dropped.
    let err = d.fails(&["run", "--rm", "--memory", "64m", "bb", "true"]);
    assert!(
        err.contains("--memory needs the memory cgroup controller"),
        "{err}"
    );
    let err = d.fails(&["create", "--pids-limit", "10", "bb", "true"]);
    assert!(err.contains("pids cgroup controller"), "{err}");
    assert_eq!(d.ok(&["ps", "-aq"]), "", "nothing half-made is left");
}

#[test]
#[ignore = "root tier: needs root; scripts/test.sh runs it (--run-ignored all)"]
fn a_daemon_that_finds_no_cgroups_refuses_to_start() {
    require_root_and_tools(&[]);
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(PIER);
    cmd.args(["daemon", "--root"])
        .arg(dir.path().join("root"))
        .arg("--socket")
        .arg(dir.path().join("pier.sock"))
        .args(["--docker-socket", ""])
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    // SAFETY: unshare(2) and mount(2) only, as `ip netns exec` does to /sys.
    unsafe {
        cmd.pre_exec(|| private_cgroup_view(c"tmpfs"));
    }
    let mut child = cmd.spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the daemon started without any cgroup hierarchy");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert!(!status.success(), "{err}");
    assert!(
        err.contains("no cgroup hierarchy") && err.contains("nsenter --net"),
        "the error says what is missing and what to do: {err}"
    );
    assert_eq!(
        err.matches("no cgroup hierarchy").count(),
        1,
        "said once: {err}"
    );
    assert!(!dir.path().join("pier.sock").exists());
}

#[test]
#[ignore = "root tier: needs root; scripts/test.sh runs it (--run-ignored all)"]
fn stop_and_kill_reach_a_container_that_left_its_cgroup() {
    require_root_and_tools(&["ldd"]);
    let d = Daemon::start();
    d.ok(&["image", "from-host", "bb", BUSYBOX]);
    for verb in ["kill", "stop", "rm"] {
        let id = d
            .ok(&["run", "-d", "bb", "sleep", "1000"])
            .trim()
            .to_string();
        let pid = d.json(&["inspect", &id])[0]["state"]["pid"]
            .as_i64()
            .unwrap();
        // The container's processes leave every cgroup of theirs (an administrator's
        // move, or a host whose hierarchies the daemon no longer sees): its pid cannot
        // be told from another by its cgroup any more.
        for ctl in [
            "memory", "pids", "cpu", "cpuacct", "cpuset", "blkio", "freezer", "devices",
        ] {
            std::fs::write(
                format!("/sys/fs/cgroup/{ctl}/cgroup.procs"),
                pid.to_string(),
            )
            .unwrap();
        }
        match verb {
            "kill" => drop(d.ok(&["kill", &id])),
            "stop" => drop(d.ok(&["stop", "-t", "1", &id])),
            _ => drop(d.ok(&["rm", "-f", &id])),
        }
        wait_until(&format!("{verb}: the container's init ends"), || {
            !std::path::Path::new(&format!("/proc/{pid}")).exists()
        });
        if verb != "rm" {
            wait_until("the container is recorded as exited", || {
                d.json(&["inspect", &id])[0]["state"]["status"] == "exited"
            });
            d.ok(&["rm", &id]);
        }
    }
}
