//! The streaming container calls: attach (hijacked), logs, wait, and terminal resizes.
//!
//! Docker clients attach *before* they start a container, so an attach waits for the next
//! start. Output without a terminal comes from the container's log (which holds every
//! byte from the first, however late the attach is) framed in Docker's 8-byte headers;
//! with a terminal it comes from the engine's attach session, whose first client gets
//! what was written before it connected. Input goes to the engine's attach session, which
//! passes it on once the container runs. This layer only translates: the sessions, the
//! log follow and the monitor are the engine's (`pier_engine::sessions`).
//!
//! ```text
//! attach ──101──> wait for the start ──> input:  client ──> engine attach
//!                                    └─> output: log (no TTY) / engine attach (TTY) ──> client
//!                                          ends when the container stops
//! ```

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Request};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use pier_api::containers::{ContainerInspect, ContainerStatus, LogLine};
use pier_engine::sessions::{
    AttachIo, AttachOptions, DetachKeys, Follow, InputSender, LogOptions, Stream,
};
use pier_engine::RequestContext;
use pier_runtime::attach as proto;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

use super::params::{parse_time_nanos, Params};
use super::{container, DResult, DState, Docker, DockerError};
use crate::api::Ctx;

pub fn routes() -> Router<Arc<Docker>> {
    Router::new()
        .route("/containers/{id}/attach", post(attach))
        .route("/containers/{id}/attach/ws", axum::routing::get(attach_ws))
        .route("/containers/{id}/logs", axum::routing::get(logs))
        .route("/containers/{id}/wait", post(wait))
        .route("/containers/{id}/resize", post(resize))
}

/// The client's side of a hijacked connection: what it sends (absent when it did not ask
/// for an upgrade), and where its output goes.
pub struct Conn {
    pub input: Option<Box<dyn AsyncRead + Send + Unpin>>,
    pub output: Output,
}

/// Output to a client: the upgraded connection, the body of a plain answer, or a
/// websocket (binary messages, never multiplexed).
pub enum Output {
    Upgraded(Box<dyn AsyncWrite + Send + Unpin>),
    Body(mpsc::Sender<Result<Bytes, std::io::Error>>),
    Ws(SplitSink<WebSocket, Message>),
}

impl Output {
    /// Writes; false when the client is gone.
    pub async fn write(&mut self, data: &[u8]) -> bool {
        match self {
            Output::Upgraded(w) => w.write_all(data).await.is_ok() && w.flush().await.is_ok(),
            Output::Body(tx) => tx.send(Ok(Bytes::copy_from_slice(data))).await.is_ok(),
            Output::Ws(ws) => ws
                .send(Message::Binary(Bytes::copy_from_slice(data)))
                .await
                .is_ok(),
        }
    }

    /// One chunk of a stream: as it is with a terminal, else with Docker's header.
    pub async fn chunk(&mut self, tty: bool, kind: u8, data: &[u8]) -> bool {
        if tty || matches!(self, Output::Ws(_)) {
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
            Output::Ws(mut ws) => {
                // The client answers a close with its own: give it the time to, before
                // the connection goes (or its answer meets a broken pipe).
                if ws.send(Message::Close(None)).await.is_ok() {
                    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                }
            }
        }
    }
}

/// How long after an upgraded answer's headers its stream begins.
const FIRST_OUTPUT_DELAY: std::time::Duration = std::time::Duration::from_millis(20);

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
            // docker-py reads the 101's headers through a buffered reader, then reads the
            // socket beneath it: bytes that arrived with the headers are lost. Docker's
            // first output comes a moment after its headers; so does Pier's.
            tokio::time::sleep(FIRST_OUTPUT_DELAY).await;
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

fn running(c: &ContainerInspect) -> bool {
    matches!(
        c.state.status,
        ContainerStatus::Running | ContainerStatus::Paused
    )
}

fn stream_kind(l: &LogLine) -> u8 {
    Stream::of_log(&l.stream).number()
}

/// What an attach serves, set up before the answer so that a start right after it is
/// seen: the log's lines, and the engine's session (input, and the live output of a
/// terminal).
struct Plan {
    lines: mpsc::Receiver<LogLine>,
    session: Option<AttachIo>,
    tty: bool,
    /// Whether the client's input goes to the container.
    stdin: bool,
    /// Which live outputs the client gets.
    stdout: bool,
    stderr: bool,
    /// The container keeps no log (log driver `none`): all its output is live.
    no_log: bool,
}

