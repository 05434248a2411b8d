//! Root tier: containers run by the real daemon and runtime, checked from inside.

mod common;

use std::time::{Duration, Instant};

use common::*;

fn with_busybox() -> Daemon {
    require_root_and_tools(&["ldd"]);
    let d = Daemon::start();
    d.ok(&["image", "from-host", "bb", BUSYBOX]);
    d
}

fn run(d: &Daemon, args: &[&str]) -> (i32, String, String) {
    let out = d.pier(args);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn state(d: &Daemon, name: &str) -> serde_json::Value {
    d.json(&["inspect", name])[0]["state"].clone()
}

#[test]
#[ignore = "root tier: needs root; scripts/test.sh runs it (--run-ignored all)"]
fn exit_codes_output_and_bad_input() {
    let d = with_busybox();
    let (code, out, err) = run(
        &d,
        &[
            "run",
            "--rm",
            "bb",
            "sh",
            "-c",
            "echo out; echo err >&2; exit 3",
        ],
    );
    assert_eq!((code, out.as_str(), err.as_str()), (3, "out\n", "err\n"));
    let (code, _, err) = run(&d, &["run", "--rm", "bb", "/no/such/cmd"]);
    assert_eq!(code, 127, "{err}");
    assert!(
        err.contains("/no/such/cmd"),
        "the error names the path: {err}"
    );
    let (code, _, err) = run(&d, &["run", "--rm", "bb", "nosuchcmd"]);
    assert_eq!(code, 127);
    assert!(err.contains("executable file not found in $PATH"), "{err}");
    let (code, _, _) = run(&d, &["run", "--rm", "bb", "/etc/passwd"]);
    assert_eq!(code, 126, "not executable");
    let (code, _, err) = run(&d, &["run", "--rm", "nosuchimage", "true"]);
    assert_eq!(code, 125);
    assert!(err.contains("no such image"), "{err}");
    // Invalid limits are refused before anything is made.
    for (args, msg) in [
        (vec!["--memory", "10"], "minimum is 6MB"),
        (vec!["--ulimit", "nofile=99999999"], "hard limit"),
        (vec!["--cap-add", "NOT_A_CAP"], "unknown capability"),
        (vec!["--cpus", "99"], "out of range"),
    ] {
        let mut a = vec!["run", "--rm"];
        a.extend(args);
        a.extend(["bb", "true"]);
        let (code, _, err) = run(&d, &a);
        assert_eq!(code, 125, "{a:?}");
        assert!(err.contains(msg), "{a:?}: {err}");
    }
    assert_eq!(d.ok(&["ps", "-aq"]), "", "failed runs leave no container");
    assert!(
        std::fs::read_dir(d.root.join("containers"))
            .unwrap()
            .next()
            .is_none(),
        "and no directory"
    );
    // A failed start without --rm keeps the record (as Docker does), with the reason.
    let (code, _, _) = run(&d, &["run", "--name", "broken", "bb", "nosuchcmd"]);
    assert_eq!(code, 127);
    let s = state(&d, "broken");
    assert_eq!(s["exit_code"], 127);
    assert!(s["error"].as_str().unwrap().contains("nosuchcmd"));
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts.contains(d.root.to_str().unwrap()),
        "a failed start leaves no mount"
    );
}

