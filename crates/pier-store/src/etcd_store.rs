//! [`EtcdStore`]: the state store of a pool of hosts, on an etcd v3 cluster (through the
//! `etcd-client` crate). It owns the mapping of the [`Store`] contract onto etcd and the
//! client's own runtime.
//!
//! - **Keys.** A record `table/key` is the etcd key `{prefix}{table}/{key}`, where the
//!   prefix ([`EtcdConfig::prefix`]) lets several pools, or tests, share one etcd. A table
//!   is a key prefix; a range is an etcd prefix range, in the same (byte) key order.
//! - **Revisions** are etcd's own: one counter for the whole etcd (shared by every prefix
//!   on it), raised once per transaction that changes something, never by a failed or
//!   empty one. A fresh etcd is at 1, not 0 as a fresh [`MemStore`](crate::MemStore); and
//!   writes under another prefix raise it too, so only revisions this store reads are
//!   meaningful to it, never arithmetic on them across other writers.
//! - **Transactions** are etcd transactions: "absent" is `create_revision == 0`,
//!   "present" `create_revision > 0`, "at revision N" `mod_revision == N`. When a compare
//!   fails, the else branch reads every compared key in the same transaction, so the
//!   [`StoreError::Conflict`] names the first compare that failed and what the key was,
//!   atomically. etcd refuses a transaction naming a key twice; the contract allows it
//!   (ops apply in order), so the ops are collapsed first: each key keeps its last op, at
//!   the place of that last op. (So a watcher sees one event for such a key, where the
//!   embedded backends send one per op.) Every commit is durable (etcd's raft log is
//!   synced before it answers): `durable` is ignored. etcd limits a transaction to
//!   `--max-txn-ops` operations (128 by default) and a request to `--max-request-bytes`;
//!   a pool's etcd must be started with room for Pier's largest batches.
//! - **Watch** is an etcd watch on the prefix from the asked revision, read by a task that
//!   queues the events for the [`Watcher`] (stopping it with [`StoreError::WatchLagged`]
//!   when [`WATCH_BUFFER`] events wait, as the other backends do). A start before etcd's
//!   last compaction is [`StoreError::Compacted`]; etcd keeps all history until it is
//!   compacted ([`EtcdStore::compact`], or etcd's `--auto-compaction-*`), so
//!   [`HISTORY_EVENTS`](crate::HISTORY_EVENTS) does not apply. A start in the past is
//!   replayed before [`Store::watch`] returns, as in the embedded backends: through a
//!   short-lived watch of every key in etcd from the start, read until the events of the
//!   revision current at the call (each revision has events there, so the replay is
//!   known to be whole), then the prefix is watched from the next. If the connection drops,
//!   the task watches again from the revision after the last event it queued, so nothing
//!   is missed. The contract's promise that a change's events are queued before the call
//!   that made it returns holds for the changes made through this store (its `txn` and
//!   `revoke` wait, up to the request timeout, for its own watchers to have the events);
//!   changes made by other clients reach the watchers when etcd sends them.
//! - **Leases** are etcd leases (whole seconds; etcd raises a shorter time to live to its
//!   minimum, 1.5 election timeouts). etcd's leader expires them itself, deleting their
//!   keys in one revision, and persists them: a restarted etcd extends every lease by its
//!   time to live. So [`Store::expire_leases`] ends nothing: it reports the leases granted
//!   (or kept alive) through this store that etcd has expired since the last call, and
//!   waits for this store's watchers to have the deletions.
//!
//! - **Quorum** ([`EtcdStore::probe_quorum`]): whether a majority of the cluster is
//!   reachable from here, asked of each member apart (a linearizable read, which only a
//!   member in touch with a leader that has a quorum can serve, with etcd's "require a
//!   leader" flag, so that a member without one says so at once instead of waiting).
//!
//! The [`Store`] trait is synchronous and its callers may run inside a tokio runtime, on
//! which blocking would be wrong. So the etcd client runs on a runtime of its own: one
//! thread with a current-thread runtime, started at [`EtcdStore::open`] and stopped when
//! the store is dropped; each call sends its request there and waits for the answer.

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use etcd_client as etcd;
use tokio::sync::{mpsc, oneshot};

use crate::watch::{feed, queue};
use crate::{
    Event, Expect, KeyValue, LeaseId, Listing, Op, Revision, Store, StoreError, Table, Txn, Watcher,
};

/// Where an [`EtcdStore`] finds etcd and which part of it is Pier's.
#[derive(Debug, Clone)]
pub struct EtcdConfig {
    /// The client URLs of the cluster's members, e.g. `http://10.0.0.1:2379`.
    pub endpoints: Vec<String>,
    /// Put before every key (e.g. `pier/`), so that several pools can share one etcd.
    pub prefix: String,
    /// How long opening a connection to a member may take.
    pub connect_timeout: Duration,
    /// How long one request may take (a read is retried within it while etcd is away).
    pub request_timeout: Duration,
    /// Mutual TLS with the cluster (its endpoints are then `https://`).
    pub tls: Option<EtcdTls>,
}

/// The PEMs of mutual TLS with etcd: the CA that signed the members' certificates, and
/// this client's certificate and key.
#[derive(Clone)]
pub struct EtcdTls {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for EtcdTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EtcdTls { .. }")
    }
}

impl EtcdConfig {
    /// `endpoints` with `prefix`, and timeouts fit for a cluster on a local network.
    pub fn new(endpoints: Vec<String>, prefix: impl Into<String>) -> Self {
        EtcdConfig {
            endpoints,
            prefix: prefix.into(),
            connect_timeout: Duration::from_secs(3),
            request_timeout: Duration::from_secs(10),
            tls: None,
        }
    }

    /// The same, over mutual TLS.
    pub fn with_tls(mut self, tls: EtcdTls) -> Self {
        self.tls = Some(tls);
        self
    }
}

/// Why a request to etcd failed (the source of [`StoreError::Backend`]).
#[derive(Debug, thiserror::Error)]
pub enum EtcdError {
    #[error(
        "etcd at {endpoints} could not {what}: {message}; check that etcd runs and is reachable"
    )]
    Request {
        endpoints: String,
        what: &'static str,
        message: String,
    },
    #[error("etcd at {endpoints} did not {what} within {timeout:?}; check that etcd runs and is reachable (and not overloaded)")]
    Timeout {
        endpoints: String,
        what: &'static str,
        timeout: Duration,
    },
    #[error("etcd at {endpoints} refused a transaction of {ops} operations: {message}; start etcd with a larger --max-txn-ops (and --max-request-bytes)")]
    TooLarge {
        endpoints: String,
        ops: usize,
        message: String,
    },
    #[error("etcd at {endpoints} holds the key {key:?}, which is not a Pier record under prefix {prefix:?}; remove it or give Pier a prefix of its own")]
    ForeignKey {
        endpoints: String,
        prefix: String,
        key: String,
    },
    #[error("the etcd client's thread has stopped; restart pier")]
    Stopped,
}

