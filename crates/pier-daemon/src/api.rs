//! The native API, `/v1/...`: handlers that validate at the edge, run engine work off the
//! async threads, and return typed JSON. [`ApiDoc`] is the OpenAPI document generated from
//! these handlers; `openapi/pier.json` is its checked-in copy.

use std::sync::Arc;

use axum::body::Body;

use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use pier_api::types::{
    ArchiveFormat, FromHostRequest, HistoryEntry, ImageInspect, ImageListQuery, ImageSummary,
    ImportQuery, LoadReport, PruneQuery, PruneReport, RemoveQuery, RemoveReport, SaveQuery,
    TagRequest,
};
use pier_api::{ErrorBody, ProjectName};
use pier_engine::context::PROJECT_HEADER;
use pier_engine::projects::Projects;
use pier_engine::{Caller, EngineError, EngineResult, RequestContext};
use pier_image::archive;
use serde::de::DeserializeOwned;
use utoipa::OpenApi;

use crate::error::{ApiError, ApiResult};
use crate::stream::{body_reader, body_writer};

pub use pier_engine::Engine;

pub(crate) type Shared = State<Arc<Engine>>;

/// Who sent a request: the peer credentials of its unix socket connection, which
/// [`crate::http::serve`] puts in every request's extensions.
#[derive(Debug, Clone, Copy)]
pub struct Peer {
    pub uid: u32,
    pub pid: Option<i32>,
}

/// The context of a request, extracted at the edge of both APIs: the project named by
/// the `X-Pier-Project` header (`default` when absent; it must exist) and the caller.
pub struct Ctx(pub RequestContext);

/// The context of the request with `parts`.
pub fn request_context(parts: &Parts, projects: &Projects) -> EngineResult<RequestContext> {
    let project = match parts.headers.get(PROJECT_HEADER) {
        None => ProjectName::default_project(),
        Some(v) => v
            .to_str()
            .ok()
            .and_then(|s| ProjectName::try_from(s.to_string()).ok())
            .ok_or_else(|| {
                EngineError::invalid(format!(
                    "invalid {PROJECT_HEADER} header {v:?}: name a project with 1-63 lowercase letters, digits and '-', starting with a letter"
                ))
            })?,
    };
    // Without credentials (a connection not from `serve`), the caller is unknown.
    let caller = match parts.extensions.get::<Peer>() {
        Some(p) => Caller::Local {
            uid: p.uid,
            pid: p.pid,
        },
        None => Caller::Local {
            uid: u32::MAX,
            pid: None,
        },
    };
    if project == ProjectName::default_project() {
        // Always there: no store read on the common path.
        return Ok(RequestContext::new(project, caller));
    }
    projects.context(project, caller)
}

impl FromRequestParts<Arc<Engine>> for Ctx {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, e: &Arc<Engine>) -> ApiResult<Self> {
        Ok(Ctx(request_context(parts, &e.projects)?))
    }
}

/// A query string, refused as the native API words it (400 with the reason).
pub(crate) struct Q<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Q<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, s: &S) -> ApiResult<Self> {
        Ok(Q(Query::<T>::from_request_parts(parts, s).await?.0))
    }
}

/// A JSON body, refused as the native API words it (400, or 413 over the limit).
pub(crate) struct J<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> axum::extract::FromRequest<S> for J<T> {
    type Rejection = ApiError;

    async fn from_request(req: axum::extract::Request, s: &S) -> ApiResult<Self> {
        Ok(J(Json::<T>::from_request(req, s).await?.0))
    }
}

/// Runs blocking engine work on the blocking pool.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> ApiResult<T> + Send + 'static,
) -> ApiResult<T> {
    tokio::task::spawn_blocking(f).await?
}

