//! Safe unpacking of layer tars into a directory that overlayfs can use as a lower layer.
//!
//! Every archive is hostile until proven otherwise. An entry is refused, with the whole
//! unpack, when its path is absolute or climbs out with `..`, when it would be written
//! through a symlink, when it is a symlink whose relative target climbs out of the root,
//! when it is a hard link to something outside the layer or not yet unpacked, when it is a
//! device node, or when sizes exceed the limits or the free space. Absolute symlink targets
//! are allowed: they resolve inside the container's root, as every distribution image needs.
//!
//! OCI whiteouts become overlayfs ones: `.wh.NAME` turns into a 0/0 character device `NAME`,
//! `.wh..wh..opq` into the `trusted.overlay.opaque=y` xattr on its directory.
//!
//! The caller unpacks into a fresh directory and deletes it on error, so a failed unpack
//! leaves nothing behind.

use std::ffi::OsStr;
use std::fs::{self, OpenOptions};
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Mode, Timespec, Timestamps, CWD};
use tar::EntryType;

const WHITEOUT_PREFIX: &str = ".wh.";
const OPAQUE_MARKER: &str = ".wh..wh..opq";

/// Bounds on what one archive may unpack to.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest single file, in bytes.
    pub max_entry_size: u64,
    /// Largest total of file bytes.
    pub max_total_size: u64,
    /// Most entries.
    pub max_entries: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_entry_size: 64 << 30,
            max_total_size: 256 << 30,
            max_entries: 10_000_000,
        }
    }
}

/// Why an archive was refused.
#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    #[error("entry {entry:?} has an absolute path; layer entries must be relative to the root")]
    Absolute { entry: String },
    #[error("entry {entry:?} climbs out of the root with '..'")]
    DotDot { entry: String },
    #[error("symlink {entry:?} points to {target:?}, outside the root")]
    SymlinkEscape { entry: String, target: String },
    #[error("entry {entry:?} would be written through the symlink {link:?}")]
    ThroughSymlink { entry: String, link: String },
    #[error("hard link {entry:?} points to {target:?}, outside the root")]
    HardlinkEscape { entry: String, target: String },
    #[error("hard link {entry:?} points to {target:?}, which is not a file unpacked earlier in the same layer")]
    HardlinkMissing { entry: String, target: String },
    #[error("entry {entry:?} is a device node; images may not carry device nodes")]
    DeviceNode { entry: String },
    #[error("entry {entry:?} has an unsupported type ({kind})")]
    UnsupportedType { entry: String, kind: String },
    #[error("entry {entry:?} claims {size} bytes, more than the {limit} allowed for one file")]
    EntryTooLarge {
        entry: String,
        size: u64,
        limit: u64,
    },
    #[error("the archive unpacks to more than {limit} bytes")]
    TotalTooLarge { limit: u64 },
    #[error("the archive has more than {limit} entries")]
    TooManyEntries { limit: u64 },
    #[error("entry {entry:?} needs {needed} bytes but only {available} are free on the disk")]
    DiskFull {
        entry: String,
        needed: u64,
        available: u64,
    },
    #[error("entry {entry:?} is inside {parent:?}, which is not a directory")]
    NotADirectory { entry: String, parent: String },
    #[error("the tar stream is corrupt or truncated")]
    Corrupt(#[source] io::Error),
    #[error("cannot write {path}")]
    Io {
        path: String,
        #[source]
        source: io::Error,
    },
}

impl UnpackError {
    fn io(path: &Path) -> impl FnOnce(io::Error) -> UnpackError + '_ {
        move |source| UnpackError::Io {
            path: path.display().to_string(),
            source,
        }
    }
}

/// What an unpack wrote.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    pub entries: u64,
    pub file_bytes: u64,
}

fn shown(raw: &[u8]) -> String {
    String::from_utf8_lossy(raw).into_owned()
}

/// Normalizes an archive path to a relative path without `.` components. The root itself
/// comes back empty.
pub fn clean_path(raw: &[u8]) -> Result<PathBuf, UnpackError> {
    if raw.first() == Some(&b'/') {
        return Err(UnpackError::Absolute { entry: shown(raw) });
    }
    let mut out = PathBuf::new();
    for part in raw.split(|&b| b == b'/') {
        match part {
            b"" | b"." => {}
            b".." => return Err(UnpackError::DotDot { entry: shown(raw) }),
            p => out.push(OsStr::from_bytes(p)),
        }
    }
    Ok(out)
}

