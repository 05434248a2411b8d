//! The built-in OCI registry: skopeo and podman push and pull through it, and every part
//! of the distribution API, with its error cases, over raw HTTP.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Output};

use common::*;

const ADDR: &str = "127.0.0.1:5000";

/// A daemon serving its registry on 127.0.0.1:5000 inside its own network namespace.
fn registry_daemon() -> Daemon {
    Daemon::start_with(&["--registry-addr", ADDR])
}

/// Runs `program` inside the daemon's network namespace.
fn run_in(d: &Daemon, program: &str, args: &[&str]) -> Output {
    d.in_netns(program).args(args).output().unwrap()
}

fn ok_in(d: &Daemon, program: &str, args: &[&str]) -> String {
    let out = run_in(d, program, args);
    assert!(
        out.status.success(),
        "{program} {args:?} failed:\n{}\n{}\ndaemon log:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        d.log()
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Runs `f` on a thread inside the daemon's network namespace (where the registry is).
fn in_ns<T: Send + 'static>(d: &Daemon, f: impl FnOnce() -> T + Send + 'static) -> T {
    let ns = std::fs::File::open(d.netns_path()).unwrap();
    std::thread::spawn(move || {
        use std::os::fd::AsFd;
        rustix::thread::move_into_link_name_space(
            ns.as_fd(),
            Some(rustix::thread::LinkNameSpaceType::Network),
        )
        .unwrap();
        f()
    })
    .join()
    .unwrap()
}

#[derive(Debug)]
struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&self.body)))
    }
    /// The first error code of an OCI error body.
    fn code(&self) -> String {
        self.json()["errors"][0]["code"]
            .as_str()
            .unwrap_or("")
            .to_string()
    }
}

fn parse_response(raw: &[u8]) -> Resp {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no header end in {:?}", String::from_utf8_lossy(raw)));
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    let chunked = headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    if chunked {
        let mut out = Vec::new();
        let mut rest = &body[..];
        loop {
            let end = rest.windows(2).position(|w| w == b"\r\n").unwrap();
            let n = usize::from_str_radix(std::str::from_utf8(&rest[..end]).unwrap().trim(), 16)
                .unwrap();
            if n == 0 {
                break;
            }
            out.extend_from_slice(&rest[end + 2..end + 2 + n]);
            rest = &rest[end + 2 + n + 2..];
        }
        body = out;
    }
    Resp {
        status,
        headers,
        body,
    }
}

/// Sends one raw HTTP request to the registry and reads the whole answer. With `cut`,
/// only that many bytes of the body are sent before the connection is shut.
fn send(
    d: &Daemon,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    cut: Option<usize>,
) -> Resp {
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {ADDR}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if !headers
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case("transfer-encoding"))
    {
        req.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    req.push_str("\r\n");
    let body = body.to_vec();
    in_ns(d, move || {
        let mut s = TcpStream::connect(ADDR).unwrap();
        s.write_all(req.as_bytes()).unwrap();
        match cut {
            Some(n) => {
                s.write_all(&body[..n]).unwrap();
                s.flush().unwrap();
                std::thread::sleep(std::time::Duration::from_millis(200));
                s.shutdown(std::net::Shutdown::Both).unwrap();
                Resp {
                    status: 0,
                    headers: vec![],
                    body: vec![],
                }
            }
            None => {
                // A server may answer (and close) before taking the whole body.
                let _ = s.write_all(&body);
                let mut raw = Vec::new();
                let mut buf = [0u8; 65536];
                while let Ok(n) = s.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    raw.extend_from_slice(&buf[..n]);
                }
                parse_response(&raw)
            }
        }
    })
}

fn get(d: &Daemon, path: &str) -> Resp {
    send(d, "GET", path, &[], &[], None)
}

fn digest_of(b: &[u8]) -> String {
    format!("sha256:{}", sha256_hex(b))
}

/// Pushes a blob in one request; returns its digest.
fn push_blob(d: &Daemon, repo: &str, data: &[u8]) -> String {
    let dg = digest_of(data);
    let r = send(
        d,
        "POST",
        &format!("/v2/{repo}/blobs/uploads/?digest={dg}"),
        &[("Content-Type", "application/octet-stream")],
        data,
        None,
    );
    assert_eq!(r.status, 201, "{r:?}");
    dg
}

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

/// An image config with the given layers (as uncompressed tars).
fn config_for(layers: &[&[u8]], env: &[&str]) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64", "os": "linux", "created": "2026-01-02T03:04:05Z",
        "config": { "Env": env, "Cmd": ["/bin/sh"], "Labels": { "team": "blue" } },
        "rootfs": { "type": "layers", "diff_ids": layers.iter().map(|l| digest_of(l)).collect::<Vec<_>>() },
    }))
    .unwrap()
}

/// Pushes config and layers, then a manifest naming them; returns the manifest digest.
fn push_image(d: &Daemon, repo: &str, tag: &str, layers: &[&[u8]]) -> String {
    let config = config_for(layers, &["PATH=/bin"]);
    let cd = push_blob(d, repo, &config);
    let mut descs = Vec::new();
    for l in layers {
        let ld = push_blob(d, repo, l);
        descs.push(serde_json::json!({
            "mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": ld, "size": l.len()
        }));
    }
    let m = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": { "mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": config.len() },
        "layers": descs,
    }))
    .unwrap();
    let r = send(
        d,
        "PUT",
        &format!("/v2/{repo}/manifests/{tag}"),
        &[("Content-Type", OCI_MANIFEST)],
        &m,
        None,
    );
    assert_eq!(r.status, 201, "{r:?} {}", String::from_utf8_lossy(&r.body));
    let md = digest_of(&m);
    assert_eq!(r.header("Docker-Content-Digest"), Some(md.as_str()));
    md
}

fn layer_tar(name: &str, content: &[u8]) -> Vec<u8> {
    tar_of(&[(name.to_string(), content.to_vec())])
}

#[test]
#[ignore = "root tier: needs root; scripts/test.sh runs it (--run-ignored all)"]
fn skopeo_and_podman_push_and_pull() {
    require_root_and_tools(&["skopeo", "podman"]);
    let d = registry_daemon();
    let dir = d.dir.path().to_path_buf();
    let base = get(&d, "/v2/");
    assert_eq!(base.status, 200);
    assert_eq!(
        base.header("Docker-Distribution-API-Version"),
        Some("registry/2.0")
    );

    // docker-archive -> registry.
    let archive = write_file(
        &d,
        "bb.tar",
        &docker_archive("localhost/bb:1", &[busybox_rootfs_tar()], None),
    );
    let dst = format!("docker://{ADDR}/test/bb:1");
    ok_in(
        &d,
        "skopeo",
        &[
            "copy",
            "--dest-tls-verify=false",
            &format!("docker-archive:{archive}"),
            &dst,
        ],
    );
    let inspected: serde_json::Value = serde_json::from_str(&ok_in(
        &d,
        "skopeo",
        &["inspect", "--tls-verify=false", &dst],
    ))
    .unwrap();
    assert_eq!(inspected["Env"][0], "PATH=/bin");

    // OCI layout -> registry (as an OCI manifest), and back out to both formats.
    let layout = dir.join("layout");
    ok_in(
        &d,
        "skopeo",
        &[
            "copy",
            &format!("docker-archive:{archive}"),
            &format!("oci:{}:v1", layout.display()),
        ],
    );
    ok_in(
        &d,
        "skopeo",
        &[
            "copy",
            "--dest-tls-verify=false",
            "--format",
            "oci",
            &format!("oci:{}:v1", layout.display()),
            &format!("docker://{ADDR}/test/oci:v1"),
        ],
    );
    let raw = ok_in(
        &d,
        "skopeo",
        &[
            "inspect",
            "--raw",
            "--tls-verify=false",
            &format!("docker://{ADDR}/test/oci:v1"),
        ],
    );
    assert!(raw.contains(OCI_MANIFEST), "{raw}");
    let back = dir.join("back");
    ok_in(
        &d,
        "skopeo",
        &[
            "copy",
            "--src-tls-verify=false",
            &format!("docker://{ADDR}/test/oci:v1"),
            &format!("oci:{}:v1", back.display()),
        ],
    );
    let out_archive = dir.join("out.tar");
    ok_in(
        &d,
        "skopeo",
        &[
            "copy",
            "--src-tls-verify=false",
            &dst,
            &format!("docker-archive:{}:localhost/bb:1", out_archive.display()),
        ],
    );
    // What came back loads into the engine and runs.
    d.ok(&["image", "load", "-i", out_archive.to_str().unwrap()]);
    let tags = ok_in(
        &d,
        "skopeo",
        &[
            "list-tags",
            "--tls-verify=false",
            &format!("docker://{ADDR}/test/bb"),
        ],
    );
    assert!(tags.contains("\"1\""), "{tags}");

    // Podman pulls what skopeo pushed, retags and pushes it back.
    let pr = dir.join("podman");
    let podman = |args: &[&str]| {
        let mut a: Vec<String> = vec![
            "--root".into(),
            pr.join("root").display().to_string(),
            "--runroot".into(),
            pr.join("run").display().to_string(),
            "--storage-driver".into(),
            "vfs".into(),
            "--events-backend".into(),
            "file".into(),
        ];
        a.extend(args.iter().map(|s| s.to_string()));
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        ok_in(&d, "podman", &a)
    };
    podman(&["pull", "--tls-verify=false", &format!("{ADDR}/test/bb:1")]);
    podman(&[
        "tag",
        &format!("{ADDR}/test/bb:1"),
        &format!("{ADDR}/podman/bb:2"),
    ]);
    podman(&["push", "--tls-verify=false", &format!("{ADDR}/podman/bb:2")]);
    podman(&["rmi", "-a", "-f"]);
    podman(&["pull", "--tls-verify=false", &format!("{ADDR}/podman/bb:2")]);
    let catalog = get(&d, "/v2/_catalog").json();
    assert_eq!(
        catalog["repositories"],
        serde_json::json!(["podman/bb", "test/bb", "test/oci"])
    );
    assert!(
        d.tmp_is_empty()
            || std::fs::read_dir(d.root.join("images/tmp/uploads"))
                .unwrap()
                .count()
                == 0
    );
}

