//! System endpoints: `_ping`, `version`, `info`, `system/df`, `auth`, and `events`.
//!
//! Events: the engine broadcasts its own (`pier events`); [`EventLog`] turns each into
//! Docker's shape (`Type`, `Action`, `Actor`, `time`, `timeNano`), adding the container's
//! labels, and keeps the recent ones so that `docker events --since` can look back.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use pier_api::containers::{ContainerStatus, Event};
use pier_api::ProjectName;
use pier_engine::system::HostInfo;
use pier_engine::EngineEvent;
use serde_json::{json, Value};
use tokio::sync::broadcast;

use super::params::{check_filters, label_matches, parse_time, Filters, Params};
use super::{api_string, blocking, DResult, DState, DockerError, MAX_API, MIN_API};
use crate::api::{Ctx, Engine};

/// `GET` and `HEAD /_ping`.
pub async fn ping() -> Response {
    (
        [
            ("builder-version", "1"),
            ("swarm", "inactive"),
            ("cache-control", "no-cache, no-store, must-revalidate"),
            ("pragma", "no-cache"),
            ("content-type", "text/plain; charset=utf-8"),
        ],
        "OK",
    )
        .into_response()
}

/// `GET /version`.
pub async fn version() -> Response {
    let arch = pier_image::build::host_arch();
    let host = HostInfo::read();
    let details = json!({
        "ApiVersion": api_string(MAX_API),
        "MinAPIVersion": api_string(MIN_API),
        "GitCommit": "pier",
        "GoVersion": "rust",
        "Os": "linux",
        "Arch": arch,
        "KernelVersion": host.kernel,
        "Experimental": "false",
        "BuildTime": "",
        "PierVersion": env!("CARGO_PKG_VERSION"),
    });
    super::json(
        StatusCode::OK,
        json!({
            "Platform": {"Name": format!("Pier {}", env!("CARGO_PKG_VERSION"))},
            "Components": [{"Name": "Engine", "Version": super::DOCKER_VERSION, "Details": details}],
            "Version": super::DOCKER_VERSION,
            "ApiVersion": api_string(MAX_API),
            "MinAPIVersion": api_string(MIN_API),
            "GitCommit": "pier",
            "GoVersion": "rust",
            "Os": "linux",
            "Arch": arch,
            "KernelVersion": host.kernel,
            "BuildTime": "",
        }),
    )
}

