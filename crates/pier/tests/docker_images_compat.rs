//! Root tier: images and files through the Docker API as Docker 20.10 handles them:
//! `commit`/`import --change` and `Parent`, image prune's filters and answer, a bad
//! `load`, `diff`, and volume prune by API version. Clients: the real docker CLI,
//! docker-py and raw API calls.

mod common;

use common::*;

fn docker_ok(d: &Daemon, args: &[&str]) -> String {
    let (code, out, err) = outcome(&d.docker("docker", args));
    assert_eq!(code, 0, "docker {}: {err}", args.join(" "));
    out
}

fn inspect(d: &Daemon, what: &str, format: &str) -> String {
    docker_ok(d, &["inspect", "-f", format, what])
        .trim()
        .to_string()
}

/// `docker commit --change` and `docker import --change` edit the new image's config
/// (both answered 501 before), a bad change is refused with nothing made, and a
/// committed image's `Parent` is the image it was made from (it was empty).
#[test]
#[ignore = "root tier: needs root; scripts/test.sh runs it (--run-ignored all)"]
fn commit_and_import_apply_changes_and_commit_records_the_parent() {
    let d = with_busybox(&[]);
    docker_ok(&d, &["run", "--name", "c1", "bb", "touch", "/made"]);
    docker_ok(
        &d,
        &[
            "commit",
            "--change",
            "EXPOSE 8000",
            "--change",
            r#"CMD ["echo", "from-change"]"#,
            "--change",
            "ENV GREETING=hi",
            "--change",
            // Substituted from the config's Env so far, as Docker does.
            "ENV WHO=$GREETING-there",
            "--change",
            "WORKDIR /srv",
            "--change",
            "USER nobody",
            "--change",
            "LABEL team=web",
            "c1",
            "committed:1",
        ],
    );
    assert_eq!(
        inspect(&d, "committed:1", "{{json .Config.ExposedPorts}}"),
        r#"{"8000/tcp":{}}"#
    );
    assert_eq!(
        inspect(&d, "committed:1", "{{json .Config.Cmd}}"),
        r#"["echo","from-change"]"#
    );
    let env = inspect(&d, "committed:1", "{{json .Config.Env}}");
    assert!(
        env.contains("GREETING=hi") && env.contains("WHO=hi-there"),
        "{env}"
    );
    assert_eq!(inspect(&d, "committed:1", "{{.Config.WorkingDir}}"), "/srv");
    assert_eq!(inspect(&d, "committed:1", "{{.Config.User}}"), "nobody");
    assert_eq!(
        inspect(&d, "committed:1", "{{index .Config.Labels \"team\"}}"),
        "web"
    );
    let base = inspect(&d, "bb", "{{.Id}}");
    assert_eq!(inspect(&d, "committed:1", "{{.Parent}}"), base);
    // The image runs with its new config.
    let out = docker_ok(&d, &["run", "--rm", "committed:1"]);
    assert_eq!(out.trim(), "from-change");

    // A change only a build can make is refused, naming it, and makes no image.
    let before = docker_ok(&d, &["images", "-q", "-a"]);
    let (code, _, err) = outcome(&d.docker(
        "docker",
        &["commit", "--change", "RUN true", "c1", "committed:2"],
    ));
    assert_ne!(code, 0);
    assert!(err.contains("RUN cannot be applied"), "{err}");
    assert_eq!(docker_ok(&d, &["images", "-q", "-a"]), before);

    // docker import --change, through the CLI and docker-py.
    let tar = write_file(&d, "rootfs.tar", &busybox_rootfs_tar());
    docker_ok(
        &d,
        &[
            "import",
            "--change",
            r#"ENTRYPOINT ["/bin/echo"]"#,
            "--change",
            "CMD imported",
            &tar,
            "imported:1",
        ],
    );
    assert_eq!(
        docker_ok(&d, &["run", "--rm", "imported:1"]).trim(),
        "/bin/sh -c imported"
    );
    let (code, out, err) = d.docker_py(&format!(
        r#"
import docker
c = docker.from_env(version="1.41").api
with open({tar:?}, "rb") as f:
    c.import_image_from_data(f.read(), repository="imported", tag="2", changes=["USER postgres", 'CMD ["true"]'])
cfg = c.inspect_image("imported:2")["Config"]
print(cfg["User"], cfg["Cmd"])
"#
    ));
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), "postgres ['true']");
}

