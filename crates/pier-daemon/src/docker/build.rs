//! `POST /build`: Docker's classic builder call (`docker build` with the legacy builder,
//! docker-compose's `build:`), over the engine's Dockerfile builder. The body is the
//! context tar; the answer streams `{"stream": ...}` lines and `{"aux": {"ID": ...}}`, or
//! a last `{"error": ...}` line, as Docker's does.
//!
//! Docker's query is read by `pier_api::docker::build` (what it maps, accepts and refuses).

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
        ctx,
    );
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}
