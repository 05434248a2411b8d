//! The volume part of the native API (`/v1/volumes/...`, `/v1/projects/{p}/quota`).

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Json, Router};
use pier_api::volumes::{VolumeCreate, VolumeInspect};
use pier_api::ErrorBody;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, OpenApi, ToSchema};

use crate::api::{blocking, Ctx, Engine, Shared, J, Q};
use crate::error::{ApiError, ApiResult};
use pier_api::ProjectName;

pub fn routes() -> Router<Arc<Engine>> {
    Router::new()
        .route("/v1/volumes", get(list).post(create))
        .route("/v1/volumes/prune", post(prune))
        .route("/v1/volumes/import", post(import))
        .route("/v1/volumes/{name}", get(inspect).delete(remove))
        .route("/v1/volumes/{name}/export", get(export))
        .route(
            "/v1/volumes/{name}/snapshots",
            get(snapshots).post(snapshot),
        )
        .route(
            "/v1/volumes/{name}/snapshots/{snap}",
            axum::routing::delete(remove_snapshot),
        )
        .route("/v1/volumes/{name}/snapshots/{snap}/restore", post(restore))
        .route("/v1/projects/{project}/quota", get(quota).put(set_quota))
}

#[derive(OpenApi)]
#[openapi(
    paths(
        list,
        create,
        inspect,
        remove,
        prune,
        export,
        import,
        snapshots,
        snapshot,
        restore,
        remove_snapshot,
        quota,
        set_quota
    ),
    components(schemas(
        VolumeCreate,
        VolumeInspect,
        pier_api::volumes::VolumeUsage,
        pier_api::volumes::SnapshotInfo,
        pier_api::volumes::MountSpec,
        pier_api::volumes::MountKind,
        SnapshotRequest,
        Quota,
        QuotaUpdate
    ))
)]
pub struct VolumesDoc;

#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields, default)]
#[into_params(parameter_in = Query)]
struct ListQuery {
    /// `name=PART` or `label=K[=V]`, comma-separated.
    filter: Option<String>,
    /// Fill in each volume's `usage` and `used_by`, as inspecting it does (a limited
    /// volume's usage is a statfs; a plain one's is a walk of its directory).
    #[param(required = false)]
    usage: bool,
}

/// Lists volumes by name; with `usage=true`, each with its usage and users.
#[utoipa::path(get, path = "/v1/volumes", params(ListQuery), responses((status = 200, body = [VolumeInspect])))]
async fn list(
    Ctx(ctx): Ctx,
    State(e): Shared,
    Q(q): Q<ListQuery>,
) -> ApiResult<Json<Vec<VolumeInspect>>> {
    let mut filters = BTreeMap::new();
    for f in q
        .filter
        .iter()
        .flat_map(|f| f.split(','))
        .filter(|f| !f.is_empty())
    {
        let (k, v) = f
            .split_once('=')
            .ok_or_else(|| ApiError::invalid(format!("filter {f:?}: use KEY=VALUE")))?;
        filters.insert(k.to_string(), v.to_string());
    }
    let v = blocking(move || {
        let mut v = e.volumes.list(&ctx.project)?;
        v.retain(|v| pier_engine::volumes::Volumes::matches(v, &filters));
        v.sort_by(|a, b| a.name.cmp(&b.name));
        if q.usage {
            e.fill_volume_usage(&ctx, &mut v)?;
        }
        Ok(v)
    })
    .await?;
    Ok(Json(v))
}

/// Creates a volume.
#[utoipa::path(post, path = "/v1/volumes", request_body = VolumeCreate,
    responses((status = 201, body = VolumeInspect), (status = 400, body = ErrorBody), (status = 409, body = ErrorBody), (status = 507, body = ErrorBody)))]
async fn create(
    Ctx(ctx): Ctx,
    State(e): Shared,
    J(req): J<VolumeCreate>,
) -> ApiResult<(StatusCode, Json<VolumeInspect>)> {
    let c = e.instances.clone();
    let c2 = ctx.clone();
    let v = blocking(move || c.volumes.create(&c2, req, false).map_err(ApiError::from)).await?;
    e.emit(&ctx, "volume", "create", &v.name, &[("driver", "local")]);
    Ok((StatusCode::CREATED, Json(v)))
}

/// Shows a volume with its usage and the containers using it.
#[utoipa::path(get, path = "/v1/volumes/{name}", params(("name" = String, Path)),
    responses((status = 200, body = VolumeInspect), (status = 404, body = ErrorBody)))]
async fn inspect(
    Ctx(ctx): Ctx,
    State(e): Shared,
    Path(name): Path<String>,
) -> ApiResult<Json<VolumeInspect>> {
    let c = e.instances.clone();
    Ok(Json(
        blocking(move || {
            let mut v = c.volumes.inspect(&ctx, &name)?;
            v.used_by = c.volume_users(&ctx, &name)?;
            Ok(v)
        })
        .await?,
    ))
}

