//! Root tier: the CLI's messages and numbers as a Docker user meets them (issue 15):
//! errors worded to say what was wrong and what to do, stats and volume figures that are
//! the container's and the volume's own, no progress output without a terminal, the
//! daemon's configuration file, and the message a non-root user gets at the socket.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// `volume inspect NAME` as JSON (one volume).
fn volume(d: &Daemon, name: &str) -> serde_json::Value {
    d.json(&["volume", "inspect", name])[0].clone()
}

fn with_busybox() -> Daemon {
    require_root_and_tools(&["mkfs.ext4", "losetup"]);
    common::with_busybox(&[])
}

#[test]
#[ignore = "root tier: needs root; scripts/test.sh runs it (--run-ignored all)"]
fn errors_say_what_was_wrong_and_what_to_do() {
    let d = with_busybox();
    // inspect of a name that is neither a container nor an image.
    let out = d.pier(&["inspect", "nosuch"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "[]\n");
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "Error: no such container or image: nosuch\n"
    );
    // A relative bind source.
    assert_eq!(
        d.fails(&["run", "--rm", "-v", "site/html:/x", "bb", "true"]),
        "Error: invalid volume specification \"site/html:/x\": a bind mount needs an absolute host path, and \"site/html\" is relative (write \"$PWD/site/html:/x\" for one under the working directory); a bare name such as data:/x is a named volume\n"
    );
    // A CPU the host lacks: refused before the start, naming the CPUs there are.
    let online = std::fs::read_to_string("/sys/devices/system/cpu/online").unwrap();
    assert_eq!(
        d.fails(&["run", "--rm", "--cpuset-cpus", "999", "bb", "true"]),
        format!(
            "Error: --cpuset-cpus 999: this host has no CPU 999; its CPUs are {}\n",
            online.trim()
        )
    );
    assert!(d.json(&["ps", "-a"]).as_array().unwrap().is_empty());
    d.ok(&["run", "--rm", "--cpuset-cpus", "0", "bb", "true"]);
    // The project's quota, in human units.
    d.ok(&["quota", "--volume-bytes", "14m"]);
    d.ok(&["volume", "create", "--opt", "size=12m", "q1"]);
    assert_eq!(
        d.fails(&["volume", "create", "--opt", "size=3m", "q2"]),
        "Error: volume too large for project default's quota: 3 MiB requested, 12 MiB of 14 MiB committed; remove volumes or raise the quota (pier quota --volume-bytes)\n"
    );
    assert_eq!(
        d.fails(&["volume", "create", "q3"]),
        "Error: project default has a volume quota of 14 MiB: give the volume a size (--opt size=...)\n"
    );
    assert_eq!(
        d.ok(&["quota"]),
        "volume bytes: 12 MiB committed of 14 MiB\nvolumes: 1 of unlimited\n"
    );
    d.ok(&["quota", "--volume-bytes", "none"]);
    d.ok(&["volume", "rm", "q1"]);
    // A size with an inode count: made (it once failed with "could not size a filesystem").
    d.ok(&[
        "volume",
        "create",
        "--opt",
        "size=100m",
        "--opt",
        "inodes=1000",
        "vi",
    ]);
    let v = volume(&d, "vi");
    assert!(v["inode_limit"].as_u64().unwrap() >= 1000, "{v}");
    assert!(v["size_limit"].as_u64().unwrap() >= 100 << 20, "{v}");
    d.ok(&["volume", "rm", "vi"]);
    // More inodes than the size holds: a user error that says why.
    assert_eq!(
        d.fails(
            &["volume", "create", "--opt", "size=1m", "--opt", "inodes=100000", "vbad"]
        ),
        "Error: cannot create volume vbad: 100000 inodes do not fit in 1 MiB: ext4 needs 256 bytes for each, 24.4 MiB in all; give a larger size or fewer inodes\n"
    );
}

