//! Root tier: the pool's membership. Three `pier daemon`s on one machine, each in a network
//! namespace of its own joined to one bridge standing for the physical network ([`Lan`]):
//! `pier cluster init` on the first, joins with good and bad tokens, `pier host` from any
//! member, a host killed with SIGKILL going `down` when its heartbeat expires, and
//! instances created through any member placed on the host the scheduler chose.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use common::*;

/// The heartbeat's time to live the daemons get.
const TTL: Duration = Duration::from_secs(2);

fn hosts(d: &Daemon) -> Vec<(String, String)> {
    let v = d.json(&["host", "ls"]);
    v.as_array()
        .unwrap()
        .iter()
        .map(|h| {
            (
                h["id"].as_str().unwrap().to_string(),
                h["state"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn state_of(d: &Daemon, host: &str) -> String {
    hosts(d)
        .into_iter()
        .find(|(id, _)| id == host)
        .map(|(_, s)| s)
        .unwrap_or_else(|| "absent".into())
}

/// The host kept nothing of a join that failed, and the pool has no record of it.
fn nothing_joined(joiner: &Daemon, member: &Daemon, name: &str) {
    for d in ["cluster", "cluster.new"] {
        assert!(!joiner.root.join(d).exists(), "a failed join left ROOT/{d}");
    }
    let e = joiner.fails(&["host", "ls"]);
    assert!(e.contains("this host is not in a pool"), "{e}");
    assert_eq!(state_of(member, name), "absent", "the pool holds {name}");
}

fn join(d: &Daemon, addr: &str, token: &str, name: &str) -> std::process::Output {
    d.pier(&["cluster", "join", addr, token, "--name", name])
}

/// The actions of `host`'s events in `d`'s log, oldest first.
fn host_events(d: &Daemon, host: &str) -> Vec<String> {
    let filter = format!("host={host}");
    let args = [
        "--format", "json", "events", "--since", "10m", "--until", "0s",
    ];
    d.ok(&[&args[..], &["--filter", "type=host", "--filter", &filter]].concat())
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            assert_eq!(v["kind"], "host", "{v}");
            assert_eq!(v["attributes"]["name"], host, "{v}");
            v["action"].as_str().unwrap().to_string()
        })
        .collect()
}

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
#[ignore = "root tier: needs root; scripts/test.sh runs it (--run-ignored all)"]
fn three_hosts_make_a_pool_join_it_and_see_each_other_go_down() {
    require_root_and_tools(&["etcd"]);
    let mut lan = Lan::new();
    let hb = ["--host-heartbeat", "2s"];
    let h1 = Daemon::start_with(&hb);
    let mut h2 = Daemon::start_with(&hb);
    let h3 = Daemon::start_with(&hb);
    let a1 = lan.connect(&h1);
    lan.connect(&h2);
    lan.connect(&h3);

    // A daemon outside any pool says so.
    assert!(h1.ok(&["info"]).contains("\n Pool: none\n"));
    let e = h1.fails(&["host", "ls"]);
    assert!(
        e.contains("this host is not in a pool; make one with `pier cluster init`"),
        "{e}"
    );

    // init: the CA and certificates kept private, an etcd of the pool's, a join command.
    let init = h1.json(&[
        "cluster",
        "init",
        "--advertise",
        &a1,
        "--name",
        "h1",
        "--label",
        "zone=a",
    ]);
    let addr = format!("{a1}:7443");
    let token = init["token"].as_str().unwrap().to_string();
    assert_eq!(
        init["command"].as_str().unwrap(),
        format!("pier cluster join {addr} {token}")
    );
    assert!(token.starts_with("PJ1."), "{token}");
    let dir = h1.root.join("cluster");
    assert_eq!(dir.metadata().unwrap().permissions().mode() & 0o777, 0o700);
    for f in [
        "ca.pem",
        "ca-key.pem",
        "member.pem",
        "member-key.pem",
        "member.json",
    ] {
        let mode = dir.join(f).metadata().unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{f}");
    }
    let e = h1.fails(&["cluster", "init", "--advertise", &a1]);
    assert!(e.contains("this host is in pool"), "{e}");

    // A good token: h2 joins.
    let out = join(&h2, &addr, &token, "h2");
    assert!(out.status.success(), "{}\n{}", stderr(&out), h1.log());
    assert!(String::from_utf8_lossy(&out.stdout).contains("joined pool"));
    assert!(
        !h2.root.join("cluster/ca-key.pem").exists(),
        "only the first host signs"
    );

    // On h3: the used token, a wrong secret, another pool's fingerprint, a malformed and
    // an expired token are each refused with their reason, and leave nothing.
    let out = join(&h3, &addr, &token, "h3");
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("this join token is unknown to the pool: it was used already or never made; make a new one with `pier cluster token`"),
        "{}",
        stderr(&out)
    );
    nothing_joined(&h3, &h1, "h3");
    let fresh = h1.json(&["cluster", "token"])["token"]
        .as_str()
        .unwrap()
        .to_string();
    let parts: Vec<&str> = fresh.split('.').collect();
    let bad_secret = format!("PJ1.{}.{}.{}", parts[1], parts[2], "0".repeat(64));
    let out = join(&h3, &addr, &bad_secret, "h3");
    assert!(
        stderr(&out).contains("this join token's secret is wrong"),
        "{}",
        stderr(&out)
    );
    nothing_joined(&h3, &h1, "h3");
    let other_pool = format!("PJ1.{}.{}.{}", "ab".repeat(32), parts[2], parts[3]);
    let out = join(&h3, &addr, &other_pool, "h3");
    assert!(
        stderr(&out).contains("does not show the pool's CA that the token names")
            && stderr(&out).contains(&"ab".repeat(32)),
        "{}",
        stderr(&out)
    );
    nothing_joined(&h3, &h1, "h3");
    let out = join(&h3, &addr, "PJ1.nonsense", "h3");
    assert!(
        stderr(&out).contains("this is not a Pier join token"),
        "{}",
        stderr(&out)
    );
    nothing_joined(&h3, &h1, "h3");
    // An expired token.
    let short = h1.json(&["cluster", "token", "--ttl", "1s"])["token"]
        .as_str()
        .unwrap()
        .to_string();
    std::thread::sleep(Duration::from_millis(1100));
    let out = join(&h3, &addr, &short, "h3");
    assert!(
        stderr(&out).contains("this join token expired; make a new one with `pier cluster token`"),
        "{}",
        stderr(&out)
    );
    nothing_joined(&h3, &h1, "h3");
    // A name taken in the pool costs no token.
    let out = join(&h3, &addr, &fresh, "h2");
    assert!(
        stderr(&out).contains("a host named h2 is in the pool already"),
        "{}",
        stderr(&out)
    );
    nothing_joined(&h3, &h1, "h3");

    // A new token: h3 joins, and sees all three up.
    let newer = h1.json(&["cluster", "token"])["token"]
        .as_str()
        .unwrap()
        .to_string();
    let out = join(&h3, &addr, &newer, "h3");
    assert!(out.status.success(), "{}", stderr(&out));
    wait_until("three hosts up, seen from h3", || {
        hosts(&h3)
            == [
                ("h1".to_string(), "up".to_string()),
                ("h2".to_string(), "up".to_string()),
                ("h3".to_string(), "up".to_string()),
            ]
    });
    let table = h3.ok(&["host", "ls"]);
    assert!(table.starts_with("HOST "), "{table}");
    let i = h3.json(&["host", "inspect", "h1"]);
    assert_eq!(i["etcd_member"], true);
    assert_eq!(i["labels"]["zone"], "a");
    assert_eq!(i["address"], a1.as_str());
    assert!(i["capacity"]["cpu_millis"].as_u64().unwrap() >= 1000, "{i}");
    assert!(i["capacity"]["memory_bytes"].as_u64().unwrap() > 0, "{i}");
    assert!(i["last_heartbeat"].as_u64().is_some(), "{i}");
    assert_eq!(i["heartbeat_ttl"], TTL.as_secs());
    assert_eq!(h3.json(&["host", "inspect", "h2"])["etcd_member"], false);
    let e = h3.fails(&["host", "inspect", "h9"]);
    assert!(e.contains("no host h9 in the pool"), "{e}");

    // `pier info` names the pool and the host, the same pool on each.
    let pool_line = |d: &Daemon| {
        let info = d.ok(&["info"]);
        info.lines()
            .find(|l| l.starts_with(" Pool: "))
            .unwrap_or_else(|| panic!("no pool line: {info}"))
            .to_string()
    };
    let (p1, p3) = (pool_line(&h1), pool_line(&h3));
    assert!(p1.ends_with(", as host h1"), "{p1}");
    assert!(p3.ends_with(", as host h3"), "{p3}");
    assert_eq!(p1.split(',').next(), p3.split(',').next());

    // Cordon h2 from h1; h3 sees it.
    h1.ok(&["host", "cordon", "h2"]);
    assert_eq!(state_of(&h3, "h2"), "cordoned");
    assert_eq!(h3.json(&["host", "inspect", "h2"])["schedulable"], false);

    // An up host is not removed.
    let e = h1.fails(&["host", "rm", "h3"]);
    assert!(e.contains("host h3 is up; stop its daemon first"), "{e}");

    // h2's daemon killed: down within the heartbeat's time to live (and etcd's expiry
    // tick, and the last beat's age), then removed.
    h2.kill9();
    let killed = Instant::now();
    let slack = Duration::from_secs(5);
    while state_of(&h3, "h2") != "down" {
        assert!(
            killed.elapsed() < TTL + slack,
            "h2 not down {:?} after SIGKILL",
            killed.elapsed()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!("h2 down {:?} after SIGKILL (ttl {TTL:?})", killed.elapsed());
    assert_eq!(
        h3.json(&["host", "inspect", "h2"])["last_heartbeat"],
        serde_json::Value::Null
    );
    h3.ok(&["host", "rm", "h2"]);
    assert_eq!(
        hosts(&h1),
        [
            ("h1".to_string(), "up".to_string()),
            ("h3".to_string(), "up".to_string()),
        ]
    );
    let e = h3.fails(&["host", "rm", "h2"]);
    assert!(e.contains("no host h2 in the pool"), "{e}");

    // Every member logs every host's events, whoever caused them: h1 all of h2's life,
    // h3 what happened after it joined.
    for (d, want) in [
        (&h1, &["join", "up", "cordon", "down", "remove"][..]),
        (&h3, &["cordon", "down", "remove"][..]),
    ] {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let got = host_events(d, "h2");
            if got == want {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "h2's events: {got:?}, not {want:?}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    // h3 removed while its daemon runs: it stops its heartbeat instead of beating for a
    // host the pool no longer has (which would read as h3 `up` again).
    h1.ok(&["host", "rm", "--force", "h3"]);
    std::thread::sleep(TTL * 2);
    let evs = host_events(&h1, "h3");
    assert_eq!(
        evs.iter().filter(|a| *a == "up").count(),
        1,
        "h3 came back up after its removal: {evs:?}"
    );
    assert!(evs.contains(&"remove".to_string()), "{evs:?}");
    assert_eq!(hosts(&h1), [("h1".to_string(), "up".to_string())]);

    // h2's host leaves the pool for good (its membership removed) and stops cleanly.
    std::fs::remove_dir_all(h2.root.join("cluster")).unwrap();
    h2.spawn();
    let e = h2.fails(&["host", "ls"]);
    assert!(e.contains("this host is not in a pool"), "{e}");
}

/// The pid of the etcd the daemon on `d` runs (its data directory names the daemon's root).
fn etcd_pid(d: &Daemon) -> Option<i32> {
    let want = format!("--data-dir={}", d.root.join("etcd/data").display());
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: i32 = e.file_name().to_str()?.parse().ok()?;
        let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
        cmdline
            .split(|b| *b == 0)
            .any(|a| a == want.as_bytes())
            .then_some(pid)
    })
}

/// `curl` from `d`'s namespace to a member's listener, checking the server against the
/// pool's CA; with `d`'s member certificate as client certificate when `as_member`. The
/// HTTP status.
fn curl_listener(d: &Daemon, addr: &str, path: &str, as_member: bool) -> String {
    let dir = d.root.join("cluster");
    let mut c = d.in_netns("curl");
    c.args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "--cacert"])
        .arg(dir.join("ca.pem"));
    if as_member {
        c.arg("--cert")
            .arg(dir.join("member.pem"))
            .arg("--key")
            .arg(dir.join("member-key.pem"));
    }
    let out = c.arg(format!("https://{addr}{path}")).output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
#[ignore = "root tier: needs root; scripts/test.sh runs it (--run-ignored all)"]
fn members_resume_after_restarts_and_the_pools_etcd_is_restarted_when_it_dies() {
    require_root_and_tools(&["etcd", "curl"]);
    let mut lan = Lan::new();
    let hb = ["--host-heartbeat", "2s"];
    let mut h1 = Daemon::start_with(&hb);
    let mut h2 = Daemon::start_with(&hb);
    let a1 = lan.connect(&h1);
    let a2 = lan.connect(&h2);
    let init = h1.json(&["cluster", "init", "--advertise", &a1, "--name", "h1"]);
    let addr = format!("{a1}:7443");
    h2.ok(&[
        "cluster",
        "join",
        &addr,
        init["token"].as_str().unwrap(),
        "--name",
        "h2",
    ]);
    let both_up = |d: &Daemon| {
        d.pier(&["--format", "json", "host", "ls"]).status.success()
            && hosts(d)
                == [
                    ("h1".to_string(), "up".to_string()),
                    ("h2".to_string(), "up".to_string()),
                ]
    };
    wait_until("both up", || both_up(&h1));

    // The listener: its certificate chains to the pool's CA for its address; a member's
    // client certificate opens the member routes, a client without one sees the join
    // route alone.
    assert_eq!(curl_listener(&h2, &addr, "/cluster/v1/ping", true), "200");
    assert_eq!(curl_listener(&h2, &addr, "/cluster/v1/ping", false), "404");
    assert_eq!(
        curl_listener(&h1, &format!("{a2}:7443"), "/cluster/v1/ping", true),
        "200"
    );

    // The pool's etcd speaks mutual TLS with the pool's CA: a member's certificate opens
    // it, a client without one is turned away.
    let etcd = format!("{a1}:2379");
    assert_eq!(curl_listener(&h2, &etcd, "/version", true), "200");
    assert_eq!(curl_listener(&h2, &etcd, "/version", false), "000");

    // A clean stop ends the heartbeat at once: down long before the time to live.
    h2.stop();
    assert_eq!(state_of(&h1, "h2"), "down");
    // Started again, it resumes its membership.
    h2.spawn();
    wait_until("h2 up again", || both_up(&h1));

    // etcd killed under the daemon: its supervisor starts it again on the same data.
    let pid = etcd_pid(&h1).expect("h1 runs etcd");
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(pid).unwrap(),
        rustix::process::Signal::KILL,
    )
    .unwrap();
    wait_until("etcd restarted", || etcd_pid(&h1).is_some_and(|p| p != pid));
    wait_until("the pool answers again", || both_up(&h2));
    assert!(h1.log().contains("etcd exited; restarting it"));

    // The pool's first host restarted: its etcd stops with it and comes back with it;
    // the other member reconnects.
    h1.stop();
    assert!(etcd_pid(&h1).is_none(), "etcd outlived its daemon");
    h1.spawn();
    wait_until("the pool back after h1's restart", || {
        both_up(&h1) && both_up(&h2)
    });

    // A daemon killed with SIGKILL takes its etcd with it (its parent-death signal).
    let pid = etcd_pid(&h1).unwrap();
    h1.kill9();
    wait_until("etcd gone with its daemon", || {
        !std::path::Path::new(&format!("/proc/{pid}")).exists()
    });
    h1.spawn();
    wait_until("the pool back after h1's crash", || both_up(&h2));
}

/// The browser's steps on h1's dashboard; args: the pier binary and h2's socket.
const POOL_STEPS: &str = r##"
import subprocess
pier, socket = args
cli = lambda *a: subprocess.run([pier, *a], env={"PIER_HOST": socket}, check=True,
                                capture_output=True, text=True).stdout
state = lambda h: drv.find_element(By.ID, "pool-host-" + h).get_attribute("data-state")
drv.find_element(By.ID, "nav-hosts").click()
wait.until(lambda d: state("h1") == "up" and state("h2") == "up")
wait.until(lambda d: d.find_element(By.ID, "hosts-summary").text.startswith("2 hosts in the pool"))
assert "h1 (this host) (etcd)" in drv.find_element(By.ID, "pool-host-h1").text
assert "zone=b" in drv.find_element(By.ID, "pool-host-h2").text
shot("1-pool")
# Cordoned from the page: the pool's record says so.
click(lambda: drv.find_element(By.CSS_SELECTOR, "#pool-host-h2 button[data-action=cordon]"))
wait.until(lambda d: state("h2") == "cordoned")
assert json.loads(cli("--format", "json", "host", "inspect", "h2"))["schedulable"] is False
shot("2-cordoned")
# Uncordoned from another member's CLI: the page follows the host event, no reload.
drv.execute_script("window.pierMarker = 7")
cli("host", "uncordon", "h2")
wait.until(lambda d: state("h2") == "up")
assert drv.execute_script("return window.pierMarker") == 7, "the page reloaded"
shot("3-uncordoned-elsewhere")
"##;

#[test]
#[ignore = "root tier: needs root; scripts/test.sh runs it (--run-ignored all)"]
fn the_dashboard_lists_the_pools_hosts_and_cordons_one() {
    require_root_and_tools(&["etcd"]);
    let mut lan = Lan::new();
    let h1 = Daemon::start_with(&["--dashboard", "127.0.0.1:9455"]);
    let h2 = Daemon::start_with(&[]);
    let a1 = lan.connect(&h1);
    lan.connect(&h2);
    let init = h1.json(&["cluster", "init", "--advertise", &a1, "--name", "h1"]);
    let token = init["token"].as_str().unwrap();
    let addr = format!("{a1}:7443");
    h2.ok(&[
        "cluster", "join", &addr, token, "--name", "h2", "--label", "zone=b",
    ]);
    let browser = common::browser::Browser::new("dashboard-pool");
    let socket = h2.socket.display().to_string();
    browser.run(&h1, POOL_STEPS, &[PIER, &socket]);
    browser.assert_screenshots(&["1-pool", "2-cordoned", "3-uncordoned-elsewhere"]);
    assert_eq!(h1.json(&["host", "inspect", "h2"])["schedulable"], true);
}

/// The instances `d`'s own engine has (not the pool's records of other hosts): their IDs.
fn own_instances(d: &Daemon, host: &str) -> Vec<String> {
    d.json(&["ps", "-a"])
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| {
            c.get("host")
                .and_then(|h| h.as_str())
                .is_none_or(|h| h == host)
        })
        .map(|c| c["id"].as_str().unwrap().to_string())
        .collect()
}

/// How many instances the pool has assigned to `host`, as `pier host inspect` shows.
fn assignments(d: &Daemon, host: &str) -> u64 {
    d.json(&["host", "inspect", host])["instances"]
        .as_u64()
        .unwrap()
}

#[test]
#[ignore = "root tier: needs root; scripts/test.sh runs it (--run-ignored all)"]
fn instances_created_through_any_member_are_placed_and_made_by_the_chosen_host() {
    require_root_and_tools(&["etcd"]);
    let mut lan = Lan::new();
    let hb = ["--host-heartbeat", "2s"];
    let (h1, h2, h3) = (with_busybox(&hb), with_busybox(&hb), with_busybox(&hb));
    let a1 = lan.connect(&h1);
    lan.connect(&h2);
    lan.connect(&h3);
    // Outside a pool, placement options are refused, not ignored.
    let e = h1.fails(&["create", "--constraint", "host.id==h2", "bb", "true"]);
    assert!(e.contains("this daemon is not in a pool"), "{e}");
    let init = h1.json(&["cluster", "init", "--advertise", &a1, "--name", "h1"]);
    let addr = format!("{a1}:7443");
    h2.ok(&[
        "cluster",
        "join",
        &addr,
        init["token"].as_str().unwrap(),
        "--name",
        "h2",
    ]);
    let t3 = h1.json(&["cluster", "token"])["token"]
        .as_str()
        .unwrap()
        .to_string();
    h3.ok(&["cluster", "join", &addr, &t3, "--name", "h3"]);
    wait_until("three up", || {
        hosts(&h1).iter().filter(|(_, s)| s == "up").count() == 3
    });
    let tag = random_tag();
    let n = |what: &str| format!("{what}-{tag}");

    // A constraint: created through h1, made by h2's agent on h2 only.
    let id = h1
        .ok(&[
            "create",
            "--name",
            &n("pinned"),
            "--constraint",
            "host.id==h2",
            "-m",
            "64m",
            "bb",
            "sleep",
            "300",
        ])
        .trim()
        .to_string();
    assert_eq!(id.len(), 64, "{id}");
    assert!(own_instances(&h2, "h2").contains(&id));
    assert!(!own_instances(&h1, "h1").contains(&id));
    assert!(!own_instances(&h3, "h3").contains(&id));
    let inspect = &h2.json(&["inspect", &n("pinned")])[0];
    assert_eq!(inspect["id"], id.as_str());
    let h2_info = h1.json(&["host", "inspect", "h2"]);
    assert_eq!(h2_info["instances"], 1, "{h2_info}");
    assert_eq!(h2_info["allocated"]["memory_bytes"], 64 << 20, "{h2_info}");
    // Its host starts it and it runs.
    h2.ok(&["start", &n("pinned")]);
    assert_eq!(
        h2.ok(&["exec", &n("pinned"), "echo", "here"]).trim(),
        "here"
    );

    // A constraint nobody fits: the scheduler's why, and no assignment left.
    let e = h1.fails(&[
        "create",
        "--name",
        &n("nowhere"),
        "--constraint",
        "host.label.zone==mars",
        "bb",
        "true",
    ]);
    assert!(
        e.contains("0 of 3 hosts fit: 3 do not match host.label.zone==mars"),
        "{e}"
    );
    let total = |d: &Daemon| -> u64 { ["h1", "h2", "h3"].iter().map(|h| assignments(d, h)).sum() };
    assert_eq!(total(&h1), 1);
    // A bad expression is refused before anything is placed.
    let e = h1.fails(&["create", "--constraint", "zone=a", "bb", "true"]);
    assert!(e.contains("bad constraint \"zone=a\""), "{e}");
    let e = h1.fails(&["create", "--placement", "random", "bb", "true"]);
    assert!(e.contains("bad placement strategy \"random\""), "{e}");

    // Anti-affinity: two instances labelled app=x on two hosts.
    let app = format!("app={tag}");
    let anti = format!("instance.label.app=={tag}");
    let mut homes = Vec::new();
    for w in ["w1", "w2"] {
        let id = h3
            .ok(&[
                "create",
                "--name",
                &n(w),
                "--label",
                &app,
                "--anti-affinity",
                &anti,
                "bb",
                "true",
            ])
            .trim()
            .to_string();
        let home: Vec<&Daemon> = [(&h1, "h1"), (&h2, "h2"), (&h3, "h3")]
            .into_iter()
            .filter(|(d, h)| own_instances(d, h).contains(&id))
            .map(|(d, _)| d)
            .collect();
        assert_eq!(home.len(), 1, "{w} is on exactly one host");
        homes.push(home[0].root.clone());
    }
    assert_ne!(homes[0], homes[1], "anti-affinity put both on one host");

    // A name taken in the pool is refused on another member.
    let e = h3.fails(&["create", "--name", &n("pinned"), "bb", "true"]);
    assert!(
        e.contains(&format!(
            "the name \"{}\" is taken in project default",
            n("pinned")
        )),
        "{e}"
    );

    // Docker's create is placed too: the name is the pool's, the instance on one host.
    let (status, body) = docker_api(
        &h1,
        "POST",
        &format!("/containers/create?name={}", n("pinned")),
        br#"{"Image":"bb","Cmd":["true"]}"#,
    );
    assert_eq!(status, 409, "{body}");
    assert!(body.contains("is taken in project default"), "{body}");
    let (status, body) = docker_api(
        &h1,
        "POST",
        &format!("/containers/create?name={}", n("docker")),
        br#"{"Image":"bb","Cmd":["true"],"HostConfig":{"Memory":33554432}}"#,
    );
    assert_eq!(status, 201, "{body}");
    let dk: serde_json::Value = serde_json::from_str(&body).unwrap();
    let dk = dk["Id"].as_str().unwrap();
    let homes: Vec<&Daemon> = [(&h1, "h1"), (&h2, "h2"), (&h3, "h3")]
        .into_iter()
        .filter(|(d, h)| own_instances(d, h).iter().any(|i| i == dk))
        .map(|(d, _)| d)
        .collect();
    assert_eq!(homes.len(), 1, "the Docker create is on one host");
    assert_eq!(total(&h1), 4);

    // A rename on the owner moves the name in the pool: refused if taken anywhere in it,
    // and the old name is free after.
    let owner = homes[0];
    let e = owner.fails(&["rename", &n("docker"), &n("w1")]);
    assert!(e.contains("is taken in project default"), "{e}");
    owner.ok(&["rename", &n("docker"), &n("docker2")]);
    let e = h1.fails(&["create", "--name", &n("docker2"), "bb", "true"]);
    assert!(e.contains("is taken in project default"), "{e}");
    h1.ok(&["create", "--name", &n("docker"), "bb", "true"]);
    assert_eq!(total(&h1), 5);

    // A bad image: the owner's error, naming it, and the placement released (the name
    // is free again).
    let e = h1.fails(&[
        "create",
        "--name",
        &n("bad"),
        "--constraint",
        "host.id==h3",
        "Not/A:Valid:Ref",
        "true",
    ]);
    assert!(e.contains("host h3 could not create the instance"), "{e}");
    assert_eq!(total(&h1), 5);
    h1.ok(&[
        "create",
        "--name",
        &n("bad"),
        "--constraint",
        "host.id==h3",
        "bb",
        "true",
    ]);
    assert_eq!(total(&h1), 6);

    // Removing an instance on its host releases its allocation.
    let before = h1.json(&["host", "inspect", "h2"]);
    let memory = |i: &serde_json::Value| i["allocated"]["memory_bytes"].as_u64().unwrap();
    h2.ok(&["rm", "-f", &n("pinned")]);
    wait_until("h2's allocation released", || {
        let i = h1.json(&["host", "inspect", "h2"]);
        memory(&i) == memory(&before) - (64 << 20)
            && i["instances"].as_u64() == before["instances"].as_u64().map(|n| n - 1)
    });
    assert!(!own_instances(&h2, "h2").contains(&id));
    // The name is free again.
    let again = h1
        .ok(&["create", "--name", &n("pinned"), "bb", "true"])
        .trim()
        .to_string();

    // The chosen host may be the one that took the request: the same path.
    let mine = h1
        .ok(&[
            "create",
            "--name",
            &n("self"),
            "--constraint",
            "host.id==h1",
            "bb",
            "true",
        ])
        .trim()
        .to_string();
    assert!(own_instances(&h1, "h1").contains(&mine));

    // Clean up: each instance on its host.
    for (d, h) in [(&h1, "h1"), (&h2, "h2"), (&h3, "h3")] {
        for id in own_instances(d, h) {
            d.ok(&["rm", "-f", &id]);
        }
    }
    wait_until("every placement released", || total(&h1) == 0);
    assert!(!again.is_empty());
}

#[test]
#[ignore = "root tier: needs root; scripts/test.sh runs it (--run-ignored all)"]
fn a_placement_on_a_host_that_crashed_is_made_when_it_is_back_and_host_ports_are_held() {
    require_root_and_tools(&["etcd"]);
    let mut lan = Lan::new();
    let hb = ["--host-heartbeat", "2s"];
    let h1 = with_busybox(&hb);
    let mut h2 = with_busybox(&hb);
    let a1 = lan.connect(&h1);
    lan.connect(&h2);
    let init = h1.json(&["cluster", "init", "--advertise", &a1, "--name", "h1"]);
    let addr = format!("{a1}:7443");
    let token = init["token"].as_str().unwrap();
    h2.ok(&["cluster", "join", &addr, token, "--name", "h2"]);
    wait_until("both up", || {
        hosts(&h1).iter().filter(|(_, s)| s == "up").count() == 2
    });
    let tag = random_tag();
    let n = |what: &str| format!("{what}-{tag}");

    // A published host port is held on its host: a second instance with it goes to the
    // other host, a third fits nowhere.
    let web = |name: &str| h1.pier(&["create", "--name", name, "-p", "18080:80", "bb", "true"]);
    let (w1, w2) = (web(&n("w1")), web(&n("w2")));
    assert!(
        w1.status.success() && w2.status.success(),
        "{}",
        stderr(&w2)
    );
    assert_eq!(own_instances(&h1, "h1").len(), 1);
    assert_eq!(own_instances(&h2, "h2").len(), 1);
    let e = h1.fails(&["create", "--name", &n("w3"), "-p", "18080:80", "bb", "true"]);
    assert!(e.contains("2 have host port 18080/tcp in use"), "{e}");

    // h2 crashes; a placement on it made before its heartbeat expires waits for it, and
    // its agent makes the instance once it is back.
    h2.kill9();
    let id = std::thread::scope(|s| {
        let waiting = s.spawn(|| {
            h1.ok(&[
                "create",
                "--name",
                &n("late"),
                "--constraint",
                "host.id==h2",
                "bb",
                "true",
            ])
        });
        // Its heartbeat expires: down, it takes no new placement.
        wait_until("h2 down", || state_of(&h1, "h2") == "down");
        let e = h1.fails(&["create", "--constraint", "host.id==h2", "bb", "true"]);
        assert!(e.contains("1 is down, 1 does not match host.id==h2"), "{e}");
        assert!(!waiting.is_finished(), "the create did not wait for h2");
        h2.spawn();
        waiting.join().unwrap().trim().to_string()
    });
    assert!(own_instances(&h2, "h2").contains(&id), "{}", h2.log());
    wait_until("h2 up again", || state_of(&h1, "h2") == "up");

    for (d, h) in [(&h1, "h1"), (&h2, "h2")] {
        for id in own_instances(d, h) {
            d.ok(&["rm", "-f", &id]);
        }
    }
    wait_until("every placement released", || {
        assignments(&h1, "h1") + assignments(&h1, "h2") == 0
    });
}