#[test]
#[ignore = "root tier: needs root; scripts/test.sh runs it (--run-ignored all)"]
fn distribution_api_uploads_manifests_and_errors() {
    require_root_and_tools(&[]);
    let d = registry_daemon();
    let blobs_before = std::fs::read_dir(d.root.join("images/oci/blobs/sha256"))
        .unwrap()
        .count();
    let visible = |repo: &str, dg: &str| {
        send(
            &d,
            "HEAD",
            &format!("/v2/{repo}/blobs/{dg}"),
            &[],
            &[],
            None,
        )
        .status
    };

    // Chunked upload: out-of-order chunks get 416; an interrupted chunk resumes.
    let data: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let dg = digest_of(&data);
    let r = send(&d, "POST", "/v2/api/one/blobs/uploads/", &[], &[], None);
    assert_eq!(r.status, 202, "{r:?}");
    let loc = r.header("Location").unwrap().to_string();
    let r = send(
        &d,
        "PATCH",
        &loc,
        &[("Content-Range", "0-99999")],
        &data[..100_000],
        None,
    );
    assert_eq!((r.status, r.header("Range")), (202, Some("0-99999")));
    let r = send(
        &d,
        "PATCH",
        &loc,
        &[("Content-Range", "150000-199999")],
        &data[150_000..200_000],
        None,
    );
    assert_eq!(r.status, 416, "{r:?}");
    assert_eq!(r.code(), "BLOB_UPLOAD_INVALID");
    // A chunk cut off mid-body: the session keeps what arrived.
    send(
        &d,
        "PATCH",
        &loc,
        &[("Content-Range", "100000-199999")],
        &data[100_000..200_000],
        Some(40_000),
    );
    let st = get(&d, &loc);
    assert_eq!(st.status, 204);
    let have: u64 = st
        .header("Range")
        .unwrap()
        .split('-')
        .nth(1)
        .unwrap()
        .parse::<u64>()
        .unwrap()
        + 1;
    assert!((100_000..=140_000).contains(&have), "{have}");
    assert_eq!(
        visible("api/one", &dg),
        404,
        "nothing half-written is visible"
    );
    // Resume from there; the last chunk comes with the closing PUT.
    let r = send(
        &d,
        "PATCH",
        &loc,
        &[("Content-Range", &format!("{have}-249999"))],
        &data[have as usize..250_000],
        None,
    );
    assert_eq!(r.status, 202, "{r:?}");
    let r = send(
        &d,
        "PUT",
        &format!("{loc}?digest={dg}"),
        &[("Content-Range", "250000-299999")],
        &data[250_000..],
        None,
    );
    assert_eq!(r.status, 201, "{r:?}");
    assert_eq!(
        r.header("Location").unwrap(),
        format!("/v2/api/one/blobs/{dg}")
    );
    let r = get(&d, &format!("/v2/api/one/blobs/{dg}"));
    assert_eq!((r.status, r.body.len()), (200, data.len()));
    assert_eq!(r.body, data);
    // Range reads.
    let r = send(
        &d,
        "GET",
        &format!("/v2/api/one/blobs/{dg}"),
        &[("Range", "bytes=10-19")],
        &[],
        None,
    );
    assert_eq!(r.status, 206);
    assert_eq!(r.body, data[10..20]);
    assert_eq!(r.header("Content-Range"), Some("bytes 10-19/300000"));
    let r = send(
        &d,
        "GET",
        &format!("/v2/api/one/blobs/{dg}"),
        &[("Range", "bytes=400000-")],
        &[],
        None,
    );
    assert_eq!(r.status, 416);

    // Streamed upload (no Content-Range, chunked transfer encoding).
    let streamed = b"streamed blob content".to_vec();
    let sdg = digest_of(&streamed);
    let r = send(&d, "POST", "/v2/api/one/blobs/uploads/", &[], &[], None);
    let loc2 = r.header("Location").unwrap().to_string();
    let mut chunked = format!("{:x}\r\n", streamed.len()).into_bytes();
    chunked.extend_from_slice(&streamed);
    chunked.extend_from_slice(b"\r\n0\r\n\r\n");
    let r = send(
        &d,
        "PATCH",
        &loc2,
        &[("Transfer-Encoding", "chunked")],
        &chunked,
        None,
    );
    assert_eq!(r.status, 202, "{r:?}");
    let r = send(&d, "PUT", &format!("{loc2}?digest={sdg}"), &[], &[], None);
    assert_eq!(r.status, 201, "{r:?}");

    // Digest mismatch: DIGEST_INVALID, nothing stored.
    let wrong = digest_of(b"something else");
    let r = send(
        &d,
        "POST",
        &format!("/v2/api/one/blobs/uploads/?digest={wrong}"),
        &[],
        b"content",
        None,
    );
    assert_eq!(
        (r.status, r.code().as_str()),
        (400, "DIGEST_INVALID"),
        "{r:?}"
    );
    assert_eq!(visible("api/one", &wrong), 404);
    assert_eq!(visible("api/one", &digest_of(b"content")), 404);
    let r = send(
        &d,
        "POST",
        "/v2/api/one/blobs/uploads/?digest=sha256:nothex",
        &[],
        b"x",
        None,
    );
    assert_eq!(r.code(), "DIGEST_INVALID");
    // Truncated upload: the body ends before its Content-Length; nothing becomes visible.
    let r = send(&d, "POST", "/v2/api/one/blobs/uploads/", &[], &[], None);
    let loc3 = r.header("Location").unwrap().to_string();
    let tdata = vec![7u8; 50_000];
    let tdg = digest_of(&tdata);
    send(
        &d,
        "PUT",
        &format!("{loc3}?digest={tdg}"),
        &[],
        &tdata,
        Some(10_000),
    );
    assert_eq!(visible("api/one", &tdg), 404);
    let r = send(&d, "PUT", &format!("{loc3}?digest={tdg}"), &[], &[], None);
    assert_eq!(
        (r.status, r.code().as_str()),
        (400, "DIGEST_INVALID"),
        "a truncated upload never passes: {r:?}"
    );
    assert_eq!(visible("api/one", &tdg), 404);
    let r = send(
        &d,
        "PATCH",
        "/v2/api/one/blobs/uploads/nosuchupload",
        &[],
        b"x",
        None,
    );
    assert_eq!((r.status, r.code().as_str()), (404, "BLOB_UPLOAD_UNKNOWN"));

    // Invalid names.
    for bad in [
        "/v2/Bad/blobs/uploads/",
        "/v2/a//b/blobs/uploads/",
        "/v2/-x/tags/list",
    ] {
        let r = send(&d, "POST", bad, &[], &[], None);
        assert_eq!(
            (r.status, r.code().as_str()),
            (400, "NAME_INVALID"),
            "{bad}: {r:?}"
        );
    }

    // Manifests: by tag and digest, GET/HEAD/DELETE.
    let l1 = layer_tar("a", b"one");
    let l2 = layer_tar("b", b"two");
    let md = push_image(&d, "api/img", "v1", &[&l1, &l2]);
    let r = get(&d, "/v2/api/img/manifests/v1");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("Content-Type"), Some(OCI_MANIFEST));
    assert_eq!(digest_of(&r.body), md);
    let r = send(
        &d,
        "HEAD",
        &format!("/v2/api/img/manifests/{md}"),
        &[],
        &[],
        None,
    );
    assert_eq!((r.status, r.body.len()), (200, 0));
    assert_eq!(r.header("Docker-Content-Digest"), Some(md.as_str()));

    // Missing blobs: MANIFEST_BLOB_UNKNOWN; nothing half-written.
    let ghost = digest_of(b"never pushed");
    let cfg = config_for(&[&l1], &[]);
    let cd = push_blob(&d, "api/img", &cfg);
    let bad_m = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": { "mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": cfg.len() },
        "layers": [{ "mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": ghost, "size": 12 }],
    })).unwrap();
    let r = send(
        &d,
        "PUT",
        "/v2/api/img/manifests/broken",
        &[("Content-Type", OCI_MANIFEST)],
        &bad_m,
        None,
    );
    assert_eq!(
        (r.status, r.code().as_str()),
        (400, "MANIFEST_BLOB_UNKNOWN"),
        "{r:?}"
    );
    assert_eq!(
        get(&d, "/v2/api/img/manifests/broken").code(),
        "MANIFEST_UNKNOWN"
    );
    assert_eq!(
        get(&d, &format!("/v2/api/img/manifests/{}", digest_of(&bad_m))).status,
        404
    );
    // Invalid and oversized manifests.
    let r = send(
        &d,
        "PUT",
        "/v2/api/img/manifests/bad",
        &[("Content-Type", OCI_MANIFEST)],
        b"{\"schemaVersion\":1}",
        None,
    );
    assert_eq!((r.status, r.code().as_str()), (400, "MANIFEST_INVALID"));
    let huge = vec![b' '; 5 << 20];
    let r = send(
        &d,
        "PUT",
        "/v2/api/img/manifests/huge",
        &[("Content-Type", OCI_MANIFEST)],
        &huge,
        None,
    );
    assert_eq!(
        (r.status, r.code().as_str()),
        (413, "SIZE_INVALID"),
        "{r:?}"
    );
    // A digest reference that does not match the body.
    let r = send(
        &d,
        "PUT",
        &format!("/v2/api/img/manifests/{ghost}"),
        &[("Content-Type", OCI_MANIFEST)],
        &bad_m,
        None,
    );
    assert_eq!(r.code(), "DIGEST_INVALID");

    // Docker schema 2 manifest and an index over both kinds.
    let dm = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": { "mediaType": "application/vnd.docker.container.image.v1+json", "digest": cd, "size": cfg.len() },
        "layers": [{ "mediaType": "application/vnd.docker.image.rootfs.diff.tar", "digest": push_blob(&d, "api/img", &l1), "size": l1.len() }],
    })).unwrap();
    let r = send(
        &d,
        "PUT",
        "/v2/api/img/manifests/docker",
        &[(
            "Content-Type",
            "application/vnd.docker.distribution.manifest.v2+json",
        )],
        &dm,
        None,
    );
    assert_eq!(r.status, 201, "{r:?}");
    let idx = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": "application/vnd.docker.distribution.manifest.list.v2+json",
        "manifests": [
            { "mediaType": "application/vnd.docker.distribution.manifest.v2+json", "digest": digest_of(&dm), "size": dm.len(), "platform": { "os": "linux", "architecture": "amd64" } },
            { "mediaType": OCI_MANIFEST, "digest": md, "size": get(&d, "/v2/api/img/manifests/v1").body.len(), "platform": { "os": "linux", "architecture": "arm64" } },
        ],
    })).unwrap();
    let r = send(
        &d,
        "PUT",
        "/v2/api/img/manifests/multi",
        &[(
            "Content-Type",
            "application/vnd.docker.distribution.manifest.list.v2+json",
        )],
        &idx,
        None,
    );
    assert_eq!(r.status, 201, "{r:?}");

    // Referrers: an artifact whose subject is v1.
    let empty = push_blob(&d, "api/img", b"{}");
    let art = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": "application/vnd.example.sig",
        "config": { "mediaType": "application/vnd.oci.empty.v1+json", "digest": empty, "size": 2 },
        "layers": [],
        "subject": { "mediaType": OCI_MANIFEST, "digest": md, "size": 1 },
        "annotations": { "k": "v" },
    })).unwrap();
    let ad = digest_of(&art);
    let r = send(
        &d,
        "PUT",
        &format!("/v2/api/img/manifests/{ad}"),
        &[("Content-Type", OCI_MANIFEST)],
        &art,
        None,
    );
    assert_eq!(r.status, 201, "{r:?}");
    assert_eq!(r.header("OCI-Subject"), Some(md.as_str()));
    let refs = get(&d, &format!("/v2/api/img/referrers/{md}"));
    assert_eq!(refs.header("Content-Type"), Some(OCI_INDEX));
    let refs = refs.json();
    assert_eq!(refs["manifests"][0]["digest"], ad.as_str());
    assert_eq!(
        refs["manifests"][0]["artifactType"],
        "application/vnd.example.sig"
    );
    let none = get(
        &d,
        &format!("/v2/api/img/referrers/{md}?artifactType=application/other"),
    );
    assert_eq!(none.header("OCI-Filters-Applied"), Some("artifactType"));
    assert_eq!(none.json()["manifests"], serde_json::json!([]));

    // Tags with n and last.
    for t in ["a1", "b2", "c3"] {
        let r = send(
            &d,
            "PUT",
            &format!("/v2/api/img/manifests/{t}"),
            &[("Content-Type", OCI_MANIFEST)],
            &get(&d, "/v2/api/img/manifests/v1").body,
            None,
        );
        assert_eq!(r.status, 201);
    }
    let all = get(&d, "/v2/api/img/tags/list").json();
    assert_eq!(
        all["tags"],
        serde_json::json!(["a1", "b2", "c3", "docker", "multi", "v1"])
    );
    let page = get(&d, "/v2/api/img/tags/list?n=2&last=a1");
    assert_eq!(page.json()["tags"], serde_json::json!(["b2", "c3"]));
    assert!(page.header("Link").unwrap().contains("last=c3"), "{page:?}");
    assert_eq!(get(&d, "/v2/api/nothing/tags/list").code(), "NAME_UNKNOWN");

    // Cross-repository mount.
    let r = send(
        &d,
        "POST",
        &format!("/v2/api/other/blobs/uploads/?mount={dg}&from=api/one"),
        &[],
        &[],
        None,
    );
    assert_eq!(r.status, 201, "{r:?}");
    assert_eq!(visible("api/other", &dg), 200);
    let r = send(
        &d,
        "POST",
        &format!("/v2/api/other/blobs/uploads/?mount={ghost}&from=api/one"),
        &[],
        &[],
        None,
    );
    assert_eq!(r.status, 202, "an unknown blob falls back to an upload");

    // Catalog.
    let cat = get(&d, "/v2/_catalog").json();
    assert_eq!(cat["repositories"], serde_json::json!(["api/img"]));

    // Deletes: a tag, a manifest by digest (and its tags), a blob.
    assert_eq!(
        send(&d, "DELETE", "/v2/api/img/manifests/a1", &[], &[], None).status,
        202
    );
    assert_eq!(get(&d, "/v2/api/img/manifests/a1").status, 404);
    assert_eq!(get(&d, "/v2/api/img/manifests/b2").status, 200);
    assert_eq!(
        send(
            &d,
            "DELETE",
            &format!("/v2/api/img/manifests/{}", digest_of(&dm)),
            &[],
            &[],
            None
        )
        .status,
        202
    );
    assert_eq!(get(&d, "/v2/api/img/manifests/docker").status, 404);
    assert_eq!(
        send(
            &d,
            "DELETE",
            &format!("/v2/api/other/blobs/{dg}"),
            &[],
            &[],
            None
        )
        .status,
        202
    );
    assert_eq!(visible("api/other", &dg), 404);
    assert_eq!(
        visible("api/one", &dg),
        200,
        "the other repository keeps it"
    );

    // No stray files: the failed uploads left nothing in the blob store.
    let blobs_after: Vec<_> = std::fs::read_dir(d.root.join("images/oci/blobs/sha256"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    for never in [&wrong, &tdg, &ghost, &digest_of(b"content")] {
        assert!(
            !blobs_after.contains(&never[7..].to_string()),
            "{never} stored"
        );
    }
    assert!(blobs_after.len() > blobs_before);
}

fn stats(d: &Daemon) -> (u64, u64) {
    let s = d.json(&["registry", "stats"]);
    (
        s["blob_bytes_received"].as_u64().unwrap(),
        s["blob_bytes_sent"].as_u64().unwrap(),
    )
}

/// Loads a docker archive of `layers` (each a tar) tagged `tag` into the engine.
fn load_image(d: &Daemon, tag: &str, layers: &[Vec<u8>], config: serde_json::Value) {
    let archive = write_file(
        d,
        "img.tar",
        &docker_archive_with(tag, layers, None, config),
    );
    d.ok(&["image", "load", "-i", &archive]);
}

#[test]
#[ignore = "root tier: needs root; scripts/test.sh runs it (--run-ignored all)"]
fn pier_push_and_pull_with_mirrors() {
    require_root_and_tools(&["skopeo"]);
    let d = Daemon::start_with(&["--registry-addr", ADDR, "--registry-mirror", ADDR]);
    let name = format!("{ADDR}/pier/bb:1");
    load_image(
        &d,
        &name,
        &[busybox_rootfs_tar(), layer_tar("etc/extra", b"x")],
        serde_json::json!({ "Cmd": ["/bin/sh"], "Env": ["PATH=/bin"] }),
    );
    let out = d.with_input(&["push", &name], b"");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.starts_with(&format!("Pushed {name}: digest sha256:")),
        "{stdout}"
    );
    // Progress bars are drawn per layer (on stderr, when it is a terminal; here hidden).
    let (received, _) = stats(&d);
    assert!(received > 1_000_000, "{received}");
    // Pushing again moves no blob.
    d.ok(&["push", "-q", &name]);
    assert_eq!(stats(&d).0, received);

    // Pull it back into an empty engine and run it.
    d.ok(&["rmi", &name]);
    assert!(d.pier(&["image", "inspect", &name]).status.code() != Some(0));
    let out = d.ok(&["pull", &name]);
    assert!(out.starts_with(&format!("Pulled {name} (sha256:")), "{out}");
    let hi = d.ok(&["run", "--rm", "--network", "none", &name, "echo", "hi"]);
    assert_eq!(hi.trim(), "hi");

    // An image skopeo pushed (gzip layers, OCI manifest) pulls too.
    let archive = write_file(
        &d,
        "sk.tar",
        &docker_archive("localhost/sk:1", &[busybox_rootfs_tar()], None),
    );
    ok_in(
        &d,
        "skopeo",
        &[
            "copy",
            "--dest-tls-verify=false",
            "--format",
            "oci",
            &format!("docker-archive:{archive}"),
            &format!("docker://{ADDR}/skopeo/bb:1"),
        ],
    );
    d.ok(&["pull", &format!("{ADDR}/skopeo/bb:1")]);
    let hi = d.ok(&[
        "run",
        "--rm",
        "--network",
        "none",
        &format!("{ADDR}/skopeo/bb:1"),
        "echo",
        "sk",
    ]);
    assert_eq!(hi.trim(), "sk");

    // Mirrors: a registry that does not exist is served by the mirror.
    let out = d.ok(&["pull", "offline.example/skopeo/bb:1"]);
    assert!(out.contains("Pulled"), "{out}");
    d.ok(&["image", "inspect", "offline.example/skopeo/bb:1"]);

    // Errors: an unknown tag, an unreachable registry.
    let err = d.fails(&["pull", &format!("{ADDR}/skopeo/bb:nope")]);
    assert!(err.contains("MANIFEST_UNKNOWN"), "{err}");
    let err = d.fails(&["pull", "127.0.0.1:1/x/y:1"]);
    assert!(err.contains("cannot connect"), "{err}");
    let err = d.fails(&["push", "nosuchimage:1"]);
    assert!(err.contains("no such image"), "{err}");
}

