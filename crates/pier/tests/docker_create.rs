//! Root tier: Docker's create options at Docker 20.10's level, through the real `docker`
//! CLI and raw calls to the Docker API socket: what inspect echoes, what the kernel is
//! given (cgroup rules, swappiness, the cgroup namespace), log driver `none`, legacy
//! links, `--volumes-from`, endpoint settings, and a restart policy's pending restart.

mod common;

use common::*;
use serde_json::{json, Value};

const DOCKER: &str = "docker";

/// One request with a JSON body to the Docker API socket: the status and the body.
fn api(d: &Daemon, method: &str, path: &str, body: Option<Value>) -> (u16, String) {
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    docker_api(d, method, path, body.as_bytes())
}

/// `docker inspect` of a container through the API, as JSON.
fn inspect(d: &Daemon, name: &str) -> Value {
    let (status, body) = api(d, "GET", &format!("/containers/{name}/json"), None);
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

/// Creates a container from a Docker create body; answers its ID.
fn create(d: &Daemon, name: &str, body: Value) -> String {
    let (status, out) = api(
        d,
        "POST",
        &format!("/containers/create?name={name}"),
        Some(body),
    );
    assert_eq!(status, 201, "create {name}: {out}");
    serde_json::from_str::<Value>(&out).unwrap()["Id"]
        .as_str()
        .unwrap()
        .to_string()
}

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

/// Every HostConfig field given at create comes back as given (Docker 20.10's defaults
/// where none is given: CgroupnsMode `host` on this cgroup v1 host, Runtime `runc`), and
/// what Linux has no such thing for is refused as Docker refuses it.
#[test]
#[ignore = "root tier: needs root; scripts/test.sh runs it (--run-ignored all)"]
fn host_config_fields_round_trip_through_inspect() {
    let d = with_busybox(&[]);
    create(
        &d,
        "all",
        json!({"Image": "bb", "Cmd": ["true"], "HostConfig": {
            "CgroupnsMode": "private",
            "Isolation": "default",
            "DeviceCgroupRules": ["c 7:128 rwm"],
            "VolumeDriver": "foo",
            "Runtime": "runc",
            "MemorySwappiness": 40,
            "RestartPolicy": {"Name": "on-failure", "MaximumRetryCount": 3},
        }}),
    );
    let h = &inspect(&d, "all")["HostConfig"];
    assert_eq!(h["CgroupnsMode"], "private");
    assert_eq!(h["Isolation"], "default");
    assert_eq!(h["DeviceCgroupRules"], json!(["c 7:128 rwm"]));
    assert_eq!(h["VolumeDriver"], "foo");
    assert_eq!(h["Runtime"], "runc");
    assert_eq!(h["MemorySwappiness"], 40);
    assert_eq!(
        h["RestartPolicy"],
        json!({"Name": "on-failure", "MaximumRetryCount": 3})
    );
    create(&d, "plain", json!({"Image": "bb", "Cmd": ["true"]}));
    let h = &inspect(&d, "plain")["HostConfig"];
    let v2 = std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
    assert_eq!(h["CgroupnsMode"], if v2 { "private" } else { "host" });
    assert_eq!(h["Runtime"], "runc");
    assert_eq!(h["Isolation"], "");
    assert_eq!(h["MemorySwappiness"], Value::Null);
    assert_eq!(h["LogConfig"]["Type"], "json-file");
    for (hc, words) in [
        (
            json!({"Isolation": "hyperv"}),
            "linux only supports 'default'",
        ),
        (
            json!({"CgroupnsMode": "shared"}),
            "invalid cgroup namespace mode",
        ),
        (
            json!({"MemorySwappiness": 101}),
            "valid memory swappiness range is 0-100",
        ),
        (
            json!({"DeviceCgroupRules": ["x 1:2 rwm"]}),
            "invalid device cgroup rule",
        ),
        (
            json!({"VolumeDriver": "foo", "Binds": ["data:/data"]}),
            "volume driver \\\"foo\\\" is not supported",
        ),
    ] {
        let (status, body) = api(
            &d,
            "POST",
            "/containers/create",
            Some(json!({"Image": "bb", "Cmd": ["true"], "HostConfig": hc})),
        );
        assert_eq!(status, 400, "{hc}: {body}");
        assert!(body.contains(words), "{hc}: {body}");
    }
    docker_ok(&d, &["rm", "all", "plain"]);
}

/// `--device-cgroup-rule` and `--memory-swappiness` reach the container's v1 cgroup, and
/// `--cgroupns` decides whether the container sees its own cgroup as the root (Docker
/// 20.10's default on cgroup v1 is the host's namespace).
#[test]
#[ignore = "root tier: needs root; scripts/test.sh runs it (--run-ignored all)"]
fn cgroup_options_are_applied() {
    let d = with_busybox(&[]);
    if std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        panic!("this test reads cgroup v1 files: run it on the hybrid v1 hosts of TESTING.md");
    }
    let id = docker_ok(
        &d,
        &[
            "run",
            "-d",
            "--device-cgroup-rule",
            "c 7:128 rwm",
            "--memory-swappiness",
            "40",
            "--cgroupns",
            "private",
            "bb",
            "sleep",
            "100",
        ],
    )
    .trim()
    .to_string();
    let dir = |ctl: &str| {
        d.cgroup_dirs(&id)
            .into_iter()
            .find(|p| p.starts_with(format!("/sys/fs/cgroup/{ctl}")))
            .unwrap()
    };
    let devices = std::fs::read_to_string(dir("devices").join("devices.list")).unwrap();
    assert!(devices.lines().any(|l| l == "c 7:128 rwm"), "{devices}");
    let swappiness = std::fs::read_to_string(dir("memory").join("memory.swappiness")).unwrap();
    assert_eq!(swappiness.trim(), "40");
    // In a namespace of its own, its cgroup is the root of every hierarchy.
    let own = docker_ok(&d, &["exec", &id, "cat", "/proc/self/cgroup"]);
    assert!(own.lines().any(|l| l.ends_with(":/")), "{own}");
    assert!(!own.contains(&id), "{own}");
    let host = docker_ok(&d, &["run", "--rm", "bb", "cat", "/proc/self/cgroup"]);
    assert!(
        host.lines().any(|l| l.contains(&d.cgroup_parent())),
        "the host's cgroup namespace shows the full path: {host}"
    );
    // Its own group is still what /sys/fs/cgroup shows there.
    let limit = docker_ok(
        &d,
        &[
            "run",
            "--rm",
            "-m",
            "64m",
            "bb",
            "cat",
            "/sys/fs/cgroup/memory/memory.limit_in_bytes",
        ],
    );
    assert_eq!(limit.trim(), (64u64 << 20).to_string());
    docker_ok(&d, &["rm", "-f", &id]);
}

