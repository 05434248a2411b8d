//! Interactive sessions: exec sessions, attach and log follow, one implementation each,
//! used by every API (native and Docker). The API layers only translate framing (ndjson,
//! Docker's 8-byte headers, raw TTY streams) and parameters; only this module knows the
//! exec helper, the monitor's socket and the log files.
//!
//! - [`exec`]: the exec session registry (create, start, inspect, resize), one retention.
//! - [`attach`]: a container's stdio through its monitor, and terminal resizes.
//! - [`logs`]: log reading and following, woken by inotify rather than polled.
//!
//! Output reaches a caller as typed [`Chunk`]s on a channel; input goes through an
//! [`InputSender`] (stdin bytes, close stdin, resize), which this module turns into the
//! attach frames of [`pier_runtime::attach`].
//!
//! Detach keys: a session with a terminal that takes input watches that input for its
//! detach sequence (ctrl-p ctrl-q unless the caller gave others), as Docker does. The
//! sequence is not passed on; the session then stops passing input and output and closes
//! its output channel, and the container (or the exec's command) runs on. The caller
//! learns of it through [`Detached`].

pub mod attach;
pub mod exec;
pub mod logs;

use std::sync::{Arc, Mutex};

use pier_api::detach::Scanner;
use pier_runtime::attach as proto;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, watch};

pub use attach::{AttachIo, AttachOptions};
pub use exec::{ExecError, ExecInfo, ExecIo, ExecSpec, StartOptions};
pub use logs::{Follow, LogOptions};
pub use pier_api::detach::DetachKeys;

/// Which output stream a chunk came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    /// The stream number of Docker's multiplexed framing (and of the attach frames).
    pub fn number(self) -> u8 {
        match self {
            Stream::Stdout => proto::STDOUT,
            Stream::Stderr => proto::STDERR,
        }
    }

    /// `stdout` or `stderr`, as log lines name them.
    pub fn name(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }

    /// The stream a log line names (anything but `stderr` is stdout).
    pub fn of_log(name: &str) -> Stream {
        if name == "stderr" {
            Stream::Stderr
        } else {
            Stream::Stdout
        }
    }
}

/// A piece of output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    pub stream: Stream,
    pub data: Vec<u8>,
}

/// Input to a session, in order.
#[derive(Debug)]
enum Input {
    Stdin(Vec<u8>),
    CloseStdin,
}

/// Where a caller sends input: stdin bytes and its end (in order, with back-pressure),
/// and terminal sizes (never blocked by input). Cloning gives another handle to the same
/// session. Every method answers false once the session has ended or detached.
#[derive(Debug, Clone)]
pub struct InputSender {
    data: mpsc::Sender<Input>,
    resize: mpsc::UnboundedSender<(u16, u16)>,
    /// The detach sequence this session watches for, if any.
    escape: Option<Arc<Escape>>,
}

/// A session's detach sequence and whether it was typed.
#[derive(Debug)]
struct Escape {
    scanner: Mutex<Scanner>,
    detached: watch::Sender<bool>,
}

impl InputSender {
    /// Passes bytes to the command's standard input; the detach sequence, when the
    /// session watches for one, is held back and detaches the session.
    pub async fn stdin(&self, bytes: &[u8]) -> bool {
        let Some(e) = &self.escape else {
            return self.data.send(Input::Stdin(bytes.to_vec())).await.is_ok();
        };
        if *e.detached.borrow() {
            return false;
        }
        let (pass, hit) = e.scanner.lock().unwrap().feed(bytes);
        if !pass.is_empty() && self.data.send(Input::Stdin(pass)).await.is_err() {
            return false;
        }
        if hit {
            e.detached.send_replace(true);
            return false;
        }
        true
    }

    /// Closes the command's standard input (ignored by a terminal).
    pub async fn close_stdin(&self) -> bool {
        if self.escape.as_ref().is_some_and(|e| *e.detached.borrow()) {
            return false;
        }
        self.data.send(Input::CloseStdin).await.is_ok()
    }

    /// Sets the terminal's size (rows, columns).
    pub fn resize(&self, rows: u16, cols: u16) -> bool {
        self.resize.send((rows, cols)).is_ok()
    }

    /// Whether (and when) the session's caller typed its detach sequence.
    pub fn detached(&self) -> Detached {
        Detached(self.escape.as_ref().map(|e| e.detached.subscribe()))
    }
}

/// Tells whether a session was detached by its detach keys.
#[derive(Debug, Clone)]
pub struct Detached(Option<watch::Receiver<bool>>);

impl Detached {
    /// Waits for the detach; never returns for a session that cannot detach or whose
    /// input is gone without one.
    pub async fn wait(&mut self) {
        if let Some(rx) = self.0.as_mut() {
            if rx.wait_for(|d| *d).await.is_ok() {
                return;
            }
        }
        std::future::pending::<()>().await
    }

    /// Whether it has detached.
    pub fn is_detached(&self) -> bool {
        self.0.as_ref().is_some_and(|rx| *rx.borrow())
    }
}

/// The session's side of an [`InputSender`].
struct InputReceiver {
    data: mpsc::Receiver<Input>,
    resize: mpsc::UnboundedReceiver<(u16, u16)>,
}

