//! Pier's nftables tables: egress NAT, published ports, isolation between networks,
//! internal and routed networks; `ip TABLE` for IPv4 and, while a dual-stack network
//! exists, `ip6 TABLE` with the same rules for IPv6 (NAT66 out, published ports in).
//! While a network spans the pool, `bridge TABLE` keeps the host itself off the
//! overlays: every host has the network's gateway (same address, same MAC) and DNS
//! server, so frames between the host and its containers never cross a VXLAN port
//! (which also keeps a bridge from seeing frames with its own MAC come in from a tunnel).
//! Overlay traffic between containers is bridged, and with `br_netfilter` seen by the
//! `ip` forward chain with input and output both the bridge, which the first rule of
//! each network accepts.
//!
//! The whole table is derived from the store's networks and port mappings and replaced
//! in one nftables transaction (`nft -j -f -`): it is always either the old table or
//! the new one, a crash cannot leave half a ruleset, and a restart rebuilds it from
//! the store. Only the table named here is ever touched; Docker's, Podman's and
//! everyone else's rules stay as they are.

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::process::{Command, Stdio};

use serde_json::{json, Value};

use crate::ipam::Ipv4Net;
use crate::{Error, Result, ToolFailure};
use pier_api::Ipv6Net;

/// A bridge network as the firewall sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FwNetwork {
    pub bridge: String,
    pub subnet: Ipv4Net,
    /// Its IPv6 subnet, on a dual-stack network.
    pub subnet6: Option<Ipv6Net>,
    /// No traffic in or out of the network except to its own members.
    pub internal: bool,
    /// Container addresses are routed, not NATed: reachable from outside as they are.
    pub routed: bool,
    /// Whether traffic leaving it is masqueraded (Docker's `enable_ip_masquerade`); a
    /// network that is not is still closed to traffic from outside.
    pub masquerade: bool,
    /// On a network across the pool: its VXLAN link (a port of `bridge`).
    pub overlay: Option<String>,
}

pub use pier_api::ports::Proto;

/// A published port: `host_ip:host_port -> container_ip:container_port`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FwPort {
    pub proto: Proto,
    /// Only traffic to this host address; all local addresses when None.
    pub host_ip: Option<IpAddr>,
    pub host_port: u16,
    pub container_ip: Ipv4Addr,
    /// The container's IPv6 address on a dual-stack network: a port published on every
    /// host address answers on the host's IPv6 addresses too, to it.
    pub container_ip6: Option<Ipv6Addr>,
    pub container_port: u16,
}

fn m(left: Value, right: Value) -> Value {
    json!({"match": {"op": "==", "left": left, "right": right}})
}

fn m_not(left: Value, right: Value) -> Value {
    json!({"match": {"op": "!=", "left": left, "right": right}})
}

fn meta(key: &str) -> Value {
    json!({"meta": {"key": key}})
}

fn payload(proto: &str, field: &str) -> Value {
    json!({"payload": {"protocol": proto, "field": field}})
}

fn prefix(addr: String, len: u8) -> Value {
    json!({"prefix": {"addr": addr, "len": len}})
}

fn ct(key: &str, right: Value) -> Value {
    json!({"match": {"op": "in", "left": {"ct": {"key": key}}, "right": right}})
}

/// The address family one table is for: `ip` (IPv4) or `ip6`.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Family {
    V4,
    V6,
}

impl Family {
    fn name(self) -> &'static str {
        match self {
            Family::V4 => "ip",
            Family::V6 => "ip6",
        }
    }
}

/// The nftables JSON commands that replace table `ip TABLE` with the rules for
/// `nets` and `ports`; the empty chain `owner` marks whose table it is
/// ([`crate::names::HostNames::owner_chain`]). Dual-stack networks get the same rules
/// for IPv6 in table `ip6 TABLE`, which is deleted while there is none.
pub fn ruleset(table: &str, owner: &str, nets: &[FwNetwork], ports: &[FwPort]) -> Value {
    let mut cmds = family_cmds(Family::V4, table, owner, nets, ports);
    let t6 = json!({"family": "ip6", "name": table});
    if nets.iter().any(|n| n.subnet6.is_some()) {
        cmds.extend(family_cmds(Family::V6, table, owner, nets, ports));
    } else {
        cmds.extend([
            json!({"add": {"table": t6}}),
            json!({"delete": {"table": t6}}),
        ]);
    }
    cmds.extend(bridge_cmds(table, owner, nets));
    json!({"nftables": cmds})
}

