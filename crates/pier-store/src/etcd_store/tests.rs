//! The etcd backend against a real `etcd` (Debian's `etcd-server`), started by each test
//! on free localhost ports with a data directory of its own, and stopped (the directory
//! removed) when the test ends. A machine without etcd fails these tests, saying what to
//! install: they never skip.

use std::fs::File;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::conformance::{self, Env, Fixture};
use crate::*;

/// The etcd binary: `$PIER_ETCD`, else `etcd` on the PATH.
fn etcd_binary() -> PathBuf {
    std::env::var_os("PIER_ETCD").map_or_else(|| PathBuf::from("etcd"), PathBuf::from)
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("no free localhost port")
        .port()
}

/// One etcd member of its own.
struct TestEtcd {
    dir: TempDir,
    client_port: u16,
    peer_port: u16,
    child: Option<Child>,
}

impl TestEtcd {
    fn start() -> TestEtcd {
        let mut etcd = TestEtcd {
            dir: tempfile::tempdir().expect("a temporary directory"),
            client_port: free_port(),
            peer_port: free_port(),
            child: None,
        };
        etcd.spawn();
        etcd
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("etcd.log")).unwrap_or_default()
    }

    /// Starts etcd on the data directory (again, after [`TestEtcd::kill`]) and waits until
    /// it answers.
    fn spawn(&mut self) {
        let client = self.endpoint();
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let log = File::options()
            .create(true)
            .append(true)
            .open(self.dir.path().join("etcd.log"))
            .expect("the etcd log file");
        let binary = etcd_binary();
        let child = Command::new(&binary)
            .arg("--name=pier-test")
            .arg(format!(
                "--data-dir={}",
                self.dir.path().join("data").display()
            ))
            .arg(format!("--listen-client-urls={client}"))
            .arg(format!("--advertise-client-urls={client}"))
            .arg(format!("--listen-peer-urls={peer}"))
            .arg(format!("--initial-advertise-peer-urls={peer}"))
            .arg(format!("--initial-cluster=pier-test={peer}"))
            // Room for the suite's batches of WATCH_BUFFER puts.
            .arg(format!("--max-txn-ops={}", 2 * WATCH_BUFFER))
            .arg("--max-request-bytes=10485760")
            // A one-member cluster elects itself sooner.
            .arg("--heartbeat-interval=50")
            .arg("--election-timeout=500")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("the etcd log file"))
            .stderr(log)
            .spawn();
        let child = match child {
            Ok(child) => child,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
                "{} is not installed: these tests need etcd; install Debian's etcd-server \
                 (apt-get install etcd-server; scripts/test.sh does) or set PIER_ETCD to an etcd binary",
                binary.display()
            ),
            Err(e) => panic!("cannot start {}: {e}", binary.display()),
        };
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match EtcdStore::open(self.config("probe/")) {
                Ok(store) if store.revision().is_ok() => return,
                _ if Instant::now() > deadline => {
                    panic!("etcd did not answer within 20 s; its log:\n{}", self.log())
                }
                _ => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }

    fn config(&self, prefix: &str) -> EtcdConfig {
        let mut config = EtcdConfig::new(vec![self.endpoint()], prefix);
        config.connect_timeout = Duration::from_secs(1);
        config.request_timeout = Duration::from_secs(10);
        config
    }

    fn store(&self, prefix: &str) -> EtcdStore {
        EtcdStore::open(self.config(prefix)).expect("open the etcd store")
    }

    /// Kills etcd at once (SIGKILL), as a crash would.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for TestEtcd {
    fn drop(&mut self) {
        self.kill();
    }
}

/// etcd's lease time is real: the checks sleep, with leases short enough to keep the
/// suite quick and long enough for etcd's minimum and its expiry tick (every 500 ms).
struct EtcdEnv {
    store: Arc<EtcdStore>,
}

impl Env for EtcdEnv {
    fn lease_ttl(&self) -> Duration {
        Duration::from_secs(4)
    }
    fn advance(&self, by: Duration) {
        std::thread::sleep(by);
    }
    fn expiry_slack(&self) -> Duration {
        Duration::from_millis(1500)
    }
    fn compact(&self, upto: Revision) {
        self.store.compact(upto).expect("compact etcd");
    }
}

#[test]
fn conformance() {
    // Each check on an etcd of its own: the checks count revisions, and a lease left by
    // one check would expire (a revision) in the next.
    conformance::run_with(&|| {
        let etcd = TestEtcd::start();
        let store = Arc::new(etcd.store("pier/"));
        Fixture {
            store: store.clone(),
            env: Box::new(EtcdEnv { store }),
            keep: Box::new(etcd),
        }
    });
}

fn put(table: Table, key: &str, value: &str) -> Op {
    Op::Put {
        table,
        key: key.into(),
        value: value.into(),
    }
}

fn value(store: &dyn Store, table: Table, key: &str) -> Option<String> {
    let v = store.get(table, key).unwrap()?;
    Some(String::from_utf8(v).unwrap())
}

