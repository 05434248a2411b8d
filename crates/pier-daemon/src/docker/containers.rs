//! Containers: create (the body mapped by [`pier_api::docker::create`]), list with
//! Docker's filters (the engine's [`pier_engine::listing`]),
//! inspect, and the lifecycle calls.
//! Names and IDs are resolved here first, so a miss is Docker's "No such container".

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::Path;
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{delete, get, post};
use axum::Router;
use pier_api::containers::ContainerStatus;
use pier_api::networks::NetworkConnect;
use serde_json::{json, Value};

use pier_api::docker::container as inspect;
use pier_api::docker::create::{to_create, CreateBody, Lookups};
use pier_api::volumes::VolumeCreate;
use pier_engine::listing::{ContainerQuery, CONTAINER_FILTERS};
use pier_engine::views::ImageConfigs;

use super::params::Params;
use super::{blocking, container, json, DResult, DState, Docker, DockerError};
use crate::api::Ctx;

pub fn routes() -> Router<Arc<Docker>> {
    Router::new()
        .route("/containers/create", post(create))
        .route("/containers/json", get(list))
        .route("/containers/prune", post(prune))
        .route("/containers/{id}/json", get(inspect_one))
        .route("/containers/{id}", delete(remove))
        .route("/containers/{id}/{alias}", delete(remove_link))
        .route("/containers/{id}/start", post(start))
        .route("/containers/{id}/stop", post(stop))
        .route("/containers/{id}/restart", post(restart))
        .route("/containers/{id}/kill", post(kill))
        .route("/containers/{id}/pause", post(pause))
        .route("/containers/{id}/unpause", post(unpause))
        .route("/containers/{id}/rename", post(rename))
}

/// `POST /containers/create?name=`: Docker's body as Pier's request; extra networks of
/// `EndpointsConfig` are connected after the create. In a pool, a request with neither
/// extra networks nor labelled volumes is placed as the native create is (the chosen
/// host's agent pulls a missing image); one with them is made on this host, unplaced.
async fn create(
    Ctx(ctx): Ctx,
    state: DState,
    cluster: Option<axum::Extension<Arc<crate::cluster::Cluster>>>,
    p: Params,
    body: Bytes,
) -> DResult<Response> {
    let d = state.0;
    let b: CreateBody = serde_json::from_slice(&body)
        .map_err(|e| DockerError::bad_request(format!("invalid container config: {e}")))?;
    let name = p
        .nonempty("name")
        .map(|n| n.trim_start_matches('/').to_string());
    let converted = {
        let gateway = |net: &str| {
            let networks = &d.engine.networks;
            networks
                .get(&ctx.project, net)
                .ok()
                .map(|n| n.gateway.to_string())
        };
        let look = Lookups {
            gateway: &gateway,
            source_exists: &pier_engine::system::host_path_exists,
        };
        to_create(b, name, &look)?
    };
    if let Some(axum::Extension(cluster)) = cluster.filter(|c| c.in_pool()) {
        if converted.endpoints.is_empty() && converted.labelled_volumes.is_empty() {
            let created = cluster.create(&ctx, converted.request).await?;
            return Ok(json(
                StatusCode::CREATED,
                json!({"Id": created.id, "Warnings": []}),
            ));
        }
    }
    for (name, labels) in converted.labelled_volumes {
        let v = VolumeCreate {
            name: Some(name),
            labels,
            ..Default::default()
        };
        d.engine.ensure_volume(&ctx, v)?;
    }
    let (req, extra_networks) = (converted.request, converted.endpoints);
    // Checked before anything is made, so that a bad address leaves no container behind.
    let extra_networks = extra_networks
        .into_iter()
        .map(|(net, ep)| {
            Ok((
                net,
                NetworkConnect {
                    ip: ep.ip()?,
                    ip6: ep.ip6()?,
                    aliases: ep.aliases(),
                    mac_address: ep.mac()?,
                    options: ep.options()?,
                    ..Default::default()
                },
            ))
        })
        .collect::<DResult<Vec<_>>>()?;
    let image = req.image.clone();
    super::image(&d, &image, &ctx.project)?;
    let d2 = d.clone();
    let ctx2 = ctx.clone();
    let created = blocking(move || Ok(d2.engine.instances.create(&ctx2, req)?)).await?;
    for (net, r) in extra_networks {
        let r = NetworkConnect {
            container: created.id.to_string(),
            ..r
        };
        if let Err(e) = d.engine.instances.connect(&ctx, &net, r).await {
            let _ = d
                .engine
                .instances
                .remove(&ctx, &created.id, true, true)
                .await;
            return Err(e.into());
        }
    }
    Ok(json(
        StatusCode::CREATED,
        json!({"Id": created.id, "Warnings": []}),
    ))
}