#[test]
#[ignore = "root tier: needs root; scripts/test.sh runs it (--run-ignored all)"]
fn registry_edit_moves_no_layer_bytes_and_the_image_runs() {
    require_root_and_tools(&[]);
    let d = registry_daemon();
    let name = format!("{ADDR}/team/three:1");
    load_image(
        &d,
        &name,
        &[
            busybox_rootfs_tar(),
            layer_tar("etc/two", b"2"),
            layer_tar("etc/three", b"3"),
        ],
        serde_json::json!({ "Cmd": ["/bin/sh"], "Env": ["PATH=/bin", "GREETING=old"], "Labels": { "tier": "base" } }),
    );
    d.ok(&["push", "-q", &name]);
    let before = stats(&d);

    let r = d.json(&[
        "registry",
        "edit",
        "team/three:1",
        "--env",
        "GREETING=hello",
        "--label",
        "tier=edited",
        "--cmd",
        "[\"/bin/sh\",\"-c\",\"echo $GREETING\"]",
        "--tag",
        "edited",
    ]);
    assert_eq!(r["tag"], "edited");
    assert_eq!(stats(&d), before, "an edit moves no blob");
    let tags = d.json(&["registry", "tags", "team/three"]);
    let edited = tags
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["tag"] == "edited")
        .unwrap();
    assert_eq!(edited["labels"]["tier"], "edited");
    let orig = tags
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["tag"] == "1")
        .unwrap();
    assert_eq!(orig["labels"]["tier"], "base");

    // Pulling the edit moves no layer byte. (This engine shares its blob store with the
    // registry, so even the new config is here already: nothing moves at all.)
    let edited_name = format!("{ADDR}/team/three:edited");
    d.ok(&["pull", "-q", &edited_name]);
    let after = stats(&d);
    let config_size = get(&d, "/v2/team/three/manifests/edited").json()["config"]["size"]
        .as_u64()
        .unwrap();
    assert_eq!(after.0, before.0, "nothing uploaded");
    assert!(
        after.1 - before.1 <= config_size,
        "at most the config was downloaded: {before:?} {after:?}"
    );
    let out = d.ok(&["run", "--rm", "--network", "none", &edited_name]);
    assert_eq!(out.trim(), "hello");
    let out = d.ok(&[
        "run",
        "--rm",
        "--network",
        "none",
        &edited_name,
        "sh",
        "-c",
        "echo $PATH",
    ]);
    assert_eq!(out.trim(), "/bin");
    let hist = d.ok(&["image", "history", &edited_name]);
    assert!(hist.contains("pier registry edit"), "{hist}");

    // Editing in place moves the tag; its history shows both.
    d.ok(&["registry", "edit", "team/three:1", "--env", "X=1"]);
    let h = d.json(&["registry", "history", "team/three:1"]);
    let h = h.as_array().unwrap();
    assert_eq!(h.len(), 2, "{h:?}");
    assert_eq!(
        (h[0]["action"].as_str(), h[1]["action"].as_str()),
        (Some("push"), Some("edit"))
    );
    assert_ne!(h[0]["digest"], h[1]["digest"]);
    let err = d.fails(&["registry", "edit", "team/three:nope", "--env", "A=B"]);
    assert!(err.contains("unknown"), "{err}");
    let err = d.fails(&["registry", "edit", "team/three:1", "--env", "NOEQUALS"]);
    assert!(err.contains("KEY=VALUE"), "{err}");
}

