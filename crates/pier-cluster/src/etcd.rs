//! The etcd member a pool's daemon runs for it (Debian's `etcd`, or `$PIER_ETCD`): started
//! on the advertise address with its data in the state directory, restarted when it dies,
//! stopped with the daemon.
//!
//! A thread of its own spawns etcd and waits on it, so that etcd's parent-death signal
//! (SIGKILL when the spawning thread ends) ties it to the daemon: a daemon killed with
//! SIGKILL takes its etcd with it, and the next start runs it again on the same data.
//!
//! Clients and peers speak mutual TLS with the pool's CA: etcd serves this host's member
//! certificate (its SAN is the advertise IP) and takes only clients and peers with a
//! certificate of the pool. `DIR` (`ROOT/etcd/`, 0700) holds `data/`, `etcd.log` and
//! `tls/` (copies of the PEMs etcd reads, 0600, written at each start).

use std::fs::File;
use std::io::Write;
use std::net::IpAddr;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The etcd ports on the advertise address.
pub const CLIENT_PORT: u16 = 2379;
pub const PEER_PORT: u16 = 2380;

/// What etcd is started with.
#[derive(Debug, Clone)]
pub struct EtcdSpec {
    pub name: String,
    pub cluster_id: String,
    pub address: IpAddr,
    /// `ROOT/etcd/`.
    pub dir: PathBuf,
    pub tls: pier_store::EtcdTls,
    /// How a member joining a running cluster starts its first time: every member as
    /// `NAME=PEER_URL,...` (etcd's `--initial-cluster`, with `--initial-cluster-state
    /// existing`). `None` for the pool's first member, which makes a new cluster of itself.
    /// (Once etcd has its data, it reads neither.)
    pub initial_cluster: Option<String>,
}

/// The client URL of an etcd member on `address`.
pub fn client_url_of(address: IpAddr) -> String {
    format!(
        "https://{}",
        std::net::SocketAddr::new(address, CLIENT_PORT)
    )
}

/// The peer URL of an etcd member on `address`.
pub fn peer_url_of(address: IpAddr) -> String {
    format!("https://{}", std::net::SocketAddr::new(address, PEER_PORT))
}

impl EtcdSpec {
    pub fn client_url(&self) -> String {
        client_url_of(self.address)
    }

    pub fn peer_url(&self) -> String {
        peer_url_of(self.address)
    }

    fn log(&self) -> PathBuf {
        self.dir.join("etcd.log")
    }

    /// Makes `DIR` and writes the PEMs etcd reads.
    fn prepare(&self) -> std::io::Result<()> {
        let tls = self.dir.join("tls");
        std::fs::DirBuilder::new()
            .mode(0o700)
            .recursive(true)
            .create(&tls)?;
        for (name, pem) in [
            ("ca.pem", &self.tls.ca_pem),
            ("member.pem", &self.tls.cert_pem),
            ("member-key.pem", &self.tls.key_pem),
        ] {
            let path = tls.join(name);
            let tmp = tls.join(format!(".{name}.tmp"));
            let mut f = File::options()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)?;
            f.write_all(pem.as_bytes())?;
            f.sync_all()?;
            std::fs::rename(&tmp, &path)?;
        }
        Ok(())
    }
}

/// The etcd binary: `$PIER_ETCD`, else `etcd` on the PATH.
fn binary() -> PathBuf {
    std::env::var_os("PIER_ETCD").map_or_else(|| PathBuf::from("etcd"), PathBuf::from)
}

