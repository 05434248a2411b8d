//! Docker's mount forms and Pier's: `HostConfig.Binds` (`-v`), `HostConfig.Mounts`
//! (`--mount`), `HostConfig.Tmpfs` (`--tmpfs`) and `Config.Volumes` (anonymous volumes)
//! as Pier's mount specs at create, and the `Mounts`, `Binds` and `Tmpfs` of inspect.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;
use serde_json::{json, Value};

use super::{Refused, Result};
use crate::containers::ContainerInspect;
use crate::volumes::{MountKind, MountSpec};
use crate::{TmpfsFlag, VolumeFlag};

fn bad(m: impl Into<String>) -> Refused {
    Refused::bad_request(m)
}

/// `-v SRC:DST[:OPTS]` (a path is a bind, a name a volume) or `-v DST` (anonymous).
fn from_bind(b: &str) -> Result<MountSpec> {
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
fn from_mount(
    v: Value,
    source_exists: &dyn Fn(&str) -> bool,
) -> Result<(MountSpec, Option<BTreeMap<String, String>>)> {
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
            } else if !source_exists(src) {
                return Err(bad(format!(
                    "invalid mount config for type \"bind\": bind source path does not exist: {src}"
                )));
            }
            if let Some(p) = o.propagation.filter(|p| !p.is_empty()) {
                m.options.insert("propagation".into(), p);
            }
            if o.non_recursive.unwrap_or(false) {
                // The source alone, without what is mounted below it.
                m.options.insert("non_recursive".into(), "true".into());
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
fn from_tmpfs(target: &str, opts: &str) -> Result<MountSpec> {
    TmpfsFlag::from_parts(target, opts)
        .map(TmpfsFlag::into_spec)
        .map_err(|e| bad(e.to_string()))
}

/// A volume `--mount` names with labels: its name and labels.
pub type LabelledVolume = (String, BTreeMap<String, String>);

/// Maps `Binds`, `Mounts`, `Tmpfs` and `Config.Volumes` onto Pier's mounts; returns them
/// and the volumes named with labels (`--mount volume-label=...`), to make first so that
/// they carry them.
pub fn from_docker(
    binds: Vec<String>,
    mounts: Vec<Value>,
    tmpfs: BTreeMap<String, String>,
    volumes: BTreeMap<String, Value>,
    source_exists: &dyn Fn(&str) -> bool,
) -> Result<(Vec<MountSpec>, Vec<LabelledVolume>)> {
    let mut out: Vec<MountSpec> = Vec::new();
    let mut labelled = Vec::new();
    for b in &binds {
        out.push(from_bind(b)?);
    }
    for m in mounts {
        let (spec, labels) = from_mount(m, source_exists)?;
        if let (Some(labels), Some(name)) = (labels, spec.source.clone()) {
            labelled.push((name, labels));
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
    Ok((out, labelled))
}

// ---- inspect: what a container got --------------------------------------------------------

/// `Config.Volumes`: the image's and the anonymous ones.
pub fn config_volumes(c: &ContainerInspect, img: &Value) -> Value {
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
pub fn binds_json(c: &ContainerInspect) -> Value {
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

pub fn host_config_mounts(_c: &ContainerInspect) -> Value {
    json!([])
}

/// `HostConfig.Tmpfs`.
pub fn tmpfs_json(c: &ContainerInspect) -> Value {
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
/// `mountpoint` gives a named volume's directory on the host.
pub fn mounts_json(c: &ContainerInspect, mountpoint: &dyn Fn(&str) -> PathBuf) -> Value {
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
                        "Source": mountpoint(&name),
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
pub fn uses(c: &ContainerInspect, volume: &str) -> bool {
    c.mounts.iter().any(|m| {
        (m.kind == MountKind::Volume && m.source.as_deref() == Some(volume)) || m.target == volume
    })
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
        let (m, labels) = from_mount(json!({"Type": "volume", "Source": "v", "Target": "/v", "VolumeOptions": {"NoCopy": true, "Labels": {"a": "b"}}}), &|_| true).unwrap();
        assert!(m.options.contains_key("nocopy"));
        assert_eq!(labels.unwrap()["a"], "b");
        let (m, _) = from_mount(json!({"Type": "tmpfs", "Target": "/t", "TmpfsOptions": {"SizeBytes": 1048576, "Mode": 1023}}), &|_| true).unwrap();
        assert_eq!(m.options["size"], "1048576");
        assert_eq!(m.options["mode"], "1777");
        assert!(from_mount(json!({"Type": "npipe", "Target": "/x"}), &|_| true).is_err());
        let m = from_tmpfs("/run", "rw,noexec,size=64m").unwrap();
        assert_eq!(m.options["size"], "64m");
    }
}
