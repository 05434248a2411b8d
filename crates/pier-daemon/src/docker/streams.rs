//! The streaming container calls: attach (hijacked), logs, wait, and terminal resizes.
//!
//! Docker clients attach *before* they start a container, so an attach waits for the next
//! start. Output without a terminal comes from the container's log file (which holds every
//! byte from the first, however late the attach is) framed in Docker's 8-byte headers;
//! with a terminal it comes from the monitor's socket, whose first client gets what was
//! written before it connected. Input goes to the monitor's socket once the container runs.
//!
//! ```text
//! attach ──101──> wait for the start ──> input:  client ──STDIN frames──> monitor
//!                                    └─> output: log (no TTY) / monitor (TTY) ──> client
//!                                          ends when the container stops
//! ```

use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Path, Request};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use pier_api::containers::{ContainerInspect, ContainerState, ContainerStatus, LogLine};
use pier_runtime::attach as proto;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, watch};

use super::params::{parse_time, Params};
use super::{container, DResult, DState, Docker, DockerError};
use crate::api::project;

pub fn routes() -> Router<Arc<Docker>> {
    Router::new()
        .route("/containers/{id}/attach", post(attach))
        .route("/containers/{id}/logs", axum::routing::get(logs))
        .route("/containers/{id}/wait", post(wait))
        .route("/containers/{id}/resize", post(resize))
}

/// Where the resizes of an attached terminal session go.
pub struct TtyHandle {
    session: u64,
    tx: mpsc::UnboundedSender<(u16, u16)>,
}

/// The client's side of a hijacked connection: what it sends (absent when it did not ask
/// for an upgrade), and where its output goes.
pub struct Conn {
    pub input: Option<Box<dyn AsyncRead + Send + Unpin>>,
    pub output: Output,
}

/// Output to a client: the upgraded connection, or the body of a plain answer.
pub enum Output {
    Upgraded(Box<dyn AsyncWrite + Send + Unpin>),
    Body(mpsc::Sender<Result<Bytes, std::io::Error>>),
}

impl Output {
    /// Writes; false when the client is gone.
    pub async fn write(&mut self, data: &[u8]) -> bool {
        match self {
            Output::Upgraded(w) => w.write_all(data).await.is_ok() && w.flush().await.is_ok(),
            Output::Body(tx) => tx.send(Ok(Bytes::copy_from_slice(data))).await.is_ok(),
        }
    }

    /// One chunk of a stream: as it is with a terminal, else with Docker's header.
    pub async fn chunk(&mut self, tty: bool, kind: u8, data: &[u8]) -> bool {
        if tty {
            self.write(data).await
        } else {
            let mut v = proto::docker_header(kind, data.len()).to_vec();
            v.extend_from_slice(data);
            self.write(&v).await
        }
    }

    pub async fn close(self) {
        match self {
            Output::Upgraded(mut w) => {
                let _ = w.shutdown().await;
            }
            Output::Body(tx) => drop(tx),
        }
    }
}

/// Answers a request that Docker hijacks: `101 UPGRADED` when the client asked for an
/// upgrade (then `session` runs on the raw connection), otherwise a streamed body of the
/// output alone.
pub fn hijack<F, Fut>(req: Request, tty: bool, session: F) -> Response
where
    F: FnOnce(Conn) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let content_type = if tty {
        "application/vnd.docker.raw-stream"
    } else {
        "application/vnd.docker.multiplexed-stream"
    };
    let wants_upgrade = req
        .headers()
        .get(header::UPGRADE)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"tcp"));
    if wants_upgrade {
        let on_upgrade = hyper::upgrade::on(req);
        tokio::spawn(async move {
            let Ok(upgraded) = on_upgrade.await else {
                return;
            };
            let (r, w) = tokio::io::split(hyper_util::rt::TokioIo::new(upgraded));
            session(Conn {
                input: Some(Box::new(r)),
                output: Output::Upgraded(Box::new(w)),
            })
            .await;
        });
        return Response::builder()
            .status(StatusCode::SWITCHING_PROTOCOLS)
            .header(header::CONNECTION, "Upgrade")
            .header(header::UPGRADE, "tcp")
            .header(header::CONTENT_TYPE, content_type)
            .body(Body::empty())
            .expect("a valid response");
    }
    let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(16);
    tokio::spawn(session(Conn {
        input: None,
        output: Output::Body(tx),
    }));
    let stream =
        futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|x| (x, rx)) });
    (
        [(header::CONTENT_TYPE, content_type)],
        Body::from_stream(stream),
    )
        .into_response()
}

