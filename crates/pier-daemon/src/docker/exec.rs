//! Exec: Docker makes an exec instance (`POST /containers/{id}/exec`), starts it
//! (`POST /exec/{id}/start`, hijacked unless detached), resizes its terminal and reads its
//! exit code (`GET /exec/{id}/json`). Each start runs Pier's exec helper (`pier __exec`),
//! whose standard input carries attach frames (input, resize, close) when the command has
//! a terminal or takes input.
//!
//! ```text
//! created ──start──> running ──(command exits)──> exited (exit code kept 10 minutes)
//! ```

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, Request};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use pier_api::containers::ExecCreate;
use pier_runtime::attach as proto;
use serde::Deserialize;
use serde_json::json;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use super::create::StrOrList;
use super::params::Params;
use super::streams::{hijack, Conn};
use super::{container, json, DResult, DState, Docker, DockerError};
use crate::api::project;

pub fn routes() -> Router<Arc<Docker>> {
    Router::new()
        .route("/containers/{id}/exec", post(create))
        .route("/exec/{id}/start", post(start))
        .route("/exec/{id}/resize", post(resize))
        .route("/exec/{id}/json", get(inspect))
}

/// How long an ended exec instance is kept for its exit code.
const KEEP: Duration = Duration::from_secs(600);

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct CreateBody {
    attach_stdin: Option<bool>,
    attach_stdout: Option<bool>,
    attach_stderr: Option<bool>,
    tty: Option<bool>,
    env: Option<Vec<String>>,
    cmd: Option<StrOrList>,
    privileged: Option<bool>,
    user: Option<String>,
    working_dir: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct StartBody {
    detach: Option<bool>,
    tty: Option<bool>,
}

#[derive(Debug, Default, Clone)]
struct ExecState {
    started: bool,
    running: bool,
    exit_code: Option<i32>,
    pid: i32,
}

/// One exec instance.
pub struct ExecEntry {
    id: String,
    container_id: String,
    req: ExecCreate,
    privileged: bool,
    attach_stdout: bool,
    attach_stderr: bool,
    state: Mutex<ExecState>,
    /// Frames for the helper's standard input (input and resizes); resizes sent before
    /// the start wait here.
    frames: mpsc::Sender<Vec<u8>>,
    frames_rx: Mutex<Option<mpsc::Receiver<Vec<u8>>>>,
}

fn entry(d: &Docker, id: &str) -> DResult<Arc<ExecEntry>> {
    d.execs
        .lock()
        .unwrap()
        .get(id)
        .cloned()
        .ok_or_else(|| DockerError::not_found(format!("No such exec instance: {id}")))
}

/// `POST /containers/{id}/exec`.
async fn create(state: DState, Path(id): Path<String>, body: Bytes) -> DResult<Response> {
    let d = state.0;
    let b: CreateBody = serde_json::from_slice(&body)
        .map_err(|e| DockerError::bad_request(format!("invalid exec config: {e}")))?;
    let c = container(&d, &id)?;
    if !super::inspect::is_running(&c) {
        return Err(DockerError::conflict(format!(
            "Container {} is not running",
            c.id
        )));
    }
    if c.state.status == pier_api::containers::ContainerStatus::Paused {
        return Err(DockerError::conflict(format!(
            "Container {} is paused, unpause the container before exec",
            c.id
        )));
    }
    if b.privileged.unwrap_or(false) {
        return Err(DockerError::bad_request(
            "docker exec --privileged is not supported by pier yet: the command runs with the container's privileges; run the container with --privileged instead",
        ));
    }
    let cmd = b.cmd.map(|c| match c {
        StrOrList::One(s) => vec![s],
        StrOrList::Many(v) => v,
    });
    let cmd = cmd
        .filter(|c| !c.is_empty())
        .ok_or_else(|| DockerError::bad_request("No exec command specified"))?;
    let exec_id = pier_engine::containers::random_id();
    let (frames, frames_rx) = mpsc::channel(64);
    let e = Arc::new(ExecEntry {
        id: exec_id.clone(),
        container_id: c.id.clone(),
        req: ExecCreate {
            cmd,
            env: b.env.unwrap_or_default(),
            user: b.user.filter(|u| !u.is_empty()),
            workdir: b.working_dir.filter(|w| !w.is_empty()),
            detach: false,
            tty: b.tty.unwrap_or(false),
            interactive: b.attach_stdin.unwrap_or(false),
        },
        privileged: b.privileged.unwrap_or(false),
        attach_stdout: b.attach_stdout.unwrap_or(true),
        attach_stderr: b.attach_stderr.unwrap_or(true),
        state: Mutex::new(ExecState::default()),
        frames,
        frames_rx: Mutex::new(Some(frames_rx)),
    });
    d.execs.lock().unwrap().insert(exec_id.clone(), e);
    // Never started ones are forgotten too.
    let d2 = d.clone();
    let id2 = exec_id.clone();
    tokio::spawn(async move {
        tokio::time::sleep(KEEP * 3).await;
        d2.execs.lock().unwrap().remove(&id2);
    });
    Ok(json(StatusCode::CREATED, json!({"Id": exec_id})))
}

/// Records the end of an exec and forgets it after a while.
fn finished(d: &Arc<Docker>, e: &Arc<ExecEntry>, code: i32) {
    {
        let mut s = e.state.lock().unwrap();
        s.running = false;
        s.exit_code = Some(code);
    }
    if let Ok(c) = d.engine.containers.get(&project(), &e.container_id) {
        d.engine.containers.exec_done(&c, code);
    }
    let (d, id) = (d.clone(), e.id.clone());
    tokio::spawn(async move {
        tokio::time::sleep(KEEP).await;
        d.execs.lock().unwrap().remove(&id);
    });
}

/// `POST /exec/{id}/start`: detached, or hijacked with the command's stdio.
async fn start(state: DState, Path(id): Path<String>, req: Request) -> DResult<Response> {
    let d = state.0;
    let e = entry(&d, &id)?;
    let (parts, body) = req.into_parts();
    let bytes = axum::body::to_bytes(body, 1 << 20)
        .await
        .map_err(|err| DockerError::bad_request(format!("invalid request body: {err}")))?;
    let b: StartBody = if bytes.iter().all(|b| b.is_ascii_whitespace()) {
        StartBody::default()
    } else {
        serde_json::from_slice(&bytes)
            .map_err(|err| DockerError::bad_request(format!("invalid exec start config: {err}")))?
    };
    {
        let mut s = e.state.lock().unwrap();
        if s.started {
            return Err(DockerError::conflict(format!(
                "exec instance {id} has already been started"
            )));
        }
        s.started = true;
        s.running = true;
    }
    let detach = b.detach.unwrap_or(false);
    let tty = b.tty.unwrap_or(e.req.tty) || e.req.tty;
    let mut req = e.req.clone();
    req.tty = tty;
    let (_, cmd) = match d
        .engine
        .containers
        .exec_command(&project(), &e.container_id, &req)
    {
        Ok(x) => x,
        Err(err) => {
            e.state.lock().unwrap().running = false;
            return Err(match err.kind() {
                pier_api::ErrorKind::NotFound => {
                    DockerError::not_found(format!("No such container: {}", e.container_id))
                }
                _ => err.into(),
            });
        }
    };
    let mut cmd = tokio::process::Command::from(cmd);
    // The helper reads frames on stdin when the command has a terminal or takes input.
    let framed = tty || req.interactive;
    if detach {
        cmd.stdin(if framed {
            std::process::Stdio::piped()
        } else {
            std::process::Stdio::null()
        })
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    } else {
        cmd.stdin(if framed {
            std::process::Stdio::piped()
        } else {
            std::process::Stdio::null()
        })
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    }
    let mut child = cmd.spawn().map_err(|err| {
        e.state.lock().unwrap().running = false;
        DockerError::internal(format!("cannot start the exec helper: {err}"))
    })?;
    e.state.lock().unwrap().pid = child.id().map_or(0, |p| p as i32);
    // The helper's stdin: frames from the client and from resizes, in order.
    let frames_rx = e.frames_rx.lock().unwrap().take();
    if let (Some(mut hin), Some(mut rx)) = (child.stdin.take(), frames_rx) {
        tokio::spawn(async move {
            while let Some(f) = rx.recv().await {
                if hin.write_all(&f).await.is_err() {
                    break;
                }
            }
        });
    }
    if detach {
        let d2 = d.clone();
        tokio::spawn(async move {
            let code = child
                .wait()
                .await
                .ok()
                .and_then(|s| s.code())
                .unwrap_or(255);
            finished(&d2, &e, code);
        });
        return Ok(StatusCode::OK.into_response());
    }
    let hout = child.stdout.take().expect("piped");
    let herr = child.stderr.take().expect("piped");
    let request = Request::from_parts(parts, axum::body::Body::empty());
    let (want_out, want_err) = (e.attach_stdout, e.attach_stderr);
    let interactive = req.interactive;
    Ok(hijack(request, tty, move |conn| async move {
        let Conn { input, mut output } = conn;
        let typer = input.filter(|_| interactive).map(|mut input| {
            let frames = e.frames.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 32 * 1024];
                loop {
                    match input.read(&mut buf).await {
                        Ok(0) | Err(_) => {
                            let _ = frames.send(proto::frame(proto::CLOSE_STDIN, b"")).await;
                            return;
                        }
                        Ok(n) => {
                            if frames
                                .send(proto::frame(proto::STDIN, &buf[..n]))
                                .await
                                .is_err()
                            {
                                return;
                            }
                        }
                    }
                }
            })
        });
        let (tx, mut rx) = mpsc::channel::<(u8, Vec<u8>)>(16);
        for (mut pipe, kind) in [
            (
                Box::new(hout) as Box<dyn AsyncRead + Send + Unpin>,
                proto::STDOUT,
            ),
            (Box::new(herr) as _, proto::STDERR),
        ] {
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 32 * 1024];
                while let Ok(n) = pipe.read(&mut buf).await {
                    if n == 0 || tx.send((kind, buf[..n].to_vec())).await.is_err() {
                        break;
                    }
                }
            });
        }
        drop(tx);
        let mut client_gone = false;
        while let Some((kind, data)) = rx.recv().await {
            let wanted = (kind == proto::STDOUT && want_out) || (kind == proto::STDERR && want_err);
            if wanted && !client_gone && !output.chunk(tty, kind, &data).await {
                client_gone = true;
                // Nobody reads any more: end the command as Docker does.
                let _ = child.start_kill();
            }
        }
        let code = child
            .wait()
            .await
            .ok()
            .and_then(|s| s.code())
            .unwrap_or(255);
        finished(&d, &e, code);
        if let Some(t) = typer {
            t.abort();
        }
        output.close().await;
    }))
}