fn spawn(spec: &EtcdSpec) -> std::io::Result<Child> {
    spec.prepare()?;
    let log = File::options().create(true).append(true).open(spec.log())?;
    let (client, peer) = (spec.client_url(), spec.peer_url());
    let tls = spec.dir.join("tls");
    let (ca, cert, key) = (
        tls.join("ca.pem"),
        tls.join("member.pem"),
        tls.join("member-key.pem"),
    );
    let mut cmd = Command::new(binary());
    cmd.arg(format!("--name={}", spec.name))
        .arg(format!("--data-dir={}", spec.dir.join("data").display()))
        .arg(format!("--cert-file={}", cert.display()))
        .arg(format!("--key-file={}", key.display()))
        .arg(format!("--trusted-ca-file={}", ca.display()))
        .arg("--client-cert-auth")
        .arg(format!("--peer-cert-file={}", cert.display()))
        .arg(format!("--peer-key-file={}", key.display()))
        .arg(format!("--peer-trusted-ca-file={}", ca.display()))
        .arg("--peer-client-cert-auth")
        .arg(format!("--listen-client-urls={client}"))
        .arg(format!("--advertise-client-urls={client}"))
        .arg(format!("--listen-peer-urls={peer}"))
        .arg(format!("--initial-advertise-peer-urls={peer}"))
        .arg(format!("--initial-cluster-token={}", spec.cluster_id));
    match &spec.initial_cluster {
        None => cmd
            .arg(format!("--initial-cluster={}={peer}", spec.name))
            .arg("--initial-cluster-state=new"),
        Some(all) => cmd
            .arg(format!("--initial-cluster={all}"))
            .arg("--initial-cluster-state=existing"),
    };
    cmd
        // Room for the scheduler's and the store's largest batches.
        .arg("--max-txn-ops=1024")
        .arg("--max-request-bytes=10485760")
        // A member cut off by a network split keeps campaigning, with ever higher
        // terms; without the pre-vote phase its return makes the leader step down, and
        // the whole pool is without a leader (and cut off) for an election. etcd 3.5
        // turns this on by default; Debian's 3.4 does not.
        .arg("--pre-vote")
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    // SAFETY: prctl(PR_SET_PDEATHSIG) only, in the child before exec.
    unsafe {
        use std::os::unix::process::CommandExt;
        cmd.pre_exec(|| {
            rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))
                .map_err(std::io::Error::from)
        });
    }
    cmd.spawn()
}

/// A supervised etcd; [`Supervisor::stop`] ends it.
pub struct Supervisor {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

#[derive(Debug, thiserror::Error)]
#[error("cannot start etcd ({binary}): {source}; install Debian's etcd-server (apt-get install etcd-server), or give `pier cluster init --etcd URL` an etcd that runs")]
pub struct SpawnError {
    binary: String,
    #[source]
    source: std::io::Error,
}

impl Supervisor {
    /// Starts etcd, and a thread that restarts it whenever it exits until stopped.
    pub fn start(spec: EtcdSpec) -> Result<Supervisor, SpawnError> {
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = std::sync::mpsc::channel();
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("pier-etcd-supervisor".into())
            .spawn(move || supervise(spec, flag, tx))
            .map_err(|source| SpawnError {
                binary: binary().display().to_string(),
                source,
            })?;
        match rx.recv() {
            Ok(Ok(())) => Ok(Supervisor {
                stop,
                thread: Some(thread),
            }),
            Ok(Err(source)) => {
                let _ = thread.join();
                Err(SpawnError {
                    binary: binary().display().to_string(),
                    source,
                })
            }
            Err(_) => Err(SpawnError {
                binary: binary().display().to_string(),
                source: std::io::Error::other("the supervisor thread ended"),
            }),
        }
    }

    /// Stops etcd (SIGTERM, SIGKILL after 10 s) and waits for it. Blocking.
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn supervise(
    spec: EtcdSpec,
    stop: Arc<AtomicBool>,
    started: std::sync::mpsc::Sender<std::io::Result<()>>,
) {
    let mut child = match spawn(&spec) {
        Ok(c) => {
            let _ = started.send(Ok(()));
            c
        }
        Err(e) => {
            let _ = started.send(Err(e));
            return;
        }
    };
    tracing::info!(pid = child.id(), url = %spec.client_url(), "etcd started");
    let mut backoff = Duration::from_millis(500);
    loop {
        if stop.load(Ordering::SeqCst) {
            terminate(&mut child);
            tracing::info!("etcd stopped");
            return;
        }
        match child.try_wait() {
            Ok(Some(status)) => {
                tracing::warn!(%status, log = %spec.log().display(), "etcd exited; restarting it");
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(Duration::from_secs(10));
                if stop.load(Ordering::SeqCst) {
                    return;
                }
                match spawn(&spec) {
                    Ok(c) => child = c,
                    Err(e) => {
                        tracing::error!(error = %e, "cannot restart etcd; trying again");
                        continue;
                    }
                }
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(100)),
            Err(e) => {
                tracing::error!(error = %e, "cannot wait for etcd");
                std::thread::sleep(Duration::from_secs(1));
            }
        }
    }
}

fn terminate(child: &mut Child) {
    let pid = rustix::process::Pid::from_raw(child.id() as i32);
    if let Some(pid) = pid {
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Removes what a failed init left of etcd's data.
pub fn remove_data(dir: &Path) {
    let _ = std::fs::remove_dir_all(dir);
}
