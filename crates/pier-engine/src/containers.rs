//! Containers: create, start, stop, kill, remove, wait, logs, restart policies, and
//! re-adoption of running containers after a daemon restart (live restore).
//!
//! Desired state is the record in the store; actual state is the monitor's files and the
//! kernel. Every container has a directory `ROOT/containers/<id>/` (see
//! `pier_runtime::state`). Its life:
//!
//! ```text
//! create ──> created ──start──> running ──(exit)──> exited ──start──> running ...
//!                                  │  ^                │
//!                                  │  └──restart policy┘
//!                                  └──rm -f──> (gone)       exited/created ──rm──> (gone)
//! ```
//!
//! The rootfs is an overlay mounted while the container runs and unmounted when it
//! exits; a watcher task per running container waits for its monitor to exit (through a
//! pidfd), then records the exit and applies `--rm` and restart policies.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pier_api::containers::{
    ContainerCreate, ContainerInspect, ContainerState, ContainerStatus, ContainerSummary, Created,
    Event, RestartPolicy, WaitResponse,
};
use pier_api::time::{format_rfc3339_nanos, human_ago, now_rfc3339, now_unix, parse_rfc3339};
use pier_api::{ByteSize, ContainerId, ErrorKind, ProjectName};
use pier_image::ImageStore;
use pier_runtime::cgroups::Cgroup;
use pier_runtime::error::{Answer, ErrorKind as StartKind};
use pier_runtime::spec::{self, NetMode, Rlimit, SpecInput};
use pier_runtime::state::{read_json, write_json, Exited, MonitorConfig, Running};
use pier_store::{Batch, Store, StoreExt, Table};
use tokio::sync::{broadcast, watch};

use crate::error::{EngineError, EngineResult};
use crate::networks::{Networks, DEFAULT_NETWORK};
use crate::projects::Projects;
use crate::volumes::Volumes;
use crate::EngineEvent;
use pier_api::volumes::{MountKind, MountSpec};

const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

pub fn conflict(m: impl Into<String>) -> EngineError {
    EngineError::new(ErrorKind::Conflict, m)
}
pub fn invalid(m: impl Into<String>) -> EngineError {
    EngineError::invalid(m)
}
pub fn internal(m: impl Into<String>) -> EngineError {
    EngineError::new(ErrorKind::Internal, m)
}

/// Turns `--user` into uid, gid and supplementary gids.
type UserLookup<'a> =
    dyn Fn(&str) -> Result<(u32, u32, Vec<u32>), pier_runtime::rootfs::UserError> + 'a;

/// The container manager.
pub struct Containers {
    dir: PathBuf,
    /// Where removed containers' directories go to be deleted in the background.
    trash: PathBuf,
    db: Arc<dyn Store>,
    pub(crate) images: Arc<ImageStore>,
    /// Latest state per container, for waiters.
    watchers: Mutex<HashMap<String, watch::Sender<ContainerState>>>,
    /// Serializes operations on one container.
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    pub events: broadcast::Sender<EngineEvent>,
    /// Exec sessions, of every API.
    pub(crate) execs: crate::sessions::exec::ExecRegistry,
    /// Resize handles of attach sessions.
    pub(crate) attached: crate::sessions::attach::AttachRegistry,
    /// Wakes log followers.
    pub(crate) log_watch: crate::sessions::logs::LogWatch,
    /// Names being given to containers right now (`project/name`).
    reserved_names: Mutex<std::collections::HashSet<String>>,
    /// Forks the containers' monitors.
    zygote: pier_runtime::zygote::Zygote,
    /// Seccomp profiles compiled to BPF, by the profile's JSON.
    seccomp_cache: Mutex<HashMap<String, Arc<Vec<u8>>>>,
    pub networks: Arc<Networks>,
    pub volumes: Arc<Volumes>,
    pub projects: Arc<Projects>,
    /// What the host's cgroups offer (checked against every create's limits).
    cgroups: pier_runtime::cgroups::Host,
    /// The parent of the containers' cgroups: `pier` for the default state directory,
    /// `pier-<tag of the root>` for others (`pier_net::names`), so that daemons side by
    /// side never share one.
    cgroup_parent: String,
}

fn key(project: &ProjectName, id: &str) -> String {
    format!("{project}/{id}")
}

pub fn random_id() -> String {
    let mut b = [0u8; 32];
    if let Ok(mut f) = fs::File::open("/dev/urandom") {
        let _ = f.read_exact(&mut b);
    }
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// `docker`-style names: an adjective and a scientist.
fn random_name(id: &str) -> String {
    const A: [&str; 16] = [
        "brave", "calm", "eager", "fond", "gentle", "happy", "keen", "lucid", "merry", "nifty",
        "proud", "quiet", "sharp", "tender", "vivid", "witty",
    ];
    const B: [&str; 16] = [
        "curie", "darwin", "euler", "fermi", "gauss", "hopper", "kepler", "lovelace", "meitner",
        "newton", "noether", "pascal", "ritchie", "shannon", "turing", "wozniak",
    ];
    let n = u64::from_str_radix(&id[..8], 16).unwrap_or(0);
    format!(
        "{}_{}_{}",
        A[(n % 16) as usize],
        B[((n / 16) % 16) as usize],
        &id[8..12]
    )
}

pub(crate) fn valid_name(n: &str) -> bool {
    let b = n.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && b[0].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || b"_.-".contains(c))
}

/// Host hard limit of an rlimit, to refuse asking for more than the host can give.
fn host_hard_limit(resource: libc::__rlimit_resource_t) -> u64 {
    let mut l = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `l` is a valid rlimit to fill in.
    unsafe { libc::getrlimit(resource, &mut l) };
    l.rlim_max
}

fn ulimit_resource(name: &str) -> Option<(&'static str, libc::__rlimit_resource_t)> {
    Some(match name {
        "nofile" => ("RLIMIT_NOFILE", libc::RLIMIT_NOFILE),
        "nproc" => ("RLIMIT_NPROC", libc::RLIMIT_NPROC),
        "core" => ("RLIMIT_CORE", libc::RLIMIT_CORE),
        "cpu" => ("RLIMIT_CPU", libc::RLIMIT_CPU),
        "data" => ("RLIMIT_DATA", libc::RLIMIT_DATA),
        "fsize" => ("RLIMIT_FSIZE", libc::RLIMIT_FSIZE),
        "locks" => ("RLIMIT_LOCKS", libc::RLIMIT_LOCKS),
        "memlock" => ("RLIMIT_MEMLOCK", libc::RLIMIT_MEMLOCK),
        "msgqueue" => ("RLIMIT_MSGQUEUE", libc::RLIMIT_MSGQUEUE),
        "nice" => ("RLIMIT_NICE", libc::RLIMIT_NICE),
        "rtprio" => ("RLIMIT_RTPRIO", libc::RLIMIT_RTPRIO),
        "rttime" => ("RLIMIT_RTTIME", libc::RLIMIT_RTTIME),
        "sigpending" => ("RLIMIT_SIGPENDING", libc::RLIMIT_SIGPENDING),
        "stack" => ("RLIMIT_STACK", libc::RLIMIT_STACK),
        "as" => ("RLIMIT_AS", libc::RLIMIT_AS),
        _ => return None,
    })
}

/// `max-size` and `max-file` as the monitor wants them: bytes per file, rotated files kept.
fn log_limits(opts: &BTreeMap<String, String>) -> EngineResult<(u64, u32)> {
    let mut size = 10u64 << 20;
    let mut files = 3u32;
    for (k, v) in opts {
        match k.as_str() {
            "max-size" => {
                size = v
                    .parse::<u64>()
                    .ok()
                    .filter(|s| *s >= 1024)
                    .ok_or_else(|| invalid(format!("invalid log option max-size={v}: give bytes, at least 1024 (the CLI takes 10m)")))?
            }
            "max-file" => {
                files = v.parse().ok().filter(|n| *n >= 1).ok_or_else(|| invalid(format!("invalid log option max-file={v}: give a number, at least 1")))?
            }
            _ => return Err(invalid(format!("unknown log option {k:?}: use max-size or max-file"))),
        }
    }
    Ok((size, files - 1))
}

/// The mounts a new container gets: the request's, checked, and an anonymous volume
/// for every VOLUME of the image not already covered. Nothing is made here.
fn plan_mounts(req: &ContainerCreate, img: &serde_json::Value) -> EngineResult<Vec<MountSpec>> {
    let mut out: Vec<MountSpec> = Vec::new();
    for m in &req.mounts {
        let t = &m.target;
        let clean = Path::new(t).components().all(|c| {
            matches!(
                c,
                std::path::Component::RootDir | std::path::Component::Normal(_)
            )
        });
        if !t.starts_with('/') || !clean || t == "/" {
            return Err(invalid(format!(
                "invalid mount target {t:?}: give an absolute path other than / without '..'"
            )));
        }
        if out
            .iter()
            .any(|o| o.target.trim_end_matches('/') == t.trim_end_matches('/'))
        {
            return Err(invalid(format!("duplicate mount point: {t}")));
        }
        let mut m = m.clone();
        match m.kind {
            MountKind::Bind => {
                let Some(src) = m.source.clone() else {
                    return Err(invalid(format!(
                        "the bind mount on {t} needs a source path"
                    )));
                };
                if !src.starts_with('/') {
                    return Err(invalid(format!(
                        "bind source {src:?} must be an absolute host path (a name is a volume: use type=volume)"
                    )));
                }
                if !Path::new(&src).exists() {
                    if m.options.get("create_host_path").map(String::as_str) == Some("true") {
                        fs::create_dir_all(&src).map_err(|e| {
                            invalid(format!("cannot create bind source {src}: {e}"))
                        })?;
                    } else {
                        return Err(invalid(format!("bind source path does not exist: {src}")));
                    }
                }
                if let Some(p) = m.options.get("propagation") {
                    if ![
                        "private", "rprivate", "shared", "rshared", "slave", "rslave",
                    ]
                    .contains(&p.as_str())
                    {
                        return Err(invalid(format!(
                            "bind propagation {p:?}: use rprivate, private, rshared, shared, rslave or slave"
                        )));
                    }
                }
            }
            MountKind::Volume => {
                if let Some(n) = &m.source {
                    if !valid_name(n) {
                        return Err(invalid(format!("invalid volume name {n:?}")));
                    }
                }
            }
            MountKind::Tmpfs => {
                if m.source.is_some() {
                    return Err(invalid(format!("the tmpfs mount on {t} takes no source")));
                }
                if let Some(sz) = m.options.get("size") {
                    sz.parse::<ByteSize>()
                        .map_err(|e| invalid(format!("tmpfs size: {e}")))?;
                }
                if let Some(mode) = m.options.get("mode") {
                    u32::from_str_radix(mode, 8).map_err(|_| {
                        invalid(format!("tmpfs mode {mode:?} must be octal, e.g. 1777"))
                    })?;
                }
            }
        }
        m.options.remove("create_host_path");
        out.push(m);
    }
    if let Some(vols) = img["Volumes"].as_object() {
        for t in vols.keys() {
            if t.starts_with('/')
                && !out
                    .iter()
                    .any(|o| o.target.trim_end_matches('/') == t.trim_end_matches('/'))
            {
                out.push(MountSpec {
                    kind: MountKind::Volume,
                    source: None,
                    target: t.clone(),
                    ..Default::default()
                });
            }
        }
    }
    // Parents before children.
    out.sort_by_key(|m| m.target.trim_end_matches('/').matches('/').count());
    Ok(out)
}

