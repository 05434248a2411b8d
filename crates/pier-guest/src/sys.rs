//! Thin, checked wrappers over the system calls the agent makes, and the agent's error
//! type: what it was doing, and the system's answer.

use std::ffi::CString;
use std::fmt;
use std::io::{self, Write};
use std::os::fd::RawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// A failed step of the agent: what it was doing, and why it failed.
#[derive(Debug)]
pub struct Error {
    pub what: String,
    pub source: io::Error,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.what, errno_text(&self.source))
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

pub type Result<T> = std::result::Result<T, Error>;

/// An error as Go (and so Docker) spells it: `permission denied`, not
/// `Permission denied (os error 13)`.
pub fn errno_text(e: &io::Error) -> String {
    let text = e.to_string();
    let text = match text.rfind(" (os error ") {
        Some(i) if e.raw_os_error().is_some() => &text[..i],
        _ => &text,
    };
    let mut chars = text.chars();
    match chars.next() {
        Some(c) => c.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// Adds what the agent was doing to an [`io::Error`].
pub trait Context<T> {
    fn ctx(self, what: impl FnOnce() -> String) -> Result<T>;
}

impl<T> Context<T> for io::Result<T> {
    fn ctx(self, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|source| Error {
            what: what(),
            source,
        })
    }
}

/// An error that is not a system call's.
pub fn other(what: impl Into<String>, why: impl Into<String>) -> Error {
    Error {
        what: what.into(),
        source: io::Error::other(why.into()),
    }
}

/// `r` as a result: the errno when negative.
pub fn check(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

pub fn cstr(s: &str) -> io::Result<CString> {
    CString::new(s).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a NUL byte"))
}

pub fn cpath(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a NUL byte in a path"))
}

/// mount(2).
pub fn mount(
    source: &str,
    target: &Path,
    fstype: &str,
    flags: libc::c_ulong,
    data: &str,
) -> io::Result<()> {
    let (s, t, f, d) = (cstr(source)?, cpath(target)?, cstr(fstype)?, cstr(data)?);
    // SAFETY: all four are valid NUL-terminated strings that outlive the call.
    check(unsafe {
        libc::mount(
            s.as_ptr(),
            t.as_ptr(),
            f.as_ptr(),
            flags,
            if data.is_empty() {
                std::ptr::null()
            } else {
                d.as_ptr().cast()
            },
        )
    })
    .map(drop)
}

/// Detaches the mount at `target` (lazily, so a busy one goes too).
pub fn umount(target: &Path) -> io::Result<()> {
    let t = cpath(target)?;
    // SAFETY: a valid path string.
    check(unsafe { libc::umount2(t.as_ptr(), libc::MNT_DETACH) }).map(drop)
}

/// Sets or clears `O_NONBLOCK` on `fd`.
pub fn set_nonblocking(fd: RawFd, on: bool) -> io::Result<()> {
    // SAFETY: fcntl on a descriptor the caller owns, integer arguments only.
    let flags = check(unsafe { libc::fcntl(fd, libc::F_GETFL) })?;
    let flags = if on {
        flags | libc::O_NONBLOCK
    } else {
        flags & !libc::O_NONBLOCK
    };
    // SAFETY: as above.
    check(unsafe { libc::fcntl(fd, libc::F_SETFL, flags) }).map(drop)
}

/// Writes a line to the VM's console (the serial port the host keeps as its console
/// log), whatever state the agent is in.
pub fn console(msg: &str) {
    let line = format!("pier-guest: {msg}\n");
    match std::fs::OpenOptions::new().write(true).open("/dev/console") {
        Ok(mut f) => {
            let _ = f.write_all(line.as_bytes());
        }
        Err(_) => {
            let _ = io::stderr().write_all(line.as_bytes());
        }
    }
}

/// Syncs the filesystems and powers the VM off. PID 1 must never exit: the kernel
/// would panic.
pub fn power_off() -> ! {
    // SAFETY: sync and reboot take no pointers; reboot only returns on failure.
    unsafe {
        libc::sync();
        libc::reboot(libc::RB_POWER_OFF);
    }
    // Not PID 1 (a test run) or not allowed: leave the ordinary way.
    std::process::exit(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_read_as_docker_writes_them() {
        let e = io::Error::from_raw_os_error(libc::EACCES);
        assert_eq!(errno_text(&e), "permission denied");
        let e = Error {
            what: "making /x".into(),
            source: io::Error::from_raw_os_error(libc::EEXIST),
        };
        assert_eq!(e.to_string(), "making /x: file exists");
        assert_eq!(errno_text(&io::Error::other("Odd")), "odd");
    }
}
