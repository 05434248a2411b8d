//! The OCI Distribution API v1.1 (`/v2/...`) over HTTP.
//!
//! Repository names hold slashes, so one catch-all route takes every `/v2/` path and
//! [`route`] splits it from the right (`.../manifests/<ref>`, `.../blobs/uploads/<id>`,
//! `.../blobs/<digest>`, `.../tags/list`, `.../referrers/<digest>`). Every handler
//! checks the name first ([`crate::names`]), then asks [`crate::auth`] whether the caller
//! may pull or push there. [`serve`] runs the router on a TCP listener, with or without
//! TLS, and closes connections that do not finish their request headers in time.

use std::collections::HashMap;
use std::io::SeekFrom;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use axum::Router;
use futures_util::StreamExt;
use pier_api::Digest;
use pier_registry_client::manifest::OCI_INDEX;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio_util::io::ReaderStream;

use crate::auth::Access;
use crate::error::{RegistryError, Result};
use crate::names::{check_repository, Reference};
use crate::Registry;

/// What a `/v2/` path names.
#[derive(Debug, PartialEq, Eq)]
pub enum Route {
    Catalog,
    Tags(String),
    Manifest(String, String),
    Blob(String, String),
    UploadStart(String),
    Upload(String, String),
    Referrers(String, String),
}

/// Splits the part of a path after `/v2/`.
pub fn route(path: &str) -> Option<Route> {
    if path == "_catalog" {
        return Some(Route::Catalog);
    }
    if let Some(repo) = path.strip_suffix("/tags/list") {
        return Some(Route::Tags(repo.into()));
    }
    if let Some((repo, rest)) = path.rsplit_once("/blobs/uploads") {
        return match rest.trim_start_matches('/') {
            "" => Some(Route::UploadStart(repo.into())),
            id if !id.contains('/') => Some(Route::Upload(repo.into(), id.into())),
            _ => None,
        };
    }
    if let Some((repo, r)) = path.rsplit_once("/manifests/") {
        return Some(Route::Manifest(repo.into(), r.into()));
    }
    if let Some((repo, d)) = path.rsplit_once("/referrers/") {
        return Some(Route::Referrers(repo.into(), d.into()));
    }
    if let Some((repo, d)) = path.rsplit_once("/blobs/") {
        return Some(Route::Blob(repo.into(), d.into()));
    }
    None
}

pub fn router(reg: Arc<Registry>) -> Router {
    Router::new()
        .route("/v2/", get(base).head(base))
        .route("/v2", get(base).head(base))
        .route("/v2/token", get(token))
        .route("/v2/{*path}", any(dispatch))
        .layer(axum::middleware::map_response(
            |mut r: Response| async move {
                r.headers_mut().insert(
                    "Docker-Distribution-API-Version",
                    HeaderValue::from_static("registry/2.0"),
                );
                r
            },
        ))
        .with_state(reg)
}

async fn base(State(reg): State<Arc<Registry>>, headers: HeaderMap) -> Response {
    match reg.authorize(&headers, None, Access::Pull).await {
        Ok(_) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            "{}",
        )
            .into_response(),
        Err(e) => e.into_response(),
    }
}

/// Loads a certificate chain and key (PEM) for serving TLS.
pub fn tls_acceptor(
    cert: &std::path::Path,
    key: &std::path::Path,
) -> std::result::Result<tokio_rustls::TlsAcceptor, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .and_then(|i| i.collect::<std::result::Result<_, _>>())
        .map_err(|e| format!("cannot read the certificate {}: {e}", cert.display()))?;
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| format!("cannot read the key {}: {e}", key.display()))?;
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .map_err(|e| format!("the certificate and key do not make a TLS identity: {e}"))?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// How long a client may take to send a request's headers (and, over TLS, to finish its
/// handshake) before its connection is closed; an idle keep-alive connection waiting for
/// its next request is closed after as long. A registry request's headers are a few KiB,
/// so this only ever cuts clients that stalled or never meant to finish.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves `app` on `listener`, over TLS when `tls` is given: each connection (and its
/// handshake) runs in its own task, so a slow client holds up no one else, and one that
/// does not finish its request headers in [`HEADER_READ_TIMEOUT`] is closed.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    tls: Option<tokio_rustls::TlsAcceptor>,
) {
    serve_with(listener, app, tls, HEADER_READ_TIMEOUT).await
}