/// `docker image prune` with `label` and `until` filters (501 before), and an answer
/// that lists the tags removed (`Untagged`) as Docker's does.
#[test]
#[ignore = "root tier: needs root; scripts/test.sh runs it (--run-ignored all)"]
fn image_prune_filters_and_reports_untagged() {
    let d = with_busybox(&[]);
    for (name, label) in [("keep:1", "keep=yes"), ("drop:1", "drop=yes")] {
        docker_ok(
            &d,
            &[
                "run",
                "--name",
                name.replace(':', "-").as_str(),
                "bb",
                "touch",
                &format!("/{name}"),
            ],
        );
        docker_ok(
            &d,
            &[
                "commit",
                "--change",
                &format!("LABEL {label}"),
                &name.replace(':', "-"),
                name,
            ],
        );
        docker_ok(&d, &["rm", &name.replace(':', "-")]);
    }
    // `until` a day ago keeps everything made now.
    let out = docker_ok(&d, &["image", "prune", "-a", "-f", "--filter", "until=24h"]);
    assert!(!out.contains("untagged"), "{out}");
    docker_ok(&d, &["inspect", "drop:1"]);
    let drop_id = inspect(&d, "drop:1", "{{.Id}}");
    let out = docker_ok(
        &d,
        &["image", "prune", "-a", "-f", "--filter", "label=drop=yes"],
    );
    assert!(out.contains("untagged: drop:1"), "{out}");
    assert!(out.contains(&format!("deleted: {drop_id}")), "{out}");
    docker_ok(&d, &["inspect", "keep:1"]);
    docker_ok(&d, &["inspect", "bb"]);
    // label! picks the others; bb (unlabelled, and the parent of keep:1) stays while
    // keep:1 does, and the raw answer's entries say what went.
    let (status, body) = docker_api(
        &d,
        "POST",
        "/images/prune?filters=%7B%22dangling%22%3A%5B%22false%22%5D%2C%22label!%22%3A%5B%22nothing%22%5D%7D",
        b"",
    );
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let entries = v["ImagesDeleted"].as_array().expect("entries");
    assert!(entries.iter().any(|e| e["Untagged"] == "keep:1"), "{body}");
    assert!(
        entries.iter().any(|e| e["Untagged"] == "bb:latest"),
        "{body}"
    );
    assert!(v["SpaceReclaimed"].as_u64().unwrap() > 0, "{body}");
    let (status, body) = docker_api(
        &d,
        "POST",
        "/images/prune?filters=%7B%22nope%22%3A%5B%22x%22%5D%7D",
        b"",
    );
    assert_eq!(status, 400, "{body}");
}

/// A bad archive given to `POST /images/load` answers 200 with the error as a line of
/// the stream, as Docker does (it answered 400): docker-py raises ImageLoadError and the
/// CLI prints the error and fails.
#[test]
#[ignore = "root tier: needs root; scripts/test.sh runs it (--run-ignored all)"]
fn a_bad_load_is_an_error_line_in_the_stream() {
    let d = with_busybox(&[]);
    let (status, body) = docker_api(
        &d,
        "POST",
        "/images/load",
        b"this is not a tar archive at all",
    );
    assert_eq!(status, 200, "{body}");
    let line: serde_json::Value = serde_json::from_str(body.trim()).unwrap();
    assert!(line["errorDetail"]["message"].as_str().is_some(), "{body}");
    assert_eq!(line["error"], line["errorDetail"]["message"]);
    let (code, _, err) = d.docker_py(
        r#"
import docker
try:
    docker.from_env(version="1.41").images.load(b"abc")
except docker.errors.ImageLoadError as e:
    print("ImageLoadError", e)
    raise SystemExit(0)
raise SystemExit("no ImageLoadError")
"#,
    );
    assert_eq!(code, 0, "{err}");
    let bad = write_file(&d, "bad.tar", b"garbage");
    let (code, _, err) = outcome(&d.docker("docker", &["load", "-i", &bad]));
    assert_ne!(code, 0);
    assert!(err.contains("not a valid image archive"), "{err}");
}

/// `docker diff` lists what the container changed and not the directories the runtime
/// only copied up for its own mount points (`/etc` for hosts and resolv.conf was listed
/// as changed); a file made in a directory still marks the directory changed, as Docker.
#[test]
#[ignore = "root tier: needs root; scripts/test.sh runs it (--run-ignored all)"]
fn diff_lists_only_what_the_container_changed() {
    let d = with_busybox(&[]);
    docker_ok(&d, &["run", "--name", "t1", "bb", "touch", "/test"]);
    assert_eq!(docker_ok(&d, &["diff", "t1"]).trim(), "A /test");
    docker_ok(&d, &["run", "--name", "t2", "bb", "touch", "/etc/new"]);
    let out = docker_ok(&d, &["diff", "t2"]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines, ["C /etc", "A /etc/new"], "{out}");
}