#[test]
#[ignore = "root tier: needs root; scripts/test.sh runs it (--run-ignored all)"]
fn registry_inspect_edits_every_config_field_and_retags() {
    require_root_and_tools(&[]);
    let d = registry_daemon();
    let name = format!("{ADDR}/team/four:1");
    load_image(
        &d,
        &name,
        &[busybox_rootfs_tar(), layer_tar("etc/two", b"2")],
        serde_json::json!({ "Cmd": ["/bin/sh"], "Env": ["PATH=/bin", "A=1", "B=2"],
            "Labels": { "x": "1", "y": "2" }, "ExposedPorts": { "80/tcp": {} } }),
    );
    d.ok(&["push", "-q", &name]);
    let received = stats(&d).0;

    // A tag in depth: its config and its layers, as the manifest names them.
    let t = d.json(&["registry", "inspect", "team/four:1"]);
    let first = t["digest"].as_str().unwrap().to_string();
    let manifest = get(&d, "/v2/team/four/manifests/1").json();
    assert_eq!(t["config_digest"], manifest["config"]["digest"]);
    let layers: Vec<(&str, u64)> = t["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| (l["digest"].as_str().unwrap(), l["size"].as_u64().unwrap()))
        .collect();
    let pushed: Vec<(&str, u64)> = manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| (l["digest"].as_str().unwrap(), l["size"].as_u64().unwrap()))
        .collect();
    assert_eq!(layers, pushed);
    assert_eq!(
        t["config"]["Env"],
        serde_json::json!(["PATH=/bin", "A=1", "B=2"])
    );
    assert_eq!(t["tag"], "1");
    assert_eq!(t["manifests"], serde_json::json!([]));

    // Every field of the config: removals, the working directory, the user, the ports.
    d.ok(&[
        "registry",
        "edit",
        "team/four:1",
        "--unset-env",
        "A",
        "--env",
        "C=3",
        "--unset-label",
        "x",
        "--workdir",
        "/srv",
        "--user",
        "1000:1000",
        "--expose",
        "8080",
        "--expose",
        "53/UDP",
    ]);
    let e = d.json(&["registry", "inspect", "team/four:1"]);
    let c = &e["config"];
    assert_eq!(c["Env"], serde_json::json!(["PATH=/bin", "B=2", "C=3"]));
    assert_eq!(c["Labels"], serde_json::json!({ "y": "2" }));
    assert_eq!(c["WorkingDir"], "/srv");
    assert_eq!(c["User"], "1000:1000");
    assert_eq!(
        c["ExposedPorts"],
        serde_json::json!({ "8080/tcp": {}, "53/udp": {} })
    );
    assert_eq!(c["Cmd"], serde_json::json!(["/bin/sh"]), "untouched");
    assert_eq!(e["layers"], t["layers"], "the same blobs");
    let step = e["history"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(step["empty_layer"], true);
    let by = step["created_by"].as_str().unwrap();
    assert!(
        by.contains("unset env A") && by.contains("workdir") && by.contains("exposed ports"),
        "{by}"
    );
    assert_eq!(stats(&d).0, received, "an edit moves no blob");
    // Empty values clear.
    d.ok(&[
        "registry",
        "edit",
        "team/four:1",
        "--workdir",
        "",
        "--expose",
        "",
    ]);
    let c = d.json(&["registry", "inspect", "team/four:1"])["config"].clone();
    assert!(
        c.get("WorkingDir").is_none() && c.get("ExposedPorts").is_none(),
        "{c}"
    );
    assert_eq!(c["User"], "1000:1000");
    let err = d.fails(&["registry", "edit", "team/four:1", "--workdir", "srv"]);
    assert!(err.contains("absolute"), "{err}");
    let err = d.fails(&["registry", "edit", "team/four:1", "--expose", "70000"]);
    assert!(err.contains("PORT/PROTO"), "{err}");
    let err = d.fails(&["registry", "edit", "team/four:1", "--expose", "80/icmp"]);
    assert!(err.contains("tcp, udp or sctp"), "{err}");

    // Back to the pushed version: a retag in the history; the old config is back.
    let r = d.json(&["registry", "retag", "team/four:1", &first]);
    assert_eq!(r["digest"], first.as_str());
    let back = d.json(&["registry", "inspect", "team/four:1"]);
    assert_eq!(back["config"], t["config"]);
    let h = d.json(&["registry", "history", "team/four:1"]);
    let actions: Vec<&str> = h
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["push", "edit", "edit", "retag"]);
    // Again to the same digest: nothing to record.
    d.ok(&["registry", "retag", "team/four:1", &first]);
    assert_eq!(d.json(&["registry", "history", "team/four:1"]), h);
    let err = d.fails(&[
        "registry",
        "retag",
        "team/four:1",
        &format!("sha256:{}", "0".repeat(64)),
    ]);
    assert!(err.contains("unknown"), "{err}");
    let err = d.fails(&["registry", "retag", "team/four:1", "latest"]);
    assert!(err.contains("not a digest"), "{err}");
    let err = d.fails(&["registry", "inspect", "team/four:nope"]);
    assert!(err.contains("unknown"), "{err}");
    // The pulled image runs with the pushed config.
    d.ok(&["pull", "-q", &name]);
    let out = d.ok(&[
        "run",
        "--rm",
        "--network",
        "none",
        &name,
        "sh",
        "-c",
        "echo $A$B$C",
    ]);
    assert_eq!(out.trim(), "12");
}

