//! Root tier: VMs from the same images (`pier run --vm`, `--runtime pier-vm`), under
//! QEMU's emulation (TCG), which is what these machines can run: the entrypoint's output,
//! exit code, user, environment and working directory as a container of the image has
//! them; a terminal; exec; logs across a daemon restart; stop and kill; networks shared
//! with containers (names, published ports), also across two hosts of a pool over a pool
//! network; volumes; and bad input leaving nothing.
//!
//! Needs QEMU and the VM assets (`scripts/vm-assets.sh`, which `scripts/test.sh` runs).

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::*;

/// A daemon whose VMs run under emulation, with busybox as `bb`.
fn vm_daemon() -> Daemon {
    require_root_and_tools(&["qemu-system-x86_64"]);
    let assets = std::env::var("PIER_VM_DIR").unwrap_or_else(|_| "/usr/local/lib/pier/vm".into());
    for f in ["vmlinuz", "pier-guest", "modules/modules.order"] {
        assert!(
            std::path::Path::new(&assets).join(f).exists(),
            "{assets}/{f} is missing: run scripts/vm-assets.sh (scripts/test.sh does)"
        );
    }
    with_busybox(&["--vm-accel", "tcg"])
}

fn run(d: &Daemon, args: &[&str]) -> (i32, String, String) {
    outcome(&d.pier(args))
}

/// No QEMU, virtiofsd or `pier __vm` of this daemon is left.
fn no_vm_processes(d: &Daemon) -> bool {
    let root = d.dir.path().display().to_string();
    let mut left = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        // A VM's processes work in its directory under the daemon's root.
        let Ok(cwd) = std::fs::read_link(e.path().join("cwd")) else {
            continue;
        };
        let cmd = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        let vm = cmd.contains("qemu") || cmd.contains("virtiofsd") || cmd.contains("__vm");
        if cwd.starts_with(&root) && vm {
            left.push(cmd);
        }
    }
    assert!(left.is_empty(), "left running: {left:?}");
    true
}

#[test]
#[ignore = "root tier: needs root; scripts/test.sh runs it (--run-ignored all)"]
fn the_same_image_runs_as_a_vm_with_a_containers_output() {
    let d = vm_daemon();
    let script =
        "echo out; echo err >&2; id -u; id -g; pwd; echo $GREETING; cat /etc/hostname; exit 3";
    let args = |vm: bool| {
        let mut a = vec!["run", "--rm"];
        if vm {
            a.push("--vm");
        }
        a.extend_from_slice(&[
            "-u",
            "1000:1000",
            "-w",
            "/tmp",
            "-e",
            "GREETING=hello",
            "--hostname",
            "twin",
            "bb",
            "sh",
            "-c",
            script,
        ]);
        a
    };
    let (vm_code, vm_out, vm_err) = run(&d, &args(true));
    let (c_code, c_out, c_err) = run(&d, &args(false));
    assert_eq!(vm_code, 3, "stdout: {vm_out} stderr: {vm_err}");
    assert_eq!(vm_out, "out\n1000\n1000\n/tmp\nhello\ntwin\n");
    assert_eq!(vm_err, "err\n");
    assert_eq!((vm_code, &vm_out, &vm_err), (c_code, &c_out, &c_err));
    // It is a VM: its own kernel (Debian's cloud kernel), not the host's.
    let host_kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    // Selected through the Docker API as Kata is: `docker run --runtime pier-vm`.
    let (code, guest_kernel, err) = outcome(&d.docker(
        "docker",
        &["run", "--rm", "--runtime", "pier-vm", "bb", "uname", "-r"],
    ));
    assert_eq!(code, 0, "{err}");
    assert!(guest_kernel.contains("cloud-amd64"), "{guest_kernel}");
    assert_ne!(guest_kernel.trim(), host_kernel.trim());
    // The image's default command, and a missing one: 127 and nothing left.
    let (code, _, err) = run(&d, &["run", "--rm", "--vm", "bb", "/no/such/command"]);
    assert_eq!(code, 127, "{err}");
    assert!(err.contains("/no/such/command"), "{err}");
    assert!(no_vm_processes(&d));
    assert!(d.ok(&["ps", "-aq"]).trim().is_empty());
}

