//! `/volumes` in Docker's terms over the engine's volumes (create, ls, inspect, rm,
//! prune). Docker's mount forms at create are [`pier_api::docker::mounts`]'s; listings,
//! make-if-absent and prune are the engine's ([`pier_engine::volumes_query`]).
//!
//! A named volume is made on first use, as Docker does; `docker volume create` of a name
//! that exists returns it.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::Path;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use pier_api::volumes::{VolumeCreate, VolumeInspect};
use pier_api::ErrorKind;
use pier_engine::volumes_query::VOLUME_FILTERS;
use serde::Deserialize;
use serde_json::{json, Value};

use super::params::{check_filters, Params};
use super::system::emit;
use super::{blocking, json, DResult, DState, Docker, DockerError};
use crate::api::Ctx;
use pier_api::ProjectName;
use pier_engine::RequestContext;

pub fn routes() -> Router<Arc<Docker>> {
    Router::new()
        .route("/volumes", get(list))
        .route("/volumes/create", post(create))
        .route("/volumes/prune", post(prune))
        .route("/volumes/{name}", get(inspect).delete(remove))
}

// ---- /volumes -----------------------------------------------------------------------------

fn volume_json(d: &Docker, v: &VolumeInspect, usage: bool, project: &ProjectName) -> Value {
    let mut o = json!({
        "Name": v.name,
        "Driver": "local",
        "Mountpoint": d.engine.volumes.mountpoint(&v.project, &v.name),
        "CreatedAt": v.created,
        "Labels": v.labels,
        "Scope": "local",
        "Options": v.options,
    });
    if usage {
        let refs = d.engine.volume_refs(project, &v.name);
        o["UsageData"] = json!({
            "Size": v.usage.as_ref().map_or(-1, |u| u.bytes as i64),
            "RefCount": refs,
        });
    }
    o
}

fn volume(d: &Docker, name: &str, project: &ProjectName) -> DResult<VolumeInspect> {
    d.engine
        .instances
        .volumes
        .get(project, name)
        .map_err(|e| match e.kind() {
            ErrorKind::NotFound => DockerError::not_found(format!("get {name}: no such volume")),
            _ => e.into(),
        })
}

/// `Volumes` of `system df`.
pub(crate) fn df_json(d: &Docker, ctx: &RequestContext) -> Value {
    let vols = d.engine.volumes_with_usage(ctx);
    json!(vols
        .iter()
        .map(|v| volume_json(d, v, true, ctx.project()))
        .collect::<Vec<_>>())
}

/// `GET /volumes?filters=`.
async fn list(Ctx(ctx): Ctx, state: DState, p: Params) -> DResult<Response> {
    let d = state.0;
    let filters = p.filters()?;
    check_filters(&filters, VOLUME_FILTERS)?;
    let v = blocking(move || {
        let vols = d.engine.list_volumes(&ctx, &filters)?;
        let out: Vec<Value> = vols
            .iter()
            .map(|v| volume_json(&d, v, false, &ctx.project))
            .collect();
        Ok(json!({"Volumes": out, "Warnings": []}))
    })
    .await?;
    Ok(json(StatusCode::OK, v))
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct CreateBody {
    name: Option<String>,
    driver: Option<String>,
    driver_opts: Option<BTreeMap<String, String>>,
    labels: Option<BTreeMap<String, String>>,
}

/// `POST /volumes/create`: an existing name is returned as it is.
async fn create(Ctx(ctx): Ctx, state: DState, body: Bytes) -> DResult<Response> {
    let d = state.0;
    let b: CreateBody = serde_json::from_slice(&body)
        .map_err(|e| DockerError::bad_request(format!("invalid volume config: {e}")))?;
    if let Some(drv) = b
        .driver
        .as_deref()
        .filter(|d| !d.is_empty() && *d != "local")
    {
        return Err(DockerError::bad_request(format!(
            "volume driver {drv:?} is not supported by pier: use local"
        )));
    }
    let name = b.name.filter(|n| !n.is_empty());
    let d2 = d.clone();
    let c2 = ctx.clone();
    let (v, made) = blocking(move || {
        let req = VolumeCreate {
            name,
            driver: None,
            options: b.driver_opts.unwrap_or_default(),
            labels: b.labels.unwrap_or_default(),
        };
        Ok(d2.engine.ensure_volume(&c2, req)?)
    })
    .await?;
    if made {
        emit(
            &d,
            "volume",
            "create",
            &v.name,
            &[("driver", "local")],
            &ctx,
        );
    }
    Ok(json(
        StatusCode::CREATED,
        volume_json(&d, &v, false, &ctx.project),
    ))
}

/// `GET /volumes/{name}`.
async fn inspect(Ctx(ctx): Ctx, state: DState, Path(name): Path<String>) -> DResult<Response> {
    let d = state.0;
    let v = blocking(move || {
        let v = volume(&d, &name, &ctx.project)?;
        Ok(volume_json(&d, &v, false, &ctx.project))
    })
    .await?;
    Ok(json(StatusCode::OK, v))
}

/// `DELETE /volumes/{name}?force=`.
async fn remove(
    Ctx(ctx): Ctx,
    state: DState,
    Path(name): Path<String>,
    p: Params,
) -> DResult<Response> {
    let d = state.0;
    let force = p.bool("force");
    let d2 = d.clone();
    let n2 = name.clone();
    let c2 = ctx.clone();
    blocking(move || {
        if let Err(e) = volume(&d2, &n2, c2.project()) {
            // `rm -f` of a missing volume is not an error, as on Docker.
            return if force { Ok(()) } else { Err(e) };
        }
        d2.engine
            .instances
            .remove_volume(&c2, &n2)
            .map_err(|e| match e.kind() {
                ErrorKind::Conflict => DockerError::conflict(format!(
                    "remove {n2}: volume is in use - {}",
                    e.message()
                )),
                _ => e.into(),
            })
    })
    .await?;
    emit(&d, "volume", "destroy", &name, &[("driver", "local")], &ctx);
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `POST /volumes/prune?filters=`: the volumes no container uses, with the `label` and
/// `label!` filters. Up to API 1.41 every such volume goes, as Docker 20.10 prunes; from
/// 1.42 (Docker 23) anonymous ones only, unless the filter `all=true`.
async fn prune(
    Ctx(ctx): Ctx,
    state: DState,
    axum::Extension(version): axum::Extension<super::ApiVersion>,
    p: Params,
) -> DResult<Response> {
    let d = state.0;
    let filters = p.filters()?;
    check_filters(&filters, &["all", "label", "label!"])?;
    let all = !version.at_least(42) || pier_engine::filters::flag(&filters, "all").unwrap_or(false);
    let d2 = d.clone();
    let c2 = ctx.clone();
    let (removed, reclaimed) =
        blocking(move || Ok(d2.engine.prune_volumes_measured(&c2, all, &filters)?)).await?;
    for n in &removed {
        emit(&d, "volume", "destroy", n, &[("driver", "local")], &ctx);
    }
    Ok(json(
        StatusCode::OK,
        json!({"VolumesDeleted": removed, "SpaceReclaimed": reclaimed}),
    ))
}