/// What a watch task has queued, for the store's calls to wait on.
#[derive(Debug)]
struct Progress {
    table: Table,
    prefix: String,
    /// The revision of the last event queued, and whether the watch has ended.
    state: Mutex<(Revision, bool)>,
    cv: Condvar,
}

impl Progress {
    fn lock(&self) -> MutexGuard<'_, (Revision, bool)> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
    fn advance(&self, revision: Revision) {
        self.lock().0 = revision;
        self.cv.notify_all();
    }
    fn finish(&self) {
        self.lock().1 = true;
        self.cv.notify_all();
    }
    fn done(&self) -> bool {
        self.lock().1
    }
    fn wants(&self, table: Table, key: &str) -> bool {
        table == self.table && key.starts_with(&self.prefix)
    }
    /// Waits until the events of `revision` are queued or the watch ended, up to `deadline`.
    fn wait_for(&self, revision: Revision, deadline: Instant) {
        let mut st = self.lock();
        while st.0 < revision && !st.1 {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            st = self
                .cv
                .wait_timeout(st, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
}

/// A lease granted or kept alive through this store.
struct LeaseInfo {
    /// The keys this store knows to be attached to it.
    keys: BTreeSet<(Table, String)>,
    /// A revision at which those keys were attached (and the lease alive): their deletion
    /// comes after it.
    alive_at: Revision,
    /// The keep-alive stream, opened at the first [`Store::keep_alive`].
    keeper: Option<(etcd::LeaseKeeper, etcd::LeaseKeepAliveStream)>,
}

/// A member of the etcd cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdMember {
    pub id: u64,
    /// Empty until the member has started.
    pub name: String,
    pub peer_urls: Vec<String>,
    /// Empty until the member has started.
    pub client_urls: Vec<String>,
    pub learner: bool,
}

impl EtcdMember {
    fn of(m: &etcd::Member) -> EtcdMember {
        EtcdMember {
            id: m.id(),
            name: m.name().to_string(),
            peer_urls: m.peer_urls().to_vec(),
            client_urls: m.client_urls().to_vec(),
            learner: m.is_learner(),
        }
    }
}

/// How one etcd member answered [`EtcdStore::probe_quorum`], when it did not serve the read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MemberAnswer {
    /// No answer within the time given (it cannot be connected to, or it waits for a
    /// leader it cannot reach).
    NoAnswer,
    /// It answered that it has no leader: it is cut off from a majority of the cluster
    /// too (or an election is under way).
    NoLeader,
    /// Another refusal, etcd's message.
    Failed(String),
}

/// No member of the cluster served a linearizable read within the time given: a majority
/// of the cluster is not reachable from this client. Each member's client URL, with how
/// it answered, in URL order.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("no etcd member reachable from here is in touch with a majority of the cluster ({})", describe(.members))]
pub struct QuorumLost {
    pub members: Vec<(String, MemberAnswer)>,
}

fn describe(members: &[(String, MemberAnswer)]) -> String {
    members
        .iter()
        .map(|(url, a)| match a {
            MemberAnswer::NoAnswer => format!("{url}: no answer"),
            MemberAnswer::NoLeader => format!("{url}: no leader"),
            MemberAnswer::Failed(m) => format!("{url}: {m}"),
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// The client's own runtime: a thread running a current-thread runtime until stopped.
struct Runtime {
    handle: tokio::runtime::Handle,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Runtime {
    fn start() -> std::io::Result<Runtime> {
        let (handle_tx, handle_rx) = std::sync::mpsc::channel();
        let (stop, stopped) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("pier-etcd".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = handle_tx.send(Err(e));
                        return;
                    }
                };
                let _ = handle_tx.send(Ok(rt.handle().clone()));
                rt.block_on(async {
                    let _ = stopped.await;
                });
            })?;
        let handle = handle_rx
            .recv()
            .map_err(|_| std::io::Error::other("the etcd client's thread did not start"))??;
        Ok(Runtime {
            handle,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// Runs `fut` on the client's thread and waits for its output.
    fn run<T: Send + 'static>(
        &self,
        fut: impl Future<Output = T> + Send + 'static,
    ) -> Result<T, StoreError> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.handle.spawn(async move {
            let _ = tx.send(fut.await);
        });
        rx.recv()
            .map_err(|_| StoreError::Backend(Box::new(EtcdError::Stopped)))
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The [`Store`] on an etcd v3 cluster; see the module doc.
pub struct EtcdStore {
    config: EtcdConfig,
    /// The endpoints, joined, for messages.
    endpoints: String,
    client: etcd::Client,
    watchers: Mutex<Vec<Arc<Progress>>>,
    leases: Mutex<HashMap<LeaseId, LeaseInfo>>,
    /// The endpoints the client uses (those opened with and those added since).
    used: Mutex<BTreeSet<String>>,
    /// A client per endpoint for [`EtcdStore::probe_quorum`] (made on first use).
    probes: Mutex<HashMap<String, etcd::Client>>,
    /// Last, so that everything above is dropped while the runtime still runs.
    rt: Runtime,
}

impl std::fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdStore")
            .field("endpoints", &self.endpoints)
            .field("prefix", &self.config.prefix)
            .finish()
    }
}

/// How long [`EtcdStore::open`] waits for the other endpoints once one answered.
const OPEN_GRACE: Duration = Duration::from_millis(300);

/// Whether an error is etcd being away (a read may be tried again).
fn transient(e: &etcd::Error) -> bool {
    match e {
        etcd::Error::TransportError(_) | etcd::Error::IoError(_) => true,
        etcd::Error::GRpcStatus(s) => matches!(
            i32::from(s.code()),
            tonic_code::UNAVAILABLE | tonic_code::UNKNOWN | tonic_code::CANCELLED
        ),
        _ => false,
    }
}

/// Whether a request failed before it reached etcd (its connection could not be made), so
/// that even a write may be sent again: with several endpoints, the client's balancer may
/// pick one whose member is down, and the next try another.
fn not_sent(e: &etcd::Error) -> bool {
    let text = match e {
        etcd::Error::TransportError(t) => format!("{t:?}"),
        etcd::Error::GRpcStatus(s) if i32::from(s.code()) == tonic_code::UNAVAILABLE => {
            format!("{} {:?}", s.message(), s)
        }
        _ => return false,
    };
    [
        "tcp connect error",
        "error trying to connect",
        "Connection refused",
    ]
    .iter()
    .any(|m| text.contains(m))
}

/// The gRPC status codes [`transient`] looks at (etcd-client re-exports no tonic).
mod tonic_code {
    pub(super) type Code = i32;
    pub(super) const CANCELLED: Code = 1;
    pub(super) const UNKNOWN: Code = 2;
    pub(super) const UNAVAILABLE: Code = 14;
}

/// The text of an etcd error, for messages: a gRPC status's message alone.
fn message(e: &etcd::Error) -> String {
    match e {
        etcd::Error::GRpcStatus(s) => s.message().to_string(),
        other => other.to_string(),
    }
}

/// Whether etcd (or the client, for a keep-alive answered with no time left) said the
/// lease does not exist.
fn lease_missing(e: &etcd::Error) -> bool {
    message(e).contains("lease not found")
}

fn kv_of(kv: &etcd::KeyValue) -> KeyValue {
    KeyValue {
        value: kv.value().to_vec(),
        create_revision: kv.create_revision() as Revision,
        mod_revision: kv.mod_revision() as Revision,
        lease: (kv.lease() != 0).then_some(LeaseId(kv.lease() as u64)),
    }
}

fn header_revision(header: Option<&etcd::ResponseHeader>) -> Revision {
    header.map_or(0, |h| h.revision() as Revision)
}

/// Each key's last op, in the order of those last ops (etcd refuses a key named twice).
fn collapse(ops: Vec<Op>) -> Vec<Op> {
    let key = |op: &Op| match op {
        Op::Put { table, key, .. }
        | Op::PutLeased { table, key, .. }
        | Op::Delete { table, key } => (*table, key.clone()),
    };
    let mut last: HashMap<(Table, String), usize> = HashMap::new();
    for (i, op) in ops.iter().enumerate() {
        last.insert(key(op), i);
    }
    ops.into_iter()
        .enumerate()
        .filter(|(i, op)| last.get(&key(op)) == Some(i))
        .map(|(_, op)| op)
        .collect()
}

/// Why a watch could not start.
enum WatchStart {
    Compacted(Revision),
    Failed(etcd::Error),
}

/// Starts an etcd watch of `key`'s prefix from `start` and waits for etcd to take it.
async fn open_watch(
    client: etcd::Client,
    key: Vec<u8>,
    start: Revision,
) -> Result<etcd::WatchStream, WatchStart> {
    open_watch_of(client, key, false, start).await
}

/// As [`open_watch`], of every key in etcd if `all`.
async fn open_watch_of(
    mut client: etcd::Client,
    key: Vec<u8>,
    all: bool,
    start: Revision,
) -> Result<etcd::WatchStream, WatchStart> {
    let options = etcd::WatchOptions::new().with_start_revision(start as i64);
    let options = if all {
        options.with_all_keys()
    } else {
        options.with_prefix()
    };
    let mut stream = client
        .watch(key, Some(options))
        .await
        .map_err(WatchStart::Failed)?;
    match stream.message().await {
        Ok(Some(resp)) if resp.created() && !resp.canceled() => Ok(stream),
        Ok(Some(resp)) if resp.compact_revision() > 0 => {
            Err(WatchStart::Compacted(resp.compact_revision() as Revision))
        }
        Ok(Some(resp)) => Err(WatchStart::Failed(etcd::Error::WatchError(format!(
            "the watch was refused: {}",
            resp.cancel_reason()
        )))),
        Ok(None) => Err(WatchStart::Failed(etcd::Error::WatchError(
            "the watch stream ended".into(),
        ))),
        Err(e) => Err(WatchStart::Failed(e)),
    }
}

/// What a watcher watches, in etcd's terms.
#[derive(Debug, Clone)]
struct Target {
    /// The etcd key prefix watched.
    key: Vec<u8>,
    table: Table,
    /// The length of the table's etcd prefix, to strip from a key to get Pier's.
    strip: usize,
}

impl Target {
    /// Pier's event of an etcd event, or None for a key not watched.
    fn event(&self, ev: &etcd::Event) -> Option<Event> {
        let kv = ev.kv()?;
        if !kv.key().starts_with(&self.key) {
            return None;
        }
        let key = String::from_utf8(kv.key().get(self.strip..)?.to_vec()).ok()?;
        Some(match ev.event_type() {
            etcd::EventType::Put => Event::Put {
                table: self.table,
                key,
                kv: kv_of(kv),
            },
            etcd::EventType::Delete => Event::Delete {
                table: self.table,
                key,
                revision: kv.mod_revision() as Revision,
            },
        })
    }
}

/// How a replay ended early.
enum ReplayEnd {
    Compacted(Revision),
    /// The watcher lagged (its last item says so) or is gone.
    Stopped,
    Failed(etcd::Error),
}

/// Queues the events under `key` from `start` to `upto` (the revision read just before),
/// by a watch of every key in etcd: each revision has an event there, so the replay is
/// known to be whole when `upto`'s events came. Returns the first revision not replayed
/// (`upto + 1`, unless `wait` ran out first).
async fn replay(
    client: etcd::Client,
    target: Target,
    tx: mpsc::Sender<Result<Event, StoreError>>,
    start: Revision,
    upto: Revision,
    wait: Duration,
) -> Result<Revision, ReplayEnd> {
    let mut stream = match open_watch_of(client, Vec::new(), true, start).await {
        Ok(stream) => stream,
        Err(WatchStart::Compacted(c)) => return Err(ReplayEnd::Compacted(c)),
        Err(WatchStart::Failed(e)) => return Err(ReplayEnd::Failed(e)),
    };
    let mut next = start;
    let deadline = tokio::time::Instant::now() + wait;
    while next <= upto {
        let resp = match tokio::time::timeout_at(deadline, stream.message()).await {
            Err(_) => break,
            Ok(Err(e)) => return Err(ReplayEnd::Failed(e)),
            Ok(Ok(None)) => break,
            Ok(Ok(Some(resp))) => resp,
        };
        if resp.canceled() {
            if resp.compact_revision() > 0 {
                return Err(ReplayEnd::Compacted(resp.compact_revision() as Revision));
            }
            return Err(ReplayEnd::Failed(etcd::Error::WatchError(
                resp.cancel_reason().to_string(),
            )));
        }
        for ev in resp.events() {
            let revision = ev.kv().map_or(0, |kv| kv.mod_revision() as Revision);
            if revision > upto {
                return Ok(upto + 1);
            }
            if let Some(event) = target.event(ev) {
                if !queue(&tx, &event) {
                    return Err(ReplayEnd::Stopped);
                }
            }
            next = next.max(revision + 1);
        }
    }
    Ok(next)
}

/// The client's options for `config`, connecting within `connect_timeout`.
fn connect_options(config: &EtcdConfig, connect_timeout: Duration) -> etcd::ConnectOptions {
    let mut options = etcd::ConnectOptions::new()
        .with_connect_timeout(connect_timeout)
        .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5));
    if let Some(tls) = &config.tls {
        options = options.with_tls(
            etcd::TlsOptions::new()
                .ca_certificate(etcd::Certificate::from_pem(&tls.ca_pem))
                .identity(etcd::Identity::from_pem(&tls.cert_pem, &tls.key_pem)),
        );
    }
    options
}

/// Asks one member for a linearizable read until `deadline`: Ok once it serves one; a
/// member without a leader is asked again (an election may end) every [`PROBE_PAUSE`],
/// and each try waits at most [`PROBE_TRY`] (a member that lost its leader a moment ago
/// holds a read until it notices).
async fn probe_member(
    mut client: etcd::Client,
    key: Vec<u8>,
    deadline: tokio::time::Instant,
) -> Result<(), MemberAnswer> {
    let mut last = MemberAnswer::NoAnswer;
    loop {
        let now = tokio::time::Instant::now();
        if now >= deadline {
            return Err(last);
        }
        let until = deadline.min(now + PROBE_TRY);
        let options = etcd::GetOptions::new().with_count_only();
        match tokio::time::timeout_at(until, client.get(key.clone(), Some(options))).await {
            Ok(Ok(_)) => return Ok(()),
            Ok(Err(e)) => {
                let text = message(&e);
                last = if text.contains("no leader") {
                    MemberAnswer::NoLeader
                } else if transient(&e) {
                    // Not connected (yet): as good as no answer, unless one comes.
                    if last == MemberAnswer::NoLeader {
                        last
                    } else {
                        MemberAnswer::NoAnswer
                    }
                } else {
                    MemberAnswer::Failed(text)
                };
                tokio::time::sleep_until(deadline.min(tokio::time::Instant::now() + PROBE_PAUSE))
                    .await;
            }
            // This try timed out; an earlier answer (no leader) stays the better one.
            Err(_) => {}
        }
    }
}

/// How long one try of [`probe_member`] waits.
const PROBE_TRY: Duration = Duration::from_millis(1500);
/// The pause between tries of a member that answered without serving the read.
const PROBE_PAUSE: Duration = Duration::from_millis(200);

/// What a watch task needs to turn etcd's events into Pier's.
struct WatchTask {
    client: etcd::Client,
    target: Target,
    progress: Arc<Progress>,
    tx: mpsc::Sender<Result<Event, StoreError>>,
    endpoints: String,
}

impl WatchTask {
    /// Queues the stream's events until the watcher is dropped or lags, or etcd cancels
    /// the watch; watches again after the last event queued when the stream breaks.
    async fn run(self, mut stream: etcd::WatchStream, mut next: Revision) {
        'watch: loop {
            let msg = tokio::select! {
                _ = self.tx.closed() => break,
                msg = stream.message() => msg,
            };
            match msg {
                Ok(Some(resp)) => {
                    if resp.canceled() {
                        let err = if resp.compact_revision() > 0 {
                            StoreError::Compacted {
                                requested: next,
                                compacted: resp.compact_revision() as Revision - 1,
                            }
                        } else {
                            self.backend("keep a watch", resp.cancel_reason().to_string())
                        };
                        let _ = self.tx.try_send(Err(err));
                        break;
                    }
                    let mut last = None;
                    for ev in resp.events() {
                        let Some(event) = self.target.event(ev) else {
                            continue;
                        };
                        let revision = event.revision();
                        if !queue(&self.tx, &event) {
                            break 'watch;
                        }
                        last = Some(revision);
                    }
                    if let Some(last) = last {
                        next = last + 1;
                        self.progress.advance(last);
                    }
                }
                Ok(None) | Err(_) => {
                    // etcd went away: watch again from the first revision not queued.
                    let mut pause = Duration::from_millis(100);
                    loop {
                        tokio::select! {
                            _ = self.tx.closed() => break 'watch,
                            _ = tokio::time::sleep(pause) => {}
                        }
                        let key = self.target.key.clone();
                        match open_watch(self.client.clone(), key, next).await {
                            Ok(s) => {
                                stream = s;
                                break;
                            }
                            Err(WatchStart::Compacted(c)) => {
                                let _ = self.tx.try_send(Err(StoreError::Compacted {
                                    requested: next,
                                    compacted: c - 1,
                                }));
                                break 'watch;
                            }
                            Err(WatchStart::Failed(_)) => {
                                pause = (pause * 2).min(Duration::from_secs(2));
                            }
                        }
                    }
                }
            }
        }
        self.progress.finish();
    }

