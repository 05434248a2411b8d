//! Root tier: exec and attach streams at Docker 20.10's level, through the clients that
//! expect it: the exec start request's `Tty` chooses the framing (raw API calls), detach
//! keys on attach and exec (docker-py, as its own tests drive them; Pier's CLI in a
//! terminal), and attach over a websocket (websocket-client, which docker-py uses).

mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::process::Stdio;
use std::time::Duration;

use common::*;

/// The v28 docker CLI.
const DOCKER: &str = "/usr/local/bin/docker";
/// docker-py's venv, as `scripts/docker-py.sh` makes it (docker 7.2.0, websocket-client).
const VENV_PYTHON: &str = "/var/cache/pier/docker-py-venv/bin/python";

/// Runs a Python script with docker-py against the daemon's Docker socket; fails the
/// test with its output unless it exits 0. `env` is passed to it.
fn python(d: &Daemon, script: &str, env: &[(&str, &str)]) -> String {
    assert!(
        std::path::Path::new(VENV_PYTHON).exists(),
        "{VENV_PYTHON} is missing: make it with `bash scripts/docker-py.sh DOCKER_PY_SOURCE` \
         or `python3 -m venv /var/cache/pier/docker-py-venv && \
         /var/cache/pier/docker-py-venv/bin/pip install 'docker[websockets]==7.2.0'`"
    );
    let out = std::process::Command::new(VENV_PYTHON)
        .arg("-c")
        .arg(script)
        .env(
            "DOCKER_HOST",
            format!("unix://{}", d.docker_socket.display()),
        )
        .env("DOCKER_SOCKET", &d.docker_socket)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let (code, stdout, stderr) = outcome(&out);
    assert_eq!(
        code,
        0,
        "python failed:\n{stdout}\n{stderr}\ndaemon log:\n{}",
        d.log()
    );
    stdout
}

/// One JSON request on the Docker socket: the status and the body.
fn post_json(d: &Daemon, path: &str, body: &str) -> (u16, String) {
    docker_api(d, "POST", path, body.as_bytes())
}