#[test]
#[ignore = "root tier: needs root; scripts/test.sh runs it (--run-ignored all)"]
fn a_vm_runs_detached_execs_stops_and_survives_a_daemon_restart() {
    let mut d = vm_daemon();
    let id = d
        .ok(&[
            "run",
            "-d",
            "--vm",
            "--name",
            "v1",
            "bb",
            "sh",
            "-c",
            "echo started; trap 'echo bye; exit 7' TERM; while true; do sleep 0.2; done",
        ])
        .trim()
        .to_string();
    wait_until("the VM's first output", || {
        d.ok(&["logs", "v1"]).contains("started")
    });
    let i = &d.json(&["inspect", "v1"])[0];
    assert_eq!(i["config"]["runtime"], "pier-vm", "{i}");
    assert_eq!(i["state"]["status"], "running");
    // exec, as the image's user and as another.
    assert_eq!(d.ok(&["exec", "v1", "cat", "/proc/1/comm"]).trim(), "init");
    assert_eq!(
        d.ok(&["exec", "-u", "1000", "v1", "id", "-u"]).trim(),
        "1000"
    );
    let (code, _, _) = run(&d, &["exec", "v1", "sh", "-c", "exit 9"]);
    assert_eq!(code, 9);
    // Its serial console: what the guest writes there, until ctrl-] leaves it.
    let mut console = d
        .cmd()
        .args(["vm", "console", "v1"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    d.ok(&[
        "exec",
        "v1",
        "sh",
        "-c",
        "echo hello-console > /dev/console",
    ]);
    std::thread::sleep(Duration::from_millis(1500));
    std::io::Write::write_all(console.stdin.as_mut().unwrap(), b"\x1d").unwrap();
    let out = console.wait_with_output().unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("hello-console"),
        "{out:?}"
    );
    let (code, _, err) = run(&d, &["run", "-d", "--name", "plain", "bb", "sleep", "60"]);
    assert_eq!(code, 0, "{err}");
    let err = d.fails(&["vm", "console", "plain"]);
    assert!(err.contains("not a VM"), "{err}");
    d.ok(&["rm", "-f", "plain"]);
    // The daemon restarts; the VM runs on and is adopted.
    d.stop();
    d.spawn();
    assert_eq!(d.json(&["inspect", "v1"])[0]["state"]["status"], "running");
    assert!(d.ok(&["logs", "v1"]).contains("started"));
    assert_eq!(d.ok(&["exec", "v1", "echo", "again"]).trim(), "again");
    // stop: SIGTERM reaches the entrypoint in the guest.
    d.ok(&["stop", "-t", "20", "v1"]);
    let i = &d.json(&["inspect", "v1"])[0];
    assert_eq!(i["state"]["exit_code"], 7, "{i}");
    assert!(d.ok(&["logs", "v1"]).contains("bye"));
    assert!(no_vm_processes(&d));
    // kill: 137.
    d.ok(&["start", "v1"]);
    wait_until("the VM again", || {
        d.ok(&["logs", "v1"]).matches("started").count() == 2
    });
    d.ok(&["kill", "v1"]);
    d.ok(&["wait", "v1"]);
    assert_eq!(d.json(&["inspect", "v1"])[0]["state"]["exit_code"], 137);
    // A VM killed outright starts again (what its host side held is gone with it).
    d.ok(&["start", "v1"]);
    wait_until("the VM after its kill", || {
        d.ok(&["logs", "v1"]).matches("started").count() == 3
    });
    d.ok(&["kill", "v1"]);
    d.ok(&["wait", "v1"]);
    d.ok(&["rm", &id]);
    assert!(no_vm_processes(&d));
}

#[test]
#[ignore = "root tier: needs root; scripts/test.sh runs it (--run-ignored all)"]
fn a_vm_has_a_terminal() {
    let d = vm_daemon();
    let out = std::process::Command::new("script")
        .args([
            "-qec",
            &format!(
                "stty rows 33 cols 77; PIER_HOST={} pier run --rm -it --vm bb sh -c 'sleep 2; stty size; tty; exit 5'",
                d.socket.display()
            ),
            "/dev/null",
        ])
        .env("PATH", format!("{}:{}", env!("CARGO_BIN_EXE_pier").trim_end_matches("/pier"), std::env::var("PATH").unwrap_or_default()))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(5), "{text}");
    assert!(text.contains("33 77"), "{text}");
    assert!(text.contains("/dev/pts/"), "{text}");
}

