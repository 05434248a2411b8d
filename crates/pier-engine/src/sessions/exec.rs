//! Exec sessions: one registry for every API. A session is created for a running
//! container, started once (the engine spawns Pier's exec helper, `pier __exec`, pumps its
//! pipes and reaps it), and kept after its command ends so that its exit code can be
//! read:
//!
//! ```text
//! created ──start──> running ──(command exits)──> exited
//!    │                                               │
//!    └─ forgotten 30 min after its creation           └─ forgotten 10 min after the exit
//! ```
//!
//! Retention: an exec that ended is kept [`KEEP_ENDED`] (10 minutes) for its inspect; one
//! never started is forgotten [`KEEP_UNSTARTED`] (30 minutes) after its creation; a running
//! one is never forgotten. (Docker keeps ended execs a few minutes; Pier's Docker layer
//! kept them 10, its native API 5: the longer wins.) Expired sessions are dropped when
//! the registry is next used.
//!
//! The helper's standard input carries attach frames (input, resize, close) when the
//! command has a terminal or takes input; resizes sent before the start wait for it.
//! Dropping the output receiver of an attached session ends its command.
//!
//! The command's terminal is the create's (`ExecSpec::tty`), as in Docker, whose start
//! request's `Tty` only chooses the API's framing. A command with a terminal that takes
//! input detaches on its detach keys (ctrl-p ctrl-q unless the spec names others): its
//! output channel closes, [`ExecIo::detached`] says so, and the command runs on, its
//! output read and dropped, until it exits (its exit is recorded as ever).

use std::collections::HashMap;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pier_api::containers::{ContainerStatus, ExecCreate};
use pier_api::ProjectName;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::{mpsc, watch};

use super::{input_channel, pump_input, Chunk, Detached, InputReceiver, InputSender, Stream};
use crate::context::RequestContext;
use crate::error::EngineError;
use crate::instances::Instances;

/// How long an ended exec is kept for its exit code.
pub const KEEP_ENDED: Duration = Duration::from_secs(600);
/// How long an exec that was never started is kept.
pub const KEEP_UNSTARTED: Duration = Duration::from_secs(1800);

pub use pier_api::containers::{ExecInfo, ExecSpec};

/// How to start an exec.
#[derive(Debug, Default)]
pub struct StartOptions {
    /// Run it without a caller: no output is kept.
    pub detach: bool,
    /// Run the command only once this fires (the caller's stream is ready: Docker's
    /// clients read the start's answer through a buffer that would swallow output sent
    /// right after it); nothing runs if it is dropped. The checks are made at once.
    pub gate: Option<tokio::sync::oneshot::Receiver<()>>,
    /// End the command when nobody reads its output any more (a health check, whose
    /// timeout drops it). Otherwise, as Docker's, a client that goes away (or detaches on
    /// its own side, as the docker CLI does) leaves it running, its output dropped.
    pub ends_unread: bool,
}

/// A started exec: its output (absent when detached), its input, and its exit code (set
/// once; the output channel closes only after it is).
pub struct ExecIo {
    pub output: Option<mpsc::Receiver<Chunk>>,
    pub input: InputSender,
    pub exit: watch::Receiver<Option<i32>>,
    /// Whether the command got a terminal.
    pub tty: bool,
    /// Whether the caller detached with its detach keys (the output then closes before
    /// the exit).
    pub detached: Detached,
}

/// Why an exec was refused. Each API words these its own way; the messages here are the
/// native API's.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("no such exec session: {0}")]
    NoSuchExec(String),
    #[error("container {name} is not running; start it first")]
    NotRunning { name: String, id: String },
    #[error("container {name} is not running; start it first")]
    Paused { name: String, id: String },
    #[error("give a command to run")]
    NoCommand,
    #[error("exec instance {0} has already been started")]
    AlreadyStarted(String),
    #[error(transparent)]
    Engine(#[from] EngineError),
}

