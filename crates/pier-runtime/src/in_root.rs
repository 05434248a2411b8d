//! A container's files reached through file descriptors only, so that the kernel, not this
//! process, decides where each path leads. This is what `cp`, `export`, `commit`, `diff`
//! and a volume's copy-up use whenever they read or write what a container controls.
//!
//! A path string under `/proc/PID/root` or a mounted rootfs, resolved in userspace and then
//! used for ordinary I/O, can be redirected: between the check and the use a container
//! swaps a directory for a symlink, and the host kernel follows it from the daemon's root,
//! onto the host. Here instead:
//!
//! - [`InRoot`] holds the container's root as a directory descriptor (`/proc/PID/root` of a
//!   running container, opened through its `/proc/PID` directory, or the rootfs mounted for
//!   a stopped one). A path as the container sees it is opened with `openat2` and
//!   `RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS`: every symlink and `..` is resolved by the
//!   kernel as if the descriptor were `/`, and `/proc/*/root`-style magic links are refused.
//! - Below a resolved directory, nothing follows a symlink at all: entries are reached with
//!   `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)` from that directory ([`walk`],
//!   [`Extract`]), examined through an `O_PATH | O_NOFOLLOW` descriptor, and a regular
//!   file's bytes are read by reopening that very descriptor (`/proc/self/fd/N`, the
//!   daemon's own `/proc`), so a file cannot turn into a symlink or a device between the
//!   look and the read, and no device is ever opened.
//! - Writes create each entry relative to its parent's descriptor (`mkdirat`, `openat` with
//!   `O_CREAT | O_EXCL | O_NOFOLLOW`, `symlinkat`, `linkat`, `mknodat`) and set owners,
//!   modes and times on the created descriptor. A parent that is a symlink or not a
//!   directory is refused, so nothing is written through a symlink, and no scratch
//!   directory is needed.
//!
//! Chosen over the alternative (a helper process that joins the container's mount
//! namespace and chroots, then copies with ordinary paths): `openat2` (Linux 5.6+) needs no
//! extra process, fork or re-exec per copy, works the same for a stopped container's
//! mounted rootfs and a running one's `/proc/PID/root` (mounts and volumes included, as the
//! container sees them), and leaves the daemon's own file handling (the tar stream, the host
//! side) in the daemon. A chrooted helper would also run with the daemon's privileges inside
//! a root the container controls, which is its own risk.

use std::ffi::{OsStr, OsString};
use std::fs::{File, Metadata};
use std::io::{self, Read};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Component, Path, PathBuf};

use rustix::fs::{
    openat, openat2, AtFlags, FileType, Gid, Mode, OFlags, ResolveFlags, Timespec, Timestamps, Uid,
    XattrFlags, CWD,
};
use rustix::io::Errno;

/// Mounts `b` in `root` (in the calling thread's mount namespace).
fn bind_in(root: &Path, b: &Bind) -> io::Result<()> {
    let dest = crate::rootfs::resolve_in_root(root, &b.target)?;
    if std::fs::metadata(&b.source)?.is_dir() {
        std::fs::create_dir_all(&dest)?;
    } else if std::fs::symlink_metadata(&dest).is_err() {
        if let Some(p) = dest.parent() {
            std::fs::create_dir_all(p)?;
        }
        File::create(&dest)?;
    }
    rustix::mount::mount_bind_recursive(&b.source, &dest)?;
    if b.read_only {
        rustix::mount::mount_remount(
            &dest,
            rustix::mount::MountFlags::BIND | rustix::mount::MountFlags::RDONLY,
            "",
        )?;
    }
    Ok(())
}

/// How a path as the container sees it is resolved: inside the root, no magic links.
const IN_ROOT: ResolveFlags = ResolveFlags::IN_ROOT.union(ResolveFlags::NO_MAGICLINKS);
/// How a path below a resolved directory is resolved: beneath it, no symlinks at all.
const BENEATH: ResolveFlags = ResolveFlags::BENEATH
    .union(ResolveFlags::NO_SYMLINKS)
    .union(ResolveFlags::NO_MAGICLINKS);

