//! Log reading and following: the lines on disk filtered by stream, `since`, `until` and
//! `tail`, then (when following) every line written afterwards until the followed run of
//! the container ends, the last ones included.
//!
//! Following is woken, not polled: one inotify instance per engine ([`LogWatch`]) watches
//! the directories of followed logs and wakes their followers when a file in them is
//! written, created or renamed. A [`LogFollower`] reads through an open handle, so it
//! finishes a file that was rotated (`container.log` → `container.log.1`) or removed
//! (`--rm`) before it moves to the new one.
//!
//! ```text
//! logs() ──> lines on disk (filtered, tail) ──follow──> wait: file written | state changed
//!                                                       └─> read new lines ──> run ended? ──> end
//! ```
//! The end is decided *before* the last read, so lines written before the exit are sent.

use std::collections::HashMap;
use std::fs;
use std::io::{BufRead, BufReader, Seek};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use pier_api::containers::LogLine;
use pier_api::containers::{ContainerState, ContainerStatus};
use pier_api::time::parse_rfc3339_nanos;
use rustix::fs::inotify;
use tokio::io::unix::AsyncFd;
use tokio::sync::{mpsc, watch};

use super::Stream;
use crate::context::RequestContext;
use crate::error::{EngineError, EngineResult};
use crate::instances::Instances;

/// How long a log stream follows the container.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Follow {
    /// Only the lines on disk.
    #[default]
    No,
    /// Until the container no longer runs; a restart in progress counts as running.
    WhileRunning,
    /// Until the container's next exit, waiting for a start if it does not run (a client
    /// attaching before it starts the container).
    NextExit,
    /// The current run if the container runs, else the next one, until it ends or the
    /// container is being removed (Docker's attach).
    Run,
    /// The run the caller saw running, until it ends or the container is being removed;
    /// ended at once if it already has (Docker's `logs -f`, asked of a running
    /// container: by the time the stream is set up the run may be over, and waiting for
    /// another one, as [`Follow::Run`] would, never ends).
    Current,
}

/// What to read from a container's log.
#[derive(Debug, Clone, Copy)]
pub struct LogOptions {
    pub follow: Follow,
    /// Only the last N lines on disk (followed lines are all sent).
    pub tail: Option<usize>,
    /// Only lines at or after this time (Unix nanoseconds).
    pub since_ns: Option<i64>,
    /// Only lines at or before this time (Unix nanoseconds).
    pub until_ns: Option<i64>,
    pub stdout: bool,
    pub stderr: bool,
}

impl Default for LogOptions {
    fn default() -> Self {
        LogOptions {
            follow: Follow::No,
            tail: None,
            since_ns: None,
            until_ns: None,
            stdout: true,
            stderr: true,
        }
    }
}

impl LogOptions {
    fn keeps(&self, l: &LogLine) -> bool {
        let wanted = match Stream::of_log(&l.stream) {
            Stream::Stdout => self.stdout,
            Stream::Stderr => self.stderr,
        };
        if !wanted {
            return false;
        }
        if self.since_ns.is_none() && self.until_ns.is_none() {
            return true;
        }
        let t = parse_rfc3339_nanos(&l.time).unwrap_or(0);
        self.since_ns.is_none_or(|s| t >= s) && self.until_ns.is_none_or(|u| t <= u)
    }
}

/// When a followed stream ends, decided from the container's state when it began and now.
#[derive(Debug, Clone)]
pub(crate) struct FollowEnd {
    follow: Follow,
    was_running: bool,
    finished_before: Option<String>,
}

fn running(s: &ContainerState) -> bool {
    matches!(s.status, ContainerStatus::Running | ContainerStatus::Paused)
}

impl FollowEnd {
    pub(crate) fn new(follow: Follow, start: &ContainerState) -> Self {
        FollowEnd {
            follow,
            was_running: running(start),
            finished_before: start.finished_at.clone(),
        }
    }

    /// Has the followed stretch ended in state `s`?
    pub(crate) fn reached(&self, s: &ContainerState) -> bool {
        let restarting = s.status == ContainerStatus::Restarting;
        match self.follow {
            Follow::No => true,
            Follow::WhileRunning => !(running(s) || restarting),
            Follow::NextExit => {
                !(running(s) || restarting) && s.finished_at != self.finished_before
            }
            Follow::Run => {
                s.status == ContainerStatus::Removing
                    || (!running(s) && (self.was_running || s.finished_at != self.finished_before))
            }
            Follow::Current => s.status == ContainerStatus::Removing || !running(s),
        }
    }