/// Creates an exec in `container` and returns its ID.
fn exec_create(d: &Daemon, container: &str, config: &str) -> String {
    let (status, body) = post_json(d, &format!("/containers/{container}/exec"), config);
    assert_eq!(status, 201, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    v["Id"].as_str().unwrap().to_string()
}

/// Starts an exec upgraded to a raw stream (as the docker CLI and docker-py do) with the
/// start request's `Tty`; its headers and every byte until the stream ends.
fn exec_start_upgraded(d: &Daemon, exec_id: &str, tty: bool) -> (String, Vec<u8>) {
    let mut s = UnixStream::connect(&d.docker_socket).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let body = format!("{{\"Detach\":false,\"Tty\":{tty}}}");
    write!(
        s,
        "POST /v1.41/exec/{exec_id}/start HTTP/1.1\r\nHost: docker\r\nContent-Type: application/json\r\n\
         Connection: Upgrade\r\nUpgrade: tcp\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut all = Vec::new();
    s.read_to_end(&mut all).unwrap();
    let end = all
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("an answer")
        + 4;
    (
        String::from_utf8_lossy(&all[..end]).into_owned(),
        all[end..].to_vec(),
    )
}

/// Docker's multiplexed frames: (stream, payload) each; None when `data` is not framed.
fn frames(mut data: &[u8]) -> Option<Vec<(u8, Vec<u8>)>> {
    let mut out = Vec::new();
    while !data.is_empty() {
        if data.len() < 8 || !matches!(data[0], 1 | 2) || data[1..4] != [0, 0, 0] {
            return None;
        }
        let len = u32::from_be_bytes([data[4], data[5], data[6], data[7]]) as usize;
        if data.len() < 8 + len {
            return None;
        }
        out.push((data[0], data[8..8 + len].to_vec()));
        data = &data[8 + len..];
    }
    Some(out)
}

/// An exec's output framing is the start request's `Tty`, its terminal the create's (as
/// Docker: docker-py starts an exec made with `tty=True` with `Tty: false` and reads
/// 8-byte frames). Before, both followed the create's `Tty` or'ed with the start's: the
/// first case came back raw, and the second gave the command a terminal.
#[test]
#[ignore = "root tier: needs root; scripts/test.sh runs it (--run-ignored all)"]
fn exec_output_is_framed_as_the_start_request_says() {
    let d = with_busybox(&[]);
    let (code, _, err) = outcome(&d.docker(
        DOCKER,
        &["run", "-d", "--name", "fr", "bb", "sleep", "1000"],
    ));
    assert_eq!(code, 0, "{err}");
    // Made with a terminal, started without: frames, all on stdout, the terminal's \r\n.
    let id = exec_create(
        &d,
        "fr",
        r#"{"Cmd":["sh","-c","echo out; echo err >&2"],"Tty":true,"AttachStdout":true,"AttachStderr":true}"#,
    );
    let (head, data) = exec_start_upgraded(&d, &id, false);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    let f = frames(&data).unwrap_or_else(|| panic!("not framed: {data:?}"));
    assert!(f.iter().all(|(s, _)| *s == 1), "all on stdout: {f:?}");
    let text: Vec<u8> = f.into_iter().flat_map(|(_, p)| p).collect();
    assert_eq!(String::from_utf8_lossy(&text), "out\r\nerr\r\n");
    // Made without a terminal, started with `Tty`: raw, and still no terminal.
    let id = exec_create(
        &d,
        "fr",
        r#"{"Cmd":["sh","-c","tty; echo err >&2"],"Tty":false,"AttachStdout":true,"AttachStderr":true}"#,
    );
    let (head, data) = exec_start_upgraded(&d, &id, true);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    let text = String::from_utf8_lossy(&data);
    assert!(
        text.contains("not a tty\n") && text.contains("err\n") && frames(&data).is_none(),
        "raw output of a command without a terminal: {data:?}"
    );
    // Neither: frames, stdout and stderr apart.
    let id = exec_create(
        &d,
        "fr",
        r#"{"Cmd":["sh","-c","echo out; sleep 0.2; echo err >&2"],"AttachStdout":true,"AttachStderr":true}"#,
    );
    let (_, data) = exec_start_upgraded(&d, &id, false);
    assert_eq!(
        frames(&data),
        Some(vec![(1, b"out\n".to_vec()), (2, b"err\n".to_vec())])
    );
    d.docker(DOCKER, &["rm", "-f", "fr"]);
}

/// The docker-py side of the detach tests: a socket attached to `cat` with a terminal,
/// typed into, then the keys; the socket must close, and the keys must not reach `cat`.
const DETACH_PY: &str = r#"
import docker, json, os, socket, time

c = docker.APIClient(base_url=os.environ["DOCKER_HOST"], version="1.41", timeout=30)
keys = [bytes([int(k)]) for k in os.environ["KEYS"].split(",")]
if os.environ.get("CONFIG_KEYS"):
    c._general_configs["detachKeys"] = os.environ["CONFIG_KEYS"]
ctr = c.create_container("bb", "cat", detach=True, stdin_open=True, tty=True)["Id"]
c.start(ctr)
if os.environ["KIND"] == "attach":
    params = {"stdin": 1, "stdout": 1, "stream": 1}
    if os.environ.get("ARG_KEYS"):
        params["detachKeys"] = os.environ["ARG_KEYS"]
    sock = c.attach_socket(ctr, params)
    exec_id = None
else:
    exec_id = c.exec_create(ctr, "cat", stdin=True, tty=True, stdout=True)["Id"]
    sock = c.exec_start(exec_id, tty=True, socket=True)
sock = getattr(sock, "_sock", sock)
sock.settimeout(15)
time.sleep(0.5)
sock.sendall(b"typed\n")
time.sleep(0.5)
for k in keys:
    sock.sendall(k)
    time.sleep(0.5)
seen = b""
closed = False
try:
    while True:
        b = sock.recv(4096)
        if not b:
            closed = True
            break
        seen += b
except socket.timeout:
    pass
except OSError:
    closed = True
time.sleep(0.5)
state = c.inspect_container(ctr)["State"]
out = {
    "closed": closed,
    "seen": seen.decode("latin-1"),
    "running": state["Running"],
    "exec_running": c.exec_inspect(exec_id)["Running"] if exec_id else None,
}
c.remove_container(ctr, force=True)
print(json.dumps(out))
"#;

fn detach_case(d: &Daemon, env: &[(&str, &str)]) -> serde_json::Value {
    let out = python(d, DETACH_PY, env);
    serde_json::from_str(out.lines().last().unwrap_or("")).unwrap_or_else(|_| panic!("{out}"))
}

/// Detach keys on attach, as docker-py's tests drive them: ctrl-p ctrl-q by default,
/// the client config's `detachKeys` (sent as the query's), and the `detachKeys` query
/// itself. Each closes the stream, the keys never reach the container, what was typed
/// before did, and the container runs on. Before, the keys went to the container and the
/// stream stayed open.
#[test]
#[ignore = "root tier: needs root; scripts/test.sh runs it (--run-ignored all)"]
fn attach_detaches_on_its_keys_and_the_container_runs_on() {
    require_root_and_tools(&["script"]);
    let d = with_busybox(&[]);
    let cases: [&[(&str, &str)]; 3] = [
        &[("KIND", "attach"), ("KEYS", "16,17")],
        &[
            ("KIND", "attach"),
            ("KEYS", "16"),
            ("CONFIG_KEYS", "ctrl-p"),
        ],
        &[
            ("KIND", "attach"),
            ("KEYS", "24"),
            ("CONFIG_KEYS", "ctrl-p"),
            ("ARG_KEYS", "ctrl-x"),
        ],
    ];
    for env in cases {
        let r = detach_case(&d, env);
        assert_eq!(r["closed"], true, "{env:?}: the stream closes: {r}");
        assert_eq!(r["running"], true, "{env:?}: {r}");
        let seen = r["seen"].as_str().unwrap();
        assert!(
            seen.contains("typed\r\ntyped\r\n"),
            "{env:?}: input went in: {r}"
        );
        assert!(
            !seen.contains('^') && !seen.contains('\u{10}') && !seen.contains('\u{18}'),
            "{env:?}: the keys must not reach the terminal: {r}"
        );
    }
    // A bad sequence is refused before the attach, as Docker does.
    let (code, _, err) = outcome(&d.docker(DOCKER, &["create", "--name", "bad", "-it", "bb"]));
    assert_eq!(code, 0, "{err}");
    let (status, body) = post_json(
        &d,
        "/containers/bad/attach?stream=1&stdin=1&detachKeys=ctrl-1",
        "",
    );
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("Invalid detach keys (ctrl-1)"), "{body}");
    d.docker(DOCKER, &["rm", "-f", "bad"]);
    // The docker CLI in a terminal: its --detach-keys leaves the container running.
    let (code, _, err) = outcome(&d.docker(DOCKER, &["run", "-dit", "--name", "dc", "bb", "sh"]));
    assert_eq!(code, 0, "{err}");
    let (code, out) = in_pty(
        &format!(
            "DOCKER_HOST=unix://{} {DOCKER} attach --detach-keys ctrl-a,x dc",
            d.docker_socket.display()
        ),
        &[b"echo back-$((2+3))\n", b"\x01x"],
    );
    // (The v28 CLI reports the detach as "read escape sequence", exit 1.)
    assert!(matches!(code, 0 | 1), "{out}");
    assert!(out.contains("back-5"), "{out}");
    let (_, running, _) =
        outcome(&d.docker(DOCKER, &["inspect", "-f", "{{.State.Running}}", "dc"]));
    assert_eq!(running.trim(), "true");
    d.docker(DOCKER, &["rm", "-f", "dc"]);
}

/// Detach keys on exec: ctrl-p ctrl-q by default and the client config's (sent in the
/// exec's create as `detachKeys`) close the stream; the command runs on (Docker emits
/// `exec_detach`, and the exec stays running). Before, the keys went to `cat`.
#[test]
#[ignore = "root tier: needs root; scripts/test.sh runs it (--run-ignored all)"]
fn exec_detaches_on_its_keys_and_the_command_runs_on() {
    let d = with_busybox(&[]);
    let cases: [&[(&str, &str)]; 2] = [
        &[("KIND", "exec"), ("KEYS", "16,17")],
        &[("KIND", "exec"), ("KEYS", "16"), ("CONFIG_KEYS", "ctrl-p")],
    ];
    for env in cases {
        let r = detach_case(&d, env);
        assert_eq!(r["closed"], true, "{env:?}: the stream closes: {r}");
        assert_eq!(r["exec_running"], true, "{env:?}: the command runs on: {r}");
        assert_eq!(r["running"], true, "{env:?}: {r}");
        let seen = r["seen"].as_str().unwrap();
        assert!(seen.contains("typed\r\ntyped\r\n"), "{env:?}: {r}");
        assert!(
            !seen.contains('^'),
            "{env:?}: the keys must not reach cat: {r}"
        );
    }
    // A bad sequence is refused at the create.
    let (code, _, err) =
        outcome(&d.docker(DOCKER, &["run", "-d", "--name", "ex", "bb", "sleep", "100"]));
    assert_eq!(code, 0, "{err}");
    let (status, body) = post_json(
        &d,
        "/containers/ex/exec",
        r#"{"Cmd":["true"],"DetachKeys":"ctrl-1"}"#,
    );
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("Invalid escape keys (ctrl-1)"), "{body}");
    d.docker(DOCKER, &["rm", "-f", "ex"]);
}

