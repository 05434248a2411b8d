//! Files of build steps that need no container: an image's root mounted (overlay, its
//! layers below an empty directory) in the build's work directory, written into through
//! the mount, and the upper directory turned into the step's layer; copies with the
//! ownership, mode and times `COPY` gives; archives `ADD` extracts.
//!
//! Destinations are resolved inside the mounted root (`resolve_in_root`), and below a
//! resolved destination nothing is written through a symlink: an existing symlink in the
//! way is replaced, as unpacking a tar replaces it.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use pier_api::types::LayerInfo;
use pier_archive::unpack::{self, Limits, UnpackOptions};
use pier_image::compression::decompressed;
use pier_image::ImageStore;
use pier_runtime::rootfs::resolve_in_root;
use rustix::fs::{AtFlags, Mode, Timespec, Timestamps, CWD};

use super::BuildError;
use crate::container_fs::{walk_upper, write_changes};
use crate::instances::service::unmount;

/// An image's root mounted under a build's work directory; unmounted and removed on drop.
pub(super) struct Mounted {
    pub rootfs: PathBuf,
    dir: PathBuf,
    writable: bool,
}

impl Mounted {
    /// Mounts `layers` (bottom first) at `dir/rootfs`; `writable` gives it an upper
    /// directory that collects the changes.
    pub fn new(
        dir: PathBuf,
        images: &ImageStore,
        layers: &[LayerInfo],
        writable: bool,
    ) -> Result<Mounted, BuildError> {
        let io = |what: &'static str| BuildError::io(format!("create {what} for a build step"));
        let empty = dir.join("empty");
        let rootfs = dir.join("rootfs");
        for d in [&dir, &empty, &rootfs] {
            fs::create_dir_all(d).map_err(io("a directory"))?;
        }
        let mounted = Mounted {
            rootfs: rootfs.clone(),
            dir: dir.clone(),
            writable,
        };
        // An empty directory at the bottom: a scratch image has no layer, and overlayfs
        // without an upper directory wants two lower ones.
        // A layer twice in an image is mounted once, at its upper place (see
        // `Instances::mount_rootfs`).
        let mut seen = std::collections::HashSet::new();
        let mut lowers: Vec<String> = layers
            .iter()
            .rev()
            .map(|l| images.layer_dir(&l.diff_id).display().to_string())
            .filter(|d| seen.insert(d.clone()))
            .collect();
        lowers.push(empty.display().to_string());
        let mut data = format!("lowerdir={}", lowers.join(":"));
        if writable {
            for d in ["upper", "work"] {
                fs::create_dir(dir.join(d)).map_err(io("a directory"))?;
            }
            data.push_str(&format!(
                ",upperdir={},workdir={}",
                dir.join("upper").display(),
                dir.join("work").display()
            ));
        }
        let flags = if writable {
            rustix::mount::MountFlags::empty()
        } else {
            rustix::mount::MountFlags::RDONLY
        };
        rustix::mount::mount(
            "overlay",
            &rootfs,
            "overlay",
            flags,
            Some(std::ffi::CString::new(data).expect("no NUL").as_c_str()),
        )
        .map_err(|e| {
            BuildError::io("mount the image for a build step (overlay)")(io::Error::from(e))
        })?;
        Ok(mounted)
    }

    /// Unmounts, and writes the changes as a layer tar at `path`. With `always` false, an
    /// unchanged root makes no layer (`None`).
    pub fn finish(self, path: &Path, always: bool) -> Result<Option<PathBuf>, BuildError> {
        assert!(self.writable, "only a writable mount has changes");
        unmount(&self.rootfs);
        let upper = self.dir.join("upper");
        let upper = walk_upper(&upper)?;
        if upper.entries.is_empty() && !always {
            return Ok(None);
        }
        let out = File::create(path).map_err(BuildError::io("write a layer"))?;
        write_changes(&upper, out)?;
        Ok(Some(path.to_path_buf()))
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        unmount(&self.rootfs);
        if let Err(e) = pier_image::store::remove_tree(&self.dir) {
            tracing::warn!(error = %e.chain(), "cannot remove a build step's directory");
        }
    }
}

/// How copied files are owned and moded.
pub(super) struct CopyOpts {
    /// uid and gid of every file and directory copied or made.
    pub owner: (u32, u32),
    /// `--chmod`: the mode of every file and directory copied.
    pub chmod: Option<u32>,
}

/// `--chown=USER[:GROUP]` as numbers, looked up in the image's `/etc/passwd` and
/// `/etc/group`; a lone user is also the group (`--chown=bin` is `bin:bin`), as Docker has
/// it.
pub(super) fn resolve_chown(rootfs: &Path, spec: &str) -> Result<(u32, u32), BuildError> {
    let (u, g) = spec.split_once(':').unwrap_or((spec, spec));
    if spec.split(':').count() > 2 || u.is_empty() || g.is_empty() {
        return Err(BuildError::Invalid(format!(
            "--chown={spec}: give USER, USER:GROUP, UID or UID:GID"
        )));
    }
    let (uid, gid, _) = pier_runtime::rootfs::resolve_user(rootfs, &format!("{u}:{g}"))
        .map_err(|e| BuildError::Invalid(format!("--chown={spec}: {e}")))?;
    Ok((uid, gid))
}

