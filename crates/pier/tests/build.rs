//! Root tier: Dockerfile builds by the real daemon, checked by running what they made and
//! inspecting its config.

mod common;

use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};

use common::*;

fn with_busybox() -> Daemon {
    require_root_and_tools(&["ldd"]);
    let d = Daemon::start();
    d.ok(&["image", "from-host", "bb", BUSYBOX]);
    d
}

/// A context directory in the test's directory, holding `files` (path, content).
fn context(d: &Daemon, name: &str, files: &[(&str, &[u8])]) -> PathBuf {
    let dir = d.dir.path().join(name);
    fs::create_dir_all(&dir).unwrap();
    for (p, c) in files {
        let f = dir.join(p);
        fs::create_dir_all(f.parent().unwrap()).unwrap();
        fs::write(f, c).unwrap();
    }
    dir
}

/// `pier build ARGS CONTEXT`: (success, stdout, stderr).
fn build(d: &Daemon, ctx: &Path, args: &[&str]) -> (bool, String, String) {
    let mut a = vec!["build"];
    a.extend_from_slice(args);
    let ctx = ctx.to_str().unwrap();
    a.push(ctx);
    let out = d.pier(&a);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn build_ok(d: &Daemon, ctx: &Path, args: &[&str]) -> String {
    let (ok, out, err) = build(d, ctx, args);
    assert!(
        ok,
        "build {args:?} failed:\nstdout: {out}\nstderr: {err}\ndaemon log:\n{}",
        d.log()
    );
    out
}

/// The short ID of `Successfully built ...`.
fn built_id(out: &str) -> String {
    out.lines()
        .find_map(|l| l.strip_prefix("Successfully built "))
        .unwrap_or_else(|| panic!("no image built:\n{out}"))
        .to_string()
}

/// The output of each step, in order (`Step N/M : ...` to the next one).
fn steps(out: &str) -> Vec<String> {
    out.split("Step ").skip(1).map(String::from).collect()
}

fn config(d: &Daemon, image: &str) -> serde_json::Value {
    d.json(&["image", "inspect", image])[0]["config"].clone()
}

/// Runs `sh -c SCRIPT` in the image, whatever its entrypoint.
fn sh(d: &Daemon, image: &str, script: &str) -> String {
    d.ok(&[
        "run",
        "--rm",
        "--entrypoint",
        "env",
        image,
        "sh",
        "-c",
        script,
    ])
}

/// Waits until no container is left (`run --rm` removes its container after it exits).
fn no_containers(d: &Daemon) -> bool {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::time::Instant::now() < deadline {
        if d.ok(&["ps", "-aq"]).is_empty() {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    false
}

/// Nothing of a build may stay behind: no containers, no work directories, no scratch.
fn assert_nothing_left(d: &Daemon) {
    assert!(no_containers(d), "no build container is left");
    let build_dir = d.root.join("build");
    let left: Vec<_> = fs::read_dir(&build_dir)
        .map(|r| r.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "build work directories left: {left:?}");
    assert!(d.tmp_is_empty(), "image scratch space left");
    let mounts = fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts.contains(build_dir.to_str().unwrap()),
        "build mounts left"
    );
}

fn tar_with(entries: &[(&str, &[u8], u64)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Directory);
    h.set_mode(0o755);
    h.set_size(0);
    h.set_mtime(1_600_000_000);
    b.append_data(&mut h, "t/", std::io::empty()).unwrap();
    for (name, data, uid) in entries {
        let mut h = tar::Header::new_gnu();
        h.set_mode(0o644);
        h.set_uid(*uid);
        h.set_gid(*uid);
        h.set_size(data.len() as u64);
        h.set_mtime(1_600_000_000);
        b.append_data(&mut h, name, *data).unwrap();
    }
    b.into_inner().unwrap()
}

#[test]
#[ignore = "root tier: needs root; scripts/test.sh runs it (--run-ignored all)"]
fn single_stage_build_runs_with_its_config() {
    let d = with_busybox();
    let tar = tar_with(&[("t/a.txt", b"from tar\n", 1234)]);
    let tgz = {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut e, &tar_with(&[("t/g.txt", b"from tgz\n", 0)])).unwrap();
        e.finish().unwrap()
    };
    let plain_gz = {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut e, b"not a tar").unwrap();
        e.finish().unwrap()
    };
    let dockerfile = r#"# escape=\
FROM bb
ARG VERSION=1.0
ARG WHO
ENV APP_HOME=/srv/app \
    GREETING="hello world"
LABEL org.example.version=$VERSION "org.example.who"="${WHO:-nobody}"
WORKDIR $APP_HOME
COPY hello.txt ./
COPY --chown=1000:1000 --chmod=600 conf/ conf/
COPY script.sh /usr/local/bin/
ADD files.tar /opt/
ADD files.tgz /opt/gz/
ADD plain.gz /opt/
RUN echo "built $VERSION by ${WHO:-?}" > built.txt \
 && mkdir -p /data && echo seed > /data/seed
EXPOSE 8080 53/udp 9000-9001
VOLUME ["/data"]
HEALTHCHECK --interval=5s --timeout=2s --start-period=1s --retries=4 \
  CMD test -f /srv/app/built.txt
STOPSIGNAL SIGINT
USER 1000:1000
ENTRYPOINT ["/usr/local/bin/script.sh"]
CMD ["default-arg"]
ONBUILD RUN echo triggered
"#;
    let ctx = context(
        &d,
        "single",
        &[
            ("Dockerfile", dockerfile.as_bytes()),
            ("hello.txt", b"hello\n"),
            ("conf/app.conf", b"key=value\n"),
            ("script.sh", b"#!/bin/sh\necho \"script $*\"\n"),
            ("files.tar", &tar),
            ("files.tgz", &tgz),
            ("plain.gz", &plain_gz),
        ],
    );
    fs::set_permissions(ctx.join("script.sh"), fs::Permissions::from_mode(0o755)).unwrap();
    fs::File::options()
        .write(true)
        .open(ctx.join("hello.txt"))
        .unwrap()
        .set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_600_000_000))
        .unwrap();

    let out = build_ok(&d, &ctx, &["-t", "single:1", "--build-arg", "WHO=tester"]);
    assert!(out.contains("Step 1/21 : FROM bb\n"), "{out}");
    assert!(
        out.contains("Step 21/21 : ONBUILD RUN echo triggered\n"),
        "{out}"
    );
    assert!(out.contains(" ---> Running in "), "{out}");
    assert!(out.contains("Removing intermediate container "), "{out}");
    assert!(out.contains("Successfully tagged single:1\n"), "{out}");

    // Run it: entrypoint and cmd, and what the steps wrote.
    assert_eq!(d.ok(&["run", "--rm", "single:1"]), "script default-arg\n");
    assert_eq!(d.ok(&["run", "--rm", "single:1", "x", "y"]), "script x y\n");
    let inside = sh(
        &d,
        "single:1",
        "id -u; id -g; pwd; cat built.txt; echo \"$GREETING\"; echo \"[$VERSION]\"; \
         stat -c '%u:%g %a' conf/app.conf conf hello.txt /usr/local/bin/script.sh; \
         stat -c %Y hello.txt; cat conf/app.conf; \
         cat /opt/t/a.txt; stat -c '%u %a' /opt/t/a.txt; cat /opt/gz/t/g.txt; \
         test -f /opt/plain.gz && echo plain-kept; cat /data/seed",
    );
    assert_eq!(
        inside,
        "1000\n1000\n/srv/app\nbuilt 1.0 by tester\nhello world\n[]\n\
         1000:1000 600\n1000:1000 755\n0:0 644\n0:0 755\n\
         1600000000\nkey=value\n\
         from tar\n1234 644\nfrom tgz\nplain-kept\nseed\n"
    );

    // The config, as Docker writes it.
    let c = config(&d, "single:1");
    let env: Vec<&str> = c["Env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(env.contains(&"APP_HOME=/srv/app"), "{env:?}");
    assert!(env.contains(&"GREETING=hello world"), "{env:?}");
    assert!(
        !env.iter()
            .any(|e| e.starts_with("VERSION=") || e.starts_with("WHO=")),
        "build arguments are not kept: {env:?}"
    );
    assert_eq!(c["WorkingDir"], "/srv/app");
    assert_eq!(c["User"], "1000:1000");
    assert_eq!(
        c["Entrypoint"],
        serde_json::json!(["/usr/local/bin/script.sh"])
    );
    assert_eq!(c["Cmd"], serde_json::json!(["default-arg"]));
    assert_eq!(
        c["ExposedPorts"],
        serde_json::json!({"8080/tcp": {}, "53/udp": {}, "9000/tcp": {}, "9001/tcp": {}})
    );
    assert_eq!(
        c["Labels"],
        serde_json::json!({"org.example.version": "1.0", "org.example.who": "tester"})
    );
    assert_eq!(c["Volumes"], serde_json::json!({"/data": {}}));
    assert_eq!(
        c["Healthcheck"],
        serde_json::json!({
            "Test": ["CMD-SHELL", "test -f /srv/app/built.txt"],
            "Interval": 5_000_000_000u64,
            "Timeout": 2_000_000_000u64,
            "StartPeriod": 1_000_000_000u64,
            "Retries": 4
        })
    );
    assert_eq!(c["StopSignal"], "SIGINT");
    assert_eq!(c["OnBuild"], serde_json::json!(["RUN echo triggered"]));

    // History: a layer per RUN/COPY/ADD/WORKDIR, empty entries for the rest.
    let h = d.json(&["image", "history", "single:1"]);
    let h = h.as_array().unwrap();
    let empty = |by: &str| {
        h.iter()
            .find(|e| e["created_by"].as_str().unwrap().contains(by))
            .unwrap_or_else(|| panic!("no history entry for {by}: {h:?}"))["empty_layer"]
            .as_bool()
            .unwrap()
    };
    assert!(empty("ENV APP_HOME=/srv/app GREETING=hello world"));
    assert!(empty("HEALTHCHECK"));
    assert!(!empty("WORKDIR /srv/app"));
    assert!(!empty("COPY file:"));
    assert!(!empty("ADD file:"));
    assert!(!empty("|2 VERSION=1.0 WHO=tester /bin/sh -c echo"));
    // Built images know what they were built on (Docker's `Parent`).
    let parent = d.json(&["image", "inspect", "single:1"])[0]["parent"].clone();
    assert!(parent.as_str().unwrap().starts_with("sha256:"), "{parent}");
    // Only the final image is listed; the intermediate ones with -a.
    let listed = d.ok(&["images", "-q"]);
    assert_eq!(listed.lines().count(), 2, "{listed}");
    assert!(d.ok(&["images", "-aq"]).lines().count() > 10);
    assert_nothing_left(&d);
}