/// The websocket side: attach over `/containers/{id}/attach/ws` with websocket-client (on
/// the daemon's unix socket), typing a line and reading the output.
const WS_PY: &str = r#"
import docker, json, os, socket, time, websocket

c = docker.APIClient(base_url=os.environ["DOCKER_HOST"], version="1.41", timeout=30)

def connect(ctr, query):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(os.environ["DOCKER_SOCKET"])
    return websocket.create_connection(
        "ws://localhost/v1.41/containers/%s/attach/ws?%s" % (ctr, query), socket=s, timeout=15)

def drain(ws):
    msgs = []
    while True:
        try:
            op, data = ws.recv_data()
        except websocket.WebSocketConnectionClosedException:
            break
        if op == websocket.ABNF.OPCODE_CLOSE:
            break
        msgs.append((op, data.decode()))
    return msgs

out = {}
# Live: input from the client's messages, raw output (never multiplexed) back.
ctr = c.create_container("bb", ["sh", "-c", "read l; echo got:$l; echo err >&2"],
                         stdin_open=True)["Id"]
c.start(ctr)
ws = connect(ctr, "stream=1&stdin=1&stdout=1&stderr=1")
time.sleep(0.3)
ws.send("hello\n")
out["live"] = drain(ws)
c.wait(ctr)
# The past, from logs=1 without stream.
ws = connect(ctr, "logs=1&stdout=1")
out["logs"] = drain(ws)
c.remove_container(ctr, force=True)
# A terminal: typed in, echoed back, and detached by its keys.
ctr = c.create_container("bb", "cat", stdin_open=True, tty=True)["Id"]
c.start(ctr)
ws = connect(ctr, "stream=1&stdin=1&stdout=1&detachKeys=ctrl-x")
time.sleep(0.3)
ws.send_binary(b"tty\n")
time.sleep(0.5)
ws.send_binary(b"\x18")
out["tty"] = drain(ws)
out["running"] = c.inspect_container(ctr)["State"]["Running"]
c.remove_container(ctr, force=True)
print(json.dumps(out))
"#;

