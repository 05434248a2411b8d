//! The daemon's Prometheus metrics, served as `GET /metrics` on the native API and, with
//! `--metrics-addr`, on a TCP address of their own (plain HTTP, `/metrics` only):
//!
//! - kept as they happen: every API request by API (`native`, `docker`, `registry`),
//!   method, route template and status, with its latency ([`Metrics::observe`], which
//!   [`crate::requests::track`] calls for each); in a pool, the placements this member's
//!   scheduler made, by outcome, and the time each took ([`Metrics::placement`]);
//! - read at each scrape: the engine's [`Snapshot`] (every instance's state, restarts,
//!   health and use; the host's capacity and use (busy CPU time, memory, disk, network
//!   traffic); networks, volumes and images; the registry's
//!   blob traffic).
//!
//! The text is Prometheus's classic exposition format (version 0.0.4), which every
//! scraper and `promtool check metrics` read.

use std::sync::Arc;

use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Router};
use pier_engine::metrics::Snapshot;
use pier_engine::Engine;
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder,
};

/// The metrics kept between scrapes.
pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    latency: HistogramVec,
    placements: IntCounterVec,
    placement_latency: prometheus::Histogram,
}

/// How a placement ended, as [`Metrics::placement`] counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlacementOutcome {
    /// The chosen host made the instance.
    Placed,
    /// No host fits (or the request is invalid, or its name is taken in the pool).
    Refused,
    /// The chosen host could not make it (its error was answered).
    Failed,
    /// The chosen host did not answer in time.
    TimedOut,
    /// The pool's store failed, or the placement lost every race.
    Error,
}

impl PlacementOutcome {
    fn label(self) -> &'static str {
        match self {
            PlacementOutcome::Placed => "placed",
            PlacementOutcome::Refused => "refused",
            PlacementOutcome::Failed => "failed",
            PlacementOutcome::TimedOut => "timed_out",
            PlacementOutcome::Error => "error",
        }
    }
}

/// The labels that name one instance's series.
const INSTANCE: [&str; 4] = ["id", "name", "project", "kind"];

impl Metrics {
    pub fn new() -> Arc<Metrics> {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "pier_api_requests_total",
                "API requests answered, by API, method, route template and status.",
            ),
            &["api", "method", "route", "status"],
        )
        .expect("valid metric");
        let latency = HistogramVec::new(
            HistogramOpts::new(
                "pier_api_request_duration_seconds",
                "Time to answer an API request (to its headers, for a stream).",
            )
            .buckets(vec![
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ]),
            &["api", "method", "route"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(requests.clone()))
            .expect("registered once");
        registry
            .register(Box::new(latency.clone()))
            .expect("registered once");
        let placements = IntCounterVec::new(
            Opts::new(
                "pier_scheduler_placements_total",
                "Instances this member placed in the pool, by outcome: placed, refused (no host fits, a bad request or a name taken), failed (the chosen host could not make it), timed_out, error.",
            ),
            &["outcome"],
        )
        .expect("valid metric");
        let placement_latency = prometheus::Histogram::with_opts(
            HistogramOpts::new(
                "pier_scheduler_placement_duration_seconds",
                "Time to choose a host and commit the placement (not to make the instance).",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
            ]),
        )
        .expect("valid metric");
        registry
            .register(Box::new(placements.clone()))
            .expect("registered once");
        registry
            .register(Box::new(placement_latency.clone()))
            .expect("registered once");
        Arc::new(Metrics {
            registry,
            requests,
            latency,
            placements,
            placement_latency,
        })
    }

    /// Counts one placement by its outcome; `committed_in` is the time the scheduler took
    /// to choose and commit, when it did.
    pub fn placement(&self, outcome: PlacementOutcome, committed_in: Option<std::time::Duration>) {
        self.placements.with_label_values(&[outcome.label()]).inc();
        if let Some(t) = committed_in {
            self.placement_latency.observe(t.as_secs_f64());
        }
    }

    /// Counts one answered request and its latency.
    pub fn observe(
        &self,
        api: &str,
        method: &str,
        route: &str,
        status: &str,
        elapsed: std::time::Duration,
    ) {
        self.latency
            .with_label_values(&[api, method, route])
            .observe(elapsed.as_secs_f64());
        self.requests
            .with_label_values(&[api, method, route, status])
            .inc();
    }

    /// The text a scrape gets: the kept families and those of `snap`.
    pub fn render(&self, snap: &Snapshot) -> String {
        let mut families = self.registry.gather();
        families.extend(snapshot_registry(snap).gather());
        families.sort_by(|a, b| a.name().cmp(b.name()));
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&families, &mut out)
            .expect("text encoding of valid families");
        String::from_utf8(out).expect("the text format is UTF-8")
    }
}