/// `openat2`, retried while the kernel asks (`EAGAIN`: a rename or mount elsewhere raced
/// a `..` lookup, which `RESOLVE_IN_ROOT` then refuses to trust).
fn openat2_retry(
    dir: BorrowedFd<'_>,
    path: &Path,
    flags: OFlags,
    resolve: ResolveFlags,
) -> io::Result<OwnedFd> {
    let path = if path.as_os_str().is_empty() {
        Path::new(".")
    } else {
        path
    };
    // openat2 refuses flags that do not go with O_PATH.
    let flags = if flags.contains(OFlags::PATH) {
        flags | OFlags::CLOEXEC
    } else {
        flags | OFlags::CLOEXEC | OFlags::NOCTTY
    };
    let mut tries = 0;
    loop {
        match openat2(dir, path, flags, Mode::empty(), resolve) {
            Err(Errno::AGAIN) if tries < 128 => tries += 1,
            Err(Errno::NOSYS) => {
                return Err(io::Error::other(
                    "this kernel has no openat2 (Linux 5.6 or later is needed to copy files of a container safely)",
                ))
            }
            r => return r.map_err(io::Error::from),
        }
    }
}

/// A container's root, as a directory descriptor.
#[derive(Debug)]
pub struct InRoot {
    root: OwnedFd,
    /// The mount namespace the root's mounts live in, when it is one of its own
    /// ([`InRoot::open_with_binds`]): held so they stay until the root is dropped.
    _ns: Option<OwnedFd>,
}

/// A host directory or file to show at `target` in a root ([`InRoot::open_with_binds`]).
#[derive(Debug, Clone)]
pub struct Bind {
    pub source: PathBuf,
    /// The path as the container sees it.
    pub target: PathBuf,
    pub read_only: bool,
}

impl InRoot {
    /// Opens `root`, a path the daemon owns (a mounted rootfs), as the root.
    pub fn open(root: &Path) -> io::Result<InRoot> {
        let root = openat(
            CWD,
            root,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        Ok(InRoot { root, _ns: None })
    }

    /// Opens `root` (a stopped container's mounted rootfs) with `binds` mounted in it, as
    /// the container would see its volumes and bind mounts: what `cp` copies.
    ///
    /// The binds are made in a mount namespace of their own, by a thread that exists only
    /// for that; the returned root holds the namespace, and dropping it takes the binds
    /// away. Nothing is mounted in the caller's namespace, so nothing is left behind if
    /// the process dies meanwhile. Missing targets are made (directories, or an empty file
    /// for a file), as a container's start makes them; targets are resolved inside the
    /// root, in path order so a bind under another lands in it. The container must not be
    /// running, as at its start.
    pub fn open_with_binds(root: &Path, binds: &[Bind]) -> io::Result<InRoot> {
        let mut binds = binds.to_vec();
        binds.sort_by(|a, b| a.target.cmp(&b.target));
        std::thread::scope(|s| {
            s.spawn(|| {
                // SAFETY: the new mount namespace (and the unshared filesystem context it
                // implies) belongs to this thread alone, which ends right after.
                unsafe { rustix::thread::unshare_unsafe(rustix::thread::UnshareFlags::NEWNS) }?;
                // Nothing done here may propagate back to the caller's namespace.
                rustix::mount::mount_change(
                    "/",
                    rustix::mount::MountPropagationFlags::PRIVATE
                        | rustix::mount::MountPropagationFlags::REC,
                )?;
                for b in &binds {
                    bind_in(root, b).map_err(|e| {
                        io::Error::new(
                            e.kind(),
                            format!(
                                "cannot mount {} at {} for the copy: {e}",
                                b.source.display(),
                                b.target.display()
                            ),
                        )
                    })?;
                }
                let ns = openat(
                    CWD,
                    "/proc/thread-self/ns/mnt",
                    OFlags::RDONLY | OFlags::CLOEXEC,
                    Mode::empty(),
                )?;
                let mut r = InRoot::open(root)?;
                r._ns = Some(ns);
                Ok(r)
            })
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("the mount thread panicked")))
        })
    }

    /// The root of the process whose `/proc/PID` directory is `proc_pid` (opened by the
    /// caller, so that a reused PID cannot swap the process under it).
    pub fn of_process(proc_pid: BorrowedFd<'_>) -> io::Result<InRoot> {
        let root = openat(
            proc_pid,
            "root",
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        Ok(InRoot { root, _ns: None })
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.root.as_fd()
    }

    /// Opens `path` as the container sees it (absolute or not, it starts at the root),
    /// every component resolved by the kernel inside the root.
    pub fn open_path(&self, path: &Path, flags: OFlags) -> io::Result<OwnedFd> {
        openat2_retry(self.root.as_fd(), path, flags, IN_ROOT)
    }

    /// The directory holding `path` (resolved inside the root) and `path`'s last
    /// component, which is not followed; `None` when `path` names the root itself.
    pub fn parent_of(&self, path: &Path) -> io::Result<(OwnedFd, Option<OsString>)> {
        let flags = OFlags::PATH | OFlags::DIRECTORY;
        match (path.parent(), path.file_name()) {
            (Some(parent), Some(name)) => {
                Ok((self.open_path(parent, flags)?, Some(name.to_os_string())))
            }
            _ => Ok((self.open_path(path, flags)?, None)),
        }
    }
}