/// `GET /containers/{id}/attach/ws` as Docker serves it: binary messages of raw output,
/// the client's messages as input, `logs` for the past, detach keys with a terminal.
/// Before, it answered "not supported".
#[test]
#[ignore = "root tier: needs root; scripts/test.sh runs it (--run-ignored all)"]
fn attach_over_a_websocket() {
    let d = with_busybox(&[]);
    let out = python(&d, WS_PY, &[]);
    let r: serde_json::Value =
        serde_json::from_str(out.lines().last().unwrap_or("")).unwrap_or_else(|_| panic!("{out}"));
    let text = |k: &str| -> String {
        r[k].as_array()
            .unwrap_or_else(|| panic!("{r}"))
            .iter()
            .map(|m| {
                assert_eq!(m[0], 2, "{k}: a binary message: {r}");
                m[1].as_str().unwrap().to_string()
            })
            .collect()
    };
    let live = text("live");
    assert!(
        live.contains("got:hello\n") && live.contains("err\n") && !live.contains('\u{1}'),
        "{r}"
    );
    assert_eq!(text("logs"), "got:hello\n");
    assert!(text("tty").contains("tty\r\ntty\r\n"), "{r}");
    assert_eq!(
        r["running"], true,
        "a detach leaves the container running: {r}"
    );
}