#[test]
#[ignore = "root tier: needs root; scripts/test.sh runs it (--run-ignored all)"]
fn management_lists_searches_deletes_and_collects() {
    require_root_and_tools(&[]);
    let d = registry_daemon();
    let l1 = layer_tar("a", b"alpha");
    let l2 = layer_tar("b", b"beta");
    push_image(&d, "shop/web", "1.0", &[&l1]);
    push_image(&d, "shop/web", "1.1", &[&l1, &l2]);
    push_image(&d, "tools/db", "v1", &[&l2]);
    let ls = d.json(&["registry", "ls"]);
    let names: Vec<&str> = ls
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["shop/web", "tools/db"]);
    assert_eq!(ls[0]["tags"], 2);
    let tags = d.json(&["registry", "tags", "shop/web"]);
    assert_eq!(tags[0]["tag"], "1.0");
    assert_eq!(tags[0]["platforms"], serde_json::json!(["linux/amd64"]));
    assert_eq!(tags[0]["labels"]["team"], "blue");
    assert_eq!(tags[0]["created"], "2026-01-02T03:04:05Z");
    assert!(tags[1]["size"].as_u64().unwrap() > tags[0]["size"].as_u64().unwrap());
    let table = d.ok(&["registry", "tags", "shop/web"]);
    assert!(
        table.contains("linux/amd64") && table.contains("team=blue"),
        "{table}"
    );
    assert_eq!(
        d.json(&["registry", "search", "shop"])
            .as_array()
            .unwrap()
            .len(),
        2
    );
    assert_eq!(
        d.json(&["registry", "search", "--label", "team=blue"])
            .as_array()
            .unwrap()
            .len(),
        3
    );
    assert_eq!(
        d.json(&["registry", "search", "--label", "team=red"])
            .as_array()
            .unwrap()
            .len(),
        0
    );
    assert!(d
        .fails(&["registry", "tags", "nothing/here"])
        .contains("unknown"));
    assert!(d
        .fails(&["registry", "tags", "Bad"])
        .contains("not a valid repository name"));

    // A re-push moves the tag; history lists both.
    let l3 = layer_tar("c", b"gamma");
    push_image(&d, "tools/db", "v1", &[&l3]);
    assert_eq!(
        d.json(&["registry", "history", "tools/db:v1"])
            .as_array()
            .unwrap()
            .len(),
        2
    );

    // Remove tags, then collect: the blobs only they used go; shared ones stay.
    let web10 = get(&d, "/v2/shop/web/manifests/1.0").json();
    d.ok(&["registry", "rm", "shop/web:1.1"]);
    let h = d.json(&["registry", "history", "shop/web:1.1"]);
    assert_eq!(h[1]["action"], "delete");
    // Untagged manifests stay until deleted by digest.
    let m11 = digest_of(&push_image_manifest_bytes(&d, "shop/web", &[&l1, &l2]));
    assert_eq!(
        send(
            &d,
            "DELETE",
            &format!("/v2/shop/web/manifests/{m11}"),
            &[],
            &[],
            None
        )
        .status,
        202
    );
    // ... or through Pier's own API, with the tags that point at them.
    let db_v1 = d.json(&["registry", "inspect", "tools/db:v1"])["digest"]
        .as_str()
        .unwrap()
        .to_string();
    d.ok(&["registry", "retag", "tools/db:again", &db_v1]);
    let out = d.ok(&["registry", "rm", &format!("tools/db@{db_v1}")]);
    assert!(
        out.contains("Untagged: tools/db:v1")
            && out.contains("Untagged: tools/db:again")
            && out.contains(&format!("Deleted: tools/db@{db_v1}")),
        "{out}"
    );
    assert_eq!(
        get(&d, &format!("/v2/tools/db/manifests/{db_v1}")).status,
        404
    );
    assert!(!d.ok(&["registry", "tags", "tools/db"]).contains("v1"));
    let err = d.fails(&["registry", "rm", "tools/db@sha256:nothex"]);
    assert!(err.contains("sha256:nothex"), "{err}");
    let err = d.fails(&["registry", "rm", &format!("tools/db@{db_v1}")]);
    assert!(err.contains("tools/db") && err.contains(&db_v1), "{err}");
    let orphan = push_blob(&d, "shop/web", b"an orphan blob");
    let kept = d.json(&["registry", "gc"]);
    assert_eq!(kept["unlinked"], 0, "young blobs are kept: {kept}");
    let r = d.json(&["registry", "gc", "--grace", "0"]);
    assert!(r["unlinked"].as_u64().unwrap() >= 2, "{r}");
    assert!(r["reclaimed_bytes"].as_u64().unwrap() > 0, "{r}");
    let blob_file = |dg: &str| d.root.join("images/oci/blobs/sha256").join(&dg[7..]);
    assert!(!blob_file(&orphan).exists());
    assert!(
        !blob_file(&digest_of(&l2)).exists()
            || send(
                &d,
                "HEAD",
                &format!("/v2/tools/db/blobs/{}", digest_of(&l2)),
                &[],
                &[],
                None
            )
            .status
                == 200
    );
    for l in web10["layers"].as_array().unwrap() {
        let dg = l["digest"].as_str().unwrap();
        assert!(blob_file(dg).exists(), "{dg} is still referenced");
        assert_eq!(get(&d, &format!("/v2/shop/web/blobs/{dg}")).status, 200);
    }
}

