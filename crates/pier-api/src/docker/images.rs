//! Docker's image shapes: a listing's entry, `docker image inspect` and `history`.

use serde_json::{json, Value};

use super::{unix, ZERO_TIME};
use crate::types::{HistoryEntry, ImageInspect, ImageSummary};

/// One entry of `GET /images/json` (its `Labels` are the listing's to fill).
pub fn summary_json(i: &ImageSummary) -> Value {
    json!({
        "Id": i.id.as_str(),
        "ParentId": "",
        "RepoTags": i.repo_tags,
        "RepoDigests": i.repo_digests,
        "Created": unix(i.created.as_deref()),
        "Size": i.size,
        "SharedSize": -1,
        "VirtualSize": i.size,
        "Labels": null,
        "Containers": i.containers,
    })
}

/// The empty container config Docker shows where an image has none.
pub fn default_config() -> Value {
    json!({
        "Hostname": "", "Domainname": "", "User": "", "AttachStdin": false,
        "AttachStdout": false, "AttachStderr": false, "Tty": false, "OpenStdin": false,
        "StdinOnce": false, "Env": null, "Cmd": null, "Image": "", "Volumes": null,
        "WorkingDir": "", "Entrypoint": null, "OnBuild": null, "Labels": null,
    })
}

/// `docker image inspect`: `raw` is the image's OCI config, `lower_dirs` its layer
/// directories, top first.
pub fn inspect_json(i: &ImageInspect, raw: &Value, lower_dirs: &[String]) -> Value {
    let mut config = default_config();
    if let (Some(c), Some(img)) = (config.as_object_mut(), i.config.as_object()) {
        for (k, v) in img {
            c.insert(k.clone(), v.clone());
        }
    }
    json!({
        "Id": i.summary.id.as_str(),
        "RepoTags": i.summary.repo_tags,
        "RepoDigests": i.summary.repo_digests,
        "Parent": i.parent.as_ref().map(|p| p.as_str()).unwrap_or(""),
        "Comment": raw["comment"].as_str().unwrap_or(""),
        "Created": i.summary.created.clone().unwrap_or_else(|| ZERO_TIME.into()),
        "Container": "",
        "ContainerConfig": default_config(),
        "DockerVersion": "",
        "Author": raw["author"].as_str().unwrap_or(""),
        "Config": config,
        "Architecture": i.architecture,
        "Variant": raw["variant"].as_str(),
        "Os": i.os,
        "Size": i.summary.size,
        "VirtualSize": i.summary.size,
        "GraphDriver": {"Name": "overlay", "Data": {"LowerDir": lower_dirs.join(":")}},
        "RootFS": {
            "Type": "layers",
            "Layers": i.layers.iter().map(|l| l.diff_id.as_str()).collect::<Vec<_>>(),
        },
        "Metadata": {"LastTagTime": ZERO_TIME},
    })
}

/// `docker history`: the newest step carries the image's ID and tags.
pub fn history_json(id: &str, tags: &[String], h: &[HistoryEntry]) -> Value {
    let list: Vec<Value> = h
        .iter()
        .enumerate()
        .map(|(i, e)| {
            json!({
                "Id": if i == 0 { id.to_string() } else { "<missing>".to_string() },
                "Created": unix(e.created.as_deref()),
                "CreatedBy": e.created_by,
                "Tags": if i == 0 { json!(tags) } else { Value::Null },
                "Size": e.size,
                "Comment": e.comment,
            })
        })
        .collect();
    Value::Array(list)
}

/// A pull's or push's progress (`pull`: a pull's verbs, else a push's) as a line of
/// Docker's JSON progress stream, keyed by the layer's short ID; None for lines Docker
/// does not show.
pub fn progress_line(p: &crate::registry::TransferProgress, pull: bool) -> Option<Value> {
    let id = p.blob.as_ref()?.hex()[..12].to_string();
    let status = match (p.status.as_str(), pull) {
        ("waiting", true) => "Pulling fs layer",
        ("waiting", false) => "Preparing",
        ("exists", true) => "Already exists",
        ("exists", false) => "Layer already exists",
        ("downloading", _) => "Downloading",
        ("uploading", _) => "Pushing",
        ("done", true) => "Pull complete",
        ("done", false) => "Pushed",
        _ => return None,
    };
    let mut v = json!({"status": status, "progressDetail": {}, "id": id});
    if matches!(p.status.as_str(), "downloading" | "uploading") {
        v["progressDetail"] = json!({"current": p.current, "total": p.total});
    }
    Some(v)
}

/// The last line of a progress stream that failed after it began (the CLI prints it).
pub fn error_line(message: &str) -> Value {
    json!({"errorDetail": {"message": message}, "error": message})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_names_only_the_newest_step() {
        let e: HistoryEntry = serde_json::from_value(json!({
            "layer": null, "created": "1970-01-01T00:00:10Z", "created_by": "RUN x",
            "size": 3, "comment": "", "empty_layer": false,
        }))
        .unwrap();
        let v = history_json("sha256:a", &["a:1".into()], &[e.clone(), e]);
        assert_eq!(v[0]["Id"], "sha256:a");
        assert_eq!(v[0]["Tags"], json!(["a:1"]));
        assert_eq!(v[0]["Created"], 10);
        assert_eq!(v[1]["Id"], "<missing>");
        assert_eq!(v[1]["Tags"], Value::Null);
    }

    #[test]
    fn transfer_progress_reads_as_dockers_progress_stream() {
        use crate::registry::TransferProgress;
        let blob: crate::Digest = format!("sha256:{}", "ab".repeat(32)).parse().unwrap();
        let p = |status: &str| TransferProgress {
            blob: Some(blob.clone()),
            status: status.into(),
            current: 5,
            total: 9,
            message: None,
        };
        let line = progress_line(&p("downloading"), true).unwrap();
        assert_eq!(
            line,
            json!({"status": "Downloading", "progressDetail": {"current": 5, "total": 9}, "id": "abababababab"})
        );
        assert_eq!(
            progress_line(&p("done"), false).unwrap()["status"],
            "Pushed"
        );
        assert_eq!(
            progress_line(&p("exists"), true).unwrap()["progressDetail"],
            json!({})
        );
        assert!(progress_line(&p("complete"), true).is_none());
        let whole = TransferProgress {
            blob: None,
            ..p("waiting")
        };
        assert!(progress_line(&whole, true).is_none());
        assert_eq!(error_line("no")["errorDetail"]["message"], "no");
    }
}
