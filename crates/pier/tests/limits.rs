//! Root tier: what a client of either API socket may ask of the daemon. Bodies over their
//! limit are refused with 413 without the daemon holding them; a container's record has
//! a size limit; a client that never finishes its request is disconnected; and a resource
//! limit asked for and not applied is an error on both APIs, never a silent drop.

mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use common::*;

fn with_busybox(extra_args: &[&str]) -> Daemon {
    require_root_and_tools(&["ldd", "docker"]);
    let d = Daemon::start_with(extra_args);
    d.ok(&["image", "from-host", "bb", BUSYBOX]);
    d
}

/// Status and body of an HTTP/1.1 answer read to its end (or to the connection's reset:
/// a server that answers before reading the whole body closes on the rest).
fn read_answer(s: &mut UnixStream) -> (u16, String) {
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, body.to_string())
}

/// One request with a body on a unix socket.
fn request(socket: &Path, method: &str, path: &str, body: &str) -> (u16, String) {
    let mut s = UnixStream::connect(socket).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: pier\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    read_answer(&mut s)
}

/// A request whose body is `prefix` followed by `x` up to `total` bytes, written from a
/// thread while the answer is read, so an early answer is seen.
fn huge_request(socket: &Path, path: &str, prefix: &str, total: usize) -> (u16, String) {
    let mut s = UnixStream::connect(socket).unwrap();
    let mut w = s.try_clone().unwrap();
    let prefix = prefix.to_string();
    let path = path.to_string();
    let writer = std::thread::spawn(move || -> std::io::Result<usize> {
        write!(
            w,
            "POST {path} HTTP/1.1\r\nHost: pier\r\nContent-Type: application/json\r\nContent-Length: {total}\r\nConnection: close\r\n\r\n{prefix}"
        )?;
        let chunk = vec![b'x'; 1 << 20];
        let mut sent = prefix.len();
        while sent < total {
            let n = chunk.len().min(total - sent);
            w.write_all(&chunk[..n])?;
            sent += n;
        }
        Ok(sent)
    });
    let answer = read_answer(&mut s);
    drop(s);
    let _ = writer.join().unwrap();
    answer
}

/// A process's peak resident memory, in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

