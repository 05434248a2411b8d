//! `pier cluster init/join/token/leave` and `pier host ls/inspect/cordon/uncordon/drain/evacuate/rm`: the pool's
//! membership, through the daemon's native API.

use std::collections::BTreeMap;

use clap::{Args, Subcommand};
use pier_api::cluster::{
    ClusterInit, ClusterJoin, ClusterLeave, HostInfo, HostMoves, JoinCommand, Joined, Left,
    TokenRequest,
};
use pier_client::{encode_segment, Client};

use crate::output::{human_size_binary, outln, print, table};
use crate::{fail, CliError, Format};

#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Make a pool of this host: its CA, an etcd member (unless --etcd), and a join command.
    Init(InitArgs),
    /// Make this host a member of the pool at ADDR with a token from `pier cluster token`.
    Join(JoinArgs),
    /// Print a new one-time join command.
    Token {
        /// How long the token works: seconds, or with a unit (`90s`, `30m`, `2h`); an
        /// hour by default.
        #[arg(long)]
        ttl: Option<String>,
    },
    /// Take this host out of its pool; it goes on as a host of its own with the instances
    /// made here outside the pool. Move the pool's instances off first (`pier host drain`).
    Leave {
        /// Leave although this host made the pool (no host can join after), or, when the
        /// pool's store cannot be reached, forget the pool on this host alone.
        #[arg(long)]
        force: bool,
    },
}

#[derive(Debug, Args)]
pub struct MemberArgs {
    /// The address other hosts reach this one at: IP or IP:PORT (the cluster port, 7443
    /// by default).
    #[arg(long)]
    pub advertise: Option<String>,
    /// This host's name in the pool (default: the machine's host name).
    #[arg(long)]
    pub name: Option<String>,
    /// A label of this host, KEY=VALUE (placement constraints match them); repeatable.
    #[arg(long = "label")]
    pub labels: Vec<String>,
}

#[derive(Debug, Args)]
pub struct InitArgs {
    #[command(flatten)]
    pub member: MemberArgs,
    /// Keep the pool in this existing etcd cluster (client URLs, comma-separated) instead
    /// of running an etcd member here.
    #[arg(long, value_delimiter = ',')]
    pub etcd: Vec<String>,
}

#[derive(Debug, Args)]
pub struct JoinArgs {
    /// A member's cluster address, IP[:PORT], as `pier cluster init` printed it.
    pub addr: String,
    /// The join token (PJ1....).
    pub token: String,
    #[command(flatten)]
    pub member: MemberArgs,
}

#[derive(Debug, Subcommand)]
pub enum HostCommand {
    /// List the pool's hosts.
    #[command(alias = "list")]
    Ls,
    /// Show a host in detail.
    Inspect {
        #[arg(value_name = "HOST")]
        target: String,
    },
    /// Stop placing new instances on a host (it keeps its instances).
    Cordon {
        #[arg(value_name = "HOST")]
        target: String,
    },
    /// Let a cordoned host take new instances again.
    Uncordon {
        #[arg(value_name = "HOST")]
        target: String,
    },
    /// Cordon a host and move its instances that have a restart policy to other hosts.
    Drain {
        #[arg(value_name = "HOST")]
        target: String,
    },
    /// Move a down host's instances that have a restart policy to other hosts.
    Evacuate {
        #[arg(value_name = "HOST")]
        target: String,
    },
    /// Remove a down host from the pool.
    Rm {
        /// Remove it even if it is up or has instances.
        #[arg(short, long)]
        force: bool,
        /// The host (its name in the pool).
        #[arg(value_name = "HOST")]
        target: String,
    },
}

fn labels(given: &[String]) -> Result<BTreeMap<String, String>, CliError> {
    given
        .iter()
        .map(|l| match l.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
            _ => Err(fail(format!("bad label {l:?}: give KEY=VALUE"))),
        })
        .collect()
}

/// `N`, `Ns`, `Nm` or `Nh`, in seconds.
fn parse_ttl(s: &str) -> Result<u64, CliError> {
    let (n, unit) = match s.char_indices().last() {
        Some((i, 's')) => (&s[..i], 1),
        Some((i, 'm')) => (&s[..i], 60),
        Some((i, 'h')) => (&s[..i], 3600),
        _ => (s, 1),
    };
    n.parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(unit))
        .ok_or_else(|| {
            fail(format!(
                "bad --ttl {s:?}: give seconds, or e.g. 90s, 30m, 2h"
            ))
        })
}

