//! Network types of the native API: bridge networks, the endpoints containers have on
//! them, and published ports.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv6Addr};

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::names::ProjectName;
use crate::net::{Ipv4Address, Ipv4Net, Ipv6Net, MacAddress};

/// Body of `POST /v1/networks` (`pier network create`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct NetworkCreate {
    pub name: String,
    /// `bridge` (a network of this host) or `overlay` (a network across the pool, on
    /// every member). None: `overlay` on a member of a pool, `bridge` elsewhere.
    pub driver: Option<String>,
    /// IPv4 CIDR; picked from a free private range when absent.
    #[schema(value_type = Option<String>)]
    pub subnet: Option<Ipv4Net>,
    /// The bridge's address; the subnet's first host when absent.
    #[schema(value_type = Option<String>)]
    pub gateway: Option<Ipv4Address>,
    /// CIDR inside the subnet that addresses are allocated from.
    #[schema(value_type = Option<String>)]
    pub ip_range: Option<Ipv4Net>,
    /// No traffic leaves or enters the network.
    pub internal: bool,
    /// `mtu=N`; `mode=routed` (or Docker's `com.docker.network.bridge.gateway_mode_ipv4=routed`)
    /// routes container addresses instead of NATing them; `bridge_name=NAME`.
    pub options: BTreeMap<String, String>,
    pub labels: BTreeMap<String, String>,
    /// Dual stack: containers get an IPv6 address of `subnet6` too.
    pub ipv6: bool,
    /// The IPv6 subnet (required with `ipv6`); kept but unused without it, as Docker does.
    #[schema(value_type = Option<String>)]
    pub subnet6: Option<Ipv6Net>,
    /// The bridge's IPv6 address; the subnet's first host when absent.
    #[schema(value_type = Option<String>)]
    pub gateway6: Option<Ipv6Addr>,
    /// IPv6 CIDR inside `subnet6` that addresses are allocated from.
    #[schema(value_type = Option<String>)]
    pub ip_range6: Option<Ipv6Net>,
    /// `--aux-address NAME=IP`: addresses (of either subnet) never handed out.
    #[schema(value_type = BTreeMap<String, String>)]
    pub aux_addresses: BTreeMap<String, IpAddr>,
    /// Options of the IPAM driver, kept and shown (`--ipam-opt`).
    pub ipam_options: BTreeMap<String, String>,
    /// Docker's `--attachable`, kept and shown (every Pier network takes any container).
    pub attachable: bool,
}

/// How a network's traffic reaches the outside.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum NetworkMode {
    /// Containers leave with the host's address (masquerade); only published ports come in.
    #[default]
    Nat,
    /// Container addresses are routed as they are, both ways.
    Routed,
}

/// Where a network exists.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum NetworkScope {
    /// On this host only (a bridge).
    #[default]
    Local,
    /// Across the pool: one VNI, one subnet and one address space on every member
    /// (a bridge and a VXLAN link on each).
    Pool,
}

impl NetworkScope {
    pub fn as_str(self) -> &'static str {
        match self {
            NetworkScope::Local => "local",
            NetworkScope::Pool => "pool",
        }
    }
}

/// A network as stored and as `pier network inspect` shows it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct NetworkInspect {
    pub id: String,
    pub name: String,
    pub project: ProjectName,
    pub driver: String,
    pub created: String,
    #[schema(value_type = String)]
    pub subnet: Ipv4Net,
    #[schema(value_type = String)]
    pub gateway: Ipv4Address,
    #[schema(value_type = Option<String>)]
    pub ip_range: Option<Ipv4Net>,
    pub internal: bool,
    pub mode: NetworkMode,
    pub mtu: u32,
    /// The Linux bridge carrying it.
    pub bridge: String,
    pub options: BTreeMap<String, String>,
    pub labels: BTreeMap<String, String>,
    /// Running containers on it, by container ID (filled in when inspected).
    #[serde(default)]
    pub containers: BTreeMap<String, Endpoint>,
    /// Dual stack: the bridge and every container have an address of `subnet6` too.
    #[serde(default)]
    pub ipv6: bool,
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub subnet6: Option<Ipv6Net>,
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub gateway6: Option<Ipv6Addr>,
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub ip_range6: Option<Ipv6Net>,
    /// Reserved addresses, never handed out.
    #[serde(default)]
    #[schema(value_type = BTreeMap<String, String>)]
    pub aux_addresses: BTreeMap<String, IpAddr>,
    #[serde(default)]
    pub ipam_options: BTreeMap<String, String>,
    #[serde(default)]
    pub attachable: bool,
    /// Local, or across the pool.
    #[serde(default)]
    pub scope: NetworkScope,
    /// A pool network's VXLAN network identifier.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vni: Option<u32>,
}

