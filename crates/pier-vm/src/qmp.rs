//! A typed, blocking QMP client (QEMU's JSON control protocol) over a unix stream.
//!
//! [`Qmp::handshake`] reads the greeting and leaves capabilities negotiation
//! (`qmp_capabilities`); then [`Qmp::execute`] sends one typed [`Command`] with an `id`
//! and reads until the reply with that id. QEMU interleaves asynchronous events
//! (`STOP`, `SHUTDOWN`, ...) with replies, even before the reply to the command that
//! caused them: those are set apart in [`Qmp::take_events`].

use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// Why a QMP exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum QmpError {
    #[error("QMP connection failed")]
    Io(#[from] io::Error),
    #[error("QEMU closed its QMP connection")]
    Closed,
    #[error("QEMU sent something QMP does not allow: {0}")]
    Protocol(String),
    #[error("QEMU refused `{command}`: {class}: {desc}")]
    Refused {
        command: &'static str,
        class: String,
        desc: String,
    },
}

/// A QMP command with its typed arguments and reply.
pub trait Command: Serialize {
    const NAME: &'static str;
    type Reply: DeserializeOwned;
    /// Whether it has arguments (`{}` commands send none).
    const HAS_ARGS: bool = false;
}

/// An asynchronous event.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Event {
    pub event: String,
    #[serde(default)]
    pub data: serde_json::Value,
}

/// No reply data (`{"return": {}}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct Empty {}

macro_rules! no_arg_command {
    ($(#[$m:meta])* $ty:ident, $name:literal, $reply:ty) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, Default, Serialize)]
        pub struct $ty;
        impl Command for $ty {
            const NAME: &'static str = $name;
            type Reply = $reply;
        }
    };
}

no_arg_command!(
    /// Leaves capabilities negotiation.
    QmpCapabilities, "qmp_capabilities", Empty);
no_arg_command!(
    /// The VM's run state.
    QueryStatus, "query-status", StatusInfo);
no_arg_command!(
    /// Whether KVM runs the VM.
    QueryKvm, "query-kvm", KvmInfo);
no_arg_command!(
    /// Pauses the VCPUs.
    Stop, "stop", Empty);
no_arg_command!(
    /// Resumes the VCPUs.
    Cont, "cont", Empty);
no_arg_command!(
    /// Ends QEMU (the guest gets no say).
    Quit, "quit", Empty);
no_arg_command!(
    /// Presses the ACPI power button (only a guest that listens acts on it).
    SystemPowerdown, "system_powerdown", Empty);

/// `query-status`'s reply.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct StatusInfo {
    pub status: String,
    pub running: bool,
}

/// `query-kvm`'s reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct KvmInfo {
    pub enabled: bool,
    pub present: bool,
}

#[derive(Serialize)]
struct Request<'a, A: Serialize> {
    execute: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    arguments: Option<&'a A>,
    id: u64,
}

#[derive(Deserialize)]
struct ErrorBody {
    class: String,
    desc: String,
}

/// One message from QEMU.
#[derive(Deserialize)]
#[serde(untagged)]
enum Message {
    Return {
        #[serde(rename = "return")]
        value: serde_json::Value,
        #[serde(default)]
        id: Option<serde_json::Value>,
    },
    Error {
        error: ErrorBody,
        #[serde(default)]
        id: Option<serde_json::Value>,
    },
    Event(Event),
    Greeting {
        #[serde(rename = "QMP")]
        #[allow(dead_code)]
        qmp: serde_json::Value,
    },
}

/// A QMP connection past its handshake.
#[derive(Debug)]
pub struct Qmp {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    next_id: u64,
    events: Vec<Event>,
}

impl Qmp {
    /// Connects to a QMP socket and does the handshake.
    pub fn connect(path: &std::path::Path, timeout: Duration) -> Result<Qmp, QmpError> {
        Qmp::handshake(UnixStream::connect(path)?, timeout)
    }

