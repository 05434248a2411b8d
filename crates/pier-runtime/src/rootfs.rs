//! Paths inside a container's root, resolved the way the container would see them:
//! symlinks followed relative to the root, `..` clamped at the root. Whatever an image
//! holds, a resolved path never leaves the rootfs.

use std::ffi::OsStr;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

/// Resolves `path` (absolute or relative, as seen inside the container) to a host path
/// under `root`. Missing trailing components are kept as they are.
pub fn resolve_in_root(root: &Path, path: &Path) -> io::Result<PathBuf> {
    let mut todo: Vec<PathBuf> = path.components().rev().filter_map(comp).collect();
    let mut cur: Vec<PathBuf> = Vec::new();
    let mut hops = 0;
    while let Some(part) = todo.pop() {
        if part.as_os_str() == ".." {
            cur.pop();
            continue;
        }
        let candidate: PathBuf = root.join(cur.iter().collect::<PathBuf>()).join(&part);
        match fs::symlink_metadata(&candidate) {
            Ok(m) if m.file_type().is_symlink() => {
                hops += 1;
                if hops > 40 {
                    return Err(io::Error::other(format!(
                        "too many levels of symlinks in {}",
                        path.display()
                    )));
                }
                let target = fs::read_link(&candidate)?;
                if target.is_absolute() {
                    cur.clear();
                }
                todo.extend(target.components().rev().filter_map(comp));
            }
            _ => cur.push(part),
        }
    }
    Ok(root.join(cur.iter().collect::<PathBuf>()))
}

fn comp(c: Component<'_>) -> Option<PathBuf> {
    match c {
        Component::Normal(n) => Some(PathBuf::from(n)),
        Component::ParentDir => Some(PathBuf::from("..")),
        _ => None,
    }
}

/// A `--user` that the container's `/etc/passwd` or `/etc/group` does not name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UserError {
    #[error("unable to find user {0}: no matching entries in passwd file")]
    NoUser(String),
    #[error("unable to find group {0}: no matching entries in group file")]
    NoGroup(String),
}

impl UserError {
    /// Whose fault this is: the request's, which names a user the image lacks.
    pub fn kind(&self) -> crate::ErrorKind {
        crate::ErrorKind::Invalid
    }
}

/// Reads `/etc/passwd` and `/etc/group` of a rootfs to turn `--user` into numbers, as
/// Docker does: `name`, `uid`, `name:group`, `uid:gid`.
pub fn resolve_user(root: &Path, user: &str) -> Result<(u32, u32, Vec<u32>), UserError> {
    let read = |path: &str| {
        resolve_in_root(root, Path::new(path))
            .ok()
            .and_then(|p| fs::read(p).ok())
            .unwrap_or_default()
    };
    resolve_user_from(&read("/etc/passwd"), &read("/etc/group"), user)
}

/// What a path of the merged view of overlay layers holds.
#[derive(Debug, PartialEq, Eq)]
pub enum Layered {
    File(PathBuf),
    Missing,
    /// A symlink on the way: only a real mount resolves it.
    NeedsMount,
}

/// Finds `rel` (like `etc/passwd`) in overlay layer directories, top first, as overlayfs
/// would show it: whiteouts (0/0 character devices) hide, opaque directories stop the
/// search, symlinks are left to a real mount.
pub fn find_in_layers(layers: &[PathBuf], rel: &str) -> Layered {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let parts: Vec<&str> = rel.split('/').filter(|p| !p.is_empty()).collect();
    for layer in layers {
        let mut cur = layer.clone();
        let mut stop_below = false;
        for (i, part) in parts.iter().enumerate() {
            cur.push(part);
            let Ok(m) = fs::symlink_metadata(&cur) else {
                break;
            };
            if m.file_type().is_char_device() && m.rdev() == 0 {
                return Layered::Missing;
            }
            if m.file_type().is_symlink() {
                return Layered::NeedsMount;
            }
            if i + 1 == parts.len() {
                return if m.is_file() {
                    Layered::File(cur)
                } else {
                    Layered::Missing
                };
            }
            if !m.is_dir() {
                return Layered::Missing;
            }
            let mut buf = [0u8; 2];
            if matches!(rustix::fs::lgetxattr(&cur, "trusted.overlay.opaque", &mut buf), Ok(1) if buf[0] == b'y')
            {
                stop_below = true;
            }
        }
        if stop_below {
            return Layered::Missing;
        }
    }
    Layered::Missing
}

/// [`resolve_user`] from the contents of `/etc/passwd` and `/etc/group`.
pub fn resolve_user_from(
    passwd: &[u8],
    group: &[u8],
    user: &str,
) -> Result<(u32, u32, Vec<u32>), UserError> {
    let (u, g) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let passwd = parse_db(passwd);
    let group = parse_db(group);
    let entry = passwd.iter().find(|f| {
        f.first().map(String::as_str) == Some(u)
            || (u.parse::<u32>().is_ok() && f.get(2).map(String::as_str) == Some(u))
    });
    let uid = match u.parse::<u32>() {
        Ok(n) => n,
        Err(_) => entry
            .and_then(|f| f.get(2)?.parse().ok())
            .ok_or_else(|| UserError::NoUser(u.to_string()))?,
    };
    let gid = match g {
        Some(g) => match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) => group
                .iter()
                .find(|f| f.first().map(String::as_str) == Some(g))
                .and_then(|f| f.get(2)?.parse().ok())
                .ok_or_else(|| UserError::NoGroup(g.to_string()))?,
        },
        None => entry.and_then(|f| f.get(3)?.parse().ok()).unwrap_or(0),
    };
    let name = entry.and_then(|f| f.first()).cloned();
    let mut extra = Vec::new();
    if let Some(name) = name {
        for f in &group {
            if f.get(3)
                .is_some_and(|members| members.split(',').any(|m| m == name))
            {
                if let Some(id) = f.get(2).and_then(|s| s.parse::<u32>().ok()) {
                    if id != gid && !extra.contains(&id) {
                        extra.push(id);
                    }
                }
            }
        }
    }
    Ok((uid, gid, extra))
}