/// `GET /info`.
pub async fn info(Ctx(ctx): Ctx, state: DState) -> DResult<Response> {
    let d = state.0;
    let host = HostInfo::read();
    let (containers, images) = blocking({
        let d = d.clone();
        let ctx_project = ctx.project.clone();
        move || {
            Ok((
                d.engine.containers.inspect_all(&ctx_project.clone())?,
                d.engine.images.list(&ctx_project.clone())?.len(),
            ))
        }
    })
    .await?;
    let count = |s: &[ContainerStatus]| {
        containers
            .iter()
            .filter(|c| s.contains(&c.state.status))
            .count()
    };
    let running = count(&[ContainerStatus::Running, ContainerStatus::Restarting]);
    let paused = count(&[ContainerStatus::Paused]);
    let cgroup_version = if std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        "2"
    } else {
        "1"
    };
    let root = d.engine.root.display().to_string();
    let id = super::derived_id(&[&root], 32);
    let id = format!(
        "{}-{}-{}-{}-{}",
        &id[..8],
        &id[8..12],
        &id[12..16],
        &id[16..20],
        &id[20..]
    );
    let runc = if which("runc") {
        json!({"runc": {"path": "runc"}})
    } else {
        json!({})
    };
    let mut runtimes = json!({"pier": {"path": std::env::current_exe().map(|p| p.display().to_string()).unwrap_or_default()}});
    if let (Some(r), Some(extra)) = (runtimes.as_object_mut(), runc.as_object()) {
        r.extend(extra.clone());
    }
    let commit = json!({"ID": "", "Expected": ""});
    Ok(super::json(
        StatusCode::OK,
        json!({
            "ID": id,
            "Containers": containers.len(),
            "ContainersRunning": running,
            "ContainersPaused": paused,
            "ContainersStopped": containers.len() - running - paused,
            "Images": images,
            "Driver": "overlay",
            "DriverStatus": [["Backing Filesystem", "overlay"]],
            "Plugins": {
                "Volume": ["local"],
                "Network": ["bridge", "host", "null"],
                "Authorization": null,
                "Log": ["json-file"],
            },
            "MemoryLimit": true,
            "SwapLimit": true,
            "KernelMemory": false,
            "KernelMemoryTCP": false,
            "CpuCfsPeriod": true,
            "CpuCfsQuota": true,
            "CPUShares": true,
            "CPUSet": true,
            "PidsLimit": true,
            "OomKillDisable": false,
            "IPv4Forwarding": true,
            "BridgeNfIptables": false,
            "BridgeNfIp6tables": false,
            "Debug": false,
            "NFd": std::fs::read_dir("/proc/self/fd").map(|d| d.count()).unwrap_or(0),
            "NGoroutines": 0,
            "SystemTime": pier_api::time::format_rfc3339_nanos(SystemTime::now()),
            "LoggingDriver": "json-file",
            "CgroupDriver": "cgroupfs",
            "CgroupVersion": cgroup_version,
            "NEventsListener": d.events.tx.receiver_count(),
            "KernelVersion": host.kernel,
            "OperatingSystem": host.os,
            "OSVersion": "",
            "OSType": "linux",
            "Architecture": std::env::consts::ARCH,
            "IndexServerAddress": "https://index.docker.io/v1/",
            "RegistryConfig": {
                "AllowNondistributableArtifactsCIDRs": [],
                "AllowNondistributableArtifactsHostnames": [],
                "InsecureRegistryCIDRs": ["127.0.0.0/8"],
                "IndexConfigs": {},
                "Mirrors": [],
            },
            "NCPU": host.cpus,
            "MemTotal": host.memory,
            "GenericResources": null,
            "DockerRootDir": root,
            "HttpProxy": "",
            "HttpsProxy": "",
            "NoProxy": "",
            "Name": host.hostname,
            "Labels": [],
            "ExperimentalBuild": false,
            "ServerVersion": super::DOCKER_VERSION,
            "Runtimes": runtimes,
            "DefaultRuntime": "pier",
            "Swarm": {
                "NodeID": "",
                "NodeAddr": "",
                "LocalNodeState": "inactive",
                "ControlAvailable": false,
                "Error": "",
                "RemoteManagers": null,
            },
            "LiveRestoreEnabled": true,
            "Isolation": "",
            "InitBinary": "",
            "ContainerdCommit": commit,
            "RuncCommit": commit,
            "InitCommit": commit,
            "SecurityOptions": ["name=seccomp,profile=builtin"],
            "Warnings": [],
        }),
    ))
}

fn which(tool: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
}

/// `GET /system/df`.
pub async fn df(Ctx(ctx): Ctx, state: DState) -> DResult<Response> {
    let d = state.0;
    let ctx_project = ctx.project.clone();
    let v = blocking(move || {
        let images = d.engine.images.list(&ctx_project.clone())?;
        let containers = d.engine.containers.inspect_all(&ctx_project.clone())?;
        let mut layers = 0u64;
        let image_json: Vec<Value> = images
            .iter()
            .map(|i| {
                layers += i.size;
                super::images::summary_json(i)
            })
            .collect();
        let mut configs = pier_engine::views::ImageConfigs::default();
        let container_json: Vec<Value> = containers
            .iter()
            .map(|c| {
                let facts = d.engine.container_facts(c, &mut configs);
                let mut v = pier_api::docker::container::summary(c, &facts);
                let rw = d.engine.containers.size_rw(c);
                let image_size = images
                    .iter()
                    .find(|i| i.id == c.image_id)
                    .map_or(0, |i| i.size);
                v["SizeRw"] = json!(rw);
                v["SizeRootFs"] = json!(rw + image_size);
                v
            })
            .collect();
        let volumes = super::volumes::df_json(&d, &ctx_project);
        Ok(json!({
            "LayersSize": layers,
            "Images": image_json,
            "Containers": container_json,
            "Volumes": volumes,
            "BuildCache": [],
        }))
    })
    .await?;
    Ok(super::json(StatusCode::OK, v))
}

// ---- events -----------------------------------------------------------------------------

/// How many past events `docker events --since` can see.
const KEPT: usize = 4096;