/// Does a relative symlink target, seen from the directory `parent`, stay inside the root?
fn symlink_stays_inside(parent: &Path, target: &[u8]) -> bool {
    if target.first() == Some(&b'/') {
        return true;
    }
    let mut depth = parent.components().count() as i64;
    for part in target.split(|&b| b == b'/') {
        match part {
            b"" | b"." => {}
            b".." => {
                depth -= 1;
                if depth < 0 {
                    return false;
                }
            }
            _ => depth += 1,
        }
    }
    true
}

/// How an archive is read besides the limits: layers and other trees (a build context,
/// an archive `ADD` extracts) differ in two ways.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnpackOptions {
    /// `.wh.` entries are OCI whiteouts (layers), or plain files (anything else).
    pub whiteouts: bool,
    /// Relative symlinks may point above the archive's root. A build context may hold
    /// them (they are only ever copied, never followed while unpacking); a layer may not.
    pub outward_symlinks: bool,
}

impl UnpackOptions {
    /// For image layers.
    pub const LAYER: UnpackOptions = UnpackOptions {
        whiteouts: true,
        outward_symlinks: false,
    };
    /// For plain trees: build contexts and archives extracted by `ADD`.
    pub const TREE: UnpackOptions = UnpackOptions {
        whiteouts: false,
        outward_symlinks: true,
    };
}

/// Unpacks the layer tar stream `r` into `dest`, an existing empty directory.
pub fn unpack_layer(r: impl Read, dest: &Path, limits: &Limits) -> Result<Stats, UnpackError> {
    unpack_tree(r, dest, limits, UnpackOptions::LAYER)
}

/// Unpacks the tar stream `r` into the existing directory `dest`, as `opts` say. Entries
/// are never written through symlinks, whatever the options.
pub fn unpack_tree(
    r: impl Read,
    dest: &Path,
    limits: &Limits,
    opts: UnpackOptions,
) -> Result<Stats, UnpackError> {
    let mut archive = tar::Archive::new(r);
    let mut stats = Stats::default();
    let mut dirs: Vec<(PathBuf, tar::Header)> = Vec::new();
    let root_uid = rustix::process::geteuid().is_root();

    for entry in archive.entries().map_err(UnpackError::Corrupt)? {
        let mut entry = entry.map_err(UnpackError::Corrupt)?;
        let kind = entry.header().entry_type();
        if matches!(kind, EntryType::XGlobalHeader | EntryType::XHeader) {
            continue;
        }
        stats.entries += 1;
        if stats.entries > limits.max_entries {
            return Err(UnpackError::TooManyEntries {
                limit: limits.max_entries,
            });
        }
        let raw = entry.path_bytes().into_owned();
        let rel = clean_path(&raw)?;
        let name = shown(&raw);

        if opts.whiteouts && apply_whiteout(dest, &rel, &name)? {
            continue;
        }

        if rel.as_os_str().is_empty() {
            // The root itself: keep its metadata for the end.
            if kind == EntryType::Directory {
                dirs.push((dest.to_path_buf(), entry.header().clone()));
            }
            continue;
        }
        let parent_abs = ensure_parents(dest, &rel, &name)?;
        let path = parent_abs.join(rel.file_name().expect("non-empty path has a file name"));
        let header = entry.header().clone();
        let mode = header.mode().unwrap_or(0o644) & 0o7777;

        match kind {
            EntryType::Directory => {
                match fs::symlink_metadata(&path) {
                    Ok(m) if m.is_dir() => {}
                    Ok(_) => {
                        remove_existing(&path)?;
                        fs::create_dir(&path).map_err(UnpackError::io(&path))?;
                    }
                    Err(_) => fs::create_dir(&path).map_err(UnpackError::io(&path))?,
                }
                dirs.push((path, header));
                continue;
            }
            EntryType::Regular | EntryType::Continuous => {
                let size = entry.size();
                stats.file_bytes +=
                    write_file(&mut entry, size, &path, &name, dest, limits, &stats)?;
            }
            EntryType::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .map(|t| t.into_owned())
                    .unwrap_or_default();
                if target.is_empty()
                    || (!opts.outward_symlinks
                        && !symlink_stays_inside(rel.parent().unwrap_or(Path::new("")), &target))
                {
                    return Err(UnpackError::SymlinkEscape {
                        entry: name,
                        target: shown(&target),
                    });
                }
                remove_existing(&path)?;
                std::os::unix::fs::symlink(OsStr::from_bytes(&target), &path)
                    .map_err(UnpackError::io(&path))?;
            }
            EntryType::Link => {
                let target = entry
                    .link_name_bytes()
                    .map(|t| t.into_owned())
                    .unwrap_or_default();
                hard_link(dest, &path, &target, name)?;
                continue; // a hard link shares the target's metadata
            }
            EntryType::Fifo => {
                remove_existing(&path)?;
                rustix::fs::mknodat(CWD, &path, FileType::Fifo, Mode::from_raw_mode(mode), 0)
                    .map_err(|e| UnpackError::io(&path)(e.into()))?;
            }
            EntryType::Char | EntryType::Block => {
                return Err(UnpackError::DeviceNode { entry: name })
            }
            other => {
                return Err(UnpackError::UnsupportedType {
                    entry: name,
                    kind: format!("{other:?}"),
                });
            }
        }
        apply_metadata(&path, &header, kind == EntryType::Symlink, root_uid)?;
        apply_xattrs(&mut entry, &path)?;
    }

    // Directory metadata last, deepest first, so later entries do not disturb it.
    for (path, header) in dirs.iter().rev() {
        apply_metadata(path, header, false, root_uid)?;
    }
    Ok(stats)
}

