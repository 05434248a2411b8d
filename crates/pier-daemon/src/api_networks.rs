//! The network part of the native API (`/v1/networks/...`).

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use pier_api::networks::{NetworkConnect, NetworkCreate, NetworkDisconnect, NetworkInspect};
use pier_api::ErrorBody;
use serde::Deserialize;
use utoipa::{IntoParams, OpenApi};

use crate::api::{blocking, Ctx, Engine, Shared, J, Q};
use crate::error::{ApiError, ApiResult};

pub fn routes() -> Router<Arc<Engine>> {
    Router::new()
        .route("/v1/networks", get(list).post(create))
        .route("/v1/networks/prune", post(prune))
        .route("/v1/networks/{id}", get(inspect).delete(remove))
        .route("/v1/networks/{id}/connect", post(connect))
        .route("/v1/networks/{id}/disconnect", post(disconnect))
}

#[derive(OpenApi)]
#[openapi(
    paths(list, create, inspect, remove, prune, connect, disconnect),
    components(schemas(
        NetworkCreate,
        NetworkInspect,
        NetworkConnect,
        NetworkDisconnect,
        pier_api::networks::Endpoint,
        pier_api::networks::PortBinding,
        pier_api::networks::NetworkMode
    ))
)]
pub struct NetworksDoc;

#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields, default)]
#[into_params(parameter_in = Query)]
struct ListQuery {
    /// Fill in each network's running containers (`containers`), as inspecting it does.
    #[param(required = false)]
    containers: bool,
}

/// Lists networks by name; with `containers=true`, each with its running containers.
#[utoipa::path(get, path = "/v1/networks", params(ListQuery), responses((status = 200, body = [NetworkInspect])))]
async fn list(
    Ctx(ctx): Ctx,
    State(e): Shared,
    Q(q): Q<ListQuery>,
) -> ApiResult<Json<Vec<NetworkInspect>>> {
    let n = e.networks.clone();
    Ok(Json(
        blocking(move || {
            if q.containers {
                n.list_with_endpoints(&ctx)
            } else {
                n.list(&ctx)
            }
            .map_err(ApiError::from)
        })
        .await?,
    ))
}

/// Creates a bridge network.
#[utoipa::path(post, path = "/v1/networks", request_body = NetworkCreate,
    responses((status = 201, body = NetworkInspect), (status = 400, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn create(
    Ctx(ctx): Ctx,
    State(e): Shared,
    J(req): J<NetworkCreate>,
) -> ApiResult<(StatusCode, Json<NetworkInspect>)> {
    let n = e.networks.create(&ctx, req).await?;
    e.emit(
        &ctx,
        "network",
        "create",
        &n.id,
        &[("name", &n.name), ("type", "bridge")],
    );
    Ok((StatusCode::CREATED, Json(n)))
}

/// Shows a network with its running containers.
#[utoipa::path(get, path = "/v1/networks/{id}", params(("id" = String, Path)),
    responses((status = 200, body = NetworkInspect), (status = 404, body = ErrorBody)))]
async fn inspect(
    Ctx(ctx): Ctx,
    State(e): Shared,
    Path(id): Path<String>,
) -> ApiResult<Json<NetworkInspect>> {
    let n = e.networks.clone();
    Ok(Json(
        blocking(move || n.inspect(&ctx, &id).map_err(ApiError::from)).await?,
    ))
}

/// Removes a network no container uses.
#[utoipa::path(delete, path = "/v1/networks/{id}", params(("id" = String, Path)),
    responses((status = 204), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn remove(Ctx(ctx): Ctx, State(e): Shared, Path(id): Path<String>) -> ApiResult<StatusCode> {
    let n = e.networks.get(ctx.project(), &id)?;
    e.networks.remove(&ctx, &id).await?;
    e.emit(
        &ctx,
        "network",
        "destroy",
        &n.id,
        &[("name", &n.name), ("type", "bridge")],
    );
    Ok(StatusCode::NO_CONTENT)
}

/// Removes every network no container uses; returns their names.
#[utoipa::path(post, path = "/v1/networks/prune", responses((status = 200, body = [String])))]
async fn prune(Ctx(ctx): Ctx, State(e): Shared) -> ApiResult<Json<Vec<String>>> {
    Ok(Json(e.networks.prune(&ctx).await?))
}

/// Connects a container to a network.
#[utoipa::path(post, path = "/v1/networks/{id}/connect", params(("id" = String, Path)), request_body = NetworkConnect,
    responses((status = 204), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn connect(
    Ctx(ctx): Ctx,
    State(e): Shared,
    Path(id): Path<String>,
    J(req): J<NetworkConnect>,
) -> ApiResult<StatusCode> {
    e.instances.connect(&ctx, &id, req).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Disconnects a container from a network.
#[utoipa::path(post, path = "/v1/networks/{id}/disconnect", params(("id" = String, Path)), request_body = NetworkDisconnect,
    responses((status = 204), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn disconnect(
    Ctx(ctx): Ctx,
    State(e): Shared,
    Path(id): Path<String>,
    J(req): J<NetworkDisconnect>,
) -> ApiResult<StatusCode> {
    e.instances.disconnect(&ctx, &id, &req.container).await?;
    Ok(StatusCode::NO_CONTENT)
}
