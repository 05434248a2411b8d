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
use pier_api::registry::TransferProgress;
use pier_api::ImageRef;
use pier_registry_client::{transfer, Credentials, Remote};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use super::system::emit;
use super::{json, json_stream, normalize_ref, DResult, Docker, DockerError};
use pier_api::ProjectName;

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

fn error_line(message: &str) -> Value {
    json!({"errorDetail": {"message": message}, "error": message})
}

fn short(d: &pier_api::Digest) -> String {
    d.hex()[..12].to_string()
}

/// A transfer's progress in Docker's words (`pull`: the verbs of a pull, else a push's).
fn progress_line(p: &TransferProgress, pull: bool) -> Option<Value> {
    let id = short(p.blob.as_ref()?);
    let status = match (p.status.as_str(), pull) {
        ("waiting", true) => "Pulling fs layer",
        ("waiting", false) => "Preparing",
        ("exists", true) => "Already exists",
        ("exists", false) => "Layer already exists",
        ("downloading", _) => "Downloading",
        ("uploading", _) => "Pushing",
        ("done", true) => "Pull complete",
        ("done", false) => "Pushed",
        _ => return None,
    };
    let mut v = json!({"status": status, "progressDetail": {}, "id": id});
    if matches!(p.status.as_str(), "downloading" | "uploading") {
        v["progressDetail"] = json!({"current": p.current, "total": p.total});
    }
    Some(v)
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
    project: &ProjectName,
) -> DResult<Response> {
    let project = project.clone();
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
        .resolve(&project.clone(), &reference)
        .ok()
        .map(|i| i.id);
    let (tx, rx) = mpsc::channel::<Value>(1024);
    let shown = r.familiar();
    let _ = tx.try_send(json!({
        "status": format!("Pulling from {}", r.familiar_name()),
        "id": r.tag().unwrap_or("latest"),
    }));
    tokio::spawn(async move {
        let progress = relay(tx.clone(), true);
        let done = transfer::pull(
            d.engine.images.clone(),
            project.clone(),
            &r,
            &d.engine.registry_client,
            creds,
            progress,
        )
        .await;
        let lines = match done {
            Ok((id, manifest)) => {
                emit(&d, "image", "pull", &shown, &[("name", &shown)], &project);
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
    project: &ProjectName,
) -> DResult<Response> {
    let project = project.clone();
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
                .list(&project.clone())?
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
            let done = transfer::push(
                d.engine.images.clone(),
                project.clone(),
                &local,
                &target,
                &d.engine.registry_client,
                creds.clone(),
                progress,
            )
            .await;
            match done {
                Ok(digest) => {
                    emit(&d, "image", "push", &local, &[("name", &local)], &project);
                    let tag = target.tag().unwrap_or("latest").to_string();
                    let size = d
                        .engine
                        .images
                        .resolve(&project.clone(), &local)
                        .map(|r| r.size())
                        .unwrap_or(0);
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

/// The registry host of a `serveraddress` (`https://index.docker.io/v1/` is Docker Hub).
fn login_host(server: &str) -> String {
    let s = server
        .trim_start_matches("https://")
        .trim_start_matches("http://");
    let host = s.split('/').next().unwrap_or("");
    match host {
        "" | "index.docker.io" | "docker.io" | "registry-1.docker.io" => {
            "registry-1.docker.io".into()
        }
        h => h.into(),
    }
}

/// `POST /auth` (`docker login`): checks the credentials against the registry.
pub(crate) async fn auth(d: Arc<Docker>, body: Bytes) -> DResult<Response> {
    let a: AuthConfig = serde_json::from_slice(&body)
        .map_err(|e| DockerError::bad_request(format!("invalid login request: {e}")))?;
    let host = login_host(&a.serveraddress);
    let creds = Credentials {
        username: a.username,
        password: a.password,
    };
    let unauthorized = |why: String| DockerError::new(StatusCode::UNAUTHORIZED, why);
    let remote = Remote::new(&host, &d.engine.registry_client, Some(creds))
        .map_err(|e| DockerError::internal(e.chain()))?;
    remote
        .authenticate("registry:catalog:*")
        .await
        .map_err(|e| unauthorized(format!("login to {host} failed: {}", e.chain())))?;
    let resp = remote
        .send(
            hyper::Method::GET,
            "/v2/",
            &[],
            pier_registry_client::remote::empty(),
        )
        .await
        .map_err(|e| {
            DockerError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("cannot reach {host}: {}", e.chain()),
            )
        })?;
    if resp.status() == hyper::StatusCode::UNAUTHORIZED {
        return Err(unauthorized(format!(
            "login to {host} failed: unauthorized: incorrect username or password"
        )));
    }
    if !resp.status().is_success() {
        return Err(unauthorized(format!(
            "login to {host} failed: the registry answered {}",
            resp.status()
        )));
    }
    Ok(json(
        StatusCode::OK,
        json!({"Status": "Login Succeeded", "IdentityToken": ""}),
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
        assert_eq!(
            login_host("https://index.docker.io/v1/"),
            "registry-1.docker.io"
        );
        assert_eq!(login_host("127.0.0.1:5000"), "127.0.0.1:5000");
        assert_eq!(login_host("https://r.example/v2/"), "r.example");
    }
}