/// Checks a create request before anything is made.
fn validate(req: &ContainerCreate) -> EngineResult<()> {
    log_limits(&req.log_opts)?;
    pier_api::containers::IdMap::check_all(&req.uid_maps, "--uidmap").map_err(invalid)?;
    pier_api::containers::IdMap::check_all(&req.gid_maps, "--gidmap").map_err(invalid)?;
    if req.uid_maps.is_empty() && !req.gid_maps.is_empty() {
        return Err(invalid("--gidmap needs --uidmap as well"));
    }
    if !req.uid_maps.is_empty() {
        if req.privileged {
            return Err(invalid("--privileged gives the host's devices and kernel settings, which a user namespace cannot: use one or the other"));
        }
        if req.runtime.as_deref() == Some("runc") {
            return Err(invalid("--uidmap is not available with --runtime runc: Pier maps the image's files with idmapped mounts, which this runc does not do"));
        }
        if !req.uid_maps.iter().any(|m| m.container_id == 0) {
            return Err(invalid(
                "--uidmap must map the container's root (ID 0), e.g. 0:100000:65536",
            ));
        }
    }
    if let Some(n) = &req.name {
        if !valid_name(n) {
            return Err(invalid(format!("invalid container name {n:?}: use letters, digits, '_', '.' and '-', starting with a letter or digit")));
        }
    }
    let host_cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    pier_api::limits::check_resources(req, host_cpus).map_err(invalid)?;
    pier_api::limits::check_record_size(req)
        .map_err(|m| EngineError::new(ErrorKind::TooLarge, m))?;
    for u in &req.ulimits {
        let Some((_, res)) = ulimit_resource(&u.name) else {
            return Err(invalid(format!(
                "unknown ulimit {:?}; use nofile, nproc, core, stack, memlock, ...",
                u.name
            )));
        };
        if u.soft > u.hard {
            return Err(invalid(format!(
                "ulimit {}: the soft limit {} is above the hard limit {}",
                u.name, u.soft, u.hard
            )));
        }
        let host = host_hard_limit(res);
        if u.hard > host {
            return Err(invalid(format!(
                "ulimit {}={}:{} is above this host's hard limit of {host}; ask for at most {host}",
                u.name, u.soft, u.hard
            )));
        }
    }
    for c in req.cap_add.iter().chain(&req.cap_drop) {
        if spec::normalize_cap(c).is_none() {
            return Err(invalid(format!("unknown capability {c:?}")));
        }
    }
    match req.runtime.as_deref() {
        None | Some("pier") => {}
        Some("runc") => {
            let found = std::env::var_os("PATH")
                .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join("runc").is_file()));
            if !found {
                return Err(invalid(
                    "runc is not installed on this host: apt-get install runc",
                ));
            }
            if req.init {
                return Err(invalid(
                    "--init is Pier's own runtime's: it cannot be combined with --runtime runc",
                ));
            }
            if req.tty || req.interactive {
                return Err(invalid(
                    "-i and -t are not available with --runtime runc yet; use Pier's runtime",
                ));
            }
        }
        Some(other) => {
            return Err(invalid(format!(
                "unknown runtime {other:?}: use pier or runc"
            )))
        }
    }
    for h in &req.extra_hosts {
        let ok = h
            .split_once(':')
            .is_some_and(|(n, ip)| !n.is_empty() && ip.parse::<std::net::IpAddr>().is_ok());
        if !ok {
            return Err(invalid(format!(
                "invalid --add-host {h:?}: use NAME:IP, e.g. db:10.0.0.5"
            )));
        }
    }
    for d in &req.dns {
        if d.parse::<std::net::IpAddr>().is_err() {
            return Err(invalid(format!("--dns {d:?} is not an IP address")));
        }
    }
    for o in &req.security_opt {
        let ok = matches!(
            o.as_str(),
            "no-new-privileges"
                | "no-new-privileges:true"
                | "no-new-privileges=true"
                | "no-new-privileges:false"
        ) || o.starts_with("seccomp=")
            || o.starts_with("seccomp:");
        if !ok {
            return Err(invalid(format!("unsupported --security-opt {o:?}: use no-new-privileges or seccomp=unconfined|PROFILE")));
        }
        if let Some(p) = o
            .strip_prefix("seccomp=")
            .or_else(|| o.strip_prefix("seccomp:"))
            .filter(|p| *p != "unconfined")
        {
            serde_json::from_str::<pier_runtime::seccomp::Profile>(p)
                .map_err(|e| invalid(format!("the seccomp profile is not valid: {e}")))?;
        }
    }
    Ok(())
}

fn mounted(path: &Path) -> bool {
    let p = path.to_string_lossy();
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .any(|l| l.split(' ').nth(4) == Some(&p))
}

/// Checks that an unprivileged user can reach `dir`: every directory above it must let
/// others search it.
fn searchable_by_others(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    for p in dir.ancestors().skip(1) {
        let mode = fs::metadata(p)?.permissions().mode();
        if mode & 0o001 == 0 {
            return Err(std::io::Error::other(format!(
                "{} is not searchable by other users, which the container's root is on the host; allow it with chmod o+x {}",
                p.display(),
                p.display()
            )));
        }
    }
    Ok(())
}

pub(crate) fn unmount(path: &Path) {
    while mounted(path) {
        if rustix::mount::unmount(path, rustix::mount::UnmountFlags::DETACH).is_err() {
            break;
        }
    }
}

