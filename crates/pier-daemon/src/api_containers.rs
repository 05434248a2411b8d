//! The container part of the native API (`/v1/containers/...`, `/v1/events`).

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use pier_api::containers::{
    ContainerCreate, ContainerInspect, ContainerRemoveQuery, ContainerStats, ContainerSummary,
    Created, Event, ExecCreate, ExecInspect, ExecOutput, KillQuery, ListQuery, LogsQuery,
    StopQuery, TopResponse, WaitResponse,
};
use pier_api::time::parse_rfc3339;
use pier_api::ErrorBody;
use serde::Deserialize;
use utoipa::{IntoParams, OpenApi};

use crate::api::{blocking, project, Engine, Shared};
use crate::error::{ApiError, ApiResult};

pub fn routes() -> Router<Arc<Engine>> {
    Router::new()
        .route("/v1/containers", get(list).post(create))
        .route("/v1/containers/prune", post(prune))
        .route("/v1/containers/{id}", get(inspect).delete(remove))
        .route("/v1/containers/{id}/start", post(start))
        .route("/v1/containers/{id}/stop", post(stop))
        .route("/v1/containers/{id}/restart", post(restart))
        .route("/v1/containers/{id}/kill", post(kill))
        .route("/v1/containers/{id}/wait", post(wait))
        .route("/v1/containers/{id}/pause", post(pause))
        .route("/v1/containers/{id}/unpause", post(unpause))
        .route("/v1/containers/{id}/rename", post(rename))
        .route("/v1/containers/{id}/logs", get(logs))
        .route("/v1/containers/{id}/exec", post(exec))
        .route("/v1/containers/{id}/attach", post(attach))
        .route("/v1/containers/{id}/resize", post(resize))
        .route("/v1/exec/{exec_id}", get(exec_inspect))
        .route("/v1/exec/{exec_id}/resize", post(exec_resize))
        .route("/v1/containers/{id}/stats", get(stats))
        .route("/v1/containers/{id}/top", get(top))
        .route("/v1/containers/{id}/changes", get(changes))
        .route("/v1/containers/{id}/export", get(export))
        .route("/v1/containers/{id}/commit", post(commit))
        .route(
            "/v1/containers/{id}/archive",
            get(archive_get).put(archive_put),
        )
        .route("/v1/events", get(events))
}

#[derive(OpenApi)]
#[openapi(
    paths(
        list,
        prune,
        create,
        inspect,
        remove,
        start,
        stop,
        restart,
        kill,
        wait,
        pause,
        unpause,
        rename,
        logs,
        exec,
        attach,
        resize,
        exec_inspect,
        exec_resize,
        stats,
        top,
        changes,
        export,
        commit,
        archive_get,
        archive_put,
        events
    ),
    components(schemas(
        ExecInspect,
        pier_api::containers::Change,
        pier_api::containers::CommitRequest,
        ContainerStats,
        pier_api::containers::InterfaceCounters,
        TopResponse,
        ExecCreate,
        ExecOutput,
        ContainerCreate,
        pier_api::containers::Healthcheck,
        pier_api::containers::Health,
        pier_api::containers::HealthStatus,
        pier_api::containers::HealthResult,
        ContainerInspect,
        ContainerSummary,
        Created,
        WaitResponse,
        Event,
        pier_api::containers::LogLine
    ))
)]
pub struct ContainersDoc;

/// Lists containers, newest first.
#[utoipa::path(get, path = "/v1/containers", params(ListQuery), responses((status = 200, body = [ContainerSummary])))]
async fn list(
    State(e): Shared,
    q: Result<Query<ListQuery>, QueryRejection>,
) -> ApiResult<Json<Vec<ContainerSummary>>> {
    let Query(q) = q?;
    Ok(Json(e.containers.list(
        &project(),
        q.all,
        q.filter.as_deref(),
    )?))
}

