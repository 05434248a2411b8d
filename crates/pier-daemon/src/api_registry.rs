//! The registry's management API (`/v1/registry/...`) and the engine's pull and push
//! (`/v1/images/pull`, `/v1/images/push`, streaming progress as ndjson).

use std::sync::Arc;

use axum::body::Body;

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use pier_api::registry::{
    PullRequest, PushRequest, RegistryAuth, RegistryEditReport, RegistryEditRequest,
    RegistryGcQuery, RegistryGcReport, RegistryImageStep, RegistryIndexEntry, RegistryLayer,
    RegistrySearchQuery, RegistrySetTagRequest, RegistryStats, RegistryTag, RegistryTagInspect,
    RepositorySummary, TagHistoryEntry, TransferProgress,
};
use pier_api::{ErrorBody, ErrorKind, ImageRef};
use pier_registry::RegistryError;
use pier_registry_client::{transfer, Credentials, RemoteError};
use utoipa::OpenApi;

use crate::api::{blocking, Ctx, Engine, Shared, J, Q};
use crate::error::{ApiError, ApiResult};

impl From<RegistryError> for ApiError {
    fn from(e: RegistryError) -> Self {
        let kind = match e.status().as_u16() {
            404 => ErrorKind::NotFound,
            400 | 401 | 403 | 405 | 413 | 416 => ErrorKind::InvalidInput,
            409 => ErrorKind::Conflict,
            502 | 503 => ErrorKind::Unavailable,
            507 => ErrorKind::InsufficientStorage,
            _ => ErrorKind::Internal,
        };
        ApiError::new(kind, e.chain())
    }
}

pub fn routes() -> Router<Arc<Engine>> {
    Router::new()
        .route("/v1/images/pull", post(pull))
        .route("/v1/images/push", post(push))
        .route("/v1/registry/repositories", get(repositories))
        .route("/v1/registry/repositories/{repo}/tags", get(tags))
        .route(
            "/v1/registry/repositories/{repo}/tags/{tag}",
            get(inspect_tag).put(set_tag).delete(remove_tag),
        )
        .route(
            "/v1/registry/repositories/{repo}/manifests/{digest}",
            delete(remove_manifest),
        )
        .route(
            "/v1/registry/repositories/{repo}/tags/{tag}/history",
            get(history),
        )
        .route("/v1/registry/search", get(search))
        .route("/v1/registry/gc", post(gc))
        .route("/v1/registry/edit", post(edit))
        .route("/v1/registry/stats", get(stats))
}

#[derive(OpenApi)]
#[openapi(
    paths(
        pull,
        push,
        repositories,
        tags,
        inspect_tag,
        set_tag,
        remove_tag,
        remove_manifest,
        history,
        search,
        gc,
        edit,
        stats
    ),
    components(schemas(
        PullRequest,
        PushRequest,
        RegistryAuth,
        TransferProgress,
        RepositorySummary,
        RegistryTag,
        RegistryTagInspect,
        RegistryLayer,
        RegistryImageStep,
        RegistryIndexEntry,
        RegistrySetTagRequest,
        TagHistoryEntry,
        RegistryGcReport,
        RegistryEditRequest,
        RegistryEditReport,
        RegistryStats
    ))
)]
pub struct RegistryDoc;

fn creds(a: Option<RegistryAuth>) -> Option<Credentials> {
    a.map(|a| Credentials {
        username: a.username,
        password: a.password,
    })
}

/// Runs a transfer, streaming its progress and then one `complete` or `error` line.
fn progress_stream<F>(work: impl FnOnce(transfer::Progress) -> F + Send + 'static) -> Response
where
    F: std::future::Future<Output = Result<String, RemoteError>> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<TransferProgress>();
    let sender = tx.clone();
    let progress: transfer::Progress = Arc::new(move |p| {
        let _ = sender.send(p);
    });
    tokio::spawn(async move {
        let last = match work(progress).await {
            Ok(message) => TransferProgress {
                status: "complete".into(),
                message: Some(message),
                ..Default::default()
            },
            Err(e) => TransferProgress {
                status: "error".into(),
                message: Some(e.chain()),
                ..Default::default()
            },
        };
        let _ = tx.send(last);
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        let p = rx.recv().await?;
        let mut line = serde_json::to_vec(&p).expect("json");
        line.push(b'\n');
        Some((Ok::<_, std::io::Error>(line), rx))
    });
    (
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(stream),
    )
        .into_response()
}