impl Containers {
    pub fn new(
        root: &Path,
        db: Arc<dyn Store>,
        peers: Peers,
        cgroups: pier_runtime::cgroups::Host,
        cgroup_parent: String,
    ) -> std::io::Result<Arc<Self>> {
        let Peers {
            images,
            networks,
            volumes,
            projects,
        } = peers;
        let dir = root.join("containers");
        fs::create_dir_all(&dir)?;
        fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o711))?;
        let trash = root.join("trash");
        fs::create_dir_all(&trash)?;
        let (events, _) = broadcast::channel(1024);
        // What `pier exec` and the zygote run: a sealed copy of this binary, never the
        // host's file (see pier_runtime::sealed); made once, while the daemon starts up.
        pier_runtime::sealed::prepare_in_background();
        Ok(Arc::new(Containers {
            dir,
            trash,
            db,
            images,
            watchers: Mutex::new(HashMap::new()),
            locks: Mutex::new(HashMap::new()),
            events,
            execs: Default::default(),
            attached: Default::default(),
            log_watch: Default::default(),
            reserved_names: Mutex::new(std::collections::HashSet::new()),
            zygote: pier_runtime::zygote::Zygote::new(),
            seccomp_cache: Mutex::new(HashMap::new()),
            networks,
            volumes,
            projects,
            cgroups,
            cgroup_parent,
        }))
    }

    /// The cgroup path (`cgroupsPath`) of container `id`.
    pub(crate) fn cgroup_path(&self, id: &str) -> String {
        pier_runtime::cgroups::path_for(&self.cgroup_parent, id)
    }

    /// Removes the containers' cgroup parent, in every hierarchy (runc, for one, also
    /// makes it in a hybrid host's unified one), where no container's cgroup is left in it.
    pub fn remove_cgroup_parent(&self) {
        let mut dirs: Vec<PathBuf> = Cgroup::at(&self.cgroup_parent)
            .dirs
            .into_iter()
            .map(|(_, d)| d)
            .collect();
        if let Ok(hierarchies) = fs::read_dir("/sys/fs/cgroup") {
            dirs.extend(
                hierarchies
                    .flatten()
                    .map(|h| h.path().join(&self.cgroup_parent)),
            );
        }
        for d in dirs {
            let _ = fs::remove_dir(d);
        }
    }

    /// Kills every process left in container `id`'s cgroup and waits for it to be empty:
    /// what runs there without a live monitor is watched by nobody.
    fn kill_leftovers(&self, id: &str) {
        let left = pier_runtime::reap::kill_all(&self.cgroup(id), Duration::from_secs(10));
        if !left.is_empty() {
            tracing::error!(container = %id, pids = ?left, "processes in the container's cgroup survived SIGKILL");
        }
    }

    /// The cgroup of container `id`.
    pub(crate) fn cgroup(&self, id: &str) -> Cgroup {
        Cgroup::at(&self.cgroup_path(id))
    }

    pub fn cdir(&self, id: &str) -> PathBuf {
        self.dir.join(id)
    }

    /// Reserves a container name until the guard drops (by then the record holds it).
    /// `except` is a container allowed to hold the name already (a rename to itself).
    fn reserve_name(
        &self,
        project: &ProjectName,
        name: &str,
        except: Option<&str>,
    ) -> EngineResult<NameReservation<'_>> {
        let key = format!("{project}/{name}");
        let mut reserved = self.reserved_names.lock().unwrap();
        let taken = reserved.contains(&key)
            || self
                .all(project)?
                .iter()
                .any(|c| c.name == name && Some(c.id.as_str()) != except);
        if taken {
            return Err(conflict(format!("the container name {name:?} is already in use; remove that container or choose another name")));
        }
        reserved.insert(key.clone());
        Ok(NameReservation {
            set: &self.reserved_names,
            key,
        })
    }

    pub(crate) fn lock(&self, id: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.locks
            .lock()
            .unwrap()
            .entry(id.to_string())
            .or_default()
            .clone()
    }

    pub(crate) fn emit(&self, c: &ContainerInspect, action: &str, extra: &[(&str, String)]) {
        let mut attributes = BTreeMap::from([
            ("name".to_string(), c.name.clone()),
            ("image".to_string(), c.image.clone()),
        ]);
        for (k, v) in extra {
            attributes.insert(k.to_string(), v.clone());
        }
        let _ = self.events.send(EngineEvent {
            project: c.project.clone(),
            event: Event {
                time: format_rfc3339_nanos(std::time::SystemTime::now()),
                kind: "container".into(),
                action: action.into(),
                id: c.id.clone(),
                attributes,
            },
        });
    }

    fn save(&self, c: &ContainerInspect) -> EngineResult<()> {
        self.save_with(c, true)
    }

    /// Saves a record; `durable` false for a state a crash may lose because the
    /// monitor's files say it again at the next start (a start: `state.json`; see
    /// [`Containers::restore`], which adopts a start the record never heard of).
    fn save_with(&self, c: &ContainerInspect, durable: bool) -> EngineResult<()> {
        self.save_in(Batch::new(), c, durable)
    }

    /// As [`Containers::save_with`], and the pin of the container's image in the same
    /// transaction: a container that has a record has its image pinned.
    fn save_pinned(&self, c: &ContainerInspect, durable: bool) -> EngineResult<()> {
        let mut b = Batch::new();
        let holder = pier_image::store::container_holder(&c.id);
        self.images
            .pin_for(&mut b, &c.project, &c.image_id, &holder);
        self.save_in(b, c, durable)
    }

    /// Saves a record along with what `b` already holds, in one transaction.
    fn save_in(&self, mut b: Batch, c: &ContainerInspect, durable: bool) -> EngineResult<()> {
        b.put_json(Table::Containers, key(&c.project, &c.id), &Record::from(c));
        if durable {
            b.commit(self.db.as_ref())?;
        } else {
            b.commit_lazy(self.db.as_ref())?;
        }
        if let Some(w) = self.watchers.lock().unwrap().get(&c.id) {
            w.send_replace(c.state.clone());
        }
        Ok(())
    }

    fn all(&self, project: &ProjectName) -> EngineResult<Vec<ContainerInspect>> {
        Ok(self
            .db
            .list_json::<Record>(Table::Containers, &format!("{project}/"))?
            .into_iter()
            .map(|(_, r)| r.0)
            .collect())
    }

    /// Finds a container by full ID, name, or unique ID prefix.
    pub fn get(&self, project: &ProjectName, name_or_id: &str) -> EngineResult<ContainerInspect> {
        if let Some(r) = self
            .db
            .get_json::<Record>(Table::Containers, &key(project, name_or_id))?
        {
            return Ok(r.0);
        }
        let all = self.all(project)?;
        let name = name_or_id.trim_start_matches('/');
        if let Some(c) = all.iter().find(|c| c.name == name) {
            return Ok(c.clone());
        }
        let matches: Vec<_> = all
            .into_iter()
            .filter(|c| !name_or_id.is_empty() && c.id.starts_with(name_or_id))
            .collect();
        match matches.len() {
            1 => Ok(matches.into_iter().next().expect("one")),
            0 => Err(EngineError::new(
                ErrorKind::NotFound,
                format!("no such container: {name_or_id}; `pier ps -a` lists them"),
            )),
            _ => Err(invalid(format!(
                "container ID prefix {name_or_id:?} matches several containers; give more of it"
            ))),
        }
    }

    // ---- create ------------------------------------------------------------------------

    pub fn create(&self, project: &ProjectName, req: ContainerCreate) -> EngineResult<Created> {
        let t0 = std::time::Instant::now();
        validate(&req)?;
        // Pinned in memory until the record and its durable pin are written: no removal
        // can take the image in between.
        let (image, _pin) = self.images.resolve_pinned(project, &req.image)?;
        let name = req.name.clone().unwrap_or_default();
        // Names are checked and reserved at once, so two creates cannot both take one.
        let _reservation = if name.is_empty() {
            None
        } else {
            Some(self.reserve_name(project, &name, None)?)
        };
        let networks = self.networks.endpoints_for_create(project, &req)?;
        if let Some(other) = req
            .network
            .as_deref()
            .and_then(|m| m.strip_prefix("container:"))
        {
            self.get(project, other)?;
        }
        let id = random_id();
        let name = if name.is_empty() {
            random_name(&id)
        } else {
            name
        };
        let config = self.images.config(&image)?;
        let img = config.get("config").cloned().unwrap_or_default();
        let command = command_of(&req, &img);
        let mounts = plan_mounts(&req, &img)?;
        let layer_limit = layer_limit(&req)?;
        if command.is_empty() {
            return Err(invalid(
                "no command given and the image has none; give one after the image name",
            ));
        }
        let mut c = ContainerInspect {
            id: id.clone(),
            name,
            project: project.clone(),
            image: req.image.clone(),
            image_id: image.id.clone(),
            created: now_rfc3339(),
            command,
            config: req,
            state: ContainerState::default(),
            log_path: self.cdir(&id).join("container.log").display().to_string(),
            networks,
            ports: Vec::new(),
            mounts,
        };
        // Every step from here on is undone if a later one fails: the volumes made for
        // it, its directory (and the writable layer's filesystem in it), its record.
        let mut made_volumes: Vec<String> = Vec::new();
        let made = self
            .volumes
            .attach(project, &id, &mut c.mounts)
            .map(|made| made_volumes = made)
            .and_then(|()| self.make_files(&c, &img, layer_limit));
        let t_files = t0.elapsed();
        let saved = made.and_then(|()| self.save_new(&c));
        if let Err(e) = saved {
            let dir = self.cdir(&id);
            unmount(&dir.join("rootfs"));
            let _ = pier_storage::ext4::unmount(&dir.join("layer"));
            let _ = fs::remove_dir_all(&dir);
            self.volumes
                .undo_attach(project, &id, &c.mounts, &made_volumes);
            return Err(e);
        }
        self.emit(&c, "create", &[]);
        tracing::debug!(container = %c.id, files_us = t_files.as_micros() as u64, total_us = t0.elapsed().as_micros() as u64, "created");
        Ok(Created {
            id: ContainerId::try_from(c.id).map_err(|e| internal(e.to_string()))?,
            name: c.name,
        })
    }

    /// Writes a new container's record (and its image's pin). A `--rm` container's
    /// record is written without waiting for the disk: a crash may lose it, and its
    /// directory keeps a copy from which `restore` adopts it if it runs; if it does not,
    /// nothing is lost, as it would be removed. Others wait.
    fn save_new(&self, c: &ContainerInspect) -> EngineResult<()> {
        if c.config.auto_remove {
            write_json(&self.cdir(&c.id).join(RECORD_COPY), &Record::from(c))
                .map_err(|e| internal(format!("cannot write {RECORD_COPY}: {e}")))?;
        }
        self.save_pinned(c, !c.config.auto_remove)
    }

    /// Makes the container's directory: the overlay's directories (the writable layer
    /// on a filesystem of its own with `--storage-opt size`), the log, and the bundle.
    fn make_files(
        &self,
        c: &ContainerInspect,
        img: &serde_json::Value,
        layer_limit: Option<u64>,
    ) -> EngineResult<()> {
        let dir = self.cdir(&c.id);
        for d in ["rootfs", "upper", "work"] {
            fs::create_dir_all(dir.join(d))
                .map_err(|e| internal(format!("cannot create {}: {e}", dir.display())))?;
        }
        dir_permissions(&dir, c)
            .map_err(|e| invalid(format!("cannot run in a user namespace: {e}")))?;
        if let Some(limit) = layer_limit {
            make_layer_fs(&dir, limit)?;
        }
        // Exists from the start, so a client following it holds the same file the
        // monitor appends to.
        fs::File::create(dir.join("container.log"))
            .map_err(|e| internal(format!("cannot create the log: {e}")))?;
        // The user is looked up in the image's /etc/passwd and /etc/group, read from
        // the layers; only when a symlink is on the way is the rootfs mounted.
        let image = self.images.resolve(&c.project, c.image_id.as_str())?;
        let layers: Vec<PathBuf> = image
            .layers
            .iter()
            .rev()
            .map(|l| self.images.layer_dir(&l.diff_id))
            .collect();
        let lookups = [
            pier_runtime::rootfs::find_in_layers(&layers, "etc/passwd"),
            pier_runtime::rootfs::find_in_layers(&layers, "etc/group"),
        ];
        if lookups.contains(&pier_runtime::rootfs::Layered::NeedsMount) {
            self.mount_rootfs(c)?;
            let rootfs = dir.join("rootfs");
            let r = self.write_bundle(c, img, &|u: &str| {
                pier_runtime::rootfs::resolve_user(&rootfs, u)
            });
            unmount(&rootfs);
            return r;
        }
        let read = |l: &pier_runtime::rootfs::Layered| match l {
            pier_runtime::rootfs::Layered::File(p) => fs::read(p).unwrap_or_default(),
            _ => Vec::new(),
        };
        let (passwd, group) = (read(&lookups[0]), read(&lookups[1]));
        self.write_bundle(c, img, &|u: &str| {
            pier_runtime::rootfs::resolve_user_from(&passwd, &group, u)
        })
    }

    /// Attaches the container's block volumes (their filesystems mounted, or their
    /// devices made available) and lets the container's cgroup use those devices.
    fn prepare_block_volumes(&self, c: &ContainerInspect) -> EngineResult<()> {
        let minors = self.volumes.attach_block(&c.project, &c.mounts)?;
        if minors.is_empty() {
            return Ok(());
        }
        let path = self.cdir(&c.id).join("config.json");
        let mut spec: serde_json::Value = serde_json::from_slice(
            &fs::read(&path).map_err(|e| internal(format!("cannot read config.json: {e}")))?,
        )
        .map_err(|e| internal(format!("config.json: {e}")))?;
        let devices = &mut spec["linux"]["resources"]["devices"];
        if !devices.is_array() {
            *devices = serde_json::json!([]);
        }
        let list = devices.as_array_mut().expect("an array");
        // Rules of an earlier start are replaced, not stacked.
        list.retain(|d| d["major"] != 7);
        for minor in minors {
            list.push(serde_json::json!({"allow": true, "type": "b", "major": 7, "minor": minor, "access": "rwm"}));
        }
        fs::write(&path, serde_json::to_vec(&spec).expect("json"))
            .map_err(|e| internal(format!("cannot write config.json: {e}")))
    }

    /// Releases block volumes of `c` that no other running container uses.
    fn release_block_volumes(&self, c: &ContainerInspect) {
        for m in c.mounts.iter().filter(|m| m.options.contains_key("block")) {
            let Some(name) = m.source.as_deref() else {
                continue;
            };
            let others = self
                .running_users(&c.project, name)
                .map(|u| u.iter().any(|o| o.id != c.id))
                .unwrap_or(true);
            if !others {
                self.volumes.release(&c.project, name);
            }
        }
    }

    /// Fills each empty volume with what the image has at its mount point, as Docker
    /// does on a volume's first use (not with the `nocopy` option). Both sides are
    /// reached through descriptors ([`pier_runtime::in_root`]): the mount point is
    /// resolved inside the container's root, and neither the image's tree nor the volume
    /// (which another running container may share) is ever followed through a symlink.
    fn copy_up(&self, c: &ContainerInspect) -> EngineResult<()> {
        use rustix::fs::{Mode, OFlags};
        let rootfs = self.cdir(&c.id).join("rootfs");
        let mut root = None;
        for m in &c.mounts {
            let (MountKind::Volume, Some(name)) = (m.kind, m.source.as_deref()) else {
                continue;
            };
            if m.options.contains_key("nocopy") || m.options.contains_key("block") {
                continue;
            }
            let data = self.volumes.mountpoint(&c.project, name);
            if !pier_storage::tree::is_empty(&data) {
                continue;
            }
            let fail = |e: std::io::Error| {
                internal(format!(
                    "cannot copy the image's {} into volume {name}: {e}",
                    m.target
                ))
            };
            if root.is_none() {
                root = Some(pier_runtime::in_root::InRoot::open(&rootfs).map_err(fail)?);
            }
            let root = root.as_ref().expect("opened above");
            let src = match root.open_path(Path::new(&m.target), OFlags::PATH | OFlags::DIRECTORY) {
                Ok(fd) => fd,
                // Nothing there, or not a directory: nothing to copy.
                Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT) | Some(libc::ENOTDIR)) => {
                    continue
                }
                Err(e) => return Err(fail(e)),
            };
            let dest = rustix::fs::openat(
                rustix::fs::CWD,
                &data,
                OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(|e| fail(e.into()))?;
            pier_runtime::in_root::copy_tree(std::os::fd::AsFd::as_fd(&src), dest).map_err(fail)?;
        }
        Ok(())
    }

    /// A seccomp profile compiled to BPF: each distinct profile once (most containers
    /// share Docker's default, resolved for the default capabilities).
    fn compiled_seccomp(
        &self,
        profile: &oci_spec::runtime::LinuxSeccomp,
    ) -> EngineResult<Arc<Vec<u8>>> {
        let json =
            serde_json::to_value(profile).map_err(|e| internal(format!("seccomp profile: {e}")))?;
        let key = json.to_string();
        let mut cache = self.seccomp_cache.lock().unwrap();
        if let Some(b) = cache.get(&key) {
            return Ok(b.clone());
        }
        let filter = pier_runtime::seccomp::compile(&json)
            .map_err(|e| invalid(format!("the seccomp profile cannot be used: {e}")))?;
        let bytes = Arc::new(pier_runtime::seccomp::to_bytes(&filter));
        if cache.len() >= 64 {
            cache.clear();
        }
        cache.insert(key, bytes.clone());
        Ok(bytes)
    }

    /// The directories of a container's overlay rootfs.
    fn overlay_dirs(&self, c: &ContainerInspect) -> EngineResult<pier_runtime::state::OverlayDirs> {
        let dir = self.cdir(&c.id);
        let image = self.images.resolve(&c.project, c.image_id.as_str())?;
        // An image may hold one layer twice (two build steps that changed the same
        // nothing): overlayfs refuses a directory twice (ELOOP), and the upper copy hides
        // the lower one anyway, so only the upper one is kept.
        let mut seen = std::collections::HashSet::new();
        let lower = image
            .layers
            .iter()
            .rev()
            .map(|l| self.images.layer_dir(&l.diff_id))
            .filter(|d| seen.insert(d.clone()))
            .collect();
        Ok(pier_runtime::state::OverlayDirs {
            lower,
            upper: dir.join("upper"),
            work: dir.join("work"),
            // What a `--rm` container writes goes with it: overlayfs need not sync it to
            // disk, which it would do at every unmount (a sync of the whole filesystem
            // under it, about a millisecond here). Not in a user namespace: overlayfs
            // refuses it over ID-mapped layers, and a volatile mount leaves a mark in the
            // work directory that a mount without it refuses.
            volatile: c.config.auto_remove && c.config.uid_maps.is_empty(),
        })
    }

    pub(crate) fn mount_rootfs(&self, c: &ContainerInspect) -> EngineResult<()> {
        let dir = self.cdir(&c.id);
        let rootfs = dir.join("rootfs");
        if mounted(&rootfs) {
            return Ok(());
        }
        let dirs = self.overlay_dirs(c)?;
        let lowers: Vec<String> = dirs.lower.iter().map(|d| d.display().to_string()).collect();
        let data = format!(
            "lowerdir={},upperdir={},workdir={}{}",
            lowers.join(":"),
            dirs.upper.display(),
            dirs.work.display(),
            if dirs.volatile { ",volatile" } else { "" }
        );
        rustix::mount::mount(
            "overlay",
            &rootfs,
            "overlay",
            rustix::mount::MountFlags::empty(),
            Some(std::ffi::CString::new(data).expect("no NUL").as_c_str()),
        )
        .map_err(|e| {
            internal(format!(
                "cannot mount the container's rootfs (overlay): {e}"
            ))
        })
    }

    fn write_bundle(
        &self,
        c: &ContainerInspect,
        img: &serde_json::Value,
        users: &UserLookup<'_>,
    ) -> EngineResult<()> {
        let dir = self.cdir(&c.id);
        let req = &c.config;
        let rootfs = dir.join("rootfs");
        let user = req
            .user
            .clone()
            .or_else(|| image_str(img, "User"))
            .unwrap_or_else(|| "0".into());
        let (uid, gid, additional_gids) = users(&user).map_err(|e| invalid(e.to_string()))?;
        let hostname = req
            .hostname
            .clone()
            .unwrap_or_else(|| c.id[..12].to_string());
        let env = process_env(req, img, uid, &hostname);
        let cwd = workdir_of(req, img)?;
        let net = match req.network.as_deref() {
            Some("host") => NetMode::Host,
            Some("none") => NetMode::None,
            // Bridge networks and `container:`: a namespace file made at each start.
            _ => NetMode::Path(self.networks.netns_path(&c.id).display().to_string()),
        };
        let mut mounts = etc_files(&dir, &net, &hostname)?;
        for m in &c.mounts {
            mounts.push(self.mount_entry(c, m)?);
        }
        let no_new_privs = req
            .security_opt
            .iter()
            .any(|o| o.starts_with("no-new-privileges") && !o.ends_with("false"));
        let seccomp = seccomp_of(req)?;
        let input = SpecInput {
            args: c.command.clone(),
            env,
            cwd,
            uid,
            gid,
            additional_gids,
            hostname,
            rootfs: rootfs.display().to_string(),
            readonly_rootfs: req.read_only,
            privileged: req.privileged,
            cap_add: req
                .cap_add
                .iter()
                .filter_map(|c| spec::normalize_cap(c))
                .collect(),
            cap_drop: req
                .cap_drop
                .iter()
                .filter_map(|c| spec::normalize_cap(c))
                .collect(),
            no_new_privileges: no_new_privs,
            rlimits: req
                .ulimits
                .iter()
                .filter_map(|u| {
                    ulimit_resource(&u.name).map(|(k, _)| Rlimit {
                        kind: k.into(),
                        soft: u.soft,
                        hard: u.hard,
                    })
                })
                .collect(),
            net: Some(net),
            memory: req.memory,
            memory_swap: req.memory_swap,
            cpu_quota: req.cpus.map(|c| (c * 100_000.0) as i64),
            cpu_period: req.cpus.map(|_| 100_000),
            // 0 is the default weight, not the smallest one.
            cpu_shares: req.cpu_shares.filter(|s| *s > 0).map(|s| s as u64),
            cpuset_cpus: req.cpuset_cpus.clone(),
            pids_limit: req.pids_limit,
            blkio_weight: req.blkio_weight,
            shm_size: pier_api::limits::shm_size(req),
            terminal: req.tty,
            mounts,
            cgroups_path: self.cgroup_path(&c.id),
            seccomp: None,
            init: req.init,
            uid_maps: req.uid_maps.clone(),
            gid_maps: req.gid_maps.clone(),
        };
        // Resolved against the capabilities the container ends up with.
        let caps = spec::capabilities(&input);
        let input = SpecInput {
            seccomp: seccomp.map(|p| pier_runtime::seccomp::resolve(&p, &caps)),
            ..input
        };
        let spec = spec::build(&input)
            .map_err(|e| internal(format!("the runtime spec is invalid: {e}")))?;
        // A limit this host cannot apply is refused now, not dropped at the start.
        if let Some(r) = spec.linux().as_ref().and_then(|l| l.resources().as_ref()) {
            self.cgroups.check(r).map_err(|e| invalid(e.to_string()))?;
        }
        spec.save(dir.join("config.json"))
            .map_err(|e| internal(format!("cannot write config.json: {e}")))?;
        if let Some(profile) = spec.linux().as_ref().and_then(|l| l.seccomp().as_ref()) {
            let bpf = self.compiled_seccomp(profile)?;
            fs::write(dir.join(pier_runtime::seccomp::COMPILED), &*bpf).map_err(|e| {
                internal(format!(
                    "cannot write {}: {e}",
                    pier_runtime::seccomp::COMPILED
                ))
            })?;
        }
        self.write_monitor_config(c)
    }

    /// The monitor's `monitor.json`: logs, runtime, terminal and stdin, the overlay it
    /// mounts for a container in a user namespace.
    fn write_monitor_config(&self, c: &ContainerInspect) -> EngineResult<()> {
        let req = &c.config;
        let (log_max_bytes, log_max_files) = log_limits(&req.log_opts)?;
        let monitor = MonitorConfig {
            id: c.id.clone(),
            log_max_bytes,
            log_max_files,
            runtime: req.runtime.clone().unwrap_or_else(|| "pier".into()),
            tty: req.tty,
            stdin: req.interactive,
            hold_for_attach: req.attach,
            overlay: if req.uid_maps.is_empty() {
                None
            } else {
                Some(self.overlay_dirs(c)?)
            },
        };
        write_json(&self.cdir(&c.id).join("monitor.json"), &monitor)
            .map_err(|e| internal(format!("cannot write monitor.json: {e}")))
    }

    /// The runtime spec's entry of one of the container's mounts.
    fn mount_entry(&self, c: &ContainerInspect, m: &MountSpec) -> EngineResult<serde_json::Value> {
        let mut options: Vec<String> = Vec::new();
        let entry = match m.kind {
            MountKind::Tmpfs => {
                options.extend(["nosuid".to_string(), "nodev".to_string()]);
                if let Some(sz) = m.options.get("size") {
                    let n = sz.parse::<ByteSize>().map_err(|e| invalid(e.to_string()))?;
                    options.push(format!("size={n}"));
                }
                options.push(format!(
                    "mode={}",
                    m.options.get("mode").map(String::as_str).unwrap_or("1777")
                ));
                if m.read_only {
                    options.push("ro".into());
                }
                serde_json::json!({"destination": m.target, "type": "tmpfs", "source": "tmpfs", "options": options})
            }
            MountKind::Volume if m.options.get("block").map(String::as_str) == Some("device") => {
                let node = self
                    .volumes
                    .device_node(&c.project, m.source.as_deref().unwrap_or_default());
                options.extend(["bind".to_string(), "rprivate".to_string()]);
                if m.read_only {
                    options.push("ro".into());
                }
                serde_json::json!({"destination": m.target, "type": "bind", "source": node, "options": options})
            }
            MountKind::Bind | MountKind::Volume => {
                let source = match m.kind {
                    MountKind::Bind => PathBuf::from(m.source.clone().unwrap_or_default()),
                    _ => self
                        .volumes
                        .mountpoint(&c.project, m.source.as_deref().unwrap_or_default()),
                };
                options.push("rbind".into());
                options.push(
                    m.options
                        .get("propagation")
                        .cloned()
                        .unwrap_or_else(|| "rprivate".into()),
                );
                if m.read_only {
                    options.push("ro".into());
                }
                serde_json::json!({"destination": m.target, "type": "bind", "source": source, "options": options})
            }
        };
        Ok(entry)
    }

    // ---- start and exit ----------------------------------------------------------------

    pub async fn start(
        self: &Arc<Self>,
        project: &ProjectName,
        name: &str,
    ) -> EngineResult<ContainerInspect> {
        let c = self.get(project, name)?;
        let lock = self.lock(&c.id);
        let _g = lock.lock().await;
        let mut c = self.get(project, &c.id)?;
        match c.state.status {
            ContainerStatus::Running | ContainerStatus::Paused => return Ok(c),
            ContainerStatus::Removing => {
                return Err(conflict(format!("container {} is being removed", c.name)))
            }
            _ => {}
        }
        c.state.stopped_by_user = false;
        self.start_locked(c).await
    }

    /// Networking of a container about to start: interfaces, ports, and its
    /// /etc/hosts and /etc/resolv.conf. Fills in `c.networks` and `c.ports`.
    async fn setup_network(&self, c: &mut ContainerInspect) -> EngineResult<()> {
        let mode = c
            .config
            .network
            .clone()
            .unwrap_or_else(|| DEFAULT_NETWORK.into());
        if mode == "host" || mode == "none" {
            return Ok(());
        }
        let dir = self.cdir(&c.id);
        let write = |name: &str, text: String| {
            fs::write(dir.join(name), text)
                .map_err(|e| internal(format!("cannot write the container's {name}: {e}")))
        };
        if let Some(other) = mode.strip_prefix("container:") {
            let o = self.get(&c.project, other)?;
            let pid = match (o.state.status, o.state.pid) {
                (ContainerStatus::Running | ContainerStatus::Paused, Some(pid)) => pid,
                _ => {
                    return Err(conflict(format!(
                        "cannot join the network of container {}: it is not running",
                        o.name
                    )))
                }
            };
            let theirs = self.networks.netns_path(&o.id);
            let src = if theirs.exists() {
                theirs
            } else {
                PathBuf::from(format!("/proc/{pid}/ns/net"))
            };
            self.networks.attach(c, &[], Some(src)).await?;
            let odir = self.cdir(&o.id);
            for f in ["hosts", "resolv.conf"] {
                let text = fs::read_to_string(odir.join(f)).unwrap_or_default();
                write(f, text)?;
            }
            return Ok(());
        }
        // The image's exposed ports and `--expose`, for `-P`.
        let mut exposed_specs: Vec<String> = self
            .images
            .resolve(&c.project, c.image_id.as_str())
            .and_then(|i| self.images.config(&i))
            .ok()
            .and_then(|cfg| cfg["config"]["ExposedPorts"].as_object().cloned())
            .map(|ports| ports.keys().cloned().collect())
            .unwrap_or_default();
        exposed_specs.extend(c.config.expose.iter().cloned());
        let exposed: Vec<(u16, pier_net::nft::Proto)> = exposed_specs
            .iter()
            .filter_map(|k| {
                let (p, proto) = k.split_once('/').unwrap_or((k, "tcp"));
                let proto = match proto {
                    "udp" => pier_net::nft::Proto::Udp,
                    _ => pier_net::nft::Proto::Tcp,
                };
                Some((p.parse().ok()?, proto))
            })
            .collect();
        let attached = self.networks.attach(c, &exposed, None).await?;
        let first_ip = attached
            .endpoints
            .get(c.config.network.as_deref().unwrap_or(DEFAULT_NETWORK))
            .and_then(|e| e.ip_address.map(|ip| ip.to_string()));
        for (name, ep) in attached.endpoints {
            c.networks.insert(name, ep);
        }
        c.ports = attached.ports;
        let first = self.networks.get(&c.project, &mode).ok();
        let r = (|| {
            write("resolv.conf", self.networks.resolv_conf(c, first.as_ref()))?;
            let hostname = c
                .config
                .hostname
                .clone()
                .unwrap_or_else(|| c.id[..12].to_string());
            let mut hosts =
                String::from("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n");
            hosts.push_str(&format!(
                "{}\t{hostname}\n",
                first_ip.as_deref().unwrap_or("127.0.1.1")
            ));
            for h in &c.config.extra_hosts {
                if let Some((name, ip)) = h.split_once(':') {
                    hosts.push_str(&format!("{ip}\t{name}\n"));
                }
            }
            write("hosts", hosts)
        })();
        if r.is_err() {
            self.teardown_network(c).await;
        }
        r
    }

    /// Undoes [`Self::setup_network`]; the record keeps which networks the container
    /// is on, without addresses.
    async fn teardown_network(&self, c: &mut ContainerInspect) {
        self.networks.detach(c).await;
        for ep in c.networks.values_mut() {
            ep.ip_address = None;
            ep.prefix_len = None;
            ep.gateway = None;
            ep.mac_address = None;
            ep.interface = None;
        }
        c.ports.clear();
    }

    async fn start_locked(
        self: &Arc<Self>,
        mut c: ContainerInspect,
    ) -> EngineResult<ContainerInspect> {
        let dir = self.cdir(&c.id);
        let t0 = std::time::Instant::now();
        if let Err(e) = self.setup_network(&mut c).await {
            c.state.error = Some(e.message().clone());
            self.save(&c)?;
            if c.config.auto_remove {
                // `--rm`: a container that cannot start leaves nothing behind.
                self.remove_locked(&c, true)?;
            }
            return Err(e);
        }
        let this = self.clone();
        let c2 = c.clone();
        let reply = tokio::task::spawn_blocking(move || -> EngineResult<Answer> {
            this.mount_rootfs(&c2)?;
            this.prepare_block_volumes(&c2)?;
            this.copy_up(&c2)?;
            for f in ["state.json", "exit.json"] {
                let _ = fs::remove_file(dir.join(f));
            }
            // The monitor's command line is what `ps` shows inside the container under
            // `--init`: no host path in it. It finds its directory as its working one.
            this.zygote
                .start_monitor(&dir)
                .map_err(|e| internal(format!("cannot start the monitor: {e}")))
        })
        .await;
        let reply = match reply.map_err(EngineError::from).and_then(|r| r) {
            Ok(r) => r,
            Err(e) => {
                self.teardown_network(&mut c).await;
                return Err(e);
            }
        };
        let t_monitor = t0.elapsed();
        if let Answer::Started { pid } = reply {
            let running: Option<Running> = read_json(&self.cdir(&c.id).join("state.json"));
            c.state = ContainerState {
                status: ContainerStatus::Running,
                pid: Some(pid),
                monitor_pid: running.as_ref().map(|r| r.monitor_pid),
                exit_code: None,
                error: None,
                oom_killed: false,
                started_at: Some(running.map(|r| r.started_at).unwrap_or_else(now_rfc3339)),
                finished_at: None,
                restart_count: c.state.restart_count,
                stopped_by_user: false,
                health: None,
            };
            self.save_with(&c, false)?;
            self.emit(&c, "start", &[]);
            self.watch_exit(&c);
            tracing::debug!(container = %c.id, monitor_us = t_monitor.as_micros() as u64, total_us = t0.elapsed().as_micros() as u64, "started");
            return Ok(c);
        }
        let Answer::Failed(failure) = reply else {
            unreachable!("a started container returned above")
        };
        // The container did not start: nothing of it may stay.
        unmount(&self.cdir(&c.id).join("rootfs"));
        self.release_block_volumes(&c);
        self.teardown_network(&mut c).await;
        let (code, msg) = (failure.code, failure.to_string());
        c.state.status = if c.state.started_at.is_some() {
            ContainerStatus::Exited
        } else {
            ContainerStatus::Created
        };
        c.state.exit_code = Some(code);
        c.state.error = Some(msg.clone());
        c.state.finished_at = Some(format_rfc3339_nanos(std::time::SystemTime::now()));
        c.state.pid = None;
        self.save(&c)?;
        if c.config.auto_remove {
            // `--rm`: a container that cannot start leaves nothing behind either.
            self.remove_locked(&c, true)?;
        }
        let kind = match failure.kind {
            StartKind::Invalid => ErrorKind::InvalidInput,
            StartKind::NotFound => ErrorKind::NotFound,
            StartKind::Conflict => ErrorKind::Conflict,
            StartKind::Busy => ErrorKind::Unavailable,
            StartKind::NoSpace => ErrorKind::InsufficientStorage,
            StartKind::Host => ErrorKind::Internal,
        };
        Err(
            EngineError::new(kind, format!("container {} failed to start: {msg}", c.name))
                .with_exit_code(code),
        )
    }

    /// Waits (in a task) for the container's monitor to exit, then records the exit.
    fn watch_exit(self: &Arc<Self>, c: &ContainerInspect) {
        let Some(mpid) = c.state.monitor_pid else {
            return;
        };
        let this = self.clone();
        let (project, id) = (c.project.clone(), c.id.clone());
        tokio::spawn(async move {
            if let Some(pid) = rustix::process::Pid::from_raw(mpid) {
                if let Ok(fd) =
                    rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty())
                {
                    // SAFETY: the AsyncFd owns the pidfd and is the only user of it.
                    let registered = unsafe {
                        tokio::io::unix::AsyncFd::register_with_interest(
                            fd,
                            tokio::io::Interest::READABLE,
                        )
                    };
                    if let Ok(afd) = registered {
                        let _ = afd.readable().await;
                    }
                }
            }
            if let Err(e) = this.on_exit(&project, &id).await {
                tracing::error!(container = %id, error = %e.message(), "recording a container's exit");
            }
        });
    }

    async fn on_exit(self: &Arc<Self>, project: &ProjectName, id: &str) -> EngineResult<()> {
        let t0 = std::time::Instant::now();
        let lock = self.lock(id);
        let g = lock.lock().await;
        let Ok(mut c) = self.get(project, id) else {
            return Ok(());
        };
        if !matches!(
            c.state.status,
            ContainerStatus::Running | ContainerStatus::Paused
        ) {
            return Ok(());
        }
        let dir = self.cdir(id);
        let exit: Exited = read_json(&dir.join("exit.json")).unwrap_or(Exited {
            exit_code: 255,
            finished_at: now_rfc3339(),
            oom_killed: false,
            error: Some("the container's monitor died without recording an exit".into()),
        });
        // A monitor that died without recording an exit may have left the container
        // running: nothing may stay in its cgroup (an empty or absent one costs a read).
        self.kill_leftovers(id);
        unmount(&dir.join("rootfs"));
        let _ = self.cgroup(id).remove();
        self.release_block_volumes(&c);
        c.state.status = ContainerStatus::Exited;
        c.state.pid = None;
        c.state.monitor_pid = None;
        c.state.exit_code = Some(exit.exit_code);
        c.state.oom_killed = exit.oom_killed;
        c.state.error = exit.error;
        c.state.finished_at = Some(exit.finished_at);
        if c.config.auto_remove {
            // Its waiters wait for the removal; nothing to record before.
            self.teardown_network(&mut c).await;
        } else {
            // Waiters hear of the exit first; the network goes after, under the lock.
            self.save(&c)?;
            self.teardown_network(&mut c).await;
            self.save(&c)?;
        }
        if c.state.oom_killed {
            self.emit(&c, "oom", &[]);
        }
        self.emit(&c, "die", &[("exitCode", exit.exit_code.to_string())]);

        if c.config.auto_remove {
            let t_exit = t0.elapsed();
            let removed = self.remove_locked(&c, true);
            drop(g);
            tracing::debug!(container = %id, exit_us = t_exit.as_micros() as u64, total_us = t0.elapsed().as_micros() as u64, "removed after exit");
            return removed;
        }
        let restart = !c.state.stopped_by_user
            && match c.config.restart_policy {
                RestartPolicy::No => false,
                RestartPolicy::Always | RestartPolicy::UnlessStopped => true,
                RestartPolicy::OnFailure { max_retries } => {
                    exit.exit_code != 0 && (max_retries == 0 || c.state.restart_count < max_retries)
                }
            };
        if restart {
            // Back off: 100 ms doubling to a minute; a container that ran 10 s starts afresh.
            let ran = c
                .state
                .started_at
                .as_deref()
                .and_then(parse_rfc3339)
                .map_or(0, |s| now_unix() - s);
            if ran >= 10 {
                c.state.restart_count = 0;
            }
            let delay = Duration::from_millis(100u64 << c.state.restart_count.min(9))
                .min(Duration::from_secs(60));
            c.state.restart_count += 1;
            c.state.status = ContainerStatus::Restarting;
            self.save(&c)?;
            drop(g);
            let this = self.clone();
            let (project, id) = (project.clone(), id.to_string());
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                let lock = this.lock(&id);
                let _g = lock.lock().await;
                if let Ok(c) = this.get(&project, &id) {
                    if c.state.status == ContainerStatus::Restarting && !c.state.stopped_by_user {
                        this.emit(&c, "restart", &[]);
                        if let Err(e) = this.start_locked(c).await {
                            tracing::warn!(container = %id, error = %e.message(), "restart failed");
                        }
                    }
                }
            });
        }
        Ok(())
    }

    // ---- signals, stop, remove ---------------------------------------------------------

    /// Sends `sig` to the container's init through its monitor, which holds a pidfd of
    /// it: no reused pid can be hit, and no cgroup needs to be found. When no monitor
    /// answers (it died, or an older Pier started it), the pid is signalled if it still
    /// sits in the container's cgroup.
    fn signal(&self, c: &ContainerInspect, sig: i32) -> EngineResult<()> {
        use pier_runtime::attach::SignalError;
        let Some(pid) = c.state.pid else {
            return Err(conflict(format!("container {} is not running", c.name)));
        };
        match pier_runtime::attach::send_signal(&self.cdir(&c.id), sig) {
            Ok(()) | Err(SignalError::Exited) => return Ok(()),
            Err(SignalError::Refused(e)) => {
                return Err(internal(format!("cannot signal container {}: {e}", c.name)))
            }
            Err(SignalError::NoMonitor(e)) => {
                tracing::debug!(container = %c.id, error = %e, "no monitor answers; signalling the pid")
            }
        }
        let cgroup = fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
        if !cgroup.contains(&self.cgroup_path(&c.id)) {
            return Ok(()); // already gone
        }
        // SAFETY: kill(2) with a checked pid and signal number.
        if unsafe { libc::kill(pid, sig) } < 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::ESRCH) {
                return Err(internal(format!("cannot signal container {}: {e}", c.name)));
            }
        }
        Ok(())
    }

    fn watcher(&self, c: &ContainerInspect) -> watch::Receiver<ContainerState> {
        self.watchers
            .lock()
            .unwrap()
            .entry(c.id.clone())
            .or_insert_with(|| watch::channel(c.state.clone()).0)
            .subscribe()
    }

    /// Waits until the container is no longer running (or `timeout` passes).
    async fn wait_stopped(&self, c: &ContainerInspect, timeout: Option<Duration>) -> bool {
        let mut rx = self.watcher(c);
        let fut = rx
            .wait_for(|s| !matches!(s.status, ContainerStatus::Running | ContainerStatus::Paused));
        match timeout {
            Some(t) => matches!(tokio::time::timeout(t, fut).await, Ok(Ok(_))),
            None => fut.await.is_ok(),
        }
    }

    pub async fn kill(
        &self,
        project: &ProjectName,
        name: &str,
        signal: Option<&str>,
    ) -> EngineResult<()> {
        let mut c = self.get(project, name)?;
        let sig = parse_signal(signal.unwrap_or("KILL"))?;
        if !matches!(
            c.state.status,
            ContainerStatus::Running | ContainerStatus::Paused
        ) {
            return Err(conflict(format!("container {} is not running", c.name)));
        }
        if sig == libc::SIGKILL || sig == libc::SIGTERM {
            c.state.stopped_by_user = true;
            self.save(&c)?;
        }
        if c.state.status == ContainerStatus::Paused {
            let _ = self.cgroup(&c.id).freeze(false);
        }
        self.signal(&c, sig)?;
        self.emit(&c, "kill", &[("signal", sig.to_string())]);
        Ok(())
    }

    pub async fn stop(
        &self,
        project: &ProjectName,
        name: &str,
        t: Option<u64>,
        signal: Option<&str>,
    ) -> EngineResult<()> {
        let mut c = self.get(project, name)?;
        if c.state.status == ContainerStatus::Restarting {
            c.state.stopped_by_user = true;
            c.state.status = ContainerStatus::Exited;
            return self.save(&c);
        }
        if !matches!(
            c.state.status,
            ContainerStatus::Running | ContainerStatus::Paused
        ) {
            return Ok(());
        }
        let sig = parse_signal(&self.stop_signal_of(&c, signal))?;
        let t = t.or(c.config.stop_timeout);
        c.state.stopped_by_user = true;
        self.save(&c)?;
        if c.state.status == ContainerStatus::Paused {
            let _ = self.cgroup(&c.id).freeze(false);
        }
        self.signal(&c, sig)?;
        if !self
            .wait_stopped(&c, Some(Duration::from_secs(t.unwrap_or(10))))
            .await
        {
            self.signal(&c, libc::SIGKILL)?;
            self.wait_stopped(&c, Some(Duration::from_secs(30))).await;
        }
        self.emit(&c, "stop", &[]);
        Ok(())
    }

    pub async fn remove(
        &self,
        project: &ProjectName,
        name: &str,
        force: bool,
        volumes: bool,
    ) -> EngineResult<()> {
        let c = self.get(project, name)?;
        if matches!(
            c.state.status,
            ContainerStatus::Running | ContainerStatus::Paused
        ) {
            if !force {
                return Err(conflict(format!(
                    "container {} is running: stop it first, or remove it with --force",
                    c.name
                )));
            }
            self.kill(project, &c.id, Some("KILL")).await?;
            if !self.wait_stopped(&c, Some(Duration::from_secs(30))).await {
                return Err(EngineError::new(
                    ErrorKind::Unavailable,
                    format!("container {} did not stop; try again", c.name),
                ));
            }
        }
        let lock = self.lock(&c.id);
        let _g = lock.lock().await;
        let Ok(c) = self.get(project, &c.id) else {
            return Ok(());
        };
        self.remove_locked(&c, volumes)
    }

    /// Removes everything of a stopped container; with `volumes`, its anonymous volumes
    /// too (`rm -v`, and `--rm` containers).
    fn remove_locked(&self, c: &ContainerInspect, volumes: bool) -> EngineResult<()> {
        let project = &c.project;
        let dir = self.cdir(&c.id);
        self.kill_leftovers(&c.id);
        unmount(&dir.join("rootfs"));
        unmount(&dir.join("layer"));
        let _ = self.cgroup(&c.id).remove();
        self.discard_dir(&c.id);
        let mut b = Batch::new();
        b.delete(Table::Containers, key(project, &c.id));
        let holder = pier_image::store::container_holder(&c.id);
        self.images.unpin_for(&mut b, project, &c.image_id, &holder);
        if c.config.auto_remove {
            // As at its creation: a crash that loses this leaves a `--rm` container that
            // is not running, which `restore` removes.
            b.commit_lazy(self.db.as_ref())?;
        } else {
            b.commit(self.db.as_ref())?;
        }
        // Its volumes are let go (and its anonymous ones removed) before waiters hear of
        // the removal: `run --rm` returns with them gone.
        self.volumes.detach(project, &c.id, &c.mounts);
        let removed = (|| {
            for m in c
                .mounts
                .iter()
                .filter(|m| volumes && m.kind == MountKind::Volume)
            {
                let Some(name) = m.source.as_deref() else {
                    continue;
                };
                let anonymous = self.volumes.get(project, name).is_ok_and(|v| v.anonymous);
                if anonymous && self.volume_users(project, name)?.is_empty() {
                    self.volumes.remove(project, name)?;
                }
            }
            Ok(())
        })();
        if let Some(w) = self.watchers.lock().unwrap().remove(&c.id) {
            let mut s = c.state.clone();
            s.status = ContainerStatus::Removing;
            w.send_replace(s);
        }
        self.locks.lock().unwrap().remove(&c.id);
        self.emit(c, "destroy", &[]);
        removed
    }

    /// A running `--rm` container whose record a crash lost (it is written lazily): its
    /// directory's copy of the record becomes the record again. Returns whether it was.
    fn adopt_unrecorded(self: &Arc<Self>, dir: &Path) -> EngineResult<bool> {
        let Some(Record(mut c)) = read_json::<Record>(&dir.join(RECORD_COPY)) else {
            return Ok(false);
        };
        let Some(s) = read_json::<Running>(&dir.join("state.json")) else {
            return Ok(false);
        };
        if c.id != dir.file_name().unwrap_or_default().to_string_lossy()
            || !monitor_alive(s.monitor_pid, dir)
        {
            return Ok(false);
        }
        c.state.status = ContainerStatus::Running;
        c.state.pid = Some(s.pid);
        c.state.monitor_pid = Some(s.monitor_pid);
        c.state.started_at = Some(s.started_at);
        self.save_pinned(&c, true)?;
        tracing::info!(container = %c.id, "adopted a running container whose record was lost");
        self.watch_exit(&c);
        Ok(true)
    }

    /// Takes a removed container's directory out of the way at once (a rename) and
    /// deletes it in the background: nothing waits for its files to go. What a crash
    /// leaves in the trash, `restore` deletes.
    fn discard_dir(&self, id: &str) {
        let dir = self.cdir(id);
        let target = self.trash.join(id);
        match fs::rename(&dir, &target) {
            Ok(()) => match tokio::runtime::Handle::try_current() {
                Ok(rt) => {
                    rt.spawn_blocking(move || {
                        let _ = fs::remove_dir_all(target);
                    });
                }
                Err(_) => {
                    let _ = fs::remove_dir_all(target);
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(_) => {
                let _ = fs::remove_dir_all(&dir);
            }
        }
    }

    /// Removes a volume no container uses (`pier volume rm`).
    pub fn remove_volume(&self, project: &ProjectName, name: &str) -> EngineResult<()> {
        self.volumes.get(project, name)?;
        let users = self.volume_users(project, name)?;
        if !users.is_empty() {
            return Err(conflict(format!(
                "volume {name} is in use by container(s) {}: remove them first",
                users.join(", ")
            )));
        }
        self.volumes.remove(project, name)
    }

    /// Removes volumes no container uses: anonymous ones, or all with `all`.
    pub fn prune_volumes(&self, project: &ProjectName, all: bool) -> EngineResult<Vec<String>> {
        self.volumes.prune(project, all, &|name| {
            Ok(!self.volume_users(project, name)?.is_empty())
        })
    }

    fn running_users(
        &self,
        project: &ProjectName,
        name: &str,
    ) -> EngineResult<Vec<ContainerInspect>> {
        Ok(self
            .all(project)?
            .into_iter()
            .filter(|c| {
                matches!(
                    c.state.status,
                    ContainerStatus::Running | ContainerStatus::Paused
                )
            })
            .filter(|c| {
                c.mounts
                    .iter()
                    .any(|m| m.kind == MountKind::Volume && m.source.as_deref() == Some(name))
            })
            .collect())
    }

    /// A crash-consistent snapshot: running users of a directory volume are frozen
    /// while it is copied (image volumes are frozen by the filesystem itself).
    pub fn snapshot_volume(
        &self,
        project: &ProjectName,
        name: &str,
        snap: &str,
    ) -> EngineResult<()> {
        let users = self.running_users(project, name)?;
        let quiesce = |on: bool| {
            for c in users
                .iter()
                .filter(|c| c.state.status == ContainerStatus::Running)
            {
                let _ = self.cgroup(&c.id).freeze(on);
            }
        };
        self.volumes.snapshot(project, name, snap, &quiesce)
    }

    /// Puts a snapshot back; no running container may use the volume meanwhile.
    pub fn restore_volume(
        &self,
        project: &ProjectName,
        name: &str,
        snap: &str,
    ) -> EngineResult<()> {
        let users = self.running_users(project, name)?;
        if !users.is_empty() {
            let names: Vec<String> = users.into_iter().map(|c| c.name).collect();
            return Err(conflict(format!(
                "volume {name} is in use by running container(s) {}: stop them first",
                names.join(", ")
            )));
        }
        self.volumes.restore(project, name, snap)
    }

    /// Names of the containers that mount volume `name`.
    pub fn volume_users(&self, project: &ProjectName, name: &str) -> EngineResult<Vec<String>> {
        Ok(self
            .all(project)?
            .into_iter()
            .filter(|c| {
                c.mounts
                    .iter()
                    .any(|m| m.kind == MountKind::Volume && m.source.as_deref() == Some(name))
            })
            .map(|c| c.name)
            .collect())
    }

    /// Puts a container on one more network (`pier network connect`); a running
    /// container gets its interface at once.
    pub async fn connect(
        &self,
        project: &ProjectName,
        network: &str,
        req: pier_api::networks::NetworkConnect,
    ) -> EngineResult<()> {
        let c = self.get(project, &req.container)?;
        let lock = self.lock(&c.id);
        let _g = lock.lock().await;
        let mut c = self.get(project, &c.id)?;
        let n = self.networks.get(project, network)?;
        let mode = c.config.network.as_deref().unwrap_or(DEFAULT_NETWORK);
        if matches!(mode, "none" | "host") || mode.starts_with("container:") {
            return Err(invalid(format!(
                "container {} uses --network {mode}: it cannot join other networks",
                c.name
            )));
        }
        if c.networks.contains_key(&n.name) {
            return Err(conflict(format!(
                "container {} is already on network {}",
                c.name, n.name
            )));
        }
        let mut ep = self
            .networks
            .endpoint_request(&n, req.ip, None, &req.aliases)?;
        if matches!(
            c.state.status,
            ContainerStatus::Running | ContainerStatus::Paused
        ) {
            let used: Vec<usize> = c
                .networks
                .values()
                .filter_map(|e| e.interface.as_deref()?.strip_prefix("eth")?.parse().ok())
                .collect();
            let i = (0..).find(|i| !used.contains(i)).unwrap_or(0);
            let ns = self.networks.netns_path(&c.id);
            ep = match self.networks.plug(&c, &ns, i, &n.name, ep).await {
                Ok(ep) => ep,
                Err(e) => {
                    let _ = self.networks.unplug(&c, &n.id).await;
                    return Err(e);
                }
            };
            let one = BTreeMap::from([(n.name.clone(), ep.clone())]);
            self.networks.index_names(&c, &one);
        }
        c.networks.insert(n.name.clone(), ep);
        self.save(&c)?;
        self.emit(&c, "connect", &[("network", n.name.clone())]);
        Ok(())
    }

    /// Takes a container off a network (`pier network disconnect`).
    pub async fn disconnect(
        &self,
        project: &ProjectName,
        network: &str,
        container: &str,
    ) -> EngineResult<()> {
        let c = self.get(project, container)?;
        let lock = self.lock(&c.id);
        let _g = lock.lock().await;
        let mut c = self.get(project, &c.id)?;
        let n = self.networks.get(project, network)?;
        let Some(ep) = c.networks.get(&n.name).cloned() else {
            return Err(conflict(format!(
                "container {} is not on network {}",
                c.name, n.name
            )));
        };
        if ep.ip_address.is_some() {
            self.networks.unplug(&c, &n.id).await?;
        }
        c.networks.remove(&n.name);
        if ep.ip_address.is_some() {
            // Its names on the other networks no longer reach into this one.
            self.networks.index_names(&c, &BTreeMap::new());
        }
        if c.config.network.as_deref().unwrap_or(DEFAULT_NETWORK) == n.name {
            // Its first network is gone; the next one (if any) becomes the first. With
            // none left, it keeps a namespace of its own with only `lo`.
            if let Some(next) = c.networks.keys().next() {
                c.config.network = Some(next.clone());
            }
        }
        self.save(&c)?;
        self.emit(&c, "disconnect", &[("network", n.name.clone())]);
        Ok(())
    }

    /// Removes every container that is not running; returns their IDs.
    pub async fn prune(&self, project: &ProjectName) -> EngineResult<Vec<String>> {
        let mut deleted = Vec::new();
        for c in self.all(project)? {
            if matches!(
                c.state.status,
                ContainerStatus::Created | ContainerStatus::Exited
            ) {
                self.remove(project, &c.id, false, false).await?;
                deleted.push(c.id);
            }
        }
        Ok(deleted)
    }

    /// Waits until the container is stopped; with `next_exit`, until it next stops (a
    /// client can ask before starting it, as `docker run` does).
    ///
    /// The watch is registered before this returns; the future then resolves on the exit.
    pub fn wait(
        &self,
        project: &ProjectName,
        name: &str,
        next_exit: bool,
        removed: bool,
    ) -> EngineResult<impl std::future::Future<Output = WaitResponse> + Send + 'static> {
        let c = self.get(project, name)?;
        let mut rx = self.watcher(&c);
        let before = c.state.finished_at.clone();
        Ok(async move {
            let state = rx
                .wait_for(|s| {
                    if removed {
                        return s.status == ContainerStatus::Removing;
                    }
                    let stopped = !matches!(
                        s.status,
                        ContainerStatus::Running
                            | ContainerStatus::Paused
                            | ContainerStatus::Restarting
                    );
                    stopped && (!next_exit || s.finished_at != before)
                })
                .await
                .map(|s| s.clone())
                .unwrap_or(c.state);
            WaitResponse {
                exit_code: state.exit_code.unwrap_or(0),
                error: state.error,
            }
        })
    }

    pub async fn pause(&self, project: &ProjectName, name: &str, paused: bool) -> EngineResult<()> {
        let mut c = self.get(project, name)?;
        let want = if paused {
            ContainerStatus::Running
        } else {
            ContainerStatus::Paused
        };
        if c.state.status != want {
            return Err(conflict(format!(
                "container {} is {}, not {}",
                c.name,
                c.state.status.as_str(),
                want.as_str()
            )));
        }
        self.cgroup(&c.id)
            .freeze(paused)
            .map_err(|e| internal(format!("{e}: {}", e.source)))?;
        c.state.status = if paused {
            ContainerStatus::Paused
        } else {
            ContainerStatus::Running
        };
        self.save(&c)?;
        self.emit(&c, if paused { "pause" } else { "unpause" }, &[]);
        Ok(())
    }

    pub fn rename(&self, project: &ProjectName, name: &str, new_name: &str) -> EngineResult<()> {
        if !valid_name(new_name) {
            return Err(invalid(format!("invalid container name {new_name:?}")));
        }
        let mut c = self.get(project, name)?;
        let _reservation = self.reserve_name(project, new_name, Some(&c.id))?;
        c.name = new_name.to_string();
        self.save(&c)?;
        self.emit(&c, "rename", &[]);
        Ok(())
    }

    pub fn list(
        &self,
        project: &ProjectName,
        all: bool,
        filter: Option<&str>,
    ) -> EngineResult<Vec<ContainerSummary>> {
        let filters: Vec<(String, String)> = filter
            .unwrap_or("")
            .split(',')
            .filter(|f| !f.is_empty())
            .map(|f| {
                f.split_once('=')
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .ok_or_else(|| invalid(format!("invalid filter {f:?}: use key=value")))
            })
            .collect::<EngineResult<_>>()?;
        let now = now_unix();
        let mut out: Vec<(String, ContainerSummary)> = Vec::new();
        for c in self.all(project)? {
            let running = matches!(
                c.state.status,
                ContainerStatus::Running | ContainerStatus::Paused | ContainerStatus::Restarting
            );
            if !all && !running && !filters.iter().any(|(k, _)| k == "status") {
                continue;
            }
            let keep = filters.iter().all(|(k, v)| match k.as_str() {
                "status" => c.state.status.as_str() == v,
                "name" => c.name.contains(v.as_str()),
                "id" => c.id.starts_with(v.as_str()),
                "label" => match v.split_once('=') {
                    Some((lk, lv)) => c.config.labels.get(lk).is_some_and(|x| x == lv),
                    None => c.config.labels.contains_key(v.as_str()),
                },
                "exited" => {
                    c.state.status == ContainerStatus::Exited
                        && c.state.exit_code.map(|e| e.to_string()).as_deref() == Some(v.as_str())
                }
                _ => false,
            });
            if !keep {
                continue;
            }
            let status = status_text(&c.state, now);
            out.push((
                c.created.clone(),
                ContainerSummary {
                    id: c.id.clone(),
                    name: c.name.clone(),
                    image: c.image.clone(),
                    command: c.command.join(" "),
                    created: c.created.clone(),
                    state: c.state.status,
                    status,
                    ports: c.ports.clone(),
                },
            ));
        }
        out.sort_by(|a, b| b.0.cmp(&a.0));
        Ok(out.into_iter().map(|(_, s)| s).collect())
    }

    /// Prepares `pier __exec` for a running container: the command line to spawn (for
    /// [`crate::sessions::exec`], which spawns and reaps it).
    pub(crate) fn exec_command(
        &self,
        project: &ProjectName,
        name: &str,
        req: &pier_api::containers::ExecCreate,
    ) -> EngineResult<(ContainerInspect, std::process::Command)> {
        let c = self.get(project, name)?;
        if c.state.status != ContainerStatus::Running {
            return Err(conflict(format!(
                "container {} is not running; start it first",
                c.name
            )));
        }
        if req.cmd.is_empty() {
            return Err(invalid("give a command to run"));
        }
        let pid = c
            .state
            .pid
            .ok_or_else(|| conflict(format!("container {} has no process", c.name)))?;
        let dir = self.cdir(&c.id);
        let spec = oci_spec::runtime::Spec::load(dir.join("config.json"))
            .map_err(|e| internal(format!("cannot read the container's spec: {e}")))?;
        let process = spec.process().clone().unwrap_or_default();
        let (uid, gid, additional_gids) = match &req.user {
            Some(u) => pier_runtime::rootfs::resolve_user(&dir.join("rootfs"), u)
                .map_err(|e| invalid(e.to_string()))?,
            None => (
                process.user().uid(),
                process.user().gid(),
                process.user().additional_gids().clone().unwrap_or_default(),
            ),
        };
        let mut env = process.env().clone().unwrap_or_default();
        for e in &req.env {
            let k = e.split('=').next().unwrap_or("");
            env.retain(|x| x.split('=').next() != Some(k));
            env.push(e.clone());
        }
        let cwd = req
            .workdir
            .clone()
            .unwrap_or_else(|| process.cwd().display().to_string());
        if !cwd.starts_with('/') {
            return Err(invalid(format!(
                "the working directory {cwd:?} must be an absolute path"
            )));
        }
        let request = pier_runtime::exec::ExecRequest {
            pid,
            args: req.cmd.clone(),
            env,
            cwd,
            uid,
            gid,
            additional_gids,
            tty: req.tty,
            interactive: req.interactive,
        };
        let exe = pier_runtime::sealed::current().map_err(|e| internal(e.to_string()))?;
        let mut cmd = std::process::Command::new(exe.path());
        // Its command line is visible in the container (ps): no host path in it.
        std::os::unix::process::CommandExt::arg0(&mut cmd, "pier");
        cmd.arg("__exec")
            .arg(&dir)
            .arg(serde_json::to_string(&request).expect("json"));
        self.emit(&c, "exec_start", &[("execCommand", req.cmd.join(" "))]);
        Ok((c, cmd))
    }

    pub fn stats(
        &self,
        project: &ProjectName,
        name: &str,
    ) -> EngineResult<pier_api::containers::ContainerStats> {
        let c = self.get(project, name)?;
        let s = if matches!(
            c.state.status,
            ContainerStatus::Running | ContainerStatus::Paused
        ) {
            self.cgroup(&c.id).stats()
        } else {
            Default::default()
        };
        let limit = |v: u64| (v < u64::MAX / 2).then_some(v);
        Ok(pier_api::containers::ContainerStats {
            id: c.id.clone(),
            name: c.name.clone(),
            read: format_rfc3339_nanos(std::time::SystemTime::now()),
            cpu_usage_ns: s.cpu_usage_ns,
            system_cpu_ns: host_cpu_ns(),
            online_cpus: std::thread::available_parallelism()
                .map(|n| n.get() as u32)
                .unwrap_or(1),
            memory_usage: s.memory_usage,
            memory_limit: limit(s.memory_limit),
            pids_current: s.pids_current,
            pids_limit: limit(s.pids_limit),
            io_read_bytes: s.io_read_bytes,
            io_write_bytes: s.io_write_bytes,
            networks: c
                .state
                .pid
                .map(crate::system::interface_counters)
                .unwrap_or_default(),
        })
    }

    /// Bytes the container wrote to its writable layer (Docker's `SizeRw`).
    pub fn size_rw(&self, c: &ContainerInspect) -> u64 {
        crate::system::du(&self.cdir(&c.id).join("upper"))
    }

    /// Where the container's files are on the host (Docker's inspect shows them).
    pub fn paths(&self, c: &ContainerInspect) -> ContainerPaths {
        let dir = self.cdir(&c.id);
        ContainerPaths {
            resolv_conf: dir.join("resolv.conf"),
            hostname: dir.join("hostname"),
            hosts: dir.join("hosts"),
            upper: dir.join("upper"),
            work: dir.join("work"),
            merged: dir.join("rootfs"),
        }
    }

    /// The container's processes, read from its cgroup and /proc.
    pub fn top(
        &self,
        project: &ProjectName,
        name: &str,
    ) -> EngineResult<pier_api::containers::TopResponse> {
        let c = self.get(project, name)?;
        if !matches!(
            c.state.status,
            ContainerStatus::Running | ContainerStatus::Paused
        ) {
            return Err(conflict(format!("container {} is not running", c.name)));
        }
        let tick = 100; // USER_HZ
        let boot = fs::read_to_string("/proc/stat")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("btime ")?.trim().parse::<i64>().ok())
            })
            .unwrap_or(0);
        let mut pids = self.cgroup(&c.id).pids();
        pids.sort();
        let mut processes = Vec::new();
        for pid in pids {
            let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
                continue;
            };
            // Fields after the command (which may hold spaces) start after the last ')'.
            let rest: Vec<&str> = stat
                .rsplit_once(')')
                .map(|(_, r)| r.split_whitespace().collect())
                .unwrap_or_default();
            let field = |i: usize| rest.get(i).and_then(|v| v.parse::<i64>().ok()).unwrap_or(0);
            let ppid = field(1);
            let cpu_secs = (field(11) + field(12)) / tick;
            let start = boot + field(19) / tick;
            let uid = fs::read_to_string(format!("/proc/{pid}/status"))
                .ok()
                .and_then(|s| {
                    s.lines().find_map(|l| {
                        l.strip_prefix("Uid:")?
                            .split_whitespace()
                            .next()
                            .map(String::from)
                    })
                })
                .unwrap_or_default();
            let cmd = fs::read(format!("/proc/{pid}/cmdline"))
                .map(|b| {
                    String::from_utf8_lossy(&b)
                        .split('\0')
                        .filter(|s| !s.is_empty())
                        .collect::<Vec<_>>()
                        .join(" ")
                })
                .unwrap_or_default();
            let stime = pier_api::time::format_rfc3339(start);
            processes.push(vec![
                uid,
                pid.to_string(),
                ppid.to_string(),
                "0".into(),
                stime[11..16].to_string(),
                "?".into(),
                format!(
                    "{:02}:{:02}:{:02}",
                    cpu_secs / 3600,
                    cpu_secs / 60 % 60,
                    cpu_secs % 60
                ),
                cmd,
            ]);
        }
        let titles = ["UID", "PID", "PPID", "C", "STIME", "TTY", "TIME", "CMD"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        Ok(pier_api::containers::TopResponse { titles, processes })
    }

    pub(crate) fn exec_done(&self, c: &ContainerInspect, code: i32) {
        self.emit(c, "exec_die", &[("exitCode", code.to_string())]);
    }

    // ---- for the Docker API and health checks ---------------------------------------------

    /// Every container of a project, as stored.
    pub fn inspect_all(&self, project: &ProjectName) -> EngineResult<Vec<ContainerInspect>> {
        self.all(project)
    }

    /// Follows a container's state (it ends when the container is removed).
    pub fn state_watch(&self, c: &ContainerInspect) -> watch::Receiver<ContainerState> {
        self.watcher(c)
    }

    /// The signal `stop` sends first: asked for, the container's, the image's, SIGTERM.
    fn stop_signal_of(&self, c: &ContainerInspect, asked: Option<&str>) -> String {
        if let Some(s) = asked.or(c.config.stop_signal.as_deref()) {
            return s.to_string();
        }
        self.images
            .resolve(&c.project, c.image_id.as_str())
            .and_then(|i| self.images.config(&i))
            .ok()
            .and_then(|cfg| cfg["config"]["StopSignal"].as_str().map(String::from))
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "TERM".into())
    }

    /// Changes a container's record under its lock, if `f` says so (returns true); `f`
    /// sees the current record.
    pub(crate) async fn update_record(
        &self,
        project: &ProjectName,
        id: &str,
        f: impl FnOnce(&mut ContainerInspect) -> bool,
    ) -> EngineResult<()> {
        let lock = self.lock(id);
        let _g = lock.lock().await;
        let mut c = self.get(project, id)?;
        if f(&mut c) {
            self.save(&c)?;
        }
        Ok(())
    }

    // ---- restore -------------------------------------------------------------------------

    /// A container whose record does not say running: the daemon may have died during
    /// its start, between asking for the monitor and saving "running". The monitor's
    /// state file tells whether it started. A started container is adopted as it runs;
    /// one on a network gets back what its record would have held (addresses, published
    /// ports) from the network manager's durable copies, and is killed, as a start whose
    /// client never heard back, if they are missing. Whatever else is in its cgroup is
    /// killed.
    async fn restore_unrecorded_start(
        self: &Arc<Self>,
        mut c: ContainerInspect,
        monitor: Option<i32>,
    ) -> EngineResult<()> {
        let dir = self.cdir(&c.id);
        let started: Option<Running> = read_json(&dir.join("state.json"));
        let Some(s) =
            started.filter(|s| c.state.started_at.as_deref() != Some(s.started_at.as_str()))
        else {
            if c.config.auto_remove && !dir.exists() {
                // A `--rm` container removed just before a crash that lost the removal's
                // record (it is written lazily).
                return self.remove_locked(&c, true);
            }
            if let Some(m) = monitor {
                kill_monitor(m, &dir);
            }
            self.kill_leftovers(&c.id);
            unmount(&dir.join("rootfs"));
            let _ = self.cgroup(&c.id).remove();
            return Ok(());
        };
        let mode = c.config.network.as_deref().unwrap_or(DEFAULT_NETWORK);
        let networked = !(mode == "none" || mode == "host" || mode.starts_with("container:"));
        let alive = monitor_alive(s.monitor_pid, &dir) && !dir.join("exit.json").exists();
        c.state.status = ContainerStatus::Running;
        c.state.pid = Some(s.pid);
        c.state.monitor_pid = Some(s.monitor_pid);
        c.state.started_at = Some(s.started_at);
        c.state.exit_code = None;
        c.state.error = None;
        // Its addresses and published ports, written durably before its monitor started.
        let recovered = !networked || {
            self.networks.recover(&mut c)?;
            !c.networks.is_empty() && c.networks.values().all(|e| e.ip_address.is_some())
        };
        self.save(&c)?;
        if alive && recovered {
            tracing::info!(container = %c.id, "adopted a container whose start was not recorded");
            self.watch_exit(&c);
            return Ok(());
        }
        if alive {
            self.kill_leftovers(&c.id);
            kill_monitor(s.monitor_pid, &dir);
            let exit = Exited {
                exit_code: 137,
                finished_at: now_rfc3339(),
                oom_killed: false,
                error: Some(
                    "the daemon stopped while the container was starting; its processes \
                     were killed: start it again"
                        .into(),
                ),
            };
            let _ = write_json(&dir.join("exit.json"), &exit);
            tracing::info!(container = %c.id, "killed a container whose start on a network was not recorded");
        } else {
            self.kill_leftovers(&c.id);
        }
        let (project, id) = (c.project.clone(), c.id.clone());
        self.on_exit(&project, &id).await
    }

    /// At daemon start: re-adopts containers whose monitors still run, records the exits
    /// that happened meanwhile, and removes what no record owns (mounts, directories,
    /// cgroups).
    ///
    /// The daemon may have died at any point of a start, so every container's cgroup is
    /// checked against its monitor: a container is adopted only when its monitor is alive
    /// and its state file says running; otherwise whatever runs in its cgroup is killed
    /// before its exit is recorded and its cgroup, mounts and network are removed.
    pub async fn restore(self: &Arc<Self>) -> EngineResult<()> {
        let records = self.db.list_json::<Record>(Table::Containers, "")?;
        let monitors = live_monitors();
        let mut known = std::collections::HashSet::new();
        for (_, r) in records {
            let c = r.0;
            known.insert(c.id.clone());
            let dir = self.cdir(&c.id);
            // A writable layer of limited size lives on its own filesystem.
            let layer = dir.join("layer.img");
            if layer.exists() && !mounted(&dir.join("layer")) {
                if let Err(e) = pier_storage::ext4::mount(&layer, &dir.join("layer")) {
                    tracing::warn!(container = %c.id, error = %e.chain(), "cannot mount a writable layer");
                }
            }
            // A monitor the last daemon started may not have answered yet.
            if let Some(&m) = monitors.get(&dir) {
                settle(m, &dir).await;
            }
            let alive = c.state.monitor_pid.is_some_and(|p| monitor_alive(p, &dir));
            match c.state.status {
                ContainerStatus::Running | ContainerStatus::Paused if alive => {
                    tracing::info!(container = %c.id, "re-adopted a running container");
                    self.watch_exit(&c);
                }
                ContainerStatus::Running | ContainerStatus::Paused => {
                    self.kill_leftovers(&c.id);
                    let (project, id) = (c.project.clone(), c.id.clone());
                    self.on_exit(&project, &id).await?;
                }
                ContainerStatus::Restarting => {
                    self.kill_leftovers(&c.id);
                    let this = self.clone();
                    tokio::spawn(async move {
                        let lock = this.lock(&c.id);
                        let _g = lock.lock().await;
                        if let Err(e) = this.start_locked(c.clone()).await {
                            tracing::warn!(container = %c.id, error = %e.message(), "restart after daemon restart failed");
                        }
                    });
                }
                _ => {
                    self.restore_unrecorded_start(c, monitors.get(&dir).copied())
                        .await?
                }
            }
        }
        // Directories, mounts and cgroups of containers that never got a record (a crash
        // during create) or whose removal was interrupted.
        if let Ok(rd) = fs::read_dir(&self.dir) {
            for e in rd.flatten() {
                let id = e.file_name().to_string_lossy().into_owned();
                if !known.contains(&id) && self.adopt_unrecorded(&e.path())? {
                    continue;
                }
                if !known.contains(&id) {
                    if let Some(&m) = monitors.get(&e.path()) {
                        kill_monitor(m, &e.path());
                    }
                    self.kill_leftovers(&id);
                    unmount(&e.path().join("rootfs"));
                    unmount(&e.path().join("layer"));
                    let _ = self.cgroup(&id).remove();
                    let _ = fs::remove_dir_all(e.path());
                    tracing::info!(container = %id, "removed the leftovers of a container with no record");
                }
            }
        }
        // Directories of removed containers whose deletion a stop interrupted.
        if let Ok(rd) = fs::read_dir(&self.trash) {
            for e in rd.flatten() {
                let _ = fs::remove_dir_all(e.path());
            }
        }
        // Block volumes attached for containers that are gone.
        for project in self.projects.list()? {
            for v in self.volumes.list(&project)? {
                if v.driver == "block" && self.running_users(&project, &v.name)?.is_empty() {
                    self.volumes.release(&project, &v.name);
                }
            }
        }
        Ok(())
    }
}

