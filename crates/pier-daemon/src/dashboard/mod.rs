//! The web dashboard (`pier daemon --dashboard ADDR`): an HTTPS listener that serves a
//! few embedded static pages (`pages.rs`) and, behind a login, the same native API router as the unix
//! socket. The pages are an API client like any other: their JavaScript calls `/v1/...`
//! on the same origin, and no endpoint exists for them alone.
//!
//! This module owns:
//! - the TLS identity: the given certificate and key, or a self-signed pair made once
//!   with `rcgen` and kept in `ROOT/dashboard/` (mode 0600) for the next start;
//! - the login: `POST /v1/dashboard/links` on the root-only socket ([`link_routes`], what
//!   `pier dashboard url` calls) issues a random one-time link that works for
//!   [`LINK_TTL`]; `GET /login?token=` swaps it for a session cookie (HttpOnly, Secure,
//!   SameSite=Strict) that lasts [`SESSION_TTL`]. Links and sessions live in memory
//!   only: a daemon restart logs everyone out;
//! - the guard in front of everything else: no valid session is a 401 (a JSON error
//!   under `/v1/` and `/metrics`, a page saying to run `pier dashboard url` otherwise),
//!   and a state-changing request (POST, PUT, PATCH, DELETE) whose `Origin` is not the
//!   dashboard's own is refused (CSRF).

use std::collections::HashMap;
use std::fs;
use std::net::SocketAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use pier_api::system::DashboardLink;

mod pages;

/// How long a link from `pier dashboard url` works (once).
pub const LINK_TTL: Duration = Duration::from_secs(5 * 60);
/// How long a dashboard session lasts after its login.
pub const SESSION_TTL: Duration = Duration::from_secs(8 * 60 * 60);
/// The session cookie; `__Host-` makes browsers take it only when Secure, for `/` and
/// without a Domain.
pub const COOKIE: &str = "__Host-pier_session";

#[derive(Debug, thiserror::Error)]
pub enum DashboardError {
    #[error("cannot {op} {path}: {source}")]
    Io {
        op: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the dashboard's certificate {have} exists but {missing} does not; remove {have} to have a new pair made, or give both with --dashboard-cert and --dashboard-key")]
    HalfPair { have: String, missing: String },
    #[error("cannot make the dashboard's self-signed certificate: {0}")]
    Certificate(String),
    #[error("{0}")]
    Tls(String),
}

fn io<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> DashboardError + 'a {
    move |source| DashboardError::Io {
        op,
        path: path.display().to_string(),
        source,
    }
}

/// The dashboard's login state: unused links and open sessions, by their random token.
#[derive(Debug)]
pub struct Dashboard {
    /// `https://HOST:PORT`, what links point at.
    origin: String,
    links: Mutex<HashMap<String, Instant>>,
    sessions: Mutex<HashMap<String, Instant>>,
}

/// A new random token: 32 bytes from the kernel (getrandom), in hex.
fn token() -> String {
    pier_api::random_hex(32)
}

impl Dashboard {
    /// The dashboard served on `addr`: links name it by its address, or by the host's
    /// name when it listens on every address.
    pub fn new(addr: SocketAddr) -> Self {
        let host = if addr.ip().is_unspecified() {
            rustix::system::uname()
                .nodename()
                .to_string_lossy()
                .into_owned()
        } else if addr.is_ipv6() {
            format!("[{}]", addr.ip())
        } else {
            addr.ip().to_string()
        };
        Dashboard {
            origin: format!("https://{host}:{}", addr.port()),
            links: Mutex::default(),
            sessions: Mutex::default(),
        }
    }

    /// A new one-time login link.
    pub fn issue_link(&self) -> DashboardLink {
        let t = token();
        let now = Instant::now();
        let mut links = self.links.lock().expect("links lock");
        links.retain(|_, exp| *exp > now);
        links.insert(t.clone(), now + LINK_TTL);
        DashboardLink {
            url: format!("{}/login?token={t}", self.origin),
            expires_in_seconds: LINK_TTL.as_secs(),
        }
    }