    fn backend(&self, what: &'static str, message: String) -> StoreError {
        StoreError::Backend(Box::new(EtcdError::Request {
            endpoints: self.endpoints.clone(),
            what,
            message,
        }))
    }
}

impl EtcdStore {
    /// Connects to the cluster and checks that it answers; a cluster that does not is
    /// [`StoreError::Unreachable`], naming the endpoints.
    pub fn open(config: EtcdConfig) -> Result<Self, StoreError> {
        let endpoints = config.endpoints.join(",");
        let unreachable = |reason: String| StoreError::Unreachable {
            endpoints: endpoints.clone(),
            reason,
        };
        if config.endpoints.is_empty() {
            return Err(unreachable("no endpoints were given".into()));
        }
        let rt = Runtime::start().map_err(|e| unreachable(e.to_string()))?;
        let options = connect_options(&config, config.connect_timeout);
        let eps = config.endpoints.clone();
        let wait = config.connect_timeout;
        let (client, live) = rt
            .run(async move {
                // Each endpoint is asked apart, all at once, and the client is made over
                // those that answer: with one client over all of them, a member that is
                // down (a pool that lost a host) can take the first request and hold it
                // until the time is up. The others are added back as the pool's members
                // are followed ([`EtcdStore::use_endpoints`]).
                let mut asked = tokio::task::JoinSet::new();
                for ep in eps {
                    let o = options.clone();
                    asked.spawn(async move {
                        let answer = async {
                            let mut c = etcd::Client::connect([ep.as_str()], Some(o)).await?;
                            c.status().await.map(drop)
                        };
                        let r = match tokio::time::timeout(wait, answer).await {
                            Ok(Ok(())) => Ok(()),
                            Ok(Err(e)) => Err(message(&e)),
                            Err(_) => Err(format!("no answer within {wait:?}")),
                        };
                        (ep, r)
                    });
                }
                // Once one answered, the others get a moment more, not the whole wait.
                let mut live = Vec::new();
                let mut why = String::new();
                let mut until = tokio::time::Instant::now() + wait;
                while let Ok(Some(Ok((ep, r)))) =
                    tokio::time::timeout_at(until, asked.join_next()).await
                {
                    match r {
                        Ok(()) => {
                            if live.is_empty() {
                                until = until.min(tokio::time::Instant::now() + OPEN_GRACE);
                            }
                            live.push(ep)
                        }
                        Err(e) if why.is_empty() => why = e,
                        Err(_) => {}
                    }
                }
                asked.abort_all();
                if live.is_empty() && why.is_empty() {
                    why = format!("no answer within {wait:?}");
                }
                if live.is_empty() {
                    return Err(why);
                }
                let mut client = etcd::Client::connect(live.clone(), Some(options))
                    .await
                    .map_err(|e| message(&e))?;
                // The connection is made lazily: a first request shows it works.
                match tokio::time::timeout(wait, client.status()).await {
                    Ok(Ok(_)) => Ok((client, live)),
                    Ok(Err(e)) => Err(message(&e)),
                    Err(_) => Err(format!("no answer within {wait:?}")),
                }
            })?
            .map_err(unreachable)?;
        Ok(EtcdStore {
            used: Mutex::new(live.into_iter().collect()),
            probes: Mutex::new(HashMap::new()),
            config,
            endpoints,
            client,
            watchers: Mutex::new(Vec::new()),
            leases: Mutex::new(HashMap::new()),
            rt,
        })
    }

