//! A container's files: `docker cp` both ways (`HEAD`/`GET`/`PUT /containers/{id}/archive`
//! with the `X-Docker-Container-Path-Stat` header), `export`, `commit` and `diff`.
//!
//! The stat header is base64 (URL alphabet) of [`pier_api::docker::archive::stat_json`].

use std::sync::Arc;

use axum::body::Body;
use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use pier_api::docker::archive::{go_file_mode, stat_json, FileStat};
use pier_api::ErrorKind;
use serde_json::json;

use super::params::Params;
use super::{blocking, container, json, DResult, DState, Docker, DockerError};
use crate::api::Ctx;
use crate::error::ApiError;
use pier_engine::container_fs::PathStat;
use pier_engine::RequestContext;

pub fn routes() -> Router<Arc<Docker>> {
    Router::new()
        .route(
            "/containers/{id}/archive",
            get(archive_get).head(archive_head).put(archive_put),
        )
        .route("/containers/{id}/export", get(export))
        .route("/containers/{id}/changes", get(changes))
        .route("/commit", post(commit))
}

/// Base64 with the URL alphabet and padding, as Go's `base64.URLEncoding`.
pub fn base64_url(data: &[u8]) -> String {
    pier_registry_client::b64::encode(data)
        .replace('+', "-")
        .replace('/', "_")
}

fn stat_header(path: &str, s: &PathStat) -> HeaderValue {
    let s = FileStat {
        name: s.name.clone(),
        size: s.size,
        mode: s.mode,
        mtime: s.mtime,
        mtime_nsec: s.mtime_nsec,
        link_target: s.link_target.clone(),
    };
    let v = stat_json(path, &s);
    HeaderValue::from_str(&base64_url(v.to_string().as_bytes())).expect("base64 is ascii")
}

async fn stat(d: &Arc<Docker>, id: &str, path: &str, ctx: &RequestContext) -> DResult<PathStat> {
    let ctx = ctx.clone();
    let c = container(d, id, &ctx)?;
    let (d2, cid, p2) = (d.clone(), c.id.clone(), path.to_string());
    blocking(move || {
        d2.engine
            .instances
            .archive_stat(&ctx, &cid, &p2)
            .map_err(|e| match e.kind() {
                ErrorKind::NotFound => DockerError::not_found(format!(
                    "Could not find the file {p2} in container {cid}"
                )),
                _ => e.into(),
            })
    })
    .await
}

fn path_param(p: &Params) -> DResult<String> {
    p.nonempty("path")
        .map(String::from)
        .ok_or_else(|| DockerError::bad_request("give the path in the container as ?path="))
}

/// `HEAD /containers/{id}/archive?path=`: the stat header alone.
async fn archive_head(
    Ctx(ctx): Ctx,
    state: DState,
    Path(id): Path<String>,
    p: Params,
) -> DResult<Response> {
    let d = state.0;
    let path = path_param(&p)?;
    let s = stat(&d, &id, &path, &ctx).await?;
    let mut r = StatusCode::OK.into_response();
    r.headers_mut()
        .insert("x-docker-container-path-stat", stat_header(&path, &s));
    Ok(r)
}

/// `GET /containers/{id}/archive?path=`: a tar of the path, its root entry named after it.
async fn archive_get(
    Ctx(ctx): Ctx,
    state: DState,
    Path(id): Path<String>,
    p: Params,
) -> DResult<Response> {
    let d = state.0;
    let path = path_param(&p)?;
    let s = stat(&d, &id, &path, &ctx).await?;
    let c = container(&d, &id, &ctx)?;
    let containers = d.engine.instances.clone();
    let path2 = path.clone();
    let mut r = crate::api_containers::tar_response(move |w| {
        containers
            .archive_get(&ctx, &c.id, &path2, w)
            .map_err(ApiError::from)
    });
    r.headers_mut()
        .insert("x-docker-container-path-stat", stat_header(&path, &s));
    Ok(r)
}

/// `PUT /containers/{id}/archive?path=`: unpacks a tar into the existing directory `path`.
async fn archive_put(
    Ctx(ctx): Ctx,
    state: DState,
    Path(id): Path<String>,
    p: Params,
    body: Body,
) -> DResult<Response> {
    let d = state.0;
    let path = path_param(&p)?;
    let s = stat(&d, &id, &path, &ctx).await?;
    if go_file_mode(s.mode) & (1 << 31) == 0 {
        return Err(DockerError::bad_request(format!(
            "extraction point is not a directory: {path}"
        )));
    }
    let c = container(&d, &id, &ctx)?;
    let reader = crate::stream::body_reader(body);
    blocking(move || Ok(d.engine.instances.archive_put(&ctx, &c.id, &path, reader)?)).await?;
    Ok(StatusCode::OK.into_response())
}

/// `GET /containers/{id}/export`.
async fn export(Ctx(ctx): Ctx, state: DState, Path(id): Path<String>) -> DResult<Response> {
    let d = state.0;
    let c = container(&d, &id, &ctx)?;
    let containers = d.engine.instances.clone();
    Ok(crate::api_containers::tar_response(move |w| {
        containers.export(&ctx, &c.id, w).map_err(ApiError::from)
    }))
}

/// `GET /containers/{id}/changes`.
async fn changes(Ctx(ctx): Ctx, state: DState, Path(id): Path<String>) -> DResult<Response> {
    let d = state.0;
    let c = container(&d, &id, &ctx)?;
    let v = blocking(move || Ok(d.engine.instances.changes(&ctx, &c.id)?)).await?;
    let list: Vec<_> = v
        .iter()
        .map(|ch| json!({"Path": ch.path, "Kind": ch.kind}))
        .collect();
    Ok(json(
        StatusCode::OK,
        if list.is_empty() {
            serde_json::Value::Null
        } else {
            json!(list)
        },
    ))
}

/// `POST /commit?container=&repo=&tag=&comment=&author=`.
async fn commit(Ctx(ctx): Ctx, state: DState, p: Params) -> DResult<Response> {
    let d = state.0;
    let id = p
        .nonempty("container")
        .ok_or_else(|| DockerError::bad_request("give the container as ?container="))?;
    let c = container(&d, id, &ctx)?;
    let reference = match (p.nonempty("repo"), p.nonempty("tag")) {
        (None, _) => None,
        (Some(r), None) => Some(r.to_string()),
        (Some(r), Some(t)) => Some(format!("{r}:{t}")),
    };
    let req = pier_api::containers::CommitRequest {
        reference,
        message: p.get("comment").unwrap_or("").to_string(),
        author: p.get("author").unwrap_or("").to_string(),
        changes: p.all("changes").iter().map(|c| c.to_string()).collect(),
    };
    let loaded = blocking(move || Ok(d.engine.instances.commit(&ctx, &c.id, &req)?)).await?;
    Ok(json(StatusCode::CREATED, json!({"Id": loaded.id.as_str()})))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_is_gos_url_encoding() {
        assert_eq!(base64_url(b""), "");
        assert_eq!(base64_url(b"f"), "Zg==");
        assert_eq!(base64_url(b"fo"), "Zm8=");
        assert_eq!(base64_url(b"foo"), "Zm9v");
        assert_eq!(base64_url(&[0xfb, 0xff]), "-_8=");
    }
}
