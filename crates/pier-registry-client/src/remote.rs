//! A client of any OCI distribution registry: HTTP/1.1 over TCP, TLS (rustls, the
//! system's roots) unless the host is loopback or marked insecure, and the token
//! handshake: a 401 with `WWW-Authenticate: Bearer realm=...,service=...,scope=...` is
//! answered by fetching a token from the realm (with basic credentials when given) for
//! the challenge's scope and every scope asked for before, and sending the request again;
//! a `Basic` challenge by sending the credentials. Any request's challenge is answered
//! this way, not only the `/v2/` probe's (a registry may answer that probe 200 to
//! anonymous clients and challenge a push; a token may expire during a long transfer),
//! so request bodies are [`Payload`]s that can be sent twice.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::error::{RemoteError, Result};

pub type ReqBody = BoxBody<Bytes, std::io::Error>;

/// The most read of a token or error answer from a registry.
const SMALL_REPLY: usize = 64 << 10;

/// A request body that can be made again, for the retry after a challenge.
pub enum Payload {
    Empty,
    Bytes(Bytes),
    /// A streamed body (a blob's file), made anew for each attempt.
    Stream(Box<dyn Fn() -> Result<ReqBody> + Send + Sync>),
}

impl Payload {
    fn body(&self) -> Result<ReqBody> {
        Ok(match self {
            Payload::Empty => Empty::new().map_err(|never| match never {}).boxed(),
            Payload::Bytes(b) => Full::new(b.clone()).map_err(|never| match never {}).boxed(),
            Payload::Stream(make) => make()?,
        })
    }
}

pub fn empty() -> Payload {
    Payload::Empty
}

pub fn full(b: impl Into<Bytes>) -> Payload {
    Payload::Bytes(b.into())
}

/// Credentials for a registry.
#[derive(Debug, Clone)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

/// How the engine reaches registries.
#[derive(Debug, Clone, Default)]
pub struct ClientConfig {
    /// Hosts (`host[:port]`) reached over plain HTTP.
    pub insecure: Vec<String>,
    /// Extra root certificates (PEM files) to trust.
    pub ca_files: Vec<std::path::PathBuf>,
    /// Registries (`host[:port]`) tried, in order, before an image's own registry.
    pub mirrors: Vec<String>,
}

/// A client of one registry host.
pub struct Remote {
    pub host: String,
    tls: Option<tokio_rustls::TlsConnector>,
    /// Plain HTTP: an insecure host, or a loopback one that does not speak TLS.
    plain: std::sync::atomic::AtomicBool,
    /// A loopback host: HTTPS is tried first, plain HTTP after.
    probe: bool,
    creds: Option<Credentials>,
    /// The `Authorization` value requests carry.
    auth: Mutex<Option<String>>,
    /// Every scope asked for so far: a new token covers them all, so answering one
    /// request's challenge does not take away what another needs.
    scopes: Mutex<Vec<String>>,
}

fn is_loopback(host: &str) -> bool {
    let h = host.rsplit_once(':').map_or(host, |(h, p)| {
        if p.bytes().all(|b| b.is_ascii_digit()) {
            h
        } else {
            host
        }
    });
    matches!(h, "localhost" | "127.0.0.1" | "[::1]") || h.starts_with("127.")
}

fn upstream(m: impl std::fmt::Display) -> RemoteError {
    RemoteError::Upstream(m.to_string())
}

