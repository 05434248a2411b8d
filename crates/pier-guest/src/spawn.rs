//! Starting a session's process inside the instance's root: fork; in the child a new
//! session (with its terminal as the controlling one), chroot, working directory,
//! groups and user, the program found on the process's own PATH as Docker does, then
//! execve. A child that fails tells the agent why over a close-on-exec pipe, so the
//! host gets Docker's code (127 not found, 126 cannot run, 125 anything else).
//!
//! The agent is single-threaded, so the child may allocate between fork and exec.

use std::ffi::CString;
use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use pier_guest::{Failed, ProcessConfig};

use crate::sys::{self, cstr};

/// The PATH Docker uses when the image's environment has none.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// A started process and the agent's ends of its stdio.
pub struct Spawned {
    pub pid: libc::pid_t,
    /// Where its standard input goes (a pipe, or the terminal's master); `None` when
    /// it reads /dev/null.
    pub stdin: Option<OwnedFd>,
    /// Its standard output (or the terminal's master).
    pub stdout: OwnedFd,
    /// Its standard error; `None` with a terminal.
    pub stderr: Option<OwnedFd>,
    /// The terminal's master, for resizes.
    pub master: Option<OwnedFd>,
}

/// The program `name` names, searched as Go's `exec.LookPath` (which runc uses) does:
/// a name with a `/` is taken as is; else the first entry of `path` (an empty entry
/// being the working directory) where `is_executable` says yes.
pub fn look_path(name: &str, path: &str, is_executable: impl Fn(&Path) -> bool) -> Option<PathBuf> {
    if name.contains('/') {
        return Some(PathBuf::from(name));
    }
    path.split(':')
        .map(|dir| Path::new(if dir.is_empty() { "." } else { dir }).join(name))
        .find(|p| is_executable(p))
}

/// A regular file with an execute bit, as `exec.LookPath` checks.
fn is_executable(p: &Path) -> bool {
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The PATH in a `KEY=value` environment, or Docker's default.
pub fn env_path(env: &[String]) -> &str {
    env.iter()
        .rev()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or(DEFAULT_PATH)
}

/// Docker's exit code for an execve that failed with `errno`: 127 when the file (or
/// its interpreter) is missing, 126 when it cannot be run.
pub fn exec_error_code(errno: i32) -> i32 {
    match errno {
        libc::ENOENT | libc::ENOTDIR => 127,
        _ => 126,
    }
}

/// The exit code of a wait status: the process's own, or 128 + the signal that ended it.
pub fn exit_code(status: libc::c_int) -> i32 {
    if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else if libc::WIFSIGNALED(status) {
        128 + libc::WTERMSIG(status)
    } else {
        255
    }
}

fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills the two-element array.
    sys::check(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) })?;
    // SAFETY: two fresh descriptors nothing else owns.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// A new terminal in the devpts at `pts` (the instance's): its master and slave.
fn open_pty(pts: &Path, size: Option<(u16, u16)>) -> io::Result<(OwnedFd, OwnedFd)> {
    let master: OwnedFd = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY)
        .open(pts.join("ptmx"))?
        .into();
    let mut unlock: libc::c_int = 0;
    // SAFETY: TIOCSPTLCK reads an int.
    sys::check(unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSPTLCK, &mut unlock) })?;
    let mut n: libc::c_uint = 0;
    // SAFETY: TIOCGPTN writes an unsigned int.
    sys::check(unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCGPTN, &mut n) })?;
    let slave: OwnedFd = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY)
        .open(pts.join(n.to_string()))?
        .into();
    if let Some((rows, cols)) = size {
        resize(&master, rows, cols)?;
    }
    Ok((master, slave))
}

/// Sets a terminal's size (its foreground process group gets SIGWINCH).
pub fn resize(master: &OwnedFd, rows: u16, cols: u16) -> io::Result<()> {
    let ws = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads a winsize.
    sys::check(unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &ws) }).map(drop)
}

fn failed(code: i32, message: impl Into<String>) -> Failed {
    Failed {
        code,
        message: message.into(),
    }
}