impl From<ExecError> for EngineError {
    fn from(e: ExecError) -> Self {
        match e {
            ExecError::Engine(e) => e,
            ExecError::NoSuchExec(_) => EngineError::NotFound(e.to_string()),
            ExecError::NoCommand => EngineError::Invalid(e.to_string()),
            ExecError::NotRunning { .. }
            | ExecError::Paused { .. }
            | ExecError::AlreadyStarted(_) => EngineError::Conflict(e.to_string()),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Created,
    Running,
    /// Ended, with the command's exit code (none when it could not be started).
    Ended {
        code: Option<i32>,
        at: Instant,
    },
}

struct Session {
    id: String,
    project: ProjectName,
    container_id: String,
    spec: ExecSpec,
    created: Instant,
    phase: Phase,
    pid: i32,
    /// Whether the command gets a terminal.
    tty: bool,
    input: InputSender,
    /// Taken by the start.
    input_rx: Option<InputReceiver>,
    exit: watch::Sender<Option<i32>>,
}

impl Session {
    fn info(&self) -> ExecInfo {
        let (running, exit_code) = match self.phase {
            Phase::Created => (false, None),
            Phase::Running => (true, None),
            Phase::Ended { code, .. } => (false, code),
        };
        ExecInfo {
            id: self.id.clone(),
            container_id: self.container_id.clone(),
            spec: self.spec.clone(),
            running,
            exit_code,
            pid: self.pid,
        }
    }

    fn expired(&self, now: Instant) -> bool {
        match self.phase {
            Phase::Created => now.duration_since(self.created) > KEEP_UNSTARTED,
            Phase::Running => false,
            Phase::Ended { at, .. } => now.duration_since(at) > KEEP_ENDED,
        }
    }
}

/// What a start takes from its session.
struct Begun {
    container_id: String,
    spec: ExecSpec,
    tty: bool,
    input: InputSender,
    input_rx: Option<InputReceiver>,
    exit: watch::Sender<Option<i32>>,
}

/// The registry of exec sessions.
#[derive(Default)]
pub struct ExecRegistry {
    sessions: Mutex<HashMap<String, Session>>,
}

impl ExecRegistry {
    /// Drops the sessions whose time is up, and returns the lock.
    fn live(&self, now: Instant) -> std::sync::MutexGuard<'_, HashMap<String, Session>> {
        let mut s = self.sessions.lock().unwrap();
        s.retain(|_, e| !e.expired(now));
        s
    }

    fn insert(
        &self,
        project: &ProjectName,
        container_id: &str,
        spec: ExecSpec,
        now: Instant,
    ) -> String {
        let id = crate::names::random_id();
        // Docker watches for the detach keys only with a terminal.
        let keys = spec.detach_keys.clone().unwrap_or_default();
        let (input, input_rx) = input_channel((spec.tty && spec.stdin).then_some(keys.bytes()));
        let session = Session {
            id: id.clone(),
            project: project.clone(),
            container_id: container_id.into(),
            tty: spec.tty,
            spec,
            created: now,
            phase: Phase::Created,
            pid: 0,
            input,
            input_rx: Some(input_rx),
            exit: watch::channel(None).0,
        };
        self.live(now).insert(id.clone(), session);
        id
    }

    fn with<T>(
        &self,
        project: &ProjectName,
        id: &str,
        now: Instant,
        f: impl FnOnce(&mut Session) -> T,
    ) -> Result<T, ExecError> {
        let mut s = self.live(now);
        match s.get_mut(id) {
            Some(e) if &e.project == project => Ok(f(e)),
            _ => Err(ExecError::NoSuchExec(id.to_string())),
        }
    }

    /// Marks a session started (it must be new).
    fn begin(&self, project: &ProjectName, id: &str, now: Instant) -> Result<Begun, ExecError> {
        self.with(project, id, now, |e| {
            if e.phase != Phase::Created {
                return Err(ExecError::AlreadyStarted(id.to_string()));
            }
            e.phase = Phase::Running;
            Ok(Begun {
                container_id: e.container_id.clone(),
                spec: e.spec.clone(),
                tty: e.tty,
                input: e.input.clone(),
                input_rx: e.input_rx.take(),
                exit: e.exit.clone(),
            })
        })?
    }

    fn set_pid(&self, id: &str, pid: i32) {
        if let Some(e) = self.sessions.lock().unwrap().get_mut(id) {
            e.pid = pid;
        }
    }

    /// Records the end of a session (a code of none: it could not be started).
    fn end(&self, id: &str, code: Option<i32>, now: Instant) {
        if let Some(e) = self.sessions.lock().unwrap().get_mut(id) {
            e.phase = Phase::Ended { code, at: now };
            e.input_rx = None;
            e.exit.send_replace(code);
        }
    }
}

impl Instances {
    /// Makes an exec session for a running container; returns its ID.
    pub fn exec_create(
        &self,
        ctx: &RequestContext,
        container: &str,
        spec: ExecSpec,
    ) -> Result<String, ExecError> {
        let project = ctx.project();
        let c = self.lookup(project, container)?;
        match c.state.status {
            ContainerStatus::Running => {}
            ContainerStatus::Paused => {
                return Err(ExecError::Paused {
                    name: c.name,
                    id: c.id,
                })
            }
            _ => {
                return Err(ExecError::NotRunning {
                    name: c.name,
                    id: c.id,
                })
            }
        }
        if spec.cmd.is_empty() {
            return Err(ExecError::NoCommand);
        }
        Ok(self.execs.insert(project, &c.id, spec, Instant::now()))
    }

