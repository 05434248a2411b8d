//! Instances (containers today): create, start, stop, kill, remove, wait, logs, restart policies, and
//! re-adoption of running containers after a daemon restart (live restore).
//!
//! Each container is stored as a spec (what was asked, with its desired run state) and
//! a status (what is), see [`crate::instances::record`]; the monitor's files and the
//! kernel are the truth the status follows. Every request that changes a container is
//! served by its actor ([`crate::instances::actor`]), one at a time; the instance
//! reconciler ([`InstanceReconciler`]) acts on a desired state that no request acted on
//! (a daemon that died between recording a start and making it). Every container has a
//! directory `ROOT/containers/<id>/` (see `pier_runtime::state`). Its life:
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
//! pidfd), then asks its actor to record the exit and apply `--rm` and restart policies.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};
use std::time::Duration;

use pier_api::containers::{
    ContainerCreate, ContainerInspect, ContainerState, ContainerStatus, ContainerSummary, Created,
    Event, RestartPolicy, WaitResponse,
};
use pier_api::time::{format_rfc3339_nanos, human_ago, now_rfc3339, now_unix, parse_rfc3339};
use pier_api::{ByteSize, ContainerId, ErrorKind, ProjectName};
use pier_image::ImageStore;
use pier_runtime::cgroups::Cgroup;
use pier_runtime::spec;
use pier_store::{Batch, Expect, Store, StoreError, StoreExt, Table};
use tokio::sync::{broadcast, watch};

use crate::context::RequestContext;
use crate::error::{conflict, internal, invalid, EngineError, EngineResult};
use crate::instances::actor::{Actors, Handler, Hold, Op};
pub(crate) use crate::instances::container::unmount;
use crate::instances::container::ContainerDriver;
use crate::instances::driver::{
    Driver, Drivers, ExitInfo, Found, InstanceHandle, NetworkAttachment, Started, VolumeAttachment,
    VolumeKind,
};
use crate::instances::record::{self, Instance, Run};
use crate::instances::vm::{VmDriver, VmSettings};
use crate::instances::Undo;
use crate::names::{random_id, valid_name};
use crate::networks::{Networks, DEFAULT_NETWORK};
use crate::projects::Projects;
use crate::reconcile::{BoxFuture, Reconciler};
use crate::volumes::Volumes;
use crate::EngineEvent;
use pier_api::volumes::{MountKind, MountSpec};

/// The container manager.
pub struct Instances {
    dir: PathBuf,
    db: Arc<dyn Store>,
    pub(crate) images: Arc<ImageStore>,
    /// The containers' actors: one request at a time on each, and its latest state.
    actors: Actors,
    pub events: broadcast::Sender<EngineEvent>,
    /// Exec sessions, of every API.
    pub(crate) execs: crate::sessions::exec::ExecRegistry,
    /// Resize handles of attach sessions.
    pub(crate) attached: crate::sessions::attach::AttachRegistry,
    /// Wakes log followers.
    pub(crate) log_watch: crate::sessions::logs::LogWatch,
    /// Realises the containers on this host.
    drivers: Drivers,
    pub networks: Arc<Networks>,
    pub volumes: Arc<Volumes>,
    pub projects: Arc<Projects>,
    /// The parent of the containers' cgroups: `pier` for the default state directory,
    /// `pier-<tag of the root>` for others (`pier_net::names`), so that daemons side by
    /// side never share one.
    cgroup_parent: String,
    /// Open (true) unless restarts by restart policy are held ([`Instances::hold_restarts`]).
    restart_gate: tokio::sync::watch::Sender<bool>,
}

