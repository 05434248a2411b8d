//! A container's files: `diff` (what changed against its image), `export` (the whole
//! rootfs as a tar), `commit` (the changes as a new image layer), and `cp` in both
//! directions.
//!
//! Changes live in the overlay's upper directory, where a deletion is a 0/0 character
//! device and a replaced directory carries `trusted.overlay.opaque`. Commit turns those
//! back into OCI whiteouts. Paths given by users are resolved inside the container's
//! root, so nothing here reads or writes outside it.

use std::collections::HashSet;
use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use pier_api::containers::{ContainerInspect, ContainerStatus};
use pier_api::types::LoadedImage;
use pier_api::{ImageRef, ProjectName};
use pier_runtime::rootfs::resolve_in_root;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::containers::{conflict, internal, invalid, unmount, Containers};
use crate::error::{ApiError, ApiResult};

/// One change in a container's filesystem (`pier diff`); `kind` as Docker: 0 modified,
/// 1 added, 2 deleted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Change {
    pub path: String,
    pub kind: u8,
}

/// Body of `POST /v1/containers/{id}/commit`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct CommitRequest {
    /// `name[:tag]` for the new image; untagged when absent.
    pub reference: Option<String>,
    pub message: String,
    pub author: String,
}

/// What [`Containers::archive_stat`] finds.
#[derive(Debug, Clone)]
pub struct PathStat {
    pub name: String,
    pub size: u64,
    /// `st_mode`.
    pub mode: u32,
    pub mtime: i64,
    pub mtime_nsec: i64,
    /// Where a symlink points, as written in it.
    pub link_target: String,
}

fn is_whiteout(m: &fs::Metadata) -> bool {
    m.file_type().is_char_device() && m.rdev() == 0
}

fn is_opaque(p: &Path) -> bool {
    let mut buf = [0u8; 4];
    matches!(rustix::fs::lgetxattr(p, "trusted.overlay.opaque", &mut buf), Ok(1) if buf[0] == b'y')
}

fn io_fail(what: &str) -> impl FnOnce(std::io::Error) -> ApiError + '_ {
    move |e| internal(format!("{what}: {e}"))
}

impl Containers {
    /// Runs `f` on the container's mounted rootfs (mounting it for the call when the
    /// container is stopped), holding the container's lock.
    fn with_rootfs<T>(
        &self,
        project: &ProjectName,
        name: &str,
        f: impl FnOnce(&ContainerInspect, &Path) -> ApiResult<T>,
    ) -> ApiResult<T> {
        let c = self.get(project, name)?;
        let lock = self.lock(&c.id);
        let _g = lock.blocking_lock();
        let c = self.get(project, &c.id)?;
        let rootfs = self.cdir(&c.id).join("rootfs");
        let running = matches!(
            c.state.status,
            ContainerStatus::Running | ContainerStatus::Paused
        );
        if !running {
            self.mount_rootfs(&c)?;
        }
        let r = f(&c, &rootfs);
        if !running {
            unmount(&rootfs);
        }
        r
    }

    /// Like [`Self::with_rootfs`], but a running container is seen as its processes see it
    /// (through `/proc/PID/root`), with its volumes, bind mounts and /etc/hosts: what
    /// `cp` copies. A stopped one is seen without its mounts.
    fn with_view<T>(
        &self,
        project: &ProjectName,
        name: &str,
        f: impl FnOnce(&ContainerInspect, &Path) -> ApiResult<T>,
    ) -> ApiResult<T> {
        let c = self.get(project, name)?;
        let view = c.state.pid.filter(|pid| {
            matches!(
                c.state.status,
                ContainerStatus::Running | ContainerStatus::Paused
            ) && fs::read_to_string(format!("/proc/{pid}/cgroup"))
                .is_ok_and(|cg| cg.contains(&self.cgroup_path(&c.id)))
        });
        match view {
            Some(pid) => {
                let lock = self.lock(&c.id);
                let _g = lock.blocking_lock();
                f(&c, &PathBuf::from(format!("/proc/{pid}/root")))
            }
            None => self.with_rootfs(project, name, f),
        }
    }

    /// Mount points the runtime created in the upper layer; not changes of the user's.
    fn mount_points(&self, c: &ContainerInspect) -> HashSet<PathBuf> {
        let spec = oci_spec::runtime::Spec::load(self.cdir(&c.id).join("config.json")).ok();
        spec.and_then(|s| s.mounts().clone())
            .unwrap_or_default()
            .iter()
            .map(|m| {
                m.destination()
                    .strip_prefix("/")
                    .unwrap_or(m.destination())
                    .to_path_buf()
            })
            .collect()
    }