/// Pulls an image from a registry (mirrors first), streaming progress as ndjson.
#[utoipa::path(post, path = "/v1/images/pull", request_body = PullRequest,
    responses((status = 200, description = "ndjson lines of TransferProgress; the last is `complete` (message: image ID) or `error`", body = TransferProgress),
        (status = 400, body = ErrorBody)))]
async fn pull(Ctx(ctx): Ctx, State(e): Shared, J(req): J<PullRequest>) -> ApiResult<Response> {
    let reference: ImageRef = req
        .reference
        .parse()
        .map_err(|err: pier_api::reference::RefError| ApiError::invalid(err.to_string()))?;
    Ok(progress_stream(move |p| async move {
        let (id, _) = e.pull_image(&ctx, &reference, creds(req.auth), p).await?;
        Ok(id.to_string())
    }))
}

/// Pushes a local image (named `registry/repository:tag`) to its registry, streaming
/// progress as ndjson.
#[utoipa::path(post, path = "/v1/images/push", request_body = PushRequest,
    responses((status = 200, description = "ndjson lines of TransferProgress; the last is `complete` (message: manifest digest) or `error`", body = TransferProgress),
        (status = 400, body = ErrorBody)))]
async fn push(Ctx(ctx): Ctx, State(e): Shared, J(req): J<PushRequest>) -> ApiResult<Response> {
    let target: ImageRef = req
        .reference
        .parse()
        .map_err(|err: pier_api::reference::RefError| ApiError::invalid(err.to_string()))?;
    Ok(progress_stream(move |p| async move {
        let (d, _) = e
            .push_image(&ctx, &req.reference, &target, creds(req.auth), p)
            .await?;
        Ok(d.to_string())
    }))
}

/// Repositories of the built-in registry.
#[utoipa::path(get, path = "/v1/registry/repositories", responses((status = 200, body = [RepositorySummary])))]
async fn repositories(State(e): Shared) -> ApiResult<Json<Vec<RepositorySummary>>> {
    Ok(Json(
        blocking(move || Ok(e.registry.repository_summaries()?)).await?,
    ))
}

/// Tags of a repository (URL-encode the slashes of its name) with digest, size, created
/// time, platforms and labels.
#[utoipa::path(get, path = "/v1/registry/repositories/{repo}/tags", params(("repo" = String, Path)),
    responses((status = 200, body = [RegistryTag]), (status = 404, body = ErrorBody)))]
async fn tags(State(e): Shared, Path(repo): Path<String>) -> ApiResult<Json<Vec<RegistryTag>>> {
    Ok(Json(
        blocking(move || Ok(e.registry.tag_details(&repo)?)).await?,
    ))
}

/// One tag in depth: its summary, its image config's runtime part (env, labels, cmd,
/// entrypoint, working directory, user, exposed ports...), its layers with sizes and
/// the steps that made them.
#[utoipa::path(get, path = "/v1/registry/repositories/{repo}/tags/{tag}", params(("repo" = String, Path), ("tag" = String, Path)),
    responses((status = 200, body = RegistryTagInspect), (status = 404, body = ErrorBody)))]
async fn inspect_tag(
    State(e): Shared,
    Path((repo, tag)): Path<(String, String)>,
) -> ApiResult<Json<RegistryTagInspect>> {
    Ok(Json(
        blocking(move || Ok(e.registry.tag_inspect(&repo, &tag)?)).await?,
    ))
}

