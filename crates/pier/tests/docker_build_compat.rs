//! Root tier: `docker build` through Pier's Docker API (`POST /build`) at the level of
//! Docker 20.10's classic builder, with docker-py (the venv CI makes) and the real docker
//! CLI (`DOCKER_BUILDKIT=0`) as clients: the stream's shape, `RUN` steps' settings
//! (shm size, extra hosts, limits, network), `--cache-from`, base images pulled, target
//! stages, where the Dockerfile comes from and how `.dockerignore` is read.

mod common;

use std::process::{Command, Stdio};

use common::*;
use serde_json::Value;

/// The Python with docker-py 7.2.0 (scripts/docker-py.sh and CI make it).
const PYTHON: &str = "/var/cache/pier/docker-py-venv/bin/python";

/// Debian's Docker 20.10 CLI.
const DOCKER: &str = "/usr/bin/docker";

/// Helpers every docker-py script starts with: `c` is a low-level client of the daemon,
/// `ctx(files)` a tar of `{name: text}`, `build(**kw)` the decoded stream as a list, and
/// `out(v)` prints the script's answer as JSON.
const PRELUDE: &str = r#"
import io, json, os, sys, tarfile, tempfile
import docker
c = docker.APIClient(base_url=sys.argv[1], version="1.41")
def ctx(files, gz=False):
    b = io.BytesIO()
    t = tarfile.open(fileobj=b, mode="w:gz" if gz else "w")
    for name, text in files.items():
        data = text.encode() if isinstance(text, str) else text
        i = tarfile.TarInfo(name)
        i.size = len(data)
        t.addfile(i, io.BytesIO(data))
    t.close()
    b.seek(0)
    return b
def build(**kw):
    return list(c.build(decode=True, **kw))
def run(image, cmd):
    ct = c.create_container(image, cmd)
    c.start(ct)
    c.wait(ct)
    logs = c.logs(ct).decode()
    c.remove_container(ct)
    return logs
def out(v):
    print(json.dumps(v))
"#;

/// Runs `script` (after [`PRELUDE`]) with docker-py against the daemon; its JSON answer.
fn docker_py(d: &Daemon, script: &str) -> Value {
    assert!(
        std::path::Path::new(PYTHON).exists(),
        "{PYTHON} is missing: make it as scripts/docker-py.sh does (python3 -m venv; pip install docker==7.2.0)"
    );
    let o = Command::new(PYTHON)
        .arg("-c")
        .arg(format!("{PRELUDE}\n{script}"))
        .arg(format!("unix://{}", d.docker_socket.display()))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "docker-py script failed:\n{stdout}\n{}\ndaemon log:\n{}",
        String::from_utf8_lossy(&o.stderr),
        d.log()
    );
    serde_json::from_str(stdout.lines().last().unwrap_or_default())
        .unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

/// `DOCKER_BUILDKIT=0 docker build ARGS` with the 20.10 CLI: exit code, stdout, stderr.
fn docker_build(d: &Daemon, args: &[&str]) -> (i32, String, String) {
    outcome(
        &d.docker_cmd(DOCKER)
            .env("DOCKER_BUILDKIT", "0")
            .arg("build")
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap(),
    )
}

/// A directory under the daemon's test directory with `files` in it.
fn context_dir(d: &Daemon, name: &str, files: &[(&str, &str)]) -> String {
    let dir = d.dir.path().join(name);
    for (f, text) in files {
        let p = dir.join(f);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }
    dir.display().to_string()
}

fn stream_texts(lines: &Value) -> Vec<String> {
    lines
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|l| l["stream"].as_str().map(String::from))
        .collect()
}