    /// The members of the etcd cluster, as etcd lists them.
    pub fn members(&self) -> Result<Vec<EtcdMember>, StoreError> {
        let r = self.call("list its members", true, |mut c| async move {
            c.member_list().await
        })?;
        Ok(r.members().iter().map(EtcdMember::of).collect())
    }

    /// Adds a member whose peers reach it at `peer_url` (a `learner`: one that follows the
    /// log without a vote until promoted); the new member, not started yet (no name).
    pub fn add_member(&self, peer_url: &str, learner: bool) -> Result<EtcdMember, StoreError> {
        let url = peer_url.to_string();
        let r = self.call("add a member", false, move |mut c| {
            let url = url.clone();
            async move {
                let mut options = etcd::MemberAddOptions::new();
                if learner {
                    options = options.with_is_learner();
                }
                c.member_add([url], Some(options)).await
            }
        })?;
        r.member()
            .map(EtcdMember::of)
            .ok_or_else(|| self.backend_text("add a member", "no member in its answer".into()))
    }

    /// Removes member `id` from the cluster.
    pub fn remove_member(&self, id: u64) -> Result<(), StoreError> {
        self.call("remove a member", false, move |mut c| async move {
            c.member_remove(id).await
        })
        .map(drop)
    }

    /// Makes learner `id` a voting member (etcd refuses while it has not caught up with
    /// the leader's log).
    pub fn promote_member(&self, id: u64) -> Result<(), StoreError> {
        self.call("promote a member", false, move |mut c| async move {
            c.member_promote(id).await
        })
        .map(drop)
    }