fn running(s: &ContainerState) -> bool {
    matches!(s.status, ContainerStatus::Running | ContainerStatus::Paused)
}

/// Which run of a container a stream follows: the current one if it runs, else the next.
#[derive(Clone)]
struct Run {
    was_running: bool,
    finished_before: Option<String>,
}

impl Run {
    fn of(c: &ContainerInspect) -> Run {
        Run {
            was_running: running(&c.state),
            finished_before: c.state.finished_at.clone(),
        }
    }

    /// Has the followed run ended?
    fn ended(&self, s: &ContainerState) -> bool {
        if running(s) {
            return false;
        }
        self.was_running || s.finished_at != self.finished_before
    }

    /// Waits until the followed run has started; false if it ended (or the container went)
    /// first.
    async fn started(&self, rx: &mut watch::Receiver<ContainerState>) -> bool {
        loop {
            {
                let s = rx.borrow_and_update();
                if running(&s) {
                    return true;
                }
                if self.ended(&s) || s.status == ContainerStatus::Removing {
                    return false;
                }
            }
            if rx.changed().await.is_err() {
                return false;
            }
        }
    }
}

/// Connects to a running container's monitor, retrying briefly (it may be exiting).
async fn connect_monitor(d: &Docker, id: &str) -> Option<tokio::net::UnixStream> {
    for _ in 0..20 {
        if let Ok(s) = proto::connect(&d.engine.containers.cdir(id)) {
            if s.set_nonblocking(true).is_ok() {
                if let Ok(s) = tokio::net::UnixStream::from_std(s) {
                    return Some(s);
                }
            }
        }
        let c = d.engine.containers.get(&project(), id).ok()?;
        if !running(&c.state) {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    None
}

fn stream_kind(l: &LogLine) -> u8 {
    if l.stream == "stderr" {
        proto::STDERR
    } else {
        proto::STDOUT
    }
}

/// `POST /containers/{id}/attach?stream=&stdin=&stdout=&stderr=&logs=`.
async fn attach(
    state: DState,
    Path(id): Path<String>,
    p: Params,
    req: Request,
) -> DResult<Response> {
    let d = state.0;
    let c = container(&d, &id)?;
    let (want_in, want_out, want_err) = (p.bool("stdin"), p.bool("stdout"), p.bool("stderr"));
    let (stream, with_logs) = (p.bool("stream"), p.bool("logs"));
    let tty = c.config.tty;
    let (past, follower) = d.engine.containers.logs(&c, None, None);
    let past = if with_logs { past } else { Vec::new() };
    let rx = d.engine.containers.state_watch(&c);
    let run = Run::of(&c);
    let wanted = move |k: u8| (k == proto::STDOUT && want_out) || (k == proto::STDERR && want_err);
    let stdin = want_in && c.config.interactive;
    Ok(hijack(req, tty, move |conn| async move {
        let Conn { input, mut output } = conn;
        for l in &past {
            let k = stream_kind(l);
            if wanted(k) && !output.chunk(tty, k, l.log.as_bytes()).await {
                return;
            }
        }
        if !stream {
            output.close().await;
            return;
        }
        if tty {
            tty_session(d, c, rx, run, input.filter(|_| stdin), output, follower).await;
        } else {
            let input = input.filter(|_| stdin);
            log_session(d, c, rx, run, input, output, follower, wanted).await;
        }
    }))
}

/// Passes the client's input to the container once it runs; closes the container's stdin
/// when the client half-closes. Reads (and drops) what the monitor sends.
async fn pump_input(
    d: Arc<Docker>,
    id: String,
    mut rx: watch::Receiver<ContainerState>,
    run: Run,
    mut input: Box<dyn AsyncRead + Send + Unpin>,
) {
    if !run.started(&mut rx).await {
        return;
    }
    let Some(sock) = connect_monitor(&d, &id).await else {
        return;
    };
    let (mut mr, mut mw) = sock.into_split();
    tokio::spawn(async move {
        let mut sink = vec![0u8; 64 * 1024];
        while matches!(mr.read(&mut sink).await, Ok(n) if n > 0) {}
    });
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        match input.read(&mut buf).await {
            Ok(0) | Err(_) => {
                let _ = mw.write_all(&proto::frame(proto::CLOSE_STDIN, b"")).await;
                // Kept open: the container's output goes on after its input ends.
                std::future::pending::<()>().await;
            }
            Ok(n) => {
                if mw
                    .write_all(&proto::frame(proto::STDIN, &buf[..n]))
                    .await
                    .is_err()
                {
                    return;
                }
            }
        }
    }
}

/// Attach without a terminal: output from the log until the followed run ends.
#[allow(clippy::too_many_arguments)]
async fn log_session(
    d: Arc<Docker>,
    c: ContainerInspect,
    mut rx: watch::Receiver<ContainerState>,
    run: Run,
    input: Option<Box<dyn AsyncRead + Send + Unpin>>,
    mut output: Output,
    mut follower: pier_engine::containers::LogFollower,
    wanted: impl Fn(u8) -> bool + Send,
) {
    let pump = input.map(|i| {
        tokio::spawn(pump_input(
            d.clone(),
            c.id.clone(),
            rx.clone(),
            run.clone(),
            i,
        ))
    });
    loop {
        let done = {
            let s = rx.borrow_and_update();
            run.ended(&s) || s.status == ContainerStatus::Removing
        };
        let gone = !done
            && tokio::select! {
                r = rx.changed() => r.is_err(),
                _ = tokio::time::sleep(Duration::from_millis(25)) => false,
            };
        for l in follower.read() {
            let k = stream_kind(&l);
            if wanted(k) && !output.chunk(false, k, l.log.as_bytes()).await {
                if let Some(p) = pump {
                    p.abort();
                }
                return;
            }
        }
        if done || gone {
            break;
        }
    }
    if let Some(p) = pump {
        p.abort();
    }
    output.close().await;
}

/// Attach with a terminal: the monitor's stream both ways, resizes through [`resize`].
async fn tty_session(
    d: Arc<Docker>,
    c: ContainerInspect,
    mut rx: watch::Receiver<ContainerState>,
    run: Run,
    input: Option<Box<dyn AsyncRead + Send + Unpin>>,
    mut output: Output,
    mut follower: pier_engine::containers::LogFollower,
) {
    // Resizes sent before the container runs wait in the channel.
    let (resize_tx, mut resize_rx) = mpsc::unbounded_channel::<(u16, u16)>();
    let session = rand_u64();
    d.ttys.lock().unwrap().insert(
        c.id.clone(),
        TtyHandle {
            session,
            tx: resize_tx,
        },
    );
    let forget = |d: &Docker| {
        let mut t = d.ttys.lock().unwrap();
        if t.get(&c.id).is_some_and(|h| h.session == session) {
            t.remove(&c.id);
        }
    };
    let sock = if run.started(&mut rx).await {
        connect_monitor(&d, &c.id).await
    } else {
        None
    };
    let Some(sock) = sock else {
        // It ran and ended before we could connect: its output is in the log.
        forget(&d);
        for l in follower.read() {
            if !output.write(l.log.as_bytes()).await {
                return;
            }
        }
        output.close().await;
        return;
    };
    let (mut mr, mw) = sock.into_split();
    let mw = Arc::new(tokio::sync::Mutex::new(mw));
    let resizer = {
        let mw = mw.clone();
        tokio::spawn(async move {
            while let Some((h, w)) = resize_rx.recv().await {
                if mw
                    .lock()
                    .await
                    .write_all(&proto::resize(h, w))
                    .await
                    .is_err()
                {
                    return;
                }
            }
        })
    };
    let typer = input.map(|mut input| {
        let mw = mw.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 32 * 1024];
            loop {
                match input.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => {
                        let f = proto::frame(proto::STDIN, &buf[..n]);
                        if mw.lock().await.write_all(&f).await.is_err() {
                            return;
                        }
                    }
                }
            }
        })
    });
    let mut buf = vec![0u8; 64 * 1024];
    let mut pending = Vec::new();
    'out: while let Ok(n) = mr.read(&mut buf).await {
        if n == 0 {
            break;
        }
        pending.extend_from_slice(&buf[..n]);
        let Ok(frames) = proto::parse(&mut pending) else {
            break;
        };
        for (_, payload) in frames {
            if !output.write(&payload).await {
                break 'out;
            }
        }
    }
    forget(&d);
    resizer.abort();
    if let Some(t) = typer {
        t.abort();
    }
    output.close().await;
}

