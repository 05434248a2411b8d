//! Writes instance records of simulated hosts into a pool's store, for the listing
//! benchmark (`bench/list.py`, see bench/README.md): a pool of one real host whose
//! `pier ps` shows a hundred thousand instances of others.
//!
//! It reads the member kept on `--root` (the daemon's state directory: `cluster/member.json`
//! and its certificate), opens the pool's etcd with that certificate, as the daemon does,
//! and writes `--instances` records (`instances/PROJECT/ID`, [`InstanceRecord`] as the
//! mirror writes them) of `--hosts` hosts named `sim-hNNN`, `--writers` transactions at a
//! time. The records are made from their index alone, so a run writes the same ones:
//!
//! - ID: 64 hex digits (a SHA-256 of the index); name `sim-hHHH-NNNNNN`;
//! - state: of every 20, 16 `running`, 3 `exited` (codes 0, 1, 137) and 1 `created`;
//! - labels `app=appA` (50 apps), `shard=sS` (`--shards`, 10,000: each value names
//!   `--instances / --shards` records) and a `com.example.version`; every tenth running
//!   one publishes a port;
//! - created over the 30 days before the run, started a minute later.
//!
//! No host records are written for the simulated hosts: a listing reads the instance
//! records alone, and hosts without a heartbeat would show `down` and set the pool's
//! failover to work beside the benchmark. (So the writes go straight to the store, not
//! through [`pier_cluster::instances::put`], which requires the writer's host record.)
//! With `--delete` it deletes the records of the simulated hosts instead.
//!
//! It prints one JSON line: what it wrote (counts by state, the running ones, the shard
//! count) and how long it took, then, with `--time-list N`, the time of N reads of every
//! record the way a member's listing reads them ([`instances::list`]: a `range` and the
//! JSON decoding of each record).
//!
//! `cargo run --release -p pier-cluster --example pool-records -- --root ROOT
//! [--instances 100000] [--hosts 100] [--project default] [--shards 10000] [--writers 4]
//! [--time-list 0] [--delete]`

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use pier_cluster::instances::{self, InstanceRecord, RecordPort};
use pier_store::{EtcdConfig, EtcdStore, EtcdTls, Op, Store};
use sha2::{Digest, Sha256};

/// Ops per transaction (etcd refuses more than 128 by default).
const BATCH: usize = 100;
/// Apps for the `app` label.
const APPS: usize = 50;
/// The spread of the records' creation times.
const DAYS: i64 = 30;

struct Args {
    root: PathBuf,
    instances: usize,
    hosts: usize,
    project: String,
    shards: usize,
    writers: usize,
    time_list: usize,
    delete: bool,
}

fn usage(why: &str) -> ! {
    eprintln!(
        "pool-records: {why}\nusage: pool-records --root ROOT [--instances N] [--hosts N] \
         [--project NAME] [--shards N] [--writers N] [--time-list N] [--delete]"
    );
    std::process::exit(2)
}

fn args() -> Args {
    let mut a = Args {
        root: PathBuf::new(),
        instances: 100_000,
        hosts: 100,
        project: "default".into(),
        shards: 10_000,
        writers: 4,
        time_list: 0,
        delete: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "--delete" {
            a.delete = true;
            continue;
        }
        let value = it
            .next()
            .unwrap_or_else(|| usage(&format!("{flag} needs a value")));
        let num = || -> usize {
            value
                .parse()
                .unwrap_or_else(|_| usage(&format!("{flag}: {value:?} is not a number")))
        };
        match flag.as_str() {
            "--root" => a.root = PathBuf::from(&value),
            "--instances" => a.instances = num(),
            "--hosts" => a.hosts = num().max(1),
            "--project" => a.project.clone_from(&value),
            "--shards" => a.shards = num().max(1),
            "--writers" => a.writers = num().max(1),
            "--time-list" => a.time_list = num(),
            _ => usage(&format!("unknown flag {flag}")),
        }
    }
    if a.root.as_os_str().is_empty() {
        usage("--root is required (the pool member's state directory)");
    }
    if a.project.is_empty() || a.project.contains('/') {
        usage("--project must be one non-empty path segment");
    }
    a
}

/// The simulated host of record `i`.
fn host_of(i: usize, hosts: usize) -> String {
    format!("sim-h{:03}", i % hosts)
}

