//! A typed client of Pier's native API over its unix socket, used by the CLI and by tests.
//! It holds no state: each call opens a connection, sends one request and reads the answer.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use futures_util::TryStreamExt;
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use pier_api::build::BuildLine;
use pier_api::types::{
    ArchiveFormat, FromHostRequest, HistoryEntry, ImageInspect, ImageSummary, LoadReport,
    PruneReport, RemoveReport, SystemInfo, TagRequest,
};
use pier_api::{ErrorBody, ErrorKind, ImageRef};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio_util::io::ReaderStream;

type Body = BoxBody<Bytes, std::io::Error>;

/// A response whose headers have arrived and whose body is still to be read.
pub type Pending = Response<Incoming>;

/// A connection upgraded into a raw two-way stream (attach).
pub type Hijacked = TokioIo<hyper::upgrade::Upgraded>;

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach the Pier daemon at {socket}: {source}. Is `pier daemon` running? Pick another socket with --host or PIER_HOST")]
    Connect {
        socket: String,
        #[source]
        source: std::io::Error,
    },
    /// The socket exists but this user may not open it (it is root's).
    #[error("permission denied on {socket}: the daemon's socket belongs to root. Run pier as root: `sudo pier ...`, or from a root shell (`su -`)")]
    SocketPermission { socket: String },
    /// The daemon answered with an error.
    #[error("{message}")]
    Api {
        status: u16,
        kind: ErrorKind,
        message: String,
        /// For a container that could not start: 126 or 127.
        exit_code: Option<i32>,
    },
    #[error("the connection to the daemon failed: {0}")]
    Protocol(String),
    #[error("cannot {op}: {source}")]
    Io {
        op: String,
        #[source]
        source: std::io::Error,
    },
}

impl ClientError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            ClientError::Api { kind, .. } => *kind,
            ClientError::Connect { .. } | ClientError::SocketPermission { .. } => {
                ErrorKind::Unavailable
            }
            _ => ErrorKind::Internal,
        }
    }
}

type Result<T> = std::result::Result<T, ClientError>;

/// Percent-encodes one path segment (image names hold '/' and ':').
pub fn encode_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A client of one daemon.
#[derive(Debug, Clone)]
pub struct Client {
    socket: PathBuf,
}