fn print_join(fmt: Format, c: &JoinCommand, intro: &str) -> Result<(), CliError> {
    print(fmt, c, || {
        format!(
            "{intro}\nTo add a host to pool {}, run on it (the token works once, for an hour):\n\n    {}\n",
            c.cluster_id, c.command
        )
    })
}

pub async fn cluster(client: &Client, fmt: Format, cmd: ClusterCommand) -> Result<(), CliError> {
    match cmd {
        ClusterCommand::Init(a) => {
            let req = ClusterInit {
                advertise: a.member.advertise,
                etcd: a.etcd,
                name: a.member.name,
                labels: labels(&a.member.labels)?,
            };
            let c: JoinCommand = client.post("/v1/cluster/init", &req).await?;
            let intro = format!("Made pool {}; this host is {} in it.", c.cluster_id, c.host);
            print_join(fmt, &c, &intro)
        }
        ClusterCommand::Join(a) => {
            let req = ClusterJoin {
                addr: a.addr,
                token: a.token,
                advertise: a.member.advertise,
                name: a.member.name,
                labels: labels(&a.member.labels)?,
            };
            let j: Joined = client.post("/v1/cluster/join", &req).await?;
            print(fmt, &j, || {
                format!("This host joined pool {} as {}.", j.cluster_id, j.host)
            })
        }
        ClusterCommand::Token { ttl } => {
            let req = TokenRequest {
                ttl_secs: ttl.as_deref().map(parse_ttl).transpose()?,
            };
            let c: JoinCommand = client.post("/v1/cluster/tokens", &req).await?;
            print(fmt, &c, || c.command.clone())
        }
        ClusterCommand::Leave { force } => {
            let l: Left = client
                .post("/v1/cluster/leave", &ClusterLeave { force })
                .await?;
            print(fmt, &l, || {
                if l.dissolved {
                    format!(
                        "This host ({}) was the last of pool {}: the pool is gone.",
                        l.host, l.cluster_id
                    )
                } else if l.forgotten_locally {
                    format!("This host forgot pool {} (its store was unreachable); remove it there with `pier host rm {} --force`.", l.cluster_id, l.host)
                } else {
                    format!("This host ({}) left pool {}.", l.host, l.cluster_id)
                }
            })
        }
    }
}

fn cpus(millis: u64) -> String {
    if millis.is_multiple_of(1000) {
        (millis / 1000).to_string()
    } else {
        format!("{:.2}", millis as f64 / 1000.0)
    }
}

