//! The websocket terminal protocol of the native API: `GET /v1/containers/{id}/exec/ws`
//! (a command in a running container) and `GET /v1/containers/{id}/console/ws` (a VM's
//! serial console). This module owns the query of the exec form and its parser, and the
//! two JSON messages that travel as text frames beside the binary ones:
//!
//! ```text
//! client ── binary: stdin bytes ──────────────────────────────> command
//! client ── text: {"resize":{"cols":C,"rows":R}} ─────────────> its terminal's size
//! client ── text: {"close_stdin":true} ───────────────────────> end of its input
//! client <── binary: output (raw with a terminal) ───────────── command
//! client <── text: {"exit_code":N} then close ───────────────── it exited
//! client <── text: {"detached":true} then close ────────────── detach keys typed
//! ```

use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::containers::ExecSpec;
use crate::detach::DetachKeys;

/// The size a terminal gets when the client names none.
pub const DEFAULT_SIZE: TerminalSize = TerminalSize { cols: 80, rows: 24 };

/// Query of `GET /v1/containers/{id}/exec/ws`. Every field is optional but `cmd`; a word
/// given more than once (`cmd`, `env`) is a list, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ExecWsQuery {
    /// The command and its arguments, one `cmd` per word: `?cmd=/bin/sh&cmd=-l`.
    #[param(style = Form, explode)]
    pub cmd: Vec<String>,
    /// Give the command a terminal (default `true`); without one its standard output and
    /// error come interleaved in the binary frames.
    pub tty: Option<bool>,
    /// The terminal's first size (80 columns by 24 rows when absent).
    pub cols: Option<u16>,
    pub rows: Option<u16>,
    /// `user`, `uid`, `user:group` or `uid:gid`; the container's user by default.
    pub user: Option<String>,
    /// The command's working directory; the container's by default.
    pub workdir: Option<String>,
    /// `KEY=VALUE`, added to the container's environment; one `env` per variable.
    #[param(style = Form, explode, required = false)]
    pub env: Vec<String>,
    /// The keys that detach from the command, leaving it running (Docker's syntax,
    /// `ctrl-p,ctrl-q` when absent).
    #[param(value_type = Option<String>)]
    pub detach_keys: Option<DetachKeys>,
}

/// Why an exec websocket's query was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExecWsQueryError {
    #[error(transparent)]
    Form(#[from] crate::form::FormError),
    #[error("invalid {key} {value:?}: {reason}")]
    Value {
        key: &'static str,
        value: String,
        reason: String,
    },
    #[error("unknown query parameter {0:?}: use cmd, tty, cols, rows, user, workdir, env or detach_keys")]
    Unknown(String),
    #[error("give the command to run as ?cmd=WORD, one cmd per word (e.g. ?cmd=/bin/sh)")]
    NoCommand,
}

impl ExecWsQuery {
    /// Parses a query string (without its `?`).
    pub fn parse(query: &str) -> Result<Self, ExecWsQueryError> {
        let mut q = ExecWsQuery::default();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let (k, v) = (crate::form::decode(k)?, crate::form::decode(v)?);
            let bad = |key: &'static str, reason: &str| ExecWsQueryError::Value {
                key,
                value: v.clone(),
                reason: reason.into(),
            };
            let size = |key| {
                v.parse::<u16>()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| bad(key, "give a number from 1 to 65535"))
            };
            match k.as_str() {
                "cmd" => q.cmd.push(v),
                "env" => q.env.push(v),
                "tty" => {
                    q.tty = Some(match v.as_str() {
                        "true" | "1" => true,
                        "false" | "0" => false,
                        _ => return Err(bad("tty", "give true or false")),
                    })
                }
                "cols" => q.cols = Some(size("cols")?),
                "rows" => q.rows = Some(size("rows")?),
                "user" => q.user = Some(v).filter(|s| !s.is_empty()),
                "workdir" => q.workdir = Some(v).filter(|s| !s.is_empty()),
                "detach_keys" => {
                    q.detach_keys = Some(
                        DetachKeys::parse(&v).map_err(|e| bad("detach_keys", &e.to_string()))?,
                    )
                }
                _ => return Err(ExecWsQueryError::Unknown(k)),
            }
        }
        if q.cmd.is_empty() {
            return Err(ExecWsQueryError::NoCommand);
        }
        Ok(q)
    }

    /// What the session runs: the client's input always, a terminal unless `tty=false`.
    pub fn spec(&self) -> ExecSpec {
        ExecSpec {
            cmd: self.cmd.clone(),
            env: self.env.clone(),
            user: self.user.clone(),
            workdir: self.workdir.clone(),
            tty: self.tty.unwrap_or(true),
            stdin: true,
            stdout: true,
            stderr: true,
            detach_keys: self.detach_keys.clone(),
            privileged: false,
        }
    }

    /// The terminal's first size.
    pub fn size(&self) -> TerminalSize {
        TerminalSize {
            cols: self.cols.unwrap_or(DEFAULT_SIZE.cols),
            rows: self.rows.unwrap_or(DEFAULT_SIZE.rows),
        }
    }
}

