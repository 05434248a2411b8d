//! Root tier: `--cgroup-parent` (Docker's `HostConfig.CgroupParent`, cgroupfs driver)
//! through the real `docker` CLI, raw calls to the Docker API socket and `pier`: the
//! container's cgroup is `/<parent>/<id>` in every hierarchy, its limits are applied
//! there, every operation that finds its cgroup (stats, pause, update, top, cp, kill,
//! stop, rm, a daemon's restart) finds it there, the parent stays after the container
//! goes, and a parent that would leave its hierarchy is refused.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use serde_json::{json, Value};

const DOCKER: &str = "docker";

/// Runs the docker CLI; fails the test unless it succeeds; answers its stdout.
fn docker_ok(d: &Daemon, args: &[&str]) -> String {
    let (code, out, err) = outcome(&d.docker(DOCKER, args));
    assert_eq!(
        code,
        0,
        "docker {args:?}: {err}\n{out}\ndaemon log:\n{}",
        d.log()
    );
    out
}

/// The hierarchies of this host's cgroups: every v1 controller's and the unified one.
fn hierarchies() -> Vec<PathBuf> {
    std::fs::read_dir("/sys/fs/cgroup")
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir() && !p.is_symlink())
        .collect()
}

/// A cgroup parent of the test's own (unique, so tests can run in parallel and twice),
/// removed from every hierarchy when the test ends, after checking that nothing is left
/// in it. Made before the daemon, it is dropped after it.
struct Parent(String);

impl Parent {
    fn new() -> Parent {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        Parent(format!("cgp{}x{nanos}", std::process::id()))
    }

    /// Its directories (and their subdirectories), deepest first.
    fn dirs(&self) -> Vec<PathBuf> {
        fn walk(d: &Path, out: &mut Vec<PathBuf>) {
            if let Ok(rd) = std::fs::read_dir(d) {
                for e in rd.flatten() {
                    if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                        walk(&e.path(), out);
                    }
                }
            }
            out.push(d.to_path_buf());
        }
        let mut out = Vec::new();
        for h in hierarchies() {
            let top = h.join(&self.0);
            if top.exists() {
                walk(&top, &mut out);
            }
        }
        out
    }
}

impl Drop for Parent {
    fn drop(&mut self) {
        // Only empty cgroups can go: one with a process in it stays and is reported.
        let mut left = Vec::new();
        for d in self.dirs() {
            if std::fs::remove_dir(&d).is_err() {
                left.push(d);
            }
        }
        if !std::thread::panicking() {
            assert!(left.is_empty(), "cgroups left: {left:?}");
        }
    }
}

