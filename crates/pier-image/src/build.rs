//! Images made on this host without a registry: a flat rootfs tar imported as a one-layer
//! image (`pier image import`), and a small image built from host binaries and the shared
//! libraries they load (`pier image from-host`), so an offline machine has something to run.

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::process::Command;

use pier_api::types::{LayerInfo, LoadedImage};
use pier_api::{ImageRef, ProjectName};
use sha2::{Digest as _, Sha256};

use crate::archive::{oci_manifest, OCI_MANIFEST};
use crate::error::{io_err, ImageError};
use crate::store::{BuildLink, ImagePin, ImageRecord, ImageStore, NewImage};

const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The OCI name of this host's architecture.
pub fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// `pier image import ROOTFS.tar [NAME]`: a flat rootfs (optionally gzip or zstd) as a
/// one-layer image.
pub fn import(
    store: &ImageStore,
    project: &ProjectName,
    rootfs: impl Read,
    name: Option<ImageRef>,
) -> Result<LoadedImage, ImageError> {
    import_with(store, project, rootfs, name, import_runtime_config())
}

/// The runtime config an imported image starts with: `PATH` only.
pub fn import_runtime_config() -> serde_json::Value {
    serde_json::json!({ "Env": [DEFAULT_PATH] })
}

/// [`import`] with the image's runtime config (`config` of the image config) given.
pub fn import_with(
    store: &ImageStore,
    project: &ProjectName,
    rootfs: impl Read,
    name: Option<ImageRef>,
    runtime: serde_json::Value,
) -> Result<LoadedImage, ImageError> {
    store.undo_on_error(|| {
        let _g = store.adding();
        let layer = layer_from(store, rootfs)?;
        let config = image_config(
            &layer,
            runtime,
            "pier image import",
            "imported from a rootfs tar",
        );
        commit_one(store, project, config, layer, name)
    })
}

/// Stores a layer tar read from `r` (hashed on the way) and unpacks it.
fn layer_from(store: &ImageStore, r: impl Read) -> Result<LayerInfo, ImageError> {
    let scratch = store.scratch()?;
    let path = scratch.path().join("layer");
    let digest = copy_hashed(r, &path)?;
    store.add_layer(&digest, Some(&path), None)
}

fn copy_hashed(mut r: impl Read, path: &Path) -> Result<pier_api::Digest, ImageError> {
    let mut out = File::create(path).map_err(io_err("create", path))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = r
            .read(&mut buf)
            .map_err(io_err("read the upload into", path))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        out.write_all(&buf[..n]).map_err(io_err("write", path))?;
    }
    Ok(pier_api::Digest::from_sha256_bytes(&hasher.finalize()))
}

fn image_config(
    layer: &LayerInfo,
    runtime: serde_json::Value,
    created_by: &str,
    comment: &str,
) -> Vec<u8> {
    let now = pier_api::time::now_rfc3339();
    let config = serde_json::json!({
        "created": now,
        "architecture": host_arch(),
        "os": "linux",
        "config": runtime,
        "rootfs": { "type": "layers", "diff_ids": [layer.diff_id] },
        "history": [{ "created": now, "created_by": created_by, "comment": comment }],
    });
    serde_json::to_vec(&config).expect("json")
}

fn commit_one(
    store: &ImageStore,
    project: &ProjectName,
    config: Vec<u8>,
    layer: LayerInfo,
    name: Option<ImageRef>,
) -> Result<LoadedImage, ImageError> {
    let config_digest = store.blobs().put_bytes(&config)?;
    let manifest = oci_manifest(
        &config_digest,
        config.len() as u64,
        std::slice::from_ref(&layer),
    );
    let manifest_digest = store.blobs().put_bytes(&manifest)?;
    let created = serde_json::from_slice::<serde_json::Value>(&config)
        .ok()
        .and_then(|c| {
            c.get("created")
                .and_then(|v| v.as_str())
                .map(str::to_string)
        });
    store.commit_image(
        project,
        NewImage {
            manifest_digest,
            manifest_media_type: OCI_MANIFEST.into(),
            config_digest,
            layers: vec![layer],
            created,
            tags: name.into_iter().collect(),
            build: None,
        },
    )
}

/// What `pier commit` records about the new layer.
#[derive(Debug, Clone, Default)]
pub struct CommitInfo {
    /// The runtime config of the container (`Cmd`, `Entrypoint`, `Env`, ...), replacing
    /// the base image's.
    pub runtime: serde_json::Value,
    pub created_by: String,
    pub comment: String,
    pub author: String,
}

