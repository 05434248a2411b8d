//! A fake [`Driver`] for the engine test tier: it touches nothing of the host, records
//! every call, models the instances it prepared and the runs it started, and can be told
//! to fail the Nth call of a kind, to refuse a start, or to ignore a signal. A test makes
//! a running instance exit with [`FakeDriver::exit`], and simulates a daemon restart with
//! [`FakeDriver::daemon_restart`] (the old engine's watchers then never hear of exits).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Condvar, Mutex};

use pier_api::containers::{ContainerInspect, ContainerUpdate, ExecCreate};
use pier_api::time::format_rfc3339_nanos;
use pier_api::ErrorKind;
use tokio::sync::watch;

use super::driver::{
    BoxFuture, Driver, ExitInfo, Found, InstanceHandle, InstanceStats, NetworkAttachment, Started,
    VolumeAttachment,
};
use crate::error::{EngineError, EngineResult};

/// The calls a [`FakeDriver`] records (and can fail).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Op {
    Prepare,
    Start,
    Wait,
    Reap,
    Signal,
    Pause,
    Update,
    Resize,
    Stats,
    Processes,
    Exec,
    Attach,
    Logs,
    KillAll,
    Destroy,
    Adopt,
    Sweep,
}

/// One recorded call: what, on which instance, with which argument (a signal number,
/// `1`/`0` for pause).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    pub op: Op,
    pub id: String,
    pub arg: Option<i64>,
}

/// What a prepared instance looks like to the fake.
#[derive(Debug, Clone)]
pub struct FakeInstance {
    /// The record it was prepared with (a `--rm` one's copy survives a lost record).
    pub record: ContainerInspect,
    /// The networks and volumes it was prepared with.
    pub network: NetworkAttachment,
    pub volumes: Vec<VolumeAttachment>,
    /// The volumes its current or last run was started with.
    pub started_with: Vec<VolumeAttachment>,
    /// Its current or last run.
    pub run: Option<Run>,
    pub paused: bool,
    pub starts: u32,
}

/// One run of an instance.
#[derive(Debug, Clone)]
pub struct Run {
    pub handle: InstanceHandle,
    /// Set when it ended.
    pub exit: Option<ExitInfo>,
    exited: watch::Sender<bool>,
}

impl Run {
    pub fn running(&self) -> bool {
        self.exit.is_none()
    }
}

#[derive(Default)]
struct State {
    instances: BTreeMap<String, FakeInstance>,
    calls: Vec<Call>,
    /// Per op: the call counts (1-based, from when it was set) that fail.
    failures: HashMap<Op, Vec<u32>>,
    counts: HashMap<Op, u32>,
    /// The next starts return [`Started::Failed`] with this exit code.
    refuse_start: Option<i32>,
    /// Signals the instances ignore (as a process that handles SIGTERM).
    ignored: HashSet<i32>,
    next_pid: i32,
}

/// See the module doc.
pub struct FakeDriver {
    state: Mutex<State>,
    /// Calls of these kinds block until released (a driver busy for a while).
    held: Mutex<HashSet<Op>>,
    released: Condvar,
    /// Bumped at each simulated daemon restart.
    epoch: watch::Sender<u64>,
}

impl Default for FakeDriver {
    fn default() -> Self {
        FakeDriver {
            state: Mutex::new(State {
                next_pid: 1000,
                ..State::default()
            }),
            held: Mutex::new(HashSet::new()),
            released: Condvar::new(),
            epoch: watch::channel(0).0,
        }
    }
}

fn injected(op: Op) -> EngineError {
    EngineError::new(
        ErrorKind::Internal,
        format!("injected failure of the fake driver's {op:?}"),
    )
}

fn now() -> String {
    format_rfc3339_nanos(std::time::SystemTime::now())
}

impl FakeDriver {
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes the `nth` call of `op` from now on (1 the next one) fail.
    pub fn fail(&self, op: Op, nth: u32) {
        let mut s = self.state.lock().unwrap();
        let base = s.counts.get(&op).copied().unwrap_or(0);
        s.failures.entry(op).or_default().push(base + nth);
    }

    /// The next starts fail as a container whose command is missing (until cleared).
    pub fn refuse_starts(&self, exit_code: Option<i32>) {
        self.state.lock().unwrap().refuse_start = exit_code;
    }