fn set_meta(
    path: &Path,
    owner: (u32, u32),
    mode: Option<u32>,
    mtime: Option<i64>,
) -> io::Result<()> {
    rustix::fs::chownat(
        CWD,
        path,
        Some(rustix::fs::Uid::from_raw(owner.0)),
        Some(rustix::fs::Gid::from_raw(owner.1)),
        AtFlags::SYMLINK_NOFOLLOW,
    )?;
    // After chown, which clears set-id bits.
    if let Some(m) = mode {
        rustix::fs::chmod(path, Mode::from_raw_mode(m))?;
    }
    if let Some(t) = mtime {
        let ts = Timespec {
            tv_sec: t,
            tv_nsec: 0,
        };
        rustix::fs::utimensat(
            CWD,
            path,
            &Timestamps {
                last_access: ts,
                last_modification: ts,
            },
            AtFlags::SYMLINK_NOFOLLOW,
        )?;
    }
    Ok(())
}

fn remove_any(path: &Path) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(_) => Ok(()),
    }
}

/// Makes `dir` (a host path under `rootfs`, already resolved) and its missing parents,
/// each new one 0755 and owned by `owner`.
pub(super) fn mkdir_all(rootfs: &Path, dir: &Path, owner: (u32, u32)) -> Result<(), BuildError> {
    let rel = dir.strip_prefix(rootfs).unwrap_or(dir);
    let mut cur = rootfs.to_path_buf();
    for c in rel.components() {
        cur.push(c);
        match fs::symlink_metadata(&cur) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err(BuildError::Invalid(format!(
                    "cannot make the directory /{}: /{} is not a directory",
                    rel.display(),
                    cur.strip_prefix(rootfs).unwrap_or(&cur).display()
                )))
            }
            Err(_) => {
                fs::create_dir(&cur)
                    .map_err(BuildError::io(format!("create /{}", rel.display())))?;
                set_meta(&cur, owner, Some(0o755), None)
                    .map_err(BuildError::io(format!("create /{}", rel.display())))?;
            }
        }
    }
    Ok(())
}

/// Copies one resolved source (`src`, shown as `name`) to `dest` (absolute in the image)
/// as `COPY` does: a directory's contents into the destination directory; a file into
/// `dest` when that is a directory (or ends with `/`), else as `dest`. With `extract`
/// (`ADD`), a tar archive is extracted into the destination directory instead.
pub(super) fn copy_source(
    rootfs: &Path,
    src: &Path,
    name: &str,
    dest: &str,
    dest_is_dir: bool,
    opts: &CopyOpts,
    extract: bool,
) -> Result<(), BuildError> {
    let target = resolve_in_root(rootfs, Path::new(dest))
        .map_err(BuildError::io(format!("resolve the destination {dest}")))?;
    let m = fs::metadata(src).map_err(BuildError::io(format!("read {name}")))?;
    let failed = |e: io::Error| BuildError::Io {
        op: format!("copy {name} to {dest}"),
        source: e,
    };
    if m.is_dir() {
        mkdir_all(rootfs, &target, opts.owner)?;
        return copy_children(src, &target, opts).map_err(failed);
    }
    if extract && is_archive(src, name)? {
        mkdir_all(rootfs, &target, opts.owner)?;
        let f = File::open(src).map_err(failed)?;
        let r = decompressed(f).map_err(failed)?;
        unpack::unpack_tree(r, &target, &Limits::default(), UnpackOptions::TREE).map_err(|e| {
            BuildError::Invalid(format!("ADD {name}: the archive cannot be extracted: {e}"))
        })?;
        return Ok(());
    }
    let into_dir = dest_is_dir || fs::symlink_metadata(&target).is_ok_and(|m| m.is_dir());
    let file_target = if into_dir {
        mkdir_all(rootfs, &target, opts.owner)?;
        target.join(name)
    } else {
        if let Some(parent) = target.parent() {
            mkdir_all(rootfs, parent, opts.owner)?;
        }
        target
    };
    copy_entry(src, &file_target, opts).map_err(failed)
}

fn copy_children(src: &Path, dst: &Path, opts: &CopyOpts) -> io::Result<()> {
    let mut names: Vec<_> = fs::read_dir(src)?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<Result<_, _>>()?;
    names.sort();
    for n in names {
        copy_entry(&src.join(&n), &dst.join(&n), opts)?;
    }
    Ok(())
}

