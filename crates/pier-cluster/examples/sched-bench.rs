//! The scheduler's benchmark (see bench/README.md): simulated hosts, no daemons.
//!
//! For each store (MemStore; RedbStore committing with durable=false): writes `--hosts`
//! host records with labels and capacities, starts a scheduler on them, and places
//! `--placements` instances with constraints, resources, host ports and anti-affinity
//! through the real path (view, filters, scores, conditional commit to the store), with
//! `--schedulers` schedulers at once (each its own thread and view). Then it times the
//! API's list: a `range` of every assignment and the decoding of each (`--list` of them in
//! the store, topped up with direct writes if fewer landed), and the start of a scheduler
//! on the full pool.
//!
//! `cargo run --release -p pier-cluster --example sched-bench -- [--hosts 10000]
//! [--placements 100000] [--list 100000] [--schedulers 1] [--stores mem,redb] [--runs 5]`

use std::collections::BTreeMap;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use pier_cluster::scheduler::{
    keys, AffinityRule, Assignment, HostRecord, HostState, InstanceRequest, Resources, SchedError,
    Scheduler, SchedulerConfig, Strategy,
};
use pier_store::{MemStore, Op, RedbStore, Store};

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;
/// Hosts per rack label: `host.label.rack==` constraints select this many.
const RACK: usize = 50;
const ZONES: usize = 10;
/// Instances per app label; every anti-affine instance avoids the others of its app.
const APP: usize = 20;
/// Host records per write transaction while seeding.
const SEED_BATCH: usize = 500;

struct Args {
    hosts: usize,
    placements: usize,
    list: usize,
    schedulers: usize,
    stores: Vec<String>,
    runs: usize,
}

fn args() -> Args {
    let mut a = Args {
        hosts: 10_000,
        placements: 100_000,
        list: 100_000,
        schedulers: 1,
        stores: vec!["mem".into(), "redb".into()],
        runs: 5,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it
            .next()
            .unwrap_or_else(|| usage(&format!("{flag} needs a value")));
        let num = || -> usize {
            value
                .parse()
                .unwrap_or_else(|_| usage(&format!("{flag}: {value:?} is not a number")))
        };
        match flag.as_str() {
            "--hosts" => a.hosts = num(),
            "--placements" => a.placements = num(),
            "--list" => a.list = num(),
            "--schedulers" => a.schedulers = num().max(1),
            "--runs" => a.runs = num().max(1),
            "--stores" => a.stores = value.split(',').map(str::to_string).collect(),
            _ => usage(&format!("unknown flag {flag}")),
        }
    }
    a
}

fn usage(why: &str) -> ! {
    eprintln!(
        "sched-bench: {why}\nusage: sched-bench [--hosts N] [--placements N] [--list N] \
         [--schedulers N] [--stores mem,redb] [--runs N]"
    );
    std::process::exit(2)
}

/// xorshift64*: deterministic requests without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn pick<T: Copy>(&mut self, from: &[T]) -> T {
        from[(self.next() % from.len() as u64) as usize]
    }
}

fn host(i: usize) -> HostRecord {
    let labels = [
        ("zone", format!("z{}", i % ZONES)),
        ("rack", format!("r{}", i / RACK)),
        (
            "disk",
            if i.is_multiple_of(4) { "hdd" } else { "ssd" }.to_string(),
        ),
    ];
    HostRecord {
        id: format!("host-{i:05}"),
        labels: labels.map(|(k, v)| (k.to_string(), v)).into(),
        state: HostState::Up,
        capacity: Resources {
            cpu_millis: [16_000, 32_000, 64_000][i % 3],
            memory_bytes: [64 * GIB, 128 * GIB, 256 * GIB][i % 3],
            disk_bytes: [1024 * GIB, 2048 * GIB, 4096 * GIB][i % 3],
        },
    }
}

