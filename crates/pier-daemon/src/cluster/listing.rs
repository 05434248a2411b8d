//! A member's container listings: `GET /v1/containers` and Docker's
//! `GET /containers/json` show the pool's instances, this host's (as its engine lists
//! them) and the other hosts' (from their records in the pool's store,
//! [`pier_cluster::instances`]), each with the host it runs on.
//!
//! The other hosts' rows go through the same choices as local ones: running only unless
//! `all`, and the filters a record can answer. Native filters: all of them (`status`,
//! `name`, `id`, `label`, `exited`). Docker filters: `status`, `name`, `id`, `label`,
//! `exited`, `ancestor` (by the reference the instance was made from, not the image's
//! ancestry), `publish` and `is-task`; a record cannot answer `network`, `health`,
//! `volume`, `expose`, `before` or `since`, so a listing with one of those shows this
//! host's rows only.
//!
//! A pool may hold a hundred thousand records (bench/README.md, "The pool's listing"):
//! the records come from the member's copy of them in memory
//! ([`records`](super::records)), and the rows of other hosts are made only for the
//! records kept, without a JSON tree or a copy of their strings ([`NativeRow`]s and
//! [`DockerRow`]s borrow them).

use std::collections::BTreeMap;

use pier_api::containers::{ContainerState, ContainerStatus};
use pier_cluster::instances::InstanceRecord;
use pier_engine::filters::{self, Filters};
use serde::Serialize;

/// The Docker filters a record can answer.
const DOCKER_FILTERS_OF_RECORDS: &[&str] = &[
    "status", "name", "id", "label", "exited", "ancestor", "publish", "is-task",
];

/// The record's state; an unknown one (a newer member's) reads as `created`.
fn status_of(r: &InstanceRecord) -> ContainerStatus {
    use ContainerStatus::*;
    [Created, Running, Paused, Restarting, Exited, Removing]
        .into_iter()
        .find(|s| s.as_str() == r.state)
        .unwrap_or_default()
}

fn state_of(r: &InstanceRecord) -> ContainerState {
    ContainerState {
        status: status_of(r),
        exit_code: r.exit_code,
        started_at: r.started_at.clone(),
        finished_at: r.finished_at.clone(),
        ..Default::default()
    }
}

fn live(r: &InstanceRecord) -> bool {
    matches!(
        status_of(r),
        ContainerStatus::Running | ContainerStatus::Paused | ContainerStatus::Restarting
    )
}

/// The native summary of another host's instance, its status as of `now` (what a
/// [`NativeRow`] stands for).
#[cfg(test)]
pub fn native_summary(r: &InstanceRecord, now: i64) -> pier_api::containers::ContainerSummary {
    pier_api::containers::ContainerSummary {
        id: r.id.clone(),
        name: r.name.clone(),
        image: r.image.clone(),
        command: r.command.clone(),
        created: r.created.clone(),
        kind: r.kind.clone(),
        state: status_of(r),
        status: pier_engine::instances::service::status_text(&state_of(r), now),
        ports: r
            .ports
            .iter()
            .map(|p| pier_api::networks::PortBinding {
                proto: p.proto.clone(),
                host_ip: p.host_ip.clone(),
                host_port: p.host_port,
                container_port: p.container_port,
            })
            .collect(),
        host: Some(r.host.clone()),
    }
}

/// A `ContainerSummary` of another host's instance that borrows the record: it
/// serializes as [`native_summary`]'s does (a test holds them equal).
#[derive(Debug, Serialize)]
pub struct NativeRow<'a> {
    id: &'a str,
    name: &'a str,
    image: &'a str,
    command: &'a str,
    pub created: &'a str,
    kind: &'a str,
    state: ContainerStatus,
    status: String,
    /// [`RecordPort`](pier_cluster::instances::RecordPort) has `PortBinding`'s fields.
    ports: &'a [pier_cluster::instances::RecordPort],
    host: &'a str,
}

/// The native row of another host's instance, its status as of `now`.
pub fn native_row(r: &InstanceRecord, now: i64) -> NativeRow<'_> {
    NativeRow {
        id: &r.id,
        name: &r.name,
        image: &r.image,
        command: &r.command,
        created: &r.created,
        kind: &r.kind,
        state: status_of(r),
        status: pier_engine::instances::service::status_text(&state_of(r), now),
        ports: &r.ports,
        host: &r.host,
    }
}

/// Whether a native listing (`all`, `filter` as `key=value,...`) shows the record, with
/// the engine's rules; None when the filter does not read (the local listing refuses it).
pub fn native_keep(r: &InstanceRecord, all: bool, filter: Option<&str>) -> Option<bool> {
    let mut parsed = Vec::new();
    for f in filter.unwrap_or("").split(',').filter(|f| !f.is_empty()) {
        parsed.push(f.split_once('=')?);
    }
    if !all && !live(r) && !parsed.iter().any(|(k, _)| *k == "status") {
        return Some(false);
    }
    Some(parsed.iter().all(|(k, v)| match *k {
        "status" => r.state == *v,
        "name" => r.name.contains(v),
        "id" => r.id.starts_with(v),
        "label" => filters::label_matches(&r.labels, v),
        "exited" => r.state == "exited" && r.exit_code.map(|e| e.to_string()).as_deref() == Some(v),
        _ => false,
    }))
}

