//! Daemon startup and shutdown.
//!
//! One daemon owns one state directory: an exclusive lock on `ROOT/daemon.lock` makes a
//! second daemon on the same root fail at once with a clear message; the file holds the
//! daemon's pid. The lock is a POSIX record lock, which belongs to the daemon's process
//! alone and goes with it: an `flock` belongs to the open file, which a child the daemon
//! is forking shares until its exec, so a daemon killed mid-spawn could leave the lock
//! held for a moment, and its successor refused to start (seen in CI). The socket is created
//! with root-only permissions, and removed again on SIGINT or SIGTERM.

use std::fs::{self, File};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use pier_engine::EngineConfig;
use tokio::net::UnixListener;

use crate::api::{router, Engine};

pub use pier_engine::DEFAULT_ROOT;
pub const DEFAULT_SOCKET: &str = "/run/pier/pier.sock";
pub const DEFAULT_DOCKER_SOCKET: &str = "/run/pier/docker.sock";

/// Where a daemon keeps its state and serves its API.
#[derive(Debug, Clone)]
pub struct DaemonConfig {
    pub root: PathBuf,
    pub socket: PathBuf,
    /// Where the Docker Engine API is served; not at all when absent.
    pub docker_socket: Option<PathBuf>,
    /// Set the kernel's `favordynmods` cgroup option for fast container starts.
    pub cgroup_favordynmods: bool,
    /// Serve the OCI registry on this TCP address.
    pub registry_addr: Option<std::net::SocketAddr>,
    /// Registries `pull` and `push` reach over plain HTTP (loopback always is).
    pub insecure_registries: Vec<String>,
    /// Registries `pull` tries first, in order.
    pub registry_mirrors: Vec<String>,
    /// Root certificates (PEM) `pull` and `push` trust besides the system's.
    pub registry_ca_files: Vec<PathBuf>,
    /// Make the registry a pull-through mirror of this registry (`host[:port]`).
    pub registry_upstream: Option<String>,
    /// The registry's users and policy (JSON; see `pier_registry::auth`).
    pub registry_auth: Option<PathBuf>,
    /// Serve the registry over TLS with this certificate chain and key (PEM).
    pub registry_tls: Option<(PathBuf, PathBuf)>,
    /// How long an API client has to send a request's headers before its connection is
    /// closed ([`crate::http::DEFAULT_HEADER_TIMEOUT`] by default).
    pub header_timeout: std::time::Duration,
    /// The VMs' assets and accelerator.
    pub vm: pier_engine::instances::vm::VmSettings,
    /// Serve `/metrics` (Prometheus) on this TCP address too.
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// How often the metrics history (`GET /v1/metrics/history`) takes a sample.
    pub metrics_history_period: std::time::Duration,
    /// Serve the web dashboard over HTTPS on this TCP address.
    pub dashboard_addr: Option<std::net::SocketAddr>,
    /// The dashboard's certificate chain and key (PEM); a self-signed pair kept in
    /// `ROOT/dashboard/` when absent.
    pub dashboard_tls: Option<(PathBuf, PathBuf)>,
    /// How long a pool member's heartbeat lives without renewal: a member silent that
    /// long shows `down` (see [`crate::cluster`]).
    pub host_heartbeat: std::time::Duration,
    /// `--host-down-after`: how long a host's heartbeat is gone before its instances
    /// with a restart policy are moved to other hosts; None: never.
    pub host_down_after: Option<std::time::Duration>,
}

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("cannot {op} {path}")]
    Io {
        op: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("another pier daemon already uses the state directory {0}; stop it, or give this one another --root")]
    Locked(String),
    #[error("another daemon serves on {0}; stop it, or give this one another --socket (and --docker-socket)")]
    SocketInUse(String),
    #[error(transparent)]
    Engine(#[from] pier_engine::OpenError),
    #[error("{0}")]
    Config(String),
    #[error(transparent)]
    Dashboard(#[from] crate::dashboard::DashboardError),
    #[error("refusing to start")]
    Cgroups(#[from] pier_runtime::cgroups::HostError),
    #[error("cannot resume this host's pool membership: {0}")]
    Cluster(String),
}

fn io<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> DaemonError + 'a {
    move |source| DaemonError::Io {
        op,
        path: path.display().to_string(),
        source,
    }
}

/// Holds the state directory's lock for the daemon's lifetime.
struct RootLock(#[allow(dead_code)] File);

fn lock_root(root: &Path) -> Result<RootLock, DaemonError> {
    let path = root.join("daemon.lock");
    let f = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(io("open", &path))?;
    lock_process_wide(&f).map_err(|e| match e.kind() {
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::PermissionDenied => {
            DaemonError::Locked(root.display().to_string())
        }
        _ => DaemonError::Io {
            op: "lock",
            path: path.display().to_string(),
            source: e,
        },
    })?;
    // The pid, for scripts that stop the daemon serving this root.
    let mut f = f;
    f.set_len(0).map_err(io("write", &path))?;
    std::io::Write::write_all(&mut f, std::process::id().to_string().as_bytes())
        .map_err(io("write", &path))?;
    Ok(RootLock(f))
}

/// An exclusive POSIX record lock on the whole of `f`, without waiting, owned by this
/// process: not inherited by its children, released when it exits (or closes any
/// descriptor of the file, which the daemon never opens twice).
fn lock_process_wide(f: &File) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let l = whole_file_write_lock();
    // SAFETY: F_SETLK reads the valid `flock` we pass, on a descriptor we own.
    if unsafe { libc::fcntl(f.as_raw_fd(), libc::F_SETLK, &l) } == -1 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// A write lock on the whole file (l_start 0 and l_len 0: however long it grows), for
/// `fcntl`.
fn whole_file_write_lock() -> libc::flock {
    // SAFETY: an all-zero `flock` is valid; the fields that matter are set below.
    let mut l: libc::flock = unsafe { std::mem::zeroed() };
    l.l_type = libc::F_WRLCK as libc::c_short;
    l.l_whence = libc::SEEK_SET as libc::c_short;
    l
}

/// The names of the host objects (bridges, veths, nftables table) of the daemon on
/// `root` (canonical): the default root keeps Pier's first names, `pier0` and `ip pier`;
/// any other root's carry a tag of its own, so that daemons side by side never take
/// each other's.
fn host_names(root: &Path) -> pier_net::names::HostNames {
    let default =
        root == Path::new(DEFAULT_ROOT) || fs::canonicalize(DEFAULT_ROOT).is_ok_and(|d| d == root);
    pier_net::names::HostNames::for_root(root, default)
}

/// Runs the daemon until SIGINT or SIGTERM.
pub async fn run(mut config: DaemonConfig) -> Result<(), DaemonError> {
    fs::create_dir_all(&config.root).map_err(io("create", &config.root))?;
    // Absolute from here on: monitors are recognized by their working directory.
    config.root = fs::canonicalize(&config.root).map_err(io("resolve", &config.root))?;
    // Others may pass through but not list: a container in a user namespace reaches its
    // rootfs and files as an unprivileged host user (its own directory lets only that
    // user's group in; see Instances::create).
    fs::set_permissions(&config.root, fs::Permissions::from_mode(0o711))
        .map_err(io("set permissions of", &config.root))?;
    let _lock = lock_root(&config.root)?;
    // Before anything is set up: a daemon of another root on the same sockets.
    not_served(&config.socket)?;
    if let Some(d) = &config.docker_socket {
        not_served(d)?;
    }
    // Fail closed: never run a container that its cgroup could not confine.
    let cgroups = pier_runtime::cgroups::Host::detect()?;
    tracing::debug!(layout = ?cgroups.layout, controllers = ?cgroups.controllers, "cgroups");
    if config.cgroup_favordynmods {
        match pier_runtime::cgroups::favor_dynamic_modifications() {
            Ok(true) => tracing::debug!("cgroup favordynmods is on"),
            Ok(false) => tracing::info!(
                "no cgroup2 mount found: container starts pay the slow cgroup migration"
            ),
            Err(e) => {
                tracing::warn!(error = %e, "cannot set cgroup favordynmods: container starts will be slower")
            }
        }
    }

    let engine = open_engine(&config, cgroups).await?;
    // A pool member holds restarts by restart policy until its host agent removed the
    // copies of instances the pool moved elsewhere while it was down (see
    // `cluster::place`); at most RESTART_HOLD, should the pool's store stay away.
    let member = pier_cluster::local::dir(&config.root)
        .join("member.json")
        .exists();
    if member {
        engine.instances.hold_restarts();
        // The engine's start realises the pool networks' mirrors, VXLAN links included:
        // those need this host's identity in the pool, known before the store answers.
        match pier_cluster::local::load(&config.root) {
            Ok(Some((local, _))) => match local.address.parse() {
                Ok(vtep) => engine.networks.set_pool_identity(&local.name, vtep),
                Err(_) => {
                    tracing::warn!(address = %local.address, "this member's pool address is not an IPv4 address: its pool networks get no VXLAN link")
                }
            },
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(error = %pier_api::error::chain(&e), "cannot read this host's pool membership before the engine starts")
            }
        }
    }
    engine.start().await?;
    let engine = Arc::new(engine);
    if member {
        let weak = Arc::downgrade(&engine);
        tokio::spawn(async move {
            tokio::time::sleep(crate::cluster::RESTART_HOLD).await;
            if let Some(e) = weak.upgrade() {
                e.instances.release_restarts();
            }
        });
    }
    let metrics = crate::metrics::Metrics::new();
    let history = tokio::spawn(pier_engine::metrics::keep_history(Arc::downgrade(&engine)));
    let registry_server = serve_registry(&config, &engine, &metrics).await?;
    let metrics_server = serve_metrics(&config, &engine, &metrics).await?;

    let tracked = |app: axum::Router, api: &'static str| {
        app.layer(axum::middleware::from_fn_with_state(
            (metrics.clone(), api),
            crate::requests::track,
        ))
    };
    // The pool (issue 17): this host's membership, resumed once the APIs it forwards to
    // are made.
    let cluster = crate::cluster::Cluster::new(
        &config.root,
        config.host_heartbeat,
        config.host_down_after,
        Arc::downgrade(&engine),
        metrics.clone(),
    );
    // The native API's handlers find the pool (creates are placed in one) as an extension.
    let api_app = || {
        router(engine.clone())
            .merge(crate::metrics::routes(metrics.clone(), engine.clone()))
            .layer(axum::Extension(cluster.clone()))
    };
    // Requests naming another host's instance go there, and listings show the pool's (on
    // every API: the native and Docker sockets, the dashboard's); the cluster listener
    // serves other members' forwarded requests from the same apps.
    let forwarder = crate::cluster::forward::Forwarder::new(&cluster, engine.clone());

    let dashboard = config
        .dashboard_addr
        .map(|a| Arc::new(crate::dashboard::Dashboard::new(a)));
    let dashboard_server = match (&dashboard, config.dashboard_addr) {
        (Some(d), Some(addr)) => {
            let (cert, key) =
                crate::dashboard::identity(&config.root, addr, config.dashboard_tls.clone())?;
            let api = forwarder.layer(
                api_app().merge(crate::cluster::host_routes(cluster.clone())),
                crate::cluster::forward::Api::Native,
            );
            let app = tracked(crate::dashboard::app(d.clone(), api), "dashboard");
            Some(crate::dashboard::serve(addr, &cert, &key, app).await?)
        }
        _ => None,
    };

    let native_app = tracked(
        forwarder.layer(
            api_app()
                .merge(crate::dashboard::link_routes(dashboard))
                .merge(crate::cluster::routes(cluster.clone())),
            crate::cluster::forward::Api::Native,
        ),
        "native",
    );
    let docker_app = tracked(
        forwarder.layer(
            crate::docker::router(engine.clone()).layer(axum::Extension(cluster.clone())),
            crate::cluster::forward::Api::Docker,
        ),
        "docker",
    );
    cluster.serve_forwarded(native_app.clone(), docker_app.clone());
    cluster.resume().await.map_err(DaemonError::Cluster)?;

    let native = listen(&config.socket)?;
    let docker = config.docker_socket.as_deref().map(listen).transpose()?;
    tracing::info!(
        root = %config.root.display(),
        socket = %config.socket.display(),
        docker_socket = %config.docker_socket.as_deref().map(|p| p.display().to_string()).unwrap_or_default(),
        "pier daemon ready"
    );

    // Both APIs stop on the same signal; streams still open a few seconds later (events,
    // logs -f) are cut rather than holding the daemon.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let limits = crate::http::ServeLimits::new(config.header_timeout);
    let native_served = crate::http::serve(native, native_app, limits.clone(), stop_rx.clone());
    let docker_served = async {
        if let Some(l) = docker {
            crate::http::serve(l, docker_app, limits.clone(), stop_rx.clone()).await
        }
    };
    let served = async { tokio::join!(native_served, docker_served) };
    // The servers end only once stopped: when every connection has closed, or a few
    // seconds after the signal, whichever comes first.
    tokio::select! {
        _ = served => {},
        _ = async {
            shutdown_signal().await;
            let _ = stop_tx.send(true);
            tokio::time::sleep(std::time::Duration::from_secs(3)).await;
        } => {},
    }
    let _ = fs::remove_file(&config.socket);
    cluster.shutdown().await;
    engine.shutdown();
    if let Some(d) = &config.docker_socket {
        let _ = fs::remove_file(d);
    }
    history.abort();
    for server in [registry_server, metrics_server, dashboard_server]
        .into_iter()
        .flatten()
    {
        server.abort();
    }
    tracing::info!("pier daemon stopped");
    Ok(())
}

