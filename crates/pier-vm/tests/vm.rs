//! Root tier: real VMs (QEMU under TCG, virtiofsd, the guest agent from
//! `scripts/vm-assets.sh`) run through `pier __vm`'s [`helper::main`] and `pier
//! __vm-exec`'s [`exec::main`].
//!
//! Each helper needs a fresh single-threaded process (a private mount namespace, death
//! signals, a signalfd), so the test re-executes this test binary with [`CHILD_ENV`] set;
//! its [`child_entry`] then forks out of libtest's threads and runs the helper with the
//! test's pipes as fds 0-3.

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use pier_guest::{ProcessConfig, RunConfig};
use pier_vm::assets::{Assets, Tools};
use pier_vm::{exec, helper, initramfs, Accel, VmConfig};

const CHILD_ENV: &str = "PIER_VM_TEST_CHILD";
const ROOT: &str = "root tier: needs root; scripts/test.sh runs it (--run-ignored all)";

/// Not a test: the entry point of the re-executed helpers (does nothing without
/// [`CHILD_ENV`]).
#[test]
fn child_entry() {
    let Ok(what) = std::env::var(CHILD_ENV) else {
        return;
    };
    // fds 4 and 5 are the test's stdout and stderr pipes (libtest writes its own
    // chatter to 1 before any test runs).
    // SAFETY: fork from the test thread; the child only runs the helper and exits.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        // SAFETY: moving the inherited descriptors onto stdio in the child.
        unsafe {
            libc::dup2(4, 1);
            libc::dup2(5, 2);
            libc::close(4);
            libc::close(5);
        }
        let (mode, rest) = what.split_once(':').unwrap();
        let code = match mode {
            "vm" => helper::main(Path::new(rest)),
            "exec" => {
                let (dir, req) = rest.split_once('\n').unwrap();
                exec::main(Path::new(dir), req)
            }
            _ => 99,
        };
        // SAFETY: leaving without libtest's epilogue.
        unsafe { libc::_exit(code) };
    }
    // Only the helper may hold the test's pipes: their ends tell the test it is done.
    // SAFETY: closing descriptors this process inherited and no longer uses.
    unsafe {
        for fd in 3..=5 {
            libc::close(fd);
        }
    }
    let mut status = 0;
    // SAFETY: waiting for our own child.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    std::process::exit(if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        128 + libc::WTERMSIG(status)
    });
}

/// A running helper: its pipes.
struct Helper {
    child: std::process::Child,
    stdin: Option<std::process::ChildStdin>,
    ready: std::fs::File,
    out: std::thread::JoinHandle<Vec<u8>>,
    err: std::thread::JoinHandle<Vec<u8>>,
}

fn pipe() -> (OwnedFd, OwnedFd) {
    let mut fds = [0; 2];
    // SAFETY: pipe2 into a local array.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: both descriptors were just made and are ours.
    unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
}

fn reader(fd: OwnedFd) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = std::fs::File::from(fd).read_to_end(&mut v);
        v
    })
}