/// Removes a volume no container uses.
#[utoipa::path(delete, path = "/v1/volumes/{name}", params(("name" = String, Path)),
    responses((status = 204), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn remove(
    Ctx(ctx): Ctx,
    State(e): Shared,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    blocking(move || {
        e.instances.remove_volume(&ctx, &name)?;
        e.emit(&ctx, "volume", "destroy", &name, &[("driver", "local")]);
        Ok(())
    })
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields, default)]
struct PruneQuery {
    /// Named volumes too, not only anonymous ones.
    all: bool,
}

/// Removes volumes no container uses; returns their names.
#[utoipa::path(post, path = "/v1/volumes/prune", params(PruneQuery), responses((status = 200, body = [String])))]
async fn prune(
    Ctx(ctx): Ctx,
    State(e): Shared,
    Q(q): Q<PruneQuery>,
) -> ApiResult<Json<Vec<String>>> {
    Ok(Json(
        blocking(move || {
            e.instances
                .prune_volumes(&ctx, q.all)
                .map_err(ApiError::from)
        })
        .await?,
    ))
}

/// The volume's content as a tar (sorted entries, owners and modes kept).
#[utoipa::path(get, path = "/v1/volumes/{name}/export", params(("name" = String, Path)),
    responses((status = 200, content_type = "application/x-tar", body = Vec<u8>), (status = 404, body = ErrorBody)))]
async fn export(Ctx(ctx): Ctx, State(e): Shared, Path(name): Path<String>) -> ApiResult<Response> {
    let v = e.volumes.get(&ctx.project, &name)?;
    if v.driver == "block" {
        return Err(ApiError::invalid(format!(
            "volume {name} is a block volume: export works on file volumes; copy its image with qemu-img, or snapshot it"
        )));
    }
    let c = e.instances.clone();
    Ok(crate::api_containers::tar_response(move |w| {
        c.volumes.export(&ctx, &name, w).map_err(ApiError::from)
    }))
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields, default)]
struct ImportQuery {
    /// The new volume's name.
    name: Option<String>,
    /// Volume options as `KEY=VALUE`, comma-separated (`size=1g,inodes=1000`).
    opt: Option<String>,
    /// The archive's sha256 (hex, or `sha256:hex`): a mismatch refuses the import.
    sha256: Option<String>,
}

/// Makes a new volume from a tar (as `export` writes it). A bad archive or checksum leaves
/// no volume behind.
#[utoipa::path(post, path = "/v1/volumes/import", params(ImportQuery), request_body(content = Vec<u8>, content_type = "application/x-tar"),
    responses((status = 201, body = VolumeInspect), (status = 400, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn import(
    Ctx(ctx): Ctx,
    State(e): Shared,
    Q(q): Q<ImportQuery>,
    body: Body,
) -> ApiResult<(StatusCode, Json<VolumeInspect>)> {
    let mut options = BTreeMap::new();
    for o in q
        .opt
        .iter()
        .flat_map(|o| o.split(','))
        .filter(|o| !o.is_empty())
    {
        let (k, v) = o
            .split_once('=')
            .ok_or_else(|| ApiError::invalid(format!("option {o:?}: use KEY=VALUE")))?;
        options.insert(k.to_string(), v.to_string());
    }
    let req = VolumeCreate {
        name: q.name,
        options,
        ..Default::default()
    };
    let reader = crate::stream::body_reader(body);
    let c = e.instances.clone();
    let v = blocking(move || {
        c.volumes
            .import(&ctx, req, reader, q.sha256.as_deref())
            .map_err(ApiError::from)
    })
    .await?;
    Ok((StatusCode::CREATED, Json(v)))
}

#[derive(Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct SnapshotRequest {
    name: String,
}

/// Lists a volume's snapshots.
#[utoipa::path(get, path = "/v1/volumes/{name}/snapshots", params(("name" = String, Path)),
    responses((status = 200, body = [pier_api::volumes::SnapshotInfo]), (status = 404, body = ErrorBody)))]
async fn snapshots(
    Ctx(ctx): Ctx,
    State(e): Shared,
    Path(name): Path<String>,
) -> ApiResult<Json<Vec<pier_api::volumes::SnapshotInfo>>> {
    e.volumes.get(&ctx.project, &name)?;
    Ok(Json(e.volumes.snapshot_infos(&ctx, &name)))
}