/// The process's environment: the image's, then the request's (later values of a name
/// win), with PATH, HOSTNAME, TERM (with a terminal) and HOME as Docker sets them.
fn process_env(
    req: &ContainerCreate,
    img: &serde_json::Value,
    uid: u32,
    hostname: &str,
) -> Vec<String> {
    let mut env: Vec<String> = img["Env"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    if !env.iter().any(|e| e.starts_with("PATH=")) {
        env.insert(0, DEFAULT_PATH.into());
    }
    for e in &req.env {
        let k = e.split('=').next().unwrap_or("");
        env.retain(|x| x.split('=').next() != Some(k));
        env.push(e.clone());
    }
    if !env.iter().any(|e| e.starts_with("HOSTNAME=")) {
        env.push(format!("HOSTNAME={hostname}"));
    }
    if req.tty && !env.iter().any(|e| e.starts_with("TERM=")) {
        env.push("TERM=xterm".into());
    }
    if !env.iter().any(|e| e.starts_with("HOME=")) {
        env.push(if uid == 0 {
            "HOME=/root".into()
        } else {
            "HOME=/".into()
        });
    }
    env
}

/// A string field of an image's config, when set and not empty.
fn image_str(img: &serde_json::Value, key: &str) -> Option<String> {
    img[key]
        .as_str()
        .filter(|s| !s.is_empty())
        .map(String::from)
}

/// The working directory: the request's, else the image's, else `/`; absolute.
fn workdir_of(req: &ContainerCreate, img: &serde_json::Value) -> EngineResult<String> {
    let cwd = req
        .workdir
        .clone()
        .or_else(|| image_str(img, "WorkingDir"))
        .unwrap_or_else(|| "/".into());
    if !cwd.starts_with('/') {
        return Err(invalid(format!(
            "the working directory {cwd:?} must be an absolute path"
        )));
    }
    Ok(cwd)
}

/// Writes /etc/hostname and /etc/hosts in the container's directory `dir`, and the
/// empty resolv.conf each start fills (the host's own on the host network); returns the
/// bind mounts of the three.
fn etc_files(dir: &Path, net: &NetMode, hostname: &str) -> EngineResult<Vec<serde_json::Value>> {
    fs::write(dir.join("hostname"), format!("{hostname}\n"))
        .map_err(|e| internal(e.to_string()))?;
    let hosts = if *net == NetMode::Host {
        fs::read_to_string("/etc/hosts").unwrap_or_default()
    } else {
        format!("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\t{hostname}\n")
    };
    fs::write(dir.join("hosts"), hosts).map_err(|e| internal(e.to_string()))?;
    let mut mounts = vec![
        serde_json::json!({"destination": "/etc/hostname", "type": "bind", "source": dir.join("hostname"), "options": ["rbind", "rprivate"]}),
        serde_json::json!({"destination": "/etc/hosts", "type": "bind", "source": dir.join("hosts"), "options": ["rbind", "rprivate"]}),
    ];
    if *net == NetMode::Host {
        if Path::new("/etc/resolv.conf").exists() {
            mounts.push(serde_json::json!({"destination": "/etc/resolv.conf", "type": "bind", "source": "/etc/resolv.conf", "options": ["rbind", "rprivate", "ro"]}));
        }
    } else {
        // Written at each start, when the container's networks are known.
        fs::write(dir.join("resolv.conf"), "").map_err(|e| internal(e.to_string()))?;
        mounts.push(serde_json::json!({"destination": "/etc/resolv.conf", "type": "bind", "source": dir.join("resolv.conf"), "options": ["rbind", "rprivate"]}));
    }
    Ok(mounts)
}

/// The seccomp profile asked for: none when privileged or `unconfined`, a given one, or
/// Docker's default.
fn seccomp_of(req: &ContainerCreate) -> EngineResult<Option<pier_runtime::seccomp::Profile>> {
    let asked = req.security_opt.iter().rev().find_map(|o| {
        o.strip_prefix("seccomp=")
            .or_else(|| o.strip_prefix("seccomp:"))
    });
    Ok(match asked {
        _ if req.privileged => None,
        Some("unconfined") => None,
        Some(profile) => Some(
            serde_json::from_str(profile)
                .map_err(|e| invalid(format!("the seccomp profile is not valid: {e}")))?,
        ),
        None => Some(pier_runtime::seccomp::docker_default()),
    })
}

/// The command a container runs: its entrypoint and cmd, each the request's or else the
/// image's (a new entrypoint drops the image's cmd, as Docker does).
fn command_of(req: &ContainerCreate, img: &serde_json::Value) -> Vec<String> {
    let strings = |v: &serde_json::Value| -> Vec<String> {
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    };
    let entrypoint = req
        .entrypoint
        .clone()
        .unwrap_or_else(|| strings(&img["Entrypoint"]));
    let cmd = match &req.cmd {
        Some(c) => c.clone(),
        None if req.entrypoint.is_some() => vec![],
        None => strings(&img["Cmd"]),
    };
    entrypoint.into_iter().chain(cmd).collect()
}

/// The size limit of the writable layer (`--storage-opt size=`, at least 4 MiB).
fn layer_limit(req: &ContainerCreate) -> EngineResult<Option<u64>> {
    if let Some(k) = req.storage_opts.keys().find(|k| *k != "size") {
        return Err(invalid(format!(
            "unknown --storage-opt {k:?}: use size=BYTES"
        )));
    }
    let Some(v) = req.storage_opts.get("size") else {
        return Ok(None);
    };
    let n = v
        .parse::<ByteSize>()
        .map(ByteSize::bytes)
        .map_err(|e| invalid(format!("--storage-opt size: {e}")))?;
    if n < (4 << 20) {
        return Err(invalid("--storage-opt size must be at least 4m"));
    }
    Ok(Some(n))
}

/// Only the daemon reads a container's directory; in a user namespace the container's
/// root group passes through it to the rootfs and bound files.
fn dir_permissions(dir: &Path, c: &ContainerInspect) -> std::io::Result<()> {
    let root_map = c
        .config
        .gid_maps
        .iter()
        .chain(&c.config.uid_maps)
        .find(|m| m.container_id == 0);
    let (mode, group) = match root_map {
        Some(m) => (0o710, Some(m.host_id)),
        None => (0o700, None),
    };
    fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(mode))?;
    if let Some(g) = group {
        std::os::unix::fs::chown(dir, Some(0), Some(g))?;
        searchable_by_others(dir)?;
    }
    Ok(())
}