/// Half spread, half binpack; half with a zone constraint, a fifth not on hdd, a tenth on
/// one rack; a tenth publishing a host port; a twentieth anti-affine to its app.
fn request(i: usize, hosts: usize, rng: &mut Rng) -> InstanceRequest {
    let app = i / APP;
    let mut r = InstanceRequest {
        project: "default".into(),
        id: format!("i{i:07}"),
        name: format!("inst-{i}"),
        labels: [("app".to_string(), format!("a{app}"))].into(),
        resources: Resources {
            cpu_millis: rng.pick(&[250, 500, 1000, 2000]),
            memory_bytes: rng.pick(&[256 * MIB, 512 * MIB, GIB, 2 * GIB, 4 * GIB]),
            disk_bytes: rng.pick(&[GIB, 5 * GIB, 10 * GIB, 20 * GIB]),
        },
        strategy: if rng.next().is_multiple_of(2) {
            Strategy::Spread
        } else {
            Strategy::Binpack
        },
        ..Default::default()
    };
    let c = match rng.next() % 10 {
        0..=4 => Some(format!("host.label.zone==z{}", rng.next() as usize % ZONES)),
        5 | 6 => Some("host.label.disk!=hdd".to_string()),
        7 => Some(format!(
            "host.label.rack==r{}",
            rng.next() as usize % hosts.div_ceil(RACK)
        )),
        _ => None,
    };
    r.constraints = c.iter().map(|c| c.parse().unwrap()).collect();
    if rng.next().is_multiple_of(10) {
        let port = 20_000 + rng.next() % 2_000;
        r.ports = vec![format!("{port}/tcp").parse().unwrap()];
    }
    if rng.next().is_multiple_of(20) {
        r.affinity = vec![AffinityRule {
            anti: true,
            selector: format!("instance.label.app==a{app}").parse().unwrap(),
        }];
    }
    r
}

fn open(kind: &str, dir: &tempfile::TempDir) -> (Arc<dyn Store>, bool) {
    match kind {
        "mem" => (Arc::new(MemStore::default()), true),
        "redb" => {
            let path = dir.path().join("state.redb");
            let store = RedbStore::open(&path).unwrap_or_else(|e| panic!("redb: {e}"));
            // Placements commit without waiting for the disk (durable=false).
            (Arc::new(store), false)
        }
        other => usage(&format!("unknown store {other:?}: use mem or redb")),
    }
}