/// Copies `src` (not followed if a symlink) to `dst`, replacing what is there, except
/// that a directory onto a directory merges.
fn copy_entry(src: &Path, dst: &Path, opts: &CopyOpts) -> io::Result<()> {
    let m = fs::symlink_metadata(src)?;
    let ft = m.file_type();
    let mode = opts.chmod.unwrap_or(m.mode() & 0o7777);
    if ft.is_dir() {
        match fs::symlink_metadata(dst) {
            Ok(d) if d.is_dir() => {}
            Ok(_) => {
                remove_any(dst)?;
                fs::create_dir(dst)?;
            }
            Err(_) => fs::create_dir(dst)?,
        }
        copy_children(src, dst, opts)?;
        set_meta(dst, opts.owner, Some(mode), Some(m.mtime()))
    } else if ft.is_symlink() {
        remove_any(dst)?;
        std::os::unix::fs::symlink(fs::read_link(src)?, dst)?;
        set_meta(dst, opts.owner, None, Some(m.mtime()))
    } else if ft.is_file() {
        remove_any(dst)?;
        let mut out = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
            .open(dst)?;
        io::copy(&mut File::open(src)?, &mut out)?;
        drop(out);
        set_meta(dst, opts.owner, Some(mode), Some(m.mtime()))
    } else {
        use std::os::unix::fs::FileTypeExt;
        if ft.is_fifo() {
            remove_any(dst)?;
            rustix::fs::mknodat(
                CWD,
                dst,
                rustix::fs::FileType::Fifo,
                Mode::from_raw_mode(mode),
                0,
            )?;
            set_meta(dst, opts.owner, Some(mode), Some(m.mtime()))
        } else {
            // Sockets and devices are not copied.
            Ok(())
        }
    }
}

/// Is `src` a tar archive `ADD` extracts: plain, gzip or zstd. bzip2 and xz archives are
/// refused with a clear error (no decompressor for them is built in).
fn is_archive(src: &Path, name: &str) -> Result<bool, BuildError> {
    let failed = BuildError::io(format!("read {name}"));
    let mut head = [0u8; 6];
    let n = read_up_to(
        &mut File::open(src).map_err(BuildError::io(format!("read {name}")))?,
        &mut head,
    )
    .map_err(failed)?;
    let head = &head[..n];
    let kind = if head.starts_with(b"BZh") {
        Some("bzip2")
    } else if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
        Some("xz")
    } else {
        None
    };
    if let Some(kind) = kind {
        return Err(BuildError::Invalid(format!(
            "ADD {name}: the file is {kind}-compressed; Pier's ADD extracts plain, gzip and zstd tar archives only: recompress it with gzip or zstd, or COPY it and RUN tar"
        )));
    }
    let f = File::open(src).map_err(BuildError::io(format!("read {name}")))?;
    let Ok(mut r) = decompressed(f) else {
        return Ok(false);
    };
    let mut block = [0u8; 512];
    match read_up_to(&mut r, &mut block) {
        Ok(512) => Ok(tar_header_valid(&block)),
        _ => Ok(false),
    }
}

fn read_up_to(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// Does a 512-byte block hold a tar header (a name, and a checksum that adds up)?
fn tar_header_valid(b: &[u8; 512]) -> bool {
    if b[0] == 0 {
        return false;
    }
    let field = &b[148..156];
    let text: String = field
        .iter()
        .take_while(|c| **c != 0)
        .map(|c| *c as char)
        .collect();
    let Ok(stored) = u32::from_str_radix(text.trim(), 8) else {
        return false;
    };
    let sum: u32 = b
        .iter()
        .enumerate()
        .map(|(i, c)| {
            if (148..156).contains(&i) {
                32
            } else {
                *c as u32
            }
        })
        .sum();
    stored == sum
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tells_tar_archives_from_other_files() {
        let dir = tempfile::tempdir().unwrap();
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(2);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, "x", &b"hi"[..]).unwrap();
        let tar = b.into_inner().unwrap();
        fs::write(dir.path().join("a.tar"), &tar).unwrap();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        io::Write::write_all(&mut gz, &tar).unwrap();
        fs::write(dir.path().join("a.tgz"), gz.finish().unwrap()).unwrap();
        let zst = zstd::stream::encode_all(&tar[..], 1).unwrap();
        fs::write(dir.path().join("a.tar.zst"), zst).unwrap();
        fs::write(dir.path().join("a.tar.bz2"), b"BZh91AY&SY").unwrap();
        fs::write(dir.path().join("plain.txt"), "hello").unwrap();
        fs::write(
            dir.path().join("a.tar.xz"),
            [0xfd, b'7', b'z', b'X', b'Z', 0, 1],
        )
        .unwrap();
        assert!(is_archive(&dir.path().join("a.tar"), "a.tar").unwrap());
        assert!(is_archive(&dir.path().join("a.tgz"), "a.tgz").unwrap());
        assert!(is_archive(&dir.path().join("a.tar.zst"), "a.tar.zst").unwrap());
        let e = is_archive(&dir.path().join("a.tar.bz2"), "a.tar.bz2").unwrap_err();
        assert!(e.to_string().contains("bzip2-compressed"), "{e}");
        assert!(!is_archive(&dir.path().join("plain.txt"), "plain.txt").unwrap());
        let e = is_archive(&dir.path().join("a.tar.xz"), "a.tar.xz").unwrap_err();
        assert!(e.to_string().contains("xz-compressed"), "{e}");
    }
}