fn rand_u64() -> u64 {
    u64::from_str_radix(&pier_engine::containers::short_random_id(), 16).unwrap_or(0)
}

/// `POST /containers/{id}/resize?h=&w=`.
async fn resize(state: DState, Path(id): Path<String>, p: Params) -> DResult<Response> {
    let d = state.0;
    let c = container(&d, &id)?;
    let (h, w) = match (p.num::<u16>("h")?, p.num::<u16>("w")?) {
        (Some(h), Some(w)) => (h, w),
        _ => {
            return Err(DockerError::bad_request(
                "give the size as ?h=ROWS&w=COLUMNS",
            ))
        }
    };
    if let Some(t) = d.ttys.lock().unwrap().get(&c.id) {
        let _ = t.tx.send((h, w));
        return Ok(StatusCode::OK.into_response());
    }
    if !running(&c.state) {
        return Err(DockerError::conflict(format!(
            "cannot resize container {}: it is not running",
            c.name
        )));
    }
    let Some(mut sock) = connect_monitor(&d, &c.id).await else {
        return Err(DockerError::conflict(format!(
            "cannot resize container {}: it is not running",
            c.name
        )));
    };
    sock.write_all(&proto::resize(h, w))
        .await
        .map_err(|e| DockerError::internal(format!("resize: {e}")))?;
    Ok(StatusCode::OK.into_response())
}