/// Table `bridge TABLE` while some network has a VXLAN link: frames from a VXLAN port
/// to the host, and from the host out of one, are dropped. Deleted while there is none.
fn bridge_cmds(table: &str, owner: &str, nets: &[FwNetwork]) -> Vec<Value> {
    let t = json!({"family": "bridge", "name": table});
    let vxlans: Vec<Value> = nets
        .iter()
        .filter_map(|n| n.overlay.as_deref())
        .map(|v| json!(v))
        .collect();
    if vxlans.is_empty() {
        return vec![
            json!({"add": {"table": t}}),
            json!({"delete": {"table": t}}),
        ];
    }
    let chain = |name: &str| {
        json!({"add": {"chain": {"family": "bridge", "table": table, "name": name,
            "type": "filter", "hook": name, "prio": 0, "policy": "accept"}}})
    };
    let drop = |chain: &str, key: &str| {
        json!({"add": {"rule": {"family": "bridge", "table": table, "chain": chain, "expr": [
            m(meta(key), json!({"set": vxlans.clone()})),
            json!({"drop": null}),
        ]}}})
    };
    vec![
        json!({"add": {"table": t}}),
        json!({"delete": {"table": t}}),
        json!({"add": {"table": t}}),
        chain("input"),
        chain("output"),
        json!({"add": {"chain": {"family": "bridge", "table": table, "name": owner}}}),
        drop("input", "iifname"),
        drop("output", "oifname"),
    ]
}

