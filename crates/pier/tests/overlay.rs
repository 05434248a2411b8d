//! Networks across the pool in the root tier: three daemons, each in a network namespace
//! of its own joined by a LAN (`Lan`), make a pool; one `network create` gives every
//! member the network (same ID and VNI, a bridge and a VXLAN link each); containers on
//! two hosts reach each other by name over it; each host's link forwards to the other
//! hosts' endpoints only; removal is refused while in use, and leaves nothing.

mod common;

use common::*;
use serde_json::Value;
use std::process::Command;

/// The JSON a command prints (`[]` when it prints nothing).
fn json_of(mut c: Command) -> Value {
    let out = c.output().unwrap();
    assert!(
        out.status.success(),
        "{c:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let s = String::from_utf8_lossy(&out.stdout);
    if s.trim().is_empty() {
        return Value::Array(vec![]);
    }
    serde_json::from_str(&s).unwrap_or_else(|e| panic!("{c:?} printed {s}: {e}"))
}

fn netns_cmd(d: &Daemon, program: &str, args: &[&str]) -> Command {
    let mut c = d.in_netns(program);
    c.args(args);
    c
}

/// The daemon's VXLAN links, as `ip -d -j link` shows them.
fn vxlans(d: &Daemon) -> Vec<Value> {
    let v = json_of(netns_cmd(
        d,
        "ip",
        &["-d", "-j", "link", "show", "type", "vxlan"],
    ));
    v.as_array().unwrap().clone()
}

/// The forwarding entries of link `dev`.
fn fdb(d: &Daemon, dev: &str) -> Vec<Value> {
    let v = json_of(netns_cmd(d, "bridge", &["-j", "fdb", "show", "dev", dev]));
    v.as_array().unwrap().clone()
}

/// The permanent neighbour entries of the daemon's namespace.
fn permanent_neighbours(d: &Daemon) -> Vec<Value> {
    let v = json_of(netns_cmd(
        d,
        "ip",
        &["-j", "neigh", "show", "nud", "permanent"],
    ));
    v.as_array().unwrap().clone()
}

fn inspect_net(d: &Daemon, name: &str) -> Value {
    d.json(&["network", "inspect", name])[0].clone()
}

fn endpoint(d: &Daemon, container: &str, network: &str) -> (String, String) {
    let v = d.json(&["inspect", container]);
    let ep = &v[0]["networks"][network];
    (
        ep["ip_address"].as_str().unwrap().to_string(),
        ep["mac_address"].as_str().unwrap().to_string(),
    )
}

/// `pier exec ARGS`: its exit code and its output (stdout, then stderr).
fn exec(d: &Daemon, args: &[&str]) -> (i32, String) {
    let mut a = vec!["exec"];
    a.extend_from_slice(args);
    let out = d.pier(&a);
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
#[ignore = "root tier: needs root; scripts/test.sh runs it (--run-ignored all)"]
fn two_instances_on_different_hosts_talk_by_name_over_the_overlay() {
    require_root_and_tools(&["etcd", "bridge", "nft", "ldd"]);
    let mut lan = Lan::new();
    let h1 = with_busybox(&[]);
    let mut h2 = with_busybox(&[]);
    let h3 = with_busybox(&[]);
    let addrs = pool_of(&mut lan, &[&h1, &h2, &h3]);

    // One network for the pool, made on h1.
    let net = format!("ov{}", &random_tag()[..4]);
    h1.ok(&["network", "create", &net]);
    let n = inspect_net(&h1, &net);
    assert_eq!(
        (n["driver"].as_str(), n["scope"].as_str()),
        (Some("overlay"), Some("pool")),
        "{n}"
    );
    assert_eq!(n["mtu"], 1450, "{n}");
    let vni = n["vni"].as_u64().unwrap();
    assert!(vni >= 4096, "{n}");
    assert!(n["subnet"].as_str().unwrap().starts_with("10.210."), "{n}");
    let id = n["id"].as_str().unwrap().to_string();
    let ls = h1.ok(&["network", "ls"]);
    assert!(
        ls.lines()
            .any(|l| l.contains(&net) && l.contains("overlay") && l.contains("pool")),
        "{ls}"
    );
    // Every member has it, with the same ID and VNI, and its own link on its bridge.
    for (d, addr) in [&h1, &h2, &h3].into_iter().zip(&addrs) {
        wait_until("the pool network on every member", || {
            d.json(&["network", "ls"])
                .as_array()
                .unwrap()
                .iter()
                .any(|m| m["id"] == id.as_str())
        });
        let m = inspect_net(d, &net);
        assert_eq!(
            (m["id"].as_str(), m["vni"].as_u64()),
            (Some(id.as_str()), Some(vni))
        );
        let bridge = m["bridge"].as_str().unwrap().to_string();
        let mut links = vec![];
        wait_until("the VXLAN link", || {
            links = vxlans(d);
            links.len() == 1
        });
        let l = &links[0];
        let info = &l["linkinfo"]["info_data"];
        assert!(d.owns_vxlan(l["ifname"].as_str().unwrap()), "{l}");
        assert_eq!(info["id"].as_u64(), Some(vni), "{l}");
        assert_eq!(info["local"].as_str(), Some(addr.as_str()), "{l}");
        assert_eq!(info["port"], 4789, "{l}");
        assert_eq!(info["learning"], false, "{l}");
        assert_eq!(info["proxy"], true, "{l}");
        assert_eq!(l["mtu"], 1450, "{l}");
        assert_eq!(l["master"].as_str(), Some(bridge.as_str()), "{l}");
        let st = netns_cmd(d, "nft", &["list", "table", "bridge", &d.nft_table()])
            .status()
            .unwrap();
        assert!(
            st.success(),
            "no bridge table on a member with a pool network"
        );
    }

    // Docker's API on a member: driver overlay makes a pool network, of Scope swarm.
    let dk = format!("dk{}", &random_tag()[..4]);
    let body = serde_json::json!({"Name": dk, "Driver": "overlay"}).to_string();
    let (status, out) = docker_api(&h1, "POST", "/networks/create", body.as_bytes());
    assert_eq!(status, 201, "{out}");
    let (status, out) = docker_api(&h1, "GET", &format!("/networks/{dk}?scope=swarm"), b"");
    assert_eq!(status, 200, "{out}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (v["Driver"].as_str(), v["Scope"].as_str()),
        (Some("overlay"), Some("swarm"))
    );
    let (status, _) = docker_api(&h1, "GET", &format!("/networks/{dk}?scope=local"), b"");
    assert_eq!(status, 404);
    wait_until("h3 has the Docker-made pool network", || {
        h3.pier(&["network", "inspect", &dk]).status.success()
    });
    let (status, out) = docker_api(&h1, "DELETE", &format!("/networks/{dk}"), b"");
    assert_eq!(status, 204, "{out}");
    for d in [&h1, &h2, &h3] {
        wait_until("the Docker-made network gone", || vxlans(d).len() == 1);
    }

    // A web server on h2, a client on h3.
    let web = format!("web{}", &random_tag()[..4]);
    let cli = format!("cli{}", &random_tag()[..4]);
    h2.ok(&[
        "run",
        "-d",
        "--name",
        &web,
        "--network",
        &net,
        "--constraint",
        "host.id==h2",
        "bb",
        "sh",
        "-c",
        "echo hi-web > /tmp/i; head -c 65536 /dev/zero > /tmp/big; httpd -f -p 8080 -h /tmp",
    ]);
    h3.ok(&[
        "run",
        "-d",
        "--name",
        &cli,
        "--network",
        &net,
        "--constraint",
        "host.id==h3",
        "bb",
        "sleep",
        "600",
    ]);
    let (web_ip, web_mac) = endpoint(&h2, &web, &net);
    let (cli_ip, _) = endpoint(&h3, &cli, &net);
    assert_ne!(web_ip, cli_ip);

    // By name across hosts: the name (and the name with the network's) resolved by
    // the client's host, then HTTP to the address it gave (the static busybox's wget
    // resolves no names: its glibc has no NSS modules in the image), a 64 KiB body too
    // (VXLAN's MTU). (That wget's `-T` crashes it: `timeout` instead.)
    let fetch = |name: &str, path: &str| {
        let script = format!(
            "ip=$(nslookup {name} | sed -n 's/^Address: //p' | tail -1); [ -n \"$ip\" ] && echo $ip && timeout 5 wget -q -O - http://$ip:8080/{path}"
        );
        exec(&h3, &[&cli, "sh", "-c", &script])
    };
    let want = (0, format!("{web_ip}\nhi-web\n"));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while fetch(&web, "i") != want {
        if std::time::Instant::now() > deadline {
            let run = |d: &Daemon, p: &str, a: &[&str]| {
                let o = netns_cmd(d, p, a).output().unwrap();
                format!(
                    "{}{}",
                    String::from_utf8_lossy(&o.stdout),
                    String::from_utf8_lossy(&o.stderr)
                )
            };
            panic!(
                "cli does not reach web by name: {:?}\nh3 fdb: {}\nh3 neigh: {}\nh2 fdb: {}\nh3 log: {}",
                fetch(&web, "i"),
                run(&h3, "bridge", &["fdb", "show"]),
                run(&h3, "ip", &["neigh", "show"]),
                run(&h2, "bridge", &["fdb", "show"]),
                h3.log(),
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    assert_eq!(fetch(&format!("{web}.{net}"), "i"), want);
    let (code, out) = exec(
        &h3,
        &[
            &cli,
            "sh",
            "-c",
            &format!("timeout 5 wget -q -O - http://{web_ip}:8080/big | wc -c"),
        ],
    );
    assert_eq!((code, out.trim()), (0, "65536"), "{out}");
    let (code, out) = exec(&h2, &[&web, "nslookup", &cli]);
    assert!(code == 0 && out.contains(&cli_ip), "{out}");
    // A rename on h3 moves the name on h2 too (the claim carries it), then back.
    let renamed = format!("{cli}x");
    h3.ok(&["rename", &cli, &renamed]);
    wait_until("h2 resolves cli's new name", || {
        let (code, out) = exec(&h2, &[&web, "nslookup", &renamed]);
        code == 0 && out.contains(&cli_ip)
    });
    let (_, out) = exec(&h2, &[&web, "nslookup", &cli]);
    assert!(
        !out.contains(&cli_ip),
        "cli's old name still resolves on h2: {out}"
    );
    h3.ok(&["rename", &renamed, &cli]);
    wait_until("h2 resolves cli's name again", || {
        let (code, out) = exec(&h2, &[&web, "nslookup", &cli]);
        code == 0 && out.contains(&cli_ip)
    });
    // Inspect on h1 (no endpoint of its own) lists both, each with its host.
    let m = inspect_net(&h1, &net);
    let hosts: Vec<&str> = m["containers"]
        .as_object()
        .unwrap()
        .values()
        .filter_map(|e| e["host"].as_str())
        .collect();
    assert_eq!(hosts.len(), 2, "{m}");
    assert!(hosts.contains(&"h2") && hosts.contains(&"h3"), "{m}");

    // h3's link forwards web's MAC to h2 only; nothing goes to h1 (no endpoint there).
    let vx3 = vxlans(&h3)[0]["ifname"].as_str().unwrap().to_string();
    let entries = fdb(&h3, &vx3);
    let has = |f: &dyn Fn(&Value) -> bool| entries.iter().any(f);
    assert!(
        has(&|e| e["mac"] == web_mac.as_str() && e["dst"] == addrs[1].as_str()),
        "{entries:?}"
    );
    assert!(
        has(&|e| e["mac"] == web_mac.as_str() && e.get("master").is_some()),
        "{entries:?}"
    );
    assert!(
        has(&|e| e["mac"] == "00:00:00:00:00:00" && e["dst"] == addrs[1].as_str()),
        "{entries:?}"
    );
    assert!(!has(&|e| e["dst"] == addrs[0].as_str()), "{entries:?}");
    let neigh = permanent_neighbours(&h3);
    assert!(
        neigh
            .iter()
            .any(|e| e["dst"] == web_ip.as_str() && e["lladdr"] == web_mac.as_str()),
        "{neigh:?}"
    );
    // h2's own endpoint gets no entry on h2.
    let vx2 = vxlans(&h2)[0]["ifname"].as_str().unwrap().to_string();
    assert!(!fdb(&h2, &vx2).iter().any(|e| e["mac"] == web_mac.as_str()));

    // Racing starts on all three hosts never share an address; h1 lists them all.
    let tag = &random_tag()[..4];
    let racers: Vec<(usize, String)> = (0..6).map(|i| (i % 3, format!("r{tag}{i}"))).collect();
    {
        let hosts = [&h1, &h2, &h3];
        std::thread::scope(|s| {
            for (h, name) in &racers {
                let (d, pin, net) = (hosts[*h], format!("host.id==h{}", h + 1), &net);
                s.spawn(move || {
                    d.ok(&[
                        "run",
                        "-d",
                        "--name",
                        name,
                        "--network",
                        net,
                        "--constraint",
                        &pin,
                        "bb",
                        "sleep",
                        "600",
                    ])
                });
            }
        });
        let mut ips: Vec<String> = racers
            .iter()
            .map(|(h, name)| endpoint(hosts[*h], name, &net).0)
            .chain([web_ip.clone(), cli_ip.clone()])
            .collect();
        ips.sort();
        ips.dedup();
        assert_eq!(ips.len(), 8, "an address given twice: {ips:?}");
        wait_until("h1 lists the pool's eight endpoints", || {
            inspect_net(&h1, &net)["containers"]
                .as_object()
                .unwrap()
                .len()
                == 8
        });
        std::thread::scope(|s| {
            for (h, name) in &racers {
                let d = hosts[*h];
                s.spawn(move || d.ok(&["rm", "-f", name]));
            }
        });
    }

    // A port published on h2 answers on h2's address only, also after h2's daemon is
    // killed and started again; the client reaches it by name meanwhile.
    let publ = format!("pub{}", &random_tag()[..4]);
    h2.ok(&[
        "run",
        "-d",
        "--name",
        &publ,
        "--network",
        &net,
        "--constraint",
        "host.id==h2",
        "-p",
        "18080:8080",
        "bb",
        "sh",
        "-c",
        "echo hi-pub > /tmp/i; httpd -f -p 8080 -h /tmp",
    ]);
    let (pub_ip, _) = endpoint(&h2, &publ, &net);
    // Asked from another member's namespace (the LAN's own has no address).
    let from = |d: &Daemon, addr: &str| {
        let out = d
            .in_netns("timeout")
            .args(["3", BUSYBOX, "wget", "-q", "-O", "-"])
            .arg(format!("http://{addr}:18080/i"))
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let hi_pub = (true, "hi-pub\n".to_string());
    wait_until("the published port on h2", || {
        from(&h1, &addrs[1]) == hi_pub
    });
    assert!(!from(&h3, &addrs[0]).0, "h1 answers a port published on h2");
    h2.kill9();
    h2.spawn();
    assert_eq!(from(&h1, &addrs[1]), hi_pub);
    let want_pub = (0, format!("{pub_ip}\nhi-pub\n"));
    wait_until("cli reaches pub by name after h2's restart", || {
        fetch(&publ, "i") == want_pub
    });
    assert_eq!(endpoint(&h2, &publ, &net).0, pub_ip);

    // web goes: h3 forgets it (entries and name); its flood entry to h2 stays (pub).
    h2.ok(&["rm", "-f", &web]);
    wait_until("h3 drops web's entries", || {
        let e = fdb(&h3, &vx3);
        !e.iter().any(|e| e["mac"] == web_mac.as_str())
            && e.iter()
                .any(|e| e["mac"] == "00:00:00:00:00:00" && e["dst"] == addrs[1].as_str())
            && !permanent_neighbours(&h3)
                .iter()
                .any(|e| e["dst"] == web_ip.as_str())
    });
    h2.ok(&["rm", "-f", &publ]);
    wait_until("h3 drops h2's flood entry", || {
        !fdb(&h3, &vx3).iter().any(|e| e.get("dst").is_some())
    });
    let (code, _) = exec(&h3, &[&cli, "nslookup", &web]);
    assert_ne!(code, 0, "web still resolves after its removal");

    // Remove is refused while cli has its address, naming its host.
    let e = h1.fails(&["network", "rm", &net]);
    assert!(e.contains("in use") && e.contains("h3"), "{e}");
    h3.ok(&["rm", "-f", &cli]);
    h1.ok(&["network", "rm", &net]);

    // Nothing is left on any member (the mirror's removal ends with the firewall).
    for d in [&h1, &h2, &h3] {
        let bridge_table = || {
            let out = netns_cmd(d, "nft", &["list", "tables"]).output().unwrap();
            String::from_utf8_lossy(&out.stdout)
                .contains(&format!("table bridge {}", d.nft_table()))
        };
        wait_until("the pool network gone from every member", || {
            vxlans(d).is_empty()
                && !bridge_table()
                && !d
                    .json(&["network", "ls"])
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|m| m["id"] == id.as_str())
        });
        let all = json_of(netns_cmd(d, "bridge", &["-j", "fdb", "show"]));
        assert!(
            !all.as_array()
                .unwrap()
                .iter()
                .any(|e| e.get("dst").is_some()),
            "{all}"
        );
        assert_eq!(permanent_neighbours(d), Vec::<Value>::new());
        assert!(
            !d.links().iter().any(|l| l.contains(&id[..7])),
            "{:?}",
            d.links()
        );
    }
    // The VNI is free again: the lowest free one is given to the next network.
    h2.ok(&["network", "create", &net]);
    assert_eq!(inspect_net(&h2, &net)["vni"].as_u64(), Some(vni));
    h2.ok(&["network", "rm", &net]);
    for d in [&h1, &h2, &h3] {
        wait_until("the second network gone", || vxlans(d).is_empty());
    }
}