    /// Reads the greeting on `stream` and leaves capabilities negotiation; every read
    /// waits at most `timeout`.
    pub fn handshake(stream: UnixStream, timeout: Duration) -> Result<Qmp, QmpError> {
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        let mut q = Qmp {
            reader: BufReader::new(stream.try_clone()?),
            writer: stream,
            next_id: 1,
            events: Vec::new(),
        };
        match q.read()? {
            Message::Greeting { .. } => {}
            _ => return Err(QmpError::Protocol("no greeting".into())),
        }
        q.execute(&QmpCapabilities)?;
        Ok(q)
    }

    fn read(&mut self) -> Result<Message, QmpError> {
        let mut line = String::new();
        loop {
            line.clear();
            if self.reader.read_line(&mut line)? == 0 {
                return Err(QmpError::Closed);
            }
            if !line.trim().is_empty() {
                break;
            }
        }
        serde_json::from_str(&line).map_err(|e| QmpError::Protocol(format!("{e}: {}", line.trim())))
    }

    /// Runs `cmd` and returns its reply; events read meanwhile are kept.
    pub fn execute<C: Command>(&mut self, cmd: &C) -> Result<C::Reply, QmpError> {
        let id = self.next_id;
        self.next_id += 1;
        let req = Request {
            execute: C::NAME,
            arguments: C::HAS_ARGS.then_some(cmd),
            id,
        };
        let mut bytes = serde_json::to_vec(&req).expect("serializable");
        bytes.push(b'\n');
        self.writer.write_all(&bytes)?;
        loop {
            match self.read()? {
                Message::Event(e) => self.events.push(e),
                Message::Return { value, id: got } if got == Some(id.into()) => {
                    return serde_json::from_value(value).map_err(|e| {
                        QmpError::Protocol(format!("the reply to {} does not parse: {e}", C::NAME))
                    })
                }
                Message::Error { error, id: got } if got == Some(id.into()) => {
                    return Err(QmpError::Refused {
                        command: C::NAME,
                        class: error.class,
                        desc: error.desc,
                    })
                }
                // A reply to an earlier command given up on: not ours.
                Message::Return { .. } | Message::Error { .. } => {}
                Message::Greeting { .. } => {
                    return Err(QmpError::Protocol("a second greeting".into()))
                }
            }
        }
    }

    pub fn query_status(&mut self) -> Result<StatusInfo, QmpError> {
        self.execute(&QueryStatus)
    }
    pub fn query_kvm(&mut self) -> Result<KvmInfo, QmpError> {
        self.execute(&QueryKvm)
    }
    pub fn stop(&mut self) -> Result<(), QmpError> {
        self.execute(&Stop).map(drop)
    }
    pub fn cont(&mut self) -> Result<(), QmpError> {
        self.execute(&Cont).map(drop)
    }
    /// Ends QEMU. It may close the connection before its reply: that counts as done.
    pub fn quit(&mut self) -> Result<(), QmpError> {
        match self.execute(&Quit) {
            Err(QmpError::Closed) => Ok(()),
            r => r.map(drop),
        }
    }
    pub fn system_powerdown(&mut self) -> Result<(), QmpError> {
        self.execute(&SystemPowerdown).map(drop)
    }