#[test]
#[ignore = "root tier: needs root; scripts/test.sh runs it (--run-ignored all)"]
fn huge_bodies_get_413_and_the_daemon_holds_none_of_them() {
    let d = with_busybox(&[]);
    let store = d.root.join("state.redb");
    let store_before = std::fs::metadata(&store).unwrap().len();
    let peak_before = peak_rss_kib(d.pid());
    const HUGE: usize = 200 << 20;
    for (socket, path, prefix, shape) in [
        (
            &d.docker_socket,
            "/v1.43/containers/create?name=huge",
            r#"{"Image":"bb","Env":["A="#,
            "\"message\"",
        ),
        (
            &d.socket,
            "/v1/containers",
            r#"{"image":"bb","env":["A="#,
            "\"too_large\"",
        ),
    ] {
        let started = Instant::now();
        let (status, body) = huge_request(socket, path, prefix, HUGE);
        eprintln!("{path}: {status} after {:?}", started.elapsed());
        assert_eq!(status, 413, "{path}: {body}");
        assert!(
            body.contains(shape) && body.contains("4 MiB"),
            "{path}: the API's error shape, saying the limit: {body}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "refused early, not after reading everything"
        );
    }
    // A body under the limit whose record would be over a MiB is refused as well.
    let env = "x".repeat(3 << 20);
    for (socket, path, body) in [
        (
            &d.docker_socket,
            "/v1.43/containers/create",
            format!(r#"{{"Image":"bb","Env":["A={env}"]}}"#),
        ),
        (
            &d.socket,
            "/v1/containers",
            format!(r#"{{"image":"bb","env":["A={env}"]}}"#),
        ),
    ] {
        let (status, answer) = request(socket, "POST", path, &body);
        assert_eq!(status, 413, "{path}: {answer}");
        assert!(answer.contains("1 MiB"), "{path}: {answer}");
    }
    let peak_after = peak_rss_kib(d.pid());
    eprintln!("daemon peak RSS: {peak_before} KiB before, {peak_after} KiB after");
    assert!(
        peak_after < peak_before + 64 * 1024,
        "the daemon's peak memory grew from {peak_before} KiB to {peak_after} KiB"
    );
    assert_eq!(d.ok(&["ps", "-aq"]), "", "no container was made");
    assert_eq!(
        std::fs::metadata(&store).unwrap().len(),
        store_before,
        "the store did not grow"
    );
    // Both sockets still serve, and a normal create works.
    let (status, body) = request(
        &d.docker_socket,
        "POST",
        "/v1.43/containers/create",
        r#"{"Image":"bb","Cmd":["true"]}"#,
    );
    assert_eq!(status, 201, "{body}");
}

#[test]
#[ignore = "root tier: needs root; scripts/test.sh runs it (--run-ignored all)"]
fn clients_that_never_finish_their_headers_are_disconnected() {
    let d = with_busybox(&["--header-timeout", "2"]);
    let pid = d.pid();
    let fds_before = open_fds(pid);
    // 500 half-sent requests over both sockets, each stalled mid-header...
    let mut stalled = Vec::new();
    for i in 0..500 {
        let socket = if i % 2 == 0 {
            &d.docker_socket
        } else {
            &d.socket
        };
        let mut s = UnixStream::connect(socket).unwrap();
        s.write_all(b"POST /containers/create HTTP/1.1\r\nHost: pier\r\nContent-Le")
            .unwrap();
        stalled.push(s);
    }
    // And 50 whose headers are whole but whose JSON body stops halfway.
    for (i, path) in ["/v1.43/containers/create", "/v1/containers"]
        .iter()
        .cycle()
        .take(50)
        .enumerate()
    {
        let socket = if i % 2 == 0 {
            &d.docker_socket
        } else {
            &d.socket
        };
        let mut s = UnixStream::connect(socket).unwrap();
        write!(
            s,
            "POST {path} HTTP/1.1\r\nHost: pier\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"Image\":"
        )
        .unwrap();
        stalled.push(s);
    }
    wait_until("the daemon to hold the stalled connections", || {
        open_fds(pid) >= fds_before + 450
    });
    // Meanwhile, a client that sends its headers slowly but within the timeout is served.
    let mut slow = UnixStream::connect(&d.docker_socket).unwrap();
    slow.write_all(b"GET /_ping HTTP/1.1\r\nHost: pier\r\n")
        .unwrap();
    std::thread::sleep(Duration::from_millis(1000));
    slow.write_all(b"Connection: close\r\n\r\n").unwrap();
    assert_eq!(read_answer(&mut slow).0, 200);
    // Every stalled one is closed by the daemon once the timeout has passed.
    let deadline = Instant::now() + Duration::from_secs(15);
    for (i, s) in stalled.iter_mut().enumerate() {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "connection {i} is still open");
        s.set_read_timeout(Some(left)).unwrap();
        let mut buf = [0u8; 512];
        loop {
            match s.read(&mut buf) {
                Ok(0) => break,
                Ok(_) => continue,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    panic!("connection {i} is still open 15 s after the header timeout of 2 s")
                }
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
                    panic!("connection {i} is still open 15 s after the header timeout of 2 s")
                }
                Err(_) => break,
            }
        }
    }
    drop(stalled);
    wait_until("the daemon to release the connections' descriptors", || {
        open_fds(pid) < fds_before + 20
    });
    // The daemon still serves both sockets.
    d.ok(&["ps"]);
    assert_eq!(request(&d.docker_socket, "GET", "/_ping", "").0, 200);
}