/// Puts the writable layer on an ext4 filesystem of its own, `limit` bytes large.
fn make_layer_fs(dir: &Path, limit: u64) -> EngineResult<()> {
    let fsdir = dir.join("layer");
    fs::create_dir_all(&fsdir).map_err(|e| internal(e.to_string()))?;
    pier_storage::ext4::make(&dir.join("layer.img"), limit, None)
        .and_then(|_| pier_storage::ext4::mount(&dir.join("layer.img"), &fsdir))
        .map_err(|e| {
            let e = crate::volumes::st(e);
            EngineError::new(
                e.kind(),
                format!("cannot make the writable layer: {}", e.message()),
            )
        })?;
    for d in ["upper", "work"] {
        fs::create_dir(fsdir.join(d)).map_err(|e| internal(e.to_string()))?;
        fs::remove_dir(dir.join(d)).map_err(|e| internal(e.to_string()))?;
        std::os::unix::fs::symlink(format!("layer/{d}"), dir.join(d))
            .map_err(|e| internal(e.to_string()))?;
    }
    Ok(())
}

/// Where a container's files are on the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerPaths {
    pub resolv_conf: PathBuf,
    pub hostname: PathBuf,
    pub hosts: PathBuf,
    /// The overlay's upper (writable) and work directories, and where it is mounted.
    pub upper: PathBuf,
    pub work: PathBuf,
    pub merged: PathBuf,
}

