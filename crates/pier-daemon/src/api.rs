//! The native API, `/v1/...`: handlers that validate at the edge, run engine work off the
//! async threads, and return typed JSON. [`ApiDoc`] is the OpenAPI document generated from
//! these handlers; `openapi/pier.json` is its checked-in copy.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use pier_api::types::{
    ArchiveFormat, FromHostRequest, HistoryEntry, ImageInspect, ImageListQuery, ImageSummary,
    ImportQuery, LoadReport, PruneQuery, PruneReport, RemoveQuery, RemoveReport, SaveQuery,
    SystemInfo, TagRequest,
};
use pier_api::{ErrorBody, ProjectName};
use pier_image::{archive, build};
use utoipa::OpenApi;

use crate::error::{ApiError, ApiResult};
use crate::stream::{body_reader, body_writer};

pub use pier_engine::Engine;

pub(crate) type Shared = State<Arc<Engine>>;

/// The project a request acts in. Until tenants exist, every request is in `default`.
pub(crate) fn project() -> ProjectName {
    ProjectName::default_project()
}

/// Runs blocking engine work on the blocking pool.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> ApiResult<T> + Send + 'static,
) -> ApiResult<T> {
    tokio::task::spawn_blocking(f).await?
}

pub fn router(engine: Arc<Engine>) -> Router {
    Router::new()
        .route("/v1/_ping", get(ping))
        .route("/v1/info", get(info))
        .route("/v1/images", get(list_images))
        .route("/v1/images/load", post(load_images))
        .route("/v1/images/import", post(import_image))
        .route("/v1/images/from-host", post(image_from_host))
        .route("/v1/images/save", get(save_images))
        .route("/v1/images/prune", post(prune_images))
        .route(
            "/v1/images/{reference}",
            get(inspect_image).delete(remove_image),
        )
        .route("/v1/images/{reference}/history", get(image_history))
        .route("/v1/images/{reference}/tag", post(tag_image))
        .merge(crate::api_containers::routes())
        .merge(crate::api_networks::routes())
        .merge(crate::api_build::routes())
        .merge(crate::api_volumes::routes())
        .merge(crate::api_registry::routes())
        .fallback(|| async {
            ApiError::new(
                pier_api::ErrorKind::NotFound,
                "no such API endpoint; see openapi/pier.json",
            )
        })
        .with_state(engine)
        // JSON bodies; the streamed ones (load, import, build, archives) take `Body`,
        // which this does not limit.
        .layer(axum::extract::DefaultBodyLimit::max(
            crate::http::JSON_BODY_LIMIT,
        ))
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Pier native API",
        description = "The REST/JSON API of the Pier daemon, served on its unix socket."
    ),
    paths(
        ping,
        info,
        list_images,
        inspect_image,
        image_history,
        tag_image,
        remove_image,
        prune_images,
        load_images,
        import_image,
        image_from_host,
        save_images
    ),
    components(schemas(
        ErrorBody,
        SystemInfo,
        ImageSummary,
        ImageInspect,
        HistoryEntry,
        TagRequest,
        RemoveReport,
        PruneReport,
        LoadReport,
        FromHostRequest,
        ArchiveFormat
    ))
)]
pub struct ApiDoc;

/// The OpenAPI document as pretty JSON, as checked in at `openapi/pier.json`.
pub fn openapi_json() -> String {
    let mut doc = ApiDoc::openapi();
    doc.merge(crate::api_containers::ContainersDoc::openapi());
    doc.merge(crate::api_networks::NetworksDoc::openapi());
    doc.merge(crate::api_build::BuildDoc::openapi());
    doc.merge(crate::api_volumes::VolumesDoc::openapi());
    doc.merge(crate::api_registry::RegistryDoc::openapi());
    let mut s = doc
        .to_pretty_json()
        .expect("the OpenAPI document serializes");
    s.push('\n');
    s
}

/// Liveness check.
#[utoipa::path(get, path = "/v1/_ping", responses((status = 200, description = "The daemon is up", body = String)))]
async fn ping() -> &'static str {
    "OK"
}

