//! A container's files: `diff` (what changed against its image), `export` (the whole
//! rootfs as a tar), `commit` (the changes as a new image layer), and `cp` in both
//! directions.
//!
//! Changes live in the overlay's upper directory, where a deletion is a 0/0 character
//! device and a replaced directory carries `trusted.overlay.opaque`. Commit turns those
//! back into OCI whiteouts.
//!
//! Everything a container controls (its root, its overlay upper directory) is read and
//! written through [`pier_runtime::in_root`]: paths given by users are resolved by the
//! kernel inside the container's root (`openat2` with `RESOLVE_IN_ROOT`), and below that
//! nothing follows a symlink, so a container that swaps a directory for a symlink while
//! a copy runs cannot lead it onto the host. No scratch directory is made: an archive is
//! extracted entry by entry relative to the destination's descriptor.

use std::collections::HashSet;
use std::ffi::{OsStr, OsString};
use std::fs;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use pier_api::containers::{ContainerInspect, ContainerStatus};
use pier_api::types::LoadedImage;
use pier_api::{ImageRef, ProjectName};
use pier_runtime::in_root::{self, Entry, Extract, InRoot, Meta};
use rustix::fs::{FileType, Mode, OFlags, CWD};

use pier_api::containers::{Change, CommitRequest};

use crate::context::RequestContext;
use crate::error::{conflict, internal, invalid};
use crate::error::{EngineError, EngineResult};
use crate::instances::service::unmount;
use crate::instances::Instances;

/// What [`Instances::archive_stat`] finds.
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

fn is_opaque(e: &Entry) -> bool {
    e.meta.is_dir() && e.xattr("trusted.overlay.opaque").is_some_and(|v| v == b"y")
}

fn io_fail(what: &str) -> impl FnOnce(std::io::Error) -> EngineError + '_ {
    move |e| internal(format!("{what}: {e}"))
}

