//! Forwarding: a request on either API of a member that names an instance of another
//! host is served by that host. The member asks the owner's cluster listener ([`net`]),
//! over mutual TLS with its own certificate, under [`Api::prefix`]
//! (`/cluster/v1/native/...`, `/cluster/v1/docker/...`), with the client's method, path,
//! query, headers (the project's `X-Pier-Project` among them) and body; the owner serves
//! it from its own routers and marks it [`Forwarded`], so it is never forwarded again.
//!
//! - Which requests: those naming an instance (`/v1/containers/{id}/...`, Docker's
//!   `/containers/{id}/...`) or an exec session (`/v1/exec/{id}/...`, `/exec/{id}/...`);
//!   [`classify`] reads the path. An instance is this host's when its engine finds it by
//!   ID or name; otherwise the pool's records ([`pier_cluster::instances`]) say who has
//!   it (ID, then name, then unique ID prefix over the pool), as this member's copy of
//!   them has them ([`records`](super::records)). Neither: this host answers (its 404).
//! - Exec sessions: an exec made through a forwarded create (Docker's
//!   `POST /containers/{id}/exec`, whose answer carries the exec's ID; the native exec's
//!   `x-pier-exec-id` answer header) is remembered with its host, so `/exec/{id}/start`,
//!   `/resize`, `/json` go there too. The memory is bounded ([`EXECS_KEPT`], oldest
//!   forgotten first) and this daemon's own: an exec made before its restart is not found.
//! - Streams pass through as they come (logs -f, stats, events of one container), both
//!   ways. An upgraded connection (Docker's hijacked attach and exec, the native attach
//!   and exec, websockets) is bridged byte for byte once both sides upgraded.
//! - Listings (`GET /v1/containers`, `GET /containers/json`) add the other hosts' rows
//!   ([`listing`](super::listing)), from the same copy.
//!
//! State of a forwarded request: client -> member (this middleware) -> owner's listener
//! -> owner's router (marked, served there) -> answer streamed back the same way.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{header, HeaderName, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use hyper_util::rt::TokioIo;
use pier_api::containers::ContainerSummary;
use pier_api::{ErrorKind, ProjectName};
use pier_cluster::instances::InstanceRecord;
use pier_cluster::member;
use pier_engine::context::PROJECT_HEADER;
use pier_engine::{Engine, RequestContext};
use pier_store::Store;
use rustls::pki_types::ServerName;
use serde::Serialize;

use super::records::Records;
use super::{listing, net, Cluster, Member};
use crate::docker::DockerError;
use crate::error::ApiError;

/// How many exec sessions' hosts are remembered.
pub const EXECS_KEPT: usize = 4096;
/// The header naming the member that forwarded a request (for the owner's log).
pub const FORWARDED_BY: &str = "x-pier-forwarded-by";
/// The forwarding client's user ID (the owner's request context names it).
pub const CALLER_UID: &str = "x-pier-caller-uid";
/// The largest listing or exec-create answer read whole to be changed.
const ANSWER_LIMIT: usize = 64 << 20;
/// About the size of one row of a listing in JSON (native rows are about 340 bytes,
/// Docker's about 480): a merged listing's buffer is made this large per row at once.
const ROW_BYTES: usize = 400;

/// Marks a request the cluster listener took from another member: served here, never
/// forwarded again.
#[derive(Debug, Clone, Copy)]
pub struct Forwarded;

/// Which of the daemon's APIs a request came on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    Native,
    Docker,
}

impl Api {
    /// Where the owner's listener serves this API to other members.
    pub fn prefix(self) -> &'static str {
        match self {
            Api::Native => "/cluster/v1/native",
            Api::Docker => "/cluster/v1/docker",
        }
    }

    fn refuse(self, kind: ErrorKind, message: String) -> Response {
        let e = ApiError::new(kind, message);
        match self {
            Api::Native => e.into_response(),
            Api::Docker => DockerError::from(e).into_response(),
        }
    }
}

/// What a request names, as far as forwarding goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// The container listing.
    List,
    /// An instance, by the reference the client gave.
    Instance(String),
    /// An exec session, by ID.
    Exec(String),
}