    /// Makes the client use `endpoints` (e.g. the client URLs of the cluster's voting
    /// members, which change as members are added, promoted and removed): adds those it
    /// does not use yet and drops those not among them, so that it keeps working when
    /// any one member is down. An empty list changes nothing.
    pub fn use_endpoints(&self, endpoints: &[String]) -> Result<(), StoreError> {
        if endpoints.is_empty() {
            return Ok(());
        }
        let mut used = self.used.lock().unwrap_or_else(|e| e.into_inner());
        let new: Vec<&String> = endpoints.iter().filter(|e| !used.contains(*e)).collect();
        for e in new {
            let (client, url) = (self.client.clone(), e.clone());
            self.rt
                .run(async move { client.add_endpoint(url).await })?
                .map_err(|err| self.backend("use a new endpoint", &err))?;
            used.insert(e.clone());
        }
        let gone: Vec<String> = used
            .iter()
            .filter(|u| !endpoints.contains(*u))
            .cloned()
            .collect();
        for e in gone {
            let (client, url) = (self.client.clone(), e.clone());
            self.rt
                .run(async move { client.remove_endpoint(url).await })?
                .map_err(|err| self.backend("stop using an endpoint", &err))?;
            used.remove(&e);
        }
        Ok(())
    }

    /// Whether a majority of the cluster is reachable from here, within `within`: each
    /// endpoint the client uses is asked apart (a client of its own, kept) for a
    /// linearizable read with etcd's "require a leader" flag. One member serving it proves
    /// a quorum (etcd serves such a read only after its leader confirmed it still leads
    /// a majority); the URL of the first that did. Else how each answered: the
    /// [`QuorumLost`] of a client on the minority side of a network split (or of a cluster
    /// that lost its majority, or is electing a leader for longer than `within`).
    pub fn probe_quorum(&self, within: Duration) -> Result<String, QuorumLost> {
        let endpoints: Vec<String> = self
            .used
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .cloned()
            .collect();
        let mut clients = Vec::with_capacity(endpoints.len());
        {
            let mut probes = self.probes.lock().unwrap_or_else(|e| e.into_inner());
            probes.retain(|url, _| endpoints.contains(url));
            for url in &endpoints {
                if let Some(c) = probes.get(url) {
                    clients.push((url.clone(), Some(c.clone())));
                    continue;
                }
                let options = connect_options(&self.config, within).with_require_leader(true);
                let u = url.clone();
                let made = self
                    .rt
                    .run(async move { etcd::Client::connect([u], Some(options)).await });
                match made {
                    Ok(Ok(c)) => {
                        probes.insert(url.clone(), c.clone());
                        clients.push((url.clone(), Some(c)));
                    }
                    _ => clients.push((url.clone(), None)),
                }
            }
        }
        let key = format!("{}{}/", self.config.prefix, Table::Meta.name()).into_bytes();
        let answers = self.rt.run(async move {
            let deadline = tokio::time::Instant::now() + within;
            let mut set = tokio::task::JoinSet::new();
            let mut answers = Vec::new();
            let mut tasks = HashMap::new();
            for (url, client) in clients {
                match client {
                    Some(c) => {
                        let key = key.clone();
                        let u = url.clone();
                        let task =
                            set.spawn(async move { (u, probe_member(c, key, deadline).await) });
                        tasks.insert(task.id(), url);
                    }
                    None => answers.push((url, MemberAnswer::NoAnswer)),
                }
            }
            while let Some(done) = set.join_next().await {
                match done {
                    Ok((url, Ok(()))) => return Ok(url),
                    Ok((url, Err(a))) => answers.push((url, a)),
                    Err(e) => {
                        if let Some(url) = tasks.remove(&e.id()) {
                            answers.push((
                                url,
                                MemberAnswer::Failed(format!("the probe failed: {e}")),
                            ));
                        }
                    }
                }
            }
            Err(answers)
        });
        match answers {
            Ok(Ok(url)) => Ok(url),
            Ok(Err(mut members)) => {
                members.sort_by(|a, b| a.0.cmp(&b.0));
                Err(QuorumLost { members })
            }
            Err(_) => Err(QuorumLost {
                members: endpoints
                    .into_iter()
                    .map(|u| {
                        (
                            u,
                            MemberAnswer::Failed("the etcd client's thread has stopped".into()),
                        )
                    })
                    .collect(),
            }),
        }
    }

