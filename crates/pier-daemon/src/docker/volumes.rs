//! Volumes and mounts in Docker's terms: `HostConfig.Binds` (`-v`), `HostConfig.Mounts`
//! (`--mount`), `HostConfig.Tmpfs` (`--tmpfs`) and `Config.Volumes` (anonymous volumes)
//! become Pier's mount specs at create; `Mounts` of inspect shows what the container got;
//! `/volumes` maps onto the engine's volumes (create, ls, inspect, rm, prune).
//!
//! A named volume is made on first use, as Docker does; `docker volume create` of a name
//! that exists returns it.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::Path;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use pier_api::containers::{ContainerCreate, ContainerInspect};
use pier_api::volumes::{MountKind, MountSpec, VolumeCreate, VolumeInspect};
use pier_api::{ErrorKind, TmpfsFlag, VolumeFlag};
use serde::Deserialize;
use serde_json::{json, Value};

use super::params::{check_filters, label_matches, Params};
use super::system::emit;
use super::{blocking, json, DResult, DState, Docker, DockerError};
use crate::api::Ctx;
use pier_api::ProjectName;

pub fn routes() -> Router<Arc<Docker>> {
    Router::new()
        .route("/volumes", get(list))
        .route("/volumes/create", post(create))
        .route("/volumes/prune", post(prune))
        .route("/volumes/{name}", get(inspect).delete(remove))
}

// ---- create: Docker's mount forms as Pier's ---------------------------------------------

fn bad(m: impl Into<String>) -> DockerError {
    DockerError::bad_request(m)
}

