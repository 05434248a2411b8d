//! Types of image builds (`POST /v1/build`).
//!
//! The progress stream is JSON lines of the shapes Docker's `POST /build` sends, so the
//! Docker API layer can pass them through: `{"stream": "Step 1/3 : FROM bb\n"}`, one
//! `{"error": "...", "errorDetail": {"message": "..."}}` on failure, and
//! `{"aux": {"ID": "sha256:..."}}` once each stage's image is built (before the
//! `Successfully built` line, as Docker's classic builder sends it). A `RUN` step's
//! standard error comes as `stream` text wrapped in `ESC[91m` ... `ESC[0m`, as Docker's.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::names::Digest;
use crate::reference::ImageRef;

/// Query of `POST /v1/build` (keys may repeat: `t`, `buildarg`). The body is the build
/// context: a tar, plain or gzip/zstd-compressed.
#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct BuildQuery {
    /// A `name[:tag]` for the image; repeat for more.
    pub t: Vec<String>,
    /// The Dockerfile's path in the context (default `Dockerfile`).
    pub dockerfile: Option<String>,
    /// A build argument `KEY=VALUE`; repeat for more.
    pub buildarg: Vec<String>,
    /// Build up to this stage only.
    pub target: Option<String>,
    /// A label `KEY=VALUE` for the image; repeat for more.
    pub label: Vec<String>,
    /// Build every step afresh, using no cached one.
    pub no_cache: Option<bool>,
    /// The network of `RUN` steps: empty or absent for the default network, `none`,
    /// `host`, or a network's name.
    pub network: Option<String>,
}

/// What a build request asks for, read from either API's query (the native
/// [`BuildParams::parse_native`], Docker's `pier_api::docker::build::params`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BuildParams {
    /// Names for the image.
    pub tags: Vec<ImageRef>,
    /// The Dockerfile's path in the context; `Dockerfile` when absent.
    pub dockerfile: Option<String>,
    /// `--build-arg KEY=VALUE`.
    pub build_args: BTreeMap<String, String>,
    /// Build up to this stage, not the last.
    pub target: Option<String>,
    /// Use no cached step.
    pub no_cache: bool,
    /// The network of `RUN` steps: `None` (or `default`) for the default network, `none`,
    /// `host`, or a network's name.
    pub network: Option<String>,
    /// `--label KEY=VALUE`: labels of the image, set by a `LABEL` step added to the end of
    /// the last stage, as Docker's classic builder adds it.
    pub labels: BTreeMap<String, String>,
    /// Size of `/dev/shm` in `RUN` steps' containers, bytes (`--shm-size`); the
    /// containers' default when absent.
    pub shm_size: Option<i64>,
    /// `--add-host NAME:IP`: lines added to `RUN` steps' `/etc/hosts`.
    pub extra_hosts: Vec<String>,
    /// `--cache-from`: images whose steps are the only cache sources. When given, a cached
    /// step counts only if it is one of these images or below one of them (a local build's
    /// chain), or if one of them has the same history up to that step (a pulled image);
    /// names that are not there are skipped. Empty: every earlier build's steps.
    pub cache_from: Vec<String>,
    /// Whether a `FROM` image is pulled from its registry (Docker's builder pulls a
    /// missing one; `--pull` pulls every one).
    pub pull: BasePull,
    /// Resource limits of `RUN` steps' containers.
    pub limits: RunLimits,
}

/// Resource limits of `RUN` steps' containers (`docker build --memory`, ...), as
/// [`crate::containers::ContainerCreate`] takes them; all absent by default.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunLimits {
    /// Bytes.
    pub memory: Option<i64>,
    /// Memory plus swap, bytes; -1 for unlimited swap.
    pub memory_swap: Option<i64>,
    pub cpu_shares: Option<i64>,
    pub cpuset_cpus: Option<String>,
    /// CPU time per period, microseconds (with `cpu_period`, 100 ms when absent).
    pub cpu_quota: Option<i64>,
    pub cpu_period: Option<i64>,
    pub ulimits: Vec<crate::containers::Ulimit>,
}

impl RunLimits {
    /// The CPUs the quota gives (`quota / period`), if one is set.
    pub fn cpus(&self) -> Option<f64> {
        self.cpu_quota
            .filter(|q| *q > 0)
            .map(|q| q as f64 / self.cpu_period.unwrap_or(100_000) as f64)
    }
}

/// When a build pulls the images its stages start `FROM`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum BasePull {
    /// Never: a missing base image fails the build (`pier build`, which pulls first).
    #[default]
    Never,
    /// Only one that is not in the image store (Docker's classic builder).
    Missing,
    /// Every one, for its newest version (`docker build --pull`).
    Always,
}

/// A build query that cannot be read: what was wrong and what to give instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidBuildQuery(pub String);

fn invalid(m: String) -> InvalidBuildQuery {
    InvalidBuildQuery(m)
}

/// A repeated `KEY=VALUE` parameter (`buildarg`, `label`); `what` names it in errors.
fn key_value(
    v: &str,
    what: &str,
    value_needed: bool,
) -> Result<(String, String), InvalidBuildQuery> {
    let (name, value) = match v.split_once('=') {
        Some(kv) => kv,
        None if !value_needed => (v, ""),
        None => return Err(invalid(format!("invalid {what} {v:?}: give KEY=VALUE"))),
    };
    if name.is_empty() {
        return Err(invalid(format!(
            "invalid {what} {v:?}: the name is empty; give KEY=VALUE"
        )));
    }
    Ok((name.to_string(), value.to_string()))
}