/// What this daemon is and holds.
#[utoipa::path(get, path = "/v1/info", responses((status = 200, body = SystemInfo)))]
async fn info(State(e): Shared) -> ApiResult<Json<SystemInfo>> {
    let images = blocking({
        let e = e.clone();
        move || Ok(e.images.list(&project())?.len() as u64)
    })
    .await?;
    Ok(Json(SystemInfo {
        version: env!("CARGO_PKG_VERSION").to_string(),
        api_version: pier_api::API_VERSION.to_string(),
        root: e.root.display().to_string(),
        store_schema: e.store_schema,
        storage_driver: "overlay".into(),
        images,
        kernel: rustix::system::uname()
            .release()
            .to_string_lossy()
            .into_owned(),
    }))
}

/// Lists images, newest first; the intermediate images of builds only with `all`.
#[utoipa::path(get, path = "/v1/images", params(ImageListQuery), responses((status = 200, body = [ImageSummary])))]
async fn list_images(
    State(e): Shared,
    query: Result<Query<ImageListQuery>, QueryRejection>,
) -> ApiResult<Json<Vec<ImageSummary>>> {
    let Query(q) = query?;
    Ok(Json(
        blocking(move || Ok(e.images.list_all(&project(), q.all)?)).await?,
    ))
}

/// Shows one image by name, ID or ID prefix (URL-encode slashes in names).
#[utoipa::path(get, path = "/v1/images/{reference}", params(("reference" = String, Path)),
    responses((status = 200, body = ImageInspect), (status = 404, body = ErrorBody)))]
async fn inspect_image(
    State(e): Shared,
    Path(reference): Path<String>,
) -> ApiResult<Json<ImageInspect>> {
    Ok(Json(
        blocking(move || Ok(e.images.inspect(&project(), &reference)?)).await?,
    ))
}

/// The steps that made an image, newest first.
#[utoipa::path(get, path = "/v1/images/{reference}/history", params(("reference" = String, Path)),
    responses((status = 200, body = [HistoryEntry]), (status = 404, body = ErrorBody)))]
async fn image_history(
    State(e): Shared,
    Path(reference): Path<String>,
) -> ApiResult<Json<Vec<HistoryEntry>>> {
    Ok(Json(
        blocking(move || Ok(e.images.history(&project(), &reference)?)).await?,
    ))
}

/// Gives an image another name.
#[utoipa::path(post, path = "/v1/images/{reference}/tag", params(("reference" = String, Path)), request_body = TagRequest,
    responses((status = 204, description = "Tagged"), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn tag_image(
    State(e): Shared,
    Path(reference): Path<String>,
    body: Result<Json<TagRequest>, JsonRejection>,
) -> ApiResult<StatusCode> {
    let Json(req) = body?;
    blocking(move || Ok(e.images.tag(&project(), &reference, &req.target)?)).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Removes a tag, or an image with its tags.
#[utoipa::path(delete, path = "/v1/images/{reference}", params(("reference" = String, Path), RemoveQuery),
    responses((status = 200, body = RemoveReport), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn remove_image(
    State(e): Shared,
    Path(reference): Path<String>,
    query: Result<Query<RemoveQuery>, QueryRejection>,
) -> ApiResult<Json<RemoveReport>> {
    let Query(q) = query?;
    Ok(Json(
        blocking(move || Ok(e.images.remove(&project(), &reference, q.force)?)).await?,
    ))
}

/// Removes unused images and the files only they used.
#[utoipa::path(post, path = "/v1/images/prune", params(PruneQuery), responses((status = 200, body = PruneReport)))]
async fn prune_images(
    State(e): Shared,
    query: Result<Query<PruneQuery>, QueryRejection>,
) -> ApiResult<Json<PruneReport>> {
    let Query(q) = query?;
    Ok(Json(
        blocking(move || Ok(e.images.prune(&project(), q.all)?)).await?,
    ))
}

/// Loads a `docker save` or OCI archive sent as the body.
#[utoipa::path(post, path = "/v1/images/load", request_body(content = Vec<u8>, content_type = "application/x-tar"),
    responses((status = 200, body = LoadReport), (status = 400, body = ErrorBody), (status = 507, body = ErrorBody)))]
async fn load_images(State(e): Shared, body: Body) -> ApiResult<Json<LoadReport>> {
    let mut reader = body_reader(body);
    Ok(Json(
        blocking(move || {
            let loaded = archive::load(&e.images, &project(), &mut reader);
            if loaded.is_err() {
                crate::stream::drain_reader(&mut reader);
            }
            Ok(loaded?)
        })
        .await?,
    ))
}

/// Imports a flat rootfs tar (optionally compressed) as a one-layer image.
#[utoipa::path(post, path = "/v1/images/import", params(ImportQuery), request_body(content = Vec<u8>, content_type = "application/x-tar"),
    responses((status = 200, body = LoadReport), (status = 400, body = ErrorBody)))]