    fn backend_text(&self, what: &'static str, message: String) -> StoreError {
        StoreError::Backend(Box::new(EtcdError::Request {
            endpoints: self.endpoints.clone(),
            what,
            message,
        }))
    }

    /// The configuration it was opened with.
    pub fn config(&self) -> &EtcdConfig {
        &self.config
    }

    /// Compacts etcd's history up to `revision`: watches from before it become
    /// [`StoreError::Compacted`]. (It compacts the whole etcd, every prefix.)
    pub fn compact(&self, revision: Revision) -> Result<(), StoreError> {
        self.call("compact its history", false, move |mut c| async move {
            let options = etcd::CompactionOptions::new().with_physical();
            c.compact(revision as i64, Some(options)).await
        })
        .map(drop)
    }

    fn full(&self, table: Table, key: &str) -> String {
        format!("{}{}/{key}", self.config.prefix, table.name())
    }

    fn backend(&self, what: &'static str, e: &etcd::Error) -> StoreError {
        StoreError::Backend(Box::new(EtcdError::Request {
            endpoints: self.endpoints.clone(),
            what,
            message: message(e),
        }))
    }

    fn lease_map(&self) -> MutexGuard<'_, HashMap<LeaseId, LeaseInfo>> {
        self.leases.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs one request made by `make` on the client's runtime, within the request
    /// timeout; a `read` is tried again while etcd is away.
    fn call<T, F, Fut>(&self, what: &'static str, read: bool, make: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: Fn(etcd::Client) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, etcd::Error>> + Send,
    {
        self.try_call(what, read, make)?
            .map_err(|e| self.backend(what, &e))
    }

    /// As [`EtcdStore::call`], handing etcd's own errors back for the caller to map.
    fn try_call<T, F, Fut>(
        &self,
        what: &'static str,
        read: bool,
        make: F,
    ) -> Result<Result<T, etcd::Error>, StoreError>
    where
        T: Send + 'static,
        F: Fn(etcd::Client) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, etcd::Error>> + Send,
    {
        let client = self.client.clone();
        let timeout = self.config.request_timeout;
        let answer = self.rt.run(async move {
            let deadline = tokio::time::Instant::now() + timeout;
            let mut pause = Duration::from_millis(50);
            loop {
                match tokio::time::timeout_at(deadline, make(client.clone())).await {
                    Err(_) => return None,
                    Ok(Err(e)) if (read && transient(&e)) || not_sent(&e) => {
                        if tokio::time::Instant::now() + pause >= deadline {
                            return Some(Err(e));
                        }
                        tokio::time::sleep(pause).await;
                        pause = (pause * 2).min(Duration::from_secs(1));
                    }
                    Ok(answer) => return Some(answer),
                }
            }
        })?;
        answer.ok_or_else(|| {
            StoreError::Backend(Box::new(EtcdError::Timeout {
                endpoints: self.endpoints.clone(),
                what,
                timeout,
            }))
        })
    }

    /// Waits until this store's watchers that see one of `changed` have queued the events
    /// of `revision` (up to the request timeout).
    fn settle(&self, changed: &[(Table, String)], revision: Revision) {
        if changed.is_empty() {
            return;
        }
        let waiting: Vec<Arc<Progress>> = {
            let mut watchers = self.watchers.lock().unwrap_or_else(|e| e.into_inner());
            watchers.retain(|p| !p.done());
            watchers
                .iter()
                .filter(|p| changed.iter().any(|(t, k)| p.wants(*t, k)))
                .cloned()
                .collect()
        };
        let deadline = Instant::now() + self.config.request_timeout;
        for p in waiting {
            p.wait_for(revision, deadline);
        }
    }

    /// Pier's table and key of an etcd key, if it is under this store's prefix.
    fn split(&self, full: &[u8]) -> Option<(Table, String)> {
        let rest = std::str::from_utf8(full.strip_prefix(self.config.prefix.as_bytes())?).ok()?;
        let (table, key) = rest.split_once('/')?;
        Some((Table::from_name(table)?, key.to_string()))
    }

    /// Which of the leases named by `ops` does not exist (for a transaction etcd refused
    /// for a missing lease).
    fn missing_lease(&self, ops: &[Op]) -> Option<LeaseId> {
        let leases: BTreeSet<LeaseId> = ops
            .iter()
            .filter_map(|op| match op {
                Op::PutLeased { lease, .. } => Some(*lease),
                _ => None,
            })
            .collect();
        let first = leases.iter().next().copied();
        leases
            .into_iter()
            .find(|l| matches!(self.lease_ttl(*l, false), Ok(None)))
            .or(first)
    }

    /// The lease's remaining time to live and (if asked) its keys, or None if it is gone;
    /// with the revision read at.
    #[allow(clippy::type_complexity)]
    fn lease_ttl(
        &self,
        lease: LeaseId,
        keys: bool,
    ) -> Result<Option<(Revision, Vec<(Table, String)>)>, StoreError> {
        let resp = self.call("read a lease", true, move |mut c| async move {
            let options = keys.then(|| etcd::LeaseTimeToLiveOptions::new().with_keys());
            c.lease_time_to_live(lease.0 as i64, options).await
        })?;
        if resp.ttl() < 0 {
            return Ok(None);
        }
        let keys = resp.keys().iter().filter_map(|k| self.split(k)).collect();
        Ok(Some((header_revision(resp.header()), keys)))
    }

    /// The revision at which `key`, alive at `after`, was deleted (found in etcd's
    /// history), for [`Store::expire_leases`] to wait for the watchers.
    fn deleted_at(&self, table: Table, key: &str, after: Revision) -> Option<Revision> {
        let full = self.full(table, key).into_bytes();
        // etcd replays the history at once; a key deleted elsewhere, before `after`, has
        // nothing to find, so this does not wait long.
        let wait = self.config.request_timeout.min(Duration::from_secs(2));
        let found = self.try_call("read a key's history", true, move |c| {
            let full = full.clone();
            let find = async move {
                let mut stream =
                    open_watch(c, full.clone(), after + 1)
                        .await
                        .map_err(|e| match e {
                            WatchStart::Failed(e) => e,
                            WatchStart::Compacted(_) => etcd::Error::WatchError("compacted".into()),
                        })?;
                while let Some(resp) = stream.message().await? {
                    if let Some(ev) = resp.events().iter().find(|ev| {
                        ev.event_type() == etcd::EventType::Delete
                            && ev.kv().is_some_and(|kv| kv.key() == full.as_slice())
                    }) {
                        return Ok(ev.kv().map(|kv| kv.mod_revision() as Revision));
                    }
                }
                Ok(None)
            };
            async move { tokio::time::timeout(wait, find).await.unwrap_or(Ok(None)) }
        });
        found.ok()?.ok()?
    }
}

impl Store for EtcdStore {
    fn get_kv(&self, table: Table, key: &str) -> Result<Option<KeyValue>, StoreError> {
        let full = self.full(table, key);
        let resp = self.call("read a key", true, move |mut c| {
            let full = full.clone();
            async move { c.get(full, None).await }
        })?;
        Ok(resp.kvs().first().map(kv_of))
    }

