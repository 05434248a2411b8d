//! Docker's network shapes: a network as `docker network inspect` shows it (Docker's
//! predefined `host` and `none` too, which are modes of a container in Pier), and the
//! create and connect bodies, checked and mapped onto Pier's requests.

use std::collections::BTreeMap;
use std::net::Ipv6Addr;

use serde::Deserialize;
use serde_json::{json, Value};

use super::create::EndpointConfig;
use super::{Refused, Result};
use crate::containers::ContainerInspect;
use crate::networks::{NetworkCreate, NetworkInspect, NetworkScope};
use crate::{Ipv4Address, Ipv4Net, Ipv6Net};

pub const PREDEFINED: [&str; 2] = ["host", "none"];

pub fn predefined_json(name: &str) -> Value {
    let driver = if name == "none" { "null" } else { name };
    json!({
        "Name": name,
        "Id": super::derived_id(&["predefined network", name], 64),
        "Created": super::ZERO_TIME,
        "Scope": "local",
        "Driver": driver,
        "EnableIPv6": false,
        "IPAM": {"Driver": "default", "Options": null, "Config": []},
        "Internal": false,
        "Attachable": false,
        "Ingress": false,
        "ConfigFrom": {"Network": ""},
        "ConfigOnly": false,
        "Containers": {},
        "Options": {},
        "Labels": {},
    })
}

/// Finds a container's record by ID.
pub type FindContainer<'a> = dyn Fn(&str) -> Option<ContainerInspect> + 'a;

/// A network as Docker shows it; with `container` (which finds a container's record by
/// ID), its `Containers` are filled in.
pub fn network_json(n: &NetworkInspect, container: Option<&FindContainer<'_>>) -> Value {
    let aux = |v6: bool| -> Option<BTreeMap<&String, String>> {
        let m: BTreeMap<&String, String> = n
            .aux_addresses
            .iter()
            .filter(|(_, a)| a.is_ipv6() == v6)
            .map(|(k, a)| (k, a.to_string()))
            .collect();
        (!m.is_empty()).then_some(m)
    };
    let mut ipam = json!({"Subnet": n.subnet, "Gateway": n.gateway});
    if let Some(r) = &n.ip_range {
        ipam["IPRange"] = json!(r);
    }
    if let Some(a) = aux(false) {
        ipam["AuxiliaryAddresses"] = json!(a);
    }
    let mut config = vec![ipam];
    // The IPv6 pool as given (Docker shows one given without --ipv6 too).
    if let Some(s6) = n.subnet6 {
        let mut v6 = json!({"Subnet": s6});
        if let Some(r) = n.ip_range6 {
            v6["IPRange"] = json!(r);
        }
        if let Some(g) = n.gateway6 {
            v6["Gateway"] = json!(g);
        }
        if let Some(a) = aux(true) {
            v6["AuxiliaryAddresses"] = json!(a);
        }
        config.push(v6);
    }
    let ipam_options = if n.ipam_options.is_empty() {
        Value::Null
    } else {
        json!(n.ipam_options)
    };
    // Only the options given, as Docker shows them (compose compares them with its own).
    let mut options = n.options.clone();
    if n.name == super::DEFAULT_NETWORK {
        options.insert(
            "com.docker.network.bridge.default_bridge".into(),
            "true".into(),
        );
        options.insert("com.docker.network.bridge.name".into(), n.bridge.clone());
        options.insert("com.docker.network.driver.mtu".into(), n.mtu.to_string());
    }
    let mut containers = BTreeMap::new();
    if let Some(container) = container {
        for (id, ep) in &n.containers {
            let c = container(id);
            let name = c
                .as_ref()
                .map_or_else(|| ep.name.clone(), |c| c.name.clone());
            let mac = ep.mac_address.map(|m| m.to_string()).unwrap_or_default();
            let addr = match (&ep.ip_address, ep.prefix_len) {
                (Some(ip), Some(len)) => format!("{ip}/{len}"),
                (Some(ip), None) => ip.to_string(),
                _ => String::new(),
            };
            let addr6 = match (&ep.ip6_address, ep.prefix6_len) {
                (Some(ip), Some(len)) => format!("{ip}/{len}"),
                (Some(ip), None) => ip.to_string(),
                _ => String::new(),
            };
            let eid = c
                .map(|c| super::container::endpoint_json(&c, ep)["EndpointID"].clone())
                .unwrap_or(Value::Null);
            containers.insert(
                id.clone(),
                json!({"Name": name, "EndpointID": eid, "MacAddress": mac, "IPv4Address": addr, "IPv6Address": addr6}),
            );
        }
    }
    json!({
        "Name": n.name,
        "Id": n.id,
        "Created": n.created,
        "Scope": scope(n),
        "Driver": n.driver,
        "EnableIPv6": n.ipv6,
        "IPAM": {"Driver": "default", "Options": ipam_options, "Config": config},
        "Internal": n.internal,
        "Attachable": n.attachable,
        "Ingress": false,
        "ConfigFrom": {"Network": ""},
        "ConfigOnly": false,
        "Containers": containers,
        "Options": options,
        "Labels": n.labels,
    })
}

