//! The commands Docker users reach for, through the real CLI against a private daemon:
//! `system df|prune|info`, `version`, `login`/`logout` (the credentials file), `container
//! ls`, top-level `save`/`load`/`tag`/`history`, `search`, `update` (the cgroup limit
//! changes) and `events --since/--until/--filter` for every object kind.

mod common;

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::*;

fn text(o: &Output) -> (i32, String, String) {
    outcome(o)
}

fn now_secs() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

#[test]
#[ignore = "root tier: needs root; scripts/test.sh runs it (--run-ignored all)"]
fn info_version_and_the_image_and_container_shortcuts() {
    let d = with_busybox(&[]);
    d.ok(&["create", "--name", "idle", "bb", "true"]);
    d.ok(&["run", "-d", "--name", "up", "bb", "sleep", "300"]);
    for args in [&["system", "info"][..], &["info"][..]] {
        let out = d.ok(args);
        for line in [
            "Server:",
            " Containers: 2",
            "  Running: 1",
            "  Paused: 0",
            "  Stopped: 1",
            " Images: 1",
            " Storage Driver: overlay",
            " Cgroup Driver: cgroupfs",
            " OSType: linux",
        ] {
            assert!(out.lines().any(|l| l == line), "{line:?} missing in\n{out}");
        }
        let cpus = std::thread::available_parallelism().unwrap().get();
        assert!(out.contains(&format!(" CPUs: {cpus}\n")), "{out}");
        assert!(
            out.contains(" Total Memory: ") && out.contains("GiB"),
            "{out}"
        );
        assert!(out.contains(" Cgroup Version: 1") || out.contains(" Cgroup Version: 2"));
        assert!(out.contains(" Runtimes: pier"), "{out}");
        assert!(
            out.contains(&format!("  Root Dir: {}", d.root.display())),
            "{out}"
        );
    }
    let info = d.json(&["system", "info"]);
    assert_eq!(info["containers_running"], 1);
    assert!(info["root_free_bytes"].as_u64().unwrap() > 0);

    // version: the client's and the server's sections.
    let v = d.ok(&["version"]);
    assert!(v.starts_with("Client:\n Version:           "), "{v}");
    assert!(
        v.contains("\nServer: Pier Engine\n Engine:\n  Version:          "),
        "{v}"
    );
    assert!(v.contains("  API version:      v1\n"), "{v}");
    assert!(v.contains("  OS/Arch:          linux/amd64\n"), "{v}");
    let j = d.json(&["version"]);
    assert_eq!(j["server"]["api_version"], "v1");
    assert_eq!(j["client"]["version"], j["server"]["version"]);
    // Without a daemon: the client's part, then the error, exit 1.
    let out = Command::new(PIER)
        .args(["-H", "/nonexistent/pier.sock", "version"])
        .output()
        .unwrap();
    let (code, stdout, stderr) = text(&out);
    assert_eq!(code, 1, "{stdout}{stderr}");
    assert!(
        stdout.starts_with("Client:\n") && !stdout.contains("Server:"),
        "{stdout}"
    );
    assert!(
        stderr.contains("cannot reach the Pier daemon at /nonexistent/pier.sock"),
        "{stderr}"
    );

    // container ls is ps, with its flags.
    let ls = d.ok(&["container", "ls"]);
    assert!(ls.starts_with("CONTAINER ID"), "{ls}");
    assert!(ls.contains(" up\n") && !ls.contains("idle"), "{ls}");
    let all = d.ok(&["container", "ls", "-a"]);
    assert!(all.contains("idle") && all.contains("up"), "{all}");
    assert!(!d.ok(&["container", "list"]).contains("idle"));

    // save, load, tag, history at the top level.
    d.ok(&["tag", "bb", "bb2:v1"]);
    assert!(d.ok(&["images"]).contains("bb2"));
    let h = d.ok(&["history", "bb2:v1"]);
    let ih = d.ok(&["image", "history", "bb"]);
    assert_eq!(h.lines().count(), ih.lines().count(), "{h}\n{ih}");
    assert!(h.starts_with("LAYER"), "{h}");
    let archive = d.dir.path().join("bb2.tar");
    d.ok(&["save", "-o", archive.to_str().unwrap(), "bb2:v1"]);
    d.ok(&["rmi", "bb2:v1"]);
    assert!(!d.ok(&["images"]).contains("bb2"));
    let loaded = d.ok(&["load", "-i", archive.to_str().unwrap()]);
    assert_eq!(loaded, "Loaded image: bb2:v1\n");
    assert!(d.ok(&["images"]).contains("bb2"));
    d.ok(&["rm", "-f", "up", "idle"]);
}

