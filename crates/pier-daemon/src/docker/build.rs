//! `POST /build`: Docker's classic builder call (`docker build` with the legacy builder,
//! docker-compose's `build:`), over the engine's Dockerfile builder. The body is the
//! context tar; the answer streams `{"stream": ...}` lines (a `RUN`'s standard error in
//! red), `{"aux": {"ID": ...}}` at the end of each stage, then the `Successfully built`
//! and `Successfully tagged` lines, or a last `{"error": ...}` line, as Docker's does.
//! Base images are pulled with the credentials of `X-Registry-Config`.
//!
//! Docker's query is read by `pier_api::docker::build` (what it maps, accepts and refuses).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use pier_api::build::BuildLine;

use super::params::Params;
use super::{DResult, DState};
use crate::api::Ctx;
use pier_engine::build::BuildEvent;

/// One registry's entry of `X-Registry-Config`.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(default)]
struct RegistryAuth {
    username: String,
    password: String,
}

/// The registry host an `X-Registry-Config` key names: `https://index.docker.io/v1/` is
/// Docker Hub's (`docker.io`); other keys are a host, with or without a scheme and path.
fn registry_host(key: &str) -> String {
    let host = key
        .trim_start_matches("https://")
        .trim_start_matches("http://")
        .split('/')
        .next()
        .unwrap_or_default();
    match host {
        "index.docker.io" | "registry-1.docker.io" | "docker.io" => "docker.io".into(),
        h => h.to_string(),
    }
}

/// The credentials the CLI sends for base images' pulls: `X-Registry-Config`, base64url
/// of `{"<registry>": {"username", "password", ...}}`. Unreadable: none.
fn build_credentials(headers: &HeaderMap) -> BTreeMap<String, pier_registry_client::Credentials> {
    let Some(raw) = headers
        .get("x-registry-config")
        .and_then(|h| h.to_str().ok())
    else {
        return BTreeMap::new();
    };
    let Some(bytes) = pier_registry_client::b64::decode(raw.trim()) else {
        return BTreeMap::new();
    };
    let auths: BTreeMap<String, RegistryAuth> = serde_json::from_slice(&bytes).unwrap_or_default();
    auths
        .into_iter()
        .filter(|(_, a)| !a.username.is_empty())
        .map(|(k, a)| {
            (
                registry_host(&k),
                pier_registry_client::Credentials {
                    username: a.username,
                    password: a.password,
                },
            )
        })
        .collect()
}

/// `POST /build`.
pub async fn build(
    Ctx(ctx): Ctx,
    state: DState,
    p: Params,
    headers: HeaderMap,
    body: Body,
) -> DResult<Response> {
    let d = state.0;
    let params = match pier_api::docker::build::params(&p, pier_image::build::host_arch()) {
        Ok(params) => params,
        Err(e) => {
            // Read the context the client is still sending before answering, so it gets
            // the refusal rather than a broken pipe.
            crate::stream::drain(body, 1 << 30).await;
            return Err(e.into());
        }
    };
    let mut opts: pier_engine::build::BuildOptions = params.into();
    opts.credentials = build_credentials(&headers);
    let quiet = p.bool("q");
    // `-q`: the output is held back; the image ID is the only line, or on failure the
    // output held back comes before the error, as Docker sends them.
    let held = Arc::new(Mutex::new(Vec::<BuildLine>::new()));
    let held_for_error = held.clone();
    let body = crate::api_build::stream_build(
        &d.engine,
        opts,
        body,
        move |ev, send| match (ev, quiet) {
            (BuildEvent::Built(id), true) => send(BuildLine::stream(format!("{id}\n"))),
            (ev, true) => held
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .extend(ev.to_line()),
            (ev, false) => {
                if let Some(line) = ev.to_line() {
                    send(line)
                }
            }
        },
        move |send| {
            for line in held_for_error
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .drain(..)
            {
                send(line);
            }
        },
        ctx,
    );
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_config_names_hosts() {
        let cfg = r#"{"https://index.docker.io/v1/":{"username":"u","password":"p"},"reg.example:5000":{"username":"v","password":"q"},"empty.example":{}}"#;
        let mut headers = HeaderMap::new();
        headers.insert(
            "x-registry-config",
            pier_registry_client::b64::encode(cfg.as_bytes())
                .parse()
                .unwrap(),
        );
        let c = build_credentials(&headers);
        assert_eq!(c.len(), 2);
        assert_eq!(c["docker.io"].username, "u");
        assert_eq!(c["reg.example:5000"].password, "q");
        assert!(build_credentials(&HeaderMap::new()).is_empty());
    }
}
