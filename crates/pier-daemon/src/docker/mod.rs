//! The Docker Engine API, served on a socket of its own (`/run/pier/docker.sock`) over
//! the same engine as the native API: the `docker` CLI (20.10 to 28) and docker-compose
//! drive Pier unchanged, and what they make is what `pier ps` shows.
//!
//! - Paths come versioned (`/v1.43/containers/json`) or not. [`negotiate`] strips the
//!   version, refuses one outside [`MIN_API`, `MAX_API`], and puts Docker's headers
//!   (`Api-Version`, `Ostype`, `Server`, ...) on every answer.
//! - Errors are Docker's `{"message": "..."}` with Docker's status codes ([`DockerError`]);
//!   what Pier does not do (swarm, plugins, registry) answers 501 or 503 with a sentence
//!   saying so, never a bare 500.
//! - One file per area: [`system`] (ping, version, info, events, df), [`containers`]
//!   (create, list, lifecycle; Docker's create body and container shapes are
//!   [`pier_api::docker`]'s),
//!   [`streams`] (attach, logs, wait, resize), [`exec`], [`stats`] (stats, top),
//!   [`archive`] (cp, export, commit, changes), [`images`], [`registry`] (pull, push,
//!   login), [`build`], [`networks`], [`volumes`].
//! - [`params`] reads Docker's query strings (repeated keys, `1`/`true` booleans, JSON
//!   `filters`).

pub mod archive;
pub mod build;
pub mod containers;
pub mod exec;
pub mod images;
pub mod networks;
pub mod params;
pub mod registry;
pub mod stats;
pub mod streams;
pub mod system;
pub mod volumes;

use std::sync::Arc;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use pier_api::ErrorKind;

use crate::api::Ctx;
use crate::error::ApiError;
use pier_api::ProjectName;
use pier_engine::{Engine, RequestContext};

pub(crate) use pier_api::docker::normalize_ref;

pub use pier_api::docker::version::{api_string, ApiVersion, DOCKER_VERSION, MAX_API, MIN_API};

/// What the Docker API shares besides the engine: the recent events (for `docker events
/// --since`). Exec and attach sessions are the engine's.
pub struct Docker {
    pub engine: Arc<Engine>,
    pub(crate) events: pier_engine::events::EventLog,
}

pub(crate) type DState = axum::extract::State<Arc<Docker>>;

impl axum::extract::FromRequestParts<Arc<Docker>> for Ctx {
    type Rejection = DockerError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        d: &Arc<Docker>,
    ) -> DResult<Self> {
        Ok(Ctx(crate::api::request_context(parts, &d.engine.projects)?))
    }
}

/// An error as Docker sends it: a status and `{"message": "..."}`.
#[derive(Debug)]
pub struct DockerError {
    pub status: StatusCode,
    pub message: String,
}

impl DockerError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        DockerError {
            status,
            message: message.into(),
        }
    }
    pub fn bad_request(m: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, m)
    }
    pub fn not_found(m: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, m)
    }
    pub fn conflict(m: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, m)
    }
    pub fn not_implemented(m: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_IMPLEMENTED, m)
    }
    pub fn internal(m: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, m)
    }
}

impl From<ApiError> for DockerError {
    fn from(e: ApiError) -> Self {
        let status = StatusCode::from_u16(e.kind.status()).unwrap_or(StatusCode::BAD_REQUEST);
        DockerError {
            status,
            message: e.message,
        }
    }
}

impl From<pier_api::docker::Refused> for DockerError {
    fn from(e: pier_api::docker::Refused) -> Self {
        let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::BAD_REQUEST);
        DockerError::new(status, e.message)
    }
}

impl From<pier_image::ImageError> for DockerError {
    fn from(e: pier_image::ImageError) -> Self {
        ApiError::from(e).into()
    }
}

impl From<pier_engine::EngineError> for DockerError {
    fn from(e: pier_engine::EngineError) -> Self {
        ApiError::from(e).into()
    }
}

impl From<tokio::task::JoinError> for DockerError {
    fn from(e: tokio::task::JoinError) -> Self {
        ApiError::from(e).into()
    }
}

impl IntoResponse for DockerError {
    fn into_response(self) -> Response {
        // The request's log line (crate::requests::track) quotes the message.
        let note = crate::requests::ErrorNote(self.message.clone());
        let mut resp = (
            self.status,
            Json(serde_json::json!({ "message": self.message })),
        )
            .into_response();
        resp.extensions_mut().insert(note);
        resp
    }
}

pub type DResult<T> = Result<T, DockerError>;

/// Runs blocking engine work on the blocking pool.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> DResult<T> + Send + 'static,
) -> DResult<T> {
    tokio::task::spawn_blocking(f).await?
}

/// JSON with Docker's content type.
pub(crate) fn json(status: StatusCode, v: serde_json::Value) -> Response {
    (status, Json(v)).into_response()
}

