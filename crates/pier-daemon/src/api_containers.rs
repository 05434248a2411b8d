//! The container part of the native API (`/v1/containers/...`).

use std::sync::Arc;

use axum::body::Body;

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use pier_api::containers::{
    ContainerCreate, ContainerInspect, ContainerRemoveQuery, ContainerStats, ContainerSummary,
    ContainerUpdate, Created, ExecCreate, ExecInspect, ExecOutput, KillQuery, ListQuery, LogsQuery,
    StopQuery, TopResponse, WaitResponse,
};
use pier_api::time::parse_rfc3339_nanos;
use pier_api::ErrorBody;
use pier_engine::sessions::{
    AttachOptions, Chunk, ExecError, ExecIo, Follow, InputSender, LogOptions, StartOptions,
};
use serde::Deserialize;
use utoipa::{IntoParams, OpenApi};

use crate::api::{blocking, Ctx, Engine, Shared, J, Q};
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
        .route("/v1/containers/{id}/update", post(update))
        .route("/v1/containers/{id}/logs", get(logs))
        .route("/v1/containers/{id}/exec", post(exec))
        .route("/v1/containers/{id}/attach", post(attach))
        .route("/v1/containers/{id}/resize", post(resize))
        .route("/v1/containers/{id}/console", post(console))
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
        update,
        logs,
        exec,
        attach,
        resize,
        console,
        exec_inspect,
        exec_resize,
        stats,
        top,
        changes,
        export,
        commit,
        archive_get,
        archive_put
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
        ContainerUpdate,
        pier_api::containers::Healthcheck,
        pier_api::containers::DeviceMapping,
        pier_api::containers::Health,
        pier_api::containers::HealthStatus,
        pier_api::containers::HealthResult,
        ContainerInspect,
        ContainerSummary,
        Created,
        WaitResponse,
        pier_api::containers::LogLine
    ))
)]
pub struct ContainersDoc;

/// Lists containers, newest first.
#[utoipa::path(get, path = "/v1/containers", params(ListQuery), responses((status = 200, body = [ContainerSummary])))]
async fn list(
    Ctx(ctx): Ctx,
    State(e): Shared,
    Q(q): Q<ListQuery>,
) -> ApiResult<Json<Vec<ContainerSummary>>> {
    Ok(Json(e.instances.list(&ctx, q.all, q.filter.as_deref())?))
}

/// Creates a container from an image. In a pool, the scheduler places it and the chosen
/// host makes it (409: the name is taken in the pool; 507: no host fits; 503: the host
/// did not answer in time, or this host is cut off from the pool's store).
#[utoipa::path(post, path = "/v1/containers", request_body = ContainerCreate,
    responses((status = 201, body = Created), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 503, body = ErrorBody), (status = 507, body = ErrorBody)))]
async fn create(
    Ctx(ctx): Ctx,
    State(e): Shared,
    cluster: Option<axum::Extension<Arc<crate::cluster::Cluster>>>,
    J(req): J<ContainerCreate>,
) -> ApiResult<(StatusCode, Json<Created>)> {
    // In a pool, the scheduler chooses the host and that host's agent creates it.
    if let Some(axum::Extension(cluster)) = cluster.filter(|c| c.in_pool()) {
        let created = cluster.create(&ctx, req).await?;
        return Ok((StatusCode::CREATED, Json(created)));
    }
    if crate::cluster::place::has_placement_options(&req) {
        return Err(crate::cluster::place::not_in_pool());
    }
    let c = e.instances.clone();
    let created = blocking(move || c.create(&ctx, req).map_err(ApiError::from)).await?;
    Ok((StatusCode::CREATED, Json(created)))
}

/// Shows a container by ID, name or ID prefix.
#[utoipa::path(get, path = "/v1/containers/{id}", params(("id" = String, Path)), responses((status = 200, body = ContainerInspect), (status = 404, body = ErrorBody)))]
async fn inspect(
    Ctx(ctx): Ctx,
    State(e): Shared,
    Path(id): Path<String>,
) -> ApiResult<Json<ContainerInspect>> {
    Ok(Json(e.instances.get(&ctx, &id)?))
}