    /// Waits until the followed run has started; false if it ended (or the container
    /// went) first.
    pub(crate) async fn started(&self, rx: &mut watch::Receiver<ContainerState>) -> bool {
        loop {
            {
                let s = rx.borrow_and_update();
                if running(&s) {
                    return true;
                }
                if self.reached(&s) {
                    return false;
                }
            }
            if rx.changed().await.is_err() {
                return false;
            }
        }
    }
}

/// Reads a log file as it grows, through an open handle, so lines written just before the
/// file is rotated or removed are still read.
pub struct LogFollower {
    path: PathBuf,
    reader: Option<BufReader<fs::File>>,
    partial: String,
}

impl LogFollower {
    /// Starts at the beginning of the current file.
    pub fn from_start(path: &Path) -> Self {
        let reader = fs::File::open(path).ok().map(BufReader::new);
        LogFollower {
            path: path.to_path_buf(),
            reader,
            partial: String::new(),
        }
    }

    /// Starts at the end of the current file (nothing written so far is read).
    pub fn at_end(path: &Path) -> Self {
        let reader = fs::File::open(path).ok().map(|mut f| {
            let _ = f.seek(std::io::SeekFrom::End(0));
            BufReader::new(f)
        });
        LogFollower {
            path: path.to_path_buf(),
            reader,
            partial: String::new(),
        }
    }

    /// Complete lines written since the last call.
    pub fn read(&mut self) -> Vec<LogLine> {
        use std::os::unix::fs::MetadataExt;
        let mut out = Vec::new();
        loop {
            if self.reader.is_none() {
                self.reader = fs::File::open(&self.path).ok().map(BufReader::new);
            }
            let Some(r) = self.reader.as_mut() else {
                return out;
            };
            Self::drain(r, &mut self.partial, &mut out);
            let ours = r.get_ref().metadata().ok();
            let current = fs::metadata(&self.path).ok().map(|m| m.ino());
            let our_ino = ours.as_ref().map(|m| m.ino());
            if current.is_some() && current != our_ino {
                // Rotated: the path names a new file. The old one takes no more writes
                // now; finish it (what landed since the read above), then the files
                // rotated after it if the log turned more than once since the last read,
                // then switch to the current one.
                Self::drain(r, &mut self.partial, &mut out);
                self.partial.clear();
                self.reader = None;
                if let Some(ino) = our_ino {
                    for newer in self.rotated_after(ino) {
                        if let Ok(f) = fs::File::open(&newer) {
                            Self::drain(&mut BufReader::new(f), &mut self.partial, &mut out);
                            self.partial.clear();
                        }
                    }
                }
                continue;
            }
            // Truncated in place (a writer keeping no rotated files): start over.
            if let (Some(m), Ok(pos)) = (ours, r.stream_position()) {
                if m.len() < pos {
                    let _ = r.rewind();
                    self.partial.clear();
                    continue;
                }
            }
            return out;
        }
    }

    /// The rotated files newer than the one with inode `ino` (`container.log.N` for N
    /// below its own), oldest first; none if it is no longer among them.
    fn rotated_after(&self, ino: u64) -> Vec<PathBuf> {
        use std::os::unix::fs::MetadataExt;
        let nth = |n: u32| {
            let mut p = self.path.as_os_str().to_owned();
            p.push(format!(".{n}"));
            PathBuf::from(p)
        };
        let mut n = 1;
        loop {
            match fs::metadata(nth(n)) {
                Ok(m) if m.ino() == ino => return (1..n).rev().map(nth).collect(),
                Ok(_) => n += 1,
                Err(_) => return Vec::new(),
            }
        }
    }

    fn drain(r: &mut BufReader<fs::File>, partial: &mut String, out: &mut Vec<LogLine>) {
        while let Ok(n) = r.read_line(partial) {
            if n == 0 || !partial.ends_with('\n') {
                break;
            }
            if let Ok(l) = serde_json::from_str(partial) {
                out.push(l);
            }
            partial.clear();
        }
    }
}