/// Creates a container from an image.
#[utoipa::path(post, path = "/v1/containers", request_body = ContainerCreate,
    responses((status = 201, body = Created), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn create(
    State(e): Shared,
    body: Result<Json<ContainerCreate>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<Created>)> {
    let Json(req) = body?;
    let c = e.containers.clone();
    let created = blocking(move || c.create(&project(), req).map_err(ApiError::from)).await?;
    Ok((StatusCode::CREATED, Json(created)))
}

/// Shows a container by ID, name or ID prefix.
#[utoipa::path(get, path = "/v1/containers/{id}", params(("id" = String, Path)), responses((status = 200, body = ContainerInspect), (status = 404, body = ErrorBody)))]
async fn inspect(State(e): Shared, Path(id): Path<String>) -> ApiResult<Json<ContainerInspect>> {
    Ok(Json(e.containers.get(&project(), &id)?))
}

/// Removes a container.
#[utoipa::path(delete, path = "/v1/containers/{id}", params(("id" = String, Path), ContainerRemoveQuery),
    responses((status = 204), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn remove(
    State(e): Shared,
    Path(id): Path<String>,
    q: Result<Query<ContainerRemoveQuery>, QueryRejection>,
) -> ApiResult<StatusCode> {
    let Query(q) = q?;
    e.containers
        .remove(&project(), &id, q.force, q.volumes)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Starts a created or exited container.
#[utoipa::path(post, path = "/v1/containers/{id}/start", params(("id" = String, Path)),
    responses((status = 204), (status = 400, body = ErrorBody, description = "the command could not be run"), (status = 404, body = ErrorBody)))]
async fn start(State(e): Shared, Path(id): Path<String>) -> ApiResult<StatusCode> {
    e.containers.start(&project(), &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Stops a container: its stop signal, then SIGKILL after `t` seconds.
#[utoipa::path(post, path = "/v1/containers/{id}/stop", params(("id" = String, Path), StopQuery), responses((status = 204), (status = 404, body = ErrorBody)))]
async fn stop(
    State(e): Shared,
    Path(id): Path<String>,
    q: Result<Query<StopQuery>, QueryRejection>,
) -> ApiResult<StatusCode> {
    let Query(q) = q?;
    e.containers
        .stop(&project(), &id, q.t, q.signal.as_deref())
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Stops, then starts a container.
#[utoipa::path(post, path = "/v1/containers/{id}/restart", params(("id" = String, Path), StopQuery), responses((status = 204), (status = 404, body = ErrorBody)))]
async fn restart(
    State(e): Shared,
    Path(id): Path<String>,
    q: Result<Query<StopQuery>, QueryRejection>,
) -> ApiResult<StatusCode> {
    let Query(q) = q?;
    e.containers
        .stop(&project(), &id, q.t, q.signal.as_deref())
        .await?;
    e.containers.start(&project(), &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Sends a signal to a container's init.
#[utoipa::path(post, path = "/v1/containers/{id}/kill", params(("id" = String, Path), KillQuery), responses((status = 204), (status = 409, body = ErrorBody)))]
async fn kill(
    State(e): Shared,
    Path(id): Path<String>,
    q: Result<Query<KillQuery>, QueryRejection>,
) -> ApiResult<StatusCode> {
    let Query(q) = q?;
    e.containers
        .kill(&project(), &id, q.signal.as_deref())
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields, default)]
struct WaitQuery {
    /// Wait for the next exit rather than return at once for a stopped container.
    next_exit: bool,
    /// Wait until the container is removed (`run --rm`): its exit code is returned then.
    removed: bool,
}

/// Waits until a container stops, and returns its exit code. The response headers are
/// sent as soon as the wait is registered, so a client may start the container after
/// receiving them and still see its exit.
#[utoipa::path(post, path = "/v1/containers/{id}/wait", params(("id" = String, Path), WaitQuery), responses((status = 200, body = WaitResponse)))]
async fn wait(
    State(e): Shared,
    Path(id): Path<String>,
    q: Result<Query<WaitQuery>, QueryRejection>,
) -> ApiResult<Response> {
    let Query(q) = q?;
    let exit = e.containers.wait(&project(), &id, q.next_exit, q.removed)?;
    let body = futures_util::stream::once(async move {
        Ok::<_, std::io::Error>(serde_json::to_string(&exit.await).expect("json"))
    });
    Ok((
        [(header::CONTENT_TYPE, "application/json")],
        Body::from_stream(body),
    )
        .into_response())
}

/// Freezes every process of a container.
#[utoipa::path(post, path = "/v1/containers/{id}/pause", params(("id" = String, Path)), responses((status = 204), (status = 409, body = ErrorBody)))]
async fn pause(State(e): Shared, Path(id): Path<String>) -> ApiResult<StatusCode> {
    e.containers.pause(&project(), &id, true).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Thaws a paused container.
#[utoipa::path(post, path = "/v1/containers/{id}/unpause", params(("id" = String, Path)), responses((status = 204), (status = 409, body = ErrorBody)))]
async fn unpause(State(e): Shared, Path(id): Path<String>) -> ApiResult<StatusCode> {
    e.containers.pause(&project(), &id, false).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
struct RenameQuery {
    /// The new name.
    name: String,
}

/// Renames a container.
#[utoipa::path(post, path = "/v1/containers/{id}/rename", params(("id" = String, Path), RenameQuery), responses((status = 204), (status = 409, body = ErrorBody)))]
async fn rename(
    State(e): Shared,
    Path(id): Path<String>,
    q: Result<Query<RenameQuery>, QueryRejection>,
) -> ApiResult<StatusCode> {
    let Query(q) = q?;
    e.containers.rename(&project(), &id, &q.name)?;
    Ok(StatusCode::NO_CONTENT)
}

fn ndjson(
    stream: impl futures_util::Stream<Item = Result<String, std::io::Error>> + Send + 'static,
) -> Response {
    (
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(stream),
    )
        .into_response()
}

/// A container's output as JSON lines (`LogLine`); with `follow`, until it stops.
#[utoipa::path(get, path = "/v1/containers/{id}/logs", params(("id" = String, Path), LogsQuery),
    responses((status = 200, content_type = "application/x-ndjson", body = [pier_api::containers::LogLine]), (status = 404, body = ErrorBody)))]
async fn logs(
    State(e): Shared,
    Path(id): Path<String>,
    q: Result<Query<LogsQuery>, QueryRejection>,
) -> ApiResult<Response> {
    let Query(q) = q?;
    let c = e.containers.get(&project(), &id)?;
    let since = match q.since.as_deref() {
        None => None,
        Some(s) => Some(
            s.parse::<i64>()
                .ok()
                .or_else(|| parse_rfc3339(s))
                .ok_or_else(|| {
                    ApiError::invalid(format!(
                        "invalid --since {s:?}: give RFC 3339 or Unix seconds"
                    ))
                })?,
        ),
    };
    let exit = if q.follow && q.attach {
        Some(e.containers.wait(&project(), &c.id, true, false)?)
    } else {
        None
    };
    let (initial, mut follower) = e.containers.logs(&c, q.tail, since);
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<String, std::io::Error>>(64);
    let follow = q.follow;
    tokio::spawn(async move {
        for l in initial {
            if tx
                .send(Ok(serde_json::to_string(&l).expect("json") + "\n"))
                .await
                .is_err()
            {
                return;
            }
        }
        if !follow {
            return;
        }
        let mut exit = exit.map(Box::pin);
        loop {
            // Decide before reading, so output written before the exit is still sent.
            let done = match exit.as_mut() {
                Some(f) => tokio::select! {
                    _ = f => true,
                    _ = tokio::time::sleep(Duration::from_millis(20)) => false,
                },
                None => {
                    let running = e.containers.is_running(&project(), &c.id);
                    if running {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    !running
                }
            };
            for l in follower.read() {
                if tx
                    .send(Ok(serde_json::to_string(&l).expect("json") + "\n"))
                    .await
                    .is_err()
                {
                    return;
                }
            }
            if done {
                return;
            }
        }
    });
    let stream =
        futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|x| (x, rx)) });
    Ok(ndjson(stream))
}

/// Runs a command in a running container; streams its output as JSON lines
/// (`ExecOutput`), the last one carrying the exit code. With `detach`, answers at once.
#[utoipa::path(post, path = "/v1/containers/{id}/exec", params(("id" = String, Path)), request_body = ExecCreate,
    responses((status = 200, content_type = "application/x-ndjson", body = [ExecOutput]), (status = 409, body = ErrorBody)))]
async fn exec(
    State(e): Shared,
    Path(id): Path<String>,
    request: axum::extract::Request,
) -> ApiResult<Response> {
    use tokio::io::AsyncReadExt;
    let (parts, body) = request.into_parts();
    let bytes = axum::body::to_bytes(body, 1 << 20)
        .await
        .map_err(|err| ApiError::invalid(format!("invalid request body: {err}")))?;
    let req: ExecCreate = serde_json::from_slice(&bytes)
        .map_err(|err| ApiError::invalid(format!("invalid request body: {err}")))?;
    if (req.tty || req.interactive) && !req.detach {
        return exec_attached(
            e,
            id,
            req,
            axum::extract::Request::from_parts(parts, Body::empty()),
        )
        .await;
    }
    let (c, cmd) = e.containers.exec_command(&project(), &id, &req)?;
    let mut cmd = tokio::process::Command::from(cmd);
    cmd.stdin(std::process::Stdio::null());
    let detach = req.detach;
    if detach {
        cmd.stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
    } else {
        cmd.stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
    }
    let mut child = cmd.spawn().map_err(|err| {
        ApiError::new(
            pier_api::ErrorKind::Internal,
            format!("cannot start exec: {err}"),
        )
    })?;
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<String, std::io::Error>>(64);
    let line = |o: &ExecOutput| serde_json::to_string(o).expect("json") + "\n";
    let mut readers = Vec::new();
    let pipes: [(Option<Box<dyn tokio::io::AsyncRead + Send + Unpin>>, &str); 2] = [
        (child.stdout.take().map(|p| Box::new(p) as _), "stdout"),
        (child.stderr.take().map(|p| Box::new(p) as _), "stderr"),
    ];
    for (pipe, name) in pipes {
        let Some(mut pipe) = pipe else { continue };
        let tx = tx.clone();
        readers.push(tokio::spawn(async move {
            let mut buf = vec![0u8; 32 * 1024];
            while let Ok(n) = pipe.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                let o = ExecOutput {
                    stream: Some(name.into()),
                    data: Some(String::from_utf8_lossy(&buf[..n]).into_owned()),
                    exit_code: None,
                };
                if tx.send(Ok(line(&o))).await.is_err() {
                    break;
                }
            }
        }));
    }
    let containers = e.containers.clone();
    tokio::spawn(async move {
        let code = child
            .wait()
            .await
            .ok()
            .and_then(|s| s.code())
            .unwrap_or(255);
        containers.exec_done(&c, code);
        // The exit line comes after all output.
        for r in readers {
            let _ = r.await;
        }
        let _ = tx
            .send(Ok(line(&ExecOutput {
                exit_code: Some(code),
                ..Default::default()
            })))
            .await;
    });
    if detach {
        return Ok((
            [(header::CONTENT_TYPE, "application/x-ndjson")],
            String::new(),
        )
            .into_response());
    }
    let stream =
        futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|x| (x, rx)) });
    Ok(ndjson(stream))
}