fn family_cmds(
    fam: Family,
    table: &str,
    owner: &str,
    nets: &[FwNetwork],
    ports: &[FwPort],
) -> Vec<Value> {
    let family = fam.name();
    let t = json!({"family": family, "name": table});
    let mut cmds = vec![
        // `add` then `delete` then `add`: works whether or not the table exists, in one
        // transaction.
        json!({"add": {"table": t}}),
        json!({"delete": {"table": t}}),
        json!({"add": {"table": t}}),
    ];
    let chain = |name: &str, typ: &str, hook: &str, prio: i32| {
        json!({"add": {"chain": {"family": family, "table": table, "name": name,
            "type": typ, "hook": hook, "prio": prio, "policy": "accept"}}})
    };
    let local = json!({"match": {"op": "==", "left": {"fib": {"result": "type", "flags": ["daddr"]}}, "right": "local"}});
    // Chains first: rules refer to them.
    cmds.extend([
        chain("prerouting", "nat", "prerouting", -100),
        chain("output", "nat", "output", -100),
        chain("postrouting", "nat", "postrouting", 100),
        chain("forward", "filter", "forward", 0),
        json!({"add": {"chain": {"family": family, "table": table, "name": "ports"}}}),
        json!({"add": {"chain": {"family": family, "table": table, "name": owner}}}),
    ]);
    let subnet_of = |n: &FwNetwork| match fam {
        Family::V4 => Some(prefix(n.subnet.network().to_string(), n.subnet.prefix())),
        Family::V6 => n
            .subnet6
            .map(|s| prefix(s.network().to_string(), s.prefix())),
    };
    let mut rule_cmds: Vec<Value> = Vec::new();
    {
        let mut rule = |chain: &str, expr: Vec<Value>| {
            rule_cmds.push(json!({"add": {"rule": {"family": family, "table": table, "chain": chain, "expr": expr}}}));
        };
        // Published ports answer on every local address, from outside and from the host.
        for c in ["prerouting", "output"] {
            rule(c, vec![local.clone(), json!({"jump": {"target": "ports"}})]);
        }
        for p in ports {
            let mut e = Vec::new();
            let to = match fam {
                Family::V4 => match p.host_ip {
                    None => p.container_ip.to_string(),
                    Some(IpAddr::V4(ip)) => {
                        e.push(m(payload("ip", "daddr"), json!(ip.to_string())));
                        p.container_ip.to_string()
                    }
                    Some(IpAddr::V6(_)) => continue,
                },
                // A port bound to an IPv4 host address only is not published on IPv6.
                Family::V6 => match (p.host_ip, p.container_ip6) {
                    (None, Some(ip6)) => ip6.to_string(),
                    (Some(IpAddr::V6(ip)), Some(ip6)) => {
                        e.push(m(payload("ip6", "daddr"), json!(ip.to_string())));
                        ip6.to_string()
                    }
                    _ => continue,
                },
            };
            e.push(m(payload(p.proto.as_str(), "dport"), json!(p.host_port)));
            e.push(json!({"dnat": {"addr": to, "port": p.container_port}}));
            rule("ports", e);
        }
        let bridges: Vec<Value> = nets.iter().map(|n| json!(n.bridge)).collect();
        rule(
            "forward",
            vec![
                ct("state", json!(["established", "related"])),
                json!({"accept": null}),
            ],
        );
        for n in nets {
            let iif = || m(meta("iifname"), json!(n.bridge));
            let oif = || m(meta("oifname"), json!(n.bridge));
            // Members of one network talk freely (seen here when br_netfilter is loaded).
            rule("forward", vec![iif(), oif(), json!({"accept": null})]);
            if n.internal {
                rule("forward", vec![iif(), json!({"drop": null})]);
                rule("forward", vec![oif(), json!({"drop": null})]);
                continue;
            }
            // No network reaches another.
            if bridges.len() > 1 {
                rule(
                    "forward",
                    vec![
                        iif(),
                        m(meta("oifname"), json!({"set": bridges.clone()})),
                        json!({"drop": null}),
                    ],
                );
            }
            // In from outside: published ports always, anything else only when routed.
            rule(
                "forward",
                vec![oif(), ct("status", json!("dnat")), json!({"accept": null})],
            );
            if !n.routed {
                rule("forward", vec![oif(), json!({"drop": null})]);
            }
            let Some(subnet) = subnet_of(n) else {
                continue;
            };
            // Out: NATed to the host's address unless routed.
            if !n.routed && n.masquerade {
                rule(
                    "postrouting",
                    vec![
                        m(payload(family, "saddr"), subnet.clone()),
                        m_not(meta("oifname"), json!(n.bridge)),
                        json!({"masquerade": null}),
                    ],
                );
            }
            // Hairpin: a member reaching a port published by a member of its own network.
            rule(
                "postrouting",
                vec![
                    ct("status", json!("dnat")),
                    m(payload(family, "saddr"), subnet),
                    oif(),
                    json!({"masquerade": null}),
                ],
            );
            // The host reaching a published port through 127.0.0.1 (IPv6 has no such
            // route from ::1).
            if fam == Family::V4 {
                rule(
                    "postrouting",
                    vec![
                        m(
                            payload("ip", "saddr"),
                            json!({"prefix": {"addr": "127.0.0.0", "len": 8}}),
                        ),
                        oif(),
                        json!({"masquerade": null}),
                    ],
                );
            }
        }
    }
    cmds.extend(rule_cmds);
    cmds
}

/// Replaces Pier's table with the rules for `nets` and `ports`.
pub fn apply(table: &str, owner: &str, nets: &[FwNetwork], ports: &[FwPort]) -> Result<()> {
    run(table, &ruleset(table, owner, nets, ports), false)
}

/// `nft -j ARGS` and its JSON output, or None when nft fails (a missing table).
fn list(args: &[&str]) -> Option<Value> {
    let out = Command::new("nft")
        .arg("-j")
        .args(args)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    serde_json::from_slice(&out.stdout).ok()
}

/// The owner marks (chains named by `is_mark`) in `table`; empty when the table is
/// missing or has none (a table made before marks existed).
pub fn owner_marks(table: &str, is_mark: fn(&str) -> bool) -> Vec<String> {
    let Some(doc) = list(&["list", "chains", "ip"]) else {
        return Vec::new();
    };
    items(&doc, "chain")
        .filter(|c| c["table"] == table)
        .filter_map(|c| c["name"].as_str())
        .filter(|n| is_mark(n))
        .map(String::from)
        .collect()
}

