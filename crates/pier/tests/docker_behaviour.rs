//! Root tier: behaviours where Docker's own engine sets the expectation beyond the
//! common path, each checked with the real `docker` CLI against Pier's Docker API.

mod common;

use common::*;

fn api(d: &Daemon, method: &str, path: &str) -> (u16, String) {
    docker_api(d, method, path, b"")
}

/// `POST /containers/{id}/kill` answers once the container has stopped: an inspect
/// right after sees it stopped, and an unforced remove right after succeeds (before,
/// the kill answered at once, and the remove got 409 with the container still running).
#[test]
#[ignore = "root tier: needs root; scripts/test.sh runs it (--run-ignored all)"]
fn kill_answers_once_the_container_has_stopped() {
    let d = with_busybox(&[]);
    for i in 0..5 {
        let name = format!("k{i}");
        let (code, _, err) = outcome(&d.docker(
            "docker",
            &["run", "-d", "--name", &name, "bb", "sleep", "100"],
        ));
        assert_eq!(code, 0, "{err}");
        let (status, body) = api(&d, "POST", &format!("/containers/{name}/kill"));
        assert_eq!(status, 204, "{body}");
        let (_, body) = api(&d, "GET", &format!("/containers/{name}/json"));
        assert!(
            body.contains("\"Running\":false"),
            "{name} right after its kill: {body}"
        );
        assert!(body.contains("\"ExitCode\":137"), "{body}");
        let (status, body) = api(&d, "DELETE", &format!("/containers/{name}"));
        assert_eq!(
            status, 204,
            "an unforced remove right after the kill: {body}"
        );
    }
    // Another signal is only sent: the container runs on.
    d.docker(
        "docker",
        &[
            "run",
            "-d",
            "--name",
            "hup",
            "bb",
            "sh",
            "-c",
            "trap '' HUP; sleep 100",
        ],
    );
    let (code, _, err) = outcome(&d.docker("docker", &["kill", "-s", "HUP", "hup"]));
    assert_eq!(code, 0, "{err}");
    let (_, running, _) =
        outcome(&d.docker("docker", &["inspect", "-f", "{{.State.Running}}", "hup"]));
    assert_eq!(running.trim(), "true");
    d.docker("docker", &["rm", "-f", "hup"]);
}

/// `--uts host`: the container has the host's hostname (and cannot change it); Docker's
/// `UTSMode` field is read and echoed back.
#[test]
#[ignore = "root tier: needs root; scripts/test.sh runs it (--run-ignored all)"]
fn uts_host_shares_the_hosts_hostname() {
    let d = with_busybox(&[]);
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    let (code, out, err) = outcome(&d.docker(
        "docker",
        &[
            "run",
            "--name",
            "u",
            "--uts",
            "host",
            "bb",
            "sh",
            "-c",
            "hostname; cat /etc/hostname; echo $HOSTNAME; hostname changed-by-container",
        ],
    ));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(&lines[..3], &[host.trim(); 3], "{err}");
    assert_ne!(code, 0, "the container changed the host's hostname: {out}");
    assert_eq!(
        std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap(),
        host
    );
    let (_, mode, _) =
        outcome(&d.docker("docker", &["inspect", "-f", "{{.HostConfig.UTSMode}}", "u"]));
    assert_eq!(mode.trim(), "host");
    // Its own (the default), and what cannot be had.
    let (_, own, _) = outcome(&d.docker(
        "docker",
        &["run", "--rm", "--hostname", "box", "bb", "hostname"],
    ));
    assert_eq!(own.trim(), "box");
    let (code, _, err) = outcome(&d.docker(
        "docker",
        &[
            "run",
            "--rm",
            "--uts",
            "host",
            "--hostname",
            "x",
            "bb",
            "true",
        ],
    ));
    assert_ne!(code, 0);
    assert!(err.contains("conflicting"), "{err}");
    let err = d.fails(&[
        "run",
        "--rm",
        "--uts",
        "host",
        "--hostname",
        "x",
        "bb",
        "true",
    ]);
    assert!(err.contains("conflicting"), "{err}");
    let err = d.fails(&["run", "--rm", "--uts", "container:u", "bb", "true"]);
    assert!(err.contains("--uts container:u"), "{err}");
    d.docker("docker", &["rm", "-f", "u"]);
}

