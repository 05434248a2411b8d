//! `pier network ...` and `pier port`.

use clap::{Args, Subcommand};
use pier_api::containers::ContainerInspect;
use pier_api::net::{BadCidr, BadCidr6};
use pier_api::networks::{NetworkConnect, NetworkCreate, NetworkDisconnect, NetworkInspect};
use pier_api::{Ipv4Address, Ipv4Net};
use pier_client::{encode_segment, Client};

use crate::containers::key_values;
use crate::output::{print, table, Format};
use crate::{fail, CliError};

#[derive(Debug, Subcommand)]
pub enum NetworkCommand {
    /// Create a bridge network.
    Create(CreateArgs),
    /// List networks.
    #[command(alias = "list")]
    Ls {
        /// Only show network IDs.
        #[arg(short, long)]
        quiet: bool,
    },
    /// Show networks in detail, with their running containers.
    Inspect {
        #[arg(required = true)]
        networks: Vec<String>,
    },
    /// Remove networks.
    #[command(alias = "remove")]
    Rm {
        #[arg(required = true)]
        networks: Vec<String>,
    },
    /// Remove every network no container uses.
    Prune {
        /// Do not ask for confirmation.
        #[arg(short, long)]
        force: bool,
    },
    /// Connect a container to a network.
    Connect {
        /// Static IPv4 address on the network.
        #[arg(long)]
        ip: Option<String>,
        /// Another name for the container on this network.
        #[arg(long)]
        alias: Vec<String>,
        network: String,
        container: String,
    },
    /// Disconnect a container from a network.
    Disconnect {
        #[arg(short, long)]
        force: bool,
        network: String,
        container: String,
    },
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// Driver: bridge (a network of this host) or overlay (one across the pool, on
    /// every member); by default overlay on a pool member, bridge elsewhere.
    #[arg(short, long)]
    driver: Option<String>,
    /// Subnet in CIDR form, e.g. 10.20.0.0/24.
    #[arg(long)]
    subnet: Option<String>,
    /// Gateway address (the bridge's), by default the subnet's first address.
    #[arg(long)]
    gateway: Option<String>,
    /// Allocate container addresses from this part of the subnet.
    #[arg(long)]
    ip_range: Option<String>,
    /// No traffic in or out of the network, only between its containers.
    #[arg(long)]
    internal: bool,
    /// Driver option: mtu=N, mode=routed, bridge_name=NAME.
    #[arg(short, long = "opt")]
    opt: Vec<String>,
    /// Label (KEY=VALUE).
    #[arg(long)]
    label: Vec<String>,
    /// Dual stack: containers get an IPv6 address too (give --subnet6).
    #[arg(long)]
    ipv6: bool,
    /// IPv6 subnet in CIDR form, e.g. fd00:20::/64.
    #[arg(long)]
    subnet6: Option<String>,
    /// IPv6 gateway address, by default the IPv6 subnet's first address.
    #[arg(long)]
    gateway6: Option<String>,
    /// Reserved address never given to a container (NAME=IP), as Docker's --aux-address.
    #[arg(long)]
    aux_address: Vec<String>,
    name: String,
}

fn parse_cidr(s: &str) -> Result<Ipv4Net, CliError> {
    s.parse().map_err(|e: BadCidr| fail(e.to_string()))
}

/// An IPv4 address given to `what` (`--ip`, `gateway`).
pub(crate) fn parse_ip(s: &str, what: &str) -> Result<Ipv4Address, CliError> {
    s.parse().map_err(|e| fail(format!("{what} {e}")))
}