#[test]
#[ignore = "root tier: needs root; scripts/test.sh runs it (--run-ignored all)"]
fn limits_and_security_seen_from_inside() {
    let d = with_busybox();
    // Docker's default capabilities, exactly.
    let out = d.ok(&["run", "--rm", "bb", "grep", "Cap", "/proc/self/status"]);
    for set in ["CapPrm", "CapEff", "CapBnd"] {
        assert!(
            out.contains(&format!("{set}:\t00000000a80425fb")),
            "{set}: {out}"
        );
    }
    let out = d.ok(&[
        "run",
        "--rm",
        "--cap-drop",
        "ALL",
        "--cap-add",
        "NET_ADMIN",
        "bb",
        "grep",
        "CapEff",
        "/proc/self/status",
    ]);
    assert_eq!(out.trim(), "CapEff:\t0000000000001000");
    let out = d.ok(&[
        "run",
        "--rm",
        "--user",
        "1000:1000",
        "bb",
        "sh",
        "-c",
        "id -u; id -g; grep CapEff /proc/self/status",
    ]);
    assert_eq!(out, "1000\n1000\nCapEff:\t0000000000000000\n");
    // rlimits: what was asked for, and no more than the host allows.
    let out = d.ok(&[
        "run",
        "--rm",
        "--ulimit",
        "nofile=512:1024",
        "--ulimit",
        "nproc=300",
        "bb",
        "sh",
        "-c",
        "ulimit -n; ulimit -Hn; ulimit -u",
    ]);
    assert_eq!(out, "512\n1024\n300\n");
    // Hostname, read-only root, masked and read-only paths.
    assert_eq!(
        d.ok(&["run", "--rm", "--hostname", "box1", "bb", "hostname"]),
        "box1\n"
    );
    let (code, _, err) = run(&d, &["run", "--rm", "--read-only", "bb", "touch", "/x"]);
    assert_ne!(code, 0);
    assert!(err.contains("Read-only file system"), "{err}");
    let (code, _, err) = run(
        &d,
        &[
            "run",
            "--rm",
            "bb",
            "sh",
            "-c",
            "echo x > /proc/sys/kernel/hostname",
        ],
    );
    assert_ne!(code, 0);
    assert!(err.contains("Read-only file system"), "{err}");
    assert_eq!(
        d.ok(&[
            "run",
            "--rm",
            "bb",
            "sh",
            "-c",
            "cat /proc/timer_list 2>/dev/null | wc -c"
        ])
        .trim(),
        "0",
        "masked"
    );
    // Only loopback in a new network namespace with `--network none`, and it is up.
    let out = d.ok(&[
        "run",
        "--rm",
        "--network",
        "none",
        "bb",
        "cat",
        "/proc/net/dev",
    ]);
    assert!(out.contains("lo:") && out.lines().count() == 3, "{out}");
    // A fork bomb stops at the pids limit (read with a shell builtin: forks fail).
    let out = d.ok(&["run", "--rm", "--pids-limit", "10", "bb", "sh", "-c", "(for i in $(seq 40); do sleep 5 & done) 2>/dev/null; read n < /sys/fs/cgroup/pids/pids.current; echo $n; read m < /sys/fs/cgroup/pids/pids.max; echo $m"]);
    let mut lines = out.lines();
    let current: u32 = lines.next().unwrap().parse().unwrap();
    assert!(current <= 10, "pids.current {current}");
    assert_eq!(lines.next(), Some("10"));
    // A memory hog is OOM-killed and inspect says so.
    let (code, _, _) = run(
        &d,
        &[
            "run",
            "--name",
            "hog",
            "--memory",
            "16m",
            "bb",
            "tail",
            "/dev/zero",
        ],
    );
    assert_eq!(code, 137);
    let s = state(&d, "hog");
    assert_eq!(s["oom_killed"], true);
    assert_eq!(s["exit_code"], 137);
    // Docker's seccomp profile by default; unconfined and custom profiles on request.
    let out = d.ok(&[
        "run",
        "--rm",
        "bb",
        "sh",
        "-c",
        "grep Seccomp: /proc/self/status; unshare -U true 2>&1; echo rc=$?",
    ]);
    assert!(out.starts_with("Seccomp:\t2\n"), "{out}");
    assert!(
        out.contains("Operation not permitted") && out.ends_with("rc=1\n"),
        "namespaces refused: {out}"
    );
    let out = d.ok(&[
        "run",
        "--rm",
        "--security-opt",
        "seccomp=unconfined",
        "bb",
        "grep",
        "Seccomp:",
        "/proc/self/status",
    ]);
    assert_eq!(out, "Seccomp:\t0\n");
    let profile = write_file(&d, "profile.json", br#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["mkdir","mkdirat"],"action":"SCMP_ACT_ERRNO","errnoRet":13}]}"#);
    let (code, _, err) = run(
        &d,
        &[
            "run",
            "--rm",
            "--security-opt",
            &format!("seccomp={profile}"),
            "bb",
            "mkdir",
            "/x",
        ],
    );
    assert_ne!(code, 0);
    assert!(err.contains("Permission denied"), "{err}");
    let out = d.ok(&[
        "run",
        "--rm",
        "--privileged",
        "bb",
        "sh",
        "-c",
        "grep Seccomp: /proc/self/status; mount -t tmpfs t /tmp && echo mounted",
    ]);
    assert_eq!(out, "Seccomp:\t0\nmounted\n");
    let (code, _, _) = run(
        &d,
        &["run", "--rm", "bb", "mount", "-t", "tmpfs", "t", "/tmp"],
    );
    assert_ne!(code, 0, "no mount without CAP_SYS_ADMIN");
    // CPU weight, CPU set and memory plus swap reach the cgroup too.
    let out = d.ok(&["run", "--rm", "--cpu-shares", "512", "--cpuset-cpus", "0", "--memory", "32m", "--memory-swap", "64m", "bb", "sh", "-c",
        "cat /sys/fs/cgroup/cpu/cpu.shares /sys/fs/cgroup/cpuset/cpuset.cpus /sys/fs/cgroup/memory/memory.limit_in_bytes; cat /sys/fs/cgroup/memory/memory.memsw.limit_in_bytes"]);
    assert_eq!(out, "512\n0\n33554432\n67108864\n");
    let err = d.fails(&[
        "run",
        "--rm",
        "--memory",
        "64m",
        "--memory-swap",
        "32m",
        "bb",
        "true",
    ]);
    assert!(
        err.contains("--memory-swap must be at least --memory"),
        "{err}"
    );
    // CPU quota reaches the cgroup.
    let out = d.ok(&[
        "run",
        "--rm",
        "--cpus",
        "0.5",
        "bb",
        "cat",
        "/sys/fs/cgroup/cpu/cpu.cfs_quota_us",
    ]);
    assert_eq!(out.trim(), "50000");
}

#[test]
#[ignore = "root tier: needs root; scripts/test.sh runs it (--run-ignored all)"]
fn lifecycle_commands() {
    let d = with_busybox();
    let id = d
        .ok(&[
            "run",
            "-d",
            "--name",
            "web",
            "-e",
            "GREETING=hi",
            "bb",
            "sh",
            "-c",
            "trap 'echo bye; exit 7' TERM; echo $GREETING; while true; do sleep 0.1; done",
        ])
        .trim()
        .to_string();
    assert_eq!(id.len(), 64);
    let ps = d.ok(&["ps"]);
    assert!(ps.contains("web") && ps.contains("Up "), "{ps}");
    wait_until("the greeting", || d.ok(&["logs", "web"]) == "hi\n");
    // exec: in the container's namespaces, cgroup and security, with its exit code.
    let (code, out, _) = run(
        &d,
        &[
            "exec",
            "web",
            "sh",
            "-c",
            "echo $GREETING; hostname; grep -E 'Seccomp:|CapEff' /proc/self/status; exit 4",
        ],
    );
    assert_eq!(code, 4);
    assert_eq!(
        out,
        format!(
            "hi\n{}\nCapEff:\t00000000a80425fb\nSeccomp:\t2\n",
            &id[..12]
        )
    );
    let out = d.ok(&[
        "exec",
        "-u",
        "1000",
        "-e",
        "X=y",
        "-w",
        "/tmp",
        "web",
        "sh",
        "-c",
        "id -u; echo $X; pwd; grep CapEff /proc/self/status",
    ]);
    assert_eq!(out, "1000\ny\n/tmp\nCapEff:\t0000000000000000\n");
    let (code, _, err) = run(&d, &["exec", "web", "nosuchcmd"]);
    assert_eq!(code, 127, "{err}");
    let procs = std::fs::read_to_string(format!(
        "/sys/fs/cgroup/pids/{}/{id}/cgroup.procs",
        d.cgroup_parent()
    ))
    .unwrap();
    assert_eq!(
        procs.lines().count(),
        2,
        "exec'd processes are gone, the two of the container remain: {procs}"
    );
    // top and stats read the container's processes and cgroup.
    let top = d.json(&["top", "web"]);
    let cmds: Vec<String> = top["processes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p[7].as_str().unwrap().to_string())
        .collect();
    assert!(cmds.iter().any(|c| c.starts_with("sh -c trap")), "{cmds:?}");
    let stats = d.json(&["stats", "--no-stream", "web"]);
    assert!(stats[0]["memory_usage"].as_u64().unwrap() > 0);
    assert!(stats[0]["pids_current"].as_u64().unwrap() >= 1);
    assert!(stats[0]["cpu_usage_ns"].as_u64().unwrap() > 0);
    // --init: PID 1 reaps orphans and passes signals on, so `stop` is immediate even for a
    // command without a handler.
    // An orphan is re-parented to PID 1; `sleep` as PID 1 never reaps it, the init does.
    let zombie_cmd = ["sh", "-c", "(sleep 0.1 &); exec sleep 30"];
    d.ok(&[&["run", "-d", "--name", "noinit", "bb"][..], &zombie_cmd].concat());
    d.ok(&[
        &["run", "-d", "--name", "withinit", "--init", "bb"][..],
        &zombie_cmd,
    ]
    .concat());
    std::thread::sleep(Duration::from_millis(700));
    let zombies = |name: &str| {
        d.ok(&["exec", name, "ps", "-o", "stat"])
            .lines()
            .filter(|l| l.trim() == "Z")
            .count()
    };
    assert_eq!(
        zombies("noinit"),
        1,
        "without --init the orphan stays a zombie"
    );
    assert_eq!(zombies("withinit"), 0, "the init reaped it");
    let init_cmdline = d.ok(&["exec", "withinit", "cat", "/proc/1/cmdline"]);
    assert!(
        !init_cmdline.contains(d.root.to_str().unwrap()) && !init_cmdline.contains(PIER),
        "no host path inside: {init_cmdline:?}"
    );
    // Under the init, the command (PID 2) and an exec's command start with no signal
    // blocked: the init blocks them all for itself only, from before its fork, so a
    // command that exits at once is reaped too (a burst of them each returns).
    let blocked = d.ok(&[
        "exec",
        "withinit",
        "grep",
        "SigBlk",
        "/proc/2/status",
        "/proc/self/status",
    ]);
    assert_eq!(blocked.lines().count(), 2, "{blocked}");
    assert!(
        blocked
            .lines()
            .all(|l| l.ends_with("SigBlk:\t0000000000000000")),
        "{blocked}"
    );
    for _ in 0..20 {
        d.ok(&["exec", "withinit", "true"]);
    }
    d.ok(&["rm", "-f", "noinit", "withinit"]);
    d.ok(&[
        "run", "-d", "--init", "--name", "sleeper", "bb", "sleep", "1000",
    ]);
    let started = Instant::now();
    d.ok(&["stop", "sleeper"]);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "SIGTERM reached sleep through the init"
    );
    assert_eq!(state(&d, "sleeper")["exit_code"], 143);
    d.ok(&["rm", "sleeper"]);
    // pause and unpause freeze the cgroup.
    d.ok(&["pause", "web"]);
    assert_eq!(state(&d, "web")["status"], "paused");
    let freezer = format!(
        "/sys/fs/cgroup/freezer/{}/{id}/freezer.state",
        d.cgroup_parent()
    );
    assert_eq!(std::fs::read_to_string(&freezer).unwrap().trim(), "FROZEN");
    d.ok(&["unpause", "web"]);
    assert_eq!(state(&d, "web")["status"], "running");
    // rm refuses a running container.
    let err = d.fails(&["rm", "web"]);
    assert!(
        err.contains("stop it first") && err.contains("--force"),
        "{err}"
    );
    // stop: the trap runs and its exit code is kept.
    d.ok(&["stop", "web"]);
    let s = state(&d, "web");
    assert_eq!(
        (s["status"].as_str(), s["exit_code"].as_i64()),
        (Some("exited"), Some(7))
    );
    assert!(d.ok(&["logs", "web"]).ends_with("bye\n"));
    assert_eq!(d.ok(&["wait", "web"]).trim(), "7");
    // start again; kill with a signal; rename; logs with timestamps and tail.
    d.ok(&["start", "web"]);
    assert_eq!(state(&d, "web")["status"], "running");
    d.ok(&["kill", "-s", "KILL", "web"]);
    wait_until("the kill", || state(&d, "web")["status"] == "exited");
    assert_eq!(state(&d, "web")["exit_code"], 137);
    d.ok(&["rename", "web", "site"]);
    assert_eq!(d.json(&["inspect", &id[..12]])[0]["name"], "site");
    let logs = d.ok(&["logs", "-t", "--tail", "1", "site"]);
    assert!(
        logs.starts_with("20") && logs.lines().count() == 1,
        "{logs}"
    );
    d.ok(&["restart", "-t", "1", "site"]);
    assert_eq!(state(&d, "site")["status"], "running");
    // create then start; ps filters.
    d.ok(&["create", "--name", "later", "bb", "true"]);
    assert!(d
        .ok(&["ps", "-a", "--filter", "status=created"])
        .contains("later"));
    d.ok(&["start", "later"]);
    wait_until("later to exit", || state(&d, "later")["status"] == "exited");
    assert!(d.ok(&["ps", "-a", "-f", "status=exited"]).contains("later"));
    assert!(!d.ok(&["ps"]).contains("later"));
    // One name, one container, even when asked for at once.
    let children: Vec<_> = (0..6)
        .map(|_| {
            d.cmd()
                .args(["create", "--name", "same", "bb", "true"])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let outcomes: Vec<_> = children
        .into_iter()
        .map(|c| c.wait_with_output().unwrap())
        .collect();
    assert_eq!(outcomes.iter().filter(|o| o.status.success()).count(), 1);
    assert!(outcomes
        .iter()
        .filter(|o| !o.status.success())
        .all(|o| String::from_utf8_lossy(&o.stderr).contains("already in use")));
    d.ok(&["rm", "same"]);
    // container prune removes what is stopped and keeps what runs.
    let later_id = d.json(&["inspect", "later"])[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let pruned = d.json(&["container", "prune", "-f"]);
    assert_eq!(pruned, serde_json::json!([later_id]));
    let all = d.ok(&["ps", "-a"]);
    assert!(all.contains("site") && !all.contains("later"), "{all}");
    d.ok(&["rm", "-f", "site"]);
    assert_eq!(d.ok(&["ps", "-aq"]), "");
    // Log rotation as asked: max-size and max-file.
    d.ok(&[
        "run",
        "--name",
        "chatty",
        "--log-opt",
        "max-size=2k",
        "--log-opt",
        "max-file=2",
        "bb",
        "sh",
        "-c",
        "for i in $(seq 300); do echo line $i; done",
    ]);
    let logs = d.ok(&["logs", "chatty"]);
    assert!(
        logs.ends_with("line 300\n") && !logs.contains("line 1\n"),
        "old lines rotated away"
    );
    let c = d.json(&["inspect", "chatty"])[0].clone();
    let log = std::path::PathBuf::from(c["log_path"].as_str().unwrap());
    assert!(std::fs::metadata(&log).unwrap().len() <= 2048);
    assert!(log.with_extension("log.1").exists() && !log.with_extension("log.2").exists());
    let err = d.fails(&["run", "--log-opt", "color=blue", "bb", "true"]);
    assert!(err.contains("unknown log option"), "{err}");
}

#[test]
#[ignore = "root tier: needs root; scripts/test.sh runs it (--run-ignored all)"]
fn restart_policies_and_events() {
    let d = with_busybox();
    let mut events = d
        .cmd()
        .args(["--format", "json", "events"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Events are seen from when the stream is open: read it on the side, and wait for a
    // probe's event before the containers under test start.
    let (tx, lines) = std::sync::mpsc::channel::<String>();
    let stdout = events.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        for l in std::io::BufRead::lines(std::io::BufReader::new(stdout)).map_while(Result::ok) {
            if tx.send(l).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        d.ok(&["create", "--name", "probe", "bb", "true"]);
        d.ok(&["rm", "probe"]);
        let seen = lines
            .recv_timeout(Duration::from_millis(500))
            .is_ok_and(|l| l.contains("probe"));
        if seen {
            break;
        }
        assert!(Instant::now() < deadline, "the event stream never opened");
    }
    d.ok(&[
        "run",
        "-d",
        "--name",
        "flaky",
        "--restart",
        "on-failure:2",
        "bb",
        "sh",
        "-c",
        "exit 5",
    ]);
    wait_until("two restarts", || {
        let s = state(&d, "flaky");
        s["status"] == "exited" && s["restart_count"] == 2
    });
    d.ok(&[
        "run",
        "-d",
        "--name",
        "forever",
        "--restart",
        "always",
        "bb",
        "sh",
        "-c",
        "sleep 0.2",
    ]);
    wait_until("a restart", || {
        state(&d, "forever")["restart_count"].as_u64().unwrap_or(0) >= 2
    });
    d.ok(&["stop", "forever"]);
    std::thread::sleep(Duration::from_millis(500));
    let s = state(&d, "forever");
    assert_eq!(s["status"], "exited", "a stopped container stays stopped");
    d.ok(&["rm", "-f", "flaky", "forever"]);
    // The destroy event may trail the command a little.
    let mut out: Vec<String> = Vec::new();
    while let Ok(l) = lines.recv_timeout(Duration::from_secs(2)) {
        let last = l.contains("\"destroy\"") && l.contains("forever");
        out.push(l);
        if last {
            break;
        }
    }
    let _ = events.kill();
    let _ = events.wait();
    out.extend(lines.try_iter());
    let _ = reader.join();
    let actions: Vec<String> = out
        .iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|e| e["attributes"]["name"] == "flaky")
        .map(|e| e["action"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        actions.iter().filter(|a| *a == "start").count(),
        3,
        "{actions:?}"
    );
    assert_eq!(
        actions.iter().filter(|a| *a == "die").count(),
        3,
        "{actions:?}"
    );
    assert_eq!(actions.first().map(String::as_str), Some("create"));
    assert_eq!(actions.last().map(String::as_str), Some("destroy"));
}

#[test]
#[ignore = "root tier: needs root; scripts/test.sh runs it (--run-ignored all)"]
fn live_restore_after_kill_9() {
    let mut d = with_busybox();
    let n = 20;
    for i in 0..n {
        d.ok(&[
            "run",
            "-d",
            "--name",
            &format!("c{i}"),
            "bb",
            "sh",
            "-c",
            "i=0; while true; do echo tick $i; i=$((i+1)); sleep 0.1; done",
        ]);
    }
    d.ok(&[
        "run",
        "-d",
        "--name",
        "quitter",
        "bb",
        "sh",
        "-c",
        "sleep 1; echo leaving; exit 42",
    ]);
    wait_until("output", || d.ok(&["logs", "c19"]).contains("tick 2"));
    let pids: Vec<i64> = (0..n)
        .map(|i| state(&d, &format!("c{i}"))["pid"].as_i64().unwrap())
        .collect();
    d.kill9();
    std::thread::sleep(Duration::from_millis(1500)); // the quitter exits meanwhile
    d.spawn();
    for (i, pid) in pids.iter().enumerate() {
        let s = state(&d, &format!("c{i}"));
        assert_eq!(s["status"], "running", "c{i} re-adopted");
        assert_eq!(s["pid"].as_i64().unwrap(), *pid, "same process");
    }
    let q = state(&d, "quitter");
    assert_eq!(
        (q["status"].as_str(), q["exit_code"].as_i64()),
        (Some("exited"), Some(42)),
        "exit recorded while the daemon was down"
    );
    assert_eq!(d.ok(&["logs", "quitter"]), "leaving\n");
    // Logs are continuous across the restart: no tick missing.
    std::thread::sleep(Duration::from_millis(300));
    let logs = d.ok(&["logs", "c3"]);
    let ticks: Vec<u64> = logs
        .lines()
        .map(|l| l.trim_start_matches("tick ").parse().unwrap())
        .collect();
    assert!(ticks.len() > 15, "{logs}");
    assert!(
        ticks.windows(2).all(|w| w[1] == w[0] + 1),
        "gap in {ticks:?}"
    );
    // A crash between spawning a monitor and recording "running": the restarted daemon
    // finds the monitor through its state file and adopts the container.
    let id = d
        .ok(&[
            "create",
            "--name",
            "late",
            // Started by hand below, without the daemon's network setup.
            "--network",
            "none",
            "bb",
            "sh",
            "-c",
            "echo started; sleep 100",
        ])
        .trim()
        .to_string();
    let layers: Vec<String> = d.json(&["image", "inspect", "bb"])[0]["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            d.root
                .join("images/layers")
                .join(l["diff_id"].as_str().unwrap().trim_start_matches("sha256:"))
                .display()
                .to_string()
        })
        .rev()
        .collect();
    d.kill9();
    let dir = d.root.join("containers").join(&id);
    let opts = format!(
        "lowerdir={},upperdir={},workdir={}",
        layers.join(":"),
        dir.join("upper").display(),
        dir.join("work").display()
    );
    let st = std::process::Command::new("mount")
        .args(["-t", "overlay", "overlay", "-o", &opts])
        .arg(dir.join("rootfs"))
        .status()
        .unwrap();
    assert!(st.success());
    // As the daemon spawns it: only stdout is read, up to the first line.
    let out = std::process::Command::new(PIER)
        .arg("__monitor")
        .arg(&dir)
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with("ok "),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    d.spawn();
    let s = state(&d, "late");
    assert_eq!(s["status"], "running", "adopted: {s}");
    wait_until("its output", || d.ok(&["logs", "late"]) == "started\n");
    d.ok(&["rm", "-f", "late"]);

    // The re-adopted containers stop and record their exits as usual.
    d.ok(&["stop", "-t", "1", "c0"]);
    assert_eq!(state(&d, "c0")["status"], "exited");
}

#[test]
#[ignore = "root tier: needs root; scripts/test.sh runs it (--run-ignored all)"]
fn many_runs_leak_nothing() {
    let d = with_busybox();
    let pid = d.pid();
    let fds = || {
        std::fs::read_dir(format!("/proc/{pid}/fd"))
            .unwrap()
            .count()
    };
    // Warm up lazily-opened descriptors, then count.
    for _ in 0..5 {
        d.ok(&["run", "--rm", "bb", "true"]);
    }
    let before = fds();
    let runs = std::env::var("PIER_LEAK_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let mut sampled = Vec::new();
    for i in 0..runs {
        let out = d.ok(&["run", "--rm", "bb", "echo", &i.to_string()]);
        assert_eq!(out, format!("{i}\n"));
        if i % 50 == 0 {
            // Now and then the same cycle in steps, to check the cgroup of a known ID.
            let id = d.ok(&["run", "-d", "bb", "true"]).trim().to_string();
            d.ok(&["wait", &id]);
            d.ok(&["rm", &id]);
            sampled.push(id);
        }
    }
    for id in &sampled {
        for cg in d.cgroup_dirs(id) {
            assert!(!cg.exists(), "cgroup left: {}", cg.display());
        }
    }
    assert_eq!(d.ok(&["ps", "-aq"]), "");
    assert!(std::fs::read_dir(d.root.join("containers"))
        .unwrap()
        .next()
        .is_none());
    let after = fds();
    assert!(
        after <= before + 2,
        "daemon descriptors grew from {before} to {after}"
    );
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(d.root.to_str().unwrap()), "mounts left");
}

#[test]
#[ignore = "root tier: needs root; scripts/test.sh runs it (--run-ignored all)"]
fn diff_commit_cp_export() {
    let d = with_busybox();
    d.ok(&["run", "--name", "fs1", "bb", "sh", "-c", "echo new > /newfile; echo more >> /etc/passwd; rm /bin/ls; mkdir -p /data/x; echo d > /data/x/f; ln -s /etc /data/evil"]);
    let diff = d.ok(&["diff", "fs1"]);
    for line in [
        "A /newfile",
        "C /etc/passwd",
        "D /usr/bin/ls",
        "A /data/x/f",
        "A /data/evil",
    ] {
        assert!(
            diff.lines().any(|l| l == line),
            "{line} missing from:\n{diff}"
        );
    }
    assert!(
        !diff.contains("/etc/hostname") && !diff.contains("/proc"),
        "runtime mount points are not changes:\n{diff}"
    );

    // commit: a new layer with the changes, deletions included.
    let id = d
        .ok(&["commit", "-m", "my change", "fs1", "committed:1"])
        .trim()
        .to_string();
    assert!(id.starts_with("sha256:"));
    let out = d.ok(&[
        "run",
        "--rm",
        "committed:1",
        "sh",
        "-c",
        "cat /newfile /data/x/f; test -e /bin/ls || echo gone",
    ]);
    assert_eq!(out, "new\nd\ngone\n");
    let h = d.json(&["image", "history", "committed:1"]);
    assert_eq!(h[0]["comment"], "my change");
    assert_eq!(
        d.json(&["image", "inspect", "committed:1"])[0]["layers"]
            .as_array()
            .unwrap()
            .len(),
        2
    );

    // cp out, into a new name and into a directory; a symlink in the container to /etc
    // arrives as a symlink, and nothing is written outside the destination.
    let host = d.dir.path().join("host");
    std::fs::create_dir(&host).unwrap();
    d.ok(&["cp", "fs1:/data", host.join("out").to_str().unwrap()]);
    assert_eq!(
        std::fs::read_to_string(host.join("out/x/f")).unwrap(),
        "d\n"
    );
    assert_eq!(
        std::fs::read_link(host.join("out/evil")).unwrap(),
        std::path::Path::new("/etc")
    );
    d.ok(&["cp", "fs1:/newfile", host.to_str().unwrap()]);
    assert_eq!(
        std::fs::read_to_string(host.join("newfile")).unwrap(),
        "new\n"
    );
    let err = d.fails(&["cp", "fs1:/no/such", host.to_str().unwrap()]);
    assert!(
        err.contains("no such file or directory in the container"),
        "{err}"
    );

    // cp in: to a directory, and under a new name, into a running container.
    std::fs::write(host.join("h.txt"), "hostdata").unwrap();
    d.ok(&["run", "-d", "--name", "fs2", "bb", "sleep", "100"]);
    d.ok(&["cp", host.join("h.txt").to_str().unwrap(), "fs2:/tmp/"]);
    d.ok(&[
        "cp",
        host.join("h.txt").to_str().unwrap(),
        "fs2:/tmp/renamed.txt",
    ]);
    d.ok(&["cp", host.join("out").to_str().unwrap(), "fs2:/copied"]);
    assert_eq!(
        d.ok(&[
            "exec",
            "fs2",
            "cat",
            "/tmp/h.txt",
            "/tmp/renamed.txt",
            "/copied/x/f"
        ]),
        "hostdatahostdatad\n"
    );
    // Through a symlink in the container: it resolves inside the container, not on the host.
    d.ok(&["exec", "fs2", "ln", "-s", "/", "/tmp/root"]);
    d.ok(&[
        "cp",
        host.join("h.txt").to_str().unwrap(),
        "fs2:/tmp/root/etc/",
    ]);
    assert_eq!(d.ok(&["exec", "fs2", "cat", "/etc/h.txt"]), "hostdata");
    assert!(!std::path::Path::new("/etc/h.txt").exists());

    // export: the whole rootfs of a stopped container.
    let tarball = host.join("exp.tar");
    d.ok(&["export", "-o", tarball.to_str().unwrap(), "fs1"]);
    let mut names = Vec::new();
    let mut ar = tar::Archive::new(std::fs::File::open(&tarball).unwrap());
    for e in ar.entries().unwrap() {
        names.push(
            e.unwrap()
                .path()
                .unwrap()
                .to_string_lossy()
                .trim_start_matches("./")
                .to_string(),
        );
    }
    for n in ["newfile", "data/x/f", "usr/bin/busybox"] {
        assert!(names.iter().any(|x| x == n), "{n} not exported");
    }
    assert!(
        !names.iter().any(|x| x == "usr/bin/ls"),
        "a deleted file is not exported"
    );
}

/// The same bundle under Pier's runtime and under Debian's runc behaves the same.
#[test]
#[ignore = "root tier: needs root; scripts/test.sh runs it (--run-ignored all)"]
fn differential_against_runc() {
    require_root_and_tools(&["runc"]);
    let d = with_busybox();
    let probe = "hostname; id; ulimit -n; ulimit -Hn; grep -E '^Cap|Seccomp:|NoNewPrivs' /proc/self/status; \
                 cut -d' ' -f2,3 /proc/self/mounts | sort; read p < /sys/fs/cgroup/pids/pids.max; echo pids=$p; \
                 cat /proc/timer_list 2>&1 | wc -c; echo x 2>&1 > /proc/sys/kernel/domainname; exit 3";
    let cases: Vec<Vec<&str>> = vec![
        vec!["--ulimit", "nofile=300:400", "--pids-limit", "30"],
        vec![
            "--user",
            "1000:1000",
            "--cap-add",
            "NET_ADMIN",
            "--security-opt",
            "no-new-privileges",
        ],
        vec![
            "--read-only",
            "--cap-drop",
            "ALL",
            "--security-opt",
            "seccomp=unconfined",
        ],
    ];
    for opts in cases {
        let mut outputs = Vec::new();
        for rt in ["pier", "runc"] {
            let mut args = vec!["run", "--rm", "--hostname", "same", "--runtime", rt];
            args.extend(&opts);
            args.extend(["bb", "sh", "-c", probe]);
            let out = d.pier(&args);
            outputs.push((
                out.status.code(),
                String::from_utf8_lossy(&out.stdout).into_owned(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            ));
        }
        assert_eq!(outputs[0].0, Some(3), "{opts:?}: {}", outputs[0].2);
        assert_eq!(
            outputs[0], outputs[1],
            "{opts:?}: Pier (left) and runc (right) differ"
        );
    }
}

/// Runs `cmd` under `script`, which gives it a real pseudo-terminal, feeding `input`.
fn in_pty(d: &Daemon, cmd: &str, input: &str) -> (i32, String) {
    use std::io::Write;
    let mut child = std::process::Command::new("script")
        .args([
            "-qec",
            &format!(
                "stty rows 40 cols 100; PIER_HOST={} {cmd}",
                d.socket.display()
            ),
            "/dev/null",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_string();
    // Typed a little later, as a person would, once the shell is up.
    let feeder = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(500));
        stdin.write_all(input.as_bytes()).unwrap();
        std::thread::sleep(Duration::from_millis(2000));
    });
    let out = child.wait_with_output().unwrap();
    feeder.join().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
#[ignore = "root tier: needs root; scripts/test.sh runs it (--run-ignored all)"]
fn interactive_and_terminal_sessions() {
    require_root_and_tools(&["script"]);
    let d = with_busybox();
    // -t with a command quicker than the client's attach: its output is kept for it,
    // though with --rm the container is gone as soon as the client has it.
    for i in 0..5 {
        let out = d.pier(&["run", "--rm", "-t", "bb", "echo", &format!("quick {i}")]);
        assert_eq!(out.status.code(), Some(0), "{out:?}");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            format!("quick {i}\r\n")
        );
    }
    assert_eq!(d.ok(&["ps", "-aq"]), "");
    // -i: stdin through, stdout and stderr apart, the exit code back.
    let out = d.with_input(
        &[
            "run",
            "-i",
            "--rm",
            "bb",
            "sh",
            "-c",
            "read line; echo got $line; echo oops >&2; exit 6",
        ],
        b"hello\n",
    );
    assert_eq!(out.status.code(), Some(6));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "got hello\n");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "oops\n");

    // A lot of input for a container that first writes a lot and reads only later: the
    // monitor must not block on the one while the other fills up.
    let big = vec![b'x'; 5 << 20];
    let out = d.with_input(
        &[
            "run",
            "-i",
            "--rm",
            "bb",
            "sh",
            "-c",
            "head -c 3000000 /dev/zero | tr '\\0' y; echo; wc -c",
        ],
        &big,
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let mut lines = text.lines();
    assert_eq!(lines.next().map(str::len), Some(3_000_000));
    assert_eq!(lines.next().map(str::trim), Some("5242880"));

    // -it: a real terminal in the container's own devpts, sized like ours.
    let pier = PIER;
    let (code, out) = in_pty(
        &d,
        &format!("{pier} run -it --rm bb sh"),
        "tty; stty size; echo $TERM; exit 9\n",
    );
    assert_eq!(code, 9, "{out}");
    assert!(out.contains("/dev/pts/0"), "{out}");
    assert!(out.contains("40 100"), "{out}");
    assert!(out.contains("xterm"), "{out}");

    // exec -i and exec -it into a running container.
    d.ok(&["run", "-d", "--name", "host1", "bb", "sleep", "1000"]);
    let out = d.with_input(
        &[
            "exec",
            "-i",
            "host1",
            "sh",
            "-c",
            "read l; echo got:$l; echo e >&2; exit 5",
        ],
        b"hello\n",
    );
    assert_eq!(
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).as_ref(),
            String::from_utf8_lossy(&out.stderr).as_ref()
        ),
        (Some(5), "got:hello\n", "e\n")
    );
    let (code, out) = in_pty(
        &d,
        &format!("{pier} exec -it host1 sh"),
        "tty; stty size; exit 8\n",
    );
    assert_eq!(code, 8, "{out}");
    assert!(out.contains("/dev/pts/") && out.contains("40 100"), "{out}");
    d.ok(&["rm", "-f", "host1"]);

    // attach to a running container with stdin open.
    d.ok(&[
        "run",
        "-d",
        "-i",
        "--name",
        "talker",
        "bb",
        "sh",
        "-c",
        "while read l; do echo echo:$l; done; exit 4",
    ]);
    let out = d.with_input(&["attach", "talker"], b"one\ntwo\n");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "echo:one\necho:two\n");
    assert_eq!(out.status.code(), Some(4));
    wait_until("talker to exit", || {
        state(&d, "talker")["status"] == "exited"
    });
    d.ok(&["rm", "talker"]);
}

/// The daemon turns on the kernel's cgroup `favordynmods`, without which moving each new
/// container into its cgroup waits for an RCU grace period (13-20 ms here).
#[test]
#[ignore = "root tier: needs root; scripts/test.sh runs it (--run-ignored all)"]
fn daemon_sets_cgroup_favordynmods() {
    require_root_and_tools(&[]);
    let cgroup2 = || {
        std::fs::read_to_string("/proc/self/mounts")
            .unwrap()
            .lines()
            .find(|l| l.split(' ').nth(2) == Some("cgroup2"))
            .map(str::to_string)
    };
    let line =
        cgroup2().expect("this host mounts cgroup2 (alone or as the hybrid `unified` hierarchy)");
    let target = line.split(' ').nth(1).unwrap().to_string();
    // Clear it, keeping the root's other options (other daemons only get slower
    // meanwhile), then start a daemon.
    let keep: Vec<&str> = line
        .split(' ')
        .nth(3)
        .unwrap()
        .split(',')
        .filter(|o| o.starts_with("nsdelegate") || o.starts_with("memory_"))
        .collect();
    let data = std::ffi::CString::new(keep.join(",")).unwrap();
    rustix::mount::mount_remount(
        target.as_str(),
        rustix::mount::MountFlags::empty(),
        data.as_c_str(),
    )
    .unwrap();
    assert!(!cgroup2().unwrap().contains("favordynmods"));
    let _d = Daemon::start();
    assert!(
        cgroup2().unwrap().contains("favordynmods"),
        "{}",
        cgroup2().unwrap()
    );
}

#[test]
#[ignore = "root tier: needs root; scripts/test.sh runs it (--run-ignored all)"]
fn user_namespace_maps_root_to_an_unprivileged_host_user() {
    use std::os::unix::fs::PermissionsExt;
    let d = with_busybox();
    // Bad mappings are refused before anything exists.
    for (args, says) in [
        (vec!["--uidmap", "0:100000"], "CONTAINER_ID:HOST_ID:SIZE"),
        (vec!["--uidmap", "1:100000:10"], "map the container's root"),
        (
            vec!["--uidmap", "0:100000:100", "--uidmap", "50:200000:10"],
            "overlap",
        ),
        (vec!["--uidmap", "0:100000:0"], "needs a size"),
        (
            vec!["--uidmap", "0:100000:65536", "--privileged"],
            "one or the other",
        ),
    ] {
        let mut a = vec!["run", "--rm"];
        a.extend(args);
        a.extend(["bb", "true"]);
        let err = d.fails(&a);
        assert!(err.contains(says), "{a:?}: {err}");
    }
    // The container's root must reach its rootfs as an unprivileged host user: a state
    // directory under a private one is named, with the fix.
    let parent = d.root.parent().unwrap().to_path_buf();
    std::fs::set_permissions(&parent, std::fs::Permissions::from_mode(0o700)).unwrap();
    let err = d.fails(&["run", "--rm", "--uidmap", "0:100000:65536", "bb", "true"]);
    assert!(err.contains("chmod o+x"), "{err}");
    assert_eq!(d.ok(&["ps", "-aq"]), "");
    std::fs::set_permissions(&parent, std::fs::Permissions::from_mode(0o711)).unwrap();

    // A host file only the host's root may read, bound into two containers.
    let secret_dir = parent.join("secret");
    std::fs::create_dir(&secret_dir).unwrap();
    std::fs::write(secret_dir.join("key"), "s3cret").unwrap();
    std::fs::set_permissions(
        secret_dir.join("key"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    let bind = format!("{}:/secret", secret_dir.display());

    d.ok(&[
        "run",
        "-d",
        "--name",
        "u",
        "--uidmap",
        "0:100000:65536",
        "-v",
        &bind,
        "bb",
        "sh",
        "-c",
        "echo data > /root/f; sleep 1000",
    ]);
    let info = d.json(&["inspect", "u"]);
    let pid = info[0]["state"]["pid"].as_i64().unwrap();
    let id = info[0]["id"].as_str().unwrap().to_string();
    // On the host the container's root is user 100000...
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    assert!(
        status
            .lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>()
                == ["Uid:", "100000", "100000", "100000", "100000"]),
        "{status}"
    );
    // ...and inside it is root, with Docker's capabilities, over the image's files.
    assert_eq!(d.ok(&["exec", "u", "id", "-u"]), "0\n");
    // On the default network, whose namespace the host owns, raw sockets stay out of
    // reach; ICMP echo sockets are open to every group, as Docker sets it.
    // (Read from the host: inside, host group IDs it does not map show as 65534.)
    let range = std::process::Command::new("nsenter")
        .arg(format!("--net=/proc/{pid}/ns/net"))
        .args(["cat", "/proc/sys/net/ipv4/ping_group_range"])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&range.stdout)
            .split_whitespace()
            .collect::<Vec<_>>(),
        ["0", "2147483647"]
    );
    assert_eq!(
        d.ok(&["exec", "u", "cat", "/proc/self/uid_map"])
            .split_whitespace()
            .collect::<Vec<_>>(),
        ["0", "100000", "65536"]
    );
    assert_eq!(
        d.ok(&["exec", "u", "stat", "-c", "%u:%g", "/etc/passwd"]),
        "0:0\n"
    );
    assert_eq!(
        d.ok(&["exec", "u", "grep", "CapEff", "/proc/self/status"]),
        "CapEff:\t00000000a80425fb\n"
    );
    wait_until("the container wrote its file", || {
        d.ok(&["exec", "u", "cat", "/root/f"]) == "data\n"
    });
    // The host's root-only file stays out of reach of the container's root, which a
    // container without a user namespace reads.
    let (code, _) = try_run(&d, &["exec", "u", "cat", "/secret/key"]);
    assert_ne!(code, 0, "the container's root read a host root-only file");
    assert_eq!(
        d.ok(&["run", "--rm", "-v", &bind, "bb", "cat", "/secret/key"]),
        "s3cret"
    );
    // What it wrote is on disk with the container's IDs, so commit carries them as is.
    let written = d.root.join("containers").join(&id).join("upper/root/f");
    let meta = std::fs::metadata(&written).unwrap();
    assert_eq!(
        (
            std::os::unix::fs::MetadataExt::uid(&meta),
            std::os::unix::fs::MetadataExt::gid(&meta)
        ),
        (0, 0)
    );
    d.ok(&["stop", "-t", "1", "u"]);
    d.ok(&["commit", "u", "from-userns:1"]);
    assert_eq!(
        d.ok(&[
            "run",
            "--rm",
            "from-userns:1",
            "stat",
            "-c",
            "%u %n",
            "/root/f"
        ]),
        "0 /root/f\n"
    );
    // Started again, it is mapped again; then removed, it leaves nothing.
    d.ok(&["start", "u"]);
    assert_eq!(d.ok(&["exec", "u", "id", "-u"]), "0\n");
    d.ok(&["rm", "-f", "u"]);
    // A one-shot run, without a network of its own and with one.
    assert_eq!(
        d.ok(&[
            "run",
            "--rm",
            "--network",
            "none",
            "--uidmap",
            "0:200000:65536",
            "bb",
            "sh",
            "-c",
            "id -u; cat /proc/self/gid_map"
        ])
        .split_whitespace()
        .collect::<Vec<_>>(),
        ["0", "0", "200000", "65536"]
    );
    assert_eq!(d.ok(&["ps", "-aq"]), "");
}

