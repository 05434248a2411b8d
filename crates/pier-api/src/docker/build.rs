//! Docker's `POST /build` query (the classic builder: `docker build` with the legacy
//! builder, docker-compose's `build:`), read into [`BuildParams`].
//!
//! `t`, `dockerfile`, `buildargs` and `labels` (JSON maps), `target`, `nocache`,
//! `networkmode`, `shmsize`, `extrahosts` (repeated), `cachefrom` (a JSON list) and `pull`
//! map onto the builder's options; a missing base image is pulled, as Docker's builder
//! pulls it; the resource limits (`memory`, `memswap`, `cpushares`, `cpusetcpus`,
//! `cpuquota`, `cpuperiod`, `ulimits`) are the `RUN` steps' containers'. Options that change
//! nothing here (`rm`, `forcerm`, `q`, `version=1`, `isolation=default`, `platform` for
//! this host) are accepted; `squash` (experimental in Docker), `outputs` and `version=2`
//! (BuildKit's) and `remote` (a context from a URL) are refused with a message.
//!
//! A key given twice is read as Go's `FormValue` reads it, its first value: docker-py
//! sends an out-of-context Dockerfile as `dockerfile=NAME&dockerfile=CONTENTS`.

use std::collections::BTreeMap;

use super::query::Query;
use super::{Refused, Result};
use crate::build::{BasePull, BuildParams, RunLimits};
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
    // What Docker 20.10 itself answers without experimental mode or BuildKit.
    if q.bool("squash") {
        return Err(Refused::bad_request(
            "squash is only supported with experimental mode",
        ));
    }
    if let Some(i) = first(q, "isolation").filter(|i| *i != "default") {
        return Err(Refused::bad_request(format!(
            "Invalid isolation: {i:?} - linux only supports 'default'"
        )));
    }
    if first(q, "outputs").is_some_and(|o| !matches!(o, "[]" | "null")) {
        return Err(Refused::bad_request(
            "outputs (--output) are only supported by BuildKit; the classic builder makes an image",
        ));
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

/// The first value of `key`, absent when empty (Go's `FormValue`).
fn first<'a>(q: &'a Query, key: &str) -> Option<&'a str> {
    q.all(key).into_iter().next().filter(|v| !v.is_empty())
}

/// `shmsize`: bytes, 0 for the default.
fn shm_size(q: &Query) -> Result<Option<i64>> {
    let Some(v) = first(q, "shmsize") else {
        return Ok(None);
    };
    match v.parse::<i64>() {
        Ok(0) => Ok(None),
        Ok(n) if n > 0 => Ok(Some(n)),
        _ => Err(Refused::bad_request(format!(
            "invalid shmsize {v:?}: give a size in bytes greater than 0"
        ))),
    }
}

/// `extrahosts`: `NAME:IP`, repeated.
fn extra_hosts(q: &Query) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for h in q.all("extrahosts").into_iter().filter(|h| !h.is_empty()) {
        let ok = h
            .split_once(':')
            .is_some_and(|(n, ip)| !n.is_empty() && ip.parse::<std::net::IpAddr>().is_ok());
        if !ok {
            return Err(Refused::bad_request(format!(
                "invalid extra host {h:?} (--add-host): give NAME:IP, e.g. db:10.0.0.5"
            )));
        }
        out.push(h.to_string());
    }
    Ok(out)
}

/// A number parameter; 0 or absent is none.
fn number(q: &Query, key: &str) -> Result<Option<i64>> {
    match first(q, key) {
        None => Ok(None),
        Some(v) => match v.parse::<i64>() {
            Ok(0) => Ok(None),
            Ok(n) => Ok(Some(n)),
            Err(_) => Err(Refused::bad_request(format!(
                "invalid value for {key}: {v:?} is not a number"
            ))),
        },
    }
}

/// A ulimit as Docker's query gives it (`ulimits=[{"Name":...,"Soft":...,"Hard":...}]`).
#[derive(serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct UlimitQuery {
    name: String,
    soft: i64,
    hard: i64,
}

