//! Volume and mount types of the native API.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::names::ProjectName;

/// What is mounted into a container.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum MountKind {
    /// A host path.
    Bind,
    /// A named volume (made on first use), or an anonymous one when `source` is absent.
    #[default]
    Volume,
    /// A memory-backed filesystem.
    Tmpfs,
}

/// One mount of a container (`-v`, `--mount`, `--tmpfs`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct MountSpec {
    #[serde(rename = "type")]
    pub kind: MountKind,
    /// Host path (bind) or volume name (volume; absent for an anonymous volume).
    pub source: Option<String>,
    /// Absolute path in the container.
    pub target: String,
    pub read_only: bool,
    /// bind: `propagation` (rprivate, private, rshared, shared, rslave, slave);
    /// tmpfs: `size` (bytes or 64m), `mode` (octal); volume: `nocopy`.
    pub options: BTreeMap<String, String>,
}

/// Body of `POST /v1/volumes` (`pier volume create`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct VolumeCreate {
    /// Generated when absent.
    pub name: Option<String>,
    /// `local` (the default).
    pub driver: Option<String>,
    /// `size=10m` and `inodes=N`: limits the kernel enforces (the volume is then an ext4
    /// filesystem image of its own).
    pub options: BTreeMap<String, String>,
    pub labels: BTreeMap<String, String>,
}

/// A volume as stored and as `pier volume inspect` shows it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct VolumeInspect {
    pub name: String,
    pub project: ProjectName,
    pub driver: String,
    pub created: String,
    /// Where its data is on the host.
    pub mountpoint: String,
    pub labels: BTreeMap<String, String>,
    pub options: BTreeMap<String, String>,
    /// Bytes it may hold, when limited.
    pub size_limit: Option<u64>,
    /// Files and directories it may hold, when limited (ext4 rounds the asked number up).
    pub inode_limit: Option<u64>,
    /// Made for a container's anonymous mount; removed with the container by `rm -v`.
    #[serde(default)]
    pub anonymous: bool,
    /// Containers using it (filled in when inspected).
    #[serde(default)]
    pub used_by: Vec<String>,
    /// Bytes and inodes in use (filled in when inspected).
    #[serde(default)]
    pub usage: Option<VolumeUsage>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct VolumeUsage {
    pub bytes: u64,
    pub inodes: u64,
}

/// Parses Docker's `-v` syntax: `NAME:/path[:opts]` (a volume), `/host/path:/path[:opts]`
/// (a bind mount; a missing host directory is made, as Docker's `-v` does) or `/path`
/// (an anonymous volume). Options: `ro`/`readonly`, `rw`, a propagation mode, `nocopy`,
/// and the SELinux and macOS ones Docker accepts, which mean nothing here.
pub fn parse_volume_spec(v: &str) -> Result<MountSpec, String> {
    let parts: Vec<&str> = v.split(':').collect();
    let (source, target, opts) = match parts.as_slice() {
        [t] => (None, *t, ""),
        [s, t] => (Some(*s), *t, ""),
        [s, t, o] => (Some(*s), *t, *o),
        _ => {
            return Err(format!(
                "invalid volume specification {v:?}: use NAME:/path[:ro], /host/path:/path[:ro] or /path"
            ))
        }
    };
    let mut m = MountSpec {
        target: target.to_string(),
        ..Default::default()
    };
    match source {
        Some(s) if s.starts_with('/') => {
            m.kind = MountKind::Bind;
            m.source = Some(s.to_string());
            m.options.insert("create_host_path".into(), "true".into());
        }
        Some(s) => {
            m.kind = MountKind::Volume;
            m.source = Some(s.to_string());
        }
        None => m.kind = MountKind::Volume,
    }
    for o in opts.split(',').filter(|o| !o.is_empty()) {
        match o {
            "ro" | "readonly" => m.read_only = true,
            "rw" | "z" | "Z" | "consistent" | "cached" | "delegated" => {}
            "private" | "rprivate" | "shared" | "rshared" | "slave" | "rslave" => {
                m.options.insert("propagation".into(), o.into());
            }
            "nocopy" => {
                m.options.insert("nocopy".into(), "true".into());
            }
            _ => return Err(format!("invalid mode {o:?} in volume specification {v:?}")),
        }
    }
    Ok(m)
}

/// Parses a size as Docker's flags take them: `1024`, `64k`, `10m`, `1.5g`, `2t` (binary
/// units, an optional trailing `b`).
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    let t = s.trim().to_ascii_lowercase();
    let t = t.trim_end_matches('b');
    let (num, mult) = match t.chars().last() {
        Some('k') => (&t[..t.len() - 1], 1u64 << 10),
        Some('m') => (&t[..t.len() - 1], 1 << 20),
        Some('g') => (&t[..t.len() - 1], 1 << 30),
        Some('t') => (&t[..t.len() - 1], 1 << 40),
        _ => (t, 1),
    };
    match num.parse::<f64>() {
        Ok(n) if n >= 0.0 && n.is_finite() => Ok((n * mult as f64) as u64),
        _ => Err(format!(
            "invalid size {s:?}: use a number with an optional unit, like 64m or 1g"
        )),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn sizes() {
        use super::parse_bytes;
        assert_eq!(parse_bytes("10m"), Ok(10 << 20));
        assert_eq!(parse_bytes("1.5G"), Ok(3 << 29));
        assert_eq!(parse_bytes("512"), Ok(512));
        assert_eq!(parse_bytes("64kb"), Ok(64 << 10));
        assert!(parse_bytes("ten").is_err());
        assert!(parse_bytes("-1m").is_err());
    }
}