pub fn router(engine: Arc<Engine>) -> Router {
    Router::new()
        .merge(crate::api_system::routes(&engine))
        .route("/v1/_ping", get(ping))
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
        .merge(crate::api_terminal::routes())
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
    doc.merge(crate::api_terminal::TerminalDoc::openapi());
    doc.merge(crate::dashboard::DashboardDoc::openapi());
    doc.merge(crate::api_networks::NetworksDoc::openapi());
    doc.merge(crate::api_build::BuildDoc::openapi());
    doc.merge(crate::api_volumes::VolumesDoc::openapi());
    doc.merge(crate::api_registry::RegistryDoc::openapi());
    doc.merge(crate::api_system::SystemDoc::openapi());
    doc.merge(crate::cluster::ClusterDoc::openapi());
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

/// Lists images, newest first; the intermediate images of builds only with `all`.
#[utoipa::path(get, path = "/v1/images", params(ImageListQuery), responses((status = 200, body = [ImageSummary])))]
async fn list_images(
    Ctx(ctx): Ctx,
    State(e): Shared,
    Q(q): Q<ImageListQuery>,
) -> ApiResult<Json<Vec<ImageSummary>>> {
    Ok(Json(blocking(move || Ok(e.images(&ctx, q.all)?)).await?))
}

/// Shows one image by name, ID or ID prefix (URL-encode slashes in names).
#[utoipa::path(get, path = "/v1/images/{reference}", params(("reference" = String, Path)),
    responses((status = 200, body = ImageInspect), (status = 404, body = ErrorBody)))]
async fn inspect_image(
    Ctx(ctx): Ctx,
    State(e): Shared,
    Path(reference): Path<String>,
) -> ApiResult<Json<ImageInspect>> {
    Ok(Json(
        blocking(move || Ok(e.inspect_image(&ctx, &reference)?)).await?,
    ))
}

/// The steps that made an image, newest first.
#[utoipa::path(get, path = "/v1/images/{reference}/history", params(("reference" = String, Path)),
    responses((status = 200, body = [HistoryEntry]), (status = 404, body = ErrorBody)))]
async fn image_history(
    Ctx(ctx): Ctx,
    State(e): Shared,
    Path(reference): Path<String>,
) -> ApiResult<Json<Vec<HistoryEntry>>> {
    Ok(Json(
        blocking(move || Ok(e.image_history(&ctx, &reference)?)).await?,
    ))
}

