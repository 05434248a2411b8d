//! The native API's terminals over a websocket, for any client (a browser among them):
//! `GET /v1/containers/{id}/exec/ws` runs a command in a running container, and
//! `GET /v1/containers/{id}/console/ws` is a VM's serial console. The protocol (binary
//! frames for the bytes, JSON text frames to resize and, last, for the exit code) is
//! [`pier_api::terminal`]'s; the sessions are the engine's (`exec_create`/`exec_start`,
//! the same as `POST /v1/containers/{id}/exec`, and `console`). This module only moves
//! frames between the socket and a session.
//!
//! Refusals come before the upgrade, as the API's usual JSON errors: 400 for a bad query
//! or a request that is not a websocket, 404 for an unknown instance, 409 when it is not
//! running.
//!
//! Closing the socket hangs up the command, as closing a terminal's window does: its
//! helper is ended, its terminal closes and the shell on it gets SIGHUP (Docker's exec
//! would leave it running, unreachable: there is no way back into an exec). To leave a
//! command running, type the detach keys (ctrl-p ctrl-q unless `detach_keys` names
//! others): the server then sends `{"detached":true}` and closes, and the command runs on.
//! A VM's console stays as it was: the VM runs on.

use std::sync::Arc;

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, RawQuery, State};
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use futures_util::{SinkExt, Stream, StreamExt};
use pier_api::containers::ContainerStatus;
use pier_api::terminal::{ExecWsQuery, TerminalControl, TerminalEnd, TerminalSize};
use pier_api::{ErrorBody, ErrorKind};
use pier_engine::sessions::{ExecIo, InputSender, StartOptions};
use utoipa::OpenApi;

use crate::api::{Ctx, Engine, Shared};
use crate::error::{ApiError, ApiResult};

pub fn routes() -> Router<Arc<Engine>> {
    Router::new()
        .route("/v1/containers/{id}/exec/ws", get(exec_ws))
        .route("/v1/containers/{id}/console/ws", get(console_ws))
}

#[derive(OpenApi)]
#[openapi(
    paths(exec_ws, console_ws),
    components(schemas(TerminalControl, TerminalEnd, TerminalSize))
)]
pub struct TerminalDoc;

/// Where a session's input goes.
trait Input {
    /// Passes bytes on; false when the session takes no more (it detached).
    async fn data(&mut self, bytes: &[u8]) -> bool;
    fn resize(&mut self, size: TerminalSize);
    async fn close(&mut self);
}

impl Input for InputSender {
    async fn data(&mut self, bytes: &[u8]) -> bool {
        self.stdin(bytes).await
    }
    fn resize(&mut self, size: TerminalSize) {
        InputSender::resize(self, size.rows, size.cols);
    }
    async fn close(&mut self) {
        self.close_stdin().await;
    }
}

/// A VM's console: bytes to its socket; it has no size and no end of input.
impl Input for tokio::net::unix::OwnedWriteHalf {
    async fn data(&mut self, bytes: &[u8]) -> bool {
        tokio::io::AsyncWriteExt::write_all(self, bytes)
            .await
            .is_ok()
    }
    fn resize(&mut self, _: TerminalSize) {}
    async fn close(&mut self) {}
}

/// Refuses a request that is not a websocket, in the API's words.
fn upgrade(ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>) -> ApiResult<WebSocketUpgrade> {
    ws.map_err(|r| {
        ApiError::invalid(format!(
            "this endpoint is a websocket ({r}): connect with a websocket client (GET with Upgrade: websocket)"
        ))
    })
}