/// A TLS connector trusting the system's roots and `ca_files`.
pub fn tls_connector(ca_files: &[std::path::PathBuf]) -> Result<tokio_rustls::TlsConnector> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(c);
    }
    for f in ca_files {
        for c in rustls::pki_types::CertificateDer::pem_file_iter(f)
            .map_err(|e| upstream(format!("cannot read CA file {}: {e}", f.display())))?
        {
            let c = c.map_err(|e| upstream(format!("bad certificate in {}: {e}", f.display())))?;
            roots
                .add(c)
                .map_err(|e| upstream(format!("bad certificate in {}: {e}", f.display())))?;
        }
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(upstream)?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

/// `key="value"` pairs of a challenge.
fn challenge_params(s: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = s;
    while let Some((k, r)) = rest.split_once('=') {
        let k = k.trim().trim_start_matches(',').trim().to_string();
        let r = r.trim_start();
        let (v, r) = if let Some(r) = r.strip_prefix('"') {
            match r.split_once('"') {
                Some((v, r)) => (v.to_string(), r),
                None => (r.to_string(), ""),
            }
        } else {
            match r.split_once(',') {
                Some((v, r)) => (v.trim().to_string(), r),
                None => (r.trim().to_string(), ""),
            }
        };
        out.push((k, v));
        rest = r.trim_start_matches(',');
    }
    out
}

fn encode_query(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

impl Remote {
    pub fn new(host: &str, config: &ClientConfig, creds: Option<Credentials>) -> Result<Remote> {
        let insecure = config.insecure.iter().any(|h| h == host);
        let probe = !insecure && is_loopback(host);
        Ok(Remote {
            host: host.to_string(),
            tls: if insecure {
                None
            } else {
                Some(tls_connector(&config.ca_files)?)
            },
            plain: std::sync::atomic::AtomicBool::new(insecure),
            probe,
            creds,
            auth: Mutex::new(None),
            scopes: Mutex::new(Vec::new()),
        })
    }

    fn base(&self) -> String {
        let plain = self.plain.load(std::sync::atomic::Ordering::Relaxed);
        format!("{}://{}", if plain { "http" } else { "https" }, self.host)
    }

    /// Sends one request to `url` (absolute) and returns the response.
    async fn raw(
        &self,
        method: Method,
        url: &str,
        headers: &[(&str, String)],
        body: ReqBody,
    ) -> Result<Response<Incoming>> {
        let uri: hyper::Uri = url
            .parse()
            .map_err(|e| upstream(format!("bad URL {url}: {e}")))?;
        let host = uri
            .host()
            .ok_or_else(|| upstream(format!("no host in {url}")))?
            .to_string();
        let https = uri.scheme_str() == Some("https");
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        let tcp = TcpStream::connect((host.as_str(), port))
            .await
            .map_err(|e| upstream(format!("cannot connect to {host}:{port}: {e}")))?;
        let _ = tcp.set_nodelay(true);
        let path = uri
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/")
            .to_string();
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header(
                hyper::header::HOST,
                uri.authority().map(|a| a.as_str()).unwrap_or(&host),
            )
            .header(
                hyper::header::USER_AGENT,
                concat!("pier/", env!("CARGO_PKG_VERSION")),
            );
        for (k, v) in headers {
            req = req.header(*k, v);
        }
        let req = req.body(body).map_err(upstream)?;
        let io_err = |e: hyper::Error| upstream(format!("{host}: {e}"));
        if https {
            let tls = match &self.tls {
                Some(t) => t.clone(),
                None => tls_connector(&[])?,
            };
            let name = rustls::pki_types::ServerName::try_from(host.clone()).map_err(upstream)?;
            let stream = tls
                .connect(name, tcp)
                .await
                .map_err(|e| upstream(format!("TLS with {host}: {e}")))?;
            let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .map_err(io_err)?;
            tokio::spawn(conn);
            send.send_request(req).await.map_err(io_err)
        } else {
            let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
                .await
                .map_err(io_err)?;
            tokio::spawn(conn);
            send.send_request(req).await.map_err(io_err)
        }
    }

    fn current_auth(&self) -> Option<String> {
        self.auth.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Sends a request to `path` on this registry (or an absolute URL), with auth. A 401
    /// with a challenge is answered (see the module's doc) and the request sent once
    /// more; a second 401 is returned as it is.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, String)],
        body: Payload,
    ) -> Result<Response<Incoming>> {
        let url = if path.starts_with("http://") || path.starts_with("https://") {
            path.to_string()
        } else {
            format!("{}{path}", self.base())
        };
        let with_auth = |auth: &Option<String>| {
            let mut h: Vec<(&str, String)> = headers.to_vec();
            if let Some(a) = auth {
                h.push(("authorization", a.clone()));
            }
            h
        };
        let sent = self.current_auth();
        let resp = self
            .raw(method.clone(), &url, &with_auth(&sent), body.body()?)
            .await?;
        if resp.status() != StatusCode::UNAUTHORIZED {
            return Ok(resp);
        }
        let Some(challenge) = challenge_of(&resp) else {
            return Ok(resp);
        };
        // Another request may have answered a challenge meanwhile: try its credentials
        // before asking for new ones.
        if self.current_auth() == sent && !self.answer(&challenge).await? {
            return Ok(resp);
        }
        drop(resp);
        let auth = self.current_auth();
        self.raw(method, &url, &with_auth(&auth), body.body()?)
            .await
    }

    /// Makes sure requests for `scope` (`repository:NAME:pull,push`) carry the right
    /// credentials: probes `/v2/` (falling back to plain HTTP on a loopback registry that
    /// does not speak TLS) and answers its challenge.
    pub async fn authenticate(&self, scope: &str) -> Result<()> {
        self.add_scope(scope);
        let probe = self
            .raw(
                Method::GET,
                &format!("{}/v2/", self.base()),
                &[],
                empty().body()?,
            )
            .await;
        let resp = match probe {
            // Fall back only when the server does not speak TLS at all; a certificate
            // that does not verify stays an error.
            Err(e)
                if self.probe
                    && !self.plain.load(std::sync::atomic::Ordering::Relaxed)
                    && !e.to_string().contains("certificate") =>
            {
                tracing::debug!(host = %self.host, error = %e, "no TLS on a loopback registry; using HTTP");
                self.plain.store(true, std::sync::atomic::Ordering::Relaxed);
                self.raw(
                    Method::GET,
                    &format!("{}/v2/", self.base()),
                    &[],
                    empty().body()?,
                )
                .await?
            }
            r => r?,
        };
        if resp.status() != StatusCode::UNAUTHORIZED {
            return Ok(());
        }
        let challenge = challenge_of(&resp).unwrap_or_default();
        if self.answer(&challenge).await? {
            Ok(())
        } else {
            Err(RemoteError::Unauthorized { challenge })
        }
    }

    fn add_scope(&self, scope: &str) {
        let mut scopes = self.scopes.lock().unwrap_or_else(|e| e.into_inner());
        if !scope.is_empty() && !scopes.iter().any(|s| s == scope) {
            scopes.push(scope.to_string());
        }
    }

    /// Answers a `WWW-Authenticate` challenge: sets the credentials later requests
    /// carry. Returns false when there is nothing to answer with (a `Basic` challenge
    /// without credentials, or to the credentials just sent).
    async fn answer(&self, challenge: &str) -> Result<bool> {
        let basic = self.creds.as_ref().map(|c| {
            format!(
                "Basic {}",
                crate::b64::encode(format!("{}:{}", c.username, c.password).as_bytes())
            )
        });
        let Some(params) = challenge.strip_prefix("Bearer ") else {
            return Ok(match basic {
                Some(b) if self.current_auth().as_ref() != Some(&b) => {
                    *self.auth.lock().unwrap_or_else(|e| e.into_inner()) = Some(b);
                    true
                }
                _ => false,
            });
        };
        let p = challenge_params(params);
        let get = |k: &str| p.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        let realm = get("realm")
            .ok_or_else(|| upstream(format!("{}: a Bearer challenge without realm", self.host)))?;
        if let Some(s) = get("scope") {
            for s in s.split(' ') {
                self.add_scope(s);
            }
        }
        let mut query: Vec<String> = self
            .scopes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|s| format!("scope={}", encode_query(s)))
            .collect();
        if let Some(s) = get("service") {
            query.push(format!("service={}", encode_query(&s)));
        }
        let sep = if realm.contains('?') { '&' } else { '?' };
        let url = format!("{realm}{sep}{}", query.join("&"));
        let headers: Vec<(&str, String)> =
            basic.iter().map(|b| ("authorization", b.clone())).collect();
        let resp = self
            .raw(Method::GET, &url, &headers, empty().body()?)
            .await?;
        let status = resp.status();
        // A token answer is small; a larger one is refused, not held.
        let body = http_body_util::Limited::new(resp.into_body(), SMALL_REPLY)
            .collect()
            .await
            .map_err(|e| RemoteError::Upstream(format!("the token answer: {e}")))?
            .to_bytes();
        if !status.is_success() {
            return Err(RemoteError::Denied(format!(
                "{} (the token service answered {status}: {}); check the credentials",
                self.host,
                String::from_utf8_lossy(&body)
            )));
        }
        let v: serde_json::Value = serde_json::from_slice(&body).map_err(upstream)?;
        let token = v
            .get("token")
            .or_else(|| v.get("access_token"))
            .and_then(|t| t.as_str())
            .ok_or_else(|| upstream("the token service answered without a token"))?;
        *self.auth.lock().unwrap_or_else(|e| e.into_inner()) = Some(format!("Bearer {token}"));
        Ok(true)
    }
}

/// The `WWW-Authenticate` challenge of a response.
fn challenge_of(resp: &Response<Incoming>) -> Option<String> {
    resp.headers()
        .get(hyper::header::WWW_AUTHENTICATE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// Reads a registry's error answer into a message.
pub async fn error_of(what: &str, resp: Response<Incoming>) -> RemoteError {
    let status = resp.status();
    let body = http_body_util::Limited::new(resp.into_body(), SMALL_REPLY)
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let detail = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| {
            let e = v.get("errors")?.get(0)?;
            Some(format!(
                "{}: {}",
                e.get("code")?.as_str()?,
                e.get("message").and_then(|m| m.as_str()).unwrap_or("")
            ))
        })
        .unwrap_or_else(|| String::from_utf8_lossy(&body).chars().take(300).collect());
    match status {
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => RemoteError::Denied(format!(
            "{what}: {detail}; check the credentials (--username, --password-stdin) and their rights"
        )),
        _ => RemoteError::Upstream(format!("{what}: the registry answered {status}: {detail}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges_and_hosts() {
        let p = challenge_params(
            r#"realm="https://auth.example/token",service="reg",scope="repository:a/b:pull,push""#,
        );
        assert_eq!(p[0], ("realm".into(), "https://auth.example/token".into()));
        assert_eq!(p[2], ("scope".into(), "repository:a/b:pull,push".into()));
        assert!(is_loopback("127.0.0.1:5000"));
        assert!(is_loopback("localhost"));
        assert!(!is_loopback("registry.example:5000"));
    }

    /// A registry that lets anyone probe `/v2/` and pull, and challenges a push: the
    /// client answers that request's challenge (with the scope it names) and sends the
    /// request, body and all, once more.
    #[tokio::test]
    async fn any_requests_challenge_is_answered() {
        use axum::http::{HeaderMap, StatusCode as S};
        use axum::routing::{get, post};
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let host = l.local_addr().unwrap().to_string();
        let realm = format!("http://{host}/token");
        let scopes = Arc::new(Mutex::new(Vec::<String>::new()));
        let seen = scopes.clone();
        let app = axum::Router::new()
            .route("/v2/", get(|| async { "{}" }))
            .route(
                "/token",
                get(move |uri: axum::http::Uri, h: HeaderMap| async move {
                    seen.lock().unwrap().push(uri.query().unwrap_or("").to_string());
                    let basic = format!("Basic {}", crate::b64::encode(b"ci:pw"));
                    if h.get("authorization").is_some_and(|v| *v == *basic) {
                        (S::OK, r#"{"token":"good"}"#)
                    } else {
                        (S::UNAUTHORIZED, "{}")
                    }
                }),
            )
            .route(
                "/v2/team/app/blobs/uploads/",
                post(move |h: HeaderMap, body: String| async move {
                    if h.get("authorization").is_some_and(|v| v == "Bearer good") {
                        (S::ACCEPTED, HeaderMap::new(), body)
                    } else {
                        let mut c = HeaderMap::new();
                        let v = format!(
                            r#"Bearer realm="{realm}",service="reg",scope="repository:team/app:pull,push""#
                        );
                        c.insert("www-authenticate", v.parse().unwrap());
                        (S::UNAUTHORIZED, c, String::new())
                    }
                }),
            );
        let server = tokio::spawn(async move { axum::serve(l, app).await });
        let config = ClientConfig {
            insecure: vec![host.clone()],
            ..Default::default()
        };
        let creds = |p: &str| {
            Some(Credentials {
                username: "ci".into(),
                password: p.into(),
            })
        };

        let remote = Remote::new(&host, &config, creds("pw")).unwrap();
        remote
            .authenticate("repository:team/app:pull")
            .await
            .unwrap();
        let resp = remote
            .send(
                Method::POST,
                "/v2/team/app/blobs/uploads/",
                &[],
                full(&b"the body"[..]),
            )
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::ACCEPTED);
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], b"the body", "the retry carries the body again");
        // One token request, for what was asked before and what the challenge named.
        assert_eq!(
            *scopes.lock().unwrap(),
            ["scope=repository%3Ateam%2Fapp%3Apull&scope=repository%3Ateam%2Fapp%3Apull%2Cpush&service=reg"]
        );

        // Wrong credentials: the token service's refusal is the error.
        let remote = Remote::new(&host, &config, creds("wrong")).unwrap();
        let err = remote
            .send(Method::POST, "/v2/team/app/blobs/uploads/", &[], empty())
            .await
            .err()
            .unwrap();
        assert!(matches!(err, RemoteError::Denied(_)), "{err}");
        server.abort();
    }
}