#[test]
#[ignore = "root tier: needs root; scripts/test.sh runs it (--run-ignored all)"]
fn multi_stage_copy_from_target_and_triggers() {
    let d = with_busybox();
    let dockerfile = "FROM bb AS build\n\
        WORKDIR /src\n\
        RUN echo compiled > app.bin && mkdir out && echo lib > out/lib.txt\n\
        FROM bb AS other\n\
        RUN echo other > /other\n\
        FROM scratch AS tiny\n\
        COPY --from=bb /bin/busybox /busybox\n\
        RUN [\"/busybox\", \"mkdir\", \"/made\"]\n\
        CMD [\"/busybox\", \"ls\", \"/\"]\n\
        FROM bb\n\
        COPY --from=build /src/app.bin /app/\n\
        COPY --from=0 /src/out /app/out\n\
        COPY --from=other /other /app/\n\
        COPY --from=tiny /made /app/made\n\
        COPY --from=bb /bin/busybox /app/bb-copy\n\
        ENTRYPOINT [\"cat\"]\n";
    let ctx = context(&d, "multi", &[("Dockerfile", dockerfile.as_bytes())]);
    build_ok(&d, &ctx, &["-t", "multi:1"]);
    assert_eq!(
        sh(
            &d,
            "multi:1",
            "cat /app/app.bin /app/out/lib.txt /app/other; test -x /app/bb-copy && echo x; test -e /src || echo no-src; test -d /app/made && echo made"
        ),
        "compiled\nlib\nother\nx\nno-src\nmade\n"
    );
    // A stage from scratch: what was copied in and made, and the runtime's mount points.
    build_ok(&d, &ctx, &["--target", "tiny", "-t", "tiny:1"]);
    assert_eq!(
        d.ok(&["run", "--rm", "tiny:1"]),
        "busybox\ndev\netc\nmade\nproc\nsys\n"
    );
    let c = config(&d, "multi:1");
    assert_eq!(c["Entrypoint"], serde_json::json!(["cat"]));
    assert!(
        c.get("Cmd").is_none() || c["Cmd"].is_null(),
        "a new ENTRYPOINT drops the base image's CMD: {c}"
    );

    // --target stops at a stage.
    let out = build_ok(&d, &ctx, &["--target", "build", "-t", "stage:1"]);
    assert!(out.contains("Step 3/3 : RUN"), "{out}");
    assert!(!out.contains("FROM bb AS other"), "{out}");
    assert_eq!(config(&d, "stage:1")["WorkingDir"], "/src");
    let (ok, _, err) = build(&d, &ctx, &["--target", "nope"]);
    assert!(
        !ok && err.contains("target stage \"nope\" could not be found"),
        "{err}"
    );

    // ONBUILD triggers run in the child's build, then are gone from its config.
    let base = context(
        &d,
        "trig-base",
        &[(
            "Dockerfile",
            b"FROM bb\nONBUILD RUN echo triggered > /trig\nONBUILD ENV TRIGGERED=yes\n",
        )],
    );
    build_ok(&d, &base, &["-t", "trig:1"]);
    let child = context(
        &d,
        "trig-child",
        &[("Dockerfile", b"FROM trig:1\nRUN cat /trig\n")],
    );
    let out = build_ok(&d, &child, &["-t", "child:1"]);
    assert!(out.contains("# Executing 2 build trigger(s)\n"), "{out}");
    assert!(out.contains("triggered\n"), "{out}");
    let c = config(&d, "child:1");
    assert!(c.get("OnBuild").is_none(), "{c}");
    assert!(c["Env"]
        .as_array()
        .unwrap()
        .contains(&"TRIGGERED=yes".into()));
    assert_nothing_left(&d);
}