/// A session's input; `escape`: the detach sequence it watches for (none: it cannot
/// detach).
fn input_channel(escape: Option<&[u8]>) -> (InputSender, InputReceiver) {
    let (data_tx, data) = mpsc::channel(64);
    let (resize_tx, resize) = mpsc::unbounded_channel();
    let escape = escape.map(|keys| {
        Arc::new(Escape {
            scanner: Mutex::new(Scanner::new(keys)),
            detached: watch::channel(false).0,
        })
    });
    (
        InputSender {
            data: data_tx,
            resize: resize_tx,
            escape,
        },
        InputReceiver { data, resize },
    )
}

/// What an [`InputReceiver`] gave next.
enum Next {
    Frame(Vec<u8>),
    /// Stdin input that this session does not pass on.
    Skip,
    /// Every sender of stdin input is gone (resizes may still come).
    DataClosed,
    /// Every sender is gone.
    Closed,
}

impl InputReceiver {
    /// The next frame for the helper or monitor. Stdin input is dropped unless `stdin`.
    async fn next(&mut self, data_open: bool, stdin: bool) -> Next {
        tokio::select! {
            m = self.data.recv(), if data_open => match m {
                Some(Input::Stdin(b)) if stdin => Next::Frame(proto::frame(proto::STDIN, &b)),
                Some(Input::CloseStdin) if stdin => Next::Frame(proto::frame(proto::CLOSE_STDIN, b"")),
                Some(_) => Next::Skip,
                None => Next::DataClosed,
            },
            r = self.resize.recv() => match r {
                Some((h, w)) => Next::Frame(proto::resize(h, w)),
                None if data_open => {
                    // Resizes are over; wait for the rest of the input.
                    match self.data.recv().await {
                        Some(Input::Stdin(b)) if stdin => Next::Frame(proto::frame(proto::STDIN, &b)),
                        Some(Input::CloseStdin) if stdin => Next::Frame(proto::frame(proto::CLOSE_STDIN, b"")),
                        Some(_) => Next::Skip,
                        None => Next::Closed,
                    }
                }
                None => Next::Closed,
            },
        }
    }
}

impl InputReceiver {
    /// The frames of the stdin input already sent (passed on before a detach).
    fn ready_frames(&mut self, stdin: bool) -> Vec<u8> {
        let mut out = Vec::new();
        while let Ok(i) = self.data.try_recv() {
            match i {
                Input::Stdin(b) if stdin => out.extend(proto::frame(proto::STDIN, &b)),
                _ => {}
            }
        }
        out
    }
}

/// Writes the input as attach frames to `w` until every sender is gone or a write fails.
async fn pump_input(mut rx: InputReceiver, mut w: impl AsyncWrite + Unpin, stdin: bool) {
    let mut data_open = true;
    loop {
        match rx.next(data_open, stdin).await {
            Next::Frame(f) => {
                if w.write_all(&f).await.is_err() {
                    return;
                }
            }
            Next::Skip => {}
            Next::DataClosed => data_open = false,
            Next::Closed => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn input_becomes_frames_in_order_and_ends_with_its_senders() {
        let (tx, rx) = input_channel(None);
        let (mut r, w) = tokio::io::duplex(4096);
        let pump = tokio::spawn(pump_input(rx, w, true));
        assert!(tx.stdin(b"ab").await);
        assert!(tx.close_stdin().await);
        drop(tx);
        pump.await.unwrap();
        let mut got = Vec::new();
        tokio::io::AsyncReadExt::read_to_end(&mut r, &mut got)
            .await
            .unwrap();
        let mut want = proto::frame(proto::STDIN, b"ab");
        want.extend(proto::frame(proto::CLOSE_STDIN, b""));
        assert_eq!(got, want);
    }

    #[tokio::test]
    async fn the_detach_keys_are_held_back_and_detach_the_session() {
        let (tx, rx) = input_channel(Some(&pier_api::detach::DEFAULT));
        let (mut r, w) = tokio::io::duplex(4096);
        let pump = tokio::spawn(pump_input(rx, w, true));
        let mut detached = tx.detached();
        assert!(tx.stdin(b"ab\x10").await, "ctrl-p alone is held");
        assert!(!detached.is_detached());
        assert!(
            !tx.stdin(b"\x11typed after").await,
            "ctrl-q completes the keys"
        );
        tokio::time::timeout(std::time::Duration::from_secs(1), detached.wait())
            .await
            .expect("the detach is seen");
        assert!(!tx.stdin(b"more").await && !tx.close_stdin().await);
        drop(tx);
        pump.await.unwrap();
        let mut got = Vec::new();
        tokio::io::AsyncReadExt::read_to_end(&mut r, &mut got)
            .await
            .unwrap();
        assert_eq!(got, proto::frame(proto::STDIN, b"ab"));
        // Without keys nothing detaches.
        let (tx, _rx) = input_channel(None);
        assert!(tx.stdin(&[0x10, 0x11]).await);
        assert!(!tx.detached().is_detached());
    }

    #[tokio::test]
    async fn without_stdin_only_resizes_pass() {
        let (tx, rx) = input_channel(None);
        let (mut r, w) = tokio::io::duplex(4096);
        let pump = tokio::spawn(pump_input(rx, w, false));
        assert!(tx.stdin(b"typed").await);
        assert!(tx.close_stdin().await);
        assert!(tx.resize(24, 80));
        drop(tx);
        pump.await.unwrap();
        let mut got = Vec::new();
        tokio::io::AsyncReadExt::read_to_end(&mut r, &mut got)
            .await
            .unwrap();
        assert_eq!(got, proto::resize(24, 80));
    }
}