/// Volume prune follows the request's API version: up to 1.41 (Docker 20.10) every
/// unused volume goes, named ones too; from 1.42 only anonymous ones unless `all`; and
/// `label` filters pick among them (refused as unsupported before).
#[test]
#[ignore = "root tier: needs root; scripts/test.sh runs it (--run-ignored all)"]
fn volume_prune_follows_the_api_version_and_labels() {
    let d = with_busybox(&[]);
    for (name, label) in [("named1", "a=1"), ("named2", "a=2"), ("named3", "b=1")] {
        docker_ok(&d, &["volume", "create", "--label", label, name]);
    }
    docker_ok(&d, &["volume", "create", "used"]);
    docker_ok(&d, &["create", "--name", "user", "-v", "used:/data", "bb"]);
    // 1.43: named volumes stay without `all`.
    let (status, body) = docker_api(&d, "POST", "/v1.43/volumes/prune", b"");
    assert_eq!(status, 200, "{body}");
    assert!(!body.contains("named1"), "{body}");
    // 1.41, with a label filter: only the volume it picks.
    let (status, body) = docker_api(
        &d,
        "POST",
        "/v1.41/volumes/prune?filters=%7B%22label%22%3A%5B%22a%3D1%22%5D%7D",
        b"",
    );
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["VolumesDeleted"], serde_json::json!(["named1"]), "{body}");
    // label!: the others but b=1.
    let (_, body) = docker_api(
        &d,
        "POST",
        "/v1.41/volumes/prune?filters=%7B%22label!%22%3A%5B%22b%22%5D%7D",
        b"",
    );
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["VolumesDeleted"], serde_json::json!(["named2"]), "{body}");
    // docker-py at 1.41 prunes the rest, except the volume a container uses.
    let (code, out, err) = d.docker_py(
        r#"
import docker
print(sorted(docker.from_env(version="1.41").api.prune_volumes()["VolumesDeleted"]))
"#,
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), "['named3']");
    docker_ok(&d, &["volume", "inspect", "used"]);
    docker_ok(&d, &["rm", "user"]);
}