/// The services containers stand on.
pub struct Peers {
    pub images: Arc<ImageStore>,
    pub networks: Arc<Networks>,
    pub volumes: Arc<Volumes>,
    pub projects: Arc<Projects>,
}

/// A name reserved by [`Containers::reserve_name`].
struct NameReservation<'a> {
    set: &'a Mutex<std::collections::HashSet<String>>,
    key: String,
}

impl Drop for NameReservation<'_> {
    fn drop(&mut self) {
        self.set.lock().unwrap().remove(&self.key);
    }
}

/// CPU time of the whole host, in nanoseconds, from /proc/stat.
fn host_cpu_ns() -> u64 {
    let stat = fs::read_to_string("/proc/stat").unwrap_or_default();
    let ticks: u64 = stat
        .lines()
        .next()
        .map(|l| {
            l.split_whitespace()
                .skip(1)
                .filter_map(|v| v.parse::<u64>().ok())
                .sum()
        })
        .unwrap_or(0);
    ticks * 10_000_000
}

/// Is `pid` still the monitor of the container in `dir`?
fn monitor_alive(pid: i32, dir: &Path) -> bool {
    let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let args: Vec<&[u8]> = cmdline.split(|&b| b == 0).collect();
    // Its working directory is the container's (see `start_locked`). A monitor forked by
    // the zygote renamed itself `pier __monitor`.
    args.get(1) == Some(&b"__monitor".as_slice())
        && fs::read_link(format!("/proc/{pid}/cwd")).is_ok_and(|cwd| cwd == dir)
}