/// One entry of Docker's `GET /containers/json` for another host's instance, with
/// Pier's `Host` beside Docker's fields. It borrows the record: a listing of the pool
/// serializes these without making a JSON tree of each.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct DockerRow<'a> {
    id: &'a str,
    names: [String; 1],
    image: &'a str,
    #[serde(rename = "ImageID")]
    image_id: &'static str,
    command: &'a str,
    /// Unix seconds.
    pub created: i64,
    ports: Vec<DockerPort<'a>>,
    labels: &'a BTreeMap<String, String>,
    state: &'a str,
    status: String,
    host_config: DockerHostConfig,
    network_settings: DockerNetworkSettings,
    mounts: [(); 0],
    host: &'a str,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
struct DockerPort<'a> {
    #[serde(rename = "IP")]
    ip: &'a str,
    private_port: u16,
    public_port: u16,
    #[serde(rename = "Type")]
    proto: &'a str,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
struct DockerHostConfig {
    network_mode: &'static str,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
struct DockerNetworkSettings {
    networks: BTreeMap<String, ()>,
}

/// The Docker row of another host's instance, its status as of `now`.
pub fn docker_summary(r: &InstanceRecord, now: i64) -> DockerRow<'_> {
    let ports = if live(r) {
        r.ports
            .iter()
            .map(|p| DockerPort {
                ip: if p.host_ip.is_empty() {
                    "0.0.0.0"
                } else {
                    &p.host_ip
                },
                private_port: p.container_port,
                public_port: p.host_port,
                proto: &p.proto,
            })
            .collect()
    } else {
        Vec::new()
    };
    DockerRow {
        id: &r.id,
        names: [format!("/{}", r.name)],
        image: &r.image,
        image_id: "",
        command: &r.command,
        created: record_created(r),
        ports,
        labels: &r.labels,
        state: &r.state,
        status: pier_api::docker::container::state_status_text(&state_of(r), None, now),
        host_config: DockerHostConfig {
            network_mode: "default",
        },
        network_settings: DockerNetworkSettings {
            networks: BTreeMap::new(),
        },
        mounts: [],
        host: &r.host,
    }
}

/// A record's creation time in Unix seconds (Docker's `Created`), 0 when it does not
/// read.
pub fn record_created(r: &InstanceRecord) -> i64 {
    pier_api::time::parse_rfc3339(&r.created).unwrap_or(0)
}

/// Whether a Docker listing (`all`, `filters`) shows the record.
pub fn docker_keep(r: &InstanceRecord, all: bool, f: &Filters) -> bool {
    if f.keys()
        .any(|k| !DOCKER_FILTERS_OF_RECORDS.contains(&k.as_str()))
    {
        return false;
    }
    let all = all || f.contains_key("status") || f.contains_key("exited");
    if !all && !live(r) {
        return false;
    }
    let any = |key: &str, test: &dyn Fn(&str) -> bool| filters::any(f, key, test);
    any("status", &|v| r.state == v)
        && any("name", &|v| filters::name_matches(&r.name, v))
        && any("id", &|v| r.id.starts_with(v))
        && filters::labels(f, &r.labels)
        && any("exited", &|v| {
            r.state == "exited" && r.exit_code.map(|e| e.to_string()).as_deref() == Some(v)
        })
        && any("ancestor", &|v| {
            r.image == v
                || pier_api::docker::normalize_ref(&r.image) == pier_api::docker::normalize_ref(v)
        })
        && any("publish", &|v| {
            let (port, proto) = v.split_once('/').unwrap_or((v, "tcp"));
            live(r)
                && r.ports
                    .iter()
                    .any(|p| p.host_port.to_string() == port && p.proto == proto)
        })
        && any("is-task", &|v| v == "false")
}

#[cfg(test)]
mod tests {
    use super::*;
    use pier_cluster::instances::RecordPort;

    fn rec(state: &str) -> InstanceRecord {
        InstanceRecord {
            project: "default".into(),
            id: "abcdef0123".into(),
            name: "web".into(),
            host: "h2".into(),
            kind: "container".into(),
            image: "bb".into(),
            command: "sleep 9".into(),
            state: state.into(),
            status: "stale".into(),
            created: "2026-12-07T10:00:00Z".into(),
            started_at: Some("2026-12-07T10:00:00Z".into()),
            finished_at: Some("2026-12-07T10:01:00Z".into()),
            exit_code: (state == "exited").then_some(3),
            ports: vec![RecordPort {
                proto: "tcp".into(),
                host_ip: String::new(),
                host_port: 8080,
                container_port: 80,
            }],
            labels: [("app".to_string(), "web".to_string())].into(),
        }
    }