/// Starts `p` inside `root`. Its stdio ends on the agent's side are non-blocking.
pub fn spawn(root: &Path, p: &ProcessConfig) -> Result<Spawned, Failed> {
    let arg0 = p
        .args
        .first()
        .ok_or_else(|| failed(125, "no command given: the process has no arguments"))?;
    let c = |s: &str| cstr(s).map_err(|_| failed(125, format!("{s:?} has a NUL byte")));
    let args = p.args.iter().map(|a| c(a)).collect::<Result<Vec<_>, _>>()?;
    let env = p.env.iter().map(|e| c(e)).collect::<Result<Vec<_>, _>>()?;
    let root_c = sys::cpath(root).map_err(|_| failed(125, "the root path has a NUL byte"))?;
    let cwd = if p.cwd.is_empty() { "/" } else { &p.cwd };
    fn setup(what: &'static str) -> impl Fn(io::Error) -> Failed {
        move |e| failed(125, format!("{what}: {}", sys::errno_text(&e)))
    }

    let (err_r, err_w) = pipe().map_err(setup("making a pipe"))?;
    // (child's end, agent's end) of each stream.
    let mut master = None;
    let (child_in, child_out, child_err, our_in, our_out, our_err): (
        OwnedFd,
        OwnedFd,
        Option<OwnedFd>,
        Option<OwnedFd>,
        OwnedFd,
        Option<OwnedFd>,
    );
    if p.tty {
        let (m, s) = open_pty(&root.join("dev/pts"), p.size)
            .map_err(setup("making a terminal in the instance's /dev/pts"))?;
        our_in = if p.stdin {
            Some(m.try_clone().map_err(setup("duplicating the terminal"))?)
        } else {
            None
        };
        our_out = m.try_clone().map_err(setup("duplicating the terminal"))?;
        our_err = None;
        child_in = s.try_clone().map_err(setup("duplicating the terminal"))?;
        child_out = s;
        child_err = None;
        master = Some(m);
    } else {
        if p.stdin {
            let (r, w) = pipe().map_err(setup("making the stdin pipe"))?;
            child_in = r;
            our_in = Some(w);
        } else {
            child_in = File::open("/dev/null")
                .map_err(setup("opening /dev/null"))?
                .into();
            our_in = None;
        }
        let (r, w) = pipe().map_err(setup("making the stdout pipe"))?;
        child_out = w;
        our_out = r;
        let (r, w) = pipe().map_err(setup("making the stderr pipe"))?;
        child_err = Some(w);
        our_err = Some(r);
    }

    // SAFETY: the agent is single-threaded, so the child is a whole copy of it.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(setup("fork")(io::Error::last_os_error()));
    }
    if pid == 0 {
        let fds = ChildFds {
            stdin: child_in.as_raw_fd(),
            stdout: child_out.as_raw_fd(),
            stderr: child_err
                .as_ref()
                .map_or(child_out.as_raw_fd(), |f| f.as_raw_fd()),
            tty: p.tty,
        };
        let (code, message) = child(&fds, &root_c, cwd, p, arg0, &args, &env);
        let mut out = code.to_le_bytes().to_vec();
        out.extend_from_slice(message.as_bytes());
        // SAFETY: writing a live buffer to the error pipe, then leaving without running
        // the agent's destructors or atexit handlers.
        unsafe {
            libc::write(err_w.as_raw_fd(), out.as_ptr().cast(), out.len());
            libc::_exit(code);
        }
    }
    drop((child_in, child_out, child_err, err_w));
    let mut report = Vec::new();
    let _ = File::from(err_r).read_to_end(&mut report);
    if report.len() >= 4 {
        let code = i32::from_le_bytes(report[..4].try_into().expect("4 bytes"));
        let mut status = 0;
        // SAFETY: reaping the child that just failed.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        return Err(failed(code, String::from_utf8_lossy(&report[4..])));
    }
    for fd in [our_in.as_ref(), Some(&our_out), our_err.as_ref()]
        .into_iter()
        .flatten()
    {
        sys::set_nonblocking(fd.as_raw_fd(), true).map_err(setup("O_NONBLOCK"))?;
    }
    Ok(Spawned {
        pid,
        stdin: our_in,
        stdout: our_out,
        stderr: our_err,
        master,
    })
}

struct ChildFds {
    stdin: RawFd,
    stdout: RawFd,
    stderr: RawFd,
    tty: bool,
}

