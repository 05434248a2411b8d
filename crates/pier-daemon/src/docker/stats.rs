//! `docker stats` and `docker top`: the engine's cgroup readings in Docker's shape
//! (`cpu_stats` with `precpu_stats` a reading earlier, so the CLI can compute a CPU
//! percentage; `memory_stats`, `pids_stats`, `blkio_stats`, `networks`).

use std::sync::Arc;
use std::time::Duration;

use axum::extract::Path;
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use pier_api::containers::ContainerStats;
use serde_json::{json, Value};

use super::params::Params;
use super::{blocking, container, json, DResult, DState, Docker};
use crate::api::Ctx;

pub fn routes() -> Router<Arc<Docker>> {
    Router::new()
        .route("/containers/{id}/stats", get(stats))
        .route("/containers/{id}/top", get(top))
}

fn cpu_json(s: Option<&ContainerStats>) -> Value {
    match s {
        None => {
            json!({"cpu_usage": {"total_usage": 0, "usage_in_kernelmode": 0, "usage_in_usermode": 0}, "throttling_data": {"periods": 0, "throttled_periods": 0, "throttled_time": 0}})
        }
        Some(s) => json!({
            "cpu_usage": {"total_usage": s.cpu_usage_ns, "usage_in_kernelmode": 0, "usage_in_usermode": 0},
            "system_cpu_usage": s.system_cpu_ns,
            "online_cpus": s.online_cpus,
            "throttling_data": {"periods": 0, "throttled_periods": 0, "throttled_time": 0},
        }),
    }
}

/// The interface counters of a reading, as Docker's `networks`.
fn networks(now: &ContainerStats) -> Value {
    now.networks
        .iter()
        .map(|(name, c)| {
            let v = json!({
                "rx_bytes": c.rx_bytes, "rx_packets": c.rx_packets, "rx_errors": c.rx_errors, "rx_dropped": c.rx_dropped,
                "tx_bytes": c.tx_bytes, "tx_packets": c.tx_packets, "tx_errors": c.tx_errors, "tx_dropped": c.tx_dropped,
            });
            (name.clone(), v)
        })
        .collect::<serde_json::Map<String, Value>>()
        .into()
}

fn stats_json(id: &str, name: &str, now: &ContainerStats, pre: Option<&ContainerStats>) -> Value {
    // Unlimited (or more than the host has) shows as the host's memory, as on Docker.
    let host = pier_engine::system::HostInfo::read().memory;
    let limit = now.memory_limit.filter(|l| *l < host).unwrap_or(host);
    json!({
        "read": now.read,
        "preread": pre.map_or(super::ZERO_TIME.to_string(), |p| p.read.clone()),
        "pids_stats": {"current": now.pids_current, "limit": now.pids_limit},
        "blkio_stats": {
            "io_service_bytes_recursive": [
                {"major": 0, "minor": 0, "op": "read", "value": now.io_read_bytes},
                {"major": 0, "minor": 0, "op": "write", "value": now.io_write_bytes},
            ],
            "io_serviced_recursive": null, "io_queue_recursive": null,
            "io_service_time_recursive": null, "io_wait_time_recursive": null,
            "io_merged_recursive": null, "io_time_recursive": null, "sectors_recursive": null,
        },
        "num_procs": 0,
        "storage_stats": {},
        "cpu_stats": cpu_json(Some(now)),
        "precpu_stats": cpu_json(pre),
        "memory_stats": {"usage": now.memory_usage, "stats": {}, "limit": limit},
        "name": format!("/{name}"),
        "id": id,
        "networks": networks(now),
    })
}

/// `GET /containers/{id}/stats?stream=&one-shot=`: a reading a second, or one reading
/// (with the one a moment before as `precpu_stats`) when not streamed.
async fn stats(
    Ctx(ctx): Ctx,
    state: DState,
    Path(id): Path<String>,
    p: Params,
) -> DResult<Response> {
    let d = state.0;
    let c = container(&d, &id, &ctx.project)?;
    let stream = p.get("stream").is_none() || p.bool("stream");
    let one_shot = p.bool("one-shot");
    let read = {
        let d = d.clone();
        let id = c.id.clone();
        let ctx_project = ctx.project.clone();
        move || {
            let d = d.clone();
            let id = id.clone();
            let ctx_project = ctx_project.clone();
            async move {
                blocking(move || {
                    let c = container(&d, &id, &ctx_project)?;
                    Ok((d.engine.containers.stats(&ctx_project.clone(), &c.id)?, c))
                })
                .await
            }
        }
    };
    if !stream {
        let pre = if one_shot || !pier_api::docker::container::is_running(&c) {
            None
        } else {
            let (s, _) = read().await?;
            tokio::time::sleep(Duration::from_millis(500)).await;
            Some(s)
        };
        let (now, c) = read().await?;
        return Ok(json(
            StatusCode::OK,
            stats_json(&c.id, &c.name, &now, pre.as_ref()),
        ));
    }
    let (tx, rx) = tokio::sync::mpsc::channel::<Value>(4);
    tokio::spawn(async move {
        let mut pre: Option<ContainerStats> = None;
        loop {
            let Ok((now, c)) = read().await else { return };
            let v = stats_json(&c.id, &c.name, &now, pre.as_ref());
            if tx.send(v).await.is_err() || !pier_api::docker::container::is_running(&c) {
                return;
            }
            pre = Some(now);
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(1)) => {},
                _ = tx.closed() => return,
            }
        }
    });
    Ok(super::json_stream(rx))
}

/// `GET /containers/{id}/top?ps_args=`: the columns are fixed (`ps -ef`'s).
async fn top(Ctx(ctx): Ctx, state: DState, Path(id): Path<String>, p: Params) -> DResult<Response> {
    let d = state.0;
    let c = container(&d, &id, &ctx.project)?;
    if let Some(args) = p.nonempty("ps_args").filter(|a| *a != "-ef") {
        tracing::debug!(
            ps_args = args,
            "docker top: ps options are not applied; showing ps -ef columns"
        );
    }
    let ctx_project = ctx.project.clone();
    let t = blocking(move || Ok(d.engine.containers.top(&ctx_project.clone(), &c.id)?)).await?;
    Ok(json(
        StatusCode::OK,
        json!({"Titles": t.titles, "Processes": t.processes}),
    ))
}
