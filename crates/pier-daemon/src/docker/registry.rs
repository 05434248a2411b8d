//! Registries through the Docker API: pull (`POST /images/create?fromImage=`), push
//! (`POST /images/{name}/push`) and login (`POST /auth`), over the engine's registry
//! client. Credentials come as Docker sends them: `X-Registry-Auth`, base64url of
//! `{"username", "password", "serveraddress"}`.
//!
//! Progress is Docker's JSON stream (`{"status": "Downloading", "progressDetail":
//! {...}, "id": "<layer>"}`); a failure after the stream began is its last line
//! (`{"errorDetail": {"message": ...}, "error": ...}`), which the CLI prints.

use std::sync::Arc;

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use pier_api::docker::images::{error_line, progress_line};
use pier_api::registry::TransferProgress;
use pier_api::ImageRef;
use pier_registry_client::{transfer, Credentials};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use super::system::emit;
use super::{json, json_stream, normalize_ref, DResult, Docker, DockerError};
use pier_engine::RequestContext;

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct AuthConfig {
    username: String,
    password: String,
    serveraddress: String,
}

/// The credentials of `X-Registry-Auth`, when it carries any.
fn credentials(headers: &HeaderMap) -> Option<Credentials> {
    let raw = headers.get("x-registry-auth")?.to_str().ok()?;
    let bytes = pier_registry_client::b64::decode(raw.trim())?;
    let a: AuthConfig = serde_json::from_slice(&bytes).ok()?;
    (!a.username.is_empty()).then_some(Credentials {
        username: a.username,
        password: a.password,
    })
}

/// Relays a transfer's progress into a Docker progress stream.
fn relay(tx: mpsc::Sender<Value>, pull: bool) -> transfer::Progress {
    Arc::new(move |p: TransferProgress| {
        if let Some(line) = progress_line(&p, pull) {
            let _ = tx.try_send(line);
        }
    })
}

/// `POST /images/create?fromImage=NAME&tag=TAG`.
pub(crate) async fn pull(
    d: Arc<Docker>,
    from: &str,
    tag: Option<&str>,
    headers: &HeaderMap,
    ctx: RequestContext,
) -> DResult<Response> {
    let project = ctx.project.clone();
    let reference = match tag {
        Some(t) if t.starts_with("sha256:") => format!("{from}@{t}"),
        Some(t) => format!("{from}:{t}"),
        None => normalize_ref(from),
    };
    let r: ImageRef = reference
        .parse()
        .map_err(|e: pier_api::reference::RefError| DockerError::bad_request(e.to_string()))?;
    let creds = credentials(headers);
    let before = d
        .engine
        .images
        .resolve(&project, &reference)
        .ok()
        .map(|i| i.id);
    let (tx, rx) = mpsc::channel::<Value>(1024);
    let shown = r.familiar();
    let _ = tx.try_send(json!({
        "status": format!("Pulling from {}", r.repository()),
        "id": match (r.digest(), r.tag()) {
            (Some(d), _) => d.to_string(),
            (None, t) => t.unwrap_or("latest").to_string(),
        },
    }));
    tokio::spawn(async move {
        let progress = relay(tx.clone(), true);
        let done = d.engine.pull_image(&ctx, &r, creds, progress).await;
        let lines = match done {
            Ok((id, manifest)) => {
                emit(&d, "image", "pull", &shown, &[("name", &shown)], &ctx);
                let status = if before.as_ref() == Some(&id) {
                    format!("Status: Image is up to date for {shown}")
                } else {
                    format!("Status: Downloaded newer image for {shown}")
                };
                vec![
                    json!({"status": format!("Digest: {manifest}")}),
                    json!({"status": status}),
                ]
            }
            Err(e) => vec![error_line(&e.chain())],
        };
        for l in lines {
            let _ = tx.send(l).await;
        }
    });
    Ok(json_stream(rx))
}