/// Gauges and counters built from one snapshot (counters at their current totals).
fn snapshot_registry(snap: &Snapshot) -> Registry {
    let r = Registry::new();
    let gauge = |name: &str, help: &str, value: f64| {
        let g = prometheus::Gauge::with_opts(Opts::new(name, help)).expect("valid metric");
        g.set(value);
        r.register(Box::new(g)).expect("registered once");
    };
    let int_gauge = |name: &str, help: &str, labels: &[&str]| {
        let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
        r.register(Box::new(g.clone())).expect("registered once");
        g
    };
    // Counters read from the kernel are gauges in the library's terms (they are set, not
    // counted here) but counters to Prometheus: their TYPE line says so.
    let counter = |name: &str, help: &str| {
        let c = prometheus::CounterVec::new(Opts::new(name, help), &INSTANCE).expect("valid");
        r.register(Box::new(c.clone())).expect("registered once");
        c
    };

    let instances = int_gauge(
        "pier_instances",
        "Instances by project, kind and state.",
        &["project", "kind", "state"],
    );
    let up = int_gauge(
        "pier_instance_up",
        "1 while the instance runs (or is paused), else 0.",
        &INSTANCE,
    );
    let restarts = counter(
        "pier_instance_restarts_total",
        "Times the restart policy restarted the instance.",
    );
    let health = int_gauge(
        "pier_instance_health",
        "1 for the instance's health status (instances with a health check).",
        &["id", "name", "project", "kind", "status"],
    );
    let cpu = counter(
        "pier_instance_cpu_seconds_total",
        "CPU time the running instance used.",
    );
    let memory = int_gauge(
        "pier_instance_memory_bytes",
        "Memory the running instance uses.",
        &INSTANCE,
    );
    let memory_limit = int_gauge(
        "pier_instance_memory_limit_bytes",
        "The running instance's memory limit (instances with one).",
        &INSTANCE,
    );
    let pids = int_gauge(
        "pier_instance_pids",
        "Processes in the running instance.",
        &INSTANCE,
    );
    let io_read = counter(
        "pier_instance_io_read_bytes_total",
        "Bytes the running instance read from block devices.",
    );
    let io_write = counter(
        "pier_instance_io_write_bytes_total",
        "Bytes the running instance wrote to block devices.",
    );
    let rx = counter(
        "pier_instance_network_receive_bytes_total",
        "Bytes the running instance's interfaces received.",
    );
    let tx = counter(
        "pier_instance_network_transmit_bytes_total",
        "Bytes the running instance's interfaces sent.",
    );
    for i in &snap.instances {
        let l = [i.id.as_str(), i.name.as_str(), i.project.as_str(), i.kind];
        instances
            .with_label_values(&[i.project.as_str(), i.kind, i.state])
            .inc();
        up.with_label_values(&l).set(i64::from(i.usage.is_some()));
        restarts.with_label_values(&l).inc_by(f64::from(i.restarts));
        if let Some(h) = i.health {
            health
                .with_label_values(&[l[0], l[1], l[2], l[3], h])
                .set(1);
        }
        let Some(u) = &i.usage else { continue };
        cpu.with_label_values(&l).inc_by(u.cpu_seconds);
        memory.with_label_values(&l).set(saturate(u.memory_bytes));
        if let Some(m) = u.memory_limit_bytes {
            memory_limit.with_label_values(&l).set(saturate(m));
        }
        pids.with_label_values(&l).set(saturate(u.pids));
        io_read.with_label_values(&l).inc_by(u.io_read_bytes as f64);
        io_write
            .with_label_values(&l)
            .inc_by(u.io_write_bytes as f64);
        rx.with_label_values(&l)
            .inc_by(u.network_receive_bytes as f64);
        tx.with_label_values(&l)
            .inc_by(u.network_transmit_bytes as f64);
    }

    let h = &snap.host;
    for (name, help, value) in [
        ("pier_host_cpus", "CPUs of the host.", f64::from(h.cpus)),
        (
            "pier_host_memory_bytes",
            "Memory of the host.",
            h.memory_bytes as f64,
        ),
        (
            "pier_host_memory_available_bytes",
            "Memory the host can still give (MemAvailable).",
            h.memory_available_bytes as f64,
        ),
        (
            "pier_host_disk_bytes",
            "Size of the filesystem of the daemon's state directory.",
            h.disk_bytes as f64,
        ),
        (
            "pier_host_disk_free_bytes",
            "Free space on the filesystem of the daemon's state directory.",
            h.disk_free_bytes as f64,
        ),
    ] {
        gauge(name, help, value);
    }
    for (name, help, value) in [
        (
            "pier_host_cpu_seconds_total",
            "Seconds the host's CPUs spent busy (not idle or waiting for I/O), all CPUs together.",
            h.cpu_seconds,
        ),
        (
            "pier_host_network_receive_bytes_total",
            "Bytes the host's outward interfaces received (not loopback, not Pier's bridges and veths).",
            h.network_receive_bytes as f64,
        ),
        (
            "pier_host_network_transmit_bytes_total",
            "Bytes the host's outward interfaces sent (not loopback, not Pier's bridges and veths).",
            h.network_transmit_bytes as f64,
        ),
    ] {
        let c = prometheus::Counter::with_opts(Opts::new(name, help)).expect("valid metric");
        c.inc_by(value);
        r.register(Box::new(c)).expect("registered once");
    }
    let endpoints = int_gauge(
        "pier_network_endpoints",
        "Instances attached to each network.",
        &["project", "network", "driver"],
    );
    for (project, network, driver, n) in &snap.networks {
        endpoints
            .with_label_values(&[project.as_str(), network.as_str(), driver.as_str()])
            .set(saturate(*n));
    }
    let volumes = int_gauge("pier_volumes", "Volumes by project.", &["project"]);
    for v in &snap.volumes {
        volumes
            .with_label_values(&[v.project.as_str()])
            .set(saturate(v.count));
    }
    gauge(
        "pier_images",
        "Images in the image store.",
        snap.images as f64,
    );
    let registry = IntCounterVec::new(
        Opts::new(
            "pier_registry_blob_bytes_total",
            "Blob bytes the registry received (in: pushes) and sent (out: pulls).",
        ),
        &["direction"],
    )
    .expect("valid metric");
    r.register(Box::new(registry.clone()))
        .expect("registered once");
    registry
        .with_label_values(&["in"])
        .inc_by(snap.registry_bytes_in);
    registry
        .with_label_values(&["out"])
        .inc_by(snap.registry_bytes_out);
    r
}