/// The host file of a v1 controller's (or the unified hierarchy's) limit of container `id`.
fn limit_file(d: &Daemon, id: &str, v1: (&str, &str), v2: &str) -> PathBuf {
    let v1_path = Path::new("/sys/fs/cgroup")
        .join(v1.0)
        .join(d.cgroup_parent())
        .join(id)
        .join(v1.1);
    if v1_path.exists() {
        return v1_path;
    }
    Path::new("/sys/fs/cgroup")
        .join(d.cgroup_parent())
        .join(id)
        .join(v2)
}

fn read_limit(p: &Path) -> String {
    std::fs::read_to_string(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .trim()
        .to_string()
}

#[test]
#[ignore = "root tier: needs root; scripts/test.sh runs it (--run-ignored all)"]
fn update_changes_a_running_containers_cgroup_and_its_spec() {
    let d = with_busybox(&[]);
    d.ok(&[
        "run", "-d", "--name", "web", "-m", "64m", "bb", "sleep", "300",
    ]);
    let id = d.json(&["inspect", "web"])[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let mem = limit_file(&d, &id, ("memory", "memory.limit_in_bytes"), "memory.max");
    let pids = limit_file(&d, &id, ("pids", "pids.max"), "pids.max");
    assert_eq!(read_limit(&mem), (64u64 << 20).to_string());
    assert_eq!(read_limit(&pids), "max");

    let out = d.ok(&[
        "update",
        "--memory",
        "128m",
        "--pids-limit",
        "40",
        "--cpus",
        "0.5",
        "--restart",
        "on-failure:3",
        "web",
    ]);
    assert_eq!(out, "web\n");
    assert_eq!(read_limit(&mem), (128u64 << 20).to_string());
    assert_eq!(read_limit(&pids), "40");
    let quota = limit_file(&d, &id, ("cpu", "cpu.cfs_quota_us"), "cpu.max");
    let q = read_limit(&quota);
    assert!(q == "50000" || q.starts_with("50000 "), "{q}");
    let c = &d.json(&["inspect", "web"])[0];
    assert_eq!(c["config"]["memory"], 128u64 << 20);
    assert_eq!(c["config"]["pids_limit"], 40);
    assert_eq!(c["config"]["cpus"], 0.5);
    assert_eq!(c["config"]["restart_policy"]["name"], "on-failure");
    assert_eq!(c["state"]["status"], "running");

    // A restart runs with the new limits (the bundle's spec has them).
    d.ok(&["restart", "-t", "1", "web"]);
    assert_eq!(read_limit(&mem), (128u64 << 20).to_string());
    assert_eq!(read_limit(&pids), "40");
    // -1 lifts the pids limit.
    d.ok(&["update", "--pids-limit", "-1", "web"]);
    assert_eq!(read_limit(&pids), "max");

    // Refused updates say why and change nothing.
    let err = d.fails(&["update", "--memory", "1k", "web"]);
    assert!(err.contains("minimum is 6MB"), "{err}");
    let err = d.fails(&["update", "web"]);
    assert!(err.contains("you must provide one or more flags"), "{err}");
    let (code, _, err) = text(&d.pier(&["update", "-m", "64m", "web", "nosuch"]));
    assert_eq!(code, 1);
    assert!(err.contains("no such container: nosuch"), "{err}");
    assert_eq!(
        read_limit(&mem),
        (64u64 << 20).to_string(),
        "web was updated"
    );

    // `docker update` through the Docker API is the same update.
    let docker = "/usr/local/bin/docker";
    let out = d.docker(
        docker,
        &["update", "--memory", "96m", "--pids-limit", "30", "web"],
    );
    assert!(out.status.success(), "{out:?}");
    assert_eq!(read_limit(&mem), (96u64 << 20).to_string());
    assert_eq!(read_limit(&pids), "30");
    assert_eq!(
        d.json(&["inspect", "web"])[0]["config"]["memory"],
        96u64 << 20
    );
    d.ok(&["rm", "-f", "web"]);
}

/// Reads `pier --format json events ARGS` to its end (`--until` ends it).
fn events(d: &Daemon, args: &[&str]) -> Vec<serde_json::Value> {
    let mut a = vec!["--format", "json", "events"];
    a.extend_from_slice(args);
    let out = d.ok(&a);
    out.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn actions(evs: &[serde_json::Value]) -> Vec<String> {
    evs.iter()
        .map(|e| {
            format!(
                "{} {}",
                e["kind"].as_str().unwrap(),
                e["action"].as_str().unwrap()
            )
        })
        .collect()
}

#[test]
#[ignore = "root tier: needs root; scripts/test.sh runs it (--run-ignored all)"]
fn events_since_until_and_filters_cover_every_kind() {
    let d = with_busybox(&[]);
    std::thread::sleep(Duration::from_millis(1100));
    let t0 = format!("{:.3}", now_secs());
    d.ok(&["create", "--name", "ev1", "bb", "true"]);
    d.ok(&["network", "create", "evnet"]);
    d.ok(&["volume", "create", "evvol"]);
    d.ok(&["tag", "bb", "evimg:1"]);
    std::thread::sleep(Duration::from_millis(300));
    let t1 = format!("{:.3}", now_secs());
    std::thread::sleep(Duration::from_millis(300));
    d.ok(&["create", "--name", "ev2", "bb", "true"]);
    let t2 = format!("{:.3}", now_secs() + 0.5);

    let window = events(&d, &["--since", &t0, "--until", &t1]);
    let kinds = actions(&window);
    for want in [
        "container create",
        "network create",
        "volume create",
        "image tag",
    ] {
        assert!(kinds.iter().any(|k| k == want), "{want} missing: {kinds:?}");
    }
    assert!(
        !window.iter().any(|e| e["attributes"]["name"] == "ev2"),
        "an event after --until: {kinds:?}"
    );
    let only = |f: &str| {
        actions(&events(
            &d,
            &["--since", &t0, "--until", &t2, "--filter", f],
        ))
    };
    assert_eq!(only("type=network"), vec!["network create"]);
    assert_eq!(only("type=volume"), vec!["volume create"]);
    assert_eq!(only("type=image"), vec!["image tag"]);
    assert_eq!(
        only("type=container"),
        vec!["container create", "container create"]
    );
    let ev2 = events(
        &d,
        &["--since", &t0, "--until", &t2, "--filter", "container=ev2"],
    );
    assert_eq!(actions(&ev2), vec!["container create"]);
    assert_eq!(ev2[0]["attributes"]["name"], "ev2");
    // Filters of the same key OR, of different keys AND.
    let both = events(
        &d,
        &[
            "--since",
            &t0,
            "--until",
            &t2,
            "-f",
            "type=network",
            "-f",
            "type=volume",
            "-f",
            "event=create",
        ],
    );
    assert_eq!(actions(&both), vec!["network create", "volume create"]);
    // A relative --since, and a bad filter or time, as Docker words them.
    assert!(actions(&events(&d, &["--since", "1m", "--until", &t2])).len() >= 5);
    let err = d.fails(&["events", "--filter", "colour=red", "--until", &t2]);
    assert!(err.contains("invalid filter 'colour'"), "{err}");
    let err = d.fails(&["events", "--since", "yesterday"]);
    assert!(err.contains("invalid time \"yesterday\""), "{err}");
    d.ok(&["rm", "ev1", "ev2"]);
    d.ok(&["network", "rm", "evnet"]);
    d.ok(&["volume", "rm", "evvol"]);
}

#[test]
#[ignore = "root tier: needs root; scripts/test.sh runs it (--run-ignored all)"]
fn system_df_and_prune_remove_what_they_should_and_nothing_else() {
    let d = with_busybox(&[]);
    d.ok(&[
        "run",
        "-d",
        "--name",
        "keep",
        "-v",
        "kept:/data",
        "bb",
        "sleep",
        "300",
    ]);
    d.ok(&[
        "run",
        "--name",
        "stopped",
        "-v",
        "/anon",
        "bb",
        "sh",
        "-c",
        "echo x > /f",
    ]);
    d.ok(&["network", "create", "unused"]);
    d.ok(&["network", "create", "used"]);
    d.ok(&["network", "connect", "used", "keep"]);
    d.ok(&["volume", "create", "named-unused"]);
    d.ok(&["tag", "bb", "spare:1"]);

    let df = d.ok(&["system", "df"]);
    let lines: Vec<&str> = df.lines().collect();
    assert!(
        lines[0].starts_with("TYPE") && lines[0].contains("RECLAIMABLE"),
        "{df}"
    );
    assert!(lines[1].starts_with("Images "), "{df}");
    assert!(lines[2].starts_with("Containers "), "{df}");
    let cols: Vec<&str> = lines[2].split_whitespace().collect();
    assert_eq!(&cols[1..3], &["2", "1"], "2 containers, 1 active: {df}");
    assert!(lines[3].starts_with("Local Volumes "), "{df}");
    assert!(lines[4].starts_with("Build Cache "), "{df}");
    let v = d.ok(&["system", "df", "-v"]);
    for section in [
        "Images space usage:",
        "Containers space usage:",
        "Local Volumes space usage:",
        "Build cache usage:",
    ] {
        assert!(v.contains(section), "{section} missing:\n{v}");
    }
    assert!(
        v.contains("VOLUME NAME") && v.contains("named-unused"),
        "{v}"
    );
    let j = d.json(&["system", "df"]);
    let stopped = j["containers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "stopped")
        .unwrap();
    assert!(stopped["size_rw"].as_u64().unwrap() > 0, "{stopped}");

    // Without -f it asks, as Docker does; anything but y keeps everything.
    let out = d.with_input(&["system", "prune"], b"n\n");
    let (code, stdout, stderr) = text(&out);
    assert_eq!(code, 0, "{stderr}");
    // On standard output, as Docker prints it.
    assert_eq!(
        stdout,
        "WARNING! This will remove:\n  - all stopped containers\n  - all networks not used by at least one container\n  - all dangling images\n  - unused build cache\n\nAre you sure you want to continue? [y/N] "
    );
    assert!(stderr.is_empty(), "{stderr}");
    assert!(d.ok(&["ps", "-a"]).contains("stopped"));

    let out = d.ok(&["system", "prune", "-f", "--volumes"]);
    assert!(out.contains("Deleted Containers:\n"), "{out}");
    assert!(out.contains("Deleted Networks:\nunused\n"), "{out}");
    assert!(out.contains("Total reclaimed space: "), "{out}");
    let ps = d.ok(&["ps", "-a"]);
    assert!(ps.contains("keep") && !ps.contains("stopped"), "{ps}");
    let nets = d.ok(&["network", "ls"]);
    assert!(nets.contains("used") && !nets.contains("unused"), "{nets}");
    let vols = d.ok(&["volume", "ls"]);
    assert!(
        vols.contains("kept") && vols.contains("named-unused"),
        "named volumes stay: {vols}"
    );
    assert_eq!(
        d.json(&["volume", "ls"]).as_array().unwrap().len(),
        2,
        "the stopped container's anonymous volume went: {vols}"
    );
    // Tagged images stay without -a; with -a, the ones no container uses go.
    assert!(d.ok(&["images"]).contains("spare"));
    d.ok(&["system", "prune", "-a", "-f"]);
    let images = d.ok(&["images"]);
    assert!(
        images.contains("bb"),
        "the running container's image stays: {images}"
    );
    d.ok(&["rm", "-f", "keep"]);
}

/// Runs the CLI with `PIER_CONFIG` set and `input` on stdin.
fn with_config(d: &Daemon, config: &Path, args: &[&str], input: &[u8]) -> Output {
    let mut child = d
        .cmd()
        .env("PIER_CONFIG", config)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    child.wait_with_output().unwrap()
}

fn hash_password(password: &str) -> String {
    let mut child = Command::new(PIER)
        .args(["registry", "hash-password"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{password}\n").as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[test]
#[ignore = "root tier: needs root; scripts/test.sh runs it (--run-ignored all)"]
fn login_stores_private_credentials_that_push_uses_and_logout_removes() {
    require_root_and_tools(&["ldd"]);
    let tmp = tempfile::tempdir().unwrap();
    let auth = tmp.path().join("auth.json");
    std::fs::write(
        &auth,
        serde_json::to_vec(&serde_json::json!({
            "anonymous_pull": false,
            "users": {"alice": {"password": hash_password("alice-pw"), "pull": ["*"], "push": ["*"]}}
        }))
        .unwrap(),
    )
    .unwrap();
    let d = with_busybox(&[
        "--registry-addr",
        "127.0.0.1:5000",
        "--registry-auth",
        auth.to_str().unwrap(),
    ]);
    let config = tmp.path().join("cfg");
    let file = config.join("config.json");
    const REF: &str = "127.0.0.1:5000/team/app:1";
    d.ok(&["tag", "bb", REF]);
    // Anonymous: the registry refuses the push.
    let (code, _, err) = text(&with_config(&d, &config, &["push", "-q", REF], b""));
    assert_ne!(code, 0, "{err}");

    // Wrong password: refused, nothing stored.
    let out = with_config(
        &d,
        &config,
        &["login", "127.0.0.1:5000", "-u", "alice", "--password-stdin"],
        b"wrong\n",
    );
    let (code, _, err) = text(&out);
    assert_eq!(code, 1, "{err}");
    assert!(!file.exists(), "refused credentials were stored");

    let out = with_config(
        &d,
        &config,
        &["login", "127.0.0.1:5000", "-u", "alice", "--password-stdin"],
        b"alice-pw\n",
    );
    let (code, stdout, err) = text(&out);
    assert_eq!((code, stdout.as_str()), (0, "Login Succeeded\n"), "{err}");
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&file), 0o600);
    assert_eq!(mode(&config), 0o700);
    let stored: serde_json::Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    // base64("alice:alice-pw")
    assert_eq!(
        stored["auths"]["127.0.0.1:5000"]["auth"],
        "YWxpY2U6YWxpY2UtcHc="
    );

    // pull and push use them.
    let (code, _, err) = text(&with_config(&d, &config, &["push", "-q", REF], b""));
    assert_eq!(code, 0, "{err}");
    let search = d.ok(&["search", "app"]);
    assert!(search.starts_with("NAME"), "{search}");
    assert!(
        search
            .lines()
            .next()
            .unwrap()
            .split_whitespace()
            .collect::<Vec<_>>()
            == ["NAME", "DESCRIPTION", "STARS", "OFFICIAL", "AUTOMATED"],
        "{search}"
    );
    assert!(
        search.lines().any(|l| l.starts_with("team/app ")),
        "{search}"
    );
    assert_eq!(d.ok(&["search", "nothing-like-it"]).lines().count(), 1);
    d.ok(&["rmi", REF]);
    let (code, _, err) = text(&with_config(&d, &config, &["pull", "-q", REF], b""));
    assert_eq!(code, 0, "{err}");

    // logout removes the entry, and says so; a second one says there was none.
    let out = with_config(&d, &config, &["logout", "127.0.0.1:5000"], b"");
    assert_eq!(
        text(&out).1,
        "Removing login credentials for 127.0.0.1:5000\n"
    );
    let stored: serde_json::Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    assert!(stored["auths"].get("127.0.0.1:5000").is_none(), "{stored}");
    assert_eq!(mode(&file), 0o600);
    let out = with_config(&d, &config, &["logout", "127.0.0.1:5000"], b"");
    assert_eq!(text(&out).1, "Not logged in to 127.0.0.1:5000\n");
    d.ok(&["rmi", REF]);
    let (code, _, _) = text(&with_config(&d, &config, &["pull", "-q", REF], b""));
    assert_ne!(code, 0, "pulled without credentials after logout");
}