/// Record `i` of `a`'s set; see the module doc. `now` is the run's time (Unix seconds).
fn record(a: &Args, i: usize, now: i64) -> InstanceRecord {
    let id = hex(&Sha256::digest(
        format!("pier-bench-instance-{i}").as_bytes(),
    ));
    let app = i % APPS;
    let created = now - (i as i64 * 7919) % (DAYS * 86_400) - 120;
    let started = created + 60;
    let (state, exit_code) = match i % 20 {
        0..=15 => ("running", None),
        16 => ("exited", Some(0)),
        17 => ("exited", Some(1)),
        18 => ("exited", Some(137)),
        _ => ("created", None),
    };
    let ran = state != "created";
    let finished = (state == "exited").then(|| started + (i as i64 % 3600) + 1);
    let ports = if state == "running" && i.is_multiple_of(10) {
        vec![RecordPort {
            proto: "tcp".into(),
            host_ip: String::new(),
            host_port: 20_000 + (i % 10_000) as u16,
            container_port: 8080,
        }]
    } else {
        Vec::new()
    };
    let labels: BTreeMap<String, String> = [
        ("app".to_string(), format!("app{app}")),
        ("shard".to_string(), format!("s{}", i % a.shards)),
        (
            "com.example.version".to_string(),
            format!("1.{}.0", app % 7),
        ),
    ]
    .into();
    InstanceRecord {
        project: a.project.clone(),
        id,
        name: format!("sim-h{:03}-{i:06}", i % a.hosts),
        host: host_of(i, a.hosts),
        kind: "container".into(),
        image: format!("registry.example.com/team/app{app}:1.{}", app % 7),
        command: format!("/usr/local/bin/app{app} --config /etc/app/config.toml serve"),
        state: state.into(),
        status: String::new(),
        created: rfc3339(created),
        started_at: ran.then(|| rfc3339(started)),
        finished_at: finished.map(rfc3339),
        exit_code,
        ports,
        labels,
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn rfc3339(t: i64) -> String {
    pier_api::time::format_rfc3339(t)
}

fn open(a: &Args) -> Arc<EtcdStore> {
    let (member, creds) = match pier_cluster::local::load(&a.root) {
        Ok(Some(m)) => m,
        Ok(None) => usage(&format!(
            "{} is not a pool member's state directory (no cluster/member.json): run `pier cluster init` on its daemon first",
            a.root.display()
        )),
        Err(e) => usage(&pier_api::error::chain(&e)),
    };
    let config = EtcdConfig::new(member.etcd_endpoints.clone(), member.etcd_prefix.clone())
        .with_tls(EtcdTls {
            ca_pem: creds.ca_pem,
            cert_pem: creds.cert_pem,
            key_pem: creds.key_pem,
        });
    match EtcdStore::open(config) {
        Ok(s) => Arc::new(s),
        Err(e) => usage(&format!(
            "cannot open the pool's etcd ({}): {}",
            member.etcd_endpoints.join(","),
            pier_api::error::chain(&e)
        )),
    }
}

/// Runs `ops` in transactions of [`BATCH`], `writers` at a time.
fn commit_all(store: &Arc<EtcdStore>, ops: Vec<Op>, writers: usize) {
    let batches: Vec<Vec<Op>> = ops.chunks(BATCH).map(<[Op]>::to_vec).collect();
    let next = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..writers {
            s.spawn(|| loop {
                let n = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(batch) = batches.get(n) else {
                    return;
                };
                if let Err(e) = store.commit_with(batch.clone(), false) {
                    eprintln!(
                        "pool-records: a write failed: {}",
                        pier_api::error::chain(&e)
                    );
                    std::process::exit(1);
                }
            });
        }
    });
}

fn main() {
    let a = args();
    let store = open(&a);
    let t = Instant::now();
    if a.delete {
        let ops: Vec<Op> = match instances::list(store.as_ref(), Some(&a.project)) {
            Ok(r) => r
                .into_iter()
                .filter(|r| r.host.starts_with("sim-h"))
                .map(|r| Op::Delete {
                    table: instances::TABLE,
                    key: r.key(),
                })
                .collect(),
            Err(e) => usage(&format!(
                "cannot read the records: {}",
                pier_api::error::chain(&e)
            )),
        };
        let n = ops.len();
        commit_all(&store, ops, a.writers);
        println!(
            "{}",
            serde_json::json!({"deleted": n, "seconds": t.elapsed().as_secs_f64()})
        );
        return;
    }
    let now = pier_api::time::now_unix();
    let mut states: BTreeMap<String, usize> = BTreeMap::new();
    let ops: Vec<Op> = (0..a.instances)
        .map(|i| {
            let r = record(&a, i, now);
            *states.entry(r.state.clone()).or_default() += 1;
            Op::Put {
                table: instances::TABLE,
                key: r.key(),
                value: serde_json::to_vec(&r).expect("records serialize"),
            }
        })
        .collect();
    let bytes: usize = ops
        .iter()
        .map(|o| match o {
            Op::Put { value, .. } => value.len(),
            _ => 0,
        })
        .sum();
    commit_all(&store, ops, a.writers);
    let wrote = t.elapsed().as_secs_f64();
    let mut list_ms = Vec::new();
    let mut read = 0;
    for _ in 0..a.time_list {
        let t = Instant::now();
        match instances::list(store.as_ref(), Some(&a.project)) {
            Ok(r) => read = r.len(),
            Err(e) => usage(&format!(
                "cannot read the records: {}",
                pier_api::error::chain(&e)
            )),
        }
        list_ms.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    println!(
        "{}",
        serde_json::json!({
            "instances": a.instances,
            "hosts": a.hosts,
            "project": a.project,
            "shards": a.shards,
            "states": states,
            "record_bytes": bytes,
            "seconds": wrote,
            "list_read": read,
            "list_ms": list_ms,
        })
    );
}