    fn range(&self, table: Table, prefix: &str) -> Result<Listing, StoreError> {
        let table_prefix = self.full(table, "");
        let full = self.full(table, prefix);
        let resp = self.call("read a range", true, move |c| {
            let full = full.clone();
            async move {
                let options = etcd::GetOptions::new().with_prefix();
                c.kv_client()
                    .max_decoding_message_size(usize::MAX)
                    .get(full, Some(options))
                    .await
            }
        })?;
        let mut kvs = Vec::with_capacity(resp.kvs().len());
        for kv in resp.kvs() {
            let key = kv
                .key()
                .strip_prefix(table_prefix.as_bytes())
                .and_then(|k| std::str::from_utf8(k).ok())
                .ok_or_else(|| {
                    StoreError::Backend(Box::new(EtcdError::ForeignKey {
                        endpoints: self.endpoints.clone(),
                        prefix: self.config.prefix.clone(),
                        key: String::from_utf8_lossy(kv.key()).into_owned(),
                    }))
                })?;
            kvs.push((key.to_string(), kv_of(kv)));
        }
        Ok(Listing {
            revision: header_revision(resp.header()),
            kvs,
        })
    }

    fn revision(&self) -> Result<Revision, StoreError> {
        let full = self.full(Table::Meta, "");
        let resp = self.call("read its revision", true, move |mut c| {
            let full = full.clone();
            async move {
                let options = etcd::GetOptions::new().with_count_only();
                c.get(full, Some(options)).await
            }
        })?;
        Ok(header_revision(resp.header()))
    }

    fn txn(&self, txn: Txn, _durable: bool) -> Result<Revision, StoreError> {
        let ops = collapse(txn.ops);
        let mut compares = Vec::new();
        let mut reads = Vec::new();
        for c in &txn.compares {
            let key = self.full(c.table, &c.key);
            match c.expect {
                Expect::Absent => compares.push(etcd::Compare::create_revision(
                    key.clone(),
                    etcd::CompareOp::Equal,
                    0,
                )),
                Expect::Present => compares.push(etcd::Compare::create_revision(
                    key.clone(),
                    etcd::CompareOp::Greater,
                    0,
                )),
                Expect::ModRevision(r) => {
                    // etcd reads an absent key's mod revision as 0; the contract needs it present.
                    compares.push(etcd::Compare::create_revision(
                        key.clone(),
                        etcd::CompareOp::Greater,
                        0,
                    ));
                    compares.push(etcd::Compare::mod_revision(
                        key.clone(),
                        etcd::CompareOp::Equal,
                        r as i64,
                    ));
                }
            }
            reads.push(etcd::TxnOp::get(key, None));
        }
        let writes: Vec<etcd::TxnOp> = ops
            .iter()
            .map(|op| match op {
                Op::Put { table, key, value } => {
                    etcd::TxnOp::put(self.full(*table, key), value.clone(), None)
                }
                Op::PutLeased {
                    table,
                    key,
                    value,
                    lease,
                } => etcd::TxnOp::put(
                    self.full(*table, key),
                    value.clone(),
                    Some(etcd::PutOptions::new().with_lease(lease.0 as i64)),
                ),
                Op::Delete { table, key } => etcd::TxnOp::delete(self.full(*table, key), None),
            })
            .collect();
        let request = etcd::Txn::new()
            .when(compares)
            .and_then(writes)
            .or_else(reads);
        let resp = match self.try_call("commit a transaction", false, move |mut c| {
            let request = request.clone();
            async move { c.txn(request).await }
        })? {
            Ok(resp) => resp,
            Err(e) if lease_missing(&e) => {
                return Err(match self.missing_lease(&ops) {
                    Some(lease) => StoreError::LeaseNotFound { lease },
                    None => self.backend("commit a transaction", &e),
                })
            }
            Err(e) if message(&e).contains("too many operations") => {
                return Err(StoreError::Backend(Box::new(EtcdError::TooLarge {
                    endpoints: self.endpoints.clone(),
                    ops: ops.len(),
                    message: message(&e),
                })))
            }
            Err(e) => return Err(self.backend("commit a transaction", &e)),
        };
        let answers = resp.op_responses();
        if !resp.succeeded() {
            // The else branch read every compared key, in the same transaction.
            for (c, answer) in txn.compares.iter().zip(&answers) {
                let found = match answer {
                    etcd::TxnOpResponse::Get(get) => {
                        get.kvs().first().map(|kv| kv.mod_revision() as Revision)
                    }
                    _ => None,
                };
                c.check(found)?;
            }
            return Err(StoreError::Backend(Box::new(EtcdError::Request {
                endpoints: self.endpoints.clone(),
                what: "commit a transaction",
                message: "a compare failed, but every key read as expected".into(),
            })));
        }
        let revision = header_revision(resp.header());
        let mut changed = Vec::new();
        {
            let mut leases = self.lease_map();
            for (op, answer) in ops.iter().zip(&answers) {
                let (table, key, lease) = match op {
                    Op::Put { table, key, .. } => (*table, key, None),
                    Op::PutLeased {
                        table, key, lease, ..
                    } => (*table, key, Some(*lease)),
                    Op::Delete { table, key } => {
                        if matches!(answer, etcd::TxnOpResponse::Delete(d) if d.deleted() == 0) {
                            continue;
                        }
                        (*table, key, None)
                    }
                };
                let id = (table, key.clone());
                for info in leases.values_mut() {
                    info.keys.remove(&id);
                }
                if let Some(info) = lease.and_then(|l| leases.get_mut(&l)) {
                    info.keys.insert(id.clone());
                    info.alive_at = info.alive_at.max(revision);
                }
                changed.push(id);
            }
        }
        self.settle(&changed, revision);
        Ok(revision)
    }