/// One inotify instance shared by every follower of the engine: a watch per followed
/// directory, and a counter per watch that goes up on every change in it.
#[derive(Default)]
pub struct LogWatch {
    inner: OnceLock<Result<Arc<WatchInner>, String>>,
}

struct WatchInner {
    fd: AsyncFd<OwnedFd>,
    watches: Mutex<HashMap<i32, Watched>>,
}

struct Watched {
    tx: watch::Sender<u64>,
    subscribers: usize,
}

/// Wakes its holder on changes in a directory; the watch goes with the last subscriber.
pub struct Subscription {
    inner: Arc<WatchInner>,
    wd: i32,
    rx: watch::Receiver<u64>,
    /// The directory went (its watch was dropped by the kernel): no more wakes.
    gone: bool,
}

impl Subscription {
    /// Waits for the next change (forever once the directory is gone).
    pub async fn changed(&mut self) {
        if self.gone || self.rx.changed().await.is_err() {
            self.gone = true;
            std::future::pending::<()>().await;
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let mut w = self.inner.watches.lock().unwrap();
        if let Some(e) = w.get_mut(&self.wd) {
            e.subscribers -= 1;
            if e.subscribers == 0 {
                w.remove(&self.wd);
                let _ = inotify::remove_watch(self.inner.fd.get_ref(), self.wd);
            }
        }
    }
}

impl LogWatch {
    fn inner(&self) -> EngineResult<Arc<WatchInner>> {
        self.inner
            .get_or_init(|| {
                let fd = inotify::init(inotify::CreateFlags::CLOEXEC | inotify::CreateFlags::NONBLOCK)
                    .map_err(|e| format!("cannot watch log files (inotify_init1: {e}); raise fs.inotify.max_user_instances"))?;
                // SAFETY: the AsyncFd owns the inotify descriptor and is its only user.
                let fd = unsafe {
                    AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE)
                }
                .map_err(|e| format!("cannot watch log files: {e}"))?;
                let inner = Arc::new(WatchInner {
                    fd,
                    watches: Mutex::new(HashMap::new()),
                });
                tokio::spawn(read_events(inner.clone()));
                Ok(inner)
            })
            .clone()
            .map_err(|m| EngineError::new(pier_api::ErrorKind::Internal, m))
    }

    /// Watches `dir` for changes to the files in it.
    pub fn subscribe(&self, dir: &Path) -> EngineResult<Subscription> {
        let inner = self.inner()?;
        let flags = inotify::WatchFlags::MODIFY
            | inotify::WatchFlags::CREATE
            | inotify::WatchFlags::MOVE
            | inotify::WatchFlags::DELETE
            | inotify::WatchFlags::CLOSE_WRITE
            | inotify::WatchFlags::ONLYDIR;
        let mut w = inner.watches.lock().unwrap();
        let wd = inotify::add_watch(inner.fd.get_ref(), dir, flags).map_err(|e| {
            if e == rustix::io::Errno::NOSPC {
                // inotify's word for "too many watches", not a full disk.
                return EngineError::Busy(format!(
                    "cannot follow the log in {}: the host's limit of inotify watches is reached; raise fs.inotify.max_user_watches or stop other followers",
                    dir.display()
                ));
            }
            EngineError::host(
                "watch the log directory",
                dir,
                std::io::Error::from_raw_os_error(e.raw_os_error()),
            )
        })?;
        let e = w.entry(wd).or_insert_with(|| Watched {
            tx: watch::channel(0).0,
            subscribers: 0,
        });
        e.subscribers += 1;
        let rx = e.tx.subscribe();
        drop(w);
        Ok(Subscription {
            inner,
            wd,
            rx,
            gone: false,
        })
    }
}