/// Runs a command in a running container over a websocket: binary frames carry its input
/// and output (raw with a terminal, both outputs interleaved without one), text frames
/// `{"resize":{"cols":C,"rows":R}}` and `{"close_stdin":true}` from the client, and a last
/// text frame `{"exit_code":N}` (or `{"detached":true}`) before the server closes. Closing
/// the socket hangs the command up.
#[utoipa::path(get, path = "/v1/containers/{id}/exec/ws", params(("id" = String, Path), ExecWsQuery),
    responses((status = 101, description = "Switched to the websocket; see pier_api::terminal for its frames"),
        (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn exec_ws(
    Ctx(ctx): Ctx,
    State(e): Shared,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> ApiResult<Response> {
    let q = ExecWsQuery::parse(query.as_deref().unwrap_or(""))
        .map_err(|err| ApiError::invalid(err.to_string()))?;
    let c = e.instances.get(&ctx, &id)?;
    if !matches!(c.state.status, ContainerStatus::Running) {
        return Err(ApiError::new(
            ErrorKind::Conflict,
            format!("container {} is not running; start it first", c.name),
        ));
    }
    let ws = upgrade(ws)?;
    let engine_err = |err| ApiError::from(pier_engine::EngineError::from(err));
    let exec_id = e
        .instances
        .exec_create(&ctx, &c.id, q.spec())
        .map_err(engine_err)?;
    // The command starts once the socket is up (none of its output is lost), and never
    // if the upgrade fails. A client that goes away ends it.
    let (open, gate) = tokio::sync::oneshot::channel();
    let io = e
        .instances
        .exec_start(
            &ctx,
            &exec_id,
            StartOptions {
                gate: Some(gate),
                ends_unread: true,
                ..Default::default()
            },
        )
        .map_err(engine_err)?;
    let size = q.size();
    io.input.resize(size.rows, size.cols);
    Ok(ws.on_upgrade(move |socket| async move {
        let _ = open.send(());
        serve_exec(socket, io).await;
    }))
}

async fn serve_exec(socket: WebSocket, io: ExecIo) {
    let ExecIo {
        output,
        input,
        exit,
        detached,
        ..
    } = io;
    let Some(output) = output else { return };
    let output = futures_util::stream::unfold(output, |mut rx| async move {
        rx.recv().await.map(|c| (c.data, rx))
    });
    let end = async move {
        if detached.is_detached() {
            return Some(TerminalEnd {
                detached: true,
                ..Default::default()
            });
        }
        let mut exit = exit;
        let code = exit.wait_for(|c| c.is_some()).await.ok().and_then(|c| *c);
        Some(TerminalEnd {
            exit_code: Some(code.unwrap_or(255)),
            ..Default::default()
        })
    };
    serve(socket, input, output, end).await;
}

/// A VM's serial console over a websocket: binary frames both ways (text frames are
/// taken as input too, but for the JSON ones of `exec/ws`, whose resize a serial
/// console ignores). The server closes the socket when the console ends; closing it
/// leaves the VM running.
#[utoipa::path(get, path = "/v1/containers/{id}/console/ws", params(("id" = String, Path)),
    responses((status = 101, description = "Switched to the websocket of the VM's serial console"),
        (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn console_ws(
    Ctx(ctx): Ctx,
    State(e): Shared,
    Path(id): Path<String>,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> ApiResult<Response> {
    e.instances.get(&ctx, &id)?;
    let ws = upgrade(ws)?;
    let sock = e.instances.console(&ctx, &id).await?;
    Ok(ws.on_upgrade(move |socket| async move {
        let (r, w) = sock.into_split();
        let output = tokio_util::io::ReaderStream::new(r)
            .take_while(|r| std::future::ready(r.is_ok()))
            .map(|r| r.map(|b| b.to_vec()).unwrap_or_default());
        serve(socket, w, output, async { None }).await;
    }))
}

/// Moves frames between `socket` and a session until the session's output ends (then
/// sends `end`, if any, and closes) or the client goes (then drops the session).
async fn serve(
    socket: WebSocket,
    mut input: impl Input,
    output: impl Stream<Item = Vec<u8>>,
    end: impl std::future::Future<Output = Option<TerminalEnd>>,
) {
    let (mut sink, mut from_client) = socket.split();
    let (err_tx, mut err_rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let reader = async {
        let mut taking = true;
        while let Some(Ok(m)) = from_client.next().await {
            match m {
                Message::Binary(b) if taking => taking = input.data(&b).await,
                Message::Text(t) => match serde_json::from_str::<TerminalControl>(&t) {
                    Ok(c) => {
                        if let Some(size) = c.resize {
                            input.resize(size);
                        }
                        if c.close_stdin {
                            input.close().await;
                        }
                    }
                    Err(err) => {
                        let _ = err_tx.send(format!(
                            "a text frame is a JSON control, {{\"resize\":{{\"cols\":C,\"rows\":R}}}} or {{\"close_stdin\":true}}; send input as binary frames ({err})"
                        ));
                    }
                },
                Message::Close(_) => break,
                _ => {}
            }
        }
    };
    let writer = async {
        let mut output = std::pin::pin!(output);
        loop {
            tokio::select! {
                chunk = output.next() => match chunk {
                    Some(data) => {
                        if sink.send(Message::Binary(data.into())).await.is_err() {
                            return;
                        }
                    }
                    None => break,
                },
                Some(err) = err_rx.recv() => {
                    let note = TerminalEnd { error: Some(err), ..Default::default() };
                    let text = serde_json::to_string(&note).expect("json");
                    if sink.send(Message::Text(text.into())).await.is_err() {
                        return;
                    }
                }
            }
        }
        if let Some(end) = end.await {
            let text = serde_json::to_string(&end).expect("json");
            let _ = sink.send(Message::Text(text.into())).await;
        }
        // The client answers the close with its own, which ends the reader (and this);
        // one that does not answer gets 2 seconds.
        let _ = sink.send(Message::Close(None)).await;
        tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    };
    tokio::select! {
        _ = reader => {}
        _ = writer => {}
    }
}
