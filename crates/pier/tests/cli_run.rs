//! Root tier: `pier run`, `create`, `attach`, `exec` and `build` as Docker users expect
//! them: `--pull`, the signal proxy, detach keys, and the flags each checked to take
//! effect (in inspect and from inside the container).

mod common;

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;

fn run(d: &Daemon, args: &[&str]) -> (i32, String, String) {
    outcome(&d.pier(args))
}

fn inspect(d: &Daemon, name: &str) -> serde_json::Value {
    d.json(&["inspect", name])[0].clone()
}

/// Runs `cmd` (a shell line, with `PIER_HOST` at `d`) in a pseudo-terminal (see
/// [`common::in_pty`]).
fn pier_pty(d: &Daemon, cmd: &str, input: &[&[u8]]) -> (i32, String) {
    in_pty(&format!("PIER_HOST={} {cmd}", d.socket.display()), input)
}

#[test]
#[ignore = "root tier: needs root; scripts/test.sh runs it (--run-ignored all)"]
fn run_create_and_build_pull_as_the_pull_policy_says() {
    const ADDR: &str = "127.0.0.1:5000";
    let d = with_busybox(&["--registry-addr", ADDR]);
    let image = format!("{ADDR}/cli/bb:1");
    d.ok(&["image", "tag", "bb", &image]);
    d.ok(&["push", "-q", &image]);
    d.ok(&["image", "rm", &image]);

    // never: Docker's wording, 125, and nothing made.
    for verb in ["run", "create"] {
        let (code, out, err) = run(&d, &[verb, "--pull", "never", &image, "true"]);
        assert_eq!(code, 125, "{out}{err}");
        assert!(
            err.contains(&format!("No such image: {image}")),
            "{verb}: {err}"
        );
        assert!(err.contains("--pull never"), "{err}");
    }
    assert_eq!(d.ok(&["ps", "-aq"]), "");

    // missing (the default): Docker's line, the pull, then the run; stdout is the
    // container's alone.
    let (code, out, err) = run(&d, &["run", "--rm", &image, "echo", "pulled"]);
    assert_eq!((code, out.as_str()), (0, "pulled\n"), "{err}");
    assert!(
        err.starts_with(&format!("Unable to find image '{image}' locally\n")),
        "{err}"
    );
    assert!(err.contains("Status: Downloaded newer image"), "{err}");
    // Here now: no pull.
    let (code, out, err) = run(&d, &["run", "--rm", &image, "echo", "again"]);
    assert_eq!((code, out.as_str(), err.as_str()), (0, "again\n", ""));
    // always: pulls though it is here.
    let (code, _, err) = run(&d, &["run", "--rm", "--pull", "always", &image, "true"]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("Status: Downloaded newer image"), "{err}");
    assert!(!err.contains("Unable to find"), "{err}");

    // create pulls too, and prints only the ID on stdout.
    d.ok(&["image", "rm", &image]);
    let (code, out, err) = run(&d, &["create", &image, "true"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim().len(), 64, "{out}");
    assert!(err.contains("Unable to find image"), "{err}");
    d.ok(&["rm", out.trim()]);

    // A registry that is not there: the pull's error, then the run's, 125.
    let (code, _, err) = run(&d, &["run", "--rm", "127.0.0.1:1/none/x:1", "true"]);
    assert_eq!(code, 125, "{err}");
    assert!(
        err.starts_with("Unable to find image '127.0.0.1:1/none/x:1' locally\ncannot pull 127.0.0.1:1/none/x:1: "),
        "{err}"
    );
    assert!(err.contains("no such image"), "{err}");
    // --pull always fails with the pull.
    let (code, _, err) = run(
        &d,
        &[
            "run",
            "--rm",
            "--pull",
            "always",
            "127.0.0.1:1/none/x:1",
            "true",
        ],
    );
    assert_eq!(code, 125, "{err}");
    assert!(!err.contains("no such image"), "{err}");
    // Docker Hub, out of reach here: quick to fail, and said.
    let started = Instant::now();
    let (code, _, err) = run(&d, &["run", "--rm", "nosuchimage", "true"]);
    assert_eq!(code, 125, "{err}");
    assert!(
        err.contains("Unable to find image 'nosuchimage:latest' locally"),
        "{err}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );

    // build pulls its FROM images (but not its stages or scratch).
    d.ok(&["image", "rm", &image]);
    let ctx = tempfile::tempdir().unwrap();
    std::fs::write(
        ctx.path().join("Dockerfile"),
        format!("ARG BASE={image}\nFROM ${{BASE}} AS one\nFROM one\nLABEL built=yes\n"),
    )
    .unwrap();
    let ctx_path = ctx.path().to_str().unwrap();
    let err = d.fails(&["build", "--pull", "never", "-t", "built:1", ctx_path]);
    assert!(err.contains("not in the image store"), "{err}");
    let out = d.pier(&["build", "-q", "-t", "built:1", ctx_path]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("Unable to find image"), "{err}");
    let i = d.json(&["image", "inspect", "built:1"]);
    assert!(i.to_string().contains("\"built\":\"yes\""), "{i}");
}

#[test]
#[ignore = "root tier: needs root; scripts/test.sh runs it (--run-ignored all)"]
fn health_stop_expose_platform_and_cidfile_flags_take_effect() {
    let d = with_busybox(&[]);
    // --health-*: the check runs and the container becomes healthy.
    d.ok(&[
        "run",
        "-d",
        "--name",
        "h",
        "--health-cmd",
        "test -e /proc/1",
        "--health-interval",
        "200ms",
        "--health-retries",
        "2",
        "--health-timeout",
        "5s",
        "--health-start-period",
        "1s",
        "bb",
        "sleep",
        "1000",
    ]);
    let hc = &inspect(&d, "h")["config"]["healthcheck"];
    assert_eq!(
        hc["test"],
        serde_json::json!(["CMD-SHELL", "test -e /proc/1"])
    );
    assert_eq!(hc["interval_ns"], 200_000_000);
    assert_eq!(hc["retries"], 2);
    assert_eq!(hc["timeout_ns"], 5_000_000_000u64);
    assert_eq!(hc["start_period_ns"], 1_000_000_000u64);
    wait_until("the container is healthy", || {
        inspect(&d, "h")["state"]["health"]["status"] == "healthy"
    });
    // A failing check makes it unhealthy.
    d.ok(&[
        "run",
        "-d",
        "--name",
        "sick",
        "--health-cmd",
        "exit 1",
        "--health-interval",
        "100ms",
        "--health-retries",
        "1",
        "bb",
        "sleep",
        "1000",
    ]);
    wait_until("the container is unhealthy", || {
        inspect(&d, "sick")["state"]["health"]["status"] == "unhealthy"
    });
    let (code, _, err) = run(
        &d,
        &["create", "--no-healthcheck", "--health-cmd", "true", "bb"],
    );
    assert_eq!(code, 125);
    assert!(
        err.contains("--no-healthcheck conflicts with --health-* options"),
        "{err}"
    );
    let id = d.ok(&["create", "--no-healthcheck", "bb"]);
    assert_eq!(
        inspect(&d, id.trim())["config"]["healthcheck"]["test"],
        serde_json::json!(["NONE"])
    );
    d.ok(&["rm", id.trim()]);

    // --stop-signal: `stop` sends it, the trap sees it.
    d.ok(&[
        "run",
        "-d",
        "--name",
        "s",
        "--stop-signal",
        "SIGUSR1",
        "bb",
        "sh",
        "-c",
        "trap 'echo got usr1; exit 3' USR1; echo up; while :; do sleep 0.1; done",
    ]);
    wait_until("the trap is set", || d.ok(&["logs", "s"]).contains("up"));
    d.ok(&["stop", "s"]);
    assert!(d.ok(&["logs", "s"]).contains("got usr1"));
    assert_eq!(inspect(&d, "s")["state"]["exit_code"], 3);
    // --stop-timeout: a container that ignores SIGTERM is killed after 1 s, not 10.
    d.ok(&[
        "run",
        "-d",
        "--name",
        "t",
        "--stop-timeout",
        "1",
        "bb",
        "sh",
        "-c",
        "trap '' TERM; echo up; while :; do sleep 0.1; done",
    ]);
    assert_eq!(inspect(&d, "t")["config"]["stop_timeout"], 1);
    wait_until("the trap is set", || d.ok(&["logs", "t"]).contains("up"));
    let started = Instant::now();
    d.ok(&["stop", "t"]);
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(inspect(&d, "t")["state"]["exit_code"], 137);

    // --expose: recorded, and published by -P.
    d.ok(&[
        "run", "-d", "--name", "e", "--expose", "8080", "-P", "bb", "sleep", "1000",
    ]);
    let e = inspect(&d, "e");
    assert_eq!(e["config"]["expose"], serde_json::json!(["8080"]));
    let port = d.ok(&["port", "e"]);
    assert!(port.contains("8080/tcp"), "{port}");

    // --platform: the host's passes, another is refused before anything is made.
    d.ok(&["run", "--rm", "--platform", "linux/amd64", "bb", "true"]);
    let before = d.ok(&["ps", "-aq"]);
    let (code, _, err) = run(
        &d,
        &["run", "--rm", "--platform", "linux/arm64", "bb", "true"],
    );
    assert_eq!(code, 125, "{err}");
    assert!(
        err.contains(
            "--platform linux/arm64 is not supported: this host runs linux/amd64 and pier runs no emulation"
        ),
        "{err}"
    );
    assert_eq!(d.ok(&["ps", "-aq"]), before);

    // --cidfile: the ID written; an existing file refuses the next run, Docker's words.
    let dir = tempfile::tempdir().unwrap();
    let cid = dir.path().join("cid");
    let cid_s = cid.to_str().unwrap();
    let id = d.ok(&["run", "-d", "--cidfile", cid_s, "bb", "sleep", "1000"]);
    assert_eq!(std::fs::read_to_string(&cid).unwrap(), id.trim());
    let before = d.ok(&["ps", "-aq"]);
    let (code, _, err) = run(&d, &["run", "-d", "--cidfile", cid_s, "bb", "true"]);
    assert_eq!(code, 125);
    assert!(
        err.contains(&format!(
            "container ID file found, make sure the other container isn't running or delete {cid_s}"
        )),
        "{err}"
    );
    assert_eq!(d.ok(&["ps", "-aq"]), before);
    assert_eq!(std::fs::read_to_string(&cid).unwrap(), id.trim());
    // A create that fails leaves no file behind.
    let cid2 = dir.path().join("cid2");
    let (code, _, _) = run(
        &d,
        &[
            "create",
            "--cidfile",
            cid2.to_str().unwrap(),
            "--pull",
            "never",
            "nosuch",
        ],
    );
    assert_eq!(code, 125);
    assert!(!cid2.exists());
    d.ok(&["rm", "-f", "h", "sick", "s", "t", "e", id.trim()]);
}

#[test]
#[ignore = "root tier: needs root; scripts/test.sh runs it (--run-ignored all)"]
fn volumes_from_shm_size_and_exec_env_file() {
    let d = with_busybox(&[]);
    // --volumes-from: the same volume and bind at the same paths; :ro makes them read-only.
    let host = tempfile::tempdir().unwrap();
    std::fs::write(host.path().join("h"), "from the host\n").unwrap();
    let bind = format!("{}:/bind", host.path().display());
    d.ok(&[
        "run",
        "-d",
        "--name",
        "src",
        "-v",
        "/data",
        "-v",
        &bind,
        "bb",
        "sh",
        "-c",
        "echo shared > /data/f; sleep 1000",
    ]);
    wait_until("the source wrote", || {
        run(&d, &["exec", "src", "cat", "/data/f"]).1 == "shared\n"
    });
    let (code, out, err) = run(
        &d,
        &[
            "run",
            "--rm",
            "--volumes-from",
            "src",
            "bb",
            "sh",
            "-c",
            "cat /data/f /bind/h; echo more >> /data/f",
        ],
    );
    assert_eq!(
        (code, out.as_str()),
        (0, "shared\nfrom the host\n"),
        "{err}"
    );
    assert_eq!(
        run(&d, &["exec", "src", "cat", "/data/f"]).1,
        "shared\nmore\n"
    );
    let (code, _, err) = run(
        &d,
        &[
            "run",
            "--rm",
            "--volumes-from",
            "src:ro",
            "bb",
            "sh",
            "-c",
            "echo x > /data/f",
        ],
    );
    assert_ne!(code, 0);
    assert!(err.contains("Read-only file system"), "{err}");
    let (code, _, err) = run(
        &d,
        &["run", "--rm", "--volumes-from", "nosuch", "bb", "true"],
    );
    assert_eq!(code, 125);
    assert!(err.contains("--volumes-from nosuch"), "{err}");

    // --shm-size: the size of /dev/shm.
    let (code, out, err) = run(
        &d,
        &[
            "run",
            "--rm",
            "--shm-size",
            "32m",
            "bb",
            "df",
            "-k",
            "/dev/shm",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(" 32768 "), "{out}");

    // exec --env-file: KEY=VALUE lines, comments skipped, -e after the file.
    let env = host.path().join("env");
    std::fs::write(&env, "# a comment\nA=1\n\nB=two words\nC=from file\n").unwrap();
    let out = d.ok(&[
        "exec",
        "--env-file",
        env.to_str().unwrap(),
        "-e",
        "C=flag",
        "src",
        "sh",
        "-c",
        "echo \"$A|$B|$C\"",
    ]);
    assert_eq!(out, "1|two words|flag\n");
    let (code, _, err) = run(&d, &["exec", "--env-file", "/no/such/env", "src", "true"]);
    assert_ne!(code, 0);
    assert!(err.contains("cannot read env file /no/such/env"), "{err}");

    d.ok(&["rm", "-f", "src"]);
}

#[test]
#[ignore = "root tier: needs root; scripts/test.sh runs it (--run-ignored all)"]
fn sysctl_device_group_pid_and_ipc_flags_take_effect() {
    let d = with_busybox(&[]);
    let out = |args: &[&str]| {
        let (code, out, err) = run(&d, args);
        assert_eq!(code, 0, "{args:?}: {err}");
        out
    };
    // --sysctl: set in the container's own namespaces.
    assert_eq!(
        out(&[
            "run",
            "--rm",
            "bb",
            "cat",
            "/proc/sys/net/ipv4/tcp_keepalive_time"
        ]),
        "7200\n"
    );
    assert_eq!(
        out(&[
            "run",
            "--rm",
            "--sysctl",
            "net.ipv4.ip_forward=1",
            "--sysctl",
            "net.ipv4.tcp_keepalive_time=600",
            "--sysctl",
            "kernel.shmmax=123456789",
            "bb",
            "cat",
            "/proc/sys/net/ipv4/ip_forward",
            "/proc/sys/net/ipv4/tcp_keepalive_time",
            "/proc/sys/kernel/shmmax",
        ]),
        "1\n600\n123456789\n"
    );
    // The host's are untouched.
    assert_ne!(
        std::fs::read_to_string("/proc/sys/kernel/shmmax").unwrap(),
        "123456789\n"
    );
    let before = d.ok(&["ps", "-aq"]);
    for (args, says) in [
        (
            vec!["--sysctl", "kernel.hostname=x"],
            "--sysctl kernel.hostname is not namespaced: it would change the host",
        ),
        (
            vec!["--network", "host", "--sysctl", "net.ipv4.ip_forward=1"],
            "--sysctl net.ipv4.ip_forward would change another's network namespace",
        ),
        (
            vec!["--sysctl", "novalue"],
            "--sysctl \"novalue\": use KEY=VALUE",
        ),
        (
            vec!["--device", "/etc/hostname"],
            "--device /etc/hostname is not a device node",
        ),
        (vec!["--device", "relative"], "is not an absolute path"),
        // Another container's PID namespace is looked for at the start (as Docker).
        (vec!["--pid", "container:x"], "no such container: x"),
        (vec!["--ipc", "container:x"], "no such container: x"),
        (vec!["--ipc", "nope"], "--ipc nope is not supported"),
    ] {
        let mut a = vec!["run", "--rm"];
        a.extend(&args);
        a.extend(["bb", "true"]);
        let (code, _, err) = run(&d, &a);
        assert_eq!(code, 125, "{args:?}: {err}");
        assert!(err.contains(says), "{args:?}: {err}");
    }
    assert_eq!(d.ok(&["ps", "-aq"]), before, "nothing made");

    // --device: the host's node under another name, usable.
    assert_eq!(
        out(&[
            "run",
            "--rm",
            "--device",
            "/dev/null:/dev/xnull",
            "bb",
            "sh",
            "-c",
            "test -c /dev/xnull && echo data > /dev/xnull && echo ok",
        ]),
        "ok\n"
    );
    // A device outside the default rules: not openable without --device, readable but
    // not writable with `:r`, both with the default rwm.
    let open = "(: <>/dev/lc) 2>/dev/null && echo rw || echo no-rw; (: </dev/lc) 2>/dev/null && echo r || echo no-r";
    let mknod_then = format!("mknod /dev/lc c 10 237; {open}");
    assert_eq!(
        out(&["run", "--rm", "bb", "sh", "-c", &mknod_then]),
        "no-rw\nno-r\n"
    );
    assert_eq!(
        out(&[
            "run",
            "--rm",
            "--device",
            "/dev/loop-control:/dev/lc:r",
            "bb",
            "sh",
            "-c",
            open
        ]),
        "no-rw\nr\n"
    );
    assert_eq!(
        out(&[
            "run",
            "--rm",
            "--device",
            "/dev/loop-control:/dev/lc",
            "bb",
            "sh",
            "-c",
            open
        ]),
        "rw\nr\n"
    );
    let i = inspect(&d, d.ok(&["create", "--device", "/dev/zero", "bb"]).trim());
    assert_eq!(i["config"]["devices"][0]["path_on_host"], "/dev/zero");
    d.ok(&["rm", i["id"].as_str().unwrap()]);

    // --group-add: the extra groups of the container's processes.
    let ids = out(&[
        "run",
        "--rm",
        "--group-add",
        "1234",
        "--group-add",
        "77",
        "bb",
        "id",
        "-G",
    ]);
    let groups: Vec<&str> = ids.split_whitespace().collect();
    assert!(groups.contains(&"1234") && groups.contains(&"77"), "{ids}");

    // --pid host: the host's processes, this test's among them; private by default.
    let me = format!("/proc/{}", std::process::id());
    let probe = format!("test -d {me} && echo seen || echo unseen");
    assert_eq!(out(&["run", "--rm", "bb", "sh", "-c", &probe]), "unseen\n");
    assert_eq!(
        out(&["run", "--rm", "--pid", "host", "bb", "sh", "-c", &probe]),
        "seen\n"
    );
    // --ipc host: the host's IPC namespace.
    let host_ipc = std::fs::read_link("/proc/self/ns/ipc").unwrap();
    let host_ipc = format!("{}\n", host_ipc.display());
    assert_eq!(
        out(&[
            "run",
            "--rm",
            "--ipc",
            "host",
            "bb",
            "readlink",
            "/proc/self/ns/ipc"
        ]),
        host_ipc
    );
    assert_ne!(
        out(&["run", "--rm", "bb", "readlink", "/proc/self/ns/ipc"]),
        host_ipc
    );
}

/// Starts `pier ARGS` with its stdout piped, and waits for the container to print `ready`.
fn spawn_until_ready(d: &Daemon, args: &[&str]) -> std::process::Child {
    let mut child = d
        .cmd()
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line, "ready\n");
    child
}

fn signal(child: &std::process::Child, sig: &str) {
    let st = std::process::Command::new("kill")
        .args([&format!("-{sig}"), &child.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
}

#[test]
#[ignore = "root tier: needs root; scripts/test.sh runs it (--run-ignored all)"]
fn signals_reach_the_container_of_a_foreground_run_and_attach() {
    let d = with_busybox(&[]);
    let trap = "trap 'exit 42' INT; trap 'exit 43' TERM; trap 'exit 44' HUP; trap 'exit 45' USR1; echo ready; while :; do sleep 0.1; done";
    // run --rm in the foreground: the client's SIGINT reaches the trap, the exit code
    // comes back and the container is gone.
    for (sig, code) in [("INT", 42), ("TERM", 43), ("HUP", 44), ("USR1", 45)] {
        let child = spawn_until_ready(&d, &["run", "--rm", "bb", "sh", "-c", trap]);
        signal(&child, sig);
        let out = child.wait_with_output().unwrap();
        assert_eq!(out.status.code(), Some(code), "{sig}: {out:?}");
        assert_eq!(d.ok(&["ps", "-aq"]), "", "{sig}: the container is gone");
    }
    // -i too.
    let mut child = d
        .cmd()
        .args(["run", "-i", "--rm", "bb", "sh", "-c", trap])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line, "ready\n");
    signal(&child, "INT");
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(42), "{out:?}");

    // attach: the same.
    d.ok(&["run", "-d", "--name", "a", "bb", "sh", "-c", trap]);
    wait_until("the trap is set", || d.ok(&["logs", "a"]).contains("ready"));
    let child = d
        .cmd()
        .args(["attach", "a"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    signal(&child, "TERM");
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(43), "{out:?}");
    assert_eq!(inspect(&d, "a")["state"]["exit_code"], 43);

    // --sig-proxy=false: the signal ends the client, the container runs on.
    let child = spawn_until_ready(
        &d,
        &[
            "run",
            "--sig-proxy=false",
            "--name",
            "np",
            "bb",
            "sh",
            "-c",
            trap,
        ],
    );
    signal(&child, "INT");
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), None, "killed by the signal: {out:?}");
    assert_eq!(inspect(&d, "np")["state"]["status"], "running");
    d.ok(&["rm", "-f", "a", "np"]);
}

#[test]
#[ignore = "root tier: needs root; scripts/test.sh runs it (--run-ignored all)"]
fn detach_keys_leave_the_container_running() {
    require_root_and_tools(&["script"]);
    let d = with_busybox(&[]);
    let pier = PIER;
    // ctrl-p ctrl-q (the default) detaches from run -it: exit 0, the container runs on.
    let (code, out) = pier_pty(
        &d,
        &format!("{pier} run -it --name dk bb sh"),
        &[b"echo typed-$((6*7))\n", b"\x10\x11"],
    );
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("typed-42"), "{out}");
    assert_eq!(inspect(&d, "dk")["state"]["status"], "running");
    // attach with other keys.
    let (code, out) = pier_pty(
        &d,
        &format!("{pier} attach --detach-keys ctrl-a,x dk"),
        &[b"echo back-$((2+3))\n", b"\x01x"],
    );
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("back-5"), "{out}");
    assert_eq!(inspect(&d, "dk")["state"]["status"], "running");
    // Without the keys, the session ends with the container, as before.
    let (code, out) = pier_pty(&d, &format!("{pier} attach dk"), &[b"exit 7\n"]);
    assert_eq!(code, 7, "{out}");
    // A bad sequence is refused.
    let (code, _, err) = run(&d, &["run", "-it", "--detach-keys", "ctrl-1", "bb"]);
    assert_eq!(code, 125);
    assert!(err.contains("invalid --detach-keys"), "{err}");
    d.ok(&["rm", "-f", "dk"]);
}