/// The monitors running now, by their container's directory (their working directory).
fn live_monitors() -> HashMap<PathBuf, i32> {
    let mut out = HashMap::new();
    let Ok(rd) = fs::read_dir("/proc") else {
        return out;
    };
    for e in rd.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else {
            continue;
        };
        let cmdline = fs::read(e.path().join("cmdline")).unwrap_or_default();
        if cmdline.split(|&b| b == 0).nth(1) != Some(b"__monitor".as_slice()) {
            continue;
        }
        if let Ok(cwd) = fs::read_link(e.path().join("cwd")) {
            out.insert(cwd, pid);
        }
    }
    out
}

/// Waits (at most 10 s) until the monitor `pid` of the container in `dir` has said how
/// its start went (its state or exit file is there) or is gone.
async fn settle(pid: i32, dir: &Path) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while monitor_alive(pid, dir)
        && !dir.join("state.json").exists()
        && !dir.join("exit.json").exists()
        && std::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Kills the monitor `pid` of the container in `dir`, if it still is that, and waits
/// (at most 5 s) for it to be gone.
fn kill_monitor(pid: i32, dir: &Path) {
    let Some(p) = rustix::process::Pid::from_raw(pid) else {
        return;
    };
    let Ok(fd) = rustix::process::pidfd_open(p, rustix::process::PidfdFlags::empty()) else {
        return;
    };
    // Checked after the pidfd is open: the pidfd cannot name another process later.
    if !monitor_alive(pid, dir) {
        return;
    }
    let _ = rustix::process::pidfd_send_signal(&fd, rustix::process::Signal::KILL);
    let mut p = [libc::pollfd {
        fd: std::os::fd::AsRawFd::as_raw_fd(&fd),
        events: libc::POLLIN,
        revents: 0,
    }];
    // SAFETY: `p` is a valid array of one pollfd; a pidfd polls readable once it exits.
    unsafe { libc::poll(p.as_mut_ptr(), 1, 5000) };
}