/// Takes a crash-consistent snapshot of a volume.
#[utoipa::path(post, path = "/v1/volumes/{name}/snapshots", params(("name" = String, Path)), request_body = SnapshotRequest,
    responses((status = 201), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn snapshot(
    Ctx(ctx): Ctx,
    State(e): Shared,
    Path(name): Path<String>,
    J(req): J<SnapshotRequest>,
) -> ApiResult<StatusCode> {
    blocking(move || {
        e.instances.snapshot_volume(&ctx, &name, &req.name)?;
        e.emit(
            &ctx,
            "volume",
            "snapshot",
            &name,
            &[("snapshot", &req.name)],
        );
        Ok::<_, ApiError>(())
    })
    .await?;
    Ok(StatusCode::CREATED)
}

/// Puts a snapshot's content back into its volume.
#[utoipa::path(post, path = "/v1/volumes/{name}/snapshots/{snap}/restore", params(("name" = String, Path), ("snap" = String, Path)),
    responses((status = 204), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn restore(
    Ctx(ctx): Ctx,
    State(e): Shared,
    Path((name, snap)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    blocking(move || {
        e.instances.restore_volume(&ctx, &name, &snap)?;
        e.emit(&ctx, "volume", "restore", &name, &[("snapshot", &snap)]);
        Ok::<_, ApiError>(())
    })
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Deletes a snapshot.
#[utoipa::path(delete, path = "/v1/volumes/{name}/snapshots/{snap}", params(("name" = String, Path), ("snap" = String, Path)),
    responses((status = 204), (status = 404, body = ErrorBody)))]
async fn remove_snapshot(
    Ctx(ctx): Ctx,
    State(e): Shared,
    Path((name, snap)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    blocking(move || {
        e.instances.volumes.remove_snapshot(&ctx, &name, &snap)?;
        e.emit(
            &ctx,
            "volume",
            "snapshot_destroy",
            &name,
            &[("snapshot", &snap)],
        );
        Ok::<_, ApiError>(())
    })
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A project's volume quotas: the sum of its volumes' size limits may not exceed
/// `volume_bytes`, nor their number `volume_count`.
#[derive(Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(default)]
struct Quota {
    /// None: no quota on bytes.
    volume_bytes: Option<u64>,
    /// Bytes committed now (read-only).
    committed_bytes: u64,
    /// None: no quota on how many volumes.
    volume_count: Option<u64>,
    /// Volumes the project has now, those being made or removed included (read-only).
    volumes: u64,
}

/// What a `PUT` of a quota changes: a field given sets that quota (`null` clears it); a
/// field left out keeps it.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(default)]
struct QuotaUpdate {
    #[serde(deserialize_with = "present")]
    #[schema(value_type = Option<u64>)]
    volume_bytes: Option<Option<u64>>,
    #[serde(deserialize_with = "present")]
    #[schema(value_type = Option<u64>)]
    volume_count: Option<Option<u64>>,
}

/// A field that is there, `null` or not (a missing one is `None` by `default`).
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<u64>>, D::Error> {
    Option::<u64>::deserialize(d).map(Some)
}

fn check_project(p: &str, project: &ProjectName) -> ApiResult<()> {
    if p != project.clone().as_str() {
        return Err(crate::error::ApiError::new(
            pier_api::ErrorKind::NotFound,
            format!(
                "no such project: {p} (only {} exists until tenants arrive)",
                project.clone()
            ),
        ));
    }
    Ok(())
}

/// The context's project's quotas and what its volumes commit.
fn quota_of(e: &Engine, ctx: &pier_engine::RequestContext) -> ApiResult<Quota> {
    let v = &e.volumes;
    Ok(Quota {
        volume_bytes: v.quota(ctx)?,
        committed_bytes: v.committed(ctx)?,
        volume_count: v.count_quota(ctx)?,
        volumes: v.volume_count(ctx)?,
    })
}

/// Shows a project's volume quotas and what its volumes commit.
#[utoipa::path(get, path = "/v1/projects/{project}/quota", params(("project" = String, Path)),
    responses((status = 200, body = Quota), (status = 404, body = ErrorBody)))]
async fn quota(Ctx(ctx): Ctx, State(e): Shared, Path(p): Path<String>) -> ApiResult<Json<Quota>> {
    check_project(&p, &ctx.project)?;
    Ok(Json(quota_of(&e, &ctx)?))
}

/// Sets (or clears, with `null`) a project's volume quotas: `volume_bytes`,
/// `volume_count`; a quota left out of the body is kept.
#[utoipa::path(put, path = "/v1/projects/{project}/quota", params(("project" = String, Path)), request_body = QuotaUpdate,
    responses((status = 200, body = Quota), (status = 404, body = ErrorBody)))]
async fn set_quota(
    Ctx(ctx): Ctx,
    State(e): Shared,
    Path(p): Path<String>,
    body: Result<Json<QuotaUpdate>, JsonRejection>,
) -> ApiResult<Json<Quota>> {
    check_project(&p, &ctx.project)?;
    let Json(q) = body?;
    let v = &e.volumes;
    if let Some(bytes) = q.volume_bytes {
        v.set_quota(&ctx, bytes)?;
    }
    if let Some(count) = q.volume_count {
        v.set_count_quota(&ctx, count)?;
    }
    let now = quota_of(&e, &ctx)?;
    if q.volume_bytes.is_some() || q.volume_count.is_some() {
        let shown = |v: Option<u64>| v.map_or_else(|| "none".to_string(), |n| n.to_string());
        let (bytes, count) = (shown(now.volume_bytes), shown(now.volume_count));
        e.emit(
            &ctx,
            "project",
            "quota",
            ctx.project.as_str(),
            &[("volume_bytes", &bytes), ("volume_count", &count)],
        );
    }
    Ok(Json(now))
}
