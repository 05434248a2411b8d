//! The image builder: Dockerfiles built the way Docker's classic builder builds them
//! (no BuildKit), for `pier build` (`POST /v1/build`) and Docker's `POST /build`.
//!
//! ```text
//! context tar ──unpack──> ROOT/build/<id>/context ──.dockerignore: itself and the
//!                                      Dockerfile out──> (sources of COPY/ADD)
//! Dockerfile ──parse──> stages ──each instruction──> a step:
//!   cache hit?  ── yes ──> the image a previous build made for it ("---> Using cache")
//!        │ no
//!        ├─ RUN:            a container from the image so far, started, waited for; its
//!        │                  upper directory becomes the step's layer; removed after
//!        ├─ COPY/ADD/WORKDIR: the image so far mounted (overlay, in the build directory),
//!        │                  files written into it; the upper directory is the layer
//!        └─ ENV, LABEL, ...: only the config changes (history says `empty_layer`)
//!   each step's result is an untagged image carrying its parent and cache key
//!   (`BuildLink`): the build cache lives in the image store and survives restarts
//! the last stage (or `--target`) ──> tags
//! ```
//!
//! A failure anywhere removes the step's container, mounts and work directory; images of
//! the steps that succeeded stay, untagged, as Docker's do: the next build uses them as
//! cache, and `pier image prune` removes them. Files written by a failed step are
//! collected at once ([`pier_image::ImageStore::undo_on_error`]).
//!
//! Builds pin the images they stand on ([`pier_image::store::ImagePin`]), so a
//! concurrent `prune` or `rm` cannot take them midway. A client that goes away cancels
//! its build (`BuildOptions::cancel`); a daemon that stops mid-build removes the step's
//! container (labelled [`BUILD_LABEL`]) and work directory when it starts again.
//!
//! Where Pier differs from Docker's classic builder, on purpose or not yet:
//! - the cache key of `COPY`/`ADD` covers the sources' names, types, modes, symlink
//!   targets and contents, not their owners or times (Docker's leaves times out too);
//! - `--chmod` works (Docker's classic builder refuses it); `--link`, `--parents`,
//!   `--exclude`, `RUN --mount/--network/--security`, `ADD --checksum` are BuildKit's and
//!   refused with a clear error, as are `ADD` of URLs and of bzip2 or xz archives;
//! - archives `ADD` extracts keep their owners (`--chown` does not apply to them);
//! - `ONBUILD` triggers of a base image run; the `FROM` of every stage up to the target
//!   is built, needed or not, as the classic builder does.
//! - `--cache-from` images are matched step by step by their build links here, else by
//!   their history's `created_by` (as Docker's), not by `COPY --chown/--chmod` (which
//!   history does not record), and a base image's pull reports its start and end, not
//!   each layer's progress.
//!
//! The stream is Docker's classic builder's: `Step N/M` lines (`ARG`s before the first
//! `FROM` are steps), each stage's image as it ends ([`BuildEvent::StageBuilt`]), then
//! `Successfully built` and `Successfully tagged`; a `RUN` step's standard error is
//! [`BuildEvent::Stderr`].

pub mod changes;
mod fs;
mod run;
mod steps;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use pier_api::build::BasePull;
use pier_api::{Digest, ErrorKind, ImageRef, ProjectName};
use pier_image::dockerfile::context::{self, ContextError};
use pier_image::dockerfile::{self, Command, Instruction, ParseError};
use pier_image::store::{ImagePin, ImageRecord};
use pier_image::{ImageError, ImageStore};

use crate::error::EngineError;
use crate::instances::Instances;
use crate::{Engine, RequestContext};

/// Where builds keep their work directories, under the daemon's root.
const BUILD_DIR: &str = "build";

/// Build arguments every build accepts without an `ARG` (Docker's predefined ones). They
/// reach `RUN` steps but stay out of the image's history.
const PROXY_ARGS: [&str; 10] = [
    "HTTP_PROXY",
    "http_proxy",
    "HTTPS_PROXY",
    "https_proxy",
    "FTP_PROXY",
    "ftp_proxy",
    "NO_PROXY",
    "no_proxy",
    "ALL_PROXY",
    "all_proxy",
];