/// The manifest bytes `push_image` would make for `layers` (its blobs are pushed).
fn push_image_manifest_bytes(d: &Daemon, repo: &str, layers: &[&[u8]]) -> Vec<u8> {
    let md = push_image(d, repo, "tmp-for-digest", layers);
    let r = get(d, &format!("/v2/{repo}/manifests/{md}"));
    send(
        d,
        "DELETE",
        &format!("/v2/{repo}/manifests/tmp-for-digest"),
        &[],
        &[],
        None,
    );
    r.body
}

#[test]
#[ignore = "root tier: needs root; scripts/test.sh runs it (--run-ignored all)"]
fn gc_racing_pushes_keeps_every_referenced_blob() {
    require_root_and_tools(&[]);
    let d = std::sync::Arc::new(registry_daemon());
    let socket = d.socket.clone();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    // A collector with no grace period, running back to back.
    let gc = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut runs = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let out = Command::new(PIER)
                    .env("PIER_HOST", &socket)
                    .args(["registry", "gc", "--grace", "0"])
                    .output()
                    .unwrap();
                assert!(
                    out.status.success(),
                    "{}",
                    String::from_utf8_lossy(&out.stderr)
                );
                runs += 1;
            }
            runs
        })
    };
    // Pushers: blobs first, manifest last. A push may be refused (MANIFEST_BLOB_UNKNOWN)
    // when the collector took a blob it had not referenced yet; it never succeeds with a
    // blob missing.
    let mut pushers = Vec::new();
    for p in 0..3 {
        let d = d.clone();
        pushers.push(std::thread::spawn(move || {
            let mut ok = 0;
            // 15 pushes, and more while none got through (a loaded machine lets the
            // collector win every race).
            let mut i = 0;
            while i < 15 || (ok == 0 && i < 100) {
                i += 1;
                let l = layer_tar("f", format!("pusher {p} image {i}").repeat(2000).as_bytes());
                let cfg = config_for(&[&l], &[]);
                let repo = format!("race/p{p}");
                let cd = push_blob(&d, &repo, &cfg);
                let ld = push_blob(&d, &repo, &l);
                let m = serde_json::to_vec(&serde_json::json!({
                    "schemaVersion": 2, "mediaType": OCI_MANIFEST,
                    "config": { "mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": cfg.len() },
                    "layers": [{ "mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": ld, "size": l.len() }],
                })).unwrap();
                let r = send(&d, "PUT", &format!("/v2/{repo}/manifests/t{i}"), &[("Content-Type", OCI_MANIFEST)], &m, None);
                match r.status {
                    201 => ok += 1,
                    400 => assert_eq!(r.code(), "MANIFEST_BLOB_UNKNOWN"),
                    s => panic!("unexpected {s}: {r:?}"),
                }
            }
            ok
        }));
    }
    let pushed: u32 = pushers.into_iter().map(|p| p.join().unwrap()).sum();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let runs = gc.join().unwrap();
    assert!(runs > 2, "the collector ran {runs} times");
    d.ok(&["registry", "gc", "--grace", "0"]);
    // Every manifest that exists has every blob it names, intact.
    let mut checked = 0;
    for p in 0..3 {
        let repo = format!("race/p{p}");
        let tags = get(&d, &format!("/v2/{repo}/tags/list")).json();
        for t in tags["tags"].as_array().into_iter().flatten() {
            let m = get(&d, &format!("/v2/{repo}/manifests/{}", t.as_str().unwrap())).json();
            let mut descs = vec![m["config"].clone()];
            descs.extend(m["layers"].as_array().unwrap().iter().cloned());
            for desc in descs {
                let dg = desc["digest"].as_str().unwrap();
                let b = get(&d, &format!("/v2/{repo}/blobs/{dg}"));
                assert_eq!(b.status, 200, "{repo}:{t} references {dg}, which is gone");
                assert_eq!(digest_of(&b.body), dg);
            }
            checked += 1;
        }
    }
    assert_eq!(checked, pushed);
    assert!(pushed > 0);

    // With the default grace period, pushes racing the collector all succeed.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let gc = {
        let stop = stop.clone();
        let socket = d.socket.clone();
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                Command::new(PIER)
                    .env("PIER_HOST", &socket)
                    .args(["registry", "gc"])
                    .output()
                    .unwrap();
            }
        })
    };
    for i in 0..10 {
        let l = layer_tar("g", format!("graceful {i}").repeat(1000).as_bytes());
        push_image(&d, "race/graceful", &format!("t{i}"), &[&l]);
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    gc.join().unwrap();
}

