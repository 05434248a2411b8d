//! `POST /build`: Docker's classic builder call (`docker build` with the legacy builder,
//! docker-compose's `build:`), over the engine's Dockerfile builder. The body is the
//! context tar; the answer streams `{"stream": ...}` lines (a `RUN`'s standard error in
//! red), `{"aux": {"ID": ...}}` at the end of each stage, then the `Successfully built`
//! and `Successfully tagged` lines, or a last `{"error": ...}` line, as Docker's does.
//!
//! Docker's query is read by `pier_api::docker::build` (what it maps, accepts and refuses).

use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use pier_api::build::BuildLine;

use super::params::Params;
use super::{DResult, DState};
use crate::api::Ctx;
use pier_engine::build::BuildEvent;

/// `POST /build`.
pub async fn build(Ctx(ctx): Ctx, state: DState, p: Params, body: Body) -> DResult<Response> {
    let d = state.0;
    let opts = pier_api::docker::build::params(&p, pier_image::build::host_arch())?.into();
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