    fn lower_dirs(&self, c: &ContainerInspect) -> ApiResult<Vec<PathBuf>> {
        let image = self.images.resolve(&c.project, c.image_id.as_str())?;
        Ok(image
            .layers
            .iter()
            .rev()
            .map(|l| self.images.layer_dir(&l.diff_id))
            .collect())
    }

    /// Walks the upper directory: (relative path, metadata), parents before children.
    fn upper_entries(&self, c: &ContainerInspect) -> Vec<(PathBuf, fs::Metadata)> {
        let upper = self.cdir(&c.id).join("upper");
        let mut out = walk_upper(&upper);
        let mounts = self.mount_points(c);
        // Skip what the runtime made as mount targets (empty files and directories).
        out.retain(|(p, m)| !(mounts.contains(p) && (m.is_dir() || m.len() == 0)));
        out
    }

    pub fn changes(&self, project: &ProjectName, name: &str) -> ApiResult<Vec<Change>> {
        let c = self.get(project, name)?;
        let lowers = self.lower_dirs(&c)?;
        let exists_below = |rel: &Path| {
            lowers.iter().any(|l| {
                l.join(rel)
                    .symlink_metadata()
                    .is_ok_and(|m| !is_whiteout(&m))
            })
        };
        let upper = self.cdir(&c.id).join("upper");
        let entries = self.upper_entries(&c);
        let mut changes = Vec::new();
        let mut opaque: Vec<PathBuf> = Vec::new();
        for (rel, m) in &entries {
            let under_opaque = opaque.iter().any(|o| rel.starts_with(o) && rel != o);
            let kind = if is_whiteout(m) {
                2
            } else if !under_opaque && exists_below(rel) {
                0
            } else {
                1
            };
            if m.is_dir() && is_opaque(&upper.join(rel)) {
                opaque.push(rel.clone());
            }
            changes.push(Change {
                path: format!("/{}", rel.display()),
                kind,
            });
        }
        Ok(changes)
    }

    /// `pier export`: the container's whole filesystem as a tar.
    pub fn export(&self, project: &ProjectName, name: &str, out: impl Write) -> ApiResult<()> {
        self.with_rootfs(project, name, |_, rootfs| {
            let mut tar = tar::Builder::new(out);
            tar.follow_symlinks(false);
            tar.append_dir_all(".", rootfs)
                .map_err(io_fail("export the rootfs"))?;
            tar.into_inner().map_err(io_fail("export the rootfs"))?;
            Ok(())
        })
    }

    /// `pier commit`: the container's changes as a new layer on its image.
    pub fn commit(
        &self,
        project: &ProjectName,
        name: &str,
        req: &CommitRequest,
    ) -> ApiResult<LoadedImage> {
        let reference = req
            .reference
            .as_deref()
            .map(str::parse::<ImageRef>)
            .transpose()
            .map_err(|e| invalid(e.to_string()))?;
        let c = self.get(project, name)?;
        let dir = self.cdir(&c.id);
        let layer = tempfile::NamedTempFile::new_in(&dir).map_err(io_fail("create the layer"))?;
        self.write_layer(&c, layer.as_file())?;
        let base = self.images.resolve(project, c.image_id.as_str())?;
        let spec = oci_spec::runtime::Spec::load(dir.join("config.json"))
            .map_err(|e| internal(format!("cannot read the spec: {e}")))?;
        let image_config = self.images.config(&base)?;
        let mut runtime = image_config
            .get("config")
            .cloned()
            .unwrap_or_else(|| serde_json::json!({}));
        if let Some(p) = spec.process() {
            runtime["Env"] = serde_json::json!(p
                .env()
                .clone()
                .unwrap_or_default()
                .into_iter()
                .filter(|e| !e.starts_with("HOSTNAME="))
                .collect::<Vec<_>>());
            runtime["WorkingDir"] = serde_json::json!(p.cwd());
        }
        if c.config.cmd.is_some() || c.config.entrypoint.is_some() {
            runtime["Cmd"] = serde_json::json!(c.config.cmd.clone().unwrap_or_default());
            if let Some(ep) = &c.config.entrypoint {
                runtime["Entrypoint"] = serde_json::json!(ep);
            }
        }
        let info = pier_image::build::CommitInfo {
            runtime,
            created_by: c.command.join(" "),
            comment: req.message.clone(),
            author: req.author.clone(),
        };
        let loaded =
            pier_image::build::commit(&self.images, project, &base, layer.path(), info, reference)?;
        self.emit(&c, "commit", &[("imageID", loaded.id.to_string())]);
        Ok(loaded)
    }