impl Instances {
    /// Runs `f` on the container's mounted rootfs (mounting it for the call when the
    /// container is stopped), holding the container's lock.
    fn with_rootfs<T>(
        &self,
        project: &ProjectName,
        name: &str,
        f: impl FnOnce(&ContainerInspect, &Path) -> EngineResult<T>,
    ) -> EngineResult<T> {
        let c = self.lookup(project, name)?;
        let _hold = self.hold_blocking(&c.id)?;
        let c = self.lookup(project, &c.id)?;
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

    /// The container's root as its processes see it when it runs (through
    /// `/proc/PID/root`, with its volumes, bind mounts and /etc/hosts: what `cp` copies),
    /// else its rootfs mounted for the call with its volumes and bind mounts on it, as
    /// Docker mounts them for a copy. `f` gets it as a descriptor, holding the
    /// container's lock.
    fn with_view<T>(
        &self,
        project: &ProjectName,
        name: &str,
        f: impl FnOnce(&ContainerInspect, &InRoot) -> EngineResult<T>,
    ) -> EngineResult<T> {
        let c = self.lookup(project, name)?;
        let running = matches!(
            c.state.status,
            ContainerStatus::Running | ContainerStatus::Paused
        );
        if let (true, Some(pid)) = (running, c.state.pid) {
            let _hold = self.hold_blocking(&c.id)?;
            if let Some(root) = process_root(pid, &self.cgroup_path(&c)) {
                return f(&c, &root);
            }
        }
        self.with_rootfs(project, name, |c, rootfs| {
            let binds = self.copy_binds(c);
            let root = if binds.is_empty() {
                InRoot::open(rootfs)
            } else {
                InRoot::open_with_binds(rootfs, &binds)
            }
            .map_err(io_fail("open the container's root"))?;
            f(c, &root)
        })
    }

    /// The volumes and bind mounts of a stopped container, as a copy sees them (a block
    /// device volume is no file tree, and a tmpfs holds nothing while stopped).
    fn copy_binds(&self, c: &ContainerInspect) -> Vec<in_root::Bind> {
        use pier_api::volumes::MountKind;
        c.mounts
            .iter()
            .filter_map(|m| {
                let source = match m.kind {
                    MountKind::Bind => PathBuf::from(m.source.as_deref()?),
                    MountKind::Volume
                        if m.options.get("block").map(String::as_str) != Some("device") =>
                    {
                        self.volumes.mountpoint(&c.project, m.source.as_deref()?)
                    }
                    _ => return None,
                };
                Some(in_root::Bind {
                    source,
                    target: PathBuf::from(&m.target),
                    read_only: m.read_only,
                })
            })
            .collect()
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

    fn lower_dirs(&self, c: &ContainerInspect) -> EngineResult<Vec<PathBuf>> {
        let image = self.images.resolve(&c.project, c.image_id.as_str())?;
        Ok(image
            .layers
            .iter()
            .rev()
            .map(|l| self.images.layer_dir(&l.diff_id))
            .collect())
    }

    /// Walks the upper directory: its entries, parents before children.
    fn upper_entries(&self, c: &ContainerInspect) -> EngineResult<Upper> {
        let mut out = walk_upper(&self.cdir(&c.id).join("upper"))?;
        let mounts = self.mount_points(c);
        // Skip what the runtime made as mount targets (empty files and directories).
        out.entries
            .retain(|(p, m)| !(mounts.contains(p) && (m.is_dir() || m.len() == 0)));
        Ok(out)
    }

    pub fn changes(&self, ctx: &RequestContext, name: &str) -> EngineResult<Vec<Change>> {
        let project = ctx.project();
        let c = self.lookup(project, name)?;
        let lowers = self
            .lower_dirs(&c)?
            .iter()
            .map(|l| open_dir(l))
            .collect::<EngineResult<Vec<_>>>()?;
        // Looked up in each layer without following symlinks: a path the container
        // chose never leads out of the layer.
        // What the path is in the topmost layer holding it.
        let below = |rel: &Path| {
            lowers
                .iter()
                .find_map(|l| Entry::at(l.as_fd(), rel).ok())
                .filter(|e| !is_whiteout(&e.meta))
        };
        let upper = self.upper_entries(&c)?;
        let mut changes = Vec::new();
        let mut opaque: Vec<PathBuf> = Vec::new();
        for (i, (rel, m)) in upper.entries.iter().enumerate() {
            let under_opaque = opaque.iter().any(|o| rel.starts_with(o) && rel != o);
            let was = if under_opaque { None } else { below(rel) };
            let is_opaque_dir = m.is_dir() && upper.entry(rel).is_some_and(|e| is_opaque(&e));
            if is_opaque_dir {
                opaque.push(rel.clone());
            }
            // A directory copied up only for what was made inside it (the runtime's mount
            // points, skipped above) has not changed itself: its owner and mode are the
            // layer's, and nothing listed lies under it.
            if let Some(was) = &was {
                let nothing_under = upper
                    .entries
                    .get(i + 1)
                    .is_none_or(|(next, _)| !next.starts_with(rel));
                if m.is_dir()
                    && was.meta.is_dir()
                    && !is_opaque_dir
                    && nothing_under
                    && (m.mode(), m.uid(), m.gid())
                        == (was.meta.mode(), was.meta.uid(), was.meta.gid())
                {
                    continue;
                }
            }
            let kind = if is_whiteout(m) {
                2
            } else if was.is_some() {
                0
            } else {
                1
            };
            changes.push(Change {
                path: format!("/{}", rel.display()),
                kind,
            });
        }
        Ok(changes)
    }

    /// `pier export`: the container's whole filesystem as a tar.
    pub fn export(&self, ctx: &RequestContext, name: &str, out: impl Write) -> EngineResult<()> {
        let project = ctx.project();
        self.with_rootfs(project, name, |_, rootfs| {
            let root = InRoot::open(rootfs).map_err(io_fail("open the rootfs"))?;
            let top = Entry::at(root.fd(), Path::new("")).map_err(io_fail("open the rootfs"))?;
            let mut tar = tar::Builder::new(out);
            append_tree(&mut tar, Path::new("."), &top).map_err(io_fail("export the rootfs"))?;
            tar.into_inner().map_err(io_fail("export the rootfs"))?;
            Ok(())
        })
    }

    /// `pier commit`: the container's changes as a new layer on its image.
    pub fn commit(
        &self,
        ctx: &RequestContext,
        name: &str,
        req: &CommitRequest,
    ) -> EngineResult<LoadedImage> {
        let project = ctx.project();
        let reference = req
            .reference
            .as_deref()
            .map(str::parse::<ImageRef>)
            .transpose()
            .map_err(|e| invalid(e.to_string()))?;
        // The changes are checked before anything is written.
        crate::build::changes::apply(&mut serde_json::json!({}), &req.changes)?;
        let c = self.lookup(project, name)?;
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
        let mut edited = serde_json::json!({ "config": runtime });
        crate::build::changes::apply(&mut edited, &req.changes)?;
        let info = pier_image::build::CommitInfo {
            runtime: edited["config"].take(),
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
    pub(crate) fn write_layer(&self, c: &ContainerInspect, out: impl Write) -> EngineResult<()> {
        write_changes(&self.upper_entries(c)?, out)
    }

    /// Checks that `path` exists in the container, for a clear error before streaming.
    pub fn archive_check(&self, ctx: &RequestContext, name: &str, path: &str) -> EngineResult<()> {
        let project = ctx.project();
        self.with_view(project, name, |_, root| {
            archive_source(root, path).map(|_| ())
        })
    }

    /// What a path in the container is (`docker cp` asks before copying): its last
    /// component is not followed, as in a copy.
    pub fn archive_stat(
        &self,
        ctx: &RequestContext,
        name: &str,
        path: &str,
    ) -> EngineResult<PathStat> {
        let project = ctx.project();
        self.with_view(project, name, |_, root| {
            let (e, base) = archive_source(root, path)?;
            let m = &e.meta;
            let link_target = if m.file_type().is_symlink() {
                e.read_link()
                    .map(|t| t.to_string_lossy().into_owned())
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
        ctx: &RequestContext,
        name: &str,
        path: &str,
        out: impl Write,
    ) -> EngineResult<()> {
        let project = ctx.project();
        self.with_view(project, name, |_, root| {
            let (e, base) = archive_source(root, path)?;
            let mut tar = tar::Builder::new(out);
            append_tree(&mut tar, &base, &e).map_err(io_fail("archive the path"))?;
            tar.into_inner().map_err(io_fail("archive the path"))?;
            Ok(())
        })
    }

    /// `pier cp - CONTAINER:PATH`: unpacks a tar whose single root entry becomes `path`
    /// (or goes inside `path` when that is an existing directory).
    pub fn archive_put(
        &self,
        ctx: &RequestContext,
        name: &str,
        path: &str,
        mut input: impl Read,
    ) -> EngineResult<()> {
        let project = ctx.project();
        if !path.starts_with('/') {
            return Err(invalid(format!(
                "the destination {path:?} must be an absolute path in the container"
            )));
        }
        self.with_view(project, name, |c, root| {
            if c.config.read_only && matches!(c.state.status, ContainerStatus::Running) {
                return Err(conflict("the container's root filesystem is read-only"));
            }
            let p = Path::new(path);
            let wants_dir = path.ends_with('/') || path.ends_with("/.");
            let no_dir = |what: &str| {
                EngineError::new(
                    pier_api::ErrorKind::NotFound,
                    format!("{what} does not exist in the container"),
                )
            };
            // An existing directory (symlinks followed inside the root) takes the archive's
            // entries; anything else is replaced by its single root entry.
            let (dest, rename_to) = match root.open_path(p, OFlags::PATH | OFlags::DIRECTORY) {
                Ok(fd) => (fd, None),
                Err(e)
                    if !wants_dir
                        && matches!(e.raw_os_error(), Some(libc::ENOENT) | Some(libc::ENOTDIR)) =>
                {
                    match root.parent_of(p) {
                        Ok((parent, Some(name))) => (parent, Some(name)),
                        _ => return Err(no_dir(&format!("the directory of {path}"))),
                    }
                }
                Err(_) => return Err(no_dir(&format!("the directory {path}"))),
            };
            let mut ex = Extract::new(dest);
            extract(&mut input, &mut ex, rename_to.as_deref())
                .map_err(|e| invalid(format!("the archive cannot be copied in: {e}")))?;
            // What follows the archive's end (tar pads to whole records) is read too: an
            // answer with it unread closes the connection under a client still writing.
            let _ = std::io::copy(&mut (&mut input).take(1 << 20), &mut std::io::sink());
            ex.finish()
                .map_err(|e| invalid(format!("the archive cannot be copied in: {e}")))
        })
    }
}

/// Opens a directory the daemon owns (an upper directory, a layer) to walk it.
fn open_dir(p: &Path) -> EngineResult<OwnedFd> {
    rustix::fs::openat(
        CWD,
        p,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| internal(format!("cannot open {}: {e}", p.display())))
}

/// The root directory of a running container's process `pid`, when it is still that
/// container's (it is in the cgroup `cgroup`): read through the process's own `/proc`
/// directory, so a PID reused meanwhile fails rather than leading elsewhere.
fn process_root(pid: i32, cgroup_path: &str) -> Option<InRoot> {
    let dir = rustix::fs::openat(
        CWD,
        format!("/proc/{pid}"),
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .ok()?;
    let cgroup = rustix::fs::openat(
        &dir,
        "cgroup",
        OFlags::RDONLY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .ok()?;
    let cgroup = io::read_to_string(fs::File::from(cgroup)).ok()?;
    if !cgroup.contains(cgroup_path) {
        return None;
    }
    InRoot::of_process(dir.as_fd()).ok()
}

/// An overlay upper directory, held open, and what it holds: (relative path, metadata),
/// in path order, parents before children. No symlink in it is ever followed.
pub(crate) struct Upper {
    fd: OwnedFd,
    pub entries: Vec<(PathBuf, fs::Metadata)>,
}

impl Upper {
    /// The entry at `rel`, looked up again (`None` when it changed or vanished).
    fn entry(&self, rel: &Path) -> Option<Entry> {
        Entry::at(self.fd.as_fd(), rel).ok()
    }
}

/// Walks an overlay upper directory.
pub(crate) fn walk_upper(upper: &Path) -> EngineResult<Upper> {
    let fd = open_dir(upper)?;
    let mut entries = Vec::new();
    in_root::walk(fd.as_fd(), &mut |e| {
        entries.push((e.rel.clone(), e.meta.clone()));
        Ok(())
    })
    .map_err(io_fail("read the changes"))?;
    Ok(Upper { fd, entries })
}

/// Writes the entries of an overlay upper directory as an OCI layer tar: deletions (0/0
/// character devices) become `.wh.` whiteouts, opaque directories get `.wh..wh..opq`.
pub(crate) fn write_changes(upper: &Upper, out: impl Write) -> EngineResult<()> {
    let mut tar = tar::Builder::new(out);
    for (rel, m) in &upper.entries {
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
        // Looked up again: what the walk saw may have changed since.
        let Some(e) = upper.entry(rel) else {
            continue;
        };
        append_entry(&mut tar, rel, &e).map_err(io_fail("write the layer"))?;
        if is_opaque(&e) {
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

/// Appends one file met through a descriptor as `name`: a symlink as a symlink, a regular
/// file with the bytes of that very file (cut or padded to the size it had when looked
/// at, should the container change it meanwhile), devices and FIFOs as headers. Sockets
/// cannot be archived and are left out.
fn append_entry(tar: &mut tar::Builder<impl Write>, name: &Path, e: &Entry) -> io::Result<()> {
    let mut h = tar::Header::new_gnu();
    h.set_metadata_in_mode(&e.meta, tar::HeaderMode::Complete);
    let ft = e.meta.file_type();
    if ft.is_symlink() {
        let target = e.read_link()?;
        tar.append_link(&mut h, name, Path::new(&target))
    } else if ft.is_file() {
        let size = e.meta.len();
        let data = e.open()?.take(size).chain(io::repeat(0)).take(size);
        tar.append_data(&mut h, name, data)
    } else if ft.is_dir() {
        tar.append_data(&mut h, name, io::empty())
    } else if ft.is_socket() {
        Ok(())
    } else {
        let rdev = e.meta.rdev();
        h.set_device_major(rustix::fs::major(rdev))?;
        h.set_device_minor(rustix::fs::minor(rdev))?;
        tar.append_data(&mut h, name, io::empty())
    }
}

/// Writes what is below the directory `dir` (a volume's data, which a running container
/// may be changing) as a tar: paths relative to it, in path order, owners, modes and
/// times kept, symlinks as links, nothing followed through a symlink.
pub(crate) fn export_dir(dir: &Path, out: impl Write) -> io::Result<()> {
    let fd = rustix::fs::openat(
        CWD,
        dir,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let mut tar = tar::Builder::new(out);
    in_root::walk(fd.as_fd(), &mut |e| append_entry(&mut tar, &e.rel, e))?;
    tar.into_inner()?.flush()
}

/// Appends `top` as `name`, and when it is a directory, everything below it.
fn append_tree(tar: &mut tar::Builder<impl Write>, name: &Path, top: &Entry) -> io::Result<()> {
    append_entry(tar, name, top)?;
    if top.meta.is_dir() {
        in_root::walk(top.fd.as_fd(), &mut |e| {
            append_entry(tar, &name.join(&e.rel), e)
        })?;
    }
    Ok(())
}

/// Finds a path to copy out: its parent resolved inside the root, its last component
/// taken as it is (a symlink is copied as a symlink). Also gives the name the archive's
/// root entry takes.
fn archive_source(root: &InRoot, path: &str) -> EngineResult<(Entry, PathBuf)> {
    let p = Path::new(path);
    let base = p
        .file_name()
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    let not_found = |e: io::Error| match e.raw_os_error() {
        Some(libc::ENOENT) | Some(libc::ENOTDIR) | Some(libc::ELOOP) => EngineError::new(
            pier_api::ErrorKind::NotFound,
            format!("no such file or directory in the container: {path}"),
        ),
        _ => internal(format!("cannot read {path} in the container: {e}")),
    };
    let (parent, name) = root.parent_of(p).map_err(not_found)?;
    let e = match name {
        Some(n) => Entry::child(parent.as_fd(), &n),
        None => Entry::at(parent.as_fd(), Path::new("")),
    }
    .map_err(not_found)?;
    Ok((e, base))
}

/// A refusal of an archive's entry.
fn refuse(what: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what)
}

/// Extracts the tar `input` through `ex`, each entry relative to the destination. With
/// `rename_to`, the archive's root entry (the first component of every path) takes that
/// name. Absolute paths, `..` and device nodes are refused; extended attributes other than
/// `user.*` and `security.capability` are ignored.
fn extract(input: impl Read, ex: &mut Extract, rename_to: Option<&OsStr>) -> io::Result<()> {
    let mut ar = tar::Archive::new(input);
    let rename = |raw: &[u8]| -> io::Result<PathBuf> {
        let rel = pier_archive::unpack::clean_path(raw).map_err(|e| refuse(e.to_string()))?;
        Ok(match rename_to {
            Some(n) if !rel.as_os_str().is_empty() => {
                let mut c = rel.components();
                c.next();
                Path::new(n).join(c.as_path())
            }
            _ => rel,
        })
    };
    for entry in ar.entries()? {
        let mut entry = entry?;
        let kind = entry.header().entry_type();
        if matches!(
            kind,
            tar::EntryType::XGlobalHeader | tar::EntryType::XHeader
        ) {
            continue;
        }
        let raw = entry.path_bytes().into_owned();
        let shown = String::from_utf8_lossy(&raw).into_owned();
        let rel = rename(&raw)?;
        if rel.as_os_str().is_empty() {
            continue;
        }
        let h = entry.header();
        let mtime = h.mtime().unwrap_or(0) as i64;
        let mut meta = Meta {
            uid: h.uid().unwrap_or(0) as u32,
            gid: h.gid().unwrap_or(0) as u32,
            mode: h.mode().unwrap_or(0o644) & 0o7777,
            mtime: (mtime, 0),
            atime: (mtime, 0),
            xattrs: Vec::new(),
        };
        if let Some(exts) = entry.pax_extensions()? {
            for ext in exts {
                let ext = ext?;
                let Some(name) = ext.key().ok().and_then(|k| k.strip_prefix("SCHILY.xattr."))
                else {
                    continue;
                };
                if name.starts_with("user.") || name == "security.capability" {
                    meta.xattrs
                        .push((name.to_string(), ext.value_bytes().to_vec()));
                }
            }
        }
        let placed = match kind {
            tar::EntryType::Directory => ex.dir(&rel, meta),
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let size = entry.size();
                let n = ex.file(&rel, &meta, &mut entry)?;
                if n != size {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("entry {shown:?} is truncated"),
                    ));
                }
                Ok(())
            }
            tar::EntryType::Symlink => {
                let target: OsString = entry
                    .link_name_bytes()
                    .map(|t| OsStr::from_bytes(&t).to_os_string())
                    .unwrap_or_default();
                if target.is_empty() {
                    return Err(refuse(format!("symlink {shown:?} has no target")));
                }
                ex.symlink(&rel, &target, &meta)
            }
            tar::EntryType::Link => {
                let target = entry
                    .link_name_bytes()
                    .map(|t| t.into_owned())
                    .unwrap_or_default();
                ex.hard_link(&rel, &rename(&target)?)
            }
            tar::EntryType::Fifo => ex.node(&rel, FileType::Fifo, 0, &meta),
            tar::EntryType::Char | tar::EntryType::Block => Err(refuse(format!(
                "entry {shown:?} is a device node; device nodes cannot be copied into a container"
            ))),
            other => Err(refuse(format!(
                "entry {shown:?} has an unsupported type ({other:?})"
            ))),
        };
        placed.map_err(|e| io::Error::new(e.kind(), format!("{shown}: {e}")))?;
    }
    Ok(())
}