/// Reads the inotify events and wakes the subscribers of each watch, for the life of the
/// runtime (one task per [`LogWatch`], that is per engine).
async fn read_events(this: Arc<WatchInner>) {
    let mut buf = vec![std::mem::MaybeUninit::<u8>::uninit(); 8192];
    loop {
        let Ok(mut guard) = this.fd.readable().await else {
            return;
        };
        let mut reader = inotify::Reader::new(this.fd.get_ref(), &mut buf);
        let mut woken = Vec::new();
        let mut overflow = false;
        let mut ignored = Vec::new();
        loop {
            match reader.next() {
                Ok(ev) => {
                    if ev.events().contains(inotify::ReadFlags::QUEUE_OVERFLOW) {
                        overflow = true;
                    } else if ev.events().contains(inotify::ReadFlags::IGNORED) {
                        ignored.push(ev.wd());
                    } else {
                        woken.push(ev.wd());
                    }
                }
                Err(rustix::io::Errno::AGAIN) => {
                    guard.clear_ready();
                    break;
                }
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => {
                    tracing::error!(error = %e, "reading inotify events failed; log followers are no longer woken");
                    return;
                }
            }
        }
        let mut w = this.watches.lock().unwrap();
        for (wd, e) in w.iter() {
            if overflow || woken.contains(wd) || ignored.contains(wd) {
                e.tx.send_modify(|n| *n += 1);
            }
        }
        // The kernel dropped these watches (their directory went): their subscribers
        // stop waiting for wakes once they see the sender gone.
        for wd in ignored {
            w.remove(&wd);
        }
    }
}

/// Lines on disk, oldest first, and a follower positioned right after them.
fn read_on_disk(path: &Path) -> (Vec<LogLine>, LogFollower) {
    let mut follower = LogFollower::from_start(path);
    let mut lines = pier_runtime::logs::read_rotated(path);
    lines.extend(follower.read());
    (lines, follower)
}

/// Sends lines on disk, then follows; the body of the task behind [`Instances::logs`].
pub(crate) async fn follow(
    mut follower: LogFollower,
    opts: LogOptions,
    end: FollowEnd,
    mut state: watch::Receiver<ContainerState>,
    mut wake: Option<Subscription>,
    tx: mpsc::Sender<LogLine>,
) {
    loop {
        // Decide before reading, so output written before the exit is still sent.
        let done = end.reached(&state.borrow_and_update());
        let mut gone = false;
        if !done {
            tokio::select! {
                r = state.changed() => gone = r.is_err(),
                _ = async { match wake.as_mut() {
                    Some(w) => w.changed().await,
                    None => std::future::pending().await,
                } } => {}
                _ = tx.closed() => return,
            }
        }
        for l in follower.read() {
            if opts.keeps(&l) && tx.send(l).await.is_err() {
                return;
            }
        }
        if done || gone {
            return;
        }
    }
}