#[test]
#[ignore = "root tier: needs root; scripts/test.sh runs it (--run-ignored all)"]
fn cache_hits_invalidation_restart_and_no_cache() {
    let mut d = with_busybox();
    let dockerfile = "FROM bb\n\
        ARG X=1\n\
        RUN echo first > /first\n\
        COPY a.txt /a.txt\n\
        RUN cat /a.txt > /copy-of-a\n\
        COPY b.txt /b.txt\n\
        CMD [\"cat\", \"/copy-of-a\"]\n";
    let ctx = context(
        &d,
        "cache",
        &[
            ("Dockerfile", dockerfile.as_bytes()),
            ("a.txt", b"one\n"),
            ("b.txt", b"two\n"),
        ],
    );
    let cached = |out: &str| -> Vec<bool> {
        steps(out)
            .iter()
            .skip(1)
            .map(|s| s.contains(" ---> Using cache\n"))
            .collect()
    };
    let first = build_ok(&d, &ctx, &["-t", "cache:1"]);
    assert_eq!(cached(&first), vec![false; 6]);
    let id = built_id(&first);

    // The same build again: every step from the cache, no container, no new layer or
    // blob, the same image.
    let files = d.image_files();
    let again = build_ok(&d, &ctx, &["-t", "cache:1"]);
    assert_eq!(d.image_files(), files, "a cached build writes nothing");
    assert_eq!(cached(&again), vec![true; 6], "{again}");
    assert!(!again.contains("Running in"), "{again}");
    assert_eq!(built_id(&again), id);

    // The cache is in the store: it survives a restart of the daemon.
    d.stop();
    d.spawn();
    let restarted = build_ok(&d, &ctx, &["-t", "cache:1"]);
    assert_eq!(cached(&restarted), vec![true; 6], "{restarted}");
    assert_eq!(built_id(&restarted), id);

    // A touched file (same content) changes nothing; new content rebuilds from its COPY.
    let f = fs::File::options()
        .write(true)
        .open(ctx.join("a.txt"))
        .unwrap();
    f.set_modified(std::time::UNIX_EPOCH).unwrap();
    drop(f);
    assert_eq!(built_id(&build_ok(&d, &ctx, &[])), id);
    fs::write(ctx.join("a.txt"), "changed\n").unwrap();
    let changed = build_ok(&d, &ctx, &["-t", "cache:2"]);
    assert_eq!(
        cached(&changed),
        vec![true, true, false, false, false, false],
        "{changed}"
    );
    assert_ne!(built_id(&changed), id);
    assert_eq!(d.ok(&["run", "--rm", "cache:2"]), "changed\n");
    assert_eq!(d.ok(&["run", "--rm", "cache:1"]), "one\n");

    // A different build argument reruns the RUN steps that see it.
    let arg = build_ok(&d, &ctx, &["--build-arg", "X=2"]);
    assert_eq!(
        cached(&arg),
        vec![true, false, false, false, false, false],
        "{arg}"
    );

    // --no-cache: every step afresh.
    // (With an argument of its own: the same steps over the same content within the same
    // second would make the same layers and config, and so the same image.)
    let fresh = build_ok(
        &d,
        &ctx,
        &["--no-cache", "--build-arg", "X=3", "-t", "cache:3"],
    );
    assert_eq!(cached(&fresh), vec![false; 6], "{fresh}");
    assert_ne!(built_id(&fresh), built_id(&changed));
    assert_eq!(d.ok(&["run", "--rm", "cache:3"]), "changed\n");

    // Removing a built image takes the intermediate images only it needed.
    assert!(no_containers(&d));
    let before = d.ok(&["images", "-aq"]).lines().count();
    let report = d.json(&["rmi", "cache:3"]);
    assert!(
        report[0]["deleted"].as_array().unwrap().len() > 1,
        "{report}"
    );
    assert!(d.ok(&["images", "-aq"]).lines().count() < before);
    assert_eq!(d.ok(&["run", "--rm", "cache:2"]), "changed\n");
    assert_nothing_left(&d);
}