/// `POST /containers/{id}/wait?condition=not-running|next-exit|removed`. The headers go
/// out at once; the body when the condition is met.
async fn wait(state: DState, Path(id): Path<String>, p: Params) -> DResult<Response> {
    let d = state.0;
    let c = container(&d, &id)?;
    let (next_exit, removed) = match p.get("condition").unwrap_or("") {
        "" | "not-running" => (false, false),
        "next-exit" => (true, false),
        "removed" => (false, true),
        other => {
            return Err(DockerError::bad_request(format!(
                "invalid condition {other:?}: use not-running, next-exit or removed"
            )))
        }
    };
    let exit = d
        .engine
        .containers
        .wait(&project(), &c.id, next_exit, removed)?;
    let body = futures_util::stream::once(async move {
        let w = exit.await;
        let v = serde_json::json!({"StatusCode": w.exit_code, "Error": null});
        Ok::<_, std::io::Error>(serde_json::to_string(&v).expect("json") + "\n")
    });
    Ok((
        [(header::CONTENT_TYPE, "application/json")],
        Body::from_stream(body),
    )
        .into_response())
}

/// `GET /containers/{id}/logs?follow=&stdout=&stderr=&since=&until=&timestamps=&tail=`.
async fn logs(state: DState, Path(id): Path<String>, p: Params) -> DResult<Response> {
    let d = state.0;
    let c = container(&d, &id)?;
    let (out, err) = (p.bool("stdout"), p.bool("stderr"));
    if !out && !err {
        return Err(DockerError::bad_request(
            "Bad parameters: you must choose at least one stream",
        ));
    }
    let tail = match p.nonempty("tail") {
        None | Some("all") => None,
        Some(t) => match t.parse::<i64>() {
            Ok(n) if n < 0 => None,
            Ok(n) => Some(n as usize),
            Err(_) => {
                return Err(DockerError::bad_request(format!(
                    "invalid tail {t:?}: give a number or all"
                )))
            }
        },
    };
    let time = |k: &str| -> DResult<Option<f64>> {
        match p.nonempty(k) {
            None => Ok(None),
            Some(v) => parse_time(v).map(Some).ok_or_else(|| {
                DockerError::bad_request(format!(
                    "invalid {k} {v:?}: give Unix seconds or an RFC 3339 time"
                ))
            }),
        }
    };
    let since = time("since")?.filter(|s| *s > 0.0);
    let until = time("until")?.filter(|u| *u > 0.0);
    let (timestamps, follow, tty) = (p.bool("timestamps"), p.bool("follow"), c.config.tty);
    let (mut lines, mut follower) = d.engine.containers.logs(&c, None, None);
    let keep = move |l: &LogLine| {
        let t = pier_api::time::parse_rfc3339(&l.time).unwrap_or(0) as f64;
        let k = stream_kind(l);
        ((k == proto::STDOUT && out) || (k == proto::STDERR && err))
            && since.is_none_or(|s| t >= s.floor())
            && until.is_none_or(|u| t <= u)
    };
    lines.retain(|l| keep(l));
    if let Some(n) = tail {
        let skip = lines.len().saturating_sub(n);
        lines.drain(..skip);
    }
    let rx = d.engine.containers.state_watch(&c);
    let run = Run::of(&c);
    let follow = follow && run.was_running && until.is_none();
    let (tx, body_rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(64);
    tokio::spawn(async move {
        let mut output = Output::Body(tx);
        let fmt = |l: &LogLine| -> Vec<u8> {
            let mut v = Vec::new();
            if timestamps {
                v.extend_from_slice(l.time.as_bytes());
                v.push(b' ');
            }
            v.extend_from_slice(l.log.as_bytes());
            v
        };
        for l in &lines {
            if !output.chunk(tty, stream_kind(l), &fmt(l)).await {
                return;
            }
        }
        if !follow {
            return;
        }
        let mut rx = rx;
        loop {
            let done = {
                let s = rx.borrow_and_update();
                run.ended(&s) || s.status == ContainerStatus::Removing
            };
            let gone = !done
                && tokio::select! {
                    r = rx.changed() => r.is_err(),
                    _ = tokio::time::sleep(Duration::from_millis(50)) => false,
                };
            for l in follower.read() {
                if keep(&l) && !output.chunk(tty, stream_kind(&l), &fmt(&l)).await {
                    return;
                }
            }
            if done || gone {
                return;
            }
        }
    });
    let stream =
        futures_util::stream::unfold(
            body_rx,
            |mut rx| async move { rx.recv().await.map(|x| (x, rx)) },
        );
    let content_type = if tty {
        "application/vnd.docker.raw-stream"
    } else {
        "application/vnd.docker.multiplexed-stream"
    };
    Ok((
        [(header::CONTENT_TYPE, content_type)],
        Body::from_stream(stream),
    )
        .into_response())
}