#[test]
#[ignore = "root tier: needs root; scripts/test.sh runs it (--run-ignored all)"]
fn an_rm_container_whose_record_a_kill_9_lost_is_adopted() {
    // A `--rm` container's record is written without waiting for the disk; the daemon
    // killed right after its start loses it (without a network nothing else reaches the
    // disk meanwhile), and the next start adopts the container from its directory
    // instead of removing what looks like leftovers.
    let mut d = with_busybox();
    let id = d
        .ok(&[
            "run",
            "-d",
            "--rm",
            "--network",
            "none",
            "--name",
            "eph",
            "bb",
            "sh",
            "-c",
            "echo before; sleep 1000",
        ])
        .trim()
        .to_string();
    wait_until("the container printed", || {
        d.ok(&["logs", "eph"]) == "before\n"
    });
    d.kill9();
    d.spawn();
    assert!(
        d.log()
            .contains("adopted a running container whose record was lost"),
        "{}",
        d.log()
    );
    let info = d.json(&["inspect", "eph"]);
    assert_eq!(info[0]["id"], id.as_str());
    assert_eq!(info[0]["state"]["status"], "running");
    assert_eq!(d.ok(&["logs", "eph"]), "before\n");
    assert_eq!(d.ok(&["exec", "eph", "echo", "alive"]), "alive\n");
    // Stopped, it goes as a `--rm` container does.
    d.ok(&["stop", "-t", "1", "eph"]);
    wait_until("the container is removed", || {
        d.ok(&["ps", "-aq"]).is_empty()
    });
}

