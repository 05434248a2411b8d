//! Root tier: the daemon's observability. `/metrics` on the native socket and on
//! `--metrics-addr` has the families and labels the Grafana dashboard uses, passes
//! Prometheus's own `promtool check metrics`, and follows instances as they change; the
//! daemon's log is plain text without colour codes in a file, or JSON lines.

mod common;

use std::process::Command;

use common::*;

/// promtool, unpacked by `scripts/lib.sh` (`ensure_promtool`, which scripts/test.sh runs).
const PROMTOOL: &str = "/var/cache/pier/promtool/usr/bin/promtool";

fn scrape_socket(d: &Daemon) -> String {
    let out = Command::new("curl")
        .args(["-sf", "--unix-socket"])
        .arg(&d.socket)
        .arg("http://pier/metrics")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The value of the one sample whose name and labels start with `series`.
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(series))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

#[test]
#[ignore = "root tier: needs root; scripts/test.sh runs it (--run-ignored all)"]
fn metrics_follow_instances_and_pass_promtool() {
    let d = with_busybox(&[
        "--metrics-addr",
        "127.0.0.1:9323",
        "--registry-addr",
        "127.0.0.1:5000",
    ]);
    let ok = |args: &[&str]| {
        let (code, out, err) = outcome(&d.docker("docker", args));
        assert_eq!(code, 0, "docker {args:?}: {err}");
        out.trim().to_string()
    };
    let id = ok(&[
        "run",
        "-d",
        "--name",
        "web",
        "-m",
        "64m",
        "--health-cmd",
        "true",
        "--health-interval",
        "1s",
        "bb",
        "sh",
        "-c",
        "dd if=/dev/zero of=/dev/null bs=1M count=200; sleep 300",
    ]);
    ok(&["create", "--name", "idle", "bb", "true"]);
    let web = format!(r#"{{id="{id}",kind="container",name="web",project="default"}}"#);
    wait_until("web is healthy in /metrics", || {
        scrape_socket(&d).contains(&format!(
            r#"pier_instance_health{{id="{id}",kind="container",name="web",project="default",status="healthy"}} 1"#
        ))
    });
    let text = scrape_socket(&d);
    assert_eq!(
        value(&text, &format!("pier_instance_up{web}")),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        value(&text, &format!("pier_instance_memory_limit_bytes{web}")),
        Some((64u64 << 20) as f64)
    );
    assert!(value(&text, &format!("pier_instance_memory_bytes{web}")).unwrap() > 0.0);
    assert!(value(&text, &format!("pier_instance_cpu_seconds_total{web}")).unwrap() > 0.0);
    assert!(value(&text, &format!("pier_instance_pids{web}")).unwrap() >= 1.0);
    assert_eq!(
        value(
            &text,
            r#"pier_instances{kind="container",project="default",state="created"}"#
        ),
        Some(1.0),
        "{text}"
    );
    assert!(value(&text, "pier_host_cpus").unwrap() >= 1.0);
    assert!(value(&text, "pier_host_memory_available_bytes").unwrap() > 0.0);
    assert!(value(&text, "pier_images").unwrap() >= 1.0);
    // API requests by route template: never an ID or name as a label.
    assert!(
        text.contains(
            r#"pier_api_requests_total{api="docker",method="POST",route="/containers/create",status="201"} 2"#
        ),
        "{text}"
    );
    assert!(
        text.contains(
            r#"pier_api_requests_total{api="docker",method="POST",route="/containers/{id}/start",status="204"} 1"#
        ),
        "{text}"
    );
    assert!(
        !text
            .lines()
            .any(|l| l.starts_with("pier_api_") && (l.contains(&id) || l.contains("\"web\""))),
        "an instance named in an API label:\n{text}"
    );
    assert!(text.contains("# TYPE pier_api_request_duration_seconds histogram"));
    // The registry's traffic, and its requests among the API's.
    d.ok(&["tag", "bb", "127.0.0.1:5000/metrics/bb"]);
    d.ok(&["push", "-q", "127.0.0.1:5000/metrics/bb"]);
    let text = scrape_socket(&d);
    let pushed = value(&text, r#"pier_registry_blob_bytes_total{direction="in"}"#);
    assert!(pushed.unwrap() > 100_000.0, "{pushed:?}");
    assert!(
        text.lines()
            .any(|l| l.starts_with(r#"pier_api_requests_total{api="registry",method="PUT""#)),
        "{text}"
    );
    // The push is a registry event on both APIs' streams (read until a second from now).
    let until = (std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 1)
    .to_string();
    let events = d.ok(&[
        "events",
        "--since",
        "10m",
        "--until",
        &until,
        "--filter",
        "type=registry",
    ]);
    assert!(
        events.contains(" registry push metrics/bb@sha256:"),
        "{events}"
    );
    assert!(
        events.contains(" registry tag metrics/bb:latest "),
        "{events}"
    );
    assert!(!events.contains(" container "), "{events}");
    let (code, events, err) = outcome(&d.docker(
        "docker",
        &[
            "events",
            "--since",
            "10m",
            "--until",
            &until,
            "--filter",
            "type=registry",
        ],
    ));
    assert_eq!(code, 0, "{err}");
    assert!(
        events.contains("registry tag metrics/bb:latest"),
        "{events}"
    );

    // Prometheus's own checker takes it as it is.
    let mut check = Command::new(PROMTOOL)
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{PROMTOOL}: {e} (scripts/lib.sh ensure_promtool unpacks it)"));
    std::io::Write::write_all(check.stdin.as_mut().unwrap(), text.as_bytes()).unwrap();
    let checked = check.wait_with_output().unwrap();
    assert!(
        checked.status.success(),
        "promtool: {}{}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );

    // The same on --metrics-addr (in the daemon's network namespace), and nothing else there.
    let tcp = d
        .in_netns("curl")
        .args(["-sf", "http://127.0.0.1:9323/metrics"])
        .output()
        .unwrap();
    assert!(tcp.status.success());
    assert!(String::from_utf8_lossy(&tcp.stdout).contains(&format!("pier_instance_up{web} 1")));
    let other = d
        .in_netns("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "http://127.0.0.1:9323/v1/containers",
        ])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&other.stdout), "404");

    // A stopped instance is down and has no usage series; a removed one is gone.
    ok(&["stop", "-t", "1", "web"]);
    let text = scrape_socket(&d);
    assert_eq!(value(&text, &format!("pier_instance_up{web}")), Some(0.0));
    assert!(
        !text.contains(&format!("pier_instance_memory_bytes{web}")),
        "{text}"
    );
    ok(&["rm", "-f", "web", "idle"]);
    let text = scrape_socket(&d);
    assert!(!text.contains(&id), "{text}");

    // The daemon's log goes to a file here: plain text, no colour codes.
    let log = d.log();
    assert!(log.contains("pier daemon ready"), "{log}");
    assert!(
        !log.contains('\u{1b}'),
        "colour codes in the log file:\n{log}"
    );
}

#[test]
#[ignore = "root tier: needs root; scripts/test.sh runs it (--run-ignored all)"]
fn json_logs_are_one_object_per_line() {
    let d = Daemon::start_with(&["--log-format", "json"]);
    let log = d.log();
    let lines: Vec<serde_json::Value> = log
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}")))
        .collect();
    let ready = lines
        .iter()
        .find(|v| v["message"] == "pier daemon ready")
        .unwrap_or_else(|| panic!("no ready line in {log}"));
    assert_eq!(ready["level"], "INFO", "{ready}");
    assert!(ready["timestamp"].is_string(), "{ready}");
    assert!(ready["socket"].is_string(), "{ready}");

    // A refused request: its ID comes back, and its one log line names it, the route and
    // the reason, as the client's mistake.
    let out = Command::new("curl")
        .args([
            "-s",
            "-D",
            "-",
            "-H",
            "X-Request-Id: ci-rid-7",
            "--unix-socket",
        ])
        .arg(&d.docker_socket)
        .arg("http://docker/v1.41/containers/nosuch/json")
        .output()
        .unwrap();
    let answer = String::from_utf8_lossy(&out.stdout).to_lowercase();
    assert!(answer.contains("x-request-id: ci-rid-7"), "{answer}");
    assert!(answer.contains(" 404 "), "{answer}");
    let mut line = None;
    wait_until("the refused request's log line", || {
        line = d
            .log()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|v| v["span"]["id"] == "ci-rid-7" && v["error"].is_string());
        line.is_some()
    });
    let line = line.unwrap();
    assert_eq!(line["level"], "WARN", "{line}");
    assert_eq!(line["span"]["api"], "docker", "{line}");
    assert_eq!(line["path"], "/v1.41/containers/nosuch/json", "{line}");
    assert!(
        line["error"]
            .as_str()
            .unwrap()
            .contains("No such container"),
        "{line}"
    );
    assert!(
        line["message"].as_str().unwrap().contains("mistake"),
        "{line}"
    );
    // An ID that could garble the log is replaced by the daemon's own.
    let out = Command::new("curl")
        .args([
            "-s",
            "-D",
            "-",
            "-o",
            "/dev/null",
            "-H",
            "X-Request-Id: a b",
            "--unix-socket",
        ])
        .arg(&d.socket)
        .arg("http://pier/v1/_ping")
        .output()
        .unwrap();
    let head = String::from_utf8_lossy(&out.stdout).to_lowercase();
    let rid = head
        .lines()
        .find_map(|l| l.strip_prefix("x-request-id: "))
        .unwrap_or_else(|| panic!("{head}"));
    assert!(!rid.contains(' ') && !rid.is_empty(), "{rid}");
}

