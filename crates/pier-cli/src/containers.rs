//! Container commands: run, create, start, stop, restart, kill, rm, ps, inspect, logs,
//! wait, pause, unpause, rename, events.

use std::collections::BTreeMap;
use std::io::Write;

use clap::Args;
use pier_api::containers::{
    ContainerCreate, ContainerInspect, ContainerSummary, Created, LogLine, RestartPolicy, Ulimit,
    WaitResponse,
};
use pier_api::detach::DetachKeys;
use pier_api::time::{human_ago, now_unix, parse_rfc3339};
use pier_api::volumes::{MountKind, MountSpec};
use pier_api::{ByteSize, Ipv4Address, MacAddress, MountFlag, PortSpec, TmpfsFlag, VolumeFlag};
use pier_client::{encode_segment, Client, ClientError};

use crate::output::{print, table, Format};
use crate::{fail, CliError};

/// Options of `pier create` and `pier run`.
#[derive(Debug, Args)]
pub struct CreateArgs {
    /// Name of the container.
    #[arg(long)]
    name: Option<String>,
    /// Set an environment variable (KEY=VALUE, or KEY to copy it from here).
    #[arg(short, long = "env")]
    env: Vec<String>,
    /// Read environment variables from a file.
    #[arg(long)]
    env_file: Vec<String>,
    /// Working directory inside the container.
    #[arg(short, long)]
    workdir: Option<String>,
    /// User (name|uid[:group|gid]).
    #[arg(short, long)]
    user: Option<String>,
    /// Container hostname.
    #[arg(long)]
    hostname: Option<String>,
    /// Network: bridge (the default), none, host, a network's name, or container:NAME.
    #[arg(long, alias = "net")]
    network: Option<String>,
    /// Static IPv4 address on the network (user networks).
    #[arg(long)]
    ip: Option<String>,
    /// MAC address of the container's interface.
    #[arg(long)]
    mac_address: Option<String>,
    /// Another name the container answers to on its network.
    #[arg(long)]
    network_alias: Vec<String>,
    /// Publish a port: [hostip:][hostport:]containerport[/tcp|udp].
    #[arg(short, long)]
    publish: Vec<String>,
    /// Publish every port the image exposes on a free host port.
    #[arg(short = 'P', long)]
    publish_all: bool,
    /// DNS server for the container.
    #[arg(long)]
    dns: Vec<String>,
    /// DNS search domain.
    #[arg(long)]
    dns_search: Vec<String>,
    /// DNS resolver option.
    #[arg(long)]
    dns_option: Vec<String>,
    /// Add a line to /etc/hosts (NAME:IP).
    #[arg(long)]
    add_host: Vec<String>,
    /// Network option: rate=10mbit (both ways), ingress-rate=, egress-rate=.
    #[arg(long)]
    network_opt: Vec<String>,
    /// Mount a volume or a host path: NAME:/path[:ro], /host/path:/path[:ro,rshared], or
    /// /path for an anonymous volume.
    #[arg(short, long = "volume")]
    volume: Vec<String>,
    /// Mount: type=bind|volume|tmpfs,source=...,target=...[,readonly][,bind-propagation=...]
    /// [,volume-nocopy][,tmpfs-size=...][,tmpfs-mode=...].
    #[arg(long)]
    mount: Vec<String>,
    /// A tmpfs: /path[:size=64m,mode=1777].
    #[arg(long)]
    tmpfs: Vec<String>,
    /// Storage option: size=1g limits the writable layer.
    #[arg(long)]
    storage_opt: Vec<String>,
    /// Mount the root filesystem read-only.
    #[arg(long)]
    read_only: bool,
    /// Give the container every capability and no masked paths.
    #[arg(long)]
    privileged: bool,
    /// Run in a user namespace: CONTAINER_ID:HOST_ID:SIZE (repeatable), e.g.
    /// 0:100000:65536 makes the container's root host user 100000.
    #[arg(long, value_name = "MAPPING", value_parser = pier_api::containers::IdMap::parse)]
    uidmap: Vec<pier_api::containers::IdMap>,
    /// Group mappings as --uidmap (the same as --uidmap when not given).
    #[arg(long, value_name = "MAPPING", value_parser = pier_api::containers::IdMap::parse)]
    gidmap: Vec<pier_api::containers::IdMap>,
    #[arg(long)]
    cap_add: Vec<String>,
    #[arg(long)]
    cap_drop: Vec<String>,
    #[arg(long)]
    security_opt: Vec<String>,
    /// Memory limit (e.g. 64m, 1g).
    #[arg(short, long)]
    memory: Option<String>,
    /// Memory plus swap limit; -1 for unlimited swap.
    #[arg(long)]
    memory_swap: Option<String>,
    /// Number of CPUs (e.g. 0.5).
    #[arg(long)]
    cpus: Option<f64>,
    /// Relative CPU weight, 2 to 262144 (1024 is the default).
    #[arg(short = 'c', long, allow_negative_numbers = true)]
    cpu_shares: Option<i64>,
    /// CPUs in which to allow execution (0-3, 0,1).
    #[arg(long)]
    cpuset_cpus: Option<String>,
    /// Process limit (-1 for unlimited).
    #[arg(long, allow_negative_numbers = true)]
    pids_limit: Option<i64>,
    /// Size of /dev/shm (e.g. 64m, the default).
    #[arg(long)]
    shm_size: Option<String>,
    /// Block I/O weight, 10 to 1000.
    #[arg(long)]
    blkio_weight: Option<u16>,
    /// Resource limit, e.g. nofile=1024:2048.
    #[arg(long)]
    ulimit: Vec<String>,
    /// Restart policy: no, on-failure[:N], always, unless-stopped.
    #[arg(long, default_value = "no")]
    restart: String,
    /// Label (KEY=VALUE).
    #[arg(short, long = "label")]
    label: Vec<String>,
    /// Log option: max-size=10m, max-file=3.
    #[arg(long)]
    log_opt: Vec<String>,
    /// Override the image's entrypoint.
    #[arg(long)]
    entrypoint: Option<String>,
    /// Run an init as PID 1 that forwards signals and reaps zombies.
    #[arg(long)]
    init: bool,
    /// Runtime: pier (default), runc, or pier-vm (a VM, as --vm).
    #[arg(long)]
    runtime: Option<String>,
    /// Run the image as a VM (a QEMU microVM with its own kernel) instead of a
    /// container; --cpus is then its number of vCPUs and --memory its memory.
    #[arg(long, conflicts_with = "runtime")]
    vm: bool,
    /// Keep stdin open and pass it to the container.
    #[arg(short, long)]
    interactive: bool,
    /// Give the container a terminal.
    #[arg(short, long)]
    tty: bool,
    /// Pull the image: missing (when it is not here), always, never.
    #[arg(long, value_enum, default_value = "missing")]
    pull: crate::run_opts::PullPolicy,
    /// The platform of the image: only this host's (e.g. linux/amd64).
    #[arg(long)]
    platform: Option<String>,
    /// Write the container's ID to this file (which must not exist).
    #[arg(long)]
    cidfile: Option<String>,
    /// A command, run through /bin/sh in the container, that tells its health.
    #[arg(long)]
    health_cmd: Option<String>,
    /// Time between two health checks (e.g. 30s, 1m30s).
    #[arg(long)]
    health_interval: Option<String>,
    /// Failures in a row that make the container unhealthy.
    #[arg(long)]
    health_retries: Option<u32>,
    /// A health check running longer fails (e.g. 30s).
    #[arg(long)]
    health_timeout: Option<String>,
    /// Failures in this time after the start do not count (e.g. 5s).
    #[arg(long)]
    health_start_period: Option<String>,
    /// Turn off the image's health check.
    #[arg(long)]
    no_healthcheck: bool,
    /// The signal `stop` sends first (default: the image's, or SIGTERM).
    #[arg(long)]
    stop_signal: Option<String>,
    /// Seconds `stop` waits before it kills (default 10).
    #[arg(long)]
    stop_timeout: Option<u64>,
    /// A port (or range) the container listens on, published by -P: 80, 80/udp, 8000-8010.
    #[arg(long)]
    expose: Vec<String>,
    /// Mount the volumes and bind mounts of another container: NAME[:ro|:rw].
    #[arg(long)]
    volumes_from: Vec<String>,
    /// A host device in the container: HOST_PATH[:CONTAINER_PATH][:rwm].
    #[arg(long)]
    device: Vec<String>,
    /// A namespaced kernel parameter: net.*, fs.mqueue.*, kernel.shm*/msg*/sem (KEY=VALUE).
    #[arg(long)]
    sysctl: Vec<String>,
    /// PID namespace: private (the default) or host.
    #[arg(long)]
    pid: Option<String>,
    /// IPC namespace: private, shareable (the default) or host.
    #[arg(long)]
    ipc: Option<String>,
    /// UTS namespace: private (the default: its own hostname) or host (the host's).
    #[arg(long)]
    uts: Option<String>,
    /// Another group of the container's processes (a name of the image's or a number).
    #[arg(long)]
    group_add: Vec<String>,
    /// The cgroup to make the container's cgroup in (e.g. mygroup/sub), made when
    /// missing and left when the container goes.
    #[arg(long)]
    cgroup_parent: Option<String>,
    /// In a pool: a condition on the host to place it on (host.label.KEY==VALUE,
    /// host.label.KEY!=VALUE, host.id==ID, host.id!=ID).
    #[arg(long)]
    constraint: Vec<String>,
    /// In a pool: place it on a host running an instance that matches
    /// (instance.name==NAME, instance.label.KEY==VALUE).
    #[arg(long)]
    affinity: Vec<String>,
    /// In a pool: place it on a host running no instance that matches.
    #[arg(long)]
    anti_affinity: Vec<String>,
    /// In a pool: how to choose among the hosts that fit: spread (the default) or binpack.
    #[arg(long)]
    placement: Option<String>,
    /// Image to run.
    image: String,
    /// Command and arguments.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    command: Vec<String>,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Run in the background and print the container ID.
    #[arg(short, long)]
    detach: bool,
    /// Remove the container when it exits.
    #[arg(long)]
    rm: bool,
    /// Pass the signals this client receives on to the container (without a terminal).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    sig_proxy: bool,
    /// The keys that detach from the container, leaving it running (ctrl-p,ctrl-q).
    #[arg(long)]
    detach_keys: Option<String>,
    #[command(flatten)]
    create: CreateArgs,
}

