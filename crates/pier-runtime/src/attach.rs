//! The attach protocol between a monitor (or an exec helper) and the daemon, over the
//! monitor's unix socket `attach.sock`: frames of `[kind u8][length u32 BE][payload]`.
//!
//! To the container: `STDIN` data, `RESIZE` (rows u16 BE, cols u16 BE), `CLOSE_STDIN`.
//! From it: `STDOUT` and `STDERR` data (a TTY's output is all `STDOUT`). The monitor
//! replays what the container wrote before the first client attached, so `pier run -it`
//! sees the first prompt even though it attaches after the start.

/// The socket's name in the container's directory.
pub const SOCKET: &str = "attach.sock";

/// Connects to the attach socket in `dir`, whatever the length of its path (socket
/// addresses are limited to 108 bytes, so it goes through the directory's descriptor).
pub fn connect(dir: &std::path::Path) -> std::io::Result<std::os::unix::net::UnixStream> {
    let d = std::fs::File::open(dir)?;
    let path = format!(
        "/proc/self/fd/{}/{SOCKET}",
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
