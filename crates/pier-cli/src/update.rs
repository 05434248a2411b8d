//! `pier update`: changes containers' resource limits and restart policy, at once for a
//! running container (its cgroup) and for every later start (its spec).

use clap::Args;
use pier_api::containers::{ContainerInspect, ContainerUpdate};
use pier_client::{encode_segment, Client};

use crate::containers::{parse_restart, parse_size};
use crate::output::{print, Format};
use crate::{fail, CliError};

#[derive(Debug, Args)]
pub struct UpdateArgs {
    /// CPUs, e.g. 1.5; 0 lifts the limit.
    #[arg(long)]
    pub cpus: Option<f64>,
    /// Memory limit, e.g. 256m.
    #[arg(short, long)]
    pub memory: Option<String>,
    /// Memory plus swap, e.g. 512m; -1 for unlimited swap.
    #[arg(long)]
    pub memory_swap: Option<String>,
    /// Most processes at once; 0 or -1 for no limit.
    #[arg(long, allow_negative_numbers = true)]
    pub pids_limit: Option<i64>,
    /// Relative CPU weight (1024 is the default).
    #[arg(short = 'c', long)]
    pub cpu_shares: Option<i64>,
    /// no, on-failure[:N], always or unless-stopped.
    #[arg(long)]
    pub restart: Option<String>,
    #[arg(required = true)]
    pub containers: Vec<String>,
}

/// The request `a` makes; an update that changes nothing is refused, as Docker does.
fn request(a: &UpdateArgs) -> Result<ContainerUpdate, CliError> {
    let u = ContainerUpdate {
        memory: a.memory.as_deref().map(parse_size).transpose()?,
        memory_swap: a.memory_swap.as_deref().map(parse_size).transpose()?,
        cpus: a.cpus,
        cpu_shares: a.cpu_shares,
        pids_limit: a.pids_limit,
        restart_policy: a.restart.as_deref().map(parse_restart).transpose()?,
    };
    if u == ContainerUpdate::default() {
        return Err(fail(
            "you must provide one or more flags when using this command: --cpus, --memory, --memory-swap, --pids-limit, --cpu-shares or --restart",
        ));
    }
    Ok(u)
}

/// Updates each container in turn; prints the names given, as Docker does, and fails
/// (after trying the others) when one could not be updated.
pub async fn update(client: &Client, fmt: Format, a: UpdateArgs) -> Result<(), CliError> {
    let u = request(&a)?;
    let mut failed = Vec::new();
    let mut done = Vec::new();
    for name in &a.containers {
        let path = format!("/v1/containers/{}/update", encode_segment(name));
        match client.post::<_, ContainerInspect>(&path, &u).await {
            Ok(c) => {
                if fmt == Format::Table {
                    println!("{name}");
                }
                done.push(c);
            }
            Err(e) => {
                eprintln!("Error response from daemon: {e}");
                failed.push(name.clone());
            }
        }
    }
    if fmt == Format::Json {
        print(fmt, &done, String::new)?;
    }
    if failed.is_empty() {
        Ok(())
    } else {
        Err(fail(format!("failed to update containers: {failed:?}")))
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct T {
        #[command(flatten)]
        a: UpdateArgs,
    }

    #[test]
    fn flags_become_the_update_and_an_empty_one_is_refused() {
        let t = T::parse_from([
            "x",
            "--memory",
            "64m",
            "--cpus",
            "0.5",
            "--pids-limit",
            "-1",
            "--restart",
            "on-failure:2",
            "web",
        ]);
        let u = request(&t.a).unwrap();
        assert_eq!(u.memory, Some(64 << 20));
        assert_eq!(u.cpus, Some(0.5));
        assert_eq!(u.pids_limit, Some(-1));
        assert_eq!(
            u.restart_policy,
            Some(pier_api::containers::RestartPolicy::OnFailure { max_retries: 2 })
        );
        let t = T::parse_from(["x", "web"]);
        let e = request(&t.a).unwrap_err();
        assert!(e.message.contains("one or more flags"), "{}", e.message);
    }
}