/// What to build, besides the context: what the request asked for
/// ([`BuildParams`](pier_api::build::BuildParams), read through `Deref`) and how to stop it.
#[derive(Debug, Clone, Default)]
pub struct BuildOptions {
    pub params: pier_api::build::BuildParams,
    /// Set (by the caller, from anywhere) to stop the build: a running step's container
    /// is killed, and the build fails with [`BuildError::Cancelled`].
    pub cancel: Option<Arc<AtomicBool>>,
    /// Credentials for pulling base images, by registry host (`docker.io`,
    /// `registry.example.com:5000`): Docker's `X-Registry-Config`.
    pub credentials: BTreeMap<String, pier_registry_client::Credentials>,
}

impl std::ops::Deref for BuildOptions {
    type Target = pier_api::build::BuildParams;
    fn deref(&self) -> &Self::Target {
        &self.params
    }
}

impl From<pier_api::build::BuildParams> for BuildOptions {
    fn from(params: pier_api::build::BuildParams) -> Self {
        BuildOptions {
            params,
            cancel: None,
            credentials: BTreeMap::new(),
        }
    }
}

/// What a build reports as it goes, in Docker's classic builder's order: the steps'
/// text, each stage's image as it ends, `Successfully built` and `Successfully tagged`
/// text, then [`BuildEvent::Built`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BuildEvent {
    /// Output text: `Step 1/3 : FROM bb\n`, ` ---> 3f2a1b4c5d6e\n`, a `RUN`'s output, ...
    Stream(String),
    /// Text a `RUN` step wrote to its standard error (and the Dockerfile's warnings).
    Stderr(String),
    /// A base image's pull progress: the status and what it is about.
    Status(String, Option<String>),
    /// A stage is done: its image (Docker's `aux` line).
    StageBuilt(Digest),
    /// The image is built and tagged (the last event of a successful build; the stream
    /// has no line of its own for it).
    Built(Digest),
}

impl BuildEvent {
    /// The event as a line of the progress stream (Docker's `POST /build` shape), if it
    /// has one.
    pub fn to_line(&self) -> Option<pier_api::build::BuildLine> {
        use pier_api::build::BuildLine;
        match self {
            BuildEvent::Stream(s) => Some(BuildLine::stream(s.clone())),
            BuildEvent::Stderr(s) => Some(BuildLine::stderr(s)),
            BuildEvent::Status(s, id) => Some(BuildLine::status(s.clone(), id.clone())),
            BuildEvent::StageBuilt(id) => Some(BuildLine::aux(id.clone())),
            BuildEvent::Built(_) => None,
        }
    }
}

