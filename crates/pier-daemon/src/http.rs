//! Serving HTTP/1.1 on the daemon's unix sockets (the native API and the Docker API), and
//! what one client may hold there:
//!
//! - a request's headers must arrive within the header timeout ([`DEFAULT_HEADER_TIMEOUT`],
//!   `pier daemon --header-timeout`), or the connection is closed: a client that sends half
//!   a request and stalls does not keep its connection (and a file descriptor) forever. The
//!   same clock runs while a kept-alive connection waits for its next request.
//! - a small body (JSON, or a declared length within [`JSON_BODY_LIMIT`]) that stops
//!   arriving for as long fails the request ([`IdleBody`]). Streams of unknown or large
//!   length (archives, image loads, build contexts) may pause: a client may be producing
//!   them as it sends.
//! - at most [`max_connections`] connections are open at once over both sockets, so clients
//!   cannot take every file descriptor the daemon has; more wait in the listen backlog.
//! - a JSON request body is at most [`JSON_BODY_LIMIT`] bytes (the routers apply it with
//!   `DefaultBodyLimit`; more is a 413). Archives, image loads and build contexts are read
//!   as streams and never held whole.
//!
//! Connections are served with upgrades on, so `docker attach` and `docker exec` can take
//! the stream over (a hijacked stream no longer counts against the cap).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::State;
use axum::http::header;
use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::UnixListener;
use tokio::sync::{watch, Semaphore};

/// How long a client has to send a request's headers (and how long an idle kept-alive
/// connection stays open).
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(30);

/// The largest JSON request body either API reads (container, network and volume
/// creates, exec and commit requests, ...).
pub const JSON_BODY_LIMIT: usize = 4 << 20;

/// File descriptors kept out of the connection cap for the daemon's own work (the store,
/// netlink sockets, images being read, pipes to monitors).
const FD_RESERVE: u64 = 256;

/// How many client connections the daemon keeps open at once: its open-file limit less
/// a reserve, between 64 and 16384.
pub fn max_connections() -> usize {
    let soft = rustix::process::getrlimit(rustix::process::Resource::Nofile)
        .current
        .unwrap_or(u64::MAX);
    soft.saturating_sub(FD_RESERVE).clamp(64, 16384) as usize
}

/// What the servers of one daemon share.
#[derive(Clone)]
pub struct ServeLimits {
    pub header_timeout: Duration,
    /// One permit per open connection, over every socket.
    pub connections: Arc<Semaphore>,
}

impl ServeLimits {
    pub fn new(header_timeout: Duration) -> Self {
        ServeLimits {
            header_timeout,
            connections: Arc::new(Semaphore::new(max_connections())),
        }
    }
}

/// Serves `app` on `listener` until `stop` turns true; then stops accepting, lets each
/// connection finish its request in flight, and returns once all are closed.
pub async fn serve(
    listener: UnixListener,
    app: Router,
    limits: ServeLimits,
    mut stop: watch::Receiver<bool>,
) {
    let app = app.layer(axum::middleware::from_fn_with_state(
        limits.header_timeout,
        idle_bodies,
    ));
    let mut open = tokio::task::JoinSet::new();
    loop {
        let permit = tokio::select! {
            p = limits.connections.clone().acquire_owned() => p.expect("the semaphore is never closed"),
            _ = stopped(&mut stop) => break,
        };
        let stream = tokio::select! {
            r = listener.accept() => match r {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of descriptors or memory: wait for some to be released rather
                    // than spin.
                    tracing::warn!(error = %e, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = stopped(&mut stop) => break,
        };
        // Reap the connections that ended, so the set holds only open ones.
        while open.try_join_next().is_some() {}
        // Who is on the other end: every request of the connection carries it.
        let peer = stream.peer_cred().ok().map(|c| crate::api::Peer {
            uid: c.uid(),
            pid: c.pid(),
        });
        let inner = TowerToHyperService::new(app.clone());
        let service = hyper::service::service_fn(move |mut req: hyper::Request<_>| {
            if let Some(p) = peer {
                req.extensions_mut().insert(p);
            }
            hyper::service::Service::call(&inner, req)
        });
        let timeout = limits.header_timeout;
        let mut stop = stop.clone();
        open.spawn(async move {
            let _permit = permit;
            let mut builder = http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(timeout);
            let conn = builder
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades();
            tokio::pin!(conn);
            let result = tokio::select! {
                r = conn.as_mut() => r,
                _ = stopped(&mut stop) => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(e) = result {
                // Timeouts and clients that went away are routine.
                tracing::debug!(error = %e, "connection closed");
            }
        });
    }
    drop(listener);
    while open.join_next().await.is_some() {}
}

/// Resolves once the daemon is stopping.
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// Gives a small request body the header timeout between its pieces (see the module doc).
async fn idle_bodies(
    State(timeout): State<Duration>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let headers = req.headers();
    let json = headers
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    let small = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<usize>().ok())
        .is_some_and(|n| n > 0 && n <= JSON_BODY_LIMIT);
    let req = if json || small {
        req.map(|body| axum::body::Body::new(IdleBody::new(body, timeout)))
    } else {
        req
    };
    next.run(req).await
}

/// A request body that fails when none of it arrives for `timeout` while it is read (the
/// clock starts at the first read: a handler may read late, and a client that expects
/// `100 Continue` sends only then).
pub struct IdleBody {
    inner: axum::body::Body,
    timeout: Duration,
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl IdleBody {
    pub fn new(inner: axum::body::Body, timeout: Duration) -> Self {
        IdleBody {
            inner,
            timeout,
            deadline: None,
        }
    }
}

impl hyper::body::Body for IdleBody {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        let this = &mut *self;
        let timeout = this.timeout;
        let deadline = this
            .deadline
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                deadline
                    .as_mut()
                    .reset(tokio::time::Instant::now() + timeout);
                Poll::Ready(frame)
            }
            Poll::Pending => match deadline.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Some(Err(axum::Error::new(format!(
                    "no part of the request body arrived for {} s",
                    this.timeout.as_secs()
                ))))),
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}
