//! What `pier inspect -f` templates see: Docker's inspect field paths mapped onto Pier's
//! inspect JSON, so that `{{.State.Status}}`, `{{.NetworkSettings.IPAddress}}` or
//! `{{index .Config.Labels "k"}}` work as with `docker inspect`. Pier's own keys stay
//! too (`{{.state.status}}`, `{{.image_id}}`).
//!
//! | Docker | Pier |
//! | --- | --- |
//! | `.Id`, `.Created`, `.LogPath` | `id`, `created`, `log_path` |
//! | `.Name` | `"/" + name` (as Docker) |
//! | `.Image` | `image_id` (the image's digest, as Docker); `.Config.Image` is the reference |
//! | `.Path`, `.Args` | `command[0]`, `command[1..]` |
//! | `.State.Status`, `.State.Pid`, `.State.ExitCode`, `.State.Error`, `.State.OOMKilled`, `.State.StartedAt`, `.State.FinishedAt`, `.State.Health` | `state.*` (missing numbers are 0, strings "") |
//! | `.State.Running`, `.State.Paused`, `.State.Restarting`, `.State.Dead` | `state.status` is `running`, `paused`, `restarting`, `dead` |
//! | `.RestartCount` | `state.restart_count` |
//! | `.Config.Hostname`, `.Config.Env`, `.Config.Cmd`, `.Config.Entrypoint`, `.Config.WorkingDir`, `.Config.User`, `.Config.Tty`, `.Config.OpenStdin`, `.Config.Labels`, `.Config.Image` | `config.hostname`, `env`, `cmd`, `entrypoint`, `workdir`, `user`, `tty`, `interactive`, `labels`, `image` |
//! | `.HostConfig.*` | `config.*` (`.HostConfig.Memory` is `config.memory`, ...) |
//! | `.NetworkSettings.IPAddress` | the first network's `ip_address` |
//! | `.NetworkSettings.Networks.NAME.IPAddress`, `.MacAddress` | `networks.NAME.ip_address`, `mac_address` |
//! | `.NetworkSettings.Ports`, `.Mounts` | `ports`, `mounts` (Pier's shapes) |
//!
//! Images keep Pier's keys; `.Id` and `.RepoTags` find `id` and `repo_tags` by name.

use serde_json::{json, Map, Value};

fn get<'a>(v: &'a Value, path: &[&str]) -> &'a Value {
    path.iter().fold(v, |v, k| v.get(k).unwrap_or(&Value::Null))
}

fn or(v: &Value, default: Value) -> Value {
    if v.is_null() {
        default
    } else {
        v.clone()
    }
}