/// Opens the engine on the daemon's root with its registry settings, off the async
/// threads.
async fn open_engine(
    config: &DaemonConfig,
    cgroups: pier_runtime::cgroups::Host,
) -> Result<Engine, DaemonError> {
    let root = config.root.clone();
    let registry_auth = match &config.registry_auth {
        Some(p) => Some(pier_registry::auth::AuthConfig::load(p).map_err(DaemonError::Config)?),
        None => None,
    };
    let registry_tls_on = config.registry_tls.is_some();
    let client_config = pier_registry_client::ClientConfig {
        insecure: config.insecure_registries.clone(),
        ca_files: config.registry_ca_files.clone(),
        mirrors: config.registry_mirrors.clone(),
    };
    let upstream = config
        .registry_upstream
        .clone()
        .map(|host| pier_registry::mirror::Upstream {
            host,
            client: pier_registry_client::ClientConfig {
                mirrors: vec![],
                ..client_config.clone()
            },
        });
    let engine_config = EngineConfig {
        root: root.clone(),
        host_names: host_names(&root),
        cgroups,
        registry_auth,
        registry_tls: registry_tls_on,
        registry_upstream: upstream,
        registry_client: client_config,
        vm: config.vm.clone(),
        history_period: config.metrics_history_period,
    };
    tokio::task::spawn_blocking(move || Engine::open(engine_config))
        .await
        .expect("startup task")
        .map_err(Into::into)
}

