//! Root tier, compatibility: the real `docker` CLI (Debian's 20.10 at /usr/bin/docker and
//! the v28 at /usr/local/bin/docker) and Debian's docker-compose 1.29 drive a Pier daemon
//! through its Docker API socket; results are checked from the clients and from inside.

mod common;

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// The v28 CLI (API 1.50, negotiates down).
const NEW: &str = "/usr/local/bin/docker";
/// Debian's 20.10 CLI (API 1.41).
const OLD: &str = "/usr/bin/docker";
const CLIS: [&str; 2] = [NEW, OLD];

fn require_clients(extra: &[&str]) {
    let mut tools = vec!["ldd", "script"];
    tools.extend_from_slice(extra);
    require_root_and_tools(&tools);
    assert!(
        Path::new(NEW).exists(),
        "{NEW} (the docker CLI v28) is missing: install the docker CLI there"
    );
    assert!(
        Path::new(OLD).exists(),
        "{OLD} is missing: apt-get install docker.io (Debian's docker CLI 20.10)"
    );
}

fn with_busybox(extra: &[&str]) -> Daemon {
    require_clients(extra);
    let d = Daemon::start();
    d.ok(&["image", "from-host", "bb", BUSYBOX]);
    d
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// One docker CLI against one daemon.
struct Cli<'a> {
    d: &'a Daemon,
    path: &'static str,
}

impl<'a> Cli<'a> {
    fn new(d: &'a Daemon, path: &'static str) -> Self {
        Cli { d, path }
    }

    fn raw(&self, args: &[&str]) -> Output {
        self.d.docker(self.path, args)
    }

    /// Runs and returns (exit code, stdout, stderr).
    fn run(&self, args: &[&str]) -> (i32, String, String) {
        let o = self.raw(args);
        (
            o.status.code().unwrap_or(-1),
            text(&o.stdout),
            text(&o.stderr),
        )
    }

    /// Runs, failing the test on a non-zero exit; returns stdout.
    fn ok(&self, args: &[&str]) -> String {
        let o = self.raw(args);
        assert!(
            o.status.success(),
            "{} {args:?} failed ({}):\nstdout: {}\nstderr: {}\ndaemon log (tail):\n{}",
            self.path,
            o.status,
            text(&o.stdout),
            text(&o.stderr),
            tail(&self.d.log(), 60)
        );
        text(&o.stdout)
    }

    /// Runs expecting failure; returns stderr.
    fn fails(&self, args: &[&str]) -> String {
        let o = self.raw(args);
        assert!(
            !o.status.success(),
            "{} {args:?} should have failed but printed {}",
            self.path,
            text(&o.stdout)
        );
        text(&o.stderr)
    }

    /// Runs with `input` on stdin (closed after).
    fn with_input(&self, args: &[&str], input: &[u8]) -> Output {
        let mut child = self
            .d
            .docker_cmd(self.path)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        let input = input.to_vec();
        let feeder = std::thread::spawn(move || stdin.write_all(&input));
        let out = child.wait_with_output().unwrap();
        feeder.join().unwrap().unwrap();
        out
    }

    fn inspect(&self, what: &str, format: &str) -> String {
        self.ok(&["inspect", "--format", format, what])
            .trim()
            .to_string()
    }

    /// Runs `cmd` (docker's arguments as one shell string) in a real terminal of 40x100,
    /// typing `input` once the session is up.
    fn in_pty(&self, cmd: &str, input: &str) -> (i32, String) {
        let mut child = std::process::Command::new("script")
            .args([
                "-qec",
                &format!(
                    "stty rows 40 cols 100; DOCKER_HOST=unix://{} DOCKER_CONFIG={} {} {cmd}",
                    self.d.docker_socket.display(),
                    self.d.dir.path().join("docker-config").display(),
                    self.path
                ),
                "/dev/null",
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        let input = input.to_string();
        let feeder = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(1000));
            stdin.write_all(input.as_bytes()).unwrap();
            std::thread::sleep(Duration::from_millis(3000));
        });
        let out = child.wait_with_output().unwrap();
        feeder.join().unwrap();
        (out.status.code().unwrap_or(-1), text(&out.stdout))
    }
}

fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `wget` from the daemon's namespace (the host, as far as containers go).
fn http_get(d: &Daemon, url: &str) -> Option<String> {
    let out = d
        .in_netns("timeout")
        .args(["5", BUSYBOX, "wget", "-q", "-O", "-", url])
        .output()
        .unwrap();
    out.status.success().then(|| text(&out.stdout))
}

/// A raw HTTP/1.1 exchange on the Docker socket: (status, headers lower-cased, body).
fn http(d: &Daemon, method: &str, path: &str) -> (u16, String, String) {
    let mut s = std::os::unix::net::UnixStream::connect(&d.docker_socket).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: docker\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).unwrap();
    let resp = text(&buf);
    let (head, body) = resp.split_once("\r\n\r\n").unwrap_or((&resp, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, head.to_ascii_lowercase(), body.to_string())
}

/// A raw HTTP/1.1 exchange with a JSON body on a unix socket: (status, body).
fn http_json(socket: &Path, method: &str, path: &str, body: &str) -> (u16, String) {
    let mut s = std::os::unix::net::UnixStream::connect(socket).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: pier\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).unwrap();
    let resp = text(&buf);
    let (head, body) = resp.split_once("\r\n\r\n").unwrap_or((&resp, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, body.to_string())
}

// ---- tests --------------------------------------------------------------------------------