    /// Starts an exec session: spawns the helper, and pumps its output, input and exit.
    pub fn exec_start(
        self: &Arc<Self>,
        ctx: &RequestContext,
        exec_id: &str,
        opts: StartOptions,
    ) -> Result<ExecIo, ExecError> {
        let project = ctx.project();
        let Begun {
            container_id,
            spec,
            tty,
            input,
            input_rx,
            exit,
        } = self.execs.begin(project, exec_id, Instant::now())?;
        let failed = |e: EngineError| {
            self.execs.end(exec_id, None, Instant::now());
            ExecError::Engine(e)
        };
        let req = ExecCreate {
            cmd: spec.cmd.clone(),
            env: spec.env.clone(),
            user: spec.user.clone(),
            workdir: spec.workdir.clone(),
            detach: opts.detach,
            tty,
            interactive: spec.stdin,
            detach_keys: None,
            privileged: spec.privileged,
        };
        let (c, cmd) = self
            .exec_command(project, &container_id, &req)
            .map_err(failed)?;
        let mut cmd = tokio::process::Command::from(cmd);
        // The helper reads frames on stdin when the command has a terminal or takes input.
        let framed = tty || spec.stdin;
        let out = || {
            if opts.detach {
                Stdio::null()
            } else {
                Stdio::piped()
            }
        };
        cmd.stdin(if framed {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(out())
        .stderr(out());
        let exit_rx = exit.subscribe();
        let id = exec_id.to_string();
        let pumped = Pumped {
            stdin: spec.stdin,
            stdout: spec.stdout,
            stderr: spec.stderr,
            ends_unread: opts.ends_unread,
        };
        let detached = input.detached();
        {
            let (this, c, id, mut d) = (self.clone(), c.clone(), id.clone(), detached.clone());
            let mut ended = exit.subscribe();
            tokio::spawn(async move {
                tokio::select! {
                    _ = d.wait() => this.emit(&c, "exec_detach", &[("execID", id)]),
                    _ = ended.wait_for(|c| c.is_some()) => {}
                }
            });
        }
        let watch = Watch {
            ended: exit.subscribe(),
            detached: detached.clone(),
        };
        let (out_tx, out_rx) = if opts.detach {
            (None, None)
        } else {
            let (tx, rx) = mpsc::channel(16);
            (Some(tx), Some(rx))
        };
        let this = self.clone();
        let launch = move |mut cmd: tokio::process::Command,
                           out_tx: Option<mpsc::Sender<Chunk>>|
              -> Result<(), EngineError> {
            let child = cmd
                .spawn()
                .map_err(|e| EngineError::Internal(format!("cannot start the exec helper: {e}")))?;
            this.execs.set_pid(&id, child.id().map_or(0, |p| p as i32));
            supervise_into(child, pumped, input_rx, watch, out_tx, move |code| {
                this.execs.end(&id, Some(code), Instant::now());
                this.exec_done(&c, code);
            });
            Ok(())
        };
        match opts.gate {
            None => launch(cmd, out_tx).map_err(failed)?,
            Some(gate) => {
                let (this, id) = (self.clone(), exec_id.to_string());
                tokio::spawn(async move {
                    if gate.await.is_err() {
                        // The caller went away before it was ready: nothing runs.
                        this.execs.end(&id, None, Instant::now());
                        return;
                    }
                    if let Err(e) = launch(cmd, out_tx.clone()) {
                        if let Some(tx) = out_tx {
                            let chunk = Chunk {
                                stream: Stream::Stderr,
                                data: format!("{}\n", e.message()).into_bytes(),
                            };
                            let _ = tx.send(chunk).await;
                        }
                        this.execs.end(&id, Some(126), Instant::now());
                    }
                });
            }
        }
        Ok(ExecIo {
            output: out_rx,
            input,
            exit: exit_rx,
            tty,
            detached,
        })
    }

    /// An exec session's state.
    pub fn exec_inspect(&self, ctx: &RequestContext, exec_id: &str) -> Result<ExecInfo, ExecError> {
        let project = ctx.project();
        self.execs
            .with(project, exec_id, Instant::now(), |e| e.info())
    }

    /// Forgets an exec session at once (one the engine ran for itself, such as a health
    /// check's); its command, if still running, goes on unrecorded.
    pub(crate) fn exec_forget(&self, exec_id: &str) {
        self.execs.sessions.lock().unwrap().remove(exec_id);
    }

    /// Resizes an exec session's terminal (before its start too: the size waits for it).
    /// A command without a terminal ignores it.
    pub fn exec_resize(
        &self,
        ctx: &RequestContext,
        exec_id: &str,
        rows: u16,
        cols: u16,
    ) -> Result<(), ExecError> {
        let project = ctx.project();
        self.execs.with(project, exec_id, Instant::now(), |e| {
            if e.tty {
                e.input.resize(rows, cols);
            }
        })
    }
}

/// What [`supervise`] passes between a helper and its caller.
#[derive(Debug, Clone, Copy)]
struct Pumped {
    stdin: bool,
    stdout: bool,
    stderr: bool,
    /// Nobody reading ends the helper ([`StartOptions::ends_unread`]).
    ends_unread: bool,
}

/// What a pumped helper's session watches: the exit, and the caller's detach.
struct Watch {
    ended: watch::Receiver<Option<i32>>,
    detached: Detached,
}

/// Pumps a spawned helper: input frames to its stdin (until it exits), its pipes to
/// `out_tx` (none when detached), and its exit to `on_exit`, which runs before the output
/// closes. Dropping the output ends the helper when `p.ends_unread`, else leaves it running
/// as a detach does, its output dropped.
fn supervise_into(
    mut child: tokio::process::Child,
    p: Pumped,
    input: Option<InputReceiver>,
    w: Watch,
    out_tx: Option<mpsc::Sender<Chunk>>,
    on_exit: impl FnOnce(i32) + Send + 'static,
) {
    let Watch {
        mut ended,
        mut detached,
    } = w;
    if let (Some(hin), Some(rx)) = (child.stdin.take(), input) {
        tokio::spawn(async move {
            tokio::select! {
                _ = pump_input(rx, hin, p.stdin) => {}
                _ = ended.wait_for(|c| c.is_some()) => {}
            }
        });
    }
    let pipes: [(Option<Box<dyn AsyncRead + Send + Unpin>>, _, _); 2] = [
        (
            child.stdout.take().map(|p| Box::new(p) as _),
            Stream::Stdout,
            p.stdout,
        ),
        (
            child.stderr.take().map(|p| Box::new(p) as _),
            Stream::Stderr,
            p.stderr,
        ),
    ];
    let (chunk_tx, mut chunks) = mpsc::channel::<Chunk>(16);
    for (pipe, stream, wanted) in pipes {
        let Some(mut pipe) = pipe else { continue };
        let tx = chunk_tx.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 32 * 1024];
            while let Ok(n) = pipe.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                let chunk = Chunk {
                    stream,
                    data: buf[..n].to_vec(),
                };
                if wanted && tx.send(chunk).await.is_err() {
                    break;
                }
            }
        });
    }
    drop(chunk_tx);
    tokio::spawn(async move {
        // Output until both pipes end; a caller that stops reading ends the command if
        // asked, else leaves it running, as one that detaches does.
        let mut out_tx = out_tx;
        let mut exited = None;
        loop {
            let next = match out_tx.as_ref() {
                Some(tx) => tokio::select! {
                    c = chunks.recv() => c.map(Some),
                    _ = tx.closed() => Some(None),
                    _ = detached.wait() => {
                        out_tx = None;
                        continue;
                    }
                },
                // Nobody reads: the output is dropped until the pipes end, or the command
                // exits (a process it left may hold its pipes open).
                None => tokio::select! {
                    c = chunks.recv() => c.map(|_| None),
                    s = child.wait() => {
                        exited = Some(s);
                        break;
                    }
                },
            };
            let Some(next) = next else { break };
            let sent = match (next, out_tx.as_ref()) {
                (Some(chunk), Some(tx)) => tokio::select! {
                    r = tx.send(chunk) => r.is_ok(),
                    _ = tx.closed() => false,
                    _ = detached.wait() => {
                        out_tx = None;
                        continue;
                    }
                },
                (None, Some(_)) => false,
                (_, None) => continue,
            };
            if !sent && detached.is_detached() {
                // The reader left because it detached (it may drop the output before
                // this sees the detach): the command runs on.
                out_tx = None;
                continue;
            }
            if !sent && !p.ends_unread {
                // The client went away: as Docker's, the command runs on.
                out_tx = None;
                continue;
            }
            if !sent {
                // Nobody reads: end the command, and stop waiting for its pipes, which
                // a process it left behind may hold open.
                let _ = child.start_kill();
                break;
            }
        }
        drop(chunks);
        let status = match exited {
            Some(s) => s,
            None => child.wait().await,
        };
        let code = status.ok().and_then(|s| s.code()).unwrap_or(255);
        on_exit(code);
        // The output closes after the exit is recorded.
        drop(out_tx);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn project() -> ProjectName {
        ProjectName::default()
    }

    fn spec() -> ExecSpec {
        ExecSpec {
            cmd: vec!["true".into()],
            stdout: true,
            stderr: true,
            ..Default::default()
        }
    }

    #[test]
    fn a_session_goes_created_running_ended_and_starts_once() {
        let r = ExecRegistry::default();
        let t0 = Instant::now();
        let id = r.insert(&project(), "c1", spec(), t0);
        let info = r.with(&project(), &id, t0, |e| e.info()).unwrap();
        assert_eq!((info.running, info.exit_code, info.pid), (false, None, 0));
        assert_eq!(info.container_id, "c1");
        let b = r.begin(&project(), &id, t0).unwrap();
        assert_eq!(b.container_id, "c1");
        assert!(!b.tty, "the terminal is the create's");
        assert!(b.input_rx.is_some(), "the first start takes the input");
        assert!(matches!(
            r.begin(&project(), &id, t0),
            Err(ExecError::AlreadyStarted(_))
        ));
        r.set_pid(&id, 42);
        let info = r.with(&project(), &id, t0, |e| e.info()).unwrap();
        assert_eq!((info.running, info.exit_code, info.pid), (true, None, 42));
        let mut exit = r.with(&project(), &id, t0, |e| e.exit.subscribe()).unwrap();
        r.end(&id, Some(3), t0);
        assert_eq!(*exit.borrow_and_update(), Some(3));
        let info = r.with(&project(), &id, t0, |e| e.info()).unwrap();
        assert_eq!(
            (info.running, info.exit_code, info.pid),
            (false, Some(3), 42)
        );
        assert!(matches!(
            r.begin(&project(), &id, t0),
            Err(ExecError::AlreadyStarted(_))
        ));
    }

    #[test]
    fn ended_sessions_are_kept_ten_minutes_unstarted_thirty_running_forever() {
        let r = ExecRegistry::default();
        let t0 = Instant::now();
        let ended = r.insert(&project(), "c", spec(), t0);
        let unstarted = r.insert(&project(), "c", spec(), t0);
        let running = r.insert(&project(), "c", spec(), t0);
        r.begin(&project(), &ended, t0).unwrap();
        r.begin(&project(), &running, t0).unwrap();
        r.end(&ended, Some(0), t0);
        let alive = |t: Instant, id: &str| r.with(&project(), id, t, |_| ()).is_ok();
        let t = t0 + KEEP_ENDED;
        assert!(alive(t, &ended) && alive(t, &unstarted) && alive(t, &running));
        let t = t0 + KEEP_ENDED + Duration::from_secs(1);
        assert!(
            !alive(t, &ended),
            "an ended exec is forgotten after 10 minutes"
        );
        assert!(alive(t, &unstarted) && alive(t, &running));
        let t = t0 + KEEP_UNSTARTED + Duration::from_secs(1);
        assert!(
            !alive(t, &unstarted),
            "an unstarted exec is forgotten after 30 minutes"
        );
        let t = t0 + Duration::from_secs(86400);
        assert!(alive(t, &running), "a running exec is never forgotten");
        r.end(&running, Some(1), t);
        assert!(alive(t + KEEP_ENDED, &running));
        assert!(!alive(t + KEEP_ENDED + Duration::from_secs(1), &running));
    }

    #[test]
    fn a_session_is_found_only_in_its_project_and_refusals_map_to_classes() {
        let r = ExecRegistry::default();
        let t0 = Instant::now();
        let id = r.insert(&project(), "c", spec(), t0);
        let other = ProjectName::try_from("other".to_string()).unwrap();
        assert!(matches!(
            r.with(&other, &id, t0, |_| ()),
            Err(ExecError::NoSuchExec(_))
        ));
        use pier_api::ErrorKind;
        let kind = |e: ExecError| EngineError::from(e).kind();
        assert_eq!(kind(ExecError::NoSuchExec("x".into())), ErrorKind::NotFound);
        assert_eq!(kind(ExecError::NoCommand), ErrorKind::InvalidInput);
        assert_eq!(
            kind(ExecError::AlreadyStarted("x".into())),
            ErrorKind::Conflict
        );
        let e = ExecError::NotRunning {
            name: "web".into(),
            id: "c".into(),
        };
        assert_eq!(
            e.to_string(),
            "container web is not running; start it first"
        );
        assert_eq!(kind(e), ErrorKind::Conflict);
    }

    fn shell(script: &str, stdin: bool) -> tokio::process::Child {
        tokio::process::Command::new("/bin/sh")
            .arg("-c")
            .arg(script)
            .stdin(if stdin { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    fn w(ended: watch::Receiver<Option<i32>>) -> Watch {
        Watch {
            ended,
            detached: Detached(None),
        }
    }

    /// [`supervise_into`] with an output of its own.
    fn supervise(
        child: tokio::process::Child,
        p: Pumped,
        input: Option<InputReceiver>,
        w: Watch,
        on_exit: impl FnOnce(i32) + Send + 'static,
    ) -> Option<mpsc::Receiver<Chunk>> {
        let (tx, rx) = mpsc::channel(16);
        supervise_into(child, p, input, w, Some(tx), on_exit);
        Some(rx)
    }

    const ATTACHED: Pumped = Pumped {
        stdin: false,
        stdout: true,
        stderr: true,
        ends_unread: true,
    };

    #[tokio::test]
    async fn output_is_typed_and_closes_only_after_the_exit_is_recorded() {
        let (exit, rx) = watch::channel(None);
        let exit2 = exit.clone();
        let child = shell("echo out; echo err >&2; exit 3", false);
        let mut out = supervise(child, ATTACHED, None, w(rx), move |code| {
            std::thread::sleep(Duration::from_millis(50));
            exit2.send_replace(Some(code));
        })
        .unwrap();
        let mut got = Vec::new();
        while let Some(c) = out.recv().await {
            got.push((c.stream, String::from_utf8(c.data).unwrap()));
        }
        assert_eq!(
            *exit.borrow(),
            Some(3),
            "the exit is recorded before the output ends"
        );
        got.sort_by_key(|(s, _)| *s == Stream::Stderr);
        assert_eq!(
            got,
            vec![
                (Stream::Stdout, "out\n".into()),
                (Stream::Stderr, "err\n".into())
            ]
        );
    }

    #[tokio::test]
    async fn unwanted_streams_are_dropped() {
        let (exit, rx) = watch::channel(None);
        let child = shell("echo out; echo err >&2", false);
        let p = Pumped {
            stdout: false,
            ..ATTACHED
        };
        let mut out = supervise(child, p, None, w(rx), move |c| {
            exit.send_replace(Some(c));
        })
        .unwrap();
        let c = out.recv().await.unwrap();
        assert_eq!((c.stream, c.data), (Stream::Stderr, b"err\n".to_vec()));
        assert!(out.recv().await.is_none());
    }

    #[tokio::test]
    async fn dropping_the_output_ends_a_silent_command() {
        let (exit, rx) = watch::channel(None);
        let mut seen = exit.subscribe();
        let child = shell("sleep 30", false);
        let out = supervise(child, ATTACHED, None, w(rx), move |c| {
            exit.send_replace(Some(c));
        });
        drop(out);
        let t0 = Instant::now();
        tokio::time::timeout(Duration::from_secs(5), seen.wait_for(|c| c.is_some()))
            .await
            .expect("the command is ended when nobody reads")
            .unwrap();
        assert!(t0.elapsed() < Duration::from_secs(5));
    }

    /// Without `ends_unread` (every API session, as Docker's), a client that goes away
    /// leaves the command running to its own exit, which is recorded.
    #[tokio::test]
    async fn a_reader_gone_leaves_the_command_running_as_docker() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("done");
        let (exit, rx) = watch::channel(None);
        let mut seen = exit.subscribe();
        let child = shell(
            &format!(
                "echo start; sleep 0.5; echo more; touch {}",
                marker.display()
            ),
            false,
        );
        let p = Pumped {
            ends_unread: false,
            ..ATTACHED
        };
        let out = supervise(child, p, None, w(rx), move |c| {
            exit.send_replace(Some(c));
        });
        drop(out);
        let code = tokio::time::timeout(Duration::from_secs(10), seen.wait_for(|c| c.is_some()))
            .await
            .expect("the exit is recorded")
            .unwrap()
            .unwrap();
        assert_eq!(code, 0, "the command ran to its end, not killed");
        assert!(marker.exists(), "the command's last step ran");
    }

    /// A command that leaves a process holding its pipes (as a killed exec helper leaves
    /// the command it ran in the container) still ends, and its exit is recorded, when
    /// nobody reads.
    #[tokio::test]
    async fn a_reader_gone_ends_the_command_even_if_its_pipes_stay_open() {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("pid");
        let (exit, rx) = watch::channel(None);
        let mut seen = exit.subscribe();
        let child = shell(
            &format!("sleep 20 & echo $! > {}; wait", pidfile.display()),
            false,
        );
        let out = supervise(child, ATTACHED, None, w(rx), move |c| {
            exit.send_replace(Some(c));
        });
        let _ = tokio::time::timeout(Duration::from_secs(5), async {
            while !pidfile.exists() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await;
        drop(out);
        let ended =
            tokio::time::timeout(Duration::from_secs(10), seen.wait_for(|c| c.is_some())).await;
        if let Ok(pid) = std::fs::read_to_string(&pidfile) {
            if let Ok(pid) = pid.trim().parse::<i32>() {
                // SAFETY: kill(2) of the sleep this test started; no memory is involved.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
        ended
            .expect("the exit is recorded although a leftover process holds the pipes")
            .unwrap();
    }

    #[tokio::test]
    async fn input_frames_reach_the_helper_and_stop_at_its_exit() {
        let (exit, rx) = watch::channel(None);
        let (input, input_rx) = input_channel(None);
        // The "helper" echoes its stdin (the frames) back on stdout.
        let child = shell("head -c 9", true);
        let p = Pumped {
            stdin: true,
            ..ATTACHED
        };
        let mut out = supervise(child, p, Some(input_rx), w(rx), move |c| {
            exit.send_replace(Some(c));
        })
        .unwrap();
        assert!(input.stdin(b"abcd").await);
        let mut got = Vec::new();
        while let Some(c) = out.recv().await {
            got.extend(c.data);
        }
        assert_eq!(
            got,
            pier_runtime::attach::frame(pier_runtime::attach::STDIN, b"abcd")
        );
        // The helper is gone: input is refused once the pump has stopped.
        let refused = tokio::time::timeout(Duration::from_secs(5), async {
            while input.stdin(b"x").await {
                tokio::task::yield_now().await;
            }
        })
        .await;
        assert!(refused.is_ok(), "the input pump ends with the helper");
    }

    #[tokio::test]
    async fn a_detach_closes_the_output_and_leaves_the_command_running_to_its_exit() {
        let (exit, rx) = watch::channel(None);
        let mut seen = exit.subscribe();
        let (input, _input_rx) = input_channel(Some(&pier_api::detach::DEFAULT));
        let child = shell("echo first; sleep 1; echo after; exit 4", false);
        let watch = Watch {
            ended: rx,
            detached: input.detached(),
        };
        let mut out = supervise(child, ATTACHED, None, watch, move |c| {
            exit.send_replace(Some(c));
        })
        .unwrap();
        assert_eq!(out.recv().await.unwrap().data, b"first\n");
        assert!(!input.stdin(&[0x10, 0x11]).await, "the keys detach");
        assert!(input.detached().is_detached());
        // The output closes at once, before the exit ...
        let closed = tokio::time::timeout(Duration::from_millis(800), out.recv()).await;
        assert!(matches!(closed, Ok(None)), "{closed:?}");
        assert_eq!(*seen.borrow(), None);
        // ... and the command runs on to its own exit (not killed).
        let code = tokio::time::timeout(Duration::from_secs(5), seen.wait_for(|c| c.is_some()))
            .await
            .expect("the command ends by itself")
            .unwrap()
            .unwrap();
        assert_eq!(code, 4);
    }

    #[test]
    fn only_a_session_with_a_terminal_and_input_watches_for_detach_keys() {
        let r = ExecRegistry::default();
        let t0 = Instant::now();
        let mk = |tty, stdin| {
            let id = r.insert(
                &project(),
                "c",
                ExecSpec {
                    tty,
                    stdin,
                    detach_keys: Some(pier_api::detach::DetachKeys::parse("ctrl-x").unwrap()),
                    ..spec()
                },
                t0,
            );
            r.with(&project(), &id, t0, |e| e.input.clone()).unwrap()
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        for (tty, stdin, watched) in [
            (true, true, true),
            (false, true, false),
            (true, false, false),
        ] {
            let input = mk(tty, stdin);
            let sent = rt.block_on(input.stdin(&[24]));
            assert_eq!(
                input.detached().is_detached(),
                watched,
                "tty {tty} stdin {stdin}"
            );
            assert_eq!(sent, !watched);
        }
    }

    #[tokio::test]
    async fn a_resize_before_the_start_waits_for_it() {
        let r = ExecRegistry::default();
        let t0 = Instant::now();
        let id = r.insert(
            &project(),
            "c",
            ExecSpec {
                tty: true,
                ..spec()
            },
            t0,
        );
        r.with(&project(), &id, t0, |e| e.input.resize(30, 100))
            .unwrap();
        let b = r.begin(&project(), &id, t0).unwrap();
        let (mut read, w) = tokio::io::duplex(1024);
        let pump = tokio::spawn(pump_input(b.input_rx.unwrap(), w, true));
        let mut buf = vec![0u8; 9];
        tokio::io::AsyncReadExt::read_exact(&mut read, &mut buf)
            .await
            .unwrap();
        assert_eq!(buf, pier_runtime::attach::resize(30, 100));
        pump.abort();
    }
}