/// Reads `stream`, `stdin`, `stdout`, `stderr`, `logs` and `detachKeys` as Docker does.
async fn plan(d: &Docker, ctx: &RequestContext, c: &ContainerInspect, p: &Params) -> DResult<Plan> {
    let (want_in, want_out, want_err) = (p.bool("stdin"), p.bool("stdout"), p.bool("stderr"));
    let (stream, with_logs) = (p.bool("stream"), p.bool("logs"));
    let detach_keys = match p.nonempty("detachKeys") {
        None => None,
        Some(k) => Some(DetachKeys::parse(k).map_err(|_| {
            DockerError::bad_request(format!(
                "Invalid detach keys ({k}) provided: write them as ctrl-p,ctrl-q (single characters, DEL or ctrl-<a-z @ [ \\ ] ^ _>, comma-separated)"
            ))
        })?),
    };
    let tty = c.config.tty;
    let stdin = want_in && c.config.interactive;
    let containers = &d.engine.instances;
    // With log driver `none` there is no log: the output, live only, is the monitor's.
    let no_log = c.config.log_driver.as_deref() == Some("none");
    // Without a terminal the output, past and live, is the log's; with one, the past is
    // the log's and the live output the monitor's.
    let follow = if stream && !tty {
        Follow::Run
    } else {
        Follow::No
    };
    let lines = if no_log {
        mpsc::channel(1).1
    } else {
        containers.logs(
            ctx,
            &c.id,
            LogOptions {
                follow,
                tail: (!with_logs).then_some(0),
                stdout: want_out,
                stderr: want_err,
                ..Default::default()
            },
        )?
    };
    let session = if stream && (stdin || tty || no_log) {
        let opts = AttachOptions {
            stdin,
            wait_start: true,
            detach_keys,
        };
        Some(containers.attach(ctx, &c.id, opts).await?)
    } else {
        None
    };
    Ok(Plan {
        lines,
        session,
        tty,
        stdin,
        stdout: want_out,
        stderr: want_err,
        no_log,
    })
}

/// Where the client's input comes from.
enum ClientInput {
    Raw(Box<dyn AsyncRead + Send + Unpin>),
    Ws(SplitStream<WebSocket>),
}

/// Serves a planned attach until the container's output ends or the client detaches.
async fn serve(plan: Plan, input: Option<ClientInput>, mut output: Output) {
    let Plan {
        mut lines,
        session,
        tty,
        stdin,
        stdout,
        stderr,
        no_log,
    } = plan;
    let mut typer = None;
    let mut live = None;
    if let Some(s) = session {
        if let Some(i) = input.filter(|_| stdin) {
            typer = Some(tokio::spawn(pass_input(i, s.input, !tty)));
        }
        // Without a terminal the session only carries input: its output is dropped (the
        // log has it), unless there is no log. With one, it ends when the client detaches.
        live = (tty || no_log).then_some(s.output);
    }
    while let Some(l) = lines.recv().await {
        if !output.chunk(tty, stream_kind(&l), l.log.as_bytes()).await {
            if let Some(t) = typer {
                t.abort();
            }
            return;
        }
    }
    if let Some(mut live) = live {
        while let Some(chunk) = live.recv().await {
            let wanted = match chunk.stream {
                Stream::Stderr if !tty => stderr,
                _ => stdout,
            };
            if wanted && !output.chunk(tty, chunk.stream.number(), &chunk.data).await {
                break;
            }
        }
    }
    if let Some(t) = typer {
        t.abort();
    }
    output.close().await;
}

/// `POST /containers/{id}/attach?stream=&stdin=&stdout=&stderr=&logs=&detachKeys=`.
async fn attach(
    Ctx(ctx): Ctx,
    state: DState,
    Path(id): Path<String>,
    p: Params,
    req: Request,
) -> DResult<Response> {
    let d = state.0;
    let c = container(&d, &id, &ctx)?;
    let plan = plan(&d, &ctx, &c, &p).await?;
    Ok(hijack(req, plan.tty, move |conn| async move {
        let Conn { input, output } = conn;
        serve(plan, input.map(ClientInput::Raw), output).await;
    }))
}

/// `GET /containers/{id}/attach/ws?stream=&stdin=&stdout=&stderr=&logs=&detachKeys=`:
/// the same attach over a websocket, as Docker serves it: the output raw (never
/// multiplexed) in binary messages, the client's messages (text or binary) as input.
async fn attach_ws(
    Ctx(ctx): Ctx,
    state: DState,
    Path(id): Path<String>,
    p: Params,
    ws: WebSocketUpgrade,
) -> DResult<Response> {
    let d = state.0;
    let c = container(&d, &id, &ctx)?;
    let plan = plan(&d, &ctx, &c, &p).await?;
    Ok(ws.on_upgrade(move |socket| async move {
        let (sink, stream) = socket.split();
        serve(plan, Some(ClientInput::Ws(stream)), Output::Ws(sink)).await;
    }))
}

