//! Bridges between async HTTP bodies and the blocking image code, so archives stream
//! through without being held in memory or copied to disk twice.

use std::io::{self, Write};

use axum::body::{Body, Bytes};
use futures_util::TryStreamExt;
use tokio::sync::mpsc;
use tokio_util::io::{StreamReader, SyncIoBridge};

const CHUNK: usize = 256 * 1024;

/// A blocking reader over a request body; use it inside `spawn_blocking`.
pub fn body_reader(body: Body) -> impl io::Read + Send + 'static {
    let stream = body.into_data_stream().map_err(io::Error::other);
    SyncIoBridge::new(StreamReader::new(stream))
}

/// Reads and drops up to `limit` bytes of a request body that the answer does not need:
/// answering with it unread closes the connection while the client may still be
/// writing, and the client then sees a broken pipe instead of the answer.
pub async fn drain(body: Body, limit: usize) {
    use futures_util::StreamExt;
    let mut stream = body.into_data_stream();
    let mut read = 0;
    while let Some(Ok(chunk)) = stream.next().await {
        read += chunk.len();
        if read > limit {
            break;
        }
    }
}

/// [`drain`] for a body already turned into a blocking reader (by [`body_reader`]), to
/// call before answering an error found partway through it.
pub fn drain_reader(reader: &mut impl io::Read) {
    let _ = io::copy(&mut io::Read::take(reader, 256 << 20), &mut io::sink());
}

/// A blocking writer whose bytes become a response body. Only [`BodyWriter::finish`] ends
/// the body cleanly; a writer dropped without it makes the body fail, so a client never
/// takes a cut-off stream for a complete one.
pub fn body_writer() -> (BodyWriter, Body) {
    let (tx, rx) = mpsc::channel::<io::Result<Bytes>>(8);
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    (
        BodyWriter {
            tx,
            buf: Vec::with_capacity(CHUNK),
            finished: false,
        },
        Body::from_stream(stream),
    )
}

pub struct BodyWriter {
    tx: mpsc::Sender<io::Result<Bytes>>,
    buf: Vec<u8>,
    finished: bool,
}

impl BodyWriter {
    fn send_buffer(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK)));
        self.tx
            .blocking_send(Ok(chunk))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the client went away"))
    }

    /// Resolves once the body's reader is gone (the client went away).
    pub fn closed(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let tx = self.tx.clone();
        async move { tx.closed().await }
    }

    /// Sends what is buffered and ends the body cleanly.
    pub fn finish(mut self) -> io::Result<()> {
        self.send_buffer()?;
        self.finished = true;
        Ok(())
    }
}

impl Write for BodyWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK {
            self.send_buffer()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send_buffer()
    }
}

impl Drop for BodyWriter {
    fn drop(&mut self) {
        if !self.finished {
            let _ = self.tx.blocking_send(Err(io::Error::other(
                "the stream could not be completed; see the daemon's log",
            )));
        }
    }
}