/// `docker run --cgroup-parent P/nested`: the container's processes are in
/// `/P/nested/<id>` of every hierarchy (cpuset too, whose two new levels get their cpus
/// and memory nodes), with its memory limit there; inspect echoes the parent; stats,
/// pause, update, top, cp, a daemon's crash and restart, stop and rm all find the
/// cgroup; after rm the container's cgroup is gone and the parent stays, as Docker
/// leaves it.
#[test]
#[ignore = "root tier: needs root; scripts/test.sh runs it (--run-ignored all)"]
fn a_container_lives_under_its_cgroup_parent() {
    let parent = Parent::new();
    let mut d = with_busybox(&[]);
    let nested = format!("{}/nested", parent.0);
    let id = docker_ok(
        &d,
        &[
            "run",
            "-d",
            "--name",
            "c",
            "--cgroup-parent",
            &nested,
            "--memory",
            "64m",
            "--tmpfs",
            "/scratch",
            "bb",
            "sleep",
            "1000",
        ],
    )
    .trim()
    .to_string();
    assert_eq!(id.len(), 64, "{id}");
    let ctl = |c: &str| Path::new("/sys/fs/cgroup").join(c).join(&nested).join(&id);
    let read = |p: PathBuf| {
        std::fs::read_to_string(&p)
            .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
            .trim()
            .to_string()
    };
    let pid = docker_ok(&d, &["inspect", "-f", "{{.State.Pid}}", "c"])
        .trim()
        .to_string();
    // Its init sits in the container's cgroup under the parent, in every hierarchy.
    for c in [
        "memory", "cpuset", "pids", "freezer", "devices", "cpu", "cpuacct", "blkio",
    ] {
        let procs = read(ctl(c).join("cgroup.procs"));
        assert!(procs.lines().any(|l| l == pid), "{c}: {procs}");
    }
    let own = read(PathBuf::from(format!("/proc/{pid}/cgroup")));
    let path = format!(":/{nested}/{id}");
    assert!(
        own.lines()
            .filter(|l| !l.starts_with("0::") && !l.contains(":name="))
            .all(|l| l.ends_with(&path)),
        "{own}"
    );
    assert!(!own.contains(&d.cgroup_parent()), "{own}");
    assert_eq!(
        read(ctl("memory").join("memory.limit_in_bytes")),
        (64u64 << 20).to_string()
    );
    // Both new cpuset levels were given their parent's cpus and memory nodes.
    for level in [parent.0.clone(), nested.clone()] {
        let dir = Path::new("/sys/fs/cgroup/cpuset").join(level);
        assert!(
            !read(dir.join("cpuset.cpus")).is_empty(),
            "{}",
            dir.display()
        );
        assert!(
            !read(dir.join("cpuset.mems")).is_empty(),
            "{}",
            dir.display()
        );
    }
    assert_eq!(
        docker_ok(&d, &["inspect", "-f", "{{.HostConfig.CgroupParent}}", "c"]).trim(),
        nested
    );

    // stats reads the limit from the container's cgroup.
    let stats = docker_ok(
        &d,
        &["stats", "--no-stream", "--format", "{{.MemUsage}}", "c"],
    );
    assert!(stats.trim().ends_with("/ 64MiB"), "{stats}");
    // pause freezes that cgroup.
    docker_ok(&d, &["pause", "c"]);
    assert_eq!(read(ctl("freezer").join("freezer.state")), "FROZEN");
    assert_eq!(
        docker_ok(&d, &["inspect", "-f", "{{.State.Status}}", "c"]).trim(),
        "paused"
    );
    docker_ok(&d, &["unpause", "c"]);
    assert_eq!(read(ctl("freezer").join("freezer.state")), "THAWED");
    // update changes the limit there, while it runs.
    docker_ok(
        &d,
        &["update", "--memory", "96m", "--memory-swap", "-1", "c"],
    );
    assert_eq!(
        read(ctl("memory").join("memory.limit_in_bytes")),
        (96u64 << 20).to_string()
    );
    // top lists the processes of that cgroup.
    let top = docker_ok(&d, &["top", "c"]);
    assert!(top.contains("sleep 1000"), "{top}");
    // cp reaches the running container's own mounts (a tmpfs a stopped one lacks).
    let file = write_file(&d, "hello.txt", b"through the running root\n");
    docker_ok(&d, &["cp", &file, "c:/scratch/hello.txt"]);
    assert_eq!(
        docker_ok(&d, &["exec", "c", "cat", "/scratch/hello.txt"]),
        "through the running root\n"
    );

    // A crashed daemon adopts it again, from its record.
    d.kill9();
    d.spawn();
    assert_eq!(
        docker_ok(&d, &["inspect", "-f", "{{.State.Pid}}", "c"]).trim(),
        pid
    );
    let stats = docker_ok(
        &d,
        &["stats", "--no-stream", "--format", "{{.MemUsage}}", "c"],
    );
    assert!(stats.trim().ends_with("/ 96MiB"), "{stats}");

    // stop, a start again under the same parent, kill, rm.
    docker_ok(&d, &["stop", "-t", "1", "c"]);
    assert!(!ctl("memory").exists(), "a stopped container has no cgroup");
    assert!(Path::new("/sys/fs/cgroup/memory").join(&nested).exists());
    docker_ok(&d, &["start", "c"]);
    let pid2 = docker_ok(&d, &["inspect", "-f", "{{.State.Pid}}", "c"])
        .trim()
        .to_string();
    assert!(read(ctl("memory").join("cgroup.procs"))
        .lines()
        .any(|l| l == pid2));
    docker_ok(&d, &["kill", "c"]);
    wait_until("the kill", || {
        docker_ok(&d, &["inspect", "-f", "{{.State.Status}}", "c"]).trim() == "exited"
    });
    docker_ok(&d, &["start", "c"]);
    docker_ok(&d, &["rm", "-f", "c"]);
    for h in hierarchies() {
        let gone = h.join(&nested).join(&id);
        assert!(!gone.exists(), "{} left", gone.display());
    }
    // The parent stays, as Docker leaves it (the test's Parent removes it).
    assert!(Path::new("/sys/fs/cgroup/memory").join(&nested).exists());
    drop(d);
}

