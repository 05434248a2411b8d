//! The protocol between Pier's host side of a VM (`pier __vm`, see the `pier-vm` crate)
//! and its guest agent (`pier-guest`, the VM's init), over one virtio-serial port named
//! [`PORT_NAME`].
//!
//! The stream is a sequence of frames: a kind byte, a session number and a payload
//! length (both `u32`, little-endian), then the payload. Session 0 is the instance's
//! main process (its entrypoint); each exec gets a session of its own. Structured
//! payloads are JSON; stream payloads are raw bytes.
//!
//! ```text
//! host                                   guest
//!  <──────────── Ready {version} ───────── (agent up, modules loaded, port open)
//!  ── Run {RunConfig} (session 0) ──────>  mounts, network, files, spawn entrypoint
//!  <──────────── Started {pid} | Failed {code, message}
//!  ── Stdin / StdinEof / Signal / Resize ─>
//!  <──────────── Stdout / Stderr ───────── (any session)
//!  ── Exec {ProcessConfig} (session n) ─>
//!  <──────────── Exit {code} ───────────── (session 0's exit powers the VM off)
//!  ── closes the connection ──────────────>  (after Exit of session 0: "read it all")
//! ```
//!
//! Shutdown: after session 0's `Exit` the agent kills what is left and powers the VM
//! off. When the host may be behind (the port refused writes lately, or much was
//! written lately), it first waits for the host to close its end of the port (up to
//! 10 s). The host should close as soon as it has read that `Exit`: a write
//! to a virtio-serial port returns once the data is queued in the VM, and what the
//! host has not taken when the VM powers off (megabytes, with a slow reader) is lost.
//!
//! The host may also go away and come back at any time (a daemon restart): the agent
//! keeps what it has to send until a client is connected again. A frame the host had
//! half sent when it left is dropped.

use std::io::{self, Read, Write};

use serde::{Deserialize, Serialize};

/// The name of the virtio-serial port the agent speaks on.
pub const PORT_NAME: &str = "pier.agent";
/// The virtiofs tag of the instance's root filesystem.
pub const ROOTFS_TAG: &str = "rootfs";
/// The kernel command line parameter (so the agent's environment variable) by which
/// the host says which kinds of virtio devices the VM has besides its console and root
/// filesystem: `pier_devices=net,block`, `pier_devices=none`. The agent loads only their
/// drivers; without it, it loads every driver it carries.
pub const DEVICES_PARAM: &str = "pier_devices";

/// The protocol's version, sent in [`Ready`].
pub const VERSION: u32 = 1;
/// The largest payload a frame may carry.
pub const MAX_PAYLOAD: usize = 1 << 20;

/// What a frame is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    // host → guest
    /// [`RunConfig`] for session 0: set the VM up and start its main process.
    Run = 1,
    /// [`ProcessConfig`]: start an exec session.
    Exec = 2,
    /// Bytes for the session's standard input.
    Stdin = 3,
    /// Close the session's standard input.
    StdinEof = 4,
    /// A signal (`i32`, little-endian) for the session's process.
    Signal = 5,
    /// A terminal size: rows then columns (`u16` each, little-endian).
    Resize = 6,
    // guest → host
    /// [`Ready`]: the agent is up and waits for [`Kind::Run`].
    Ready = 64,
    /// The session's process runs: its guest pid (`u32`, little-endian).
    Started = 65,
    /// Bytes the session's process wrote to its standard output (or its terminal).
    Stdout = 66,
    /// Bytes the session's process wrote to its standard error.
    Stderr = 67,
    /// The session's process exited: its code (`i32`, little-endian; 128 + the signal
    /// when a signal ended it).
    Exit = 68,
    /// [`Failed`]: the session could not start (or the VM could not be set up).
    Failed = 69,
}

impl Kind {
    pub fn from_u8(b: u8) -> Option<Kind> {
        use Kind::*;
        Some(match b {
            1 => Run,
            2 => Exec,
            3 => Stdin,
            4 => StdinEof,
            5 => Signal,
            6 => Resize,
            64 => Ready,
            65 => Started,
            66 => Stdout,
            67 => Stderr,
            68 => Exit,
            69 => Failed,
            _ => return None,
        })
    }
}

/// One frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub kind: Kind,
    pub session: u32,
    pub payload: Vec<u8>,
}

impl Frame {
    pub fn new(kind: Kind, session: u32, payload: Vec<u8>) -> Frame {
        Frame {
            kind,
            session,
            payload,
        }
    }

