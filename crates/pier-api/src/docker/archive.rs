//! Docker's `docker cp` stat: the JSON of the `X-Docker-Container-Path-Stat` header,
//! `{name, size, mode, mtime, linkTarget}`, where `mode` is Go's `os.FileMode`:
//! permission bits plus type bits of its own (directory 1<<31, symlink 1<<27, ...), which
//! the CLI reads to decide how to copy.

use std::path::Path;
use std::time::{Duration, UNIX_EPOCH};

use serde_json::{json, Value};

/// A path of a container as `docker cp` asks about it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FileStat {
    pub name: String,
    pub size: u64,
    /// The Unix `st_mode`.
    pub mode: u32,
    pub mtime: i64,
    pub mtime_nsec: i64,
    /// Where a symlink points, as written in it.
    pub link_target: String,
}

// The Unix mode bits (`<sys/stat.h>`), the same on every Linux architecture.
const S_IFMT: u32 = 0o170_000;
const S_IFDIR: u32 = 0o040_000;
const S_IFLNK: u32 = 0o120_000;
const S_IFBLK: u32 = 0o060_000;
const S_IFCHR: u32 = 0o020_000;
const S_IFIFO: u32 = 0o010_000;
const S_IFSOCK: u32 = 0o140_000;
const S_ISUID: u32 = 0o4000;
const S_ISGID: u32 = 0o2000;
const S_ISVTX: u32 = 0o1000;

/// Go's `os.FileMode` of a Unix `st_mode`.
pub fn go_file_mode(st_mode: u32) -> u32 {
    let perm = st_mode & 0o777;
    let kind = match st_mode & S_IFMT {
        S_IFDIR => 1 << 31,
        S_IFLNK => 1 << 27,
        S_IFBLK => 1 << 26,
        S_IFCHR => (1 << 26) | (1 << 21),
        S_IFIFO => 1 << 25,
        S_IFSOCK => 1 << 24,
        _ => 0,
    };
    let mut m = perm | kind;
    if st_mode & S_ISUID != 0 {
        m |= 1 << 23;
    }
    if st_mode & S_ISGID != 0 {
        m |= 1 << 22;
    }
    if st_mode & S_ISVTX != 0 {
        m |= 1 << 20;
    }
    m
}

/// The stat JSON of `path`: a relative link target is shown from the path's directory.
pub fn stat_json(path: &str, s: &FileStat) -> Value {
    let link = if s.link_target.is_empty() || s.link_target.starts_with('/') {
        s.link_target.clone()
    } else {
        let parent = Path::new(path).parent().unwrap_or(Path::new("/"));
        parent.join(&s.link_target).display().to_string()
    };
    let nanos = UNIX_EPOCH
        + Duration::new(
            s.mtime.max(0) as u64,
            s.mtime_nsec.clamp(0, 999_999_999) as u32,
        );
    json!({
        "name": s.name,
        "size": s.size,
        "mode": go_file_mode(s.mode),
        "mtime": crate::time::format_rfc3339_nanos(nanos),
        "linkTarget": link,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_modes_and_links_read_as_gos() {
        assert_eq!(go_file_mode(S_IFDIR | 0o755), (1 << 31) | 0o755);
        assert_eq!(go_file_mode(0o100_000 | 0o644), 0o644);
        assert_eq!(go_file_mode(S_IFLNK | 0o777), (1 << 27) | 0o777);
        assert_eq!(go_file_mode(0o100_000 | S_ISUID | 0o755), (1 << 23) | 0o755);
        let s = FileStat {
            name: "l".into(),
            link_target: "t".into(),
            mode: S_IFLNK | 0o777,
            ..Default::default()
        };
        let v = stat_json("/a/l", &s);
        assert_eq!(v["linkTarget"], "/a/t");
        assert_eq!(v["mode"], (1u32 << 27) | 0o777);
        assert_eq!(v["mtime"], "1970-01-01T00:00:00.000000000Z");
    }
}
