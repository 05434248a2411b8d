//! The instructions after `FROM`: what each changes, its history entry (`created_by` as
//! Docker writes it), its cache key, and the image it commits.

use std::path::{Path, PathBuf};

use pier_archive::ignore::clean;
use pier_image::build::{commit_step, StepImage};
use pier_image::dockerfile::context::{self, ContextError};
use pier_image::dockerfile::{CmdLine, Command, CopyArgs, HealthArgs, Instruction};
use pier_image::store::BuildLink;
use pier_image::ImageError;
use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};

use super::{env_of, fs, Build, BuildError, Stage, PROXY_ARGS};

/// The `SHELL` of a config, `/bin/sh -c` by default.
pub(super) fn shell_of(config: &Value) -> Vec<String> {
    config["config"]["Shell"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(String::from))
                .collect::<Vec<_>>()
        })
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| vec!["/bin/sh".into(), "-c".into()])
}

pub(super) fn set_env(config: &mut Value, key: &str, value: &str) {
    let mut env = env_of(config);
    env.retain(|e| e.split('=').next() != Some(key));
    env.push(format!("{key}={value}"));
    config["config"]["Env"] = json!(env);
}

/// Docker's duration fields are nanoseconds.
fn nanos(d: Option<std::time::Duration>) -> Option<u64> {
    d.map(|d| d.as_nanos() as u64)
}

/// `80`, `80/udp`, `8000-8010/tcp` as `ExposedPorts` keys.
pub(super) fn exposed_ports(spec: &str) -> Result<Vec<String>, BuildError> {
    let bad = || {
        BuildError::Invalid(format!(
            "invalid port {spec:?} in EXPOSE: give PORT[/tcp|udp|sctp] or a range START-END[/PROTO]"
        ))
    };
    let (ports, proto) = match spec.split_once('/') {
        Some((p, proto)) => (p, proto.to_ascii_lowercase()),
        None => (spec, "tcp".to_string()),
    };
    if !matches!(proto.as_str(), "tcp" | "udp" | "sctp") {
        return Err(bad());
    }
    let (lo, hi) = match ports.split_once('-') {
        Some((a, b)) => (a, b),
        None => (ports, ports),
    };
    let (lo, hi): (u16, u16) = (
        lo.parse().map_err(|_| bad())?,
        hi.parse().map_err(|_| bad())?,
    );
    if lo == 0 || hi < lo {
        return Err(bad());
    }
    Ok((lo..=hi).map(|p| format!("{p}/{proto}")).collect())
}