#[test]
#[ignore = "root tier: needs root; scripts/test.sh runs it (--run-ignored all)"]
fn a_user_other_than_root_is_told_the_socket_is_roots() {
    require_root_and_tools(&["setpriv"]);
    let d = Daemon::start();
    let out = Command::new("setpriv")
        .args([
            "--reuid",
            "nobody",
            "--regid",
            "nogroup",
            "--clear-groups",
            PIER,
        ])
        .arg("--host")
        .arg(&d.socket)
        .arg("ps")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        format!(
            "Error: permission denied on {}: the daemon's socket belongs to root. Run pier as root: `sudo pier ...`, or from a root shell (`su -`)\n",
            d.socket.display()
        )
    );
}

#[test]
#[ignore = "root tier: needs root; scripts/test.sh runs it (--run-ignored all)"]
fn stats_show_the_hosts_memory_and_network_traffic() {
    let d = with_busybox();
    d.ok(&["run", "-d", "--name", "s1", "bb", "sleep", "300"]);
    let c = d.json(&["inspect", "s1"]);
    let gw = c[0]["networks"]
        .as_object()
        .and_then(|n| n.values().next())
        .and_then(|n| n["gateway"].as_str())
        .unwrap_or_else(|| panic!("no gateway in {c}"))
        .to_string();
    d.ok(&["exec", "s1", "ping", "-c", "2", "-W", "1", &gw]);
    let s = d.json(&["stats", "--no-stream", "s1"]);
    let s = &s[0];
    let mem_total: u64 = std::fs::read_to_string("/proc/meminfo")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    assert_eq!(s["memory_limit"], serde_json::Value::Null, "{s}");
    assert_eq!(s["host_memory"].as_u64(), Some(mem_total * 1024), "{s}");
    let (rx, tx) = s["networks"]
        .as_object()
        .unwrap()
        .values()
        .fold((0, 0), |(r, t), n| {
            (
                r + n["rx_bytes"].as_u64().unwrap(),
                t + n["tx_bytes"].as_u64().unwrap(),
            )
        });
    assert!(rx >= 2 * 84 && tx >= 2 * 84, "two pings each way: {s}");
    // The table: the host's memory as the limit (GiB, never an 8388608 TiB "limit"),
    // and the NET I/O column.
    let table = d.ok(&["stats", "--no-stream", "s1"]);
    let (head, row) = table.split_once('\n').unwrap();
    assert!(
        head.contains("MEM USAGE / LIMIT") && head.contains("NET I/O"),
        "{table}"
    );
    let limit = format!("{:.2}GiB", (mem_total * 1024) as f64 / (1u64 << 30) as f64);
    assert!(row.contains(&format!(" / {limit}")), "{limit} in {table}");
    assert!(!row.contains("TiB"), "{table}");
    d.ok(&["rm", "-f", "s1"]);
}