impl Instances {
    /// A container's log lines: those on disk (filtered, then the last `tail`), then with
    /// `follow` every line written until the followed run ends. The stream is set up
    /// (the state watched, the file opened) before this returns, so a caller may start
    /// the container afterwards and miss nothing.
    pub fn logs(
        &self,
        ctx: &RequestContext,
        id: &str,
        opts: LogOptions,
    ) -> EngineResult<mpsc::Receiver<LogLine>> {
        let project = ctx.project();
        let c = self.lookup(project, id)?;
        if c.config.log_driver.as_deref() == Some("none") {
            return Err(crate::error::invalid(format!(
                "container {} keeps no logs (log driver none): attach to it to see its output",
                c.name
            )));
        }
        let path = PathBuf::from(&c.log_path);
        let state = self.state_watch(&c);
        let end = FollowEnd::new(opts.follow, &c.state);
        // Watch before reading, so no write after the read goes unnoticed.
        let wake = match (opts.follow, path.parent()) {
            (Follow::No, _) | (_, None) => None,
            (_, Some(dir)) => Some(self.log_watch.subscribe(dir)?),
        };
        let (mut lines, follower) = read_on_disk(&path);
        lines.retain(|l| opts.keeps(l));
        if let Some(n) = opts.tail {
            let skip = lines.len().saturating_sub(n);
            lines.drain(..skip);
        }
        let (tx, rx) = mpsc::channel(64);
        tokio::spawn(async move {
            for l in lines {
                if tx.send(l).await.is_err() {
                    return;
                }
            }
            if opts.follow != Follow::No {
                follow(follower, opts, end, state, wake, tx).await;
            }
        });
        Ok(rx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::time::Duration;

    fn line(text: &str, stream: &str) -> String {
        let l = LogLine {
            log: text.into(),
            stream: stream.into(),
            time: pier_api::time::now_rfc3339(),
        };
        serde_json::to_string(&l).unwrap() + "\n"
    }

    fn append(path: &Path, s: &str) {
        let mut f = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .unwrap();
        f.write_all(s.as_bytes()).unwrap();
    }

    fn state(status: ContainerStatus, finished: Option<&str>) -> ContainerState {
        ContainerState {
            status,
            finished_at: finished.map(String::from),
            ..Default::default()
        }
    }

    /// Starts following `path` while "running", as `Instances::logs` does.
    fn start_follow(
        lw: &LogWatch,
        path: &Path,
        follow: Follow,
    ) -> (watch::Sender<ContainerState>, mpsc::Receiver<LogLine>) {
        let (st_tx, st_rx) = watch::channel(state(ContainerStatus::Running, None));
        let end = FollowEnd::new(follow, &st_rx.borrow());
        let wake = lw.subscribe(path.parent().unwrap()).unwrap();
        let (_, follower) = read_on_disk(path);
        let (tx, rx) = mpsc::channel(64);
        tokio::spawn(follow_task(follower, end, st_rx, wake, tx));
        (st_tx, rx)
    }

    async fn follow_task(
        f: LogFollower,
        end: FollowEnd,
        st: watch::Receiver<ContainerState>,
        wake: Subscription,
        tx: mpsc::Sender<LogLine>,
    ) {
        follow(f, LogOptions::default(), end, st, Some(wake), tx).await
    }

    async fn next(rx: &mut mpsc::Receiver<LogLine>) -> Option<LogLine> {
        tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .expect("a followed line arrives within 5 s")
    }

    #[tokio::test]
    async fn a_follower_is_woken_by_writes_follows_rotation_and_ends_after_the_last_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("container.log");
        append(&path, &line("before\n", "stdout"));
        let lw = LogWatch::default();
        let (st, mut rx) = start_follow(&lw, &path, Follow::WhileRunning);
        // Woken promptly: far sooner than any polling interval the old loops used would
        // matter, and without the state changing.
        let t0 = std::time::Instant::now();
        append(&path, &line("one\n", "stdout"));
        assert_eq!(next(&mut rx).await.unwrap().log, "one\n");
        assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
        // Rotation as pier_runtime::logs does it: rename, then a new file. A line lands
        // in the old file just before the rename.
        append(&path, &line("two\n", "stderr"));
        fs::rename(&path, dir.path().join("container.log.1")).unwrap();
        append(&path, &line("three\n", "stdout"));
        assert_eq!(next(&mut rx).await.unwrap().log, "two\n");
        assert_eq!(next(&mut rx).await.unwrap().log, "three\n");
        // Lines written before the exit are delivered, then the stream ends.
        append(&path, &line("last\n", "stdout"));
        st.send_replace(state(ContainerStatus::Exited, Some("t1")));
        assert_eq!(next(&mut rx).await.unwrap().log, "last\n");
        assert!(next(&mut rx).await.is_none(), "the stream ends at the exit");
        // The watch went with its last follower.
        assert!(lw.inner().unwrap().watches.lock().unwrap().is_empty());
    }

    #[test]
    fn a_log_rotated_twice_between_reads_loses_no_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("container.log");
        let n = |i: u32| dir.path().join(format!("container.log.{i}"));
        append(&path, &line("a\n", "stdout"));
        let mut f = LogFollower::from_start(&path);
        assert_eq!(f.read().len(), 1);
        // Two rotations as pier_runtime::logs does them, with lines in each file.
        append(&path, &line("b\n", "stdout"));
        fs::rename(&path, n(1)).unwrap();
        append(&path, &line("c\n", "stdout"));
        fs::rename(n(1), n(2)).unwrap();
        fs::rename(&path, n(1)).unwrap();
        append(&path, &line("d\n", "stdout"));
        let got: Vec<String> = f.read().into_iter().map(|l| l.log).collect();
        assert_eq!(got, ["b\n", "c\n", "d\n"]);
    }