/// The registry server, when the daemon serves one (`--registry-addr`).
async fn serve_registry(
    config: &DaemonConfig,
    engine: &Arc<Engine>,
    metrics: &Arc<crate::metrics::Metrics>,
) -> Result<Option<tokio::task::JoinHandle<()>>, DaemonError> {
    Ok(match config.registry_addr {
        Some(addr) => {
            let l = listen_tcp(addr).await?;
            let app = pier_registry::server::router(engine.registry.clone()).layer(
                axum::middleware::from_fn_with_state(
                    (metrics.clone(), "registry"),
                    crate::requests::track,
                ),
            );
            match &config.registry_tls {
                Some((cert, key)) => {
                    let tls = pier_registry::server::tls_acceptor(cert, key)
                        .map_err(DaemonError::Config)?;
                    tracing::info!(addr = %addr, "registry listening (TLS)");
                    Some(tokio::spawn(pier_registry::server::serve(
                        l,
                        app,
                        Some(tls),
                    )))
                }
                None => {
                    tracing::info!(addr = %addr, "registry listening");
                    Some(tokio::spawn(pier_registry::server::serve(l, app, None)))
                }
            }
        }
        None => None,
    })
}

/// Listens on a TCP address (the registry's, `--metrics-addr`).
async fn listen_tcp(addr: std::net::SocketAddr) -> Result<tokio::net::TcpListener, DaemonError> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| DaemonError::Io {
            op: "listen on",
            path: addr.to_string(),
            source,
        })
}

