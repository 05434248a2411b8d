//! What the daemon does around every API request, on each API's router ([`track`]): gives
//! it an ID (the client's `X-Request-Id` when it is sane, else a new one; answered in the
//! response's `X-Request-Id`), runs it in a `request` span carrying that ID (so the log
//! lines it causes name it), counts and times it in the metrics, and writes one log line
//! for a refused or failed request: a user's mistake (4xx) as a warning saying so, what
//! the daemon does not do or cannot do now (501, 503, 507) as a warning, a fault of the
//! daemon (500) as an error; a served one gets a debug line with its time.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, State};
use axum::http::HeaderValue;
use axum::response::Response;
use tracing::Instrument;

use crate::metrics::Metrics;

pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// What an error response says, put in its extensions by the error types so that the
/// request's log line can quote it.
#[derive(Debug, Clone)]
pub struct ErrorNote(pub String);

/// Puts the route an inner router matched in its response, for [`track`] outside it
/// (the Docker API routes after its version is taken off the path).
pub async fn remember_route(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let matched = req.extensions().get::<MatchedPath>().cloned();
    let mut resp = next.run(req).await;
    if let Some(m) = matched {
        resp.extensions_mut().insert(m);
    }
    resp
}

/// A new request ID: the daemon's start time and a counter, unique per daemon.
fn new_id() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    static START: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    let start = START.get_or_init(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    });
    format!("{start:x}-{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

/// The client's request ID, when it is short and printable (it goes into logs).
fn given_id(req: &axum::extract::Request) -> Option<String> {
    let v = req.headers().get(REQUEST_ID_HEADER)?.to_str().ok()?;
    (!v.is_empty()
        && v.len() <= 64
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b)))
    .then(|| v.to_string())
}

/// The middleware of `api`'s router; see the module doc.
pub async fn track(
    State((metrics, api)): State<(Arc<Metrics>, &'static str)>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let id = given_id(&req).unwrap_or_else(new_id);
    let matched = req.extensions().get::<MatchedPath>().cloned();
    let method = req.method().as_str().to_string();
    let path = req.uri().path().to_string();
    let started = Instant::now();
    let span = tracing::info_span!("request", id = %id, api);
    let mut resp = next.run(req).instrument(span.clone()).await;
    let elapsed = started.elapsed();
    let route = resp
        .extensions()
        .get::<MatchedPath>()
        .or(matched.as_ref())
        .map_or("unmatched", |m| m.as_str())
        .to_string();
    let status = resp.status();
    metrics.observe(api, &method, &route, status.as_str(), elapsed);
    if let Ok(v) = HeaderValue::from_str(&id) {
        resp.headers_mut().insert(REQUEST_ID_HEADER, v);
    }
    let message = resp
        .extensions()
        .get::<ErrorNote>()
        .map_or("", |n| n.0.as_str());
    let _in_span = span.enter();
    // Tests look for "request failed" in the log: a fault of the daemon (500). Other
    // 5xx answers say what the daemon does not do or cannot do now (501 swarm, 503
    // busy, 507 no space): not its fault, not the client's mistake either.
    if status == axum::http::StatusCode::INTERNAL_SERVER_ERROR {
        tracing::error!(%method, %path, status = status.as_u16(), error = message, "request failed");
    } else if status.is_server_error() {
        tracing::warn!(%method, %path, status = status.as_u16(), error = message, "request not served");
    } else if status.is_client_error() {
        tracing::warn!(%method, %path, status = status.as_u16(), error = message, "request refused (the client's mistake)");
    } else {
        tracing::debug!(%method, %path, status = status.as_u16(), ms = elapsed.as_millis() as u64, "request served");
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_header(v: &str) -> axum::extract::Request {
        axum::http::Request::builder()
            .header(REQUEST_ID_HEADER, v)
            .body(axum::body::Body::empty())
            .unwrap()
    }

    #[test]
    fn a_clients_id_is_kept_only_when_sane() {
        assert_eq!(
            given_id(&with_header("ci-42.a:b_c")).as_deref(),
            Some("ci-42.a:b_c")
        );
        assert_eq!(given_id(&with_header("two words")), None);
        assert_eq!(given_id(&with_header(&"x".repeat(65))), None);
        assert_eq!(given_id(&with_header("")), None);
        let (a, b) = (new_id(), new_id());
        assert_ne!(a, b);
    }
}