/// Gives an image another name.
#[utoipa::path(post, path = "/v1/images/{reference}/tag", params(("reference" = String, Path)), request_body = TagRequest,
    responses((status = 204, description = "Tagged"), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn tag_image(
    Ctx(ctx): Ctx,
    State(e): Shared,
    Path(reference): Path<String>,
    J(req): J<TagRequest>,
) -> ApiResult<StatusCode> {
    blocking(move || {
        e.tag_image(&ctx, &reference, &req.target)?;
        let name = req.target.familiar();
        let id = e
            .inspect_image(&ctx, &name)
            .map(|i| i.summary.id.to_string());
        e.emit(
            &ctx,
            "image",
            "tag",
            &id.unwrap_or(name.clone()),
            &[("name", &name)],
        );
        Ok(())
    })
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Removes a tag, or an image with its tags.
#[utoipa::path(delete, path = "/v1/images/{reference}", params(("reference" = String, Path), RemoveQuery),
    responses((status = 200, body = RemoveReport), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn remove_image(
    Ctx(ctx): Ctx,
    State(e): Shared,
    Path(reference): Path<String>,
    Q(q): Q<RemoveQuery>,
) -> ApiResult<Json<RemoveReport>> {
    Ok(Json(
        blocking(move || {
            let r = e.remove_image(&ctx, &reference, q.force)?;
            for u in &r.untagged {
                e.emit(&ctx, "image", "untag", u, &[("name", u)]);
            }
            for d in &r.deleted {
                e.emit(&ctx, "image", "delete", d.as_str(), &[]);
            }
            Ok(r)
        })
        .await?,
    ))
}

/// Removes unused images and the files only they used.
#[utoipa::path(post, path = "/v1/images/prune", params(PruneQuery), responses((status = 200, body = PruneReport)))]
async fn prune_images(
    Ctx(ctx): Ctx,
    State(e): Shared,
    Q(q): Q<PruneQuery>,
) -> ApiResult<Json<PruneReport>> {
    Ok(Json(
        blocking(move || Ok(e.prune_images(&ctx, q.all)?)).await?,
    ))
}

/// Loads a `docker save` or OCI archive sent as the body.
#[utoipa::path(post, path = "/v1/images/load", request_body(content = Vec<u8>, content_type = "application/x-tar"),
    responses((status = 200, body = LoadReport), (status = 400, body = ErrorBody), (status = 507, body = ErrorBody)))]
async fn load_images(Ctx(ctx): Ctx, State(e): Shared, body: Body) -> ApiResult<Json<LoadReport>> {
    let mut reader = body_reader(body);
    Ok(Json(
        blocking(move || {
            let loaded = e.load_images(&ctx, &mut reader);
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
    Ctx(ctx): Ctx,
    State(e): Shared,
    Q(q): Q<ImportQuery>,
    body: Body,
) -> ApiResult<Json<LoadReport>> {
    let mut reader = body_reader(body);
    let loaded = blocking(move || {
        let changes: Vec<String> = q
            .change
            .iter()
            .flat_map(|c| c.lines())
            .map(String::from)
            .collect();
        let imported = e.import_image(&ctx, &mut reader, q.name, &changes);
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
    Ctx(ctx): Ctx,
    State(e): Shared,
    J(req): J<FromHostRequest>,
) -> ApiResult<Json<LoadReport>> {
    let loaded = blocking(move || Ok(e.image_from_host(&ctx, req.name, &req.binaries)?)).await?;
    Ok(Json(LoadReport {
        images: vec![loaded],
    }))
}

/// Streams images as one archive (`docker save` format by default).
#[utoipa::path(get, path = "/v1/images/save", params(SaveQuery),
    responses((status = 200, description = "A tar archive", content_type = "application/x-tar", body = Vec<u8>), (status = 404, body = ErrorBody)))]
async fn save_images(Ctx(ctx): Ctx, State(e): Shared, Q(q): Q<SaveQuery>) -> ApiResult<Response> {
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
                let (rec, tag) = e.images.resolve_tagged(&ctx.project, n)?;
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

    fn parts(project: Option<&str>, peer: Option<Peer>) -> Parts {
        let mut b = axum::http::Request::builder();
        if let Some(p) = project {
            b = b.header(PROJECT_HEADER, p);
        }
        let (mut parts, ()) = b.body(()).unwrap().into_parts();
        if let Some(p) = peer {
            parts.extensions.insert(p);
        }
        parts
    }

    #[test]
    fn requests_name_their_project_and_carry_their_caller() {
        let db: Arc<dyn pier_store::Store> = Arc::new(pier_store::MemStore::default());
        let projects = Projects::new(db).unwrap();
        let peer = Peer {
            uid: 1000,
            pid: Some(7),
        };
        // No header: the default project, and the socket's peer as the caller.
        let ctx = request_context(&parts(None, Some(peer)), &projects).unwrap();
        assert_eq!(ctx.project, ProjectName::default_project());
        assert_eq!(
            ctx.caller,
            Caller::Local {
                uid: 1000,
                pid: Some(7)
            }
        );
        // A project that does not exist is a 404; a malformed name a 400.
        let e = request_context(&parts(Some("team-a"), None), &projects).unwrap_err();
        assert_eq!(e.kind(), pier_api::ErrorKind::NotFound);
        assert!(
            e.message().contains("no such project: team-a"),
            "{}",
            e.message()
        );
        let e = request_context(&parts(Some("Bad Name"), None), &projects).unwrap_err();
        assert_eq!(e.kind(), pier_api::ErrorKind::InvalidInput);
        assert!(e.message().contains(PROJECT_HEADER), "{}", e.message());
        // Once made, it is the request's project; without credentials the caller is
        // unknown, never root.
        let team = ProjectName::try_from("team-a".to_string()).unwrap();
        projects.create(&team).unwrap();
        let ctx = request_context(&parts(Some("team-a"), None), &projects).unwrap();
        assert_eq!(ctx.project, team);
        assert_eq!(
            ctx.caller,
            Caller::Local {
                uid: u32::MAX,
                pid: None
            }
        );
    }

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
