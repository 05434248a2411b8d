//! `POST /v1/build`: a Dockerfile build, its context the request body, its progress a
//! stream of JSON lines shaped like Docker's `POST /build` answer.

use std::io::Write;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use pier_api::build::{BuildAux, BuildErrorDetail, BuildLine, BuildQuery};
use pier_api::{ErrorBody, ImageRef};
use utoipa::OpenApi;

use crate::api::{Ctx, Engine, Shared};
use crate::error::{ApiError, ApiResult};
use crate::stream::{body_reader, body_writer, drain};
use pier_api::ProjectName;
use pier_engine::build::{BuildEvent, BuildOptions, Builder};

pub fn routes() -> Router<Arc<Engine>> {
    Router::new().route("/v1/build", post(build))
}

#[derive(OpenApi)]
#[openapi(
    paths(build),
    components(schemas(BuildLine, BuildErrorDetail, BuildAux))
)]
pub struct BuildDoc;

/// The query as [`BuildOptions`]; repeated keys (`t`, `buildarg`) add up.
pub fn parse_query(raw: &str) -> ApiResult<BuildOptions> {
    let mut opts = BuildOptions::default();
    for pair in raw.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let decode = |s| pier_api::form::decode(s).map_err(|e| ApiError::invalid(e.to_string()));
        let (k, v) = (decode(k)?, decode(v)?);
        match k.as_str() {
            "t" => opts.tags.push(
                v.parse::<ImageRef>()
                    .map_err(|e| ApiError::invalid(format!("invalid tag {v:?}: {e}")))?,
            ),
            "dockerfile" => opts.dockerfile = Some(v).filter(|v| !v.is_empty()),
            "buildarg" => {
                let (name, value) = v.split_once('=').ok_or_else(|| {
                    ApiError::invalid(format!("invalid build argument {v:?}: give KEY=VALUE"))
                })?;
                if name.is_empty() {
                    return Err(ApiError::invalid(format!(
                        "invalid build argument {v:?}: the name is empty"
                    )));
                }
                opts.build_args.insert(name.to_string(), value.to_string());
            }
            "label" => {
                let (name, value) = v.split_once('=').unwrap_or((v.as_str(), ""));
                if name.is_empty() {
                    return Err(ApiError::invalid(format!(
                        "invalid label {v:?}: give KEY=VALUE"
                    )));
                }
                opts.labels.insert(name.to_string(), value.to_string());
            }
            "target" => opts.target = Some(v).filter(|v| !v.is_empty()),
            "no_cache" => {
                opts.no_cache = match v.as_str() {
                    "" | "1" | "true" => true,
                    "0" | "false" => false,
                    _ => {
                        return Err(ApiError::invalid(format!(
                            "invalid no_cache {v:?}: give true or false"
                        )))
                    }
                }
            }
            "network" => opts.network = Some(v).filter(|v| !v.is_empty()),
            other => {
                return Err(ApiError::invalid(format!(
                    "unknown query parameter {other:?} for /v1/build"
                )))
            }
        }
    }
    Ok(opts)
}

/// Builds an image from a Dockerfile. The body is the build context (a tar, plain or
/// gzip/zstd-compressed); the answer streams JSON lines: `{"stream": ...}` output, then
/// `{"aux": {"ID": ...}}`, or an `{"error": ...}` line as the last one on failure.
#[utoipa::path(post, path = "/v1/build", params(BuildQuery),
    request_body(content = Vec<u8>, content_type = "application/x-tar"),
    responses((status = 200, content_type = "application/x-ndjson", body = [BuildLine]),
        (status = 400, body = ErrorBody)))]
async fn build(
    Ctx(ctx): Ctx,
    State(e): Shared,
    RawQuery(q): RawQuery,
    body: Body,
) -> ApiResult<Response> {
    let opts = match parse_query(q.as_deref().unwrap_or("")) {
        Ok(o) => o,
        Err(e) => {
            // Read (some of) the context first: a client still sending it would see its
            // connection closed rather than this answer.
            drain(body, 256 << 20).await;
            return Err(e);
        }
    };
    let body = stream_build(&e, opts, body, |ev, send| send(ev.to_line()), &ctx.project);
    Ok(([(header::CONTENT_TYPE, "application/x-ndjson")], body).into_response())
}

/// Runs a build of the context in `body` in the background and returns the body its
/// answer streams in, one JSON line each; `emit` turns each builder event into the lines
/// sent (the native and Docker APIs send them alike but for `-q`). A client that goes
/// away cancels the build, as Docker's does; a failure ends the stream with an error line.
pub(crate) fn stream_build(
    engine: &Engine,
    mut opts: BuildOptions,
    body: Body,
    mut emit: impl FnMut(BuildEvent, &mut dyn FnMut(BuildLine)) + Send + 'static,
    project: &ProjectName,
) -> Body {
    let project = project.clone();
    let reader = body_reader(body);
    let (mut writer, body) = body_writer();
    let cancel = Arc::new(std::sync::atomic::AtomicBool::new(false));
    opts.cancel = Some(cancel.clone());
    let gone = writer.closed();
    let watcher = tokio::spawn(async move {
        gone.await;
        cancel.store(true, std::sync::atomic::Ordering::Relaxed);
    });
    let builder = Builder::new(engine);
    tokio::task::spawn_blocking(move || {
        let mut send = |line: BuildLine| {
            // A client that went away stops hearing; the build still finishes cleanly.
            let _ = writer.write_all(line.to_line().as_bytes());
            let _ = writer.flush();
        };
        let result = builder.build(&project, reader, opts, |ev| emit(ev, &mut send));
        if let Err(err) = result {
            if err.kind() == pier_api::ErrorKind::Internal {
                tracing::error!(error = %err.chain(), "a build failed");
            }
            send(BuildLine::error(err.chain(), err.exit_code()));
        }
        if let Err(err) = writer.finish() {
            tracing::debug!(error = %err, "the build's client went away");
        }
        watcher.abort();
    });
    body
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_repeated_keys_and_escapes() {
        let o = parse_query(
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
        assert!(parse_query("t=Bad:Ref").is_err());
        assert!(parse_query("buildarg=NOVALUE").is_err());
        assert!(parse_query("nope=1").is_err());
        assert!(parse_query("t=%zz").is_err());
        assert!(parse_query("").unwrap().tags.is_empty());
    }
}