/// One reading of a container's resource usage.
#[utoipa::path(get, path = "/v1/containers/{id}/stats", params(("id" = String, Path)), responses((status = 200, body = ContainerStats), (status = 404, body = ErrorBody)))]
async fn stats(State(e): Shared, Path(id): Path<String>) -> ApiResult<Json<ContainerStats>> {
    Ok(Json(e.containers.stats(&project(), &id)?))
}

/// The processes running in a container.
#[utoipa::path(get, path = "/v1/containers/{id}/top", params(("id" = String, Path)), responses((status = 200, body = TopResponse), (status = 409, body = ErrorBody)))]
async fn top(State(e): Shared, Path(id): Path<String>) -> ApiResult<Json<TopResponse>> {
    Ok(Json(e.containers.top(&project(), &id)?))
}

/// What changed in a container's filesystem against its image.
#[utoipa::path(get, path = "/v1/containers/{id}/changes", params(("id" = String, Path)), responses((status = 200, body = [pier_api::containers::Change])))]
async fn changes(
    State(e): Shared,
    Path(id): Path<String>,
) -> ApiResult<Json<Vec<pier_api::containers::Change>>> {
    let c = e.containers.clone();
    Ok(Json(
        blocking(move || c.changes(&project(), &id).map_err(ApiError::from)).await?,
    ))
}

