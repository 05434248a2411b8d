//! Volumes and mounts: `-v`, `--mount`, `--tmpfs` at create, `Mounts` in inspect, and
//! `/volumes`. The engine has no volumes yet, so these answer with a clear error until it
//! does; a container without mounts is unaffected.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::routing::{get, post};
use axum::Router;
use pier_api::containers::{ContainerCreate, ContainerInspect};
use serde_json::{json, Value};

use super::{DResult, Docker, DockerError};

fn not_yet() -> DockerError {
    DockerError::not_implemented(
        "volumes are not supported by pier yet: run the container without -v/--mount/--tmpfs",
    )
}

pub fn routes() -> Router<Arc<Docker>> {
    async fn refuse() -> DockerError {
        not_yet()
    }
    Router::new()
        .route("/volumes", get(refuse))
        .route("/volumes/create", post(refuse))
        .route("/volumes/prune", post(refuse))
        .route("/volumes/{name}", get(refuse).delete(refuse))
}

/// Maps `Binds`, `Mounts`, `Tmpfs` and `Config.Volumes` onto the request.
pub(crate) fn apply(
    _d: &Docker,
    _req: &mut ContainerCreate,
    binds: Vec<String>,
    mounts: Vec<Value>,
    tmpfs: BTreeMap<String, String>,
    volumes: BTreeMap<String, Value>,
) -> DResult<()> {
    if !binds.is_empty() || !mounts.is_empty() || !tmpfs.is_empty() || !volumes.is_empty() {
        return Err(not_yet());
    }
    Ok(())
}

/// `Config.Volumes`: the image's.
pub(crate) fn config_volumes(_c: &ContainerInspect, img: &Value) -> Value {
    img.get("Volumes").cloned().unwrap_or(Value::Null)
}

pub(crate) fn binds_json(_c: &ContainerInspect) -> Value {
    Value::Null
}

pub(crate) fn host_config_mounts(_c: &ContainerInspect) -> Value {
    json!([])
}

pub(crate) fn tmpfs_json(_c: &ContainerInspect) -> Value {
    Value::Null
}

/// `Mounts` of inspect and of a listing.
pub(crate) fn mounts_json(_d: &Docker, _c: &ContainerInspect) -> Value {
    json!([])
}

/// `Volumes` of `system df`.
pub(crate) fn df_json(_d: &Docker) -> Value {
    json!([])
}

/// The `volume` filter of a listing.
pub(crate) fn uses(_c: &ContainerInspect, _volume: &str) -> bool {
    false
}

/// `docker rm -v`: the container's anonymous volumes go with it.
pub(crate) async fn remove_anonymous(_d: &Docker, _c: &ContainerInspect) {}