    fn watch(&self, table: Table, prefix: &str, from: Revision) -> Result<Watcher, StoreError> {
        let current = self.revision()?;
        let start = if from == 0 { current + 1 } else { from };
        let target = Target {
            key: self.full(table, prefix).into_bytes(),
            table,
            strip: self.full(table, "").len(),
        };
        let (tx, watcher) = feed();
        let mut next = start;
        // A start in the past: queue the history up to now before returning, as the
        // embedded backends do. (A fresh etcd's revision 1 has no event.)
        if start <= current && current > 1 {
            let (target, tx) = (target.clone(), tx.clone());
            let (client, wait) = (self.client.clone(), self.config.request_timeout);
            let replayed = self
                .rt
                .run(async move { replay(client, target, tx, start, current, wait).await })?;
            match replayed {
                Ok(n) => next = n,
                Err(ReplayEnd::Stopped) => return Ok(watcher),
                Err(ReplayEnd::Compacted(c)) => {
                    return Err(StoreError::Compacted {
                        requested: start,
                        compacted: c - 1,
                    })
                }
                Err(ReplayEnd::Failed(e)) => return Err(self.backend("start a watch", &e)),
            }
        }
        // Opening a watch changes nothing: tried again while etcd (or the endpoint the
        // client picked) is away, as a read.
        let opened = self.try_call("start a watch", true, {
            let key = target.key.clone();
            move |c| {
                let key = key.clone();
                async move {
                    match open_watch(c, key, next).await {
                        Ok(stream) => Ok(Ok(stream)),
                        Err(WatchStart::Compacted(c)) => Ok(Err(c)),
                        Err(WatchStart::Failed(e)) => Err(e),
                    }
                }
            }
        })?;
        let stream = match opened {
            Ok(Ok(stream)) => stream,
            Ok(Err(compacted)) => {
                return Err(StoreError::Compacted {
                    requested: start,
                    compacted: compacted - 1,
                })
            }
            Err(e) => return Err(self.backend("start a watch", &e)),
        };
        let progress = Arc::new(Progress {
            table,
            prefix: prefix.to_string(),
            state: Mutex::new((next - 1, false)),
            cv: Condvar::new(),
        });
        self.watchers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(progress.clone());
        let task = WatchTask {
            client: self.client.clone(),
            target,
            progress,
            tx,
            endpoints: self.endpoints.clone(),
        };
        self.rt.handle.spawn(task.run(stream, next));
        Ok(watcher)
    }

    fn grant(&self, ttl: Duration) -> Result<LeaseId, StoreError> {
        let secs = ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0);
        let resp = self.call("grant a lease", false, move |mut c| async move {
            c.lease_grant(secs.max(1) as i64, None).await
        })?;
        let lease = LeaseId(resp.id() as u64);
        let info = LeaseInfo {
            keys: BTreeSet::new(),
            alive_at: header_revision(resp.header()),
            keeper: None,
        };
        self.lease_map().insert(lease, info);
        Ok(lease)
    }

    fn keep_alive(&self, lease: LeaseId) -> Result<Duration, StoreError> {
        // The lease's keep-alive stream, reused from the last call (a write: made once).
        let keeper = self
            .lease_map()
            .get_mut(&lease)
            .and_then(|info| info.keeper.take());
        let keeper = Arc::new(Mutex::new(keeper));
        let answer = self.try_call("keep a lease alive", false, move |mut c| {
            let keeper = keeper.clone();
            async move {
                let taken = keeper.lock().ok().and_then(|mut k| k.take());
                let (mut keeper, mut stream) = match taken {
                    Some(pair) => pair,
                    None => c.lease_keep_alive(lease.0 as i64).await?,
                };
                keeper.keep_alive().await?;
                match stream.message().await? {
                    Some(resp) => Ok((resp.ttl(), (keeper, stream))),
                    None => Err(etcd::Error::LeaseKeepAliveError(
                        "the keep-alive stream ended".into(),
                    )),
                }
            }
        })?;
        let (ttl, pair) = match answer {
            Ok(answer) => answer,
            Err(e) if lease_missing(&e) => return Err(StoreError::LeaseNotFound { lease }),
            Err(e) => return Err(self.backend("keep a lease alive", &e)),
        };
        if ttl <= 0 {
            return Err(StoreError::LeaseNotFound { lease });
        }
        let mut leases = self.lease_map();
        let info = leases.entry(lease).or_insert_with(|| LeaseInfo {
            keys: BTreeSet::new(),
            alive_at: 0,
            keeper: None,
        });
        info.keeper = Some(pair);
        Ok(Duration::from_secs(ttl as u64))
    }

    fn revoke(&self, lease: LeaseId) -> Result<Revision, StoreError> {
        let Some((_, keys)) = self.lease_ttl(lease, true)? else {
            self.lease_map().remove(&lease);
            return Err(StoreError::LeaseNotFound { lease });
        };
        let resp = match self.try_call("revoke a lease", false, move |mut c| async move {
            c.lease_revoke(lease.0 as i64).await
        })? {
            Ok(resp) => resp,
            Err(e) if lease_missing(&e) => {
                self.lease_map().remove(&lease);
                return Err(StoreError::LeaseNotFound { lease });
            }
            Err(e) => return Err(self.backend("revoke a lease", &e)),
        };
        self.lease_map().remove(&lease);
        let revision = header_revision(resp.header());
        self.settle(&keys, revision);
        Ok(revision)
    }

    fn expire_leases(&self) -> Result<Vec<LeaseId>, StoreError> {
        let mine: Vec<LeaseId> = self.lease_map().keys().copied().collect();
        let mut ended = Vec::new();
        for lease in mine {
            match self.lease_ttl(lease, true)? {
                Some((revision, keys)) => {
                    if let Some(info) = self.lease_map().get_mut(&lease) {
                        // etcd's list, at a revision after every attachment made so far.
                        info.keys = keys.into_iter().collect();
                        info.alive_at = info.alive_at.max(revision);
                    }
                }
                None => {
                    let Some(info) = self.lease_map().remove(&lease) else {
                        continue;
                    };
                    ended.push(lease);
                    // etcd deleted the keys in one revision: find it, and wait for the
                    // watchers to have it.
                    let keys: Vec<(Table, String)> = info.keys.into_iter().collect();
                    for (table, key) in &keys {
                        // A key still there was detached from the lease (by another client).
                        if self.get_kv(*table, key)?.is_some() {
                            continue;
                        }
                        if let Some(revision) = self.deleted_at(*table, key, info.alive_at) {
                            self.settle(&keys, revision);
                        }
                        break;
                    }
                }
            }
        }
        ended.sort();
        Ok(ended)
    }
}

#[cfg(test)]
mod tests;