    /// Writes the container's changes (its overlay upper directory, without the mount
    /// points the runtime made) as an OCI layer tar. The container must not be running.
    pub(crate) fn write_layer(&self, c: &ContainerInspect, out: impl Write) -> ApiResult<()> {
        write_changes(&self.cdir(&c.id).join("upper"), &self.upper_entries(c), out)
    }

    /// Checks that `path` exists in the container, for a clear error before streaming.
    pub fn archive_check(&self, project: &ProjectName, name: &str, path: &str) -> ApiResult<()> {
        self.with_view(project, name, |_, rootfs| {
            archive_source(rootfs, path).map(|_| ())
        })
    }

    /// What a path in the container is (`docker cp` asks before copying): its last
    /// component is not followed, as in a copy.
    pub fn archive_stat(
        &self,
        project: &ProjectName,
        name: &str,
        path: &str,
    ) -> ApiResult<PathStat> {
        self.with_view(project, name, |_, rootfs| {
            let (target, base, m) = archive_source(rootfs, path)?;
            let link_target = if m.file_type().is_symlink() {
                fs::read_link(&target)
                    .map(|t| t.display().to_string())
                    .unwrap_or_default()
            } else {
                String::new()
            };
            Ok(PathStat {
                name: base.display().to_string(),
                size: m.len(),
                mode: m.mode(),
                mtime: m.mtime(),
                mtime_nsec: m.mtime_nsec(),
                link_target,
            })
        })
    }

    /// `pier cp CONTAINER:PATH -`: a tar of one path, its root entry named after it.
    pub fn archive_get(
        &self,
        project: &ProjectName,
        name: &str,
        path: &str,
        out: impl Write,
    ) -> ApiResult<()> {
        self.with_view(project, name, |_, rootfs| {
            let (target, base, m) = archive_source(rootfs, path)?;
            let mut tar = tar::Builder::new(out);
            tar.follow_symlinks(false);
            if m.is_dir() {
                tar.append_dir_all(&base, &target)
                    .map_err(io_fail("archive the path"))?;
            } else {
                tar.append_path_with_name(&target, &base)
                    .map_err(io_fail("archive the path"))?;
            }
            tar.into_inner().map_err(io_fail("archive the path"))?;
            Ok(())
        })
    }

    /// `pier cp - CONTAINER:PATH`: unpacks a tar whose single root entry becomes `path`
    /// (or goes inside `path` when that is an existing directory).
    pub fn archive_put(
        &self,
        project: &ProjectName,
        name: &str,
        path: &str,
        mut input: impl Read,
    ) -> ApiResult<()> {
        if !path.starts_with('/') {
            return Err(invalid(format!(
                "the destination {path:?} must be an absolute path in the container"
            )));
        }
        self.with_view(project, name, |c, rootfs| {
            if c.config.read_only && matches!(c.state.status, ContainerStatus::Running) {
                return Err(conflict("the container's root filesystem is read-only"));
            }
            let dest =
                resolve_in_root(rootfs, Path::new(path)).map_err(io_fail("resolve the path"))?;
            let (dir, rename_to) = if dest.is_dir() {
                (dest.clone(), None)
            } else {
                let parent = dest
                    .parent()
                    .map(Path::to_path_buf)
                    .unwrap_or_else(|| rootfs.to_path_buf());
                if !parent.is_dir() {
                    return Err(ApiError::new(
                        pier_api::ErrorKind::NotFound,
                        format!("the directory of {path} does not exist in the container"),
                    ));
                }
                (parent, dest.file_name().map(PathBuf::from))
            };
            let staging = tempfile::Builder::new()
                .prefix(".pier-cp-")
                .tempdir_in(&dir)
                .map_err(io_fail("stage the copy"))?;
            pier_image::unpack::unpack_layer(&mut input, staging.path(), &Default::default())
                .map_err(|e| invalid(format!("the archive cannot be copied in: {e}")))?;
            // What follows the archive's end (tar pads to whole records) is read too: an
            // answer with it unread closes the connection under a client still writing.
            let _ = std::io::copy(&mut (&mut input).take(1 << 20), &mut std::io::sink());
            for entry in fs::read_dir(staging.path())
                .map_err(io_fail("read the staged copy"))?
                .flatten()
            {
                let target = match &rename_to {
                    Some(n) => dir.join(n),
                    None => dir.join(entry.file_name()),
                };
                if let Ok(m) = target.symlink_metadata() {
                    if m.is_dir() && entry.path().is_dir() {
                        merge_dir(&entry.path(), &target)?;
                        continue;
                    }
                    if m.is_dir() {
                        fs::remove_dir_all(&target).map_err(io_fail("replace the destination"))?;
                    } else {
                        fs::remove_file(&target).map_err(io_fail("replace the destination"))?;
                    }
                }
                fs::rename(entry.path(), &target).map_err(io_fail("place the copy"))?;
            }
            Ok(())
        })
    }
}