/// Parses `64m`, `1g`, `512k`, `100` (bytes), as Docker does; `-1` (unlimited) passes
/// for the limits that take it.
pub fn parse_size(s: &str) -> Result<i64, CliError> {
    let s = s.trim();
    if s == "-1" {
        return Ok(-1);
    }
    let n = s.parse::<ByteSize>().map_err(|e| fail(e.to_string()))?;
    i64::try_from(n.bytes()).map_err(|_| fail(format!("invalid size {s:?}: it is too large")))
}

/// A flag the engine checked before the CLI did (`-p`, `--ip`, `--mac-address`): refused
/// with the engine's exit code, 125, as Docker's CLI refuses it.
fn refused(message: String) -> CliError {
    CliError { code: 125, message }
}

fn parse_ulimit(s: &str) -> Result<Ulimit, CliError> {
    let bad = || {
        fail(format!(
            "invalid --ulimit {s:?}: use NAME=SOFT[:HARD], e.g. nofile=1024:2048"
        ))
    };
    let (name, vals) = s.split_once('=').ok_or_else(bad)?;
    let (soft, hard) = match vals.split_once(':') {
        Some((a, b)) => (a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?),
        None => {
            let v = vals.parse().map_err(|_| bad())?;
            (v, v)
        }
    };
    Ok(Ulimit {
        name: name.to_string(),
        soft,
        hard,
    })
}

pub(crate) fn parse_restart(s: &str) -> Result<RestartPolicy, CliError> {
    Ok(match s.split_once(':') {
        None if s == "no" || s.is_empty() => RestartPolicy::No,
        None if s == "always" => RestartPolicy::Always,
        None if s == "unless-stopped" => RestartPolicy::UnlessStopped,
        None if s == "on-failure" => RestartPolicy::OnFailure { max_retries: 0 },
        Some(("on-failure", n)) => RestartPolicy::OnFailure {
            max_retries: n.parse().map_err(|_| {
                fail(format!(
                    "invalid --restart {s:?}: the retry count must be a number"
                ))
            })?,
        },
        _ => {
            return Err(fail(format!(
                "invalid --restart {s:?}: use no, on-failure[:N], always or unless-stopped"
            )))
        }
    })
}

/// `-v NAME:/path[:opts]`, `-v /host:/path[:opts]`, `-v /path` (anonymous); a host path
/// given relative (`./site:/site`) is made absolute here, where it means something.
fn parse_volume_flag(v: &str) -> Result<MountSpec, CliError> {
    let spec = match v.split_once(':') {
        Some((src, rest)) if src.starts_with('.') => {
            let abs = std::path::absolute(src).map_err(|e| fail(format!("-v {v:?}: {e}")))?;
            format!("{}:{rest}", abs.display())
        }
        _ => v.to_string(),
    };
    spec.parse::<VolumeFlag>()
        .map(VolumeFlag::into_spec)
        .map_err(|e| fail(e.to_string()))
}

/// `--mount type=...,source=...,target=...,...`; a bind source is made absolute here.
fn parse_mount_flag(v: &str) -> Result<MountSpec, CliError> {
    let mut m = v
        .parse::<MountFlag>()
        .map_err(|e| fail(e.to_string()))?
        .into_spec();
    if m.kind == MountKind::Bind {
        if let Some(s) = &m.source {
            let abs = std::path::absolute(s).map_err(|e| fail(format!("--mount {v:?}: {e}")))?;
            m.source = Some(abs.display().to_string());
        }
    }
    Ok(m)
}

/// `KEY=VALUE` flags as a map.
pub(crate) fn key_values(v: &[String], flag: &str) -> Result<BTreeMap<String, String>, CliError> {
    v.iter()
        .map(|o| {
            o.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .ok_or_else(|| fail(format!("{flag} {o:?}: use KEY=VALUE")))
        })
        .collect()
}