/// What the request at `path` names; None for requests that name no instance.
pub fn classify(api: Api, method: &Method, path: &str) -> Option<Target> {
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let segs: &[&str] = match api {
        Api::Native => match segs.as_slice() {
            ["v1", rest @ ..] => rest,
            _ => return None,
        },
        // Docker's paths may start with the API version (`/v1.43/...`).
        Api::Docker => match segs.as_slice() {
            [v, rest @ ..]
                if v.starts_with('v') && v[1..].starts_with(|c: char| c.is_ascii_digit()) =>
            {
                rest
            }
            s => s,
        },
    };
    let decoded = |s: &str| pier_api::form::decode_lossy(s);
    match (api, segs) {
        (Api::Native, ["containers"]) if method == Method::GET => Some(Target::List),
        (Api::Native, ["containers", "prune"]) => None,
        (Api::Docker, ["containers", "json"]) if method == Method::GET => Some(Target::List),
        (Api::Docker, ["containers", "json" | "create" | "prune"]) => None,
        (_, ["containers", id, ..]) if !id.is_empty() => Some(Target::Instance(decoded(id))),
        (_, ["exec", id, ..]) if !id.is_empty() => Some(Target::Exec(decoded(id))),
        _ => None,
    }
}

/// The exec sessions made through forwarded requests, by ID, with their hosts.
#[derive(Default)]
struct ExecHosts {
    by_id: HashMap<String, String>,
    order: VecDeque<String>,
}

impl ExecHosts {
    fn remember(&mut self, id: String, host: String) {
        if self.by_id.insert(id.clone(), host).is_none() {
            self.order.push_back(id);
        }
        while self.order.len() > EXECS_KEPT {
            if let Some(old) = self.order.pop_front() {
                self.by_id.remove(&old);
            }
        }
    }
}

/// The forwarding side of a member: the middleware of both APIs.
pub struct Forwarder {
    cluster: Weak<Cluster>,
    engine: Arc<Engine>,
    execs: Mutex<ExecHosts>,
    /// The TLS client of the member (by its host name), made once.
    tls: Mutex<Option<(String, Arc<rustls::ClientConfig>)>>,
}

/// What forwarding needs of the member this daemon is.
struct Pool {
    member: Arc<Member>,
    store: Arc<dyn Store>,
    records: Arc<Records>,
}

impl Pool {
    fn me(&self) -> &str {
        &self.member.local.name
    }
}

impl Forwarder {
    pub fn new(cluster: &Arc<Cluster>, engine: Arc<Engine>) -> Arc<Forwarder> {
        Arc::new(Forwarder {
            cluster: Arc::downgrade(cluster),
            engine,
            execs: Mutex::new(ExecHosts::default()),
            tls: Mutex::new(None),
        })
    }

    /// Wraps `app` (one API's router) in forwarding.
    pub fn layer(self: &Arc<Self>, app: Router, api: Api) -> Router {
        app.layer(axum::middleware::from_fn_with_state(
            (self.clone(), api),
            middleware,
        ))
    }

    fn pool(&self) -> Option<Pool> {
        let member = self.cluster.upgrade()?.member()?;
        let store = member.store.get()?.clone();
        let records = member.records.clone();
        Some(Pool {
            member,
            store,
            records,
        })
    }

    fn exec_host(&self, id: &str) -> Option<String> {
        self.execs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .by_id
            .get(id)
            .cloned()
    }

    fn remember_exec(&self, id: String, host: &str) {
        self.execs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remember(id, host.to_string());
    }

    fn client_config(&self, m: &Member) -> Result<Arc<rustls::ClientConfig>, String> {
        let mut tls = self.tls.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((name, c)) = tls.as_ref() {
            if *name == m.local.name {
                return Ok(c.clone());
            }
        }
        let c = Arc::new(net::member_client(&m.creds)?);
        *tls = Some((m.local.name.clone(), c.clone()));
        Ok(c)
    }

    /// The host other than this one that has the instance `reference` names, if any;
    /// the refusal when the reference is ambiguous in the pool.
    async fn owner(
        &self,
        pool: &Pool,
        project: ProjectName,
        reference: String,
    ) -> Result<Option<String>, String> {
        let (engine, ctx_project, local_ref) =
            (self.engine.clone(), project.clone(), reference.clone());
        let local = tokio::task::spawn_blocking(move || {
            let ctx = RequestContext::system(ctx_project, "cluster");
            engine
                .instances
                .get(&ctx, &local_ref)
                .is_ok_and(|c| c.id == local_ref || c.name == local_ref.trim_start_matches('/'))
        })
        .await;
        if local.unwrap_or(false) {
            return Ok(None);
        }
        // Cut off from the pool's store: answered from this host without waiting.
        if pool.member.health.cut_off().is_some() {
            return Ok(None);
        }
        match pool
            .records
            .find(&pool.store, project.as_str(), &reference)
            .await
        {
            Ok(Some(r)) if r.host != pool.me() => Ok(Some(r.host.clone())),
            Ok(_) => Ok(None),
            Err(pier_cluster::instances::InstanceError::Store(e)) => {
                tracing::warn!(error = %pier_api::error::chain(&e), "cannot read the pool's instance records; answering from this host");
                Ok(None)
            }
            Err(e) => Err(e.to_string()),
        }
    }