/// `pier commit`: the base image plus one layer (an OCI layer tar at `layer_tar`).
pub fn commit(
    store: &ImageStore,
    project: &ProjectName,
    base: &crate::store::ImageRecord,
    layer_tar: &Path,
    info: CommitInfo,
    name: Option<ImageRef>,
) -> Result<LoadedImage, ImageError> {
    store.undo_on_error(|| {
        let _g = store.adding();
        let layer = layer_from(store, File::open(layer_tar).map_err(io_err("open", layer_tar))?)?;
        let mut config = store.config(base)?;
        let now = pier_api::time::now_rfc3339();
        config["created"] = serde_json::json!(now);
        config["config"] = info.runtime;
        if !info.author.is_empty() {
            config["author"] = serde_json::json!(info.author);
        }
        match config.pointer_mut("/rootfs/diff_ids").and_then(|d| d.as_array_mut()) {
            Some(ids) => ids.push(serde_json::json!(layer.diff_id)),
            None => return Err(ImageError::Archive("the base image config has no rootfs.diff_ids".into())),
        }
        let entry = serde_json::json!({ "created": now, "created_by": info.created_by, "comment": info.comment, "author": info.author });
        match config.get_mut("history").and_then(|h| h.as_array_mut()) {
            Some(h) => h.push(entry),
            None => config["history"] = serde_json::json!([entry]),
        }
        let config = serde_json::to_vec(&config).expect("json");
        let config_digest = store.blobs().put_bytes(&config)?;
        let mut layers = base.layers.clone();
        layers.push(layer);
        let manifest = oci_manifest(&config_digest, config.len() as u64, &layers);
        let manifest_digest = store.blobs().put_bytes(&manifest)?;
        store.commit_image(
            project,
            // The image it was made on is its parent (`Parent` in Docker's inspect), as a
            // build step's: no cache key, so no build ever takes it as a cached step.
            NewImage {
                manifest_digest,
                manifest_media_type: OCI_MANIFEST.into(),
                config_digest,
                layers,
                created: Some(now),
                tags: name.into_iter().collect(),
                build: Some(crate::store::BuildLink { parent: Some(base.id.clone()), cache_key: String::new() }),
            },
        )
    })
}

/// What a Dockerfile build step adds to the image it ran on.
#[derive(Debug)]
pub struct StepImage<'a> {
    /// The whole image config so far: the parent's, with the step's changes to its
    /// runtime `config` made. [`commit_step`] sets `created` and adds the history entry
    /// and the layer's diff ID.
    pub config: serde_json::Value,
    /// The parent's layers (none for `FROM scratch`).
    pub base_layers: &'a [LayerInfo],
    /// The step's changes as an OCI layer tar; none for a step that only changed the
    /// config (its history entry says `empty_layer`, as Docker's do).
    pub layer_tar: Option<&'a Path>,
    /// Without `layer_tar`: a layer already in the store that the step adds (taken from a
    /// `--cache-from` image whose history has the same step).
    pub reuse_layer: Option<LayerInfo>,
    /// The history entry's `created_by`.
    pub created_by: String,
    pub link: BuildLink,
}

/// Records the image of a build step (untagged), pinned for the rest of the build.
pub fn commit_step(
    store: &ImageStore,
    project: &ProjectName,
    step: StepImage<'_>,
) -> Result<(ImageRecord, ImagePin), ImageError> {
    store.undo_on_error(|| {
        let _g = store.adding();
        let mut config = step.config;
        let mut layers = step.base_layers.to_vec();
        let layer = match step.layer_tar {
            Some(p) => Some(layer_from(
                store,
                File::open(p).map_err(io_err("open", p))?,
            )?),
            None => step.reuse_layer,
        };
        let now = pier_api::time::now_rfc3339();
        config["created"] = serde_json::json!(now);
        if config.pointer("/rootfs/diff_ids").is_none() {
            config["rootfs"] = serde_json::json!({ "type": "layers", "diff_ids": [] });
        }
        let mut entry = serde_json::json!({ "created": now, "created_by": step.created_by });
        match &layer {
            Some(l) => {
                if let Some(ids) = config
                    .pointer_mut("/rootfs/diff_ids")
                    .and_then(|d| d.as_array_mut())
                {
                    ids.push(serde_json::json!(l.diff_id));
                }
                layers.push(l.clone());
            }
            None => entry["empty_layer"] = serde_json::json!(true),
        }
        match config.get_mut("history").and_then(|h| h.as_array_mut()) {
            Some(h) => h.push(entry),
            None => config["history"] = serde_json::json!([entry]),
        }
        let bytes = serde_json::to_vec(&config).expect("json");
        let config_digest = store.blobs().put_bytes(&bytes)?;
        let manifest = oci_manifest(&config_digest, bytes.len() as u64, &layers);
        let manifest_digest = store.blobs().put_bytes(&manifest)?;
        let pin = store.pin(&config_digest);
        store.commit_image(
            project,
            NewImage {
                manifest_digest,
                manifest_media_type: OCI_MANIFEST.into(),
                config_digest: config_digest.clone(),
                layers,
                created: Some(now),
                tags: Vec::new(),
                build: Some(step.link),
            },
        )?;
        let rec = store.resolve(project, config_digest.as_str())?;
        Ok((rec, pin))
    })
}