/// The stream as Docker's classic builder sends it: an `aux` line at the end of each
/// stage, before `Successfully built` and `Successfully tagged` (the last line); a `RUN`'s
/// standard error as `ESC[91m...ESC[0m`; a gzip-encoded context; blank lines in the
/// Dockerfile; `-q` sending the image ID alone, or what it held back before an error; an
/// `ARG` before `FROM` counted and shown as a step. (Before, the one `aux` line came
/// last, after the tags, stderr was plain text, `-q` sent an `aux` line too and nothing
/// but the error on a failure, and such an `ARG` was no step.)
#[test]
#[ignore = "root tier: needs root; scripts/test.sh runs it (--run-ignored all)"]
fn the_stream_is_shaped_as_the_classic_builders() {
    let d = with_busybox(&[]);
    let r = docker_py(
        &d,
        r#"
df = "FROM bb AS one\n\n   \nRUN echo out; echo err >&2\n\n# a comment\nFROM one\nENV A=1\n"
lines = build(fileobj=ctx({"Dockerfile": df}, gz=True), custom_context=True,
              encoding="gzip", tag="shaped:1", nocache=True)
quiet = build(fileobj=ctx({"Dockerfile": "FROM bb\nRUN true\n"}), custom_context=True,
              quiet=True, tag="quiet:1")
failed = build(fileobj=ctx({"Dockerfile": "FROM bb\nRUN echo held; exit 3\n"}),
               custom_context=True, quiet=True)
meta = build(fileobj=ctx({"Dockerfile": "ARG BASE=bb\nFROM $BASE\n"}), custom_context=True)
try:
    build(fileobj=ctx({"Dockerfile": "FROM bb\n"}), custom_context=True, squash=True)
    squash = "accepted"
except docker.errors.APIError as e:
    squash = str(e.explanation)
out({"lines": lines, "id": c.inspect_image("shaped:1")["Id"],
     "quiet": quiet, "quiet_id": c.inspect_image("quiet:1")["Id"], "failed": failed,
     "squash": squash, "meta": meta})
"#,
    );
    let lines = r["lines"].as_array().unwrap();
    let id = r["id"].as_str().unwrap();
    let aux: Vec<usize> = (0..lines.len())
        .filter(|i| lines[*i].get("aux").is_some())
        .collect();
    assert_eq!(aux.len(), 2, "an aux line for each stage: {lines:#?}");
    assert_eq!(lines[aux[1]]["aux"]["ID"], id, "{lines:#?}");
    let texts = stream_texts(&r["lines"]);
    let n = lines.len();
    assert_eq!(
        lines[n - 2]["stream"].as_str().unwrap(),
        format!("Successfully built {}\n", &id[7..19])
    );
    assert_eq!(lines[n - 1]["stream"], "Successfully tagged shaped:1\n");
    assert_eq!(
        aux[1],
        n - 3,
        "the last aux line comes before Successfully built"
    );
    // The first stage's aux line follows its last step, before the second FROM.
    assert!(
        lines[aux[0] + 1]["stream"]
            .as_str()
            .unwrap()
            .starts_with("Step 3/4 : FROM one"),
        "{lines:#?}"
    );
    assert!(texts.contains(&"out\n".to_string()), "{texts:?}");
    assert!(
        texts.contains(&"\u{1b}[91merr\n\u{1b}[0m".to_string()),
        "stderr is marked red: {texts:?}"
    );
    // -q: the ID alone; a failure sends what was held back, then the error.
    assert_eq!(
        r["quiet"],
        serde_json::json!([{ "stream": format!("{}\n", r["quiet_id"].as_str().unwrap()) }])
    );
    let failed = r["failed"].as_array().unwrap();
    let last = failed.last().unwrap();
    assert_eq!(last["errorDetail"]["code"], 3, "{failed:#?}");
    assert!(
        stream_texts(&r["failed"]).contains(&"held\n".to_string()),
        "{failed:#?}"
    );
    assert_eq!(
        r["squash"],
        "squash is only supported with experimental mode"
    );
    // An ARG before the first FROM is a step of its own.
    let meta = stream_texts(&r["meta"]);
    assert_eq!(meta[0], "Step 1/2 : ARG BASE=bb\n", "{meta:?}");
    assert_eq!(meta[1], "Step 2/2 : FROM $BASE\n", "{meta:?}");
}

