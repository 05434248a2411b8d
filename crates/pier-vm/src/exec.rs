//! `pier __vm-exec DIR REQUEST`: runs a command in a running VM (`pier exec`), as Pier's
//! container exec helper does for a container, so the engine drives both alike.
//!
//! REQUEST is a [`pier_guest::ProcessConfig`] as JSON. The helper connects to
//! `DIR/vm-exec.sock` (served by that VM's `pier __vm`), which gives the command a session
//! of its own with the guest agent. Its stdin carries [`pier_runtime::attach`] frames
//! (`STDIN`, `RESIZE`, `CLOSE_STDIN`) when the command has a terminal or keeps its input
//! (`stdin`), else nothing is read; the command's output goes raw to stdout (a terminal's
//! all of it) and stderr; the helper exits with the command's code (when it cannot
//! start: its message on stderr, and 125, 126 or 127).
//!
//! On `vm-exec.sock` both ways are [`pier_guest::Frame`]s with session 0 standing for the
//! client's own session: `Exec` first, then `Stdin`, `StdinEof`, `Resize`; back come
//! `Started` or `Failed`, `Stdout`, `Stderr` and `Exit`.

use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::Path;

use pier_guest::{Decoder, Frame, Kind, ProcessConfig};
use pier_runtime::attach;

use crate::config::EXEC_SOCKET;
use crate::sys::{poll, pollfd, read_fd, write_fd};

fn die(code: i32, msg: impl std::fmt::Display) -> i32 {
    eprintln!("pier exec: {msg}");
    code
}

/// Connects to `DIR/vm-exec.sock` whatever the length of DIR's path (through the
/// directory's descriptor: a socket address holds at most 108 bytes).
pub fn connect(dir: &Path) -> io::Result<UnixStream> {
    let d = std::fs::File::open(dir)?;
    UnixStream::connect(format!("/proc/self/fd/{}/{EXEC_SOCKET}", d.as_raw_fd()))
}

/// `pier __vm-exec DIR REQUEST`: the command's exit code.
pub fn main(dir: &Path, request: &str) -> i32 {
    pier_runtime::sealed::name_process();
    let req: ProcessConfig = match serde_json::from_str(request) {
        Ok(r) => r,
        Err(e) => return die(125, format!("invalid request: {e}")),
    };
    let mut sock = match connect(dir) {
        Ok(s) => s,
        Err(e) => {
            return die(
                125,
                format!("the VM is not running (cannot connect to its {EXEC_SOCKET}: {e})"),
            )
        }
    };
    let interactive = req.tty || req.stdin;
    if let Err(e) = Frame::json(Kind::Exec, 0, &req).write_to(&mut sock) {
        return die(125, format!("the VM's helper does not answer: {e}"));
    }
    relay(sock, interactive)
}

fn relay(mut sock: UnixStream, interactive: bool) -> i32 {
    let mut buf = vec![0u8; 64 * 1024];
    let mut inbuf = Vec::new();
    let mut decoder = Decoder::default();
    let mut input_open = interactive;
    loop {
        let mut fds = vec![pollfd(sock.as_raw_fd(), libc::POLLIN)];
        if input_open {
            fds.push(pollfd(0, libc::POLLIN));
        }
        if let Err(e) = poll(&mut fds, -1) {
            return die(125, format!("poll: {e}"));
        }
        if fds.get(1).is_some_and(|f| f.revents != 0) {
            match read_fd(0, &mut buf) {
                Ok(0) | Err(_) => {
                    input_open = false;
                    let _ = Frame::new(Kind::StdinEof, 0, Vec::new()).write_to(&mut sock);
                }
                Ok(n) => {
                    inbuf.extend_from_slice(&buf[..n]);
                    let frames = match attach::parse(&mut inbuf) {
                        Ok(f) => f,
                        Err(e) => return die(125, e),
                    };
                    for (kind, payload) in frames {
                        let f = match kind {
                            attach::STDIN => Frame::new(Kind::Stdin, 0, payload),
                            attach::CLOSE_STDIN => Frame::new(Kind::StdinEof, 0, Vec::new()),
                            attach::RESIZE => match payload.as_slice() {
                                [r0, r1, c0, c1] => Frame::resize(
                                    0,
                                    u16::from_be_bytes([*r0, *r1]),
                                    u16::from_be_bytes([*c0, *c1]),
                                ),
                                _ => continue,
                            },
                            _ => continue,
                        };
                        let _ = f.write_to(&mut sock);
                    }
                }
            }
        }
        if fds[0].revents != 0 {
            let n = match sock.read(&mut buf) {
                Ok(0) | Err(_) => {
                    return die(255, "the VM stopped before the command's exit");
                }
                Ok(n) => n,
            };
            decoder.feed(&buf[..n]);
            loop {
                let f = match decoder.next_frame() {
                    Ok(Some(f)) => f,
                    Ok(None) => break,
                    Err(e) => return die(125, format!("bad frame from the VM's helper: {e}")),
                };
                match f.kind {
                    Kind::Stdout => {
                        let _ = write_fd(1, &f.payload);
                    }
                    Kind::Stderr => {
                        let _ = write_fd(2, &f.payload);
                    }
                    Kind::Exit => {
                        let _ = io::stdout().flush();
                        return f.int_payload().unwrap_or(255);
                    }
                    Kind::Failed => {
                        return match f.parse::<pier_guest::Failed>() {
                            Ok(fail) => die(fail.code, fail.message),
                            Err(e) => die(125, e),
                        }
                    }
                    _ => {}
                }
            }
        }
    }
}