/// `pier image from-host NAME BIN...`.
pub fn from_host(
    store: &ImageStore,
    project: &ProjectName,
    name: ImageRef,
    binaries: &[String],
) -> Result<LoadedImage, ImageError> {
    if binaries.is_empty() {
        return Err(ImageError::FromHost {
            path: String::new(),
            reason: "name at least one binary".into(),
        });
    }
    store.undo_on_error(|| {
        let _g = store.adding();
        let scratch = store.scratch()?;
        let tar_path = scratch.path().join("layer.tar");
        let file = File::create(&tar_path).map_err(io_err("create", &tar_path))?;
        let mut tree = TarTree {
            tar: tar::Builder::new(file),
            added: BTreeSet::new(),
        };
        tree.skeleton()?;
        let mut shell = false;
        for bin in binaries {
            let path = PathBuf::from(bin);
            check_binary(&path)?;
            tree.add_path(&path, 0)?;
            for lib in shared_libraries(&path)? {
                tree.add_path(&lib, 0)?;
            }
            if path.file_name().is_some_and(|f| f == "busybox") {
                shell |= tree.add_busybox_applets(&path)?;
            }
        }
        let file = tree.tar.into_inner().map_err(io_err("write", &tar_path))?;
        drop(file);
        let layer = layer_from(
            store,
            File::open(&tar_path).map_err(io_err("open", &tar_path))?,
        )?;
        let cmd = if shell {
            "/bin/sh".to_string()
        } else {
            binaries[0].clone()
        };
        let runtime = serde_json::json!({ "Env": [DEFAULT_PATH], "Cmd": [cmd] });
        let created_by = format!("pier image from-host {}", binaries.join(" "));
        let config = image_config(
            &layer,
            runtime,
            &created_by,
            "host binaries and their shared libraries",
        );
        commit_one(store, project, config, layer, Some(name))
    })
}

fn check_binary(path: &Path) -> Result<(), ImageError> {
    let fail = |reason: &str| ImageError::FromHost {
        path: path.display().to_string(),
        reason: reason.into(),
    };
    if !path.is_absolute() {
        return Err(fail("give an absolute path, e.g. /bin/busybox"));
    }
    let m = fs::metadata(path).map_err(|e| fail(&format!("{e}")))?;
    if !m.is_file() || m.permissions().mode() & 0o111 == 0 {
        return Err(fail("it is not an executable file"));
    }
    Ok(())
}

/// The shared libraries (and the loader) a binary needs, as the host's `ldd` resolves them.
fn shared_libraries(bin: &Path) -> Result<Vec<PathBuf>, ImageError> {
    let fail = |reason: String| ImageError::FromHost {
        path: bin.display().to_string(),
        reason,
    };
    let out = Command::new("ldd").arg(bin).output().map_err(|e| {
        fail(format!(
            "cannot run ldd to find its libraries ({e}); install libc-bin"
        ))
    })?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        // Static binaries: ldd says so and fails; they need nothing.
        let all = format!("{text}{}", String::from_utf8_lossy(&out.stderr));
        if all.contains("not a dynamic executable") || all.contains("statically linked") {
            return Ok(vec![]);
        }
        return Err(fail(format!("ldd failed: {}", all.trim())));
    }
    let mut libs = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.contains("=> not found") {
            return Err(fail(format!(
                "a library it needs is missing on this host: {line}"
            )));
        }
        let path = match line.split_once("=>") {
            Some((_, right)) => right.trim(),
            None => line,
        };
        let path = path.split(" (").next().unwrap_or("").trim();
        if path.starts_with('/') {
            libs.push(PathBuf::from(path));
        }
    }
    Ok(libs)
}

/// A tar being built from host paths; each path is added once, parents first, host
/// symlinks kept as symlinks.
struct TarTree {
    tar: tar::Builder<File>,
    added: BTreeSet<PathBuf>,
}

fn rel(p: &Path) -> PathBuf {
    p.strip_prefix("/").unwrap_or(p).to_path_buf()
}

fn header(kind: tar::EntryType, mode: u32) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h.set_size(0);
    h
}

/// Resolves `.` and `..` lexically.
fn normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::from("/");
    for c in p.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::Normal(n) => out.push(n),
            _ => {}
        }
    }
    out
}