#[test]
#[ignore = "root tier: needs root; scripts/test.sh runs it (--run-ignored all)"]
fn volume_figures_are_the_volumes_own() {
    require_root_and_tools(&["qemu-img"]);
    let d = with_busybox();
    // A block volume's usage is its image's, not the host filesystem's.
    d.ok(&[
        "volume", "create", "--driver", "block", "--opt", "size=64m", "b1",
    ]);
    let v = volume(&d, "b1");
    let image = d.root.join("volumes/default/b1/disk.raw");
    let on_disk = {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(&image).unwrap().blocks() * 512
    };
    assert_eq!(v["usage"]["bytes"].as_u64(), Some(on_disk), "{v}");
    assert!(on_disk < 64 << 20, "a sparse image");
    d.ok(&["volume", "rm", "b1"]);
    // Snapshots list when each was taken and its size.
    d.ok(&["volume", "create", "--opt", "size=20m", "lim"]);
    let (code, text) = try_run(
        &d,
        &[
            "-v",
            "lim:/v",
            "bb",
            "sh",
            "-c",
            "head -c 200000 /dev/urandom > /v/f",
        ],
    );
    assert_eq!(code, 0, "{text}");
    let before = pier_api_now();
    d.ok(&["volume", "snapshot", "lim", "s1"]);
    let list = d.json(&["volume", "snapshots", "lim"]);
    let snap = &list[0];
    assert_eq!(snap["name"], "s1", "{list}");
    let created = snap["created"].as_str().unwrap();
    assert!(
        created.len() == 20 && created.ends_with('Z') && created[..16] >= before[..16],
        "{created} vs {before}"
    );
    assert!(snap["size"].as_u64().unwrap() >= 200_000, "{list}");
    let table = d.ok(&["volume", "snapshots", "lim"]);
    let mut lines = table.lines();
    assert_eq!(
        lines.next().unwrap().split_whitespace().collect::<Vec<_>>(),
        ["NAME", "CREATED", "SIZE"]
    );
    let row: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(&row[..2], ["s1", created], "{table}");
    assert!(row[3] == "KiB" || row[3] == "MiB", "{table}");
    // Export and import keep the size limit; --opt size on import wins.
    let file = d.dir.path().join("lim.tar");
    d.ok(&["volume", "export", "-o", file.to_str().unwrap(), "lim"]);
    d.ok(&["volume", "import", "--name", "lim2", file.to_str().unwrap()]);
    let a = volume(&d, "lim");
    let b = volume(&d, "lim2");
    // Made as the original was asked for (20m); ext4's rounding may differ by a block.
    assert_eq!(b["options"]["size"], "20971520", "{a}\n{b}");
    let (sa, sb) = (
        a["size_limit"].as_u64().unwrap(),
        b["size_limit"].as_u64().unwrap(),
    );
    assert!(sb >= 20 << 20 && sb.abs_diff(sa) <= 512 << 10, "{a}\n{b}");
    d.ok(&[
        "volume",
        "import",
        "--name",
        "lim3",
        "--opt",
        "size=30m",
        file.to_str().unwrap(),
    ]);
    let c = volume(&d, "lim3");
    assert!(c["size_limit"].as_u64().unwrap() >= 30 << 20, "{c}");
    // The data came across.
    let (code, text) = try_run(&d, &["-v", "lim2:/v", "bb", "stat", "-c", "%s", "/v/f"]);
    assert_eq!((code, text.trim()), (0, "200000"));
    for v in ["lim", "lim2", "lim3"] {
        d.ok(&["volume", "rm", v]);
    }
}