/// A "no host fits" reason without its count and particulars ("2 lack memory (need 2
/// GiB)" -> "lack memory"), so that the summary has a line per filter.
fn kind(reason: &str) -> String {
    let what = reason.split_once(' ').map_or(reason, |(_, w)| w);
    let end = [" (", " host.", " instance."]
        .iter()
        .filter_map(|cut| what.find(cut))
        .chain(what.find(|c: char| c.is_ascii_digit()))
        .min()
        .unwrap_or(what.len());
    what[..end].trim_end().to_string()
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

struct Outcome {
    landed: usize,
    no_fit: usize,
    conflicts: u64,
    reasons: BTreeMap<String, usize>,
}

fn place_all(store: &Arc<dyn Store>, config: SchedulerConfig, args: &Args) -> (Outcome, Duration) {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let requests: Vec<_> = (0..args.placements)
        .map(|i| request(i, args.hosts, &mut rng))
        .collect();
    let shares: Vec<Vec<InstanceRequest>> = (0..args.schedulers)
        .map(|k| {
            requests
                .iter()
                .skip(k)
                .step_by(args.schedulers)
                .cloned()
                .collect()
        })
        .collect();
    let start = Arc::new(Barrier::new(args.schedulers + 1));
    let runs: Vec<_> = shares
        .into_iter()
        .map(|share| {
            let (store, start) = (store.clone(), start.clone());
            std::thread::spawn(move || {
                let mut s = Scheduler::new(store, config).expect("start a scheduler");
                let mut out = Outcome {
                    landed: 0,
                    no_fit: 0,
                    conflicts: 0,
                    reasons: BTreeMap::new(),
                };
                start.wait();
                for r in &share {
                    match s.place(r) {
                        Ok(_) => out.landed += 1,
                        Err(SchedError::NoHostFits(why)) => {
                            out.no_fit += 1;
                            for (_, reason) in why.reasons {
                                *out.reasons.entry(kind(&reason)).or_default() += 1;
                            }
                        }
                        Err(e) => panic!("placing {}: {e}", r.instance()),
                    }
                }
                out.conflicts = s.conflicts();
                out
            })
        })
        .collect();
    start.wait();
    let t = Instant::now();
    let mut total = Outcome {
        landed: 0,
        no_fit: 0,
        conflicts: 0,
        reasons: BTreeMap::new(),
    };
    for run in runs {
        let out = run.join().expect("a scheduler thread panicked");
        total.landed += out.landed;
        total.no_fit += out.no_fit;
        total.conflicts += out.conflicts;
        for (k, v) in out.reasons {
            *total.reasons.entry(k).or_default() += v;
        }
    }
    (total, t.elapsed())
}

fn main() {
    let args = args();
    println!(
        "sched-bench: {} hosts, {} placements, {} scheduler(s), list of {} assignments, {} cores",
        args.hosts,
        args.placements,
        args.schedulers,
        args.list,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    for kind in &args.stores {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let (store, durable) = open(kind, &dir);
        let records: Vec<_> = (0..args.hosts).map(host).collect();
        for chunk in records.chunks(SEED_BATCH) {
            let ops = chunk.iter().map(keys::put_host).collect();
            store.commit_with(ops, durable).expect("write the hosts");
        }
        let config = SchedulerConfig {
            durable,
            ..Default::default()
        };
        let (out, took) = place_all(&store, config, &args);
        let rate = (out.landed + out.no_fit) as f64 / took.as_secs_f64();
        println!(
            "{kind}: {} placed, {} found no host, {} conflicts, in {:.2} s: {:.0} placements/s",
            out.landed,
            out.no_fit,
            out.conflicts,
            took.as_secs_f64(),
            rate
        );
        for (why, n) in &out.reasons {
            println!("  {n} answers say hosts {why:?}");
        }

        // Top the store up to --list assignments with direct writes (untimed).
        let mut have = out.landed;
        let mut filler = Vec::new();
        while have < args.list {
            let a = Assignment {
                project: "default".into(),
                id: format!("fill{have:07}"),
                name: format!("fill-{have}"),
                labels: Default::default(),
                host: host(have % args.hosts.max(1)).id,
                resources: Resources::default(),
                ports: Vec::new(),
                spec: None,
                start: false,
                moved_from: None,
            };
            filler.push(Op::Put {
                table: keys::TABLE,
                key: keys::assignment(&format!("default/{}", a.id)),
                value: serde_json::to_vec(&a).expect("encode"),
            });
            have += 1;
            if filler.len() == SEED_BATCH || have == args.list {
                store
                    .commit_with(std::mem::take(&mut filler), durable)
                    .expect("write assignments");
            }
        }
        let list_times: Vec<Duration> = (0..args.runs)
            .map(|_| {
                let t = Instant::now();
                let listing = store.range(keys::TABLE, keys::ASSIGNMENTS).expect("range");
                let decoded: Vec<Assignment> = listing
                    .kvs
                    .iter()
                    .map(|(_, kv)| serde_json::from_slice(&kv.value).expect("decode"))
                    .collect();
                let took = t.elapsed();
                assert_eq!(decoded.len(), have);
                took
            })
            .collect();
        let start_times: Vec<Duration> = (0..args.runs)
            .map(|_| {
                let t = Instant::now();
                let s = Scheduler::new(store.clone(), config).expect("start a scheduler");
                let took = t.elapsed();
                assert_eq!(s.view().assignments().count(), have);
                took
            })
            .collect();
        println!(
            "{kind}: list of {have} assignments (range + decode): median {} (min {}); \
             a scheduler's start on that pool (read + index): median {}",
            ms(median(list_times.clone())),
            ms(*list_times.iter().min().expect("runs >= 1")),
            ms(median(start_times)),
        );
    }
}