fn pier_in_pty(d: &Daemon, cmd: &str, input: &[&[u8]]) -> (i32, String) {
    in_pty(
        &format!("PIER_HOST={} {PIER} {cmd}", d.socket.display()),
        input,
    )
}

fn lines_of(d: &Daemon, container: &str, file: &str) -> usize {
    let out = d.ok(&["exec", container, "cat", file]);
    out.lines().count()
}

/// Pier's CLI: `exec -it` detached by its keys leaves the command running (the daemon
/// reads the keys: before, the CLI dropped the stream and the daemon ended the command at
/// its next output), and `start -a`/`-i`/`--detach-keys` attach as Docker's do.
#[test]
#[ignore = "root tier: needs root; scripts/test.sh runs it (--run-ignored all)"]
fn pier_exec_and_start_detach_and_attach() {
    require_root_and_tools(&["script"]);
    let d = with_busybox(&[]);
    d.ok(&["run", "-d", "--name", "host", "bb", "sleep", "1000"]);
    let (code, out) = pier_in_pty(
        &d,
        "exec -it host sh -c 'while :; do echo tick; echo t >> /tmp/ticks; sleep 0.2; done'",
        &[b"\x10\x11"],
    );
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("tick"), "{out}");
    std::thread::sleep(Duration::from_millis(1000));
    let before = lines_of(&d, "host", "/tmp/ticks");
    std::thread::sleep(Duration::from_millis(1500));
    let after = lines_of(&d, "host", "/tmp/ticks");
    assert!(
        after > before,
        "the detached command runs on: {before} then {after} ticks"
    );
    d.ok(&["rm", "-f", "host"]);

    // start -ai with a terminal, and its own keys.
    d.ok(&["create", "-it", "--name", "st", "bb", "sh"]);
    let (code, out) = pier_in_pty(
        &d,
        "start -ai --detach-keys ctrl-x st",
        &[b"echo typed-$((6*7))\n", b"\x18"],
    );
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("typed-42"), "{out}");
    assert_eq!(d.json(&["inspect", "st"])[0]["state"]["status"], "running");
    d.ok(&["rm", "-f", "st"]);
    // start -a without a terminal: the output, and the container's exit code.
    d.ok(&[
        "create",
        "--name",
        "sa",
        "bb",
        "sh",
        "-c",
        "echo out; echo err >&2; exit 3",
    ]);
    let (code, out, err) = outcome(&d.pier(&["start", "-a", "sa"]));
    assert_eq!((code, out.as_str(), err.as_str()), (3, "out\n", "err\n"));
    // start -ai passes input.
    d.ok(&[
        "create",
        "-i",
        "--name",
        "si",
        "bb",
        "sh",
        "-c",
        "read l; echo got:$l",
    ]);
    let o = d.with_input(&["start", "-ai", "si"], b"hi\n");
    assert_eq!(String::from_utf8_lossy(&o.stdout), "got:hi\n");
    assert_eq!(o.status.code(), Some(0));
    // Only one container at a time.
    let err = d.fails(&["start", "-a", "sa", "si"]);
    assert!(
        err.contains("cannot start and attach multiple containers"),
        "{err}"
    );
    d.ok(&["rm", "-f", "sa", "si"]);
}