#[test]
#[ignore = "root tier: needs root; scripts/test.sh runs it (--run-ignored all)"]
fn a_killed_monitor_zygote_is_replaced() {
    // The zygote forks every monitor; killed, the next start brings up another, and the
    // containers it forked before run on.
    let d = with_busybox();
    d.ok(&["run", "-d", "--name", "before", "bb", "sleep", "1000"]);
    let zygotes = || -> Vec<u32> {
        std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
            .filter(|pid| {
                let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                let status =
                    std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
                cmdline.starts_with(b"pier\0__monitor-zygote\0")
                    && status.lines().any(|l| l == format!("PPid:\t{}", d.pid()))
            })
            .collect()
    };
    let first = zygotes();
    assert_eq!(first.len(), 1, "one zygote per daemon: {first:?}");
    let killed = std::process::Command::new("kill")
        .args(["-9", &first[0].to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    wait_until("the zygote is gone", || {
        !std::path::Path::new(&format!("/proc/{}/cmdline", first[0])).exists()
            || std::fs::read(format!("/proc/{}/cmdline", first[0]))
                .unwrap_or_default()
                .is_empty()
    });
    assert_eq!(d.ok(&["run", "--rm", "bb", "echo", "after"]), "after\n");
    let second = zygotes();
    assert_eq!(second.len(), 1, "{second:?}");
    assert_ne!(second, first);
    assert_eq!(d.ok(&["exec", "before", "echo", "alive"]), "alive\n");
    d.ok(&["rm", "-f", "before"]);
}

/// Every request of both APIs acts in the project its `X-Pier-Project` header names
/// (`default` without one); a project that does not exist, or a malformed name, is refused
/// before anything is done.
#[test]
#[ignore = "root tier: needs root; scripts/test.sh runs it (--run-ignored all)"]
fn requests_act_in_the_project_they_name() {
    require_root_and_tools(&["curl"]);
    let d = with_busybox();
    d.ok(&["create", "--name", "in-default", "bb", "true"]);
    let curl = |socket: &std::path::Path, path: &str, project: Option<&str>| {
        let mut c = std::process::Command::new("curl");
        c.args(["-s", "-w", "\n%{http_code}", "--unix-socket"])
            .arg(socket)
            .arg(format!("http://pier{path}"));
        if let Some(p) = project {
            c.args(["-H", &format!("X-Pier-Project: {p}")]);
        }
        let out = c.output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap();
        (code.to_string(), body.to_string())
    };
    for (socket, path) in [
        (&d.socket, "/v1/containers?all=true"),
        (&d.docker_socket, "/v1.41/containers/json?all=1"),
    ] {
        let (code, body) = curl(socket, path, None);
        assert_eq!(code, "200", "{body}");
        assert!(body.contains("in-default"), "{body}");
        let (code, body) = curl(socket, path, Some("default"));
        assert_eq!(code, "200", "{body}");
        assert!(body.contains("in-default"), "{body}");
        let (code, body) = curl(socket, path, Some("team-a"));
        assert_eq!(code, "404", "{body}");
        assert!(body.contains("no such project: team-a"), "{body}");
        assert!(!body.contains("in-default"), "{body}");
        let (code, body) = curl(socket, path, Some("Not_A_Project"));
        assert_eq!(code, "400", "{body}");
        assert!(
            body.contains("X-Pier-Project") || body.contains("x-pier-project"),
            "{body}"
        );
    }
    d.ok(&["rm", "in-default"]);
}