    /// The cluster listener of host `host`.
    async fn address_of(&self, pool: &Pool, host: &str) -> Result<SocketAddr, String> {
        let (store, h) = (pool.store.clone(), host.to_string());
        let status = tokio::task::spawn_blocking(move || member::host(store.as_ref(), &h))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| pier_api::error::chain(&e))?;
        let m = status
            .member
            .ok_or_else(|| format!("the pool has no member record of host {host}"))?;
        m.cluster_addr.parse().map_err(|_| {
            format!(
                "host {host}'s cluster address {:?} is not IP:PORT",
                m.cluster_addr
            )
        })
    }

    /// Sends `req` to `host` and streams its answer back.
    async fn forward(&self, api: Api, pool: &Pool, host: &str, mut req: Request) -> Response {
        let unreachable = |why: String| {
            api.refuse(
                ErrorKind::Unavailable,
                format!("the container is on host {host}, which cannot be reached: {why}; check that its daemon runs (`pier host ls`)"),
            )
        };
        let addr = match self.address_of(pool, host).await {
            Ok(a) => a,
            Err(e) => return unreachable(e),
        };
        let tls = match self.client_config(&pool.member) {
            Ok(c) => c,
            Err(e) => return unreachable(format!("this member's certificate: {e}")),
        };
        let upgrade = req.headers().contains_key(header::UPGRADE);
        let client_side = upgrade.then(|| hyper::upgrade::on(&mut req));
        let exec_create = api == Api::Docker
            && req.method() == Method::POST
            && req.uri().path().ends_with("/exec");
        let caller = req
            .extensions()
            .get::<crate::api::Peer>()
            .map(|p| p.uid.to_string());
        let (parts, body) = req.into_parts();
        let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        let mut out = hyper::Request::builder()
            .method(parts.method.clone())
            .uri(format!("{}{path}", api.prefix()));
        for (k, v) in &parts.headers {
            // The forwarding headers are this member's to set, never the client's.
            let ours = k.as_str() == FORWARDED_BY || k.as_str() == CALLER_UID;
            if ours || k == header::HOST || (hop_by_hop(k) && !(upgrade && upgrade_header(k))) {
                continue;
            }
            out = out.header(k, v);
        }
        out = out
            .header(header::HOST, addr.to_string())
            .header(FORWARDED_BY, pool.me());
        if let Some(uid) = caller {
            out = out.header(CALLER_UID, uid);
        }
        let out = match out.body(body) {
            Ok(r) => r,
            Err(e) => return api.refuse(ErrorKind::Internal, format!("cannot forward: {e}")),
        };
        let mut sender = match connect(addr, tls).await {
            Ok(s) => s,
            Err(e) => return unreachable(e),
        };
        let mut resp = match sender.send_request(out).await {
            Ok(r) => r,
            Err(e) => return unreachable(e.to_string()),
        };
        if let Some(id) = resp
            .headers()
            .get("x-pier-exec-id")
            .and_then(|v| v.to_str().ok())
        {
            self.remember_exec(id.to_string(), host);
        }
        if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
            let owner_side = hyper::upgrade::on(&mut resp);
            if let Some(client_side) = client_side {
                tokio::spawn(bridge(client_side, owner_side));
            }
            let (parts, _) = resp.into_parts();
            return Response::from_parts(parts, Body::empty());
        }
        let (mut parts, incoming) = resp.into_parts();
        parts.headers.remove(header::TRANSFER_ENCODING);
        parts.headers.remove(header::CONNECTION);
        let body = Body::new(incoming);
        if exec_create && parts.status.is_success() {
            // The exec's ID, so that its start, resize and inspect follow it here.
            let bytes = match axum::body::to_bytes(body, ANSWER_LIMIT).await {
                Ok(b) => b,
                Err(e) => return unreachable(e.to_string()),
            };
            if let Some(id) = serde_json::from_slice::<serde_json::Value>(&bytes)
                .ok()
                .and_then(|v| v["Id"].as_str().map(str::to_string))
            {
                self.remember_exec(id, host);
            }
            return Response::from_parts(parts, Body::from(bytes));
        }
        Response::from_parts(parts, body)
    }

    /// A listing of this host's rows and the other hosts' records.
    async fn list(
        &self,
        api: Api,
        pool: &Pool,
        project: ProjectName,
        req: Request,
        next: Next,
    ) -> Response {
        let q = pier_api::docker::query::Query::parse(req.uri().query().unwrap_or(""));
        let resp = next.run(req).await;
        if resp.status() != StatusCode::OK {
            return resp;
        }
        let (mut parts, body) = resp.into_parts();
        let bytes = match axum::body::to_bytes(body, ANSWER_LIMIT).await {
            Ok(b) => b,
            Err(e) => {
                return api.refuse(ErrorKind::Internal, format!("cannot read the listing: {e}"))
            }
        };
        // Cut off from the pool's store: this host's rows, without waiting for it.
        if let Some(why) = pool.member.health.cut_off() {
            tracing::debug!(reason = %why, "cut off from the pool's store; listing this host's instances alone");
            return Response::from_parts(parts, Body::from(bytes));
        }
        let me = pool.me().to_string();
        let others = match pool
            .records
            .others(&pool.store, project.as_str(), &me, keeper(api, &q))
            .await
        {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %pier_api::error::chain(&e), "cannot read the pool's instance records; listing this host's alone");
                Vec::new()
            }
        };
        let now = pier_api::time::now_unix();
        let merged = tokio::task::spawn_blocking(move || match api {
            Api::Native => merge_native(&bytes, &me, &others, &q, now),
            Api::Docker => merge_docker(&bytes, &me, &others, &q, now),
        })
        .await;
        let merged = match merged {
            Ok(Ok(m)) => m,
            Ok(Err(bytes)) => return Response::from_parts(parts, Body::from(bytes)),
            Err(e) => {
                return api.refuse(
                    ErrorKind::Internal,
                    format!("cannot merge the listing: {e}"),
                )
            }
        };
        parts.headers.remove(header::CONTENT_LENGTH);
        parts.headers.remove(header::TRANSFER_ENCODING);
        Response::from_parts(parts, Body::from(merged))
    }
}