/// One file met through a descriptor: `fd` is an `O_PATH | O_NOFOLLOW` descriptor of it,
/// `meta` its `fstat`.
#[derive(Debug)]
pub struct Entry {
    /// Path relative to where it was looked up.
    pub rel: PathBuf,
    pub fd: OwnedFd,
    pub meta: Metadata,
}

impl Entry {
    /// Looks up `rel` below the directory `dir` (no symlink followed, the last one
    /// included; `rel` empty is `dir` itself).
    pub fn at(dir: BorrowedFd<'_>, rel: &Path) -> io::Result<Entry> {
        let fd = openat2_retry(dir, rel, OFlags::PATH | OFlags::NOFOLLOW, BENEATH)?;
        Entry::of(fd, rel.to_path_buf())
    }

    /// `name`, a single component in the directory `dir`, not followed.
    pub fn child(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<Entry> {
        if name.is_empty() || name.as_bytes().contains(&b'/') {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not a file name",
            ));
        }
        Entry::at(dir, Path::new(name))
    }

    fn of(fd: OwnedFd, rel: PathBuf) -> io::Result<Entry> {
        let file = File::from(fd);
        let meta = file.metadata()?;
        Ok(Entry {
            rel,
            fd: file.into(),
            meta,
        })
    }

    /// A regular file's content: the same file reopened for reading.
    pub fn open(&self) -> io::Result<File> {
        if !self.meta.is_file() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} is not a regular file", self.rel.display()),
            ));
        }
        reopen(self.fd.as_fd(), OFlags::RDONLY | OFlags::NONBLOCK).map(File::from)
    }

    /// A directory, reopened for reading its entries (or for `fchmod` and the like).
    pub fn open_dir(&self) -> io::Result<OwnedFd> {
        openat(
            &self.fd,
            ".",
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(io::Error::from)
    }

    /// Where a symlink points, as written in it.
    pub fn read_link(&self) -> io::Result<OsString> {
        let t = rustix::fs::readlinkat(&self.fd, "", Vec::new())?;
        Ok(OsStr::from_bytes(t.as_bytes()).to_os_string())
    }

    /// An extended attribute of a directory or regular file (`None` when absent).
    pub fn xattr(&self, name: &str) -> Option<Vec<u8>> {
        if !(self.meta.is_dir() || self.meta.is_file()) {
            return None;
        }
        let mut buf = vec![0u8; 256];
        let n = rustix::fs::getxattr(proc_fd(self.fd.as_fd()), name, &mut buf[..]).ok()?;
        buf.truncate(n);
        Some(buf)
    }
}

