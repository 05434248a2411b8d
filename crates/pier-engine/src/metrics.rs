//! What the daemon's `/metrics` reports of the engine, read afresh at each scrape: every
//! instance's state, restarts, health and (while it runs) its use of CPU, memory, I/O and
//! network; the host's capacity and use (CPU time, memory, disk, network traffic); networks and volumes by project; the
//! registry's traffic. The daemon
//! turns a [`Snapshot`] into Prometheus families. [`History`] keeps the last hour of
//! samples (every [`HISTORY_PERIOD`] by default), which `GET /v1/metrics/history` serves
//! so that graphs need no Prometheus.

use pier_api::containers::ContainerStatus;
use pier_api::ProjectName;

use crate::system::HostInfo;
use crate::{Engine, EngineResult};

/// One instance as a scrape sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct InstanceSample {
    pub id: String,
    pub name: String,
    pub project: String,
    /// `container` or `vm`.
    pub kind: &'static str,
    /// Docker's state words: `created`, `running`, `paused`, `restarting`, `exited`,
    /// `removing`.
    pub state: &'static str,
    pub restarts: u32,
    /// `starting`, `healthy` or `unhealthy`; None without a health check.
    pub health: Option<&'static str>,
    /// Present while the instance runs (or is paused).
    pub usage: Option<Usage>,
}

/// What a running instance uses, from its cgroup and its network namespace.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Usage {
    pub cpu_seconds: f64,
    pub memory_bytes: u64,
    /// None when unlimited.
    pub memory_limit_bytes: Option<u64>,
    pub pids: u64,
    pub io_read_bytes: u64,
    pub io_write_bytes: u64,
    pub network_receive_bytes: u64,
    pub network_transmit_bytes: u64,
}

/// The host's capacity and what is free of it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HostSample {
    pub cpus: u32,
    pub memory_bytes: u64,
    pub memory_available_bytes: u64,
    /// The filesystem of the state directory.
    pub disk_bytes: u64,
    pub disk_free_bytes: u64,
    /// Seconds its CPUs spent busy since boot, all CPUs together (a counter).
    pub cpu_seconds: f64,
    /// Bytes received and sent since boot by the interfaces of the daemon's network
    /// namespace that lead out of it: all but loopback and this daemon's own bridges
    /// and veth ends (whose traffic, the instances', is counted where it leaves).
    pub network_receive_bytes: u64,
    pub network_transmit_bytes: u64,
}

/// A project's count of networks or volumes.
#[derive(Debug, Clone, PartialEq)]
pub struct ProjectCount {
    pub project: String,
    pub count: u64,
}

/// Everything one scrape reports of the engine.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    pub instances: Vec<InstanceSample>,
    pub host: HostSample,
    /// Per network: (project, name, driver, endpoints).
    pub networks: Vec<(String, String, String, u64)>,
    pub volumes: Vec<ProjectCount>,
    pub images: u64,
    /// Blob bytes the registry received (pushes) and sent (pulls) since the start.
    pub registry_bytes_in: u64,
    pub registry_bytes_out: u64,
}

impl Engine {
    /// Reads what `/metrics` reports, over every project. Blocking (cgroup and /proc
    /// files): call it off the async threads.
    pub fn metrics_snapshot(&self) -> EngineResult<Snapshot> {
        let mut s = self.usage_snapshot()?;
        self.count_inventory(&mut s)?;
        Ok(s)
    }