/// `/metrics` on its own TCP address (`--metrics-addr`), when asked for.
async fn serve_metrics(
    config: &DaemonConfig,
    engine: &Arc<Engine>,
    metrics: &Arc<crate::metrics::Metrics>,
) -> Result<Option<tokio::task::JoinHandle<()>>, DaemonError> {
    let Some(addr) = config.metrics_addr else {
        return Ok(None);
    };
    let l = listen_tcp(addr).await?;
    let app = crate::metrics::routes(metrics.clone(), engine.clone()).fallback(|| async {
        (
            axum::http::StatusCode::NOT_FOUND,
            "this address serves /metrics only\n",
        )
    });
    tracing::info!(addr = %addr, "metrics listening");
    Ok(Some(tokio::spawn(async move {
        if let Err(e) = axum::serve(l, app).await {
            tracing::error!(error = %e, "the metrics server stopped");
        }
    })))
}

/// Listens on a unix socket that only root may use. A socket nobody answers on is
/// stale (its daemon crashed) and replaced; one a live daemon serves (another root's
/// daemon started with the same `--socket`) is left to it.
fn listen(socket: &Path) -> Result<UnixListener, DaemonError> {
    if let Some(dir) = socket.parent() {
        fs::create_dir_all(dir).map_err(io("create", dir))?;
    }
    not_served(socket)?;
    let _ = fs::remove_file(socket);
    let listener = UnixListener::bind(socket).map_err(io("listen on", socket))?;
    fs::set_permissions(socket, fs::Permissions::from_mode(0o600))
        .map_err(io("set permissions of", socket))?;
    Ok(listener)
}