fn create_request(a: CreateArgs, auto_remove: bool) -> Result<ContainerCreate, CliError> {
    let env = read_env(&a.env_file, a.env)?;
    let security_opt = security_opts(a.security_opt)?;
    let labels: BTreeMap<String, String> = a
        .label
        .iter()
        .map(|l| match l.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => (l.clone(), String::new()),
        })
        .collect();
    if let Some(p) = &a.platform {
        crate::run_opts::check_platform(p)?;
    }
    let healthcheck = crate::run_opts::HealthFlags {
        cmd: a.health_cmd.clone(),
        interval: a.health_interval.clone(),
        timeout: a.health_timeout.clone(),
        start_period: a.health_start_period.clone(),
        retries: a.health_retries,
        none: a.no_healthcheck,
    }
    .to_healthcheck()?;
    if a.restart != "no" && auto_remove {
        return Err(fail(
            "--restart and --rm conflict: a container removed on exit cannot be restarted",
        ));
    }
    Ok(ContainerCreate {
        ip6: None,
        image: a.image,
        name: a.name,
        cmd: (!a.command.is_empty()).then_some(a.command),
        entrypoint: a
            .entrypoint
            .map(|e| if e.is_empty() { vec![] } else { vec![e] }),
        env,
        workdir: a.workdir,
        user: a.user,
        hostname: a.hostname,
        network: a.network,
        ip: a
            .ip
            .as_deref()
            .map(|i| i.parse::<Ipv4Address>())
            .transpose()
            .map_err(|e| refused(format!("--ip {e}")))?,
        mac_address: a
            .mac_address
            .as_deref()
            .map(|m| m.parse::<MacAddress>())
            .transpose()
            .map_err(|e| refused(format!("--mac-address {e}")))?,
        network_aliases: a.network_alias,
        publish: a
            .publish
            .iter()
            .map(|p| p.parse::<PortSpec>())
            .collect::<Result<_, _>>()
            .map_err(|e| refused(e.to_string()))?,
        publish_all: a.publish_all,
        dns: a.dns,
        dns_search: a.dns_search,
        dns_options: a.dns_option,
        extra_hosts: a.add_host,
        network_opts: key_values(&a.network_opt, "--network-opt")?,
        mounts: mounts_of(&a.volume, &a.mount, &a.tmpfs)?,
        storage_opts: key_values(&a.storage_opt, "--storage-opt")?,
        read_only: a.read_only,
        privileged: a.privileged,
        uid_maps: a.uidmap,
        gid_maps: a.gidmap,
        cap_add: a.cap_add,
        cap_drop: a.cap_drop,
        security_opt,
        memory: a.memory.as_deref().map(parse_size).transpose()?,
        memory_swap: a.memory_swap.as_deref().map(parse_size).transpose()?,
        cpus: a.cpus,
        cpu_shares: a.cpu_shares,
        cpuset_cpus: a.cpuset_cpus,
        pids_limit: a.pids_limit,
        blkio_weight: a.blkio_weight,
        shm_size: a.shm_size.as_deref().map(parse_size).transpose()?,
        ulimits: a
            .ulimit
            .iter()
            .map(|u| parse_ulimit(u))
            .collect::<Result<_, _>>()?,
        auto_remove,
        init: a.init,
        runtime: if a.vm {
            Some("pier-vm".into())
        } else {
            a.runtime
        },
        tty: a.tty,
        interactive: a.interactive,
        attach: false,
        healthcheck,
        stop_signal: a.stop_signal,
        stop_timeout: a.stop_timeout,
        expose: a.expose,
        group_add: a.group_add,
        sysctls: key_values(&a.sysctl, "--sysctl").map_err(|e| refused(e.message))?,
        devices: a
            .device
            .iter()
            .map(|d| pier_api::containers::DeviceMapping::parse(d))
            .collect::<Result<_, _>>()
            .map_err(refused)?,
        pid_mode: a.pid,
        ipc_mode: a.ipc,
        uts_mode: a.uts,
        cgroup_parent: a.cgroup_parent,
        restart_policy: parse_restart(&a.restart)?,
        log_opts: log_opts_of(&a.log_opt)?,
        labels,
        constraints: a.constraint,
        affinity: a.affinity,
        anti_affinity: a.anti_affinity,
        placement: a.placement,
        ..Default::default()
    })
}

/// `--env-file` lines, then `--env`; a bare `NAME` takes the value of ours, or is
/// dropped when we have none.
fn read_env(env_files: &[String], flags: Vec<String>) -> Result<Vec<String>, CliError> {
    let mut env = Vec::new();
    for file in env_files {
        let text = std::fs::read_to_string(file)
            .map_err(|e| fail(format!("cannot read env file {file}: {e}")))?;
        for line in text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
        {
            env.push(line.to_string());
        }
    }
    env.extend(flags);
    Ok(env
        .into_iter()
        .filter_map(|e| {
            if e.contains('=') {
                Some(e)
            } else {
                std::env::var(&e).ok().map(|v| format!("{e}={v}"))
            }
        })
        .collect())
}

/// `--security-opt`s, with a seccomp profile's file read: Docker's client sends the
/// content.
fn security_opts(opts: Vec<String>) -> Result<Vec<String>, CliError> {
    let mut security_opt = Vec::new();
    for o in opts {
        match o.split_once(['=', ':']) {
            Some(("seccomp", path)) if path != "unconfined" => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| fail(format!("cannot read the seccomp profile {path}: {e}")))?;
                security_opt.push(format!("seccomp={text}"));
            }
            _ => security_opt.push(o),
        }
    }
    Ok(security_opt)
}

/// The mounts of `-v`, `--mount` and `--tmpfs`, in that order.
fn mounts_of(
    volumes: &[String],
    mounts: &[String],
    tmpfs: &[String],
) -> Result<Vec<MountSpec>, CliError> {
    let mut m = Vec::new();
    for v in volumes {
        m.push(parse_volume_flag(v)?);
    }
    for v in mounts {
        m.push(parse_mount_flag(v)?);
    }
    for t in tmpfs {
        m.push(
            t.parse::<TmpfsFlag>()
                .map_err(|e| fail(e.to_string()))?
                .into_spec(),
        );
    }
    Ok(m)
}

/// `--log-opt KEY=VALUE`s, a max-size in bytes.
fn log_opts_of(opts: &[String]) -> Result<BTreeMap<String, String>, CliError> {
    opts.iter()
        .map(|o| {
            let (k, v) = o
                .split_once('=')
                .ok_or_else(|| fail(format!("invalid --log-opt {o:?}: use KEY=VALUE")))?;
            let v = if k == "max-size" {
                parse_size(v)?.to_string()
            } else {
                v.to_string()
            };
            Ok((k.to_string(), v))
        })
        .collect()
}

/// Exit codes as Docker's: 125 when the engine failed, 126/127 when the command could
/// not run, otherwise the container's own.
/// Whether a create failed because its image is not here.
fn missing_image(e: &ClientError) -> bool {
    e.kind() == pier_api::ErrorKind::NotFound && e.to_string().contains("no such image")
}