/// `POST /exec/{id}/resize?h=&w=`.
async fn resize(state: DState, Path(id): Path<String>, p: Params) -> DResult<Response> {
    let d = state.0;
    let e = entry(&d, &id)?;
    let (h, w) = match (p.num::<u16>("h")?, p.num::<u16>("w")?) {
        (Some(h), Some(w)) => (h, w),
        _ => {
            return Err(DockerError::bad_request(
                "give the size as ?h=ROWS&w=COLUMNS",
            ))
        }
    };
    if e.req.tty {
        let _ = e.frames.try_send(proto::resize(h, w));
    }
    Ok(StatusCode::OK.into_response())
}

/// `GET /exec/{id}/json`.
async fn inspect(state: DState, Path(id): Path<String>) -> DResult<Response> {
    let d = state.0;
    let e = entry(&d, &id)?;
    let s = e.state.lock().unwrap().clone();
    Ok(json(
        StatusCode::OK,
        json!({
            "ID": e.id,
            "Running": s.running,
            "ExitCode": s.exit_code,
            "ProcessConfig": {
                "tty": e.req.tty,
                "entrypoint": e.req.cmd.first(),
                "arguments": e.req.cmd.iter().skip(1).collect::<Vec<_>>(),
                "privileged": e.privileged,
                "user": e.req.user.clone().unwrap_or_default(),
            },
            "OpenStdin": e.req.interactive,
            "OpenStdout": e.attach_stdout,
            "OpenStderr": e.attach_stderr,
            "CanRemove": false,
            "ContainerID": e.container_id,
            "DetachKeys": "",
            "Pid": s.pid,
        }),
    ))
}