/// Streams a blocking producer's output as a tar response body.
pub(crate) fn tar_response(
    f: impl FnOnce(&mut crate::stream::BodyWriter) -> ApiResult<()> + Send + 'static,
) -> Response {
    let (mut writer, body) = crate::stream::body_writer();
    tokio::task::spawn_blocking(move || match f(&mut writer) {
        Ok(()) => {
            let _ = writer.finish();
        }
        Err(err) => {
            tracing::error!(error = %err.message, "streaming a tar failed; the client's copy is cut short")
        }
    });
    ([(header::CONTENT_TYPE, "application/x-tar")], body).into_response()
}

/// The container's whole filesystem as a tar.
#[utoipa::path(get, path = "/v1/containers/{id}/export", params(("id" = String, Path)), responses((status = 200, content_type = "application/x-tar", body = Vec<u8>), (status = 404, body = ErrorBody)))]
async fn export(State(e): Shared, Path(id): Path<String>) -> ApiResult<Response> {
    e.containers.get(&project(), &id)?;
    let c = e.containers.clone();
    Ok(tar_response(move |w| {
        c.export(&project(), &id, w).map_err(ApiError::from)
    }))
}

/// Makes a new image from a container's changes.
#[utoipa::path(post, path = "/v1/containers/{id}/commit", params(("id" = String, Path)), request_body = pier_api::containers::CommitRequest,
    responses((status = 200, body = pier_api::types::LoadedImage), (status = 404, body = ErrorBody)))]
