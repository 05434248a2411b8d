//! Root tier: bridge networks, published ports, isolation, DNS, routed mode, rate limits
//! and repair after a crash, all in network namespaces of the test's own.
//!
//! Each daemon lives in its own namespace (see `common::Daemon`); an "outside" namespace
//! joined to it by a veth pair stands in for another host on the physical network:
//! daemon side 192.0.2.1/24, outside 192.0.2.2/24 (TEST-NET-1, never routed anywhere).

mod common;

use std::process::{Child, Command, Stdio};
use std::time::Instant;

use common::*;

fn with_busybox() -> Daemon {
    require_root_and_tools(&["ldd", "nft", "tc", "ip"]);
    let d = Daemon::start();
    d.ok(&["image", "from-host", "bb", BUSYBOX]);
    d
}

/// Another host: a namespace wired to the daemon's.
struct Outside {
    ns: String,
    servers: Vec<Child>,
}

impl Outside {
    fn new(d: &Daemon) -> Outside {
        let ns = format!("{}-o", d.netns);
        ip(&["netns", "add", &ns]);
        ip(&["-n", &ns, "link", "set", "lo", "up"]);
        ip(&[
            "-n", &d.netns, "link", "add", "up0", "type", "veth", "peer", "name", "eth0", "netns",
            &ns,
        ]);
        ip(&["-n", &d.netns, "addr", "add", "192.0.2.1/24", "dev", "up0"]);
        ip(&["-n", &d.netns, "link", "set", "up0", "up"]);
        ip(&["-n", &ns, "addr", "add", "192.0.2.2/24", "dev", "eth0"]);
        ip(&["-n", &ns, "link", "set", "eth0", "up"]);
        ip(&["-n", &ns, "route", "add", "default", "via", "192.0.2.1"]);
        Outside {
            ns,
            servers: Vec::new(),
        }
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.ns]).args(args);
        c
    }

    /// Runs busybox in the outside namespace; returns (success, stdout).
    fn busybox(&self, args: &[&str]) -> (bool, String) {
        let mut full = vec![BUSYBOX];
        full.extend_from_slice(args);
        let out = self.cmd(&full).stdin(Stdio::null()).output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    }

    /// An HTTP server on port 80 whose /cgi-bin/ip answers with the caller's address.
    fn serve(&mut self, dir: &std::path::Path) {
        std::fs::create_dir_all(dir.join("cgi-bin")).unwrap();
        let script = dir.join("cgi-bin/ip");
        std::fs::write(
            &script,
            "#!/bin/busybox sh\necho 'Content-Type: text/plain'\necho\necho \"$REMOTE_ADDR\"\n",
        )
        .unwrap();
        // A sink for uploads: reads the body and answers with its size.
        let sink = dir.join("cgi-bin/sink");
        std::fs::write(
            &sink,
            "#!/bin/busybox sh\nn=$(head -c \"$CONTENT_LENGTH\" | wc -c)\necho 'Content-Type: text/plain'\necho\necho $n\n",
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        for s in [&script, &sink] {
            std::fs::set_permissions(s, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let child = self
            .cmd(&[BUSYBOX, "httpd", "-f", "-p", "80", "-h"])
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.servers.push(child);
        wait_until("the outside web server", || {
            self.busybox(&[
                "timeout",
                "2",
                BUSYBOX,
                "wget",
                "-q",
                "-O",
                "-",
                "http://127.0.0.1/cgi-bin/ip",
            ])
            .0
        });
    }
}

impl Drop for Outside {
    fn drop(&mut self) {
        for c in &mut self.servers {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).status();
    }
}

/// The caller's address as busybox httpd gives it to a CGI script (`[::ffff:a.b.c.d]`
/// when it listens on IPv6 too).
fn remote_addr(s: &str) -> &str {
    s.trim()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .trim_start_matches("::ffff:")
}

/// `wget` run in the daemon's namespace (the host, as far as containers go).
fn host_get(d: &Daemon, url: &str) -> Option<String> {
    let out = d
        .in_netns("timeout")
        .args(["3", BUSYBOX, "wget", "-q", "-O", "-", url])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A busybox web server container serving `text` on port 80, with /cgi-bin/ip.
fn web(d: &Daemon, extra: &[&str], name: &str, text: &str) -> String {
    let script = format!(
        "mkdir -p /www/cgi-bin && echo {text} > /www/index.html && \
         printf '#!/bin/sh\\necho Content-Type: text/plain\\necho\\necho $REMOTE_ADDR\\n' > /www/cgi-bin/ip && \
         chmod +x /www/cgi-bin/ip && exec httpd -f -p 80 -h /www"
    );
    let mut args = vec!["run", "-d", "--name", name];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["bb", "sh", "-c", &script]);
    d.ok(&args).trim().to_string()
}

fn ip_of(d: &Daemon, name: &str, network: &str) -> String {
    let v = d.json(&["inspect", name]);
    v[0]["networks"][network]["ip_address"]
        .as_str()
        .unwrap_or_else(|| panic!("{name} has no address on {network}: {v}"))
        .to_string()
}

#[test]
#[ignore = "root tier: needs root; scripts/test.sh runs it (--run-ignored all)"]
fn published_ports_answer_from_the_host_outside_and_containers() {
    let d = with_busybox();
    let out = Outside::new(&d);
    // Another tool's table on the same host: Pier never touches it.
    let nft = |args: &[&str]| {
        let st = d.in_netns("nft").args(args).status().unwrap();
        assert!(st.success(), "nft {args:?}");
    };
    nft(&["add", "table", "ip", "othertool"]);
    nft(&["add chain ip othertool input { type filter hook input priority 10; policy accept; }"]);
    nft(&[
        "add",
        "rule",
        "ip",
        "othertool",
        "input",
        "tcp",
        "dport",
        "9",
        "counter",
        "accept",
    ]);

    web(&d, &["-p", "8080:80"], "web", "hello-pier");
    wait_until("the published port", || {
        host_get(&d, "http://127.0.0.1:8080/").is_some()
    });
    // From the host itself: loopback and the bridge's address.
    assert_eq!(
        host_get(&d, "http://127.0.0.1:8080/").unwrap(),
        "hello-pier\n"
    );
    let gw = d.json(&["network", "inspect", "bridge"])[0]["gateway"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        host_get(&d, &format!("http://{gw}:8080/")).unwrap(),
        "hello-pier\n"
    );
    // From another host, through the host's address.
    let (ok, body) = out.busybox(&[
        "timeout",
        "3",
        BUSYBOX,
        "wget",
        "-q",
        "-O",
        "-",
        "http://192.0.2.1:8080/",
    ]);
    assert!(ok && body == "hello-pier\n", "from outside: {body}");
    // From another container (hairpin through the host's address).
    let (code, body) = try_run(
        &d,
        &[
            "bb",
            "timeout",
            "5",
            "wget",
            "-q",
            "-O",
            "-",
            &format!("http://{gw}:8080/"),
        ],
    );
    assert_eq!((code, body.as_str()), (0, "hello-pier\n"));
    // ps and port show the mapping.
    assert!(d.ok(&["ps"]).contains("0.0.0.0:8080->80/tcp"));
    assert_eq!(d.ok(&["port", "web"]).trim(), "80/tcp -> 0.0.0.0:8080");
    // The port is taken: a second container is refused and names the first.
    let err = d.fails(&["run", "-d", "-p", "8080:80", "bb", "sleep", "10"]);
    assert!(err.contains("8080") && err.contains("web"), "{err}");
    // A range, and a host address: 127.0.0.1 only.
    web(&d, &["-p", "127.0.0.1:9000-9001:80-81"], "ranged", "ranged");
    wait_until("the ranged port", || {
        host_get(&d, "http://127.0.0.1:9000/").is_some()
    });
    assert!(d
        .ok(&["port", "ranged"])
        .contains("81/tcp -> 127.0.0.1:9001"));
    let (ok, _) = out.busybox(&[
        "timeout",
        "2",
        BUSYBOX,
        "wget",
        "-q",
        "-O",
        "-",
        "http://192.0.2.1:9000/",
    ]);
    assert!(
        !ok,
        "a port published on 127.0.0.1 must not answer from outside"
    );
    // Without a host port: the kernel picks a free one.
    web(&d, &["-p", "80"], "anyport", "any");
    let port = d.json(&["inspect", "anyport"])[0]["ports"][0]["host_port"]
        .as_u64()
        .unwrap();
    assert!(port > 1024, "{port}");
    wait_until("the picked port", || {
        host_get(&d, &format!("http://127.0.0.1:{port}/")).as_deref() == Some("any\n")
    });
    // -P: every port the image exposes, on free host ports.
    let archive = docker_archive_with(
        "exposing:1",
        &[busybox_rootfs_tar()],
        None,
        serde_json::json!({"Cmd": ["/bin/sh"], "Env": ["PATH=/bin"], "ExposedPorts": {"80/tcp": {}, "53/udp": {}}}),
    );
    let file = write_file(&d, "exposing.tar", &archive);
    d.ok(&["image", "load", "-i", &file]);
    d.ok(&[
        "run",
        "-d",
        "--name",
        "exposing",
        "-P",
        "exposing:1",
        "sh",
        "-c",
        "echo exposed > /i.html && exec busybox httpd -f -p 80 -h /",
    ]);
    let ports = d.json(&["inspect", "exposing"])[0]["ports"].clone();
    let ports = ports.as_array().unwrap();
    assert_eq!(ports.len(), 2, "{ports:?}");
    let tcp = ports.iter().find(|p| p["proto"] == "tcp").unwrap();
    assert_eq!(tcp["container_port"], 80);
    let host_port = tcp["host_port"].as_u64().unwrap();
    assert!(ports
        .iter()
        .any(|p| p["proto"] == "udp" && p["container_port"] == 53));
    wait_until("the -P port", || {
        host_get(&d, &format!("http://127.0.0.1:{host_port}/i.html")).as_deref()
            == Some("exposed\n")
    });
    // Egress is NATed: the outside host sees the host's address.
    let mut out = out;
    let www = d.dir.path().join("outside-www");
    out.serve(&www);
    let (code, body) = try_run(
        &d,
        &[
            "bb",
            "timeout",
            "5",
            "wget",
            "-q",
            "-O",
            "-",
            "http://192.0.2.2/cgi-bin/ip",
        ],
    );
    assert_eq!((code, remote_addr(&body)), (0, "192.0.2.1"));
    // Bad mappings are refused before anything is made.
    for bad in ["70000:80", "80/sctp", "1:2:3:4"] {
        let err = d.fails(&["run", "--rm", "-p", bad, "bb", "true"]);
        assert!(err.contains("invalid port mapping"), "{bad}: {err}");
    }
    // Removing the container removes its rule: the port no longer answers.
    d.ok(&["rm", "-f", "web"]);
    assert!(host_get(&d, "http://127.0.0.1:8080/").is_none());
    let table = String::from_utf8(
        d.in_netns("nft")
            .args(["list", "table", "ip", &d.nft_table()])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    assert!(
        table.contains("chain ports") && !table.contains("8080"),
        "{table}"
    );
    // The other tool's rule is intact.
    let other = String::from_utf8(
        d.in_netns("nft")
            .args(["list", "table", "ip", "othertool"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    assert!(other.contains("tcp dport 9 counter"), "{other}");
}

#[test]
#[ignore = "root tier: needs root; scripts/test.sh runs it (--run-ignored all)"]
fn user_networks_are_isolated_and_resolve_names() {
    let d = with_busybox();
    let mut out = Outside::new(&d);
    out.serve(&d.dir.path().join("outside-www"));
    d.ok(&["network", "create", "--subnet", "10.31.0.0/24", "red"]);
    d.ok(&["network", "create", "--subnet", "10.32.0.0/24", "blue"]);
    d.ok(&[
        "network",
        "create",
        "--subnet",
        "10.33.0.0/24",
        "--internal",
        "vault",
    ]);
    d.ok(&[
        "run",
        "-d",
        "--name",
        "r1",
        "--network",
        "red",
        "--network-alias",
        "db",
        "bb",
        "sleep",
        "300",
    ]);
    d.ok(&[
        "run",
        "-d",
        "--name",
        "b1",
        "--network",
        "blue",
        "bb",
        "sleep",
        "300",
    ]);
    d.ok(&[
        "run",
        "-d",
        "--name",
        "v1",
        "--network",
        "vault",
        "bb",
        "sleep",
        "300",
    ]);
    let r1 = ip_of(&d, "r1", "red");
    let b1 = ip_of(&d, "b1", "blue");
    let v1 = ip_of(&d, "v1", "vault");
    assert!(r1.starts_with("10.31.0."), "{r1}");
    let ping = |net: &str, target: &str| {
        try_run(
            &d,
            &["--network", net, "bb", "ping", "-c", "1", "-W", "1", target],
        )
        .0 == 0
    };
    // Same network: by address, by name, by alias, by name.network.
    for target in [r1.as_str(), "r1", "db", "r1.red"] {
        assert!(ping("red", target), "red -> {target}");
    }
    // Every blocked direction.
    assert!(!ping("red", &b1), "red -> blue");
    assert!(!ping("blue", &r1), "blue -> red");
    assert!(!ping("red", &v1), "red -> vault");
    assert!(!ping("vault", &r1), "vault -> red");
    assert!(!ping("bridge", &r1), "default bridge -> red");
    // Names of one network are unknown on another.
    let (code, _) = try_run(&d, &["--network", "blue", "bb", "nslookup", "r1"]);
    assert_ne!(code, 0, "blue must not resolve red's names");
    // Internal: no egress; other networks reach the outside host.
    assert!(ping("red", "192.0.2.2"));
    assert!(
        !ping("vault", "192.0.2.2"),
        "an internal network has no egress"
    );
    assert!(
        ping("vault", "v1"),
        "but its members reach each other by name"
    );
    // The outside host cannot reach a NAT network's containers directly, even routed to.
    ip(&[
        "-n",
        &out.ns,
        "route",
        "add",
        "10.31.0.0/24",
        "via",
        "192.0.2.1",
    ]);
    let (ok, _) = out.busybox(&["ping", "-c", "1", "-W", "1", &r1]);
    assert!(!ok, "a NAT network is not reachable from outside");
    // --dns, --dns-search, --add-host.
    let (code, text) = try_run(
        &d,
        &[
            "--dns",
            "192.0.2.53",
            "--dns-search",
            "example.test",
            "--add-host",
            "gw.test:192.0.2.1",
            "bb",
            "cat",
            "/etc/resolv.conf",
            "/etc/hosts",
        ],
    );
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains("nameserver 192.0.2.53") && text.contains("search example.test"),
        "{text}"
    );
    assert!(text.contains("192.0.2.1\tgw.test"), "{text}");
    // Static address and MAC; a taken one is refused.
    let (code, text) = try_run(
        &d,
        &[
            "--network",
            "red",
            "--ip",
            "10.31.0.200",
            "--mac-address",
            "02:00:00:aa:bb:cc",
            "bb",
            "ip",
            "addr",
            "show",
            "eth0",
        ],
    );
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains("10.31.0.200/24") && text.contains("02:00:00:aa:bb:cc"),
        "{text}"
    );
    let err = d.fails(&["run", "--rm", "--network", "red", "--ip", &r1, "bb", "true"]);
    assert!(err.contains("in use"), "{err}");
    // connect / disconnect a running container.
    d.ok(&["network", "connect", "blue", "r1"]);
    let (code, text) = try_run(
        &d,
        &[
            "--network",
            "blue",
            "bb",
            "ping",
            "-c",
            "1",
            "-W",
            "1",
            "r1",
        ],
    );
    assert_eq!(code, 0, "r1 reachable on blue after connect: {text}");
    let addrs = d.ok(&["exec", "r1", "ip", "-o", "-4", "addr"]);
    assert!(
        addrs.contains("eth1") && addrs.contains("10.32.0."),
        "{addrs}"
    );
    // A container on two networks resolves names on both (its resolv.conf names the
    // first network's server).
    let looked = d.ok(&["exec", "r1", "nslookup", "b1"]);
    assert!(looked.contains(&b1), "{looked}");
    // A rename moves the name, as on Docker: the new one resolves, the old one not.
    d.ok(&["rename", "b1", "b1new"]);
    let looked = d.ok(&["exec", "r1", "nslookup", "b1new"]);
    assert!(looked.contains(&b1), "{looked}");
    let out = d.pier(&["exec", "r1", "nslookup", "b1"]);
    assert!(
        !out.status.success() && !String::from_utf8_lossy(&out.stdout).contains(&b1),
        "b1's old name must not resolve after its rename: {out:?}"
    );
    d.ok(&["rename", "b1new", "b1"]);
    let err = d.fails(&["network", "rm", "blue"]);
    assert!(err.contains("b1") && err.contains("r1"), "{err}");
    d.ok(&["network", "disconnect", "blue", "r1"]);
    let out = d.pier(&["exec", "r1", "nslookup", "b1"]);
    assert!(
        !out.status.success(),
        "b1 must not resolve from r1 once off blue"
    );
    let addrs = d.ok(&["exec", "r1", "ip", "-o", "-4", "addr"]);
    assert!(!addrs.contains("eth1"), "{addrs}");
    // --gateway, --ip-range and an MTU.
    d.ok(&[
        "network",
        "create",
        "--subnet",
        "10.34.0.0/24",
        "--gateway",
        "10.34.0.254",
        "--ip-range",
        "10.34.0.128/28",
        "-o",
        "mtu=1400",
        "tuned",
    ]);
    let (code, text) = try_run(
        &d,
        &[
            "--network",
            "tuned",
            "bb",
            "sh",
            "-c",
            "ip -o -4 addr show eth0; ip route; cat /sys/class/net/eth0/mtu",
        ],
    );
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains("inet 10.34.0.128/24"),
        "first of the range: {text}"
    );
    assert!(text.contains("default via 10.34.0.254"), "{text}");
    assert!(text.trim_end().ends_with("1400"), "{text}");
    d.ok(&["network", "rm", "tuned"]);
    // Inspect lists running members.
    let red = d.json(&["network", "inspect", "red"]);
    let members = red[0]["containers"].as_object().unwrap();
    assert_eq!(members.len(), 1, "{red}");
    // Overlapping subnets are refused, with another network and with a host route.
    let err = d.fails(&["network", "create", "--subnet", "10.31.0.128/25", "overlap"]);
    assert!(err.contains("overlaps"), "{err}");
    let err = d.fails(&["network", "create", "--subnet", "192.0.2.0/25", "overlap"]);
    assert!(err.contains("overlaps"), "{err}");
    for bad in [
        vec!["network", "create", "--subnet", "10.40.0.0/33", "x"],
        vec![
            "network",
            "create",
            "--subnet",
            "10.40.0.0/24",
            "--gateway",
            "10.41.0.1",
            "x",
        ],
        vec!["network", "create", "--driver", "macvlan", "x"],
        // Docker's name rule: any name but the empty one ("with space" is fine).
        vec!["network", "create", ""],
    ] {
        let err = d.fails(&bad);
        assert!(!err.is_empty(), "{bad:?}");
        assert!(
            !d.ok(&["network", "ls"]).contains(" x "),
            "{bad:?} made a network"
        );
    }
    // Removing everything leaves no bridge behind.
    for c in ["r1", "b1", "v1"] {
        d.ok(&["rm", "-f", c]);
    }
    let bridges: Vec<String> = ["red", "blue", "vault"]
        .iter()
        .map(|n| {
            d.json(&["network", "inspect", n])[0]["bridge"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    for n in ["red", "blue", "vault"] {
        d.ok(&["network", "rm", n]);
    }
    let links = d.links();
    for b in &bridges {
        assert!(!links.contains(b), "bridge {b} left: {links:?}");
    }
}

#[test]
#[ignore = "root tier: needs root; scripts/test.sh runs it (--run-ignored all)"]
fn routed_network_is_reachable_at_container_addresses() {
    let d = with_busybox();
    let mut out = Outside::new(&d);
    out.serve(&d.dir.path().join("outside-www"));
    d.ok(&[
        "network",
        "create",
        "--subnet",
        "10.50.0.0/24",
        "-o",
        "mode=routed",
        "routed",
    ]);
    web(&d, &["--network", "routed"], "rweb", "routed-hello");
    let addr = ip_of(&d, "rweb", "routed");
    // The outside host routes the subnet through this host and reaches the container
    // at its own address; the container sees the outside host's real address.
    ip(&[
        "-n",
        &out.ns,
        "route",
        "add",
        "10.50.0.0/24",
        "via",
        "192.0.2.1",
    ]);
    wait_until("the routed container", || {
        out.busybox(&[
            "timeout",
            "2",
            BUSYBOX,
            "wget",
            "-q",
            "-O",
            "-",
            &format!("http://{addr}/"),
        ])
        .0
    });
    let (_, body) = out.busybox(&[
        "timeout",
        "3",
        BUSYBOX,
        "wget",
        "-q",
        "-O",
        "-",
        &format!("http://{addr}/cgi-bin/ip"),
    ]);
    assert_eq!(remote_addr(&body), "192.0.2.2");
    // And the other way: the outside host sees the container's own address.
    let (code, body) = try_run(
        &d,
        &[
            "--network",
            "routed",
            "bb",
            "timeout",
            "5",
            "wget",
            "-q",
            "-O",
            "-",
            "http://192.0.2.2/cgi-bin/ip",
        ],
    );
    assert_eq!(code, 0, "{body}");
    assert!(
        remote_addr(&body).starts_with("10.50.0."),
        "not NATed: {body}"
    );
    d.ok(&["rm", "-f", "rweb"]);
    d.ok(&["network", "rm", "routed"]);
}

#[test]
#[ignore = "root tier: needs root; scripts/test.sh runs it (--run-ignored all)"]
fn rate_limits_hold_both_ways() {
    let d = with_busybox();
    let mut out = Outside::new(&d);
    let www = d.dir.path().join("outside-www");
    out.serve(&www);
    // 3 MB both ways at 8 mbit/s: 3 s each.
    std::fs::write(www.join("blob"), vec![7u8; 3_000_000]).unwrap();
    let timed = |args: &[&str]| {
        let t = Instant::now();
        let (code, text) = try_run(&d, args);
        assert_eq!(code, 0, "{text}");
        t.elapsed().as_secs_f64()
    };
    // Ingress: a download from the outside host.
    let secs = timed(&[
        "--network-opt",
        "ingress-rate=8mbit",
        "bb",
        "wget",
        "-q",
        "-O",
        "/dev/null",
        "http://192.0.2.2/blob",
    ]);
    assert!(
        (2.4..=3.6).contains(&secs),
        "3 MB in at 8 mbit/s took {secs:.2} s"
    );
    // Egress: an upload to the outside host.
    let t = Instant::now();
    let (code, text) = try_run(
        &d,
        &[
            "--network-opt", "egress-rate=8mbit", "bb", "sh", "-c",
            "head -c 3000000 /dev/zero | tr '\\0' x > /tmp/up && wget -q -O - --post-file /tmp/up http://192.0.2.2/cgi-bin/sink",
        ],
    );
    let secs = t.elapsed().as_secs_f64();
    assert_eq!((code, text.trim()), (0, "3000000"), "{text}");
    assert!(
        (2.4..=3.6).contains(&secs),
        "3 MB out at 8 mbit/s took {secs:.2} s"
    );
    // Without a limit the same download is much faster.
    let secs = timed(&[
        "bb",
        "wget",
        "-q",
        "-O",
        "/dev/null",
        "http://192.0.2.2/blob",
    ]);
    assert!(secs < 1.5, "unlimited download took {secs:.2} s");
    let err = d.fails(&["run", "--rm", "--network-opt", "rate=fast", "bb", "true"]);
    assert!(err.contains("rate"), "{err}");
}

#[test]
#[ignore = "root tier: needs root; scripts/test.sh runs it (--run-ignored all)"]
fn network_modes_and_repair_after_a_crash() {
    let mut d = with_busybox();
    // host: the daemon's own interfaces; none: loopback only; container: shared.
    let (_, text) = try_run(&d, &["--network", "host", "bb", "ip", "-o", "link"]);
    assert!(text.contains(&d.default_bridge()), "{text}");
    let (_, text) = try_run(&d, &["--network", "none", "bb", "ip", "-o", "link"]);
    assert_eq!(text.lines().count(), 1, "{text}");
    web(&d, &["-p", "8081:80"], "main", "main");
    let main_ip = ip_of(&d, "main", "bridge");
    let (code, text) = try_run(
        &d,
        &[
            "--network",
            "container:main",
            "bb",
            "sh",
            "-c",
            "ip -o -4 addr show eth0; wget -q -O - http://127.0.0.1/",
        ],
    );
    assert_eq!(code, 0, "{text}");
    assert!(text.contains(&main_ip) && text.contains("main"), "{text}");
    // Addresses survive a daemon crash: nothing is handed out twice after it.
    d.ok(&["run", "-d", "--name", "other", "bb", "sleep", "300"]);
    let other_ip = ip_of(&d, "other", "bridge");
    d.kill9();
    // A crash in the middle of a start leaves a veth and a namespace file no record
    // owns; the next start removes them.
    let stray = format!("pv{}deadbeef0", d.host_tag());
    assert!(d.owns_veth(&stray));
    ip(&[
        "-n",
        &d.netns,
        "link",
        "add",
        &stray,
        "type",
        "veth",
        "peer",
        "name",
        "pcdeadbeef000",
    ]);
    std::fs::write(d.root.join("netns/deadbeef"), b"").unwrap();
    d.spawn();
    let links = d.links();
    assert!(
        !links.iter().any(|l| l.contains("deadbeef")),
        "stray veth kept: {links:?}"
    );
    assert!(!d.root.join("netns/deadbeef").exists());
    // The published port still answers (its rules rebuilt from the store).
    wait_until("the port after restart", || {
        host_get(&d, "http://127.0.0.1:8081/").as_deref() == Some("main\n")
    });
    for _ in 0..3 {
        let (code, text) = try_run(&d, &["bb", "ip", "-o", "-4", "addr", "show", "eth0"]);
        assert_eq!(code, 0, "{text}");
        assert!(
            !text.contains(&format!("{main_ip}/")) && !text.contains(&format!("{other_ip}/")),
            "an address in use was handed out again: {text}"
        );
    }
    // Leases go with their containers.
    d.ok(&["rm", "-f", "main", "other"]);
    let bridge = d.json(&["network", "inspect", "bridge"]);
    assert!(
        bridge[0]["containers"].as_object().unwrap().is_empty(),
        "{bridge}"
    );
}

/// Runs `pier daemon ARGS` in `d`'s network namespace, which must refuse to start;
/// returns what it printed.
fn daemon_refuses(d: &Daemon, args: &[&str]) -> String {
    let out = Command::new("timeout")
        .arg("20")
        .arg("nsenter")
        .arg(format!("--net={}", d.netns_path().display()))
        .arg(PIER)
        .arg("daemon")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "pier daemon {args:?}: {err}");
    err
}

/// Two daemons on two state roots in one network namespace (one host, as the README
/// allows): each keeps its own bridges, veths, subnets and nftables table; the published
/// ports of both answer through clean and `kill -9` restarts of either; neither removes,
/// joins or rewrites the other's objects, nor publishes a port the other publishes.
#[test]
#[ignore = "root tier: needs root; scripts/test.sh runs it (--run-ignored all)"]
fn daemons_side_by_side_keep_their_own_networks_through_restarts() {
    let a = with_busybox();
    web(&a, &["-p", "8091:80"], "wa", "from-a");
    // A daemon of another root on `a`'s socket is refused, and `a` keeps its socket.
    let second = a.dir.path().join("second");
    let err = daemon_refuses(
        &a,
        &[
            "--root",
            second.to_str().unwrap(),
            "--socket",
            a.socket.to_str().unwrap(),
            "--docker-socket",
            "",
        ],
    );
    assert!(err.contains("another daemon serves on"), "{err}");
    a.ok(&["info"]);
    // A root whose tag collides with another daemon's (one in 65536: made here by
    // marking its table as another root's) is refused before it touches anything.
    let collide = a.dir.path().join("collide");
    std::fs::create_dir_all(&collide).unwrap();
    let tag = {
        use std::os::unix::ffi::OsStrExt;
        let root = std::fs::canonicalize(&collide).unwrap();
        sha256_hex(root.as_os_str().as_bytes())[..4].to_string()
    };
    let table = format!("pier_{tag}");
    let nft = |args: &[&str]| {
        let out = a.in_netns("nft").args(args).output().unwrap();
        assert!(out.status.success(), "nft {args:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    nft(&["add", "table", "ip", &table]);
    nft(&["add", "chain", "ip", &table, "root_00000000000000ff"]);
    let err = daemon_refuses(
        &a,
        &[
            "--root",
            collide.to_str().unwrap(),
            "--socket",
            a.dir.path().join("collide.sock").to_str().unwrap(),
            "--docker-socket",
            "",
        ],
    );
    assert!(err.contains("another state root"), "{err}");
    let left = nft(&["list", "table", "ip", &table]);
    assert!(left.contains("root_00000000000000ff"), "{left}");
    nft(&["delete", "table", "ip", &table]);

    let b = Daemon::start_beside(&a, &[]);
    b.ok(&["image", "from-host", "bb", BUSYBOX]);
    b.ok(&["network", "create", "nb"]);
    web(&b, &["-p", "8092:80"], "wb", "from-b");
    web(
        &b,
        &["--network", "nb", "-p", "8093:80"],
        "wbn",
        "from-b-nb",
    );
    let mut served = vec![
        (8091, "from-a".to_string()),
        (8092, "from-b".to_string()),
        (8093, "from-b-nb".to_string()),
    ];
    let answers = |ds: [&Daemon; 2], served: &[(u16, String)], when: &str| {
        for (port, text) in served {
            let url = format!("http://127.0.0.1:{port}/");
            let want = format!("{text}\n");
            let deadline = Instant::now() + std::time::Duration::from_secs(20);
            while host_get(ds[0], &url).as_deref() != Some(want.as_str()) {
                if Instant::now() > deadline {
                    let state = |args: &[&str]| {
                        let out = ds[0].in_netns(args[0]).args(&args[1..]).output().unwrap();
                        String::from_utf8_lossy(&out.stdout).into_owned()
                    };
                    panic!(
                        "port {port} ({text}) does not answer {when}\nlinks:\n{}\nnft:\n{}\nps a: {}\nps b: {}\nlog a:\n{}\nlog b:\n{}",
                        state(&["ip", "-br", "addr"]),
                        state(&["nft", "list", "ruleset"]),
                        ds[0].ok(&["ps", "-a"]),
                        ds[1].ok(&["ps", "-a"]),
                        ds[0].log(),
                        ds[1].log()
                    );
                }
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
        }
    };
    answers([&a, &b], &served, "with two daemons");

    // Each its own default bridge and subnet, its gateway on its bridge only.
    let default_net = |d: &Daemon| d.json(&["network", "inspect", "bridge"])[0].clone();
    let (na, nb) = (default_net(&a), default_net(&b));
    assert_eq!(na["bridge"], a.default_bridge(), "{na}");
    assert_eq!(nb["bridge"], b.default_bridge(), "{nb}");
    assert_ne!(a.default_bridge(), b.default_bridge());
    assert_ne!(
        na["subnet"], nb["subnet"],
        "both default networks on one subnet"
    );
    for (d, n) in [(&a, &na), (&b, &nb)] {
        let out = Command::new("ip")
            .args(["-n", &d.netns, "-o", "-4", "addr", "show", "dev"])
            .arg(n["bridge"].as_str().unwrap())
            .output()
            .unwrap();
        let addrs = String::from_utf8_lossy(&out.stdout).into_owned();
        assert_eq!(addrs.lines().count(), 1, "{addrs}");
        assert!(addrs.contains(n["gateway"].as_str().unwrap()), "{addrs}");
    }
    // A port the other daemon publishes is taken.
    let err = b.fails(&[
        "run", "-d", "--name", "clash", "-p", "8091:80", "bb", "sleep", "60",
    ]);
    assert!(err.contains("another Pier daemon"), "{err}");
    b.ok(&["rm", "-f", "clash"]);

    // What one daemon has in the kernel: its links and its whole table.
    let objects = |d: &Daemon| {
        let tag = d.host_tag();
        let mut links: Vec<String> = d
            .links()
            .into_iter()
            .filter(|l| d.owns_veth(l) || l.starts_with(&format!("pier{tag}")))
            .collect();
        links.sort();
        let table = d
            .in_netns("nft")
            .args(["list", "table", "ip", &d.nft_table()])
            .output()
            .unwrap();
        assert!(table.status.success(), "no table {}", d.nft_table());
        (links, String::from_utf8(table.stdout).unwrap())
    };
    // Bridge and veth of wa; bridges of bridge and nb and the veths of wb and wbn (once
    // the kernel has removed, in the background, the veth of the refused start).
    let (links_a, _) = objects(&a);
    assert_eq!(links_a.len(), 2, "{links_a:?}");
    wait_until("b's links to settle", || objects(&b).0.len() == 4);

    let mut ds = [a, b];
    for (round, (i, crash)) in [(0, false), (1, false), (0, true), (1, true)]
        .into_iter()
        .enumerate()
    {
        let other = 1 - i;
        let before = objects(&ds[other]);
        let d = &mut ds[i];
        if crash {
            // Right after a start, whose record is saved lazily: the restarted daemon
            // adopts the container with its addresses and ports.
            d.kill9();
        } else {
            d.stop();
        }
        d.spawn();
        let after = objects(&ds[other]);
        assert_eq!(
            before, after,
            "restarting daemon {i} (crash: {crash}) changed the other's links or table"
        );
        answers([&ds[0], &ds[1]], &served, &format!("after restart {round}"));
        // Each container of the restarted daemon still has its address and ports.
        let d = &ds[i];
        for id in d.ok(&["ps", "-q", "--no-trunc"]).lines() {
            let c = d.json(&["inspect", id]);
            let eps = c[0]["networks"].as_object().unwrap();
            assert!(
                eps.values().all(|e| e["ip_address"].is_string()) && !eps.is_empty(),
                "{c}"
            );
            assert_eq!(c[0]["ports"].as_array().map(Vec::len), Some(1), "{c}");
        }
        // The restarted daemon starts containers as before, the other too.
        for (j, d) in ds.iter().enumerate() {
            let port = 8100 + 2 * round as u16 + j as u16;
            let text = format!("r{round}d{j}");
            web(d, &["-p", &format!("{port}:80")], &text, &text);
            served.push((port, text));
        }
        answers(
            [&ds[0], &ds[1]],
            &served,
            &format!("after restart {round}, new ones"),
        );
    }
    // A network whose subnet another link of the host routes (its bridge gone meanwhile)
    // is not set up again: two bridges would answer for the same addresses.
    let nb = ds[1].json(&["network", "inspect", "nb"])[0].clone();
    let (net, len) = nb["subnet"].as_str().unwrap().split_once('/').unwrap();
    let squat = format!("{}.250/{len}", net.rsplit_once('.').unwrap().0);
    let ns = ds[0].netns.clone();
    ip(&["-n", &ns, "link", "del", nb["bridge"].as_str().unwrap()]);
    ip(&["-n", &ns, "link", "add", "squat0", "type", "bridge"]);
    ip(&["-n", &ns, "addr", "add", &squat, "dev", "squat0"]);
    ip(&["-n", &ns, "link", "set", "squat0", "up"]);
    let err = ds[1].fails(&["run", "--rm", "--network", "nb", "bb", "true"]);
    assert!(err.contains("routed through squat0"), "{err}");
    let links = ds[1].links();
    assert!(
        !links.iter().any(|l| l == nb["bridge"].as_str().unwrap()),
        "{links:?}"
    );
    ip(&["-n", &ns, "link", "del", "squat0"]);

    let [a, b] = ds;
    // The neighbour goes first: `a` owns the namespace.
    drop(b);
    drop(a);
}