/// Walks an overlay upper directory: (relative path, metadata), parents before children.
pub(crate) fn walk_upper(upper: &Path) -> Vec<(PathBuf, fs::Metadata)> {
    fn walk(base: &Path, dir: &Path, out: &mut Vec<(PathBuf, fs::Metadata)>) {
        let Ok(rd) = fs::read_dir(dir) else { return };
        let mut entries: Vec<_> = rd.flatten().collect();
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let Ok(m) = e.path().symlink_metadata() else {
                continue;
            };
            let rel = e
                .path()
                .strip_prefix(base)
                .expect("under base")
                .to_path_buf();
            let is_dir = m.is_dir();
            out.push((rel, m));
            if is_dir {
                walk(base, &e.path(), out);
            }
        }
    }
    let mut out = Vec::new();
    walk(upper, upper, &mut out);
    out
}

/// Writes `entries` of the overlay upper directory `upper` as an OCI layer tar: deletions
/// (0/0 character devices) become `.wh.` whiteouts, opaque directories get `.wh..wh..opq`.
pub(crate) fn write_changes(
    upper: &Path,
    entries: &[(PathBuf, fs::Metadata)],
    out: impl Write,
) -> ApiResult<()> {
    let mut tar = tar::Builder::new(out);
    tar.follow_symlinks(false);
    for (rel, m) in entries {
        let full = upper.join(rel);
        if is_whiteout(m) {
            let name = format!(
                ".wh.{}",
                rel.file_name().unwrap_or_default().to_string_lossy()
            );
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::Regular);
            h.set_size(0);
            h.set_mode(0o644);
            tar.append_data(&mut h, rel.with_file_name(name), std::io::empty())
                .map_err(io_fail("write the layer"))?;
            continue;
        }
        tar.append_path_with_name(&full, rel)
            .map_err(io_fail("write the layer"))?;
        if m.is_dir() && is_opaque(&full) {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::Regular);
            h.set_size(0);
            h.set_mode(0o644);
            tar.append_data(&mut h, rel.join(".wh..wh..opq"), std::io::empty())
                .map_err(io_fail("write the layer"))?;
        }
    }
    tar.finish().map_err(io_fail("write the layer"))?;
    Ok(())
}

/// Resolves a path to copy out: its parent is resolved inside the root, its last
/// component is taken as it is (a symlink is copied as a symlink).
fn archive_source(rootfs: &Path, path: &str) -> ApiResult<(PathBuf, PathBuf, fs::Metadata)> {
    let p = Path::new(path);
    let base = p
        .file_name()
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    let parent = resolve_in_root(rootfs, p.parent().unwrap_or(Path::new("/")))
        .map_err(io_fail("resolve the path"))?;
    let target = if p.file_name().is_some() {
        parent.join(&base)
    } else {
        parent
    };
    let m = target.symlink_metadata().map_err(|_| {
        ApiError::new(
            pier_api::ErrorKind::NotFound,
            format!("no such file or directory in the container: {path}"),
        )
    })?;
    Ok((target, base, m))
}

/// Moves the contents of `src` into the existing directory `dst`, replacing what is there.
fn merge_dir(src: &Path, dst: &Path) -> ApiResult<()> {
    for entry in fs::read_dir(src)
        .map_err(io_fail("read the copy"))?
        .flatten()
    {
        let target = dst.join(entry.file_name());
        match target.symlink_metadata() {
            Ok(m) if m.is_dir() && !m.file_type().is_symlink() && entry.path().is_dir() => {
                merge_dir(&entry.path(), &target)?
            }
            Ok(m) => {
                if m.is_dir() {
                    fs::remove_dir_all(&target).map_err(io_fail("replace"))?;
                } else {
                    fs::remove_file(&target).map_err(io_fail("replace"))?;
                }
                fs::rename(entry.path(), &target).map_err(io_fail("place"))?;
            }
            Err(_) => fs::rename(entry.path(), &target).map_err(io_fail("place"))?,
        }
    }
    Ok(())
}