/// `GET /v1/metrics/history` keeps samples taken every period: the host's and, asked for,
/// an instance's use, oldest first, from a time on; an unknown instance is a 404.
#[test]
#[ignore = "root tier: needs root; scripts/test.sh runs it (--run-ignored all)"]
fn the_metrics_history_keeps_recent_samples() {
    let d = with_busybox(&["--metrics-history-period", "1"]);
    let id = d.ok(&[
        "run",
        "-d",
        "--name",
        "busy",
        "bb",
        "sh",
        "-c",
        "while true; do :; done",
    ]);
    let get = |path: &str| -> (u16, serde_json::Value) {
        let out = Command::new("curl")
            .args(["-s", "-w", "\n%{http_code}", "--unix-socket"])
            .arg(&d.socket)
            .arg(format!("http://pier{path}"))
            .output()
            .unwrap();
        let text = String::from_utf8(out.stdout).unwrap();
        let (body, code) = text.rsplit_once('\n').unwrap();
        (code.parse().unwrap(), serde_json::from_str(body).unwrap())
    };
    let mut h = serde_json::Value::Null;
    wait_until("three samples of busy", || {
        h = get("/v1/metrics/history?instance=busy").1;
        h["samples"]
            .as_array()
            .is_some_and(|s| s.iter().filter(|s| s["instance"].is_object()).count() >= 3)
    });
    assert_eq!(h["period_seconds"], 1.0, "{h}");
    assert!(h["host_memory_bytes"].as_u64().unwrap() > 0, "{h}");
    let samples: Vec<&serde_json::Value> = h["samples"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["instance"].is_object())
        .collect();
    let cpu: Vec<f64> = samples
        .iter()
        .map(|s| s["instance"]["cpu_seconds"].as_f64().unwrap())
        .collect();
    assert!(cpu.windows(2).all(|w| w[1] >= w[0]), "{cpu:?}");
    assert!(
        cpu.last().unwrap() > cpu.first().unwrap(),
        "a busy loop uses CPU: {cpu:?}"
    );
    let times: Vec<f64> = samples
        .iter()
        .map(|s| s["time"].as_f64().unwrap())
        .collect();
    assert!(times.windows(2).all(|w| w[1] > w[0]), "{times:?}");
    assert!(samples
        .iter()
        .all(|s| s["instances_running"].as_u64() >= Some(1)));
    assert!(samples[0]["instance"]["memory_bytes"].as_u64().unwrap() > 0);
    // From a time on; and by ID as by name.
    // Between the last two samples (JSON floats need not read back to the last bit).
    let since = (times[times.len() - 2] + times[times.len() - 1]) / 2.0;
    let (_, later) = get(&format!(
        "/v1/metrics/history?instance={}&since={since}",
        id.trim()
    ));
    let later = later["samples"].as_array().unwrap();
    assert!(!later.is_empty() && later.iter().all(|s| s["time"].as_f64().unwrap() > since));
    assert!(later.last().unwrap()["instance"].is_object());
    // Without an instance, the host's only.
    let (_, host) = get("/v1/metrics/history");
    assert!(host["samples"][0].get("instance").is_none(), "{host}");
    let (code, body) = get("/v1/metrics/history?instance=nosuch");
    assert_eq!(code, 404, "{body}");
    d.ok(&["rm", "-f", "busy"]);
}