/// [`serve`] with another header timeout.
pub async fn serve_with(
    listener: tokio::net::TcpListener,
    app: Router,
    tls: Option<tokio_rustls::TlsAcceptor>,
    header_timeout: Duration,
) {
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, "registry accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let (tls, app) = (tls.clone(), app.clone());
        tokio::spawn(async move {
            let _ = tcp.set_nodelay(true);
            let Some(tls) = tls else {
                return serve_connection(tcp, app, peer, header_timeout).await;
            };
            match tokio::time::timeout(header_timeout, tls.accept(tcp)).await {
                Ok(Ok(stream)) => serve_connection(stream, app, peer, header_timeout).await,
                Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
            }
        });
    }
}

async fn serve_connection<S>(
    stream: S,
    app: Router,
    peer: std::net::SocketAddr,
    header_timeout: Duration,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
        let app = app.clone();
        async move { tower::ServiceExt::oneshot(app, req.map(Body::new)).await }
    });
    if let Err(e) = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(header_timeout)
        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
        // Websockets (the dashboard's terminal, which this server also serves).
        .with_upgrades()
        .await
    {
        tracing::debug!(%peer, error = %e, "registry connection ended");
    }
}

/// Issues a bearer token for the requested scopes (see [`crate::auth`]).
async fn token(State(reg): State<Arc<Registry>>, uri: Uri, headers: HeaderMap) -> Response {
    let scopes: Vec<String> = uri
        .query()
        .unwrap_or("")
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .filter(|(k, _)| *k == "scope")
        .flat_map(|(_, v)| {
            let v = pier_api::form::decode_lossy(v);
            v.split(' ').map(str::to_string).collect::<Vec<_>>()
        })
        .collect();
    match reg.issue_token(&headers, &scopes).await {
        Ok(v) => ([(header::CONTENT_TYPE, "application/json")], v.to_string()).into_response(),
        Err(e) => e.into_response(),
    }
}

fn digest(s: &str) -> Result<Digest> {
    s.parse()
        .map_err(|_| RegistryError::DigestInvalid(s.to_string()))
}

fn header_str(h: &HeaderMap, name: header::HeaderName) -> Option<&str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

fn range_of(len: u64) -> String {
    format!("0-{}", len.saturating_sub(1))
}

