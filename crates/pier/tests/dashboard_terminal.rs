//! Root tier: the terminal in the browser and the native API it stands on.
//! - `GET /v1/containers/{id}/exec/ws` with a websocket client (tungstenite) on the API
//!   socket: input reaches the command and its output comes back, a resize reaches its
//!   terminal (`stty size`), the exit code is the last frame; closing the socket hangs
//!   the command up, the detach keys leave it running; the refusals are JSON errors.
//! - The dashboard's terminal page in a real browser (`common::browser`): type a command,
//!   read its answer on the screen, exit and see the code. Screenshots are kept in
//!   `target/dashboard-screenshots/dashboard-terminal/`.

mod common;

use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use common::*;
use tungstenite::client::IntoClientRequest;
use tungstenite::{Message, WebSocket};

const ADDR: &str = "127.0.0.1:9451";

type Ws = WebSocket<UnixStream>;

/// Opens `path` (with its query) as a websocket on the daemon's API socket; Err: the
/// refusal's status and body.
fn ws(d: &Daemon, path: &str) -> Result<Ws, (u16, String)> {
    let s = UnixStream::connect(&d.socket).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let req = format!("ws://pier{path}").into_client_request().unwrap();
    match tungstenite::client::client(req, s) {
        Ok((ws, _)) => Ok(ws),
        Err(tungstenite::HandshakeError::Failure(tungstenite::Error::Http(r))) => Err((
            r.status().as_u16(),
            String::from_utf8_lossy(r.body().as_deref().unwrap_or_default()).into_owned(),
        )),
        Err(e) => panic!("websocket handshake to {path}: {e}"),
    }
}

/// What the session sent: its output bytes (as text) and its text frames.
#[derive(Default)]
struct Got {
    output: String,
    texts: Vec<String>,
    closed: bool,
}

/// Reads frames until `done` holds (or the socket closes), for at most 20 seconds.
fn read_until(ws: &mut Ws, got: &mut Got, done: impl Fn(&Got) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done(got) && !got.closed {
        assert!(
            Instant::now() < deadline,
            "timed out; output so far: {:?}, text frames: {:?}",
            got.output,
            got.texts
        );
        match ws.read() {
            Ok(Message::Binary(b)) => got.output += &String::from_utf8_lossy(&b),
            Ok(Message::Text(t)) => got.texts.push(t.to_string()),
            Ok(Message::Close(_)) => got.closed = true,
            Ok(_) => {}
            Err(tungstenite::Error::Io(e))
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(tungstenite::Error::ConnectionClosed) => got.closed = true,
            Err(e) => panic!("reading the websocket: {e}; output so far: {:?}", got.output),
        }
    }
}

fn send(ws: &mut Ws, bytes: &[u8]) {
    ws.send(Message::binary(bytes.to_vec())).unwrap();
}

/// The processes of container `name` whose command line is `cmd`.
fn processes(d: &Daemon, name: &str, cmd: &str) -> usize {
    d.ok(&["exec", name, "ps", "-o", "args"])
        .lines()
        .filter(|l| l.trim() == cmd)
        .count()
}