impl BuildParams {
    /// The native query of `POST /v1/build` ([`BuildQuery`]); repeated keys (`t`,
    /// `buildarg`, `label`) add up; an unknown key is refused.
    pub fn parse_native(raw: &str) -> Result<BuildParams, InvalidBuildQuery> {
        let mut opts = BuildParams::default();
        for pair in raw.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let decode = |s| crate::form::decode(s).map_err(|e| invalid(e.to_string()));
            let (k, v) = (decode(k)?, decode(v)?);
            match k.as_str() {
                "t" => opts.tags.push(
                    v.parse::<ImageRef>()
                        .map_err(|e| invalid(format!("invalid tag {v:?}: {e}")))?,
                ),
                "dockerfile" => opts.dockerfile = Some(v).filter(|v| !v.is_empty()),
                "buildarg" => {
                    let (name, value) = key_value(&v, "build argument", true)?;
                    opts.build_args.insert(name, value);
                }
                "label" => {
                    let (name, value) = key_value(&v, "label", false)?;
                    opts.labels.insert(name, value);
                }
                "target" => opts.target = Some(v).filter(|v| !v.is_empty()),
                "no_cache" => {
                    opts.no_cache = match v.as_str() {
                        "" | "1" | "true" => true,
                        "0" | "false" => false,
                        _ => {
                            return Err(invalid(format!(
                                "invalid no_cache {v:?}: give true or false"
                            )))
                        }
                    }
                }
                "network" => opts.network = Some(v).filter(|v| !v.is_empty()),
                other => {
                    return Err(invalid(format!(
                        "unknown query parameter {other:?} for /v1/build"
                    )))
                }
            }
        }
        Ok(opts)
    }
}

/// One line of the build progress stream.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct BuildLine {
    /// Output text, as the classic builder prints it (`Step 1/3 : ...`, ` ---> 3f2a...`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<String>,
    /// The build failed: why. Always the last line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(
        default,
        rename = "errorDetail",
        skip_serializing_if = "Option::is_none"
    )]
    pub error_detail: Option<BuildErrorDetail>,
    /// A stage's image (Docker's classic builder sends one at the end of each stage,
    /// before `Successfully built`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aux: Option<BuildAux>,
    /// Progress of a base image's pull (`Pulling from library/busybox`, ...), as
    /// `POST /images/create` reports it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// What a `status` line is about (a tag, a layer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
}

/// Details of a build error (Docker's `errorDetail`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct BuildErrorDetail {
    /// The exit code of a failed `RUN`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<i32>,
    pub message: String,
}

/// The image a build made (Docker's `aux`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct BuildAux {
    #[serde(rename = "ID")]
    pub id: Digest,
}

impl BuildLine {
    pub fn stream(text: impl Into<String>) -> Self {
        BuildLine {
            stream: Some(text.into()),
            ..Default::default()
        }
    }

    pub fn error(message: impl Into<String>, code: Option<i32>) -> Self {
        let message = message.into();
        BuildLine {
            error: Some(message.clone()),
            error_detail: Some(BuildErrorDetail { code, message }),
            ..Default::default()
        }
    }

    /// Text a `RUN` step wrote to its standard error, marked as Docker's classic builder
    /// marks it: in bright red (`ESC[91m` ... `ESC[0m`).
    pub fn stderr(text: &str) -> Self {
        BuildLine::stream(format!("\u{1b}[91m{text}\u{1b}[0m"))
    }

    /// A pull progress line.
    pub fn status(status: impl Into<String>, id: Option<String>) -> Self {
        BuildLine {
            status: Some(status.into()),
            id,
            ..Default::default()
        }
    }

    pub fn aux(id: Digest) -> Self {
        BuildLine {
            aux: Some(BuildAux { id }),
            ..Default::default()
        }
    }

    /// The line as sent: JSON and a newline.
    pub fn to_line(&self) -> String {
        let mut s = serde_json::to_string(self).expect("a build line serializes");
        s.push('\n');
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_repeated_keys_and_escapes() {
        let o = BuildParams::parse_native(
            "t=app%3A1&t=other&dockerfile=sub%2FDockerfile&buildarg=A%3D1&buildarg=B%3Dx+y&target=build&no_cache=true&network=none",
        )
        .unwrap();
        assert_eq!(
            o.tags.iter().map(|t| t.familiar()).collect::<Vec<_>>(),
            vec!["app:1", "other:latest"]
        );
        assert_eq!(o.dockerfile.as_deref(), Some("sub/Dockerfile"));
        assert_eq!(o.build_args["A"], "1");
        assert_eq!(o.build_args["B"], "x y");
        assert_eq!(o.target.as_deref(), Some("build"));
        assert!(o.no_cache);
        assert_eq!(o.network.as_deref(), Some("none"));
        assert!(BuildParams::parse_native("t=Bad:Ref").is_err());
        assert!(BuildParams::parse_native("buildarg=NOVALUE").is_err());
        assert!(BuildParams::parse_native("nope=1").is_err());
        assert!(BuildParams::parse_native("t=%zz").is_err());
        assert!(BuildParams::parse_native("").unwrap().tags.is_empty());
    }
}