/// Which other hosts' records a listing with query `q` keeps (all of them again in the
/// merge, which also leaves out those this host lists itself).
fn keeper(
    api: Api,
    q: &pier_api::docker::query::Query,
) -> Box<dyn Fn(&InstanceRecord) -> bool + Send> {
    let all = q.bool("all");
    match api {
        Api::Native => {
            let filter = q.get("filter").map(str::to_string);
            Box::new(move |r| listing::native_keep(r, all, filter.as_deref()) == Some(true))
        }
        Api::Docker => {
            let f = match q.nonempty("filters").map(pier_engine::filters::parse) {
                None => Default::default(),
                Some(Ok(f)) => f,
                // The merge answers with this host's rows alone.
                Some(Err(_)) => return Box::new(|_| false),
            };
            Box::new(move |r| listing::docker_keep(r, all, &f))
        }
    }
}

/// This host's native rows (each given `host`) and the other hosts' kept ones, newest
/// first; this host's answer back when it does not read. A row is made only for a record
/// kept, borrowing the record's strings.
fn merge_native(
    local: &Bytes,
    me: &str,
    others: &[Arc<InstanceRecord>],
    q: &pier_api::docker::query::Query,
    now: i64,
) -> Result<Vec<u8>, Bytes> {
    let Ok(mut mine) = serde_json::from_slice::<Vec<ContainerSummary>>(local) else {
        return Err(local.clone());
    };
    for r in &mut mine {
        r.host = Some(me.to_string());
    }
    let all = q.bool("all");
    let filter = q.get("filter");
    let seen: std::collections::HashSet<&str> = mine.iter().map(|r| r.id.as_str()).collect();
    let kept: Vec<&InstanceRecord> = others
        .iter()
        .map(|r| &**r)
        .filter(|r| {
            !seen.contains(r.id.as_str()) && listing::native_keep(r, all, filter) == Some(true)
        })
        .collect();
    let mut rows: Vec<NativeRow> = mine.iter().map(NativeRow::Local).collect();
    rows.extend(
        kept.into_iter()
            .map(|r| NativeRow::Other(listing::native_row(r, now))),
    );
    rows.sort_by(|a, b| b.created().cmp(a.created()));
    to_json(&rows).ok_or_else(|| local.clone())
}