/// Log driver `none`: the attached client still sees the output, nothing is kept, and
/// `logs` answers as Docker's; a driver Docker does not know gets Docker's words.
#[test]
#[ignore = "root tier: needs root; scripts/test.sh runs it (--run-ignored all)"]
fn log_driver_none_keeps_nothing() {
    let d = with_busybox(&[]);
    let out = docker_ok(
        &d,
        &[
            "run",
            "--name",
            "quiet",
            "--log-driver",
            "none",
            "bb",
            "echo",
            "hello",
        ],
    );
    assert_eq!(out, "hello\n");
    assert_eq!(
        inspect(&d, "quiet")["HostConfig"]["LogConfig"]["Type"],
        "none"
    );
    let (code, _, err) = outcome(&d.docker(DOCKER, &["logs", "quiet"]));
    assert_ne!(code, 0);
    assert!(
        err.contains("configured logging driver does not support reading"),
        "{err}"
    );
    let (status, _) = api(&d, "GET", "/containers/quiet/logs?stdout=1", None);
    assert_eq!(status, 501);
    let (code, _, err) = outcome(&d.docker(DOCKER, &["run", "--log-driver", "asdf", "bb", "true"]));
    assert_ne!(code, 0);
    assert!(
        err.contains("logger: no log driver named 'asdf' is registered"),
        "{err}"
    );
    docker_ok(&d, &["rm", "quiet"]);
}