    #[test]
    fn native_rows_of_other_hosts_follow_the_engines_rules() {
        let now = pier_api::time::parse_rfc3339("2026-12-07T10:03:00Z").unwrap();
        let up = rec("running");
        let s = native_summary(&up, now);
        assert_eq!(s.host.as_deref(), Some("h2"));
        assert_eq!(s.state, ContainerStatus::Running);
        assert_eq!(s.status, "Up 3 minutes");
        assert_eq!(s.ports[0].host_port, 8080);
        assert_eq!(
            serde_json::to_value(&s).unwrap(),
            serde_json::json!({
                "id": "abcdef0123", "name": "web", "image": "bb", "command": "sleep 9",
                "created": "2026-12-07T10:00:00Z", "kind": "container", "state": "running",
                "status": "Up 3 minutes", "host": "h2",
                "ports": [{"proto": "tcp", "host_ip": "", "host_port": 8080, "container_port": 80}],
            })
        );
        let down = rec("exited");
        assert_eq!(
            native_summary(&down, now).status,
            "Exited (3) 2 minutes ago"
        );
        // The borrowed row serializes as the summary does.
        for r in [&up, &down] {
            assert_eq!(
                serde_json::to_value(native_row(r, now)).unwrap(),
                serde_json::to_value(native_summary(r, now)).unwrap()
            );
        }
        // A state this member does not know (a newer member's) reads as created.
        let odd = InstanceRecord {
            state: "hibernating".into(),
            ..rec("running")
        };
        assert_eq!(native_summary(&odd, now).state, ContainerStatus::Created);
        assert_eq!(native_keep(&up, false, None), Some(true));
        assert_eq!(native_keep(&down, false, None), Some(false));
        assert_eq!(native_keep(&down, true, None), Some(true));
        assert_eq!(native_keep(&down, false, Some("status=exited")), Some(true));
        assert_eq!(
            native_keep(&up, true, Some("name=we,label=app=web")),
            Some(true)
        );
        assert_eq!(native_keep(&up, true, Some("label=app=db")), Some(false));
        assert_eq!(native_keep(&up, true, Some("id=abc")), Some(true));
        assert_eq!(native_keep(&up, true, Some("id=bc")), Some(false));
        assert_eq!(native_keep(&down, true, Some("exited=3")), Some(true));
        assert_eq!(native_keep(&up, true, Some("nonsense")), None);
    }

    #[test]
    fn docker_rows_of_other_hosts_answer_the_filters_a_record_can() {
        let now = pier_api::time::parse_rfc3339("2026-12-07T10:03:00Z").unwrap();
        let up = rec("running");
        let row = docker_summary(&up, now);
        assert_eq!(row.created, now - 180);
        assert_eq!(
            serde_json::to_value(&row).unwrap(),
            serde_json::json!({
                "Id": "abcdef0123", "Names": ["/web"], "Image": "bb", "ImageID": "",
                "Command": "sleep 9", "Created": now - 180,
                "Ports": [{"IP": "0.0.0.0", "PrivatePort": 80, "PublicPort": 8080, "Type": "tcp"}],
                "Labels": {"app": "web"}, "State": "running", "Status": "Up 3 minutes",
                "HostConfig": {"NetworkMode": "default"}, "NetworkSettings": {"Networks": {}},
                "Mounts": [], "Host": "h2",
            })
        );
        // A stopped instance publishes nothing.
        let v = serde_json::to_value(docker_summary(&rec("exited"), now)).unwrap();
        assert_eq!(v["Ports"], serde_json::json!([]));
        assert_eq!(v["State"], "exited");
        assert!(
            v["Status"].as_str().unwrap().starts_with("Exited (3) "),
            "{v}"
        );
        let f = |s: &str| filters::parse(s).unwrap();
        assert!(docker_keep(&up, false, &Filters::new()));
        assert!(!docker_keep(&rec("exited"), false, &Filters::new()));
        assert!(docker_keep(
            &rec("exited"),
            false,
            &f(r#"{"status":["exited"]}"#)
        ));
        assert!(docker_keep(&up, false, &f(r#"{"name":["^web$"]}"#)));
        assert!(!docker_keep(&up, false, &f(r#"{"name":["^we$"]}"#)));
        assert!(docker_keep(&up, false, &f(r#"{"label":["app=web"]}"#)));
        assert!(docker_keep(&up, false, &f(r#"{"publish":["8080"]}"#)));
        assert!(docker_keep(&up, false, &f(r#"{"ancestor":["bb"]}"#)));
        // A filter a record cannot answer leaves the other hosts' rows out.
        assert!(!docker_keep(&up, false, &f(r#"{"network":["bridge"]}"#)));
    }
}