/// Passes the client's input to the container; when the client half-closes, closes the
/// container's stdin (with `close`) and keeps the session, whose output goes on.
async fn pass_input(input: ClientInput, to: InputSender, close: bool) {
    let ended = match input {
        ClientInput::Raw(mut input) => {
            let mut buf = vec![0u8; 32 * 1024];
            loop {
                match input.read(&mut buf).await {
                    Ok(0) | Err(_) => break true,
                    Ok(n) => {
                        if !to.stdin(&buf[..n]).await {
                            break false;
                        }
                    }
                }
            }
        }
        ClientInput::Ws(mut input) => loop {
            let data = match input.next().await {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => break true,
                Some(Ok(Message::Binary(b))) => b.to_vec(),
                Some(Ok(Message::Text(t))) => t.as_bytes().to_vec(),
                Some(Ok(_)) => continue,
            };
            if !to.stdin(&data).await {
                break false;
            }
        },
    };
    if ended && close {
        to.close_stdin().await;
        std::future::pending::<()>().await;
    }
}

/// `POST /containers/{id}/resize?h=&w=`.
async fn resize(
    Ctx(ctx): Ctx,
    state: DState,
    Path(id): Path<String>,
    p: Params,
) -> DResult<Response> {
    let d = state.0;
    let c = container(&d, &id, &ctx)?;
    let (h, w) = match (p.num::<u16>("h")?, p.num::<u16>("w")?) {
        (Some(h), Some(w)) => (h, w),
        _ => {
            return Err(DockerError::bad_request(
                "give the size as ?h=ROWS&w=COLUMNS",
            ))
        }
    };
    d.engine
        .instances
        .resize(&ctx, &c.id, h, w)
        .await
        .map_err(|e| match e.kind() {
            pier_api::ErrorKind::Conflict => DockerError::conflict(format!(
                "cannot resize container {}: it is not running",
                c.name
            )),
            _ => e.into(),
        })?;
    Ok(StatusCode::OK.into_response())
}

/// `POST /containers/{id}/wait?condition=not-running|next-exit|removed`. The headers go
/// out at once; the body when the condition is met.
async fn wait(
    Ctx(ctx): Ctx,
    state: DState,
    Path(id): Path<String>,
    p: Params,
) -> DResult<Response> {
    let d = state.0;
    let c = container(&d, &id, &ctx)?;
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
    let exit = d.engine.instances.wait(&ctx, &c.id, next_exit, removed)?;
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
async fn logs(
    Ctx(ctx): Ctx,
    state: DState,
    Path(id): Path<String>,
    p: Params,
) -> DResult<Response> {
    let d = state.0;
    let c = container(&d, &id, &ctx)?;
    // Docker's answer for a driver that keeps nothing (`--log-driver none`).
    if c.config.log_driver.as_deref() == Some("none") {
        return Err(DockerError::new(
            StatusCode::NOT_IMPLEMENTED,
            "configured logging driver does not support reading",
        ));
    }
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
    let time = |k: &str| -> DResult<Option<i64>> {
        match p.nonempty(k) {
            None => Ok(None),
            Some(v) => parse_time_nanos(v).map(Some).ok_or_else(|| {
                DockerError::bad_request(format!(
                    "invalid {k} {v:?}: give Unix seconds or an RFC 3339 time"
                ))
            }),
        }
    };
    let since = time("since")?.filter(|s| *s > 0);
    let until = time("until")?.filter(|u| *u > 0);
    let (timestamps, follow, tty) = (p.bool("timestamps"), p.bool("follow"), c.config.tty);
    let follow = if follow && running(&c) && until.is_none() {
        Follow::Current
    } else {
        Follow::No
    };
    // To the nanosecond, as Docker compares them with the lines' times.
    let mut lines = d.engine.instances.logs(
        &ctx,
        &c.id,
        LogOptions {
            follow,
            tail,
            since_ns: since,
            until_ns: until,
            stdout: out,
            stderr: err,
        },
    )?;
    let (tx, body_rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(64);
    tokio::spawn(async move {
        let mut output = Output::Body(tx);
        while let Some(l) = lines.recv().await {
            let mut v = Vec::new();
            if timestamps {
                v.extend_from_slice(l.time.as_bytes());
                v.push(b' ');
            }
            v.extend_from_slice(l.log.as_bytes());
            if !output.chunk(tty, stream_kind(&l), &v).await {
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