    /// A frame whose payload is `value` as JSON.
    pub fn json<T: Serialize>(kind: Kind, session: u32, value: &T) -> Frame {
        Frame::new(
            kind,
            session,
            serde_json::to_vec(value).expect("serializable"),
        )
    }

    /// A frame whose payload is one `i32`.
    pub fn int(kind: Kind, session: u32, v: i32) -> Frame {
        Frame::new(kind, session, v.to_le_bytes().to_vec())
    }

    /// A [`Kind::Resize`] frame.
    pub fn resize(session: u32, rows: u16, cols: u16) -> Frame {
        let mut p = rows.to_le_bytes().to_vec();
        p.extend_from_slice(&cols.to_le_bytes());
        Frame::new(Kind::Resize, session, p)
    }

    /// The payload as JSON.
    pub fn parse<'a, T: Deserialize<'a>>(&'a self) -> io::Result<T> {
        serde_json::from_slice(&self.payload).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("a {:?} frame does not hold what it should: {e}", self.kind),
            )
        })
    }

    /// The payload as one `i32` ([`Kind::Signal`], [`Kind::Exit`], [`Kind::Started`]).
    pub fn int_payload(&self) -> io::Result<i32> {
        let b: [u8; 4] = self
            .payload
            .get(..4)
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| {
                io::Error::new(io::ErrorKind::InvalidData, "a frame is missing its number")
            })?;
        Ok(i32::from_le_bytes(b))
    }

    /// The payload as a terminal size (rows, columns).
    pub fn size_payload(&self) -> io::Result<(u16, u16)> {
        match self.payload.as_slice() {
            [r0, r1, c0, c1, ..] => Ok((
                u16::from_le_bytes([*r0, *r1]),
                u16::from_le_bytes([*c0, *c1]),
            )),
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "a resize frame is too short",
            )),
        }
    }

    /// The frame's bytes on the wire.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(9 + self.payload.len());
        out.push(self.kind as u8);
        out.extend_from_slice(&self.session.to_le_bytes());
        out.extend_from_slice(&(self.payload.len() as u32).to_le_bytes());
        out.extend_from_slice(&self.payload);
        out
    }

    /// Writes the frame whole.
    pub fn write_to(&self, w: &mut impl Write) -> io::Result<()> {
        w.write_all(&self.encode())
    }

    /// Reads one frame; `Ok(None)` at a clean end of the stream.
    pub fn read_from(r: &mut impl Read) -> io::Result<Option<Frame>> {
        let mut head = [0u8; 9];
        let mut got = 0;
        while got < head.len() {
            match r.read(&mut head[got..]) {
                Ok(0) if got == 0 => return Ok(None),
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        let (kind, session, len) = Frame::decode_head(&head)?;
        let mut payload = vec![0u8; len];
        r.read_exact(&mut payload)?;
        Ok(Some(Frame {
            kind,
            session,
            payload,
        }))
    }

    /// Splits a frame's 9-byte head into its kind, session and payload length.
    pub fn decode_head(head: &[u8; 9]) -> io::Result<(Kind, u32, usize)> {
        let kind = Kind::from_u8(head[0]).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("unknown frame kind {}", head[0]),
            )
        })?;
        let session = u32::from_le_bytes(head[1..5].try_into().expect("4 bytes"));
        let len = u32::from_le_bytes(head[5..9].try_into().expect("4 bytes")) as usize;
        if len > MAX_PAYLOAD {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("a frame of {len} bytes is larger than {MAX_PAYLOAD}"),
            ));
        }
        Ok((kind, session, len))
    }
}

/// Incremental decoding of frames from a non-blocking stream: feed bytes as they come,
/// take whole frames out.
#[derive(Debug, Default)]
pub struct Decoder {
    buf: Vec<u8>,
}

impl Decoder {
    pub fn feed(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next whole frame, if the bytes fed so far hold one.
    pub fn next_frame(&mut self) -> io::Result<Option<Frame>> {
        if self.buf.len() < 9 {
            return Ok(None);
        }
        let head: [u8; 9] = self.buf[..9].try_into().expect("9 bytes");
        let (kind, session, len) = Frame::decode_head(&head)?;
        if self.buf.len() < 9 + len {
            return Ok(None);
        }
        let payload = self.buf[9..9 + len].to_vec();
        self.buf.drain(..9 + len);
        Ok(Some(Frame {
            kind,
            session,
            payload,
        }))
    }
}

/// [`Kind::Ready`]'s payload.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Ready {
    pub version: u32,
}

/// [`Kind::Failed`]'s payload: what `docker run` would say and exit with (125 when the
/// VM could not be set up, 126 when the command cannot run, 127 when it is not found).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Failed {
    pub code: i32,
    pub message: String,
}

