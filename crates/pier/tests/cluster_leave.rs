//! Root tier: `pier cluster leave`. Two `pier daemon`s on a [`Lan`] make a pool; a host
//! with the pool's instances, and the host with the pool's only voting etcd member while
//! others remain, are refused with what to do; a leave takes the host's records and etcd member out of the
//! pool and leaves it a host of its own that can join again; the last host's leave
//! dissolves the pool.

mod common;

use common::*;

fn host_ids(d: &Daemon) -> Vec<String> {
    d.json(&["host", "ls"])
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["id"].as_str().unwrap().to_string())
        .collect()
}

fn join(d: &Daemon, member: &Daemon, addr: &str, name: &str) {
    let token = member.json(&["cluster", "token"])["token"]
        .as_str()
        .unwrap()
        .to_string();
    let out = d.pier(&["cluster", "join", addr, &token, "--name", name]);
    assert!(
        out.status.success(),
        "join failed: {}\nthe member's log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        member.log()
    );
}

/// `d` keeps nothing of a pool: no `ROOT/cluster`, no etcd data or process, and says so.
fn in_no_pool(d: &Daemon) {
    assert!(!d.root.join("cluster").exists(), "ROOT/cluster is left");
    assert!(!d.root.join("etcd").exists(), "ROOT/etcd is left");
    wait_until("the host's etcd to stop", || etcd_pid(d).is_none());
    let e = d.fails(&["host", "ls"]);
    assert!(e.contains("this host is not in a pool"), "{e}");
    assert!(d.json(&["info"])["pool"]["cluster_id"].is_null());
}

#[test]
#[ignore = "root tier: needs root; scripts/test.sh runs it (--run-ignored all)"]
fn a_host_leaves_the_pool_joins_again_and_the_last_one_dissolves_it() {
    require_root_and_tools(&["etcd", "ldd"]);
    let mut lan = Lan::new();
    let h1 = with_busybox(&[]);
    let h2 = with_busybox(&[]);
    let a1 = lan.connect(&h1);
    lan.connect(&h2);
    h1.ok(&["cluster", "init", "--advertise", &a1, "--name", "h1"]);
    let addr = format!("{a1}:7443");
    join(&h2, &h1, &addr, "h2");
    wait_until("both hosts listed", || host_ids(&h1).len() == 2);
    assert!(
        etcd_pid(&h2).is_some(),
        "the second host runs an etcd member"
    );

    // A host with the pool's instances is told to move them first.
    let name = format!("lv-{}", &random_tag()[..6]);
    h1.ok(&[
        "run",
        "-d",
        "--name",
        &name,
        "--constraint",
        "host.id==h2",
        "bb",
        "sleep",
        "600",
    ]);
    let e = h2.fails(&["cluster", "leave"]);
    assert!(
        e.contains("runs 1 instance the pool placed here") && e.contains("pier host drain h2"),
        "{e}"
    );
    // The host that runs the pool's only voting etcd member leaves last (h2 runs a
    // learner; it keeps the CA's key as h1 does, so that rule does not hold h1 here).
    let e = h1.fails(&["cluster", "leave"]);
    assert!(
        e.contains("last voting etcd member") && e.contains("leave it last"),
        "{e}"
    );
    assert_eq!(
        host_ids(&h1),
        ["h1", "h2"],
        "a refused leave changes nothing"
    );
    assert!(h2.root.join("cluster").exists());

    // Without instances, h2 leaves: out of the pool's records and of its etcd.
    h1.ok(&["rm", "-f", &name]);
    wait_until("the removed instance's reservation released", || {
        h1.json(&["host", "inspect", "h2"])["instances"] == 0
    });
    let left = h2.json(&["cluster", "leave"]);
    assert_eq!(left["host"], "h2");
    assert_eq!(left["dissolved"], false);
    in_no_pool(&h2);
    wait_until("h2 gone from the pool", || host_ids(&h1) == ["h1"]);
    let events = host_events(&h1, "h2");
    assert!(events.iter().any(|a| a == "remove"), "{events:?}");
    // The pool goes on: placements on h1 still work.
    h1.ok(&["run", "--rm", "bb", "true"]);
    // h2 is a host of its own: its creates are its own, and it can join again.
    let own = h2
        .ok(&["run", "-d", "bb", "sleep", "600"])
        .trim()
        .to_string();
    join(&h2, &h1, &addr, "h2");
    wait_until("h2 back in the pool", || host_ids(&h1).len() == 2);
    h2.ok(&["rm", "-f", &own]);
    h2.ok(&["cluster", "leave"]);
    in_no_pool(&h2);

    // A host whose pool's store is away is told so; --force forgets the pool on it alone,
    // and the pool forgets it with `host rm --force`.
    join(&h2, &h1, &addr, "h2");
    wait_until("h2 back in the pool", || host_ids(&h1).len() == 2);
    let mut h1 = h1;
    h1.stop();
    let e = h2.fails(&["cluster", "leave"]);
    assert!(
        e.contains("cannot reach the pool's store") && e.contains("--force"),
        "{e}"
    );
    assert!(
        h2.root.join("cluster").exists(),
        "a refused leave keeps the membership"
    );
    let left = h2.json(&["cluster", "leave", "--force"]);
    assert_eq!(left["forgotten_locally"], true);
    in_no_pool(&h2);
    h1.spawn();
    wait_until("h1 back", || h1.pier(&["host", "ls"]).status.success());
    h1.ok(&["host", "rm", "h2", "--force"]);
    assert_eq!(host_ids(&h1), ["h1"]);

    // The last host's leave dissolves the pool; it can make a new one after.
    let left = h1.json(&["cluster", "leave"]);
    assert_eq!(left["dissolved"], true);
    in_no_pool(&h1);
    h1.ok(&["cluster", "init", "--advertise", &a1, "--name", "h1"]);
    assert_eq!(
        host_ids(&h1),
        ["h1"],
        "the new pool has none of the old one"
    );
    h1.ok(&["cluster", "leave"]);
    in_no_pool(&h1);
}