fn items<'a>(doc: &'a Value, kind: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
    doc["nftables"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(move |o| o.get(kind))
}

/// The ports published through the `ports` chains of the tables `pick` names (other
/// Pier daemons'), read from their rules as [`ruleset`] writes them, all in one
/// listing: (table, protocol, host address, host port).
pub fn published_ports(pick: impl Fn(&str) -> bool) -> Vec<(String, Proto, Option<IpAddr>, u16)> {
    let mut out = Vec::new();
    for family in ["ip", "ip6"] {
        if let Some(doc) = list(&["list", "ruleset", family]) {
            ports_of_rules(&doc, &pick, &mut out);
        }
    }
    out.sort();
    out.dedup();
    out
}

/// The published ports of one family's listing, into `out`.
fn ports_of_rules(
    doc: &Value,
    pick: &impl Fn(&str) -> bool,
    out: &mut Vec<(String, Proto, Option<IpAddr>, u16)>,
) {
    for r in items(doc, "rule") {
        let Some(table) = r["table"].as_str().filter(|t| pick(t)) else {
            continue;
        };
        if r["chain"] != "ports" {
            continue;
        }
        let (mut proto, mut ip, mut port) = (None, None, None);
        for e in r["expr"].as_array().into_iter().flatten() {
            let Some(mt) = e.get("match") else { continue };
            let left = &mt["left"]["payload"];
            match (left["protocol"].as_str(), left["field"].as_str()) {
                (Some("ip" | "ip6"), Some("daddr")) => {
                    ip = mt["right"].as_str().and_then(|a| a.parse().ok());
                }
                (Some(p @ ("tcp" | "udp")), Some("dport")) => {
                    proto = Some(if p == "tcp" { Proto::Tcp } else { Proto::Udp });
                    port = mt["right"].as_u64().and_then(|p| u16::try_from(p).ok());
                }
                _ => {}
            }
        }
        if let (Some(proto), Some(port)) = (proto, port) {
            out.push((table.to_string(), proto, ip, port));
        }
    }
}

/// Deletes Pier's tables (if they exist).
pub fn delete(table: &str) -> Result<()> {
    let t = json!({"family": "ip", "name": table});
    let t6 = json!({"family": "ip6", "name": table});
    let tb = json!({"family": "bridge", "name": table});
    run(
        table,
        &json!({"nftables": [{"add": {"table": t}}, {"delete": {"table": t}}, {"add": {"table": t6}}, {"delete": {"table": t6}}, {"add": {"table": tb}}, {"delete": {"table": tb}}]}),
        false,
    )
}

/// Whether `table` exists in the calling process's network namespace: its `ip` table,
/// or its `bridge` table (left alone, it would still keep the host off the overlays).
pub fn exists(table: &str) -> bool {
    ["ip", "bridge"].iter().any(|family| {
        Command::new("nft")
            .args(["list", "table", family, table])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    })
}

