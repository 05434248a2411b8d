//! Attach: a container's stdio through its monitor's socket (`attach.sock` in the
//! container's directory, which only the engine knows), and terminal resizes.
//!
//! ```text
//! attach ──(wait_start: until the followed run starts)──> connect to the monitor
//!    output: monitor frames ──> Chunks          input: InputSender ──> frames ──> monitor
//!    ends when the monitor closes the socket, or when the caller has dropped both its
//!    output receiver and its input sender
//! ```
//!
//! A caller that attaches before the start (Docker clients do) gets its session at once;
//! input and resizes sent meanwhile wait for the connection. If the run ends before the
//! monitor could be reached, the output is the log lines written since the attach.
//!
//! Resizes of a container with a terminal go to its newest attach session (so a resize
//! sent before the start waits for it); without one, straight to the monitor.
//!
//! A session with a terminal and input detaches on its detach keys (ctrl-p ctrl-q by
//! default): it leaves the monitor and closes its output; the container runs on.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pier_api::containers::{ContainerInspect, ContainerStatus};
use pier_api::ProjectName;
use pier_runtime::attach as proto;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::sync::mpsc;

use super::logs::{Follow, FollowEnd, LogFollower};
use super::{input_channel, Chunk, Detached, InputReceiver, InputSender, Next, Stream};
use crate::context::RequestContext;
use crate::error::conflict;
use crate::error::{EngineError, EngineResult};
use crate::instances::Instances;
use pier_api::detach::DetachKeys;

/// How to attach.
#[derive(Debug, Clone, Default)]
pub struct AttachOptions {
    /// Pass stdin input to the container (otherwise only resizes pass).
    pub stdin: bool,
    /// Attach to the current run, or wait for the next start if the container does not
    /// run (otherwise a container that does not run is refused).
    pub wait_start: bool,
    /// The keys that detach a session with a terminal and input (ctrl-p ctrl-q when
    /// none).
    pub detach_keys: Option<DetachKeys>,
}

/// An attach session: the container's output, and where its input goes.
pub struct AttachIo {
    pub output: mpsc::Receiver<Chunk>,
    pub input: InputSender,
    /// Whether the container has a terminal (its output is then all stdout).
    pub tty: bool,
}

type ResizeSender = mpsc::UnboundedSender<(u16, u16)>;

/// The resize handles of the attach sessions of containers with a terminal.
#[derive(Default)]
pub struct AttachRegistry {
    next: AtomicU64,
    /// By `project/container`: the session's number and where its resizes go.
    sessions: Mutex<HashMap<String, (u64, ResizeSender)>>,
}

impl AttachRegistry {
    fn register(&self, key: String, input: &InputSender) -> u64 {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        self.sessions
            .lock()
            .unwrap()
            .insert(key, (n, input.resize.clone()));
        n
    }

    fn forget(&self, key: &str, n: u64) {
        let mut s = self.sessions.lock().unwrap();
        if s.get(key).is_some_and(|(m, _)| *m == n) {
            s.remove(key);
        }
    }

    fn resize(&self, key: &str, rows: u16, cols: u16) -> bool {
        self.sessions
            .lock()
            .unwrap()
            .get(key)
            .is_some_and(|(_, tx)| tx.send((rows, cols)).is_ok())
    }
}

fn key(project: &ProjectName, id: &str) -> String {
    format!("{project}/{id}")
}

fn running(c: &ContainerInspect) -> bool {
    matches!(
        c.state.status,
        ContainerStatus::Running | ContainerStatus::Paused
    )
}

fn not_running(c: &ContainerInspect) -> EngineError {
    conflict(format!(
        "container {} is not running; start it first",
        c.name
    ))
}

