//! Images: list, inspect, history, tag, remove, prune, load, save, import
//! (`POST /images/create?fromSrc=-`); pull and push go through [`super::registry`].
//! Search has no registry index to ask and says so.
//!
//! Names may hold slashes (`library/busybox`), so `/images/{name}/...` is routed by hand.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::Path;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use pier_api::docker::images::{history_json, inspect_json, summary_json};
use pier_api::types::ArchiveFormat;
use pier_api::ImageRef;
use pier_engine::images_query::IMAGE_FILTERS;
use serde_json::{json, Value};

use super::params::{check_filters, Params};
use super::system::emit;
use super::{blocking, image, json, normalize_ref, DResult, DState, Docker, DockerError};
use crate::api::Ctx;
use pier_engine::RequestContext;

pub fn routes() -> Router<Arc<Docker>> {
    Router::new()
        .route("/images/json", get(list))
        .route("/images/create", post(create))
        .route("/images/load", post(load))
        .route("/images/get", get(save_many))
        .route("/images/prune", post(prune))
        .route("/images/search", get(search))
        .route(
            "/images/{*rest}",
            get(get_named).post(post_named).delete(remove),
        )
}

/// `GET /images/json?all=&filters=`.
async fn list(Ctx(ctx): Ctx, state: DState, p: Params) -> DResult<Response> {
    let d = state.0;
    let filters = p.filters()?;
    check_filters(&filters, IMAGE_FILTERS)?;
    let v = blocking(move || {
        let mut out = Vec::new();
        for (i, labels) in d.engine.list_images(&ctx, &filters)? {
            let mut s = summary_json(&i);
            s["Labels"] = json!(labels);
            out.push(s);
        }
        Ok(Value::Array(out))
    })
    .await?;
    Ok(json(StatusCode::OK, v))
}

/// `GET /images/{name}/json|history|get`.
async fn get_named(Ctx(ctx): Ctx, state: DState, Path(rest): Path<String>) -> DResult<Response> {
    let d = state.0;
    if let Some(name) = rest.strip_suffix("/json") {
        return inspect(d, name.to_string(), ctx).await;
    }
    if let Some(name) = rest.strip_suffix("/history") {
        return history(d, name.to_string(), ctx).await;
    }
    if let Some(name) = rest.strip_suffix("/get") {
        return save(d, vec![name.to_string()], ctx).await;
    }
    Err(DockerError::not_found(format!(
        "page not found: pier's Docker API has no GET /images/{rest}"
    )))
}

/// `POST /images/{name}/tag|push`.
async fn post_named(
    Ctx(ctx): Ctx,
    state: DState,
    Path(rest): Path<String>,
    p: Params,
    headers: axum::http::HeaderMap,
) -> DResult<Response> {
    let d = state.0;
    if let Some(name) = rest.strip_suffix("/tag") {
        return tag(d, name.to_string(), p, ctx).await;
    }
    if let Some(name) = rest.strip_suffix("/push") {
        return super::registry::push(d, name, p.nonempty("tag"), &headers, ctx).await;
    }
    Err(DockerError::not_found(format!(
        "page not found: pier's Docker API has no POST /images/{rest}"
    )))
}

async fn inspect(d: Arc<Docker>, name: String, ctx: RequestContext) -> DResult<Response> {
    let v = blocking(move || {
        let rec = image(&d, &name, ctx.project())?;
        let i = d.engine.inspect_image(&ctx, rec.id.as_str())?;
        let raw = d.engine.images.config(&rec)?;
        Ok(inspect_json(&i, &raw, &d.engine.image_lower_dirs(&rec)))
    })
    .await?;
    Ok(json(StatusCode::OK, v))
}

async fn history(d: Arc<Docker>, name: String, ctx: RequestContext) -> DResult<Response> {
    let v = blocking(move || {
        let rec = image(&d, &name, ctx.project())?;
        let tags = d
            .engine
            .inspect_image(&ctx, rec.id.as_str())?
            .summary
            .repo_tags;
        let h = d.engine.image_history(&ctx, rec.id.as_str())?;
        Ok(history_json(rec.id.as_str(), &tags, &h))
    })
    .await?;
    Ok(json(StatusCode::OK, v))
}