#[test]
#[ignore = "root tier: needs root; scripts/test.sh runs it (--run-ignored all)"]
fn auth_scopes_tokens_and_tls() {
    require_root_and_tools(&["skopeo", "curl", "openssl"]);
    let tmp = tempfile::Builder::new()
        .prefix("pier-reg-tls-")
        .tempdir()
        .unwrap();
    let certs = tmp.path().join("certs");
    std::fs::create_dir(&certs).unwrap();
    // A CA, and a server certificate for 127.0.0.1 it signed.
    let (cert, key) = (certs.join("ca.crt"), tmp.path().join("key.pem"));
    let (server_cert, ca_key) = (tmp.path().join("server.crt"), tmp.path().join("ca.key"));
    let csr = tmp.path().join("server.csr");
    let ext = tmp.path().join("ext.cnf");
    std::fs::write(
        &ext,
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
    )
    .unwrap();
    let openssl = |args: Vec<&std::ffi::OsStr>| {
        let out = Command::new("openssl").args(args).output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let s = |x: &'static str| std::ffi::OsStr::new(x);
    openssl(vec![
        s("req"),
        s("-x509"),
        s("-newkey"),
        s("rsa:2048"),
        s("-nodes"),
        s("-days"),
        s("1"),
        s("-subj"),
        s("/CN=pier test CA"),
        s("-keyout"),
        ca_key.as_os_str(),
        s("-out"),
        cert.as_os_str(),
    ]);
    openssl(vec![
        s("req"),
        s("-newkey"),
        s("rsa:2048"),
        s("-nodes"),
        s("-subj"),
        s("/CN=127.0.0.1"),
        s("-keyout"),
        key.as_os_str(),
        s("-out"),
        csr.as_os_str(),
    ]);
    openssl(vec![
        s("x509"),
        s("-req"),
        s("-in"),
        csr.as_os_str(),
        s("-CA"),
        cert.as_os_str(),
        s("-CAkey"),
        ca_key.as_os_str(),
        s("-CAcreateserial"),
        s("-days"),
        s("1"),
        s("-extfile"),
        ext.as_os_str(),
        s("-out"),
        server_cert.as_os_str(),
    ]);
    let auth = tmp.path().join("auth.json");
    std::fs::write(
        &auth,
        serde_json::to_vec(&serde_json::json!({
            "anonymous_pull": false,
            "users": {
                // argon2, as `pier registry hash-password` makes it.
                "alice": { "password": hash_password("alice-pw"), "push": ["team/*"] },
                // bcrypt, as `htpasswd -B` writes it (made by libxcrypt's crypt(3)).
                "bob": {
                    "password": "$2y$04$Br.7nEE.R6iPRqAANwh4wer19rMA.Xc/mYJm.X3b6qwCJLRgaoNFC",
                    "pull": ["*"],
                },
            }
        }))
        .unwrap(),
    )
    .unwrap();
    let d = Daemon::start_with(&[
        "--registry-addr",
        ADDR,
        "--registry-tls-cert",
        server_cert.to_str().unwrap(),
        "--registry-tls-key",
        key.to_str().unwrap(),
        "--registry-auth",
        auth.to_str().unwrap(),
        "--registry-ca",
        cert.to_str().unwrap(),
    ]);
    // A client that connects and never starts its TLS handshake is cut loose.
    let stalled = stalled_connection(&d, b"");
    let url = format!("https://{ADDR}");
    let curl = |args: &[&str]| {
        let mut a = vec![
            "-s",
            "--cacert",
            cert.to_str().unwrap(),
            "-o",
            "/dev/null",
            "-w",
            "%{http_code} %header{www-authenticate}",
        ];
        a.extend_from_slice(args);
        ok_in(&d, "curl", &a)
    };
    // Anonymous: 401 with a Bearer challenge naming the token realm.
    let r = curl(&[&format!("{url}/v2/team/app/tags/list")]);
    assert!(
        r.starts_with("401 Bearer realm=\"https://127.0.0.1:5000/v2/token\""),
        "{r}"
    );
    assert!(r.contains("scope=\"repository:team/app:pull\""), "{r}");
    assert!(curl(&["-u", "alice:wrong", &format!("{url}/v2/")]).starts_with("401"));
    assert!(curl(&["-u", "bob:bob-pw", &format!("{url}/v2/")]).starts_with("200"));
    assert!(curl(&["-u", "bob:bob-pw", &format!("{url}/v2/_catalog")]).starts_with("200"));
    assert!(curl(&["-u", "alice:alice-pw", &format!("{url}/v2/_catalog")]).starts_with("403"));
    // Plain HTTP is not served on a TLS port.
    assert!(!run_in(&d, "curl", &["-sf", &format!("http://{ADDR}/v2/")])
        .status
        .success());

    // skopeo: alice may push to team/*, not elsewhere; bob may pull, not push.
    let archive = write_file(
        &d,
        "a.tar",
        &docker_archive("localhost/a:1", &[busybox_rootfs_tar()], None),
    );
    let certdir = format!("--dest-cert-dir={}", certs.display());
    let copy = |creds: &str, dst: &str| {
        run_in(
            &d,
            "skopeo",
            &[
                "copy",
                &certdir,
                "--dest-creds",
                creds,
                &format!("docker-archive:{archive}"),
                &format!("docker://{ADDR}/{dst}"),
            ],
        )
    };
    let ok = copy("alice:alice-pw", "team/app:1");
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(!copy("alice:alice-pw", "other/app:1").status.success());
    assert!(!copy("bob:bob-pw", "team/app:2").status.success());
    let inspect = |creds: Option<&str>| {
        let mut a = vec![
            "inspect".to_string(),
            format!("--cert-dir={}", certs.display()),
        ];
        if let Some(c) = creds {
            a.push("--creds".into());
            a.push(c.into());
        }
        a.push(format!("docker://{ADDR}/team/app:1"));
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        run_in(&d, "skopeo", &a).status.success()
    };
    assert!(inspect(Some("bob:bob-pw")));
    assert!(!inspect(None), "anonymous pull is off");

    // pier pull and push over TLS with credentials (the token handshake).
    let name = format!("{ADDR}/team/app:1");
    let out = d.with_input(
        &["pull", "-q", "--username", "bob", "--password-stdin", &name],
        b"bob-pw\n",
    );
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        d.log()
    );
    let out = d.with_input(
        &["pull", "-q", "--username", "bob", "--password-stdin", &name],
        b"nope\n",
    );
    assert!(!out.status.success());
    d.ok(&["image", "tag", &name, &format!("{ADDR}/team/copy:1")]);
    let out = d.with_input(
        &[
            "push",
            "-q",
            "--username",
            "alice",
            "--password-stdin",
            &format!("{ADDR}/team/copy:1"),
        ],
        b"alice-pw\n",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    d.ok(&["image", "tag", &name, &format!("{ADDR}/other/copy:1")]);
    let out = d.with_input(
        &[
            "push",
            "-q",
            "--username",
            "alice",
            "--password-stdin",
            &format!("{ADDR}/other/copy:1"),
        ],
        b"alice-pw\n",
    );
    assert!(!out.status.success(), "alice may not push to other/");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("unauthorized") || err.contains("UNAUTHORIZED") || err.contains("denied"),
        "{err}"
    );
    let took = stalled.join().unwrap();
    assert!(
        took < std::time::Duration::from_secs(20),
        "a stalled TLS handshake was held {took:?}"
    );
}

/// `pier registry hash-password` of `password` (no daemon needed).
fn hash_password(password: &str) -> String {
    let mut child = Command::new(PIER)
        .args(["registry", "hash-password"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{password}\n").as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let hash = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert!(hash.starts_with("$argon2id$"), "{hash}");
    hash
}

/// Connects to the registry, sends `partial` and nothing more, and waits (at most 40 s)
/// for the server to close the connection; the thread returns how long that took.
fn stalled_connection(
    d: &Daemon,
    partial: &'static [u8],
) -> std::thread::JoinHandle<std::time::Duration> {
    let ns = std::fs::File::open(d.netns_path()).unwrap();
    let (connected_tx, connected) = std::sync::mpsc::channel();
    let t = std::thread::spawn(move || {
        use std::os::fd::AsFd;
        rustix::thread::move_into_link_name_space(
            ns.as_fd(),
            Some(rustix::thread::LinkNameSpaceType::Network),
        )
        .unwrap();
        let started = std::time::Instant::now();
        let mut s = TcpStream::connect(ADDR).unwrap();
        s.write_all(partial).unwrap();
        connected_tx.send(()).unwrap();
        s.set_read_timeout(Some(std::time::Duration::from_secs(40)))
            .unwrap();
        let mut buf = [0u8; 4096];
        loop {
            match s.read(&mut buf) {
                Ok(0) => break,
                Ok(_) => continue,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    panic!("the registry held a stalled connection for 40 s")
                }
                Err(_) => break,
            }
        }
        started.elapsed()
    });
    connected.recv().unwrap();
    t
}

/// An auth file of `users` (with anonymous pulls on), written in `dir`.
fn auth_file(dir: &std::path::Path, users: serde_json::Value) -> String {
    let path = dir.join("auth.json");
    std::fs::write(
        &path,
        serde_json::to_vec(&serde_json::json!({ "anonymous_pull": true, "users": users })).unwrap(),
    )
    .unwrap();
    path.display().to_string()
}

/// With anonymous pulls on, `/v2/` still challenges clients without credentials (as
/// Docker's registry does), so pier, skopeo and podman log in and push; anonymous pulls
/// work, anonymous pushes do not. (Before, `/v2/` answered 200 to anonymous clients,
/// which then never logged in and had their pushes refused.)
#[test]
#[ignore = "root tier: needs root; scripts/test.sh runs it (--run-ignored all)"]
fn anonymous_pull_and_pushes_with_credentials() {
    require_root_and_tools(&["skopeo", "podman"]);
    let tmp = tempfile::Builder::new()
        .prefix("pier-reg-anon-")
        .tempdir()
        .unwrap();
    let auth = auth_file(
        tmp.path(),
        serde_json::json!({
            "ci": { "password": hash_password("ci-pw"), "push": ["team/*"] },
            "legacy": { "password_plain": "legacy-pw", "push": ["legacy/*"] },
        }),
    );
    let d = Daemon::start_with(&["--registry-addr", ADDR, "--registry-auth", &auth]);
    assert!(
        d.log().contains("stored as plain text"),
        "no warning for password_plain:\n{}",
        d.log()
    );
    let base = get(&d, "/v2/");
    assert_eq!(base.status, 401, "{base:?}");
    assert_eq!(
        base.header("WWW-Authenticate"),
        Some("Bearer realm=\"http://127.0.0.1:5000/v2/token\",service=\"pier\"")
    );
    // An anonymous token carries pull, not push.
    let token = get(
        &d,
        "/v2/token?service=pier&scope=repository%3Ateam%2Fapp%3Apull%2Cpush",
    )
    .json();
    let bearer = format!("Bearer {}", token["token"].as_str().unwrap());
    let r = send(
        &d,
        "POST",
        "/v2/team/app/blobs/uploads/",
        &[("Authorization", &bearer)],
        &[],
        None,
    );
    assert_eq!(r.status, 401, "{r:?}");
    assert!(
        r.header("WWW-Authenticate")
            .is_some_and(|c| c.contains("insufficient_scope")),
        "{r:?}"
    );

    // pier push: with the right credentials only.
    let archive = write_file(
        &d,
        "bb.tar",
        &docker_archive("localhost/bb:1", &[busybox_rootfs_tar()], None),
    );
    d.ok(&["image", "load", "-i", &archive]);
    let name = format!("{ADDR}/team/app:1");
    d.ok(&["image", "tag", "localhost/bb:1", &name]);
    let push = |user: Option<(&str, &str)>, image: &str| match user {
        Some((u, p)) => d.with_input(
            &["push", "-q", "-u", u, "--password-stdin", image],
            format!("{p}\n").as_bytes(),
        ),
        None => d.pier(&["push", "-q", image]),
    };
    let out = push(None, &name);
    assert!(!out.status.success(), "an anonymous push went through");
    let out = push(Some(("ci", "wrong")), &name);
    assert!(!out.status.success(), "a wrong password was taken");
    let out = push(Some(("ci", "ci-pw")), &name);
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        d.log()
    );
    // The plain-text opt-in works too, within its user's rights.
    d.ok(&[
        "image",
        "tag",
        "localhost/bb:1",
        &format!("{ADDR}/legacy/app:1"),
    ]);
    let out = push(
        Some(("legacy", "legacy-pw")),
        &format!("{ADDR}/legacy/app:1"),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!push(Some(("legacy", "legacy-pw")), &name).status.success());
    // An anonymous pull of what was pushed.
    d.ok(&["image", "rm", &name]);
    d.ok(&["pull", "-q", &name]);

    // skopeo: --dest-creds pushes; without credentials it may pull, not push.
    let skopeo_copy = |creds: Option<&str>, dst: &str| {
        let mut a = vec!["copy", "--dest-tls-verify=false"];
        if let Some(c) = creds {
            a.extend(["--dest-creds", c]);
        }
        let src = format!("docker-archive:{archive}");
        let dst = format!("docker://{ADDR}/{dst}");
        a.extend([src.as_str(), dst.as_str()]);
        run_in(&d, "skopeo", &a)
    };
    let out = skopeo_copy(Some("ci:ci-pw"), "team/sk:1");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!skopeo_copy(None, "team/sk:2").status.success());
    assert!(!skopeo_copy(Some("ci:wrong"), "team/sk:3").status.success());
    ok_in(
        &d,
        "skopeo",
        &[
            "inspect",
            "--tls-verify=false",
            &format!("docker://{ADDR}/team/sk:1"),
        ],
    );

    // podman: an anonymous pull, then a push with --creds (and none without).
    let pr = d.dir.path().join("podman");
    let podman = |args: &[&str]| {
        let mut a: Vec<String> = vec![
            "--root".into(),
            pr.join("root").display().to_string(),
            "--runroot".into(),
            pr.join("run").display().to_string(),
            "--storage-driver".into(),
            "vfs".into(),
            "--events-backend".into(),
            "file".into(),
        ];
        a.extend(args.iter().map(|s| s.to_string()));
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        run_in(&d, "podman", &a)
    };
    let ok = |out: Output| {
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    ok(podman(&[
        "pull",
        "--tls-verify=false",
        &format!("{ADDR}/team/sk:1"),
    ]));
    ok(podman(&[
        "tag",
        &format!("{ADDR}/team/sk:1"),
        &format!("{ADDR}/team/pod:1"),
    ]));
    let authfile = tmp.path().join("podman-auth.json");
    std::fs::write(&authfile, "{}").unwrap();
    let authfile = format!("--authfile={}", authfile.display());
    assert!(!podman(&[
        "push",
        "--tls-verify=false",
        &authfile,
        &format!("{ADDR}/team/pod:1")
    ])
    .status
    .success());
    ok(podman(&[
        "push",
        "--tls-verify=false",
        &authfile,
        "--creds",
        "ci:ci-pw",
        &format!("{ADDR}/team/pod:1"),
    ]));
    ok(podman(&["rmi", "-a", "-f"]));
    let tags = get(&d, "/v2/team/pod/tags/list").json();
    assert_eq!(tags["tags"], serde_json::json!(["1"]));
}

