//! Docker's exec shapes: the body of `POST /containers/{id}/exec`, of
//! `POST /exec/{id}/start`, and `GET /exec/{id}/json`.

use serde::Deserialize;
use serde_json::{json, Value};

use super::create::StrOrList;
use super::{Refused, Result};
use crate::containers::{ExecInfo, ExecSpec};
use crate::detach::DetachKeys;

/// The body of `POST /containers/{id}/exec`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct ExecConfig {
    pub attach_stdin: Option<bool>,
    pub attach_stdout: Option<bool>,
    pub attach_stderr: Option<bool>,
    pub tty: Option<bool>,
    pub env: Option<Vec<String>>,
    pub cmd: Option<StrOrList>,
    pub privileged: Option<bool>,
    pub user: Option<String>,
    pub working_dir: Option<String>,
    /// Go reads JSON keys case-insensitively; docker-py sends `detachKeys`.
    #[serde(alias = "detachKeys")]
    pub detach_keys: Option<String>,
}

impl ExecConfig {
    /// What to run, as Docker reads the body (outputs attached unless refused).
    pub fn into_spec(self) -> Result<ExecSpec> {
        let cmd = match self.cmd {
            Some(StrOrList::One(s)) => vec![s],
            Some(StrOrList::Many(v)) => v,
            None => Vec::new(),
        };
        let detach_keys = match self.detach_keys.as_deref() {
            None | Some("") => None,
            Some(k) => Some(DetachKeys::parse(k).map_err(|_| {
                Refused::bad_request(format!(
                    "Invalid escape keys ({k}) provided: write them as ctrl-p,ctrl-q (single characters, DEL or ctrl-<a-z @ [ \\ ] ^ _>, comma-separated)"
                ))
            })?),
        };
        Ok(ExecSpec {
            cmd,
            env: self.env.unwrap_or_default(),
            user: self.user.filter(|u| !u.is_empty()),
            workdir: self.working_dir.filter(|w| !w.is_empty()),
            tty: self.tty.unwrap_or(false),
            stdin: self.attach_stdin.unwrap_or(false),
            stdout: self.attach_stdout.unwrap_or(true),
            stderr: self.attach_stderr.unwrap_or(true),
            detach_keys,
            privileged: self.privileged.unwrap_or(false),
        })
    }
}

/// The body of `POST /exec/{id}/start`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct ExecStartConfig {
    pub detach: Option<bool>,
    pub tty: Option<bool>,
}

/// `GET /exec/{id}/json`.
pub fn inspect_json(e: &ExecInfo) -> Value {
    json!({
        "ID": e.id,
        "Running": e.running,
        "ExitCode": e.exit_code,
        "ProcessConfig": {
            "tty": e.spec.tty,
            "entrypoint": e.spec.cmd.first(),
            "arguments": e.spec.cmd.iter().skip(1).collect::<Vec<_>>(),
            // Refused at create: a command never runs privileged.
            "privileged": false,
            "user": e.spec.user.clone().unwrap_or_default(),
        },
        "OpenStdin": e.spec.stdin,
        "OpenStdout": e.spec.stdout,
        "OpenStderr": e.spec.stderr,
        "CanRemove": false,
        "ContainerID": e.container_id,
        "DetachKeys": "",
        "Pid": e.pid,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exec_body_reads_as_docker_reads_it() {
        let c: ExecConfig =
            serde_json::from_str(r#"{"Cmd": "ls", "AttachStdin": true, "User": "", "Tty": true}"#)
                .unwrap();
        let s = c.into_spec().unwrap();
        assert_eq!(s.cmd, ["ls"]);
        assert!(s.stdin && s.stdout && s.stderr && s.tty);
        assert_eq!(s.user, None);
        let k: ExecConfig =
            serde_json::from_str(r#"{"Cmd": "sh", "detachKeys": "ctrl-x"}"#).unwrap();
        assert_eq!(k.into_spec().unwrap().detach_keys.unwrap().bytes(), [24]);
        let k: ExecConfig =
            serde_json::from_str(r#"{"Cmd": "sh", "DetachKeys": "ctrl-1"}"#).unwrap();
        let e = k.into_spec().unwrap_err();
        assert_eq!(e.status, 400);
        assert!(
            e.message.contains("Invalid escape keys (ctrl-1)"),
            "{}",
            e.message
        );
        let p: ExecConfig = serde_json::from_str(r#"{"Cmd": ["id"], "Privileged": true}"#).unwrap();
        assert!(p.into_spec().unwrap().privileged);
        let info = ExecInfo {
            id: "e1".into(),
            container_id: "c1".into(),
            spec: ExecSpec {
                cmd: vec!["sh".into(), "-c".into(), "true".into()],
                ..Default::default()
            },
            running: false,
            exit_code: Some(3),
            pid: 0,
        };
        let j = inspect_json(&info);
        assert_eq!(j["ProcessConfig"]["entrypoint"], "sh");
        assert_eq!(j["ProcessConfig"]["arguments"], json!(["-c", "true"]));
        assert_eq!(
            (j["ExitCode"].clone(), j["ContainerID"].clone()),
            (json!(3), json!("c1"))
        );
    }
}
