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
use pier_api::build::{BuildAux, BuildErrorDetail, BuildLine, BuildParams, BuildQuery};
use pier_api::ErrorBody;
use utoipa::OpenApi;

use crate::api::{Ctx, Engine, Shared};
use crate::error::{ApiError, ApiResult};
use crate::stream::{body_reader, body_writer, drain};
use pier_engine::build::{BuildEvent, BuildOptions, Builder};
use pier_engine::RequestContext;

pub fn routes() -> Router<Arc<Engine>> {
    Router::new().route("/v1/build", post(build))
}

#[derive(OpenApi)]
#[openapi(
    paths(build),
    components(schemas(BuildLine, BuildErrorDetail, BuildAux))
)]
pub struct BuildDoc;

/// Builds an image from a Dockerfile. The body is the build context (a tar, plain or
/// gzip/zstd-compressed); the answer streams JSON lines: `{"stream": ...}` output,
/// `{"aux": {"ID": ...}}` as each stage ends, the `Successfully built` text, or an
/// `{"error": ...}` line as the last one on failure.
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
    let opts = match BuildParams::parse_native(q.as_deref().unwrap_or("")) {
        Ok(o) => BuildOptions::from(o),
        Err(e) => {
            // Read (some of) the context first: a client still sending it would see its
            // connection closed rather than this answer.
            drain(body, 256 << 20).await;
            return Err(ApiError::invalid(e.0));
        }
    };
    let body = stream_build(
        &e,
        opts,
        body,
        |ev, send| {
            if let Some(line) = ev.to_line() {
                send(line)
            }
        },
        |_| {},
        ctx,
    );
    Ok(([(header::CONTENT_TYPE, "application/x-ndjson")], body).into_response())
}

/// Runs a build of the context in `body` in the background and returns the body its
/// answer streams in, one JSON line each; `emit` turns each builder event into the lines
/// sent (the native and Docker APIs send them alike but for `-q`), and `before_error`
/// may send more lines before a failure's error line (what `-q` held back). A client that
/// goes away cancels the build, as Docker's does; a failure ends the stream with an error
/// line.
pub(crate) fn stream_build(
    engine: &Engine,
    mut opts: BuildOptions,
    body: Body,
    mut emit: impl FnMut(BuildEvent, &mut dyn FnMut(BuildLine)) + Send + 'static,
    before_error: impl FnOnce(&mut dyn FnMut(BuildLine)) + Send + 'static,
    ctx: RequestContext,
) -> Body {
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
        let result = builder.build(&ctx, reader, opts, |ev| emit(ev, &mut send));
        if let Err(err) = result {
            before_error(&mut send);
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