async fn tag(d: Arc<Docker>, name: String, p: Params, ctx: RequestContext) -> DResult<Response> {
    let project = ctx.project.clone();
    let repo = p
        .nonempty("repo")
        .ok_or_else(|| DockerError::bad_request("give the new name as ?repo=&tag="))?;
    let target = match p.nonempty("tag") {
        Some(t) => format!("{repo}:{t}"),
        None => normalize_ref(repo),
    };
    let target: ImageRef = target
        .parse()
        .map_err(|e: pier_api::reference::RefError| DockerError::bad_request(e.to_string()))?;
    let rec = image(&d, &name, &project)?;
    let d2 = d.clone();
    let t2 = target.clone();
    let c2 = ctx.clone();
    blocking(move || Ok(d2.engine.tag_image(&c2, rec.id.as_str(), &t2)?)).await?;
    let rec = image(&d, &target.familiar(), &project)?;
    emit(
        &d,
        "image",
        "tag",
        rec.id.as_str(),
        &[("name", &target.familiar())],
        &ctx,
    );
    Ok(StatusCode::CREATED.into_response())
}

/// `DELETE /images/{name}?force=&noprune=`.
async fn remove(
    Ctx(ctx): Ctx,
    state: DState,
    Path(name): Path<String>,
    p: Params,
) -> DResult<Response> {
    let d = state.0;
    let force = p.bool("force");
    image(&d, &name, &ctx.project)?;
    let d2 = d.clone();
    let c2 = ctx.clone();
    let report = blocking(move || Ok(d2.engine.remove_image(&c2, &name, force)?)).await?;
    let mut out = Vec::new();
    for u in &report.untagged {
        out.push(json!({"Untagged": u}));
        emit(&d, "image", "untag", u, &[("name", u)], &ctx);
    }
    for del in &report.deleted {
        out.push(json!({"Deleted": del.as_str()}));
        emit(&d, "image", "delete", del.as_str(), &[], &ctx);
    }
    Ok(json(StatusCode::OK, Value::Array(out)))
}

/// `POST /images/prune?filters={"dangling":["false"]}`.
async fn prune(Ctx(ctx): Ctx, state: DState, p: Params) -> DResult<Response> {
    let d = state.0;
    let filters = p.filters()?;
    check_filters(&filters, &["dangling", "until", "label", "label!"])?;
    let all = filters
        .get("dangling")
        .and_then(|v| v.first())
        .is_some_and(|v| v == "false" || v == "0");
    let d2 = d.clone();
    let c2 = ctx.clone();
    let r = blocking(move || Ok(d2.engine.prune_images_where(&c2, all, &filters)?)).await?;
    for t in &r.untagged {
        emit(&d, "image", "untag", t, &[("name", t)], &ctx);
    }
    for del in &r.deleted {
        emit(&d, "image", "delete", del.as_str(), &[], &ctx);
    }
    // As Docker answers: the tags removed, then the images deleted; null when nothing was.
    let entries: Vec<Value> = r
        .untagged
        .iter()
        .map(|t| json!({"Untagged": t}))
        .chain(r.deleted.iter().map(|d| json!({"Deleted": d.as_str()})))
        .collect();
    Ok(json(
        StatusCode::OK,
        json!({
            "ImagesDeleted": if entries.is_empty() { Value::Null } else { json!(entries) },
            "SpaceReclaimed": r.reclaimed_bytes,
        }),
    ))
}