pub async fn run(client: &Client, fmt: Format, cmd: NetworkCommand) -> Result<(), CliError> {
    match cmd {
        NetworkCommand::Create(a) => {
            let req = NetworkCreate {
                name: a.name,
                driver: a.driver,
                subnet: a.subnet.as_deref().map(parse_cidr).transpose()?,
                gateway: a
                    .gateway
                    .as_deref()
                    .map(|g| parse_ip(g, "gateway"))
                    .transpose()?,
                ip_range: a.ip_range.as_deref().map(parse_cidr).transpose()?,
                internal: a.internal,
                options: key_values(&a.opt, "--opt")?,
                labels: key_values(&a.label, "--label")?,
                ipv6: a.ipv6,
                subnet6: a
                    .subnet6
                    .as_deref()
                    .map(|s| s.parse().map_err(|e: BadCidr6| fail(e.to_string())))
                    .transpose()?,
                gateway6: a
                    .gateway6
                    .as_deref()
                    .map(|g| {
                        g.parse()
                            .map_err(|_| fail(format!("--gateway6 {g:?} is not an IPv6 address")))
                    })
                    .transpose()?,
                aux_addresses: key_values(&a.aux_address, "--aux-address")?
                    .into_iter()
                    .map(|(k, v)| {
                        let ip = v.parse().map_err(|_| {
                            fail(format!("--aux-address {k}={v}: {v:?} is not an IP address"))
                        })?;
                        Ok((k, ip))
                    })
                    .collect::<Result<_, CliError>>()?,
                ..Default::default()
            };
            let n: NetworkInspect = client.post("/v1/networks", &req).await?;
            print(fmt, &n, || n.id.clone())
        }
        NetworkCommand::Ls { quiet } => {
            let list: Vec<NetworkInspect> = client.get("/v1/networks").await?;
            if quiet {
                for n in &list {
                    crate::output::outln(&n.id[..12]);
                }
                return Ok(());
            }
            print(fmt, &list, || {
                let rows: Vec<Vec<String>> = list
                    .iter()
                    .map(|n| {
                        vec![
                            n.id[..12].to_string(),
                            n.name.clone(),
                            n.driver.clone(),
                            n.scope.as_str().to_string(),
                            n.subnet.to_string(),
                            format!("{:?}", n.mode).to_lowercase()
                                + if n.internal { ",internal" } else { "" },
                        ]
                    })
                    .collect();
                table(
                    &["NETWORK ID", "NAME", "DRIVER", "SCOPE", "SUBNET", "MODE"],
                    &rows,
                )
            })
        }
        NetworkCommand::Inspect { networks } => {
            let mut out = Vec::new();
            for n in networks {
                let v: NetworkInspect = client
                    .get(&format!("/v1/networks/{}", encode_segment(&n)))
                    .await?;
                out.push(v);
            }
            println!(
                "{}",
                serde_json::to_string_pretty(&out).expect("serializable")
            );
            Ok(())
        }
        NetworkCommand::Rm { networks } => {
            for n in networks {
                client
                    .delete_empty(&format!("/v1/networks/{}", encode_segment(&n)))
                    .await?;
                crate::output::item(&n, serde_json::json!({ "network": n }));
            }
            Ok(())
        }
        NetworkCommand::Prune { force } => {
            let warning =
                "This will remove all custom networks not used by at least one container.";
            if !crate::output::confirm(force, warning) {
                return Ok(());
            }
            let removed: Vec<String> = client.post("/v1/networks/prune", &()).await?;
            print(fmt, &removed, || removed.join("\n"))
        }
        NetworkCommand::Connect {
            ip,
            alias,
            network,
            container,
        } => {
            let req = NetworkConnect {
                container,
                ip: ip.as_deref().map(|i| parse_ip(i, "--ip")).transpose()?,
                aliases: alias,
                ..Default::default()
            };
            client
                .post_no_content(
                    &format!("/v1/networks/{}/connect", encode_segment(&network)),
                    &req,
                )
                .await?;
            Ok(())
        }
        NetworkCommand::Disconnect {
            force,
            network,
            container,
        } => {
            let req = NetworkDisconnect { container, force };
            client
                .post_no_content(
                    &format!("/v1/networks/{}/disconnect", encode_segment(&network)),
                    &req,
                )
                .await?;
            Ok(())
        }
    }
}

/// `pier port CONTAINER`: its published ports, as `80/tcp -> 0.0.0.0:8080`.
pub async fn port(client: &Client, container: &str) -> Result<(), CliError> {
    let c: ContainerInspect = client
        .get(&format!("/v1/containers/{}", encode_segment(container)))
        .await?;
    let fmt = crate::output::format();
    if fmt != Format::Table {
        return print(fmt, &c.ports, String::new);
    }
    for p in &c.ports {
        let ip = if p.host_ip.is_empty() {
            "0.0.0.0"
        } else {
            &p.host_ip
        };
        println!("{}/{} -> {ip}:{}", p.container_port, p.proto, p.host_port);
    }
    Ok(())
}