fn engine_error(e: ClientError) -> CliError {
    CliError {
        code: 125,
        message: e.to_string(),
    }
}

/// Creates the container as `create` and `run` do: `--volumes-from` read, the image
/// pulled as `--pull` says, the ID written to `--cidfile`.
async fn create_container(
    client: &Client,
    a: CreateArgs,
    auto_remove: bool,
    attach: bool,
) -> Result<(ContainerCreate, Created), CliError> {
    let (pull, cidfile, volumes_from) = (a.pull, a.cidfile.clone(), a.volumes_from.clone());
    let mut req = create_request(a, auto_remove)?;
    req.attach = attach && req.tty;
    let inherited = crate::run_opts::volumes_from(client, &volumes_from, &req.mounts).await?;
    req.mounts.extend(inherited);
    let cid = cidfile
        .as_deref()
        .map(crate::run_opts::CidFile::create)
        .transpose()?;
    let made = async {
        // With `missing` (the default), the create is tried first: an image that is here
        // costs no extra round trip; one that is not is pulled, and the create made again.
        if pull != crate::run_opts::PullPolicy::Missing {
            crate::run_opts::ensure_image(client, &req.image, pull).await?;
        }
        match client.post::<_, Created>("/v1/containers", &req).await {
            Err(e) if pull == crate::run_opts::PullPolicy::Missing && missing_image(&e) => {
                crate::run_opts::ensure_image(client, &req.image, pull).await?;
                client
                    .post::<_, Created>("/v1/containers", &req)
                    .await
                    .map_err(engine_error)
            }
            r => r.map_err(engine_error),
        }
    }
    .await;
    match (made, cid) {
        (Ok(c), Some(f)) => {
            f.write(&c.id)?;
            Ok((req, c))
        }
        (Ok(c), None) => Ok((req, c)),
        (Err(e), f) => {
            if let Some(f) = f {
                f.discard();
            }
            Err(e)
        }
    }
}

pub async fn create(client: &Client, fmt: Format, a: CreateArgs) -> Result<(), CliError> {
    let (_, c) = create_container(client, a, false, false).await?;
    print(fmt, &c, || c.id.to_string())
}

pub async fn run(client: &Client, fmt: Format, a: RunArgs) -> Result<(), CliError> {
    let detach_keys = crate::run_opts::parse_detach_keys(a.detach_keys.as_deref())?;
    // A terminal's output reaches this client through its attach, which comes after the
    // start: the engine keeps the output for it should the container be quicker.
    let (req, c) = create_container(client, a.create, a.rm, !a.detach).await?;
    if a.detach {
        start_or_explain(client, &c.id).await?;
        return print(fmt, &c, || c.id.to_string());
    }
    let s = Attached {
        tty: req.tty,
        stdin: req.interactive,
        keys: detach_keys,
        removed: a.rm,
        sig_proxy: a.sig_proxy,
    };
    start_attached(client, c.id.as_ref(), s).await
}

/// How [`start_attached`] attaches.
struct Attached {
    tty: bool,
    stdin: bool,
    keys: DetachKeys,
    /// Return once the container is removed (`--rm`), not at its exit.
    removed: bool,
    sig_proxy: bool,
}

/// Starts a container with this client attached to its output (and input with `stdin`),
/// as `run` and `start -a` do; fails with the container's exit code, or returns when
/// the user detached.
async fn start_attached(client: &Client, id: &str, s: Attached) -> Result<(), CliError> {
    let path = format!("/v1/containers/{id}");
    // With --rm, the command returns once the container is gone, as Docker's does.
    let until = if s.removed {
        "removed=true"
    } else {
        "next_exit=true"
    };
    if s.tty {
        // A terminal: register for the exit, start, then attach; the monitor replays
        // what came out before the attach.
        let waiter = client
            .post_begin(&format!("{path}/wait?{until}"))
            .await
            .map_err(engine_error)?;
        start_or_explain(client, id).await?;
        if session(client, id, s.tty, s.stdin, &s.keys).await? {
            // Detached: the container runs on.
            return Ok(());
        }
        let w: WaitResponse = pier_client::read_json(waiter).await.map_err(engine_error)?;
        return Err(CliError {
            code: w.exit_code,
            message: String::new(),
        });
    }
    // Attach to the output and register for the exit before starting, so a fast
    // container cannot slip past (with --rm it may be gone right after).
    let waiter = client
        .post_begin(&format!("{path}/wait?{until}"))
        .await
        .map_err(engine_error)?;
    let output = client
        .get_begin(&format!("{path}/logs?follow=true&attach=true"))
        .await
        .map_err(engine_error)?;
    start_or_explain(client, id).await?;
    let _proxy = s
        .sig_proxy
        .then(|| crate::run_opts::SignalProxy::start(client, id));
    if s.stdin {
        // Input through the attach stream; output from the log, which holds all of it
        // from the first byte however late the attach comes.
        let io = client
            .hijack(&format!("{path}/attach?stdin=true"))
            .await
            .map_err(engine_error)?;
        tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            let (mut r, mut w) = tokio::io::split(io);
            let discard = tokio::spawn(async move {
                let _ = tokio::io::copy(&mut r, &mut tokio::io::sink()).await;
            });
            let _ = tokio::io::copy(&mut tokio::io::stdin(), &mut w).await;
            let _ = w.shutdown().await;
            let _ = discard.await;
        });
    }
    print_lines(output, false).await?;
    let w: WaitResponse = pier_client::read_json(waiter).await.map_err(engine_error)?;
    if let Some(err) = w.error.filter(|_| w.exit_code >= 125) {
        eprintln!("Error: {err}");
    }
    Err(CliError {
        code: w.exit_code,
        message: String::new(),
    })
}

/// Puts the local terminal in raw mode while it lives.
struct RawTerminal(rustix::termios::Termios);

impl RawTerminal {
    fn enable() -> Option<Self> {
        let stdin = std::io::stdin();
        let orig = rustix::termios::tcgetattr(&stdin).ok()?;
        let mut raw = orig.clone();
        raw.make_raw();
        rustix::termios::tcsetattr(&stdin, rustix::termios::OptionalActions::Now, &raw).ok()?;
        Some(RawTerminal(orig))
    }
}

impl Drop for RawTerminal {
    fn drop(&mut self) {
        let _ = rustix::termios::tcsetattr(
            std::io::stdin(),
            rustix::termios::OptionalActions::Now,
            &self.0,
        );
    }
}

async fn send_size(client: &Client, resize: &str) {
    if let Ok(ws) = rustix::termios::tcgetwinsize(std::io::stdout()) {
        if ws.ws_row > 0 {
            let _ = client
                .post_empty(&format!("{resize}?h={}&w={}", ws.ws_row, ws.ws_col))
                .await;
        }
    }
}