/// Legacy links on the default bridge: the linked container's address in /etc/hosts
/// under the alias, its environment and ports as `ALIAS_*` variables; the link shown as
/// Docker shows it, and removed with `DELETE /containers/NAME/ALIAS?link=1`.
#[test]
#[ignore = "root tier: needs root; scripts/test.sh runs it (--run-ignored all)"]
fn legacy_links_on_the_default_bridge() {
    let d = with_busybox(&[]);
    docker_ok(
        &d,
        &[
            "run", "-d", "--name", "up", "-e", "FOO=1", "--expose", "80", "bb", "sleep", "100",
        ],
    );
    let ip = inspect(&d, "up")["NetworkSettings"]["IPAddress"]
        .as_str()
        .unwrap()
        .to_string();
    docker_ok(
        &d,
        &[
            "create",
            "--name",
            "down",
            "--link",
            "up:my-link",
            "bb",
            "sh",
            "-c",
            "env; cat /etc/hosts",
        ],
    );
    assert_eq!(
        inspect(&d, "down")["HostConfig"]["Links"],
        json!(["/up:/down/my-link"])
    );
    let out = docker_ok(&d, &["start", "-a", "down"]);
    for want in [
        "MY_LINK_NAME=/down/my-link".to_string(),
        "MY_LINK_ENV_FOO=1".to_string(),
        format!("MY_LINK_PORT=tcp://{ip}:80"),
        format!("MY_LINK_PORT_80_TCP_ADDR={ip}"),
    ] {
        assert!(out.lines().any(|l| l == want), "{want} in:\n{out}");
    }
    assert!(
        out.lines()
            .any(|l| l.starts_with(&format!("{ip}\tmy-link ")) && l.ends_with(" up")),
        "{out}"
    );
    // A second start has each variable once.
    let again = docker_ok(&d, &["start", "-a", "down"]);
    assert_eq!(again.matches("MY_LINK_ENV_FOO=1").count(), 1, "{again}");
    let (status, body) = api(&d, "DELETE", "/containers/down/my-link?link=1", None);
    assert_eq!(status, 204, "{body}");
    assert_eq!(inspect(&d, "down")["HostConfig"]["Links"], Value::Null);
    let after = docker_ok(&d, &["start", "-a", "down"]);
    assert!(!after.contains("MY_LINK_"), "{after}");
    // A link to no container, or to one that does not run.
    let (code, _, err) =
        outcome(&d.docker(DOCKER, &["create", "--link", "nosuch:x", "bb", "true"]));
    assert_ne!(code, 0);
    assert!(err.contains("could not get container for nosuch"), "{err}");
    docker_ok(
        &d,
        &["create", "--name", "late", "--link", "up:l2", "bb", "true"],
    );
    docker_ok(&d, &["stop", "-t", "0", "up"]);
    let (code, _, err) = outcome(&d.docker(DOCKER, &["start", "late"]));
    assert_ne!(code, 0);
    assert!(
        err.contains("Cannot link to a non running container"),
        "{err}"
    );
    docker_ok(&d, &["rm", "late", "down", "up"]);
}

/// A link on a user network (given before its target exists, as compose's `run` sends
/// it) is the linker's own name for the target: its DNS answers the alias to it, and
/// to no other container.
#[test]
#[ignore = "root tier: needs root; scripts/test.sh runs it (--run-ignored all)"]
fn links_on_a_user_network_resolve_for_the_linker_only() {
    let d = with_busybox(&[]);
    docker_ok(&d, &["network", "create", "ln"]);
    docker_ok(
        &d,
        &[
            "run",
            "-d",
            "--name",
            "linker",
            "--network",
            "ln",
            "--link",
            "upstream:bar",
            "bb",
            "sleep",
            "100",
        ],
    );
    assert_eq!(
        inspect(&d, "linker")["NetworkSettings"]["Networks"]["ln"]["Links"],
        json!(["upstream:bar"])
    );
    docker_ok(
        &d,
        &[
            "run",
            "-d",
            "--name",
            "upstream",
            "--network",
            "ln",
            "bb",
            "sleep",
            "100",
        ],
    );
    let ip = inspect(&d, "upstream")["NetworkSettings"]["Networks"]["ln"]["IPAddress"]
        .as_str()
        .unwrap()
        .to_string();
    let looked = docker_ok(&d, &["exec", "linker", "nslookup", "bar"]);
    assert!(looked.contains(&ip), "{looked}");
    let (code, out, _) = outcome(&d.docker(
        DOCKER,
        &["run", "--rm", "--network", "ln", "bb", "nslookup", "bar"],
    ));
    assert!(
        code != 0 || !out.contains(&ip),
        "another container resolved the link: {out}"
    );
    docker_ok(&d, &["rm", "-f", "linker", "upstream"]);
    docker_ok(&d, &["network", "rm", "ln"]);
}