/// Starts this binary's [`child_entry`] with `what`: stdin a pipe, fds 3 (a pipe, for
/// the "ready" line), 4 and 5 (stdout, stderr).
fn spawn(what: &str) -> Helper {
    let (ready_r, ready_w) = pipe();
    let (out_r, out_w) = pipe();
    let (err_r, err_w) = pipe();
    let fds = [ready_w.as_raw_fd(), out_w.as_raw_fd(), err_w.as_raw_fd()];
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args(["--exact", "child_entry", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, what)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    // SAFETY: only dup2 in the child, onto fixed numbers, from descriptors above them.
    unsafe {
        cmd.pre_exec(move || {
            let mut high = [0; 3];
            for (i, fd) in fds.iter().enumerate() {
                high[i] = libc::fcntl(*fd, libc::F_DUPFD_CLOEXEC, 100);
            }
            for (i, fd) in high.iter().enumerate() {
                libc::dup2(*fd, 3 + i as i32);
            }
            Ok(())
        })
    };
    let mut child = cmd.spawn().unwrap();
    drop((ready_w, out_w, err_w));
    Helper {
        stdin: child.stdin.take(),
        child,
        ready: std::fs::File::from(ready_r),
        out: reader(out_r),
        err: reader(err_r),
    }
}

impl Drop for Helper {
    /// A failed test leaves no VM running: SIGKILL the helper (QEMU and virtiofsd die
    /// with it), then its parent.
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let id = self.child.id();
            if let Ok(tasks) = std::fs::read_dir(format!("/proc/{id}/task")) {
                for t in tasks.flatten() {
                    let kids =
                        std::fs::read_to_string(t.path().join("children")).unwrap_or_default();
                    for k in kids
                        .split_whitespace()
                        .filter_map(|k| k.parse::<i32>().ok())
                    {
                        // SAFETY: killing the helper this test started.
                        unsafe { libc::kill(k, libc::SIGKILL) };
                    }
                }
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

struct Outcome {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Helper {
    fn ready_line(&mut self) -> String {
        let mut s = String::new();
        let _ = self.ready.read_to_string(&mut s);
        s
    }
    fn wait(mut self) -> Outcome {
        drop(self.stdin.take());
        let st = self.child.wait().unwrap();
        let out = std::mem::replace(&mut self.out, std::thread::spawn(Vec::new));
        let err = std::mem::replace(&mut self.err, std::thread::spawn(Vec::new));
        Outcome {
            code: st.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.join().unwrap()).into_owned(),
            stderr: String::from_utf8_lossy(&err.join().unwrap()).into_owned(),
        }
    }
}

/// An instance directory with a busybox rootfs and a vm.json running `args`.
struct Instance {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    config: VmConfig,
}

fn busybox_rootfs(root: &Path) {
    for d in ["bin", "etc", "proc", "sys", "dev", "tmp", "root"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    std::fs::copy("/bin/busybox", root.join("bin/busybox"))
        .expect("/bin/busybox (Debian's busybox-static) is needed: apt-get install busybox-static");
    for app in [
        "sh", "echo", "cat", "true", "sleep", "ls", "id", "pwd", "env", "ping", "stty",
    ] {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(app)).unwrap();
    }
    std::fs::write(root.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").unwrap();
}

fn instance(process: ProcessConfig) -> Instance {
    let tools = Tools::find().unwrap();
    let assets = Assets::find(&Assets::default_dir()).unwrap();
    let tmp = tempfile::Builder::new()
        .prefix("pier-vm-test")
        .tempdir()
        .unwrap();
    let dir = tmp.path().to_owned();
    busybox_rootfs(&dir.join("rootfs"));
    let initrd = dir.join("initramfs");
    initramfs::build(&assets, &initrd).unwrap();
    let config = VmConfig {
        qemu: tools.qemu,
        virtiofsd: tools.virtiofsd,
        kernel: assets.kernel,
        initramfs: initrd,
        accel: Accel::Tcg,
        cpus: 1,
        memory_mib: 256,
        netns: None,
        shares: vec![],
        disks: vec![],
        run: RunConfig {
            hostname: "vmtest".into(),
            rootfs: pier_guest::ROOTFS_TAG.into(),
            process,
            ..Default::default()
        },
        append: None,
    };
    config.save(&dir).unwrap();
    Instance {
        _tmp: tmp,
        dir,
        config,
    }
}

fn process(args: &[&str]) -> ProcessConfig {
    ProcessConfig {
        args: args.iter().map(|s| s.to_string()).collect(),
        env: vec!["PATH=/bin".into()],
        cwd: "/".into(),
        ..Default::default()
    }
}

/// Nothing of the VM is left: no process in DIR, no socket.
fn assert_nothing_left(dir: &Path) {
    let mut left = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(cwd) = std::fs::read_link(e.path().join("cwd")) {
            if cwd.starts_with(dir) {
                left.push(format!(
                    "process {} ({})",
                    e.file_name().to_string_lossy(),
                    std::fs::read_to_string(e.path().join("comm"))
                        .unwrap_or_default()
                        .trim()
                ));
            }
        }
    }
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        if e.file_type().unwrap().is_socket() {
            left.push(format!("socket {}", e.path().display()));
        }
    }
    assert!(left.is_empty(), "left behind: {left:?}");
}

use std::os::unix::fs::FileTypeExt;

fn run_exec(dir: &Path, p: &ProcessConfig, input: &[u8]) -> Outcome {
    let req = serde_json::to_string(p).unwrap();
    let mut h = spawn(&format!("exec:{}\n{req}", dir.display()));
    let mut stdin = h.stdin.take().unwrap();
    stdin.write_all(input).unwrap();
    drop(stdin);
    h.wait()
}

#[test]
#[ignore = "root tier: needs root; scripts/test.sh runs it (--run-ignored all)"]
fn a_vm_runs_its_entrypoint_with_stdio_exit_code_and_exec() {
    let _ = ROOT;
    let mut p = process(&[
        "/bin/sh",
        "-c",
        "echo out; echo err >&2; read x; echo got $x; exit 3",
    ]);
    p.stdin = true;
    let inst = instance(p);
    let started = Instant::now();
    let mut h = spawn(&format!("vm:{}", inst.dir.display()));
    let line = h.ready_line();
    assert_eq!(line, "ok\n", "the helper's ready line");
    eprintln!("started in {:?}", started.elapsed());
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(inst.dir.join("vm-state.json")).unwrap()).unwrap();
    assert_eq!(state["accel"], "tcg");
    assert!(state["qemu_pid"].as_u64().unwrap() > 1);

    // An exec: its own output, error and exit code, while the entrypoint waits.
    let e = run_exec(
        &inst.dir,
        &process(&["/bin/sh", "-c", "echo exec-out; echo exec-err >&2; exit 7"]),
        b"",
    );
    assert_eq!(
        (e.code, e.stdout.as_str(), e.stderr.as_str()),
        (7, "exec-out\n", "exec-err\n")
    );
    // An interactive exec: attach frames in.
    let mut cat = process(&["/bin/cat"]);
    cat.stdin = true;
    let mut input = pier_runtime::attach::frame(pier_runtime::attach::STDIN, b"via attach\n");
    input.extend(pier_runtime::attach::frame(
        pier_runtime::attach::CLOSE_STDIN,
        b"",
    ));
    let e = run_exec(&inst.dir, &cat, &input);
    assert_eq!(
        (e.code, e.stdout.as_str()),
        (0, "via attach\n"),
        "stderr: {}",
        e.stderr
    );
    // A terminal: its size set by a RESIZE frame before the command reads its input.
    let mut sh = process(&["/bin/sh"]);
    sh.tty = true;
    sh.stdin = true;
    sh.size = Some((24, 80));
    let mut input = pier_runtime::attach::resize(33, 77);
    input.extend(pier_runtime::attach::frame(
        pier_runtime::attach::STDIN,
        b"stty size; tty; exit 4\n",
    ));
    let e = run_exec(&inst.dir, &sh, &input);
    assert_eq!(e.code, 4, "stdout: {} stderr: {}", e.stdout, e.stderr);
    assert!(e.stdout.contains("33 77"), "{}", e.stdout);
    assert!(e.stdout.contains("/dev/pts/"), "{}", e.stdout);
    assert_eq!(e.stderr, "", "a terminal's output is all on stdout");
    // A command that does not exist: docker's 127 and a message.
    let e = run_exec(&inst.dir, &process(&["/no/such/thing"]), b"");
    assert_eq!(e.code, 127, "stderr: {}", e.stderr);
    assert!(e.stderr.contains("/no/such/thing"), "{}", e.stderr);

    h.stdin.as_mut().unwrap().write_all(b"hello\n").unwrap();
    let o = h.wait();
    assert_eq!(o.code, 3, "stderr: {}", o.stderr);
    assert_eq!(o.stdout, "out\ngot hello\n");
    assert_eq!(o.stderr, "err\n");
    assert_nothing_left(&inst.dir);
    let _ = &inst.config;
}

#[test]
#[ignore = "root tier: needs root; scripts/test.sh runs it (--run-ignored all)"]
fn an_entrypoint_that_does_not_exist_is_127_on_the_ready_pipe() {
    let inst = instance(process(&["/no/such/entrypoint"]));
    let mut h = spawn(&format!("vm:{}", inst.dir.display()));
    let line = h.ready_line();
    assert!(
        line.starts_with("err 127 ") && line.contains("/no/such/entrypoint"),
        "{line}"
    );
    let o = h.wait();
    assert_eq!(o.code, 127);
    assert_nothing_left(&inst.dir);
}

#[test]
#[ignore = "root tier: needs root; scripts/test.sh runs it (--run-ignored all)"]
fn a_kernel_that_does_not_boot_is_125_with_the_console_tail() {
    let mut inst = instance(process(&["/bin/true"]));
    // A "kernel" QEMU cannot load.
    let bad = inst.dir.join("bad-kernel");
    std::fs::write(&bad, b"not a kernel").unwrap();
    inst.config.kernel = bad;
    inst.config.save(&inst.dir).unwrap();
    let mut h = spawn(&format!("vm:{}", inst.dir.display()));
    let line = h.ready_line();
    assert!(
        line.starts_with("err 125 ") && line.ends_with('\n') && line.lines().count() == 1,
        "{line}"
    );
    // QEMU's own complaint is quoted (the console printed nothing).
    assert!(
        line.contains("the VM did not boot") && line.contains("qemu"),
        "{line}"
    );
    let o = h.wait();
    assert_eq!(o.code, 125);
    assert_nothing_left(&inst.dir);
}

/// Boot-to-exit of `/bin/true` through the helper (printed; `--nocapture` to see it).
#[test]
#[ignore = "root tier: needs root; scripts/test.sh runs it (--run-ignored all)"]
fn true_boots_and_exits_zero() {
    let inst = instance(process(&["/bin/true"]));
    let t = Instant::now();
    let mut h = spawn(&format!("vm:{}", inst.dir.display()));
    let line = h.ready_line();
    let o = h.wait();
    let took = t.elapsed();
    assert_eq!(line, "ok\n");
    assert_eq!(o.code, 0, "stderr: {}", o.stderr);
    assert!(took < Duration::from_secs(120));
    eprintln!("boot-to-exit of /bin/true: {took:?}");
    assert_nothing_left(&inst.dir);
}

/// The pid of the helper the re-executed test binary forked.
fn helper_pid(h: &Helper) -> i32 {
    let id = h.child.id();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        // libtest forked it from the test's thread: look through every task.
        for t in std::fs::read_dir(format!("/proc/{id}/task"))
            .unwrap()
            .flatten()
        {
            let kids = std::fs::read_to_string(t.path().join("children")).unwrap_or_default();
            if let Some(p) = kids.split_whitespace().next() {
                return p.parse().unwrap();
            }
        }
        assert!(Instant::now() < deadline, "the helper did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
#[ignore = "root tier: needs root; scripts/test.sh runs it (--run-ignored all)"]
fn shares_are_seen_read_only_or_not_and_a_signal_reaches_the_entrypoint() {
    let host = tempfile::tempdir().unwrap();
    let (ro, rw) = (host.path().join("ro"), host.path().join("rw"));
    std::fs::create_dir_all(&ro).unwrap();
    std::fs::create_dir_all(&rw).unwrap();
    std::fs::write(ro.join("hello.txt"), "from host\n").unwrap();
    let script = "cat /data/hello.txt; (echo x > /data/y) 2>/dev/null || echo ro; \
                  trap 'echo term; exit 42' TERM; echo w > /srv/rw/new; \
                  while true; do sleep 1; done";
    let mut inst = instance(process(&["/bin/sh", "-c", script]));
    inst.config.shares = vec![
        pier_vm::Share {
            source: ro.clone(),
            target: "/data".into(),
            read_only: true,
        },
        // A target that does not exist yet in the image: made (two levels).
        pier_vm::Share {
            source: rw.clone(),
            target: "srv/rw".into(),
            read_only: false,
        },
    ];
    inst.config.save(&inst.dir).unwrap();
    let mut h = spawn(&format!("vm:{}", inst.dir.display()));
    assert_eq!(h.ready_line(), "ok\n");
    // The write through the read-write share lands on the host, after the trap is set.
    let deadline = Instant::now() + Duration::from_secs(60);
    while !rw.join("new").exists() {
        assert!(
            Instant::now() < deadline,
            "the guest's write never reached the host"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(std::fs::read_to_string(rw.join("new")).unwrap(), "w\n");
    // The binds live in the helper's own mount namespace, not the host's.
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(&*inst.dir.to_string_lossy()), "{mounts}");
    // SAFETY: signalling the helper this test started.
    assert_eq!(unsafe { libc::kill(helper_pid(&h), libc::SIGTERM) }, 0);
    let o = h.wait();
    assert_eq!(o.code, 42, "stderr: {}", o.stderr);
    assert_eq!(o.stdout, "from host\nro\nterm\n");
    assert!(!ro.join("y").exists());
    assert!(
        !inst.dir.join("rootfs/data/hello.txt").exists(),
        "the bind outlived the helper"
    );
    assert_nothing_left(&inst.dir);
}

fn ip(args: &[&str]) {
    let st = Command::new("ip")
        .args(args)
        .status()
        .expect("ip (iproute2) is needed");
    assert!(st.success(), "ip {args:?}");
}

/// Network namespaces made for a test, deleted on drop.
struct Netns(Vec<String>);

impl Drop for Netns {
    fn drop(&mut self) {
        for n in &self.0 {
            let _ = Command::new("ip").args(["netns", "del", n]).status();
        }
    }
}

#[test]
#[ignore = "root tier: needs root; scripts/test.sh runs it (--run-ignored all)"]
fn the_guest_nic_reaches_the_namespaces_peer_through_tap_and_tc() {
    let id = std::process::id();
    let (vm_ns, peer_ns) = (format!("pvmt{id}"), format!("pvmt{id}p"));
    ip(&["netns", "add", &vm_ns]);
    let _guard = Netns(vec![vm_ns.clone()]);
    ip(&["netns", "add", &peer_ns]);
    let _guard2 = Netns(vec![peer_ns.clone()]);
    ip(&[
        "link", "add", "eth0", "netns", &vm_ns, "type", "veth", "peer", "name", "p0", "netns",
        &peer_ns,
    ]);
    ip(&["-n", &vm_ns, "link", "set", "eth0", "up"]);
    ip(&["-n", &peer_ns, "addr", "add", "10.77.0.1/24", "dev", "p0"]);
    ip(&["-n", &peer_ns, "link", "set", "p0", "up"]);
    let out = Command::new("ip")
        .args(["-n", &vm_ns, "-j", "link", "show", "eth0"])
        .output()
        .unwrap();
    let link: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let mac = link[0]["address"].as_str().unwrap().to_owned();

    let mut inst = instance(process(&["/bin/ping", "-c", "1", "-W", "20", "10.77.0.1"]));
    inst.config.netns = Some(PathBuf::from(format!("/run/netns/{vm_ns}")));
    inst.config.run.nics = vec![pier_guest::GuestNic {
        mac,
        address: "10.77.0.2".into(),
        prefix: 24,
        gateway: Some("10.77.0.1".into()),
        mtu: None,
    }];
    inst.config.save(&inst.dir).unwrap();
    let mut h = spawn(&format!("vm:{}", inst.dir.display()));
    let line = h.ready_line();
    let o = h.wait();
    assert_eq!(line, "ok\n", "stderr: {}", o.stderr);
    assert_eq!(o.code, 0, "stdout: {} stderr: {}", o.stdout, o.stderr);
    assert!(o.stdout.contains("1 packets received"), "{}", o.stdout);
    // The tap went with QEMU.
    let links = Command::new("ip")
        .args(["-n", &vm_ns, "-o", "link"])
        .output()
        .unwrap();
    let links = String::from_utf8_lossy(&links.stdout);
    assert!(!links.contains("tap0"), "{links}");
    assert_nothing_left(&inst.dir);
}

#[test]
#[ignore = "root tier: needs root; scripts/test.sh runs it (--run-ignored all)"]
fn a_kernel_panic_at_boot_is_125_with_the_console_tail() {
    let mut inst = instance(process(&["/bin/true"]));
    // An initramfs with no /init: the kernel panics ("No working init found").
    let empty = inst.dir.join("no-init.cpio");
    let mut w = initramfs::CpioWriter::new(std::fs::File::create(&empty).unwrap());
    w.dir("dev", 0o755).unwrap();
    w.finish().unwrap();
    inst.config.initramfs = empty;
    inst.config.save(&inst.dir).unwrap();
    let mut h = spawn(&format!("vm:{}", inst.dir.display()));
    let line = h.ready_line();
    assert!(line.starts_with("err 125 the VM did not boot: "), "{line}");
    assert!(line.contains("Kernel panic"), "{line}");
    assert_eq!(line.lines().count(), 1, "{line}");
    assert_eq!(h.wait().code, 125);
    assert_nothing_left(&inst.dir);
}

#[test]
#[ignore = "root tier: needs root; scripts/test.sh runs it (--run-ignored all)"]
fn disks_appear_in_their_order_and_read_only_when_asked() {
    let mut inst = instance(process(&[
        "/bin/sh",
        "-c",
        "cat /sys/block/vda/size /sys/block/vdb/size /sys/block/vda/ro /sys/block/vdb/ro",
    ]));
    let (a, b) = (inst.dir.join("a.img"), inst.dir.join("b.img"));
    std::fs::File::create(&a).unwrap().set_len(1 << 20).unwrap();
    std::fs::File::create(&b).unwrap().set_len(2 << 20).unwrap();
    inst.config.disks = vec![
        pier_vm::Disk {
            path: a,
            read_only: false,
        },
        pier_vm::Disk {
            path: b,
            read_only: true,
        },
    ];
    inst.config.save(&inst.dir).unwrap();
    let mut h = spawn(&format!("vm:{}", inst.dir.display()));
    let line = h.ready_line();
    let o = h.wait();
    assert_eq!(line, "ok\n", "stderr: {}", o.stderr);
    assert_eq!(o.code, 0, "stderr: {}", o.stderr);
    // 512-byte sectors: 1 MiB first, 2 MiB second; the second read-only.
    assert_eq!(o.stdout, "2048\n4096\n0\n1\n");
    assert_nothing_left(&inst.dir);
}

#[test]
#[ignore = "root tier: needs root; scripts/test.sh runs it (--run-ignored all)"]
fn a_missing_root_filesystem_is_125_with_virtiofsds_word() {
    let inst = instance(process(&["/bin/true"]));
    std::fs::remove_dir_all(inst.dir.join("rootfs")).unwrap();
    let mut h = spawn(&format!("vm:{}", inst.dir.display()));
    let line = h.ready_line();
    assert!(line.starts_with("err 125 the VM did not boot"), "{line}");
    assert!(line.contains("rootfs"), "{line}");
    assert_eq!(h.wait().code, 125);
    assert_nothing_left(&inst.dir);
}

#[test]
#[ignore = "root tier: needs root; scripts/test.sh runs it (--run-ignored all)"]
fn a_vm_that_dies_under_its_entrypoint_is_255_with_the_console_tail() {
    let inst = instance(process(&["/bin/sh", "-c", "echo up; sleep 600"]));
    let mut h = spawn(&format!("vm:{}", inst.dir.display()));
    assert_eq!(h.ready_line(), "ok\n");
    let state = pier_vm::VmState::load(&inst.dir).unwrap();
    // SAFETY: killing the QEMU this test's helper started.
    let killed = unsafe { libc::kill(state.qemu_pid as i32, libc::SIGKILL) };
    assert_eq!(killed, 0);
    let o = h.wait();
    assert_eq!(o.code, 255, "stderr: {}", o.stderr);
    assert!(
        o.stderr
            .starts_with("the VM stopped without its entrypoint's exit: "),
        "{}",
        o.stderr
    );
    assert_nothing_left(&inst.dir);
}