/// Pier's inspect JSON of a container, with Docker's keys added; other objects as they are.
pub fn docker_view(v: &Value) -> Value {
    let Value::Object(orig) = v else {
        return v.clone();
    };
    // A container has a state and a config; anything else (an image) stays as it is.
    if !(orig.contains_key("state") && orig.contains_key("config")) {
        return v.clone();
    }
    let status = get(v, &["state", "status"])
        .as_str()
        .unwrap_or("")
        .to_string();
    let command: Vec<Value> = get(v, &["command"]).as_array().cloned().unwrap_or_default();
    let config = get(v, &["config"]);
    let networks = get(v, &["networks"])
        .as_object()
        .cloned()
        .unwrap_or_default();
    let first_ip = networks
        .values()
        .find_map(|e| {
            e.get("ip_address")
                .and_then(Value::as_str)
                .map(str::to_string)
        })
        .unwrap_or_default();
    let docker_networks: Map<String, Value> = networks
        .iter()
        .map(|(name, e)| {
            let mut e2 = e.as_object().cloned().unwrap_or_default();
            e2.insert("IPAddress".into(), or(get(e, &["ip_address"]), json!("")));
            e2.insert("NetworkID".into(), or(get(e, &["network_id"]), json!("")));
            e2.insert("Aliases".into(), or(get(e, &["aliases"]), json!([])));
            (name.clone(), Value::Object(e2))
        })
        .collect();
    let mut out = orig.clone();
    let mut add = |k: &str, val: Value| {
        out.insert(k.to_string(), val);
    };
    add("Id", or(get(v, &["id"]), json!("")));
    add(
        "Name",
        json!(format!("/{}", get(v, &["name"]).as_str().unwrap_or(""))),
    );
    add("Created", or(get(v, &["created"]), json!("")));
    add("Image", or(get(v, &["image_id"]), json!("")));
    add("Path", command.first().cloned().unwrap_or(json!("")));
    add(
        "Args",
        Value::Array(command.iter().skip(1).cloned().collect()),
    );
    add("LogPath", or(get(v, &["log_path"]), json!("")));
    add(
        "RestartCount",
        or(get(v, &["state", "restart_count"]), json!(0)),
    );
    let st = |k: &str| get(v, &["state", k]);
    add(
        "State",
        json!({
            "Status": status,
            "Running": status == "running",
            "Paused": status == "paused",
            "Restarting": status == "restarting",
            "OOMKilled": or(st("oom_killed"), json!(false)),
            "Dead": status == "dead",
            "Pid": or(st("pid"), json!(0)),
            "ExitCode": or(st("exit_code"), json!(0)),
            "Error": or(st("error"), json!("")),
            "StartedAt": or(st("started_at"), json!("")),
            "FinishedAt": or(st("finished_at"), json!("")),
            "Health": st("health").clone(),
        }),
    );
    let c = |k: &str| config.get(k).cloned().unwrap_or(Value::Null);
    add(
        "Config",
        json!({
            "Hostname": or(&c("hostname"), json!("")),
            "User": or(&c("user"), json!("")),
            "Env": or(&c("env"), json!([])),
            "Cmd": c("cmd"),
            "Entrypoint": c("entrypoint"),
            "WorkingDir": or(&c("workdir"), json!("")),
            "Tty": or(&c("tty"), json!(false)),
            "OpenStdin": or(&c("interactive"), json!(false)),
            "Labels": or(&c("labels"), json!({})),
            "Image": or(get(v, &["image"]), json!("")),
        }),
    );
    add("HostConfig", config.clone());
    add(
        "NetworkSettings",
        json!({
            "IPAddress": first_ip,
            "Networks": Value::Object(docker_networks),
            "Ports": or(get(v, &["ports"]), json!([])),
        }),
    );
    add("Mounts", or(get(v, &["mounts"]), json!([])));
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::template::Template;

    #[test]
    fn docker_paths_reach_pier_fields() {
        let v = json!({
            "id": "abc", "name": "web", "image": "busybox", "image_id": "sha256:1",
            "command": ["sh", "-c", "x"],
            "state": {"status": "running", "pid": 42, "exit_code": null},
            "config": {"labels": {"k": "v"}, "env": ["A=1"], "memory": 100},
            "networks": {"bridge": {"ip_address": "10.0.0.2", "network_id": "n1"}},
        });
        let view = docker_view(&v);
        let r = |t: &str| Template::parse(t).unwrap().render(&view, &[]).unwrap();
        assert_eq!(
            r("{{.State.Status}} {{.State.Running}} {{.State.Pid}} {{.State.ExitCode}}"),
            "running true 42 0"
        );
        assert_eq!(
            r("{{.Name}} {{.Id}} {{.Image}} {{.Config.Image}}"),
            "/web abc sha256:1 busybox"
        );
        assert_eq!(
            r(r#"{{index .Config.Labels "k"}} {{json .Config.Labels}}"#),
            r#"v {"k":"v"}"#
        );
        assert_eq!(
            r("{{.NetworkSettings.IPAddress}} {{.NetworkSettings.Networks.bridge.IPAddress}}"),
            "10.0.0.2 10.0.0.2"
        );
        assert_eq!(
            r("{{.HostConfig.Memory}} {{.Path}} {{join .Args \",\"}}"),
            "100 sh -c,x"
        );
        assert_eq!(r("{{range .Config.Env}}{{.}};{{end}}"), "A=1;");
    }
}