fn ago(at: Option<u64>) -> String {
    let Some(at) = at else {
        return "-".into();
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    format!("{}s ago", now.saturating_sub(at))
}

fn labels_text(l: &BTreeMap<String, String>) -> String {
    if l.is_empty() {
        return "-".into();
    }
    l.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

fn host_rows(hosts: &[HostInfo]) -> String {
    let rows: Vec<Vec<String>> = hosts
        .iter()
        .map(|h| {
            vec![
                h.id.clone(),
                h.state.clone(),
                h.address.clone().unwrap_or_else(|| "-".into()),
                format!(
                    "{}/{}",
                    cpus(h.allocated.cpu_millis),
                    cpus(h.capacity.cpu_millis)
                ),
                format!(
                    "{}/{}",
                    human_size_binary(h.allocated.memory_bytes),
                    human_size_binary(h.capacity.memory_bytes)
                ),
                h.instances.to_string(),
                if h.etcd_member { "yes" } else { "no" }.into(),
                labels_text(&h.labels),
            ]
        })
        .collect();
    table(
        &[
            "HOST",
            "STATE",
            "ADDRESS",
            "CPUS",
            "MEMORY",
            "INSTANCES",
            "ETCD",
            "LABELS",
        ],
        &rows,
    )
}

fn host_detail(h: &HostInfo) -> String {
    let lines = [
        ("Host", h.id.clone()),
        ("State", h.state.clone()),
        ("Schedulable", h.schedulable.to_string()),
        ("Address", h.address.clone().unwrap_or_else(|| "-".into())),
        (
            "Cluster address",
            h.cluster_addr.clone().unwrap_or_else(|| "-".into()),
        ),
        ("Labels", labels_text(&h.labels)),
        (
            "CPUs",
            format!(
                "{} allocated of {}",
                cpus(h.allocated.cpu_millis),
                cpus(h.capacity.cpu_millis)
            ),
        ),
        (
            "Memory",
            format!(
                "{} allocated of {}",
                human_size_binary(h.allocated.memory_bytes),
                human_size_binary(h.capacity.memory_bytes)
            ),
        ),
        (
            "Disk",
            format!(
                "{} allocated of {}",
                human_size_binary(h.allocated.disk_bytes),
                human_size_binary(h.capacity.disk_bytes)
            ),
        ),
        ("Instances", h.instances.to_string()),
        (
            "Ports",
            if h.ports.is_empty() {
                "-".into()
            } else {
                h.ports.join(", ")
            },
        ),
        (
            "Last heartbeat",
            match h.heartbeat_ttl {
                Some(ttl) => format!("{} (lives {ttl}s)", ago(h.last_heartbeat)),
                None => "none (down)".into(),
            },
        ),
        (
            "Etcd member",
            match &h.etcd_client_url {
                Some(u) => format!("yes ({u})"),
                None => "no".into(),
            },
        ),
        (
            "Admits hosts",
            if h.keeps_ca_key {
                "yes (keeps the CA's key)"
            } else {
                "no"
            }
            .into(),
        ),
    ];
    lines
        .iter()
        .map(|(k, v)| format!("{k}:{}{v}", " ".repeat(17 - k.len())))
        .collect::<Vec<_>>()
        .join("\n")
}

/// What a drain or evacuation moved, and what it left and why.
fn moves_text(m: &HostMoves) -> String {
    let mut lines = Vec::new();
    for mv in &m.moved {
        let mut line = format!(
            "moved {} ({}) from {} to {}",
            mv.name,
            short(&mv.id),
            mv.from,
            mv.to
        );
        if !mv.volumes.is_empty() {
            line += &format!(
                "; its volumes ({}) stay on {}: {} makes any it lacks anew, empty",
                mv.volumes.join(", "),
                mv.from,
                mv.to
            );
        }
        lines.push(line);
    }
    for k in &m.not_moved {
        lines.push(format!(
            "not moved {} ({}): {}",
            k.name,
            short(&k.id),
            k.reason
        ));
    }
    if lines.is_empty() {
        lines.push(format!("{} has no placed instances", m.host));
    }
    lines.join("\n")
}

fn short(id: &str) -> &str {
    &id[..id.len().min(12)]
}

pub async fn host(client: &Client, fmt: Format, cmd: HostCommand) -> Result<(), CliError> {
    let path = |h: &str| format!("/v1/hosts/{}", encode_segment(h));
    match cmd {
        HostCommand::Ls => {
            let hosts: Vec<HostInfo> = client.get("/v1/hosts").await?;
            print(fmt, &hosts, || host_rows(&hosts))
        }
        HostCommand::Inspect { target: host } => {
            let h: HostInfo = client.get(&path(&host)).await?;
            print(fmt, &h, || host_detail(&h))
        }
        HostCommand::Cordon { target: host } => {
            let h: HostInfo = client.post(&format!("{}/cordon", path(&host)), &()).await?;
            print(fmt, &h, || format!("{} is {}", h.id, h.state))
        }
        HostCommand::Uncordon { target: host } => {
            let h: HostInfo = client
                .post(&format!("{}/uncordon", path(&host)), &())
                .await?;
            print(fmt, &h, || format!("{} is {}", h.id, h.state))
        }
        HostCommand::Drain { target: host } => {
            let m: HostMoves = client.post(&format!("{}/drain", path(&host)), &()).await?;
            print(fmt, &m, || moves_text(&m))
        }
        HostCommand::Evacuate { target: host } => {
            let m: HostMoves = client
                .post(&format!("{}/evacuate", path(&host)), &())
                .await?;
            print(fmt, &m, || moves_text(&m))
        }
        HostCommand::Rm {
            force,
            target: host,
        } => {
            let q = if force { "?force=true" } else { "" };
            client.delete_empty(&format!("{}{q}", path(&host))).await?;
            outln(&host);
            Ok(())
        }
    }
}