fn proc_fd(fd: BorrowedFd<'_>) -> String {
    format!("/proc/self/fd/{}", fd.as_raw_fd())
}

/// Opens again the very file an `O_PATH` descriptor holds.
fn reopen(fd: BorrowedFd<'_>, flags: OFlags) -> io::Result<OwnedFd> {
    openat(
        CWD,
        proc_fd(fd),
        flags | OFlags::CLOEXEC | OFlags::NOCTTY,
        Mode::empty(),
    )
    .map_err(io::Error::from)
}

/// Is this error what a file changed or removed under a walk gives?
fn vanished(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::ENOENT) | Some(libc::ELOOP) | Some(libc::ENOTDIR) | Some(libc::EXDEV)
    )
}

/// Whether the directory `dir` is on a filesystem the kernel makes up (proc, sysfs,
/// cgroup): its content is not files but views of the kernel (`/proc/kcore` never ends),
/// so walks show such a directory empty, as Docker's copies and exports do (they read
/// the root without the container's `/proc` and `/sys` mounted).
fn is_kernel_view(dir: &OwnedFd) -> bool {
    const PROC: i64 = 0x9fa0;
    const SYSFS: i64 = 0x6265_6572;
    const CGROUP: i64 = 0x0027_e0eb;
    const CGROUP2: i64 = 0x6367_7270;
    const SECURITYFS: i64 = 0x7363_6673;
    const DEBUGFS: i64 = 0x6462_6720;
    // `f_type`'s type differs between architectures.
    #[allow(clippy::unnecessary_cast)]
    rustix::fs::fstatfs(dir).is_ok_and(|st| {
        matches!(
            st.f_type as i64,
            PROC | SYSFS | CGROUP | CGROUP2 | SECURITYFS | DEBUGFS
        )
    })
}

/// The names in the directory `rel` below `top` (reached without following a symlink),
/// sorted; `None` when it vanished or turned into something else.
fn list(top: BorrowedFd<'_>, rel: &Path) -> io::Result<Option<Vec<OsString>>> {
    let dfd = match openat2_retry(top, rel, OFlags::RDONLY | OFlags::DIRECTORY, BENEATH) {
        Ok(fd) => fd,
        Err(e) if vanished(&e) && !rel.as_os_str().is_empty() => return Ok(None),
        Err(e) => return Err(e),
    };
    if is_kernel_view(&dfd) {
        return Ok(Some(Vec::new()));
    }
    let mut names = Vec::new();
    for e in rustix::fs::Dir::read_from(&dfd)? {
        let e = e?;
        let n = e.file_name().to_bytes();
        if n != b"." && n != b".." {
            names.push(OsStr::from_bytes(n).to_os_string());
        }
    }
    names.sort();
    Ok(Some(names))
}

/// Calls `f` on everything below the directory `top` (not `top` itself) in path order:
/// each directory right before its content, names sorted. Every entry is reached again
/// from `top` without following any symlink, so a directory swapped for a symlink
/// mid-walk is skipped, never followed; so is whatever vanishes meanwhile. Only the
/// entry at hand is held open, however deep or wide the tree.
pub fn walk(top: BorrowedFd<'_>, f: &mut dyn FnMut(&Entry) -> io::Result<()>) -> io::Result<()> {
    let Some(names) = list(top, Path::new(""))? else {
        return Ok(());
    };
    let mut stack = vec![(PathBuf::new(), names.into_iter())];
    while let Some((dir, names)) = stack.last_mut() {
        let Some(name) = names.next() else {
            stack.pop();
            continue;
        };
        let rel = dir.join(&name);
        let entry = match Entry::at(top, &rel) {
            Ok(e) => e,
            Err(e) if vanished(&e) => continue,
            Err(e) => return Err(e),
        };
        f(&entry)?;
        if entry.meta.is_dir() {
            drop(entry);
            if let Some(names) = list(top, &rel)? {
                stack.push((rel, names.into_iter()));
            }
        }
    }
    Ok(())
}