/// Docker's `Scope` of a network: `swarm` for one across the pool (as Docker's overlay
/// networks), `local` for the others.
pub fn scope(n: &NetworkInspect) -> &'static str {
    match n.scope {
        NetworkScope::Pool => "swarm",
        NetworkScope::Local => "local",
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct IpamPool {
    subnet: Option<String>,
    #[serde(rename = "IPRange")]
    ip_range: Option<String>,
    gateway: Option<String>,
    auxiliary_addresses: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct Ipam {
    driver: Option<String>,
    config: Option<Vec<IpamPool>>,
    options: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct CreateBody {
    name: Option<String>,
    driver: Option<String>,
    internal: Option<bool>,
    #[serde(rename = "IPAM")]
    ipam: Option<Ipam>,
    #[serde(rename = "EnableIPv6")]
    enable_ipv6: Option<bool>,
    options: Option<BTreeMap<String, String>>,
    labels: Option<BTreeMap<String, String>>,
    config_only: Option<bool>,
    ingress: Option<bool>,
    attachable: Option<bool>,
    scope: Option<String>,
}

/// Docker's answer to a swarm-only network when swarm is not active.
const NOT_A_MANAGER: &str = "This node is not a swarm manager. Use \"docker swarm init\" or \"docker swarm join\" to connect this node to swarm and try again.";

fn forbidden(m: &str) -> Refused {
    Refused {
        status: 403,
        message: m.into(),
    }
}

fn is_v6(p: &IpamPool) -> bool {
    [&p.subnet, &p.ip_range, &p.gateway]
        .iter()
        .find_map(|s| s.as_deref().filter(|s| !s.is_empty()))
        .is_some_and(|s| s.contains(':'))
}

impl CreateBody {
    /// The body as Pier's request; what Pier's networks cannot be is refused. An
    /// `overlay` network (or a `swarm` scoped one) is a network across the pool, made
    /// only on a member of one (`in_pool`); elsewhere it gets Docker's answers without
    /// swarm.
    pub fn into_request(self, in_pool: bool) -> Result<NetworkCreate> {
        let b = self;
        // Docker's rule: any name but the empty one.
        let name = b
            .name
            .filter(|n| !n.is_empty())
            .ok_or_else(|| Refused::bad_request("the network needs a Name"))?;
        if b.config_only.unwrap_or(false) {
            return Err(Refused::bad_request(
                "config-only networks are swarm features; pier does not do swarm mode",
            ));
        }
        let overlay = match b.driver.as_deref() {
            None | Some("") | Some("bridge") => false,
            Some("overlay") if in_pool => true,
            Some("overlay") => {
                return Err(Refused {
                    status: 503,
                    message: NOT_A_MANAGER.into(),
                })
            }
            Some(other) => {
                return Err(Refused::bad_request(format!(
                    "network driver {other:?} is not supported by pier: use bridge, or overlay in a pool"
                )))
            }
        };
        match b.scope.as_deref() {
            None | Some("") | Some("local") => {}
            Some("swarm") if overlay => {}
            Some("swarm") if in_pool => {
                return Err(Refused::bad_request(
                    "a swarm scoped network is an overlay network in pier: give Driver overlay",
                ))
            }
            Some("swarm") => {
                return Err(forbidden(
                    "cannot create a swarm scoped network when swarm is not active",
                ))
            }
            Some(_) => {
                return Err(Refused {
                    status: 503,
                    message: NOT_A_MANAGER.into(),
                })
            }
        }
        if b.ingress.unwrap_or(false) {
            return Err(forbidden(
                "Ingress network can only be global scope network",
            ));
        }
        let ipam = b.ipam.unwrap_or_default();
        if let Some(drv) = ipam
            .driver
            .as_deref()
            .filter(|d| !d.is_empty() && *d != "default")
        {
            return Err(Refused::bad_request(format!(
                "IPAM driver {drv:?} is not supported by pier: use the default"
            )));
        }
        let (v6, v4): (Vec<IpamPool>, Vec<IpamPool>) =
            ipam.config.unwrap_or_default().into_iter().partition(is_v6);
        if v4.len() > 1 || v6.len() > 1 {
            return Err(forbidden(
                "bridge driver doesn't support multiple subnets: give at most one IPv4 and one IPv6 --subnet",
            ));
        }
        let pool = v4.into_iter().next().unwrap_or_default();
        let pool6 = v6.into_iter().next().unwrap_or_default();
        let mut aux_addresses = BTreeMap::new();
        for (k, a) in pool
            .auxiliary_addresses
            .iter()
            .chain(pool6.auxiliary_addresses.iter())
            .flatten()
        {
            let ip = a.parse().map_err(|_| {
                Refused::bad_request(format!(
                    "non parsable secondary ip address ({k}:{a}) passed for network {name}: give an IP address such as 10.1.0.5"
                ))
            })?;
            aux_addresses.insert(k.clone(), ip);
        }
        let cidr = |s: Option<String>| -> Result<Option<Ipv4Net>> {
            s.filter(|s| !s.is_empty())
                .map(|s| s.parse::<Ipv4Net>())
                .transpose()
                .map_err(|e| Refused::bad_request(e.to_string()))
        };
        let cidr6 = |s: Option<String>| -> Result<Option<Ipv6Net>> {
            s.filter(|s| !s.is_empty())
                .map(|s| s.parse::<Ipv6Net>())
                .transpose()
                .map_err(|e| Refused::bad_request(e.to_string()))
        };
        let gateway = pool
            .gateway
            .filter(|s| !s.is_empty())
            .map(|g| g.parse::<Ipv4Address>())
            .transpose()
            .map_err(|e| Refused::bad_request(format!("gateway {e}")))?;
        let gateway6 = pool6
            .gateway
            .filter(|s| !s.is_empty())
            .map(|g| {
                g.parse::<Ipv6Addr>().map_err(|_| {
                    Refused::bad_request(format!(
                        "gateway {g:?} is not an IPv6 address (such as fd00:1::1)"
                    ))
                })
            })
            .transpose()?;
        Ok(NetworkCreate {
            name,
            driver: Some(if overlay { "overlay" } else { "bridge" }.into()),
            subnet: cidr(pool.subnet)?,
            gateway,
            ip_range: cidr(pool.ip_range)?,
            internal: b.internal.unwrap_or(false),
            options: b.options.unwrap_or_default(),
            labels: b.labels.unwrap_or_default(),
            ipv6: b.enable_ipv6.unwrap_or(false),
            subnet6: cidr6(pool6.subnet)?,
            gateway6,
            ip_range6: cidr6(pool6.ip_range)?,
            aux_addresses,
            ipam_options: ipam.options.unwrap_or_default(),
            attachable: b.attachable.unwrap_or(false),
        })
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct ConnectBody {
    pub container: String,
    pub endpoint_config: Option<EndpointConfig>,
    pub force: Option<bool>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(v: Value) -> CreateBody {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn network_bodies_map_onto_pier_requests() {
        let r = body(json!({"Name": "n", "IPAM": {"Config": [{"Subnet": "10.9.0.0/24", "Gateway": "10.9.0.1"}]}, "Labels": {"a": "b"}}))
            .into_request(false)
            .unwrap();
        assert_eq!(r.name, "n");
        assert_eq!(r.subnet.unwrap().to_string(), "10.9.0.0/24");
        assert_eq!(r.gateway.unwrap().to_string(), "10.9.0.1");
        assert_eq!(r.labels["a"], "b");
        let refused = |v: Value| body(v).into_request(false).unwrap_err().message;
        assert!(refused(json!({})).contains("needs a Name"));
        assert!(refused(json!({"Name": "n", "Driver": "macvlan"})).contains("use bridge"));
        assert!(refused(json!({"Name": "n", "Driver": "overlay"})).contains("swarm manager"));
        assert!(refused(json!({"Name": "n", "IPAM": {"Config": [{}, {}]}})).contains("one IPv4"));
        assert!(refused(json!({"Name": "n", "Ingress": true})).contains("Ingress"));
        assert!(refused(json!({"Name": "n", "Scope": "swarm"})).contains("swarm"));
        // In a pool, overlay (swarm scope or not) is a pool network; bridge stays local.
        let pool = |v: Value| body(v).into_request(true);
        let r = pool(json!({"Name": "n", "Driver": "overlay", "Scope": "swarm"})).unwrap();
        assert_eq!(r.driver.as_deref(), Some("overlay"));
        assert_eq!(
            pool(json!({"Name": "n"})).unwrap().driver.as_deref(),
            Some("bridge")
        );
        assert!(pool(json!({"Name": "n", "Scope": "swarm"}))
            .unwrap_err()
            .message
            .contains("Driver overlay"));
        let r = body(json!({"Name": "a b", "EnableIPv6": true, "Attachable": true,
            "IPAM": {"Options": {"o": "1"}, "Config": [
                {"Subnet": "2001:389::/64", "Gateway": "2001:389::ffff", "AuxiliaryAddresses": {"x": "2001:389::5"}},
                {"Subnet": "10.9.0.0/24", "AuxiliaryAddresses": {"y": "10.9.0.5"}}]}}))
        .into_request(false)
        .unwrap();
        assert_eq!(r.name, "a b");
        assert!(r.ipv6 && r.attachable);
        assert_eq!(r.subnet.unwrap().to_string(), "10.9.0.0/24");
        assert_eq!(r.subnet6.unwrap().to_string(), "2001:389::/64");
        assert_eq!(r.gateway6.unwrap().to_string(), "2001:389::ffff");
        assert_eq!(r.aux_addresses.len(), 2);
        assert_eq!(r.ipam_options["o"], "1");
    }

    #[test]
    fn predefined_networks_and_the_default_bridge_show_as_dockers() {
        let v = predefined_json("none");
        assert_eq!(v["Driver"], "null");
        assert_eq!(v["Id"].as_str().unwrap().len(), 64);
        let n: NetworkInspect = serde_json::from_value(json!({
            "id": "i", "name": "bridge", "project": "default", "driver": "bridge",
            "subnet": "10.0.0.0/24", "gateway": "10.0.0.1", "bridge": "pier0", "mtu": 1500,
            "created": "", "ip_range": null, "internal": false, "mode": "nat",
            "options": {}, "labels": {},
        }))
        .unwrap();
        let v = network_json(&n, None);
        assert_eq!(
            v["Options"]["com.docker.network.bridge.default_bridge"],
            "true"
        );
        assert_eq!(v["Options"]["com.docker.network.driver.mtu"], "1500");
        assert_eq!(v["Containers"], json!({}));
        assert_eq!(v["Scope"], "local");
        let pool = NetworkInspect {
            scope: NetworkScope::Pool,
            vni: Some(4096),
            ..n
        };
        assert_eq!(network_json(&pool, None)["Scope"], "swarm");
    }
}