/// The next event on `w`, waiting up to `wait`.
fn next_event(w: &mut Watcher, wait: Duration) -> Option<Result<Event, StoreError>> {
    let deadline = Instant::now() + wait;
    loop {
        if let Some(e) = w.try_next() {
            return Some(e);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn prefixes_keep_stores_apart() {
    let etcd = TestEtcd::start();
    let a = etcd.store("pool-a/");
    let b = etcd.store("pool-b/");
    let mut wb = b.watch(Table::Images, "", 0).unwrap();
    a.commit(vec![put(Table::Images, "p/x", "a")]).unwrap();
    assert_eq!(value(&a, Table::Images, "p/x").as_deref(), Some("a"));
    assert_eq!(value(&b, Table::Images, "p/x"), None);
    assert!(b.list(Table::Images, "").unwrap().is_empty());
    let rb = b.txn(
        Txn {
            compares: vec![Compare {
                table: Table::Images,
                key: "p/x".into(),
                expect: Expect::Absent,
            }],
            ops: vec![put(Table::Images, "p/x", "b")],
        },
        true,
    );
    let rb = rb.unwrap();
    // One revision counter for the whole etcd.
    assert!(
        rb > a
            .get_kv(Table::Images, "p/x")
            .unwrap()
            .unwrap()
            .mod_revision
    );
    let e = next_event(&mut wb, Duration::from_secs(5))
        .unwrap()
        .unwrap();
    assert_eq!((e.key(), e.revision()), ("p/x", rb));
    assert!(wb.try_next().is_none(), "pool-b saw pool-a's change");
    assert_eq!(value(&a, Table::Images, "p/x").as_deref(), Some("a"));
}

#[test]
fn a_key_named_twice_in_a_txn_ends_as_its_last_op() {
    let etcd = TestEtcd::start();
    let store = etcd.store("pier/");
    let t = Table::Volumes;
    store.commit(vec![put(t, "p/gone", "old")]).unwrap();
    let r = store
        .txn(
            Txn {
                compares: vec![],
                ops: vec![
                    put(t, "p/a", "1"),
                    put(t, "p/gone", "new"),
                    put(t, "p/a", "2"),
                    Op::Delete {
                        table: t,
                        key: "p/gone".into(),
                    },
                    put(t, "p/b", "b"),
                ],
            },
            true,
        )
        .unwrap();
    assert_eq!(value(&store, t, "p/a").as_deref(), Some("2"));
    assert_eq!(value(&store, t, "p/gone"), None);
    assert_eq!(value(&store, t, "p/b").as_deref(), Some("b"));
    assert_eq!(store.get_kv(t, "p/a").unwrap().unwrap().mod_revision, r);
}

#[test]
fn the_sync_api_works_inside_a_tokio_runtime() {
    let etcd = TestEtcd::start();
    let store = Arc::new(etcd.store("pier/"));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let inner = store.clone();
    // On the caller's (single) runtime thread: the store must not need it to make progress.
    let got = rt.block_on(async move {
        inner.commit(vec![put(Table::Tags, "p/t", "v")]).unwrap();
        let mut w = inner.watch(Table::Tags, "p/", 0).unwrap();
        inner.commit(vec![put(Table::Tags, "p/u", "w")]).unwrap();
        let e = w.recv().await.unwrap().unwrap();
        (
            value(inner.as_ref(), Table::Tags, "p/t"),
            e.key().to_string(),
        )
    });
    assert_eq!(got, (Some("v".to_string()), "p/u".to_string()));
}

#[test]
fn survives_an_etcd_restart() {
    let mut etcd = TestEtcd::start();
    let store = etcd.store("pier/");
    let t = Table::Containers;
    store
        .commit(vec![put(t, "p/a", "1"), put(t, "p/b", "2")])
        .unwrap();
    let before = store.revision().unwrap();
    let mut w = store.watch(t, "p/", before + 1).unwrap();

    etcd.kill();
    // While etcd is away a write fails, saying where etcd was and what to do.
    let err = store.commit(vec![put(t, "p/c", "3")]).unwrap_err();
    let text = format!("{err} {}", std::error::Error::source(&err).unwrap());
    assert!(text.contains(&etcd.endpoint()), "{text}");
    assert!(text.contains("check that etcd runs"), "{text}");

    etcd.spawn();
    // The same client reconnects; the keys and the revision are there.
    assert_eq!(store.revision().unwrap(), before);
    assert_eq!(value(&store, t, "p/a").as_deref(), Some("1"));
    assert_eq!(value(&store, t, "p/b").as_deref(), Some("2"));
    let r = store.txn(
        Txn {
            compares: vec![],
            ops: vec![put(t, "p/c", "3")],
        },
        true,
    );
    let r = r.unwrap();
    assert_eq!(r, before + 1);
    // The watch made before the restart resumes and sees the change after it.
    let e = next_event(&mut w, Duration::from_secs(10))
        .expect("the watcher got nothing after the restart")
        .unwrap();
    assert_eq!((e.key(), e.revision()), ("p/c", r));
}

#[test]
fn an_unreachable_etcd_fails_fast_at_open() {
    // A port nothing listens on.
    let endpoint = format!("http://127.0.0.1:{}", free_port());
    let mut config = EtcdConfig::new(vec![endpoint.clone()], "pier/");
    config.connect_timeout = Duration::from_secs(1);
    let started = Instant::now();
    let err = EtcdStore::open(config).unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert!(matches!(err, StoreError::Unreachable { .. }), "{err:?}");
    let text = err.to_string();
    assert!(text.contains(&endpoint), "{text}");
    assert!(text.contains("apt-get install etcd-server"), "{text}");
}

/// A pool that lost a host gives its joiners every endpoint, the dead one first: the
/// store opens through the member that answers, whichever the balancer tries first.
#[test]
fn one_endpoint_down_among_several_still_opens() {
    let etcd = TestEtcd::start();
    // A member whose host is there but whose etcd is not: connections are taken (the
    // kernel's backlog) and never answered.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let silent = format!("http://{}", silent.local_addr().unwrap());
    for i in 0..6 {
        let dead = match i % 2 {
            0 => format!("http://127.0.0.1:{}", free_port()),
            _ => silent.clone(),
        };
        let mut config = EtcdConfig::new(vec![dead, etcd.endpoint()], "pier/");
        config.connect_timeout = Duration::from_secs(2);
        let store = EtcdStore::open(config).unwrap_or_else(|e| panic!("{e}\n{}", etcd.log()));
        store
            .commit(vec![put(Table::Meta, "k", "v")])
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(value(&store, Table::Meta, "k").as_deref(), Some("v"));
    }
}

/// The cluster API: a learner added (not started: no name, no client URL), listed, then
/// removed; a promotion of a learner that never started is refused; the client takes
/// new endpoints and drops those no longer given, and works through what is left.
#[test]
fn members_are_added_listed_promoted_and_removed() {
    let etcd = TestEtcd::start();
    let s = etcd.store("members/");
    let first = s.members().unwrap();
    assert_eq!(first.len(), 1, "{first:?}");
    assert!(!first[0].learner && !first[0].name.is_empty());
    assert_eq!(first[0].client_urls, [etcd.endpoint()]);
    let peer = format!("http://127.0.0.1:{}", free_port());
    let added = s.add_member(&peer, true).unwrap();
    assert!(added.learner && added.name.is_empty(), "{added:?}");
    assert_eq!(added.peer_urls, [peer]);
    let now = s.members().unwrap();
    assert_eq!(now.len(), 2);
    assert!(now.contains(&added), "{now:?}");
    // Never started, so never caught up: etcd refuses its vote.
    assert!(s.promote_member(added.id).is_err());
    s.remove_member(added.id).unwrap();
    assert_eq!(s.members().unwrap(), first);
    // Another endpoint (nothing listens there) taken, then dropped: the store works on.
    let dead = format!("http://127.0.0.1:{}", free_port());
    s.use_endpoints(&[etcd.endpoint(), dead]).unwrap();
    s.commit(vec![put(Table::Images, "a", "1")]).unwrap();
    s.use_endpoints(&[etcd.endpoint()]).unwrap();
    s.commit(vec![put(Table::Images, "b", "2")]).unwrap();
    assert_eq!(value(&s, Table::Images, "a").as_deref(), Some("1"));
    assert_eq!(value(&s, Table::Images, "b").as_deref(), Some("2"));
}

/// The quorum probe: a live member serves its read even beside an endpoint nothing
/// listens on; with etcd gone, every member is named, without an answer, within the time
/// given (not the request timeout).
#[test]
fn the_quorum_probe_names_the_members_that_do_not_answer() {
    let mut etcd = TestEtcd::start();
    let s = etcd.store("quorum/");
    let dead = format!("http://127.0.0.1:{}", free_port());
    s.use_endpoints(&[etcd.endpoint(), dead.clone()]).unwrap();
    let within = Duration::from_secs(2);
    assert_eq!(s.probe_quorum(within), Ok(etcd.endpoint()));
    etcd.kill();
    let started = Instant::now();
    let lost = s.probe_quorum(within).unwrap_err();
    let took = started.elapsed();
    assert!(
        took >= within && took < within + Duration::from_secs(2),
        "{took:?}"
    );
    let mut want = vec![
        (etcd.endpoint(), MemberAnswer::NoAnswer),
        (dead, MemberAnswer::NoAnswer),
    ];
    want.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(lost.members, want);
    assert!(lost.to_string().contains("no answer"), "{lost}");
    // Back: the same store's probe sees it again.
    etcd.spawn();
    assert_eq!(s.probe_quorum(within), Ok(etcd.endpoint()));
}