/// Points a tag at a manifest the repository holds, e.g. an earlier one from the tag's
/// history (a rollback); the history records a `retag`.
#[utoipa::path(put, path = "/v1/registry/repositories/{repo}/tags/{tag}", params(("repo" = String, Path), ("tag" = String, Path)),
    request_body = RegistrySetTagRequest,
    responses((status = 200, body = RegistryTag), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn set_tag(
    State(e): Shared,
    Path((repo, tag)): Path<(String, String)>,
    J(req): J<RegistrySetTagRequest>,
) -> ApiResult<Json<RegistryTag>> {
    Ok(Json(
        blocking(move || Ok(e.registry.set_tag(&repo, &tag, &req.digest)?)).await?,
    ))
}

/// Removes a tag (its manifest stays, reachable by digest, until deleted).
#[utoipa::path(delete, path = "/v1/registry/repositories/{repo}/tags/{tag}", params(("repo" = String, Path), ("tag" = String, Path)),
    responses((status = 204, description = "Removed"), (status = 404, body = ErrorBody)))]
async fn remove_tag(
    State(e): Shared,
    Path((repo, tag)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    blocking(move || Ok(e.registry.delete_tag(&repo, &tag)?)).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Deletes a manifest by digest with the tags pointing at it, which it lists; its blobs
/// stay until a GC finds them unused.
#[utoipa::path(delete, path = "/v1/registry/repositories/{repo}/manifests/{digest}", params(("repo" = String, Path), ("digest" = String, Path)),
    responses((status = 200, body = [String], description = "The tags removed with it"), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn remove_manifest(
    State(e): Shared,
    Path((repo, digest)): Path<(String, String)>,
) -> ApiResult<Json<Vec<String>>> {
    Ok(Json(
        blocking(move || Ok(e.registry.delete_digest(&repo, &digest)?)).await?,
    ))
}

/// Which manifests a tag pointed to, and when, oldest first.
#[utoipa::path(get, path = "/v1/registry/repositories/{repo}/tags/{tag}/history", params(("repo" = String, Path), ("tag" = String, Path)),
    responses((status = 200, body = [TagHistoryEntry]), (status = 404, body = ErrorBody)))]
async fn history(
    State(e): Shared,
    Path((repo, tag)): Path<(String, String)>,
) -> ApiResult<Json<Vec<TagHistoryEntry>>> {
    Ok(Json(
        blocking(move || Ok(e.registry.history(&repo, &tag)?)).await?,
    ))
}

/// Tags by repository name and by label.
#[utoipa::path(get, path = "/v1/registry/search", params(RegistrySearchQuery), responses((status = 200, body = [RegistryTag])))]
async fn search(
    State(e): Shared,
    Q(q): Q<RegistrySearchQuery>,
) -> ApiResult<Json<Vec<RegistryTag>>> {
    Ok(Json(
        blocking(move || Ok(e.registry.search(q.name.as_deref(), q.label.as_deref())?)).await?,
    ))
}

/// Removes blobs no manifest references (sparing recent uploads) and frees their space.
#[utoipa::path(post, path = "/v1/registry/gc", params(RegistryGcQuery), responses((status = 200, body = RegistryGcReport)))]
async fn gc(State(e): Shared, Q(q): Q<RegistryGcQuery>) -> ApiResult<Json<RegistryGcReport>> {
    let grace = std::time::Duration::from_secs(q.grace_secs.unwrap_or(3600));
    Ok(Json(
        blocking(move || Ok(e.registry.collect_garbage(grace)?)).await?,
    ))
}

/// Changes an image's config in the registry (env, labels, cmd, entrypoint, working
/// directory, user, exposed ports): a new config and manifest over the same layers.
#[utoipa::path(post, path = "/v1/registry/edit", request_body = RegistryEditRequest,
    responses((status = 200, body = RegistryEditReport), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn edit(
    State(e): Shared,
    J(req): J<RegistryEditRequest>,
) -> ApiResult<Json<RegistryEditReport>> {
    Ok(Json(blocking(move || Ok(e.registry.edit(&req)?)).await?))
}

/// Blob bytes the registry received and sent since the daemon started.
#[utoipa::path(get, path = "/v1/registry/stats", responses((status = 200, body = RegistryStats)))]
async fn stats(State(e): Shared) -> Json<RegistryStats> {
    Json(e.registry.stats())
}