/// `GET /containers/json?all=&limit=&size=&filters=`.
async fn list(Ctx(ctx): Ctx, state: DState, p: Params) -> DResult<Response> {
    let d = state.0;
    let filters = p.filters()?;
    pier_engine::filters::check(&filters, CONTAINER_FILTERS)?;
    let all = p.bool("all") || filters.contains_key("status") || filters.contains_key("exited");
    let q = ContainerQuery {
        all,
        limit: p.num("limit")?,
        filters,
    };
    let size = p.bool("size");
    let v = blocking(move || {
        let mut out = Vec::new();
        for (c, facts) in d.engine.list_containers(&ctx, &q)? {
            let mut s = inspect::summary(&c, &facts);
            if size {
                let (rw, rootfs) = d.engine.container_sizes(&c);
                s["SizeRw"] = json!(rw);
                s["SizeRootFs"] = json!(rootfs);
            }
            out.push(s);
        }
        Ok(Value::Array(out))
    })
    .await?;
    Ok(json(StatusCode::OK, v))
}

/// `GET /containers/{id}/json?size=`.
async fn inspect_one(
    Ctx(ctx): Ctx,
    state: DState,
    Path(id): Path<String>,
    p: Params,
) -> DResult<Response> {
    let d = state.0;
    let size = p.bool("size");
    let v = blocking(move || {
        let c = container(&d, &id, &ctx)?;
        let facts = d.engine.container_facts(&c, &mut ImageConfigs::default());
        let mut v = inspect::inspect(&c, &facts, &d.engine.host_paths(&c));
        if size {
            let (rw, rootfs) = d.engine.container_sizes(&c);
            v["SizeRw"] = json!(rw);
            v["SizeRootFs"] = json!(rootfs);
        }
        Ok(v)
    })
    .await?;
    Ok(json(StatusCode::OK, v))
}

fn no_content() -> Response {
    axum::response::IntoResponse::into_response(StatusCode::NO_CONTENT)
}

fn not_modified() -> Response {
    axum::response::IntoResponse::into_response(StatusCode::NOT_MODIFIED)
}

/// Docker's exit codes for a command that cannot run are read from the message by the
/// CLI (127 when it names "no such file or directory" or "executable file not found", 126
/// for "permission denied"); Pier's message gets the words it needs.
fn start_error(e: pier_engine::EngineError) -> DockerError {
    let code = e.exit_code();
    let mut d: DockerError = e.into();
    // The CLI compares case-sensitively.
    let m = d.message.clone();
    match code {
        Some(127)
            if !m.contains("executable file not found")
                && !m.contains("no such file or directory") =>
        {
            d.message.push_str(": no such file or directory");
        }
        Some(126) if !m.contains("permission denied") => d.message.push_str(": permission denied"),
        _ => {}
    }
    d
}

/// `POST /containers/{id}/start`: 304 when it already runs.
async fn start(Ctx(ctx): Ctx, state: DState, Path(id): Path<String>) -> DResult<Response> {
    let d = state.0;
    let c = container(&d, &id, &ctx)?;
    if inspect::is_running(&c) {
        return Ok(not_modified());
    }
    d.engine
        .instances
        .start(&ctx, &c.id)
        .await
        .map_err(start_error)?;
    Ok(no_content())
}

/// `POST /containers/{id}/stop?t=&signal=`: 304 when it is not running.
async fn stop(
    Ctx(ctx): Ctx,
    state: DState,
    Path(id): Path<String>,
    p: Params,
) -> DResult<Response> {
    let d = state.0;
    let c = container(&d, &id, &ctx)?;
    if !inspect::is_running(&c) && c.state.status != ContainerStatus::Restarting {
        return Ok(not_modified());
    }
    let t: Option<i64> = p.num("t")?;
    d.engine
        .instances
        .stop(
            &ctx,
            &c.id,
            t.map(|t| t.max(0) as u64),
            p.nonempty("signal"),
        )
        .await?;
    Ok(no_content())
}

/// `POST /containers/{id}/restart?t=&signal=`.
async fn restart(
    Ctx(ctx): Ctx,
    state: DState,
    Path(id): Path<String>,
    p: Params,
) -> DResult<Response> {
    let d = state.0;
    let c = container(&d, &id, &ctx)?;
    let t: Option<i64> = p.num("t")?;
    d.engine
        .instances
        .stop(
            &ctx,
            &c.id,
            t.map(|t| t.max(0) as u64),
            p.nonempty("signal"),
        )
        .await?;
    d.engine
        .instances
        .start(&ctx, &c.id)
        .await
        .map_err(start_error)?;
    Ok(no_content())
}