#[test]
#[ignore = "root tier: needs root; scripts/test.sh runs it (--run-ignored all)"]
fn limits_asked_for_and_not_applied_are_refused_on_both_apis() {
    let d = with_busybox(&[]);
    // Docker's HostConfig, sent raw: the docker CLI refuses some of these itself.
    let docker_refused = [
        (r#""Memory":-5"#, "6MB"),
        (r#""Memory":1024"#, "6MB"),
        (r#""NanoCpus":-1"#, "out of range"),
        (r#""NanoCpus":500000000000"#, "out of range"),
        (r#""PidsLimit":-7"#, "pids limit -7"),
        (r#""CpuShares":-1"#, "CPU shares -1"),
        (r#""ShmSize":-1"#, "shm-size"),
        (r#""BlkioWeight":5"#, "blkio weight"),
        (r#""CpuQuota":500"#, "CPU cfs quota"),
        (r#""CpuPeriod":50"#, "CPU cfs period"),
        (
            r#""NanoCpus":1000000000,"CpuQuota":50000"#,
            "Conflicting options",
        ),
        (r#""MemorySwap":-5,"Memory":67108864"#, "memory-swap"),
        // Applied (crates/pier/tests/docker_create.rs), but checked as Docker checks them.
        (r#""MemoryReservation":1024"#, "Minimum memory reservation"),
        (r#""MemorySwappiness":150"#, "memory swappiness range"),
        (r#""OomScoreAdj":-2000"#, "range for oom score adj"),
        (
            r#""KernelMemory":1048576"#,
            "Minimum kernel memory limit allowed is 4MB",
        ),
        (
            r#""CpuRealtimePeriod":1000,"CpuRealtimeRuntime":2000"#,
            "cpu real-time runtime cannot be higher",
        ),
        (r#""CpuCount":2"#, "--cpu-count"),
        (
            r#""Ulimits":[{"Name":"nofile","Soft":-5,"Hard":-5}]"#,
            "ulimit",
        ),
    ];
    for (host_config, msg) in docker_refused {
        let body = format!(r#"{{"Image":"bb","Cmd":["true"],"HostConfig":{{{host_config}}}}}"#);
        let (status, answer) = request(&d.docker_socket, "POST", "/v1.43/containers/create", &body);
        assert_eq!(status, 400, "Docker API, {host_config}: {answer}");
        assert!(
            answer.contains("\"message\"") && answer.contains(msg),
            "Docker API, {host_config}: {answer}"
        );
    }
    let native_refused = [
        (r#""memory":-5"#, "6MB"),
        (r#""cpus":-0.000000001"#, "out of range"),
        (r#""pids_limit":-7"#, "pids limit -7"),
        (r#""cpu_shares":-1"#, "CPU shares -1"),
        (r#""cpu_shares":300000"#, "CPU shares 300000"),
        (r#""shm_size":-1"#, "shm-size"),
        (r#""blkio_weight":5"#, "blkio"),
    ];
    for (field, msg) in native_refused {
        let body = format!(r#"{{"image":"bb","cmd":["true"],{field}}}"#);
        let (status, answer) = request(&d.socket, "POST", "/v1/containers", &body);
        assert_eq!(status, 400, "native API, {field}: {answer}");
        assert!(
            answer.contains("\"invalid_input\"") && answer.contains(msg),
            "native API, {field}: {answer}"
        );
    }
    assert_eq!(d.ok(&["ps", "-aq"]), "", "nothing was made");
    // What Docker's CLIs send when no limit is asked for, and Docker's "unlimited", pass.
    let body = r#"{"Image":"bb","Cmd":["true"],"HostConfig":{"Memory":0,"NanoCpus":0,"CpuShares":0,
        "PidsLimit":-1,"MemorySwappiness":-1,"KernelMemory":0,"OomKillDisable":false,"CpusetMems":"",
        "BlkioWeightDevice":[],"DeviceCgroupRules":null,"MemoryReservation":0,"ShmSize":0}}"#;
    let (status, answer) = request(&d.docker_socket, "POST", "/v1.43/containers/create", body);
    assert_eq!(status, 201, "{answer}");
    let (status, answer) = request(
        &d.socket,
        "POST",
        "/v1/containers",
        r#"{"image":"bb","cmd":["true"],"pids_limit":-1,"cpu_shares":0}"#,
    );
    assert_eq!(status, 201, "{answer}");
}

#[test]
#[ignore = "root tier: needs root; scripts/test.sh runs it (--run-ignored all)"]
fn shm_size_is_applied() {
    let d = with_busybox(&[]);
    // df -k: the size column, in KiB.
    let size = |out: &str| -> u64 {
        let line = out.lines().last().unwrap_or_default().to_string();
        line.split_whitespace()
            .nth(1)
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let out = d.ok(&["run", "--rm", "bb", "df", "-k", "/dev/shm"]);
    assert_eq!(size(&out), 65536, "64 MiB by default: {out}");
    let out = d.ok(&[
        "run",
        "--rm",
        "--shm-size",
        "1m",
        "bb",
        "df",
        "-k",
        "/dev/shm",
    ]);
    assert_eq!(size(&out), 1024, "{out}");
    let (code, out) = try_run(
        &d,
        &[
            "--shm-size",
            "1m",
            "bb",
            "dd",
            "if=/dev/zero",
            "of=/dev/shm/fill",
            "bs=1024",
            "count=2048",
        ],
    );
    assert_ne!(code, 0, "writing 2 MiB into a 1 MiB /dev/shm fails: {out}");
    assert!(out.contains("No space left"), "{out}");
    // The docker CLI's --shm-size (HostConfig.ShmSize), shown back by inspect.
    let docker = |args: &[&str]| {
        let out = d.docker("docker", args);
        assert!(
            out.status.success(),
            "docker {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let out = docker(&[
        "run",
        "--rm",
        "--shm-size",
        "2m",
        "bb",
        "df",
        "-k",
        "/dev/shm",
    ]);
    assert_eq!(size(&out), 2048, "{out}");
    docker(&["create", "--name", "shm", "--shm-size", "3m", "bb", "true"]);
    let shown = docker(&["inspect", "-f", "{{.HostConfig.ShmSize}}", "shm"]);
    assert_eq!(shown.trim(), (3u64 << 20).to_string());
    docker(&["rm", "shm"]);
}