#[test]
#[ignore = "root tier: needs root; scripts/test.sh runs it (--run-ignored all)"]
fn dockerignore_keeps_files_out_of_the_context() {
    let d = with_busybox();
    let ctx = context(
        &d,
        "ignore",
        &[
            (
                "Dockerfile",
                b"FROM bb\nCOPY . /ctx/\nCOPY *.txt deep/*/z.txt /globbed/\n",
            ),
            (
                ".dockerignore",
                b"# build junk\n*.key\nlogs\n!logs/keep.log\n**/*.tmp\nnode_modules\nDockerfile\n",
            ),
            ("keep.txt", b"k"),
            ("secret.key", b"s"),
            ("logs/a.log", b"a"),
            ("logs/keep.log", b"k"),
            ("deep/x/y.tmp", b"t"),
            ("deep/x/z.txt", b"z"),
            ("node_modules/m/index.js", b"m"),
        ],
    );
    build_ok(&d, &ctx, &["-t", "ignore:1"]);
    assert_eq!(
        sh(&d, "ignore:1", "cd /ctx && find . -type f | sort"),
        "./.dockerignore\n./deep/x/z.txt\n./keep.txt\n./logs/keep.log\n",
        "the Dockerfile is read, then dropped from the context as .dockerignore says"
    );
    assert_eq!(sh(&d, "ignore:1", "ls /globbed"), "keep.txt\nz.txt\n");
    let secret = context(
        &d,
        "ignore",
        &[("Dockerfile", b"FROM bb\nCOPY secret.key /\n")],
    );
    let (ok, _, err) = build(&d, &secret, &[]);
    assert!(!ok && err.contains("excluded by .dockerignore"), "{err}");
    assert_nothing_left(&d);
}