    /// The instances ignore `signal` (a stop then needs SIGKILL).
    pub fn ignore_signal(&self, signal: i32) {
        self.state.lock().unwrap().ignored.insert(signal);
    }

    /// Calls of kind `op` block (in their thread) until [`FakeDriver::release`].
    pub fn hold(&self, op: Op) {
        self.held.lock().unwrap().insert(op);
    }

    /// Lets the held calls of kind `op` go on.
    pub fn release(&self, op: Op) {
        self.held.lock().unwrap().remove(&op);
        self.released.notify_all();
    }

    fn wait_if_held(&self, op: Op) {
        let mut held = self.held.lock().unwrap();
        while held.contains(&op) {
            held = self.released.wait(held).unwrap();
        }
    }

    /// Every call so far.
    pub fn calls(&self) -> Vec<Call> {
        self.state.lock().unwrap().calls.clone()
    }

    /// The calls of one kind so far.
    pub fn calls_of(&self, op: Op) -> Vec<Call> {
        self.calls().into_iter().filter(|c| c.op == op).collect()
    }

    /// The instances prepared and not destroyed.
    pub fn instances(&self) -> BTreeMap<String, FakeInstance> {
        self.state.lock().unwrap().instances.clone()
    }

    /// One instance, if prepared and not destroyed.
    pub fn instance(&self, id: &str) -> Option<FakeInstance> {
        self.state.lock().unwrap().instances.get(id).cloned()
    }

    /// The ids of the instances whose run is going on.
    pub fn running(&self) -> Vec<String> {
        let s = self.state.lock().unwrap();
        s.instances
            .iter()
            .filter(|(_, i)| i.run.as_ref().is_some_and(Run::running))
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// Ends the run of instance `id` with `code` (as its process exiting). Returns
    /// false when it does not run.
    pub fn exit(&self, id: &str, code: i32) -> bool {
        self.end(id, code, None)
    }

    fn end(&self, id: &str, code: i32, error: Option<String>) -> bool {
        let mut s = self.state.lock().unwrap();
        let Some(run) = s.instances.get_mut(id).and_then(|i| i.run.as_mut()) else {
            return false;
        };
        if !run.running() {
            return false;
        }
        run.exit = Some(ExitInfo {
            exit_code: code,
            finished_at: now(),
            oom_killed: false,
            error,
        });
        run.exited.send_replace(true);
        true
    }

    /// Simulates the daemon stopping: the watchers of the engine that ran never hear of
    /// an exit again. The instances run on.
    pub fn daemon_restart(&self) {
        self.epoch.send_modify(|e| *e += 1);
    }

    /// Records a call; fails it if told to.
    fn call(&self, op: Op, id: &str, arg: Option<i64>) -> EngineResult<()> {
        let mut s = self.state.lock().unwrap();
        s.calls.push(Call {
            op,
            id: id.to_string(),
            arg,
        });
        let n = {
            let n = s.counts.entry(op).or_default();
            *n += 1;
            *n
        };
        match s.failures.get_mut(&op) {
            Some(f) if f.contains(&n) => {
                f.retain(|x| *x != n);
                Err(injected(op))
            }
            _ => Ok(()),
        }
    }

    fn prepared(&self, c: &ContainerInspect) -> EngineResult<()> {
        if self.state.lock().unwrap().instances.contains_key(&c.id) {
            Ok(())
        } else {
            Err(EngineError::new(
                ErrorKind::Conflict,
                format!("container {} is not prepared on this host", c.name),
            ))
        }
    }

    fn running_run(&self, c: &ContainerInspect) -> EngineResult<()> {
        let s = self.state.lock().unwrap();
        let runs = s
            .instances
            .get(&c.id)
            .and_then(|i| i.run.as_ref())
            .is_some_and(Run::running);
        if runs {
            Ok(())
        } else {
            Err(EngineError::new(
                ErrorKind::Conflict,
                format!("container {} is not running", c.name),
            ))
        }
    }
}

impl Driver for FakeDriver {
    fn kind(&self) -> &'static str {
        "fake"
    }