/// A `restart=always` container between two runs is restarting, not stopped: an
/// unforced remove is refused (409, Docker's words) however it falls between the exit
/// and the restart (before, it succeeded while the container was restarting), and a
/// forced one removes it.
#[test]
#[ignore = "root tier: needs root; scripts/test.sh runs it (--run-ignored all)"]
fn an_unforced_remove_never_takes_a_restarting_container() {
    let d = with_busybox(&[]);
    let (code, _, err) = outcome(&d.docker(
        "docker",
        &[
            "run",
            "-d",
            "--name",
            "flappy",
            "--restart",
            "always",
            "bb",
            "sh",
            "-c",
            "sleep 0.05; exit 3",
        ],
    ));
    assert_eq!(code, 0, "{err}");
    let mut refused_restarting = 0;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while std::time::Instant::now() < deadline {
        let (status, body) = api(&d, "DELETE", "/containers/flappy");
        assert_eq!(status, 409, "an unforced remove took it: {body}");
        if body.contains("You cannot remove a restarting container") {
            refused_restarting += 1;
        }
    }
    assert!(refused_restarting > 0, "never caught it restarting");
    let (status, body) = api(&d, "DELETE", "/containers/flappy?force=1");
    assert_eq!(status, 204, "{body}");
    let (status, _) = api(&d, "GET", "/containers/flappy/json");
    assert_eq!(status, 404);
}

/// A rename that meets the container's exit keeps the new name: the exit, recorded
/// after, does not write the old one back.
#[test]
#[ignore = "root tier: needs root; scripts/test.sh runs it (--run-ignored all)"]
fn a_rename_racing_an_exit_keeps_the_new_name() {
    let d = with_busybox(&[]);
    for i in 0..10 {
        let (old, new) = (format!("r{i}"), format!("renamed{i}"));
        let (code, _, err) = outcome(&d.docker(
            "docker",
            &[
                "run",
                "-d",
                "--name",
                &old,
                "bb",
                "sh",
                "-c",
                "sleep 0.0$RANDOM",
            ],
        ));
        assert_eq!(code, 0, "{err}");
        let (status, body) = api(&d, "POST", &format!("/containers/{old}/rename?name={new}"));
        assert_eq!(status, 204, "{body}");
        let (_, body) = api(&d, "POST", &format!("/containers/{new}/wait"));
        assert!(body.contains("StatusCode"), "{body}");
        let (status, body) = api(&d, "GET", &format!("/containers/{new}/json"));
        assert_eq!(status, 200, "{body}");
        assert!(body.contains(&format!("\"Name\":\"/{new}\"")), "{body}");
        let (status, _) = api(&d, "GET", &format!("/containers/{old}/json"));
        assert_eq!(status, 404, "the old name came back");
    }
}

/// `docker run --network nosuch` says the network is missing: as Docker 20.10, the
/// create succeeds and the start fails with 404 "network nosuch not found" (before, the
/// create's 404 made the CLI take the image for missing and try to pull it). The
/// network is looked for again at each start, so once it exists the container starts.
#[test]
#[ignore = "root tier: needs root; scripts/test.sh runs it (--run-ignored all)"]
fn a_missing_network_is_named_at_the_start() {
    let d = with_busybox(&[]);
    let (code, _, err) = outcome(&d.docker(
        "docker",
        &[
            "run",
            "--name",
            "lost",
            "--network",
            "nosuch",
            "bb",
            "echo",
            "hi",
        ],
    ));
    assert_ne!(code, 0);
    assert!(err.contains("network nosuch not found"), "{err}");
    assert!(!err.contains("Unable to find image"), "{err}");
    let (status, body) = api(&d, "POST", "/containers/lost/start");
    assert_eq!(status, 404, "{body}");
    let (code, _, err) = outcome(&d.docker("docker", &["network", "create", "nosuch"]));
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = outcome(&d.docker("docker", &["start", "-a", "lost"]));
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "hi\n");
    let (_, net) = api(&d, "GET", "/containers/lost/json");
    assert!(net.contains("\"nosuch\":{"), "{net}");
    let (code, _, err) = outcome(&d.docker("docker", &["rm", "lost"]));
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = outcome(&d.docker("docker", &["network", "rm", "nosuch"]));
    assert_eq!(code, 0, "{err}");
}