/// `--shm-size`, `--add-host`, `--memory` and `--ulimit` reach `RUN` steps' containers:
/// what the steps saw is written into the image. (Before, each was refused as not
/// supported.)
#[test]
#[ignore = "root tier: needs root; scripts/test.sh runs it (--run-ignored all)"]
fn run_steps_get_shm_size_extra_hosts_and_limits() {
    let d = with_busybox(&[]);
    let dir = context_dir(
        &d,
        "limits",
        &[(
            "Dockerfile",
            "FROM bb\nRUN grep ' /dev/shm ' /proc/mounts > /shm && cp /etc/hosts /hosts && ulimit -n > /nofile && (cat /sys/fs/cgroup/memory.max 2>/dev/null || cat /sys/fs/cgroup/memory/memory.limit_in_bytes) > /mem\n",
        )],
    );
    let (code, out, err) = docker_build(
        &d,
        &[
            "--shm-size",
            "96m",
            "--add-host",
            "h.test:10.1.2.3",
            "--memory",
            "64m",
            "--ulimit",
            "nofile=100:200",
            "-t",
            "limits:1",
            &dir,
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    let (code, seen, err) = outcome(&d.docker(
        DOCKER,
        &[
            "run", "--rm", "limits:1", "cat", "/shm", "/hosts", "/nofile", "/mem",
        ],
    ));
    assert_eq!(code, 0, "{err}");
    assert!(seen.contains("size=98304k"), "{seen}");
    assert!(seen.contains("10.1.2.3\th.test\n"), "{seen}");
    assert!(seen.contains("\n100\n"), "{seen}");
    assert!(seen.contains("67108864"), "{seen}");
    // What a container cannot take is refused with Docker's words.
    let (code, _, err) = docker_build(&d, &["--cpu-period", "10", &dir]);
    assert_ne!(code, 0);
    assert!(err.contains("CPU cfs period"), "{err}");
}

/// `--cache-from`: only the named images' steps are cache (a name not there gives none),
/// and an image loaded from elsewhere, with no build chain here, is reused step by step
/// by its history, to the same image. (Before, `--cache-from` was refused.)
#[test]
#[ignore = "root tier: needs root; scripts/test.sh runs it (--run-ignored all)"]
fn cache_from_names_the_cache_sources() {
    let d = with_busybox(&[]);
    let dir = context_dir(
        &d,
        "cache",
        &[
            (
                "Dockerfile",
                "FROM bb\nENV FOO=bar\nRUN echo a > /a\nCOPY f /f\nRUN touch /baz\n",
            ),
            ("f", "file\n"),
        ],
    );
    let cached = |out: &str| out.matches("Using cache").count();
    let (code, out, err) = docker_build(&d, &["-t", "c1", &dir]);
    assert_eq!(code, 0, "{out}{err}");
    let id = |d: &Daemon, image: &str| {
        outcome(&d.docker(DOCKER, &["inspect", "-f", "{{.Id}}", image]))
            .1
            .trim()
            .to_string()
    };
    let c1 = id(&d, "c1");
    let (code, out, _) = docker_build(&d, &["--cache-from", "c1", "-t", "c2", &dir]);
    assert_eq!((code, cached(&out)), (0, 4), "{out}");
    assert_eq!(id(&d, "c2"), c1);
    let (code, out, _) = docker_build(&d, &["--cache-from", "nosuchtag", "-t", "c3", &dir]);
    assert_eq!((code, cached(&out)), (0, 0), "{out}");
    let (code, out, _) = docker_build(&d, &["-t", "c4", &dir]);
    assert_eq!(
        cached(&out),
        4,
        "without --cache-from, every build is cache: {out}"
    );
    assert_eq!(code, 0);

    // Saved and loaded into another engine: no build links there, only history.
    let archive = d.dir.path().join("c1.tar");
    let (code, _, err) = outcome(&d.docker(
        DOCKER,
        &["save", "-o", archive.to_str().unwrap(), "c1", "bb"],
    ));
    assert_eq!(code, 0, "{err}");
    let other = Daemon::start();
    let (code, _, err) = outcome(&other.docker(DOCKER, &["load", "-i", archive.to_str().unwrap()]));
    assert_eq!(code, 0, "{err}");
    let (code, out, _) = docker_build(&other, &["--cache-from", "c1", "-t", "again", &dir]);
    assert_eq!((code, cached(&out)), (0, 4), "{out}");
    assert_eq!(id(&other, "again"), c1, "the same image, step for step");
    let (code, out, _) = docker_build(&other, &["--no-cache", "-t", "fresh", &dir]);
    assert_eq!((code, cached(&out)), (0, 0), "{out}");
    assert_ne!(id(&other, "fresh"), c1);
}

/// A base image that is not here is pulled (as Docker's builder pulls it, through the
/// daemon's registry mirror), `target` stops at its stage, and `networkmode` is the
/// network of `RUN` steps: docker-py's own scenarios. (Before, the build failed at once:
/// the builder did not pull.)
#[test]
#[ignore = "root tier: needs root; scripts/test.sh runs it (--run-ignored all)"]
fn base_images_are_pulled_and_targets_and_networks_honoured() {
    let addr = "127.0.0.1:5000";
    let d = with_busybox(&["--registry-addr", addr, "--registry-mirror", addr]);
    let mirrored = format!("{addr}/library/busybox:latest");
    d.ok(&["tag", "bb", &mirrored]);
    d.ok(&["push", "-q", &mirrored]);
    d.ok(&["rmi", &mirrored]);
    let r = docker_py(
        &d,
        r#"
df = "\n".join(["FROM busybox as first", "RUN mkdir -p /tmp/test",
    "RUN touch /tmp/silence.tar.gz", "FROM alpine:latest",
    "WORKDIR /root/COPY --from=first /tmp/silence.tar.gz .",
    "ONBUILD RUN echo not in the final image"])
target = build(fileobj=io.BytesIO(df.encode()), target="first", tag="build1")
info = c.inspect_image("build1")
net = c.create_network("buildnet")["Id"]
ct = c.create_container("bb", "sleep 60")
c.start(ct)
c.connect_container_to_network(ct, net, aliases=["pingtarget.docker"])
script = "FROM busybox\nRUN ping -c1 pingtarget.docker\n"
on_net = build(fileobj=io.BytesIO(script.encode()), network_mode=net, tag="onnet")
none = build(fileobj=io.BytesIO(script.encode()), network_mode="none", tag="nonet",
             nocache=True)
c.remove_container(ct, force=True)
c.remove_network(net)
try:
    c.inspect_image("nonet")
    nonet = "built"
except docker.errors.NotFound:
    nonet = "missing"
out({"target": target, "onbuild": info["Config"].get("OnBuild"),
     "test_dir": run("build1", ["ls", "/tmp"]), "on_net": on_net, "none": none,
     "nonet": nonet})
"#,
    );
    let statuses: Vec<&str> = r["target"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|l| l["status"].as_str())
        .collect();
    assert!(
        statuses
            .first()
            .is_some_and(|s| s.starts_with("Pulling from"))
            && statuses
                .last()
                .is_some_and(|s| s.starts_with("Status: Downloaded newer image for")),
        "{:#?}",
        r["target"]
    );
    assert!(r["onbuild"].is_null(), "{}", r["onbuild"]);
    assert_eq!(r["test_dir"], "silence.tar.gz\ntest\n");
    let texts = stream_texts(&r["on_net"]);
    assert!(
        texts.iter().any(|t| t.contains("1 packets received")),
        "{texts:?}"
    );
    assert_eq!(
        r["none"].as_array().unwrap().last().unwrap()["errorDetail"]["code"],
        1
    );
    assert_eq!(r["nonet"], "missing");
}

/// docker-py's Dockerfile paths: a custom name, one in a subdirectory, an absolute path
/// inside the context, and one outside it (sent inside the tar under a made-up name,
/// given as `dockerfile=NAME&dockerfile=TEXT`, and left out of the image through the
/// `.dockerignore` docker-py writes). (Before, the last read the Dockerfile's text as its
/// name.)
#[test]
#[ignore = "root tier: needs root; scripts/test.sh runs it (--run-ignored all)"]
fn dockerfile_paths_in_and_out_of_the_context() {
    let d = with_busybox(&[]);
    let df = "FROM bb\nCOPY . /src\nWORKDIR /src\n";
    let custom = context_dir(
        &d,
        "custom",
        &[("file.txt", "hello"), ("custom.dockerfile", df)],
    );
    let nested = context_dir(
        &d,
        "nested",
        &[("file.txt", "hello"), ("hello/world/custom.dockerfile", df)],
    );
    let outside = context_dir(
        &d,
        "outside",
        &[("file.txt", "hello"), (".dockerignore", ".dockerignore\n")],
    );
    let df_dir = context_dir(&d, "dfdir", &[("Dockerfile", df)]);
    let r = docker_py(
        &d,
        &format!(
            r#"
res = {{}}
for name, path, dockerfile in [
        ("custom", "{custom}", "custom.dockerfile"),
        ("nested", "{nested}", "hello/world/custom.dockerfile"),
        ("absolute", "{custom}", "{custom}/custom.dockerfile"),
        ("outside", "{outside}", "{df_dir}/Dockerfile")]:
    lines = build(path=path, dockerfile=dockerfile, tag="df-" + name)
    res[name] = [lines[-1].get("stream"), run("df-" + name, ["ls", "-a"])]
out(res)
"#
        ),
    );
    let ls = |names: &[&str]| format!(".\n..\n{}\n", names.join("\n"));
    for (name, files) in [
        ("custom", ls(&["custom.dockerfile", "file.txt"])),
        ("nested", ls(&["file.txt", "hello"])),
        ("absolute", ls(&["custom.dockerfile", "file.txt"])),
        ("outside", ls(&["file.txt"])),
    ] {
        assert_eq!(
            r[name],
            serde_json::json!([format!("Successfully tagged df-{name}:latest\n"), files]),
            "{name}"
        );
    }
}

/// `.dockerignore` as Docker's daemon reads it: the client applies it, the daemon only
/// drops `.dockerignore` itself and the Dockerfile when it names them (a BOM before the
/// first line dropped), and keeps whatever else the client sent; docker-py's scenario of
/// exceptions, spaces and comments; a `.dockerignore` of blank lines. (Before, the daemon
/// applied every rule again and kept a BOM in the first pattern.)
#[test]
#[ignore = "root tier: needs root; scripts/test.sh runs it (--run-ignored all)"]
fn dockerignore_is_read_as_dockers_daemon_reads_it() {
    let d = with_busybox(&[]);
    let ignored = context_dir(
        &d,
        "ignored",
        &[
            ("Dockerfile", "FROM bb\nADD . /test\n"),
            (
                ".dockerignore",
                "ignored\nDockerfile\n.dockerignore\n ignored-with-spaces \n!ignored/subdir/excepted-file\n! ignored/subdir/excepted-with-spaces  \n#*",
            ),
            ("not-ignored", "x"),
            ("#file.txt", "x"),
            ("ignored-with-spaces", "x"),
            ("ignored/subdir/file", "x"),
            ("ignored/subdir/excepted-file", "x"),
            ("ignored/subdir/excepted-with-spaces", "x"),
        ],
    );
    let blank = context_dir(
        &d,
        "blank",
        &[
            ("Dockerfile", "FROM bb\nCOPY . /b\n"),
            (".dockerignore", "   \n\n\t\t\n\t     "),
        ],
    );
    let r = docker_py(
        &d,
        &format!(
            r#"
raw = ctx({{"Dockerfile": "FROM bb\nCOPY . /ctx\n",
           ".dockerignore": "\ufeffDockerfile\n.dockerignore\nsent-anyway\n",
           "sent-anyway": "x", "kept": "x"}})
raw_lines = build(fileobj=raw, custom_context=True, tag="raw")
client = build(path="{ignored}", tag="client")
blank = build(path="{blank}", tag="blank")
out({{"raw": run("raw", ["ls", "-A", "/ctx"]),
     "client": run("client", ["find", "/test", "-type", "f"]),
     "blank": [blank[-1].get("stream"), run("blank", ["ls", "-A", "/b"])]}})
"#
        ),
    );
    assert_eq!(r["raw"], "kept\nsent-anyway\n");
    let mut found: Vec<&str> = r["client"].as_str().unwrap().lines().collect();
    found.sort();
    assert_eq!(
        found,
        [
            "/test/#file.txt",
            "/test/ignored/subdir/excepted-file",
            "/test/ignored/subdir/excepted-with-spaces",
            "/test/not-ignored"
        ]
    );
    assert_eq!(
        r["blank"],
        serde_json::json!([
            "Successfully tagged blank:latest\n",
            ".dockerignore\nDockerfile\n"
        ])
    );
}

/// A base image on a registry that wants a login is pulled with the credentials the CLI
/// sends (`X-Registry-Config`, from `docker login`); without them the build fails with
/// the registry's refusal. (Before, the builder did not pull at all.)
#[test]
#[ignore = "root tier: needs root; scripts/test.sh runs it (--run-ignored all)"]
fn base_images_are_pulled_with_the_clis_credentials() {
    let auth = tempfile::tempdir().unwrap();
    let auth_file = auth.path().join("auth.json");
    std::fs::write(
        &auth_file,
        r#"{"anonymous_pull": false, "users": {"dev": {"password_plain": "s3cret", "pull": ["*"], "push": ["team/*"]}}}"#,
    )
    .unwrap();
    let d = with_busybox(&[
        "--registry-addr",
        "127.0.0.1:5000",
        "--registry-auth",
        auth_file.to_str().unwrap(),
    ]);
    let img = "127.0.0.1:5000/team/bb:1";
    let docker = |args: &[&str]| {
        let (code, out, err) = outcome(&d.docker(DOCKER, args));
        assert_eq!(code, 0, "docker {args:?}: {out}{err}");
    };
    docker(&["tag", "bb", img]);
    docker(&["login", "-u", "dev", "-p", "s3cret", "127.0.0.1:5000"]);
    docker(&["push", img]);
    docker(&["rmi", img]);
    let dir = context_dir(
        &d,
        "private",
        &[(
            "Dockerfile",
            &format!("FROM {img}\nRUN echo on top > /top\n"),
        )],
    );
    let (code, out, err) = docker_build(&d, &["-t", "private:1", &dir]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("Status: Downloaded newer image for 127.0.0.1:5000/team/bb:1"),
        "{out}"
    );
    docker(&["rmi", "private:1", img]);
    docker(&["logout", "127.0.0.1:5000"]);
    let (code, out, err) = docker_build(&d, &["-t", "private:2", &dir]);
    assert_ne!(code, 0, "{out}");
    assert!(
        err.contains("cannot pull the base image") && err.contains("UNAUTHORIZED"),
        "{err}"
    );
}