    fn prepare(
        &self,
        c: &ContainerInspect,
        _image_config: &serde_json::Value,
        network: &NetworkAttachment,
        volumes: &[VolumeAttachment],
    ) -> EngineResult<()> {
        self.call(Op::Prepare, &c.id, None)?;
        self.state.lock().unwrap().instances.insert(
            c.id.clone(),
            FakeInstance {
                record: c.clone(),
                network: network.clone(),
                volumes: volumes.to_vec(),
                started_with: Vec::new(),
                run: None,
                paused: false,
                starts: 0,
            },
        );
        Ok(())
    }

    fn start(&self, c: &ContainerInspect, volumes: &[VolumeAttachment]) -> EngineResult<Started> {
        self.call(Op::Start, &c.id, None)?;
        self.wait_if_held(Op::Start);
        self.prepared(c)?;
        let mut s = self.state.lock().unwrap();
        if let Some(code) = s.refuse_start {
            return Ok(Started::Failed {
                kind: ErrorKind::InvalidInput,
                exit_code: code,
                message: "the fake refuses to start it".into(),
            });
        }
        s.next_pid += 2;
        let pid = s.next_pid;
        let i = s.instances.get_mut(&c.id).expect("prepared");
        if i.run.as_ref().is_some_and(Run::running) {
            return Err(EngineError::new(
                ErrorKind::Conflict,
                format!("the fake's instance {} runs already", c.id),
            ));
        }
        let handle = InstanceHandle {
            pid,
            monitor_pid: Some(pid + 1),
            started_at: now(),
        };
        i.run = Some(Run {
            handle: handle.clone(),
            exit: None,
            exited: watch::channel(false).0,
        });
        i.started_with = volumes.to_vec();
        i.paused = false;
        i.starts += 1;
        Ok(Started::Running(handle))
    }