impl TarTree {
    fn io(path: &Path) -> impl FnOnce(io::Error) -> ImageError + '_ {
        io_err("add to the image", path)
    }

    fn dir(&mut self, path: &Path, mode: u32) -> Result<(), ImageError> {
        if self.added.insert(path.to_path_buf()) {
            let mut h = header(tar::EntryType::Directory, mode);
            self.tar
                .append_data(&mut h, rel(path), io::empty())
                .map_err(Self::io(path))?;
        }
        Ok(())
    }

    fn symlink(&mut self, path: &Path, target: &Path) -> Result<(), ImageError> {
        if self.added.insert(path.to_path_buf()) {
            let mut h = header(tar::EntryType::Symlink, 0o777);
            self.tar
                .append_link(&mut h, rel(path), target)
                .map_err(Self::io(path))?;
        }
        Ok(())
    }

    fn file(
        &mut self,
        path: &Path,
        contents: impl Read,
        size: u64,
        mode: u32,
    ) -> Result<(), ImageError> {
        if self.added.insert(path.to_path_buf()) {
            let mut h = header(tar::EntryType::Regular, mode);
            h.set_size(size);
            self.tar
                .append_data(&mut h, rel(path), contents)
                .map_err(Self::io(path))?;
        }
        Ok(())
    }

    fn skeleton(&mut self) -> Result<(), ImageError> {
        for (d, mode) in [
            ("/etc", 0o755),
            ("/tmp", 0o1777),
            ("/root", 0o700),
            ("/proc", 0o555),
            ("/sys", 0o555),
            ("/dev", 0o755),
            ("/var", 0o755),
            ("/home", 0o755),
        ] {
            self.dir(Path::new(d), mode)?;
        }
        let passwd =
            b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n";
        let group = b"root:x:0:\nnogroup:x:65534:\n";
        self.file(
            Path::new("/etc/passwd"),
            &passwd[..],
            passwd.len() as u64,
            0o644,
        )?;
        self.file(
            Path::new("/etc/group"),
            &group[..],
            group.len() as u64,
            0o644,
        )
    }

    /// Adds a host path with every directory and symlink on the way to it.
    fn add_path(&mut self, path: &Path, hops: u32) -> Result<(), ImageError> {
        if hops > 32 {
            return Err(ImageError::FromHost {
                path: path.display().to_string(),
                reason: "too many levels of symlinks".into(),
            });
        }
        let path = normalize(path);
        let comps: Vec<_> = path
            .components()
            .filter(|c| matches!(c, Component::Normal(_)))
            .collect();
        let mut cur = PathBuf::from("/");
        for (i, c) in comps.iter().enumerate() {
            let next = cur.join(c);
            let m = fs::symlink_metadata(&next).map_err(io_err("read", &next))?;
            if m.file_type().is_symlink() {
                let target = fs::read_link(&next).map_err(io_err("read", &next))?;
                self.symlink(&next, &target)?;
                let resolved = if target.is_absolute() {
                    target
                } else {
                    cur.join(target)
                };
                let rest: PathBuf = comps[i + 1..].iter().collect();
                return self.add_path(&resolved.join(rest), hops + 1);
            }
            if m.is_dir() {
                self.dir(&next, m.mode() & 0o7777)?;
            } else if i + 1 == comps.len() && m.is_file() {
                let f = File::open(&next).map_err(io_err("open", &next))?;
                self.file(&next, f, m.len(), m.mode() & 0o7777)?;
            } else {
                return Err(ImageError::FromHost {
                    path: next.display().to_string(),
                    reason: "not a file or directory".into(),
                });
            }
            cur = next;
        }
        Ok(())
    }

    /// Adds a symlink per busybox applet; returns whether a shell is among them.
    fn add_busybox_applets(&mut self, busybox: &Path) -> Result<bool, ImageError> {
        let out = Command::new(busybox)
            .arg("--list-full")
            .output()
            .map_err(io_err("run", busybox))?;
        if !out.status.success() {
            return Ok(false);
        }
        let mut shell = false;
        for applet in String::from_utf8_lossy(&out.stdout).lines() {
            let applet = Path::new("/").join(applet.trim());
            let (Some(parent), Some(name)) = (applet.parent(), applet.file_name()) else {
                continue;
            };
            let real_parent = if parent.exists() {
                self.add_path(parent, 0)?;
                fs::canonicalize(parent).map_err(io_err("resolve", parent))?
            } else {
                let mut cur = PathBuf::from("/");
                for c in parent
                    .components()
                    .filter(|c| matches!(c, Component::Normal(_)))
                {
                    cur.push(c);
                    self.dir(&cur, 0o755)?;
                }
                cur
            };
            let link = real_parent.join(name);
            if !self.added.contains(&link) {
                self.symlink(&link, busybox)?;
            }
            shell |= applet == Path::new("/bin/sh");
        }
        Ok(shell)
    }
}