async fn commit(
    State(e): Shared,
    Path(id): Path<String>,
    body: Result<Json<pier_api::containers::CommitRequest>, JsonRejection>,
) -> ApiResult<Json<pier_api::types::LoadedImage>> {
    let Json(req) = body?;
    let c = e.containers.clone();
    Ok(Json(
        blocking(move || c.commit(&project(), &id, &req).map_err(ApiError::from)).await?,
    ))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
struct ArchiveQuery {
    /// Absolute path in the container.
    path: String,
}

/// A path of the container as a tar whose root entry is named after it (`pier cp` out).
#[utoipa::path(get, path = "/v1/containers/{id}/archive", params(("id" = String, Path), ArchiveQuery),
    responses((status = 200, content_type = "application/x-tar", body = Vec<u8>), (status = 404, body = ErrorBody)))]
async fn archive_get(
    State(e): Shared,
    Path(id): Path<String>,
    q: Result<Query<ArchiveQuery>, QueryRejection>,
) -> ApiResult<Response> {
    let Query(q) = q?;
    // Check the path first, so a wrong one is a clear 404 rather than a cut stream.
    let c = e.containers.clone();
    let (id2, path2) = (id.clone(), q.path.clone());
    blocking(move || {
        c.archive_check(&project(), &id2, &path2)
            .map_err(ApiError::from)
    })
    .await?;
    let c = e.containers.clone();
    Ok(tar_response(move |w| {
        c.archive_get(&project(), &id, &q.path, w)
            .map_err(ApiError::from)
    }))
}

