//! The system part of the native API: `/v1/info`, `/v1/version`, `/v1/system/df`,
//! `/v1/system/prune`, `/v1/system/login`, `/v1/events` and `/v1/metrics/history`. Each handler reads the
//! engine's own facts and logic (host facts in [`pier_engine::system`], the event log in
//! [`pier_engine::events`], the prunes of each service) and shapes them.

use std::sync::Arc;

use axum::extract::State;
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use pier_api::containers::Event;
use pier_api::system::{
    DfBuildCache, DfContainer, DfImage, DfVolume, EventsQuery, InstanceUsageSample, LoginReport,
    LoginRequest, MetricsHistory, MetricsHistoryQuery, MetricsSample, SystemDf, SystemPruneQuery,
    SystemPruneReport, VersionInfo,
};
use pier_api::types::SystemInfo;
use pier_api::{ErrorBody, ErrorKind};
use pier_engine::events::{EventLog, EventQuery, LoggedEvent, EVENT_FILTERS};
use pier_engine::filters;
use pier_engine::system::HostInfo;
use utoipa::OpenApi;

use crate::api::{blocking, Ctx, Engine, Shared, J, Q};
use crate::error::{ApiError, ApiResult};

/// The routes, with an event log of their own (started now, on the daemon's runtime).
pub fn routes(engine: &Arc<Engine>) -> Router<Arc<Engine>> {
    let log = Arc::new(EventLog::start(engine));
    Router::new()
        .route("/v1/info", get(info))
        .route("/v1/version", get(version))
        .route("/v1/system/df", get(df))
        .route("/v1/system/prune", post(prune))
        .route("/v1/system/login", post(login))
        .route("/v1/events", get(events))
        .route("/v1/metrics/history", get(metrics_history))
        .layer(Extension(log))
}

#[derive(OpenApi)]
#[openapi(
    paths(info, version, df, prune, login, events, metrics_history),
    components(schemas(
        SystemInfo,
        VersionInfo,
        SystemDf,
        DfImage,
        DfContainer,
        DfVolume,
        DfBuildCache,
        SystemPruneReport,
        LoginRequest,
        LoginReport,
        Event,
        MetricsHistory,
        MetricsSample,
        InstanceUsageSample
    ))
)]
pub struct SystemDoc;

/// What this daemon is and holds: counts of the caller's project, the host's CPUs,
/// memory, cgroups, runtimes and the state directory's free space.
#[utoipa::path(get, path = "/v1/info", responses((status = 200, body = SystemInfo)))]
async fn info(Ctx(ctx): Ctx, State(e): Shared) -> ApiResult<Json<SystemInfo>> {
    Ok(Json(blocking(move || Ok(e.system_info(&ctx)?)).await?))
}

/// The daemon's recent metrics, oldest first: the host's free memory and disk and the
/// running instances in each sample, and one instance's use when asked (the graphs of
/// the last hour, without a Prometheus). Prometheus scrapes `GET /metrics` instead.
#[utoipa::path(get, path = "/v1/metrics/history", params(MetricsHistoryQuery),
    responses((status = 200, body = MetricsHistory), (status = 404, body = ErrorBody)))]
async fn metrics_history(
    Ctx(ctx): Ctx,
    State(e): Shared,
    Q(q): Q<MetricsHistoryQuery>,
) -> ApiResult<Json<MetricsHistory>> {
    let id = match q.instance {
        Some(name) => {
            let e = e.clone();
            Some(blocking(move || Ok(e.instances.get(&ctx, &name)?.id)).await?)
        }
        None => None,
    };
    Ok(Json(e.history.query(id.as_deref(), q.since)))
}

/// The daemon's version and API versions.
#[utoipa::path(get, path = "/v1/version", responses((status = 200, body = VersionInfo)))]
async fn version() -> Json<VersionInfo> {
    use pier_api::docker::version::{api_string, MAX_API, MIN_API};
    Json(VersionInfo {
        version: env!("CARGO_PKG_VERSION").to_string(),
        api_version: pier_api::API_VERSION.to_string(),
        docker_api_version: api_string(MAX_API),
        docker_min_api_version: api_string(MIN_API),
        git_commit: option_env!("PIER_GIT_COMMIT").map(str::to_string),
        os: std::env::consts::OS.to_string(),
        arch: pier_image::build::host_arch().into(),
        kernel: HostInfo::read().kernel,
    })
}