#[test]
#[ignore = "root tier: needs root; scripts/test.sh runs it (--run-ignored all)"]
fn version_info_and_negotiation() {
    require_clients(&[]);
    let d = Daemon::start();
    for (cli, client_api) in [(NEW, "1.43"), (OLD, "1.41")] {
        let c = Cli::new(&d, cli);
        let v = c.ok(&[
            "version",
            "--format",
            "{{.Server.APIVersion}}|{{.Server.MinAPIVersion}}|{{.Client.APIVersion}}|{{.Server.Os}}",
        ]);
        assert_eq!(v.trim(), format!("1.43|1.24|{client_api}|linux"), "{cli}");
        let info = c.ok(&[
            "info",
            "--format",
            "{{.OSType}}|{{.Driver}}|{{.Images}}|{{.Containers}}|{{.DefaultRuntime}}|{{.Swarm.LocalNodeState}}",
        ]);
        assert_eq!(info.trim(), "linux|overlay|0|0|pier|inactive", "{cli}");
        // The plain output prints without errors too.
        let (code, out, err) = c.run(&["info"]);
        assert_eq!(code, 0, "{out}{err}");
        assert!(out.contains("Server Version:"), "{out}");
    }

    // Negotiation and headers, as clients see them on the wire.
    let (status, head, body) = http(&d, "GET", "/_ping");
    assert_eq!((status, body.as_str()), (200, "OK"));
    for h in [
        "api-version: 1.43",
        "ostype: linux",
        "server: docker/",
        "pier/",
    ] {
        assert!(head.contains(h), "{h} missing in {head}");
    }
    let (status, head, body) = http(&d, "HEAD", "/_ping");
    assert_eq!(status, 200);
    assert!(head.contains("api-version: 1.43") && body.is_empty());
    let (status, _, body) = http(&d, "GET", "/v1.12/version");
    assert_eq!(status, 400);
    assert!(
        body.contains("\"message\"") && body.contains("too old"),
        "{body}"
    );
    let (status, _, body) = http(&d, "GET", "/v1.99/version");
    assert_eq!(status, 400);
    assert!(body.contains("too new") && body.contains("1.43"), "{body}");
    let (status, head, body) = http(&d, "GET", "/v1.41/version");
    assert_eq!(status, 200, "{body}");
    assert!(head.contains("api-version: 1.43") && body.contains("\"ApiVersion\":\"1.43\""));
    // Errors are Docker's JSON with Docker's codes; unknown and unsupported endpoints say so.
    let (status, _, body) = http(&d, "POST", "/v1.43/containers/nosuch/start");
    assert_eq!(
        (status, body.as_str()),
        (404, r#"{"message":"No such container: nosuch"}"#)
    );
    let (status, _, body) = http(&d, "GET", "/v1.43/no/such/endpoint");
    assert_eq!(status, 404);
    assert!(body.contains("page not found"), "{body}");
    let (status, _, body) = http(&d, "GET", "/v1.43/swarm");
    assert_eq!(status, 503);
    assert!(body.contains("swarm"), "{body}");
    let (status, _, body) = http(&d, "GET", "/v1.43/plugins");
    assert_eq!((status, body.as_str()), (200, "[]"));
    let (status, _, body) = http(&d, "POST", "/v1.43/plugins/pull");
    assert_eq!(status, 501);
    assert!(body.contains("plugins"), "{body}");
    let (status, _, body) = http(&d, "GET", "/containers/json?filters=%7Bbad");
    assert_eq!(status, 400);
    assert!(body.contains("invalid filters"), "{body}");
    let (status, _, body) = http(
        &d,
        "GET",
        "/containers/json?filters=%7B%22nope%22%3A%5B%22x%22%5D%7D",
    );
    assert_eq!(status, 400);
    assert!(body.contains("invalid filter 'nope'"), "{body}");
}

#[test]
#[ignore = "root tier: needs root; scripts/test.sh runs it (--run-ignored all)"]
fn containers_lifecycle_with_both_clients() {
    let d = with_busybox(&[]);
    for (i, cli) in CLIS.iter().enumerate() {
        let c = Cli::new(&d, cli);
        let (web, port) = (format!("web{i}"), format!("{}", 8080 + i));
        let id = c
            .ok(&[
                "run",
                "-d",
                "--name",
                &web,
                "-p",
                &format!("{port}:80"),
                "-e",
                "FOO=bar",
                "--memory",
                "64m",
                "--pids-limit",
                "50",
                "--label",
                "app=t",
                "bb",
                "httpd",
                "-f",
                "-p",
                "80",
                "-h",
                "/etc",
            ])
            .trim()
            .to_string();
        assert_eq!(id.len(), 64, "{id}");
        let ps = c.ok(&[
            "ps",
            "--format",
            "{{.Names}}|{{.Status}}|{{.Ports}}|{{.Image}}",
        ]);
        let line = ps
            .lines()
            .find(|l| l.starts_with(&format!("{web}|")))
            .unwrap_or_else(|| panic!("{ps}"));
        assert!(line.contains("|Up "), "{line}");
        assert!(
            line.contains(&format!("0.0.0.0:{port}->80/tcp|bb")),
            "{line}"
        );
        // The published port answers from the host side.
        let page = http_get(&d, &format!("http://127.0.0.1:{port}/hostname"));
        assert_eq!(page.as_deref().map(str::trim), Some(&id[..12]), "{cli}");
        assert_eq!(
            c.inspect(&web, "{{.Name}}|{{.State.Status}}|{{.State.Running}}|{{.HostConfig.Memory}}|{{.HostConfig.PidsLimit}}|{{.Config.Image}}|{{index .Config.Labels \"app\"}}|{{.RestartCount}}|{{.HostConfig.NetworkMode}}"),
            format!("/{web}|running|true|67108864|50|bb|t|0|bridge")
        );
        let ip = c.inspect(&web, "{{.NetworkSettings.IPAddress}}|{{range $k, $v := .NetworkSettings.Networks}}{{$k}}={{$v.IPAddress}}{{end}}");
        let (top_ip, nets) = ip.split_once('|').unwrap();
        assert!(top_ip.starts_with("172.17."), "{ip}");
        assert_eq!(nets, format!("bridge={top_ip}"));
        // Limits and environment seen from inside.
        let inside = c.ok(&[
            "exec", &web, "sh", "-c",
            "echo $FOO; cat /sys/fs/cgroup/memory/memory.limit_in_bytes /sys/fs/cgroup/pids/pids.max",
        ]);
        assert_eq!(inside, "bar\n67108864\n50\n");
        let (code, _, _) = c.run(&["exec", &web, "sh", "-c", "exit 7"]);
        assert_eq!(code, 7);
        let stats = c.ok(&[
            "stats",
            "--no-stream",
            "--format",
            "{{.Name}}|{{.MemUsage}}|{{.PIDs}}|{{.CPUPerc}}",
        ]);
        let line = stats
            .lines()
            .find(|l| l.starts_with(&format!("{web}|")))
            .unwrap_or_else(|| panic!("{stats}"));
        assert!(line.contains("/ 64MiB|1|"), "{line}");
        assert!(!line.contains("0B /"), "memory in use is shown: {line}");
        assert!(c.ok(&["top", &web]).contains("httpd -f -p 80"));

        // Logs: both streams apart, follow until the exit, tail, timestamps.
        let talker = format!("talker{i}");
        c.ok(&[
            "run",
            "-d",
            "--name",
            &talker,
            "bb",
            "sh",
            "-c",
            "echo one; echo two >&2; sleep 2; echo three",
        ]);
        let (code, out, err) = c.run(&["logs", "-f", &talker]);
        assert_eq!(
            (code, out.as_str(), err.as_str()),
            (0, "one\nthree\n", "two\n")
        );
        assert_eq!(c.ok(&["logs", "--tail", "1", &talker]), "three\n");
        let stamped = c.ok(&["logs", "-t", &talker]);
        assert!(
            stamped
                .lines()
                .all(|l| l.starts_with("20") && l.contains("Z ")),
            "{stamped}"
        );
        assert_eq!(c.ok(&["wait", &talker]).trim(), "0");
        assert!(c
            .ok(&[
                "ps",
                "-a",
                "--filter",
                "status=exited",
                "--format",
                "{{.Names}} {{.Status}}"
            ])
            .contains(&format!("{talker} Exited (0)")));

        // Stop (httpd ignores SIGTERM as PID 1: killed after the grace time), start, restart.
        c.ok(&["stop", "-t", "1", &web]);
        assert_eq!(
            c.inspect(&web, "{{.State.Status}} {{.State.ExitCode}}"),
            "exited 137"
        );
        c.ok(&["start", &web]);
        c.ok(&["restart", "-t", "1", &web]);
        assert_eq!(c.inspect(&web, "{{.State.Status}}"), "running");
        c.ok(&["pause", &web]);
        assert!(c
            .ok(&["ps", "--format", "{{.Names}} {{.Status}}"])
            .contains("(Paused)"));
        assert_eq!(
            c.inspect(&web, "{{.State.Status}} {{.State.Paused}}"),
            "paused true"
        );
        c.ok(&["unpause", &web]);
        c.ok(&["kill", &web]);
        wait_until("the kill", || {
            c.inspect(&web, "{{.State.Status}}") == "exited"
        });
        let err = c.fails(&["kill", &web]);
        assert!(err.contains("is not running"), "{err}");
        let site = format!("site{i}");
        c.ok(&["rename", &web, &site]);
        c.ok(&["start", &site]);
        let err = c.fails(&["rm", &site]);
        assert!(
            err.contains("container is running") && err.contains("force"),
            "{err}"
        );
        c.ok(&["rm", "-f", &site, &talker]);

        // --rm: exit code and streams through, nothing left.
        let (code, out, err) = c.run(&[
            "run",
            "--rm",
            "bb",
            "sh",
            "-c",
            "echo out; echo err >&2; exit 3",
        ]);
        assert_eq!((code, out.as_str(), err.as_str()), (3, "out\n", "err\n"));
        assert_eq!(c.ok(&["ps", "-aq"]), "");
    }
    // One engine, two APIs: each sees what the other made.
    let c = Cli::new(&d, NEW);
    d.ok(&["run", "-d", "--name", "native", "bb", "sleep", "1000"]);
    c.ok(&["run", "-d", "--name", "fromdocker", "bb", "sleep", "1000"]);
    assert!(c.ok(&["ps", "--format", "{{.Names}}"]).contains("native"));
    let names: Vec<String> = d
        .json(&["ps"])
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap().to_string())
        .collect();
    assert!(names.contains(&"fromdocker".to_string()), "{names:?}");
    c.ok(&["rm", "-f", "native", "fromdocker"]);
}

