//! Progress bars for the CLI's long transfers (image load, save and import, container
//! export, volume export and import, the build context's upload), as pull and push have
//! theirs: drawn on standard error, and only when it is a terminal, so that scripts and
//! pipes see nothing extra. [`Counted`] wraps the stream being sent or received and
//! moves the bar by the bytes that pass.

use std::io::IsTerminal;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A bar for `label` (`Loading`, `Exporting`, ...) over `total` bytes when known (else
/// a byte counter), drawn only when standard error is a terminal.
pub fn bar(label: &str, total: Option<u64>) -> ProgressBar {
    bar_for(std::io::stderr().is_terminal(), label, total)
}

fn bar_for(tty: bool, label: &str, total: Option<u64>) -> ProgressBar {
    if !tty {
        return ProgressBar::hidden();
    }
    let (b, template) = match total {
        Some(t) => (
            ProgressBar::with_draw_target(Some(t), ProgressDrawTarget::stderr()),
            "{prefix:.bold} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {eta}",
        ),
        None => (
            ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr()),
            "{prefix:.bold} {spinner} {bytes} {bytes_per_sec}",
        ),
    };
    b.set_style(
        ProgressStyle::with_template(template)
            .expect("template")
            .progress_chars("=> "),
    );
    b.set_prefix(label.to_string());
    b
}

/// A reader or writer that moves `bar` by the bytes read or written through it; a reader
/// clears the bar at its end.
pub struct Counted<T> {
    inner: T,
    bar: ProgressBar,
}

impl<T> Counted<T> {
    pub fn new(inner: T, bar: ProgressBar) -> Self {
        Counted { inner, bar }
    }

    pub fn bar(&self) -> &ProgressBar {
        &self.bar
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Counted<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let room = buf.remaining() > 0;
        ready!(Pin::new(&mut self.inner).poll_read(cx, buf))?;
        let n = buf.filled().len() - before;
        if n > 0 {
            self.bar.inc(n as u64);
        } else if room {
            self.bar.finish_and_clear();
        }
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Counted<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let n = ready!(Pin::new(&mut self.inner).poll_write(cx, buf))?;
        self.bar.inc(n as u64);
        Poll::Ready(Ok(n))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    #[tokio::test]
    async fn a_reader_counts_every_byte_and_clears_at_its_end() {
        let data = vec![7u8; 300_000];
        let mut r = Counted::new(&data[..], ProgressBar::hidden());
        let mut small = [0u8; 1000];
        let n = r.read(&mut small).await.unwrap();
        assert_eq!(r.bar().position(), n as u64);
        assert!(!r.bar().is_finished());
        let mut rest = Vec::new();
        r.read_to_end(&mut rest).await.unwrap();
        assert_eq!(n + rest.len(), data.len());
        assert_eq!(r.bar().position(), data.len() as u64);
        assert!(r.bar().is_finished(), "cleared at the end of the stream");
    }

    #[tokio::test]
    async fn a_writer_counts_every_byte_written() {
        let mut out = Vec::new();
        let mut w = Counted::new(&mut out, ProgressBar::hidden());
        w.write_all(b"hello ").await.unwrap();
        w.write_all(&[1u8; 70_000]).await.unwrap();
        w.flush().await.unwrap();
        assert_eq!(w.bar().position(), 70_006);
        drop(w);
        assert_eq!(out.len(), 70_006);
    }

    #[test]
    fn nothing_is_drawn_without_a_terminal() {
        assert!(bar_for(false, "Loading", Some(10)).is_hidden());
        assert!(bar_for(false, "Exporting", None).is_hidden());
    }
}