/// `docker cp` into and out of a stopped (or never started) container sees its volumes
/// and bind mounts, as Docker mounts them for the copy (before, the copy went to the
/// rootfs under them, or found nothing: 404). A read-only one refuses the write, and
/// nothing stays mounted in the daemon's namespace after the copy.
#[test]
#[ignore = "root tier: needs root; scripts/test.sh runs it (--run-ignored all)"]
fn cp_on_a_stopped_container_sees_its_volumes() {
    let d = with_busybox(&[]);
    let host_dir = d.dir.path().join("hostdir");
    std::fs::create_dir(&host_dir).unwrap();
    std::fs::write(host_dir.join("from-host"), "host\n").unwrap();
    let bind = format!("{}:/bind", host_dir.display());
    docker_ok(
        &d,
        &[
            "create",
            "--name",
            "c",
            "-v",
            "data:/vol",
            "-v",
            "/anon",
            "-v",
            &bind,
            "-v",
            "ro:/ro:ro",
            "bb",
            "cat",
            "/vol/in",
            "/anon/in",
            "/bind/from-host",
        ],
    );
    let file = write_file(&d, "in", b"copied\n");
    for dest in ["c:/vol/in", "c:/anon/in"] {
        docker_ok(&d, &["cp", &file, dest]);
    }
    let (code, _, err) = outcome(&d.docker("docker", &["cp", &file, "c:/ro/in"]));
    assert_ne!(code, 0, "a copy into a read-only volume succeeded");
    assert!(err.to_lowercase().contains("read-only"), "{err}");
    // Out of the never-started container: from the bind mount.
    let out = d.docker("docker", &["cp", "c:/bind/from-host", "-"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("host\n"));
    let mounts = std::fs::read_to_string(format!("/proc/{}/mountinfo", d.pid())).unwrap();
    assert!(
        !mounts.contains("/vol ") && !mounts.contains("/bind "),
        "the copy's mounts stayed in the daemon's namespace:\n{mounts}"
    );
    // The container, started, sees what was copied in.
    let out = docker_ok(&d, &["start", "-a", "c"]);
    assert_eq!(out, "copied\ncopied\nhost\n");
    // Stopped now: a file the container wrote in its volume comes out.
    docker_ok(
        &d,
        &[
            "run",
            "--name",
            "w",
            "-v",
            "data:/vol",
            "bb",
            "sh",
            "-c",
            "echo written > /vol/out",
        ],
    );
    let out = d.docker("docker", &["cp", "w:/vol/out", "-"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("written\n"));
    docker_ok(&d, &["rm", "c", "w"]);
}

/// `GET /distribution/{name}/json` asks the image's registry (its mirrors first) for its
/// manifest and platforms without pulling, as docker-py's `inspect_distribution` does
/// (answered 501 before); a name the registry lacks is a 404.
#[test]
#[ignore = "root tier: needs root; scripts/test.sh runs it (--run-ignored all)"]
fn distribution_inspect_asks_the_registry() {
    let d = Daemon::start_with(&["--registry-addr", "127.0.0.1:5000"]);
    d.ok(&["image", "from-host", "bb", BUSYBOX]);
    d.ok(&["tag", "bb", "127.0.0.1:5000/team/bb:1"]);
    d.ok(&["push", "127.0.0.1:5000/team/bb:1"]);
    d.ok(&["rmi", "127.0.0.1:5000/team/bb:1"]);
    let (code, out, err) = d.docker_py(
        r#"
import docker
c = docker.from_env(version="1.41").api
data = c.inspect_distribution("127.0.0.1:5000/team/bb:1")
print(data["Descriptor"]["digest"], data["Descriptor"]["size"] > 0, data["Platforms"])
try:
    c.inspect_distribution("127.0.0.1:5000/team/nothing:1")
except docker.errors.NotFound:
    print("NotFound")
"#,
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("sha256:"), "{out}");
    assert!(
        out.contains("True [{'architecture': 'amd64', 'os': 'linux'}]"),
        "{out}"
    );
    assert!(out.trim_end().ends_with("NotFound"), "{out}");
    // Nothing was pulled.
    let (status, _) = docker_api(&d, "GET", "/images/127.0.0.1:5000%2Fteam%2Fbb:1/json", b"");
    assert_eq!(status, 404);
}

/// After a push and a pull an image has `RepoDigests` (`docker images --digests`; it was
/// always empty); push progress lists the layers only and ends with the manifest's own
/// size (it listed the config and printed the image's size); a pull by digest names the
/// digest, never "latest".
#[test]
#[ignore = "root tier: needs root; scripts/test.sh runs it (--run-ignored all)"]
fn registry_digests_and_progress_as_docker_shows_them() {
    let d = Daemon::start_with(&["--registry-addr", "127.0.0.1:5000"]);
    d.ok(&["image", "from-host", "bb", BUSYBOX]);
    docker_ok(&d, &["tag", "bb", "127.0.0.1:5000/team/bb:1"]);
    let out = docker_ok(&d, &["push", "127.0.0.1:5000/team/bb:1"]);
    let layers = inspect(&d, "bb", "{{len .RootFS.Layers}}");
    let pushed_lines = out
        .lines()
        .filter(|l| l.ends_with(": Pushed") || l.ends_with(": Layer already exists"))
        .count();
    assert_eq!(pushed_lines.to_string(), layers, "{out}");
    let (_, body) = docker_api(
        &d,
        "GET",
        "/distribution/127.0.0.1:5000/team/bb:1/json",
        b"",
    );
    let desc: serde_json::Value = serde_json::from_str(&body).unwrap();
    let (digest, size) = (
        desc["Descriptor"]["digest"].as_str().unwrap().to_string(),
        desc["Descriptor"]["size"].as_u64().unwrap(),
    );
    assert!(
        out.contains(&format!("1: digest: {digest} size: {size}")),
        "{out}"
    );
    assert_eq!(
        inspect(&d, "bb", "{{json .RepoDigests}}"),
        format!(r#"["127.0.0.1:5000/team/bb@{digest}"]"#)
    );
    // Pulled by digest into a store that lacks it: the digest is named, not "latest".
    docker_ok(&d, &["rmi", "-f", "bb", "127.0.0.1:5000/team/bb:1"]);
    let by_digest = format!("127.0.0.1:5000/team/bb@{digest}");
    let out = docker_ok(&d, &["pull", &by_digest]);
    assert!(!out.contains("latest"), "{out}");
    assert!(
        out.contains(&format!("{digest}: Pulling from team/bb")),
        "{out}"
    );
    let out = docker_ok(
        &d,
        &[
            "images",
            "--digests",
            "--format",
            "{{.Repository}} {{.Digest}}",
        ],
    );
    assert!(
        out.contains(&format!("127.0.0.1:5000/team/bb {digest}")),
        "{out}"
    );
}

/// `system df` counts a layer two images share once, and gives each image its shared
/// size (it said -1, so the CLI showed every image as all reclaimable).
#[test]
#[ignore = "root tier: needs root; scripts/test.sh runs it (--run-ignored all)"]
fn system_df_counts_shared_layers_once() {
    let d = with_busybox(&[]);
    docker_ok(
        &d,
        &["run", "--name", "c", "bb", "sh", "-c", "echo hi > /f"],
    );
    docker_ok(&d, &["commit", "c", "child:1"]);
    docker_ok(&d, &["rm", "c"]);
    let (_, body) = docker_api(&d, "GET", "/system/df", b"");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let images = v["Images"].as_array().unwrap();
    let size_of = |tag: &str| {
        images
            .iter()
            .find(|i| i["RepoTags"].as_array().unwrap().iter().any(|t| t == tag))
            .unwrap_or_else(|| panic!("{tag} missing: {body}"))
            .clone()
    };
    let (base, child) = (size_of("bb:latest"), size_of("child:1"));
    let base_size = base["Size"].as_u64().unwrap();
    assert_eq!(base["SharedSize"].as_u64(), Some(base_size), "{body}");
    assert_eq!(child["SharedSize"].as_u64(), Some(base_size), "{body}");
    let child_size = child["Size"].as_u64().unwrap();
    assert!(child_size > base_size, "{body}");
    assert_eq!(v["LayersSize"].as_u64(), Some(child_size), "{body}");
    // The native API and CLI count the same way.
    let n = d.json(&["system", "df"]);
    assert_eq!(n["layers_size"].as_u64(), Some(child_size), "{n}");
    let native = |tag: &str| {
        n["images"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["repo_tags"].as_array().unwrap().iter().any(|t| t == tag))
            .unwrap_or_else(|| panic!("{tag} missing: {n}"))["shared_size"]
            .as_u64()
    };
    assert_eq!(native("bb:latest"), Some(base_size), "{n}");
    assert_eq!(native("child:1"), Some(base_size), "{n}");
    // Its table's SIZE is the docker CLI's: the layers on disk.
    let docker_size = docker_ok(&d, &["system", "df", "--format", "{{.Type}} {{.Size}}"]);
    let docker_size = docker_size
        .lines()
        .find(|l| l.starts_with("Images"))
        .unwrap();
    let table = d.ok(&["system", "df"]);
    let images_row = table.lines().find(|l| l.starts_with("Images")).unwrap();
    let size = docker_size.split_whitespace().nth(1).unwrap();
    assert_eq!(images_row.split_whitespace().nth(3), Some(size), "{table}");
    // The CLI's table: an image a container uses is not reclaimable, bar what it
    // shares (Docker's formula); with child gone, bb shares nothing: none of it is.
    docker_ok(&d, &["rmi", "child:1"]);
    docker_ok(&d, &["create", "bb"]);
    let out = docker_ok(
        &d,
        &["system", "df", "--format", "{{.Type}} {{.Reclaimable}}"],
    );
    let images_line = out.lines().find(|l| l.starts_with("Images")).unwrap();
    assert!(images_line.ends_with("(0%)"), "{out}");
    let table = d.ok(&["system", "df"]);
    let images_row = table.lines().find(|l| l.starts_with("Images")).unwrap();
    assert!(images_row.trim_end().ends_with("(0%)"), "{table}");
}

/// `logs --since` and `--until` compare to the nanosecond, as Docker's do: two lines in
/// one second are told apart (both were kept or both dropped, whole seconds compared).
#[test]
#[ignore = "root tier: needs root; scripts/test.sh runs it (--run-ignored all)"]
fn logs_since_and_until_are_sub_second() {
    let d = with_busybox(&[]);
    for attempt in 0..5 {
        let name = format!("l{attempt}");
        docker_ok(
            &d,
            &[
                "run",
                "--name",
                &name,
                "bb",
                "sh",
                "-c",
                "echo a; sleep 0.2; echo b",
            ],
        );
        let out = docker_ok(&d, &["logs", "-t", &name]);
        let stamps: Vec<&str> = out.lines().map(|l| l.split(' ').next().unwrap()).collect();
        assert_eq!(stamps.len(), 2, "{out}");
        if stamps[0][..19] != stamps[1][..19] {
            continue; // not in one second: try again
        }
        let since = docker_ok(&d, &["logs", "--since", stamps[1], &name]);
        assert_eq!(since, "b\n");
        let until = docker_ok(&d, &["logs", "--until", stamps[0], &name]);
        assert_eq!(until, "a\n");
        return;
    }
    panic!("two lines 0.2 s apart never fell in one second");
}