impl Build<'_> {
    /// Runs one instruction of a stage (not `FROM`).
    pub(super) fn dispatch(
        &mut self,
        stage: &mut Stage,
        i: &Instruction,
    ) -> Result<(), BuildError> {
        let shell = shell_of(&stage.config).join(" ");
        let nop = |text: String| format!("{shell} #(nop)  {text}");
        match &i.command {
            Command::From { .. } => Err(BuildError::Invalid(format!(
                "line {}: FROM starts a stage; it cannot run inside one",
                i.line
            ))),
            Command::Run(cmd) => self.run_instruction(stage, cmd),
            Command::Copy(a) => self.copy(stage, a, false),
            Command::Add(a) => self.copy(stage, a, true),
            Command::Workdir(p) => self.workdir(stage, p),
            Command::Env(pairs) => {
                let kv = self.expand_pairs(stage, pairs, "ENV")?;
                let text = nop(format!("ENV {}", pairs_text(&kv)));
                self.config_step(stage, text, |c| {
                    for (k, v) in &kv {
                        set_env(c, k, v);
                    }
                })
            }
            Command::Label(pairs) => {
                let kv = self.expand_pairs(stage, pairs, "LABEL")?;
                let text = nop(format!("LABEL {}", pairs_text(&kv)));
                self.config_step(stage, text, |c| {
                    if !c["config"]["Labels"].is_object() {
                        c["config"]["Labels"] = json!({});
                    }
                    for (k, v) in &kv {
                        c["config"]["Labels"][k] = json!(v);
                    }
                })
            }
            Command::Arg(args) => {
                let shown = self.declare_args(stage, args)?;
                self.config_step(stage, nop(format!("ARG {}", shown.join(" "))), |_| {})
            }
            Command::User(u) => {
                let u = self.expand(u, Some(stage))?;
                self.config_step(stage, nop(format!("USER {u}")), |c| {
                    c["config"]["User"] = json!(u)
                })
            }
            Command::Cmd(cmd) => {
                let argv = self.argv(stage, cmd);
                stage.cmd_set = true;
                self.config_step(stage, nop(format!("CMD {}", json!(argv))), |c| {
                    c["config"]["Cmd"] = json!(argv)
                })
            }
            Command::Entrypoint(cmd) => {
                let argv = self.argv(stage, cmd);
                let keep_cmd = stage.cmd_set;
                self.config_step(stage, nop(format!("ENTRYPOINT {}", json!(argv))), |c| {
                    c["config"]["Entrypoint"] = json!(argv);
                    // A CMD from the base image does not survive a new ENTRYPOINT.
                    if !keep_cmd {
                        if let Some(o) = c["config"].as_object_mut() {
                            o.remove("Cmd");
                        }
                    }
                })
            }
            Command::Expose(words) => {
                let mut ports = Vec::new();
                for w in words {
                    for p in self.expand_words(w, stage)? {
                        ports.extend(exposed_ports(&p)?);
                    }
                }
                self.config_step(stage, nop(format!("EXPOSE {}", ports.join(" "))), |c| {
                    add_keys(c, "ExposedPorts", &ports)
                })
            }
            Command::Volume(paths) => {
                let mut vols = Vec::new();
                for p in paths {
                    let v = self.expand(p, Some(stage))?;
                    if v.trim().is_empty() {
                        return Err(BuildError::Invalid(
                            "VOLUME specified can not be an empty string".into(),
                        ));
                    }
                    vols.push(v);
                }
                self.config_step(stage, nop(format!("VOLUME {}", json!(vols))), |c| {
                    add_keys(c, "Volumes", &vols)
                })
            }
            Command::Healthcheck(h) => {
                let health = healthcheck_json(h.as_ref());
                self.config_step(stage, nop(format!("HEALTHCHECK {health}")), |c| {
                    c["config"]["Healthcheck"] = health.clone()
                })
            }
            Command::Shell(s) => self.config_step(stage, nop(format!("SHELL {}", json!(s))), |c| {
                c["config"]["Shell"] = json!(s)
            }),
            Command::StopSignal(s) => {
                let s = self.expand(s, Some(stage))?;
                crate::instances::service::parse_signal(&s)
                    .map_err(|e| BuildError::Invalid(format!("STOPSIGNAL: {}", e.message())))?;
                self.config_step(stage, nop(format!("STOPSIGNAL {s}")), |c| {
                    c["config"]["StopSignal"] = json!(s)
                })
            }
            Command::OnBuild { trigger, .. } => {
                self.config_step(stage, nop(format!("ONBUILD {trigger}")), |c| {
                    let mut list: Vec<Value> = c["config"]["OnBuild"]
                        .as_array()
                        .cloned()
                        .unwrap_or_default();
                    list.push(json!(trigger));
                    c["config"]["OnBuild"] = json!(list);
                })
            }
            Command::Maintainer(m) => {
                self.config_step(stage, nop(format!("MAINTAINER {m}")), |c| {
                    c["author"] = json!(m)
                })
            }
        }
    }

    /// `ENV` and `LABEL` pairs, expanded: every value sees the environment from before
    /// the instruction.
    fn expand_pairs(
        &self,
        stage: &Stage,
        pairs: &[(String, String)],
        keyword: &str,
    ) -> Result<Vec<(String, String)>, BuildError> {
        let mut kv = Vec::new();
        for (k, v) in pairs {
            let k = self.expand(k, Some(stage))?;
            if k.is_empty() {
                return Err(BuildError::Invalid(format!(
                    "{keyword} names cannot be empty"
                )));
            }
            kv.push((k, self.expand(v, Some(stage))?));
        }
        Ok(kv)
    }

    /// Declares `ARG`s in the stage: the build's value, else the default, else (for a
    /// name redeclared without one) the value from before `FROM`. Returns them as shown.
    fn declare_args(
        &mut self,
        stage: &mut Stage,
        args: &[(String, Option<String>)],
    ) -> Result<Vec<String>, BuildError> {
        let mut shown = Vec::new();
        for (name, default) in args {
            self.declared.insert(name.clone());
            let value = match self.opts.build_args.get(name) {
                Some(v) => Some(v.clone()),
                None => match default {
                    Some(d) => Some(self.expand(d, Some(stage))?),
                    None => self.meta.get(name).cloned().flatten(),
                },
            };
            stage.args.insert(name.clone(), value);
            shown.push(match default {
                Some(d) => format!("{name}={d}"),
                None => name.clone(),
            });
        }
        Ok(shown)
    }

    /// A command line as the argv Docker stores: the shell form through `SHELL`.
    fn argv(&self, stage: &Stage, cmd: &CmdLine) -> Vec<String> {
        match cmd {
            CmdLine::Exec(v) => v.clone(),
            CmdLine::Shell(s) => {
                let mut v = shell_of(&stage.config);
                v.push(s.clone());
                v
            }
        }
    }

    /// The cache key of a step on the stage's image.
    fn key(&self, stage: &Stage, created_by: &str, extra: &str) -> String {
        let mut h = Sha256::new();
        h.update("pier-build-cache-v1\n");
        h.update(stage.image.as_ref().map_or("scratch", |r| r.id.as_str()));
        h.update("\n");
        h.update(created_by);
        h.update("\n");
        h.update(extra);
        pier_api::hex(&h.finalize())
    }

    /// On a cache hit, makes the cached image the stage's and says so. `created_by` and
    /// `next` (the config the step leaves) match the step against the history of a
    /// `--cache-from` image.
    fn cached(
        &mut self,
        stage: &mut Stage,
        key: &str,
        created_by: &str,
        next: &Value,
    ) -> Result<bool, BuildError> {
        if self.opts.no_cache {
            return Ok(false);
        }
        let parent = stage.image.as_ref().map(|r| r.id.clone());
        if let Some((rec, pin)) = self
            .b
            .images
            .find_cached(self.project, parent.as_ref(), key)?
        {
            // With --cache-from, only a step of those images' chains counts.
            if self
                .cache_from
                .as_ref()
                .is_none_or(|c| c.chain.contains(&rec.id))
            {
                self.pins.push(pin);
                stage.config = self.b.images.config(&rec)?;
                self.say(format!(" ---> Using cache\n ---> {}\n", rec.id.short()));
                stage.image = Some(rec);
                return Ok(true);
            }
        }
        self.cached_by_history(stage, key, created_by, next)
    }

    /// A `--cache-from` image (one pulled, with no build links here) whose history goes
    /// as the stage's so far and then has this step: its image for the step is reused,
    /// as Docker's classic builder reuses it. The stage's image so far must be the
    /// source's first layers and history entries (their `created_by` and `empty_layer`).
    fn cached_by_history(
        &mut self,
        stage: &mut Stage,
        key: &str,
        created_by: &str,
        next: &Value,
    ) -> Result<bool, BuildError> {
        let Some(cf) = &self.cache_from else {
            return Ok(false);
        };
        let history = |c: &Value| c["history"].as_array().cloned().unwrap_or_default();
        let empty = |h: &Value| h["empty_layer"].as_bool().unwrap_or(false);
        let ours = history(&stage.config);
        let n = ours.len();
        let base: Vec<pier_api::types::LayerInfo> = stage
            .image
            .as_ref()
            .map(|r| r.layers.clone())
            .unwrap_or_default();
        let found = cf.sources.iter().find(|(rec, config)| {
            let theirs = history(config);
            theirs.len() > n
                && theirs[..n]
                    .iter()
                    .zip(&ours)
                    .all(|(a, b)| a["created_by"] == b["created_by"] && empty(a) == empty(b))
                && theirs[n]["created_by"].as_str() == Some(created_by)
                && rec.layers.len() >= base.len()
                && rec.layers[..base.len()]
                    .iter()
                    .zip(&base)
                    .all(|(a, b)| a.diff_id == b.diff_id)
        });
        let Some((rec, config)) = found.cloned() else {
            return Ok(false);
        };
        let theirs = history(&config);
        if theirs.len() == n + 1 {
            // The source's last step: the source itself (pinned for the whole build).
            self.say(format!(" ---> Using cache\n ---> {}\n", rec.id.short()));
            stage.config = config;
            stage.image = Some(rec);
            return Ok(true);
        }
        let layer = if empty(&theirs[n]) {
            None
        } else {
            match rec.layers.get(base.len()) {
                Some(l) => Some(l.clone()),
                None => return Ok(false),
            }
        };
        self.say(" ---> Using cache\n");
        self.commit_with(
            stage,
            next.clone(),
            None,
            layer,
            created_by.to_string(),
            key.to_string(),
        )?;
        Ok(true)
    }

    /// Commits the stage's next image: `config`, plus the layer at `layer` if any.
    fn commit(
        &mut self,
        stage: &mut Stage,
        config: Value,
        layer: Option<&Path>,
        created_by: String,
        key: String,
    ) -> Result<(), BuildError> {
        self.commit_with(stage, config, layer, None, created_by, key)
    }

    /// [`Build::commit`], or with `reuse`, a layer already in the store instead.
    fn commit_with(
        &mut self,
        stage: &mut Stage,
        config: Value,
        layer: Option<&Path>,
        reuse: Option<pier_api::types::LayerInfo>,
        created_by: String,
        key: String,
    ) -> Result<(), BuildError> {
        let base_layers = stage
            .image
            .as_ref()
            .map(|r| r.layers.clone())
            .unwrap_or_default();
        let (rec, pin) = commit_step(
            &self.b.images,
            self.project,
            StepImage {
                config,
                base_layers: &base_layers,
                layer_tar: layer,
                reuse_layer: reuse,
                created_by,
                link: BuildLink {
                    parent: stage.image.as_ref().map(|r| r.id.clone()),
                    cache_key: key,
                },
            },
        )?;
        self.pins.push(pin);
        stage.config = self.b.images.config(&rec)?;
        self.say(format!(" ---> {}\n", rec.id.short()));
        stage.image = Some(rec);
        Ok(())
    }

    /// A step that changes only the config.
    fn config_step(
        &mut self,
        stage: &mut Stage,
        created_by: String,
        change: impl FnOnce(&mut Value),
    ) -> Result<(), BuildError> {
        let mut config = stage.config.clone();
        change(&mut config);
        let key = self.key(stage, &created_by, "");
        if self.cached(stage, &key, &created_by, &config)? {
            return Ok(());
        }
        self.commit(stage, config, None, created_by, key)
    }

    fn run_instruction(&mut self, stage: &mut Stage, cmd: &CmdLine) -> Result<(), BuildError> {
        let argv = self.argv(stage, cmd);
        if argv.is_empty() {
            return Err(BuildError::Invalid("RUN needs a command".into()));
        }
        // Build arguments in effect reach the command's environment, under ENV.
        let env_keys: Vec<String> = env_of(&stage.config)
            .iter()
            .map(|e| e.split('=').next().unwrap_or("").to_string())
            .collect();
        let args: Vec<(String, String)> = stage
            .args
            .iter()
            .filter_map(|(k, v)| Some((k.clone(), v.clone()?)))
            .collect();
        let mut env: Vec<String> = args
            .iter()
            .filter(|(k, _)| !env_keys.contains(k))
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        for (k, v) in &self.opts.build_args {
            if PROXY_ARGS.contains(&k.as_str()) && !stage.args.contains_key(k) {
                env.push(format!("{k}={v}"));
            }
        }
        let shown = argv.join(" ");
        let created_by = if args.is_empty() {
            shown.clone()
        } else {
            let kv: Vec<String> = args.iter().map(|(k, v)| format!("{k}={v}")).collect();
            format!("|{} {} {shown}", args.len(), kv.join(" "))
        };
        let key = self.key(stage, &created_by, "");
        let next = stage.config.clone();
        if self.cached(stage, &key, &created_by, &next)? {
            return Ok(());
        }
        let Some(image) = stage.image.clone() else {
            return Err(BuildError::Invalid(
                "RUN needs files to run: a FROM scratch stage has none yet (COPY a program in first)"
                    .into(),
            ));
        };
        let layer = self.run_container(&image, argv, env, &shown)?;
        let config = stage.config.clone();
        self.commit(stage, config, Some(&layer), created_by, key)
    }

    fn workdir(&mut self, stage: &mut Stage, path: &str) -> Result<(), BuildError> {
        let p = self.expand(path, Some(stage))?;
        if p.is_empty() {
            return Err(BuildError::Invalid("WORKDIR needs a path".into()));
        }
        let cur = stage.config["config"]["WorkingDir"]
            .as_str()
            .filter(|s| !s.is_empty())
            .unwrap_or("/")
            .to_string();
        let dir = if p.starts_with('/') {
            clean(&p)
        } else {
            clean(&format!("{cur}/{p}"))
        };
        let shell = shell_of(&stage.config).join(" ");
        let created_by = format!("{shell} #(nop) WORKDIR {dir}");
        let key = self.key(stage, &created_by, "");
        let mut config = stage.config.clone();
        config["config"]["WorkingDir"] = json!(dir);
        if self.cached(stage, &key, &created_by, &config)? {
            return Ok(());
        }
        // The directory is made now (root's, 0755), as Docker makes it.
        let mnt = self.mount_stage(stage, true)?;
        let target = pier_runtime::rootfs::resolve_in_root(&mnt.rootfs, Path::new(&dir))
            .map_err(BuildError::io(format!("resolve WORKDIR {dir}")))?;
        fs::mkdir_all(&mnt.rootfs, &target, (0, 0))?;
        let layer_path = self.next_name("layer");
        let layer = mnt.finish(&layer_path, false)?;
        self.commit(stage, config, layer.as_deref(), created_by, key)
    }

    /// Mounts the stage's image in the work directory.
    fn mount_stage(&mut self, stage: &Stage, writable: bool) -> Result<fs::Mounted, BuildError> {
        let layers = stage
            .image
            .as_ref()
            .map(|r| r.layers.clone())
            .unwrap_or_default();
        let dir = self.next_name("mnt");
        fs::Mounted::new(dir, &self.b.images, &layers, writable)
    }

    /// The image `COPY --from` names: an earlier stage (by name or index) or an image.
    fn copy_from_layers(
        &mut self,
        from: &str,
    ) -> Result<Vec<pier_api::types::LayerInfo>, BuildError> {
        let stage = match from.parse::<usize>() {
            Ok(n) => Some(self.done.get(n).ok_or_else(|| {
                BuildError::Invalid(format!(
                    "COPY --from={n}: there is no earlier stage {n} (stages count from 0)"
                ))
            })?),
            Err(_) => self.done.iter().rev().find(|(name, _)| {
                name.as_deref()
                    .is_some_and(|n| n.eq_ignore_ascii_case(from))
            }),
        };
        if let Some((_, img)) = stage {
            return Ok(img.as_ref().map(|r| r.layers.clone()).unwrap_or_default());
        }
        match self.b.images.resolve_pinned(self.project, from) {
            Ok((rec, pin)) => {
                self.pins.push(pin);
                Ok(rec.layers)
            }
            Err(ImageError::NotFound { .. } | ImageError::InvalidReference(_)) => {
                Err(BuildError::Invalid(format!(
                    "COPY --from={from}: no earlier build stage and no image is named {from}; load the image first"
                )))
            }
            Err(e) => Err(e.into()),
        }
    }

    fn copy(&mut self, stage: &mut Stage, a: &CopyArgs, add: bool) -> Result<(), BuildError> {
        let kw = if add { "ADD" } else { "COPY" };
        let mut sources = Vec::new();
        for s in &a.sources {
            sources.push(self.expand(s, Some(stage))?);
        }
        let dest = self.expand(&a.dest, Some(stage))?;
        let chown = a
            .chown
            .as_deref()
            .map(|c| self.expand(c, Some(stage)))
            .transpose()?
            .filter(|c| !c.is_empty());
        let chmod = match &a.chmod {
            None => None,
            Some(m) => {
                let m = self.expand(m, Some(stage))?;
                Some(
                    u32::from_str_radix(&m, 8)
                        .ok()
                        .filter(|m| *m <= 0o7777)
                        .ok_or_else(|| {
                            BuildError::Invalid(format!(
                                "{kw} --chmod={m}: give an octal mode, e.g. 755"
                            ))
                        })?,
                )
            }
        };
        let from = a
            .from
            .as_deref()
            .map(|f| self.expand(f, Some(stage)))
            .transpose()?;
        if add {
            for s in &sources {
                let lower = s.to_ascii_lowercase();
                if ["http://", "https://", "git://", "git@", "ftp://"]
                    .iter()
                    .any(|p| lower.starts_with(p))
                {
                    return Err(BuildError::Invalid(format!(
                        "ADD {s}: adding from a URL needs the network, which Pier's builder does not use; download the file into the build context and ADD or COPY it from there"
                    )));
                }
            }
        }
        // Where sources come from: the context, or another stage's (or image's) root.
        let (src_root, scoped, _src_mount) = match &from {
            None => (self.context.clone(), false, None),
            Some(f) => {
                let layers = self.copy_from_layers(f)?;
                let dir = self.next_name("from");
                let m = fs::Mounted::new(dir, &self.b.images, &layers, false)?;
                (m.rootfs.clone(), true, Some(m))
            }
        };
        let where_ = match &from {
            None => "the build context (or excluded by .dockerignore)".to_string(),
            Some(f) => format!("stage or image {f}"),
        };
        let failed = |e: ContextError| match e {
            ContextError::NoMatch(p) => BuildError::Invalid(format!(
                "{kw} failed: no source files were specified: nothing in {where_} matches {p}"
            )),
            ContextError::Io(e) => BuildError::io("read the sources")(e),
            e => BuildError::Invalid(format!("{kw} failed: {e}")),
        };
        let mut resolved: Vec<(String, PathBuf)> = Vec::new();
        for s in &sources {
            let found = context::expand_sources(&src_root, s).map_err(failed)?;
            for rel in found {
                let p = context::resolve(&src_root, &rel, scoped).map_err(failed)?;
                if p.symlink_metadata().is_err() {
                    return Err(BuildError::Invalid(format!(
                        "{kw} failed: {rel}: no such file or directory in {where_}"
                    )));
                }
                let name = rel.rsplit('/').next().unwrap_or(&rel).to_string();
                resolved.push((name, p));
            }
        }
        if resolved.len() > 1 && !dest.ends_with('/') {
            return Err(BuildError::Invalid(format!(
                "When using {kw} with more than one source file, the destination must be a directory and end with a /"
            )));
        }
        let mut h = Sha256::new();
        for (name, p) in &resolved {
            context::hash_tree(&mut h, p, name).map_err(BuildError::io("read the sources"))?;
        }
        let sum = pier_api::hex(&h.finalize());
        let kind = match resolved.as_slice() {
            [(_, p)] if p.is_dir() => "dir",
            [_] => "file",
            _ => "multi",
        };
        let shell = shell_of(&stage.config).join(" ");
        let created_by = format!("{shell} #(nop) {kw} {kind}:{sum} in {dest} ");
        let extra = format!("from={from:?} chown={chown:?} chmod={chmod:?}");
        let key = self.key(stage, &created_by, &extra);
        let next = stage.config.clone();
        if self.cached(stage, &key, &created_by, &next)? {
            return Ok(());
        }
        let mnt = self.mount_stage(stage, true)?;
        let owner = match &chown {
            None => (0, 0),
            Some(c) => fs::resolve_chown(&mnt.rootfs, c)?,
        };
        let workdir = stage.config["config"]["WorkingDir"]
            .as_str()
            .filter(|s| !s.is_empty())
            .unwrap_or("/")
            .to_string();
        let dest_is_dir = dest.ends_with('/') || dest == "." || dest.ends_with("/.");
        let dest_abs = if dest.starts_with('/') {
            dest.clone()
        } else {
            format!("{workdir}/{dest}")
        };
        let opts = fs::CopyOpts { owner, chmod };
        for (name, p) in &resolved {
            fs::copy_source(&mnt.rootfs, p, name, &dest_abs, dest_is_dir, &opts, add)?;
        }
        let layer_path = self.next_name("layer");
        let layer = mnt.finish(&layer_path, true)?;
        drop(_src_mount);
        let config = stage.config.clone();
        self.commit(stage, config, layer.as_deref(), created_by, key)
    }
}