/// Removes a container.
#[utoipa::path(delete, path = "/v1/containers/{id}", params(("id" = String, Path), ContainerRemoveQuery),
    responses((status = 204), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn remove(
    Ctx(ctx): Ctx,
    State(e): Shared,
    Path(id): Path<String>,
    Q(q): Q<ContainerRemoveQuery>,
) -> ApiResult<StatusCode> {
    e.instances.remove(&ctx, &id, q.force, q.volumes).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Starts a created or exited container.
#[utoipa::path(post, path = "/v1/containers/{id}/start", params(("id" = String, Path)),
    responses((status = 204), (status = 400, body = ErrorBody, description = "the command could not be run"), (status = 404, body = ErrorBody)))]
async fn start(Ctx(ctx): Ctx, State(e): Shared, Path(id): Path<String>) -> ApiResult<StatusCode> {
    e.instances.start(&ctx, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Stops a container: its stop signal, then SIGKILL after `t` seconds.
#[utoipa::path(post, path = "/v1/containers/{id}/stop", params(("id" = String, Path), StopQuery), responses((status = 204), (status = 404, body = ErrorBody)))]
async fn stop(
    Ctx(ctx): Ctx,
    State(e): Shared,
    Path(id): Path<String>,
    Q(q): Q<StopQuery>,
) -> ApiResult<StatusCode> {
    e.instances
        .stop(&ctx, &id, q.t, q.signal.as_deref())
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Stops, then starts a container.
#[utoipa::path(post, path = "/v1/containers/{id}/restart", params(("id" = String, Path), StopQuery), responses((status = 204), (status = 404, body = ErrorBody)))]
async fn restart(
    Ctx(ctx): Ctx,
    State(e): Shared,
    Path(id): Path<String>,
    Q(q): Q<StopQuery>,
) -> ApiResult<StatusCode> {
    e.instances
        .stop(&ctx, &id, q.t, q.signal.as_deref())
        .await?;
    e.instances.start(&ctx, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Sends a signal to a container's init.
#[utoipa::path(post, path = "/v1/containers/{id}/kill", params(("id" = String, Path), KillQuery), responses((status = 204), (status = 409, body = ErrorBody)))]
async fn kill(
    Ctx(ctx): Ctx,
    State(e): Shared,
    Path(id): Path<String>,
    Q(q): Q<KillQuery>,
) -> ApiResult<StatusCode> {
    e.instances.kill(&ctx, &id, q.signal.as_deref()).await?;
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
    Ctx(ctx): Ctx,
    State(e): Shared,
    Path(id): Path<String>,
    Q(q): Q<WaitQuery>,
) -> ApiResult<Response> {
    let exit = e.instances.wait(&ctx, &id, q.next_exit, q.removed)?;
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
async fn pause(Ctx(ctx): Ctx, State(e): Shared, Path(id): Path<String>) -> ApiResult<StatusCode> {
    e.instances.pause(&ctx, &id, true).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Thaws a paused container.
#[utoipa::path(post, path = "/v1/containers/{id}/unpause", params(("id" = String, Path)), responses((status = 204), (status = 409, body = ErrorBody)))]
async fn unpause(Ctx(ctx): Ctx, State(e): Shared, Path(id): Path<String>) -> ApiResult<StatusCode> {
    e.instances.pause(&ctx, &id, false).await?;
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
    Ctx(ctx): Ctx,
    State(e): Shared,
    cluster: Option<axum::Extension<Arc<crate::cluster::Cluster>>>,
    Path(id): Path<String>,
    Q(q): Q<RenameQuery>,
) -> ApiResult<StatusCode> {
    match cluster {
        // In a pool, a placed instance's name is the pool's too.
        Some(axum::Extension(cluster)) => cluster.rename(&ctx, &e, &id, &q.name).await?,
        None => e.instances.rename(&ctx, &id, &q.name).await?,
    }
    Ok(StatusCode::NO_CONTENT)
}

/// Changes a container's limits and restart policy: at once while it runs, and for its
/// later starts.
#[utoipa::path(post, path = "/v1/containers/{id}/update", params(("id" = String, Path)), request_body = ContainerUpdate,
    responses((status = 200, body = ContainerInspect), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn update(
    Ctx(ctx): Ctx,
    State(e): Shared,
    Path(id): Path<String>,
    J(changes): J<ContainerUpdate>,
) -> ApiResult<Json<ContainerInspect>> {
    Ok(Json(e.instances.update(&ctx, &id, changes).await?))
}

pub(crate) fn ndjson(
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
    Ctx(ctx): Ctx,
    State(e): Shared,
    Path(id): Path<String>,
    Q(q): Q<LogsQuery>,
) -> ApiResult<Response> {
    let c = e.instances.get(&ctx, &id)?;
    let since = match q.since.as_deref() {
        None => None,
        Some(s) => Some(
            s.parse::<f64>()
                .ok()
                .map(|secs| (secs * 1e9) as i64)
                .or_else(|| parse_rfc3339_nanos(s))
                .ok_or_else(|| {
                    ApiError::invalid(format!(
                        "invalid --since {s:?}: give RFC 3339 or Unix seconds"
                    ))
                })?,
        ),
    };
    let follow = match (q.follow, q.attach) {
        (false, _) => Follow::No,
        (true, true) => Follow::NextExit,
        (true, false) => Follow::WhileRunning,
    };
    let lines = e.instances.logs(
        &ctx,
        &c.id,
        LogOptions {
            follow,
            tail: q.tail,
            since_ns: since,
            ..Default::default()
        },
    )?;
    let stream = futures_util::stream::unfold(lines, |mut rx| async move {
        let l = rx.recv().await?;
        Some((Ok(serde_json::to_string(&l).expect("json") + "\n"), rx))
    });
    Ok(ndjson(stream))
}

/// Runs a command in a running container; streams its output as JSON lines
/// (`ExecOutput`), the last one carrying the exit code. With `detach`, answers at once.
#[utoipa::path(post, path = "/v1/containers/{id}/exec", params(("id" = String, Path)), request_body = ExecCreate,
    responses((status = 200, content_type = "application/x-ndjson", body = [ExecOutput]), (status = 409, body = ErrorBody)))]
async fn exec(
    Ctx(ctx): Ctx,
    State(e): Shared,
    Path(id): Path<String>,
    request: axum::extract::Request,
) -> ApiResult<Response> {
    let (parts, body) = request.into_parts();
    let bytes = axum::body::to_bytes(body, 1 << 20)
        .await
        .map_err(|err| ApiError::invalid(format!("invalid request body: {err}")))?;
    let req: ExecCreate = serde_json::from_slice(&bytes)
        .map_err(|err| ApiError::invalid(format!("invalid request body: {err}")))?;
    let attached = (req.tty || req.interactive) && !req.detach;
    let detach = req.detach;
    let exec_id = e
        .instances
        .exec_create(&ctx, &id, req.spec())
        .map_err(exec_error)?;
    let io = e
        .instances
        .exec_start(
            &ctx,
            &exec_id,
            StartOptions {
                detach,
                ..Default::default()
            },
        )
        .map_err(exec_error)?;
    if attached {
        let request = axum::extract::Request::from_parts(parts, Body::empty());
        return Ok(exec_attached(exec_id, io, request));
    }
    if detach {
        return Ok((
            [(header::CONTENT_TYPE, "application/x-ndjson")],
            String::new(),
        )
            .into_response());
    }
    let line = |o: &ExecOutput| serde_json::to_string(o).expect("json") + "\n";
    // Output as it comes, then (after all of it) the exit code.
    let state = (io.output, Some(io.exit));
    let stream = futures_util::stream::unfold(state, move |(mut output, exit)| async move {
        if let Some(rx) = output.as_mut() {
            if let Some(chunk) = rx.recv().await {
                let o = ExecOutput {
                    stream: Some(chunk.stream.name().into()),
                    data: Some(String::from_utf8_lossy(&chunk.data).into_owned()),
                    exit_code: None,
                };
                return Some((Ok(line(&o)), (output, exit)));
            }
        }
        let mut exit = exit?;
        let code = exit
            .wait_for(|c| c.is_some())
            .await
            .ok()
            .and_then(|c| *c)
            .unwrap_or(255);
        let o = ExecOutput {
            exit_code: Some(code),
            ..Default::default()
        };
        Some((Ok::<_, std::io::Error>(line(&o)), (None, None)))
    });
    Ok(ndjson(stream))
}

/// An exec refusal in the native API's words.
fn exec_error(e: ExecError) -> ApiError {
    pier_engine::EngineError::from(e).into()
}

/// One reading of a container's resource usage.
#[utoipa::path(get, path = "/v1/containers/{id}/stats", params(("id" = String, Path)), responses((status = 200, body = ContainerStats), (status = 404, body = ErrorBody)))]
async fn stats(
    Ctx(ctx): Ctx,
    State(e): Shared,
    Path(id): Path<String>,
) -> ApiResult<Json<ContainerStats>> {
    Ok(Json(e.instances.stats(&ctx, &id)?))
}

/// The processes running in a container.
#[utoipa::path(get, path = "/v1/containers/{id}/top", params(("id" = String, Path)), responses((status = 200, body = TopResponse), (status = 409, body = ErrorBody)))]
async fn top(
    Ctx(ctx): Ctx,
    State(e): Shared,
    Path(id): Path<String>,
) -> ApiResult<Json<TopResponse>> {
    Ok(Json(e.instances.top(&ctx, &id)?))
}

/// What changed in a container's filesystem against its image.
#[utoipa::path(get, path = "/v1/containers/{id}/changes", params(("id" = String, Path)), responses((status = 200, body = [pier_api::containers::Change])))]
async fn changes(
    Ctx(ctx): Ctx,
    State(e): Shared,
    Path(id): Path<String>,
) -> ApiResult<Json<Vec<pier_api::containers::Change>>> {
    let c = e.instances.clone();
    Ok(Json(
        blocking(move || c.changes(&ctx, &id).map_err(ApiError::from)).await?,
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
async fn export(Ctx(ctx): Ctx, State(e): Shared, Path(id): Path<String>) -> ApiResult<Response> {
    e.instances.get(&ctx, &id)?;
    let c = e.instances.clone();
    Ok(tar_response(move |w| {
        c.export(&ctx, &id, w).map_err(ApiError::from)
    }))
}

/// Makes a new image from a container's changes.
#[utoipa::path(post, path = "/v1/containers/{id}/commit", params(("id" = String, Path)), request_body = pier_api::containers::CommitRequest,
    responses((status = 200, body = pier_api::types::LoadedImage), (status = 404, body = ErrorBody)))]
async fn commit(
    Ctx(ctx): Ctx,
    State(e): Shared,
    Path(id): Path<String>,
    J(req): J<pier_api::containers::CommitRequest>,
) -> ApiResult<Json<pier_api::types::LoadedImage>> {
    let c = e.instances.clone();
    Ok(Json(
        blocking(move || c.commit(&ctx, &id, &req).map_err(ApiError::from)).await?,
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
    Ctx(ctx): Ctx,
    State(e): Shared,
    Path(id): Path<String>,
    Q(q): Q<ArchiveQuery>,
) -> ApiResult<Response> {
    // Check the path first, so a wrong one is a clear 404 rather than a cut stream.
    let c = e.instances.clone();
    let (id2, path2) = (id.clone(), q.path.clone());
    let ctx2 = ctx.clone();
    blocking(move || c.archive_check(&ctx2, &id2, &path2).map_err(ApiError::from)).await?;
    let c = e.instances.clone();
    Ok(tar_response(move |w| {
        c.archive_get(&ctx, &id, &q.path, w).map_err(ApiError::from)
    }))
}

/// Unpacks a tar into the container at `path` (`pier cp` in).
#[utoipa::path(put, path = "/v1/containers/{id}/archive", params(("id" = String, Path), ArchiveQuery), request_body(content = Vec<u8>, content_type = "application/x-tar"),
    responses((status = 204), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn archive_put(
    Ctx(ctx): Ctx,
    State(e): Shared,
    Path(id): Path<String>,
    Q(q): Q<ArchiveQuery>,
    body: Body,
) -> ApiResult<StatusCode> {
    let reader = crate::stream::body_reader(body);
    let c = e.instances.clone();
    blocking(move || {
        c.archive_put(&ctx, &id, &q.path, reader)
            .map_err(ApiError::from)
    })
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields, default)]
struct AttachQuery {
    /// Pass the client's input to the container's stdin.
    stdin: bool,
    /// The keys that detach a terminal session, leaving the container running
    /// (`ctrl-p,ctrl-q` when absent).
    detach_keys: Option<pier_api::detach::DetachKeys>,
}

/// Attaches to a running container: the connection is upgraded (101, `Upgrade: tcp`)
/// into a two-way stream, raw for a TTY, otherwise multiplexed as Docker does (8-byte
/// header per chunk). Half-closing the write side closes the container's stdin.
#[utoipa::path(post, path = "/v1/containers/{id}/attach", params(("id" = String, Path), AttachQuery),
    responses((status = 101, description = "Switched to the container's stream"), (status = 409, body = ErrorBody)))]
async fn attach(
    Ctx(ctx): Ctx,
    State(e): Shared,
    Path(id): Path<String>,
    Q(q): Q<AttachQuery>,
    req: axum::extract::Request,
) -> ApiResult<Response> {
    let io = e
        .instances
        .attach(
            &ctx,
            &id,
            AttachOptions {
                stdin: q.stdin,
                wait_start: false,
                detach_keys: q.detach_keys,
            },
        )
        .await?;
    let tty = io.tty;
    let on_upgrade = hyper::upgrade::on(req);
    tokio::spawn(async move {
        let Ok(upgraded) = on_upgrade.await else {
            return;
        };
        let (cr, cw) = tokio::io::split(hyper_util::rt::TokioIo::new(upgraded));
        tokio::select! {
            _ = pass_input(cr, io.input) => {},
            _ = pass_output(io.output, cw, tty) => {},
        }
    });
    Ok(upgraded_response(tty, None))
}

/// A VM's serial console: the connection is upgraded (101) into a raw two-way stream.
#[utoipa::path(post, path = "/v1/containers/{id}/console", params(("id" = String, Path)),
    responses((status = 101, description = "Switched to the VM's serial console"), (status = 400, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn console(
    Ctx(ctx): Ctx,
    State(e): Shared,
    Path(id): Path<String>,
    req: axum::extract::Request,
) -> ApiResult<Response> {
    let mut sock = e.instances.console(&ctx, &id).await?;
    let on_upgrade = hyper::upgrade::on(req);
    tokio::spawn(async move {
        if let Ok(upgraded) = on_upgrade.await {
            let mut client = hyper_util::rt::TokioIo::new(upgraded);
            let _ = tokio::io::copy_bidirectional(&mut client, &mut sock).await;
        }
    });
    Ok(upgraded_response(true, None))
}

/// The client's side of an upgraded stream to the session's input; its end closes the
/// session's stdin (output goes on after it).
async fn pass_input(mut from: impl tokio::io::AsyncRead + Unpin, to: InputSender) {
    use tokio::io::AsyncReadExt;
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        match from.read(&mut buf).await {
            Ok(0) | Err(_) => {
                to.close_stdin().await;
                // Keep the session: output goes on after stdin closes.
                std::future::pending::<()>().await;
            }
            Ok(n) => {
                if !to.stdin(&buf[..n]).await {
                    return;
                }
            }
        }
    }
}

/// The session's output to the client: raw with a terminal, else with Docker's 8-byte
/// headers; shuts the client's side when it ends.
async fn pass_output(
    mut from: tokio::sync::mpsc::Receiver<Chunk>,
    mut to: impl tokio::io::AsyncWrite + Unpin,
    tty: bool,
) {
    use tokio::io::AsyncWriteExt;
    while let Some(chunk) = from.recv().await {
        let written = if tty {
            to.write_all(&chunk.data).await
        } else {
            let mut v =
                pier_runtime::attach::docker_header(chunk.stream.number(), chunk.data.len())
                    .to_vec();
            v.extend_from_slice(&chunk.data);
            to.write_all(&v).await
        };
        if written.is_err() {
            return;
        }
    }
    let _ = to.shutdown().await;
}

/// `101 Switching Protocols` to a raw (TTY) or multiplexed stream.
fn upgraded_response(tty: bool, exec_id: Option<String>) -> Response {
    let content_type = if tty {
        "application/vnd.docker.raw-stream"
    } else {
        "application/vnd.docker.multiplexed-stream"
    };
    let mut r = Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, "Upgrade")
        .header(header::UPGRADE, "tcp")
        .header(header::CONTENT_TYPE, content_type);
    if let Some(id) = exec_id {
        r = r.header("x-pier-exec-id", id);
    }
    r.body(Body::empty()).expect("a valid response")
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
    Ctx(ctx): Ctx,
    State(e): Shared,
    Path(id): Path<String>,
    Q(q): Q<ResizeQuery>,
) -> ApiResult<StatusCode> {
    e.instances.resize(&ctx, &id, q.h, q.w).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `exec -i`/`-t`: the request is upgraded into the command's stream; resizes arrive
/// through `/v1/exec/{id}/resize` and the exit code through `/v1/exec/{id}`.
fn exec_attached(exec_id: String, io: ExecIo, request: axum::extract::Request) -> Response {
    let tty = io.tty;
    let on_upgrade = hyper::upgrade::on(request);
    tokio::spawn(async move {
        // Without an upgrade the output is dropped, which ends the command.
        let Ok(upgraded) = on_upgrade.await else {
            return;
        };
        let Some(output) = io.output else { return };
        let (cr, cw) = tokio::io::split(hyper_util::rt::TokioIo::new(upgraded));
        tokio::select! {
            _ = pass_input(cr, io.input) => {},
            _ = pass_output(output, cw, tty) => {},
        }
    });
    upgraded_response(tty, Some(exec_id))
}

/// The state of an attached exec session.
#[utoipa::path(get, path = "/v1/exec/{exec_id}", params(("exec_id" = String, Path)), responses((status = 200, body = ExecInspect), (status = 404, body = ErrorBody)))]
async fn exec_inspect(
    Ctx(ctx): Ctx,
    State(e): Shared,
    Path(exec_id): Path<String>,
) -> ApiResult<Json<ExecInspect>> {
    let info = e
        .instances
        .exec_inspect(&ctx, &exec_id)
        .map_err(exec_error)?;
    Ok(Json(ExecInspect {
        id: info.id,
        running: info.running,
        exit_code: info.exit_code,
    }))
}

/// Resizes an exec session's terminal.
#[utoipa::path(post, path = "/v1/exec/{exec_id}/resize", params(("exec_id" = String, Path), ResizeQuery), responses((status = 204), (status = 404, body = ErrorBody)))]
async fn exec_resize(
    Ctx(ctx): Ctx,
    State(e): Shared,
    Path(exec_id): Path<String>,
    Q(q): Q<ResizeQuery>,
) -> ApiResult<StatusCode> {
    e.instances
        .exec_resize(&ctx, &exec_id, q.h, q.w)
        .map_err(exec_error)?;
    Ok(StatusCode::NO_CONTENT)
}

/// Removes every container that is not running.
#[utoipa::path(post, path = "/v1/containers/prune", responses((status = 200, description = "IDs of the removed containers", body = [String])))]
async fn prune(Ctx(ctx): Ctx, State(e): Shared) -> ApiResult<Json<Vec<String>>> {
    Ok(Json(e.instances.prune(&ctx).await?))
}