fn parse_db(data: &[u8]) -> Vec<Vec<String>> {
    data.split(|&b| b == b'\n')
        .filter(|l| !l.is_empty() && l[0] != b'#')
        .map(|l| {
            OsStr::from_bytes(l)
                .to_string_lossy()
                .split(':')
                .map(str::to_string)
                .collect()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn resolves_inside_the_root() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        fs::create_dir_all(r.join("usr/bin")).unwrap();
        symlink("usr/bin", r.join("bin")).unwrap();
        symlink("/../../../../etc", r.join("evil")).unwrap();
        symlink("../../..", r.join("usr/up")).unwrap();
        assert_eq!(
            resolve_in_root(r, Path::new("/bin/sh")).unwrap(),
            r.join("usr/bin/sh")
        );
        assert_eq!(
            resolve_in_root(r, Path::new("/evil/passwd")).unwrap(),
            r.join("etc/passwd")
        );
        assert_eq!(
            resolve_in_root(r, Path::new("/usr/up/etc")).unwrap(),
            r.join("etc")
        );
        assert_eq!(
            resolve_in_root(r, Path::new("/../../x")).unwrap(),
            r.join("x")
        );
        symlink("loop", r.join("loop")).unwrap();
        assert!(resolve_in_root(r, Path::new("/loop")).is_err());
    }

    #[test]
    #[ignore = "root tier: needs root; scripts/test.sh runs it (--run-ignored all)"]
    fn finds_files_through_overlay_layers() {
        let d = tempfile::tempdir().unwrap();
        let (top, mid, low) = (
            d.path().join("top"),
            d.path().join("mid"),
            d.path().join("low"),
        );
        for l in [&top, &mid, &low] {
            fs::create_dir_all(l.join("etc")).unwrap();
        }
        fs::write(low.join("etc/passwd"), "low").unwrap();
        fs::write(low.join("etc/group"), "low").unwrap();
        fs::write(mid.join("etc/passwd"), "mid").unwrap();
        let layers = vec![top.clone(), mid.clone(), low.clone()];
        assert_eq!(
            find_in_layers(&layers, "etc/passwd"),
            Layered::File(mid.join("etc/passwd"))
        );
        assert_eq!(
            find_in_layers(&layers, "etc/group"),
            Layered::File(low.join("etc/group"))
        );
        assert_eq!(find_in_layers(&layers, "etc/shadow"), Layered::Missing);
        // A whiteout in the top layer hides the lower files; an opaque directory hides
        // everything below it.
        rustix::fs::mknodat(
            rustix::fs::CWD,
            top.join("etc/group"),
            rustix::fs::FileType::CharacterDevice,
            rustix::fs::Mode::empty(),
            0,
        )
        .unwrap();
        assert_eq!(find_in_layers(&layers, "etc/group"), Layered::Missing);
        rustix::fs::lsetxattr(
            mid.join("etc"),
            "trusted.overlay.opaque",
            b"y",
            rustix::fs::XattrFlags::empty(),
        )
        .unwrap();
        fs::remove_file(mid.join("etc/passwd")).unwrap();
        assert_eq!(find_in_layers(&layers, "etc/passwd"), Layered::Missing);
        // A symlink needs a real mount to resolve.
        fs::remove_dir_all(top.join("etc")).unwrap();
        symlink("/usr/etc", top.join("etc")).unwrap();
        assert_eq!(find_in_layers(&layers, "etc/passwd"), Layered::NeedsMount);
    }

    #[test]
    fn users_and_groups() {
        let d = tempfile::tempdir().unwrap();
        fs::create_dir(d.path().join("etc")).unwrap();
        fs::write(
            d.path().join("etc/passwd"),
            "root:x:0:0::/root:/bin/sh\napp:x:1000:1001::/home/app:/bin/sh\n",
        )
        .unwrap();
        fs::write(
            d.path().join("etc/group"),
            "root:x:0:\napp:x:1001:\nwheel:x:10:app,other\n",
        )
        .unwrap();
        assert_eq!(
            resolve_user(d.path(), "app").unwrap(),
            (1000, 1001, vec![10])
        );
        assert_eq!(
            resolve_user(d.path(), "app:wheel").unwrap(),
            (1000, 10, vec![])
        );
        assert_eq!(resolve_user(d.path(), "1234:5").unwrap(), (1234, 5, vec![]));
        assert_eq!(
            resolve_user(d.path(), "1000").unwrap(),
            (1000, 1001, vec![10])
        );
        let e = resolve_user(d.path(), "nobody").unwrap_err();
        assert_eq!(e, UserError::NoUser("nobody".into()));
        assert!(e.to_string().contains("unable to find user nobody"), "{e}");
        assert_eq!(
            resolve_user(d.path(), "1000:nogroup").unwrap_err(),
            UserError::NoGroup("nogroup".into())
        );
    }
}
