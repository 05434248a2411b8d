//! Exec: Docker makes an exec instance (`POST /containers/{id}/exec`), starts it
//! (`POST /exec/{id}/start`, hijacked unless detached), resizes its terminal and reads its
//! exit code (`GET /exec/{id}/json`). The sessions are the engine's
//! (`pier_engine::sessions::exec`, which also says how long they are kept); this layer
//! translates Docker's parameters, messages and framing.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Request};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use pier_engine::sessions::{ExecError, StartOptions};
use serde_json::json;
use tokio::io::AsyncReadExt;

use super::params::Params;
use super::streams::{hijack, Conn};
use super::{container, json, DResult, DState, Docker, DockerError};
use crate::api::Ctx;
use pier_api::docker::exec::{inspect_json, ExecConfig, ExecStartConfig};

pub fn routes() -> Router<Arc<Docker>> {
    Router::new()
        .route("/containers/{id}/exec", post(create))
        .route("/exec/{id}/start", post(start))
        .route("/exec/{id}/resize", post(resize))
        .route("/exec/{id}/json", get(inspect))
}

/// An engine refusal in Docker's words; `No such exec instance` for an unknown ID.
fn refused(e: ExecError) -> DockerError {
    match e {
        ExecError::NoSuchExec(id) => DockerError::not_found(format!("No such exec instance: {id}")),
        e => pier_engine::EngineError::from(e).into(),
    }
}

/// `POST /containers/{id}/exec`.
async fn create(
    Ctx(ctx): Ctx,
    state: DState,
    Path(id): Path<String>,
    body: Bytes,
) -> DResult<Response> {
    let d = state.0;
    let b: ExecConfig = serde_json::from_slice(&body)
        .map_err(|e| DockerError::bad_request(format!("invalid exec config: {e}")))?;
    let c = container(&d, &id, &ctx)?;
    let spec = b.into_spec()?;
    let exec_id = d
        .engine
        .instances
        .exec_create(&ctx, &c.id, spec)
        .map_err(|e| match e {
            ExecError::NotRunning { id, .. } => {
                DockerError::conflict(format!("Container {id} is not running"))
            }
            ExecError::Paused { id, .. } => DockerError::conflict(format!(
                "Container {id} is paused, unpause the container before exec"
            )),
            ExecError::NoCommand => DockerError::bad_request("No exec command specified"),
            e => refused(e),
        })?;
    Ok(json(StatusCode::CREATED, json!({"Id": exec_id})))
}

/// `POST /exec/{id}/start`: detached, or hijacked with the command's stdio.
async fn start(
    Ctx(ctx): Ctx,
    state: DState,
    Path(id): Path<String>,
    req: Request,
) -> DResult<Response> {
    let d = state.0;
    let containers = &d.engine.instances;
    let info = containers.exec_inspect(&ctx, &id).map_err(refused)?;
    let (parts, body) = req.into_parts();
    let bytes = axum::body::to_bytes(body, 1 << 20)
        .await
        .map_err(|err| DockerError::bad_request(format!("invalid request body: {err}")))?;
    let b: ExecStartConfig = if bytes.iter().all(|b| b.is_ascii_whitespace()) {
        ExecStartConfig::default()
    } else {
        serde_json::from_slice(&bytes)
            .map_err(|err| DockerError::bad_request(format!("invalid exec start config: {err}")))?
    };
    let detach = b.detach.unwrap_or(false);
    // Attached, the command runs once the client's stream is ready, as Docker's starts
    // after its answer's headers: output right behind them would be lost to clients that
    // read the headers through a buffer (docker-py).
    let (ready, gate) = tokio::sync::oneshot::channel();
    let opts = StartOptions {
        detach,
        gate: (!detach).then_some(gate),
        ..Default::default()
    };
    let io = containers
        .exec_start(&ctx, &id, opts)
        .map_err(|e| match e {
            ExecError::Engine(e) if e.kind() == pier_api::ErrorKind::NotFound => {
                DockerError::not_found(format!("No such container: {}", info.container_id))
            }
            e => refused(e),
        })?;
    if detach {
        return Ok(StatusCode::OK.into_response());
    }
    let request = Request::from_parts(parts, axum::body::Body::empty());
    // The framing is the start request's, as Docker's: raw with `Tty`, else 8-byte
    // headers (all on stdout when the command has a terminal), whatever the create said.
    let tty = b.tty.unwrap_or(false);
    let interactive = info.spec.stdin;
    Ok(hijack(request, tty, move |conn| async move {
        let Conn { input, mut output } = conn;
        let _ = ready.send(());
        let typer = input.filter(|_| interactive).map(|mut input| {
            let to = io.input.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 32 * 1024];
                loop {
                    match input.read(&mut buf).await {
                        Ok(0) | Err(_) => {
                            to.close_stdin().await;
                            return;
                        }
                        Ok(n) => {
                            if !to.stdin(&buf[..n]).await {
                                return;
                            }
                        }
                    }
                }
            })
        });
        if let Some(mut chunks) = io.output {
            while let Some(c) = chunks.recv().await {
                if !output.chunk(tty, c.stream.number(), &c.data).await {
                    // Nobody reads any more: dropping the output ends the command, as
                    // Docker does.
                    break;
                }
            }
        }
        // The end of the command, or a detach (the command runs on).
        let (mut exit, mut detached) = (io.exit, io.detached);
        tokio::select! {
            _ = exit.wait_for(|c| c.is_some()) => {}
            _ = detached.wait() => {}
        }
        if let Some(t) = typer {
            t.abort();
        }
        output.close().await;
    }))
}

/// `POST /exec/{id}/resize?h=&w=`.
async fn resize(
    Ctx(ctx): Ctx,
    state: DState,
    Path(id): Path<String>,
    p: Params,
) -> DResult<Response> {
    let d = state.0;
    let containers = &d.engine.instances;
    containers.exec_inspect(&ctx, &id).map_err(refused)?;
    let (h, w) = match (p.num::<u16>("h")?, p.num::<u16>("w")?) {
        (Some(h), Some(w)) => (h, w),
        _ => {
            return Err(DockerError::bad_request(
                "give the size as ?h=ROWS&w=COLUMNS",
            ))
        }
    };
    containers.exec_resize(&ctx, &id, h, w).map_err(refused)?;
    Ok(StatusCode::OK.into_response())
}

/// `GET /exec/{id}/json`.
async fn inspect(Ctx(ctx): Ctx, state: DState, Path(id): Path<String>) -> DResult<Response> {
    let d = state.0;
    let e = d
        .engine
        .instances
        .exec_inspect(&ctx, &id)
        .map_err(refused)?;
    Ok(json(StatusCode::OK, inspect_json(&e)))
}
