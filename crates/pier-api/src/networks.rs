//! Network types of the native API: bridge networks, the endpoints containers have on
//! them, and published ports.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::names::ProjectName;
use crate::net::{Ipv4Address, Ipv4Net, MacAddress};

/// Body of `POST /v1/networks` (`pier network create`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct NetworkCreate {
    pub name: String,
    /// `bridge` (the only driver so far; the default).
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
    /// Links, link-local addresses and driver options asked for on this network.
    #[serde(
        default,
        skip_serializing_if = "crate::networks::endpoint_options_empty"
    )]
    pub options: crate::containers::EndpointOptions,
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