/// Feeds `doc` (commands on `table`) to `nft -j -f -`; with `check`, nft only validates
/// it (`-c`).
fn run(table: &str, doc: &Value, check: bool) -> Result<()> {
    let mut child = Command::new("nft")
        .args(if check {
            &["-c", "-j", "-f", "-"][..]
        } else {
            &["-j", "-f", "-"][..]
        })
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| Error::Spawn {
            tool: "nft",
            package: "nftables",
            source,
        })?;
    let body = doc.to_string();
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(body.as_bytes())
            .map_err(|source| Error::Pipe {
                op: "write to",
                tool: "nft",
                source,
            })?;
    }
    let out = child.wait_with_output().map_err(|source| Error::Pipe {
        op: "wait for",
        tool: "nft",
        source,
    })?;
    if !out.status.success() {
        return Err(Error::Nft {
            table: table.to_string(),
            source: ToolFailure {
                status: out.status,
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            },
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[ignore = "root tier: needs root; scripts/test.sh runs it (--run-ignored all)"]
    fn ruleset_shape() {
        let nets = vec![
            FwNetwork {
                bridge: "pier0".into(),
                subnet: "10.88.0.0/16".parse().unwrap(),
                subnet6: Some("fd00:88::/64".parse().unwrap()),
                internal: false,
                routed: false,
                masquerade: true,
                overlay: None,
            },
            FwNetwork {
                bridge: "pier-int".into(),
                subnet: "10.89.0.0/24".parse().unwrap(),
                subnet6: None,
                internal: true,
                routed: false,
                masquerade: true,
                overlay: None,
            },
        ];
        let ports = vec![FwPort {
            proto: Proto::Tcp,
            host_ip: None,
            host_port: 8080,
            container_ip: "10.88.0.2".parse().unwrap(),
            container_ip6: Some("fd00:88::2".parse().unwrap()),
            container_port: 80,
        }];
        let doc = ruleset("pier", "root_0123456789abcdef", &nets, &ports);
        let text = doc.to_string();
        // The table is replaced, never flushed in place, and no other table is named.
        let cmds = doc["nftables"].as_array().unwrap();
        assert_eq!(
            cmds[1],
            json!({"delete": {"table": {"family": "ip", "name": "pier"}}})
        );
        assert!(cmds
            .iter()
            .all(|c| c.to_string().contains("\"table\":\"pier\"")
                || c.to_string().contains("\"name\":\"pier\"")));
        // The dual-stack network is NATed (NAT66) and its port published on IPv6 too.
        assert!(text.contains(r#"{"dnat":{"addr":"fd00:88::2","port":80}}"#));
        assert!(cmds.iter().any(|c| c["add"]["rule"]["family"] == "ip6"
            && c.to_string().contains("fd00:88::")
            && c.to_string().contains("masquerade")));
        assert!(text.contains(r#"{"dnat":{"addr":"10.88.0.2","port":80}}"#));
        // The internal network gets no masquerade; the NAT one does.
        // The NAT network is masqueraded on the way out; the internal one is not, and
        // everything in or out of it is dropped.
        let rules: Vec<(String, String)> = cmds
            .iter()
            .filter_map(|c| c["add"]["rule"].as_object())
            .filter(|r| r["family"] == "ip")
            .map(|r| {
                (
                    r["chain"].as_str().unwrap().to_string(),
                    r["expr"].to_string(),
                )
            })
            .collect();
        let has = |chain: &str, parts: &[&str]| {
            rules
                .iter()
                .any(|(c, e)| c == chain && parts.iter().all(|p| e.contains(p)))
        };
        assert!(has("postrouting", &["10.88.0.0", "\"!=\"", "masquerade"]));
        assert!(!has("postrouting", &["10.89.0.0", "\"!=\"", "masquerade"]));
        assert!(has("forward", &["iifname", "pier-int", "drop"]));
        assert!(has("forward", &["oifname", "pier-int", "drop"]));
        assert!(has("forward", &["iifname", "\"pier0\"", "set", "drop"]));
        assert!(has("ports", &["8080", "dnat"]));
        // No overlay, no bridge table (deleted if one was there).
        let bridge: Vec<&Value> = cmds
            .iter()
            .filter(|c| c.to_string().contains("\"bridge\""))
            .collect();
        assert_eq!(
            bridge,
            [
                &json!({"add": {"table": {"family": "bridge", "name": "pier"}}}),
                &json!({"delete": {"table": {"family": "bridge", "name": "pier"}}}),
            ]
        );
        // And nftables itself accepts it (check mode: nothing is changed).
        run("pier", &doc, true).unwrap();
    }

    fn pool_net(bridge: &str, subnet: &str, vxlan: &str) -> FwNetwork {
        FwNetwork {
            bridge: bridge.into(),
            subnet: subnet.parse().unwrap(),
            subnet6: None,
            internal: false,
            routed: false,
            masquerade: true,
            overlay: Some(vxlan.into()),
        }
    }

    /// The `(chain, expr)` of every rule of `family` in `doc`, in order.
    fn rules_of(doc: &Value, family: &str) -> Vec<(String, String)> {
        doc["nftables"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|c| c["add"]["rule"].as_object())
            .filter(|r| r["family"] == family)
            .map(|r| {
                (
                    r["chain"].as_str().unwrap().to_string(),
                    r["expr"].to_string(),
                )
            })
            .collect()
    }

    #[test]
    fn overlays_get_a_bridge_table_that_keeps_the_host_off_them() {
        let nets = vec![
            pool_net("pier-0a0a0a0a", "10.210.0.0/24", "pvx-0a0a0a0a"),
            pool_net("pier-0b0b0b0b", "10.210.1.0/24", "pvx-0b0b0b0b"),
            FwNetwork {
                overlay: None,
                ..pool_net("pier0", "10.88.0.0/16", "")
            },
        ];
        let doc = ruleset("pier_3fa0", "root_0123456789abcdef", &nets, &[]);
        let cmds = doc["nftables"].as_array().unwrap();
        let t = json!({"family": "bridge", "name": "pier_3fa0"});
        // Replaced whole, as the ip table, with the daemon's owner mark.
        let at = cmds
            .iter()
            .position(|c| c == &json!({"add": {"table": t}}))
            .unwrap();
        assert_eq!(cmds[at + 1], json!({"delete": {"table": t}}));
        assert_eq!(cmds[at + 2], json!({"add": {"table": t}}));
        assert!(cmds.iter().any(|c| c["add"]["chain"]["family"] == "bridge"
            && c["add"]["chain"]["name"] == "root_0123456789abcdef"));
        for (hook, key) in [("input", "iifname"), ("output", "oifname")] {
            let chain = cmds
                .iter()
                .find(|c| {
                    c["add"]["chain"]["family"] == "bridge" && c["add"]["chain"]["name"] == hook
                })
                .unwrap();
            assert_eq!(chain["add"]["chain"]["hook"], hook);
            assert_eq!(chain["add"]["chain"]["type"], "filter");
            let rules = rules_of(&doc, "bridge");
            let (_, expr) = rules.iter().find(|(c, _)| c == hook).unwrap();
            // Both VXLAN links, and no other interface.
            assert_eq!(
                expr,
                &json!([
                    {"match": {"op": "==", "left": {"meta": {"key": key}},
                        "right": {"set": ["pvx-0a0a0a0a", "pvx-0b0b0b0b"]}}},
                    {"drop": null}
                ])
                .to_string()
            );
        }
        assert_eq!(rules_of(&doc, "bridge").len(), 2);
        // Overlay traffic (bridged, seen with iif = oif = the bridge) is accepted before
        // anything of the network drops, and is never masqueraded.
        let ip = rules_of(&doc, "ip");
        let forward: Vec<&String> = ip
            .iter()
            .filter(|(c, _)| c == "forward")
            .map(|(_, e)| e)
            .collect();
        let same = r#"{"match":{"left":{"meta":{"key":"iifname"}},"op":"==","right":"pier-0a0a0a0a"}},{"match":{"left":{"meta":{"key":"oifname"}},"op":"==","right":"pier-0a0a0a0a"}},{"accept":null}"#;
        let first_accept = forward
            .iter()
            .position(|e| e.contains(same))
            .unwrap_or_else(|| panic!("no iif = oif accept in {forward:#?}"));
        let first_drop = forward
            .iter()
            .position(|e| e.contains("pier-0a0a0a0a") && e.contains("drop"))
            .unwrap();
        assert!(first_accept < first_drop);
        assert!(ip.iter().any(|(c, e)| c == "postrouting"
            && e.contains("10.210.0.0")
            && e.contains(r#""op":"!=","right":"pier-0a0a0a0a""#)
            && e.contains("masquerade")));
        // The last overlay gone, the bridge table goes.
        let doc = ruleset("pier_3fa0", "root_0123456789abcdef", &nets[2..], &[]);
        assert!(rules_of(&doc, "bridge").is_empty());
        assert!(doc["nftables"]
            .as_array()
            .unwrap()
            .contains(&json!({"delete": {"table": t}})));
    }

    #[test]
    #[ignore = "root tier: needs root; scripts/test.sh runs it (--run-ignored all)"]
    fn nftables_accepts_the_bridge_table() {
        let nets = vec![pool_net("pier-0a0a0a0a", "10.210.0.0/24", "pvx-0a0a0a0a")];
        run(
            "pier",
            &ruleset("pier", "root_0123456789abcdef", &nets, &[]),
            true,
        )
        .unwrap();
    }
}