/// The limits of `RUN` steps' containers: `memory`, `memswap`, `cpushares`,
/// `cpusetcpus`, `cpuquota`, `cpuperiod`, `ulimits`, with Docker's checks of the CPU time.
fn limits(q: &Query) -> Result<RunLimits> {
    let cpu_period = number(q, "cpuperiod")?;
    let cpu_quota = number(q, "cpuquota")?;
    if cpu_period.is_some_and(|p| !(1000..=1_000_000).contains(&p)) {
        return Err(Refused::bad_request(
            "CPU cfs period can not be less than 1ms (i.e. 1000) or larger than 1s (i.e. 1000000)",
        ));
    }
    if cpu_quota.is_some_and(|c| c < -1 || (0..1000).contains(&c)) {
        return Err(Refused::bad_request(
            "CPU cfs quota can not be less than 1ms (i.e. 1000); -1 means no quota",
        ));
    }
    let mut ulimits = Vec::new();
    if let Some(raw) = first(q, "ulimits") {
        let list: Option<Vec<UlimitQuery>> = serde_json::from_str(raw).map_err(|e| {
            Refused::bad_request(format!("error reading ulimit settings {raw:?}: {e}"))
        })?;
        for u in list.unwrap_or_default() {
            let value = |v: i64| match v {
                -1 => Ok(u64::MAX),
                v if v < 0 => Err(Refused::bad_request(format!(
                    "invalid ulimit {}={v}: give a number, or -1 for unlimited",
                    u.name
                ))),
                v => Ok(v as u64),
            };
            ulimits.push(crate::containers::Ulimit {
                soft: value(u.soft)?,
                hard: value(u.hard)?,
                name: u.name.clone(),
            });
        }
    }
    Ok(RunLimits {
        memory: number(q, "memory")?,
        memory_swap: number(q, "memswap")?,
        cpu_shares: number(q, "cpushares")?,
        cpuset_cpus: first(q, "cpusetcpus").map(String::from),
        cpu_quota,
        cpu_period,
        ulimits,
    })
}

/// `cachefrom`: a JSON list of image names.
fn cache_from(q: &Query) -> Result<Vec<String>> {
    let Some(raw) = first(q, "cachefrom") else {
        return Ok(Vec::new());
    };
    let v: Option<Vec<String>> = serde_json::from_str(raw).map_err(|e| {
        Refused::bad_request(format!(
            "invalid cachefrom {raw:?}: give a JSON list of image names: {e}"
        ))
    })?;
    Ok(v.unwrap_or_default()
        .into_iter()
        .filter(|s| !s.is_empty())
        .collect())
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
        dockerfile: first(q, "dockerfile").map(String::from),
        build_args: json_map(q, "buildargs")?,
        target: first(q, "target").map(String::from),
        no_cache: q.bool("nocache"),
        network: first(q, "networkmode")
            .filter(|m| *m != "default")
            .map(String::from),
        labels: json_map(q, "labels")?,
        shm_size: shm_size(q)?,
        extra_hosts: extra_hosts(q)?,
        cache_from: cache_from(q)?,
        pull: if q.bool("pull") {
            BasePull::Always
        } else {
            BasePull::Missing
        },
        limits: limits(q)?,
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
        assert_eq!(o.pull, BasePull::Missing);
        // docker-py's out-of-context Dockerfile: its name, then its text.
        let o = p("dockerfile=.dockerfile.1f&dockerfile=FROM+bb&shmsize=134217728&extrahosts=a%3A127.0.0.1&extrahosts=b%3A%3A%3A1&cachefrom=%5B%22build1%22%5D&pull=1").unwrap();
        assert_eq!(o.dockerfile.as_deref(), Some(".dockerfile.1f"));
        assert_eq!(o.shm_size, Some(134217728));
        assert_eq!(o.extra_hosts, vec!["a:127.0.0.1", "b:::1"]);
        assert_eq!(o.cache_from, vec!["build1"]);
        assert_eq!(o.pull, BasePull::Always);
        assert!(p("shmsize=0&cachefrom=null").unwrap().shm_size.is_none());
        assert!(p("shmsize=-1").is_err());
        assert!(p("extrahosts=nocolon").is_err());
        assert!(p("cachefrom=x").is_err());
        assert!(p("memory=0&cpushares=0").is_ok());
        let o = p("memory=67108864&memswap=-1&cpushares=512&cpusetcpus=0&cpuquota=50000&cpuperiod=100000&ulimits=%5B%7B%22Name%22%3A%22nofile%22%2C%22Soft%22%3A100%2C%22Hard%22%3A200%7D%5D&isolation=default").unwrap();
        assert_eq!(o.limits.memory, Some(67108864));
        assert_eq!(o.limits.memory_swap, Some(-1));
        assert_eq!(o.limits.cpus(), Some(0.5));
        assert_eq!(o.limits.ulimits[0].hard, 200);
        assert!(p("cpuperiod=10").is_err());
        assert!(p("isolation=hyperv").is_err());
        assert!(p("ulimits=%5B1%5D").is_err());
        assert!(p("buildargs=%5B1%5D").is_err());
        assert!(p("platform=linux%2Famd64").is_ok());
        assert!(p("platform=linux%2Farm64")
            .unwrap_err()
            .message
            .contains("linux/amd64"));
    }
}