/// Applies a whiteout entry (`.wh.NAME` removes NAME below; `.wh..wh..opq` makes its
/// directory opaque) as overlayfs has them. Returns false when `rel` is no whiteout.
fn apply_whiteout(dest: &Path, rel: &Path, name: &str) -> Result<bool, UnpackError> {
    let Some(file) = rel.file_name().map(|f| f.as_bytes()) else {
        return Ok(false);
    };
    let Some(hidden) = file.strip_prefix(WHITEOUT_PREFIX.as_bytes()) else {
        return Ok(false);
    };
    let parent_abs = ensure_parents(dest, rel, name)?;
    if file == OPAQUE_MARKER.as_bytes() {
        rustix::fs::lsetxattr(
            &parent_abs,
            "trusted.overlay.opaque",
            b"y",
            rustix::fs::XattrFlags::empty(),
        )
        .map_err(|e| UnpackError::io(&parent_abs)(e.into()))?;
    } else {
        let target = parent_abs.join(OsStr::from_bytes(hidden));
        remove_existing(&target)?;
        rustix::fs::mknodat(
            CWD,
            &target,
            FileType::CharacterDevice,
            Mode::empty(),
            rustix::fs::makedev(0, 0),
        )
        .map_err(|e| UnpackError::io(&target)(e.into()))?;
    }
    Ok(true)
}

/// Writes a regular file's contents to `path` (made anew, never followed), within the
/// limits and the free space; returns its size.
fn write_file(
    entry: &mut impl Read,
    size: u64,
    path: &Path,
    name: &str,
    dest: &Path,
    limits: &Limits,
    stats: &Stats,
) -> Result<u64, UnpackError> {
    if size > limits.max_entry_size {
        return Err(UnpackError::EntryTooLarge {
            entry: name.to_string(),
            size,
            limit: limits.max_entry_size,
        });
    }
    if stats.file_bytes + size > limits.max_total_size {
        return Err(UnpackError::TotalTooLarge {
            limit: limits.max_total_size,
        });
    }
    let available = free_bytes(dest);
    if size > available {
        return Err(UnpackError::DiskFull {
            entry: name.to_string(),
            needed: size,
            available,
        });
    }
    remove_existing(path)?;
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc_o_nofollow())
        .open(path)
        .map_err(UnpackError::io(path))?;
    let copied = io::copy(entry, &mut file).map_err(|e| {
        if crate::is_disk_full(&e) {
            UnpackError::DiskFull {
                entry: name.to_string(),
                needed: size,
                available: free_bytes(dest),
            }
        } else {
            UnpackError::Corrupt(e)
        }
    })?;
    if copied != size {
        return Err(UnpackError::Corrupt(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("entry {name:?} is truncated"),
        )));
    }
    Ok(size)
}