/// Fails when a live daemon answers on `socket`.
fn not_served(socket: &Path) -> Result<(), DaemonError> {
    match std::os::unix::net::UnixStream::connect(socket) {
        Ok(_) => Err(DaemonError::SocketInUse(socket.display().to_string())),
        Err(_) => Ok(()),
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    tokio::select! {
        _ = term.recv() => {},
        _ = int.recv() => {},
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether another holder's lock covers `path` (asked through a lock of another
    /// open file, which conflicts with this process's own record locks too).
    fn held(path: &Path) -> bool {
        use std::os::fd::AsRawFd;
        let f = File::options().read(true).write(true).open(path).unwrap();
        let mut l = whole_file_write_lock();
        // SAFETY: F_OFD_GETLK writes into the `flock` we own, on a descriptor we own.
        let r = unsafe { libc::fcntl(f.as_raw_fd(), libc::F_OFD_GETLK, &mut l) };
        assert_eq!(r, 0, "{}", std::io::Error::last_os_error());
        l.l_type != libc::F_UNLCK as libc::c_short
    }

    /// The root's lock is the daemon's alone: a child that shares the lock file's open
    /// description (as one between its fork and exec does) does not keep it held once
    /// the daemon has let go, so a daemon killed mid-spawn never blocks its successor.
    #[test]
    fn the_roots_lock_goes_with_the_daemon_not_with_its_children() {
        let root = std::env::temp_dir().join(format!("pier-lock-test-{}", std::process::id()));
        fs::create_dir_all(&root).unwrap();
        let path = root.join("daemon.lock");
        let lock = lock_root(&root).unwrap();
        assert!(held(&path), "the daemon holds its root");
        assert_eq!(
            fs::read_to_string(&path).unwrap(),
            std::process::id().to_string()
        );
        let mut sharer = std::process::Command::new("sleep")
            .arg("60")
            .stdin(std::process::Stdio::from(lock.0.try_clone().unwrap()))
            .spawn()
            .unwrap();
        drop(lock);
        let free = !held(&path);
        let again = lock_root(&root);
        let _ = sharer.kill();
        let _ = sharer.wait();
        let _ = fs::remove_dir_all(&root);
        assert!(free, "a child sharing the lock file kept the root locked");
        assert!(again.is_ok(), "{:?}", again.err());
    }
}