#[test]
#[ignore = "root tier: needs root; scripts/test.sh runs it (--run-ignored all)"]
fn terminals_stdin_and_attach() {
    let d = with_busybox(&[]);
    for (i, cli) in CLIS.iter().enumerate() {
        let c = Cli::new(&d, cli);
        // -it: a terminal in the container, sized like ours, exit code back.
        let (code, out) = c.in_pty("run -it --rm bb sh", "tty; stty size; echo $TERM; exit 9\n");
        assert_eq!(code, 9, "{cli}: {out}");
        assert!(
            out.contains("/dev/pts/0") && out.contains("40 100") && out.contains("xterm"),
            "{cli}: {out}"
        );
        // -i: stdin through, stdout and stderr apart.
        let out = c.with_input(
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
        assert_eq!(
            (text(&out.stdout).as_str(), text(&out.stderr).as_str()),
            ("got hello\n", "oops\n")
        );
        // exec -it and exec -i into a running container.
        let host = format!("host{i}");
        c.ok(&["run", "-d", "--name", &host, "bb", "sleep", "1000"]);
        let (code, out) = c.in_pty(&format!("exec -it {host} sh"), "tty; stty size; exit 8\n");
        assert_eq!(code, 8, "{cli}: {out}");
        assert!(
            out.contains("/dev/pts/") && out.contains("40 100"),
            "{cli}: {out}"
        );
        let out = c.with_input(
            &[
                "exec",
                "-i",
                &host,
                "sh",
                "-c",
                "read l; echo got:$l; echo e >&2; exit 5",
            ],
            b"hi\n",
        );
        assert_eq!(
            (
                out.status.code(),
                text(&out.stdout).as_str(),
                text(&out.stderr).as_str()
            ),
            (Some(5), "got:hi\n", "e\n")
        );
        let (code, _, _) = c.run(&["exec", "-d", &host, "sh", "-c", "echo bg > /tmp/bg"]);
        assert_eq!(code, 0);
        wait_until("the detached exec", || {
            c.run(&["exec", &host, "cat", "/tmp/bg"]).1 == "bg\n"
        });
        c.ok(&["rm", "-f", &host]);
        // attach to a running container with stdin open; the exit code comes back.
        let talker = format!("talker{i}");
        c.ok(&[
            "run",
            "-d",
            "-i",
            "--name",
            &talker,
            "bb",
            "sh",
            "-c",
            "while read l; do echo echo:$l; done; exit 4",
        ]);
        let out = c.with_input(&["attach", &talker], b"one\ntwo\n");
        assert_eq!(
            text(&out.stdout),
            "echo:one\necho:two\n",
            "{}",
            text(&out.stderr)
        );
        assert_eq!(out.status.code(), Some(4));
        // start -a: attached before the start, nothing missed.
        let later = format!("later{i}");
        c.ok(&[
            "create",
            "--name",
            &later,
            "bb",
            "sh",
            "-c",
            "echo first; echo second >&2",
        ]);
        let (code, out, err) = c.run(&["start", "-a", &later]);
        assert_eq!(
            (code, out.as_str(), err.as_str()),
            (0, "first\n", "second\n")
        );
        c.ok(&["rm", "-f", &talker, &later]);
    }
}

#[test]
#[ignore = "root tier: needs root; scripts/test.sh runs it (--run-ignored all)"]
fn copy_diff_commit_export() {
    let d = with_busybox(&[]);
    let c = Cli::new(&d, NEW);
    c.ok(&[
        "run", "-d", "--name", "box", "-v", "vol:/vol", "bb", "sleep", "1000",
    ]);
    let local = d.dir.path().join("local");
    std::fs::create_dir_all(local.join("dir/sub")).unwrap();
    std::fs::write(local.join("note.txt"), "a note\n").unwrap();
    std::fs::write(local.join("dir/sub/deep.txt"), "deep\n").unwrap();
    let l = |p: &str| local.join(p).display().to_string();
    for cli in CLIS {
        let c = Cli::new(&d, cli);
        c.ok(&["cp", &l("note.txt"), "box:/tmp/"]);
        c.ok(&["cp", &l("note.txt"), "box:/tmp/renamed.txt"]);
        c.ok(&["cp", &l("dir"), "box:/tmp/"]);
    }
    assert_eq!(
        c.ok(&[
            "exec",
            "box",
            "cat",
            "/tmp/note.txt",
            "/tmp/renamed.txt",
            "/tmp/dir/sub/deep.txt"
        ]),
        "a note\na note\ndeep\n"
    );
    let out = d.dir.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    let o = |p: &str| out.join(p).display().to_string();
    for cli in CLIS {
        let c = Cli::new(&d, cli);
        c.ok(&["cp", "box:/tmp/renamed.txt", &o("")]);
        c.ok(&["cp", "box:/tmp/dir", &o("dir2")]);
    }
    assert_eq!(
        std::fs::read_to_string(out.join("renamed.txt")).unwrap(),
        "a note\n"
    );
    assert_eq!(
        std::fs::read_to_string(out.join("dir2/sub/deep.txt")).unwrap(),
        "deep\n"
    );
    // To stdout as a tar.
    let tar = c.raw(&["cp", "box:/etc/passwd", "-"]);
    assert!(text(&tar.stdout).contains("root:x:0:0"));
    // A running container is copied as its processes see it: mounts included.
    c.ok(&["cp", "box:/etc/hosts", &o("hosts")]);
    let hosts = std::fs::read_to_string(out.join("hosts")).unwrap();
    assert!(hosts.contains("localhost"), "{hosts}");
    c.ok(&["cp", &l("note.txt"), "box:/vol/"]);
    assert_eq!(
        c.ok(&["run", "--rm", "-v", "vol:/v", "bb", "cat", "/v/note.txt"]),
        "a note\n"
    );
    let err = c.fails(&["cp", "box:/nope", &o("")]);
    assert!(err.contains("Could not find the file /nope"), "{err}");
    let err = c.fails(&["cp", &l("note.txt"), "nosuch:/tmp/"]);
    // (The CLI stats the destination with HEAD, which carries no message.)
    assert!(
        err.contains("No such container: nosuch") || err.contains("no such directory"),
        "{err}"
    );

    let diff = c.ok(&["diff", "box"]);
    assert!(
        diff.contains("A /tmp/renamed.txt") && diff.contains("C /tmp"),
        "{diff}"
    );
    let id = c.ok(&["commit", "-m", "snap", "box", "snap:1"]);
    assert!(id.trim().starts_with("sha256:"), "{id}");
    assert_eq!(
        c.ok(&["run", "--rm", "snap:1", "cat", "/tmp/renamed.txt"]),
        "a note\n"
    );
    let tarball = o("box.tar");
    c.ok(&["export", "-o", &tarball, "box"]);
    let names: Vec<String> = tar::Archive::new(std::fs::File::open(&tarball).unwrap())
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().display().to_string())
        .collect();
    assert!(
        names.iter().any(|n| n.ends_with("tmp/renamed.txt")),
        "{names:?}"
    );
    assert!(
        names.iter().any(|n| n.ends_with("bin/busybox")),
        "{names:?}"
    );
    c.ok(&["rm", "-f", "box"]);
    c.ok(&["volume", "rm", "vol"]);
    c.ok(&["rmi", "snap:1"]);
}