/// A streamed body of JSON lines (`docker load`, `events`, `stats`, ...).
pub(crate) fn json_stream(rx: tokio::sync::mpsc::Receiver<serde_json::Value>) -> Response {
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        let v = rx.recv().await?;
        let mut line = serde_json::to_vec(&v).expect("json");
        line.push(b'\n');
        Some((Ok::<_, std::io::Error>(line), rx))
    });
    (
        [(header::CONTENT_TYPE, "application/json")],
        Body::from_stream(stream),
    )
        .into_response()
}

/// The Docker API's router, for `axum::serve` on the Docker socket.
pub fn router(engine: Arc<Engine>) -> Router {
    let docker = Arc::new(Docker {
        events: pier_engine::events::EventLog::start(&engine),
        engine,
    });
    let api = Router::new()
        .route("/_ping", get(system::ping).head(system::ping))
        .route("/version", get(system::version))
        .route("/info", get(system::info))
        .route("/events", get(system::events))
        .route("/system/df", get(system::df))
        .route("/auth", post(login))
        .merge(containers::routes())
        .merge(streams::routes())
        .merge(exec::routes())
        .merge(stats::routes())
        .merge(archive::routes())
        .merge(images::routes())
        .merge(networks::routes())
        .merge(volumes::routes())
        .route("/build", post(build::build))
        .route("/build/prune", post(build_prune))
        .route("/session", post(unsupported))
        .route("/grpc", post(unsupported))
        .route("/distribution/{*rest}", get(registry::distribution))
        .route("/swarm", get(unsupported))
        .route("/swarm/{*rest}", get(unsupported).post(unsupported))
        .route("/nodes", get(unsupported))
        .route(
            "/nodes/{*rest}",
            get(unsupported).post(unsupported).delete(unsupported),
        )
        .route("/services", get(unsupported))
        .route(
            "/services/{*rest}",
            get(unsupported).post(unsupported).delete(unsupported),
        )
        .route("/tasks", get(unsupported))
        .route("/tasks/{*rest}", get(unsupported))
        .route("/secrets", get(unsupported))
        .route(
            "/secrets/{*rest}",
            get(unsupported).post(unsupported).delete(unsupported),
        )
        .route("/configs", get(unsupported))
        .route(
            "/configs/{*rest}",
            get(unsupported).post(unsupported).delete(unsupported),
        )
        .route("/plugins", get(no_plugins))
        .route(
            "/plugins/{*rest}",
            get(plugin).post(unsupported).delete(unsupported),
        )
        .route("/containers/{id}/update", post(update))
        // The route taken, for the API metrics outside this router.
        .layer(axum::middleware::from_fn(crate::requests::remember_route))
        .fallback(unknown)
        .method_not_allowed_fallback(unknown)
        .with_state(docker);
    // The version is taken off the path before routing, so the outer router's middleware
    // wraps the inner one as its fallback.
    Router::new()
        .fallback_service(api)
        .layer(axum::middleware::from_fn(negotiate))
        // JSON bodies (create, exec, networks, volumes, auth); the streamed ones (archive
        // uploads, load, import, build) take `Body`, which this does not limit.
        .layer(axum::extract::DefaultBodyLimit::max(
            crate::http::JSON_BODY_LIMIT,
        ))
}

/// Endpoints of Docker features Pier does not have; each says what instead.
async fn unsupported(req: Request) -> DockerError {
    let (parts, body) = req.into_parts();
    crate::stream::drain(body, 1 << 20).await;
    pier_api::docker::unsupported(parts.method.as_str(), parts.uri.path()).into()
}

/// `POST /auth` (`docker login`).
async fn login(state: DState, body: axum::body::Bytes) -> DResult<Response> {
    registry::auth(state.0, body).await
}

/// `GET /plugins`: Pier has none.
async fn no_plugins() -> Response {
    json(StatusCode::OK, serde_json::json!([]))
}

/// `GET /plugins/{name}/json` (`docker inspect` tries plugins last): never found.
async fn plugin(axum::extract::Path(rest): axum::extract::Path<String>) -> DockerError {
    match rest.strip_suffix("/json") {
        Some(name) => DockerError::not_found(format!("plugin \"{name}\" not found")),
        None => DockerError::not_implemented("pier does not support Docker plugins"),
    }
}

/// `docker builder prune` (and `system prune`): removes the build cache, the untagged
/// images build steps made that no kept image was built from.
async fn build_prune(Ctx(ctx): Ctx, axum::extract::State(d): DState) -> Response {
    let engine = d.engine.clone();
    let r = tokio::task::spawn_blocking(move || engine.prune_build_cache(&ctx)).await;
    match r {
        Ok(Ok(report)) => json(
            StatusCode::OK,
            serde_json::json!({
                "CachesDeleted": report.deleted.iter().map(|d| d.to_string()).collect::<Vec<_>>(),
                "SpaceReclaimed": report.reclaimed_bytes,
            }),
        ),
        Ok(Err(err)) => DockerError::from(err).into_response(),
        Err(err) => DockerError::from(err).into_response(),
    }
}