/// One row of a merged native listing: this host's, or another host's record.
#[derive(Serialize)]
#[serde(untagged)]
enum NativeRow<'a> {
    Local(&'a ContainerSummary),
    Other(listing::NativeRow<'a>),
}

impl NativeRow<'_> {
    fn created(&self) -> &str {
        match self {
            NativeRow::Local(r) => &r.created,
            NativeRow::Other(r) => r.created,
        }
    }
}

/// One row of a merged Docker listing: this host's as its engine wrote it, or another
/// host's record.
#[derive(Serialize)]
#[serde(untagged)]
enum DockerRow<'a> {
    Local(serde_json::Value),
    Other(listing::DockerRow<'a>),
}

/// This host's Docker rows and the other hosts' kept ones, newest first, at most
/// `limit`; this host's answer back when it (or the query) does not read. The records
/// are filtered, sorted and cut to `limit` before any row is made of them.
fn merge_docker(
    local: &Bytes,
    me: &str,
    others: &[Arc<InstanceRecord>],
    q: &pier_api::docker::query::Query,
    now: i64,
) -> Result<Vec<u8>, Bytes> {
    let Ok(mut mine) = serde_json::from_slice::<Vec<serde_json::Value>>(local) else {
        return Err(local.clone());
    };
    for r in &mut mine {
        r["Host"] = me.into();
    }
    let filters = match q.nonempty("filters") {
        None => Default::default(),
        Some(f) => match pier_engine::filters::parse(f) {
            Ok(f) => f,
            Err(_) => return Err(local.clone()),
        },
    };
    let all = q.bool("all");
    let seen: std::collections::HashSet<String> = mine
        .iter()
        .filter_map(|r| r["Id"].as_str().map(str::to_string))
        .collect();
    /// A row to be: this host's, or another host's record.
    enum Entry<'a> {
        Local(serde_json::Value),
        Record(&'a InstanceRecord),
    }
    // With their creation times, this host's first (the sort is stable).
    let mut rows: Vec<(i64, Entry)> = mine
        .into_iter()
        .map(|v| (v["Created"].as_i64().unwrap_or(0), Entry::Local(v)))
        .collect();
    rows.extend(
        others
            .iter()
            .map(|r| &**r)
            .filter(|r| !seen.contains(&r.id) && listing::docker_keep(r, all, &filters))
            .map(|r| (listing::record_created(r), Entry::Record(r))),
    );
    rows.sort_by_key(|(created, _)| std::cmp::Reverse(*created));
    if let Some(limit) = q.num::<i64>("limit").ok().flatten().filter(|l| *l > 0) {
        rows.truncate(limit as usize);
    }
    let rows: Vec<DockerRow> = rows
        .into_iter()
        .map(|(_, e)| match e {
            Entry::Local(v) => DockerRow::Local(v),
            Entry::Record(r) => DockerRow::Other(listing::docker_summary(r, now)),
        })
        .collect();
    to_json(&rows).ok_or_else(|| local.clone())
}

/// A listing's rows as JSON, in a buffer sized for them at once.
fn to_json<T: Serialize>(rows: &[T]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(rows.len().saturating_mul(ROW_BYTES).max(2));
    serde_json::to_writer(&mut out, rows).ok()?;
    Some(out)
}

/// Headers of one connection, not passed on (RFC 9110, 7.6.1).
fn hop_by_hop(k: &HeaderName) -> bool {
    matches!(
        k.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
    )
}

/// The headers an upgrade needs passed on.
fn upgrade_header(k: &HeaderName) -> bool {
    k == header::CONNECTION || k == header::UPGRADE
}

/// A connection to a member's listener, over TLS with this member's certificate.
async fn connect(
    addr: SocketAddr,
    tls: Arc<rustls::ClientConfig>,
) -> Result<hyper::client::conn::http1::SendRequest<Body>, String> {
    let tcp = tokio::time::timeout(Duration::from_secs(5), tokio::net::TcpStream::connect(addr))
        .await
        .map_err(|_| format!("no answer from {addr} within 5 s"))?
        .map_err(|e| format!("{addr}: {e}"))?;
    let _ = tcp.set_nodelay(true);
    let connector = tokio_rustls::TlsConnector::from(tls);
    let name = ServerName::IpAddress(addr.ip().into());
    let stream = tokio::time::timeout(Duration::from_secs(10), connector.connect(name, tcp))
        .await
        .map_err(|_| format!("the TLS handshake with {addr} took over 10 s"))?
        .map_err(|e| format!("TLS with {addr}: {e}"))?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("{addr}: {e}"))?;
    tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!(error = %e, "forwarded connection ended");
        }
    });
    Ok(sender)
}