/// Owner, mode, times and extended attributes to give a created entry.
#[derive(Debug, Clone, Default)]
pub struct Meta {
    pub uid: u32,
    pub gid: u32,
    /// Permission bits (with set-id and sticky).
    pub mode: u32,
    pub mtime: (i64, u32),
    pub atime: (i64, u32),
    pub xattrs: Vec<(String, Vec<u8>)>,
}

impl Meta {
    /// The metadata of an existing file, to copy it.
    pub fn of(m: &Metadata) -> Meta {
        Meta {
            uid: m.uid(),
            gid: m.gid(),
            mode: m.mode() & 0o7777,
            mtime: (m.mtime(), m.mtime_nsec().clamp(0, 999_999_999) as u32),
            atime: (m.atime(), m.atime_nsec().clamp(0, 999_999_999) as u32),
            xattrs: Vec::new(),
        }
    }

    fn times(&self) -> Timestamps {
        let ts = |(s, n): (i64, u32)| Timespec {
            tv_sec: s,
            tv_nsec: n as _,
        };
        Timestamps {
            last_access: ts(self.atime),
            last_modification: ts(self.mtime),
        }
    }

    /// Applies it all to an open (not `O_PATH`) descriptor.
    fn apply(&self, fd: BorrowedFd<'_>, chown: bool) -> io::Result<()> {
        if chown {
            rustix::fs::fchown(
                fd,
                Some(Uid::from_raw(self.uid)),
                Some(Gid::from_raw(self.gid)),
            )?;
        }
        // After chown, which clears set-id bits.
        rustix::fs::fchmod(fd, Mode::from_raw_mode(self.mode & 0o7777))?;
        for (name, value) in &self.xattrs {
            rustix::fs::fsetxattr(fd, name.as_str(), value, XattrFlags::empty())?;
        }
        rustix::fs::futimens(fd, &self.times())?;
        Ok(())
    }
}

fn refused(rel: &Path, why: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::PermissionDenied,
        format!(
            "{}: {why}; nothing is written through a symlink",
            rel.display()
        ),
    )
}