async fn import_image(
    State(e): Shared,
    query: Result<Query<ImportQuery>, QueryRejection>,
    body: Body,
) -> ApiResult<Json<LoadReport>> {
    let Query(q) = query?;
    let mut reader = body_reader(body);
    let loaded = blocking(move || {
        let imported = build::import(&e.images, &project(), &mut reader, q.name);
        if imported.is_err() {
            crate::stream::drain_reader(&mut reader);
        }
        Ok(imported?)
    })
    .await?;
    Ok(Json(LoadReport {
        images: vec![loaded],
    }))
}

/// Builds an image from host binaries and the shared libraries they need.
#[utoipa::path(post, path = "/v1/images/from-host", request_body = FromHostRequest,
    responses((status = 200, body = LoadReport), (status = 400, body = ErrorBody)))]
async fn image_from_host(
    State(e): Shared,
    body: Result<Json<FromHostRequest>, JsonRejection>,
) -> ApiResult<Json<LoadReport>> {
    let Json(req) = body?;
    let loaded = blocking(move || {
        Ok(build::from_host(
            &e.images,
            &project(),
            req.name,
            &req.binaries,
        )?)
    })
    .await?;
    Ok(Json(LoadReport {
        images: vec![loaded],
    }))
}

/// Streams images as one archive (`docker save` format by default).
#[utoipa::path(get, path = "/v1/images/save", params(SaveQuery),
    responses((status = 200, description = "A tar archive", content_type = "application/x-tar", body = Vec<u8>), (status = 404, body = ErrorBody)))]
async fn save_images(
    State(e): Shared,
    query: Result<Query<SaveQuery>, QueryRejection>,
) -> ApiResult<Response> {
    let Query(q) = query?;
    let names: Vec<String> = q
        .names
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect();
    if names.is_empty() {
        return Err(ApiError::invalid("name at least one image to save"));
    }
    // Resolve every name first, so a wrong one is a clear error rather than a cut stream.
    let images = blocking({
        let e = e.clone();
        move || {
            let mut out = Vec::new();
            for n in &names {
                let (rec, tag) = e.images.resolve_tagged(&project(), n)?;
                out.push((rec, tag.into_iter().collect()));
            }
            Ok(out)
        }
    })
    .await?;
    let (mut writer, body) = body_writer();
    let format = q.format;
    tokio::task::spawn_blocking(move || {
        let result = archive::save(&e.images, &images, format, &mut writer);
        match result {
            Ok(()) => {
                if let Err(err) = writer.finish() {
                    tracing::warn!(error = %err, "sending a saved archive");
                }
            }
            Err(err) => {
                tracing::error!(error = %err.chain(), "saving images failed; the client's archive is cut short")
            }
        }
    });
    Ok(([(header::CONTENT_TYPE, "application/x-tar")], body).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The checked-in document must match the code. To refresh it after changing the API:
    /// `UPDATE_OPENAPI=1 cargo test -p pier-daemon openapi`.
    #[test]
    fn openapi_document_matches_the_code() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../openapi/pier.json");
        let generated = openapi_json();
        if std::env::var_os("UPDATE_OPENAPI").is_some() {
            std::fs::write(path, &generated).unwrap();
        }
        let checked_in = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            checked_in == generated,
            "openapi/pier.json is out of date with the code; regenerate it with `UPDATE_OPENAPI=1 cargo test -p pier-daemon openapi` and commit it"
        );
        for p in [
            "/v1/images",
            "/v1/images/load",
            "/v1/images/{reference}/tag",
            "/v1/info",
            "/v1/build",
        ] {
            assert!(
                generated.contains(&format!("\"{p}\"")),
                "{p} missing from the document"
            );
        }
    }
}