/// Now, as RFC 3339 in UTC to the second (what `created` is compared with).
fn pier_api_now() -> String {
    let out = Command::new("date")
        .args(["-u", "+%Y-%m-%dT%H:%M:%SZ"])
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[test]
#[ignore = "root tier: needs root; scripts/test.sh runs it (--run-ignored all)"]
fn long_transfers_print_nothing_extra_without_a_terminal() {
    let d = with_busybox();
    let dir = d.dir.path();
    let quiet = |args: &[&str]| {
        let out = d.pier(args);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            String::from_utf8_lossy(&out.stderr),
            "",
            "{args:?}: no progress on a pipe"
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let archive = dir.join("bb.tar");
    quiet(&["image", "save", "-o", archive.to_str().unwrap(), "bb"]);
    assert!(std::fs::metadata(&archive).unwrap().len() > 100_000);
    quiet(&["image", "load", "-i", archive.to_str().unwrap()]);
    d.ok(&["run", "--name", "c1", "bb", "true"]);
    let exported = dir.join("c1.tar");
    quiet(&["export", "-o", exported.to_str().unwrap(), "c1"]);
    assert!(std::fs::metadata(&exported).unwrap().len() > 100_000);
    quiet(&["image", "import", exported.to_str().unwrap(), "c1img"]);
    d.ok(&["volume", "create", "v1"]);
    let vt = dir.join("v1.tar");
    quiet(&["volume", "export", "-o", vt.to_str().unwrap(), "v1"]);
    quiet(&["volume", "import", "--name", "v2", vt.to_str().unwrap()]);
    let ctx = dir.join("ctx");
    std::fs::create_dir(&ctx).unwrap();
    std::fs::write(ctx.join("Dockerfile"), "FROM bb\nCOPY . /ctx/\n").unwrap();
    std::fs::write(ctx.join("data"), vec![1u8; 300_000]).unwrap();
    let out = quiet(&["build", "-q", "-t", "built", ctx.to_str().unwrap()]);
    assert!(out.trim().starts_with("sha256:"), "{out}");
    d.ok(&["rm", "c1"]);
    for v in ["v1", "v2"] {
        d.ok(&["volume", "rm", v]);
    }
}

/// Runs `pier daemon ARGS` that must refuse to start; its exit code and stderr.
fn daemon_refuses(args: &[&str]) -> (Option<i32>, String) {
    let mut child = Command::new(PIER)
        .arg("daemon")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
            return (status.code(), err);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("pier daemon {args:?} started instead of refusing its configuration");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn registry_answers(d: &Daemon, addr: &str) -> bool {
    let out = d
        .in_netns("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--max-time",
            "5",
        ])
        .arg(format!("http://{addr}/v2/"))
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout) == "200"
}

#[test]
#[ignore = "root tier: needs root; scripts/test.sh runs it (--run-ignored all)"]
fn the_daemon_reads_its_configuration_file_and_flags_win() {
    require_root_and_tools(&["curl"]);
    let conf_dir = tempfile::tempdir().unwrap();
    let conf = conf_dir.path().join("daemon.toml");
    std::fs::write(
        &conf,
        "# the registry on loopback\nregistry-addr = \"127.0.0.1:5000\"\ninsecure-registry = [\"10.9.9.9:5000\"]\n",
    )
    .unwrap();
    let c = conf.to_str().unwrap();
    {
        let d = Daemon::start_with(&["--config", c]);
        assert!(registry_answers(&d, "127.0.0.1:5000"), "{}", d.log());
    }
    {
        let d = Daemon::start_with(&["--config", c, "--registry-addr", "127.0.0.1:5001"]);
        assert!(registry_answers(&d, "127.0.0.1:5001"), "{}", d.log());
        assert!(!registry_answers(&d, "127.0.0.1:5000"), "the flag wins");
    }
}

#[test]
#[ignore = "root tier: needs root; scripts/test.sh runs it (--run-ignored all)"]
fn a_bad_configuration_file_stops_the_daemon_with_the_reason() {
    require_root_and_tools(&[]);
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let sock = dir.path().join("pier.sock");
    let cases = [
        (
            "registry_addr = \"127.0.0.1:5000\"\n",
            ": unknown key `registry_addr` (did you mean `registry-addr`?); the valid keys are: root, socket, docker-socket, log-level, log-format, metrics-addr, cgroup-favordynmods, registry-addr, insecure-registry, registry-mirror, registry-ca, registry-upstream, registry-auth, registry-tls-cert, registry-tls-key, vm-dir, vm-accel, metrics-history-period, dashboard, dashboard-cert, dashboard-key, host-heartbeat, host-down-after, header-timeout",
        ),
        (
            "header-timeout = \"30\"\n",
            ": `header-timeout` must be an integer, not a string",
        ),
        (
            "log-level = \"debug\"\nregistry-addr = \"127.0.0.1:5000\n",
            ", line 2, column 32: invalid basic string, expected `\"`",
        ),
        (
            "registry-addr = \"nowhere\"\n",
            ": `registry-addr`: invalid value 'nowhere' for '--registry-addr <REGISTRY_ADDR>': invalid socket address syntax",
        ),
    ];
    for (i, (text, want)) in cases.iter().enumerate() {
        let conf = dir.path().join(format!("bad{i}.toml"));
        std::fs::write(&conf, text).unwrap();
        let (code, err) = daemon_refuses(&[
            "--root",
            root.to_str().unwrap(),
            "--socket",
            sock.to_str().unwrap(),
            "--config",
            conf.to_str().unwrap(),
        ]);
        assert_eq!(code, Some(1), "{text}: {err}");
        assert_eq!(err, format!("Error: {}{want}\n", conf.display()), "{text}");
        assert!(
            !Path::new(&sock).exists() && !root.exists(),
            "nothing started"
        );
    }
    // A --config that does not exist is an error too (the default path may be absent).
    let (code, err) = daemon_refuses(&[
        "--root",
        root.to_str().unwrap(),
        "--socket",
        sock.to_str().unwrap(),
        "--config",
        "/nonexistent/daemon.toml",
    ]);
    assert_eq!(code, Some(1));
    assert_eq!(
        err,
        "Error: cannot read the daemon configuration /nonexistent/daemon.toml: No such file or directory (os error 2)\n"
    );
}