/// `docker`-style names: an adjective and a scientist (what a create without a name
/// gets, from the instance's ID).
pub fn random_name(id: &str) -> String {
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

pub(crate) fn ulimit_resource(name: &str) -> Option<(&'static str, libc::__rlimit_resource_t)> {
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
pub(crate) fn log_limits(opts: &BTreeMap<String, String>) -> EngineResult<(u64, u32)> {
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
    match req.log_driver.as_deref() {
        None | Some("json-file") => {}
        Some("none") if req.log_opts.is_empty() => {}
        Some("none") => {
            return Err(invalid(
                "log options are json-file's: the none driver takes none",
            ))
        }
        Some(d) => {
            return Err(invalid(format!(
                "logging driver {d:?} is not supported by pier: use json-file or none"
            )))
        }
    }
    if let Some(i) = req
        .isolation
        .as_deref()
        .filter(|i| !i.is_empty() && *i != "default")
    {
        return Err(invalid(format!(
            "invalid isolation {i:?}: only default is supported on Linux"
        )));
    }
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
    super::host_access::validate(req)?;
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
        Some(super::vm::RUNTIME) => super::vm::validate(req)?,
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
                "unknown runtime {other:?}: use pier, runc or pier-vm (a VM)"
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

impl Instances {
    pub fn new(
        root: &Path,
        db: Arc<dyn Store>,
        peers: Peers,
        cgroups: pier_runtime::cgroups::Host,
        cgroup_parent: String,
        vm_settings: VmSettings,
    ) -> std::io::Result<Arc<Self>> {
        let containers = Arc::new(ContainerDriver::new(
            root,
            peers.images.clone(),
            cgroups,
            cgroup_parent.clone(),
        )?);
        let vm = Arc::new(VmDriver::new(root, containers.clone(), vm_settings));
        let drivers = Drivers {
            container: containers,
            vm: Some(vm),
        };
        Self::with_drivers(root, db, peers, drivers, cgroup_parent)
    }

    /// Instances realised by `driver` alone (a fake in tests): no VMs.
    pub fn with_driver(
        root: &Path,
        db: Arc<dyn Store>,
        peers: Peers,
        driver: Arc<dyn Driver>,
        cgroup_parent: String,
    ) -> std::io::Result<Arc<Self>> {
        let drivers = Drivers {
            container: driver,
            vm: None,
        };
        Self::with_drivers(root, db, peers, drivers, cgroup_parent)
    }

    /// Instances realised by `drivers`, one per kind.
    pub fn with_drivers(
        root: &Path,
        db: Arc<dyn Store>,
        peers: Peers,
        drivers: Drivers,
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
        let (events, _) = broadcast::channel(1024);
        let split =
            record::split_legacy(db.as_ref()).map_err(|e| std::io::Error::other(e.to_string()))?;
        if split > 0 {
            tracing::info!(
                containers = split,
                "split container records into specs and statuses"
            );
        }
        let this = Arc::new_cyclic(|me: &Weak<Instances>| Instances {
            dir,
            db,
            images,
            actors: Actors::new(me.clone() as Weak<dyn Handler>),
            events,
            execs: Default::default(),
            attached: Default::default(),
            log_watch: Default::default(),
            drivers,
            networks,
            volumes,
            projects,
            cgroup_parent,
            restart_gate: tokio::sync::watch::channel(true).0,
        });
        this.index_names()
            .map_err(|e| std::io::Error::other(e.message()))?;
        Ok(this)
    }

    /// Holds every restart by restart policy (those due go on waiting) until
    /// [`Instances::release_restarts`]: a pool member holds them from its start until its
    /// host agent has removed the copies of instances the pool moved elsewhere while it
    /// was down, so that an old copy is not restarted beside the new one.
    pub fn hold_restarts(&self) {
        self.restart_gate.send_replace(false);
    }

    /// Lets held restarts (and later ones) go.
    pub fn release_restarts(&self) {
        self.restart_gate.send_replace(true);
    }

    /// Waits while restarts are held.
    async fn restarts_allowed(&self) {
        let mut open = self.restart_gate.subscribe();
        let _ = open.wait_for(|o| *o).await;
    }

    /// The cgroup path (`cgroupsPath`) of container `c`.
    pub(crate) fn cgroup_path(&self, c: &ContainerInspect) -> String {
        super::cgroup_parent::cgroup_path(&self.cgroup_parent, c)
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

    pub fn cdir(&self, id: &str) -> PathBuf {
        self.dir.join(id)
    }

    /// The container that holds `name` in the name index, if any.
    fn named(&self, project: &ProjectName, name: &str) -> EngineResult<Option<String>> {
        Ok(self
            .db
            .get_json::<String>(Table::Meta, &name_key(project, name))?)
    }

    /// Adds taking `name` for container `id` to `b`: the commit fails (as a conflict,
    /// see [`name_taken`]) if another container holds it by then.
    fn take_name(&self, b: &mut Batch, project: &ProjectName, name: &str, id: &str) {
        let k = name_key(project, name);
        b.require(Table::Meta, k.clone(), Expect::Absent);
        b.put_json(Table::Meta, k, &id.to_string());
    }

    /// Adds freeing `name` to `b`, if container `id` holds it (and still does at the
    /// commit).
    fn free_name(
        &self,
        b: &mut Batch,
        project: &ProjectName,
        name: &str,
        id: &str,
    ) -> EngineResult<()> {
        let k = name_key(project, name);
        if let Some(kv) = self.db.get_kv(Table::Meta, &k)? {
            if serde_json::from_slice::<String>(&kv.value).is_ok_and(|v| v == id) {
                b.require(Table::Meta, k.clone(), Expect::ModRevision(kv.mod_revision));
                b.delete(Table::Meta, k);
            }
        }
        Ok(())
    }

    /// Indexes the names of containers recorded before the name index existed (or
    /// whose index entry a crash lost with a lazily written record).
    fn index_names(&self) -> EngineResult<()> {
        let mut b = Batch::new();
        for c in record::load_all(self.db.as_ref(), "")? {
            if self.named(&c.project, &c.name)?.is_none() {
                self.take_name(&mut b, &c.project, &c.name, &c.id);
            }
        }
        b.commit(self.db.as_ref())?;
        Ok(())
    }

    /// Asks container `id`'s actor to do `op` (see [`crate::instances::actor`]); a
    /// client's request is answered busy when too many wait already.
    async fn ask(
        &self,
        project: &ProjectName,
        id: &str,
        op: Op,
    ) -> EngineResult<Option<ContainerInspect>> {
        self.actors.ask(project, id, op).await
    }

    /// Borrows container `id` from its actor, from a blocking thread of the runtime
    /// (copies into and out of it).
    pub(crate) fn hold_blocking(&self, id: &str) -> EngineResult<Hold> {
        tokio::runtime::Handle::current().block_on(self.actors.hold(id))
    }

    /// Container `id` as stored, read by its actor; a container that is gone has its
    /// actor ended.
    fn current(&self, project: &ProjectName, id: &str) -> EngineResult<Instance> {
        match record::load(self.db.as_ref(), project, id)? {
            Some(c) => Ok(c),
            None => {
                self.actors.forget(id, None);
                Err(not_found(id))
            }
        }
    }

    /// How many containers have an actor now.
    pub fn actors(&self) -> usize {
        self.actors.len()
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

    /// Writes a container's status (the host side's), durably.
    fn save(&self, c: &Instance) -> EngineResult<()> {
        self.save_with(c, true)
    }

    /// Writes a container's status; `durable` false for a state a crash may lose because
    /// the monitor's files say it again at the next start (a start: `state.json`; see
    /// [`Instances::restore`], which adopts a start the record never heard of).
    fn save_with(&self, c: &Instance, durable: bool) -> EngineResult<()> {
        Ok(self.commit_record(Batch::new(), c, Write::Status, durable)?)
    }

    /// Writes what `what` names of a container's records along with what `b` already
    /// holds, in one transaction, with the store's error as it is (a conflict: a compare
    /// of `b` did not hold).
    fn commit_record(
        &self,
        mut b: Batch,
        c: &Instance,
        what: Write,
        durable: bool,
    ) -> Result<(), StoreError> {
        if what != Write::Status {
            record::put_spec(&mut b, c);
        }
        if what != Write::Spec {
            record::put_status(&mut b, c);
        }
        if durable {
            b.commit(self.db.as_ref())?;
        } else {
            b.commit_lazy(self.db.as_ref())?;
        }
        self.actors.publish(&c.id, &c.state);
        Ok(())
    }

    fn instances(&self, project: &ProjectName) -> EngineResult<Vec<Instance>> {
        Ok(record::load_all(self.db.as_ref(), &format!("{project}/"))?)
    }

    /// Every instance of every project, as stored (for `/metrics` and the pool's mirror).
    pub fn every(&self) -> EngineResult<Vec<ContainerInspect>> {
        Ok(record::load_all(self.db.as_ref(), "")?
            .into_iter()
            .map(Instance::into_inspect)
            .collect())
    }

    pub(crate) fn all(&self, project: &ProjectName) -> EngineResult<Vec<ContainerInspect>> {
        Ok(self
            .instances(project)?
            .into_iter()
            .map(Instance::into_inspect)
            .collect())
    }

    /// Finds a container by full ID, name, or unique ID prefix.
    /// A VM's shows what runs it.
    pub fn get(&self, ctx: &RequestContext, name_or_id: &str) -> EngineResult<ContainerInspect> {
        let mut c = self.lookup(ctx.project(), name_or_id)?;
        if c.config.runtime.as_deref() == Some(super::vm::RUNTIME) {
            c.vm = Some(super::vm::inspect(&self.cdir(&c.id)));
        }
        Ok(c)
    }

    /// As [`Instances::get`], for the engine's own work in `project`.
    pub(crate) fn lookup(
        &self,
        project: &ProjectName,
        name_or_id: &str,
    ) -> EngineResult<ContainerInspect> {
        Ok(self.find(project, name_or_id)?.into_inspect())
    }

    /// As [`Instances::get`], with its desired state.
    fn find(&self, project: &ProjectName, name_or_id: &str) -> EngineResult<Instance> {
        let db = self.db.as_ref();
        if let Some(c) = record::load(db, project, name_or_id)? {
            return Ok(c);
        }
        let name = name_or_id.trim_start_matches('/');
        if let Some(id) = self.named(project, name)? {
            if let Some(c) = record::load(db, project, &id)? {
                return Ok(c);
            }
        }
        let matches: Vec<Instance> = self
            .instances(project)?
            .into_iter()
            .filter(|c| !name_or_id.is_empty() && c.id.starts_with(name_or_id))
            .collect();
        match matches.len() {
            1 => Ok(matches.into_iter().next().expect("one")),
            0 => Err(not_found(name_or_id)),
            _ => Err(invalid(format!(
                "container ID prefix {name_or_id:?} matches several containers; give more of it"
            ))),
        }
    }

    // ---- create ------------------------------------------------------------------------

    pub fn create(&self, ctx: &RequestContext, req: ContainerCreate) -> EngineResult<Created> {
        self.create_as(ctx, req, None)
    }

    /// As [`Instances::create`], with the ID the pool's placement chose for the instance
    /// (its agent creates it so); refuses an ID in use on this host.
    pub fn create_with_id(
        &self,
        ctx: &RequestContext,
        req: ContainerCreate,
        id: &ContainerId,
    ) -> EngineResult<Created> {
        self.create_as(ctx, req, Some(id.to_string()))
    }

    fn create_as(
        &self,
        ctx: &RequestContext,
        req: ContainerCreate,
        given_id: Option<String>,
    ) -> EngineResult<Created> {
        let project = ctx.project();
        if let Some(id) = &given_id {
            if self.cdir(id).exists() || record::load(self.db.as_ref(), project, id)?.is_some() {
                return Err(conflict(format!(
                    "instance ID {id} is in use on this host; place the instance again for a new ID"
                )));
            }
        }
        let t0 = std::time::Instant::now();
        validate(&req)?;
        let mut req = req;
        self.docker_options(project, &mut req)?;
        // Pinned in memory until the record and its durable pin are written: no removal
        // can take the image in between.
        let (image, _pin) = self.images.resolve_pinned(project, &req.image)?;
        let name = req.name.clone().unwrap_or_default();
        // Checked now to fail early; the record's commit takes the name in the index
        // only if it is still free, so two creates cannot both take one.
        if !name.is_empty() && self.named(project, &name)?.is_some() {
            return Err(name_taken(&name));
        }
        let mut networks = self.networks.endpoints_for_create(project, &req)?;
        if let Some(first) = networks.values_mut().next() {
            first.options = req.endpoint.clone();
        }
        if let Some(other) = req
            .network
            .as_deref()
            .and_then(|m| m.strip_prefix("container:"))
        {
            self.lookup(project, other)?;
        }
        let id = given_id.unwrap_or_else(random_id);
        let name = if name.is_empty() {
            random_name(&id)
        } else {
            name
        };
        let config = self.images.config(&image)?;
        let img = config.get("config").cloned().unwrap_or_default();
        let command = command_of(&req, &img);
        let mut mounts = plan_mounts(&req, &img)?;
        self.volumes_from(project, &req, &mut mounts)?;
        if let Some(d) = req.volume_driver.as_deref().filter(|d| *d != "local") {
            if mounts.iter().any(|m| m.kind == MountKind::Volume) {
                return Err(invalid(format!(
                    "volume driver {d:?} is not supported by pier: its volumes are local; leave out --volume-driver"
                )));
            }
        }
        layer_limit(&req)?;
        if command.is_empty() {
            return Err(invalid(
                "no command given and the image has none; give one after the image name",
            ));
        }
        let mut c = Instance::new(ContainerInspect {
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
            vm: None,
        });
        self.create_steps(&mut c, &img)?;
        let t_files = t0.elapsed();
        self.emit(&c, "create", &[]);
        log_action(ctx, &c.id, "created");
        tracing::debug!(container = %c.id, files_us = t_files.as_micros() as u64, total_us = t0.elapsed().as_micros() as u64, "created");
        Ok(Created {
            id: ContainerId::try_from(c.id.clone()).map_err(|e| internal(e.to_string()))?,
            name: c.name.clone(),
        })
    }

    /// The steps of a create after the checks, each undone if a later one fails: the
    /// volumes made for it (anonymous ones), the instance on this host (its directory,
    /// writable layer and bundle), its record.
    fn create_steps(&self, c: &mut Instance, img: &serde_json::Value) -> EngineResult<()> {
        let project = c.project.clone();
        let mut undo = Undo::default();
        let id = c.id.clone();
        let made = self.volumes.attach(&project, &id, &mut c.mounts)?;
        let (vols, p, id, mounts) = (
            self.volumes.clone(),
            project.clone(),
            c.id.clone(),
            c.mounts.clone(),
        );
        undo.push(move || vols.undo_attach(&p, &id, &mounts, &made));
        let net = self.network_attachment(c);
        let vols = self.volume_attachments(c);
        self.driver_of(c).prepare(c, img, &net, &vols)?;
        let (driver, c2) = (self.driver_of(c).clone(), c.clone().into_inspect());
        undo.push(move || driver.destroy(&c2));
        self.save_new(c)?;
        undo.commit();
        Ok(())
    }

    /// How a container reaches the network, for its driver.
    fn network_attachment(&self, c: &ContainerInspect) -> NetworkAttachment {
        match c.config.network.as_deref() {
            Some("host") => NetworkAttachment::Host,
            Some("none") => NetworkAttachment::Isolated,
            // Bridge networks and `container:`: a namespace file made at each start.
            _ => NetworkAttachment::Namespace(self.networks.netns_path(&c.id)),
        }
    }

    /// The container's volumes as its driver sees them (block devices not attached).
    fn volume_attachments(&self, c: &ContainerInspect) -> Vec<VolumeAttachment> {
        let mut out = Vec::new();
        for m in c.mounts.iter().filter(|m| m.kind == MountKind::Volume) {
            let name = m.source.clone().unwrap_or_default();
            let block = m.options.get("block").map(String::as_str);
            let (kind, host_path) = match block {
                Some("device") => (
                    VolumeKind::BlockDevice,
                    self.volumes.device_node(&c.project, &name),
                ),
                Some(_) => (
                    VolumeKind::BlockFilesystem,
                    self.volumes.mountpoint(&c.project, &name),
                ),
                None => (
                    VolumeKind::Directory,
                    self.volumes.mountpoint(&c.project, &name),
                ),
            };
            out.push(VolumeAttachment {
                copy_up: block.is_none() && !m.options.contains_key("nocopy"),
                name,
                target: m.target.clone(),
                host_path,
                kind,
                read_only: m.read_only,
                minor: None,
            });
        }
        out
    }

    /// Writes a new container's records (and its image's pin). A `--rm` container's
    /// records are written without waiting for the disk: a crash may lose them, and its
    /// directory keeps a copy (written by its driver) from which `restore` adopts it if
    /// it runs; if it does not, nothing is lost, as it would be removed. Others wait.
    fn save_new(&self, c: &Instance) -> EngineResult<()> {
        let mut b = Batch::new();
        self.take_name(&mut b, &c.project, &c.name, &c.id);
        let holder = pier_image::store::container_holder(&c.id);
        self.images
            .pin_for(&mut b, &c.project, &c.image_id, &holder);
        self.commit_record(b, c, Write::Both, !c.config.auto_remove)
            .map_err(|e| name_error(e, &c.name))
    }

    fn attach_volumes(&self, c: &ContainerInspect) -> EngineResult<Vec<VolumeAttachment>> {
        let minors = self.volumes.attach_block(&c.project, &c.mounts)?;
        let mut vols = self.volume_attachments(c);
        // In the order of the mounts, as the volumes attached them.
        let mut minors = minors.into_iter();
        for v in vols
            .iter_mut()
            .filter(|v| v.kind == VolumeKind::BlockDevice)
        {
            v.minor = minors.next();
        }
        Ok(vols)
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

    // ---- start and exit ----------------------------------------------------------------

    pub async fn start(
        self: &Arc<Self>,
        ctx: &RequestContext,
        name: &str,
    ) -> EngineResult<ContainerInspect> {
        let project = ctx.project();
        let c = self.lookup(project, name)?;
        let started = self
            .ask(project, &c.id, Op::Start)
            .await?
            .ok_or_else(|| not_found(name))?;
        log_action(ctx, &c.id, "started");
        Ok(started)
    }

    /// [`Op::Start`]: records that it is to run, then starts it. The desired state is
    /// written without waiting for the disk, as the start's own record is.
    async fn start_op(self: &Arc<Self>, mut c: Instance) -> EngineResult<ContainerInspect> {
        match c.state.status {
            ContainerStatus::Running | ContainerStatus::Paused => return Ok(c.into_inspect()),
            ContainerStatus::Removing => {
                return Err(conflict(format!("container {} is being removed", c.name)))
            }
            _ => {}
        }
        c.desire(Run::Running);
        self.commit_record(Batch::new(), &c, Write::Spec, false)?;
        self.start_locked(c).await
    }

    /// Networking of a container about to start: interfaces, ports, and its
    /// /etc/hosts and /etc/resolv.conf. Fills in `c.networks` and `c.ports`.
    async fn setup_network(&self, c: &mut Instance) -> EngineResult<()> {
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
            let o = self.lookup(&c.project, other)?;
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
        let project = c.project.clone();
        let pending: Vec<String> = c
            .networks
            .iter()
            .filter(|(_, ep)| ep.network_id.is_empty())
            .map(|(name, _)| name.clone())
            .collect();
        for name in pending {
            self.networks.mirror_on_demand(&project, &name).await;
        }
        self.networks.resolve_pending(&project, &mut c.networks)?;
        let attached = self.networks.attach(c, &exposed, None).await?;
        let first_ip = attached
            .endpoints
            .get(c.config.network.as_deref().unwrap_or(DEFAULT_NETWORK))
            .and_then(|e| e.ip_address.map(|ip| ip.to_string()));
        for (name, ep) in attached.endpoints {
            c.networks.insert(name, ep);
        }
        c.ports = attached.ports;
        for ep in c.networks.values() {
            if let Err(e) = self.networks.add_link_local(c, ep).await {
                self.teardown_network(c).await;
                return Err(e);
            }
        }
        let first = self.networks.get(&c.project, &mode).ok();
        let r = (|| {
            let links = self.legacy_links(c)?;
            let env = links.as_ref().map(|(_, env)| env.as_slice()).unwrap_or(&[]);
            if c.config.runtime.as_deref() != Some(super::vm::RUNTIME) {
                self.write_link_env(c, env)?;
            }
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
            if let Some((lines, _)) = &links {
                hosts.push_str(lines);
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
    async fn teardown_network(&self, c: &mut Instance) {
        self.networks.detach(c).await;
        for ep in c.networks.values_mut() {
            ep.ip_address = None;
            ep.prefix_len = None;
            ep.gateway = None;
            ep.mac_address = None;
            ep.interface = None;
            ep.ip6_address = None;
            ep.prefix6_len = None;
            ep.gateway6 = None;
        }
        c.ports.clear();
    }

    /// `--pid`/`--ipc container:NAME`: points the bundle's namespaces at that container's,
    /// which must run now (they are looked for again at each start, as Docker does). An
    /// IPC namespace is joined only if its container was made `--ipc shareable`.
    fn join_shared_namespaces(&self, c: &ContainerInspect) -> EngineResult<()> {
        for (kind, other) in super::host_access::shared_with(&c.config) {
            let o = self.lookup(&c.project, other)?;
            let pid = match (o.state.status, o.state.pid) {
                (ContainerStatus::Running | ContainerStatus::Paused, Some(pid)) => pid,
                _ => {
                    return Err(conflict(format!(
                        "cannot join the {} namespace of container {}: it is not running",
                        kind.to_uppercase(),
                        o.name
                    )))
                }
            };
            if kind == "ipc" && !super::host_access::ipc_shareable(&o.config) {
                return Err(conflict(format!(
                    "cannot join the IPC namespace of container {}: it is not shareable; create it with --ipc shareable",
                    o.name
                )));
            }
            super::container::join_namespace_of(&self.cdir(&c.id), kind, pid)?;
        }
        Ok(())
    }

    /// Starts a container that does not run, and records how it went (as the latest
    /// desired state acted on).
    async fn start_locked(self: &Arc<Self>, mut c: Instance) -> EngineResult<ContainerInspect> {
        let t0 = std::time::Instant::now();
        c.observe();
        let prepared = match self.join_shared_namespaces(&c) {
            Ok(()) => self.setup_network(&mut c).await,
            Err(e) => Err(e),
        };
        if let Err(e) = prepared {
            c.state.error = Some(e.message().clone());
            self.save(&c)?;
            if c.config.auto_remove {
                // `--rm`: a container that cannot start leaves nothing behind.
                self.remove_locked(&c, true)?;
            }
            return Err(e);
        }
        let this = self.clone();
        let c2 = c.clone().into_inspect();
        // The volumes, then the instance; a start that fails leaves neither attached.
        let reply = tokio::task::spawn_blocking(move || -> EngineResult<Started> {
            let vols = this.attach_volumes(&c2)?;
            let r = this.driver_of(&c2).start(&c2, &vols);
            if !matches!(r, Ok(Started::Running(_))) {
                this.release_block_volumes(&c2);
            }
            r
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
        let (kind, code, msg) = match reply {
            Started::Running(h) => {
                c.state = ContainerState {
                    status: ContainerStatus::Running,
                    pid: Some(h.pid),
                    monitor_pid: h.monitor_pid,
                    exit_code: None,
                    error: None,
                    oom_killed: false,
                    started_at: Some(h.started_at),
                    finished_at: None,
                    restart_count: c.state.restart_count,
                    stopped_by_user: false,
                    health: None,
                };
                if let Err(e) = self.save_with(&c, false) {
                    // Unrecorded, it would run watched by nobody: it stops again.
                    self.undo_run(&mut c).await;
                    return Err(e);
                }
                self.emit(&c, "start", &[]);
                self.watch_exit(&c);
                tracing::debug!(container = %c.id, monitor_us = t_monitor.as_micros() as u64, total_us = t0.elapsed().as_micros() as u64, "started");
                return Ok(c.into_inspect());
            }
            Started::Failed {
                kind,
                exit_code,
                message,
            } => (kind, exit_code, message),
        };
        // The container did not start: nothing of it may stay.
        self.teardown_network(&mut c).await;
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
        Err(
            EngineError::new(kind, format!("container {} failed to start: {msg}", c.name))
                .with_exit_code(code),
        )
    }

    /// Waits (in a task) for the container to exit (its driver says when), then
    /// records the exit.
    fn watch_exit(self: &Arc<Self>, c: &ContainerInspect) {
        let Some(handle) = handle_of(c) else {
            return;
        };
        let exited = self.driver_of(c).wait(c, &handle);
        let this = self.clone();
        let (project, id) = (c.project.clone(), c.id.clone());
        tokio::spawn(async move {
            exited.await;
            if let Err(e) = this.ask(&project, &id, Op::Exited(None)).await {
                tracing::error!(container = %id, error = %e.message(), "recording a container's exit");
            }
        });
    }

    /// Undoes a start whose record could not be written: kills the run, releases what
    /// it held. The record keeps its state from before the start.
    async fn undo_run(&self, c: &mut Instance) {
        let driver = self.driver_of(c).clone();
        let c2 = c.clone().into_inspect();
        let _ = tokio::task::spawn_blocking(move || {
            driver.kill_all(&c2);
            driver.reap(&c2);
        })
        .await;
        self.release_block_volumes(c);
        self.teardown_network(c).await;
    }

    /// [`Op::Exited`]: records an exit (`exit`, or what the driver reaps), releases what
    /// the run held and applies `--rm` and the restart policy.
    async fn on_exit(
        self: &Arc<Self>,
        mut c: Instance,
        exit: Option<ExitInfo>,
    ) -> EngineResult<()> {
        let t0 = std::time::Instant::now();
        let id = c.id.clone();
        if !matches!(
            c.state.status,
            ContainerStatus::Running | ContainerStatus::Paused
        ) {
            return Ok(());
        }
        let reaped = self.driver_of(&c).reap(&c);
        let exit = exit.unwrap_or(reaped);
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
            let this = self.clone();
            let project = c.project.clone();
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                this.restarts_allowed().await;
                if let Err(e) = this.ask(&project, &id, Op::Restart).await {
                    tracing::warn!(container = %id, error = %e.message(), "restart failed");
                }
            });
        }
        Ok(())
    }

    /// [`Op::Restart`]: starts a container its restart policy restarts, unless a request
    /// stopped (or removed) it meanwhile.
    async fn restart_op(self: &Arc<Self>, c: Instance) -> EngineResult<Option<ContainerInspect>> {
        if c.state.status != ContainerStatus::Restarting || c.state.stopped_by_user {
            return Ok(None);
        }
        self.emit(&c, "restart", &[]);
        self.start_locked(c).await.map(Some)
    }

    // ---- signals, stop, remove ---------------------------------------------------------

    /// Sends `sig` to the container's main process.
    fn signal(&self, c: &ContainerInspect, sig: i32) -> EngineResult<()> {
        self.driver_of(c).signal(c, sig)
    }

    fn watcher(&self, c: &ContainerInspect) -> watch::Receiver<ContainerState> {
        self.actors.watch(&c.id, &c.state)
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

    /// Kills (SIGKILL by default) or signals a running container; a SIGKILL waits up to
    /// [`KILL_WAIT`] for it to have stopped.
    pub async fn kill(
        &self,
        ctx: &RequestContext,
        name: &str,
        signal: Option<&str>,
    ) -> EngineResult<()> {
        let project = ctx.project();
        let c = self.lookup(project, name)?;
        let signal = parse_signal(signal.unwrap_or("KILL"))?;
        self.ask(project, &c.id, Op::Kill { signal }).await?;
        if signal == libc::SIGKILL {
            // As Docker's: a kill answers once the container has stopped, so that an
            // inspect or an unforced remove right after sees it stopped.
            self.wait_stopped(&c, Some(KILL_WAIT)).await;
        }
        log_action(ctx, &c.id, "killed");
        Ok(())
    }

    /// [`Op::Kill`]: SIGKILL and SIGTERM record that it is to stay stopped (before the
    /// signal, durably: a daemon that dies before sending it leaves the request for the
    /// instance reconciler).
    fn kill_op(&self, mut c: Instance, sig: i32) -> EngineResult<()> {
        if !is_running(&c) {
            return Err(conflict(format!("container {} is not running", c.name)));
        }
        let stop = sig == libc::SIGKILL || sig == libc::SIGTERM;
        if stop {
            c.desire(Run::Stopped);
            self.commit_record(Batch::new(), &c, Write::Spec, true)?;
        }
        if c.state.status == ContainerStatus::Paused {
            let _ = self.driver_of(&c).pause(&c, false);
        }
        self.signal(&c, sig)?;
        if stop {
            c.observe();
            self.save_with(&c, false)?;
        }
        self.emit(&c, "kill", &[("signal", sig.to_string())]);
        Ok(())
    }

    pub async fn stop(
        &self,
        ctx: &RequestContext,
        name: &str,
        t: Option<u64>,
        signal: Option<&str>,
    ) -> EngineResult<()> {
        let project = ctx.project();
        let c = self.lookup(project, name)?;
        let sig = parse_signal(&self.stop_signal_of(&c, signal))?;
        let t = t.or(c.config.stop_timeout);
        let Some(c) = self.ask(project, &c.id, Op::Stop { signal: sig }).await? else {
            return Ok(());
        };
        self.escalate(&c, Duration::from_secs(t.unwrap_or(10)))
            .await?;
        self.emit(&c, "stop", &[]);
        log_action(ctx, &c.id, "stopped");
        Ok(())
    }

    /// Waits up to `grace` for a container sent its stop signal to exit, then kills it.
    async fn escalate(&self, c: &ContainerInspect, grace: Duration) -> EngineResult<()> {
        if !self.wait_stopped(c, Some(grace)).await {
            self.ask(
                &c.project,
                &c.id,
                Op::Signal {
                    signal: libc::SIGKILL,
                },
            )
            .await?;
            self.wait_stopped(c, Some(Duration::from_secs(30))).await;
        }
        Ok(())
    }

    /// [`Op::Stop`]: records that it is to stay stopped and sends `sig`; returns the
    /// container if it was running (its asker waits for the exit).
    fn stop_op(&self, mut c: Instance, sig: i32) -> EngineResult<Option<ContainerInspect>> {
        if c.state.status == ContainerStatus::Restarting {
            c.desire(Run::Stopped);
            c.observe();
            c.state.status = ContainerStatus::Exited;
            self.commit_record(Batch::new(), &c, Write::Both, true)?;
            return Ok(None);
        }
        if !is_running(&c) {
            return Ok(None);
        }
        c.desire(Run::Stopped);
        self.commit_record(Batch::new(), &c, Write::Spec, true)?;
        if c.state.status == ContainerStatus::Paused {
            let _ = self.driver_of(&c).pause(&c, false);
        }
        self.signal(&c, sig)?;
        c.observe();
        self.save_with(&c, false)?;
        Ok(Some(c.into_inspect()))
    }

    pub async fn remove(
        &self,
        ctx: &RequestContext,
        name: &str,
        force: bool,
        volumes: bool,
    ) -> EngineResult<()> {
        let project = ctx.project();
        let c = self.lookup(project, name)?;
        // A running container is killed first (with `force`), and its exit awaited here:
        // the exit is its actor's to record. It may be started again meanwhile (by its
        // reconciler), so the actor decides on what it finds each time.
        for _ in 0..3 {
            let Some(running) = self
                .ask(project, &c.id, Op::Remove { volumes, force })
                .await?
            else {
                log_action(ctx, &c.id, "removed");
                return Ok(());
            };
            if !self
                .wait_stopped(&running, Some(Duration::from_secs(30)))
                .await
            {
                break;
            }
        }
        Err(EngineError::new(
            ErrorKind::Unavailable,
            format!("container {} did not stop; try again", c.name),
        ))
    }

    /// [`Op::Remove`]: removes a container that does not run; one that runs is refused,
    /// or, with `force`, killed and returned (its asker waits for the exit and asks again).
    fn remove_op(
        &self,
        c: Instance,
        volumes: bool,
        force: bool,
    ) -> EngineResult<Option<ContainerInspect>> {
        // Between runs of its restart policy a container is not running, but it is not
        // stopped either: only a forced remove takes it, as Docker's does.
        if c.state.status == ContainerStatus::Restarting && !force {
            return Err(conflict(format!(
                "You cannot remove a restarting container {}. Stop the container before attempting removal or force remove",
                c.id
            )));
        }
        if !is_running(&c) {
            return self.remove_locked(&c, volumes).map(|()| None);
        }
        if !force {
            return Err(conflict(format!(
                "container {} is running: stop it first, or remove it with --force",
                c.name
            )));
        }
        let view = c.clone().into_inspect();
        self.kill_op(c, libc::SIGKILL)?;
        Ok(Some(view))
    }

    /// Removes everything of a stopped container; with `volumes`, its anonymous volumes
    /// too (`rm -v`, and `--rm` containers).
    fn remove_locked(&self, c: &ContainerInspect, volumes: bool) -> EngineResult<()> {
        let project = &c.project;
        self.driver_of(c).destroy(c);
        let mut b = Batch::new();
        self.free_name(&mut b, project, &c.name, &c.id)?;
        record::delete(&mut b, project, &c.id);
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
                if anonymous && self.users_of_volume(project, name)?.is_empty() {
                    match self.volumes.remove(project, name) {
                        Ok(()) => {}
                        // Removed meanwhile with another container that shared it
                        // (`--volumes-from`, both removed at once by `rm -v a b`).
                        Err(e) if e.kind() == ErrorKind::NotFound => {}
                        Err(e) => return Err(e),
                    }
                }
            }
            Ok(())
        })();
        let mut last = c.state.clone();
        last.status = ContainerStatus::Removing;
        self.actors.forget(&c.id, Some(last));
        self.emit(c, "destroy", &[]);
        removed
    }

    /// A running `--rm` container whose record a crash lost (it is written lazily),
    /// found by its driver: the driver's copy of the record becomes the record again.
    fn adopt_unrecorded(
        self: &Arc<Self>,
        c: ContainerInspect,
        h: InstanceHandle,
    ) -> EngineResult<()> {
        let mut c = Instance::new(c);
        c.desire(Run::Running);
        c.observe();
        c.state.status = ContainerStatus::Running;
        c.state.pid = Some(h.pid);
        c.state.monitor_pid = h.monitor_pid;
        c.state.started_at = Some(h.started_at);
        let mut b = Batch::new();
        match self.named(&c.project, &c.name)? {
            Some(holder) if holder == c.id => {}
            held => {
                if held.is_some() {
                    // Its name was given to another container meanwhile: a new one.
                    c.name = random_name(&c.id);
                }
                self.take_name(&mut b, &c.project, &c.name, &c.id);
            }
        }
        let holder = pier_image::store::container_holder(&c.id);
        self.images
            .pin_for(&mut b, &c.project, &c.image_id, &holder);
        self.commit_record(b, &c, Write::Both, true)?;
        tracing::info!(container = %c.id, "adopted a running container whose record was lost");
        self.watch_exit(&c);
        Ok(())
    }

    /// Removes a volume no container uses (`pier volume rm`).
    pub fn remove_volume(&self, ctx: &RequestContext, name: &str) -> EngineResult<()> {
        let project = ctx.project();
        self.volumes.get(project, name)?;
        let users = self.users_of_volume(project, name)?;
        if !users.is_empty() {
            return Err(conflict(format!(
                "volume {name} is in use by container(s) {}: remove them first",
                users.join(", ")
            )));
        }
        self.volumes.remove(project, name)?;
        tracing::info!(project = %ctx.project, caller = %ctx.caller, volume = name, "volume removed");
        Ok(())
    }

    /// Removes volumes no container uses: anonymous ones, or all with `all`.
    pub fn prune_volumes(&self, ctx: &RequestContext, all: bool) -> EngineResult<Vec<String>> {
        self.prune_volumes_where(ctx, all, &Default::default())
    }

    /// [`prune_volumes`](Self::prune_volumes) of the volumes whose labels pass the
    /// `label` and `label!` filters (`key` or `key=value`).
    pub fn prune_volumes_where(
        &self,
        ctx: &RequestContext,
        all: bool,
        f: &crate::filters::Filters,
    ) -> EngineResult<Vec<String>> {
        use crate::filters;
        let project = ctx.project();
        let removed = self.volumes.prune(project, all, &|v| {
            let picked = filters::labels(f, &v.labels)
                && f.get("label!")
                    .is_none_or(|n| n.iter().all(|w| !filters::label_matches(&v.labels, w)));
            Ok(!picked || !self.users_of_volume(project, &v.name)?.is_empty())
        })?;
        tracing::info!(project = %ctx.project, caller = %ctx.caller, all, removed = ?removed, "volumes pruned");
        Ok(removed)
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
        ctx: &RequestContext,
        name: &str,
        snap: &str,
    ) -> EngineResult<()> {
        let project = ctx.project();
        let users = self.running_users(project, name)?;
        let quiesce = |on: bool| {
            for c in users
                .iter()
                .filter(|c| c.state.status == ContainerStatus::Running)
            {
                let _ = self.driver_of(c).pause(c, on);
            }
        };
        self.volumes.snapshot(project, name, snap, &quiesce)?;
        tracing::info!(project = %ctx.project, caller = %ctx.caller, volume = name, snapshot = snap, "volume snapshot taken");
        Ok(())
    }

    /// Puts a snapshot back; no running container may use the volume meanwhile.
    pub fn restore_volume(&self, ctx: &RequestContext, name: &str, snap: &str) -> EngineResult<()> {
        let project = ctx.project();
        let users = self.running_users(project, name)?;
        if !users.is_empty() {
            let names: Vec<String> = users.into_iter().map(|c| c.name).collect();
            return Err(conflict(format!(
                "volume {name} is in use by running container(s) {}: stop them first",
                names.join(", ")
            )));
        }
        self.volumes.restore(project, name, snap)?;
        tracing::info!(project = %ctx.project, caller = %ctx.caller, volume = name, snapshot = snap, "volume restored from a snapshot");
        Ok(())
    }

    /// Names of the containers that mount volume `name`.
    pub fn volume_users(&self, ctx: &RequestContext, name: &str) -> EngineResult<Vec<String>> {
        self.users_of_volume(ctx.project(), name)
    }

    /// As [`Instances::volume_users`], for the engine's own work in `project`.
    pub(crate) fn users_of_volume(
        &self,
        project: &ProjectName,
        name: &str,
    ) -> EngineResult<Vec<String>> {
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
        ctx: &RequestContext,
        network: &str,
        req: pier_api::networks::NetworkConnect,
    ) -> EngineResult<()> {
        let project = ctx.project();
        let c = self.lookup(project, &req.container)?;
        self.ask(
            project,
            &c.id,
            Op::Connect {
                network: network.to_string(),
                req,
            },
        )
        .await?;
        tracing::info!(project = %ctx.project, caller = %ctx.caller, network, container = %c.name, "container connected to a network");
        Ok(())
    }

    /// [`Op::Connect`].
    async fn connect_op(
        &self,
        mut c: Instance,
        network: &str,
        req: pier_api::networks::NetworkConnect,
    ) -> EngineResult<()> {
        self.networks.mirror_on_demand(&c.project, network).await;
        let n = self.networks.get(&c.project, network)?;
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
            .endpoint_request(&n, req.ip, req.mac_address, &req.aliases)?;
        ep.static_ip6 = self.networks.check_ip6(&n, req.ip6)?;
        ep.options = req.options.clone();
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
            if let Err(e) = self.networks.add_link_local(&c, &ep).await {
                let _ = self.networks.unplug(&c, &n.id).await;
                return Err(e);
            }
            let one = BTreeMap::from([(n.name.clone(), ep.clone())]);
            self.networks.index_names(&c, &one);
        }
        c.networks.insert(n.name.clone(), ep);
        self.commit_record(Batch::new(), &c, Write::Both, true)?;
        self.emit(&c, "connect", &[("network", n.name.clone())]);
        Ok(())
    }

    /// Takes a container off a network (`pier network disconnect`).
    pub async fn disconnect(
        &self,
        ctx: &RequestContext,
        network: &str,
        container: &str,
    ) -> EngineResult<()> {
        let project = ctx.project();
        let c = self.lookup(project, container)?;
        self.ask(
            project,
            &c.id,
            Op::Disconnect {
                network: network.to_string(),
            },
        )
        .await?;
        tracing::info!(project = %ctx.project, caller = %ctx.caller, network, container = %c.name, "container disconnected from a network");
        Ok(())
    }

    /// [`Op::Disconnect`].
    async fn disconnect_op(&self, mut c: Instance, network: &str) -> EngineResult<()> {
        let n = self.networks.get(&c.project, network)?;
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
        self.commit_record(Batch::new(), &c, Write::Both, true)?;
        self.emit(&c, "disconnect", &[("network", n.name.clone())]);
        Ok(())
    }

    /// Removes every container that is not running; returns their IDs.
    pub async fn prune(&self, ctx: &RequestContext) -> EngineResult<Vec<String>> {
        let project = ctx.project();
        let mut deleted = Vec::new();
        for c in self.all(project)? {
            if matches!(
                c.state.status,
                ContainerStatus::Created | ContainerStatus::Exited
            ) {
                self.remove(ctx, &c.id, false, false).await?;
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
        ctx: &RequestContext,
        name: &str,
        next_exit: bool,
        removed: bool,
    ) -> EngineResult<impl std::future::Future<Output = WaitResponse> + Send + 'static> {
        let project = ctx.project();
        let c = self.lookup(project, name)?;
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

    pub async fn pause(&self, ctx: &RequestContext, name: &str, paused: bool) -> EngineResult<()> {
        let project = ctx.project();
        let c = self.lookup(project, name)?;
        self.ask(project, &c.id, Op::Pause(paused)).await?;
        Ok(())
    }

    /// [`Op::Pause`].
    fn pause_op(&self, mut c: Instance, paused: bool) -> EngineResult<()> {
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
        self.driver_of(&c).pause(&c, paused)?;
        c.state.status = if paused {
            ContainerStatus::Paused
        } else {
            ContainerStatus::Running
        };
        self.save(&c)?;
        self.emit(&c, if paused { "pause" } else { "unpause" }, &[]);
        Ok(())
    }

    /// Changes a container's limits and restart policy (`pier update`): the running
    /// container's cgroup at once, and its spec for every later start. Returns the
    /// container after.
    pub async fn update(
        &self,
        ctx: &RequestContext,
        name: &str,
        changes: pier_api::containers::ContainerUpdate,
    ) -> EngineResult<ContainerInspect> {
        let project = ctx.project();
        let c = self.lookup(project, name)?;
        self.ask(project, &c.id, Op::Update(Box::new(changes)))
            .await?;
        let c = self.lookup(project, &c.id)?;
        tracing::info!(container = %c.id, project = %project, caller = ?ctx.caller, "updated a container's limits");
        Ok(c)
    }

    /// [`Op::Update`]: the new config is checked as a create's is, given to the driver
    /// (which applies it to a running instance), then recorded.
    fn update_op(
        &self,
        mut c: Instance,
        u: &pier_api::containers::ContainerUpdate,
    ) -> EngineResult<()> {
        if matches!(
            c.state.status,
            ContainerStatus::Removing | ContainerStatus::Restarting
        ) {
            return Err(conflict(format!(
                "container {} is {}: update it once it has settled",
                c.name,
                c.state.status.as_str()
            )));
        }
        let mut config = c.config.clone();
        if let Some(m) = u.memory {
            config.memory = Some(m);
        }
        if let Some(s) = u.memory_swap {
            config.memory_swap = Some(s);
        }
        if let Some(cpus) = u.cpus {
            // 0 lifts the limit, as Docker's `update --cpus 0` does.
            config.cpus = (cpus != 0.0).then_some(cpus);
        }
        if let Some(s) = u.cpu_shares {
            config.cpu_shares = Some(s);
        }
        if let Some(p) = u.pids_limit {
            config.pids_limit = Some(p);
        }
        if let Some(r) = &u.restart_policy {
            if c.config.auto_remove && *r != RestartPolicy::No {
                return Err(invalid(format!(
                    "container {} is removed when it exits (--rm): it cannot have a restart policy",
                    c.name
                )));
            }
            config.restart_policy = r.clone();
        }
        let host_cpus = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        pier_api::limits::check_resources(&config, host_cpus).map_err(invalid)?;
        let before = c.config.clone();
        c.config = config;
        let limits_changed = u.memory.is_some()
            || u.memory_swap.is_some()
            || u.cpus.is_some()
            || u.cpu_shares.is_some()
            || u.pids_limit.is_some();
        if limits_changed {
            self.driver_of(&c).update(&c, u, is_running(&c))?;
        }
        if let Err(e) = self.commit_record(Batch::new(), &c, Write::Spec, true) {
            // The record keeps the old limits: so should the next start.
            c.config = before;
            if limits_changed {
                let _ = self.driver_of(&c).update(&c, u, false);
            }
            return Err(e.into());
        }
        self.emit(&c, "update", &[]);
        Ok(())
    }

    pub async fn rename(
        &self,
        ctx: &RequestContext,
        name: &str,
        new_name: &str,
    ) -> EngineResult<()> {
        let project = ctx.project();
        if !valid_name(new_name) {
            return Err(invalid(format!("invalid container name {new_name:?}")));
        }
        let c = self.lookup(project, name)?;
        self.ask(project, &c.id, Op::Rename(new_name.to_string()))
            .await?;
        Ok(())
    }

    /// [`Op::Rename`].
    async fn rename_op(&self, mut c: Instance, new_name: &str) -> EngineResult<()> {
        if c.name == new_name {
            return Ok(());
        }
        let project = c.project.clone();
        let mut b = Batch::new();
        self.free_name(&mut b, &project, &c.name, &c.id)?;
        self.take_name(&mut b, &project, new_name, &c.id);
        c.name = new_name.to_string();
        self.commit_record(b, &c, Write::Spec, true)
            .map_err(|e| name_error(e, new_name))?;
        // Its DNS names (here, and in the pool's claims) follow, as on Docker.
        self.networks.renamed(&c).await;
        self.emit(&c, "rename", &[]);
        Ok(())
    }

    pub fn list(
        &self,
        ctx: &RequestContext,
        all: bool,
        filter: Option<&str>,
    ) -> EngineResult<Vec<ContainerSummary>> {
        let project = ctx.project();
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
                    kind: super::vm::kind(&c.config).into(),
                    state: c.state.status,
                    status,
                    ports: c.ports.clone(),
                    host: None,
                },
            ));
        }
        out.sort_by(|a, b| b.0.cmp(&a.0));
        Ok(out.into_iter().map(|(_, s)| s).collect())
    }

    pub fn stats(
        &self,
        ctx: &RequestContext,
        name: &str,
    ) -> EngineResult<pier_api::containers::ContainerStats> {
        let project = ctx.project();
        let c = self.lookup(project, name)?;
        let s = if matches!(
            c.state.status,
            ContainerStatus::Running | ContainerStatus::Paused
        ) {
            self.driver_of(&c).stats(&c)
        } else {
            Default::default()
        };
        // cgroup v1 writes "no limit" as the largest page-aligned i64 (0x7FFFFFFFFFFFF000),
        // v2 as u64::MAX: anything from 2^62 up is none.
        let limit = |v: u64| (v < 1 << 62).then_some(v);
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
            host_memory: crate::system::HostInfo::read().memory,
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
        ctx: &RequestContext,
        name: &str,
    ) -> EngineResult<pier_api::containers::TopResponse> {
        let project = ctx.project();
        let c = self.lookup(project, name)?;
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
        let mut pids = self.driver_of(&c).processes(&c);
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
    pub fn inspect_all(&self, ctx: &RequestContext) -> EngineResult<Vec<ContainerInspect>> {
        let project = ctx.project();
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
        self.update_with(project, id, f, |c| self.save(c)).await
    }

    /// As [`Self::update_record`], for what its spec holds (what was asked).
    pub(crate) async fn update_spec(
        &self,
        project: &ProjectName,
        id: &str,
        f: impl FnOnce(&mut ContainerInspect) -> bool,
    ) -> EngineResult<()> {
        self.update_with(project, id, f, |c| {
            Ok(self.commit_record(Batch::new(), c, Write::Spec, true)?)
        })
        .await
    }

    /// Under the container's lock: `f` on its current record, then `write` if it changed.
    async fn update_with(
        &self,
        project: &ProjectName,
        id: &str,
        f: impl FnOnce(&mut ContainerInspect) -> bool,
        write: impl FnOnce(&Instance) -> EngineResult<()>,
    ) -> EngineResult<()> {
        let _hold = self.actors.hold(id).await?;
        let mut c = self.current(project, id)?;
        if f(&mut c) {
            write(&c)?;
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
        mut c: Instance,
        found: Found,
    ) -> EngineResult<()> {
        let Some(s) = found
            .last_start
            .filter(|s| c.state.started_at.as_deref() != Some(s.started_at.as_str()))
        else {
            if c.config.auto_remove && !found.exists {
                // A `--rm` container removed just before a crash that lost the removal's
                // record (it is written lazily).
                return self.remove_locked(&c, true);
            }
            // Its driver killed what ran of it; what the run held goes too.
            self.driver_of(&c).reap(&c);
            return Ok(());
        };
        let mode = c.config.network.as_deref().unwrap_or(DEFAULT_NETWORK);
        let networked = !(mode == "none" || mode == "host" || mode.starts_with("container:"));
        // It was asked to start: the record of that may be lost with the start's.
        if c.desired.run != Run::Running {
            c.desire(Run::Running);
        }
        c.observe();
        c.state.status = ContainerStatus::Running;
        c.state.pid = Some(s.pid);
        c.state.monitor_pid = s.monitor_pid;
        c.state.started_at = Some(s.started_at);
        c.state.exit_code = None;
        c.state.error = None;
        // Its addresses and published ports, written durably before its monitor started.
        let recovered = !networked || {
            self.networks.recover(&mut c)?;
            !c.networks.is_empty() && c.networks.values().all(|e| e.ip_address.is_some())
        };
        self.commit_record(Batch::new(), &c, Write::Both, true)?;
        if found.alive && recovered {
            tracing::info!(container = %c.id, "adopted a container whose start was not recorded");
            self.watch_exit(&c);
            return Ok(());
        }
        let mut exit = None;
        if found.alive {
            self.driver_of(&c).kill_all(&c);
            exit = Some(ExitInfo {
                exit_code: 137,
                finished_at: now_rfc3339(),
                oom_killed: false,
                error: Some(
                    "the daemon stopped while the container was starting; its processes \
                     were killed: start it again"
                        .into(),
                ),
            });
            tracing::info!(container = %c.id, "killed a container whose start on a network was not recorded");
        }
        let (project, id) = (c.project.clone(), c.id.clone());
        self.ask(&project, &id, Op::Exited(exit)).await?;
        Ok(())
    }

    /// At daemon start: re-adopts containers that still run, records the exits that
    /// happened meanwhile, and removes what no record owns (through the driver).
    ///
    /// The daemon may have died at any point of a start: a container is adopted only
    /// when its driver finds it alive; otherwise whatever runs of it is killed before its
    /// exit is recorded and what the run held (mounts, network) is released.
    pub async fn restore(self: &Arc<Self>) -> EngineResult<()> {
        let records = record::load_all(self.db.as_ref(), "")?;
        let mut known = std::collections::HashSet::new();
        for c in records {
            known.insert(c.id.clone());
            let found = self.driver_of(&c).adopt(&c).await;
            match c.state.status {
                ContainerStatus::Running | ContainerStatus::Paused if found.alive => {
                    tracing::info!(container = %c.id, "re-adopted a running container");
                    self.watch_exit(&c);
                }
                ContainerStatus::Running | ContainerStatus::Paused => {
                    self.ask(&c.project, &c.id, Op::Exited(None)).await?;
                }
                ContainerStatus::Restarting => {
                    let this = self.clone();
                    tokio::spawn(async move {
                        this.restarts_allowed().await;
                        if let Err(e) = this.ask(&c.project, &c.id, Op::Restart).await {
                            tracing::warn!(container = %c.id, error = %e.message(), "restart after daemon restart failed");
                        }
                    });
                }
                _ => self.restore_unrecorded_start(c, found).await?,
            }
        }
        // What the host has of containers that never got a record (a crash during
        // create) or whose removal was interrupted; running `--rm` ones are adopted.
        // Every kind keeps its instances in the same directory layout: the
        // containers' driver sweeps them all.
        for (c, h) in self.drivers.container.sweep(&known) {
            self.adopt_unrecorded(c, h)?;
        }
        // Statuses whose spec is gone (no transaction leaves one; a hand-edited store may).
        let mut b = Batch::new();
        if record::drop_orphan_statuses(self.db.as_ref(), &mut b)? > 0 {
            b.commit(self.db.as_ref())?;
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

    /// Prepares an exec in a running container: the command line to spawn (for
    /// [`crate::sessions::exec`], which spawns and reaps it).
    pub(crate) fn exec_command(
        &self,
        project: &ProjectName,
        name: &str,
        req: &pier_api::containers::ExecCreate,
    ) -> EngineResult<(ContainerInspect, std::process::Command)> {
        let c = self.lookup(project, name)?;
        if c.state.status != ContainerStatus::Running {
            return Err(conflict(format!(
                "container {} is not running; start it first",
                c.name
            )));
        }
        if req.cmd.is_empty() {
            return Err(invalid("give a command to run"));
        }
        let cmd = self.driver_of(&c).exec(&c, req)?;
        self.emit(&c, "exec_start", &[("execCommand", req.cmd.join(" "))]);
        Ok((c, cmd))
    }

    /// Mounts a container's rootfs (for copies into a stopped container).
    pub(crate) fn mount_rootfs(&self, c: &ContainerInspect) -> EngineResult<()> {
        crate::instances::container::mount_rootfs(&self.images, &self.cdir(&c.id), c)
    }

    /// How this host runs VMs, when it can.
    pub fn vm_facts(&self) -> Option<pier_api::types::VmFacts> {
        self.drivers.vm.as_ref().and_then(|d| d.host_facts())
    }

    /// The driver that realises instance `c`: the VM driver for `--runtime pier-vm`,
    /// the containers' otherwise.
    pub fn driver_of(&self, c: &ContainerInspect) -> &Arc<dyn Driver> {
        self.drivers.of(&c.config)
    }
}

// ---- the actors' requests and the instance reconciler ------------------------------------

impl Handler for Instances {
    fn handle(
        self: Arc<Self>,
        project: ProjectName,
        id: String,
        op: Op,
    ) -> BoxFuture<'static, EngineResult<Option<ContainerInspect>>> {
        Box::pin(async move { self.serve(&project, &id, op).await })
    }
}

impl Instances {
    /// Serves one request of container `id`'s actor, on its current record.
    async fn serve(
        self: &Arc<Self>,
        project: &ProjectName,
        id: &str,
        op: Op,
    ) -> EngineResult<Option<ContainerInspect>> {
        let c = match self.current(project, id) {
            Ok(c) => c,
            // Gone meanwhile: an exit, restart, reconcile or removal has nothing to do.
            Err(EngineError::NotFound(_))
                if matches!(
                    op,
                    Op::Exited(_) | Op::Restart | Op::Reconcile | Op::Remove { .. }
                ) =>
            {
                return Ok(None)
            }
            Err(e) => return Err(e),
        };
        match op {
            Op::Start => self.start_op(c).await.map(Some),
            Op::Stop { signal } => self.stop_op(c, signal),
            Op::Kill { signal } => self.kill_op(c, signal).map(|()| None),
            Op::Signal { signal } => {
                if is_running(&c) {
                    self.signal(&c, signal)?;
                }
                Ok(None)
            }
            Op::Remove { volumes, force } => self.remove_op(c, volumes, force),
            Op::Exited(exit) => self.on_exit(c, exit).await.map(|()| None),
            Op::Restart => self.restart_op(c).await,
            Op::Pause(paused) => self.pause_op(c, paused).map(|()| None),
            Op::Connect { network, req } => self.connect_op(c, &network, req).await.map(|()| None),
            Op::Disconnect { network } => self.disconnect_op(c, &network).await.map(|()| None),
            Op::Rename(name) => self.rename_op(c, &name).await.map(|()| None),
            Op::Update(u) => self.update_op(c, &u).map(|()| None),
            Op::Reconcile => self.reconcile_op(c).await,
        }
    }

    /// [`Op::Reconcile`]: acts on a desired state that no request acted on (the daemon
    /// died between recording a start or stop and making it): a container to run that
    /// does not is started; one to stay stopped that runs gets its stop signal, then
    /// SIGKILL after its stop timeout.
    async fn reconcile_op(
        self: &Arc<Self>,
        mut c: Instance,
    ) -> EngineResult<Option<ContainerInspect>> {
        if c.acted_on() {
            return Ok(None);
        }
        match (c.desired.run, c.state.status) {
            (Run::Running, ContainerStatus::Created | ContainerStatus::Exited) => {
                tracing::info!(container = %c.id, "starting a container whose start was asked for but not made");
                // A start that fails records why in the container's state, as any start.
                return Ok(self.start_locked(c).await.ok());
            }
            (Run::Stopped, ContainerStatus::Running | ContainerStatus::Paused) => {
                tracing::info!(container = %c.id, "stopping a container whose stop was asked for but not made");
                let sig = parse_signal(&self.stop_signal_of(&c, None))?;
                if c.state.status == ContainerStatus::Paused {
                    let _ = self.driver_of(&c).pause(&c, false);
                }
                self.signal(&c, sig)?;
                c.observe();
                self.save(&c)?;
                let grace = Duration::from_secs(c.config.stop_timeout.unwrap_or(10));
                let (this, c) = (self.clone(), c.into_inspect());
                tokio::spawn(async move {
                    if let Err(e) = this.escalate(&c, grace).await {
                        tracing::warn!(container = %c.id, error = %e.message(), "stopping a container");
                    }
                });
                return Ok(None);
            }
            (Run::Stopped, ContainerStatus::Restarting) => {
                c.state.status = ContainerStatus::Exited;
            }
            _ => {}
        }
        c.observe();
        self.save(&c)?;
        Ok(None)
    }

    /// One pass of the instance reconciler: every container whose desired state is ahead
    /// of what its status says was acted on gets [`Op::Reconcile`].
    pub async fn reconcile(&self) -> EngineResult<()> {
        for (project, id) in record::behind(self.db.as_ref())? {
            if let Err(e) = self.ask(&project, &id, Op::Reconcile).await {
                tracing::warn!(container = %id, error = %e.message(), "reconciling a container");
            }
        }
        Ok(())
    }
}

/// How often the instance reconciler passes without a change.
pub const INSTANCE_RECONCILE_PERIOD: Duration = Duration::from_secs(30);

/// How long a SIGKILL's kill waits for the container to have stopped (its exit is
/// recorded when its monitor reaps it, within milliseconds; a VM's takes QEMU's exit).
pub const KILL_WAIT: Duration = Duration::from_secs(10);

/// The instance reconciler: acts on specs whose desired state no request acted on,
/// woken by every change of a spec (see [`crate::reconcile`]).
pub struct InstanceReconciler {
    pub instances: Arc<Instances>,
    pub period: Duration,
}

impl Reconciler for InstanceReconciler {
    fn name(&self) -> &'static str {
        "instances"
    }

    fn watches(&self) -> Vec<(Table, String)> {
        vec![(Table::Containers, String::new())]
    }

    fn period(&self) -> Duration {
        self.period
    }

    fn reconcile(&self) -> BoxFuture<'_, EngineResult<()>> {
        Box::pin(self.instances.reconcile())
    }
}

/// Logs a lifecycle request served, with who asked.
fn log_action(ctx: &RequestContext, id: &str, action: &str) {
    tracing::info!(project = %ctx.project, caller = %ctx.caller, container = %&id[..id.len().min(12)], "container {action}");
}

fn is_running(c: &ContainerInspect) -> bool {
    matches!(
        c.state.status,
        ContainerStatus::Running | ContainerStatus::Paused
    )
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
pub(crate) fn layer_limit(req: &ContainerCreate) -> EngineResult<Option<u64>> {
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

/// A container's status as `ps` words it (`Up 3 minutes`, `Exited (0) 2 seconds ago`) at
/// `now` (Unix seconds).
pub fn status_text(s: &ContainerState, now: i64) -> String {
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

/// Which of a container's records a commit writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Write {
    /// What was asked (the API side's).
    Spec,
    /// What is (the host side's).
    Status,
    Both,
}

fn not_found(name_or_id: &str) -> EngineError {
    EngineError::NotFound(format!(
        "no such container: {name_or_id}; `pier ps -a` lists them"
    ))
}

/// The handle of a running container, from its record.
fn handle_of(c: &ContainerInspect) -> Option<InstanceHandle> {
    c.state.monitor_pid?;
    Some(InstanceHandle {
        pid: c.state.pid.unwrap_or(0),
        monitor_pid: c.state.monitor_pid,
        started_at: c.state.started_at.clone().unwrap_or_default(),
    })
}

/// The key of a container name in the name index (in `Table::Meta`, which holds the
/// engine's small indexes: `container-names/<project>/<name>`, naming the container ID).
fn name_key(project: &ProjectName, name: &str) -> String {
    format!("container-names/{project}/{name}")
}

fn name_taken(name: &str) -> EngineError {
    conflict(format!("the container name {name:?} is already in use; remove that container or choose another name"))
}

/// A commit that takes `name` failed: a conflict is the name taken meanwhile.
fn name_error(e: StoreError, name: &str) -> EngineError {
    match e {
        StoreError::Conflict { .. } => name_taken(name),
        e => e.into(),
    }
}
