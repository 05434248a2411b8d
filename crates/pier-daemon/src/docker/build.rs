//! `POST /build`: Docker's classic builder call (`docker build` with the legacy builder,
//! docker-compose's `build:`), over the engine's Dockerfile builder. The body is the
//! context tar; the answer streams `{"stream": ...}` lines and `{"aux": {"ID": ...}}`, or
//! a last `{"error": ...}` line, as Docker's does.
//!
//! Docker's options map onto the builder's: `t`, `dockerfile`, `buildargs` and `labels`
//! (JSON maps), `target`, `nocache`, `networkmode`. Options that change nothing here
//! (`rm`, `forcerm`, `q`, `pull`, `version=1`, `platform` for this host) are accepted;
//! others that would change the result (`remote`, `squash`, `cachefrom`, `extrahosts`,
//! resource limits of the build's containers, BuildKit) are refused with a message.

use std::collections::BTreeMap;

use axum::body::Body;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use pier_api::build::BuildLine;
use pier_api::ImageRef;

use super::params::Params;
use super::{DResult, DState, DockerError};
use crate::api::Ctx;
use pier_engine::build::{BuildEvent, BuildOptions};

/// A JSON map parameter (`buildargs`, `labels`); values may be null (unset).
fn json_map(p: &Params, key: &str) -> DResult<BTreeMap<String, String>> {
    let Some(raw) = p.nonempty(key) else {
        return Ok(BTreeMap::new());
    };
    let v: BTreeMap<String, Option<String>> = serde_json::from_str(raw).map_err(|e| {
        DockerError::bad_request(format!(
            "invalid {key} {raw:?}: give a JSON object of strings: {e}"
        ))
    })?;
    Ok(v.into_iter()
        .filter_map(|(k, v)| v.map(|v| (k, v)))
        .collect())
}

/// Docker's query as the builder's options.
fn options(p: &Params) -> DResult<BuildOptions> {
    if p.get("version").is_some_and(|v| v == "2") {
        return Err(DockerError::bad_request(
            "BuildKit builds are not supported by pier: use the classic builder (DOCKER_BUILDKIT=0)",
        ));
    }
    if let Some(r) = p.nonempty("remote") {
        return Err(DockerError::bad_request(format!(
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
        let given = p
            .nonempty(key)
            .filter(|v| !matches!(*v, "0" | "false" | "[]" | "{}" | "null" | "default"));
        if given.is_some() {
            return Err(DockerError::bad_request(format!(
                "docker build {what} is not supported by pier yet"
            )));
        }
    }
    if let Some(platform) = p.nonempty("platform") {
        let ours = format!("linux/{}", pier_image::build::host_arch());
        if platform != ours {
            return Err(DockerError::bad_request(format!(
                "pier builds for this host ({ours}) only, not {platform}"
            )));
        }
    }
    let mut tags = Vec::new();
    for t in p.all("t").into_iter().filter(|t| !t.is_empty()) {
        tags.push(
            t.parse::<ImageRef>()
                .map_err(|e| DockerError::bad_request(format!("invalid tag {t:?}: {e}")))?,
        );
    }
    Ok(BuildOptions {
        tags,
        dockerfile: p.nonempty("dockerfile").map(String::from),
        build_args: json_map(p, "buildargs")?,
        target: p.nonempty("target").map(String::from),
        no_cache: p.bool("nocache"),
        network: p
            .nonempty("networkmode")
            .filter(|m| *m != "default")
            .map(String::from),
        labels: json_map(p, "labels")?,
        cancel: None,
    })
}

/// `POST /build`.
pub async fn build(Ctx(ctx): Ctx, state: DState, p: Params, body: Body) -> DResult<Response> {
    let d = state.0;
    let opts = options(&p)?;
    let quiet = p.bool("q");
    let body = crate::api_build::stream_build(
        &d.engine,
        opts,
        body,
        move |ev, send| match ev {
            // `-q`: no output, the image ID as the only text, as Docker sends it.
            BuildEvent::Stream(_) if quiet => {}
            BuildEvent::Built(ref id) if quiet => {
                send(BuildLine::stream(format!("{id}\n")));
                send(ev.to_line());
            }
            _ => send(ev.to_line()),
        },
        &ctx.project,
    );
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_build_options() {
        let p = Params::parse(
            "t=app%3A1&t=other&dockerfile=sub%2FDockerfile&buildargs=%7B%22A%22%3A%221%22%2C%22B%22%3Anull%7D&labels=%7B%22k%22%3A%22v%22%7D&nocache=1&networkmode=default&rm=1&forcerm=0&version=1",
        );
        let o = options(&p).unwrap();
        assert_eq!(o.tags.len(), 2);
        assert_eq!(o.dockerfile.as_deref(), Some("sub/Dockerfile"));
        assert_eq!(o.build_args.len(), 1);
        assert_eq!(o.build_args["A"], "1");
        assert_eq!(o.labels["k"], "v");
        assert!(o.no_cache && o.network.is_none());
        assert!(options(&Params::parse("version=2")).is_err());
        assert!(options(&Params::parse("squash=1")).is_err());
        assert!(options(&Params::parse("memory=0&cpushares=0")).is_ok());
        assert!(options(&Params::parse("buildargs=%5B1%5D")).is_err());
    }
}