/// Makes `path` a hard link to `target_raw`, which must be a file already unpacked below
/// `dest`.
fn hard_link(dest: &Path, path: &Path, target_raw: &[u8], name: String) -> Result<(), UnpackError> {
    let target_rel = clean_path(target_raw).map_err(|_| UnpackError::HardlinkEscape {
        entry: name.clone(),
        target: shown(target_raw),
    })?;
    let target_parent = ensure_existing_parents(dest, &target_rel, &name)?;
    let missing = || UnpackError::HardlinkMissing {
        entry: name.clone(),
        target: shown(target_raw),
    };
    let target = target_parent.join(target_rel.file_name().ok_or_else(missing)?);
    match fs::symlink_metadata(&target) {
        Ok(m) if !m.is_dir() => {}
        _ => return Err(missing()),
    }
    if target != path {
        remove_existing(path)?;
        fs::hard_link(&target, path).map_err(UnpackError::io(path))?;
    }
    Ok(())
}

fn libc_o_nofollow() -> i32 {
    rustix::fs::OFlags::NOFOLLOW.bits() as i32
}

fn free_bytes(dir: &Path) -> u64 {
    match rustix::fs::statvfs(dir) {
        Ok(s) => s.f_bavail.saturating_mul(s.f_frsize),
        Err(_) => u64::MAX,
    }
}

/// Makes sure every ancestor of `rel` inside `dest` is a real directory (creating missing
/// ones) and returns the absolute parent path. Refuses to pass through symlinks.
fn ensure_parents(dest: &Path, rel: &Path, entry: &str) -> Result<PathBuf, UnpackError> {
    let mut cur = dest.to_path_buf();
    let parent = rel.parent().unwrap_or(Path::new(""));
    for comp in parent.components() {
        let Component::Normal(part) = comp else {
            continue;
        };
        cur.push(part);
        match fs::symlink_metadata(&cur) {
            Ok(m) if m.file_type().is_symlink() => {
                return Err(UnpackError::ThroughSymlink {
                    entry: entry.to_string(),
                    link: cur.strip_prefix(dest).unwrap_or(&cur).display().to_string(),
                })
            }
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err(UnpackError::NotADirectory {
                    entry: entry.to_string(),
                    parent: cur.strip_prefix(dest).unwrap_or(&cur).display().to_string(),
                })
            }
            Err(_) => {
                fs::create_dir(&cur).map_err(UnpackError::io(&cur))?;
                fs::set_permissions(&cur, fs::Permissions::from_mode(0o755))
                    .map_err(UnpackError::io(&cur))?;
            }
        }
    }
    Ok(cur)
}

/// Like [`ensure_parents`], but every ancestor must already exist (for hard-link targets).
fn ensure_existing_parents(dest: &Path, rel: &Path, entry: &str) -> Result<PathBuf, UnpackError> {
    let mut cur = dest.to_path_buf();
    for comp in rel.parent().unwrap_or(Path::new("")).components() {
        let Component::Normal(part) = comp else {
            continue;
        };
        cur.push(part);
        match fs::symlink_metadata(&cur) {
            Ok(m) if m.is_dir() && !m.file_type().is_symlink() => {}
            _ => {
                return Err(UnpackError::HardlinkMissing {
                    entry: entry.to_string(),
                    target: rel.display().to_string(),
                })
            }
        }
    }
    Ok(cur)
}

fn remove_existing(path: &Path) -> Result<(), UnpackError> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(path).map_err(UnpackError::io(path)),
        Ok(_) => fs::remove_file(path).map_err(UnpackError::io(path)),
        Err(_) => Ok(()),
    }
}

fn apply_metadata(
    path: &Path,
    h: &tar::Header,
    is_symlink: bool,
    as_root: bool,
) -> Result<(), UnpackError> {
    let err = |e: rustix::io::Errno| UnpackError::Io {
        path: path.display().to_string(),
        source: e.into(),
    };
    if as_root {
        let uid = h.uid().unwrap_or(0) as u32;
        let gid = h.gid().unwrap_or(0) as u32;
        let (u, g) = (
            rustix::fs::Uid::from_raw(uid),
            rustix::fs::Gid::from_raw(gid),
        );
        rustix::fs::chownat(CWD, path, Some(u), Some(g), AtFlags::SYMLINK_NOFOLLOW).map_err(err)?;
    }
    if !is_symlink {
        let mode = h.mode().unwrap_or(0o644) & 0o7777;
        // chmod after chown: chown clears set-id bits.
        rustix::fs::chmod(path, Mode::from_raw_mode(mode)).map_err(err)?;
    }
    let mtime = h.mtime().unwrap_or(0) as i64;
    let ts = Timespec {
        tv_sec: mtime,
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
    )
    .map_err(err)?;
    Ok(())
}

