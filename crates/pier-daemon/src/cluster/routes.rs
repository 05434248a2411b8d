//! The native API's cluster and host routes (`/v1/cluster/...`, `/v1/hosts/...`), thin
//! over [`Cluster`], and their OpenAPI document.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path as UrlPath, Query, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use pier_api::cluster::{
    ClusterInit, ClusterJoin, ClusterLeave, ClusterStatus, HostInfo, HostMoves, HostResources,
    InstanceKept, InstanceMove, JoinCommand, Joined, Left, TokenRequest,
};
use pier_cluster::join;

use super::Cluster;
use crate::error::ApiError;

/// The native API's cluster and host routes (the root-only socket's).
pub fn routes(c: Arc<Cluster>) -> Router {
    Router::new()
        .route("/v1/cluster/init", post(init))
        .route("/v1/cluster/join", post(join_pool))
        .route("/v1/cluster/tokens", post(token))
        .route("/v1/cluster/leave", post(leave))
        .with_state(c.clone())
        .merge(host_routes(c))
}

/// The host routes alone: listing, inspecting, cordoning and removing the pool's hosts,
/// also served to the dashboard (making or joining a pool is not).
pub fn host_routes(c: Arc<Cluster>) -> Router {
    Router::new()
        .route("/v1/cluster", get(status))
        .route("/v1/hosts", get(list_hosts))
        .route("/v1/hosts/{id}", get(inspect_host).delete(remove_host))
        .route("/v1/hosts/{id}/cordon", post(cordon_host))
        .route("/v1/hosts/{id}/uncordon", post(uncordon_host))
        .route("/v1/hosts/{id}/drain", post(drain_host))
        .route("/v1/hosts/{id}/evacuate", post(evacuate_host))
        .with_state(c)
}

type Body<T> = Result<Json<T>, axum::extract::rejection::JsonRejection>;

/// Makes a pool of this host and answers with a join command.
#[utoipa::path(post, path = "/v1/cluster/init", request_body = ClusterInit,
    responses((status = 200, body = JoinCommand), (status = 409, body = pier_api::ErrorBody)))]
async fn init(
    State(c): State<Arc<Cluster>>,
    body: Body<ClusterInit>,
) -> Result<Json<JoinCommand>, ApiError> {
    let Json(req) = body?;
    c.init(req).await.map(Json)
}

/// Makes this host a member of the pool at `addr` with a join token.
#[utoipa::path(post, path = "/v1/cluster/join", request_body = ClusterJoin,
    responses((status = 200, body = Joined), (status = 400, body = pier_api::ErrorBody), (status = 409, body = pier_api::ErrorBody)))]
async fn join_pool(
    State(c): State<Arc<Cluster>>,
    body: Body<ClusterJoin>,
) -> Result<Json<Joined>, ApiError> {
    let Json(req) = body?;
    c.join(req).await.map(Json)
}

/// Takes this host out of its pool; it goes on as a host of its own.
#[utoipa::path(post, path = "/v1/cluster/leave", request_body = ClusterLeave,
    responses((status = 200, body = Left), (status = 409, body = pier_api::ErrorBody), (status = 503, body = pier_api::ErrorBody)))]
async fn leave(
    State(c): State<Arc<Cluster>>,
    body: Body<ClusterLeave>,
) -> Result<Json<Left>, ApiError> {
    let Json(req) = body?;
    c.leave(req).await.map(Json)
}

/// A new one-time join token, with the command that uses it.
#[utoipa::path(post, path = "/v1/cluster/tokens", request_body = TokenRequest,
    responses((status = 200, body = JoinCommand), (status = 409, body = pier_api::ErrorBody)))]
async fn token(
    State(c): State<Arc<Cluster>>,
    body: Body<TokenRequest>,
) -> Result<Json<JoinCommand>, ApiError> {
    let Json(req) = body?;
    let ttl = match req.ttl_secs {
        None => join::DEFAULT_TTL,
        Some(s @ 1..=604_800) => Duration::from_secs(s),
        Some(s) => {
            return Err(ApiError::invalid(format!(
                "a token's lifetime of {s} s is out of range: give 1 s to 7 days"
            )))
        }
    };
    let m = c.member_or_refuse()?;
    c.token_of(&m, ttl).await.map(Json)
}