/// A terminal's size in character cells.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TerminalSize {
    pub cols: u16,
    pub rows: u16,
}

/// A text frame from the client: `{"resize":{"cols":C,"rows":R}}` or
/// `{"close_stdin":true}` (both at once is fine).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct TerminalControl {
    /// Sets the terminal's size (ignored without a terminal, and by a VM's console).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resize: Option<TerminalSize>,
    /// Ends the command's input (ignored by a terminal, which has no end of input: type
    /// ctrl-d instead).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub close_stdin: bool,
}

/// The last text frame from the server before it closes the socket: the command's exit
/// code, or that the client detached (the command runs on), or what went wrong.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TerminalEnd {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    #[serde(skip_serializing_if = "std::ops::Not::not", default)]
    pub detached: bool,
    /// A text frame the server could not take (the session goes on).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_query_gives_the_command_its_words_in_order_and_a_terminal_by_default() {
        let q = ExecWsQuery::parse(
            "cmd=%2Fbin%2Fsh&cmd=-c&cmd=echo+a%26b&env=A=1&env=B=2&cols=120&rows=40&user=0",
        )
        .unwrap();
        assert_eq!(q.cmd, ["/bin/sh", "-c", "echo a&b"]);
        assert_eq!(q.env, ["A=1", "B=2"]);
        assert_eq!(
            q.size(),
            TerminalSize {
                cols: 120,
                rows: 40
            }
        );
        let s = q.spec();
        assert!(s.tty && s.stdin && s.stdout && s.stderr);
        assert_eq!(s.user.as_deref(), Some("0"));
        let q = ExecWsQuery::parse("cmd=cat&tty=false").unwrap();
        assert!(!q.spec().tty);
        assert_eq!(q.size(), DEFAULT_SIZE);
    }

    #[test]
    fn a_bad_query_says_what_to_give() {
        let err = |s: &str| ExecWsQuery::parse(s).unwrap_err().to_string();
        assert!(err("tty=true").contains("?cmd=WORD"), "{}", err("tty=true"));
        assert!(err("cmd=sh&cols=0").contains("invalid cols"));
        assert!(err("cmd=sh&rows=x").contains("1 to 65535"));
        assert!(err("cmd=sh&tty=yes").contains("true or false"));
        assert!(err("cmd=sh&shell=1").contains("unknown query parameter \"shell\""));
        assert!(err("cmd=sh&detach_keys=ctrl-%3F").contains("detach_keys"));
        assert!(err("cmd=%zz").contains("bad escape"));
    }

    #[test]
    fn control_frames_are_strict_json() {
        let c: TerminalControl =
            serde_json::from_str(r#"{"resize":{"cols":100,"rows":30}}"#).unwrap();
        assert_eq!(
            c.resize,
            Some(TerminalSize {
                cols: 100,
                rows: 30
            })
        );
        assert!(serde_json::from_str::<TerminalControl>(r#"{"size":1}"#).is_err());
        let end = TerminalEnd {
            exit_code: Some(3),
            ..Default::default()
        };
        assert_eq!(serde_json::to_string(&end).unwrap(), r#"{"exit_code":3}"#);
    }
}