    /// Uses up a link's token: a new session's token when it was issued, unused and not
    /// expired at `now`.
    pub fn redeem(&self, link: &str, now: Instant) -> Option<String> {
        let expires = self.links.lock().expect("links lock").remove(link)?;
        if expires <= now {
            return None;
        }
        let s = token();
        let mut sessions = self.sessions.lock().expect("sessions lock");
        sessions.retain(|_, exp| *exp > now);
        sessions.insert(s.clone(), now + SESSION_TTL);
        Some(s)
    }

    /// Whether `session` is an open session at `now`.
    pub fn session_valid(&self, session: &str, now: Instant) -> bool {
        self.sessions
            .lock()
            .expect("sessions lock")
            .get(session)
            .is_some_and(|exp| *exp > now)
    }
}

/// The session token in a request's cookies.
fn session_cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v)
}

/// Whether a request may change state: safe methods always; others, and websockets
/// (a GET that runs a command, `exec/ws`), only with an `Origin` that is this dashboard's
/// own (`https://` and the `Host` the browser asked for), which a page of another site
/// cannot forge.
pub fn origin_allowed(method: &Method, headers: &HeaderMap) -> bool {
    let websocket = headers
        .get(header::UPGRADE)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"));
    if matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) && !websocket {
        return true;
    }
    let get = |h| headers.get(h).and_then(|v: &HeaderValue| v.to_str().ok());
    match (get(header::ORIGIN), get(header::HOST)) {
        (Some(origin), Some(host)) => origin.strip_prefix("https://") == Some(host),
        _ => false,
    }
}

/// The page a browser gets without a session.
const LOGIN_NEEDED: &str = "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
<title>Pier: log in</title><link rel=\"stylesheet\" href=\"/assets/style.css\"></head>\
<body><main><h1>Pier dashboard</h1><p>You are not logged in, or this link was used \
already or has expired. On the daemon's host, run <code>pier dashboard url</code> as root \
and open the link it prints (it works once, for 5 minutes).</p></main></body></html>";

fn unauthorized(path: &str) -> Response {
    let msg = "no dashboard session: run `pier dashboard url` on the daemon's host and open the link it prints";
    if path.starts_with("/v1/") || path == "/metrics" {
        let mut r = (
            StatusCode::UNAUTHORIZED,
            Json(serde_json::json!({ "message": msg })),
        )
            .into_response();
        r.extensions_mut()
            .insert(crate::requests::ErrorNote(msg.into()));
        r
    } else {
        (
            StatusCode::UNAUTHORIZED,
            [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
            LOGIN_NEEDED,
        )
            .into_response()
    }
}

/// Lets through only requests with a session (and, when they change state, from the
/// dashboard's own pages); the stylesheet is public, for the login page.
async fn guard(State(d): State<Arc<Dashboard>>, req: Request, next: Next) -> Response {
    let path = req.uri().path();
    if path != "/assets/style.css"
        && !session_cookie(req.headers()).is_some_and(|s| d.session_valid(s, Instant::now()))
    {
        return unauthorized(path);
    }
    if !origin_allowed(req.method(), req.headers()) {
        let msg = "refused: a request that changes state must come from the dashboard's own pages (its Origin header did not match)";
        let mut r = (
            StatusCode::FORBIDDEN,
            Json(serde_json::json!({ "message": msg })),
        )
            .into_response();
        r.extensions_mut()
            .insert(crate::requests::ErrorNote(msg.into()));
        return r;
    }
    next.run(req).await
}

/// Headers on every dashboard response: only its own scripts and styles run, it is never
/// framed, and no page leaks its address to another site.
async fn hardening(req: Request, next: Next) -> Response {
    let mut r = next.run(req).await;
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
        ),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    r
}

#[derive(serde::Deserialize)]
struct LoginQuery {
    #[serde(default)]
    token: String,
}

