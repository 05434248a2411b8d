//! Networks in Docker's shape: list, inspect, create, connect, disconnect, remove, prune.
//! Pier's bridge networks map one to one; Docker's predefined `host` and `none` are shown
//! too (they are modes of a container in Pier, not records), and cannot be removed. The
//! shapes and bodies are [`pier_api::docker::networks`]'s; listing filters and prune
//! decisions the engine's ([`pier_engine::networks_query`]).

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::Path;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use pier_api::docker::networks::{
    network_json, predefined_json, ConnectBody, CreateBody, PREDEFINED,
};
use pier_api::networks::{NetworkConnect, NetworkInspect};
use pier_api::ErrorKind;
use pier_engine::networks::DEFAULT_NETWORK;
use pier_engine::networks_query::{network_matches, NetworkFacts, NETWORK_FILTERS};
use pier_engine::RequestContext;
use serde_json::{json, Value};

use super::params::{check_filters, parse_time, Params};
use super::system::emit;
use super::{blocking, container, json, DResult, DState, Docker, DockerError};
use crate::api::Ctx;

pub fn routes() -> Router<Arc<Docker>> {
    Router::new()
        .route("/networks", get(list))
        .route("/networks/create", post(create))
        .route("/networks/prune", post(prune))
        .route("/networks/{id}", get(inspect).delete(remove))
        .route("/networks/{id}/connect", post(connect))
        .route("/networks/{id}/disconnect", post(disconnect))
}

/// Finds a network, with Docker's "not found" message.
fn network(d: &Docker, name: &str, ctx: &RequestContext) -> DResult<NetworkInspect> {
    d.engine
        .instances
        .networks
        .inspect(ctx, name)
        .map_err(|e| match e.kind() {
            ErrorKind::NotFound => DockerError::not_found(format!("network {name} not found")),
            _ => e.into(),
        })
}

/// `GET /networks?filters=`.
async fn list(Ctx(ctx): Ctx, state: DState, p: Params) -> DResult<Response> {
    let d = state.0;
    let filters = p.filters()?;
    check_filters(&filters, NETWORK_FILTERS)?;
    let v = blocking(move || {
        let nets = d.engine.networks.list(&ctx)?;
        let used = d.engine.networks_in_use(&ctx)?;
        let mut out = Vec::new();
        for n in &nets {
            let facts = NetworkFacts {
                name: &n.name,
                id: &n.id,
                driver: &n.driver,
                labels: &n.labels,
                builtin: n.name == DEFAULT_NETWORK,
                used: used.contains(&n.id),
            };
            if network_matches(&filters, facts) {
                out.push(network_json(n, None));
            }
        }
        for name in PREDEFINED {
            let v = predefined_json(name);
            let facts = NetworkFacts {
                name,
                id: v["Id"].as_str().unwrap_or(""),
                driver: v["Driver"].as_str().unwrap_or(""),
                labels: &BTreeMap::new(),
                builtin: true,
                used: false,
            };
            if network_matches(&filters, facts) {
                out.push(v);
            }
        }
        Ok(Value::Array(out))
    })
    .await?;
    Ok(json(StatusCode::OK, v))
}

/// `GET /networks/{id}?scope=`: a network asked for in a scope it is not of (`swarm`
/// for a pool network, `local` for the others) is not found, as on Docker.
async fn inspect(
    Ctx(ctx): Ctx,
    state: DState,
    Path(id): Path<String>,
    p: Params,
) -> DResult<Response> {
    let d = state.0;
    let want_scope = p.nonempty("scope").map(str::to_string);
    if PREDEFINED.contains(&id.as_str()) {
        if want_scope.as_deref().is_some_and(|s| s != "local") {
            return Err(DockerError::not_found(format!("network {id} not found")));
        }
        return Ok(json(StatusCode::OK, predefined_json(&id)));
    }
    let v = blocking(move || {
        let n = network(&d, &id, &ctx)?;
        if want_scope
            .as_deref()
            .is_some_and(|s| s != pier_api::docker::networks::scope(&n))
        {
            return Err(DockerError::not_found(format!("network {id} not found")));
        }
        let container = |id: &str| d.engine.instances.get(&ctx, id).ok();
        Ok(network_json(&n, Some(&container)))
    })
    .await?;
    Ok(json(StatusCode::OK, v))
}