/// Why a build failed.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Parse(#[from] ParseError),
    /// The Dockerfile or the options ask for something that cannot be done.
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Context(#[from] ContextError),
    #[error("the base image {0} is not in the image store: load it first (`pier image load`, `pier image import` or `pier image from-host`); Pier's builder does not pull")]
    MissingBase(String),
    /// A base image could not be pulled.
    #[error("cannot pull the base image {image}: {message}")]
    Pull { image: String, message: String },
    #[error("The command '{command}' returned a non-zero code: {code}")]
    RunFailed { command: String, code: i32 },
    #[error("The command '{command}' could not be run: {message}")]
    RunNotStarted {
        command: String,
        message: String,
        code: Option<i32>,
    },
    #[error("the build was cancelled")]
    Cancelled,
    #[error(transparent)]
    Image(#[from] ImageError),
    /// The engine refused something (creating a step's container, ...).
    #[error("{message}")]
    Engine { kind: ErrorKind, message: String },
    #[error("cannot {op}")]
    Io {
        op: String,
        #[source]
        source: io::Error,
    },
}

impl From<EngineError> for BuildError {
    fn from(e: EngineError) -> Self {
        BuildError::Engine {
            kind: e.kind(),
            message: e.message(),
        }
    }
}

impl BuildError {
    pub(crate) fn io(op: impl Into<String>) -> impl FnOnce(io::Error) -> BuildError {
        let op = op.into();
        move |source| BuildError::Io { op, source }
    }

    /// How the API would report this error as a status.
    pub fn kind(&self) -> ErrorKind {
        match self {
            BuildError::Parse(_)
            | BuildError::Invalid(_)
            | BuildError::RunFailed { .. }
            | BuildError::RunNotStarted { .. } => ErrorKind::InvalidInput,
            BuildError::Context(ContextError::Io(_)) => ErrorKind::Internal,
            BuildError::Context(_) => ErrorKind::InvalidInput,
            BuildError::MissingBase(_) | BuildError::Pull { .. } => ErrorKind::NotFound,
            BuildError::Image(e) => e.kind(),
            BuildError::Engine { kind, .. } => *kind,
            BuildError::Io { .. } => ErrorKind::Internal,
            BuildError::Cancelled => ErrorKind::Conflict,
        }
    }

    /// The exit code of a failed `RUN` (Docker's `errorDetail.code`).
    pub fn exit_code(&self) -> Option<i32> {
        match self {
            BuildError::RunFailed { code, .. } => Some(*code),
            BuildError::RunNotStarted { code, .. } => *code,
            _ => None,
        }
    }

    /// The message with its chain of causes, for users.
    pub fn chain(&self) -> String {
        let mut s = self.to_string();
        let mut src = std::error::Error::source(self);
        while let Some(e) = src {
            let text = e.to_string();
            if !s.ends_with(&text) {
                s.push_str(": ");
                s.push_str(&text);
            }
            src = e.source();
        }
        s
    }
}

/// The label of the containers of `RUN` steps.
pub const BUILD_LABEL: &str = "pier.build";

/// Removes the containers of `RUN` steps a stopped daemon left (no build survives a
/// restart). Called at daemon start, after containers are restored.
pub async fn remove_orphans(containers: &Instances) {
    let ctx = RequestContext::system(ProjectName::default_project(), "build cleanup");
    let filter = format!("label={BUILD_LABEL}");
    let Ok(left) = containers.list(&ctx, true, Some(&filter)) else {
        return;
    };
    for c in left {
        tracing::info!(container = %c.id, "removing the container of an interrupted build step");
        if let Err(e) = containers.remove(&ctx, &c.id, true, true).await {
            tracing::warn!(container = %c.id, error = %e.message(), "cannot remove an interrupted build step's container");
        }
    }
}

/// Builds images from Dockerfiles. Cheap to make: it holds the engine's parts.
#[derive(Clone)]
pub struct Builder {
    root: PathBuf,
    instances: Arc<Instances>,
    images: Arc<ImageStore>,
    /// How base images are pulled (when the build's options ask for it).
    registry_client: pier_registry_client::ClientConfig,
}

/// Removes what an interrupted build left in `ROOT/build` (mounts first). Called at
/// daemon start, before any build runs.
pub fn cleanup(root: &Path) {
    let dir = root.join(BUILD_DIR);
    unmount_under(&dir);
    if dir.exists() {
        if let Err(e) = pier_image::store::remove_tree(&dir) {
            tracing::warn!(error = %e.chain(), "cannot remove what interrupted builds left");
        }
    }
}

impl Builder {
    pub fn new(engine: &Engine) -> Builder {
        Builder {
            root: engine.root.clone(),
            instances: engine.instances.clone(),
            images: engine.images.clone(),
            registry_client: engine.registry_client.clone(),
        }
    }

    /// Builds the image the Dockerfile in `context` (a tar, plain or gzip/zstd) describes,
    /// in `project`, reporting progress to `progress`; returns the image ID. The image is
    /// tagged with `opts.tags` once built; a failed build tags nothing.
    ///
    /// A base image that is not in the store is pulled when `opts.pull` says so (Docker's
    /// builder pulls it; `pier build` pulls before it sends the context).
    ///
    /// Blocking: call it on a blocking thread of the daemon's tokio runtime
    /// (`tokio::task::spawn_blocking`), since `RUN` steps start containers through it. The
    /// whole context is read before anything else happens.
    ///
    /// A server of Docker's `POST /build` sends each event's `event.to_line()` (a
    /// [`pier_api::build::BuildLine`], already in Docker's shape; [`BuildEvent::Built`]
    /// has none) and a failure as `BuildLine::error(err.chain(), err.exit_code())`, as
    /// `POST /v1/build` does:
    ///
    /// ```ignore
    /// let builder = Builder::new(&engine);
    /// tokio::task::spawn_blocking(move || {
    ///     let mut send = |l: BuildLine| out.write_all(l.to_line().as_bytes());
    ///     match builder.build(&project, context, opts, |ev| { ev.to_line().map(&mut send); }) {
    ///         Ok(_id) => {}
    ///         Err(e) => { let _ = send(BuildLine::error(e.chain(), e.exit_code())); }
    ///     }
    /// });
    /// ```
    pub fn build(
        &self,
        ctx: &RequestContext,
        mut context: impl Read,
        opts: BuildOptions,
        mut progress: impl FnMut(BuildEvent),
    ) -> Result<Digest, BuildError> {
        let project = ctx.project();
        let handle = tokio::runtime::Handle::try_current().map_err(|_| {
            BuildError::Invalid("Builder::build must run inside the daemon's tokio runtime".into())
        })?;
        let work = WorkDir::new(&self.root.join(BUILD_DIR))?;
        let dir = work.path.join("context");
        std::fs::create_dir(&dir).map_err(BuildError::io("create the build context"))?;
        let unpacked = context::unpack(&mut context, &dir);
        // Read to the end (a tar's last zero block, a stream's end), so the request is
        // complete before the answer ends: a client still sending would see its
        // connection closed under it.
        let _ = io::copy(&mut context, &mut io::sink());
        unpacked?;
        let name = opts
            .dockerfile
            .clone()
            .unwrap_or_else(|| "Dockerfile".into());
        let text = context::read_dockerfile(&dir, &name)?;
        // The client applied .dockerignore; here only the file itself and the Dockerfile
        // go when it names them, as Docker's daemon has it.
        let rules = context::read_ignore(&dir)?;
        context::remove_ignored_dockerfile(&dir, &rules, &name)?;
        let df = dockerfile::parse(&text)?;
        let cache_from = self.cache_sources(project, &opts.cache_from)?;
        let mut b = Build {
            b: self,
            ctx,
            project,
            opts: &opts,
            escape: df.escape,
            context: dir,
            work: work.path.clone(),
            handle,
            progress: &mut progress,
            step: 0,
            total: 0,
            meta: BTreeMap::new(),
            declared: BTreeSet::new(),
            done: Vec::new(),
            pins: cache_from.1,
            cache_from: cache_from.0,
            counter: 0,
        };
        for w in &df.warnings {
            (b.progress)(BuildEvent::Stderr(format!("[WARNING]: {w}\n")));
        }
        let id = b.run(&df.instructions)?;
        drop(work);
        tracing::info!(project = %ctx.project, caller = %ctx.caller, image = %id, tags = ?opts.tags, "image built");
        progress(BuildEvent::Built(id.clone()));
        Ok(id)
    }
}

impl Builder {
    /// The images `--cache-from` names (pinned), the ones not here skipped as Docker
    /// skips them; `None` when none was named (every earlier build's steps are cache).
    fn cache_sources(
        &self,
        project: &ProjectName,
        names: &[String],
    ) -> Result<(Option<CacheFrom>, Vec<ImagePin>), BuildError> {
        if names.is_empty() {
            return Ok((None, Vec::new()));
        }
        let mut from = CacheFrom::default();
        let mut pins = Vec::new();
        for name in names {
            let (rec, pin) = match self.images.resolve_pinned(project, name) {
                Ok(r) => r,
                Err(ImageError::NotFound { .. } | ImageError::InvalidReference(_)) => {
                    tracing::info!(image = %name, "a --cache-from image is not here; skipped");
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            pins.push(pin);
            // The source and the steps below it, by their build links.
            let mut next = Some(rec.clone());
            while let Some(r) = next.take() {
                if !from.chain.insert(r.id.clone()) {
                    break;
                }
                next = r
                    .build
                    .as_ref()
                    .and_then(|b| b.parent.as_ref())
                    .and_then(|p| self.images.resolve(project, p.as_str()).ok());
            }
            let config = self.images.config(&rec)?;
            from.sources.push((rec, config));
        }
        Ok((Some(from), pins))
    }
}

/// `--cache-from`: what a build may reuse.
#[derive(Default)]
struct CacheFrom {
    /// The source images and every step image below them (their build links).
    chain: BTreeSet<Digest>,
    /// The sources and their configs, to match steps by history (a pulled image has no
    /// build links).
    sources: Vec<(ImageRecord, serde_json::Value)>,
}

/// Unmounts whatever is mounted below `dir`, deepest first.
fn unmount_under(dir: &Path) {
    let prefix = format!("{}/", dir.display());
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut points: Vec<&str> = mounts
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|p| p.starts_with(&prefix))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for p in points {
        crate::instances::service::unmount(Path::new(p));
    }
}

/// A build's work directory, removed (mounts first) when dropped.
struct WorkDir {
    path: PathBuf,
}

impl WorkDir {
    fn new(parent: &Path) -> Result<WorkDir, BuildError> {
        std::fs::create_dir_all(parent).map_err(BuildError::io("create the build directory"))?;
        let path = parent.join(&crate::names::random_id()[..16]);
        std::fs::create_dir(&path).map_err(BuildError::io("create the build directory"))?;
        Ok(WorkDir { path })
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        // Step mounts are gone by now; this is for one that could not be unmounted then.
        unmount_under(&self.path);
        if let Err(e) = pier_image::store::remove_tree(&self.path) {
            tracing::warn!(error = %e.chain(), "cannot remove a build's work directory");
        }
    }
}

/// A stage being built.
struct Stage {
    name: Option<String>,
    /// The image so far; `None` while a `FROM scratch` stage has made nothing.
    image: Option<ImageRecord>,
    /// The whole image config so far (runtime part under `config`).
    config: serde_json::Value,
    /// `ARG`s declared in the stage, with their values.
    args: BTreeMap<String, Option<String>>,
    /// A `CMD` was given in this stage (an `ENTRYPOINT` then keeps it).
    cmd_set: bool,
}

/// One build in progress.
struct Build<'a> {
    b: &'a Builder,
    /// The build's request: its `RUN` containers are made in its name.
    ctx: &'a RequestContext,
    project: &'a ProjectName,
    opts: &'a BuildOptions,
    escape: char,
    context: PathBuf,
    work: PathBuf,
    handle: tokio::runtime::Handle,
    progress: &'a mut dyn FnMut(BuildEvent),
    step: usize,
    total: usize,
    /// `ARG`s before the first `FROM`, for `FROM` lines and stages that redeclare them.
    meta: BTreeMap<String, Option<String>>,
    /// Every `ARG` name seen, to warn of build arguments nothing used.
    declared: BTreeSet<String>,
    /// Finished stages: name and final image.
    done: Vec<(Option<String>, Option<ImageRecord>)>,
    /// Images this build stands on.
    pins: Vec<ImagePin>,
    /// `--cache-from`: the only cache sources, when given.
    cache_from: Option<CacheFrom>,
    /// For unique names in the work directory.
    counter: usize,
}

impl Build<'_> {
    fn say(&mut self, text: impl Into<String>) {
        (self.progress)(BuildEvent::Stream(text.into()));
    }

    fn cancelled(&self) -> bool {
        self.opts
            .cancel
            .as_ref()
            .is_some_and(|c| c.load(Ordering::Relaxed))
    }

    /// Says `Step N/M : ...`, unless the build was cancelled.
    fn step_line(&mut self, i: &Instruction) -> Result<(), BuildError> {
        if self.cancelled() {
            return Err(BuildError::Cancelled);
        }
        self.step += 1;
        self.say(format!(
            "Step {}/{} : {}\n",
            self.step, self.total, i.original
        ));
        Ok(())
    }

    fn next_name(&mut self, what: &str) -> PathBuf {
        self.counter += 1;
        self.work.join(format!("{what}-{}", self.counter))
    }

    /// Runs the whole Dockerfile; returns the final image.
    fn run(&mut self, instructions: &[Instruction]) -> Result<Digest, BuildError> {
        // ARGs before the first FROM; then stages, each starting at a FROM.
        let first_from = instructions
            .iter()
            .position(|i| matches!(i.command, Command::From { .. }));
        let Some(first_from) = first_from else {
            return Err(BuildError::Invalid(if instructions.is_empty() {
                "the Dockerfile is empty: it needs at least a FROM instruction".into()
            } else {
                "the Dockerfile has no FROM instruction: a build starts with FROM (only ARG may come before it)".into()
            }));
        };
        let mut stages: Vec<&[Instruction]> = Vec::new();
        let rest = &instructions[first_from..];
        let mut start = 0;
        for (n, i) in rest.iter().enumerate().skip(1) {
            if matches!(i.command, Command::From { .. }) {
                stages.push(&rest[start..n]);
                start = n;
            }
        }
        stages.push(&rest[start..]);
        let mut names = BTreeSet::new();
        for s in &stages {
            if let Command::From { alias: Some(a), .. } = &s[0].command {
                if !names.insert(a.clone()) {
                    return Err(BuildError::Invalid(format!(
                        "line {}: the stage name {a:?} is used twice; give each stage its own",
                        s[0].line
                    )));
                }
            }
        }
        let last = match &self.opts.target {
            None => stages.len() - 1,
            Some(t) => stages
                .iter()
                .position(|s| {
                    matches!(&s[0].command, Command::From { alias: Some(a), .. } if a.eq_ignore_ascii_case(t))
                })
                .ok_or_else(|| {
                    BuildError::Invalid(format!("target stage {t:?} could not be found"))
                })?,
        };
        // ARGs before the first FROM count as steps, as in Docker's classic builder.
        self.total = first_from + stages[..=last].iter().map(|s| s.len()).sum::<usize>();
        let labels = self.labels_step();
        self.total += labels.iter().count();
        for i in &instructions[..first_from] {
            let Command::Arg(args) = &i.command else {
                return Err(BuildError::Invalid(format!(
                    "line {}: {} before the first FROM; only ARG may come before FROM",
                    i.line,
                    i.command.keyword()
                )));
            };
            // Each is a step, as Docker's classic builder counts and shows them.
            self.step_line(i)?;
            for (name, default) in args {
                self.declared.insert(name.clone());
                let value = match self.opts.build_args.get(name) {
                    Some(v) => Some(v.clone()),
                    None => match default {
                        Some(d) => Some(self.expand(d, None)?),
                        None => None,
                    },
                };
                self.meta.insert(name.clone(), value);
            }
        }
        for (n, stage) in stages[..=last].iter().enumerate() {
            let extra = if n == last { labels.as_ref() } else { None };
            let (name, image) = self.run_stage(stage, extra)?;
            // Each stage's image, as Docker's classic builder reports it (`aux`).
            if let Some(img) = &image {
                (self.progress)(BuildEvent::StageBuilt(img.id.clone()));
            }
            self.done.push((name, image));
        }
        let unused: Vec<&String> = self
            .opts
            .build_args
            .keys()
            .filter(|k| !self.declared.contains(*k) && !PROXY_ARGS.contains(&k.as_str()))
            .collect();
        if !unused.is_empty() {
            let names: Vec<&str> = unused.iter().map(|s| s.as_str()).collect();
            self.say(format!(
                "[Warning] One or more build-args [{}] were not consumed\n",
                names.join(" ")
            ));
        }
        let Some(Some(image)) = self.done.last().map(|(_, i)| i.clone()) else {
            return Err(BuildError::Invalid(
                "no image was generated: the last stage is FROM scratch with nothing in it".into(),
            ));
        };
        self.say(format!("Successfully built {}\n", image.id.short()));
        for t in &self.opts.tags {
            self.b.images.tag(self.project, image.id.as_str(), t)?;
            self.say(format!("Successfully tagged {}\n", t.familiar()));
        }
        Ok(image.id)
    }

    /// `--label`s as a `LABEL` instruction, values quoted so nothing in them expands.
    fn labels_step(&self) -> Option<Instruction> {
        if self.opts.labels.is_empty() {
            return None;
        }
        let quote = |s: &str| format!("'{}'", s.replace('\'', &format!("'{}''", self.escape)));
        let pairs: Vec<(String, String)> = self
            .opts
            .labels
            .iter()
            .map(|(k, v)| (quote(k), quote(v)))
            .collect();
        let text: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}={v}")).collect();
        Some(Instruction {
            line: 0,
            original: format!("LABEL {}", text.join(" ")),
            command: Command::Label(pairs),
        })
    }

    fn run_stage(
        &mut self,
        instructions: &[Instruction],
        extra: Option<&Instruction>,
    ) -> Result<(Option<String>, Option<ImageRecord>), BuildError> {
        let from = &instructions[0];
        self.step_line(from)?;
        let mut stage = self.from(from)?;
        // The base image's ONBUILD triggers run first, as Docker runs them.
        let triggers: Vec<String> = stage.config["config"]["OnBuild"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|t| t.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default();
        if let Some(c) = stage
            .config
            .get_mut("config")
            .and_then(|c| c.as_object_mut())
        {
            c.remove("OnBuild");
        }
        if !triggers.is_empty() {
            self.say(format!("# Executing {} build trigger(s)\n", triggers.len()));
            for t in &triggers {
                let i = dockerfile::parse_instruction(t, from.line, self.escape)?;
                if matches!(i.command, Command::From { .. } | Command::OnBuild { .. }) {
                    return Err(BuildError::Invalid(format!(
                        "the base image has an invalid ONBUILD trigger: {t}"
                    )));
                }
                self.dispatch(&mut stage, &i)?;
            }
        }
        for i in instructions[1..].iter().chain(extra) {
            self.step_line(i)?;
            self.dispatch(&mut stage, i)?;
        }
        Ok((stage.name, stage.image))
    }

    /// Starts a stage from its `FROM`.
    fn from(&mut self, i: &Instruction) -> Result<Stage, BuildError> {
        let Command::From {
            image,
            alias,
            platform,
        } = &i.command
        else {
            unreachable!("stages start with FROM");
        };
        let meta_env = |name: &str| self.meta.get(name).cloned().flatten();
        let image = dockerfile::words::expand(image, self.escape, &meta_env)
            .map_err(|e| BuildError::Invalid(format!("line {}: {e}", i.line)))?;
        if let Some(p) = platform {
            let p = dockerfile::words::expand(p, self.escape, &meta_env)
                .map_err(|e| BuildError::Invalid(format!("line {}: {e}", i.line)))?;
            let ours = format!("linux/{}", pier_image::build::host_arch());
            if !p.is_empty() && p != ours && p != "linux" {
                self.say(format!(
                    "[Warning] --platform={p} asked for; Pier builds for this host, {ours}\n"
                ));
            }
        }
        if image.is_empty() {
            return Err(BuildError::Invalid(format!(
                "line {}: FROM names no image (an empty variable?)",
                i.line
            )));
        }
        let scratch = || {
            serde_json::json!({
                "architecture": pier_image::build::host_arch(),
                "os": "linux",
                "config": {},
                "rootfs": { "type": "layers", "diff_ids": [] },
                "history": [],
            })
        };
        let earlier = self
            .done
            .iter()
            .rev()
            .find(|(n, _)| n.as_deref().is_some_and(|n| n.eq_ignore_ascii_case(&image)))
            .map(|(_, img)| img.clone());
        let (rec, config) = if let Some(img) = earlier {
            match img {
                Some(rec) => {
                    let config = self.b.images.config(&rec)?;
                    (Some(rec), config)
                }
                None => (None, scratch()),
            }
        } else if image.eq_ignore_ascii_case("scratch") {
            (None, scratch())
        } else {
            let (rec, pin) = self.base_image(&image)?;
            self.pins.push(pin);
            let config = self.b.images.config(&rec)?;
            (Some(rec), config)
        };
        match &rec {
            Some(r) => self.say(format!(" ---> {}\n", r.id.short())),
            None => self.say(" ---> scratch\n"),
        }
        let mut config = config;
        if !config["config"].is_object() {
            config["config"] = serde_json::json!({});
        }
        Ok(Stage {
            name: alias.clone(),
            image: rec,
            config,
            args: BTreeMap::new(),
            cmd_set: false,
        })
    }

    /// A stage's base image from the store, pulled first as the build's options ask.
    fn base_image(&mut self, image: &str) -> Result<(ImageRecord, ImagePin), BuildError> {
        let pull = self.opts.pull;
        if pull == BasePull::Always {
            self.pull_base(image)?;
        }
        match self.b.images.resolve_pinned(self.project, image) {
            Ok(r) => Ok(r),
            Err(ImageError::NotFound { .. })
                if pull == BasePull::Missing && image.parse::<ImageRef>().is_ok() =>
            {
                self.pull_base(image)?;
                Ok(self.b.images.resolve_pinned(self.project, image)?)
            }
            Err(ImageError::NotFound { .. }) => Err(BuildError::MissingBase(image.to_string())),
            Err(e) => Err(e.into()),
        }
    }

    /// Pulls a base image, saying so as Docker's builder does (`status` lines).
    fn pull_base(&mut self, image: &str) -> Result<(), BuildError> {
        let r: ImageRef = image
            .parse()
            .map_err(|e| BuildError::Invalid(format!("FROM {image}: {e}")))?;
        let before = self
            .b
            .images
            .resolve(self.project, image)
            .ok()
            .map(|i| i.id);
        (self.progress)(BuildEvent::Status(
            format!("Pulling from {}", r.familiar_name()),
            Some(r.tag().unwrap_or("latest").to_string()),
        ));
        let mut pull = Box::pin(pier_registry_client::transfer::pull(
            self.b.images.clone(),
            self.project.clone(),
            &r,
            &self.b.registry_client,
            self.opts.credentials.get(r.registry()).cloned(),
            Arc::new(|_| {}),
        ));
        let done = loop {
            // The cancel flag is checked every 50 ms, as for a RUN step.
            let next = self.handle.block_on(async {
                tokio::select! {
                    r = &mut pull => Some(r),
                    _ = tokio::time::sleep(Duration::from_millis(50)) => None,
                }
            });
            match next {
                Some(r) => break r,
                None if self.cancelled() => return Err(BuildError::Cancelled),
                None => {}
            }
        };
        let (id, manifest) = done.map_err(|e| BuildError::Pull {
            image: image.to_string(),
            message: e.chain(),
        })?;
        tracing::info!(project = %self.ctx.project, image = %r, id = %id, "base image pulled for a build");
        (self.progress)(BuildEvent::Status(format!("Digest: {manifest}"), None));
        let status = if before.as_ref() == Some(&id) {
            format!("Status: Image is up to date for {}", r.familiar())
        } else {
            format!("Status: Downloaded newer image for {}", r.familiar())
        };
        (self.progress)(BuildEvent::Status(status, None));
        Ok(())
    }

    /// Expands variables in `text` with the stage's environment (`ENV` over `ARG`), or
    /// with the arguments before the first `FROM` when there is no stage.
    fn expand(&self, text: &str, stage: Option<&Stage>) -> Result<String, BuildError> {
        let lookup = |name: &str| self.lookup(stage, name);
        dockerfile::words::expand(text, self.escape, &lookup)
            .map_err(|e| BuildError::Invalid(e.to_string()))
    }

    fn expand_words(&self, text: &str, stage: &Stage) -> Result<Vec<String>, BuildError> {
        let lookup = |name: &str| self.lookup(Some(stage), name);
        dockerfile::words::expand_words(text, self.escape, &lookup)
            .map_err(|e| BuildError::Invalid(e.to_string()))
    }

    fn lookup(&self, stage: Option<&Stage>, name: &str) -> Option<String> {
        match stage {
            None => self.meta.get(name).cloned().flatten(),
            Some(s) => env_of(&s.config)
                .into_iter()
                .find_map(|e| {
                    let (k, v) = e.split_once('=').unwrap_or((&e, ""));
                    (k == name).then(|| v.to_string())
                })
                .or_else(|| s.args.get(name).cloned().flatten()),
        }
    }
}

/// The `Env` of an image config.
fn env_of(config: &serde_json::Value) -> Vec<String> {
    config["config"]["Env"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}