/// `docker update` on a running container (it answered 501 once) changes its limits in
/// its cgroup at once and its restart policy, and inspect shows them; docker-py's
/// `update` does the same.
#[test]
#[ignore = "root tier: needs root; scripts/test.sh runs it (--run-ignored all)"]
fn docker_update_changes_a_running_container() {
    let d = with_busybox(&[]);
    let (code, id, err) = outcome(&d.docker(
        "docker",
        &[
            "run", "-d", "--name", "u", "-m", "64m", "bb", "sleep", "1000",
        ],
    ));
    assert_eq!(code, 0, "{err}");
    let id = id.trim().to_string();
    let (code, _, err) = outcome(&d.docker(
        "docker",
        &[
            "update",
            "--memory",
            "96m",
            "--memory-swap",
            "192m",
            "--cpus",
            "0.5",
            "--pids-limit",
            "50",
            "--restart",
            "on-failure:3",
            "u",
        ],
    ));
    assert_eq!(code, 0, "{err}");
    let (_, body) = api(&d, "GET", "/containers/u/json");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let hc = &v["HostConfig"];
    assert_eq!(hc["Memory"], 96u64 << 20, "{hc}");
    assert_eq!(hc["NanoCpus"], 500_000_000u64, "{hc}");
    assert_eq!(hc["PidsLimit"], 50, "{hc}");
    assert_eq!(hc["RestartPolicy"]["Name"], "on-failure", "{hc}");
    assert_eq!(hc["RestartPolicy"]["MaximumRetryCount"], 3, "{hc}");
    assert_eq!(v["State"]["Running"], true);
    let limit = d
        .cgroup_dirs(&id)
        .iter()
        .flat_map(|dir| [dir.join("memory.limit_in_bytes"), dir.join("memory.max")])
        .find_map(|f| std::fs::read_to_string(f).ok())
        .expect("the container's memory cgroup");
    assert_eq!(limit.trim(), (96u64 << 20).to_string());
    let (code, out, err) = d.docker_py(
        r#"
import docker
c = docker.from_env(version="1.41").containers.get("u")
c.update(mem_limit="128m", memswap_limit="256m")
c.reload()
print(c.attrs["HostConfig"]["Memory"])
"#,
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), (128u64 << 20).to_string());
    d.docker("docker", &["rm", "-f", "u"]);
}

/// `--pid container:NAME` (refused before) puts the container in that container's PID
/// namespace: each sees the other's processes, and the start fails with a clear error
/// while NAME does not run (it is looked for at each start, as Docker does).
#[test]
#[ignore = "root tier: needs root; scripts/test.sh runs it (--run-ignored all)"]
fn pid_container_mode_shares_the_process_namespace() {
    let d = with_busybox(&[]);
    let ok = |args: &[&str]| {
        let (code, out, err) = outcome(&d.docker("docker", args));
        assert_eq!(code, 0, "docker {args:?}: {err}");
        out
    };
    ok(&["run", "-d", "--name", "target", "bb", "sleep", "4242"]);
    let out = ok(&[
        "run",
        "--rm",
        "--pid",
        "container:target",
        "bb",
        "ps",
        "-o",
        "args",
    ]);
    assert!(
        out.contains("sleep 4242"),
        "the target's process is seen: {out}"
    );
    // The joined container's own processes are seen from the target too.
    ok(&[
        "run",
        "-d",
        "--name",
        "joined",
        "--pid",
        "container:target",
        "bb",
        "sleep",
        "4343",
    ]);
    let out = ok(&["exec", "target", "ps", "-o", "args"]);
    assert!(out.contains("sleep 4343"), "{out}");
    let (_, body) = api(&d, "GET", "/containers/joined/json");
    assert!(body.contains("\"PidMode\":\"container:target\""), "{body}");
    ok(&["rm", "-f", "joined"]);
    ok(&["stop", "-t", "1", "target"]);
    let (code, _, err) = outcome(&d.docker(
        "docker",
        &["run", "--rm", "--pid", "container:target", "bb", "true"],
    ));
    assert_ne!(code, 0);
    assert!(err.contains("not running"), "{err}");
    // As Docker, a container named there is looked for at the start: a create's 404
    // would make the CLI take the image for missing.
    let (code, _, err) = outcome(&d.docker(
        "docker",
        &["run", "--rm", "--pid", "container:nosuch", "bb", "true"],
    ));
    assert_ne!(code, 0);
    assert!(err.to_lowercase().contains("no such container"), "{err}");
    assert!(!err.contains("Unable to find image"), "{err}");
    ok(&["rm", "-f", "target"]);
}