impl NetworkInspect {
    /// The IPv6 subnet in use: only on a dual-stack network.
    pub fn v6(&self) -> Option<Ipv6Net> {
        self.subnet6.filter(|_| self.ipv6)
    }
}

/// A container's place on one network.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(default)]
pub struct Endpoint {
    pub network_id: String,
    /// Container name, for listings.
    pub name: String,
    /// `--network-alias`: more names it answers to on this network.
    pub aliases: Vec<String>,
    /// `--ip`: the address asked for; allocated when absent.
    #[schema(value_type = Option<String>)]
    pub static_ip: Option<Ipv4Address>,
    /// `--mac-address`.
    #[schema(value_type = Option<String>)]
    pub static_mac: Option<MacAddress>,
    /// While the container runs: its address, prefix length, gateway, MAC and interface.
    #[schema(value_type = Option<String>)]
    pub ip_address: Option<Ipv4Address>,
    pub prefix_len: Option<u8>,
    #[schema(value_type = Option<String>)]
    pub gateway: Option<Ipv4Address>,
    #[schema(value_type = Option<String>)]
    pub mac_address: Option<MacAddress>,
    pub interface: Option<String>,
    /// `IPAMConfig.IPv6Address`: the IPv6 address asked for; allocated when absent.
    #[schema(value_type = Option<String>)]
    pub static_ip6: Option<Ipv6Addr>,
    /// While the container runs on a dual-stack network: its IPv6 address, prefix
    /// length and gateway.
    #[schema(value_type = Option<String>)]
    pub ip6_address: Option<Ipv6Addr>,
    pub prefix6_len: Option<u8>,
    #[schema(value_type = Option<String>)]
    pub gateway6: Option<Ipv6Addr>,
    /// Links, link-local addresses and driver options asked for on this network.
    #[serde(
        default,
        skip_serializing_if = "crate::networks::endpoint_options_empty"
    )]
    pub options: crate::containers::EndpointOptions,
    /// On a pool network: the host the endpoint is on (shown by inspect).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
}

fn endpoint_options_empty(o: &crate::containers::EndpointOptions) -> bool {
    *o == crate::containers::EndpointOptions::default()
}

/// A port published on the host (`-p 8080:80/tcp`), as bound while the container runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PortBinding {
    /// `tcp` or `udp`.
    pub proto: String,
    /// Empty for every host address.
    pub host_ip: String,
    pub host_port: u16,
    pub container_port: u16,
}

/// Body of `POST /v1/networks/{id}/connect`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct NetworkConnect {
    pub container: String,
    #[schema(value_type = Option<String>)]
    pub ip: Option<Ipv4Address>,
    pub aliases: Vec<String>,
    /// The IPv6 address asked for on a dual-stack network.
    #[schema(value_type = Option<String>)]
    pub ip6: Option<Ipv6Addr>,
    /// `--mac-address` on this network.
    #[schema(value_type = Option<String>)]
    pub mac_address: Option<MacAddress>,
    /// Links, link-local addresses and driver options of the endpoint.
    pub options: crate::containers::EndpointOptions,
}

/// Body of `POST /v1/networks/{id}/disconnect`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct NetworkDisconnect {
    pub container: String,
    pub force: bool,
}
