//! Docker's `POST /build` query (the classic builder: `docker build` with the legacy
//! builder, docker-compose's `build:`), read into [`BuildParams`].
//!
//! `t`, `dockerfile`, `buildargs` and `labels` (JSON maps), `target`, `nocache` and
//! `networkmode` map onto the builder's options. Options that change nothing here (`rm`,
//! `forcerm`, `q`, `pull`, `version=1`, `platform` for this host) are accepted; others that
//! would change the result (`remote`, `squash`, `cachefrom`, `extrahosts`, resource limits
//! of the build's containers, BuildKit) are refused with a message.

use std::collections::BTreeMap;

use super::query::Query;
use super::{Refused, Result};
use crate::build::BuildParams;
use crate::ImageRef;

/// A JSON map parameter (`buildargs`, `labels`); values may be null (unset).
fn json_map(q: &Query, key: &str) -> Result<BTreeMap<String, String>> {
    let Some(raw) = q.nonempty(key) else {
        return Ok(BTreeMap::new());
    };
    let v: BTreeMap<String, Option<String>> = serde_json::from_str(raw).map_err(|e| {
        Refused::bad_request(format!(
            "invalid {key} {raw:?}: give a JSON object of strings: {e}"
        ))
    })?;
    Ok(v.into_iter()
        .filter_map(|(k, v)| v.map(|v| (k, v)))
        .collect())
}

/// Refuses what the classic builder here cannot do as asked.
fn refuse_unsupported(q: &Query, host_arch: &str) -> Result<()> {
    if q.get("version").is_some_and(|v| v == "2") {
        return Err(Refused::bad_request(
            "BuildKit builds are not supported by pier: use the classic builder (DOCKER_BUILDKIT=0)",
        ));
    }
    if let Some(r) = q.nonempty("remote") {
        return Err(Refused::bad_request(format!(
            "pier does not fetch build contexts from URLs ({r}): send the context itself"
        )));
    }
    for (key, what) in [
        ("squash", "--squash"),
        ("cachefrom", "--cache-from"),
        ("extrahosts", "--add-host"),
        ("memory", "--memory"),
        ("memswap", "--memory-swap"),
        ("cpushares", "--cpu-shares"),
        ("cpusetcpus", "--cpuset-cpus"),
        ("cpuquota", "--cpu-quota"),
        ("cpuperiod", "--cpu-period"),
        ("shmsize", "--shm-size"),
        ("ulimits", "--ulimit"),
        ("isolation", "--isolation"),
        ("outputs", "--output"),
    ] {
        let given = q
            .nonempty(key)
            .filter(|v| !matches!(*v, "0" | "false" | "[]" | "{}" | "null" | "default"));
        if given.is_some() {
            return Err(Refused::bad_request(format!(
                "docker build {what} is not supported by pier yet"
            )));
        }
    }
    if let Some(platform) = q.nonempty("platform") {
        let ours = format!("linux/{host_arch}");
        if platform != ours {
            return Err(Refused::bad_request(format!(
                "pier builds for this host ({ours}) only, not {platform}"
            )));
        }
    }
    Ok(())
}

/// Docker's query as the builder's parameters; `host_arch` is this host's (`amd64`).
pub fn params(q: &Query, host_arch: &str) -> Result<BuildParams> {
    refuse_unsupported(q, host_arch)?;
    let mut tags = Vec::new();
    for t in q.all("t").into_iter().filter(|t| !t.is_empty()) {
        tags.push(
            t.parse::<ImageRef>()
                .map_err(|e| Refused::bad_request(format!("invalid tag {t:?}: {e}")))?,
        );
    }
    Ok(BuildParams {
        tags,
        dockerfile: q.nonempty("dockerfile").map(String::from),
        build_args: json_map(q, "buildargs")?,
        target: q.nonempty("target").map(String::from),
        no_cache: q.bool("nocache"),
        network: q
            .nonempty("networkmode")
            .filter(|m| *m != "default")
            .map(String::from),
        labels: json_map(q, "labels")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(q: &str) -> Result<BuildParams> {
        params(&Query::parse(q), "amd64")
    }

    #[test]
    fn docker_build_options() {
        let o = p("t=app%3A1&t=other&dockerfile=sub%2FDockerfile&buildargs=%7B%22A%22%3A%221%22%2C%22B%22%3Anull%7D&labels=%7B%22k%22%3A%22v%22%7D&nocache=1&networkmode=default&rm=1&forcerm=0&version=1").unwrap();
        assert_eq!(o.tags.len(), 2);
        assert_eq!(o.dockerfile.as_deref(), Some("sub/Dockerfile"));
        assert_eq!(o.build_args.len(), 1);
        assert_eq!(o.build_args["A"], "1");
        assert_eq!(o.labels["k"], "v");
        assert!(o.no_cache && o.network.is_none());
        assert!(p("version=2").is_err());
        assert!(p("squash=1").is_err());
        assert!(p("memory=0&cpushares=0").is_ok());
        assert!(p("buildargs=%5B1%5D").is_err());
        assert!(p("platform=linux%2Famd64").is_ok());
        assert!(p("platform=linux%2Farm64")
            .unwrap_err()
            .message
            .contains("linux/amd64"));
    }
}