/// Kernel memory limits and `--cpu-rt-runtime` (refused before) land in the container's v1
/// cgroup, or are refused where the kernel ignores them; the real-time budget is granted up the chain, so a real-time policy can be
/// set on the container's process (and cannot without a budget). Inspect echoes both.
#[test]
#[ignore = "root tier: needs root; scripts/test.sh runs it (--run-ignored all)"]
fn kernel_memory_and_realtime_budget_apply() {
    let d = with_busybox(&[]);
    let ok = |args: &[&str]| {
        let (code, out, err) = outcome(&d.docker("docker", args));
        assert_eq!(code, 0, "docker {args:?}: {err}");
        out.trim().to_string()
    };
    let file = |id: &str, name: &str| {
        d.cgroup_dirs(id)
            .iter()
            .map(|dir| dir.join(name))
            .find_map(|f| std::fs::read_to_string(f).ok())
            .unwrap_or_else(|| panic!("no {name} for {id}"))
            .trim()
            .to_string()
    };
    // Kernels since 5.16 ignore kernel memory limits: the start says so. Which this
    // kernel does is probed on a scratch group.
    let probe =
        std::path::Path::new("/sys/fs/cgroup/memory").join(format!("kmem-{}", d.host_tag()));
    std::fs::create_dir(&probe).unwrap();
    let _ = std::fs::write(probe.join("memory.kmem.limit_in_bytes"), "67108864");
    let honoured = std::fs::read_to_string(probe.join("memory.kmem.limit_in_bytes")).unwrap();
    std::fs::remove_dir(&probe).unwrap();
    // (the docker CLI of this host no longer sends --kernel-memory: the raw API does)
    let (status, body) = docker_api(
        &d,
        "POST",
        "/containers/create?name=km",
        br#"{"Image": "bb", "Cmd": ["true"], "HostConfig": {"KernelMemory": 67108864}}"#,
    );
    assert_eq!(status, 201, "{body}");
    let (status, body) = docker_api(&d, "POST", "/containers/km/start", b"");
    if honoured.trim() == "67108864" {
        assert_eq!(status, 204, "{body}");
    } else {
        assert_eq!(status, 400, "{body}");
        assert!(body.contains("ignores --kernel-memory"), "{body}");
    }
    ok(&["rm", "-f", "km"]);
    // Docker's KernelMemoryTCP is applied (the TCP buffers' limit, rounded to pages).
    let (status, body) = docker_api(
        &d,
        "POST",
        "/containers/create?name=rt",
        br#"{"Image": "bb", "Cmd": ["sleep", "4242"], "HostConfig": {"KernelMemoryTCP": 67108864, "CpuRealtimeRuntime": 20000}}"#,
    );
    assert_eq!(status, 201, "{body}");
    ok(&["start", "rt"]);
    let id = ok(&["inspect", "-f", "{{.Id}}", "rt"]);
    assert_eq!(
        file(&id, "memory.kmem.tcp.limit_in_bytes"),
        (64u64 << 20).to_string()
    );
    assert_eq!(file(&id, "cpu.rt_runtime_us"), "20000");
    let (_, body) = api(&d, "GET", "/containers/rt/json");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["HostConfig"]["KernelMemoryTCP"], 64u64 << 20);
    assert_eq!(v["HostConfig"]["CpuRealtimeRuntime"], 20000);
    let chrt = |pid: &str| {
        std::process::Command::new("chrt")
            .args(["-f", "-p", "1", pid])
            .output()
            .unwrap()
    };
    let pid = ok(&["inspect", "-f", "{{.State.Pid}}", "rt"]);
    let out = chrt(&pid);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Without a budget the kernel refuses a real-time policy in the container's group.
    let id2 = ok(&["run", "-d", "--name", "nort", "bb", "sleep", "4343"]);
    assert_eq!(file(&id2, "cpu.rt_runtime_us"), "0");
    let pid2 = ok(&["inspect", "-f", "{{.State.Pid}}", "nort"]);
    assert!(!chrt(&pid2).status.success());
    // A budget beyond what the host has is refused at the start, and nothing runs.
    let (code, _, err) = outcome(&d.docker(
        "docker",
        &["run", "--rm", "--cpu-rt-runtime", "990000", "bb", "true"],
    ));
    assert_ne!(code, 0, "more than the root's 950000");
    assert!(err.contains("rt_runtime_us"), "{err}");
    ok(&["rm", "-f", "rt", "nort"]);
    let (code, _, err) = outcome(&d.docker(
        "docker",
        &[
            "run",
            "--rm",
            "--cpu-rt-period",
            "1000",
            "--cpu-rt-runtime",
            "2000",
            "bb",
            "true",
        ],
    ));
    assert_ne!(code, 0);
    assert!(
        err.contains("cannot be higher than cpu real-time period"),
        "{err}"
    );
}