/// `docker update`: the limits and restart policy of `UpdateConfig` (a zero or absent
/// one is unchanged, as Docker's daemon takes them) through the engine's update.
async fn update(
    Ctx(ctx): Ctx,
    state: DState,
    axum::extract::Path(id): axum::extract::Path<String>,
    body: axum::body::Bytes,
) -> DResult<Response> {
    let c = container(&state.0, &id, &ctx)?;
    let b: serde_json::Value = if body.is_empty() {
        serde_json::json!({})
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| DockerError::bad_request(format!("invalid update config: {e}")))?
    };
    let int = |k: &str| b.get(k).and_then(serde_json::Value::as_i64);
    let nonzero = |k: &str| int(k).filter(|v| *v != 0);
    let restart = match b["RestartPolicy"]["Name"]
        .as_str()
        .filter(|n| !n.is_empty())
    {
        None => None,
        Some("no") => Some(pier_api::containers::RestartPolicy::No),
        Some("always") => Some(pier_api::containers::RestartPolicy::Always),
        Some("unless-stopped") => Some(pier_api::containers::RestartPolicy::UnlessStopped),
        Some("on-failure") => Some(pier_api::containers::RestartPolicy::OnFailure {
            max_retries: b["RestartPolicy"]["MaximumRetryCount"]
                .as_u64()
                .unwrap_or(0) as u32,
        }),
        Some(other) => {
            return Err(DockerError::bad_request(format!(
                "invalid restart policy {other:?}: use no, always, unless-stopped or on-failure"
            )))
        }
    };
    let changes = pier_api::containers::ContainerUpdate {
        memory: nonzero("Memory").filter(|m| *m > 0),
        memory_swap: nonzero("MemorySwap"),
        cpus: nonzero("NanoCpus").map(|n| n as f64 / 1e9),
        cpu_shares: nonzero("CpuShares"),
        pids_limit: int("PidsLimit"),
        restart_policy: restart,
    };
    state
        .0
        .engine
        .instances
        .update(&ctx, &c.id, changes)
        .await?;
    Ok(json(StatusCode::OK, serde_json::json!({"Warnings": []})))
}

async fn unknown(req: Request) -> DockerError {
    DockerError::not_found(format!(
        "page not found: pier's Docker API has no {} {}",
        req.method(),
        req.uri().path()
    ))
}

/// Takes `/v1.NN` off the path (checking NN), runs the request, and adds Docker's headers
/// to the answer.
async fn negotiate(mut req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let v = pier_api::docker::version::strip_version(&path);
    let (version, refused) = (v.version, v.refused);
    if let Some(tail) = v.path {
        let new_uri = match req.uri().query() {
            Some(q) => format!("{tail}?{q}"),
            None => tail,
        };
        if let Ok(uri) = new_uri.parse() {
            *req.uri_mut() = uri;
        }
    }
    req.extensions_mut().insert(version);
    let mut resp = match refused {
        Some(m) => DockerError::bad_request(m).into_response(),
        None => next.run(req).await,
    };
    // axum's own refusal of a body over the limit is plain text: answer Docker's shape.
    let is_json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if resp.status() == StatusCode::PAYLOAD_TOO_LARGE && !is_json {
        resp = DockerError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            crate::error::body_too_large(),
        )
        .into_response();
    }
    let h = resp.headers_mut();
    let api = api_string(MAX_API);
    h.insert("api-version", HeaderValue::from_str(&api).expect("ascii"));
    h.insert("ostype", HeaderValue::from_static("linux"));
    h.insert("docker-experimental", HeaderValue::from_static("false"));
    h.insert(
        header::SERVER,
        HeaderValue::from_str(&format!(
            "Docker/{DOCKER_VERSION} (linux) Pier/{}",
            env!("CARGO_PKG_VERSION")
        ))
        .expect("ascii"),
    );
    if method == Method::HEAD && path.ends_with("/_ping") {
        // HEAD answers carry no body.
        *resp.body_mut() = Body::empty();
    }
    resp
}

// ---- name resolution with Docker's messages ---------------------------------------------

/// Finds a container, with Docker's "No such container" on a miss.
pub(crate) fn container(
    d: &Docker,
    name_or_id: &str,
    ctx: &RequestContext,
) -> DResult<pier_api::containers::ContainerInspect> {
    d.engine
        .instances
        .get(ctx, name_or_id)
        .map_err(|e| match e.kind() {
            ErrorKind::NotFound => {
                DockerError::not_found(format!("No such container: {name_or_id}"))
            }
            _ => e.into(),
        })
}

/// Finds an image, with Docker's "No such image" on a miss.
pub(crate) fn image(
    d: &Docker,
    reference: &str,
    project: &ProjectName,
) -> DResult<pier_image::store::ImageRecord> {
    d.engine
        .images
        .resolve(project, reference)
        .map_err(|e| match e {
            pier_image::error::ImageError::NotFound { .. }
            | pier_image::error::ImageError::InvalidReference(_) => {
                DockerError::not_found(format!("No such image: {}", normalize_ref(reference)))
            }
            e => e.into(),
        })
}
