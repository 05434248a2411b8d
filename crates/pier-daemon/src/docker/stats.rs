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
use pier_api::docker::stats::stats_json;
use serde_json::{json, Value};

use super::params::Params;
use super::{blocking, container, json, DResult, DState, Docker};
use crate::api::Ctx;

pub fn routes() -> Router<Arc<Docker>> {
    Router::new()
        .route("/containers/{id}/stats", get(stats))
        .route("/containers/{id}/top", get(top))
}

/// The host's memory, an unlimited container's limit in Docker's stats.
fn host_memory() -> u64 {
    pier_engine::system::HostInfo::read().memory
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
    let c = container(&d, &id, &ctx)?;
    let stream = p.get("stream").is_none() || p.bool("stream");
    let one_shot = p.bool("one-shot");
    let read = {
        let d = d.clone();
        let id = c.id.clone();
        move || {
            let d = d.clone();
            let id = id.clone();
            let ctx = ctx.clone();
            async move {
                blocking(move || {
                    let c = container(&d, &id, &ctx)?;
                    Ok((d.engine.instances.stats(&ctx, &c.id)?, c))
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
            stats_json(&c.id, &c.name, &now, pre.as_ref(), host_memory()),
        ));
    }
    let (tx, rx) = tokio::sync::mpsc::channel::<Value>(4);
    tokio::spawn(async move {
        let mut pre: Option<ContainerStats> = None;
        loop {
            let Ok((now, c)) = read().await else { return };
            let v = stats_json(&c.id, &c.name, &now, pre.as_ref(), host_memory());
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
    let c = container(&d, &id, &ctx)?;
    if let Some(args) = p.nonempty("ps_args").filter(|a| *a != "-ef") {
        tracing::debug!(
            ps_args = args,
            "docker top: ps options are not applied; showing ps -ef columns"
        );
    }
    let t = blocking(move || Ok(d.engine.instances.top(&ctx, &c.id)?)).await?;
    Ok(json(
        StatusCode::OK,
        json!({"Titles": t.titles, "Processes": t.processes}),
    ))
}
