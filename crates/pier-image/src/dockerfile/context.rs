//! The build context: the tree `COPY` and `ADD` read from, unpacked from the tar a client
//! sends (with `.dockerignore` applied by the client, as Docker's clients do); and the
//! paths resolved in it (or in another stage's root for `COPY --from`).
//!
//! Nothing a build reads may come from outside its context: a source climbing out with
//! `..`, or passing through a symlink that points out of the context (an absolute target,
//! or a relative one climbing above the root) is refused. In an image's root (`--from`)
//! symlinks resolve inside that root instead, as the image itself would see them.

use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use pier_archive::ignore::{clean, has_wildcards, Glob, IgnoreRules, PatternError};
use pier_archive::unpack::{self, Limits, UnpackError, UnpackOptions};
use sha2::{Digest as _, Sha256};

/// Why a context could not be read, or a source not found in it.
#[derive(Debug, thiserror::Error)]
pub enum ContextError {
    #[error("the build context is not a valid tar archive")]
    Unpack(#[source] UnpackError),
    #[error("cannot read the build context")]
    Io(#[source] io::Error),
    #[error("cannot locate the Dockerfile {0:?} in the build context")]
    NoDockerfile(String),
    #[error("forbidden path outside the build context: {0}")]
    Outside(String),
    #[error("{path}: the symlink {link} points to {target}, outside the build context")]
    SymlinkOutside {
        path: String,
        link: String,
        target: String,
    },
    #[error("{path}: too many levels of symlinks")]
    SymlinkLoop { path: String },
    #[error("{0}: no such file or directory")]
    NotFound(String),
    #[error("no source files were specified: nothing matches {0}")]
    NoMatch(String),
    #[error(transparent)]
    Pattern(#[from] PatternError),
    #[error("the .dockerignore file is not valid")]
    Ignore(#[source] PatternError),
}

/// Unpacks a context tar (plain, gzip or zstd) into the empty directory `dest`.
pub fn unpack(r: impl Read, dest: &Path) -> Result<(), ContextError> {
    let r = crate::compression::decompressed(r).map_err(ContextError::Io)?;
    unpack::unpack_tree(r, dest, &Limits::default(), UnpackOptions::TREE)
        .map_err(ContextError::Unpack)?;
    Ok(())
}

/// Reads the Dockerfile at `name` (relative to the context root). `Dockerfile` falls
/// back to `dockerfile`, as Docker does.
pub fn read_dockerfile(root: &Path, name: &str) -> Result<String, ContextError> {
    let mut candidates = vec![name.to_string()];
    if name == "Dockerfile" {
        candidates.push("dockerfile".into());
    }
    for c in &candidates {
        let path = resolve(root, c, false)?;
        match fs::read(&path) {
            Ok(bytes) => return Ok(String::from_utf8_lossy(&bytes).into_owned()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) if e.kind() == io::ErrorKind::IsADirectory => {}
            Err(e) => return Err(ContextError::Io(e)),
        }
    }
    Err(ContextError::NoDockerfile(name.to_string()))
}

/// Reads `.dockerignore` from the context root (no file: no rules).
pub fn read_ignore(root: &Path) -> Result<IgnoreRules, ContextError> {
    match fs::read_to_string(root.join(".dockerignore")) {
        Ok(text) => IgnoreRules::parse(&text).map_err(ContextError::Ignore),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(IgnoreRules::default()),
        Err(e) => Err(ContextError::Io(e)),
    }
}

/// Removes `.dockerignore` and the Dockerfile (`dockerfile`, relative to `root`) from the
/// context when `rules` exclude them, and nothing else, as Docker's daemon does: the client
/// sends the context with `.dockerignore` applied, and forces those two in (the Dockerfile
/// must be read, `.dockerignore` is read here). A Dockerfile sent from outside the context
/// under a made-up name goes away by the `.dockerignore` line the client adds for it.
pub fn remove_ignored_dockerfile(
    root: &Path,
    rules: &IgnoreRules,
    dockerfile: &str,
) -> Result<(), ContextError> {
    for name in [".dockerignore", dockerfile] {
        if !rules.is_excluded(name) {
            continue;
        }
        let path = resolve(root, name, false)?;
        match fs::symlink_metadata(&path) {
            Ok(m) if !m.is_dir() => fs::remove_file(&path).map_err(ContextError::Io)?,
            _ => {}
        }
    }
    Ok(())
}

/// Removes what `rules` exclude from the tree at `root`.
pub fn apply_ignore(root: &Path, rules: &IgnoreRules) -> Result<(), ContextError> {
    if rules.is_empty() {
        return Ok(());
    }
    fn walk(dir: &Path, rel: &str, rules: &IgnoreRules) -> io::Result<()> {
        let mut entries: Vec<_> = fs::read_dir(dir)?.collect::<Result<_, _>>()?;
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let name = e.file_name().to_string_lossy().into_owned();
            let path = if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            };
            let is_dir = e.file_type()?.is_dir();
            let excluded = rules.is_excluded(&path);
            if is_dir {
                if excluded && !rules.has_exceptions() {
                    fs::remove_dir_all(e.path())?;
                    continue;
                }
                walk(&e.path(), &path, rules)?;
                if excluded && fs::read_dir(e.path())?.next().is_none() {
                    fs::remove_dir(e.path())?;
                }
            } else if excluded {
                fs::remove_file(e.path())?;
            }
        }
        Ok(())
    }
    walk(root, "", rules).map_err(ContextError::Io)
}

/// Resolves `rel` (a source path, relative to `root`; a leading `/` is the root) to a
/// host path under `root`, following symlinks. With `scoped`, symlinks resolve inside
/// `root` as in a container (an image's root); without, one that leads out of `root` is an
/// error (a build context). Missing components are kept as they are.
pub fn resolve(root: &Path, rel: &str, scoped: bool) -> Result<PathBuf, ContextError> {
    let cleaned = clean(rel.trim_start_matches('/'));
    if cleaned == ".." || cleaned.starts_with("../") {
        return Err(ContextError::Outside(rel.to_string()));
    }
    let mut todo: Vec<String> = cleaned
        .split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .rev()
        .map(String::from)
        .collect();
    let mut cur: Vec<String> = Vec::new();
    let mut hops = 0;
    while let Some(part) = todo.pop() {
        if part == ".." {
            if cur.pop().is_none() && !scoped {
                return Err(ContextError::Outside(rel.to_string()));
            }
            continue;
        }
        let here: PathBuf = cur.iter().collect();
        let candidate = root.join(&here).join(&part);
        let Ok(m) = fs::symlink_metadata(&candidate) else {
            cur.push(part);
            continue;
        };
        if !m.file_type().is_symlink() {
            cur.push(part);
            continue;
        }
        hops += 1;
        if hops > 40 {
            return Err(ContextError::SymlinkLoop {
                path: rel.to_string(),
            });
        }
        let target = fs::read_link(&candidate).map_err(ContextError::Io)?;
        let outside = || ContextError::SymlinkOutside {
            path: rel.to_string(),
            link: here.join(&part).display().to_string(),
            target: target.display().to_string(),
        };
        if target.is_absolute() {
            if !scoped {
                return Err(outside());
            }
            cur.clear();
        }
        // Check the relative target stays inside before following it.
        if !scoped {
            let mut depth = cur.len() as i64;
            for c in target.components() {
                match c {
                    Component::ParentDir => {
                        depth -= 1;
                        if depth < 0 {
                            return Err(outside());
                        }
                    }
                    Component::Normal(_) => depth += 1,
                    _ => {}
                }
            }
        }
        for c in target.components().rev() {
            match c {
                Component::Normal(n) => todo.push(n.to_string_lossy().into_owned()),
                Component::ParentDir => todo.push("..".into()),
                _ => {}
            }
        }
    }
    Ok(root.join(cur.iter().collect::<PathBuf>()))
}

/// The sources a `COPY`/`ADD` argument names, relative to `root`: itself when it has no
/// wildcards, else every path whose components match (sorted; symlinks are not entered).
pub fn expand_sources(root: &Path, pattern: &str) -> Result<Vec<String>, ContextError> {
    let cleaned = clean(pattern.trim_start_matches('/'));
    if cleaned == ".." || cleaned.starts_with("../") {
        return Err(ContextError::Outside(pattern.to_string()));
    }
    if !has_wildcards(&cleaned) {
        return Ok(vec![cleaned]);
    }
    let parts: Vec<Glob> = cleaned
        .split('/')
        .map(|p| Glob::new(p, false))
        .collect::<Result<_, _>>()?;
    let mut out = Vec::new();
    fn walk(dir: &Path, rel: &str, parts: &[Glob], out: &mut Vec<String>) {
        let Some((first, rest)) = parts.split_first() else {
            return;
        };
        let Ok(rd) = fs::read_dir(dir) else { return };
        let mut names: Vec<(String, bool)> = rd
            .flatten()
            .map(|e| {
                let is_dir = e.file_type().map(|t| t.is_dir()).unwrap_or(false);
                (e.file_name().to_string_lossy().into_owned(), is_dir)
            })
            .collect();
        names.sort();
        for (name, is_dir) in names {
            if !first.matches(&name) {
                continue;
            }
            let path = if rel.is_empty() {
                name.clone()
            } else {
                format!("{rel}/{name}")
            };
            if rest.is_empty() {
                out.push(path);
            } else if is_dir {
                walk(&dir.join(&name), &path, rest, out);
            }
        }
    }
    walk(root, "", &parts, &mut out);
    if out.is_empty() {
        return Err(ContextError::NoMatch(pattern.to_string()));
    }
    Ok(out)
}

/// Feeds what identifies the tree at `path` into `h`: names, types, modes, symlink
/// targets and file contents, in a stable order. Owners and times are left out, as
/// Docker's build cache leaves them out (`COPY` sets owners; a touched file is unchanged).
pub fn hash_tree(h: &mut Sha256, path: &Path, name: &str) -> io::Result<()> {
    let m = fs::symlink_metadata(path)?;
    let mode = m.permissions().mode() & 0o7777;
    let ft = m.file_type();
    if ft.is_symlink() {
        let target = fs::read_link(path)?;
        h.update(format!("l {name:?} {target:?}\n"));
    } else if ft.is_dir() {
        h.update(format!("d {name:?} {mode:o}\n"));
        let mut names: Vec<_> = fs::read_dir(path)?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<Result<_, _>>()?;
        names.sort();
        for n in names {
            let child = format!("{name}/{}", n.to_string_lossy());
            hash_tree(h, &path.join(&n), &child)?;
        }
    } else if ft.is_file() {
        h.update(format!("f {name:?} {mode:o} {}\n", m.size()));
        let mut f = fs::File::open(path)?;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = f.read(&mut buf)?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
        }
    } else {
        h.update(format!("o {name:?} {mode:o} {}\n", m.rdev()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn tree() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        fs::create_dir_all(r.join("src/sub")).unwrap();
        fs::write(r.join("src/a.txt"), "a").unwrap();
        fs::write(r.join("src/b.txt"), "b").unwrap();
        fs::write(r.join("src/sub/c.txt"), "c").unwrap();
        fs::write(r.join("top.log"), "log").unwrap();
        symlink("src/a.txt", r.join("inside")).unwrap();
        symlink("/etc/passwd", r.join("abs")).unwrap();
        symlink("../../etc", r.join("src/up")).unwrap();
        symlink("src", r.join("srclink")).unwrap();
        d
    }

    #[test]
    fn resolves_inside_and_refuses_escapes() {
        let d = tree();
        let r = d.path();
        assert_eq!(resolve(r, "inside", false).unwrap(), r.join("src/a.txt"));
        assert_eq!(
            resolve(r, "/src/./a.txt", false).unwrap(),
            r.join("src/a.txt")
        );
        assert_eq!(
            resolve(r, "srclink/b.txt", false).unwrap(),
            r.join("src/b.txt")
        );
        assert_eq!(
            resolve(r, "src/../top.log", false).unwrap(),
            r.join("top.log")
        );
        assert!(matches!(
            resolve(r, "../x", false),
            Err(ContextError::Outside(_))
        ));
        assert!(matches!(
            resolve(r, "abs", false),
            Err(ContextError::SymlinkOutside { .. })
        ));
        let e = resolve(r, "src/up/passwd", false).unwrap_err();
        assert!(e.to_string().contains("outside the build context"), "{e}");
        // In an image's root, the same links stay inside it.
        assert_eq!(resolve(r, "abs", true).unwrap(), r.join("etc/passwd"));
        assert_eq!(
            resolve(r, "src/up/passwd", true).unwrap(),
            r.join("etc/passwd")
        );
    }

    #[test]
    fn unpacks_plain_and_compressed_contexts() {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(2);
        h.set_mode(0o644);
        b.append_data(&mut h, "Dockerfile", &b"hi"[..]).unwrap();
        let tar = b.into_inner().unwrap();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        io::Write::write_all(&mut gz, &tar).unwrap();
        let gz = gz.finish().unwrap();
        let zst = zstd::stream::encode_all(&tar[..], 1).unwrap();
        for data in [tar, gz, zst] {
            let d = tempfile::tempdir().unwrap();
            unpack(&data[..], d.path()).unwrap();
            assert_eq!(read_dockerfile(d.path(), "Dockerfile").unwrap(), "hi");
            assert!(matches!(
                read_dockerfile(d.path(), "Other"),
                Err(ContextError::NoDockerfile(_))
            ));
        }
        let d = tempfile::tempdir().unwrap();
        assert!(matches!(
            unpack(
                &b"not a tar at all, but long enough to look at"[..],
                d.path()
            ),
            Err(ContextError::Unpack(_))
        ));
    }

    #[test]
    fn expands_wildcards() {
        let d = tree();
        let r = d.path();
        assert_eq!(
            expand_sources(r, "src/*.txt").unwrap(),
            vec!["src/a.txt", "src/b.txt"]
        );
        assert_eq!(
            expand_sources(r, "*/sub/?.txt").unwrap(),
            vec!["src/sub/c.txt"]
        );
        assert_eq!(expand_sources(r, "./src/a.txt").unwrap(), vec!["src/a.txt"]);
        assert!(matches!(
            expand_sources(r, "*.nope"),
            Err(ContextError::NoMatch(_))
        ));
        assert!(matches!(
            expand_sources(r, "../*"),
            Err(ContextError::Outside(_))
        ));
    }

    #[test]
    fn ignore_rules_remove_files() {
        let d = tree();
        let r = d.path();
        let rules = IgnoreRules::parse("*.log\nsrc\n!src/sub\n").unwrap();
        apply_ignore(r, &rules).unwrap();
        assert!(!r.join("top.log").exists());
        assert!(!r.join("src/a.txt").exists());
        assert!(r.join("src/sub/c.txt").exists());
        assert!(r.join("inside").symlink_metadata().is_ok());
    }

    #[test]
    fn hashes_content_not_times() {
        let d = tree();
        let r = d.path();
        let hash = || {
            let mut h = Sha256::new();
            hash_tree(&mut h, &r.join("src"), "src").unwrap();
            h.finalize()
        };
        let first = hash();
        let f = fs::File::options()
            .write(true)
            .open(r.join("src/a.txt"))
            .unwrap();
        f.set_modified(std::time::SystemTime::UNIX_EPOCH).unwrap();
        assert_eq!(hash(), first, "a new mtime changes nothing");
        fs::write(r.join("src/a.txt"), "A").unwrap();
        assert_ne!(hash(), first, "new content does");
        fs::set_permissions(r.join("src/b.txt"), fs::Permissions::from_mode(0o600)).unwrap();
        let second = hash();
        fs::set_permissions(r.join("src/b.txt"), fs::Permissions::from_mode(0o644)).unwrap();
        assert_ne!(hash(), second, "so does a new mode");
    }
}