/// `POST /images/{name}/push?tag=`: one tag, or every tag of the repository.
pub(crate) async fn push(
    d: Arc<Docker>,
    name: &str,
    tag: Option<&str>,
    headers: &HeaderMap,
    ctx: RequestContext,
) -> DResult<Response> {
    let project = ctx.project.clone();
    let creds = credentials(headers);
    let targets: Vec<ImageRef> = match tag {
        Some(t) => vec![format!("{name}:{t}")
            .parse()
            .map_err(|e: pier_api::reference::RefError| DockerError::bad_request(e.to_string()))?],
        None => {
            let repo: ImageRef = name.parse().map_err(|e: pier_api::reference::RefError| {
                DockerError::bad_request(e.to_string())
            })?;
            let mut v: Vec<ImageRef> = d
                .engine
                .images
                .list(&project)?
                .iter()
                .flat_map(|i| i.repo_tags.iter())
                .filter_map(|t| t.parse::<ImageRef>().ok())
                .filter(|t| t.full_name() == repo.full_name())
                .collect();
            v.sort_by_key(|t| t.familiar());
            v
        }
    };
    if targets.is_empty() {
        return Err(DockerError::not_found(format!(
            "An image does not exist locally with the tag: {name}"
        )));
    }
    for t in &targets {
        super::image(&d, &t.familiar(), &project)?;
    }
    let (tx, rx) = mpsc::channel::<Value>(1024);
    let _ = tx.try_send(json!({
        "status": format!("The push refers to repository [{}]", targets[0].full_name()),
    }));
    tokio::spawn(async move {
        for target in targets {
            let local = target.familiar();
            let progress = relay(tx.clone(), false);
            let done = d
                .engine
                .push_image(&ctx, &local, &target, creds.clone(), progress)
                .await;
            match done {
                Ok((digest, size)) => {
                    emit(&d, "image", "push", &local, &[("name", &local)], &ctx);
                    let tag = target.tag().unwrap_or("latest").to_string();
                    let _ = tx
                        .send(json!({"status": format!("{tag}: digest: {digest} size: {size}")}))
                        .await;
                    let _ = tx
                        .send(json!({"progressDetail": {}, "aux": {"Tag": tag, "Digest": digest.as_str(), "Size": size}}))
                        .await;
                }
                Err(e) => {
                    let _ = tx.send(error_line(&e.chain())).await;
                    return;
                }
            }
        }
    });
    Ok(json_stream(rx))
}

/// `POST /auth` (`docker login`): checks the credentials against the registry.
pub(crate) async fn auth(d: Arc<Docker>, body: Bytes) -> DResult<Response> {
    use pier_registry_client::login::{login, LoginError};
    let a: AuthConfig = serde_json::from_slice(&body)
        .map_err(|e| DockerError::bad_request(format!("invalid login request: {e}")))?;
    let creds = Credentials {
        username: a.username,
        password: a.password,
    };
    login(&a.serveraddress, &d.engine.registry_client, creds)
        .await
        .map_err(|e| match e {
            LoginError::Refused { .. } => DockerError::new(StatusCode::UNAUTHORIZED, e.to_string()),
            LoginError::Unreachable { .. } => {
                DockerError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
            }
            LoginError::Client { host, why } => DockerError::internal(format!("{host}: {why}")),
        })?;
    Ok(json(
        StatusCode::OK,
        json!({"Status": "Login Succeeded", "IdentityToken": ""}),
    ))
}

/// `GET /distribution/{name}/json`: what the image's registry (mirrors first) says of it,
/// without pulling: `{"Descriptor": {...}, "Platforms": [...]}`.
pub(crate) async fn distribution(
    crate::api::Ctx(ctx): crate::api::Ctx,
    state: super::DState,
    axum::extract::Path(rest): axum::extract::Path<String>,
    headers: HeaderMap,
) -> DResult<Response> {
    let Some(name) = rest.strip_suffix("/json") else {
        return Err(DockerError::new(
            StatusCode::NOT_FOUND,
            format!("page not found: /distribution/{rest}"),
        ));
    };
    let r: ImageRef = normalize_ref(name)
        .parse()
        .map_err(|e: pier_api::reference::RefError| DockerError::bad_request(e.to_string()))?;
    let (desc, platforms) = state
        .0
        .engine
        .inspect_remote(&ctx, &r, credentials(&headers))
        .await
        .map_err(|e| {
            let m = e.chain();
            let status = match &e {
                pier_registry_client::RemoteError::Unauthorized { .. } => StatusCode::UNAUTHORIZED,
                pier_registry_client::RemoteError::Denied(_) => StatusCode::FORBIDDEN,
                _ if m.contains("MANIFEST_UNKNOWN")
                    || m.contains("NAME_UNKNOWN")
                    || m.contains("404") =>
                {
                    StatusCode::NOT_FOUND
                }
                _ => StatusCode::INTERNAL_SERVER_ERROR,
            };
            DockerError::new(status, format!("{name}: {m}"))
        })?;
    Ok(json(
        StatusCode::OK,
        json!({
            "Descriptor": {"mediaType": desc.media_type, "digest": desc.digest.as_str(), "size": desc.size},
            "Platforms": platforms
                .iter()
                .map(|p| {
                    let mut v = json!({"architecture": p.architecture, "os": p.os});
                    if let Some(var) = &p.variant {
                        v["variant"] = json!(var);
                    }
                    v
                })
                .collect::<Vec<_>>(),
        }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_auth_header_and_hosts() {
        let mut h = HeaderMap::new();
        // {"username":"u","password":"p"} in base64url
        let enc = pier_registry_client::b64::encode(br#"{"username":"u","password":"p"}"#)
            .replace('+', "-")
            .replace('/', "_");
        h.insert("x-registry-auth", enc.parse().unwrap());
        let c = credentials(&h).unwrap();
        assert_eq!((c.username.as_str(), c.password.as_str()), ("u", "p"));
        h.insert("x-registry-auth", "e30=".parse().unwrap());
        assert!(credentials(&h).is_none());
    }
}
