//! The daemon's part in a pool of hosts: `pier cluster init/join/token` and
//! `pier host ls/inspect/cordon/uncordon/rm` on the native API (the root-only socket, as
//! every admin call), and, once the daemon is a member, its cluster listener
//! ([`net`]), its heartbeat, the etcd member it may run ([`etcd`]), and the placement of
//! instances across the pool with this host's agent ([`place`]). The routes are in
//! `routes.rs`.
//!
//! The pool's records live in the pool's store (etcd, through `pier_store::EtcdStore`);
//! what makes this daemon a member is kept in `ROOT/cluster/` ([`pier_cluster::local`]).
//! At start a member resumes: runs its etcd again if it has one, then connects to the
//! pool's store (retrying while it is away), beats and listens.
//!
//! States: not a member -> (init | join) -> member. A failed init or join undoes its
//! steps: nothing is kept on this host and nothing of it in the pool. A member leaves
//! with `pier cluster leave` ([`leave`]).
//!
//! Any member answers `pier host ...` from the store. The host that made the pool keeps
//! the CA's key, and gives it to the hosts that join to run the pool's etcd (they hold
//! its whole state already): joins go through one of them (the command `pier cluster
//! init` and `pier cluster token` print names one that is up), so the pool admits hosts
//! as long as one of them is left.

mod etcd_members;
pub mod failover;
pub mod forward;
mod leave;
mod listing;
pub mod mirror;
pub mod net;
pub mod overlay;
pub mod place;
mod quorum;
mod records;
mod routes;

pub use routes::{host_routes, routes, ClusterDoc};

/// How long a member's restarts by restart policy wait at most, at its start, for its
/// host agent's first sweep (see [`place`]).
pub const RESTART_HOLD: std::time::Duration = std::time::Duration::from_secs(120);

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, SystemTime};

use axum::extract::State;
use axum::routing::{get, post};
use axum::{Json, Router};
use pier_api::cluster::{
    ClusterInit, ClusterJoin, ClusterStatus, HostInfo, HostResources, JoinCommand, Joined,
};
use pier_api::ErrorKind;
use pier_cluster::admit::{self, AdmitError, JoinGrant, JoinRequest, Joining};
use pier_cluster::ca::ClusterCa;
use pier_cluster::etcd;
use pier_cluster::host_events::HostEvents;
use pier_cluster::join::{self, JoinError, JoinToken};
use pier_cluster::local::{self, Credentials, LocalMember};
use pier_cluster::member::{self, Heartbeater, MemberError, PoolRecord};
use pier_cluster::scheduler::{Labels, Resources};
use pier_store::{EtcdConfig, EtcdStore, EtcdTls, Store, StoreError};

pub(crate) use crate::api::blocking;
use crate::error::ApiError;
use pier_engine::Engine;

/// The prefix of the pool's keys in etcd.
pub const ETCD_PREFIX: &str = "pier/";

/// The daemon's cluster side.
pub struct Cluster {
    root: PathBuf,
    /// Where host events go (the daemon's event log).
    engine: Weak<Engine>,
    heartbeat_ttl: Duration,
    /// How long a host's heartbeat is gone before the failover moves its instances
    /// (`--host-down-after`); None: no failover from this member.
    host_down_after: Option<Duration>,
    /// Serializes init and join.
    changing: tokio::sync::Mutex<()>,
    member: Mutex<Option<Arc<Member>>>,
    /// The native and Docker routers the listener serves forwarded requests from (see
    /// [`forward`]); set by the daemon before it resumes.
    apps: OnceLock<(Router, Router)>,
    /// Where placements are counted (`/metrics`).
    metrics: Arc<crate::metrics::Metrics>,
}

/// This daemon as a member.
struct Member {
    local: LocalMember,
    ca: Option<Arc<ClusterCa>>,
    creds: Credentials,
    /// Set once the pool's store answered.
    store: OnceLock<Arc<dyn Store>>,
    /// The same client, for etcd's cluster API ([`etcd_members`]).
    etcd_client: OnceLock<Arc<EtcdStore>>,
    /// The pool's etcd endpoints as `member.json` has them now.
    endpoints: Mutex<Vec<String>>,
    /// Serializes the etcd member changes of joins through this member.
    etcd_changes: Mutex<()>,
    etcd: Mutex<Option<etcd::Supervisor>>,
    heartbeat: Arc<Mutex<Heartbeater>>,
    /// The scheduler creates and releases go through.
    placer: place::Placer,
    /// Whether a majority of the pool's store is reachable ([`quorum`]).
    health: quorum::Health,
    /// The pool's instance records, as this member follows them ([`records`]).
    records: Arc<records::Records>,
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

impl Member {
    fn connected(&self, etcd: Arc<EtcdStore>) {
        let _ = self.etcd_client.set(etcd.clone());
        let _ = self.store.set(etcd);
    }

    fn store(&self) -> Result<Arc<dyn Store>, ApiError> {
        self.store.get().cloned().ok_or_else(|| {
            ApiError::new(
                ErrorKind::Unavailable,
                format!(
                    "this host is not connected to the pool's store at {} yet (it keeps trying); check that etcd runs there",
                    self.local.etcd_endpoints.join(",")
                ),
            )
        })
    }