/// A process to run in the guest (the main one, or an exec).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ProcessConfig {
    pub args: Vec<String>,
    /// `KEY=value` entries.
    pub env: Vec<String>,
    /// The working directory, inside the instance's root filesystem.
    pub cwd: String,
    pub uid: u32,
    pub gid: u32,
    #[serde(default)]
    pub additional_gids: Vec<u32>,
    /// Give it a terminal (stdout carries the terminal's output; there is no stderr).
    #[serde(default)]
    pub tty: bool,
    /// Keep its standard input open for [`Kind::Stdin`] (else it reads /dev/null).
    #[serde(default)]
    pub stdin: bool,
    /// The terminal's first size (rows, columns), with `tty`.
    #[serde(default)]
    pub size: Option<(u16, u16)>,
}

/// A filesystem to mount in the guest, under the instance's root.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct GuestMount {
    /// A virtiofs tag, or a device (`/dev/vdb`).
    pub source: String,
    /// Where, inside the instance's root filesystem.
    pub target: String,
    /// `virtiofs`, `ext4`, ...
    pub fstype: String,
    #[serde(default)]
    pub read_only: bool,
}

/// A file the guest sees at `target` (bind-mounted over what the image has there, or
/// made): `/etc/hosts`, `/etc/resolv.conf`, `/etc/hostname`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct GuestFile {
    pub target: String,
    pub content: String,
}

/// One network interface, in the order the VM's NICs were given (eth0, eth1, ...).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct GuestNic {
    /// As `aa:bb:cc:dd:ee:ff`; the NIC already has it, it finds the interface.
    pub mac: String,
    /// IPv4 address.
    pub address: String,
    pub prefix: u8,
    /// The default route's gateway (on the first NIC that has one).
    #[serde(default)]
    pub gateway: Option<String>,
    #[serde(default)]
    pub mtu: Option<u32>,
}

/// [`Kind::Run`]'s payload: everything the guest sets up before its main process.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct RunConfig {
    pub hostname: String,
    /// The instance's root filesystem: a virtiofs tag ([`ROOTFS_TAG`]).
    pub rootfs: String,
    #[serde(default)]
    pub mounts: Vec<GuestMount>,
    #[serde(default)]
    pub files: Vec<GuestFile>,
    #[serde(default)]
    pub nics: Vec<GuestNic>,
    /// Block devices the instance sees under another name (a raw block volume given at
    /// `/dev/vdb` that is the VM's second disk, `/dev/vdb`, or its first, `/dev/vda`).
    #[serde(default)]
    pub devices: Vec<GuestDevice>,
    pub process: ProcessConfig,
}

/// A device node made at `target` (inside the instance's root) for the guest's device
/// `source`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct GuestDevice {
    /// The guest's device (`/dev/vda`).
    pub source: String,
    /// Where the instance sees it (`/dev/vdb`).
    pub target: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_through_the_decoder_in_pieces() {
        let frames = vec![
            Frame::json(Kind::Ready, 0, &Ready { version: VERSION }),
            Frame::new(Kind::Stdout, 3, b"hello\n".to_vec()),
            Frame::int(Kind::Exit, 0, 137),
            Frame::resize(2, 40, 120),
        ];
        let bytes: Vec<u8> = frames.iter().flat_map(Frame::encode).collect();
        let mut d = Decoder::default();
        let mut out = Vec::new();
        for chunk in bytes.chunks(5) {
            d.feed(chunk);
            while let Some(f) = d.next_frame().unwrap() {
                out.push(f);
            }
        }
        assert_eq!(out, frames);
        assert_eq!(out[2].int_payload().unwrap(), 137);
        assert_eq!(out[3].size_payload().unwrap(), (40, 120));
        let r: Ready = out[0].parse().unwrap();
        assert_eq!(r.version, VERSION);
    }

    #[test]
    fn a_bad_head_is_refused() {
        let mut d = Decoder::default();
        d.feed(&[200, 0, 0, 0, 0, 0, 0, 0, 0]);
        assert!(d.next_frame().is_err());
        let mut big = vec![Kind::Stdout as u8, 0, 0, 0, 0];
        big.extend_from_slice(&((MAX_PAYLOAD as u32) + 1).to_le_bytes());
        let mut d = Decoder::default();
        d.feed(&big);
        assert!(d.next_frame().is_err());
        let mut r = io::Cursor::new(vec![Kind::Stdout as u8, 0, 0]);
        assert!(Frame::read_from(&mut r).is_err());
        let mut empty = io::Cursor::new(Vec::new());
        assert!(Frame::read_from(&mut empty).unwrap().is_none());
    }
}