/// One event in Docker's terms.
#[derive(Debug, Clone)]
pub struct DockerEvent {
    /// The project it happened in; a client sees its own project's.
    pub project: ProjectName,
    pub kind: String,
    pub action: String,
    pub id: String,
    pub attributes: BTreeMap<String, String>,
    pub time_nano: i64,
}

impl DockerEvent {
    pub fn to_json(&self) -> Value {
        let mut v = json!({
            "Type": self.kind,
            "Action": self.action,
            "Actor": {"ID": self.id, "Attributes": self.attributes},
            "scope": "local",
            "time": self.time_nano / 1_000_000_000,
            "timeNano": self.time_nano,
        });
        if self.kind == "container" {
            v["status"] = json!(self.action);
            v["id"] = json!(self.id);
            v["from"] = json!(self.attributes.get("image").cloned().unwrap_or_default());
        }
        v
    }

    fn matches(&self, f: &Filters) -> bool {
        let any = |key: &str, test: &dyn Fn(&str) -> bool| {
            f.get(key)
                .is_none_or(|vals| vals.is_empty() || vals.iter().any(|v| test(v)))
        };
        let name = self.attributes.get("name").map(String::as_str);
        any("type", &|v| v == self.kind)
            && any("event", &|v| {
                self.action == v
                    || self
                        .action
                        .strip_prefix(v)
                        .is_some_and(|r| r.starts_with(':'))
            })
            && any("container", &|v| {
                self.kind == "container" && (self.id.starts_with(v) || name == Some(v))
            })
            && any("image", &|v| {
                let img = self.attributes.get("image").map(String::as_str);
                img == Some(v)
                    || img == Some(&super::normalize_ref(v))
                    || (self.kind == "image" && (self.id.contains(v) || name == Some(v)))
            })
            && any("network", &|v| {
                self.kind == "network" && (self.id.starts_with(v) || name == Some(v))
            })
            && any("volume", &|v| self.kind == "volume" && self.id == v)
            && any("label", &|v| label_matches(&self.attributes, v))
            && any("scope", &|v| v == "local")
    }
}

fn now_nanos() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

/// Recent events in Docker's shape, and a broadcast of new ones.
pub struct EventLog {
    recent: Arc<Mutex<VecDeque<DockerEvent>>>,
    pub(crate) tx: broadcast::Sender<DockerEvent>,
}

impl EventLog {
    /// Starts recording the engine's events.
    pub fn start(engine: &Arc<Engine>) -> EventLog {
        let recent = Arc::new(Mutex::new(VecDeque::new()));
        let (tx, _) = broadcast::channel(1024);
        let mut rx = engine.containers.events.subscribe();
        let engine = engine.clone();
        let (recent2, tx2) = (recent.clone(), tx.clone());
        tokio::spawn(async move {
            let mut labels: HashMap<String, BTreeMap<String, String>> = HashMap::new();
            loop {
                let ev = match rx.recv().await {
                    Ok(ev) => ev,
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(_) => return,
                };
                let de = convert(&engine, ev, &mut labels);
                let mut r = recent2.lock().unwrap();
                if r.len() >= KEPT {
                    r.pop_front();
                }
                r.push_back(de.clone());
                let _ = tx2.send(de);
            }
        });
        EventLog { recent, tx }
    }

    /// The kept events and a receiver of the following ones, with none lost between.
    fn subscribe(&self) -> (Vec<DockerEvent>, broadcast::Receiver<DockerEvent>) {
        let r = self.recent.lock().unwrap();
        let rx = self.tx.subscribe();
        (r.iter().cloned().collect(), rx)
    }
}