    fn join_addr(&self) -> SocketAddr {
        let ip: IpAddr = self
            .local
            .address
            .parse()
            .unwrap_or(IpAddr::from([0, 0, 0, 0]));
        SocketAddr::new(ip, self.local.cluster_port)
    }
}

fn not_member() -> ApiError {
    ApiError::new(
        ErrorKind::Conflict,
        "this host is not in a pool; make one with `pier cluster init`, or join one with `pier cluster join ADDR TOKEN`",
    )
}

fn member_error(e: MemberError) -> ApiError {
    let kind = match &e {
        MemberError::BadName(_) => ErrorKind::InvalidInput,
        MemberError::NotFound(_) => ErrorKind::NotFound,
        MemberError::NameTaken(_)
        | MemberError::Up(_)
        | MemberError::HasInstances { .. }
        | MemberError::EtcdMember(_)
        | MemberError::PoolExists(_)
        | MemberError::Removed(_) => ErrorKind::Conflict,
        MemberError::Contended(_) => ErrorKind::Unavailable,
        MemberError::Store(s) => return store_error(s),
        MemberError::Corrupt { .. } => ErrorKind::Internal,
    };
    ApiError::new(kind, pier_api::error::chain(&e))
}

fn store_error(e: &StoreError) -> ApiError {
    let kind = match e {
        StoreError::Unreachable { .. } | StoreError::Backend(_) => ErrorKind::Unavailable,
        _ => ErrorKind::Internal,
    };
    ApiError::new(kind, pier_api::error::chain(e))
}

fn admit_error(e: AdmitError) -> ApiError {
    let kind = match &e {
        AdmitError::Member(_) => {
            let AdmitError::Member(m) = e else {
                unreachable!()
            };
            return member_error(m);
        }
        AdmitError::Token(JoinError::Store(s)) => return store_error(s),
        AdmitError::Token(JoinError::WrongPool { .. }) => ErrorKind::Conflict,
        AdmitError::Token(JoinError::Random(_)) => ErrorKind::Internal,
        AdmitError::Token(_) => ErrorKind::InvalidInput,
        AdmitError::NoCaKey | AdmitError::ClockSkew { .. } => ErrorKind::Conflict,
        AdmitError::StoreUnreachable { .. } => ErrorKind::Unavailable,
        AdmitError::Ca(_) | AdmitError::Local(_) => ErrorKind::Internal,
    };
    ApiError::new(kind, pier_api::error::chain(&e))
}

fn internal(what: &str, e: impl std::fmt::Display) -> ApiError {
    ApiError::new(ErrorKind::Internal, format!("{what}: {e}"))
}

/// `IP` or `IP:PORT` (the listener's port by default).
fn parse_addr(s: &str, what: &str) -> Result<SocketAddr, ApiError> {
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(a);
    }
    if let Ok(ip) = s.trim_matches(['[', ']']).parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, net::DEFAULT_PORT));
    }
    Err(ApiError::invalid(format!(
        "bad {what} {s:?}: give an IP address, or IP:PORT (the cluster port, {} by default)",
        net::DEFAULT_PORT
    )))
}

/// This host's address on the way to `to` (no packet is sent).
fn route_source(to: SocketAddr) -> Option<IpAddr> {
    let bind: SocketAddr = if to.is_ipv4() {
        "0.0.0.0:0".parse().ok()?
    } else {
        "[::]:0".parse().ok()?
    };
    let s = std::net::UdpSocket::bind(bind).ok()?;
    s.connect(to).ok()?;
    Some(s.local_addr().ok()?.ip())
}

fn advertise(given: Option<&str>, toward: SocketAddr) -> Result<SocketAddr, ApiError> {
    match given {
        Some(a) => parse_addr(a, "--advertise address"),
        None => route_source(toward)
            .filter(|ip| !ip.is_unspecified())
            .map(|ip| SocketAddr::new(ip, net::DEFAULT_PORT))
            .ok_or_else(|| {
                ApiError::invalid(
                    "cannot tell which address other hosts reach this one at (no route); give --advertise IP",
                )
            }),
    }
}

/// The machine's host name as a pool name, or the one given, checked.
fn host_name(given: Option<&str>) -> Result<String, ApiError> {
    let name = match given {
        Some(n) => n.to_string(),
        None => rustix::system::uname()
            .nodename()
            .to_string_lossy()
            .to_ascii_lowercase()
            .split('.')
            .next()
            .unwrap_or_default()
            .to_string(),
    };
    member::check_name(&name).map_err(member_error)?;
    Ok(name)
}

fn check_labels(labels: &Labels) -> Result<(), ApiError> {
    for k in labels.keys() {
        if k.is_empty() || k.contains(['=', '/']) || k.contains(char::is_whitespace) {
            return Err(ApiError::invalid(format!(
                "bad label key {k:?}: give --label KEY=VALUE with a non-empty KEY without '=', '/' or spaces"
            )));
        }
    }
    Ok(())
}

/// What this host offers: its CPUs, memory and the disk of its state directory.
fn capacity(root: &Path) -> Resources {
    let host = pier_engine::system::HostInfo::read();
    let disk = rustix::fs::statvfs(root).map_or(0, |s| s.f_blocks.saturating_mul(s.f_frsize));
    Resources {
        cpu_millis: u64::from(host.cpus) * 1000,
        memory_bytes: host.memory,
        disk_bytes: disk,
    }
}

async fn bind(addr: SocketAddr) -> Result<tokio::net::TcpListener, ApiError> {
    tokio::net::TcpListener::bind(addr).await.map_err(|e| {
        ApiError::new(
            ErrorKind::Conflict,
            format!(
                "cannot listen on {addr} for the pool: {e}; give another --advertise IP[:PORT]"
            ),
        )
    })
}

/// The pool's store, over mutual TLS with this member's certificate.
fn open_store(
    endpoints: &[String],
    prefix: &str,
    creds: &Credentials,
) -> Result<Arc<EtcdStore>, StoreError> {
    let config = EtcdConfig::new(endpoints.to_vec(), prefix).with_tls(etcd_tls(creds));
    Ok(Arc::new(EtcdStore::open(config)?))
}

fn etcd_tls(creds: &Credentials) -> EtcdTls {
    EtcdTls {
        ca_pem: creds.ca_pem.clone(),
        cert_pem: creds.cert_pem.clone(),
        key_pem: creds.key_pem.clone(),
    }
}

impl Cluster {
    /// The cluster side of the daemon on `root`; [`Cluster::resume`] starts it when the
    /// daemon is a member already.
    pub fn new(
        root: &Path,
        heartbeat_ttl: Duration,
        host_down_after: Option<Duration>,
        engine: Weak<Engine>,
        metrics: Arc<crate::metrics::Metrics>,
    ) -> Arc<Cluster> {
        Arc::new(Cluster {
            metrics,
            root: root.to_path_buf(),
            engine,
            heartbeat_ttl,
            host_down_after,
            changing: tokio::sync::Mutex::new(()),
            member: Mutex::new(None),
            apps: OnceLock::new(),
        })
    }