    /// The instances' and the host's use alone (what the history keeps): a [`Snapshot`]
    /// without networks, volumes, images and registry figures.
    pub fn usage_snapshot(&self) -> EngineResult<Snapshot> {
        let instances = self
            .instances
            .every()?
            .into_iter()
            .map(|c| {
                let usage = matches!(
                    c.state.status,
                    ContainerStatus::Running | ContainerStatus::Paused
                )
                .then(|| {
                    let s = self.instances.driver_of(&c).stats(&c);
                    let nets = c
                        .state
                        .pid
                        .map(crate::system::interface_counters)
                        .unwrap_or_default();
                    Usage {
                        cpu_seconds: s.cpu_usage_ns as f64 / 1e9,
                        memory_bytes: s.memory_usage,
                        // v1 writes "no limit" as the largest page-aligned i64, v2 as
                        // u64::MAX: anything from 2^62 up is none.
                        memory_limit_bytes: (s.memory_limit < 1 << 62 && s.memory_limit > 0)
                            .then_some(s.memory_limit),
                        pids: s.pids_current,
                        io_read_bytes: s.io_read_bytes,
                        io_write_bytes: s.io_write_bytes,
                        network_receive_bytes: nets.values().map(|n| n.rx_bytes).sum(),
                        network_transmit_bytes: nets.values().map(|n| n.tx_bytes).sum(),
                    }
                });
                InstanceSample {
                    kind: crate::instances::vm::kind(&c.config),
                    state: c.state.status.as_str(),
                    restarts: c.state.restart_count,
                    health: c.state.health.as_ref().map(|h| h.status.as_str()),
                    usage,
                    project: c.project.to_string(),
                    id: c.id,
                    name: c.name,
                }
            })
            .collect();
        let info = HostInfo::read();
        let (disk_free_bytes, disk_bytes) = match rustix::fs::statvfs(&self.root) {
            Ok(s) => (s.f_bavail * s.f_frsize, s.f_blocks * s.f_frsize),
            Err(_) => (0, 0),
        };
        let nets = crate::system::own_interface_counters();
        let outward = || {
            nets.iter()
                .filter(|(n, _)| !self.networks.owns_interface(n))
                .map(|(_, c)| c)
        };
        let host = HostSample {
            cpu_seconds: crate::system::host_cpu_busy_seconds(),
            network_receive_bytes: outward().map(|c| c.rx_bytes).sum(),
            network_transmit_bytes: outward().map(|c| c.tx_bytes).sum(),
            cpus: info.cpus,
            memory_bytes: info.memory,
            memory_available_bytes: crate::system::meminfo_bytes(
                &std::fs::read_to_string("/proc/meminfo").unwrap_or_default(),
                "MemAvailable",
            ),
            disk_bytes,
            disk_free_bytes,
        };
        Ok(Snapshot {
            instances,
            host,
            ..Snapshot::default()
        })
    }

    /// Fills in `s`'s networks, volumes, images and registry figures.
    fn count_inventory(&self, s: &mut Snapshot) -> EngineResult<()> {
        let mut networks = Vec::new();
        let mut volumes = Vec::new();
        for project in self.projects.list()? {
            let ctx = crate::RequestContext::system(project.clone(), "metrics");
            for n in self.networks.list(&ctx)? {
                networks.push((
                    project.to_string(),
                    n.name.clone(),
                    n.driver.clone(),
                    n.containers.len() as u64,
                ));
            }
            volumes.push(ProjectCount {
                project: project.to_string(),
                count: self.volumes.list(&project)?.len() as u64,
            });
        }
        let images = self
            .images(
                &crate::RequestContext::system(ProjectName::default_project(), "metrics"),
                false,
            )
            .map(|v| v.len() as u64)
            .unwrap_or(0);
        let registry = self.registry.stats();
        s.networks = networks;
        s.volumes = volumes;
        s.images = images;
        s.registry_bytes_in = registry.blob_bytes_received;
        s.registry_bytes_out = registry.blob_bytes_sent;
        Ok(())
    }
}

/// How often [`History`] takes a sample unless told otherwise.
pub const HISTORY_PERIOD: std::time::Duration = std::time::Duration::from_secs(15);
/// How many samples it keeps: an hour at the default period.
pub const HISTORY_SAMPLES: usize = 240;

/// One kept sample: the host's, and each running instance's use by ID.
struct Kept {
    sample: pier_api::system::MetricsSample,
    /// By instance ID; a running instance's ID is one allocation shared by every sample.
    instances:
        std::collections::HashMap<std::sync::Arc<str>, pier_api::system::InstanceUsageSample>,
}

/// The engine's recent metrics, a ring of [`HISTORY_SAMPLES`] samples in memory (gone
/// with the daemon, as a graph of the last hour may be).
pub struct History {
    pub period: std::time::Duration,
    kept: std::sync::Mutex<std::collections::VecDeque<Kept>>,
    host: std::sync::Mutex<(u64, u64)>,
}

impl History {
    pub fn new(period: std::time::Duration) -> History {
        History {
            period,
            kept: Default::default(),
            host: Default::default(),
        }
    }

    /// Keeps `snap`, taken at `time` (Unix seconds), dropping the oldest sample when full.
    pub fn record(&self, time: f64, snap: &Snapshot) {
        let mut kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
        let previous = kept.back().map(|k| &k.instances);
        let instances: std::collections::HashMap<_, _> = snap
            .instances
            .iter()
            .filter_map(|i| {
                let u = i.usage.as_ref()?;
                let id = previous
                    .and_then(|p| p.get_key_value(i.id.as_str()))
                    .map_or_else(|| i.id.as_str().into(), |(id, _)| std::sync::Arc::clone(id));
                Some((
                    id,
                    pier_api::system::InstanceUsageSample {
                        cpu_seconds: u.cpu_seconds,
                        memory_bytes: u.memory_bytes,
                        network_receive_bytes: u.network_receive_bytes,
                        network_transmit_bytes: u.network_transmit_bytes,
                        io_read_bytes: u.io_read_bytes,
                        io_write_bytes: u.io_write_bytes,
                    },
                ))
            })
            .collect();
        let sample = pier_api::system::MetricsSample {
            time,
            host_memory_available_bytes: snap.host.memory_available_bytes,
            host_disk_free_bytes: snap.host.disk_free_bytes,
            host_cpu_seconds: snap.host.cpu_seconds,
            host_network_receive_bytes: snap.host.network_receive_bytes,
            host_network_transmit_bytes: snap.host.network_transmit_bytes,
            instances_running: instances.len() as u64,
            instance: None,
        };
        *self.host.lock().unwrap_or_else(|e| e.into_inner()) =
            (snap.host.memory_bytes, snap.host.disk_bytes);
        if kept.len() >= HISTORY_SAMPLES {
            kept.pop_front();
        }
        kept.push_back(Kept { sample, instances });
    }