/// The engine's event in Docker's terms: container events carry the container's labels;
/// network connects are network events, as Docker has them.
fn convert(
    engine: &Engine,
    ev: EngineEvent,
    labels: &mut HashMap<String, BTreeMap<String, String>>,
) -> DockerEvent {
    let EngineEvent { project, event: ev } = ev;
    let mut attributes = ev.attributes.clone();
    let mut kind = ev.kind.clone();
    let mut id = ev.id.clone();
    let mut action = ev.action.clone();
    if ev.kind == "container" {
        let l = match engine.containers.get(&project, &ev.id) {
            Ok(c) => {
                labels.insert(c.id.clone(), c.config.labels.clone());
                c.config.labels
            }
            Err(_) => labels.get(&ev.id).cloned().unwrap_or_default(),
        };
        if ev.action == "destroy" {
            labels.remove(&ev.id);
        }
        for (k, v) in l {
            attributes.entry(k).or_insert(v);
        }
        match ev.action.as_str() {
            "connect" | "disconnect" => {
                let net = ev.attributes.get("network").cloned().unwrap_or_default();
                kind = "network".into();
                id = engine
                    .containers
                    .networks
                    .get(&project, &net)
                    .map(|n| n.id)
                    .unwrap_or_else(|_| net.clone());
                attributes = BTreeMap::from([
                    ("container".to_string(), ev.id.clone()),
                    ("name".to_string(), net),
                    ("type".to_string(), "bridge".to_string()),
                ]);
            }
            "exec_start" => {
                if let Some(cmd) = attributes.remove("execCommand") {
                    action = format!("exec_start: {cmd}");
                }
            }
            _ => {}
        }
    }
    DockerEvent {
        project,
        kind,
        action,
        id,
        attributes,
        time_nano: now_nanos(),
    }
}

/// Sends an event of the Docker API's own (images, networks, volumes) to every listener,
/// `pier events` included.
pub(crate) fn emit(
    d: &super::Docker,
    kind: &str,
    action: &str,
    id: &str,
    attrs: &[(&str, &str)],
    project: &ProjectName,
) {
    let _ = d.engine.containers.events.send(EngineEvent {
        project: project.clone(),
        event: Event {
            time: pier_api::time::format_rfc3339_nanos(SystemTime::now()),
            kind: kind.into(),
            action: action.into(),
            id: id.into(),
            attributes: attrs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        },
    });
}

/// `GET /events?since=&until=&filters=`: past events kept since the daemon started, then
/// new ones as they happen, until `until` or the client goes.
pub async fn events(Ctx(ctx): Ctx, state: DState, p: Params) -> DResult<Response> {
    let d = state.0;
    let filters = p.filters()?;
    check_filters(
        &filters,
        &[
            "type",
            "event",
            "container",
            "image",
            "network",
            "volume",
            "label",
            "scope",
            "daemon",
        ],
    )?;
    let time = |k: &str| -> DResult<Option<i64>> {
        match p.nonempty(k) {
            None => Ok(None),
            Some(v) => parse_time(v)
                .map(|t| Some((t * 1e9) as i64))
                .ok_or_else(|| {
                    DockerError::bad_request(format!(
                        "invalid {k} {v:?}: give Unix seconds or an RFC 3339 time"
                    ))
                }),
        }
    };
    let (since, until) = (time("since")?, time("until")?);
    let (past, mut rx) = d.events.subscribe();
    let mine = ctx.project.clone();
    let (tx, out) = tokio::sync::mpsc::channel::<Value>(256);
    tokio::spawn(async move {
        if let Some(since) = since {
            for e in past {
                if e.project == mine
                    && e.time_nano >= since
                    && until.is_none_or(|u| e.time_nano <= u)
                    && e.matches(&filters)
                    && tx.send(e.to_json()).await.is_err()
                {
                    return;
                }
            }
        }
        loop {
            let wait = until.map(|u| {
                std::time::Duration::from_nanos(u.saturating_sub(now_nanos()).max(0) as u64)
            });
            let next = async {
                loop {
                    match rx.recv().await {
                        Ok(e) => return Some(e),
                        Err(broadcast::error::RecvError::Lagged(_)) => continue,
                        Err(_) => return None,
                    }
                }
            };
            let e = match wait {
                Some(w) => match tokio::time::timeout(w, next).await {
                    Ok(e) => e,
                    Err(_) => return,
                },
                None => tokio::select! {
                    e = next => e,
                    _ = tx.closed() => return,
                },
            };
            let Some(e) = e else { return };
            if until.is_some_and(|u| e.time_nano > u) {
                return;
            }
            if e.project == mine && e.matches(&filters) && tx.send(e.to_json()).await.is_err() {
                return;
            }
        }
    });
    let mut resp = super::json_stream(out);
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, "no-cache".parse().expect("ascii"));
    Ok(resp)
}
