//! The CLI's core contracts as Docker users expect them, through the real binary against a
//! private daemon: a closed stdout ends quietly, `--format` Go templates and JSON errors,
//! Docker's exit codes, `-H unix://`, prune's confirmation, completion and man pages.

mod common;

use std::io::Read;
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Output, Stdio};

use common::{require_root_and_tools, Daemon, BUSYBOX};

fn daemon_with_image() -> Daemon {
    require_root_and_tools(&["ip", "bash"]);
    let d = Daemon::start();
    d.ok(&["image", "from-host", "bb", BUSYBOX]);
    d
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Runs `pier ARGS` with a stdout pipe whose reader goes after `keep` bytes (0: at once);
/// returns how it ended and its stderr.
fn with_closed_stdout(
    d: &Daemon,
    args: &[&str],
    keep: usize,
) -> (std::process::ExitStatus, String) {
    let mut child = d
        .cmd()
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = child.stdout.take().unwrap();
    if keep > 0 {
        let mut buf = vec![0u8; keep];
        out.read_exact(&mut buf).unwrap();
    }
    drop(out);
    let o = child.wait_with_output().unwrap();
    (o.status, text(&o.stderr))
}

fn assert_sigpipe(what: &str, (status, stderr): (std::process::ExitStatus, String)) {
    assert_eq!(
        status.signal(),
        Some(libc_sigpipe()),
        "{what}: should end by SIGPIPE as a Unix tool does, ended {status}; stderr: {stderr}"
    );
    assert_eq!(stderr, "", "{what}: nothing on stderr");
}

fn libc_sigpipe() -> i32 {
    13
}

fn sh(d: &Daemon, script: &str) -> Output {
    Command::new("bash")
        .arg("-c")
        .arg(script)
        .env("PIER", common::PIER)
        .env("PIER_HOST", &d.socket)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

#[test]
#[ignore = "root tier: needs root; scripts/test.sh runs it (--run-ignored all)"]
fn a_closed_stdout_ends_quietly_on_every_print_path() {
    let d = daemon_with_image();
    d.ok(&["run", "-d", "--name", "up", "bb", "sleep", "600"]);
    d.ok(&["run", "--name", "lots", "bb", "seq", "1", "200000"]);

    // As in a shell: the pipeline's status is head's, and nothing is printed.
    for cmd in [
        "$PIER ps | head -0",
        "$PIER ps --format json | head -0",
        "$PIER ps --format '{{.Names}}' | head -0",
        "$PIER logs lots | head -1",
    ] {
        let o = sh(&d, cmd);
        assert_eq!(o.status.code(), Some(0), "{cmd}: {}", text(&o.stderr));
        assert_eq!(text(&o.stderr), "", "{cmd}");
    }
    // With pipefail, the status is SIGPIPE's, as `yes | head -1` gives.
    let o = sh(&d, "set -o pipefail; $PIER logs lots | head -1");
    assert_eq!(o.status.code(), Some(141), "{}", text(&o.stderr));

    // Each print path: tables, JSON, templates, log and exec streams, a foreground run,
    // an export to stdout, completion scripts.
    assert_sigpipe("ps", with_closed_stdout(&d, &["ps"], 0));
    // A plain println! path (ps -q): the panic of a closed stdout ends the same way.
    assert_sigpipe("ps -q", with_closed_stdout(&d, &["ps", "-aq"], 0));
    assert_sigpipe(
        "images json",
        with_closed_stdout(&d, &["--format", "json", "images"], 0),
    );
    assert_sigpipe("inspect", with_closed_stdout(&d, &["inspect", "up"], 0));
    assert_sigpipe("logs", with_closed_stdout(&d, &["logs", "lots"], 10));
    assert_sigpipe(
        "exec",
        with_closed_stdout(&d, &["exec", "up", "seq", "1", "200000"], 10),
    );
    assert_sigpipe(
        "run",
        with_closed_stdout(&d, &["run", "--rm", "bb", "seq", "1", "200000"], 10),
    );
    assert_sigpipe("export", with_closed_stdout(&d, &["export", "up"], 10));
    assert_sigpipe(
        "completion",
        with_closed_stdout(&d, &["completion", "bash"], 10),
    );

    // Events: a stream that prints only when something happens.
    let mut child = d
        .cmd()
        .args(["events"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    std::thread::sleep(std::time::Duration::from_millis(300));
    d.ok(&["run", "--rm", "bb", "true"]);
    let o = child.wait_with_output().unwrap();
    assert_sigpipe("events", (o.status, text(&o.stderr)));

    d.ok(&["rm", "-f", "up", "lots"]);
}

#[test]
#[ignore = "root tier: needs root; scripts/test.sh runs it (--run-ignored all)"]
fn format_takes_go_templates_with_dockers_field_names() {
    let d = daemon_with_image();
    let id = d
        .ok(&[
            "run",
            "-d",
            "--name",
            "web",
            "--label",
            "tier=front",
            "bb",
            "sleep",
            "600",
        ])
        .trim()
        .to_string();

    assert_eq!(d.ok(&["ps", "--format", "{{.Names}}"]), "web\n");
    assert_eq!(
        d.ok(&["ps", "--format", "{{.ID}}"]),
        format!("{}\n", &id[..12])
    );
    assert_eq!(
        d.ok(&["ps", "--no-trunc", "--format", "{{.ID}} {{.State}}"]),
        format!("{id} running\n")
    );
    // `table`: Docker's header names, columns aligned; a typed \t is a tab.
    assert_eq!(
        d.ok(&["ps", "--format", "table {{.ID}}\\t{{.Names}}"]),
        format!("CONTAINER ID   NAMES\n{}   web\n", &id[..12])
    );
    let row: serde_json::Value =
        serde_json::from_str(&d.ok(&["ps", "--format", "{{json .}}"])).unwrap();
    assert_eq!(row["name"], "web");
    assert_eq!(
        d.ok(&[
            "ps",
            "--format",
            "{{if eq .State \"running\"}}{{upper .Names}}{{end}}"
        ]),
        "WEB\n"
    );

    d.ok(&[
        "run",
        "-d",
        "--name",
        "pub",
        "-p",
        "127.0.0.1:18081:80",
        "bb",
        "sleep",
        "600",
    ]);
    assert_eq!(
        d.ok(&[
            "ps",
            "--filter",
            "name=pub",
            "--format",
            "{{.Names}} {{.Ports}}"
        ]),
        "pub 127.0.0.1:18081->80/tcp\n"
    );
    d.ok(&["rm", "-f", "pub"]);

    // inspect -f / --format: Docker's inspect paths over Pier's JSON.
    assert_eq!(
        d.ok(&["inspect", "-f", "{{.State.Status}}", "web"]),
        "running\n"
    );
    assert_eq!(
        d.ok(&[
            "inspect",
            "--format",
            "{{.State.Running}} {{.Name}} {{.Id}}",
            "web"
        ]),
        format!("true /web {id}\n")
    );
    assert_eq!(
        d.ok(&[
            "inspect",
            "-f",
            "{{index .Config.Labels \"tier\"}} {{json .Config.Labels}}",
            "web"
        ]),
        "front {\"tier\":\"front\"}\n"
    );
    let ip = d.ok(&["inspect", "-f", "{{.NetworkSettings.IPAddress}}", "web"]);
    assert!(ip.trim().parse::<std::net::Ipv4Addr>().is_ok(), "{ip:?}");
    let env: Vec<String> =
        serde_json::from_value(d.json(&["inspect", "web"])[0]["config"]["env"].clone()).unwrap();
    assert_eq!(
        d.ok(&[
            "inspect",
            "-f",
            "{{range .Config.Env}}{{.}};{{end}} {{.Path}} {{join .Args \",\"}}",
            "web"
        ]),
        format!(
            "{} sleep 600\n",
            env.iter().map(|e| format!("{e};")).collect::<String>()
        )
    );

    // Other listings.
    assert_eq!(
        d.ok(&["images", "--format", "table {{.Repository}}\\t{{.Tag}}"]),
        "REPOSITORY   TAG\nbb           latest\n"
    );
    assert!(d
        .ok(&["network", "ls", "--format", "{{.Name}}"])
        .lines()
        .any(|l| l == "bridge"));
    d.ok(&["volume", "create", "vol1"]);
    assert_eq!(d.ok(&["volume", "ls", "--format", "{{.Name}}"]), "vol1\n");
    assert_eq!(
        d.ok(&["stats", "--no-stream", "--format", "{{.Name}}"]),
        "web\n"
    );
    assert!(!d
        .ok(&["image", "history", "bb", "--format", "{{.CreatedBy}}"])
        .is_empty());

    // A bad template is refused before anything runs, in Go's words, exit 125 (a usage error).
    let o = d.pier(&["ps", "--format", "{{nope .}}"]);
    assert_eq!(o.status.code(), Some(125));
    assert!(
        text(&o.stderr).contains("template: :1: function \"nope\" not defined"),
        "{}",
        text(&o.stderr)
    );

    // --format json: errors too, as one JSON line on stderr.
    let o = d.pier(&["--format", "json", "inspect", "nosuch"]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(text(&o.stdout), "");
    let e: serde_json::Value = serde_json::from_str(text(&o.stderr).trim()).unwrap();
    assert_eq!(e["code"], 1);
    assert!(e["error"].as_str().unwrap().contains("nosuch"), "{e}");
    let o = d.pier(&["--format", "json", "run", "--bogus", "bb"]);
    assert_eq!(o.status.code(), Some(125));
    let e: serde_json::Value = serde_json::from_str(text(&o.stderr).trim()).unwrap();
    assert_eq!(e["code"], 125);
    assert_eq!(e["error"], "unexpected argument '--bogus' found");

    // Commands that print a line per object print a JSON object per line.
    d.ok(&["create", "--name", "short", "bb", "true"]);
    d.ok(&["start", "short"]);
    assert_eq!(
        d.ok(&["--format", "json", "wait", "short"]),
        "{\"container\":\"short\",\"exit_code\":0}\n"
    );
    assert_eq!(
        d.ok(&["--format", "json", "rm", "-f", "web", "short"]),
        "{\"container\":\"web\"}\n{\"container\":\"short\"}\n"
    );
    let o = d.pier(&["--format", "json", "rm", "nosuch"]);
    assert_eq!(o.status.code(), Some(1));
    let first = text(&o.stderr).lines().next().unwrap().to_string();
    let e: serde_json::Value = serde_json::from_str(&first).unwrap();
    assert_eq!(e["object"], "nosuch", "{first}");
    // Removals and snapshots of volumes and networks say what they did as JSON too.
    d.ok(&["network", "create", "jnet"]);
    let o = d.pier(&["--format", "json", "network", "rm", "jnet"]);
    assert_eq!(text(&o.stdout), "{\"network\":\"jnet\"}\n");
    let o = d.pier(&["--format", "json", "volume", "snapshot", "vol1", "s1"]);
    assert_eq!(
        text(&o.stdout),
        "{\"snapshot\":\"s1\",\"volume\":\"vol1\"}\n"
    );
    d.ok(&["volume", "snapshot-rm", "vol1", "s1"]);
    let o = d.pier(&["--format", "json", "volume", "rm", "vol1"]);
    assert_eq!(text(&o.stdout), "{\"volume\":\"vol1\"}\n");
}

#[test]
#[ignore = "root tier: needs root; scripts/test.sh runs it (--run-ignored all)"]
fn exit_codes_follow_docker() {
    let d = daemon_with_image();
    let code = |args: &[&str]| {
        let o = d.pier(args);
        (o.status.code(), text(&o.stderr))
    };
    // Usage errors of any command: 125, as `docker ps --bogus`.
    let (c, err) = code(&["run", "--bogus", "x"]);
    assert_eq!(c, Some(125), "{err}");
    assert!(
        err.starts_with("error: unexpected argument '--bogus' found"),
        "{err}"
    );
    assert_eq!(code(&["create", "--bogus", "x"]).0, Some(125));
    assert_eq!(code(&["ps", "--bogus"]).0, Some(125));
    assert_eq!(code(&["run"]).0, Some(125));
    assert_eq!(code(&["--help"]).0, Some(0));
    assert_eq!(code(&[]).0, Some(0));
    assert_eq!(code(&["run", "--help"]).0, Some(0));
    // Errors before the container starts: 125.
    let (c, err) = code(&["run", "nosuchimage"]);
    assert_eq!(c, Some(125), "{err}");
    assert!(err.contains("nosuchimage"), "{err}");
    assert_eq!(code(&["create", "nosuchimage"]).0, Some(125));
    assert_eq!(code(&["run", "--memory", "lots", "bb"]).0, Some(125));
    assert_eq!(
        code(&["-H", "/nonexistent/pier.sock", "run", "bb", "true"]).0,
        Some(125)
    );
    // After it started: the container's own code; 126/127 when the command cannot run.
    assert_eq!(
        code(&["run", "--rm", "bb", "sh", "-c", "exit 3"]).0,
        Some(3)
    );
    assert_eq!(
        code(&["run", "--rm", "bb", "sh", "-c", "exit 1"]).0,
        Some(1)
    );
    assert_eq!(code(&["run", "--rm", "bb", "true"]).0, Some(0));
    assert_eq!(code(&["run", "--rm", "bb", "nosuchcmd"]).0, Some(127));
    assert_eq!(code(&["run", "--rm", "bb", "/etc"]).0, Some(126));
    // Other commands: 1.
    assert_eq!(code(&["inspect", "nosuch"]).0, Some(1));
    assert_eq!(code(&["-H", "/nonexistent/pier.sock", "ps"]).0, Some(1));
    assert_eq!(d.ok(&["ps", "-aq"]), "");
}

#[test]
#[ignore = "root tier: needs root; scripts/test.sh runs it (--run-ignored all)"]
fn host_takes_unix_urls_and_refuses_remote_ones() {
    let d = daemon_with_image();
    let url = format!("unix://{}", d.socket.display());
    let o = Command::new(common::PIER)
        .args(["-H", &url, "images", "--format", "{{.Repository}}"])
        .env_remove("PIER_HOST")
        .output()
        .unwrap();
    assert_eq!(text(&o.stdout), "bb\n", "{}", text(&o.stderr));
    let o = Command::new(common::PIER)
        .args(["images", "--format", "{{.Repository}}"])
        .env("PIER_HOST", &url)
        .output()
        .unwrap();
    assert_eq!(text(&o.stdout), "bb\n", "{}", text(&o.stderr));
    for remote in ["tcp://127.0.0.1:2375", "https://127.0.0.1:2376"] {
        let o = d.pier(&["-H", remote, "ps"]);
        assert_eq!(o.status.code(), Some(125));
        let scheme = remote.split("://").next().unwrap();
        assert!(
            text(&o.stderr).contains(&format!(
                "{scheme}:// is not supported: the daemon serves its API only on a Unix socket"
            )),
            "{}",
            text(&o.stderr)
        );
    }
    // DOCKER_HOST names Docker's daemon: pier never reads it.
    let o = d
        .cmd()
        .args(["images", "--format", "{{.Repository}}"])
        .env("DOCKER_HOST", "tcp://127.0.0.1:1")
        .output()
        .unwrap();
    assert_eq!(text(&o.stdout), "bb\n");
    assert!(text(&d.pier(&["--help"]).stdout).contains("DOCKER_HOST is not read"));
}

#[test]
#[ignore = "root tier: needs root; scripts/test.sh runs it (--run-ignored all)"]
fn prune_asks_first_as_docker_does() {
    let d = daemon_with_image();
    d.ok(&["create", "--name", "stopped", "bb", "true"]);
    let question = "WARNING! This will remove all stopped containers.\n\
                    Are you sure you want to continue? [y/N] ";
    // No, an empty answer, or no stdin at all: nothing is removed.
    for input in [&b"n\n"[..], b"\n", b"", b"nope\n"] {
        let o = d.with_input(&["container", "prune"], input);
        assert!(o.status.success(), "{}", text(&o.stderr));
        assert!(text(&o.stdout).starts_with(question), "{}", text(&o.stdout));
        assert_eq!(d.ok(&["ps", "-aq"]).lines().count(), 1, "{input:?}");
    }
    let o = d.pier(&["container", "prune"]);
    assert!(o.status.success());
    assert_eq!(d.ok(&["ps", "-aq"]).lines().count(), 1);
    // Yes removes.
    let o = d.with_input(&["container", "prune"], b"y\n");
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(
        text(&o.stdout).contains("Deleted Containers:"),
        "{}",
        text(&o.stdout)
    );
    assert_eq!(d.ok(&["ps", "-aq"]), "");
    // -f skips the question.
    d.ok(&["create", "--name", "stopped2", "bb", "true"]);
    let out = d.ok(&["container", "prune", "-f"]);
    assert!(!out.contains("WARNING!"), "{out}");
    assert_eq!(d.ok(&["ps", "-aq"]), "");

    // The other prunes ask in Docker's words.
    d.ok(&["volume", "create", "v1"]);
    d.ok(&["network", "create", "n1"]);
    for (args, warning) in [
        (
            &["volume", "prune", "--all"][..],
            "WARNING! This will remove all local volumes not used by at least one container.\n",
        ),
        (
            &["network", "prune"][..],
            "WARNING! This will remove all custom networks not used by at least one container.\n",
        ),
        (
            &["image", "prune"][..],
            "WARNING! This will remove all dangling images.\n",
        ),
    ] {
        let o = d.with_input(args, b"n\n");
        assert!(
            text(&o.stdout).starts_with(warning),
            "{args:?}: {}",
            text(&o.stdout)
        );
    }
    assert_eq!(d.ok(&["volume", "ls", "-q"]), "v1\n");
    assert!(d
        .ok(&["network", "ls", "--format", "{{.Name}}"])
        .contains("n1"));
    d.with_input(&["volume", "prune", "--all"], b"y\n");
    d.with_input(&["network", "prune"], b"yes\n");
    assert_eq!(d.ok(&["volume", "ls", "-q"]), "");
    assert!(!d
        .ok(&["network", "ls", "--format", "{{.Name}}"])
        .contains("n1"));
}

#[test]
#[ignore = "root tier: needs root; scripts/test.sh runs it (--run-ignored all)"]
fn completion_scripts_and_man_pages_come_from_the_cli() {
    require_root_and_tools(&["bash"]);
    let pier = |args: &[&str]| Command::new(common::PIER).args(args).output().unwrap();
    let bash = pier(&["completion", "bash"]);
    assert!(bash.status.success());
    let script = text(&bash.stdout);
    assert!(script.contains("complete -F _pier"), "{script}");
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), &script).unwrap();
    let check = Command::new("bash")
        .arg("-n")
        .arg(file.path())
        .output()
        .unwrap();
    assert!(check.status.success(), "{}", text(&check.stderr));
    let zsh = text(&pier(&["completion", "zsh"]).stdout);
    assert!(zsh.starts_with("#compdef pier"), "{zsh}");
    let fish = text(&pier(&["completion", "fish"]).stdout);
    assert!(fish.contains("complete -c pier"), "{fish}");
    assert_eq!(pier(&["completion", "tcsh"]).status.code(), Some(125));

    let dir = tempfile::tempdir().unwrap();
    let man = dir.path().join("man1");
    let o = pier(&["man", man.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    for page in ["pier.1", "pier-run.1", "pier-ps.1", "pier-image-ls.1"] {
        let t = std::fs::read_to_string(man.join(page)).unwrap();
        assert!(
            t.starts_with(".ie \\n(.g .ds Aq") || t.contains(".TH"),
            "{page}: {t}"
        );
    }
}
