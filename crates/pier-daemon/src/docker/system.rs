//! System endpoints: `_ping`, `version`, `info`, `system/df`, `auth`, and `events`.
//!
//! Events: the engine's event log ([`pier_engine::events`]) keeps the recent ones and
//! replays them (`docker events --since`); this shapes each as Docker's JSON.

use std::collections::HashMap;

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use pier_api::containers::ContainerStatus;
use pier_api::docker::system::{daemon_id, info_json, Info};
use pier_api::docker::version::version_json;
use pier_engine::events::{EventQuery, LoggedEvent, EVENT_FILTERS};
use pier_engine::system::{HostInfo, ProcessFacts};
use pier_engine::RequestContext;
use serde_json::{json, Value};

use super::params::{check_filters, filters, Params};
use super::{blocking, DResult, DState};
use crate::api::Ctx;

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
    let kernel = HostInfo::read().kernel;
    let v = version_json(arch, &kernel, env!("CARGO_PKG_VERSION"));
    super::json(StatusCode::OK, v)
}

/// `GET /info`.
pub async fn info(Ctx(ctx): Ctx, state: DState) -> DResult<Response> {
    let d = state.0;
    let host = HostInfo::read();
    let (containers, images) = blocking({
        let d = d.clone();
        move || {
            Ok((
                d.engine.instances.inspect_all(&ctx)?,
                d.engine.images(&ctx, false)?.len(),
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
    let facts = ProcessFacts::read();
    let root = d.engine.root.display().to_string();
    let info = Info {
        id: daemon_id(&root),
        containers: containers.len(),
        running,
        paused,
        images,
        root,
        kernel: host.kernel,
        os: host.os,
        hostname: host.hostname,
        cpus: host.cpus,
        memory: host.memory,
        cgroup_version: facts.cgroup_version,
        open_fds: facts.open_fds,
        listeners: d.events.listeners(),
        server_version: pier_api::docker::version::DOCKER_VERSION.into(),
        exe: facts.exe,
        runc: facts.runc,
        vm: d.engine.instances.vm_facts().is_some(),
    };
    Ok(super::json(StatusCode::OK, info_json(&info)))
}

/// `GET /system/df`.
pub async fn df(Ctx(ctx): Ctx, state: DState) -> DResult<Response> {
    let d = state.0;
    let v = blocking(move || {
        let df = d.engine.disk_usage(&ctx)?;
        let images = d.engine.images(&ctx, false)?;
        let containers = d.engine.instances.inspect_all(&ctx)?;
        let shared: HashMap<&str, u64> = df
            .images
            .iter()
            .map(|i| (i.id.as_str(), i.shared_size))
            .collect();
        let size_rw: HashMap<&str, u64> = df
            .containers
            .iter()
            .map(|c| (c.id.as_str(), c.size_rw))
            .collect();
        let image_json: Vec<Value> = images
            .iter()
            .map(|i| {
                let mut v = pier_api::docker::images::summary_json(i);
                v["SharedSize"] = json!(shared.get(i.id.as_str()).copied().unwrap_or(0));
                v
            })
            .collect();
        let mut configs = pier_engine::views::ImageConfigs::default();
        let container_json: Vec<Value> = containers
            .iter()
            .map(|c| {
                let facts = d.engine.container_facts(c, &mut configs);
                let mut v = pier_api::docker::container::summary(c, &facts);
                let rw = size_rw.get(c.id.as_str()).copied().unwrap_or(0);
                let image_size = images
                    .iter()
                    .find(|i| i.id == c.image_id)
                    .map_or(0, |i| i.size);
                v["SizeRw"] = json!(rw);
                v["SizeRootFs"] = json!(rw + image_size);
                v
            })
            .collect();
        let volumes = super::volumes::df_json(&d, &ctx);
        Ok(json!({
            "LayersSize": df.layers_size,
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

/// An event in Docker's shape (`Type`, `Action`, `Actor`, `time`, `timeNano`).
fn event_json(e: &LoggedEvent) -> Value {
    let mut v = json!({
        "Type": e.kind,
        "Action": e.action,
        "Actor": {"ID": e.id, "Attributes": e.attributes},
        "scope": "local",
        "time": e.time_nano / 1_000_000_000,
        "timeNano": e.time_nano,
    });
    if e.kind == "container" {
        v["status"] = json!(e.action);
        v["id"] = json!(e.id);
        v["from"] = json!(e.attributes.get("image").cloned().unwrap_or_default());
    }
    v
}

/// Sends an event of the Docker API's own (images, networks, volumes) to every listener,
/// `pier events` included.
pub(crate) fn emit(
    d: &super::Docker,
    kind: &str,
    action: &str,
    id: &str,
    attrs: &[(&str, &str)],
    ctx: &RequestContext,
) {
    d.engine.emit(ctx, kind, action, id, attrs);
}

/// `GET /events?since=&until=&filters=`: past events kept since the daemon started, then
/// new ones as they happen, until `until` or the client goes.
pub async fn events(Ctx(ctx): Ctx, state: DState, p: Params) -> DResult<Response> {
    let filters = p.filters()?;
    check_filters(&filters, EVENT_FILTERS)?;
    let since = filters::time_nanos("since", p.nonempty("since"))?;
    let until = filters::time_nanos("until", p.nonempty("until"))?;
    let mut rx = state.events.stream(
        &ctx,
        EventQuery {
            filters,
            since,
            until,
        },
    );
    let (tx, out) = tokio::sync::mpsc::channel::<Value>(256);
    tokio::spawn(async move {
        while let Some(e) = rx.recv().await {
            if tx.send(event_json(&e)).await.is_err() {
                return;
            }
        }
    });
    let mut resp = super::json_stream(out);
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, "no-cache".parse().expect("ascii"));
    Ok(resp)
}