/// Unpacks a tar into the container at `path` (`pier cp` in).
#[utoipa::path(put, path = "/v1/containers/{id}/archive", params(("id" = String, Path), ArchiveQuery), request_body(content = Vec<u8>, content_type = "application/x-tar"),
    responses((status = 204), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn archive_put(
    State(e): Shared,
    Path(id): Path<String>,
    q: Result<Query<ArchiveQuery>, QueryRejection>,
    body: Body,
) -> ApiResult<StatusCode> {
    let Query(q) = q?;
    let reader = crate::stream::body_reader(body);
    let c = e.containers.clone();
    blocking(move || {
        c.archive_put(&project(), &id, &q.path, reader)
            .map_err(ApiError::from)
    })
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Connects to a running container's monitor.
fn connect_monitor(e: &Engine, c: &ContainerInspect) -> ApiResult<tokio::net::UnixStream> {
    let not_running = || {
        ApiError::new(
            pier_api::ErrorKind::Conflict,
            format!("container {} is not running; start it first", c.name),
        )
    };
    let s = pier_runtime::attach::connect(&e.containers.cdir(&c.id)).map_err(|_| not_running())?;
    s.set_nonblocking(true).map_err(|_| not_running())?;
    tokio::net::UnixStream::from_std(s).map_err(|_| not_running())
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields, default)]
struct AttachQuery {
    /// Pass the client's input to the container's stdin.
    stdin: bool,
}

/// Attaches to a running container: the connection is upgraded (101, `Upgrade: tcp`)
/// into a two-way stream, raw for a TTY, otherwise multiplexed as Docker does (8-byte
/// header per chunk). Half-closing the write side closes the container's stdin.
#[utoipa::path(post, path = "/v1/containers/{id}/attach", params(("id" = String, Path), AttachQuery),
    responses((status = 101, description = "Switched to the container's stream"), (status = 409, body = ErrorBody)))]
async fn attach(
    State(e): Shared,
    Path(id): Path<String>,
    q: Result<Query<AttachQuery>, QueryRejection>,
    req: axum::extract::Request,
) -> ApiResult<Response> {
    use pier_runtime::attach as proto;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Query(q) = q?;
    let c = e.containers.get(&project(), &id)?;
    let monitor = connect_monitor(&e, &c)?;
    let tty = c.config.tty;
    let on_upgrade = hyper::upgrade::on(req);
    tokio::spawn(async move {
        let Ok(upgraded) = on_upgrade.await else {
            return;
        };
        let (mut cr, mut cw) = tokio::io::split(hyper_util::rt::TokioIo::new(upgraded));
        let (mut mr, mut mw) = monitor.into_split();
        let to_monitor = async move {
            let mut buf = vec![0u8; 32 * 1024];
            loop {
                match cr.read(&mut buf).await {
                    Ok(0) | Err(_) => {
                        if q.stdin {
                            let _ = mw.write_all(&proto::frame(proto::CLOSE_STDIN, b"")).await;
                        }
                        // Keep the socket open: output goes on after stdin closes.
                        std::future::pending::<()>().await;
                    }
                    Ok(n) if q.stdin => {
                        if mw
                            .write_all(&proto::frame(proto::STDIN, &buf[..n]))
                            .await
                            .is_err()
                        {
                            return;
                        }
                    }
                    Ok(_) => {}
                }
            }
        };
        let to_client = async move {
            let mut buf = vec![0u8; 64 * 1024];
            let mut pending = Vec::new();
            while let Ok(n) = mr.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                pending.extend_from_slice(&buf[..n]);
                let Ok(frames) = proto::parse(&mut pending) else {
                    break;
                };
                for (kind, payload) in frames {
                    let written = if tty {
                        cw.write_all(&payload).await
                    } else {
                        let mut chunk = proto::docker_header(kind, payload.len()).to_vec();
                        chunk.extend_from_slice(&payload);
                        cw.write_all(&chunk).await
                    };
                    if written.is_err() {
                        return;
                    }
                }
            }
            let _ = cw.shutdown().await;
        };
        tokio::select! {
            _ = to_monitor => {},
            _ = to_client => {},
        }
    });
    let content_type = if tty {
        "application/vnd.docker.raw-stream"
    } else {
        "application/vnd.docker.multiplexed-stream"
    };
    Ok(Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, "Upgrade")
        .header(header::UPGRADE, "tcp")
        .header(header::CONTENT_TYPE, content_type)
        .body(Body::empty())
        .expect("a valid response"))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
struct ResizeQuery {
    /// Rows.
    h: u16,
    /// Columns.
    w: u16,
}