    /// The routers of the native and Docker APIs (forwarding included), from which the
    /// cluster listener serves other members' forwarded requests. Set once, before
    /// [`Cluster::resume`]; without them the listener serves no forwarded request.
    pub fn serve_forwarded(&self, native: Router, docker: Router) {
        let _ = self.apps.set((native, docker));
    }

    fn member(&self) -> Option<Arc<Member>> {
        self.member
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// This daemon's place in a pool (all empty when it is in none).
    pub fn status(&self) -> ClusterStatus {
        let Some(m) = self.member() else {
            return ClusterStatus::default();
        };
        let endpoints = m
            .endpoints
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        ClusterStatus {
            cluster_id: Some(m.local.cluster_id.clone()),
            host: Some(m.local.name.clone()),
            cluster_addr: Some(m.join_addr().to_string()),
            etcd_endpoints: endpoints,
            runs_etcd: m.local.runs_etcd,
            connected: m.store.get().is_some(),
            cut_off: m.health.cut_off(),
        }
    }

    fn member_or_refuse(&self) -> Result<Arc<Member>, ApiError> {
        self.member().ok_or_else(not_member)
    }

    /// At daemon start: becomes the member kept on disk, if any (its etcd, its store
    /// connection, retried in the background, its heartbeat and listener).
    pub async fn resume(self: &Arc<Self>) -> Result<(), String> {
        let Some((local, creds)) =
            local::load(&self.root).map_err(|e| pier_api::error::chain(&e))?
        else {
            return Ok(());
        };
        let ca = match &creds.ca_key_pem {
            Some(k) => Some(Arc::new(
                ClusterCa::load(&local.cluster_id, &creds.ca_pem, k)
                    .map_err(|e| format!("cannot load the pool's CA: {e}"))?,
            )),
            None => None,
        };
        let supervisor = if local.runs_etcd {
            let spec = self.etcd_spec(&local, &creds)?;
            Some(etcd::Supervisor::start(spec).map_err(|e| e.to_string())?)
        } else {
            None
        };
        let listen = SocketAddr::new(
            local
                .address
                .parse()
                .map_err(|_| "bad address in ROOT/cluster/member.json")?,
            local.cluster_port,
        );
        let m = self.make_member(local, creds, ca, supervisor);
        // The address may come up after the daemon (at boot): listened on once it is.
        let (me, m2) = (self.clone(), m.clone());
        let bind = tokio::spawn(async move {
            let mut logged = false;
            loop {
                match tokio::net::TcpListener::bind(listen).await {
                    Ok(l) => {
                        if let Err(e) = me.start_listener(&m2, l) {
                            tracing::error!(error = %e, "cannot serve the pool");
                        }
                        return;
                    }
                    Err(e) if !logged => {
                        tracing::warn!(addr = %listen, error = %e, "cannot listen for the pool yet; retrying");
                        logged = true;
                    }
                    Err(_) => {}
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
        m.tasks.lock().unwrap_or_else(|e| e.into_inner()).push(bind);
        // The store: connected to in the background, then the heartbeat starts.
        let me = self.clone();
        let m2 = m.clone();
        let connect = tokio::spawn(async move {
            let mut logged = false;
            loop {
                let (eps, prefix, creds) = (
                    m2.local.etcd_endpoints.clone(),
                    m2.local.etcd_prefix.clone(),
                    m2.creds.clone(),
                );
                match tokio::task::spawn_blocking(move || open_store(&eps, &prefix, &creds)).await {
                    Ok(Ok(etcd)) => {
                        let store: Arc<dyn Store> = etcd.clone();
                        // What this host has now, which may differ from its join.
                        let (s, name, cap) =
                            (store.clone(), m2.local.name.clone(), capacity(&me.root));
                        let set = tokio::task::spawn_blocking(move || {
                            member::set_capacity(s.as_ref(), &name, cap)
                        });
                        if let Ok(Err(e)) = set.await {
                            tracing::warn!(error = %pier_api::error::chain(&e), "cannot record this host's capacity in the pool");
                        }
                        m2.connected(etcd);
                        tracing::info!(host = %m2.local.name, "connected to the pool's store");
                        me.start_etcd_sync(&m2);
                        me.start_heartbeat(&m2);
                        me.start_host_events(&m2);
                        me.start_mirror(&m2);
                        me.start_overlay(&m2);
                        me.start_agent(&m2);
                        me.start_failover(&m2);
                        me.start_quorum_watch(&m2);
                        return;
                    }
                    Ok(Err(e)) if !logged => {
                        tracing::warn!(error = %pier_api::error::chain(&e), "cannot reach the pool's store yet; retrying");
                        logged = true;
                    }
                    _ => {}
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
        m.tasks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(connect);
        *self.member.lock().unwrap_or_else(|e| e.into_inner()) = Some(m);
        Ok(())
    }

    fn etcd_spec(
        &self,
        local: &LocalMember,
        creds: &Credentials,
    ) -> Result<etcd::EtcdSpec, String> {
        Ok(etcd::EtcdSpec {
            name: local.name.clone(),
            cluster_id: local.cluster_id.clone(),
            address: local
                .address
                .parse()
                .map_err(|_| "bad address in ROOT/cluster/member.json".to_string())?,
            dir: local::etcd_dir(&self.root),
            tls: etcd_tls(creds),
            initial_cluster: local.etcd_initial_cluster.clone(),
        })
    }

    fn make_member(
        &self,
        local: LocalMember,
        creds: Credentials,
        ca: Option<Arc<ClusterCa>>,
        etcd: Option<etcd::Supervisor>,
    ) -> Arc<Member> {
        let heartbeat = Arc::new(Mutex::new(Heartbeater::new(
            &local.name,
            self.heartbeat_ttl,
        )));
        // Pool networks get their VXLAN links from now on, store or not.
        match (self.engine.upgrade(), local.address.parse()) {
            (Some(e), Ok(vtep)) => e.networks.set_pool_identity(&local.name, vtep),
            (_, Err(_)) => {
                tracing::warn!(address = %local.address, "this member's pool address is not an IPv4 address: its pool networks get no VXLAN link")
            }
            _ => {}
        }
        Arc::new(Member {
            endpoints: Mutex::new(local.etcd_endpoints.clone()),
            local,
            ca,
            creds,
            store: OnceLock::new(),
            etcd_client: OnceLock::new(),
            etcd_changes: Mutex::new(()),
            etcd: Mutex::new(etcd),
            heartbeat,
            placer: place::Placer::default(),
            health: quorum::Health::default(),
            records: Arc::default(),
            tasks: Mutex::new(Vec::new()),
        })
    }

    fn start_listener(
        self: &Arc<Self>,
        m: &Arc<Member>,
        listener: tokio::net::TcpListener,
    ) -> Result<(), String> {
        let tls = net::acceptor(&m.creds)?;
        let joining = Router::new()
            .route(net::JOIN_PATH, post(serve_join))
            .with_state(self.clone());
        let mut member = joining.clone().route(
            "/cluster/v1/ping",
            get(|| async { Json(serde_json::json!({"ok": true})) }),
        );
        if let Some((native, docker)) = self.apps.get() {
            use forward::Api;
            member = member
                .nest_service(
                    Api::Native.prefix(),
                    forward::owner_app(native.clone(), Api::Native),
                )
                .nest_service(
                    Api::Docker.prefix(),
                    forward::owner_app(docker.clone(), Api::Docker),
                );
        }
        tracing::info!(addr = %m.join_addr(), "cluster listener up (HTTPS, mutual TLS between members)");
        let task = tokio::spawn(net::serve(listener, tls, member, joining));
        m.tasks.lock().unwrap_or_else(|e| e.into_inner()).push(task);
        Ok(())
    }

    /// Keeps the store's client on every voting etcd member's client URL, and
    /// `member.json` with them ([`etcd_members::sync_endpoints`]): at once, then every
    /// few seconds (members join and are promoted while this daemon runs).
    fn start_etcd_sync(&self, m: &Arc<Member>) {
        let Some(etcd) = m.etcd_client.get().cloned() else {
            return;
        };
        let (root, member) = (self.root.clone(), m.clone());
        let Some(store) = m.store.get().cloned() else {
            return;
        };
        let task = tokio::spawn(async move {
            // Only in a pool whose etcd Pier runs (an etcd given at init may advertise
            // client URLs its members do not reach).
            loop {
                let s = store.clone();
                let ours = tokio::task::spawn_blocking(move || {
                    member::hosts(s.as_ref()).map(|hs| {
                        hs.iter().any(|h| {
                            h.member
                                .as_ref()
                                .is_some_and(|m| m.etcd_client_url.is_some())
                        })
                    })
                })
                .await;
                match ours {
                    Ok(Ok(true)) => break,
                    Ok(Ok(false)) => return,
                    _ => tokio::time::sleep(Duration::from_secs(5)).await,
                }
            }
            loop {
                let (e, root, m2) = (etcd.clone(), root.clone(), member.clone());
                let _ = tokio::task::spawn_blocking(move || {
                    let members = match etcd_members::sync_endpoints(&e) {
                        Ok(ms) => ms,
                        Err(_) => return,
                    };
                    m2.health.name_members(&members);
                    let urls = etcd_members::voters(&members);
                    if urls.is_empty() {
                        return;
                    }
                    let mut kept = m2.endpoints.lock().unwrap_or_else(|e| e.into_inner());
                    let mut now = kept.clone();
                    for u in &urls {
                        if !now.contains(u) {
                            now.push(u.clone());
                        }
                    }
                    if now == *kept {
                        return;
                    }
                    let mut lm = m2.local.clone();
                    lm.etcd_endpoints = now.clone();
                    match local::update(&root, &lm) {
                        Ok(()) => {
                            tracing::info!(endpoints = ?now, "the pool's etcd endpoints changed");
                            *kept = now;
                        }
                        Err(e) => {
                            tracing::warn!(error = %pier_api::error::chain(&e), "cannot keep the pool's etcd endpoints")
                        }
                    }
                })
                .await;
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
        });
        m.tasks.lock().unwrap_or_else(|e| e.into_inner()).push(task);
    }

    fn start_heartbeat(&self, m: &Arc<Member>) {
        let Some(store) = m.store.get().cloned() else {
            return;
        };
        let hb = m.heartbeat.clone();
        let period = hb.lock().unwrap_or_else(|e| e.into_inner()).period();
        let task = tokio::spawn(async move {
            let mut failing = false;
            loop {
                let (hb, store) = (hb.clone(), store.clone());
                let r = tokio::task::spawn_blocking(move || {
                    hb.lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .beat(store.as_ref())
                })
                .await;
                match r {
                    Ok(Err(e @ MemberError::Removed(_))) => {
                        tracing::error!(error = %e, "heartbeat stopped");
                        return;
                    }
                    Ok(Ok(())) if failing => {
                        tracing::info!("heartbeat to the pool's store works again");
                        failing = false;
                    }
                    Ok(Err(e)) if !failing => {
                        tracing::warn!(error = %pier_api::error::chain(&e), "heartbeat failed; the pool will see this host down if it lasts");
                        failing = true;
                    }
                    _ => {}
                }
                tokio::time::sleep(period).await;
            }
        });
        m.tasks.lock().unwrap_or_else(|e| e.into_inner()).push(task);
    }

    /// Reports every host's events (join, cordon, uncordon, remove, up, down) in this
    /// daemon's event log, as the pool's table shows them, in the `default` project
    /// (hosts belong to the pool, not to a project). Follows again after the watch ends
    /// (a compaction, the store lost for a while).
    fn start_host_events(&self, m: &Arc<Member>) {
        let Some(store) = m.store.get().cloned() else {
            return;
        };
        let engine = self.engine.clone();
        let task = tokio::spawn(async move {
            let ctx = pier_engine::RequestContext::system(
                pier_api::ProjectName::default_project(),
                "cluster",
            );
            loop {
                let s = store.clone();
                let followed =
                    tokio::task::spawn_blocking(move || HostEvents::follow(s.as_ref())).await;
                if let Ok(Ok((mut hosts, mut watch))) = followed {
                    while let Some(Ok(ev)) = watch.recv().await {
                        let Some(h) = hosts.apply(&ev) else { continue };
                        let Some(e) = engine.upgrade() else { return };
                        e.emit(&ctx, "host", h.action, &h.host, &[("name", &h.host)]);
                    }
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
        m.tasks.lock().unwrap_or_else(|e| e.into_inner()).push(task);
    }

    /// Mirrors this host's instances into the pool's records ([`mirror`]), and follows
    /// every host's records into this member's copy of them ([`records`]).
    fn start_mirror(&self, m: &Arc<Member>) {
        let Some(store) = m.store.get().cloned() else {
            return;
        };
        let follow = tokio::spawn(m.records.clone().run(store.clone()));
        let task = tokio::spawn(mirror::run(
            self.engine.clone(),
            store,
            m.local.name.clone(),
        ));
        let mut tasks = m.tasks.lock().unwrap_or_else(|e| e.into_inner());
        tasks.push(follow);
        tasks.push(task);
    }

    /// Keeps this host's pool networks as the pool says ([`overlay`]).
    fn start_overlay(&self, m: &Arc<Member>) {
        let Some(store) = m.store.get().cloned() else {
            return;
        };
        let task = tokio::spawn(overlay::run(self.engine.clone(), store));
        m.tasks.lock().unwrap_or_else(|e| e.into_inner()).push(task);
    }

    /// At daemon stop: ends the heartbeat at once (the pool sees this host down), stops
    /// listening, and stops the etcd member it runs.
    pub async fn shutdown(&self) {
        let Some(m) = self.member.lock().unwrap_or_else(|e| e.into_inner()).take() else {
            return;
        };
        for t in m.tasks.lock().unwrap_or_else(|e| e.into_inner()).drain(..) {
            t.abort();
        }
        if let Some(e) = self.engine.upgrade() {
            e.networks.set_pool_store(None);
        }
        if let Some(store) = m.store.get().cloned() {
            let hb = m.heartbeat.clone();
            let revoke = tokio::task::spawn_blocking(move || {
                hb.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .stop(store.as_ref())
            });
            let _ = tokio::time::timeout(Duration::from_secs(3), revoke).await;
        }
        let supervisor = m.etcd.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(s) = supervisor {
            let _ = tokio::task::spawn_blocking(move || s.stop()).await;
        }
    }

    /// `pier cluster init`.
    async fn init(self: &Arc<Self>, req: ClusterInit) -> Result<JoinCommand, ApiError> {
        let _one = self.changing.lock().await;
        if let Some(m) = self.member() {
            return Err(already(&m));
        }
        let name = host_name(req.name.as_deref())?;
        check_labels(&req.labels)?;
        let toward: SocketAddr = "192.0.2.1:9".parse().expect("an address");
        let adv = advertise(req.advertise.as_deref(), toward)?;
        let cluster_id = format!("pool-{}", pier_api::random_hex(6));
        let ca =
            ClusterCa::create(&cluster_id).map_err(|e| internal("cannot make the pool's CA", e))?;
        let cert = ca
            .issue(&name, &[adv.ip()])
            .map_err(|e| internal("cannot make this host's certificate", e))?;
        let creds = Credentials {
            ca_pem: ca.cert_pem.clone(),
            ca_key_pem: Some(ca.key_pem()),
            cert_pem: cert.cert_pem,
            key_pem: cert.key_pem,
        };
        let listener = bind(adv).await?;
        let mut local_member = LocalMember {
            cluster_id: cluster_id.clone(),
            name: name.clone(),
            address: adv.ip().to_string(),
            cluster_port: adv.port(),
            etcd_endpoints: req.etcd.clone(),
            etcd_prefix: ETCD_PREFIX.to_string(),
            runs_etcd: req.etcd.is_empty(),
            etcd_initial_cluster: None,
        };
        // etcd: ours, started and waited for, or the one given.
        let supervisor = if req.etcd.is_empty() {
            let spec = self
                .etcd_spec(&local_member, &creds)
                .map_err(|e| internal("bad address", e))?;
            if spec.dir.exists() {
                return Err(ApiError::new(
                    ErrorKind::Conflict,
                    format!(
                        "{} holds etcd data of an earlier pool; remove it to make a new one",
                        spec.dir.display()
                    ),
                ));
            }
            local_member.etcd_endpoints = vec![spec.client_url()];
            Some(
                etcd::Supervisor::start(spec)
                    .map_err(|e| ApiError::new(ErrorKind::Unavailable, e.to_string()))?,
            )
        } else {
            None
        };
        let undo_etcd = |s: Option<etcd::Supervisor>, root: PathBuf| async move {
            if let Some(s) = s {
                let _ = tokio::task::spawn_blocking(move || {
                    s.stop();
                    etcd::remove_data(&local::etcd_dir(&root));
                })
                .await;
            }
        };
        let eps = local_member.etcd_endpoints.clone();
        let waits = supervisor.is_some();
        let creds2 = creds.clone();
        let opened = blocking(move || {
            // Our own etcd takes a moment to elect itself.
            let deadline =
                std::time::Instant::now() + Duration::from_secs(if waits { 20 } else { 0 });
            loop {
                match open_store(&eps, ETCD_PREFIX, &creds2) {
                    Ok(s) => return Ok(s),
                    Err(e) if std::time::Instant::now() >= deadline => return Err(store_error(&e)),
                    Err(_) => std::thread::sleep(Duration::from_millis(200)),
                }
            }
        })
        .await;
        let store = match opened {
            Ok(s) => s,
            Err(e) => {
                undo_etcd(supervisor, self.root.clone()).await;
                return Err(e);
            }
        };
        let me = Joining {
            name: name.clone(),
            address: adv.ip(),
            cluster_port: adv.port(),
            labels: req.labels.clone(),
            capacity: capacity(&self.root),
        };
        let etcd_url = supervisor
            .as_ref()
            .map(|_| local_member.etcd_endpoints[0].clone());
        let pool = PoolRecord {
            cluster_id: cluster_id.clone(),
            ca_fingerprint: ca.fingerprint(),
            created: member::unix_now(),
        };
        let (root, s2, lm, cr, n2) = (
            self.root.clone(),
            store.clone() as Arc<dyn Store>,
            local_member.clone(),
            creds.clone(),
            name.clone(),
        );
        let founded = blocking(move || {
            let (host, rec) = me.records(etcd_url, true);
            member::found_pool(s2.as_ref(), &pool, &host, &rec).map_err(member_error)?;
            if let Err(e) = local::save(&root, &lm, &cr) {
                let _ = member::unfound_pool(s2.as_ref(), &n2);
                return Err(internal(
                    "cannot keep this host's membership",
                    pier_api::error::chain(&e),
                ));
            }
            Ok(())
        })
        .await;
        if let Err(e) = founded {
            undo_etcd(supervisor, self.root.clone()).await;
            return Err(e);
        }
        let ca = Arc::new(ca);
        let m = self.make_member(local_member, creds, Some(ca), supervisor);
        m.connected(store);
        self.start_listener(&m, listener)
            .map_err(|e| internal("cannot serve the pool", e))?;
        self.start_etcd_sync(&m);
        self.start_heartbeat(&m);
        self.start_host_events(&m);
        self.start_mirror(&m);
        self.start_overlay(&m);
        self.start_agent(&m);
        self.start_failover(&m);
        self.start_quorum_watch(&m);
        *self.member.lock().unwrap_or_else(|e| e.into_inner()) = Some(m.clone());
        tracing::info!(cluster = %cluster_id, host = %name, "made a pool");
        self.token_of(&m, join::DEFAULT_TTL).await
    }

    /// A new join token, with the command that uses it.
    async fn token_of(&self, m: &Arc<Member>, ttl: Duration) -> Result<JoinCommand, ApiError> {
        let store = self.pool_store(m, "cannot make a join token").await?;
        let fp = pier_cluster::ca::fingerprint_of_pem(&m.creds.ca_pem)
            .map_err(|e| internal("the pool's CA", e))?;
        let now = SystemTime::now();
        let token = blocking(move || {
            join::issue(store.as_ref(), &fp, ttl, now).map_err(|e| admit_error(e.into()))
        })
        .await?;
        // Joins go to the host with the CA's key: this one, or the pool's first.
        let addr = match &m.ca {
            Some(_) => m.join_addr().to_string(),
            None => self.ca_holder(m).await?,
        };
        let expires = SystemTime::now()
            .checked_add(ttl)
            .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_secs());
        Ok(JoinCommand {
            cluster_id: m.local.cluster_id.clone(),
            host: m.local.name.clone(),
            command: format!("pier cluster join {addr} {token}"),
            token: token.to_string(),
            expires,
        })
    }

    /// The cluster address of a member that keeps the CA's key: one that is up first,
    /// the longest in the pool first (a pool made before members recorded it: the
    /// first etcd member, the one that made it).
    async fn ca_holder(&self, m: &Arc<Member>) -> Result<String, ApiError> {
        let store = m.store()?;
        let hosts = blocking(move || member::hosts(store.as_ref()).map_err(member_error)).await?;
        let signers = hosts
            .iter()
            .filter_map(|h| Some((h, h.member.as_ref().filter(|r| r.signs)?)))
            .min_by_key(|(h, r)| (h.heartbeat.is_none(), r.joined))
            .map(|(_, r)| r);
        let first_etcd = || {
            hosts
                .iter()
                .filter_map(|h| h.member.as_ref())
                .filter(|r| r.etcd_client_url.is_some())
                .min_by_key(|r| r.joined)
        };
        signers
            .or_else(first_etcd)
            .map(|r| r.cluster_addr.clone())
            .ok_or_else(|| {
                ApiError::new(
                    ErrorKind::Conflict,
                    "no member of the pool holds its CA's key; make tokens on the host that made the pool",
                )
            })
    }

    /// `pier cluster join`.
    async fn join(self: &Arc<Self>, req: ClusterJoin) -> Result<Joined, ApiError> {
        let _one = self.changing.lock().await;
        if let Some(m) = self.member() {
            return Err(already(&m));
        }
        let token: JoinToken = req
            .token
            .parse()
            .map_err(|e: JoinError| ApiError::invalid(e.to_string()))?;
        let target = parse_addr(&req.addr, "pool address")?;
        let name = host_name(req.name.as_deref())?;
        check_labels(&req.labels)?;
        let adv = advertise(req.advertise.as_deref(), target)?;
        // The pool may make this host one of its etcd members, on a data directory of
        // its own; one left by an earlier pool is not taken over.
        let etcd_dir = local::etcd_dir(&self.root);
        if etcd_dir.exists() {
            return Err(ApiError::new(
                ErrorKind::Conflict,
                format!(
                    "{} holds etcd data of an earlier pool; remove it to join this one",
                    etcd_dir.display()
                ),
            ));
        }
        let listener = bind(adv).await?;
        let ask = JoinRequest {
            token: req.token.clone(),
            name: name.clone(),
            address: adv.ip(),
            time: member::unix_now(),
        };
        let grant: JoinGrant = net::join(target, &token.ca_fingerprint, &ask)
            .await
            .map_err(|e| {
                let kind = match &e {
                    net::JoinCallError::Refused { status, .. } => match status {
                        400 => ErrorKind::InvalidInput,
                        404 => ErrorKind::NotFound,
                        409 => ErrorKind::Conflict,
                        _ => ErrorKind::Unavailable,
                    },
                    net::JoinCallError::WrongPool { .. } => ErrorKind::Conflict,
                    _ => ErrorKind::Unavailable,
                };
                ApiError::new(kind, e.to_string())
            })?;
        let me = Joining {
            name: name.clone(),
            address: adv.ip(),
            cluster_port: adv.port(),
            labels: req.labels.clone(),
            capacity: capacity(&self.root),
        };
        // The CA's key, when the grant gives it (this host is to run an etcd member); one
        // that does not load is gone without: this host joins all the same, and joins go
        // through the others.
        let mut grant = grant;
        let ca = grant.ca_key_pem.as_ref().and_then(|k| {
            ClusterCa::load(&grant.cluster_id, &grant.ca_pem, k)
                .map_err(|e| tracing::warn!(error = %e, "the pool's CA key in the grant does not load; joining without it"))
                .ok()
        });
        if ca.is_none() {
            grant.ca_key_pem = None;
        }
        let ca = ca.map(Arc::new);
        let creds = Credentials {
            ca_pem: grant.ca_pem.clone(),
            ca_key_pem: grant.ca_key_pem.clone(),
            cert_pem: grant.cert_pem.clone(),
            key_pem: grant.key_pem.clone(),
        };
        // An etcd member of the pool's: started on the cluster the pool added it to.
        let supervisor = match &grant.etcd {
            Some(e) => {
                let spec = etcd::EtcdSpec {
                    name: name.clone(),
                    cluster_id: grant.cluster_id.clone(),
                    address: adv.ip(),
                    dir: local::etcd_dir(&self.root),
                    tls: etcd_tls(&creds),
                    initial_cluster: Some(e.initial_cluster.clone()),
                };
                match etcd::Supervisor::start(spec) {
                    Ok(s) => Some(s),
                    Err(err) => {
                        self.unjoin_etcd(&grant, &creds, None).await;
                        return Err(ApiError::new(ErrorKind::Unavailable, err.to_string()));
                    }
                }
            }
            None => None,
        };
        let root = self.root.clone();
        let fp = token.ca_fingerprint.clone();
        let g2 = grant.clone();
        let opened: Arc<Mutex<Option<Arc<EtcdStore>>>> = Arc::default();
        let slot = opened.clone();
        let finished = blocking(move || {
            admit::finish(&root, g2, &fp, &me, |g| {
                let creds = Credentials {
                    ca_pem: g.ca_pem.clone(),
                    ca_key_pem: g.ca_key_pem.clone(),
                    cert_pem: g.cert_pem.clone(),
                    key_pem: g.key_pem.clone(),
                };
                let etcd = open_store(&g.etcd_endpoints, &g.etcd_prefix, &creds)?;
                *slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(etcd.clone());
                // The third member gets its vote once its etcd has caught up.
                if let Some(e) = g.etcd.as_ref().filter(|e| e.promote) {
                    etcd_members::promote(&etcd, e.member_id)?;
                    etcd.use_endpoints(std::slice::from_ref(&e.client_url))?;
                }
                Ok(etcd as Arc<dyn Store>)
            })
            .map_err(admit_error)
        })
        .await;
        let etcd_store = opened.lock().unwrap_or_else(|e| e.into_inner()).take();
        let (mut local_member, _) = match finished {
            Ok(r) => r,
            Err(e) => {
                if let Some(s) = supervisor {
                    let _ = tokio::task::spawn_blocking(move || s.stop()).await;
                }
                self.unjoin_etcd(&grant, &creds, etcd_store).await;
                return Err(e);
            }
        };
        let Some(etcd_store) = etcd_store else {
            return Err(internal("joined", "no store client"));
        };
        if let Some(e) = grant.etcd.as_ref().filter(|e| e.promote) {
            // Its own etcd is a voting member now: kept among the endpoints.
            local_member.etcd_endpoints.push(e.client_url.clone());
            let (root, lm) = (self.root.clone(), local_member.clone());
            if let Ok(Err(e)) = tokio::task::spawn_blocking(move || local::update(&root, &lm)).await
            {
                tracing::warn!(error = %pier_api::error::chain(&e), "cannot keep the pool's etcd endpoints");
            }
        }
        let m = self.make_member(local_member, creds, ca, supervisor);
        m.connected(etcd_store);
        self.start_listener(&m, listener)
            .map_err(|e| internal("cannot serve the pool", e))?;
        self.start_etcd_sync(&m);
        self.start_heartbeat(&m);
        self.start_host_events(&m);
        self.start_mirror(&m);
        self.start_overlay(&m);
        self.start_agent(&m);
        self.start_failover(&m);
        self.start_quorum_watch(&m);
        *self.member.lock().unwrap_or_else(|e| e.into_inner()) = Some(m.clone());
        tracing::info!(cluster = %m.local.cluster_id, host = %name, "joined the pool");
        Ok(Joined {
            cluster_id: m.local.cluster_id.clone(),
            host: name,
            etcd_endpoints: m.local.etcd_endpoints.clone(),
        })
    }

    /// A failed join's etcd side undone: its etcd member removed from the pool's etcd
    /// (through `etcd`, or a client opened for it) and its data deleted.
    async fn unjoin_etcd(
        &self,
        grant: &JoinGrant,
        creds: &Credentials,
        etcd: Option<Arc<EtcdStore>>,
    ) {
        let Some(e) = grant.etcd.clone() else {
            return;
        };
        let (eps, prefix, creds) = (
            grant.etcd_endpoints.clone(),
            grant.etcd_prefix.clone(),
            creds.clone(),
        );
        let dir = local::etcd_dir(&self.root);
        let _ = tokio::task::spawn_blocking(move || {
            let removed = match etcd {
                Some(s) => s.remove_member(e.member_id),
                None => open_store(&eps, &prefix, &creds).and_then(|s| s.remove_member(e.member_id)),
            };
            if let Err(err) = removed {
                tracing::warn!(error = %pier_api::error::chain(&err), id = e.member_id, "cannot remove the etcd member of a failed join; the next join removes it");
            }
            etcd::remove_data(&dir);
        })
        .await;
    }

    /// A joining host's request, on the cluster listener.
    async fn grant(&self, req: JoinRequest) -> Result<JoinGrant, ApiError> {
        let m = self.member_or_refuse()?;
        let store = self
            .pool_store(&m, &format!("cannot admit host {}", req.name))
            .await?;
        let ca = m.ca.clone();
        let eps = m
            .endpoints
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let prefix = m.local.etcd_prefix.clone();
        let name = req.name.clone();
        let m2 = m.clone();
        let r = blocking(move || {
            let mut g = admit::grant(
                store.as_ref(),
                ca.as_deref(),
                &req,
                &eps,
                &prefix,
                SystemTime::now(),
            )
            .map_err(admit_error)?;
            // A pool whose etcd Pier runs: the host runs one of its first three members.
            if let Some(etcd) = m2.etcd_client.get().filter(|_| m2.local.runs_etcd) {
                let _one = m2.etcd_changes.lock().unwrap_or_else(|e| e.into_inner());
                let added = etcd_members::admit_member(etcd, &req.name, req.address)
                    .map_err(|e| {
                        ApiError::new(
                            ErrorKind::Unavailable,
                            format!(
                                "cannot add host {} to the pool's etcd: {}; the token is used up: make a new one with `pier cluster token` and join again",
                                req.name,
                                pier_api::error::chain(&e)
                            ),
                        )
                    })?;
                if let Some((join, voters)) = added {
                    g.etcd = Some(join);
                    // It holds the pool's state: it keeps the CA's key too, so that
                    // joins go on through it if this host is lost.
                    g.ca_key_pem = ca.as_ref().map(|c| c.key_pem());
                    if !voters.is_empty() {
                        g.etcd_endpoints = voters;
                    }
                }
            }
            Ok(g)
        })
        .await;
        match &r {
            Ok(_) => tracing::info!(host = %name, "admitted a host to the pool"),
            Err(e) => tracing::warn!(host = %name, reason = %e.message, "refused a join"),
        }
        r
    }

    async fn hosts(&self) -> Result<Vec<HostInfo>, ApiError> {
        let m = self.member_or_refuse()?;
        let store = self.pool_store(&m, "cannot list the pool's hosts").await?;
        let hosts = blocking(move || member::hosts(store.as_ref()).map_err(member_error)).await?;
        Ok(hosts.iter().map(host_info).collect())
    }

    async fn host(&self, id: String) -> Result<HostInfo, ApiError> {
        let m = self.member_or_refuse()?;
        let store = self
            .pool_store(&m, &format!("cannot inspect host {id}"))
            .await?;
        let h = blocking(move || member::host(store.as_ref(), &id).map_err(member_error)).await?;
        Ok(host_info(&h))
    }

    async fn cordon(&self, id: String, cordon: bool) -> Result<HostInfo, ApiError> {
        let m = self.member_or_refuse()?;
        let what = format!(
            "cannot {} host {id}",
            if cordon { "cordon" } else { "uncordon" }
        );
        let store = self.pool_store(&m, &what).await?;
        let h =
            blocking(move || member::set_cordon(store.as_ref(), &id, cordon).map_err(member_error))
                .await?;
        Ok(host_info(&h))
    }

    async fn remove(&self, id: String, force: bool) -> Result<(), ApiError> {
        let m = self.member_or_refuse()?;
        if id == m.local.name {
            return Err(ApiError::new(
                ErrorKind::Conflict,
                format!("host {id} is this host; remove it from another member once its daemon is stopped"),
            ));
        }
        let store = self
            .pool_store(&m, &format!("cannot remove host {id}"))
            .await?;
        let etcd = m.etcd_client.get().cloned();
        blocking(move || {
            member::remove_with(store.as_ref(), &id, force, |rec| match &etcd {
                Some(e) => etcd_members::leave(e, &rec.id, &rec.address),
                None => Ok(false),
            })
            .map_err(member_error)
        })
        .await
    }
}

fn already(m: &Member) -> ApiError {
    ApiError::new(
        ErrorKind::Conflict,
        format!(
            "this host is in pool {} already, as {}; leave it first with `pier cluster leave`",
            m.local.cluster_id, m.local.name
        ),
    )
}

fn resources(r: &Resources) -> HostResources {
    HostResources {
        cpu_millis: r.cpu_millis,
        memory_bytes: r.memory_bytes,
        disk_bytes: r.disk_bytes,
    }
}

fn host_info(h: &member::HostStatus) -> HostInfo {
    HostInfo {
        id: h.record.id.clone(),
        state: h.state().to_string(),
        schedulable: h.heartbeat.is_some()
            && h.record.state == pier_cluster::scheduler::HostState::Up,
        address: h.member.as_ref().map(|m| m.address.clone()),
        cluster_addr: h.member.as_ref().map(|m| m.cluster_addr.clone()),
        labels: h.record.labels.clone(),
        capacity: resources(&h.record.capacity),
        allocated: resources(&h.allocation.used),
        ports: h.allocation.ports.iter().map(|p| p.to_string()).collect(),
        instances: h.allocation.instances,
        last_heartbeat: h.heartbeat.as_ref().map(|b| b.at),
        heartbeat_ttl: h.heartbeat.as_ref().map(|b| b.ttl),
        etcd_member: h
            .member
            .as_ref()
            .is_some_and(|m| m.etcd_client_url.is_some()),
        etcd_client_url: h.member.as_ref().and_then(|m| m.etcd_client_url.clone()),
        joined: h.member.as_ref().map(|m| m.joined),
        keeps_ca_key: h.member.as_ref().is_some_and(|m| m.signs),
    }
}

async fn serve_join(
    State(c): State<Arc<Cluster>>,
    body: Result<Json<JoinRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<JoinGrant>, ApiError> {
    let Json(req) = body?;
    c.grant(req).await.map(Json)
}
