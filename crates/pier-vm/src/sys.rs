//! Small host helpers shared by the modules: atomic file writes, descriptor flags, poll.

use std::io::{self, Write};
use std::os::fd::RawFd;
use std::path::Path;

/// Writes `bytes` to a temporary name beside `path` and renames it over `path`: a crash
/// leaves the old file or the new one, never half of one.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::other(format!("{} names no file", path.display())))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".tmp{}", std::process::id()));
    let tmp = path.with_file_name(tmp_name);
    let result = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Waits for events on `fds` (`timeout_ms` < 0: forever); EINTR counts as no event.
pub fn poll(fds: &mut [libc::pollfd], timeout_ms: i32) -> io::Result<()> {
    // SAFETY: `fds` is a valid array of pollfd for its length.
    let r = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout_ms) };
    if r < 0 {
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
        for f in fds.iter_mut() {
            f.revents = 0;
        }
    }
    Ok(())
}

pub fn pollfd(fd: RawFd, events: i16) -> libc::pollfd {
    libc::pollfd {
        fd,
        events,
        revents: 0,
    }
}

/// Writes all of `bytes` to `fd` (blocking), ignoring a reader that has gone.
pub fn write_fd(fd: RawFd, mut bytes: &[u8]) -> io::Result<()> {
    while !bytes.is_empty() {
        // SAFETY: writing from a valid buffer to a descriptor the caller owns.
        let n = unsafe { libc::write(fd, bytes.as_ptr().cast(), bytes.len()) };
        if n < 0 {
            let e = io::Error::last_os_error();
            match e.kind() {
                io::ErrorKind::Interrupted => continue,
                io::ErrorKind::WouldBlock => {
                    let mut p = [pollfd(fd, libc::POLLOUT)];
                    poll(&mut p, -1)?;
                    continue;
                }
                _ => return Err(e),
            }
        }
        bytes = &bytes[n as usize..];
    }
    Ok(())
}

/// Reads what `fd` has (one read); `Ok(0)` at its end.
pub fn read_fd(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        // SAFETY: reading into a valid buffer from a descriptor the caller owns.
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        if n >= 0 {
            return Ok(n as usize);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// The last `lines` lines of a text file (empty when it cannot be read); of a kernel
/// log that ends in a panic, the panic's line and the lines before it instead (the call
/// trace after it says less).
pub fn tail(path: &Path, lines: usize) -> String {
    let Ok(bytes) = std::fs::read(path) else {
        return String::new();
    };
    let text = String::from_utf8_lossy(&bytes);
    let all: Vec<&str> = text
        .lines()
        .map(|l| l.trim_end_matches('\r'))
        .filter(|l| !l.trim().is_empty())
        .collect();
    let end = all
        .iter()
        .rposition(|l| l.contains("Kernel panic"))
        .map_or(all.len(), |i| i + 1);
    let start = end.saturating_sub(if end < all.len() { 4 } else { lines });
    all[start..end].join("\n")
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_panic_is_quoted_rather_than_its_call_trace() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("console.log");
        std::fs::write(&p, "a\r\nb\n\nc\n").unwrap();
        assert_eq!(super::tail(&p, 2), "b\nc");
        std::fs::write(
            &p,
            "x\ny\nKernel panic - not syncing: No working init found\nCall Trace:\n dump\n",
        )
        .unwrap();
        assert_eq!(
            super::tail(&p, 12),
            "x\ny\nKernel panic - not syncing: No working init found"
        );
        assert_eq!(super::tail(&dir.path().join("none"), 3), "");
    }
}