    #[tokio::test]
    async fn a_log_removed_with_its_directory_is_finished_through_the_open_handle() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("c1");
        fs::create_dir(&sub).unwrap();
        let path = sub.join("container.log");
        append(&path, &line("a\n", "stdout"));
        let lw = LogWatch::default();
        let (st, mut rx) = start_follow(&lw, &path, Follow::Run);
        append(&path, &line("b\n", "stdout"));
        fs::remove_dir_all(&sub).unwrap();
        assert_eq!(next(&mut rx).await.unwrap().log, "b\n");
        st.send_replace(state(ContainerStatus::Removing, Some("t1")));
        assert!(next(&mut rx).await.is_none());
    }

    #[tokio::test]
    async fn a_truncated_log_is_read_from_its_start() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("container.log");
        append(&path, &line("old line that is long\n", "stdout"));
        let mut f = LogFollower::from_start(&path);
        assert_eq!(f.read().len(), 1);
        fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(0)
            .unwrap();
        append(&path, &line("new\n", "stdout"));
        let got = f.read();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].log, "new\n");
    }

    #[test]
    fn a_partial_line_waits_for_its_end() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("container.log");
        let whole = line("x\n", "stdout");
        let (a, b) = whole.split_at(10);
        append(&path, a);
        let mut f = LogFollower::from_start(&path);
        assert!(f.read().is_empty());
        append(&path, b);
        assert_eq!(f.read().len(), 1);
    }

    #[test]
    fn follow_ends_as_each_api_expects() {
        let run = |s| state(s, None);
        let exited = state(ContainerStatus::Exited, Some("t2"));
        let before = state(ContainerStatus::Exited, Some("t1"));
        let restarting = state(ContainerStatus::Restarting, Some("t2"));
        // Native `logs -f`: a restart in progress still counts as running.
        let e = FollowEnd::new(Follow::WhileRunning, &run(ContainerStatus::Running));
        assert!(!e.reached(&restarting) && !e.reached(&run(ContainerStatus::Paused)));
        assert!(e.reached(&exited));
        // Native attach: the next exit, waiting through a start.
        let e = FollowEnd::new(Follow::NextExit, &before);
        assert!(!e.reached(&before) && !e.reached(&run(ContainerStatus::Running)));
        assert!(!e.reached(&restarting) && e.reached(&exited));
        // Docker: the next run of a stopped container, or the current one's end.
        let e = FollowEnd::new(Follow::Run, &before);
        assert!(!e.reached(&before) && e.reached(&exited) && e.reached(&restarting));
        let e = FollowEnd::new(Follow::Run, &run(ContainerStatus::Running));
        assert!(e.reached(&state(ContainerStatus::Exited, None)));
        assert!(e.reached(&run(ContainerStatus::Removing)));
        // Docker's `logs -f` of a container it saw running: the engine may look after
        // the run ended (the state then is the exit itself), and the stream ends at once
        // rather than wait for a next run (docker-py's `containers.run(stream=True)` hung).
        let e = FollowEnd::new(Follow::Current, &exited);
        assert!(e.reached(&exited) && e.reached(&restarting));
        assert!(!FollowEnd::new(Follow::Run, &exited).reached(&exited));
        let e = FollowEnd::new(Follow::Current, &run(ContainerStatus::Running));
        assert!(
            !e.reached(&run(ContainerStatus::Running)) && !e.reached(&run(ContainerStatus::Paused))
        );
        assert!(e.reached(&exited) && e.reached(&run(ContainerStatus::Removing)));
        assert!(FollowEnd::new(Follow::No, &before).reached(&before));
    }

    #[test]
    fn options_filter_by_stream_and_time() {
        let l = |stream: &str, time: &str| LogLine {
            log: "x".into(),
            stream: stream.into(),
            time: time.into(),
        };
        let t = "2026-01-01T00:00:10.5Z";
        let ns = parse_rfc3339_nanos(t).unwrap();
        assert_eq!(ns % 1_000_000_000, 500_000_000);
        let o = LogOptions {
            stderr: false,
            ..Default::default()
        };
        assert!(o.keeps(&l("stdout", t)) && !o.keeps(&l("stderr", t)));
        let o = LogOptions {
            since_ns: Some(ns),
            until_ns: Some(ns),
            ..Default::default()
        };
        assert!(o.keeps(&l("stdout", t)));
        // Within one second, to the nanosecond: 10.5 is after 10.4 and before 10.6.
        let o = LogOptions {
            since_ns: Some(ns + 1),
            ..Default::default()
        };
        assert!(!o.keeps(&l("stdout", t)));
        let o = LogOptions {
            until_ns: Some(ns - 100_000_000),
            ..Default::default()
        };
        assert!(!o.keeps(&l("stdout", t)));
        let o = LogOptions {
            since_ns: Some(ns - 100_000_000),
            until_ns: Some(ns + 100_000_000),
            ..Default::default()
        };
        assert!(o.keeps(&l("stdout", t)));
    }
}