/// How long after an upgrade the owner's bytes start to flow to the client (as the
/// Docker API's own hijack waits: docker-py loses bytes that come with the headers).
const FIRST_OUTPUT_DELAY: Duration = Duration::from_millis(20);

/// Copies both ways between the client's upgraded connection and the owner's.
async fn bridge(client: hyper::upgrade::OnUpgrade, owner: hyper::upgrade::OnUpgrade) {
    let (Ok(client), Ok(owner)) = tokio::join!(client, owner) else {
        return;
    };
    tokio::time::sleep(FIRST_OUTPUT_DELAY).await;
    let (mut c, mut o) = (TokioIo::new(client), TokioIo::new(owner));
    if let Err(e) = tokio::io::copy_bidirectional(&mut c, &mut o).await {
        tracing::debug!(error = %e, "forwarded upgraded connection ended");
    }
}

/// The project a request names (its header), None when the header is bad (this host
/// refuses the request itself).
fn project_of(req: &Request) -> Option<ProjectName> {
    match req.headers().get(PROJECT_HEADER) {
        None => Some(ProjectName::default_project()),
        Some(v) => ProjectName::try_from(v.to_str().ok()?.to_string()).ok(),
    }
}

/// The middleware of both APIs: forwards what names another host's instance, adds the
/// other hosts' rows to listings, lets the rest through.
async fn middleware(
    State((f, api)): State<(Arc<Forwarder>, Api)>,
    req: Request,
    next: Next,
) -> Response {
    if req.extensions().get::<Forwarded>().is_some() {
        return next.run(req).await;
    }
    let Some(pool) = f.pool() else {
        return next.run(req).await;
    };
    let Some(target) = classify(api, req.method(), req.uri().path()) else {
        return next.run(req).await;
    };
    let Some(project) = project_of(&req) else {
        return next.run(req).await;
    };
    match target {
        Target::List => f.list(api, &pool, project, req, next).await,
        Target::Instance(reference) => match f.owner(&pool, project, reference).await {
            Ok(Some(host)) => f.forward(api, &pool, &host, req).await,
            Ok(None) => next.run(req).await,
            Err(ambiguous) => api.refuse(ErrorKind::InvalidInput, ambiguous),
        },
        Target::Exec(id) => match f.exec_host(&id) {
            Some(host) if host != pool.me() => f.forward(api, &pool, &host, req).await,
            _ => next.run(req).await,
        },
    }
}