fn saturate(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// The `/metrics` route, to merge into an API's router.
pub fn routes(metrics: Arc<Metrics>, engine: Arc<Engine>) -> Router {
    Router::new()
        .route("/metrics", get(scrape))
        .layer(Extension((metrics, engine)))
}

async fn scrape(Extension((metrics, engine)): Extension<(Arc<Metrics>, Arc<Engine>)>) -> Response {
    let snap = tokio::task::spawn_blocking(move || engine.metrics_snapshot()).await;
    match snap {
        Ok(Ok(snap)) => (
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            metrics.render(&snap),
        )
            .into_response(),
        Ok(Err(e)) => crate::error::ApiError::from(e).into_response(),
        Err(e) => crate::error::ApiError::from(e).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pier_engine::metrics::{HostSample, InstanceSample, ProjectCount, Usage};

    fn sample() -> Snapshot {
        Snapshot {
            instances: vec![
                InstanceSample {
                    id: "a1".into(),
                    name: "web".into(),
                    project: "default".into(),
                    kind: "container",
                    state: "running",
                    restarts: 2,
                    health: Some("healthy"),
                    usage: Some(Usage {
                        cpu_seconds: 1.5,
                        memory_bytes: 1 << 20,
                        memory_limit_bytes: Some(64 << 20),
                        pids: 3,
                        io_read_bytes: 10,
                        io_write_bytes: 20,
                        network_receive_bytes: 30,
                        network_transmit_bytes: 40,
                    }),
                },
                InstanceSample {
                    id: "b2".into(),
                    name: "old".into(),
                    project: "default".into(),
                    kind: "vm",
                    state: "exited",
                    restarts: 0,
                    health: None,
                    usage: None,
                },
            ],
            host: HostSample {
                cpus: 2,
                memory_bytes: 1 << 30,
                memory_available_bytes: 1 << 29,
                disk_bytes: 100,
                disk_free_bytes: 50,
                cpu_seconds: 12.5,
                network_receive_bytes: 3000,
                network_transmit_bytes: 4000,
            },
            networks: vec![("default".into(), "bridge".into(), "bridge".into(), 1)],
            volumes: vec![ProjectCount {
                project: "default".into(),
                count: 4,
            }],
            images: 7,
            registry_bytes_in: 5,
            registry_bytes_out: 6,
        }
    }

    /// Metrics that have seen one Docker API request.
    fn served() -> Arc<Metrics> {
        let m = Metrics::new();
        let route = "/{version}/containers/json";
        m.requests
            .with_label_values(&["docker", "GET", route, "200"])
            .inc();
        m.latency
            .with_label_values(&["docker", "GET", route])
            .observe(0.003);
        m
    }

    #[test]
    fn a_snapshot_renders_as_prometheus_text() {
        let text = served().render(&sample());
        for line in [
            "# TYPE pier_instance_cpu_seconds_total counter",
            r#"pier_instance_cpu_seconds_total{id="a1",kind="container",name="web",project="default"} 1.5"#,
            r#"pier_instance_memory_limit_bytes{id="a1",kind="container",name="web",project="default"} 67108864"#,
            r#"pier_instance_up{id="b2",kind="vm",name="old",project="default"} 0"#,
            r#"pier_instance_health{id="a1",kind="container",name="web",project="default",status="healthy"} 1"#,
            r#"pier_instance_restarts_total{id="a1",kind="container",name="web",project="default"} 2"#,
            r#"pier_instances{kind="vm",project="default",state="exited"} 1"#,
            "pier_host_cpus 2",
            "# TYPE pier_host_cpu_seconds_total counter",
            "pier_host_cpu_seconds_total 12.5",
            "# TYPE pier_host_network_receive_bytes_total counter",
            "pier_host_network_receive_bytes_total 3000",
            "pier_host_network_transmit_bytes_total 4000",
            r#"pier_network_endpoints{driver="bridge",network="bridge",project="default"} 1"#,
            r#"pier_volumes{project="default"} 4"#,
            "pier_images 7",
            r#"pier_api_requests_total{api="docker",method="GET",route="/{version}/containers/json",status="200"} 1"#,
            r#"pier_registry_blob_bytes_total{direction="in"} 5"#,
            "# TYPE pier_api_request_duration_seconds histogram",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in:\n{text}"
            );
        }
        // Zero traffic is reported too.
        let idle = served().render(&Snapshot::default());
        assert!(
            idle.lines()
                .any(|l| l == r#"pier_registry_blob_bytes_total{direction="out"} 0"#),
            "{idle}"
        );
        // A stopped instance has no usage series.
        assert!(
            !text.contains(r#"pier_instance_memory_bytes{id="b2""#),
            "{text}"
        );
    }

    #[test]
    fn placements_are_counted_by_outcome_with_their_commit_time() {
        let m = Metrics::new();
        m.placement(
            PlacementOutcome::Placed,
            Some(std::time::Duration::from_millis(2)),
        );
        m.placement(
            PlacementOutcome::Placed,
            Some(std::time::Duration::from_millis(30)),
        );
        m.placement(PlacementOutcome::Refused, None);
        m.placement(
            PlacementOutcome::TimedOut,
            Some(std::time::Duration::from_millis(1)),
        );
        let text = m.render(&Snapshot::default());
        for line in [
            "# TYPE pier_scheduler_placements_total counter",
            r#"pier_scheduler_placements_total{outcome="placed"} 2"#,
            r#"pier_scheduler_placements_total{outcome="refused"} 1"#,
            r#"pier_scheduler_placements_total{outcome="timed_out"} 1"#,
            "# TYPE pier_scheduler_placement_duration_seconds histogram",
            // The refusal committed nothing: three commit times.
            "pier_scheduler_placement_duration_seconds_count 3",
            r#"pier_scheduler_placement_duration_seconds_bucket{le="0.0025"} 2"#,
            r#"pier_scheduler_placement_duration_seconds_bucket{le="0.05"} 3"#,
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in:\n{text}"
            );
        }
    }

    /// Every series the Grafana dashboard in the repo queries is one the daemon serves.
    #[test]
    fn the_grafana_dashboard_queries_served_families() {
        let dashboard: serde_json::Value =
            serde_json::from_str(include_str!("../../../dashboards/grafana-pier.json"))
                .expect("the dashboard is JSON");
        let text = served().render(&sample());
        let served: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.split(' ').next())
            .collect();
        let mut queried = 0;
        for panel in dashboard["panels"].as_array().expect("panels") {
            for target in panel["targets"].as_array().expect("targets") {
                let expr = target["expr"].as_str().expect("expr");
                for word in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
                    if !word.starts_with("pier_") {
                        continue;
                    }
                    let family = ["_bucket", "_sum", "_count"]
                        .iter()
                        .find_map(|s| word.strip_suffix(s).filter(|f| served.contains(f)))
                        .unwrap_or(word);
                    assert!(
                        served.contains(&family),
                        "panel {:?} queries {word}, which /metrics does not serve",
                        panel["title"]
                    );
                    queried += 1;
                }
            }
        }
        assert!(queried >= 20, "{queried}");
    }
}