/// `--volumes-from`: the other container's volumes and bind mounts, in their mode or
/// the one asked for; inspect shows the list as given.
#[test]
#[ignore = "root tier: needs root; scripts/test.sh runs it (--run-ignored all)"]
fn volumes_from_shares_the_other_containers_volumes() {
    let d = with_busybox(&[]);
    docker_ok(
        &d,
        &[
            "create",
            "--name",
            "src",
            "-v",
            "/data",
            "-v",
            "named:/named",
            "bb",
            "true",
        ],
    );
    docker_ok(
        &d,
        &[
            "run",
            "--rm",
            "--volumes-from",
            "src",
            "bb",
            "sh",
            "-c",
            "echo hi > /data/f && echo there > /named/g",
        ],
    );
    let out = docker_ok(
        &d,
        &[
            "run",
            "--name",
            "reader",
            "--volumes-from",
            "src:ro",
            "bb",
            "sh",
            "-c",
            "cat /data/f /named/g; touch /data/x 2>/dev/null || echo read-only",
        ],
    );
    assert_eq!(out, "hi\nthere\nread-only\n");
    assert_eq!(
        inspect(&d, "reader")["HostConfig"]["VolumesFrom"],
        json!(["src:ro"])
    );
    let (code, _, err) = outcome(&d.docker(
        DOCKER,
        &["create", "--volumes-from", "nosuch", "bb", "true"],
    ));
    assert_ne!(code, 0);
    assert!(err.contains("No such container: nosuch"), "{err}");
    docker_ok(&d, &["rm", "-v", "reader", "src"]);
    docker_ok(&d, &["volume", "rm", "named"]);
}

/// Endpoint settings at create (`NetworkingConfig`) and on `network connect`: aliases,
/// links, link-local addresses, MAC address and driver options are kept and shown in
/// `NetworkSettings.Networks`; an IPv6 address on a network without IPv6 is refused
/// with a reason.
#[test]
#[ignore = "root tier: needs root; scripts/test.sh runs it (--run-ignored all)"]
fn endpoint_settings_are_kept_and_shown() {
    let d = with_busybox(&[]);
    docker_ok(&d, &["network", "create", "ep1"]);
    docker_ok(&d, &["network", "create", "ep2"]);
    create(
        &d,
        "epc",
        json!({"Image": "bb", "Cmd": ["sleep", "100"],
        "HostConfig": {"NetworkMode": "ep1"},
        "NetworkingConfig": {"EndpointsConfig": {"ep1": {
            "Aliases": ["hello"],
            "Links": ["upstream:bar"],
            "DriverOpts": {"key1": "a"},
            "MacAddress": "02:42:ac:11:00:09",
            "IPAMConfig": {"LinkLocalIPs": ["169.254.8.8"]},
        }}}}),
    );
    let ep = &inspect(&d, "epc")["NetworkSettings"]["Networks"]["ep1"];
    assert_eq!(ep["Aliases"], json!(["hello"]));
    assert_eq!(ep["Links"], json!(["upstream:bar"]));
    assert_eq!(ep["DriverOpts"], json!({"key1": "a"}));
    assert_eq!(ep["MacAddress"], "02:42:ac:11:00:09");
    assert_eq!(ep["IPAMConfig"]["LinkLocalIPs"], json!(["169.254.8.8"]));
    let (status, body) = api(
        &d,
        "POST",
        "/networks/ep2/connect",
        Some(json!({"Container": "epc", "EndpointConfig": {
            "MacAddress": "02:42:ac:11:00:02",
            "Links": ["other"],
            "DriverOpts": {"k": "v"},
        }})),
    );
    assert_eq!(status, 200, "{body}");
    docker_ok(&d, &["start", "epc"]);
    // The link-local address is on its interface there.
    let addrs = docker_ok(&d, &["exec", "epc", "ip", "-4", "addr"]);
    assert!(addrs.contains("inet 169.254.8.8/16"), "{addrs}");
    let nets = &inspect(&d, "epc")["NetworkSettings"]["Networks"];
    assert_eq!(nets["ep2"]["MacAddress"], "02:42:ac:11:00:02");
    assert_eq!(nets["ep2"]["Links"], json!(["other"]));
    assert_eq!(nets["ep2"]["DriverOpts"], json!({"k": "v"}));
    assert_eq!(nets["ep1"]["MacAddress"], "02:42:ac:11:00:09");
    // An IPv6 address on a network without IPv6 is refused with the reason.
    docker_ok(&d, &["network", "create", "ep3"]);
    let (status, body) = api(
        &d,
        "POST",
        "/networks/ep3/connect",
        Some(json!({"Container": "epc", "EndpointConfig": {
            "IPAMConfig": {"IPv6Address": "2001:db8::5"}}})),
    );
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("IPv6"), "{body}");
    docker_ok(&d, &["rm", "-f", "epc"]);
    docker_ok(&d, &["network", "rm", "ep1", "ep2", "ep3"]);
}