/// Lines of a progress stream, all at once.
fn progress(lines: Vec<Value>) -> Response {
    let mut body = Vec::new();
    for l in lines {
        body.extend(serde_json::to_vec(&l).expect("json"));
        body.push(b'\n');
    }
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// `POST /images/load`: a `docker save` or OCI archive as the body.
async fn load(Ctx(ctx): Ctx, state: DState, body: Body) -> DResult<Response> {
    let d = state.0;
    let reader = crate::stream::body_reader(body);
    let d2 = d.clone();
    let c2 = ctx.clone();
    // As Docker does, a bad archive is an error line in a 200 stream: clients read it
    // as the load's error (docker-py raises ImageLoadError, the CLI prints it).
    let mut reader = reader;
    let loaded = blocking(move || {
        let r = d2.engine.load_images(&c2, &mut reader);
        if r.is_err() {
            // Read to its end, so the client is not cut off while still sending.
            crate::stream::drain_reader(&mut reader);
        }
        Ok(r?)
    });
    let report = match loaded.await {
        Ok(r) => r,
        Err(e) => {
            let m = e.message;
            return Ok(progress(vec![
                json!({"errorDetail": {"message": m}, "error": m}),
            ]));
        }
    };
    let mut lines = Vec::new();
    for i in &report.images {
        if i.repo_tags.is_empty() {
            lines.push(json!({"stream": format!("Loaded image ID: {}\n", i.id)}));
        }
        for t in &i.repo_tags {
            lines.push(json!({"stream": format!("Loaded image: {t}\n")}));
        }
        emit(&d, "image", "load", i.id.as_str(), &[], &ctx);
    }
    Ok(progress(lines))
}

/// `GET /images/get?names=a&names=b`.
async fn save_many(Ctx(ctx): Ctx, state: DState, p: Params) -> DResult<Response> {
    let names: Vec<String> = p
        .all("names")
        .iter()
        .flat_map(|n| n.split(','))
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .map(String::from)
        .collect();
    if names.is_empty() {
        return Err(DockerError::bad_request(
            "give the images to save as ?names=",
        ));
    }
    save(state.0, names, ctx).await
}

async fn save(d: Arc<Docker>, names: Vec<String>, ctx: RequestContext) -> DResult<Response> {
    let project = ctx.project.clone();
    // Every name is resolved first, so a wrong one is a clear error, not a cut stream.
    let d2 = d.clone();
    let p2 = project.clone();
    let images = blocking(move || {
        let mut out = Vec::new();
        for n in &names {
            image(&d2, n, &p2)?;
            let (rec, tag) = d2.engine.images.resolve_tagged(&p2, n)?;
            out.push((rec, tag.into_iter().collect::<Vec<_>>()));
        }
        Ok(out)
    })
    .await?;
    for (rec, _) in &images {
        emit(&d, "image", "save", rec.id.as_str(), &[], &ctx);
    }
    let (mut writer, body) = crate::stream::body_writer();
    tokio::task::spawn_blocking(move || {
        match pier_image::archive::save(
            &d.engine.images,
            &images,
            ArchiveFormat::DockerArchive,
            &mut writer,
        ) {
            Ok(()) => {
                let _ = writer.finish();
            }
            Err(err) => {
                tracing::error!(error = %err.chain(), "saving images failed; the client's archive is cut short")
            }
        }
    });
    Ok(([(header::CONTENT_TYPE, "application/x-tar")], body).into_response())
}

/// `POST /images/create`: `fromSrc=-` imports the body as a rootfs; `fromImage` pulls.
async fn create(
    Ctx(ctx): Ctx,
    state: DState,
    p: Params,
    headers: axum::http::HeaderMap,
    body: Body,
) -> DResult<Response> {
    let d = state.0;
    if let Some(src) = p.nonempty("fromSrc") {
        if src != "-" {
            return Err(DockerError::not_implemented(
                "pier does not download images from URLs: fetch the archive and give it as a file (`docker import FILE`)",
            ));
        }
        let name = match (p.nonempty("repo"), p.nonempty("tag")) {
            (None, _) => None,
            (Some(r), Some(t)) => Some(format!("{r}:{t}")),
            (Some(r), None) => Some(normalize_ref(r)),
        };
        let name: Option<ImageRef> = name
            .map(|n| n.parse())
            .transpose()
            .map_err(|e: pier_api::reference::RefError| DockerError::bad_request(e.to_string()))?;
        let reader = crate::stream::body_reader(body);
        let d2 = d.clone();
        let c2 = ctx.clone();
        let changes: Vec<String> = p.all("changes").iter().map(|c| c.to_string()).collect();
        let loaded =
            blocking(move || Ok(d2.engine.import_image(&c2, reader, name, &changes)?)).await?;
        emit(&d, "image", "import", loaded.id.as_str(), &[], &ctx);
        return Ok(progress(vec![json!({"status": loaded.id.as_str()})]));
    }
    let Some(from) = p.nonempty("fromImage") else {
        return Err(DockerError::bad_request(
            "give fromImage (to pull) or fromSrc (to import)",
        ));
    };
    super::registry::pull(d, from, p.nonempty("tag"), &headers, ctx).await
}

/// `GET /images/search`.
async fn search() -> DockerError {
    DockerError::not_implemented(
        "docker search is not supported by pier: it has no registry index to search; the built-in registry lists its repositories with `pier registry search`",
    )
}