/// A shell line that looks `name` up with Pier's DNS (busybox's nslookup: its static
/// libc cannot resolve through NSS) and fetches / from it on port 80.
fn fetch_by_name(name: &str) -> String {
    format!(
        "ip=$(nslookup {name} | awk '/^Address/ {{a=$NF}} END {{print a}}'); \
         printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc $ip 80"
    )
}

#[test]
#[ignore = "root tier: needs root; scripts/test.sh runs it (--run-ignored all)"]
fn a_vm_and_a_container_share_a_network_names_and_published_ports() {
    let d = vm_daemon();
    d.ok(&["network", "create", "mixed"]);
    let script =
        "mkdir -p /www && echo from-the-vm > /www/index.html && exec httpd -f -p 80 -h /www";
    d.ok(&[
        "run",
        "-d",
        "--vm",
        "--network",
        "mixed",
        "--name",
        "vmweb",
        "-p",
        "18080:80",
        "bb",
        "sh",
        "-c",
        script,
    ]);
    let get = |url: &str| {
        let out = d
            .in_netns("timeout")
            .args(["3", "busybox", "wget", "-q", "-O", "-", url])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    };
    // The published port, from the host.
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    while get("http://127.0.0.1:18080/").is_none() {
        assert!(
            std::time::Instant::now() < deadline,
            "the VM's published port never answered; log: {}",
            d.ok(&["logs", "vmweb"])
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    assert_eq!(get("http://127.0.0.1:18080/").unwrap(), "from-the-vm\n");
    // A container on the same network reaches the VM by name, and the VM the container.
    let (code, out, err) = run(
        &d,
        &[
            "run",
            "--rm",
            "--network",
            "mixed",
            "bb",
            "sh",
            "-c",
            &fetch_by_name("vmweb"),
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("from-the-vm"), "{out}");
    d.ok(&[
        "run",
        "-d",
        "--network",
        "mixed",
        "--name",
        "cweb",
        "bb",
        "sh",
        "-c",
        "mkdir -p /www && echo from-the-container > /www/index.html && exec httpd -f -p 80 -h /www",
    ]);
    // The container's server listens a moment after its start.
    wait_until("the container's web server, from the VM", || {
        let (_, out, _) = run(&d, &["exec", "vmweb", "sh", "-c", &fetch_by_name("cweb")]);
        out.contains("from-the-container")
    });
    d.ok(&["rm", "-f", "vmweb", "cweb"]);
    d.ok(&["network", "rm", "mixed"]);
    assert!(no_vm_processes(&d));
}

#[test]
#[ignore = "root tier: needs root; scripts/test.sh runs it (--run-ignored all)"]
fn a_vm_sees_directory_and_block_volumes_with_their_limits() {
    let d = vm_daemon();
    // A directory volume: what the VM writes, a container reads.
    let (code, _, err) = run(
        &d,
        &[
            "run",
            "--rm",
            "--vm",
            "-v",
            "shared:/data",
            "bb",
            "sh",
            "-c",
            "echo from-vm > /data/f",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let (_, out, _) = run(
        &d,
        &["run", "--rm", "-v", "shared:/data", "bb", "cat", "/data/f"],
    );
    assert_eq!(out, "from-vm\n");
    // A block volume of 16 MiB with a filesystem: writing more fails in the VM.
    d.ok(&[
        "volume", "create", "--driver", "block", "--opt", "size=16m", "--opt", "fs=ext4", "small",
    ]);
    let (code, out, err) = run(
        &d,
        &[
            "run",
            "--rm",
            "--vm",
            "-v",
            "small:/data",
            "bb",
            "sh",
            "-c",
            "dd if=/dev/zero of=/data/big bs=1M count=64 2>/dev/null; echo rc=$?; sync",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("rc=1"),
        "writing past the volume's size must fail: {out}"
    );
    // A raw block volume: a virtio-blk disk, where the instance asked for it.
    d.ok(&[
        "volume", "create", "--driver", "block", "--opt", "size=16m", "raw",
    ]);
    let dev = "type=volume,source=raw,target=/dev/vdb";
    let (code, out, err) = run(
        &d,
        &[
            "run", "--rm", "--vm", "--mount", dev, "bb", "sh", "-c",
            "echo pier-block | dd of=/dev/vdb conv=fsync 2>/dev/null; blockdev --getsize64 /dev/vdb",
        ],
    );
    assert_eq!((code, out.trim()), (0, "16777216"), "{err}");
    let (_, out, _) = run(
        &d,
        &[
            "run", "--rm", "--mount", dev, "bb", "head", "-c", "10", "/dev/vdb",
        ],
    );
    assert_eq!(out, "pier-block");
    assert!(no_vm_processes(&d));
}

#[test]
#[ignore = "root tier: needs root; scripts/test.sh runs it (--run-ignored all)"]
fn bad_vm_input_is_refused_clearly_and_leaves_nothing() {
    // No assets: refused at create, with what to run.
    let d = with_busybox(&["--vm-accel", "tcg", "--vm-dir", "/nonexistent/pier-vm"]);
    let (code, _, err) = run(&d, &["run", "--rm", "--vm", "bb", "true"]);
    assert_eq!(code, 125, "{err}");
    assert!(err.contains("vm-assets.sh"), "{err}");
    // What a VM cannot be given.
    let (code, _, err) = run(&d, &["create", "--vm", "--network", "host", "bb"]);
    assert_eq!(code, 125);
    assert!(err.contains("--network host"), "{err}");
    assert!(d.ok(&["ps", "-aq"]).trim().is_empty());
    assert!(no_vm_processes(&d));
}

#[test]
#[ignore = "root tier: needs root; scripts/test.sh runs it (--run-ignored all)"]
fn a_vm_and_a_container_on_two_hosts_reach_each_other_by_name_over_a_pool_network() {
    require_root_and_tools(&["etcd"]);
    let mut lan = Lan::new();
    let (h1, h2) = (vm_daemon(), vm_daemon());
    pool_of(&mut lan, &[&h1, &h2]);
    let net = format!("ov-{}", &random_tag()[..6]);
    h1.ok(&["network", "create", &net]);
    assert_eq!(h1.json(&["network", "inspect", &net])[0]["scope"], "pool");
    // Placed on h2 right away: h2 mirrors the network when the VM's start asks for it,
    // whether or not its overlay sync has followed the create yet.
    let web = format!("vmweb-{}", &random_tag()[..6]);
    let script =
        "mkdir -p /www && echo from-the-vm > /www/index.html && exec httpd -f -p 80 -h /www";
    h1.ok(&[
        "run",
        "-d",
        "--vm",
        "--network",
        &net,
        "--name",
        &web,
        "--constraint",
        "host.id==h2",
        "bb",
        "sh",
        "-c",
        script,
    ]);
    // A container on h1 reaches the VM on h2 by name (the VM boots under emulation).
    let cli = format!("cli-{}", &random_tag()[..6]);
    h1.ok(&[
        "run",
        "-d",
        "--network",
        &net,
        "--name",
        &cli,
        "--constraint",
        "host.id==h1",
        "bb",
        "sleep",
        "600",
    ]);
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    loop {
        let (_, out, _) = run(&h1, &["exec", &cli, "sh", "-c", &fetch_by_name(&web)]);
        if out.contains("from-the-vm") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the VM on h2 never answered by name from h1: {out}; its log: {}",
            h1.ok(&["logs", &web])
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    // And the VM, on h2, resolves the container on h1 by name, once h2's overlay sync
    // has followed the container's claim (a pass after the claim's watch event; under
    // the load of a whole test run that can take seconds).
    let cli_ip = h1.json(&["inspect", &cli])[0]["networks"][&net]["ip_address"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(!cli_ip.is_empty(), "{cli} has no address on {net}");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (code, out, err) = run(&h1, &["exec", &web, "nslookup", &cli]);
        if code == 0 && out.contains(&cli_ip) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the VM on h2 never resolved {cli} ({cli_ip}): {out}{err}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    h1.ok(&["rm", "-f", &web, &cli]);
    h1.ok(&["network", "rm", &net]);
    assert!(no_vm_processes(&h2));
}
