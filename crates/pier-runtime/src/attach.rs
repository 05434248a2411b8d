//! The attach protocol between a monitor (or an exec helper) and the daemon, over the
//! monitor's unix socket `attach.sock`: frames of `[kind u8][length u32 BE][payload]`.
//!
//! To the container: `STDIN` data, `RESIZE` (rows u16 BE, cols u16 BE), `CLOSE_STDIN`.
//! From it: `STDOUT` and `STDERR` data (a TTY's output is all `STDOUT`). The monitor
//! replays what the container wrote before the first client attached, so `pier run -it`
//! sees the first prompt even though it attaches after the start.
//!
//! The monitor's second socket, `control.sock`, takes the same frames for requests that
//! are not a terminal's: `SIGNAL` (signal number i32 BE), answered by `SIGNALED` (0 when
//! delivered, else the errno, i32 BE). The monitor delivers signals through a pidfd of the
//! container's init, which it keeps: no pid can be reused under it, and no cgroup needs
//! to be found first.

/// The socket's name in the container's directory.
pub const SOCKET: &str = "attach.sock";
/// The control socket's name in the container's directory.
pub const CONTROL_SOCKET: &str = "control.sock";

/// Connects to the attach socket in `dir`, whatever the length of its path (socket
/// addresses are limited to 108 bytes, so it goes through the directory's descriptor).
pub fn connect(dir: &std::path::Path) -> std::io::Result<std::os::unix::net::UnixStream> {
    connect_to(dir, SOCKET)
}

/// Connects to the socket `name` in `dir`, whatever the length of its path.
pub fn connect_to(
    dir: &std::path::Path,
    name: &str,
) -> std::io::Result<std::os::unix::net::UnixStream> {
    let d = std::fs::File::open(dir)?;
    let path = format!(
        "/proc/self/fd/{}/{name}",
        std::os::fd::AsRawFd::as_raw_fd(&d)
    );
    let s = std::os::unix::net::UnixStream::connect(path)?;
    drop(d);
    Ok(s)
}

pub const STDIN: u8 = 0;
pub const STDOUT: u8 = 1;
pub const STDERR: u8 = 2;
pub const RESIZE: u8 = 3;
pub const CLOSE_STDIN: u8 = 4;
/// To the monitor's control socket: deliver this signal (i32 BE) to the container's init.
pub const SIGNAL: u8 = 5;
/// From the control socket: what came of a `SIGNAL` (0, or the errno; i32 BE).
pub const SIGNALED: u8 = 6;

/// Why a signal did not reach a container through its monitor.
#[derive(Debug, thiserror::Error)]
pub enum SignalError {
    /// The container's init has ended (the monitor answered `ESRCH`).
    #[error("the container has exited")]
    Exited,
    /// No monitor answers on the control socket (it died, or predates the socket).
    #[error("the container's monitor does not answer")]
    NoMonitor(#[source] std::io::Error),
    /// The kernel refused the signal.
    #[error("the signal was refused")]
    Refused(#[source] std::io::Error),
}

/// Asks the monitor of the container in `dir` to send `signal` to the container's init,
/// and waits for its answer.
pub fn send_signal(dir: &std::path::Path, signal: i32) -> Result<(), SignalError> {
    use std::io::{Read, Write};
    let mut s = connect_to(dir, CONTROL_SOCKET).map_err(SignalError::NoMonitor)?;
    let limit = Some(std::time::Duration::from_secs(5));
    let io = |r: std::io::Result<()>| r.map_err(SignalError::NoMonitor);
    io(s.set_read_timeout(limit))?;
    io(s.set_write_timeout(limit))?;
    io(s.write_all(&frame(SIGNAL, &signal.to_be_bytes())))?;
    let mut answer = [0u8; 9];
    io(s.read_exact(&mut answer))?;
    let errno = i32::from_be_bytes([answer[5], answer[6], answer[7], answer[8]]);
    match (answer[0], errno) {
        (SIGNALED, 0) => Ok(()),
        (SIGNALED, libc::ESRCH) => Err(SignalError::Exited),
        (SIGNALED, e) => Err(SignalError::Refused(std::io::Error::from_raw_os_error(e))),
        (kind, _) => Err(SignalError::NoMonitor(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("the monitor answered with a frame of kind {kind}"),
        ))),
    }
}

/// The most a frame may carry.
pub const MAX_FRAME: usize = 1 << 20;

pub fn frame(kind: u8, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(5 + payload.len());
    v.push(kind);
    v.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    v.extend_from_slice(payload);
    v
}

pub fn resize(rows: u16, cols: u16) -> Vec<u8> {
    let mut p = rows.to_be_bytes().to_vec();
    p.extend_from_slice(&cols.to_be_bytes());
    frame(RESIZE, &p)
}

/// Applies a `RESIZE` payload (rows u16 BE, cols u16 BE) to a terminal.
pub fn apply_resize(tty: std::os::fd::BorrowedFd<'_>, payload: &[u8]) {
    let [r0, r1, c0, c1] = payload else { return };
    let ws = rustix::termios::Winsize {
        ws_row: u16::from_be_bytes([*r0, *r1]),
        ws_col: u16::from_be_bytes([*c0, *c1]),
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    let _ = rustix::termios::tcsetwinsize(tty, ws);
}

/// Takes every complete frame off the front of `buf`.
pub fn parse(buf: &mut Vec<u8>) -> Result<Vec<(u8, Vec<u8>)>, String> {
    let mut out = Vec::new();
    loop {
        if buf.len() < 5 {
            return Ok(out);
        }
        let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
        if len > MAX_FRAME {
            return Err(format!("an attach frame of {len} bytes is too large"));
        }
        if buf.len() < 5 + len {
            return Ok(out);
        }
        let kind = buf[0];
        let payload = buf[5..5 + len].to_vec();
        buf.drain(..5 + len);
        out.push((kind, payload));
    }
}

/// The 8-byte header Docker puts before each chunk of a multiplexed (non-TTY) stream.
pub fn docker_header(stream: u8, len: usize) -> [u8; 8] {
    let l = (len as u32).to_be_bytes();
    [stream, 0, 0, 0, l[0], l[1], l[2], l[3]]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_in_pieces() {
        let mut wire = frame(STDIN, b"hello");
        wire.extend(resize(40, 120));
        wire.extend(frame(CLOSE_STDIN, b""));
        let mut buf = Vec::new();
        let mut got = Vec::new();
        for chunk in wire.chunks(3) {
            buf.extend_from_slice(chunk);
            got.extend(parse(&mut buf).unwrap());
        }
        assert!(buf.is_empty());
        assert_eq!(
            got,
            vec![
                (STDIN, b"hello".to_vec()),
                (RESIZE, vec![0, 40, 0, 120]),
                (CLOSE_STDIN, vec![])
            ]
        );
        let mut huge = vec![STDIN, 0xff, 0xff, 0xff, 0xff];
        assert!(parse(&mut huge).is_err());
        assert_eq!(docker_header(2, 258), [2, 0, 0, 0, 0, 0, 1, 2]);
    }
}