#[test]
#[ignore = "root tier: needs root; scripts/test.sh runs it (--run-ignored all)"]
fn arg_scoping_substitution_shell_and_labels() {
    let d = with_busybox();
    let dockerfile = r#"ARG BASE=bb
ARG GLOBAL=global-default
FROM ${BASE} AS first
RUN echo "before=[$GLOBAL]"
ARG GLOBAL
RUN echo "after=[$GLOBAL]"
ARG LOCAL=local-default
ENV FROM_ARG=${LOCAL} \
    DEFAULTED=${UNSET:-fallback} \
    ALT=${LOCAL:+alt} \
    NOALT=${UNSET:+alt} \
    ESCAPED=\$LOCAL \
    QUOTED='$LOCAL'
ENV LOCAL=from-env
ENV OLD_FORM value with  spaces
RUN echo "env-wins=[$LOCAL]"
SHELL ["/bin/busybox", "sh", "-c"]
RUN echo via-shell
CMD echo hi
"#;
    let ctx = context(&d, "args", &[("Dockerfile", dockerfile.as_bytes())]);
    let out = build_ok(
        &d,
        &ctx,
        &[
            "-t",
            "args:1",
            "--build-arg",
            "GLOBAL=from-cli",
            "--build-arg",
            "NOBODY_USES=1",
            "--label",
            "com.example.a=1",
            "--label",
            "q=it's $x",
        ],
    );
    // An ARG before FROM is not seen in the stage until declared again.
    assert!(out.contains("\nbefore=[]\n"), "{out}");
    assert!(out.contains("\nafter=[from-cli]\n"), "{out}");
    assert!(out.contains("\nenv-wins=[from-env]\n"), "{out}");
    // The ARGs before FROM are steps too, as Docker's classic builder counts them.
    assert!(out.contains("Step 1/15 : ARG BASE=bb\n"), "{out}");
    assert!(out.contains("Step 15/15 : LABEL "), "{out}");
    assert!(
        out.contains("[Warning] One or more build-args [NOBODY_USES] were not consumed"),
        "{out}"
    );
    let c = config(&d, "args:1");
    let env: Vec<&str> = c["Env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    for e in [
        "FROM_ARG=local-default",
        "DEFAULTED=fallback",
        "ALT=alt",
        "NOALT=",
        "ESCAPED=$LOCAL",
        "QUOTED=$LOCAL",
        "LOCAL=from-env",
        "OLD_FORM=value with  spaces",
    ] {
        assert!(env.contains(&e), "{e} in {env:?}");
    }
    assert_eq!(
        c["Cmd"],
        serde_json::json!(["/bin/busybox", "sh", "-c", "echo hi"])
    );
    assert_eq!(
        c["Labels"],
        serde_json::json!({"com.example.a": "1", "q": "it's $x"})
    );
    let h = d.json(&["image", "history", "args:1"]);
    assert!(
        h.as_array().unwrap().iter().any(|e| e["created_by"]
            == "|2 GLOBAL=from-cli LOCAL=local-default /bin/busybox sh -c echo via-shell"),
        "RUN goes through the SHELL: {h}"
    );
    assert_nothing_left(&d);
}