/// Swaps a one-time link for a session cookie and goes to the overview.
async fn login(State(d): State<Arc<Dashboard>>, Query(q): Query<LoginQuery>) -> Response {
    match d.redeem(&q.token, Instant::now()) {
        Some(session) => {
            tracing::info!("dashboard login");
            let cookie = format!(
                "{COOKIE}={session}; Path=/; HttpOnly; Secure; SameSite=Strict; Max-Age={}",
                SESSION_TTL.as_secs()
            );
            (
                StatusCode::SEE_OTHER,
                [
                    (header::SET_COOKIE, cookie),
                    (header::LOCATION, "/".to_string()),
                    (header::CACHE_CONTROL, "no-store".to_string()),
                ],
            )
                .into_response()
        }
        None => {
            tracing::warn!("dashboard login refused: the link was used, expired or unknown");
            unauthorized("/login")
        }
    }
}

/// The dashboard's HTTPS app: `/login`, the pages, and `api` (the native API) behind the
/// session and Origin checks.
pub fn app(d: Arc<Dashboard>, api: Router) -> Router {
    let pages = pages::routes();
    pages
        .merge(api)
        .layer(axum::middleware::from_fn_with_state(d.clone(), guard))
        .route("/login", get(login).with_state(d))
        .layer(axum::middleware::from_fn(hardening))
}

/// `POST /v1/dashboard/links`, for the root-only socket: a one-time login link.
pub fn link_routes(d: Option<Arc<Dashboard>>) -> Router {
    Router::new()
        .route("/v1/dashboard/links", post(issue_link))
        .with_state(d)
}

/// A one-time link into the web dashboard: it opens a session once, within 5 minutes
/// (`pier dashboard url`). Only on the daemon's root-only socket, never on the dashboard.
#[utoipa::path(post, path = "/v1/dashboard/links",
    responses((status = 200, body = DashboardLink), (status = 409, body = pier_api::ErrorBody)))]
async fn issue_link(State(d): State<Option<Arc<Dashboard>>>) -> Response {
    match d {
        Some(d) => Json(d.issue_link()).into_response(),
        None => crate::error::ApiError::new(
            pier_api::ErrorKind::Conflict,
            "this daemon serves no dashboard; restart it with --dashboard ADDR (e.g. 127.0.0.1:9443)",
        )
        .into_response(),
    }
}

/// The OpenAPI document of [`link_routes`].
#[derive(utoipa::OpenApi)]
#[openapi(paths(issue_link), components(schemas(DashboardLink)))]
pub struct DashboardDoc;

/// The certificate and key to serve: the given pair, else `ROOT/dashboard/cert.pem` and
/// `key.pem`, made (self-signed for `addr`, `localhost` and the host's name) when absent.
pub fn identity(
    root: &Path,
    addr: SocketAddr,
    given: Option<(PathBuf, PathBuf)>,
) -> Result<(PathBuf, PathBuf), DashboardError> {
    if let Some(pair) = given {
        return Ok(pair);
    }
    let dir = root.join("dashboard");
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    match (cert.exists(), key.exists()) {
        (true, true) => return Ok((cert, key)),
        (false, false) => {}
        (true, false) | (false, true) => {
            let (have, missing) = if cert.exists() {
                (&cert, &key)
            } else {
                (&key, &cert)
            };
            return Err(DashboardError::HalfPair {
                have: have.display().to_string(),
                missing: missing.display().to_string(),
            });
        }
    }
    let mut names = vec!["localhost".to_string(), addr.ip().to_string()];
    let host = rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned();
    if !host.is_empty() {
        names.push(host);
    }
    let made = rcgen::generate_simple_self_signed(names)
        .map_err(|e| DashboardError::Certificate(e.to_string()))?;
    fs::create_dir_all(&dir).map_err(io("create", &dir))?;
    for (path, pem) in [
        (&key, made.signing_key.serialize_pem()),
        (&cert, made.cert.pem()),
    ] {
        let mut f = fs::File::options()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(io("create", path))?;
        std::io::Write::write_all(&mut f, pem.as_bytes()).map_err(io("write", path))?;
    }
    tracing::info!(cert = %cert.display(), "made the dashboard's self-signed certificate");
    Ok((cert, key))
}