#[test]
#[ignore = "root tier: needs root; scripts/test.sh runs it (--run-ignored all)"]
fn images_load_save_tag_rmi_import() {
    require_clients(&[]);
    let d = Daemon::start();
    let archive = write_file(
        &d,
        "img.tar",
        &docker_archive("imgtest:1", &[busybox_rootfs_tar()], None),
    );
    for (i, cli) in CLIS.iter().enumerate() {
        let c = Cli::new(&d, cli);
        let out = c.ok(&["load", "-i", &archive]);
        assert!(out.contains("Loaded image: imgtest:1"), "{cli}: {out}");
        let tag = format!("imgtest:t{i}");
        c.ok(&["tag", "imgtest:1", &tag]);
        let images = c.ok(&["images", "--format", "{{.Repository}}:{{.Tag}} {{.ID}}"]);
        assert!(
            images.contains("imgtest:1 ") && images.contains(&format!("{tag} ")),
            "{images}"
        );
        let out = c.ok(&["rmi", &tag]);
        assert_eq!(out.trim(), format!("Untagged: {tag}"));
    }
    let c = Cli::new(&d, NEW);
    assert_eq!(
        c.inspect("imgtest:1", "{{.Os}}|{{.Architecture}}|{{len .RootFS.Layers}}|{{json .Config.Cmd}}|{{json .RepoTags}}"),
        r#"linux|amd64|1|["/bin/sh"]|["imgtest:1"]"#
    );
    let id = c.inspect("imgtest:1", "{{.Id}}");
    assert!(id.starts_with("sha256:"), "{id}");
    assert!(c.ok(&["history", "imgtest:1"]).contains("test"));
    assert_eq!(c.ok(&["run", "--rm", "imgtest:1", "echo", "ok"]), "ok\n");
    // save, remove, load back.
    let saved = d.dir.path().join("saved.tar").display().to_string();
    c.ok(&["save", "-o", &saved, "imgtest:1"]);
    let mut manifest = String::new();
    for e in tar::Archive::new(std::fs::File::open(&saved).unwrap())
        .entries()
        .unwrap()
    {
        let mut e = e.unwrap();
        if e.path().unwrap().to_str() == Some("manifest.json") {
            e.read_to_string(&mut manifest).unwrap();
        }
    }
    assert!(manifest.contains("imgtest:1"), "{manifest}");
    // An image in use cannot go without force.
    c.ok(&["create", "--name", "user", "imgtest:1", "true"]);
    let err = c.fails(&["rmi", "imgtest:1"]);
    assert!(
        err.contains("user") || err.contains("in use") || err.contains("container"),
        "{err}"
    );
    c.ok(&["rm", "user"]);
    let out = c.ok(&["rmi", "imgtest:1"]);
    assert!(
        out.contains("Untagged: imgtest:1") && out.contains(&format!("Deleted: {id}")),
        "{out}"
    );
    let err = c.fails(&["image", "inspect", "imgtest:1"]);
    assert!(err.contains("No such image"), "{err}");
    let out = Cli::new(&d, OLD).ok(&["load", "-i", &saved]);
    assert!(out.contains("Loaded image: imgtest:1"), "{out}");
    // import a flat rootfs.
    let rootfs = write_file(&d, "rootfs.tar", &busybox_rootfs_tar());
    let out = c.ok(&["import", &rootfs, "imported:1"]);
    assert!(out.trim().starts_with("sha256:"), "{out}");
    assert_eq!(
        c.ok(&["run", "--rm", "imported:1", "/bin/echo", "hi"]),
        "hi\n"
    );
    // Docker Hub is out of reach from the test's namespace: pulls and pushes say so.
    let err = c.fails(&["pull", "nosuch/image:3"]);
    assert!(err.contains("registry-1.docker.io"), "{err}");
    let err = c.fails(&["push", "imgtest:1"]);
    assert!(err.contains("registry-1.docker.io"), "{err}");
    let err = c.fails(&["push", "never:1"]);
    assert!(err.contains("never"), "{err}");
    assert!(c
        .fails(&["search", "busybox"])
        .contains("not supported by pier"));
    // prune -a takes what no container uses.
    let out = c.ok(&["image", "prune", "-a", "-f"]);
    assert!(out.contains("deleted") || out.contains("Deleted"), "{out}");
    assert_eq!(c.ok(&["images", "-q"]), "");
}