/// This daemon's place in a pool, if it is in one.
#[utoipa::path(get, path = "/v1/cluster", responses((status = 200, body = ClusterStatus)))]
async fn status(State(c): State<Arc<Cluster>>) -> Json<ClusterStatus> {
    Json(c.status())
}

/// The pool's hosts.
#[utoipa::path(get, path = "/v1/hosts", responses((status = 200, body = Vec<HostInfo>)))]
async fn list_hosts(State(c): State<Arc<Cluster>>) -> Result<Json<Vec<HostInfo>>, ApiError> {
    c.hosts().await.map(Json)
}

/// One host of the pool.
#[utoipa::path(get, path = "/v1/hosts/{id}", params(("id" = String, Path)),
    responses((status = 200, body = HostInfo), (status = 404, body = pier_api::ErrorBody)))]
async fn inspect_host(
    State(c): State<Arc<Cluster>>,
    UrlPath(id): UrlPath<String>,
) -> Result<Json<HostInfo>, ApiError> {
    c.host(id).await.map(Json)
}

/// Stops placements on a host; it keeps its instances.
#[utoipa::path(post, path = "/v1/hosts/{id}/cordon", params(("id" = String, Path)),
    responses((status = 200, body = HostInfo), (status = 404, body = pier_api::ErrorBody)))]
async fn cordon_host(
    State(c): State<Arc<Cluster>>,
    UrlPath(id): UrlPath<String>,
) -> Result<Json<HostInfo>, ApiError> {
    c.cordon(id, true).await.map(Json)
}

/// Opens a cordoned host to placements again.
#[utoipa::path(post, path = "/v1/hosts/{id}/uncordon", params(("id" = String, Path)),
    responses((status = 200, body = HostInfo), (status = 404, body = pier_api::ErrorBody)))]
async fn uncordon_host(
    State(c): State<Arc<Cluster>>,
    UrlPath(id): UrlPath<String>,
) -> Result<Json<HostInfo>, ApiError> {
    c.cordon(id, false).await.map(Json)
}

/// Cordons a host and moves its instances that have a restart policy to other hosts.
#[utoipa::path(post, path = "/v1/hosts/{id}/drain", params(("id" = String, Path)),
    responses((status = 200, body = HostMoves), (status = 404, body = pier_api::ErrorBody)))]
async fn drain_host(
    State(c): State<Arc<Cluster>>,
    UrlPath(id): UrlPath<String>,
) -> Result<Json<HostMoves>, ApiError> {
    c.drain(id).await.map(Json)
}

/// Moves a down host's instances that have a restart policy to other hosts.
#[utoipa::path(post, path = "/v1/hosts/{id}/evacuate", params(("id" = String, Path)),
    responses((status = 200, body = HostMoves), (status = 409, body = pier_api::ErrorBody)))]
async fn evacuate_host(
    State(c): State<Arc<Cluster>>,
    UrlPath(id): UrlPath<String>,
) -> Result<Json<HostMoves>, ApiError> {
    c.evacuate(id).await.map(Json)
}

#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
pub struct RemoveQuery {
    /// Remove it even when it is up or has instances.
    #[serde(default)]
    force: bool,
}

/// Removes a down host from the pool.
#[utoipa::path(delete, path = "/v1/hosts/{id}", params(("id" = String, Path), RemoveQuery),
    responses((status = 204), (status = 409, body = pier_api::ErrorBody)))]
async fn remove_host(
    State(c): State<Arc<Cluster>>,
    UrlPath(id): UrlPath<String>,
    Query(q): Query<RemoveQuery>,
) -> Result<axum::http::StatusCode, ApiError> {
    c.remove(id, q.force).await?;
    Ok(axum::http::StatusCode::NO_CONTENT)
}

/// The OpenAPI document of [`routes`].
#[derive(utoipa::OpenApi)]
#[openapi(
    paths(
        status,
        init,
        join_pool,
        token,
        leave,
        list_hosts,
        inspect_host,
        cordon_host,
        uncordon_host,
        drain_host,
        evacuate_host,
        remove_host
    ),
    components(schemas(
        ClusterStatus,
        ClusterInit,
        ClusterJoin,
        JoinCommand,
        Joined,
        HostInfo,
        HostResources,
        HostMoves,
        InstanceMove,
        InstanceKept,
        TokenRequest,
        ClusterLeave,
        Left
    ))
)]
pub struct ClusterDoc;