/// The owner's side: `app` (one API's router, forwarding included) as the cluster
/// listener serves it to other members. Only requests naming an instance or an exec are
/// taken; each is marked [`Forwarded`] and carries the forwarding client's user ID.
pub fn owner_app(app: Router, api: Api) -> Router {
    app.layer(axum::middleware::from_fn(
        move |mut req: Request, next: Next| async move {
            match classify(api, req.method(), req.uri().path()) {
                Some(Target::Instance(_) | Target::Exec(_)) => {}
                _ => {
                    return api.refuse(
                        ErrorKind::NotFound,
                        format!("{} is not served to other members", req.uri().path()),
                    )
                }
            }
            let uid = req
                .headers()
                .get(CALLER_UID)
                .and_then(|v| v.to_str().ok()?.parse().ok());
            if let Some(uid) = uid {
                req.extensions_mut()
                    .insert(crate::api::Peer { uid, pid: None });
            }
            let by = req
                .headers()
                .get(FORWARDED_BY)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("?")
                .to_string();
            tracing::debug!(from = %by, method = %req.method(), path = %req.uri().path(), "serving a forwarded request");
            req.extensions_mut().insert(Forwarded);
            next.run(req).await
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    /// Another host's record, created `minute` minutes past 10:00.
    fn record(id: &str, name: &str, state: &str, minute: u32) -> InstanceRecord {
        InstanceRecord {
            project: "default".into(),
            id: id.into(),
            name: name.into(),
            host: "h2".into(),
            kind: "container".into(),
            image: "bb".into(),
            command: "sleep 9".into(),
            state: state.into(),
            status: String::new(),
            created: format!("2026-12-07T10:{minute:02}:00Z"),
            started_at: Some(format!("2026-12-07T10:{minute:02}:01Z")),
            finished_at: None,
            exit_code: None,
            ports: Vec::new(),
            labels: [("app".to_string(), name.to_string())].into(),
        }
    }

    fn others() -> Vec<Arc<InstanceRecord>> {
        [
            record("aaa1", "old", "running", 1),
            record("bbb2", "new", "running", 30),
            record("ccc3", "gone", "exited", 20),
            // This host's own instance, its record behind: this host's row wins.
            record("ddd4", "mine", "running", 40),
        ]
        .into_iter()
        .map(Arc::new)
        .collect()
    }

    fn ids(bytes: &[u8], key: &str) -> Vec<String> {
        let rows: Vec<Value> = serde_json::from_slice(bytes).unwrap();
        rows.iter()
            .map(|r| r[key].as_str().unwrap().to_string())
            .collect()
    }

    #[test]
    fn a_native_listing_merges_the_kept_records_newest_first() {
        let now = pier_api::time::parse_rfc3339("2026-12-07T11:00:00Z").unwrap();
        let local = Bytes::from(
            serde_json::to_vec(&json!([{
                "id": "ddd4", "name": "mine", "image": "bb", "command": "sleep 9",
                "created": "2026-12-07T10:10:00Z", "kind": "container", "state": "running",
                "status": "Up 50 minutes", "ports": [],
            }]))
            .unwrap(),
        );
        let q = |s: &str| pier_api::docker::query::Query::parse(s);
        let out = merge_native(&local, "h1", &others(), &q("all=true"), now).unwrap();
        assert_eq!(ids(&out, "id"), ["bbb2", "ccc3", "ddd4", "aaa1"]);
        let rows: Vec<Value> = serde_json::from_slice(&out).unwrap();
        assert_eq!(rows[2]["host"], "h1");
        assert_eq!(rows[2]["status"], "Up 50 minutes");
        assert_eq!(rows[0]["host"], "h2");
        assert_eq!(rows[0]["status"], "Up 29 minutes");
        let out = merge_native(&local, "h1", &others(), &q(""), now).unwrap();
        assert_eq!(ids(&out, "id"), ["bbb2", "ddd4", "aaa1"]);
        // This host's rows come filtered by its engine: here, none kept.
        let out = merge_native(
            &Bytes::from_static(b"[]"),
            "h1",
            &others(),
            &q("all=1&filter=label%3Dapp%3Dold"),
            now,
        );
        assert_eq!(ids(&out.unwrap(), "id"), ["aaa1"]);
        let bad = Bytes::from_static(b"not json");
        assert_eq!(
            merge_native(&bad, "h1", &others(), &q(""), now).unwrap_err(),
            bad
        );
    }

    #[test]
    fn a_docker_listing_merges_filters_and_limits_before_making_rows() {
        let now = pier_api::time::parse_rfc3339("2026-12-07T11:00:00Z").unwrap();
        let created = pier_api::time::parse_rfc3339("2026-12-07T10:10:00Z").unwrap();
        let local = Bytes::from(
            serde_json::to_vec(&json!([{
                "Id": "ddd4", "Names": ["/mine"], "Created": created, "State": "running",
            }]))
            .unwrap(),
        );
        let q = |s: &str| pier_api::docker::query::Query::parse(s);
        let out = merge_docker(&local, "h1", &others(), &q("all=1"), now).unwrap();
        assert_eq!(ids(&out, "Id"), ["bbb2", "ccc3", "ddd4", "aaa1"]);
        let rows: Vec<Value> = serde_json::from_slice(&out).unwrap();
        assert_eq!(rows[2]["Host"], "h1");
        assert_eq!(rows[2]["Names"], json!(["/mine"]));
        assert_eq!(rows[0]["Host"], "h2");
        assert_eq!(rows[0]["Names"], json!(["/new"]));
        assert_eq!(rows[0]["Status"], "Up 29 minutes");
        assert_eq!(rows[0]["Mounts"], json!([]));
        let out = merge_docker(&local, "h1", &others(), &q(""), now).unwrap();
        assert_eq!(ids(&out, "Id"), ["bbb2", "ddd4", "aaa1"]);
        // The limit keeps the newest, this host's rows among them.
        let out = merge_docker(&local, "h1", &others(), &q("all=1&limit=3"), now).unwrap();
        assert_eq!(ids(&out, "Id"), ["bbb2", "ccc3", "ddd4"]);
        // filters={"name":["^old$"]}
        let query = "all=1&filters=%7B%22name%22%3A%5B%22%5Eold%24%22%5D%7D";
        let out =
            merge_docker(&Bytes::from_static(b"[]"), "h1", &others(), &q(query), now).unwrap();
        assert_eq!(ids(&out, "Id"), ["aaa1"]);
        assert_eq!(
            merge_docker(&local, "h1", &others(), &q("filters=%7Bbad"), now).unwrap_err(),
            local
        );
        let out = merge_docker(&Bytes::from_static(b"[]"), "h1", &[], &q("all=1"), now).unwrap();
        assert_eq!(out, b"[]");
    }

    #[test]
    fn the_records_a_listing_keeps_are_chosen_by_its_query() {
        let q = |s: &str| pier_api::docker::query::Query::parse(s);
        let kept = |api, query: &str| {
            let keep = keeper(api, &q(query));
            others()
                .iter()
                .filter(|r| keep(r))
                .map(|r| r.id.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(kept(Api::Native, ""), ["aaa1", "bbb2", "ddd4"]);
        assert_eq!(kept(Api::Native, "all=1"), ["aaa1", "bbb2", "ccc3", "ddd4"]);
        assert_eq!(
            kept(Api::Native, "all=1&filter=label%3Dapp%3Dold"),
            ["aaa1"]
        );
        assert_eq!(kept(Api::Docker, "all=1"), ["aaa1", "bbb2", "ccc3", "ddd4"]);
        // filters={"name":["^new$"]}
        let query = "filters=%7B%22name%22%3A%5B%22%5Enew%24%22%5D%7D";
        assert_eq!(kept(Api::Docker, query), ["bbb2"]);
        assert!(kept(Api::Docker, "filters=%7Bbad").is_empty());
    }

    #[test]
    fn requests_naming_an_instance_or_an_exec_are_told_apart() {
        let get = Method::GET;
        let post = Method::POST;
        let inst = |s: &str| Some(Target::Instance(s.into()));
        assert_eq!(
            classify(Api::Native, &get, "/v1/containers"),
            Some(Target::List)
        );
        assert_eq!(classify(Api::Native, &post, "/v1/containers"), None);
        assert_eq!(classify(Api::Native, &post, "/v1/containers/prune"), None);
        assert_eq!(
            classify(Api::Native, &get, "/v1/containers/web"),
            inst("web")
        );
        assert_eq!(
            classify(Api::Native, &get, "/v1/containers/abc/logs"),
            inst("abc")
        );
        assert_eq!(
            classify(Api::Native, &get, "/v1/containers/abc/exec/ws"),
            inst("abc")
        );
        assert_eq!(
            classify(Api::Native, &post, "/v1/exec/e1/resize"),
            Some(Target::Exec("e1".into()))
        );
        assert_eq!(classify(Api::Native, &get, "/v1/images/bb"), None);
        assert_eq!(classify(Api::Native, &get, "/containers/web/json"), None);
        assert_eq!(
            classify(Api::Docker, &get, "/containers/json"),
            Some(Target::List)
        );
        assert_eq!(
            classify(Api::Docker, &get, "/v1.43/containers/json"),
            Some(Target::List)
        );
        assert_eq!(
            classify(Api::Docker, &post, "/v1.43/containers/create"),
            None
        );
        assert_eq!(classify(Api::Docker, &post, "/containers/prune"), None);
        assert_eq!(
            classify(Api::Docker, &get, "/v1.41/containers/web/json"),
            inst("web")
        );
        assert_eq!(
            classify(Api::Docker, &post, "/containers/%2Fweb/start"),
            inst("/web")
        );
        assert_eq!(
            classify(Api::Docker, &post, "/v1.41/exec/abc/start"),
            Some(Target::Exec("abc".into()))
        );
        assert_eq!(classify(Api::Docker, &get, "/v1.41/images/json"), None);
        assert_eq!(classify(Api::Docker, &get, "/version"), None);
    }

    #[test]
    fn the_exec_memory_is_bounded() {
        let mut e = ExecHosts::default();
        for i in 0..EXECS_KEPT + 10 {
            e.remember(format!("e{i}"), "h2".into());
        }
        assert_eq!(e.by_id.len(), EXECS_KEPT);
        assert!(!e.by_id.contains_key("e0"));
        assert!(e.by_id.contains_key(&format!("e{}", EXECS_KEPT + 9)));
        // Remembered again: not counted twice.
        e.remember(format!("e{}", EXECS_KEPT + 9), "h3".into());
        assert_eq!(e.order.len(), EXECS_KEPT);
    }
}