impl Client {
    pub fn new(socket: impl AsRef<Path>) -> Self {
        Client {
            socket: socket.as_ref().to_path_buf(),
        }
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// A fresh HTTP/1 connection to the daemon (upgrades allowed, for attach).
    async fn connect(&self) -> Result<hyper::client::conn::http1::SendRequest<Body>> {
        let stream = UnixStream::connect(&self.socket).await.map_err(|source| {
            let socket = self.socket.display().to_string();
            if source.kind() == std::io::ErrorKind::PermissionDenied {
                ClientError::SocketPermission { socket }
            } else {
                ClientError::Connect { socket, source }
            }
        })?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| ClientError::Protocol(e.to_string()))?;
        tokio::spawn(async move {
            let _ = conn.with_upgrades().await;
        });
        Ok(sender)
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        content_type: Option<&str>,
        body: Body,
    ) -> Result<Response<Incoming>> {
        let mut sender = self.connect().await?;
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header("host", "pier");
        if let Some(ct) = content_type {
            req = req.header("content-type", ct);
        }
        let req = req
            .body(body)
            .map_err(|e| ClientError::Protocol(e.to_string()))?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| ClientError::Protocol(e.to_string()))?;
        if resp.status().is_success() {
            Ok(resp)
        } else {
            Err(read_error(resp).await)
        }
    }

    async fn json<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<T> {
        let (ct, body) = match body {
            Some(b) => (Some("application/json"), full(b)),
            None => (None, full(Vec::new())),
        };
        read_json(self.send(method, path, ct, body).await?).await
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        self.json(Method::GET, path, None).await
    }

    pub async fn post<B: Serialize, T: DeserializeOwned>(&self, path: &str, body: &B) -> Result<T> {
        self.json(
            Method::POST,
            path,
            Some(serde_json::to_vec(body).expect("request serializes")),
        )
        .await
    }

    pub async fn put_json<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T> {
        self.json(
            Method::PUT,
            path,
            Some(serde_json::to_vec(body).expect("request serializes")),
        )
        .await
    }

    pub async fn delete<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        self.json(Method::DELETE, path, None).await
    }

    /// PUTs a byte stream (an archive); expects no content back.
    pub async fn put_stream(
        &self,
        path: &str,
        reader: impl AsyncRead + Send + Sync + 'static,
    ) -> Result<()> {
        let body =
            StreamBody::new(ReaderStream::with_capacity(reader, 256 * 1024).map_ok(Frame::data))
                .boxed();
        self.send(Method::PUT, path, Some("application/x-tar"), body)
            .await?;
        Ok(())
    }

    /// POSTs a byte stream (an archive) and reads a JSON answer.
    pub async fn post_stream<T: DeserializeOwned>(
        &self,
        path: &str,
        reader: impl AsyncRead + Send + Sync + 'static,
    ) -> Result<T> {
        let body =
            StreamBody::new(ReaderStream::with_capacity(reader, 256 * 1024).map_ok(Frame::data))
                .boxed();
        read_json(
            self.send(Method::POST, path, Some("application/x-tar"), body)
                .await?,
        )
        .await
    }

    /// GETs a byte stream into `out`; returns the bytes written.
    pub async fn get_stream(&self, path: &str, out: &mut (impl AsyncWrite + Unpin)) -> Result<u64> {
        let resp = self.send(Method::GET, path, None, full(Vec::new())).await?;
        let mut body = resp.into_body();
        let mut n = 0u64;
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| {
                ClientError::Protocol(format!(
                    "the stream broke off ({e}); the daemon's log says why"
                ))
            })?;
            if let Ok(data) = frame.into_data() {
                out.write_all(&data)
                    .await
                    .map_err(|source| ClientError::Io {
                        op: "write the output".into(),
                        source,
                    })?;
                n += data.len() as u64;
            }
        }
        out.flush().await.map_err(|source| ClientError::Io {
            op: "write the output".into(),
            source,
        })?;
        Ok(n)
    }

    /// GETs a stream of JSON lines, calling `f` for each until the stream ends or `f`
    /// returns false.
    pub async fn get_ndjson<T: DeserializeOwned>(
        &self,
        path: &str,
        f: impl FnMut(T) -> bool,
    ) -> Result<()> {
        read_ndjson(self.get_begin(path).await?, f).await
    }

    /// GETs and returns as soon as the response headers arrive.
    pub async fn get_begin(&self, path: &str) -> Result<Response<Incoming>> {
        self.send(Method::GET, path, None, full(Vec::new())).await
    }

    /// POSTs and returns as soon as the response headers arrive; read the JSON body later
    /// with [`read_json`]. For calls whose answer comes later (`wait`).
    pub async fn post_begin(&self, path: &str) -> Result<Response<Incoming>> {
        self.send(Method::POST, path, None, full(Vec::new())).await
    }

    /// POSTs a JSON body and returns once the response headers arrive (for streamed
    /// answers).
    pub async fn post_raw(&self, path: &str, json: Vec<u8>) -> Result<Pending> {
        self.send(Method::POST, path, Some("application/json"), full(json))
            .await
    }

    /// POSTs with `Upgrade: tcp` and returns the upgraded two-way stream.
    pub async fn hijack(&self, path: &str) -> Result<Hijacked> {
        Ok(self.hijack_with(path, None).await?.0)
    }

    /// Like [`Client::hijack`], with an optional JSON body; also returns the response
    /// headers.
    pub async fn hijack_with(
        &self,
        path: &str,
        json: Option<Vec<u8>>,
    ) -> Result<(Hijacked, hyper::HeaderMap)> {
        let mut sender = self.connect().await?;
        let req = Request::builder()
            .method(Method::POST)
            .uri(path)
            .header("host", "pier")
            .header("connection", "Upgrade")
            .header("upgrade", "tcp")
            .header("content-type", "application/json")
            .body(full(json.unwrap_or_default()))
            .map_err(|e| ClientError::Protocol(e.to_string()))?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| ClientError::Protocol(e.to_string()))?;
        if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
            return Err(read_error(resp).await);
        }
        let headers = resp.headers().clone();
        let upgraded = hyper::upgrade::on(resp)
            .await
            .map_err(|e| ClientError::Protocol(format!("the upgrade failed: {e}")))?;
        Ok((TokioIo::new(upgraded), headers))
    }

    /// POSTs with no body and expects no content back.
    pub async fn post_empty(&self, path: &str) -> Result<()> {
        self.send(Method::POST, path, None, full(Vec::new()))
            .await?;
        Ok(())
    }

    /// POSTs a JSON body and expects no content back.
    pub async fn post_no_content<B: Serialize>(&self, path: &str, body: &B) -> Result<()> {
        let body = serde_json::to_vec(body).expect("request serializes");
        self.send(Method::POST, path, Some("application/json"), full(body))
            .await?;
        Ok(())
    }

    /// DELETEs and expects no content back.
    pub async fn delete_empty(&self, path: &str) -> Result<()> {
        self.send(Method::DELETE, path, None, full(Vec::new()))
            .await?;
        Ok(())
    }

    // ---- typed calls -------------------------------------------------------------------

    pub async fn info(&self) -> Result<SystemInfo> {
        self.get("/v1/info").await
    }

    pub async fn images(&self) -> Result<Vec<ImageSummary>> {
        self.get("/v1/images").await
    }

    /// Images; with `all`, also the intermediate images of builds.
    pub async fn images_all(&self, all: bool) -> Result<Vec<ImageSummary>> {
        self.get(&format!("/v1/images?all={all}")).await
    }

    /// `POST /v1/build?{query}` with the build context as the body, calling `f` for each
    /// progress line until the stream ends or `f` returns false.
    pub async fn build(
        &self,
        query: &str,
        context: impl AsyncRead + Send + Sync + 'static,
        f: impl FnMut(BuildLine) -> bool,
    ) -> Result<()> {
        let body =
            StreamBody::new(ReaderStream::with_capacity(context, 256 * 1024).map_ok(Frame::data))
                .boxed();
        let resp = self
            .send(
                Method::POST,
                &format!("/v1/build?{query}"),
                Some("application/x-tar"),
                body,
            )
            .await?;
        read_ndjson(resp, f).await
    }

    pub async fn inspect_image(&self, reference: &str) -> Result<ImageInspect> {
        self.get(&format!("/v1/images/{}", encode_segment(reference)))
            .await
    }

    pub async fn image_history(&self, reference: &str) -> Result<Vec<HistoryEntry>> {
        self.get(&format!("/v1/images/{}/history", encode_segment(reference)))
            .await
    }

    pub async fn tag_image(&self, reference: &str, target: ImageRef) -> Result<()> {
        self.post(
            &format!("/v1/images/{}/tag", encode_segment(reference)),
            &TagRequest { target },
        )
        .await
    }

    pub async fn remove_image(&self, reference: &str, force: bool) -> Result<RemoveReport> {
        self.delete(&format!(
            "/v1/images/{}?force={force}",
            encode_segment(reference)
        ))
        .await
    }

    pub async fn prune_images(&self, all: bool) -> Result<PruneReport> {
        self.post(&format!("/v1/images/prune?all={all}"), &()).await
    }

    pub async fn load_images(
        &self,
        archive: impl AsyncRead + Send + Sync + 'static,
    ) -> Result<LoadReport> {
        self.post_stream("/v1/images/load", archive).await
    }

    pub async fn import_image(
        &self,
        rootfs: impl AsyncRead + Send + Sync + 'static,
        name: Option<&ImageRef>,
        changes: &[String],
    ) -> Result<LoadReport> {
        let mut q = Vec::new();
        if let Some(n) = name {
            q.push(format!("name={}", encode_segment(&n.familiar())));
        }
        if !changes.is_empty() {
            q.push(format!("change={}", encode_segment(&changes.join("\n"))));
        }
        let q = if q.is_empty() {
            String::new()
        } else {
            format!("?{}", q.join("&"))
        };
        self.post_stream(&format!("/v1/images/import{q}"), rootfs)
            .await
    }

    pub async fn image_from_host(
        &self,
        name: ImageRef,
        binaries: Vec<String>,
    ) -> Result<LoadReport> {
        self.post("/v1/images/from-host", &FromHostRequest { name, binaries })
            .await
    }

    pub async fn save_images(
        &self,
        names: &[String],
        format: ArchiveFormat,
        out: &mut (impl AsyncWrite + Unpin),
    ) -> Result<u64> {
        let names: Vec<String> = names.iter().map(|n| encode_segment(n)).collect();
        let format = match format {
            ArchiveFormat::DockerArchive => "docker-archive",
            ArchiveFormat::OciArchive => "oci-archive",
        };
        self.get_stream(
            &format!("/v1/images/save?names={}&format={format}", names.join(",")),
            out,
        )
        .await
    }
}