    fn wait(&self, c: &ContainerInspect, handle: &InstanceHandle) -> BoxFuture<'static, ()> {
        let _ = self.call(Op::Wait, &c.id, None);
        let run = self
            .state
            .lock()
            .unwrap()
            .instances
            .get(&c.id)
            .and_then(|i| i.run.clone())
            .filter(|r| r.handle.pid == handle.pid);
        let mut epoch = self.epoch.subscribe();
        let e0 = *epoch.borrow();
        Box::pin(async move {
            let Some(run) = run else {
                return;
            };
            let mut exited = run.exited.subscribe();
            let restarted = async move {
                let _ = epoch.wait_for(|e| *e != e0).await.map(drop);
                true
            };
            let ended = async move {
                let _ = exited.wait_for(|x| *x).await.map(drop);
                false
            };
            let restarted = tokio::select! {
                biased;
                r = restarted => r,
                r = ended => r,
            };
            if restarted {
                // The daemon that waited is gone: nobody hears of this exit.
                std::future::pending::<()>().await
            }
        })
    }

    fn reap(&self, c: &ContainerInspect) -> ExitInfo {
        let _ = self.call(Op::Reap, &c.id, None);
        let mut s = self.state.lock().unwrap();
        let run = s.instances.get_mut(&c.id).and_then(|i| i.run.as_mut());
        let unrecorded = ExitInfo {
            exit_code: 255,
            finished_at: now(),
            oom_killed: false,
            error: Some("the container's monitor died without recording an exit".into()),
        };
        match run {
            Some(r) => {
                let exit = r.exit.clone().unwrap_or(unrecorded);
                r.exit = Some(exit.clone());
                r.exited.send_replace(true);
                exit
            }
            None => unrecorded,
        }
    }

    fn signal(&self, c: &ContainerInspect, signal: i32) -> EngineResult<()> {
        self.call(Op::Signal, &c.id, Some(signal.into()))?;
        if c.state.pid.is_none() {
            return Err(EngineError::new(
                ErrorKind::Conflict,
                format!("container {} is not running", c.name),
            ));
        }
        let ignored = self.state.lock().unwrap().ignored.contains(&signal);
        if signal == libc::SIGKILL || (signal == libc::SIGTERM && !ignored) {
            self.end(&c.id, 128 + signal, None);
        }
        Ok(())
    }

    fn pause(&self, c: &ContainerInspect, paused: bool) -> EngineResult<()> {
        self.call(Op::Pause, &c.id, Some(paused.into()))?;
        self.running_run(c)?;
        if let Some(i) = self.state.lock().unwrap().instances.get_mut(&c.id) {
            i.paused = paused;
        }
        Ok(())
    }

    /// Records the call with the new memory limit, and keeps the record it was given
    /// as the instance's (a real driver writes it to the instance's spec).
    fn update(
        &self,
        c: &ContainerInspect,
        _changes: &ContainerUpdate,
        running: bool,
    ) -> EngineResult<()> {
        self.call(Op::Update, &c.id, c.config.memory)?;
        if running {
            self.running_run(c)?;
        }
        if let Some(i) = self.state.lock().unwrap().instances.get_mut(&c.id) {
            i.record = c.clone();
        }
        Ok(())
    }

    fn resize(&self, c: &ContainerInspect, rows: u16, _cols: u16) -> EngineResult<()> {
        self.call(Op::Resize, &c.id, Some(rows.into()))?;
        self.running_run(c)
    }

    fn stats(&self, c: &ContainerInspect) -> InstanceStats {
        let _ = self.call(Op::Stats, &c.id, None);
        let runs = self.running_run(c).is_ok();
        InstanceStats {
            pids_current: runs.into(),
            memory_limit: u64::MAX,
            pids_limit: u64::MAX,
            ..Default::default()
        }
    }

    fn processes(&self, c: &ContainerInspect) -> Vec<i32> {
        let _ = self.call(Op::Processes, &c.id, None);
        let s = self.state.lock().unwrap();
        s.instances
            .get(&c.id)
            .and_then(|i| i.run.as_ref())
            .filter(|r| r.running())
            .map(|r| vec![r.handle.pid])
            .unwrap_or_default()
    }

    fn exec(&self, c: &ContainerInspect, req: &ExecCreate) -> EngineResult<std::process::Command> {
        self.call(Op::Exec, &c.id, None)?;
        self.running_run(c)?;
        let mut cmd = std::process::Command::new("/bin/true");
        cmd.args(&req.cmd);
        Ok(cmd)
    }

    fn attach(&self, c: &ContainerInspect) -> std::io::Result<std::os::unix::net::UnixStream> {
        self.call(Op::Attach, &c.id, None)
            .map_err(|e| std::io::Error::other(e.message().clone()))?;
        let (a, _b) = std::os::unix::net::UnixStream::pair()?;
        Ok(a)
    }

    fn logs(&self, c: &ContainerInspect) -> PathBuf {
        let _ = self.call(Op::Logs, &c.id, None);
        PathBuf::from("/dev/null")
    }

    fn kill_all(&self, c: &ContainerInspect) {
        let _ = self.call(Op::KillAll, &c.id, None);
        self.end(&c.id, 137, None);
    }

    fn destroy(&self, c: &ContainerInspect) {
        let _ = self.call(Op::Destroy, &c.id, None);
        let mut s = self.state.lock().unwrap();
        if let Some(r) = s.instances.get(&c.id).and_then(|i| i.run.as_ref()) {
            r.exited.send_replace(true);
        }
        s.instances.remove(&c.id);
    }

    fn adopt<'a>(&'a self, c: &'a ContainerInspect) -> BoxFuture<'a, Found> {
        let _ = self.call(Op::Adopt, &c.id, None);
        let (last_start, alive, exists) = {
            let s = self.state.lock().unwrap();
            let i = s.instances.get(&c.id);
            let run = i.and_then(|i| i.run.clone());
            (
                run.as_ref().map(|r| r.handle.clone()),
                run.as_ref().is_some_and(Run::running),
                i.is_some(),
            )
        };
        Box::pin(async move {
            Found {
                last_start,
                alive,
                exists,
            }
        })
    }

    fn sweep(&self, known: &HashSet<String>) -> Vec<(ContainerInspect, InstanceHandle)> {
        let _ = self.call(Op::Sweep, "", None);
        let mut s = self.state.lock().unwrap();
        let mut adopt = Vec::new();
        let ids: Vec<String> = s
            .instances
            .keys()
            .filter(|id| !known.contains(*id))
            .cloned()
            .collect();
        for id in ids {
            let i = &s.instances[&id];
            match &i.run {
                Some(r) if r.running() && i.record.config.auto_remove => {
                    adopt.push((i.record.clone(), r.handle.clone()));
                }
                _ => {
                    s.instances.remove(&id);
                }
            }
        }
        adopt
    }
}