    /// The kept samples after `since`, oldest first, each with `instance`'s use (by ID)
    /// when asked for.
    pub fn query(
        &self,
        instance: Option<&str>,
        since: Option<f64>,
    ) -> pier_api::system::MetricsHistory {
        let (host_memory_bytes, host_disk_bytes) =
            *self.host.lock().unwrap_or_else(|e| e.into_inner());
        let kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
        pier_api::system::MetricsHistory {
            period_seconds: self.period.as_secs_f64(),
            host_memory_bytes,
            host_disk_bytes,
            samples: kept
                .iter()
                .filter(|k| since.is_none_or(|s| k.sample.time > s))
                .map(|k| pier_api::system::MetricsSample {
                    instance: instance.and_then(|id| k.instances.get(id).cloned()),
                    ..k.sample.clone()
                })
                .collect(),
        }
    }
}

/// Takes a sample into the engine's [`History`] every period, while the engine lives.
pub async fn keep_history(engine: std::sync::Weak<Engine>) {
    let Some(history) = engine.upgrade().map(|e| e.history.clone()) else {
        return;
    };
    let mut tick = tokio::time::interval(history.period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(e) = engine.upgrade() else { return };
        match tokio::task::spawn_blocking(move || e.usage_snapshot()).await {
            Ok(Ok(snap)) => history.record(crate::events::now_nanos() as f64 / 1e9, &snap),
            Ok(Err(e)) => tracing::debug!(error = %e.message(), "no metrics sample"),
            Err(_) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(cpu: f64, running: bool) -> Snapshot {
        Snapshot {
            instances: vec![InstanceSample {
                id: "a1".into(),
                name: "web".into(),
                project: "default".into(),
                kind: "container",
                state: if running { "running" } else { "exited" },
                restarts: 0,
                health: None,
                usage: running.then(|| Usage {
                    cpu_seconds: cpu,
                    ..Default::default()
                }),
            }],
            host: HostSample {
                memory_bytes: 100,
                memory_available_bytes: 40,
                cpu_seconds: 2.0 * cpu,
                network_receive_bytes: 1000,
                network_transmit_bytes: 500,
                ..Default::default()
            },
            ..Default::default()
        }
    }

    #[test]
    fn history_keeps_the_last_samples_oldest_first() {
        let h = History::new(HISTORY_PERIOD);
        for i in 0..HISTORY_SAMPLES + 5 {
            h.record(i as f64, &snap(i as f64 / 10.0, i % 2 == 0));
        }
        let all = h.query(Some("a1"), None);
        assert_eq!(all.samples.len(), HISTORY_SAMPLES);
        assert_eq!(all.samples[0].time, 5.0, "the oldest went");
        assert_eq!(all.host_memory_bytes, 100);
        assert_eq!(all.samples[1].instance.as_ref().unwrap().cpu_seconds, 0.6);
        assert_eq!(all.samples[0].instance, None, "not running then");
        assert_eq!(all.samples[1].instances_running, 1);
        assert_eq!(
            all.samples[1].host_cpu_seconds, 1.2,
            "the host's CPU counter"
        );
        assert_eq!(
            (
                all.samples[1].host_network_receive_bytes,
                all.samples[1].host_network_transmit_bytes
            ),
            (1000, 500)
        );
        let recent = h.query(None, Some(240.0));
        assert_eq!(recent.samples.len(), 4);
        assert!(recent.samples.iter().all(|s| s.instance.is_none()));
        assert_eq!(h.query(Some("other"), None).samples[2].instance, None);
    }

    #[test]
    fn available_memory_is_read_in_bytes() {
        let m = "MemTotal:       24567890 kB\nMemFree:  100 kB\nMemAvailable:   2048 kB\n";
        assert_eq!(crate::system::meminfo_bytes(m, "MemAvailable"), 2048 * 1024);
        assert_eq!(crate::system::meminfo_bytes(m, "MemTotal"), 24567890 * 1024);
        assert_eq!(
            crate::system::meminfo_bytes("MemTotal: 1 kB\n", "MemAvailable"),
            0
        );
    }
}