impl Instances {
    /// Connects to a container's monitor; with `retries`, tries again briefly while the
    /// container runs (its monitor may be starting or exiting).
    async fn connect_monitor(&self, c: &ContainerInspect, retries: u32) -> Option<UnixStream> {
        for attempt in 0..=retries {
            if let Ok(s) = proto::connect(&self.cdir(&c.id)) {
                if s.set_nonblocking(true).is_ok() {
                    if let Ok(s) = UnixStream::from_std(s) {
                        return Some(s);
                    }
                }
            }
            if attempt == retries {
                break;
            }
            let now = self.lookup(&c.project, &c.id).ok()?;
            if !running(&now) {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        None
    }

    /// Attaches to a container's stdio.
    pub async fn attach(
        self: &Arc<Self>,
        ctx: &RequestContext,
        id: &str,
        opts: AttachOptions,
    ) -> EngineResult<AttachIo> {
        let project = ctx.project();
        let c = self.lookup(project, id)?;
        let tty = c.config.tty;
        let keys = opts.detach_keys.clone().unwrap_or_default();
        let (input, input_rx) = input_channel((tty && opts.stdin).then_some(keys.bytes()));
        let detached = input.detached();
        let stdin = opts.stdin;
        let (out_tx, output) = mpsc::channel(16);
        let sock = if opts.wait_start {
            None
        } else {
            Some(
                self.connect_monitor(&c, 0)
                    .await
                    .ok_or_else(|| not_running(&c))?,
            )
        };
        // Output that no log keeps (log driver `none`) reaches a client only through the
        // monitor: the start it waits for holds it until the client connects.
        if opts.wait_start && !running(&c) && c.config.log_driver.as_deref() == Some("none") {
            let pending = self.cdir(&c.id).join(pier_runtime::state::ATTACH_PENDING);
            std::fs::write(&pending, b"").map_err(|e| {
                EngineError::Internal(format!("cannot write {}: {e}", pending.display()))
            })?;
        }
        let k = key(project, &c.id);
        let registered = tty.then(|| self.attached.register(k.clone(), &input));
        let this = self.clone();
        // Set up now, so a start right after this returns is seen.
        let waiting = opts.wait_start.then(|| {
            (
                FollowEnd::new(Follow::Run, &c.state),
                self.state_watch(&c),
                LogFollower::at_end(std::path::Path::new(&c.log_path)),
            )
        });
        tokio::spawn(async move {
            let sock = match (sock, waiting) {
                (Some(s), _) => Some(s),
                (None, Some((end, mut state, follower))) => {
                    let s = if end.started(&mut state).await {
                        this.connect_monitor(&c, 20).await
                    } else {
                        None
                    };
                    if s.is_none() {
                        // It ran and ended before we could connect: its output is in the log.
                        send_log(follower, &out_tx).await;
                    }
                    s
                }
                (None, None) => None,
            };
            if let Some(sock) = sock {
                if pump(sock, &out_tx, input_rx, stdin, detached).await {
                    this.emit(&c, "detach", &[]);
                }
            }
            if let Some(n) = registered {
                this.attached.forget(&k, n);
            }
        });
        Ok(AttachIo { output, input, tty })
    }

    /// Resizes a container's terminal.
    pub async fn resize(
        &self,
        ctx: &RequestContext,
        id: &str,
        rows: u16,
        cols: u16,
    ) -> EngineResult<()> {
        let project = ctx.project();
        let c = self.lookup(project, id)?;
        if self.attached.resize(&key(project, &c.id), rows, cols) {
            return Ok(());
        }
        if !running(&c) {
            return Err(not_running(&c));
        }
        let mut sock = self
            .connect_monitor(&c, 20)
            .await
            .ok_or_else(|| not_running(&c))?;
        sock.write_all(&proto::resize(rows, cols))
            .await
            .map_err(|e| EngineError::Internal(format!("resize: {e}")))
    }
}

async fn send_log(mut follower: LogFollower, out: &mpsc::Sender<Chunk>) {
    for l in follower.read() {
        let chunk = Chunk {
            stream: Stream::of_log(&l.stream),
            data: l.log.into_bytes(),
        };
        if out.send(chunk).await.is_err() {
            return;
        }
    }
}

/// Moves frames between the monitor and the caller until the monitor closes, the caller
/// has dropped both its output receiver and its stdin senders, or it detached (then
/// true). Output nobody reads any more is read from the monitor and dropped.
async fn pump(
    sock: UnixStream,
    out: &mpsc::Sender<Chunk>,
    mut input: InputReceiver,
    stdin: bool,
    mut detached: Detached,
) -> bool {
    let (mut mr, mut mw) = sock.into_split();
    let mut buf = vec![0u8; 64 * 1024];
    let mut pending = Vec::new();
    let mut queue: VecDeque<Chunk> = VecDeque::new();
    let (mut out_open, mut data_open, mut input_open) = (true, true, true);
    loop {
        tokio::select! {
            r = mr.read(&mut buf), if queue.len() < 16 => {
                let n = match r {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                pending.extend_from_slice(&buf[..n]);
                let Ok(frames) = proto::parse(&mut pending) else { break };
                if out_open {
                    queue.extend(frames.into_iter().map(|(kind, data)| Chunk {
                        stream: if kind == proto::STDERR { Stream::Stderr } else { Stream::Stdout },
                        data,
                    }));
                }
            }
            p = out.reserve(), if out_open && !queue.is_empty() => match p {
                Ok(p) => p.send(queue.pop_front().expect("not empty")),
                Err(_) => out_open = false,
            },
            _ = out.closed(), if out_open => out_open = false,
            n = input.next(data_open, stdin), if input_open => match n {
                Next::Frame(f) => {
                    if mw.write_all(&f).await.is_err() {
                        break;
                    }
                }
                Next::Skip => {}
                Next::DataClosed => data_open = false,
                Next::Closed => (data_open, input_open) = (false, false),
            },
            _ = detached.wait() => {
                // Input typed before the sequence still goes in; nothing after it.
                let _ = mw.write_all(&input.ready_frames(stdin)).await;
                return true;
            }
        }
        if !out_open {
            queue.clear();
            if !data_open {
                return false;
            }
        }
    }
    // What the monitor sent before it closed.
    for c in queue {
        if out.send(c).await.is_err() {
            break;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn pair() -> (UnixStream, UnixStream) {
        UnixStream::pair().unwrap()
    }

    #[tokio::test]
    async fn monitor_frames_become_chunks_and_input_becomes_frames() {
        let (ours, mut monitor) = pair().await;
        let (out_tx, mut out) = mpsc::channel(16);
        let (input, rx) = input_channel(None);
        let d = input.detached();
        let task = tokio::spawn(async move { pump(ours, &out_tx, rx, true, d).await });
        let mut wire = proto::frame(proto::STDOUT, b"hello");
        wire.extend(proto::frame(proto::STDERR, b"oops"));
        monitor.write_all(&wire).await.unwrap();
        assert_eq!(
            out.recv().await.unwrap(),
            Chunk {
                stream: Stream::Stdout,
                data: b"hello".to_vec()
            }
        );
        assert_eq!(out.recv().await.unwrap().stream, Stream::Stderr);
        assert!(input.stdin(b"typed").await);
        assert!(input.resize(10, 20));
        let mut got = vec![0u8; 10 + 9];
        monitor.read_exact(&mut got).await.unwrap();
        let mut want = proto::frame(proto::STDIN, b"typed");
        want.extend(proto::resize(10, 20));
        // Resizes and stdin travel apart: either may come first.
        assert!(
            got == want || got == [&want[10..], &want[..10]].concat(),
            "{got:?}"
        );
        // The monitor closes: the output ends.
        drop(monitor);
        assert!(out.recv().await.is_none());
        task.await.unwrap();
    }

    #[tokio::test]
    async fn a_caller_that_drops_everything_ends_the_session_but_input_alone_keeps_it() {
        let (ours, mut monitor) = pair().await;
        let (out_tx, out) = mpsc::channel(16);
        let (input, rx) = input_channel(None);
        let d = input.detached();
        let task = tokio::spawn(async move { pump(ours, &out_tx, rx, true, d).await });
        // Output dropped, input kept: output is drained, input still passes.
        drop(out);
        monitor
            .write_all(&proto::frame(proto::STDOUT, b"nobody reads this"))
            .await
            .unwrap();
        assert!(input.close_stdin().await);
        let mut got = vec![0u8; 5];
        monitor.read_exact(&mut got).await.unwrap();
        assert_eq!(got, proto::frame(proto::CLOSE_STDIN, b""));
        // Input dropped too: the session ends and closes the socket.
        drop(input);
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("the session ends")
            .unwrap();
        let mut rest = Vec::new();
        // Closed (a reset if our end had unread data).
        assert!(!matches!(monitor.read_to_end(&mut rest).await, Ok(n) if n > 0));
    }

    #[tokio::test]
    async fn a_detach_passes_what_came_before_and_leaves_the_monitor() {
        let (ours, mut monitor) = pair().await;
        let (out_tx, mut out) = mpsc::channel(16);
        let (input, rx) = input_channel(Some(&pier_api::detach::DEFAULT));
        let d = input.detached();
        let task = tokio::spawn(async move { pump(ours, &out_tx, rx, true, d).await });
        assert!(!input.stdin(b"ls\x10\x11rm").await);
        assert!(
            tokio::time::timeout(Duration::from_secs(5), task)
                .await
                .expect("the session ends")
                .unwrap(),
            "a detach"
        );
        let mut got = Vec::new();
        monitor.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, proto::frame(proto::STDIN, b"ls"));
        assert!(out.recv().await.is_none(), "the output closes");
    }

    #[test]
    fn resizes_go_to_the_newest_session_until_it_ends() {
        let r = AttachRegistry::default();
        let (a, mut a_rx) = input_channel(None);
        let (b, mut b_rx) = input_channel(None);
        let na = r.register("p/c".into(), &a);
        let nb = r.register("p/c".into(), &b);
        assert!(r.resize("p/c", 1, 2));
        assert_eq!(b_rx.resize.try_recv().unwrap(), (1, 2));
        assert!(a_rx.resize.try_recv().is_err());
        r.forget("p/c", na);
        assert!(
            r.resize("p/c", 3, 4),
            "an older session's end keeps the newer"
        );
        r.forget("p/c", nb);
        assert!(!r.resize("p/c", 5, 6));
        assert!(!r.resize("p/other", 5, 6));
    }
}