/// Applies `SCHILY.xattr.*` PAX records. Only `user.*` and `security.capability` are
/// honoured: `trusted.*` would let an archive steer overlayfs.
fn apply_xattrs<R: Read>(entry: &mut tar::Entry<'_, R>, path: &Path) -> Result<(), UnpackError> {
    let Some(exts) = entry.pax_extensions().map_err(UnpackError::Corrupt)? else {
        return Ok(());
    };
    for ext in exts {
        let ext = ext.map_err(UnpackError::Corrupt)?;
        let Ok(key) = ext.key() else { continue };
        let Some(name) = key.strip_prefix("SCHILY.xattr.") else {
            continue;
        };
        if name.starts_with("user.") || name == "security.capability" {
            rustix::fs::lsetxattr(
                path,
                name,
                ext.value_bytes(),
                rustix::fs::XattrFlags::empty(),
            )
            .map_err(|e| UnpackError::Io {
                path: path.display().to_string(),
                source: e.into(),
            })?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::craft;

    fn unpack(tar: &[u8]) -> (tempfile::TempDir, Result<Stats, UnpackError>) {
        let dir = tempfile::tempdir().unwrap();
        let r = unpack_layer(tar, dir.path(), &Limits::default());
        (dir, r)
    }

    #[test]
    fn unpacks_files_dirs_links() {
        let tar = craft(&[
            ("./", EntryType::Directory, b""),
            ("bin/", EntryType::Directory, b""),
            ("bin/busybox", EntryType::Regular, b"#!elf"),
            ("bin/sh", EntryType::Symlink, b"/bin/busybox"),
            ("bin/ls", EntryType::Symlink, b"busybox"),
            ("bin/cat", EntryType::Link, b"bin/busybox"),
            ("usr/lib/deep/file", EntryType::Regular, b"x"),
            ("etc/../etcx", EntryType::Regular, b""),
        ]);
        let (dir, r) = unpack(&tar[..tar.len()]);
        // The last entry climbs with '..' even though it ends inside: refused.
        assert!(matches!(r, Err(UnpackError::DotDot { .. })), "{r:?}");
        drop(dir);

        let tar = craft(&[
            ("bin/busybox", EntryType::Regular, b"#!elf"),
            ("bin/sh", EntryType::Symlink, b"/bin/busybox"),
            ("bin/ls", EntryType::Symlink, b"../bin/busybox"),
            ("bin/cat", EntryType::Link, b"bin/busybox"),
            ("usr/lib/deep/file", EntryType::Regular, b"x"),
            ("fifo", EntryType::Fifo, b""),
        ]);
        let (dir, r) = unpack(&tar);
        let stats = r.unwrap();
        assert_eq!(stats.entries, 6);
        assert_eq!(stats.file_bytes, 6);
        let d = dir.path();
        assert_eq!(fs::read(d.join("bin/busybox")).unwrap(), b"#!elf");
        assert_eq!(
            fs::read_link(d.join("bin/sh")).unwrap(),
            Path::new("/bin/busybox")
        );
        assert_eq!(fs::read(d.join("bin/ls")).unwrap(), b"#!elf");
        assert_eq!(fs::read(d.join("bin/cat")).unwrap(), b"#!elf");
        assert_eq!(fs::read(d.join("usr/lib/deep/file")).unwrap(), b"x");
        use std::os::unix::fs::{FileTypeExt, MetadataExt};
        assert!(fs::symlink_metadata(d.join("fifo"))
            .unwrap()
            .file_type()
            .is_fifo());
        assert_eq!(
            fs::metadata(d.join("bin/busybox")).unwrap().mtime(),
            1_700_000_000
        );
        assert_eq!(fs::metadata(d.join("bin/busybox")).unwrap().nlink(), 2);
    }

    fn refused(entries: &[(&str, EntryType, &[u8])]) -> UnpackError {
        let tar = craft(entries);
        let (_dir, r) = unpack(&tar);
        r.expect_err("hostile archive must be refused")
    }

    #[test]
    fn refuses_hostile_entries() {
        let e = refused(&[("../evil", EntryType::Regular, b"x")]);
        assert!(matches!(e, UnpackError::DotDot { .. }), "{e}");
        let e = refused(&[("/etc/evil", EntryType::Regular, b"x")]);
        assert!(matches!(e, UnpackError::Absolute { .. }), "{e}");
        let e = refused(&[("up", EntryType::Symlink, b"../../etc")]);
        assert!(matches!(e, UnpackError::SymlinkEscape { .. }), "{e}");
        let e = refused(&[("a/b/up", EntryType::Symlink, b"../../../x")]);
        assert!(matches!(e, UnpackError::SymlinkEscape { .. }), "{e}");
        let e = refused(&[
            ("etc", EntryType::Symlink, b"/etc"),
            ("etc/passwd", EntryType::Regular, b"x"),
        ]);
        assert!(matches!(e, UnpackError::ThroughSymlink { .. }), "{e}");
        let e = refused(&[("hl", EntryType::Link, b"../outside")]);
        assert!(matches!(e, UnpackError::HardlinkEscape { .. }), "{e}");
        let e = refused(&[("hl", EntryType::Link, b"/etc/shadow")]);
        assert!(matches!(e, UnpackError::HardlinkEscape { .. }), "{e}");
        let e = refused(&[("hl", EntryType::Link, b"missing")]);
        assert!(matches!(e, UnpackError::HardlinkMissing { .. }), "{e}");
        let e = refused(&[
            ("l", EntryType::Symlink, b"/etc"),
            ("hl", EntryType::Link, b"l/shadow"),
        ]);
        assert!(matches!(e, UnpackError::HardlinkMissing { .. }), "{e}");
        let e = refused(&[("dev/sda", EntryType::Block, b"")]);
        assert!(matches!(e, UnpackError::DeviceNode { .. }), "{e}");
        let e = refused(&[("dev/mem", EntryType::Char, b"")]);
        assert!(matches!(e, UnpackError::DeviceNode { .. }), "{e}");
        let e = refused(&[
            ("f", EntryType::Regular, b"x"),
            ("f/g", EntryType::Regular, b"y"),
        ]);
        assert!(matches!(e, UnpackError::NotADirectory { .. }), "{e}");
    }

    #[test]
    fn refuses_absurd_sizes_before_reading() {
        // A header that claims a terabyte, followed by nothing.
        let mut h = tar::Header::new_gnu();
        h.set_path("huge").unwrap();
        h.set_size(1 << 40);
        h.set_entry_type(EntryType::Regular);
        h.set_cksum();
        let mut tar = h.as_bytes().to_vec();
        tar.resize(tar.len() + 1024, 0);
        let (dir, r) = unpack(&tar);
        let e = r.unwrap_err();
        assert!(
            matches!(
                e,
                UnpackError::DiskFull { .. } | UnpackError::EntryTooLarge { .. }
            ),
            "{e}"
        );
        assert!(!dir.path().join("huge").exists());

        let tar = craft(&[
            ("a", EntryType::Regular, b"12345"),
            ("b", EntryType::Regular, b"12345"),
        ]);
        let dir = tempfile::tempdir().unwrap();
        let limits = Limits {
            max_entry_size: 10,
            max_total_size: 8,
            max_entries: 10,
        };
        let e = unpack_layer(&tar[..], dir.path(), &limits).unwrap_err();
        assert!(matches!(e, UnpackError::TotalTooLarge { .. }), "{e}");
        let limits = Limits {
            max_entry_size: 4,
            max_total_size: 100,
            max_entries: 10,
        };
        let e = unpack_layer(&tar[..], tempfile::tempdir().unwrap().path(), &limits).unwrap_err();
        assert!(matches!(e, UnpackError::EntryTooLarge { .. }), "{e}");
        let limits = Limits {
            max_entry_size: 10,
            max_total_size: 100,
            max_entries: 1,
        };
        let e = unpack_layer(&tar[..], tempfile::tempdir().unwrap().path(), &limits).unwrap_err();
        assert!(matches!(e, UnpackError::TooManyEntries { .. }), "{e}");
    }

    #[test]
    fn truncated_stream_is_corrupt() {
        let tar = craft(&[("a", EntryType::Regular, &[7u8; 2000])]);
        let (_dir, r) = unpack(&tar[..1024]);
        assert!(matches!(r, Err(UnpackError::Corrupt(_))), "{r:?}");
    }
}