/// An attached session: local stdin to the container, its output here, terminal size
/// kept in step; ends when the container's output ends. Whether the user detached with
/// `detach_keys` (the engine detaches the session when it reads them).
pub async fn session(
    client: &Client,
    id: &str,
    tty: bool,
    stdin: bool,
    detach_keys: &DetachKeys,
) -> Result<bool, CliError> {
    let io = client
        .hijack(&format!(
            "/v1/containers/{}/attach?stdin={stdin}&detach_keys={}",
            encode_segment(id),
            encode_segment(detach_keys.as_str())
        ))
        .await?;
    pump(
        client,
        io,
        tty,
        stdin,
        format!("/v1/containers/{}/resize", encode_segment(id)),
        Keys::Server(detach_keys.bytes()),
    )
    .await
}

/// `pier vm console NAME`: the serial console of a running VM (its kernel's messages,
/// and what the guest runs there); ctrl-] leaves it, the VM running on.
pub async fn console(client: &Client, name: &str) -> Result<(), CliError> {
    let io = client
        .hijack(&format!("/v1/containers/{}/console", encode_segment(name)))
        .await?;
    if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        eprintln!("Connected to the console of {name}; type ctrl-] to leave it.\r");
    }
    pump(client, io, true, true, String::new(), Keys::Client(&[0x1d])).await?;
    Ok(())
}

/// Who acts on the detach keys of a session with a terminal.
#[derive(Clone, Copy)]
enum Keys<'a> {
    /// The server knows them: they are sent on, and the server ends the stream.
    Server(&'a [u8]),
    /// Only this client: they are held back, and this client leaves the stream.
    Client(&'a [u8]),
}

/// Moves bytes between the local terminal and an attached stream; `resize` is the URL
/// that takes the terminal's size (none when empty). Typing the detach keys of a session
/// with a terminal ends the session and returns true, the other side running on (as
/// Docker's CLI, which looks for them only with a terminal).
async fn pump(
    client: &Client,
    io: pier_client::Hijacked,
    tty: bool,
    stdin: bool,
    resize: String,
    keys: Keys<'_>,
) -> Result<bool, CliError> {
    use std::sync::atomic::{AtomicBool, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (mut r, mut w) = tokio::io::split(io);
    let local_tty = std::io::IsTerminal::is_terminal(&std::io::stdin());
    let _raw = if tty && stdin && local_tty {
        RawTerminal::enable()
    } else {
        None
    };
    if tty && !resize.is_empty() {
        send_size(client, &resize).await;
        let client = client.clone();
        tokio::spawn(async move {
            if let Ok(mut winch) =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::window_change())
            {
                while winch.recv().await.is_some() {
                    send_size(&client, &resize).await;
                }
            }
        });
    }
    let (bytes, by_server) = match keys {
        Keys::Server(k) => (k, true),
        Keys::Client(k) => (k, false),
    };
    let mut scanner = pier_api::detach::Scanner::new(if tty { bytes } else { &[] });
    let detached = std::sync::Arc::new(AtomicBool::new(false));
    let seen = detached.clone();
    let input = async move {
        if stdin {
            let mut inp = tokio::io::stdin();
            let mut buf = vec![0u8; 8192];
            loop {
                let n = match inp.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                let (pass, hit) = scanner.feed(&buf[..n]);
                if hit {
                    seen.store(true, Ordering::SeqCst);
                }
                let send = if by_server { &buf[..n] } else { &pass[..] };
                if !send.is_empty() && w.write_all(send).await.is_err() {
                    break;
                }
                let _ = w.flush().await;
                if hit {
                    if by_server {
                        // The server detaches and ends the stream; should it not, leave.
                        tokio::time::sleep(std::time::Duration::from_secs(5)).await;
                    }
                    return;
                }
            }
            let _ = w.shutdown().await;
        }
        std::future::pending::<()>().await
    };
    let output = async move {
        let mut out = tokio::io::stdout();
        if tty {
            let mut buf = vec![0u8; 32 * 1024];
            while let Ok(n) = r.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                crate::output::check_stdout(out.write_all(&buf[..n]).await.and(out.flush().await));
            }
            return;
        }
        let mut err = tokio::io::stderr();
        let mut header = [0u8; 8];
        while r.read_exact(&mut header).await.is_ok() {
            let len = u32::from_be_bytes([header[4], header[5], header[6], header[7]]) as usize;
            let mut payload = vec![0u8; len];
            if r.read_exact(&mut payload).await.is_err() {
                break;
            }
            if header[0] == 2 {
                let _ = err.write_all(&payload).await;
            } else {
                crate::output::check_stdout(out.write_all(&payload).await.and(out.flush().await));
            }
        }
    };
    tokio::select! {
        _ = output => {}
        _ = input => {}
    }
    Ok(detached.load(Ordering::SeqCst))
}

/// `pier attach`: to a running container's stdio.
pub async fn attach(
    client: &Client,
    name: &str,
    no_stdin: bool,
    sig_proxy: bool,
    detach_keys: Option<String>,
) -> Result<(), CliError> {
    let keys = crate::run_opts::parse_detach_keys(detach_keys.as_deref())?;
    let c: ContainerInspect = client
        .get(&format!("/v1/containers/{}", encode_segment(name)))
        .await?;
    let stdin = c.config.interactive && !no_stdin;
    let waiter = client
        .post_begin(&format!("/v1/containers/{}/wait", c.id))
        .await?;
    // With a terminal, ^C reaches the container as a byte; without, as a signal.
    let _proxy =
        (sig_proxy && !c.config.tty).then(|| crate::run_opts::SignalProxy::start(client, &c.id));
    if session(client, &c.id, c.config.tty, stdin, &keys).await? {
        return Ok(());
    }
    let w: WaitResponse = pier_client::read_json(waiter).await?;
    Err(CliError {
        code: w.exit_code,
        message: String::new(),
    })
}

async fn start_or_explain(client: &Client, id: &str) -> Result<(), CliError> {
    match client
        .post_empty(&format!("/v1/containers/{id}/start"))
        .await
    {
        Ok(()) => Ok(()),
        Err(e) => {
            let code = match &e {
                ClientError::Api {
                    exit_code: Some(c @ (126 | 127)),
                    ..
                } => *c,
                _ => 125,
            };
            Err(CliError {
                code,
                message: e.to_string(),
            })
        }
    }
}

async fn stream_logs(client: &Client, path: &str, timestamps: bool) -> Result<(), CliError> {
    print_lines(client.get_begin(path).await?, timestamps).await
}

/// Prints log lines to stdout or stderr, as their stream says.
async fn print_lines(resp: pier_client::Pending, timestamps: bool) -> Result<(), CliError> {
    let mut out = std::io::stdout();
    let mut err = std::io::stderr();
    pier_client::read_ndjson::<LogLine>(resp, |l| {
        let line = if timestamps {
            format!("{} {}", l.time, l.log)
        } else {
            l.log
        };
        if l.stream == "stderr" {
            err.write_all(line.as_bytes()).is_ok()
        } else {
            crate::output::check_stdout(out.write_all(line.as_bytes()).and_then(|_| out.flush()));
            true
        }
    })
    .await?;
    Ok(())
}