/// `k=v k=v`, as history shows `ENV` and `LABEL`.
fn pairs_text(kv: &[(String, String)]) -> String {
    kv.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Adds `keys` to the config's object `field` (`ExposedPorts`, `Volumes`): `{key: {}}`.
pub(super) fn add_keys(c: &mut Value, field: &str, keys: &[String]) {
    if !c["config"][field].is_object() {
        c["config"][field] = json!({});
    }
    for k in keys {
        c["config"][field][k] = json!({});
    }
}

/// A `HEALTHCHECK` as the image config stores it.
pub(super) fn healthcheck_json(h: Option<&HealthArgs>) -> Value {
    let Some(h) = h else {
        return json!({ "Test": ["NONE"] });
    };
    let test = match &h.test {
        CmdLine::Shell(s) => json!(["CMD-SHELL", s]),
        CmdLine::Exec(v) => {
            let mut t = vec!["CMD".to_string()];
            t.extend(v.iter().cloned());
            json!(t)
        }
    };
    let mut out = json!({ "Test": test });
    for (k, v) in [
        ("Interval", nanos(h.interval)),
        ("Timeout", nanos(h.timeout)),
        ("StartPeriod", nanos(h.start_period)),
        ("StartInterval", nanos(h.start_interval)),
    ] {
        if let Some(v) = v {
            out[k] = json!(v);
        }
    }
    if let Some(r) = h.retries {
        out["Retries"] = json!(r);
    }
    out
}