/// Disk usage of the caller's project: images, containers' writable layers, volumes and
/// the build cache (the intermediate images of builds).
#[utoipa::path(get, path = "/v1/system/df", responses((status = 200, body = SystemDf)))]
async fn df(Ctx(ctx): Ctx, State(e): Shared) -> ApiResult<Json<SystemDf>> {
    Ok(Json(blocking(move || Ok(e.disk_usage(&ctx)?)).await?))
}

/// Removes the stopped containers, then the networks no container uses, the dangling
/// images (every unused one with `all`), the build cache and, with `volumes`, the
/// anonymous volumes no container uses.
#[utoipa::path(post, path = "/v1/system/prune", params(SystemPruneQuery), responses((status = 200, body = SystemPruneReport)))]
async fn prune(
    Ctx(ctx): Ctx,
    State(e): Shared,
    Q(q): Q<SystemPruneQuery>,
) -> ApiResult<Json<SystemPruneReport>> {
    Ok(Json(e.prune_system(&ctx, q.all, q.volumes).await?))
}

/// Checks credentials against a registry (a token handshake where it asks for one, then
/// `GET /v2/`), with the daemon's registry settings (insecure hosts, CAs). The client
/// stores them; the daemon keeps nothing.
#[utoipa::path(post, path = "/v1/system/login", request_body = LoginRequest,
    responses((status = 200, body = LoginReport), (status = 400, body = ErrorBody), (status = 503, body = ErrorBody)))]
async fn login(State(e): Shared, J(req): J<LoginRequest>) -> ApiResult<Json<LoginReport>> {
    use pier_registry_client::login::{login, LoginError};
    let creds = pier_registry_client::Credentials {
        username: req.username,
        password: req.password,
    };
    let host = login(&req.server, &e.registry_client, creds)
        .await
        .map_err(|err| {
            let kind = match err {
                LoginError::Refused { .. } => ErrorKind::InvalidInput,
                LoginError::Unreachable { .. } => ErrorKind::Unavailable,
                LoginError::Client { .. } => ErrorKind::InvalidInput,
            };
            ApiError::new(kind, err.to_string())
        })?;
    Ok(Json(LoginReport { host }))
}

/// Streams events as JSON lines: with `since`, the kept ones from then first; then new
/// ones until `until` passes (or for ever). `filters` as Docker's.
#[utoipa::path(get, path = "/v1/events", params(EventsQuery),
    responses((status = 200, content_type = "application/x-ndjson", body = [Event]), (status = 400, body = ErrorBody)))]
async fn events(
    Ctx(ctx): Ctx,
    Extension(log): Extension<Arc<EventLog>>,
    Q(q): Q<EventsQuery>,
) -> ApiResult<Response> {
    let filters = match q.filters.as_deref().filter(|f| !f.is_empty()) {
        Some(f) => filters::parse(f)?,
        None => Default::default(),
    };
    filters::check(&filters, EVENT_FILTERS)?;
    let since = filters::time_nanos("since", q.since.as_deref())?;
    let until = filters::time_nanos("until", q.until.as_deref())?;
    let rx = log.stream(
        &ctx,
        EventQuery {
            filters,
            since,
            until,
        },
    );
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        let e = rx.recv().await?;
        let line = serde_json::to_string(&event(&e)).expect("json") + "\n";
        Some((Ok(line), rx))
    });
    Ok(crate::api_containers::ndjson(stream))
}

/// A logged event in the native API's shape.
fn event(e: &LoggedEvent) -> Event {
    let secs = e.time_nano.div_euclid(1_000_000_000) as u64;
    let nanos = e.time_nano.rem_euclid(1_000_000_000) as u32;
    let t = std::time::UNIX_EPOCH + std::time::Duration::new(secs, nanos);
    Event {
        time: pier_api::time::format_rfc3339_nanos(t),
        kind: e.kind.clone(),
        action: e.action.clone(),
        id: e.id.clone(),
        attributes: e.attributes.clone(),
    }
}