/// The docker CLI's `exec -it` detached by ctrl-p ctrl-q (the CLI spots the keys itself
/// and closes its connection) leaves the command running, as Docker's does: a client
/// gone is not a kill (before, the daemon ended the command at its next output). The same
/// for a client killed mid-exec without a terminal.
#[test]
#[ignore = "root tier: needs root; scripts/test.sh runs it (--run-ignored all)"]
fn a_docker_exec_whose_client_leaves_runs_on() {
    require_root_and_tools(&["script"]);
    let d = with_busybox(&[]);
    let (code, _, err) =
        outcome(&d.docker(DOCKER, &["run", "-d", "--name", "x", "bb", "sleep", "1000"]));
    assert_eq!(code, 0, "{err}");
    let (code, out) = in_pty(
        &format!(
            "DOCKER_HOST=unix://{} {DOCKER} exec -it x sh -c 'while :; do echo tick; echo t >> /tmp/ticks; sleep 0.2; done'",
            d.docker_socket.display()
        ),
        &[b"\x10\x11"],
    );
    assert!(matches!(code, 0 | 1), "{out}");
    assert!(out.contains("tick"), "{out}");
    std::thread::sleep(Duration::from_millis(1000));
    let before = lines_of(&d, "x", "/tmp/ticks");
    std::thread::sleep(Duration::from_millis(1500));
    let after = lines_of(&d, "x", "/tmp/ticks");
    assert!(
        after > before,
        "the command runs on after the CLI detached: {before} then {after} ticks"
    );
    // Without a terminal: the client killed, the command goes on to its own end.
    let mut client = d
        .docker_cmd(DOCKER)
        .args([
            "exec",
            "x",
            "sh",
            "-c",
            "for i in 1 2 3 4 5 6 7 8 9 10; do echo $i; echo $i >> /tmp/count; sleep 0.2; done",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(700));
    client.kill().unwrap();
    let _ = client.wait();
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(
        lines_of(&d, "x", "/tmp/count"),
        10,
        "the exec was cut short"
    );
    d.docker(DOCKER, &["rm", "-f", "x"]);
}

/// `docker exec --privileged` gives the command every capability while the container
/// keeps Docker's default set (it was refused); `pier exec --privileged` too. The
/// container's seccomp profile applies to it, as in Docker.
#[test]
#[ignore = "root tier: needs root; scripts/test.sh runs it (--run-ignored all)"]
fn exec_privileged_has_every_capability() {
    let d = with_busybox(&[]);
    let (code, _, err) =
        outcome(&d.docker(DOCKER, &["run", "-d", "--name", "p", "bb", "sleep", "1000"]));
    assert_eq!(code, 0, "{err}");
    let cap_eff = |args: &[&str]| {
        let (code, out, err) = outcome(&d.docker(DOCKER, args));
        assert_eq!(code, 0, "{err}");
        out.lines()
            .find_map(|l| l.strip_prefix("CapEff:"))
            .map(|v| u64::from_str_radix(v.trim(), 16).unwrap())
            .unwrap_or_else(|| panic!("no CapEff in {out}"))
    };
    let plain = cap_eff(&["exec", "p", "cat", "/proc/self/status"]);
    let privileged = cap_eff(&["exec", "--privileged", "p", "cat", "/proc/self/status"]);
    assert_eq!(plain, 0xa80425fb, "Docker's default set: {plain:x}");
    assert!(
        privileged.count_ones() >= 40,
        "every capability: {privileged:x}"
    );
    // As Docker's, the container's seccomp profile stays: it was resolved against the
    // container's own capabilities, so what it gates on CAP_SYS_ADMIN stays refused.
    let out = d.ok(&[
        "exec",
        "--privileged",
        "p",
        "grep",
        "CapEff",
        "/proc/self/status",
    ]);
    assert_eq!(
        out.trim(),
        format!("CapEff:\t{privileged:016x}"),
        "pier exec --privileged as docker's"
    );
    d.docker(DOCKER, &["rm", "-f", "p"]);
}
