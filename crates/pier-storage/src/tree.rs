//! Directory trees: copies that keep owners, modes, times and symlinks (a volume's
//! copy-up from its image, snapshots of directory volumes), and a volume's content as a
//! tar stream.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use rustix::fs::{AtFlags, Timespec, Timestamps, CWD};

use crate::error::{io, sys};
use crate::Result;

/// Whether `dir` has no entries (a missing directory counts as empty).
pub fn is_empty(dir: &Path) -> bool {
    fs::read_dir(dir).map_or(true, |mut d| d.next().is_none())
}

fn keep_owner_and_times(path: &Path, m: &fs::Metadata) -> Result<()> {
    rustix::fs::chownat(
        CWD,
        path,
        Some(rustix::fs::Uid::from_raw(m.uid())),
        Some(rustix::fs::Gid::from_raw(m.gid())),
        AtFlags::SYMLINK_NOFOLLOW,
    )
    .map_err(sys("chown", path))?;
    let ts = Timestamps {
        last_access: Timespec {
            tv_sec: m.atime(),
            tv_nsec: m.atime_nsec(),
        },
        last_modification: Timespec {
            tv_sec: m.mtime(),
            tv_nsec: m.mtime_nsec(),
        },
    };
    rustix::fs::utimensat(CWD, path, &ts, AtFlags::SYMLINK_NOFOLLOW)
        .map_err(sys("set times of", path))
}

/// Copies the content of `from` into the existing directory `to`, keeping owners, modes,
/// times, symlinks (as links) and special files. Hard links become separate files.
pub fn copy(from: &Path, to: &Path) -> Result<()> {
    for e in fs::read_dir(from).map_err(io("read", from))? {
        let e = e.map_err(io("read", from))?;
        let src = e.path();
        let dst = to.join(e.file_name());
        let m = fs::symlink_metadata(&src).map_err(io("stat", &src))?;
        let ft = m.file_type();
        if ft.is_dir() {
            fs::create_dir(&dst).map_err(io("create", &dst))?;
            copy(&src, &dst)?;
            fs::set_permissions(&dst, fs::Permissions::from_mode(m.mode() & 0o7777))
                .map_err(io("chmod", &dst))?;
        } else if ft.is_symlink() {
            let target = fs::read_link(&src).map_err(io("read link", &src))?;
            std::os::unix::fs::symlink(&target, &dst).map_err(io("create", &dst))?;
        } else if ft.is_file() {
            fs::copy(&src, &dst).map_err(|source| crate::Error::Copy {
                from: src.clone(),
                to: dst.clone(),
                source,
            })?;
        } else {
            let kind = rustix::fs::FileType::from_raw_mode(m.mode());
            rustix::fs::mknodat(
                CWD,
                &dst,
                kind,
                rustix::fs::Mode::from_raw_mode(m.mode() & 0o7777),
                m.rdev(),
            )
            .map_err(sys("create", &dst))?;
        }
        keep_owner_and_times(&dst, &m)?;
        if ft.is_file() {
            // chown clears set-id bits: put the mode back after it.
            fs::set_permissions(&dst, fs::Permissions::from_mode(m.mode() & 0o7777))
                .map_err(io("chmod", &dst))?;
        }
    }
    Ok(())
}

/// Removes everything inside `dir`, keeping `dir` itself.
pub fn clear(dir: &Path) -> Result<()> {
    for e in fs::read_dir(dir).map_err(io("read", dir))? {
        let p = e.map_err(io("read", dir))?.path();
        let r = if fs::symlink_metadata(&p).is_ok_and(|m| m.is_dir()) {
            fs::remove_dir_all(&p)
        } else {
            fs::remove_file(&p)
        };
        r.map_err(io("remove", &p))?;
    }
    Ok(())
}

/// Writes the content of `dir` as a tar (paths relative to it, owners and modes kept,
/// symlinks as links, entries sorted so the same content gives the same bytes).
pub fn export_tar(dir: &Path, out: impl Write) -> Result<()> {
    let mut b = tar::Builder::new(out);
    b.follow_symlinks(false);
    b.mode(tar::HeaderMode::Complete);
    fn walk(b: &mut tar::Builder<impl Write>, root: &Path, rel: &Path) -> Result<()> {
        let here = root.join(rel);
        let mut entries: Vec<_> = fs::read_dir(&here)
            .map_err(io("read", &here))?
            .filter_map(|e| e.ok())
            .map(|e| e.file_name())
            .collect();
        entries.sort();
        for name in entries {
            let r = rel.join(&name);
            let p = root.join(&r);
            let m = fs::symlink_metadata(&p).map_err(io("stat", &p))?;
            b.append_path_with_name(&p, &r).map_err(io("archive", &p))?;
            if m.is_dir() {
                walk(b, root, &r)?;
            }
        }
        Ok(())
    }
    walk(&mut b, dir, Path::new(""))?;
    b.into_inner()
        .and_then(|mut w| w.flush())
        .map_err(io("finish the archive of", dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_keeps_links_modes_and_times() {
        let d = tempfile::tempdir().unwrap();
        let (a, b) = (d.path().join("a"), d.path().join("b"));
        fs::create_dir_all(a.join("sub")).unwrap();
        fs::write(a.join("sub/f"), b"data").unwrap();
        fs::set_permissions(a.join("sub/f"), fs::Permissions::from_mode(0o640)).unwrap();
        std::os::unix::fs::symlink("sub/f", a.join("link")).unwrap();
        fs::create_dir(&b).unwrap();
        copy(&a, &b).unwrap();
        assert_eq!(fs::read(b.join("sub/f")).unwrap(), b"data");
        assert_eq!(fs::read_link(b.join("link")).unwrap(), Path::new("sub/f"));
        let (ma, mb) = (
            fs::metadata(a.join("sub/f")).unwrap(),
            fs::metadata(b.join("sub/f")).unwrap(),
        );
        assert_eq!(mb.mode() & 0o7777, 0o640);
        assert_eq!((ma.mtime(), ma.mtime_nsec()), (mb.mtime(), mb.mtime_nsec()));
        // The same content exports to the same bytes.
        let (mut ta, mut tb) = (Vec::new(), Vec::new());
        export_tar(&a, &mut ta).unwrap();
        export_tar(&b, &mut tb).unwrap();
        assert_eq!(ta, tb);
        clear(&b).unwrap();
        assert!(is_empty(&b));
    }
}