/// `POST /containers/{id}/kill?signal=`.
async fn kill(
    Ctx(ctx): Ctx,
    state: DState,
    Path(id): Path<String>,
    p: Params,
) -> DResult<Response> {
    let d = state.0;
    let c = container(&d, &id, &ctx)?;
    if !inspect::is_running(&c) {
        return Err(DockerError::conflict(format!(
            "cannot kill container: {id}: container {} is not running",
            c.id
        )));
    }
    d.engine
        .instances
        .kill(&ctx, &c.id, p.nonempty("signal"))
        .await?;
    Ok(no_content())
}

async fn pause(Ctx(ctx): Ctx, state: DState, Path(id): Path<String>) -> DResult<Response> {
    let d = state.0;
    let c = container(&d, &id, &ctx)?;
    d.engine.instances.pause(&ctx, &c.id, true).await?;
    Ok(no_content())
}

async fn unpause(Ctx(ctx): Ctx, state: DState, Path(id): Path<String>) -> DResult<Response> {
    let d = state.0;
    let c = container(&d, &id, &ctx)?;
    d.engine.instances.pause(&ctx, &c.id, false).await?;
    Ok(no_content())
}

/// `POST /containers/{id}/rename?name=`.
async fn rename(
    Ctx(ctx): Ctx,
    state: DState,
    cluster: Option<axum::Extension<Arc<crate::cluster::Cluster>>>,
    Path(id): Path<String>,
    p: Params,
) -> DResult<Response> {
    let d = state.0;
    let c = container(&d, &id, &ctx)?;
    let name = p
        .nonempty("name")
        .ok_or_else(|| DockerError::bad_request("give the new name as ?name="))?
        .trim_start_matches('/')
        .to_string();
    match cluster {
        // In a pool, a placed instance's name is the pool's too.
        Some(axum::Extension(cluster)) => cluster.rename(&ctx, &d.engine, &c.id, &name).await?,
        None => d.engine.instances.rename(&ctx, &c.id, &name).await?,
    }
    Ok(no_content())
}

/// `DELETE /containers/{id}?force=&v=`: a running container needs `force`.
async fn remove(
    Ctx(ctx): Ctx,
    state: DState,
    Path(id): Path<String>,
    p: Params,
) -> DResult<Response> {
    let d = state.0;
    let c = container(&d, &id, &ctx)?;
    let force = p.bool("force");
    if p.bool("link") {
        return Err(DockerError::bad_request(format!(
            "Conflict, cannot remove the default link name of the container {id}: give the link as CONTAINER/ALIAS"
        )));
    }
    if !force
        && matches!(
            c.state.status,
            ContainerStatus::Running | ContainerStatus::Paused | ContainerStatus::Restarting
        )
    {
        let what = if c.state.status == ContainerStatus::Paused {
            "container is paused and must be unpaused first"
        } else {
            "container is running"
        };
        return Err(DockerError::conflict(format!(
            "cannot remove container \"/{}\": {what}: stop the container before removing or force remove",
            c.name
        )));
    }
    if c.state.status == ContainerStatus::Restarting {
        d.engine.instances.stop(&ctx, &c.id, Some(0), None).await?;
    }
    d.engine
        .instances
        .remove(&ctx, &c.id, force, p.bool("v"))
        .await?;
    Ok(no_content())
}

/// `DELETE /containers/{name}/{alias}?link=1`: removes a legacy link.
async fn remove_link(
    Ctx(ctx): Ctx,
    state: DState,
    Path((id, alias)): Path<(String, String)>,
    p: Params,
) -> DResult<Response> {
    let d = state.0;
    if !p.bool("link") {
        return Err(DockerError::not_found(format!(
            "No such container: {id}/{alias}"
        )));
    }
    let c = container(&d, &id, &ctx)?;
    d.engine.instances.remove_link(&ctx, &c.id, &alias).await?;
    Ok(no_content())
}

/// `POST /containers/prune`.
async fn prune(Ctx(ctx): Ctx, state: DState, p: Params) -> DResult<Response> {
    let d = state.0;
    let filters = p.filters()?;
    super::params::check_filters(&filters, &["label", "until"])?;
    let until = filters
        .get("until")
        .and_then(|v| v.first())
        .map(|u| {
            super::params::parse_time(u).ok_or_else(|| {
                DockerError::bad_request(format!(
                    "invalid until {u:?}: give Unix seconds or RFC 3339"
                ))
            })
        })
        .transpose()?;
    let (deleted, reclaimed) = d.engine.prune_containers(&ctx, &filters, until).await?;
    Ok(json(
        StatusCode::OK,
        json!({"ContainersDeleted": deleted, "SpaceReclaimed": reclaimed}),
    ))
}