#[test]
#[ignore = "root tier: needs root; scripts/test.sh runs it (--run-ignored all)"]
fn registry_push_pull_and_login() {
    require_clients(&[]);
    let auth = tempfile::tempdir().unwrap();
    let auth_file = auth.path().join("auth.json");
    std::fs::write(
        &auth_file,
        r#"{"anonymous_pull": false, "users": {"dev": {"password_plain": "s3cret", "pull": ["*"], "push": ["team/*"]}}}"#,
    )
    .unwrap();
    let d = Daemon::start_with(&[
        "--registry-addr",
        "127.0.0.1:5000",
        "--registry-auth",
        auth_file.to_str().unwrap(),
    ]);
    d.ok(&["image", "from-host", "bb", BUSYBOX]);
    let img = "127.0.0.1:5000/team/bb:1";
    for (i, cli) in CLIS.iter().enumerate() {
        let c = Cli::new(&d, cli);
        c.ok(&["tag", "bb", img]);
        // Without credentials the registry refuses; a wrong password does not log in.
        let err = c.fails(&["push", img]);
        assert!(
            err.contains("UNAUTHORIZED") || err.contains("denied"),
            "{cli}: {err}"
        );
        let err = c.fails(&["login", "-u", "dev", "-p", "wrong", "127.0.0.1:5000"]);
        assert!(
            err.contains("login to 127.0.0.1:5000 failed"),
            "{cli}: {err}"
        );
        let out = c.ok(&["login", "-u", "dev", "-p", "s3cret", "127.0.0.1:5000"]);
        assert!(out.contains("Login Succeeded"), "{out}");
        let out = c.ok(&["push", img]);
        assert!(
            out.contains("Pushed") || out.contains("already exists"),
            "{out}"
        );
        assert!(out.contains("1: digest: sha256:"), "{out}");
        c.ok(&["rmi", img]);
        // `docker run` pulls what is missing, with the stored credentials.
        let (code, out, err) = c.run(&["run", "--rm", img, "echo", "pulled"]);
        assert_eq!((code, out.as_str()), (0, "pulled\n"), "{err}");
        assert!(
            err.contains("Unable to find image") && err.contains("Downloaded newer image"),
            "{err}"
        );
        let out = c.ok(&["pull", img]);
        assert!(out.contains("Image is up to date"), "{out}");
        let err = c.fails(&["pull", &format!("127.0.0.1:5000/team/none:{i}")]);
        assert!(
            err.contains("MANIFEST_UNKNOWN") || err.contains("unknown"),
            "{err}"
        );
        c.ok(&["logout", "127.0.0.1:5000"]);
        c.ok(&["rmi", img]);
        let err = c.fails(&["pull", img]);
        assert!(
            err.contains("UNAUTHORIZED") || err.contains("denied"),
            "{cli}: {err}"
        );
    }
}