/// Reads a body of JSON lines, calling `f` for each until it ends or `f` returns false.
pub async fn read_ndjson<T: DeserializeOwned>(
    resp: Response<Incoming>,
    mut f: impl FnMut(T) -> bool,
) -> Result<()> {
    let mut body = resp.into_body();
    let mut buf: Vec<u8> = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame =
            frame.map_err(|e| ClientError::Protocol(format!("the stream broke off: {e}")))?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        buf.extend_from_slice(&data);
        while let Some(pos) = buf.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = buf.drain(..=pos).collect();
            let item = serde_json::from_slice(&line).map_err(|e| {
                ClientError::Protocol(format!("unexpected line from the daemon: {e}"))
            })?;
            if !f(item) {
                return Ok(());
            }
        }
    }
    Ok(())
}

/// Reads a JSON body (an empty one reads as `null`, for 204 answers).
pub async fn read_json<T: DeserializeOwned>(resp: Response<Incoming>) -> Result<T> {
    let bytes = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| ClientError::Protocol(e.to_string()))?
        .to_bytes();
    let bytes = if bytes.is_empty() {
        Bytes::from_static(b"null")
    } else {
        bytes
    };
    serde_json::from_slice(&bytes)
        .map_err(|e| ClientError::Protocol(format!("unexpected answer from the daemon: {e}")))
}

fn full(bytes: Vec<u8>) -> Body {
    Full::new(Bytes::from(bytes))
        .map_err(|never| match never {})
        .boxed()
}

async fn read_error(resp: Response<Incoming>) -> ClientError {
    let status = resp.status();
    let bytes = match resp.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => return ClientError::Protocol(e.to_string()),
    };
    match serde_json::from_slice::<ErrorBody>(&bytes) {
        Ok(body) => ClientError::Api {
            status: status.as_u16(),
            kind: body.kind,
            message: body.message,
            exit_code: body.exit_code,
        },
        Err(_) => ClientError::Api {
            status: status.as_u16(),
            kind: ErrorKind::from_status(status.as_u16()),
            message: format!(
                "{} {}",
                status_text(status),
                String::from_utf8_lossy(&bytes).trim()
            ),
            exit_code: None,
        },
    }
}

fn status_text(s: StatusCode) -> String {
    format!("{} {}", s.as_u16(), s.canonical_reason().unwrap_or(""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_names_for_paths() {
        assert_eq!(
            encode_segment("localhost:5000/a/b:v1"),
            "localhost%3A5000%2Fa%2Fb%3Av1"
        );
        assert_eq!(encode_segment("busybox"), "busybox");
    }
}