/// Resizes a container's terminal.
#[utoipa::path(post, path = "/v1/containers/{id}/resize", params(("id" = String, Path), ResizeQuery), responses((status = 204), (status = 409, body = ErrorBody)))]
async fn resize(
    State(e): Shared,
    Path(id): Path<String>,
    q: Result<Query<ResizeQuery>, QueryRejection>,
) -> ApiResult<StatusCode> {
    use tokio::io::AsyncWriteExt;
    let Query(q) = q?;
    let c = e.containers.get(&project(), &id)?;
    let mut sock = connect_monitor(&e, &c)?;
    sock.write_all(&pier_runtime::attach::resize(q.h, q.w))
        .await
        .map_err(|err| ApiError::new(pier_api::ErrorKind::Internal, format!("resize: {err}")))?;
    Ok(StatusCode::NO_CONTENT)
}

/// `exec -i`/`-t`: the request is upgraded into the command's stream; resizes arrive
/// through `/v1/exec/{id}/resize` and the exit code through `/v1/exec/{id}`.
async fn exec_attached(
    e: Arc<Engine>,
    id: String,
    req: ExecCreate,
    request: axum::extract::Request,
) -> ApiResult<Response> {
    use pier_runtime::attach as proto;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (c, cmd) = e.containers.exec_command(&project(), &id, &req)?;
    let mut cmd = tokio::process::Command::from(cmd);
    cmd.stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().map_err(|err| {
        ApiError::new(
            pier_api::ErrorKind::Internal,
            format!("cannot start exec: {err}"),
        )
    })?;
    let exec_id = pier_engine::containers::short_random_id();
    let (frames_tx, mut frames_rx) = tokio::sync::mpsc::channel::<Vec<u8>>(16);
    let (exit_tx, exit_rx) = tokio::sync::watch::channel(None);
    e.containers.execs.lock().unwrap().insert(
        exec_id.clone(),
        pier_engine::containers::ExecSession {
            frames: frames_tx.clone(),
            exit: exit_rx,
        },
    );
    let (mut hin, hout, herr) = (
        child.stdin.take().expect("piped"),
        child.stdout.take().expect("piped"),
        child.stderr.take().expect("piped"),
    );
    let tty = req.tty;
    let stdin_on = req.interactive;
    let containers = e.containers.clone();
    let exec_id_done = exec_id.clone();
    let on_upgrade = hyper::upgrade::on(request);
    tokio::spawn(async move {
        // The helper's stdin: frames from the client and from resize calls.
        tokio::spawn(async move {
            while let Some(f) = frames_rx.recv().await {
                if hin.write_all(&f).await.is_err() {
                    break;
                }
            }
        });
        let waiter = tokio::spawn(async move {
            child
                .wait()
                .await
                .ok()
                .and_then(|s| s.code())
                .unwrap_or(255)
        });
        if let Ok(upgraded) = on_upgrade.await {
            let (mut cr, mut cw) = tokio::io::split(hyper_util::rt::TokioIo::new(upgraded));
            let input = async move {
                let mut buf = vec![0u8; 32 * 1024];
                loop {
                    match cr.read(&mut buf).await {
                        Ok(0) | Err(_) => {
                            let _ = frames_tx.send(proto::frame(proto::CLOSE_STDIN, b"")).await;
                            std::future::pending::<()>().await;
                        }
                        Ok(n) if stdin_on => {
                            let _ = frames_tx.send(proto::frame(proto::STDIN, &buf[..n])).await;
                        }
                        Ok(_) => {}
                    }
                }
            };
            let output = async move {
                let (tx, mut rx) = tokio::sync::mpsc::channel::<(u8, Vec<u8>)>(16);
                for (mut pipe, kind) in [
                    (
                        Box::new(hout) as Box<dyn tokio::io::AsyncRead + Send + Unpin>,
                        proto::STDOUT,
                    ),
                    (Box::new(herr) as _, proto::STDERR),
                ] {
                    let tx = tx.clone();
                    tokio::spawn(async move {
                        let mut buf = vec![0u8; 32 * 1024];
                        while let Ok(n) = pipe.read(&mut buf).await {
                            if n == 0 || tx.send((kind, buf[..n].to_vec())).await.is_err() {
                                break;
                            }
                        }
                    });
                }
                drop(tx);
                while let Some((kind, data)) = rx.recv().await {
                    let chunk = if tty {
                        data
                    } else {
                        let mut v = proto::docker_header(kind, data.len()).to_vec();
                        v.extend_from_slice(&data);
                        v
                    };
                    if cw.write_all(&chunk).await.is_err() {
                        break;
                    }
                }
                let _ = cw.shutdown().await;
            };
            tokio::select! {
                _ = input => {},
                _ = output => {},
            }
        } else {
            drop((hout, herr));
        }
        let code = waiter.await.unwrap_or(255);
        let _ = exit_tx.send(Some(code));
        containers.exec_done(&c, code);
        // Kept a while for the client to read the exit code, then forgotten.
        tokio::time::sleep(Duration::from_secs(300)).await;
        containers.execs.lock().unwrap().remove(&exec_id_done);
    });
    let content_type = if tty {
        "application/vnd.docker.raw-stream"
    } else {
        "application/vnd.docker.multiplexed-stream"
    };
    Ok(Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, "Upgrade")
        .header(header::UPGRADE, "tcp")
        .header(header::CONTENT_TYPE, content_type)
        .header("x-pier-exec-id", exec_id)
        .body(Body::empty())
        .expect("a valid response"))
}