/// Removes whatever is at `name` in the directory `dir` (a directory with its content),
/// following no symlink. Absent is fine.
pub fn remove_at(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<()> {
    match rustix::fs::unlinkat(dir, name, AtFlags::empty()) {
        Ok(()) | Err(Errno::NOENT) => return Ok(()),
        Err(Errno::ISDIR) | Err(Errno::PERM) => {}
        Err(e) => return Err(e.into()),
    }
    // A directory: empty it through its own descriptor, then remove it.
    let sub = match openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    ) {
        Ok(fd) => fd,
        Err(Errno::NOENT) => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    let mut names = Vec::new();
    for e in rustix::fs::Dir::read_from(&sub)? {
        let e = e?;
        let n = e.file_name().to_bytes();
        if n != b"." && n != b".." {
            names.push(OsStr::from_bytes(n).to_os_string());
        }
    }
    for n in names {
        remove_at(sub.as_fd(), &n)?;
    }
    match rustix::fs::unlinkat(dir, name, AtFlags::REMOVEDIR) {
        Ok(()) | Err(Errno::NOENT) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Creates entries below a destination directory, each relative to its parent's
/// descriptor. Parents that do not exist are made (root's, 0755); a parent that is a
/// symlink or not a directory is refused. What is in the way of an entry is replaced
/// (a directory by a directory is kept and merged into).
#[derive(Debug)]
pub struct Extract {
    dest: OwnedFd,
    chown: bool,
    /// Directories' metadata, applied at the end (deepest first), when nothing more is
    /// written into them.
    dirs: Vec<(PathBuf, Meta)>,
}

impl Extract {
    /// Entries go below `dest`, a directory descriptor (`O_PATH` is enough).
    pub fn new(dest: OwnedFd) -> Extract {
        Extract {
            dest,
            chown: rustix::process::geteuid().is_root(),
            dirs: Vec::new(),
        }
    }

    /// The directory that holds `rel`, opened for writing into, and `rel`'s name.
    fn parent<'a>(&self, rel: &'a Path) -> io::Result<(OwnedFd, &'a OsStr)> {
        let name = rel
            .file_name()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "an empty path"))?;
        let parent = rel.parent().unwrap_or(Path::new(""));
        let flags = OFlags::RDONLY | OFlags::DIRECTORY;
        match openat2_retry(self.dest.as_fd(), parent, flags, BENEATH) {
            Ok(fd) => Ok((fd, name)),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok((self.make_dirs(parent)?, name)),
            Err(e) if vanished(&e) => Err(refused(
                rel,
                "a directory on the way is a symlink or not a directory",
            )),
            Err(e) => Err(e),
        }
    }

    fn make_dirs(&self, parent: &Path) -> io::Result<OwnedFd> {
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let mut cur = openat(&self.dest, ".", flags, Mode::empty())?;
        for c in parent.components() {
            let Component::Normal(part) = c else {
                return Err(refused(parent, "only plain names may be created"));
            };
            cur = match openat(&cur, part, flags, Mode::empty()) {
                Ok(fd) => fd,
                Err(Errno::NOENT) => {
                    match rustix::fs::mkdirat(&cur, part, Mode::from_raw_mode(0o700)) {
                        Ok(()) | Err(Errno::EXIST) => {}
                        Err(e) => return Err(e.into()),
                    }
                    let fd = openat(&cur, part, flags, Mode::empty())
                        .map_err(|_| refused(parent, "a directory on the way changed"))?;
                    rustix::fs::fchmod(&fd, Mode::from_raw_mode(0o755))?;
                    fd
                }
                Err(_) => {
                    return Err(refused(
                        parent,
                        "a directory on the way is a symlink or not a directory",
                    ))
                }
            };
        }
        Ok(cur)
    }

    /// A directory; an existing one is kept (its metadata set at [`Self::finish`]).
    pub fn dir(&mut self, rel: &Path, meta: Meta) -> io::Result<()> {
        if rel.as_os_str().is_empty() {
            return Ok(());
        }
        let (parent, name) = self.parent(rel)?;
        let existing = rustix::fs::statat(&parent, name, AtFlags::SYMLINK_NOFOLLOW);
        if !matches!(existing, Ok(ref st) if FileType::from_raw_mode(st.st_mode) == FileType::Directory)
        {
            remove_at(parent.as_fd(), name)?;
            match rustix::fs::mkdirat(&parent, name, Mode::from_raw_mode(0o700)) {
                Ok(()) | Err(Errno::EXIST) => {}
                Err(e) => return Err(e.into()),
            }
        }
        self.dirs.push((rel.to_path_buf(), meta));
        Ok(())
    }

    /// A regular file with `content`; returns the bytes written.
    pub fn file(&mut self, rel: &Path, meta: &Meta, content: &mut dyn Read) -> io::Result<u64> {
        let (parent, name) = self.parent(rel)?;
        remove_at(parent.as_fd(), name)?;
        let fd = openat(
            &parent,
            name,
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )?;
        let mut file = File::from(fd);
        let n = io::copy(content, &mut file)?;
        meta.apply(file.as_fd(), self.chown)?;
        Ok(n)
    }

    /// A symlink (never followed here).
    pub fn symlink(&mut self, rel: &Path, target: &OsStr, meta: &Meta) -> io::Result<()> {
        let (parent, name) = self.parent(rel)?;
        remove_at(parent.as_fd(), name)?;
        rustix::fs::symlinkat(target, &parent, name)?;
        if self.chown {
            rustix::fs::chownat(
                &parent,
                name,
                Some(Uid::from_raw(meta.uid)),
                Some(Gid::from_raw(meta.gid)),
                AtFlags::SYMLINK_NOFOLLOW,
            )?;
        }
        rustix::fs::utimensat(&parent, name, &meta.times(), AtFlags::SYMLINK_NOFOLLOW)?;
        Ok(())
    }

    /// A hard link to `target`, an entry below the destination made earlier.
    pub fn hard_link(&mut self, rel: &Path, target: &Path) -> io::Result<()> {
        let (parent, name) = self.parent(rel)?;
        let (tparent, tname) = match (target.parent(), target.file_name()) {
            (Some(p), Some(n)) => (
                openat2_retry(
                    self.dest.as_fd(),
                    p,
                    OFlags::PATH | OFlags::DIRECTORY,
                    BENEATH,
                )
                .map_err(|_| {
                    refused(target, "a hard link's target must be below the destination")
                })?,
                n,
            ),
            _ => return Err(refused(target, "a hard link needs a file as its target")),
        };
        if target == rel {
            return Ok(());
        }
        remove_at(parent.as_fd(), name)?;
        rustix::fs::linkat(&tparent, tname, &parent, name, AtFlags::empty())?;
        Ok(())
    }

    /// A FIFO, socket or device node (`kind`, `rdev`).
    pub fn node(&mut self, rel: &Path, kind: FileType, rdev: u64, meta: &Meta) -> io::Result<()> {
        let (parent, name) = self.parent(rel)?;
        remove_at(parent.as_fd(), name)?;
        rustix::fs::mknodat(&parent, name, kind, Mode::from_raw_mode(0o600), rdev)?;
        let fd = openat(
            &parent,
            name,
            OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        let st = rustix::fs::fstat(&fd)?;
        if FileType::from_raw_mode(st.st_mode) != kind {
            return Err(refused(rel, "the node changed while it was made"));
        }
        // No descriptor of a node can be opened without opening the node: change it
        // through the daemon's /proc link to that very inode.
        let path = proc_fd(fd.as_fd());
        if self.chown {
            rustix::fs::chown(
                path.as_str(),
                Some(Uid::from_raw(meta.uid)),
                Some(Gid::from_raw(meta.gid)),
            )?;
        }
        rustix::fs::chmod(path.as_str(), Mode::from_raw_mode(meta.mode & 0o7777))?;
        rustix::fs::utimensat(CWD, path.as_str(), &meta.times(), AtFlags::empty())?;
        Ok(())
    }

    /// Sets the directories' metadata, deepest first. A directory the container removed
    /// or swapped meanwhile is left as it is.
    pub fn finish(mut self) -> io::Result<()> {
        self.dirs.sort_by(|a, b| b.0.cmp(&a.0));
        for (rel, meta) in &self.dirs {
            let fd = match openat2_retry(
                self.dest.as_fd(),
                rel,
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW,
                BENEATH,
            ) {
                Ok(fd) => fd,
                Err(e) if vanished(&e) => continue,
                Err(e) => return Err(e),
            };
            meta.apply(fd.as_fd(), self.chown)?;
        }
        Ok(())
    }
}

/// Copies what is below the directory `src` into the directory `dest`, keeping owners,
/// modes, times, symlinks (as links) and special files; hard links become separate
/// files. Neither side follows a symlink.
pub fn copy_tree(src: BorrowedFd<'_>, dest: OwnedFd) -> io::Result<()> {
    let mut out = Extract::new(dest);
    walk(src, &mut |e| {
        let meta = Meta::of(&e.meta);
        let ft = e.meta.file_type();
        if ft.is_dir() {
            out.dir(&e.rel, meta)
        } else if ft.is_file() {
            out.file(&e.rel, &meta, &mut e.open()?).map(|_| ())
        } else if ft.is_symlink() {
            out.symlink(&e.rel, &e.read_link()?, &meta)
        } else {
            let kind = if ft.is_fifo() {
                FileType::Fifo
            } else if ft.is_socket() {
                FileType::Socket
            } else if ft.is_char_device() {
                FileType::CharacterDevice
            } else {
                FileType::BlockDevice
            };
            out.node(&e.rel, kind, e.meta.rdev(), &meta)
        }
    })?;
    out.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::symlink;

    #[test]
    #[ignore = "root tier: needs root; scripts/test.sh runs it (--run-ignored all)"]
    fn resolves_inside_the_root_and_never_follows_below() {
        let d = tempfile::tempdir().unwrap();
        let (root, host) = (d.path().join("root"), d.path().join("host"));
        fs::create_dir_all(root.join("usr/bin")).unwrap();
        fs::create_dir_all(&host).unwrap();
        fs::write(host.join("secret"), "host").unwrap();
        fs::write(root.join("usr/bin/sh"), "inside").unwrap();
        symlink("usr/bin", root.join("bin")).unwrap();
        symlink("/../../../..", root.join("up")).unwrap();
        symlink(&host, root.join("out")).unwrap();
        let r = InRoot::open(&root).unwrap();
        let fd = r
            .open_path(Path::new("/up/bin/sh"), OFlags::RDONLY)
            .unwrap();
        assert_eq!(io::read_to_string(File::from(fd)).unwrap(), "inside");
        // An absolute symlink to a host path leads to that path inside the root.
        assert!(r
            .open_path(&Path::new("/out").join("secret"), OFlags::RDONLY)
            .is_err());
        // A walk lists a symlink as a symlink and never goes through it.
        let mut seen = Vec::new();
        walk(r.fd(), &mut |e| {
            assert!(
                e.rel.components().count() == 1 || !e.rel.starts_with("out"),
                "walked through a symlink: {e:?}"
            );
            seen.push(e.rel.display().to_string());
            Ok(())
        })
        .unwrap();
        // In path order, each directory before its content.
        assert_eq!(seen, ["bin", "out", "up", "usr", "usr/bin", "usr/bin/sh"]);
        // Writing through a symlink is refused; a symlink in the way of an entry goes.
        let dest = r.open_path(Path::new("/"), OFlags::PATH).unwrap();
        let mut x = Extract::new(dest);
        let meta = Meta {
            mode: 0o644,
            ..Meta::default()
        };
        let e = x
            .file(Path::new("out/evil"), &meta, &mut &b"x"[..])
            .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::PermissionDenied, "{e}");
        x.dir(Path::new("out"), meta.clone()).unwrap();
        x.file(Path::new("out/new/f"), &meta, &mut &b"x"[..])
            .unwrap();
        x.finish().unwrap();
        assert_eq!(fs::read_dir(&host).unwrap().count(), 1);
        assert_eq!(fs::read(root.join("out/new/f")).unwrap(), b"x");
    }

    #[test]
    fn copies_trees() {
        let d = tempfile::tempdir().unwrap();
        let (a, b) = (d.path().join("a"), d.path().join("b"));
        fs::create_dir_all(a.join("sub")).unwrap();
        fs::create_dir(&b).unwrap();
        fs::write(a.join("sub/f"), "data").unwrap();
        symlink("/etc", a.join("sub/l")).unwrap();
        rustix::fs::mkfifoat(CWD, a.join("p"), Mode::from_raw_mode(0o640)).unwrap();
        let src = InRoot::open(&a).unwrap();
        let dst = InRoot::open(&b).unwrap();
        copy_tree(src.fd(), dst.root).unwrap();
        assert_eq!(fs::read(b.join("sub/f")).unwrap(), b"data");
        assert_eq!(fs::read_link(b.join("sub/l")).unwrap(), Path::new("/etc"));
        let m = fs::symlink_metadata(b.join("p")).unwrap();
        assert!(m.file_type().is_fifo());
        assert_eq!(m.mode() & 0o777, 0o640);
        remove_at(dst_fd(&b).as_fd(), OsStr::new("sub")).unwrap();
        assert!(!b.join("sub").exists());
    }

    fn dst_fd(p: &Path) -> OwnedFd {
        openat(CWD, p, OFlags::PATH | OFlags::DIRECTORY, Mode::empty()).unwrap()
    }
}