/// A `restart=always` container that has exited is restarting: an unforced remove right
/// after its wait is refused as Docker refuses it, however the two race.
#[test]
#[ignore = "root tier: needs root; scripts/test.sh runs it (--run-ignored all)"]
fn a_pending_restart_refuses_an_unforced_remove() {
    let d = with_busybox(&[]);
    for i in 0..3 {
        let name = format!("again{i}");
        create(
            &d,
            &name,
            json!({"Image": "bb", "Cmd": ["sleep", "0.5"],
                "HostConfig": {"NetworkMode": "none", "RestartPolicy": {"Name": "always"}}}),
        );
        let (status, body) = api(&d, "POST", &format!("/containers/{name}/start"), None);
        assert_eq!(status, 204, "{body}");
        let (status, body) = api(&d, "POST", &format!("/containers/{name}/wait"), None);
        assert_eq!(status, 200, "{body}");
        let (status, body) = api(&d, "DELETE", &format!("/containers/{name}"), None);
        assert_eq!(status, 409, "{body}");
        assert!(
            body.to_lowercase().contains("stop the container before"),
            "{body}"
        );
        let (status, body) = api(&d, "DELETE", &format!("/containers/{name}?force=1"), None);
        assert_eq!(status, 204, "{body}");
    }
}

/// Docker's memory reservation, OOM killer and score, memory nodes and per-device I/O
/// throttles (refused as "not applied" before) reach the container's cgroup and process,
/// and inspect shows them as given.
#[test]
#[ignore = "root tier: needs root; scripts/test.sh runs it (--run-ignored all)"]
fn reservation_oom_mems_and_device_io_are_applied() {
    let d = with_busybox(&[]);
    // A disk of this host (not a loop or RAM device) to throttle.
    let disk = std::fs::read_dir("/sys/block")
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .find(|n| !n.starts_with("loop") && !n.starts_with("ram") && !n.starts_with("zram"))
        .expect("a disk in /sys/block");
    let numbers = std::fs::read_to_string(format!("/sys/block/{disk}/dev")).unwrap();
    let numbers = numbers.trim();
    let dev = format!("/dev/{disk}");
    let out = docker_ok(
        &d,
        &[
            "run",
            "-d",
            "--name",
            "lim",
            "--memory-reservation",
            "32m",
            "--oom-kill-disable",
            "--oom-score-adj",
            "500",
            "--cpuset-mems",
            "0",
            "--device-read-bps",
            &format!("{dev}:1mb"),
            "--device-write-iops",
            &format!("{dev}:100"),
            "bb",
            "sleep",
            "1000",
        ],
    );
    let id = out.trim().to_string();
    let (code, adj, err) =
        outcome(&d.docker("docker", &["exec", "lim", "cat", "/proc/1/oom_score_adj"]));
    assert_eq!(code, 0, "{err}");
    assert_eq!(adj.trim(), "500");
    let file = |name: &str| {
        d.cgroup_dirs(&id)
            .iter()
            .map(|dir| dir.join(name))
            .find_map(|f| std::fs::read_to_string(f).ok())
            .unwrap_or_else(|| panic!("no {name} in the container's cgroups"))
    };
    assert_eq!(
        file("memory.soft_limit_in_bytes").trim(),
        (32u64 << 20).to_string()
    );
    assert!(file("memory.oom_control").contains("oom_kill_disable 1"));
    assert_eq!(file("cpuset.mems").trim(), "0");
    assert!(
        file("blkio.throttle.read_bps_device").contains(&format!("{numbers} 1048576")),
        "{}",
        file("blkio.throttle.read_bps_device")
    );
    assert!(file("blkio.throttle.write_iops_device").contains(&format!("{numbers} 100")));
    let hc = inspect(&d, "lim")["HostConfig"].clone();
    assert_eq!(hc["MemoryReservation"], 32u64 << 20, "{hc}");
    assert_eq!(hc["OomKillDisable"], true, "{hc}");
    assert_eq!(hc["OomScoreAdj"], 500, "{hc}");
    assert_eq!(hc["CpusetMems"], "0", "{hc}");
    assert_eq!(
        hc["BlkioDeviceReadBps"],
        json!([{"Path": dev, "Rate": 1048576}]),
        "{hc}"
    );
    assert_eq!(
        hc["BlkioDeviceWriteIOps"],
        json!([{"Path": dev, "Rate": 100}]),
        "{hc}"
    );
    // What cannot be is refused with its reason, and nothing is made.
    let (code, _, err) = outcome(&d.docker(
        "docker",
        &["create", "--device-read-bps", "/dev/null:1mb", "bb"],
    ));
    assert_ne!(code, 0);
    assert!(err.contains("not a block device"), "{err}");
    let (code, _, err) = outcome(&d.docker("docker", &["create", "--oom-score-adj", "2000", "bb"]));
    assert_ne!(code, 0);
    assert!(err.contains("range for oom score adj"), "{err}");
    docker_ok(&d, &["rm", "-f", "lim"]);
}