async fn dispatch(
    State(reg): State<Arc<Registry>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    match handle(reg, method, uri, headers, body).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn handle(
    reg: Arc<Registry>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<Response> {
    let path = uri.path().strip_prefix("/v2/").unwrap_or("");
    let query: HashMap<String, String> = Query::try_from_uri(&uri)
        .map(|Query(q)| q)
        .unwrap_or_default();
    let Some(r) = route(path) else {
        return Ok((StatusCode::NOT_FOUND, "no such registry endpoint").into_response());
    };
    let repo = match &r {
        Route::Catalog => None,
        Route::Tags(n)
        | Route::Manifest(n, _)
        | Route::Blob(n, _)
        | Route::UploadStart(n)
        | Route::Upload(n, _)
        | Route::Referrers(n, _) => Some(n.clone()),
    };
    if let Some(n) = &repo {
        check_repository(n)?;
    }
    let write = !matches!(method, Method::GET | Method::HEAD);
    let access = if write { Access::Push } else { Access::Pull };
    let access = if matches!(r, Route::Catalog) {
        Access::Catalog
    } else {
        access
    };
    reg.authorize(&headers, repo.as_deref(), access).await?;
    if let (Route::UploadStart(to), Some(from)) = (&r, query.get("from")) {
        if query.contains_key("mount") && check_repository(from).is_ok() {
            // Mounting reads from `from`: the caller must be allowed to pull there.
            if reg
                .authorize(&headers, Some(from), Access::Pull)
                .await
                .is_ok()
            {
                let d = digest(&query["mount"])?;
                let (from, to2, d2) = (from.clone(), to.clone(), d.clone());
                let reg2 = reg.clone();
                let mounted = tokio::task::spawn_blocking(move || reg2.mount(&from, &to2, &d2))
                    .await
                    .map_err(|e| RegistryError::UploadInvalid(e.to_string()))??;
                if mounted {
                    return Ok(created_blob(to, &d));
                }
            }
        }
    }
    match (r, method) {
        (Route::Catalog, Method::GET) => catalog(&reg, &query),
        (Route::Tags(repo), Method::GET) => tags(&reg, &repo, &query),
        (Route::Manifest(repo, rf), m) if m == Method::GET || m == Method::HEAD => {
            get_manifest(&reg, &repo, &rf, m == Method::HEAD).await
        }
        (Route::Manifest(repo, rf), Method::PUT) => {
            put_manifest(reg, repo, rf, headers, body).await
        }
        (Route::Manifest(repo, rf), Method::DELETE) => {
            let rf = Reference::parse(&rf)?;
            blocking(move || reg.delete_manifest(&repo, &rf)).await?;
            Ok(StatusCode::ACCEPTED.into_response())
        }
        (Route::Blob(repo, d), m) if m == Method::GET || m == Method::HEAD => {
            get_blob(reg, &repo, &digest(&d)?, &headers, m == Method::HEAD).await
        }
        (Route::Blob(repo, d), Method::DELETE) => {
            let d = digest(&d)?;
            blocking(move || reg.unlink_blob(&repo, &d)).await?;
            Ok(StatusCode::ACCEPTED.into_response())
        }
        (Route::UploadStart(repo), Method::POST) => start_upload(reg, repo, &query, body).await,
        (Route::Upload(repo, id), Method::PATCH) => {
            let s = reg.uploads().get(&repo, &id)?;
            let mut u = s.lock().await;
            same_repo(&u, &repo, &id)?;
            let start = content_range_start(&headers)?;
            u.append(&reg, body, start).await?;
            Ok(upload_status(&repo, &id, u.len, StatusCode::ACCEPTED))
        }
        (Route::Upload(repo, id), Method::PUT) => {
            let d = digest(query.get("digest").map(String::as_str).unwrap_or(""))?;
            let s = reg.uploads().get(&repo, &id)?;
            let mut u = s.lock().await;
            same_repo(&u, &repo, &id)?;
            let start = content_range_start(&headers)?;
            u.append(&reg, body, start).await?;
            reg.finish_upload(&id, &mut u, &d).await?;
            Ok(created_blob(&repo, &d))
        }
        (Route::Upload(repo, id), Method::GET) => {
            let s = reg.uploads().get(&repo, &id)?;
            let u = s.lock().await;
            same_repo(&u, &repo, &id)?;
            Ok(upload_status(&repo, &id, u.len, StatusCode::NO_CONTENT))
        }
        (Route::Upload(repo, id), Method::DELETE) => {
            let s = reg.uploads().get(&repo, &id)?;
            // Waits for a write in flight, so the file goes with the session.
            let u = s.lock().await;
            same_repo(&u, &repo, &id)?;
            drop(u);
            reg.uploads().remove(&id);
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        (Route::Referrers(repo, d), Method::GET) => {
            let d = digest(&d)?;
            let filter = query.get("artifactType").cloned();
            let list = reg.referrers(&repo, &d, filter.as_deref())?;
            let body = serde_json::json!({
                "schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": list,
            });
            let mut resp = ([(header::CONTENT_TYPE, OCI_INDEX)], body.to_string()).into_response();
            if filter.is_some() {
                resp.headers_mut().insert(
                    "OCI-Filters-Applied",
                    HeaderValue::from_static("artifactType"),
                );
            }
            Ok(resp)
        }
        (_, m) => Err(RegistryError::Unsupported(format!(
            "{m} is not supported on {}",
            uri.path()
        ))),
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| RegistryError::Io {
            op: "run a registry task".into(),
            source: std::io::Error::other(e.to_string()),
        })?
}

fn created_blob(repo: &str, d: &Digest) -> Response {
    Response::builder()
        .status(StatusCode::CREATED)
        .header(header::LOCATION, format!("/v2/{repo}/blobs/{d}"))
        .header("Docker-Content-Digest", d.as_str())
        .body(Body::empty())
        .expect("response")
}

fn upload_status(repo: &str, id: &str, len: u64, status: StatusCode) -> Response {
    Response::builder()
        .status(status)
        .header(header::LOCATION, format!("/v2/{repo}/blobs/uploads/{id}"))
        .header(header::RANGE, range_of(len))
        .header("Docker-Upload-UUID", id)
        .header(header::CONTENT_LENGTH, "0")
        .body(Body::empty())
        .expect("response")
}

/// The first byte a chunk carries, from `Content-Range: <start>-<end>`.
fn content_range_start(h: &HeaderMap) -> Result<Option<u64>> {
    let Some(v) = header_str(h, header::CONTENT_RANGE) else {
        return Ok(None);
    };
    let v = v
        .trim()
        .trim_start_matches("bytes")
        .trim_start_matches([' ', '=']);
    let start = v
        .split_once('-')
        .and_then(|(s, _)| s.trim().parse::<u64>().ok())
        .ok_or_else(|| {
            RegistryError::UploadInvalid(format!("Content-Range {v:?} is not <start>-<end>"))
        })?;
    Ok(Some(start))
}

async fn start_upload(
    reg: Arc<Registry>,
    repo: String,
    query: &HashMap<String, String>,
    body: Body,
) -> Result<Response> {
    let (id, s) = reg.uploads().start(&repo)?;
    let Some(d) = query.get("digest") else {
        return Ok(upload_status(&repo, &id, 0, StatusCode::ACCEPTED));
    };
    // Monolithic: the whole blob in this request.
    let d = match digest(d) {
        Ok(d) => d,
        Err(e) => {
            reg.uploads().remove(&id);
            return Err(e);
        }
    };
    let mut u = s.lock().await;
    if let Err(e) = u.append(&reg, body, None).await {
        reg.uploads().remove_locked(&id, &u);
        return Err(e);
    }
    reg.finish_upload(&id, &mut u, &d).await?;
    Ok(created_blob(&repo, &d))
}

async fn get_manifest(reg: &Arc<Registry>, repo: &str, rf: &str, head: bool) -> Result<Response> {
    // The spec's endpoint table allows only 200 and 404 here: a reference that is no
    // valid tag or digest names no manifest.
    let rf = Reference::parse(rf).map_err(|_| RegistryError::ManifestUnknown {
        repository: repo.to_string(),
        reference: rf.to_string(),
    })?;
    let (d, rec) = match reg.resolve(repo, &rf) {
        Ok(x) => x,
        Err(e) => match reg.mirror_manifest(repo, &rf).await {
            Ok(true) => reg.resolve(repo, &rf)?,
            Ok(false) => return Err(e),
            Err(up) => {
                tracing::info!(repo, reference = %rf, error = %up.chain(), "the upstream cannot serve a missing manifest");
                return Err(e);
            }
        },
    };
    let bytes = reg.manifest_bytes(&d)?;
    let resp = Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, &rec.media_type)
        .header(header::CONTENT_LENGTH, bytes.len())
        .header("Docker-Content-Digest", d.as_str());
    let body = if head {
        Body::empty()
    } else {
        Body::from(bytes)
    };
    Ok(resp.body(body).expect("response"))
}

async fn put_manifest(
    reg: Arc<Registry>,
    repo: String,
    rf: String,
    headers: HeaderMap,
    body: Body,
) -> Result<Response> {
    let rf = Reference::parse(&rf)?;
    let limit = crate::MAX_MANIFEST;
    if let Some(len) =
        header_str(&headers, header::CONTENT_LENGTH).and_then(|v| v.parse::<u64>().ok())
    {
        if len > limit {
            return Err(RegistryError::ManifestTooLarge { size: len, limit });
        }
    }
    let mut bytes = Vec::new();
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk
            .map_err(|e| RegistryError::ManifestInvalid(format!("the body was cut off: {e}")))?;
        bytes.extend_from_slice(&chunk);
        if bytes.len() as u64 > limit {
            return Err(RegistryError::ManifestTooLarge {
                size: bytes.len() as u64,
                limit,
            });
        }
    }
    let ct = header_str(&headers, header::CONTENT_TYPE).map(str::to_string);
    let repo2 = repo.clone();
    let (d, subject) =
        blocking(move || reg.put_manifest(&repo2, &rf, &bytes, ct.as_deref(), "push")).await?;
    let mut resp = Response::builder()
        .status(StatusCode::CREATED)
        .header(header::LOCATION, format!("/v2/{repo}/manifests/{d}"))
        .header("Docker-Content-Digest", d.as_str());
    if let Some(s) = subject {
        resp = resp.header("OCI-Subject", s.as_str());
    }
    Ok(resp.body(Body::empty()).expect("response"))
}

/// Parses `bytes=a-b`, `bytes=a-`, `bytes=-n` against a blob of `size` bytes.
pub fn parse_range(v: &str, size: u64) -> Option<(u64, u64)> {
    let spec = v.trim().strip_prefix("bytes=")?;
    if spec.contains(',') {
        return None;
    }
    let (a, b) = spec.split_once('-')?;
    let (start, end) = match (a.trim(), b.trim()) {
        ("", n) => {
            let n: u64 = n.parse().ok()?;
            (size.checked_sub(n.min(size))?, size.checked_sub(1)?)
        }
        (a, "") => (a.parse().ok()?, size.checked_sub(1)?),
        (a, b) => (
            a.parse().ok()?,
            b.parse::<u64>().ok()?.min(size.saturating_sub(1)),
        ),
    };
    (start <= end && end < size).then_some((start, end))
}

async fn get_blob(
    reg: Arc<Registry>,
    repo: &str,
    d: &Digest,
    headers: &HeaderMap,
    head: bool,
) -> Result<Response> {
    let (path, size) = match reg.blob_file(repo, d) {
        Ok(x) => x,
        Err(e) => match reg.mirror_blob(repo, d).await {
            Ok(Some(x)) => x,
            Ok(None) => return Err(e),
            Err(up) => {
                tracing::info!(repo, digest = %d, error = %up.chain(), "the upstream cannot serve a missing blob");
                return Err(e);
            }
        },
    };
    let range = match header_str(headers, header::RANGE) {
        None => None,
        Some(v) => match parse_range(v, size) {
            Some(r) => Some(r),
            None => {
                return Ok(Response::builder()
                    .status(StatusCode::RANGE_NOT_SATISFIABLE)
                    .header(header::CONTENT_RANGE, format!("bytes */{size}"))
                    .body(Body::empty())
                    .expect("response"))
            }
        },
    };
    let (start, end) = range.unwrap_or((0, size.saturating_sub(1)));
    let len = if size == 0 { 0 } else { end - start + 1 };
    let mut resp = Response::builder()
        .status(if range.is_some() {
            StatusCode::PARTIAL_CONTENT
        } else {
            StatusCode::OK
        })
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .header(header::CONTENT_LENGTH, len)
        .header(header::ACCEPT_RANGES, "bytes")
        .header("Docker-Content-Digest", d.as_str());
    if range.is_some() {
        resp = resp.header(header::CONTENT_RANGE, format!("bytes {start}-{end}/{size}"));
    }
    if head {
        return Ok(resp.body(Body::empty()).expect("response"));
    }
    let mut file = tokio::fs::File::open(&path)
        .await
        .map_err(RegistryError::io(format!("open {}", path.display())))?;
    file.seek(SeekFrom::Start(start))
        .await
        .map_err(RegistryError::io("seek in a blob"))?;
    let counter = reg.clone();
    let stream = ReaderStream::with_capacity(file.take(len), 256 * 1024).map(move |c| {
        if let Ok(c) = &c {
            counter
                .bytes_out
                .fetch_add(c.len() as u64, Ordering::Relaxed);
        }
        c
    });
    Ok(resp.body(Body::from_stream(stream)).expect("response"))
}

/// `n` and `last` pagination over a sorted list; returns the page and whether more follow.
fn paginate(all: Vec<String>, query: &HashMap<String, String>) -> Result<(Vec<String>, bool)> {
    let last = query.get("last");
    let mut rest: Vec<String> = all
        .into_iter()
        .filter(|t| last.is_none_or(|l| t.as_str() > l.as_str()))
        .collect();
    let Some(n) = query.get("n") else {
        return Ok((rest, false));
    };
    let n: usize = n
        .parse()
        .map_err(|_| RegistryError::Unsupported(format!("n={n} is not a number")))?;
    let more = rest.len() > n;
    rest.truncate(n);
    Ok((rest, more))
}

fn with_link(body: serde_json::Value, next: Option<String>) -> Response {
    let mut resp = (
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response();
    if let Some(link) = next.and_then(|l| HeaderValue::from_str(&l).ok()) {
        resp.headers_mut().insert(header::LINK, link);
    }
    resp
}

fn tags(reg: &Registry, repo: &str, query: &HashMap<String, String>) -> Result<Response> {
    let all: Vec<String> = reg.tags(repo)?.into_iter().map(|(t, _)| t).collect();
    if all.is_empty() && reg.manifests(repo)?.is_empty() {
        return Err(RegistryError::NameUnknown(repo.to_string()));
    }
    let (page, more) = paginate(all, query)?;
    let next = more.then(|| {
        format!(
            "</v2/{repo}/tags/list?n={}&last={}>; rel=\"next\"",
            query["n"],
            page.last().map(String::as_str).unwrap_or("")
        )
    });
    Ok(with_link(
        serde_json::json!({ "name": repo, "tags": page }),
        next,
    ))
}

fn catalog(reg: &Registry, query: &HashMap<String, String>) -> Result<Response> {
    let (page, more) = paginate(reg.repositories()?, query)?;
    let next = more.then(|| {
        format!(
            "</v2/_catalog?n={}&last={}>; rel=\"next\"",
            query["n"],
            page.last().map(String::as_str).unwrap_or("")
        )
    });
    Ok(with_link(serde_json::json!({ "repositories": page }), next))
}

/// An upload session belongs to the repository it was started in; another repository's
/// URL does not reach it (checked under the session's lock, which a busy session's
/// lookup could not take).
fn same_repo(u: &crate::upload::Upload, repo: &str, id: &str) -> Result<()> {
    if u.repo != repo {
        return Err(RegistryError::UploadUnknown { id: id.to_string() });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_and_ranges() {
        assert_eq!(route("_catalog"), Some(Route::Catalog));
        assert_eq!(route("a/b/tags/list"), Some(Route::Tags("a/b".into())));
        assert_eq!(
            route("a/b/manifests/latest"),
            Some(Route::Manifest("a/b".into(), "latest".into()))
        );
        assert_eq!(
            route("a/blobs/uploads/"),
            Some(Route::UploadStart("a".into()))
        );
        assert_eq!(
            route("a/blobs/uploads/x1"),
            Some(Route::Upload("a".into(), "x1".into()))
        );
        assert_eq!(
            route("a/blobs/sha256:x"),
            Some(Route::Blob("a".into(), "sha256:x".into()))
        );
        assert_eq!(
            route("a/referrers/d"),
            Some(Route::Referrers("a".into(), "d".into()))
        );
        assert_eq!(route("nothing"), None);
        assert_eq!(parse_range("bytes=0-9", 100), Some((0, 9)));
        assert_eq!(parse_range("bytes=90-", 100), Some((90, 99)));
        assert_eq!(parse_range("bytes=-10", 100), Some((90, 99)));
        assert_eq!(parse_range("bytes=95-200", 100), Some((95, 99)));
        assert_eq!(parse_range("bytes=100-", 100), None);
        assert_eq!(parse_range("items=0-1", 100), None);
    }

    #[tokio::test]
    async fn unfinished_request_headers_are_cut() {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let app = Router::new().route("/v2/", get(|| async { "{}" }));
        let timeout = Duration::from_millis(300);
        let server = tokio::spawn(serve_with(l, app, None, timeout));
        let read_all = |mut s: tokio::net::TcpStream| async move {
            let mut got = Vec::new();
            let _ = s.read_to_end(&mut got).await;
            got
        };

        // Half a request: closed once the timeout passes, with nothing answered.
        let started = std::time::Instant::now();
        let mut stalled = tokio::net::TcpStream::connect(addr).await.unwrap();
        stalled
            .write_all(b"GET /v2/ HTTP/1.1\r\nHost: x\r\n")
            .await
            .unwrap();
        let got = tokio::time::timeout(Duration::from_secs(10), read_all(stalled))
            .await
            .expect("the stalled connection was not closed");
        let took = started.elapsed();
        assert!(took >= timeout && took < Duration::from_secs(5), "{took:?}");
        assert!(!String::from_utf8_lossy(&got).contains("200"), "{got:?}");

        // A whole request is answered.
        let mut ok = tokio::net::TcpStream::connect(addr).await.unwrap();
        ok.write_all(b"GET /v2/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let got = read_all(ok).await;
        assert!(got.starts_with(b"HTTP/1.1 200"), "{got:?}");
        server.abort();
    }
}