/// The state of an attached exec session.
#[utoipa::path(get, path = "/v1/exec/{exec_id}", params(("exec_id" = String, Path)), responses((status = 200, body = ExecInspect), (status = 404, body = ErrorBody)))]
async fn exec_inspect(
    State(e): Shared,
    Path(exec_id): Path<String>,
) -> ApiResult<Json<ExecInspect>> {
    let exit = e
        .containers
        .execs
        .lock()
        .unwrap()
        .get(&exec_id)
        .map(|s| *s.exit.borrow());
    match exit {
        None => Err(ApiError::new(
            pier_api::ErrorKind::NotFound,
            format!("no such exec session: {exec_id}"),
        )),
        Some(code) => Ok(Json(ExecInspect {
            id: exec_id,
            running: code.is_none(),
            exit_code: code,
        })),
    }
}

/// Resizes an exec session's terminal.
#[utoipa::path(post, path = "/v1/exec/{exec_id}/resize", params(("exec_id" = String, Path), ResizeQuery), responses((status = 204), (status = 404, body = ErrorBody)))]
async fn exec_resize(
    State(e): Shared,
    Path(exec_id): Path<String>,
    q: Result<Query<ResizeQuery>, QueryRejection>,
) -> ApiResult<StatusCode> {
    let Query(q) = q?;
    let tx = e
        .containers
        .execs
        .lock()
        .unwrap()
        .get(&exec_id)
        .map(|s| s.frames.clone());
    let tx = tx.ok_or_else(|| {
        ApiError::new(
            pier_api::ErrorKind::NotFound,
            format!("no such exec session: {exec_id}"),
        )
    })?;
    let _ = tx.send(pier_runtime::attach::resize(q.h, q.w)).await;
    Ok(StatusCode::NO_CONTENT)
}

/// Removes every container that is not running.
#[utoipa::path(post, path = "/v1/containers/prune", responses((status = 200, description = "IDs of the removed containers", body = [String])))]
async fn prune(State(e): Shared) -> ApiResult<Json<Vec<String>>> {
    Ok(Json(e.containers.prune(&project()).await?))
}

/// Streams lifecycle events as JSON lines, from now on.
#[utoipa::path(get, path = "/v1/events", responses((status = 200, content_type = "application/x-ndjson", body = [Event])))]
async fn events(State(e): Shared) -> ApiResult<Response> {
    let rx = e.containers.events.subscribe();
    let mine = project();
    let stream = futures_util::stream::unfold((rx, mine), |(mut rx, mine)| async move {
        loop {
            match rx.recv().await {
                Ok(ev) if ev.project == mine => {
                    let line = serde_json::to_string(&ev.event).expect("json") + "\n";
                    return Some((Ok(line), (rx, mine)));
                }
                Ok(_) => continue,
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(_) => return None,
            }
        }
    });
    Ok(ndjson(stream))
}