/// `-v SRC:DST[:OPTS]` (a path is a bind, a name a volume) or `-v DST` (anonymous).
fn from_bind(b: &str) -> DResult<MountSpec> {
    b.parse::<VolumeFlag>()
        .map(VolumeFlag::into_spec)
        .map_err(|e| bad(e.to_string()))
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct BindOptions {
    propagation: Option<String>,
    create_mountpoint: Option<bool>,
    non_recursive: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct DriverConfig {
    name: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct VolumeOptions {
    no_copy: Option<bool>,
    labels: Option<BTreeMap<String, String>>,
    driver_config: Option<DriverConfig>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct TmpfsOptions {
    size_bytes: Option<i64>,
    mode: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct MountBody {
    #[serde(rename = "Type")]
    kind: Option<String>,
    source: Option<String>,
    target: Option<String>,
    read_only: Option<bool>,
    bind_options: Option<BindOptions>,
    volume_options: Option<VolumeOptions>,
    tmpfs_options: Option<TmpfsOptions>,
}

/// `--mount type=...`; returns the spec and the labels of a volume to make.
fn from_mount(v: Value) -> DResult<(MountSpec, Option<BTreeMap<String, String>>)> {
    let b: MountBody =
        serde_json::from_value(v).map_err(|e| bad(format!("invalid mount config: {e}")))?;
    let target = b
        .target
        .filter(|t| !t.is_empty())
        .ok_or_else(|| bad("invalid mount config: Target must not be empty"))?;
    let mut m = MountSpec {
        target,
        source: b.source.filter(|s| !s.is_empty()),
        read_only: b.read_only.unwrap_or(false),
        ..Default::default()
    };
    let mut labels = None;
    match b.kind.as_deref().unwrap_or("volume") {
        "bind" => {
            m.kind = MountKind::Bind;
            let Some(src) = &m.source else {
                return Err(bad(
                    "invalid mount config for type \"bind\": field Source must not be empty",
                ));
            };
            let o = b.bind_options.unwrap_or_default();
            if o.create_mountpoint.unwrap_or(false) {
                m.options.insert("create_host_path".into(), "true".into());
            } else if !std::path::Path::new(src).exists() {
                return Err(bad(format!(
                    "invalid mount config for type \"bind\": bind source path does not exist: {src}"
                )));
            }
            if let Some(p) = o.propagation.filter(|p| !p.is_empty()) {
                m.options.insert("propagation".into(), p);
            }
            if o.non_recursive.unwrap_or(false) {
                return Err(bad(
                    "non-recursive bind mounts are not supported by pier yet",
                ));
            }
        }
        "volume" => {
            m.kind = MountKind::Volume;
            let o = b.volume_options.unwrap_or_default();
            if o.no_copy.unwrap_or(false) {
                m.options.insert("nocopy".into(), "true".into());
            }
            if let Some(d) = o
                .driver_config
                .and_then(|d| d.name)
                .filter(|n| !n.is_empty() && n != "local")
            {
                return Err(bad(format!(
                    "volume driver {d:?} is not supported by pier: use local"
                )));
            }
            labels = o.labels.filter(|l| !l.is_empty());
        }
        "tmpfs" => {
            m.kind = MountKind::Tmpfs;
            if m.source.is_some() {
                return Err(bad(
                    "invalid mount config for type \"tmpfs\": field Source must be empty",
                ));
            }
            let o = b.tmpfs_options.unwrap_or_default();
            if let Some(s) = o.size_bytes.filter(|s| *s > 0) {
                m.options.insert("size".into(), s.to_string());
            }
            if let Some(mode) = o.mode.filter(|m| *m != 0) {
                m.options.insert("mode".into(), format!("{mode:o}"));
            }
        }
        other => {
            return Err(bad(format!(
                "mount type {other:?} is not supported by pier: use bind, volume or tmpfs"
            )))
        }
    }
    Ok((m, labels))
}

/// `--tmpfs DST:OPTS`, as `HostConfig.Tmpfs` carries it.
fn from_tmpfs(target: &str, opts: &str) -> DResult<MountSpec> {
    TmpfsFlag::from_parts(target, opts)
        .map(TmpfsFlag::into_spec)
        .map_err(|e| bad(e.to_string()))
}

/// Maps `Binds`, `Mounts`, `Tmpfs` and `Config.Volumes` onto the request. Volumes named
/// with labels (`--mount volume-label=...`) are made here, so they carry them.
pub(crate) fn apply(
    d: &Docker,
    req: &mut ContainerCreate,
    binds: Vec<String>,
    mounts: Vec<Value>,
    tmpfs: BTreeMap<String, String>,
    volumes: BTreeMap<String, Value>,
    project: &ProjectName,
) -> DResult<()> {
    let mut out: Vec<MountSpec> = Vec::new();
    for b in &binds {
        out.push(from_bind(b)?);
    }
    for m in mounts {
        let (spec, labels) = from_mount(m)?;
        if let (Some(labels), Some(name)) = (labels, spec.source.clone()) {
            let volumes = &d.engine.containers.volumes;
            if volumes.get(&project.clone(), &name).is_err() {
                let r = volumes.create(
                    &project.clone(),
                    VolumeCreate {
                        name: Some(name),
                        labels,
                        ..Default::default()
                    },
                    false,
                );
                if let Err(e) = r.filter_conflict() {
                    return Err(e.into());
                }
            }
        }
        out.push(spec);
    }
    for (target, opts) in &tmpfs {
        out.push(from_tmpfs(target, opts)?);
    }
    for target in volumes.keys() {
        if !out
            .iter()
            .any(|m| m.target.trim_end_matches('/') == target.trim_end_matches('/'))
        {
            out.push(MountSpec {
                kind: MountKind::Volume,
                target: target.clone(),
                ..Default::default()
            });
        }
    }
    req.mounts = out;
    Ok(())
}

trait FilterConflict {
    fn filter_conflict(self) -> Result<(), crate::error::ApiError>;
}

impl FilterConflict for Result<VolumeInspect, pier_engine::EngineError> {
    /// A volume made meanwhile by someone else is fine.
    fn filter_conflict(self) -> Result<(), crate::error::ApiError> {
        match self {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == ErrorKind::Conflict => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

// ---- inspect: what a container got --------------------------------------------------------

/// `Config.Volumes`: the image's and the anonymous ones.
pub(crate) fn config_volumes(c: &ContainerInspect, img: &Value) -> Value {
    let mut out: BTreeMap<String, Value> = img["Volumes"]
        .as_object()
        .map(|o| o.keys().map(|k| (k.clone(), json!({}))).collect())
        .unwrap_or_default();
    for m in &c.config.mounts {
        if m.kind == MountKind::Volume && m.source.is_none() {
            out.insert(m.target.clone(), json!({}));
        }
    }
    if out.is_empty() {
        Value::Null
    } else {
        json!(out)
    }
}

/// `HostConfig.Binds`: bind mounts and named volumes as `SRC:DST[:ro]`.
pub(crate) fn binds_json(c: &ContainerInspect) -> Value {
    let binds: Vec<String> = c
        .config
        .mounts
        .iter()
        .filter(|m| m.kind != MountKind::Tmpfs)
        .filter_map(|m| {
            let src = m.source.as_ref()?;
            Some(if m.read_only {
                format!("{src}:{}:ro", m.target)
            } else {
                format!("{src}:{}", m.target)
            })
        })
        .collect();
    if binds.is_empty() {
        Value::Null
    } else {
        json!(binds)
    }
}

pub(crate) fn host_config_mounts(_c: &ContainerInspect) -> Value {
    json!([])
}

/// `HostConfig.Tmpfs`.
pub(crate) fn tmpfs_json(c: &ContainerInspect) -> Value {
    let t: BTreeMap<String, String> = c
        .config
        .mounts
        .iter()
        .filter(|m| m.kind == MountKind::Tmpfs)
        .map(|m| {
            let mut o: Vec<String> = m.options.iter().map(|(k, v)| format!("{k}={v}")).collect();
            if m.read_only {
                o.push("ro".into());
            }
            (m.target.clone(), o.join(","))
        })
        .collect();
    if t.is_empty() {
        Value::Null
    } else {
        json!(t)
    }
}

/// `Mounts` of inspect and of a listing.
pub(crate) fn mounts_json(d: &Docker, c: &ContainerInspect) -> Value {
    let list: Vec<Value> = c
        .mounts
        .iter()
        .map(|m| {
            let rw = !m.read_only;
            match m.kind {
                MountKind::Volume => {
                    let name = m.source.clone().unwrap_or_default();
                    json!({
                        "Type": "volume",
                        "Name": name,
                        "Source": d.engine.containers.volumes.mountpoint(&c.project, &name),
                        "Destination": m.target,
                        "Driver": "local",
                        "Mode": if rw { "z" } else { "ro" },
                        "RW": rw,
                        "Propagation": "",
                    })
                }
                MountKind::Bind => json!({
                    "Type": "bind",
                    "Source": m.source,
                    "Destination": m.target,
                    "Mode": if rw { "" } else { "ro" },
                    "RW": rw,
                    "Propagation": m.options.get("propagation").cloned().unwrap_or_else(|| "rprivate".into()),
                }),
                MountKind::Tmpfs => json!({
                    "Type": "tmpfs",
                    "Source": "",
                    "Destination": m.target,
                    "Mode": "",
                    "RW": rw,
                    "Propagation": "",
                }),
            }
        })
        .collect();
    json!(list)
}

/// The `volume` filter of a listing: by name or mount point.
pub(crate) fn uses(c: &ContainerInspect, volume: &str) -> bool {
    c.mounts.iter().any(|m| {
        (m.kind == MountKind::Volume && m.source.as_deref() == Some(volume)) || m.target == volume
    })
}

// ---- /volumes -----------------------------------------------------------------------------

fn volume_json(d: &Docker, v: &VolumeInspect, usage: bool, project: &ProjectName) -> Value {
    let mut o = json!({
        "Name": v.name,
        "Driver": "local",
        "Mountpoint": d.engine.containers.volumes.mountpoint(&v.project, &v.name),
        "CreatedAt": v.created,
        "Labels": v.labels,
        "Scope": "local",
        "Options": v.options,
    });
    if usage {
        let refs = d
            .engine
            .containers
            .volume_users(&project.clone(), &v.name)
            .map_or(0, |u| u.len());
        o["UsageData"] = json!({
            "Size": v.usage.as_ref().map_or(-1, |u| u.bytes as i64),
            "RefCount": refs,
        });
    }
    o
}

fn volume(d: &Docker, name: &str, project: &ProjectName) -> DResult<VolumeInspect> {
    d.engine
        .containers
        .volumes
        .get(&project.clone(), name)
        .map_err(|e| match e.kind() {
            ErrorKind::NotFound => DockerError::not_found(format!("get {name}: no such volume")),
            _ => e.into(),
        })
}

/// `Volumes` of `system df`.
pub(crate) fn df_json(d: &Docker, project: &ProjectName) -> Value {
    let vols = d
        .engine
        .containers
        .volumes
        .list(&project.clone())
        .unwrap_or_default();
    let list: Vec<Value> = vols
        .iter()
        .map(|v| {
            let full = d
                .engine
                .containers
                .volumes
                .inspect(&project.clone(), &v.name)
                .unwrap_or_else(|_| v.clone());
            volume_json(d, &full, true, project)
        })
        .collect();
    json!(list)
}

/// `GET /volumes?filters=`.
async fn list(Ctx(ctx): Ctx, state: DState, p: Params) -> DResult<Response> {
    let d = state.0;
    let filters = p.filters()?;
    check_filters(&filters, &["name", "label", "driver", "dangling"])?;
    let ctx_project = ctx.project.clone();
    let v = blocking(move || {
        let mut out = Vec::new();
        for v in d.engine.containers.volumes.list(&ctx_project.clone())? {
            let f = |key: &str, test: &dyn Fn(&str) -> bool| {
                filters
                    .get(key)
                    .is_none_or(|vals| vals.is_empty() || vals.iter().any(|x| test(x)))
            };
            let keep = f("name", &|x| v.name.contains(x))
                && f("driver", &|x| x == "local")
                && filters
                    .get("label")
                    .is_none_or(|vals| vals.iter().all(|x| label_matches(&v.labels, x)))
                && f("dangling", &|x| {
                    let unused = d
                        .engine
                        .containers
                        .volume_users(&ctx_project.clone(), &v.name)
                        .is_ok_and(|u| u.is_empty());
                    (x == "true" || x == "1") == unused
                });
            if keep {
                out.push(volume_json(&d, &v, false, &ctx_project));
            }
        }
        Ok(json!({"Volumes": out, "Warnings": []}))
    })
    .await?;
    Ok(json(StatusCode::OK, v))
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct CreateBody {
    name: Option<String>,
    driver: Option<String>,
    driver_opts: Option<BTreeMap<String, String>>,
    labels: Option<BTreeMap<String, String>>,
}

/// `POST /volumes/create`: an existing name is returned as it is.
async fn create(Ctx(ctx): Ctx, state: DState, body: Bytes) -> DResult<Response> {
    let d = state.0;
    let b: CreateBody =
        serde_json::from_slice(&body).map_err(|e| bad(format!("invalid volume config: {e}")))?;
    if let Some(drv) = b
        .driver
        .as_deref()
        .filter(|d| !d.is_empty() && *d != "local")
    {
        return Err(bad(format!(
            "volume driver {drv:?} is not supported by pier: use local"
        )));
    }
    let name = b.name.filter(|n| !n.is_empty());
    let d2 = d.clone();
    let ctx_project = ctx.project.clone();
    let (v, made) = blocking(move || {
        let volumes = &d2.engine.containers.volumes;
        if let Some(n) = &name {
            if let Ok(v) = volumes.get(&ctx_project.clone(), n) {
                return Ok((v, false));
            }
        }
        let req = VolumeCreate {
            name,
            driver: None,
            options: b.driver_opts.unwrap_or_default(),
            labels: b.labels.unwrap_or_default(),
        };
        Ok((volumes.create(&ctx_project.clone(), req, false)?, true))
    })
    .await?;
    if made {
        emit(
            &d,
            "volume",
            "create",
            &v.name,
            &[("driver", "local")],
            &ctx.project,
        );
    }
    Ok(json(
        StatusCode::CREATED,
        volume_json(&d, &v, false, &ctx.project),
    ))
}

/// `GET /volumes/{name}`.
async fn inspect(Ctx(ctx): Ctx, state: DState, Path(name): Path<String>) -> DResult<Response> {
    let d = state.0;
    let ctx_project = ctx.project.clone();
    let v = blocking(move || {
        let v = volume(&d, &name, &ctx_project)?;
        Ok(volume_json(&d, &v, false, &ctx_project))
    })
    .await?;
    Ok(json(StatusCode::OK, v))
}

/// `DELETE /volumes/{name}?force=`.
async fn remove(
    Ctx(ctx): Ctx,
    state: DState,
    Path(name): Path<String>,
    p: Params,
) -> DResult<Response> {
    let d = state.0;
    let force = p.bool("force");
    let d2 = d.clone();
    let n2 = name.clone();
    let ctx_project = ctx.project.clone();
    blocking(move || {
        if let Err(e) = volume(&d2, &n2, &ctx_project) {
            // `rm -f` of a missing volume is not an error, as on Docker.
            return if force { Ok(()) } else { Err(e) };
        }
        d2.engine
            .containers
            .remove_volume(&ctx_project.clone(), &n2)
            .map_err(|e| match e.kind() {
                ErrorKind::Conflict => DockerError::conflict(format!(
                    "remove {n2}: volume is in use - {}",
                    e.message()
                )),
                _ => e.into(),
            })
    })
    .await?;
    emit(
        &d,
        "volume",
        "destroy",
        &name,
        &[("driver", "local")],
        &ctx.project,
    );
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `POST /volumes/prune?filters=`: anonymous volumes no container uses; with the filter
/// `all=true`, named ones too (Docker 23 and later).
async fn prune(Ctx(ctx): Ctx, state: DState, p: Params) -> DResult<Response> {
    let d = state.0;
    let filters = p.filters()?;
    check_filters(&filters, &["all", "label"])?;
    if filters.contains_key("label") {
        return Err(DockerError::not_implemented(
            "volume prune --filter label is not supported by pier yet",
        ));
    }
    let all = filters
        .get("all")
        .and_then(|v| v.first())
        .is_some_and(|v| v == "true" || v == "1");
    let d2 = d.clone();
    let ctx_project = ctx.project.clone();
    let (removed, reclaimed) = blocking(move || {
        let before: BTreeMap<String, u64> = d2
            .engine
            .containers
            .volumes
            .list(&ctx_project.clone())?
            .iter()
            .map(|v| {
                let bytes = d2
                    .engine
                    .containers
                    .volumes
                    .inspect(&ctx_project.clone(), &v.name)
                    .ok()
                    .and_then(|v| v.usage)
                    .map_or(0, |u| u.bytes);
                (v.name.clone(), bytes)
            })
            .collect();
        let removed = d2
            .engine
            .containers
            .prune_volumes(&ctx_project.clone(), all)?;
        let reclaimed = removed.iter().filter_map(|n| before.get(n)).sum::<u64>();
        Ok((removed, reclaimed))
    })
    .await?;
    for n in &removed {
        emit(
            &d,
            "volume",
            "destroy",
            n,
            &[("driver", "local")],
            &ctx.project,
        );
    }
    Ok(json(
        StatusCode::OK,
        json!({"VolumesDeleted": removed, "SpaceReclaimed": reclaimed}),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_mount_forms() {
        let m = from_bind("data:/var/lib/data:ro").unwrap();
        assert_eq!(
            (m.kind, m.source.as_deref(), m.target.as_str(), m.read_only),
            (MountKind::Volume, Some("data"), "/var/lib/data", true)
        );
        let m = from_bind("/srv:/srv:rshared").unwrap();
        assert_eq!(m.kind, MountKind::Bind);
        assert_eq!(
            m.options.get("propagation").map(String::as_str),
            Some("rshared")
        );
        assert!(from_bind("/a:/b:bogus").is_err());
        let (m, labels) = from_mount(json!({"Type": "volume", "Source": "v", "Target": "/v", "VolumeOptions": {"NoCopy": true, "Labels": {"a": "b"}}})).unwrap();
        assert!(m.options.contains_key("nocopy"));
        assert_eq!(labels.unwrap()["a"], "b");
        let (m, _) = from_mount(json!({"Type": "tmpfs", "Target": "/t", "TmpfsOptions": {"SizeBytes": 1048576, "Mode": 1023}})).unwrap();
        assert_eq!(m.options["size"], "1048576");
        assert_eq!(m.options["mode"], "1777");
        assert!(from_mount(json!({"Type": "npipe", "Target": "/x"})).is_err());
        let m = from_tmpfs("/run", "rw,noexec,size=64m").unwrap();
        assert_eq!(m.options["size"], "64m");
    }
}