/// Starts serving the dashboard on `addr` with `app` ([`app`]) over TLS.
pub async fn serve(
    addr: SocketAddr,
    cert: &Path,
    key: &Path,
    app: Router,
) -> Result<tokio::task::JoinHandle<()>, DashboardError> {
    let tls = pier_registry::server::tls_acceptor(cert, key).map_err(DashboardError::Tls)?;
    let l = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| DashboardError::Io {
            op: "listen on",
            path: addr.to_string(),
            source,
        })?;
    tracing::info!(addr = %addr, "dashboard listening (HTTPS)");
    Ok(tokio::spawn(pier_registry::server::serve(
        l,
        app,
        Some(tls),
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dash() -> Dashboard {
        Dashboard::new("127.0.0.1:9443".parse().unwrap())
    }

    fn token_of(link: &DashboardLink) -> &str {
        link.url.split_once("token=").unwrap().1
    }

    #[test]
    fn a_link_works_once() {
        let d = dash();
        let link = d.issue_link();
        assert!(link.url.starts_with("https://127.0.0.1:9443/login?token="));
        let t = token_of(&link);
        assert_eq!(t.len(), 64);
        let s = d.redeem(t, Instant::now()).expect("a fresh link logs in");
        assert!(d.session_valid(&s, Instant::now()));
        assert_eq!(d.redeem(t, Instant::now()), None, "a used link is refused");
        assert_eq!(d.redeem("", Instant::now()), None);
        assert_ne!(token_of(&d.issue_link()), t, "links are random");
    }

    #[test]
    fn a_link_expires() {
        let d = dash();
        let link = d.issue_link();
        let late = Instant::now() + LINK_TTL + Duration::from_secs(1);
        assert_eq!(d.redeem(token_of(&link), late), None);
        // Refused once expired, and used up all the same.
        assert_eq!(d.redeem(token_of(&link), Instant::now()), None);
    }

    #[test]
    fn sessions_are_checked_and_expire() {
        let d = dash();
        let s = d.redeem(token_of(&d.issue_link()), Instant::now()).unwrap();
        assert!(d.session_valid(&s, Instant::now()));
        assert!(!d.session_valid("forged", Instant::now()));
        assert!(!d.session_valid(&s, Instant::now() + SESSION_TTL + Duration::from_secs(1)));
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_str(&format!("a=b; {COOKIE}={s}; c=d")).unwrap(),
        );
        assert_eq!(session_cookie(&h), Some(s.as_str()));
        assert_eq!(session_cookie(&HeaderMap::new()), None);
    }

    #[test]
    fn state_changes_need_the_dashboards_origin() {
        let with = |origin: Option<&str>| {
            let mut h = HeaderMap::new();
            h.insert(header::HOST, HeaderValue::from_static("127.0.0.1:9443"));
            if let Some(o) = origin {
                h.insert(header::ORIGIN, HeaderValue::from_str(o).unwrap());
            }
            h
        };
        let same = with(Some("https://127.0.0.1:9443"));
        for m in [Method::POST, Method::PUT, Method::PATCH, Method::DELETE] {
            assert!(origin_allowed(&m, &same), "{m}");
            assert!(!origin_allowed(&m, &with(None)), "{m} without Origin");
            assert!(!origin_allowed(&m, &with(Some("https://evil.example"))));
            assert!(!origin_allowed(&m, &with(Some("http://127.0.0.1:9443"))));
            assert!(!origin_allowed(&m, &with(Some("null"))));
        }
        assert!(origin_allowed(
            &Method::GET,
            &with(Some("https://evil.example"))
        ));
        // A websocket (a terminal) is a state change: another site cannot open one.
        let ws = |origin| {
            let mut h = with(origin);
            h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
            h
        };
        assert!(origin_allowed(
            &Method::GET,
            &ws(Some("https://127.0.0.1:9443"))
        ));
        assert!(!origin_allowed(
            &Method::GET,
            &ws(Some("https://evil.example"))
        ));
        assert!(!origin_allowed(&Method::GET, &ws(None)));
    }

    #[tokio::test]
    async fn the_guard_refuses_requests_without_a_session() {
        use tower::ServiceExt;
        let d = Arc::new(dash());
        let api = Router::new().route("/v1/info", post(|| async { "ok" }).get(|| async { "ok" }));
        let app = app(d.clone(), api);
        let req = |m: Method, path: &str, cookie: Option<&str>, origin: Option<&str>| {
            let mut b = axum::http::Request::builder()
                .method(m)
                .uri(path)
                .header(header::HOST, "127.0.0.1:9443");
            if let Some(s) = cookie {
                b = b.header(header::COOKIE, format!("{COOKIE}={s}"));
            }
            if let Some(o) = origin {
                b = b.header(header::ORIGIN, o);
            }
            b.body(axum::body::Body::empty()).unwrap()
        };
        let status = |r: Request| {
            let app = app.clone();
            async move { app.oneshot(r).await.unwrap().status() }
        };
        assert_eq!(status(req(Method::GET, "/v1/info", None, None)).await, 401);
        assert_eq!(status(req(Method::GET, "/", None, None)).await, 401);
        assert_eq!(
            status(req(Method::GET, "/", Some("forged"), None)).await,
            401
        );
        assert_eq!(
            status(req(Method::GET, "/assets/style.css", None, None)).await,
            200
        );

        let link = d.issue_link();
        let r = app
            .clone()
            .oneshot(req(
                Method::GET,
                &format!("/login?token={}", token_of(&link)),
                None,
                None,
            ))
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::SEE_OTHER);
        let set = r.headers()[header::SET_COOKIE]
            .to_str()
            .unwrap()
            .to_string();
        for attr in [
            "HttpOnly",
            "Secure",
            "SameSite=Strict",
            "Path=/",
            "Max-Age=",
        ] {
            assert!(set.contains(attr), "{set} lacks {attr}");
        }
        let s = set.split(';').next().unwrap().split_once('=').unwrap().1;
        assert_eq!(status(req(Method::GET, "/", Some(s), None)).await, 200);
        assert_eq!(
            status(req(Method::GET, "/v1/info", Some(s), None)).await,
            200
        );
        let own = Some("https://127.0.0.1:9443");
        assert_eq!(
            status(req(Method::POST, "/v1/info", Some(s), own)).await,
            200
        );
        let evil = Some("https://evil.example");
        assert_eq!(
            status(req(Method::POST, "/v1/info", Some(s), evil)).await,
            403
        );
        assert_eq!(
            status(req(Method::POST, "/v1/info", Some(s), None)).await,
            403
        );
        // The link is spent.
        let again = format!("/login?token={}", token_of(&link));
        assert_eq!(status(req(Method::GET, &again, None, None)).await, 401);
    }

    #[test]
    fn a_self_signed_pair_is_made_once_and_kept_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("pier-dash-{}", token()));
        let addr = "127.0.0.1:9443".parse().unwrap();
        let (cert, key) = identity(&dir, addr, None).unwrap();
        let first = fs::read(&cert).unwrap();
        for p in [&cert, &key] {
            assert_eq!(fs::metadata(p).unwrap().permissions().mode() & 0o777, 0o600);
        }
        assert!(pier_registry::server::tls_acceptor(&cert, &key).is_ok());
        let (cert2, _) = identity(&dir, addr, None).unwrap();
        assert_eq!(fs::read(cert2).unwrap(), first, "reused at restart");
        fs::remove_file(&key).unwrap();
        assert!(matches!(
            identity(&dir, addr, None),
            Err(DashboardError::HalfPair { .. })
        ));
        fs::remove_dir_all(&dir).unwrap();
    }
}