/// `POST /networks/create`.
async fn create(Ctx(ctx): Ctx, state: DState, body: Bytes) -> DResult<Response> {
    let d = state.0;
    let b: CreateBody = serde_json::from_slice(&body)
        .map_err(|e| DockerError::bad_request(format!("invalid network config: {e}")))?;
    let req = b.into_request(d.engine.instances.networks.in_pool())?;
    let name = req.name.clone();
    let n = d
        .engine
        .instances
        .networks
        .create(&ctx, req)
        .await
        .map_err(|e| match e.kind() {
            ErrorKind::Conflict if e.message().contains("already exists") => {
                DockerError::conflict(format!("network with name {name} already exists"))
            }
            ErrorKind::Conflict if e.message().contains("predefined") => DockerError::new(
                StatusCode::FORBIDDEN,
                format!("operation is not permitted on predefined {name} network"),
            ),
            _ => e.into(),
        })?;
    emit(
        &d,
        "network",
        "create",
        &n.id,
        &[("name", &n.name), ("type", &n.driver)],
        &ctx,
    );
    Ok(json(
        StatusCode::CREATED,
        json!({"Id": n.id, "Warning": ""}),
    ))
}

/// `DELETE /networks/{id}`.
async fn remove(Ctx(ctx): Ctx, state: DState, Path(id): Path<String>) -> DResult<Response> {
    let d = state.0;
    if PREDEFINED.contains(&id.as_str()) || id == DEFAULT_NETWORK {
        return Err(DockerError::new(
            StatusCode::FORBIDDEN,
            format!("{id} is a pre-defined network and cannot be removed"),
        ));
    }
    let n = network(&d, &id, &ctx)?;
    d.engine
        .instances
        .networks
        .remove(&ctx, &n.id)
        .await
        .map_err(|e| match e.kind() {
            ErrorKind::Conflict => DockerError::new(
                StatusCode::FORBIDDEN,
                format!("error while removing network: {}", e.message()),
            ),
            _ => e.into(),
        })?;
    emit(
        &d,
        "network",
        "destroy",
        &n.id,
        &[("name", &n.name), ("type", &n.driver)],
        &ctx,
    );
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `POST /networks/{id}/connect`.
async fn connect(
    Ctx(ctx): Ctx,
    state: DState,
    Path(id): Path<String>,
    body: Bytes,
) -> DResult<Response> {
    let d = state.0;
    let b: ConnectBody = serde_json::from_slice(&body)
        .map_err(|e| DockerError::bad_request(format!("invalid connect request: {e}")))?;
    if PREDEFINED.contains(&id.as_str()) {
        return Err(DockerError::bad_request(format!(
            "a running container cannot be connected to the {id} network: choose it when the container is created"
        )));
    }
    let n = network(&d, &id, &ctx)?;
    let c = container(&d, &b.container, &ctx)?;
    let ep = b.endpoint_config.unwrap_or_default();
    let req = NetworkConnect {
        container: c.id.clone(),
        ip: ep.ip()?,
        aliases: ep.aliases(),
        ip6: ep.ip6()?,
        mac_address: ep.mac()?,
        options: ep.options()?,
    };
    d.engine
        .instances
        .connect(&ctx, &n.id, req)
        .await
        .map_err(|e| match e.kind() {
            ErrorKind::Conflict if e.message().contains("already on network") => DockerError::new(
                StatusCode::FORBIDDEN,
                format!(
                    "endpoint with name {} already exists in network {}",
                    c.name, n.name
                ),
            ),
            _ => e.into(),
        })?;
    Ok(StatusCode::OK.into_response())
}

/// `POST /networks/{id}/disconnect`.
async fn disconnect(
    Ctx(ctx): Ctx,
    state: DState,
    Path(id): Path<String>,
    body: Bytes,
) -> DResult<Response> {
    let d = state.0;
    let b: ConnectBody = serde_json::from_slice(&body)
        .map_err(|e| DockerError::bad_request(format!("invalid disconnect request: {e}")))?;
    // `Force` changes nothing: a disconnect never waits on the container.
    let n = network(&d, &id, &ctx)?;
    let c = container(&d, &b.container, &ctx)?;
    d.engine.instances.disconnect(&ctx, &n.id, &c.id).await?;
    Ok(StatusCode::OK.into_response())
}

/// `POST /networks/prune?filters=`.
async fn prune(Ctx(ctx): Ctx, state: DState, p: Params) -> DResult<Response> {
    let d = state.0;
    let filters = p.filters()?;
    check_filters(&filters, &["label", "until"])?;
    let until = filters
        .get("until")
        .and_then(|v| v.first())
        .map(|u| {
            parse_time(u).ok_or_else(|| DockerError::bad_request(format!("invalid until {u:?}")))
        })
        .transpose()?;
    let removed = d.engine.prune_networks(&ctx, &filters, until).await?;
    let mut deleted = Vec::new();
    for n in removed {
        emit(
            &d,
            "network",
            "destroy",
            &n.id,
            &[("name", &n.name), ("type", &n.driver)],
            &ctx,
        );
        deleted.push(n.name);
    }
    Ok(json(StatusCode::OK, json!({"NetworksDeleted": deleted})))
}