/// The child's side of [`spawn`]: returns only on failure, with the code and message.
fn child(
    fds: &ChildFds,
    root: &CString,
    cwd: &str,
    p: &ProcessConfig,
    arg0: &str,
    args: &[CString],
    env: &[CString],
) -> (i32, String) {
    let os = |what: &str| format!("{what}: {}", sys::errno_text(&io::Error::last_os_error()));
    // SAFETY: plain system calls on this process's own state, with pointers to live
    // values; the process is single-threaded.
    unsafe {
        let mut none: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut none);
        libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
        // Rust ignores SIGPIPE; an ignored signal stays ignored across execve.
        for sig in 1..libc::SIGRTMIN() {
            libc::signal(sig, libc::SIG_DFL);
        }
        if libc::setsid() < 0 {
            return (125, os("setsid"));
        }
        if fds.tty && libc::ioctl(fds.stdout, libc::TIOCSCTTY, 0) < 0 {
            return (125, os("making the terminal the controlling one"));
        }
        for (from, to) in [(fds.stdin, 0), (fds.stdout, 1), (fds.stderr, 2)] {
            if libc::dup2(from, to) < 0 {
                return (125, os("setting up stdio"));
            }
        }
        if libc::chroot(root.as_ptr()) < 0 {
            return (125, os("chroot into the instance's root"));
        }
        if libc::chdir(c"/".as_ptr()) < 0 {
            return (125, os("chdir /"));
        }
    }
    // runc makes a missing working directory; so does the agent, as root.
    let _ = std::fs::create_dir_all(cwd);
    let Ok(cwd_c) = cstr(cwd) else {
        return (125, format!("the working directory {cwd:?} has a NUL byte"));
    };
    // SAFETY: as above.
    unsafe {
        if libc::chdir(cwd_c.as_ptr()) < 0 {
            return (125, os(&format!("chdir to the working directory {cwd}")));
        }
        if libc::setgroups(p.additional_gids.len(), p.additional_gids.as_ptr()) < 0 {
            return (125, os("setgroups"));
        }
        if libc::setgid(p.gid) < 0 {
            return (125, os(&format!("setgid {}", p.gid)));
        }
        if libc::setuid(p.uid) < 0 {
            return (125, os(&format!("setuid {}", p.uid)));
        }
    }
    let Some(prog) = look_path(arg0, env_path(&p.env), is_executable) else {
        return (
            127,
            format!("exec: \"{arg0}\": executable file not found in $PATH"),
        );
    };
    let Ok(prog_c) = sys::cpath(&prog) else {
        return (127, format!("exec: \"{arg0}\": a NUL byte"));
    };
    let mut argv: Vec<*const libc::c_char> = args.iter().map(|a| a.as_ptr()).collect();
    argv.push(std::ptr::null());
    let mut envp: Vec<*const libc::c_char> = env.iter().map(|e| e.as_ptr()).collect();
    envp.push(std::ptr::null());
    // SAFETY: NULL-terminated arrays of live strings; execve returns only on failure.
    unsafe { libc::execve(prog_c.as_ptr(), argv.as_ptr(), envp.as_ptr()) };
    let e = io::Error::last_os_error();
    let errno = e.raw_os_error().unwrap_or(0);
    (
        exec_error_code(errno),
        format!("exec: \"{arg0}\": {}", sys::errno_text(&e)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_program_is_looked_up_on_path_like_docker() {
        let exists = |p: &Path| p == Path::new("/usr/bin/sh") || p == Path::new("./tool");
        assert_eq!(
            look_path("sh", "/usr/local/bin:/usr/bin:/bin", exists),
            Some(PathBuf::from("/usr/bin/sh"))
        );
        assert_eq!(look_path("sh", "/bin", exists), None);
        // An empty entry is the working directory.
        assert_eq!(
            look_path("tool", "/bin::/sbin", exists),
            Some(PathBuf::from("./tool"))
        );
        // A name with a slash is not searched.
        assert_eq!(look_path("./x", "/bin", exists), Some(PathBuf::from("./x")));
        assert_eq!(
            look_path("/no/such", "/bin", exists),
            Some(PathBuf::from("/no/such"))
        );
    }

    #[test]
    fn the_path_comes_from_the_process_env_or_dockers_default() {
        let env = vec!["A=1".to_string(), "PATH=/x:/y".to_string()];
        assert_eq!(env_path(&env), "/x:/y");
        assert_eq!(env_path(&["HOME=/".to_string()]), DEFAULT_PATH);
    }

    #[test]
    fn exec_errors_and_wait_statuses_map_to_dockers_codes() {
        assert_eq!(exec_error_code(libc::ENOENT), 127);
        assert_eq!(exec_error_code(libc::ENOTDIR), 127);
        assert_eq!(exec_error_code(libc::EACCES), 126);
        assert_eq!(exec_error_code(libc::ENOEXEC), 126);
        assert_eq!(exit_code(3 << 8), 3);
        assert_eq!(exit_code(0), 0);
        assert_eq!(exit_code(libc::SIGKILL), 137);
        assert_eq!(exit_code(libc::SIGTERM | 0x80), 143); // with a core dump
    }

    #[test]
    fn a_real_executable_is_found_and_a_plain_file_is_not() {
        let dir = std::env::temp_dir().join(format!("pier-guest-path-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("a")).unwrap();
        std::fs::create_dir_all(dir.join("b/prog")).unwrap(); // a directory is skipped
        std::fs::create_dir_all(dir.join("c")).unwrap();
        std::fs::write(dir.join("a/prog"), "").unwrap(); // not executable: skipped
        std::fs::write(dir.join("c/prog"), "").unwrap();
        std::fs::set_permissions(dir.join("c/prog"), std::fs::Permissions::from_mode(0o755))
            .unwrap();
        let path = format!("{0}/a:{0}/b:{0}/c", dir.display());
        assert_eq!(
            look_path("prog", &path, is_executable),
            Some(dir.join("c/prog"))
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