#[test]
#[ignore = "root tier: needs root; scripts/test.sh runs it (--run-ignored all)"]
fn dockerfile_outside_the_context_or_on_stdin() {
    let d = with_busybox();
    let ctx = context(&d, "outside-ctx", &[("data.txt", b"data")]);
    let df = context(
        &d,
        "outside-df",
        &[("build.Dockerfile", b"FROM bb\nCOPY . /ctx/\n")],
    );
    build_ok(
        &d,
        &ctx,
        &[
            "-f",
            df.join("build.Dockerfile").to_str().unwrap(),
            "-t",
            "outside:1",
        ],
    );
    assert_eq!(
        sh(&d, "outside:1", "cd /ctx && find . -type f"),
        "./data.txt\n",
        "the Dockerfile added to the context is not copied"
    );
    let out = d.with_input(
        &["build", "-f", "-", "-t", "stdin:1", ctx.to_str().unwrap()],
        b"FROM bb\nCOPY data.txt /from-stdin\n",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(sh(&d, "stdin:1", "cat /from-stdin"), "data");
    assert_nothing_left(&d);
}

#[test]
#[ignore = "root tier: needs root; scripts/test.sh runs it (--run-ignored all)"]
fn interrupted_builds_leave_nothing() {
    use std::io::BufRead;
    let mut d = with_busybox();
    let ctx = context(
        &d,
        "slow",
        &[("Dockerfile", b"FROM bb\nRUN echo started && sleep 60\n")],
    );
    let start = |d: &Daemon| {
        let mut child = d
            .cmd()
            .args(["build", ctx.to_str().unwrap()])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
        assert!(
            lines.any(|l| l.unwrap() == "started"),
            "the RUN step did not start"
        );
        child
    };
    let wait_empty = |d: &Daemon| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
        loop {
            let dirs = fs::read_dir(d.root.join("build"))
                .map(|r| r.count())
                .unwrap_or(0);
            if dirs == 0 && no_containers(d) {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the build left things"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    };

    // The client goes away: the build stops and its step's container goes.
    let mut child = start(&d);
    child.kill().unwrap();
    child.wait().unwrap();
    wait_empty(&d);

    // The daemon dies mid-step: once restarted, nothing of the build is left.
    let mut child = start(&d);
    d.kill9();
    assert!(!child.wait().unwrap().success());
    d.spawn();
    wait_empty(&d);
    assert_nothing_left(&d);
}

#[test]
#[ignore = "root tier: needs root; scripts/test.sh runs it (--run-ignored all)"]
fn run_steps_use_the_network_asked_for_and_volumes_as_docker_does() {
    let d = with_busybox();
    let ctx = context(
        &d,
        "net",
        &[("Dockerfile", b"FROM bb\nRUN ls /sys/class/net | sort\n")],
    );
    let none = build_ok(&d, &ctx, &["--no-cache", "--network", "none"]);
    assert!(none.contains("\nlo\n") && !none.contains("eth0"), "{none}");
    let bridge = build_ok(&d, &ctx, &["--no-cache"]);
    assert!(bridge.contains("\neth0\n"), "{bridge}");
    // The host's (here: the test daemon's namespace, where the bridge is).
    let host = build_ok(&d, &ctx, &["--no-cache", "--network", "host"]);
    assert!(
        host.contains(&format!("\n{}\n", d.default_bridge())) && !host.contains("eth0"),
        "{host}"
    );
    let out = d.ok(&["build", "-q", "--no-cache", ctx.to_str().unwrap()]);
    assert!(
        out.trim().starts_with("sha256:") && out.lines().count() == 1,
        "{out}"
    );

    // After VOLUME, what RUN writes there is discarded (the step's container has a
    // volume there), and the step's anonymous volume goes with its container.
    let vol = context(
        &d,
        "vol",
        &[(
            "Dockerfile",
            b"FROM bb\nRUN mkdir /data && echo before > /data/old\nVOLUME /data\nRUN echo x > /data/new && ls /data\n",
        )],
    );
    let out = build_ok(&d, &vol, &["-t", "vol:1"]);
    assert!(out.contains("\nnew\nold\n"), "{out}");
    assert_eq!(d.ok(&["run", "--rm", "vol:1", "ls", "/data"]), "old\n");
    assert!(no_containers(&d));
    assert_eq!(d.ok(&["volume", "ls", "-q"]), "", "no volume is left");
    assert_nothing_left(&d);
}

/// A Dockerfile that must fail: name, Dockerfile, more files, `pier build` options, and a
/// piece of the error it must fail with.
type Case<'a> = (
    &'a str,
    &'a str,
    Vec<(&'a str, &'a [u8])>,
    Vec<&'a str>,
    &'a str,
);

#[test]
#[ignore = "root tier: needs root; scripts/test.sh runs it (--run-ignored all)"]
fn bad_input_is_refused_and_leaves_nothing() {
    let d = with_busybox();
    let images_before = d.ok(&["images", "-aq"]);
    let xz = [0xfd, b'7', b'z', b'X', b'Z', 0, 0, 4];
    let cases: Vec<Case> = vec![
        (
            "unknown",
            "FROM bb\nFOO bar\n",
            vec![],
            vec![],
            "Dockerfile parse error line 2: unknown instruction: FOO",
        ),
        (
            "missing",
            "FROM bb\nCOPY nope.txt /x\n",
            vec![],
            vec![],
            "COPY failed: nope.txt: no such file or directory in the build context",
        ),
        (
            "glob",
            "FROM bb\nCOPY *.nope /x/\n",
            vec![],
            vec![],
            "nothing in the build context",
        ),
        (
            "runfails",
            "FROM bb\nENV A=1\nRUN echo ok > /ok\nRUN false\n",
            vec![],
            vec![],
            "The command '/bin/sh -c false' returned a non-zero code: 1",
        ),
        (
            "exit3",
            "FROM bb\nRUN [\"sh\", \"-c\", \"exit 3\"]\n",
            vec![],
            vec![],
            "The command 'sh -c exit 3' returned a non-zero code: 3",
        ),
        (
            "notfound",
            "FROM bb\nRUN [\"nosuchcmd\"]\n",
            vec![],
            vec![],
            "executable file not found",
        ),
        (
            "base",
            "FROM nosuch:9\nRUN true\n",
            vec![],
            vec![],
            "the base image nosuch:9 is not in the image store",
        ),
        (
            "dotdot",
            "FROM bb\nCOPY ../x /x\n",
            vec![],
            vec![],
            "forbidden path outside the build context: ../x",
        ),
        (
            "abslink",
            "FROM bb\nCOPY leak /x\n",
            vec![],
            vec![],
            "points to /etc/shadow, outside the build context",
        ),
        (
            "uplink",
            "FROM bb\nCOPY up/etc/passwd /x\n",
            vec![],
            vec![],
            "outside the build context",
        ),
        (
            "url",
            "FROM bb\nADD http://example.com/f /f\n",
            vec![],
            vec![],
            "needs the network",
        ),
        (
            "xz",
            "FROM bb\nADD f.tar.xz /f/\n",
            vec![("f.tar.xz", &xz)],
            vec![],
            "xz-compressed",
        ),
        (
            "multi",
            "FROM bb\nCOPY a b /dst\n",
            vec![("a", b"a"), ("b", b"b")],
            vec![],
            "must be a directory and end with a /",
        ),
        (
            "empty",
            "# nothing\n",
            vec![],
            vec![],
            "the Dockerfile is empty",
        ),
        (
            "nofrom",
            "RUN true\n",
            vec![],
            vec![],
            "no FROM instruction",
        ),
        (
            "buildkit",
            "FROM bb\nRUN --mount=type=cache,target=/c true\n",
            vec![],
            vec![],
            "BuildKit feature",
        ),
        (
            "dupstage",
            "FROM bb AS x\nFROM bb AS X\n",
            vec![],
            vec![],
            "the stage name \"x\" is used twice",
        ),
        (
            "target",
            "FROM bb\n",
            vec![],
            vec!["--target", "nope"],
            "could not be found",
        ),
        (
            "chown",
            "FROM bb\nCOPY --chown=nosuchuser a /a\n",
            vec![("a", b"a")],
            vec![],
            "unable to find user nosuchuser",
        ),
        (
            "tag",
            "FROM bb\n",
            vec![],
            vec!["-t", "Bad:Ref"],
            "invalid tag",
        ),
        (
            "fromstage",
            "FROM bb\nCOPY --from=nowhere /x /x\n",
            vec![],
            vec![],
            "no earlier build stage and no image is named nowhere",
        ),
    ];
    for (name, dockerfile, files, args, expected) in cases {
        let mut all: Vec<(&str, &[u8])> = vec![("Dockerfile", dockerfile.as_bytes())];
        all.extend(files);
        let ctx = context(&d, &format!("bad-{name}"), &all);
        if name == "abslink" {
            symlink("/etc/shadow", ctx.join("leak")).unwrap();
        }
        if name == "uplink" {
            symlink("../../..", ctx.join("up")).unwrap();
        }
        let mut a = vec!["-t", "bad:1"];
        a.extend(args);
        let (ok, out, err) = build(&d, &ctx, &a);
        assert!(!ok, "{name}: the build should fail:\n{out}");
        assert!(
            err.contains(expected),
            "{name}: expected {expected:?} in the error:\n{err}\nstdout:\n{out}\ndaemon log:\n{}",
            d.log()
        );
        assert!(
            d.pier(&["image", "inspect", "bad:1"]).status.code() != Some(0),
            "{name}: a failed build tags nothing"
        );
        assert_nothing_left(&d);
    }
    // A context without the Dockerfile named.
    let ctx = context(&d, "bad-nodockerfile", &[("x", b"x")]);
    let (ok, _, err) = build(&d, &ctx, &[]);
    assert!(!ok && err.contains("cannot locate the Dockerfile"), "{err}");
    // What the steps that succeeded made is only cache, which prune reclaims.
    d.ok(&["image", "prune", "-f"]);
    assert_eq!(d.ok(&["images", "-aq"]), images_before);
    assert_nothing_left(&d);
}