fn status_text(s: &ContainerState, now: i64) -> String {
    let since = |t: &Option<String>| {
        t.as_deref()
            .and_then(parse_rfc3339)
            .map(|t| human_ago(t, now).trim_end_matches(" ago").to_string())
            .unwrap_or_default()
    };
    match s.status {
        ContainerStatus::Created => "Created".into(),
        ContainerStatus::Running => format!("Up {}", since(&s.started_at)),
        ContainerStatus::Paused => format!("Up {} (Paused)", since(&s.started_at)),
        ContainerStatus::Restarting => format!("Restarting ({})", s.exit_code.unwrap_or(0)),
        ContainerStatus::Exited => format!(
            "Exited ({}) {} ago",
            s.exit_code.unwrap_or(0),
            since(&s.finished_at)
        ),
        ContainerStatus::Removing => "Removal In Progress".into(),
    }
}

/// `TERM`, `SIGTERM`, `15`.
pub fn parse_signal(s: &str) -> EngineResult<i32> {
    if let Ok(n) = s.parse::<i32>() {
        return if (1..=64).contains(&n) {
            Ok(n)
        } else {
            Err(invalid(format!("invalid signal {s}")))
        };
    }
    let name = s.to_ascii_uppercase();
    let name = name.trim_start_matches("SIG");
    Ok(match name {
        "HUP" => libc::SIGHUP,
        "INT" => libc::SIGINT,
        "QUIT" => libc::SIGQUIT,
        "KILL" => libc::SIGKILL,
        "USR1" => libc::SIGUSR1,
        "USR2" => libc::SIGUSR2,
        "TERM" => libc::SIGTERM,
        "STOP" => libc::SIGSTOP,
        "CONT" => libc::SIGCONT,
        "WINCH" => libc::SIGWINCH,
        "ALRM" => libc::SIGALRM,
        "PIPE" => libc::SIGPIPE,
        _ => {
            return Err(invalid(format!(
                "unknown signal {s:?}; use a name like TERM or a number"
            )))
        }
    })
}

/// The stored form of a container.
#[derive(serde::Serialize, serde::Deserialize)]
struct Record(ContainerInspect);

/// A copy of a `--rm` container's record in its directory (see `Containers::create`).
const RECORD_COPY: &str = "record.json";

impl From<&ContainerInspect> for Record {
    fn from(c: &ContainerInspect) -> Self {
        Record(c.clone())
    }
}