/// `pier run --cgroup-parent` puts the container under the parent as Docker's does, with
/// Pier's runtime and with runc, and `pier inspect` shows it; an absolute parent is the
/// same place.
#[test]
#[ignore = "root tier: needs root; scripts/test.sh runs it (--run-ignored all)"]
fn the_native_cli_takes_a_cgroup_parent() {
    let parent = Parent::new();
    let d = with_busybox(&[]);
    let abs = format!("/{}/cli", parent.0);
    let out = d.ok(&[
        "run",
        "--rm",
        "--cgroup-parent",
        &abs,
        "bb",
        "cat",
        "/proc/self/cgroup",
    ]);
    let memory = out
        .lines()
        .find(|l| l.contains(":memory:"))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(
        memory.contains(&format!(":memory:/{}/cli/", parent.0)),
        "{out}"
    );
    // runc, given the same bundle, makes the same path (and the cpusets on the way).
    let out = d.ok(&[
        "run",
        "--rm",
        "--runtime",
        "runc",
        "--cgroup-parent",
        &format!("{}/runc/x", parent.0),
        "bb",
        "cat",
        "/proc/self/cgroup",
    ]);
    assert!(
        out.lines()
            .any(|l| l.contains(&format!(":cpuset:/{}/runc/x/", parent.0))),
        "{out}"
    );
    d.ok(&[
        "create",
        "--name",
        "n",
        "--cgroup-parent",
        &abs,
        "bb",
        "true",
    ]);
    let c = d.json(&["inspect", "n"]);
    let c = if c.is_array() { c[0].clone() } else { c };
    assert_eq!(c["config"]["cgroup_parent"], json!(abs), "{c}");
    let e = d.fails(&["create", "--cgroup-parent", "a/../../b", "bb", "true"]);
    assert!(e.contains("'..' are not allowed"), "{e}");
    d.ok(&["rm", "n"]);
    drop(d);
}

/// A parent that would leave its hierarchy, or sit in a Pier daemon's own cgroups, is
/// refused at create with a 400 saying why, and no container is made.
#[test]
#[ignore = "root tier: needs root; scripts/test.sh runs it (--run-ignored all)"]
fn a_bad_cgroup_parent_is_refused_at_create() {
    let d = with_busybox(&[]);
    for (bad, why) in [
        ("../x", "'..' are not allowed"),
        ("/a/./b", "'..' are not allowed"),
        ("a//b", "empty component"),
        ("a\nb", "control character"),
        ("pier/x", "Pier daemon's"),
    ] {
        let (status, body) = docker_api(
            &d,
            "POST",
            "/containers/create?name=bad",
            json!({"Image": "bb", "Cmd": ["true"], "HostConfig": {"CgroupParent": bad}})
                .to_string()
                .as_bytes(),
        );
        assert_eq!(status, 400, "{bad:?}: {body}");
        let msg = serde_json::from_str::<Value>(&body).unwrap()["message"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        assert!(
            msg.contains("--cgroup-parent") && msg.contains(why),
            "{bad:?}: {msg}"
        );
    }
    let (code, _, err) =
        outcome(&d.docker(DOCKER, &["create", "--cgroup-parent", "../x", "bb", "true"]));
    assert_ne!(code, 0);
    assert!(err.contains("'..' are not allowed"), "{err}");
    assert_eq!(
        docker_ok(&d, &["ps", "-aq"]).trim(),
        "",
        "no container made"
    );
    assert!(!Path::new("/sys/fs/cgroup/x").exists());
    drop(d);
}

/// On a pure cgroup v2 host the container's cgroup is `/<parent>/<id>` of the one
/// hierarchy, made with its new ancestors, and pause and stop reach it there.
#[test]
#[ignore = "root tier: needs root; scripts/test.sh runs it (--run-ignored all)"]
fn on_cgroup_v2_the_container_lives_under_its_parent() {
    require_root_and_tools(&["ldd"]);
    let parent = Parent::new();
    let d = Daemon::start_on_cgroup2(&[]);
    d.ok(&["image", "from-host", "bb", BUSYBOX]);
    let nested = format!("{}/a/b", parent.0);
    let id = docker_ok(
        &d,
        &[
            "run",
            "-d",
            "--cgroup-parent",
            &nested,
            "bb",
            "sleep",
            "1000",
        ],
    )
    .trim()
    .to_string();
    // The daemon's /sys/fs/cgroup is this host's unified hierarchy.
    let cg = Path::new("/sys/fs/cgroup/unified").join(&nested).join(&id);
    let pid = docker_ok(&d, &["inspect", "-f", "{{.State.Pid}}", &id])
        .trim()
        .to_string();
    let procs = std::fs::read_to_string(cg.join("cgroup.procs")).unwrap();
    assert_eq!(procs.trim(), pid, "the init is in it");
    docker_ok(&d, &["pause", &id]);
    let frozen = std::fs::read_to_string(cg.join("cgroup.freeze")).unwrap();
    assert_eq!(frozen.trim(), "1");
    docker_ok(&d, &["unpause", &id]);
    docker_ok(&d, &["stop", "-t", "1", &id]);
    docker_ok(&d, &["rm", &id]);
    assert!(!cg.exists(), "cgroup removed with the container");
    assert!(Path::new("/sys/fs/cgroup/unified").join(&nested).exists());
    drop(d);
}