#[derive(Debug, Args)]
pub struct ExecArgs {
    /// Run in the background.
    #[arg(short, long)]
    detach: bool,
    /// Set an environment variable.
    #[arg(short, long = "env")]
    env: Vec<String>,
    /// Read environment variables from a file (KEY=VALUE lines; # comments).
    #[arg(long)]
    env_file: Vec<String>,
    /// The keys that detach from the command, leaving it running (ctrl-p,ctrl-q).
    #[arg(long)]
    detach_keys: Option<String>,
    /// User (name|uid[:group|gid]).
    #[arg(short, long)]
    user: Option<String>,
    /// Working directory.
    #[arg(short, long)]
    workdir: Option<String>,
    /// Keep stdin open and pass it to the command.
    #[arg(short, long)]
    interactive: bool,
    /// Give the command a terminal.
    #[arg(short, long)]
    tty: bool,
    /// Give the command every capability (the container's seccomp profile stays).
    #[arg(long)]
    privileged: bool,
    container: String,
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
    command: Vec<String>,
}

/// `pier exec`: exits with the command's exit code.
pub async fn exec(client: &Client, a: ExecArgs) -> Result<(), CliError> {
    let keys = crate::run_opts::parse_detach_keys(a.detach_keys.as_deref())?;
    let req = pier_api::containers::ExecCreate {
        cmd: a.command,
        env: read_env(&a.env_file, a.env)?,
        user: a.user,
        workdir: a.workdir,
        detach: a.detach,
        tty: a.tty,
        interactive: a.interactive,
        detach_keys: Some(keys.clone()),
        privileged: a.privileged,
    };
    let path = format!("/v1/containers/{}/exec", encode_segment(&a.container));
    let body = serde_json::to_vec(&req).expect("json");
    if (req.tty || req.interactive) && !req.detach {
        let (io, headers) = client.hijack_with(&path, Some(body)).await?;
        let exec_id = headers
            .get("x-pier-exec-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        if pump(
            client,
            io,
            req.tty,
            req.interactive,
            format!("/v1/exec/{exec_id}/resize"),
            Keys::Server(keys.bytes()),
        )
        .await?
        {
            return Ok(());
        }
        // The stream ends with the command; its exit code follows shortly.
        let mut code = None;
        for _ in 0..200 {
            let s: pier_api::containers::ExecInspect =
                client.get(&format!("/v1/exec/{exec_id}")).await?;
            if let Some(c) = s.exit_code {
                code = Some(c);
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        let code = code.ok_or_else(|| fail("the command's exit code did not arrive"))?;
        return if code == 0 {
            Ok(())
        } else {
            Err(CliError {
                code,
                message: String::new(),
            })
        };
    }
    let resp = client.post_raw(&path, body).await?;
    let mut code = 0;
    let mut out = std::io::stdout();
    let mut err = std::io::stderr();
    pier_client::read_ndjson::<pier_api::containers::ExecOutput>(resp, |o| {
        if let Some(c) = o.exit_code {
            code = c;
        }
        if let Some(d) = o.data {
            if o.stream.as_deref() == Some("stderr") {
                let _ = err.write_all(d.as_bytes());
            } else {
                crate::output::check_stdout(out.write_all(d.as_bytes()).and_then(|_| out.flush()));
            }
        }
        true
    })
    .await?;
    if code != 0 {
        return Err(CliError {
            code,
            message: String::new(),
        });
    }
    Ok(())
}

pub async fn top(client: &Client, fmt: Format, name: &str) -> Result<(), CliError> {
    let t: pier_api::containers::TopResponse = client
        .get(&format!("/v1/containers/{}/top", encode_segment(name)))
        .await?;
    print(fmt, &t, || {
        table(
            &t.titles.iter().map(String::as_str).collect::<Vec<_>>(),
            &t.processes,
        )
    })
}

#[derive(Debug, Args)]
pub struct StatsArgs {
    /// Print one reading and exit.
    #[arg(long)]
    no_stream: bool,
    /// All containers (default: running ones).
    #[arg(short, long)]
    all: bool,
    containers: Vec<String>,
}

/// `pier stats`: CPU percentages come from two readings half a second apart.
pub async fn stats(client: &Client, fmt: Format, a: StatsArgs) -> Result<(), CliError> {
    use pier_api::containers::ContainerStats;
    let names: Vec<String> = if a.containers.is_empty() {
        let list: Vec<ContainerSummary> =
            client.get(&format!("/v1/containers?all={}", a.all)).await?;
        list.into_iter().map(|c| c.id).collect()
    } else {
        a.containers.clone()
    };
    let read = |names: Vec<String>| async move {
        let mut out = Vec::new();
        for n in &names {
            out.push(
                client
                    .get::<ContainerStats>(&format!("/v1/containers/{}/stats", encode_segment(n)))
                    .await?,
            );
        }
        Ok::<_, ClientError>(out)
    };
    let mut before = read(names.clone()).await?;
    loop {
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        let now = read(names.clone()).await?;
        let rows: Vec<Vec<String>> = now
            .iter()
            .zip(&before)
            .map(|(n, b)| {
                let cpu = n.cpu_usage_ns.saturating_sub(b.cpu_usage_ns) as f64;
                let sys = n.system_cpu_ns.saturating_sub(b.system_cpu_ns) as f64;
                let pct = if sys > 0.0 {
                    cpu / sys * f64::from(n.online_cpus) * 100.0
                } else {
                    0.0
                };
                // No limit: the host's memory, as Docker shows.
                let mem_limit = n
                    .memory_limit
                    .or((n.host_memory > 0).then_some(n.host_memory));
                let limit =
                    mem_limit.map_or("unlimited".to_string(), crate::output::human_size_binary);
                let (rx, tx) = n
                    .networks
                    .values()
                    .fold((0, 0), |(r, t), c| (r + c.rx_bytes, t + c.tx_bytes));
                vec![
                    n.id[..12].to_string(),
                    n.name.clone(),
                    format!("{pct:.2}%"),
                    format!(
                        "{} / {limit}",
                        crate::output::human_size_binary(n.memory_usage)
                    ),
                    mem_limit.map_or("--".into(), |l| {
                        format!("{:.2}%", n.memory_usage as f64 / l as f64 * 100.0)
                    }),
                    format!(
                        "{} / {}",
                        crate::output::human_size(rx),
                        crate::output::human_size(tx)
                    ),
                    format!(
                        "{} / {}",
                        crate::output::human_size(n.io_read_bytes),
                        crate::output::human_size(n.io_write_bytes)
                    ),
                    n.pids_current.to_string(),
                ]
            })
            .collect();
        if fmt == Format::Table && !a.no_stream {
            print!("\x1b[2J\x1b[H");
        }
        print(fmt, &now, || {
            table(
                &[
                    "CONTAINER ID",
                    "NAME",
                    "CPU %",
                    "MEM USAGE / LIMIT",
                    "MEM %",
                    "NET I/O",
                    "BLOCK I/O",
                    "PIDS",
                ],
                &rows,
            )
        })?;
        if a.no_stream {
            return Ok(());
        }
        before = now;
    }
}

#[derive(Debug, Args)]
pub struct PsArgs {
    /// Show all containers, not only running ones.
    #[arg(short, long)]
    all: bool,
    /// Only IDs.
    #[arg(short, long)]
    quiet: bool,
    /// Filter: status=, name=, id=, label=, exited=.
    #[arg(short, long)]
    filter: Vec<String>,
    /// Full IDs and commands.
    #[arg(long)]
    no_trunc: bool,
}

pub async fn ps(client: &Client, fmt: Format, a: PsArgs) -> Result<(), CliError> {
    let mut path = format!("/v1/containers?all={}", a.all);
    if !a.filter.is_empty() {
        path.push_str(&format!("&filter={}", encode_segment(&a.filter.join(","))));
    }
    let list: Vec<ContainerSummary> = client.get(&path).await?;
    if a.quiet {
        for c in &list {
            println!("{}", if a.no_trunc { &c.id[..] } else { &c.id[..12] });
        }
        return Ok(());
    }
    let now = now_unix();
    // In a pool, each row's host.
    let pooled = list.iter().any(|c| c.host.is_some());
    print(fmt, &list, || {
        let rows: Vec<Vec<String>> = list
            .iter()
            .map(|c| {
                let cmd = format!("\"{}\"", c.command);
                let mut row = vec![
                    if a.no_trunc {
                        c.id.clone()
                    } else {
                        c.id[..12].to_string()
                    },
                    c.image.clone(),
                    if a.no_trunc { cmd } else { short_command(&cmd) },
                    parse_rfc3339(&c.created).map_or_else(String::new, |t| human_ago(t, now)),
                    c.status.clone(),
                    c.ports
                        .iter()
                        .map(|p| {
                            let ip = if p.host_ip.is_empty() {
                                "0.0.0.0"
                            } else {
                                &p.host_ip
                            };
                            format!("{ip}:{}->{}/{}", p.host_port, p.container_port, p.proto)
                        })
                        .collect::<Vec<_>>()
                        .join(", "),
                    c.name.clone(),
                ];
                if pooled {
                    row.push(c.host.clone().unwrap_or_default());
                }
                row
            })
            .collect();
        let mut headers = vec![
            "CONTAINER ID",
            "IMAGE",
            "COMMAND",
            "CREATED",
            "STATUS",
            "PORTS",
            "NAMES",
        ];
        if pooled {
            headers.push("HOST");
        }
        table(&headers, &rows)
    })
}

/// Runs `op` on each container named, printing each name as Docker does; fails if any
/// failed.
async fn each<F, Fut>(names: &[String], op: F) -> Result<(), CliError>
where
    F: Fn(String) -> Fut,
    Fut: std::future::Future<Output = Result<(), ClientError>>,
{
    let mut failures = 0;
    for n in names {
        match op(n.clone()).await {
            Ok(()) => crate::output::item(n, serde_json::json!({"container": n})),
            Err(e) => {
                crate::output::item_error(n, &e);
                failures += 1;
            }
        }
    }
    if failures > 0 {
        return Err(fail(format!(
            "{failures} of {} containers failed",
            names.len()
        )));
    }
    Ok(())
}

/// `pier start -a [-i] [--detach-keys]`: starts one container attached to its output
/// (and input with `-i`), as `run` without `-d`; exits with the container's exit code.
pub async fn start_attach(
    client: &Client,
    name: &str,
    interactive: bool,
    detach_keys: Option<String>,
) -> Result<(), CliError> {
    let keys = crate::run_opts::parse_detach_keys(detach_keys.as_deref())?;
    let c: ContainerInspect = client
        .get(&format!("/v1/containers/{}", encode_segment(name)))
        .await?;
    let s = Attached {
        tty: c.config.tty,
        stdin: interactive && c.config.interactive,
        keys,
        removed: c.config.auto_remove,
        sig_proxy: true,
    };
    start_attached(client, c.id.as_ref(), s).await
}

pub async fn start(client: &Client, names: &[String]) -> Result<(), CliError> {
    each(names, |n| async move {
        client
            .post_empty(&format!("/v1/containers/{}/start", encode_segment(&n)))
            .await
    })
    .await
}

pub async fn stop(
    client: &Client,
    names: &[String],
    time: Option<u64>,
    signal: Option<String>,
    restart: bool,
) -> Result<(), CliError> {
    let mut q = String::new();
    if let Some(t) = time {
        q.push_str(&format!("t={t}&"));
    }
    if let Some(s) = &signal {
        q.push_str(&format!("signal={}", encode_segment(s)));
    }
    let verb = if restart { "restart" } else { "stop" };
    each(names, |n| {
        let q = q.clone();
        async move {
            client
                .post_empty(&format!("/v1/containers/{}/{verb}?{q}", encode_segment(&n)))
                .await
        }
    })
    .await
}

pub async fn kill(
    client: &Client,
    names: &[String],
    signal: Option<String>,
) -> Result<(), CliError> {
    let q = signal
        .map(|s| format!("?signal={}", encode_segment(&s)))
        .unwrap_or_default();
    each(names, |n| {
        let q = q.clone();
        async move {
            client
                .post_empty(&format!("/v1/containers/{}/kill{q}", encode_segment(&n)))
                .await
        }
    })
    .await
}

pub async fn rm(
    client: &Client,
    names: &[String],
    force: bool,
    volumes: bool,
) -> Result<(), CliError> {
    each(names, |n| async move {
        client
            .delete_empty(&format!(
                "/v1/containers/{}?force={force}&volumes={volumes}",
                encode_segment(&n)
            ))
            .await
    })
    .await
}

pub async fn pause(client: &Client, names: &[String], paused: bool) -> Result<(), CliError> {
    let verb = if paused { "pause" } else { "unpause" };
    each(names, |n| async move {
        client
            .post_empty(&format!("/v1/containers/{}/{verb}", encode_segment(&n)))
            .await
    })
    .await
}

/// Prints each container's exit code once it stops (and, like `docker wait`, exits 0).
pub async fn wait(client: &Client, names: &[String]) -> Result<(), CliError> {
    for n in names {
        let w: WaitResponse = client
            .post(&format!("/v1/containers/{}/wait", encode_segment(n)), &())
            .await?;
        crate::output::item(
            &w.exit_code.to_string(),
            serde_json::json!({"container": n, "exit_code": w.exit_code}),
        );
    }
    Ok(())
}

pub async fn inspect(client: &Client, fmt: Format, names: &[String]) -> Result<(), CliError> {
    let mut out = Vec::new();
    let mut missing = Vec::new();
    for n in names {
        match client
            .get::<ContainerInspect>(&format!("/v1/containers/{}", encode_segment(n)))
            .await
        {
            Ok(c) => out.push(serde_json::to_value(c).expect("json")),
            // Like `docker inspect`: an image by that name will do.
            Err(ClientError::Api { status: 404, .. }) => match client.inspect_image(n).await {
                Ok(i) => out.push(serde_json::to_value(i).expect("json")),
                Err(ClientError::Api { status: 404, .. }) => missing.push(n.as_str()),
                Err(e) => return Err(e.into()),
            },
            Err(e) => return Err(e.into()),
        }
    }
    match fmt {
        // `inspect -f`: the template once per object, with Docker's field paths.
        Format::Template { table, src } => {
            let views: Vec<serde_json::Value> =
                out.iter().map(crate::inspect_view::docker_view).collect();
            let text =
                crate::output::render_template(table, src, &serde_json::Value::Array(views))?;
            crate::output::outln(&text);
        }
        // With `--format json`, nothing found prints nothing: the error is the JSON line.
        Format::Json if out.is_empty() => {}
        _ => print(Format::Json, &out, String::new)?,
    }
    // As `docker inspect`: what was found, then an error naming what was not.
    match missing.is_empty() {
        true => Ok(()),
        false => Err(crate::fail(format!(
            "no such container or image: {}",
            missing.join(", ")
        ))),
    }
}

#[derive(Debug, Args)]
pub struct LogsArgs {
    /// Keep following the output.
    #[arg(short, long)]
    follow: bool,
    /// Number of lines to show from the end.
    #[arg(short = 'n', long)]
    tail: Option<String>,
    /// Only lines since this time (RFC 3339, Unix seconds, or a duration like 10m).
    #[arg(long)]
    since: Option<String>,
    /// Show timestamps.
    #[arg(short, long)]
    timestamps: bool,
    container: String,
}

pub async fn logs(client: &Client, a: LogsArgs) -> Result<(), CliError> {
    let mut q = format!("follow={}", a.follow);
    if let Some(t) = a.tail.filter(|t| t != "all") {
        let n: usize = t
            .parse()
            .map_err(|_| fail(format!("invalid --tail {t:?}: give a number or all")))?;
        q.push_str(&format!("&tail={n}"));
    }
    if let Some(s) = a.since {
        let since = match duration_secs(&s) {
            Some(d) => (now_unix() - d).to_string(),
            None => s,
        };
        q.push_str(&format!("&since={}", encode_segment(&since)));
    }
    stream_logs(
        client,
        &format!("/v1/containers/{}/logs?{q}", encode_segment(&a.container)),
        a.timestamps,
    )
    .await
}

/// `10s`, `5m`, `2h` as seconds.
fn duration_secs(s: &str) -> Option<i64> {
    let (n, unit) = s.split_at(s.len().checked_sub(1)?);
    let n: i64 = n.parse().ok()?;
    Some(
        n * match unit {
            "s" => 1,
            "m" => 60,
            "h" => 3600,
            _ => return None,
        },
    )
}

pub async fn rename(client: &Client, old: &str, new: &str) -> Result<(), CliError> {
    client
        .post_empty(&format!(
            "/v1/containers/{}/rename?name={}",
            encode_segment(old),
            encode_segment(new)
        ))
        .await?;
    Ok(())
}

/// `ps`'s COMMAND column: a quoted command longer than 22 characters cut to its first 20
/// and an ellipsis, as Docker's (counted in characters, never inside one).
fn short_command(quoted: &str) -> String {
    if quoted.chars().count() <= 22 {
        return quoted.to_string();
    }
    format!("{}…\"", quoted.chars().take(20).collect::<String>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_command_is_cut_between_characters() {
        assert_eq!(short_command("\"sleep 1\""), "\"sleep 1\"");
        assert_eq!(
            short_command("\"sh -c 'while true; do sleep 1; done'\""),
            "\"sh -c 'while true; …\""
        );
        // A multi-byte character across byte 20 is kept whole.
        let cut = short_command("\"echo ééééééééééééééééééé\"");
        assert_eq!(cut, "\"echo éééééééééééééé…\"");
        assert_eq!(cut.chars().count(), 22);
    }

    #[test]
    fn sizes_and_limits() {
        assert_eq!(parse_size("64m").unwrap(), 64 << 20);
        assert_eq!(parse_size("1g").unwrap(), 1 << 30);
        assert_eq!(parse_size("1.5k").unwrap(), 1536);
        assert_eq!(parse_size("10").unwrap(), 10);
        assert_eq!(parse_size("-1").unwrap(), -1);
        assert!(parse_size("lots").is_err());
        assert_eq!(
            parse_ulimit("nofile=100:200").unwrap(),
            Ulimit {
                name: "nofile".into(),
                soft: 100,
                hard: 200
            }
        );
        assert_eq!(parse_ulimit("nproc=50").unwrap().hard, 50);
        assert!(parse_ulimit("nofile").is_err());
        assert_eq!(
            parse_restart("on-failure:3").unwrap(),
            RestartPolicy::OnFailure { max_retries: 3 }
        );
        assert_eq!(parse_restart("always").unwrap(), RestartPolicy::Always);
        assert!(parse_restart("sometimes").is_err());
        assert_eq!(duration_secs("10m"), Some(600));
    }

    fn request(args: &[&str]) -> Result<ContainerCreate, CliError> {
        #[derive(clap::Parser)]
        struct Run {
            #[command(flatten)]
            a: CreateArgs,
        }
        let argv = std::iter::once("run").chain(args.iter().copied());
        create_request(
            <Run as clap::Parser>::try_parse_from(argv).unwrap().a,
            false,
        )
    }

    #[test]
    fn flags_are_parsed_once_and_sent_as_given() {
        let r = request(&[
            "-p",
            "127.0.0.1:8080:80/udp",
            "--ip",
            "10.31.0.200",
            "--mac-address",
            "02:00:00:AA:BB:CC",
            "-v",
            "data:/data:ro",
            "--tmpfs",
            "/t:size=1m",
            "--memory",
            "64MiB",
            "bb",
        ])
        .unwrap();
        let wire = serde_json::to_value(&r).unwrap();
        assert_eq!(
            wire["publish"],
            serde_json::json!(["127.0.0.1:8080:80/udp"])
        );
        assert_eq!(wire["ip"], "10.31.0.200");
        assert_eq!(wire["mac_address"], "02:00:00:aa:bb:cc");
        assert_eq!(wire["memory"], 64 << 20);
        assert_eq!(r.mounts[0].source.as_deref(), Some("data"));
        assert!(r.mounts[0].read_only);
        assert_eq!(r.mounts[1].options["size"], "1m");
    }

    #[test]
    fn flags_the_engine_checked_keep_its_exit_code() {
        for (args, code, msg) in [
            (
                &["-p", "80/sctp"][..],
                125,
                "invalid port mapping \"80/sctp\"",
            ),
            (
                &["--ip", "10.0.0"],
                125,
                "--ip \"10.0.0\" is not an IPv4 address",
            ),
            (
                &["--mac-address", "01:00:5e:00:00:01"],
                125,
                "--mac-address \"01:00:5e:00:00:01\" is not a unicast MAC address",
            ),
            (&["-v", "/a:/b:bogus"], 1, "invalid mode \"bogus\""),
            (&["--memory", "lots"], 1, "invalid size \"lots\""),
        ] {
            let mut argv = args.to_vec();
            argv.push("bb");
            let e = request(&argv).unwrap_err();
            assert_eq!(e.code, code, "{args:?}: {}", e.message);
            assert!(e.message.starts_with(msg), "{args:?}: {}", e.message);
        }
    }
}