#[test]
#[ignore = "root tier: needs root; scripts/test.sh runs it (--run-ignored all)"]
fn build_with_both_clients_and_compose() {
    let d = with_busybox(&["docker-compose"]);
    let ctx = d.dir.path().join("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM bb\nARG A=0\nRUN echo built $A > /built\nCOPY f.txt /f.txt\nCMD [\"cat\", \"/built\", \"/f.txt\"]\n",
    )
    .unwrap();
    std::fs::write(ctx.join("f.txt"), "file\n").unwrap();
    std::fs::write(ctx.join("Dockerfile.bad"), "FROM bb\nRUN exit 3\n").unwrap();
    let ctx_s = ctx.display().to_string();
    // The classic builder: Debian's CLI uses it; the v28 CLI with DOCKER_BUILDKIT=0.
    let build = |cli: &str, args: &[&str]| -> Output {
        d.docker_cmd(cli)
            .env("DOCKER_BUILDKIT", "0")
            .args(["build"])
            .args(args)
            .arg(&ctx_s)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let o = build(
        OLD,
        &["-t", "built:1", "--build-arg", "A=5", "--label", "k=v"],
    );
    assert!(o.status.success(), "{}{}", text(&o.stdout), text(&o.stderr));
    let out = text(&o.stdout);
    assert!(
        out.contains("Step 1/6 : FROM bb") && out.contains("Successfully tagged built:1"),
        "{out}"
    );
    let c = Cli::new(&d, NEW);
    assert_eq!(c.ok(&["run", "--rm", "built:1"]), "built 5\nfile\n");
    assert_eq!(c.inspect("built:1", "{{.Config.Labels.k}}"), "v");
    let o = build(NEW, &["-q", "-t", "built:2"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let id = text(&o.stdout);
    assert!(id.trim().starts_with("sha256:"), "{id}");
    assert_eq!(c.inspect("built:2", "{{.Id}}"), id.trim());
    let o = build(
        OLD,
        &["-f", &ctx.join("Dockerfile.bad").display().to_string()],
    );
    assert_eq!(o.status.code(), Some(3));
    assert!(
        text(&o.stderr).contains("returned a non-zero code: 3"),
        "{}",
        text(&o.stderr)
    );

    std::fs::write(
        ctx.join("docker-compose.yml"),
        "version: \"3.8\"\nservices:\n  app:\n    build:\n      context: .\n      args:\n        A: \"7\"\n    image: composed:1\n",
    )
    .unwrap();
    let o = std::process::Command::new("docker-compose")
        .args(["-p", "cb", "build"])
        .current_dir(&ctx)
        .env(
            "DOCKER_HOST",
            format!("unix://{}", d.docker_socket.display()),
        )
        .env("DOCKER_CONFIG", d.dir.path().join("docker-config"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}{}", text(&o.stdout), text(&o.stderr));
    assert_eq!(c.ok(&["run", "--rm", "composed:1"]), "built 7\nfile\n");
}

#[test]
#[ignore = "root tier: needs root; scripts/test.sh runs it (--run-ignored all)"]
fn networks_connect_and_names() {
    let d = with_busybox(&[]);
    let c = Cli::new(&d, NEW);
    let id = c.ok(&[
        "network",
        "create",
        "--subnet",
        "10.123.0.0/24",
        "--label",
        "k=v",
        "net1",
    ]);
    assert_eq!(id.trim().len(), 64);
    let ls = c.ok(&[
        "network",
        "ls",
        "--format",
        "{{.Name}}|{{.Driver}}|{{.Scope}}",
    ]);
    for want in [
        "net1|bridge|local",
        "bridge|bridge|local",
        "host|host|local",
        "none|null|local",
    ] {
        assert!(ls.lines().any(|l| l == want), "{want} in {ls}");
    }
    assert_eq!(
        c.ok(&["network", "inspect", "--format", "{{.Name}}|{{(index .IPAM.Config 0).Subnet}}|{{(index .IPAM.Config 0).Gateway}}|{{.Labels.k}}|{{.Internal}}", "net1"]).trim(),
        "net1|10.123.0.0/24|10.123.0.1|v|false"
    );
    c.ok(&[
        "run",
        "-d",
        "--name",
        "db",
        "--network",
        "net1",
        "--network-alias",
        "sql",
        "bb",
        "sleep",
        "1000",
    ]);
    c.ok(&[
        "run",
        "-d",
        "--name",
        "app",
        "--network",
        "net1",
        "--ip",
        "10.123.0.50",
        "bb",
        "sleep",
        "1000",
    ]);
    assert_eq!(
        c.inspect("app", "{{.NetworkSettings.Networks.net1.IPAddress}}"),
        "10.123.0.50"
    );
    assert_eq!(
        c.inspect("db", "{{json .NetworkSettings.Networks.net1.Aliases}}"),
        r#"["sql"]"#
    );
    c.ok(&["exec", "app", "ping", "-c1", "-W2", "sql"]);
    c.ok(&["exec", "app", "ping", "-c1", "-W2", "db"]);
    // connect a container of the default network, with an alias.
    c.ok(&["run", "-d", "--name", "other", "bb", "sleep", "1000"]);
    Cli::new(&d, OLD).ok(&["network", "connect", "--alias", "oth", "net1", "other"]);
    let nets = c.inspect(
        "other",
        "{{range $k, $v := .NetworkSettings.Networks}}{{$k}} {{end}}",
    );
    assert_eq!(nets, "bridge net1");
    c.ok(&["exec", "db", "ping", "-c1", "-W2", "oth"]);
    let members = c.ok(&[
        "network",
        "inspect",
        "--format",
        "{{range .Containers}}{{.Name}}={{.IPv4Address}} {{end}}",
        "net1",
    ]);
    assert!(
        members.contains("app=10.123.0.50/24")
            && members.contains("db=10.123.0.")
            && members.contains("other=10.123.0."),
        "{members}"
    );
    let err = c.fails(&["network", "rm", "net1"]);
    assert!(
        err.contains("error while removing network") && err.contains("net1"),
        "{err}"
    );
    c.ok(&["network", "disconnect", "net1", "other"]);
    assert_eq!(
        c.inspect(
            "other",
            "{{range $k, $v := .NetworkSettings.Networks}}{{$k}} {{end}}"
        ),
        "bridge"
    );
    let err = c.fails(&["network", "create", "net1"]);
    assert!(err.contains("already exists"), "{err}");
    let err = c.fails(&["network", "rm", "bridge"]);
    assert!(err.contains("pre-defined"), "{err}");
    let err = c.fails(&["network", "inspect", "nosuchnet"]);
    assert!(err.contains("nosuchnet"), "{err}");
    c.ok(&["rm", "-f", "db", "app", "other"]);
    c.ok(&["network", "create", "spare"]);
    let out = c.ok(&["network", "prune", "-f"]);
    assert!(out.contains("net1") && out.contains("spare"), "{out}");
    assert!(!c
        .ok(&["network", "ls", "--format", "{{.Name}}"])
        .contains("net1"));
}

#[test]
#[ignore = "root tier: needs root; scripts/test.sh runs it (--run-ignored all)"]
fn volumes_binds_and_tmpfs() {
    let d = with_busybox(&[]);
    let c = Cli::new(&d, NEW);
    assert_eq!(
        c.ok(&["volume", "create", "--label", "k=v", "data"]).trim(),
        "data"
    );
    // Creating an existing volume returns it, as Docker does.
    assert_eq!(
        Cli::new(&d, OLD).ok(&["volume", "create", "data"]).trim(),
        "data"
    );
    let ls = c.ok(&["volume", "ls", "--format", "{{.Driver}} {{.Name}}"]);
    assert_eq!(ls, "local data\n");
    assert_eq!(
        c.ok(&[
            "volume",
            "inspect",
            "--format",
            "{{.Name}}|{{.Driver}}|{{.Labels.k}}|{{.Scope}}",
            "data"
        ])
        .trim(),
        "data|local|v|local"
    );
    // Written by one container, read by the next; a named volume is made on first use.
    for cli in CLIS {
        let c = Cli::new(&d, cli);
        c.ok(&[
            "run",
            "--rm",
            "-v",
            "data:/data",
            "bb",
            "sh",
            "-c",
            "echo kept >> /data/f",
        ]);
        c.ok(&["run", "--rm", "-v", "auto:/auto", "bb", "touch", "/auto/x"]);
    }
    assert_eq!(
        c.ok(&["run", "--rm", "-v", "data:/data:ro", "bb", "cat", "/data/f"]),
        "kept\nkept\n"
    );
    let (code, _, err) = c.run(&[
        "run",
        "--rm",
        "-v",
        "data:/data:ro",
        "bb",
        "touch",
        "/data/g",
    ]);
    assert_ne!(code, 0, "read-only: {err}");
    assert!(c.ok(&["volume", "ls", "-q"]).contains("auto"));
    // --mount forms, bind mounts, tmpfs.
    let host = d.dir.path().join("hostdir");
    std::fs::create_dir_all(&host).unwrap();
    std::fs::write(host.join("in.txt"), "from host\n").unwrap();
    let bind = format!("{}:/h", host.display());
    let out = c.ok(&[
        "run",
        "--rm",
        "-v",
        &bind,
        "--mount",
        "type=volume,source=data,target=/m,readonly",
        "--tmpfs",
        "/scratch:size=1m",
        "bb",
        "sh",
        "-c",
        "cat /h/in.txt /m/f; echo out > /h/out.txt; grep -c ' /scratch tmpfs' /proc/mounts",
    ]);
    assert_eq!(out, "from host\nkept\nkept\n1\n");
    assert_eq!(
        std::fs::read_to_string(host.join("out.txt")).unwrap(),
        "out\n"
    );
    // Inspect shows the mounts; the volume filter finds the user.
    c.ok(&[
        "run",
        "-d",
        "--name",
        "user",
        "-v",
        "data:/data",
        "-v",
        "/anon",
        "bb",
        "sleep",
        "1000",
    ]);
    let mounts = c.inspect(
        "user",
        "{{range .Mounts}}{{.Type}}:{{.Name}}:{{.Destination}}:{{.RW}} {{end}}",
    );
    assert!(mounts.contains("volume:data:/data:true"), "{mounts}");
    assert!(mounts.contains(":/anon:true"), "{mounts}");
    assert_eq!(
        c.inspect("user", "{{json .HostConfig.Binds}}"),
        r#"["data:/data"]"#
    );
    assert_eq!(
        c.ok(&["ps", "--filter", "volume=data", "--format", "{{.Names}}"]),
        "user\n"
    );
    let err = c.fails(&["volume", "rm", "data"]);
    assert!(err.contains("volume is in use"), "{err}");
    let anon: String = mounts
        .split_whitespace()
        .find(|m| m.ends_with(":/anon:true"))
        .and_then(|m| m.split(':').nth(1))
        .unwrap()
        .to_string();
    // rm -v takes the anonymous volume along, not the named one.
    c.ok(&["rm", "-f", "-v", "user"]);
    let ls = c.ok(&["volume", "ls", "-q"]);
    assert!(!ls.contains(&anon) && ls.contains("data"), "{ls}");
    let df = c.ok(&["system", "df", "-v"]);
    assert!(df.contains("data"), "{df}");
    c.ok(&["volume", "rm", "auto"]);
    let out = c.ok(&["volume", "prune", "-a", "-f"]);
    assert!(out.contains("data"), "{out}");
    assert_eq!(c.ok(&["volume", "ls", "-q"]), "");
}

#[test]
#[ignore = "root tier: needs root; scripts/test.sh runs it (--run-ignored all)"]
fn events_and_health_checks() {
    let d = with_busybox(&[]);
    let c = Cli::new(&d, NEW);
    // A stream follows what happens from now on.
    let mut events = d
        .docker_cmd(NEW)
        .args([
            "events",
            "--filter",
            "type=container",
            "--format",
            "{{.Action}} {{.Actor.Attributes.name}}",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdout = events.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut seen = String::new();
        let mut buf = [0u8; 4096];
        while !seen.contains("destroy ev1") {
            match stdout.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => seen.push_str(&text(&buf[..n])),
            }
        }
        seen
    });
    std::thread::sleep(Duration::from_millis(500));
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        - 1;
    c.ok(&["run", "--rm", "--name", "ev1", "bb", "true"]);
    let seen = reader.join().unwrap();
    let _ = events.kill();
    let _ = events.wait();
    assert!(
        seen.contains("create ev1\nstart ev1\n") && seen.contains("die ev1\n"),
        "{seen}"
    );
    // And the past, from either CLI, with filters.
    // `until` in the future makes the command wait for it: one second from now.
    let in_a_second = || {
        (std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
            + 1)
        .to_string()
    };
    let until = in_a_second();
    let since = since.to_string();
    for cli in CLIS {
        let past = Cli::new(&d, cli).ok(&[
            "events",
            "--since",
            &since,
            "--until",
            &until,
            "--filter",
            "container=ev1",
            "--filter",
            "event=start",
            "--filter",
            "event=die",
            "--format",
            "{{.Type}} {{.Action}} {{.Actor.Attributes.image}}",
        ]);
        assert_eq!(past, "container start bb\ncontainer die bb\n", "{cli}");
    }

    // Health: starting, then healthy; a failing check makes it unhealthy.
    c.ok(&[
        "run",
        "-d",
        "--name",
        "h",
        "--health-cmd",
        "test -f /tmp/ok",
        "--health-interval",
        "1s",
        "--health-retries",
        "2",
        "--health-timeout",
        "5s",
        "bb",
        "sh",
        "-c",
        "touch /tmp/ok; exec sleep 1000",
    ]);
    assert_eq!(
        c.inspect("h", "{{json .Config.Healthcheck.Test}}"),
        r#"["CMD-SHELL","test -f /tmp/ok"]"#
    );
    wait_until("healthy", || {
        c.inspect("h", "{{.State.Health.Status}}") == "healthy"
    });
    assert!(c
        .ok(&["ps", "--format", "{{.Names}} {{.Status}}"])
        .contains("(healthy)"));
    assert_eq!(
        c.ok(&["ps", "--filter", "health=healthy", "--format", "{{.Names}}"]),
        "h\n"
    );
    c.ok(&["exec", "h", "rm", "/tmp/ok"]);
    wait_until("unhealthy", || {
        c.inspect("h", "{{.State.Health.Status}}") == "unhealthy"
    });
    let streak: u32 = c
        .inspect("h", "{{.State.Health.FailingStreak}}")
        .parse()
        .unwrap();
    assert!(streak >= 2, "{streak}");
    assert!(c
        .ok(&["ps", "--format", "{{.Names}} {{.Status}}"])
        .contains("(unhealthy)"));
    let health_events = c.ok(&[
        "events",
        "--since",
        &since,
        "--until",
        &in_a_second(),
        "--filter",
        "event=health_status",
        "--format",
        "{{.Action}}",
    ]);
    assert!(
        health_events.contains("health_status: healthy")
            && health_events.contains("health_status: unhealthy"),
        "{health_events}"
    );
    c.ok(&["rm", "-f", "h"]);
    let df = c.ok(&["system", "df"]);
    assert!(df.contains("Images") && df.contains("Containers"), "{df}");
}

#[test]
#[ignore = "root tier: needs root; scripts/test.sh runs it (--run-ignored all)"]
fn compose_two_services() {
    let d = with_busybox(&["docker-compose"]);
    let dir = d.dir.path().join("app");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("docker-compose.yml"),
        r#"version: "3.8"
services:
  web:
    image: bb
    command: ["httpd", "-f", "-p", "80", "-h", "/etc"]
    ports:
      - "18080:80"
    networks: [backend]
    stop_grace_period: 1s
    depends_on:
      db:
        condition: service_healthy
  db:
    image: bb
    command: ["sh", "-c", "echo db starting; sleep 1; touch /ready; echo db ready >> /data/log; cat /data/log; exec sleep 1000"]
    networks: [backend]
    volumes:
      - dbdata:/data
    stop_grace_period: 1s
    healthcheck:
      test: ["CMD-SHELL", "test -f /ready"]
      interval: 1s
      timeout: 2s
      retries: 10
networks:
  backend: {}
volumes:
  dbdata: {}
"#,
    )
    .unwrap();
    let compose = |args: &[&str]| -> Output {
        std::process::Command::new("docker-compose")
            .args(["-p", "pt", "-f"])
            .arg(dir.join("docker-compose.yml"))
            .args(args)
            .current_dir(&dir)
            .env(
                "DOCKER_HOST",
                format!("unix://{}", d.docker_socket.display()),
            )
            .env("DOCKER_CONFIG", d.dir.path().join("docker-config"))
            .env_remove("COMPOSE_PROJECT_NAME")
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let ok = |args: &[&str]| -> String {
        let o = compose(args);
        assert!(
            o.status.success(),
            "docker-compose {args:?}: {}\n{}\ndaemon log:\n{}",
            text(&o.stdout),
            text(&o.stderr),
            tail(&d.log(), 80)
        );
        text(&o.stdout) + &text(&o.stderr)
    };
    let up = ok(&["up", "-d"]);
    assert!(
        up.contains("Creating pt_web_1") && up.contains("done"),
        "{up}"
    );
    // web started only once db was healthy.
    let c = Cli::new(&d, NEW);
    assert_eq!(c.inspect("pt_db_1", "{{.State.Health.Status}}"), "healthy");
    let ps = ok(&["ps"]);
    assert!(
        ps.contains("pt_db_1") && ps.contains("Up (healthy)"),
        "{ps}"
    );
    assert!(
        ps.contains("pt_web_1") && ps.contains("0.0.0.0:18080->80/tcp"),
        "{ps}"
    );
    let web_id = c.inspect("pt_web_1", "{{.Id}}");
    assert_eq!(
        http_get(&d, "http://127.0.0.1:18080/hostname")
            .as_deref()
            .map(str::trim),
        Some(&web_id[..12])
    );
    // The services find each other by name on their network.
    c.ok(&["exec", "pt_web_1", "ping", "-c1", "-W2", "db"]);
    assert_eq!(
        c.inspect(
            "pt_web_1",
            "{{index .Config.Labels \"com.docker.compose.service\"}}"
        ),
        "web"
    );
    assert!(c
        .ok(&["network", "ls", "--format", "{{.Name}}"])
        .contains("pt_backend"));
    let logs = ok(&["logs", "--no-color", "db"]);
    assert!(
        logs.contains("db starting") && logs.contains("db ready"),
        "{logs}"
    );
    // Up again changes nothing.
    let again = ok(&["up", "-d"]);
    assert!(again.contains("is up-to-date"), "{again}");
    assert!(c.ok(&["volume", "ls", "-q"]).contains("pt_dbdata"));
    // Down and up: the volume outlives the containers.
    let down = ok(&["down"]);
    assert!(down.contains("Removing network pt_backend"), "{down}");
    assert_eq!(c.ok(&["ps", "-aq"]), "");
    ok(&["up", "-d"]);
    wait_until("db's second run", || {
        text(&compose(&["logs", "--no-color", "db"]).stdout)
            .matches("db ready")
            .count()
            >= 2
    });
    let down = ok(&["down", "-v"]);
    assert!(down.contains("Removing volume pt_dbdata"), "{down}");
    assert_eq!(c.ok(&["ps", "-aq"]), "");
    assert!(!c
        .ok(&["network", "ls", "--format", "{{.Name}}"])
        .contains("pt_backend"));
    assert_eq!(c.ok(&["volume", "ls", "-q"]), "");
}

#[test]
#[ignore = "root tier: needs root; scripts/test.sh runs it (--run-ignored all)"]
fn clients_print_real_messages() {
    let d = with_busybox(&[]);
    for cli in CLIS {
        let c = Cli::new(&d, cli);
        let (code, _, err) = c.run(&["run", "--rm", "nosuch"]);
        assert_eq!(code, 125, "{cli}: {err}");
        assert!(
            err.contains("Unable to find image 'nosuch:latest' locally"),
            "{err}"
        );
        assert!(err.contains("registry-1.docker.io"), "{err}");
        let (code, _, err) = c.run(&["run", "--rm", "-p", "8080:80/sctp", "bb", "true"]);
        assert_eq!(code, 125);
        assert!(
            err.contains("invalid port mapping") && err.contains("sctp"),
            "{err}"
        );
        let (code, _, err) = c.run(&["run", "--rm", "-p", "99999:80", "bb", "true"]);
        assert_ne!(code, 0);
        assert!(err.to_lowercase().contains("invalid"), "{err}");
        let (code, _, err) = c.run(&["run", "--rm", "bb", "nosuchcmd"]);
        assert_eq!(code, 127, "{err}");
        assert!(err.contains("executable file not found"), "{err}");
        let (code, _, err) = c.run(&["run", "--rm", "bb", "/etc/passwd"]);
        assert_eq!(code, 126, "{err}");
        let (code, _, err) = c.run(&["run", "--rm", "--memory", "1m", "bb", "true"]);
        assert_eq!(code, 125);
        assert!(
            err.contains("Minimum memory limit") || err.contains("minimum is 6MB"),
            "{err}"
        );
        for (args, msg) in [
            (vec!["stop", "nosuch"], "No such container: nosuch"),
            (vec!["logs", "nosuch"], "No such container: nosuch"),
            (vec!["exec", "nosuch", "true"], "No such container: nosuch"),
            (vec!["rmi", "nosuch:9"], "No such image: nosuch:9"),
            (vec!["network", "rm", "nosuchnet"], "nosuchnet"),
            (vec!["swarm", "init"], "swarm"),
            (vec!["volume", "rm", "nosuchvol"], "no such volume"),
            (
                vec!["volume", "create", "-d", "nfs", "v"],
                "not supported by pier",
            ),
            (
                vec!["run", "--rm", "-v", "/a:/b:bogus", "bb", "true"],
                "invalid mode",
            ),
            (
                vec![
                    "run",
                    "--rm",
                    "--mount",
                    "type=bind,source=/no/such/dir,target=/x",
                    "bb",
                    "true",
                ],
                "bind source path does not exist",
            ),
            (
                vec!["update", "--memory", "100m", "nosuch"],
                "No such container",
            ),
        ] {
            let err = c.fails(&args);
            assert!(
                err.to_lowercase().contains(&msg.to_lowercase()),
                "{cli} {args:?}: {err}"
            );
        }
        c.ok(&["create", "--name", "stopped", "bb", "true"]);
        let err = c.fails(&["exec", "stopped", "true"]);
        assert!(err.contains("is not running"), "{err}");
        c.ok(&["rm", "stopped"]);
    }
    // Nothing in the daemon's log is a bug.
    assert!(!d.log().contains("request failed"), "{}", d.log());
}

/// Exec sessions are the engine's, one registry for both APIs: an exec made and started
/// through the Docker API is seen, with its exit code, through the native API; it starts
/// once; and both APIs refuse an unknown one in their own words.
#[test]
#[ignore = "root tier: needs root; scripts/test.sh runs it (--run-ignored all)"]
fn one_exec_registry_for_both_apis() {
    let d = with_busybox(&[]);
    d.ok(&["run", "-d", "--name", "ex", "bb", "sleep", "60"]);
    let (status, body) = http_json(
        &d.docker_socket,
        "POST",
        "/containers/ex/exec",
        r#"{"Cmd":["sh","-c","exit 7"]}"#,
    );
    assert_eq!(status, 201, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let id = v["Id"].as_str().unwrap().to_string();
    // Created, not started: the native API knows it.
    let (status, body) = http_json(&d.socket, "GET", &format!("/v1/exec/{id}"), "");
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (v["running"].as_bool(), v["exit_code"].as_i64()),
        (Some(false), None),
        "{v}"
    );
    let start = format!("/exec/{id}/start");
    let (status, body) = http_json(&d.docker_socket, "POST", &start, r#"{"Detach":true}"#);
    assert_eq!(status, 200, "{body}");
    wait_until("the exit code through the native API", || {
        let (_, body) = http_json(&d.socket, "GET", &format!("/v1/exec/{id}"), "");
        serde_json::from_str::<serde_json::Value>(&body).unwrap()["exit_code"] == 7
    });
    let (_, body) = http_json(&d.docker_socket, "GET", &format!("/exec/{id}/json"), "");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (v["Running"].as_bool(), v["ExitCode"].as_i64()),
        (Some(false), Some(7)),
        "{v}"
    );
    let (status, body) = http_json(&d.docker_socket, "POST", &start, r#"{"Detach":true}"#);
    assert_eq!(status, 409, "{body}");
    assert!(body.contains("already been started"), "{body}");
    let (status, body) = http_json(&d.socket, "GET", "/v1/exec/0123456789abcdef", "");
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("no such exec session"), "{body}");
    let (status, body) = http_json(&d.docker_socket, "GET", "/exec/0123456789abcdef/json", "");
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("No such exec instance"), "{body}");
    d.ok(&["rm", "-f", "ex"]);
    assert!(!d.log().contains("request failed"), "{}", d.log());
}