/// Non-recursive bind mounts (`BindOptions.NonRecursive`), tmpfs `uid=`/`gid=` and
/// `--userns host` (each refused as "not supported by pier yet" before) are honoured.
#[test]
#[ignore = "root tier: needs root; scripts/test.sh runs it (--run-ignored all)"]
fn non_recursive_binds_tmpfs_owners_and_userns_host() {
    let d = with_busybox(&[]);
    let top = d.dir.path().join("top");
    let sub = top.join("sub");
    std::fs::create_dir_all(&sub).unwrap();
    std::fs::write(sub.join("under"), "below the mount\n").unwrap();
    // A mount below the bind's source: a recursive bind shows it, a non-recursive not.
    let _mounted = mount_tmpfs(&sub);
    std::fs::write(sub.join("on-tmpfs"), "on the submount\n").unwrap();
    let run = |non_recursive: bool| {
        let body = json!({"Image": "bb", "Cmd": ["ls", "/a/sub"], "HostConfig": {"Mounts": [
            {"Type": "bind", "Source": top, "Target": "/a",
             "BindOptions": {"NonRecursive": non_recursive}}]}});
        let id = create(&d, "", body);
        docker_ok(&d, &["start", "-a", &id])
    };
    let listed = (run(true), run(false));
    assert_eq!(
        listed.0.trim(),
        "under",
        "non-recursive: the source's own files"
    );
    assert_eq!(listed.1.trim(), "on-tmpfs", "recursive: the submount");
    let out = docker_ok(
        &d,
        &[
            "run",
            "--rm",
            "--tmpfs",
            "/t:uid=1000,gid=1001,mode=700",
            "bb",
            "stat",
            "-c",
            "%u %g %a",
            "/t",
        ],
    );
    assert_eq!(out.trim(), "1000 1001 700");
    docker_ok(
        &d,
        &["create", "--name", "uh", "--userns", "host", "bb", "true"],
    );
    assert_eq!(inspect(&d, "uh")["HostConfig"]["UsernsMode"], "host");
    docker_ok(&d, &["start", "-a", "uh"]);
    docker_ok(&d, &["rm", "uh"]);
}

/// A tmpfs mounted on a test's directory, unmounted on drop (the test may fail).
struct Mounted(std::path::PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

fn mount_tmpfs(dir: &std::path::Path) -> Mounted {
    let ok = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "tmpfs"])
        .arg(dir)
        .status()
        .unwrap()
        .success();
    assert!(ok, "mount a tmpfs on {}", dir.display());
    Mounted(dir.to_path_buf())
}