/// A password in the auth file must be a hash unless the entry opts into plain text:
/// the daemon refuses to start, saying what to do.
#[test]
#[ignore = "root tier: needs root; scripts/test.sh runs it (--run-ignored all)"]
fn plain_text_passwords_refused_at_start() {
    require_root_and_tools(&[]);
    let tmp = tempfile::Builder::new()
        .prefix("pier-reg-plain-")
        .tempdir()
        .unwrap();
    let auth = auth_file(
        tmp.path(),
        serde_json::json!({ "ci": { "password": "hunter2", "push": ["*"] } }),
    );
    let started = std::panic::catch_unwind(|| {
        Daemon::start_with(&["--registry-addr", ADDR, "--registry-auth", &auth])
    });
    let message = match started {
        Ok(_) => panic!("the daemon started with a plain-text password"),
        Err(p) => p.downcast_ref::<String>().cloned().unwrap_or_default(),
    };
    assert!(
        message.contains("exited with")
            && message.contains("not plain text")
            && message.contains("pier registry hash-password")
            && message.contains("password_plain"),
        "{message}"
    );
}

/// The spec's endpoint table allows only 404 for a manifest GET or HEAD that names
/// nothing, also when the reference is no valid tag.
#[test]
#[ignore = "root tier: needs root; scripts/test.sh runs it (--run-ignored all)"]
fn manifest_of_an_invalid_reference_is_unknown() {
    require_root_and_tools(&[]);
    let d = registry_daemon();
    let l = layer_tar("a", b"one");
    push_image(&d, "api/img", "v1", &[&l]);
    for reference in [".INVALID", "-x", "a%2Fb", "sha256:zz"] {
        for method in ["GET", "HEAD"] {
            let r = send(
                &d,
                method,
                &format!("/v2/api/img/manifests/{reference}"),
                &[],
                &[],
                None,
            );
            assert_eq!(r.status, 404, "{method} {reference}: {r:?}");
            if method == "GET" {
                assert_eq!(r.code(), "MANIFEST_UNKNOWN", "{reference}: {r:?}");
            }
        }
    }
}

/// A client that never finishes its request headers is closed (after the server's
/// header timeout, 10 s); others are served meanwhile.
#[test]
#[ignore = "root tier: needs root; scripts/test.sh runs it (--run-ignored all)"]
fn stalled_requests_are_closed() {
    require_root_and_tools(&[]);
    let d = registry_daemon();
    let stalled = stalled_connection(&d, b"GET /v2/ HTTP/1.1\r\nHost: x\r\n");
    assert_eq!(get(&d, "/v2/").status, 200);
    let took = stalled.join().unwrap();
    assert!(
        took < std::time::Duration::from_secs(20),
        "a stalled request was held {took:?}"
    );
}

#[test]
#[ignore = "root tier: needs root; scripts/test.sh runs it (--run-ignored all)"]
fn pull_through_mirror_serves_an_offline_site() {
    require_root_and_tools(&["skopeo"]);
    let mut upstream = registry_daemon();
    let rootfs = busybox_rootfs_tar();
    push_image(&upstream, "team/app", "1", &[&rootfs]);
    // The site's daemon: its registry mirrors the upstream, and its engine pulls through it.
    let site = Daemon::start_beside(
        &upstream,
        &[
            "--registry-addr",
            "127.0.0.1:5001",
            "--registry-upstream",
            ADDR,
            "--registry-mirror",
            "127.0.0.1:5001",
        ],
    );
    let name = "offline.example/team/app:1";
    site.ok(&["pull", "-q", name]);
    assert_eq!(
        site.ok(&["run", "--rm", "--network", "none", name, "echo", "cached"])
            .trim(),
        "cached"
    );
    let tags = site.json(&["registry", "tags", "team/app"]);
    assert_eq!(tags[0]["tag"], "1");
    let h = site.json(&["registry", "history", "team/app:1"]);
    assert_eq!(h[0]["action"], "mirror");

    // The upstream goes away; the site still pulls, from its mirror's cache.
    upstream.stop();
    site.ok(&["rmi", name]);
    site.ok(&["pull", "-q", name]);
    let raw = ok_in(
        &site,
        "skopeo",
        &[
            "inspect",
            "--raw",
            "--tls-verify=false",
            "docker://127.0.0.1:5001/team/app:1",
        ],
    );
    assert!(raw.contains(OCI_MANIFEST), "{raw}");
    // What was never cached is unknown, not an error of the gone upstream.
    let err = site.fails(&["pull", "offline.example/team/app:2"]);
    assert!(err.contains("MANIFEST_UNKNOWN"), "{err}");
}