#[test]
#[ignore = "root tier: needs root; scripts/test.sh runs it (--run-ignored all)"]
fn exec_over_a_websocket_passes_input_output_resizes_and_the_exit_code() {
    let d = with_busybox(&[]);
    let name = "term-api";
    d.ok(&["run", "-d", "--name", name, "bb", "sleep", "600"]);
    let path = format!("/v1/containers/{name}/exec/ws?cmd=/bin/sh&cols=100&rows=30");

    // Input in, output out, on a terminal of the asked size.
    let mut s = ws(&d, &path).unwrap();
    let mut got = Got::default();
    send(&mut s, b"stty size; echo answer=$((6*7))\r");
    read_until(&mut s, &mut got, |g| g.output.contains("answer=42"));
    assert!(got.output.contains("30 100"), "{:?}", got.output);
    // A resize reaches the terminal.
    s.send(Message::text(r#"{"resize":{"cols":132,"rows":50}}"#))
        .unwrap();
    send(&mut s, b"stty size\r");
    read_until(&mut s, &mut got, |g| g.output.contains("50 132"));
    // A text frame that is not a control is refused, and the session goes on.
    s.send(Message::text("ls\r")).unwrap();
    read_until(&mut s, &mut got, |g| !g.texts.is_empty());
    assert!(
        got.texts[0].contains("send input as binary frames"),
        "{:?}",
        got.texts
    );
    // The exit code is the last frame, then the server closes.
    send(&mut s, b"exit 3\r");
    read_until(&mut s, &mut got, |g| g.closed);
    assert_eq!(
        got.texts.last().map(String::as_str),
        Some(r#"{"exit_code":3}"#),
        "{:?}",
        got.output
    );

    // Without a terminal: both outputs, input to the end (close_stdin), the exit code.
    let mut s = ws(
        &d,
        &format!("/v1/containers/{name}/exec/ws?tty=false&cmd=sh&cmd=-c&cmd=cat%3Becho+err+1%3E%262%3Bexit+5"),
    )
    .unwrap();
    let mut got = Got::default();
    send(&mut s, b"piped-in\n");
    s.send(Message::text(r#"{"close_stdin":true}"#)).unwrap();
    read_until(&mut s, &mut got, |g| g.closed);
    assert!(got.output.contains("piped-in\n"), "{:?}", got.output);
    assert!(got.output.contains("err\n"), "{:?}", got.output);
    assert_eq!(got.texts, [r#"{"exit_code":5}"#]);

    // Closing the socket hangs the command up.
    let mut s = ws(&d, &format!("/v1/containers/{name}/exec/ws?cmd=sleep&cmd=4242")).unwrap();
    wait_until("the command runs", || processes(&d, name, "sleep 4242") == 1);
    s.close(None).unwrap();
    let _ = s.flush();
    drop(s);
    wait_until("the command is hung up", || {
        processes(&d, name, "sleep 4242") == 0
    });
    // The detach keys leave it running.
    let mut s = ws(&d, &format!("/v1/containers/{name}/exec/ws?cmd=sleep&cmd=4343")).unwrap();
    wait_until("the command runs", || processes(&d, name, "sleep 4343") == 1);
    send(&mut s, b"\x10\x11");
    let mut got = Got::default();
    read_until(&mut s, &mut got, |g| g.closed);
    assert_eq!(got.texts, [r#"{"detached":true}"#]);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(processes(&d, name, "sleep 4343"), 1, "it runs on");

    // Refusals, before the upgrade, as JSON errors.
    let refused = |path: &str| ws(&d, path).err().expect("refused");
    let (code, body) = refused("/v1/containers/nosuch/exec/ws?cmd=sh");
    assert_eq!(code, 404, "{body}");
    assert!(body.contains("nosuch"), "{body}");
    let (code, body) = refused(&format!("/v1/containers/{name}/exec/ws"));
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("?cmd="), "{body}");
    let (code, body) = refused(&format!("/v1/containers/{name}/exec/ws?cmd=sh&rows=0"));
    assert_eq!(code, 400, "{body}");
    // A plain request is told to use a websocket.
    let out = d
        .in_netns("curl")
        .args(["-s", "--unix-socket"])
        .arg(&d.socket)
        .arg(format!("http://pier/v1/containers/{name}/exec/ws?cmd=sh"))
        .output()
        .unwrap();
    let body = String::from_utf8_lossy(&out.stdout);
    assert!(body.contains("this endpoint is a websocket"), "{body}");
    d.ok(&["stop", "-t", "1", name]);
    let (code, body) = refused(&format!("/v1/containers/{name}/exec/ws?cmd=sh"));
    assert_eq!(code, 409, "{body}");
    assert!(body.contains("is not running; start it first"), "{body}");
    d.ok(&["rm", "-f", name]);
}