    /// The events received so far, oldest first.
    pub fn take_events(&mut self) -> Vec<Event> {
        std::mem::take(&mut self.events)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GREETING: &str = r#"{"QMP": {"version": {"qemu": {"micro": 22, "minor": 2, "major": 7}, "package": ""}, "capabilities": ["oob"]}}"#;

    /// A fake QEMU: answers each request line with `script(request)`'s lines.
    fn fake(
        script: impl Fn(&serde_json::Value) -> Vec<String> + Send + 'static,
    ) -> (UnixStream, std::thread::JoinHandle<Vec<serde_json::Value>>) {
        let (client, server) = UnixStream::pair().unwrap();
        let t = std::thread::spawn(move || {
            let mut seen = Vec::new();
            let mut w = server.try_clone().unwrap();
            write!(w, "{GREETING}\r\n").unwrap();
            let mut r = BufReader::new(server);
            let mut line = String::new();
            while r.read_line(&mut line).unwrap() > 0 {
                let req: serde_json::Value = serde_json::from_str(&line).unwrap();
                for out in script(&req) {
                    write!(w, "{out}\r\n").unwrap();
                }
                seen.push(req);
                line.clear();
            }
            seen
        });
        (client, t)
    }

    #[test]
    fn replies_are_matched_by_id_and_events_set_apart() {
        let (client, t) = fake(|req| {
            let id = &req["id"];
            match req["execute"].as_str().unwrap() {
                "qmp_capabilities" => vec![format!(r#"{{"return": {{}}, "id": {id}}}"#)],
                "stop" => vec![
                    r#"{"timestamp": {"seconds": 1, "microseconds": 2}, "event": "STOP"}"#.into(),
                    format!(r#"{{"return": {{}}, "id": {id}}}"#),
                ],
                "query-status" => vec![
                    // A stale reply to some other id comes first: not this one's.
                    r#"{"return": {"status": "running", "running": true}, "id": 999}"#.into(),
                    format!(
                        r#"{{"return": {{"status": "paused", "singlestep": false, "running": false}}, "id": {id}}}"#
                    ),
                ],
                "query-kvm" => vec![format!(
                    r#"{{"return": {{"enabled": false, "present": true}}, "id": {id}}}"#
                )],
                "cont" => vec![format!(
                    r#"{{"error": {{"class": "GenericError", "desc": "nope"}}, "id": {id}}}"#
                )],
                "quit" => vec![
                    r#"{"event": "SHUTDOWN", "data": {"guest": false, "reason": "host-qmp-quit"}}"#
                        .into(),
                ],
                _ => vec![],
            }
        });
        let mut q = Qmp::handshake(client, Duration::from_secs(5)).unwrap();
        q.stop().unwrap();
        let st = q.query_status().unwrap();
        assert_eq!(
            st,
            StatusInfo {
                status: "paused".into(),
                running: false
            }
        );
        assert_eq!(
            q.query_kvm().unwrap(),
            KvmInfo {
                enabled: false,
                present: true
            }
        );
        let e = q.cont().unwrap_err();
        assert!(
            e.to_string().contains("cont") && e.to_string().contains("nope"),
            "{e}"
        );
        let events = q.take_events();
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].event, "STOP");
        // quit: QEMU hangs up after its SHUTDOWN event, before any reply.
        let writer = q.writer.try_clone().unwrap();
        let handle = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            writer.shutdown(std::net::Shutdown::Both).unwrap();
        });
        q.quit().unwrap();
        handle.join().unwrap();
        assert_eq!(q.take_events()[0].event, "SHUTDOWN");
        drop(q);
        let seen = t.join().unwrap();
        let names: Vec<&str> = seen
            .iter()
            .map(|r| r["execute"].as_str().unwrap())
            .collect();
        assert_eq!(
            names,
            [
                "qmp_capabilities",
                "stop",
                "query-status",
                "query-kvm",
                "cont",
                "quit"
            ]
        );
        // Ids are distinct, and argument-less commands carry no arguments.
        let ids: std::collections::HashSet<u64> =
            seen.iter().map(|r| r["id"].as_u64().unwrap()).collect();
        assert_eq!(ids.len(), seen.len());
        assert!(seen.iter().all(|r| r.get("arguments").is_none()));
    }

    #[test]
    fn a_peer_that_is_not_qemu_is_refused() {
        let (client, mut server) = UnixStream::pair().unwrap();
        server.write_all(b"{\"return\": {}}\n").unwrap();
        let e = Qmp::handshake(client, Duration::from_secs(5)).unwrap_err();
        assert!(matches!(e, QmpError::Protocol(_)), "{e}");
        let (client, server) = UnixStream::pair().unwrap();
        drop(server);
        let e = Qmp::handshake(client, Duration::from_secs(5)).unwrap_err();
        assert!(matches!(e, QmpError::Closed), "{e}");
    }
}