/// `--ipc container:NAME` (refused before) joins a `shareable` container's IPC namespace
/// and its /dev/shm, both ways and past the other's stop; a private container cannot be
/// joined, and `--ipc none` has no /dev/shm.
#[test]
#[ignore = "root tier: needs root; scripts/test.sh runs it (--run-ignored all)"]
fn ipc_container_mode_shares_the_namespace_and_dev_shm() {
    let d = with_busybox(&[]);
    let ok = |args: &[&str]| {
        let (code, out, err) = outcome(&d.docker("docker", args));
        assert_eq!(code, 0, "docker {args:?}: {err}");
        out
    };
    ok(&[
        "run",
        "-d",
        "--name",
        "donor",
        "--ipc",
        "shareable",
        "bb",
        "sleep",
        "4242",
    ]);
    ok(&["exec", "donor", "sh", "-c", "echo from-donor > /dev/shm/f"]);
    ok(&[
        "run",
        "-d",
        "--name",
        "joiner",
        "--ipc",
        "container:donor",
        "bb",
        "sleep",
        "4343",
    ]);
    assert_eq!(ok(&["exec", "joiner", "cat", "/dev/shm/f"]), "from-donor\n");
    ok(&[
        "exec",
        "joiner",
        "sh",
        "-c",
        "echo from-joiner > /dev/shm/g",
    ]);
    assert_eq!(ok(&["exec", "donor", "cat", "/dev/shm/g"]), "from-joiner\n");
    let ns = |c: &str| ok(&["exec", c, "readlink", "/proc/self/ns/ipc"]);
    assert_eq!(ns("joiner"), ns("donor"), "one IPC namespace");
    let own = ok(&["run", "--rm", "bb", "readlink", "/proc/self/ns/ipc"]);
    assert_ne!(own, ns("donor"), "others keep their own");
    let (_, body) = api(&d, "GET", "/containers/joiner/json");
    assert!(body.contains("\"IpcMode\":\"container:donor\""), "{body}");
    let (_, body) = api(&d, "GET", "/containers/donor/json");
    assert!(body.contains("\"IpcMode\":\"shareable\""), "{body}");
    // The joiner keeps the memory it shares when the donor stops.
    ok(&["stop", "-t", "1", "donor"]);
    assert_eq!(
        ok(&["exec", "joiner", "cat", "/dev/shm/g"]),
        "from-joiner\n"
    );
    let (code, _, err) = outcome(&d.docker(
        "docker",
        &["run", "--rm", "--ipc", "container:donor", "bb", "true"],
    ));
    assert_ne!(code, 0);
    assert!(err.contains("not running"), "{err}");
    ok(&["rm", "-f", "joiner", "donor"]);

    // A private container (the default) cannot be joined: Docker asks for shareable.
    ok(&["run", "-d", "--name", "private", "bb", "sleep", "4444"]);
    let (code, _, err) = outcome(&d.docker(
        "docker",
        &["run", "--rm", "--ipc", "container:private", "bb", "true"],
    ));
    assert_ne!(code, 0);
    assert!(err.contains("--ipc shareable"), "{err}");
    ok(&["rm", "-f", "private"]);

    // --ipc none: a namespace of its own and no /dev/shm mounted.
    let out = ok(&["run", "--rm", "--ipc", "none", "bb", "cat", "/proc/mounts"]);
    assert!(!out.contains(" /dev/shm "), "{out}");
    let out = ok(&["run", "--rm", "bb", "cat", "/proc/mounts"]);
    assert!(out.contains(" /dev/shm "), "{out}");
}

/// `--domainname` (dropped before) is set in the container's own UTS namespace, shown
/// by inspect, and refused with `--uts host`.
#[test]
#[ignore = "root tier: needs root; scripts/test.sh runs it (--run-ignored all)"]
fn domainname_is_the_containers_own() {
    let d = with_busybox(&[]);
    let host_domain = std::fs::read_to_string("/proc/sys/kernel/domainname").unwrap();
    let (code, out, err) = outcome(&d.docker(
        "docker",
        &[
            "run",
            "--name",
            "dn",
            "--domainname",
            "example.org",
            "bb",
            "cat",
            "/proc/sys/kernel/domainname",
        ],
    ));
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), "example.org");
    let (_, body) = api(&d, "GET", "/containers/dn/json");
    assert!(body.contains("\"Domainname\":\"example.org\""), "{body}");
    assert_eq!(
        std::fs::read_to_string("/proc/sys/kernel/domainname").unwrap(),
        host_domain,
        "the host's domain name is untouched"
    );
    let (code, _, err) = outcome(&d.docker(
        "docker",
        &[
            "run",
            "--rm",
            "--uts",
            "host",
            "--domainname",
            "x",
            "bb",
            "true",
        ],
    ));
    assert_ne!(code, 0);
    assert!(err.contains("conflicting options"), "{err}");
    d.docker("docker", &["rm", "dn"]);
}
