//! A Pier container in Docker's JSON shapes: the full inspect (`docker inspect`) and the
//! summary of a listing (`docker ps`). The `Config` shown is the effective one, the
//! image's settings merged with the container's, as Docker shows it. What the record
//! does not hold (the image's config, host paths) comes in [`ContainerFacts`] and
//! [`HostPaths`], which the engine fills.

use crate::containers::DeviceIoKind;
use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;

use serde_json::{json, Value};

use super::{derived_id, unix, DEFAULT_NETWORK, ZERO_TIME};
use crate::containers::{
    ContainerInspect, ContainerStatus, Health, HealthStatus, Healthcheck, RestartPolicy,
};
use crate::networks::Endpoint;
use crate::time::{now_unix, parse_rfc3339};

/// What the engine knows of a container beyond its record, for its Docker shapes.
#[derive(Debug, Clone, Default)]
pub struct ContainerFacts {
    /// The runtime config of its image (`config` of the OCI image config); `{}` unknown.
    pub image_config: Value,
    /// The health check that applies: its own fields over its image's.
    pub healthcheck: Option<Healthcheck>,
    /// The host directories of the named volumes it mounts, by name.
    pub volume_dirs: BTreeMap<String, PathBuf>,
}

/// A container's host paths, as `docker inspect` shows them.
#[derive(Debug, Clone, Default)]
pub struct HostPaths {
    pub resolv_conf: PathBuf,
    pub hostname: PathBuf,
    pub hosts: PathBuf,
    pub upper: PathBuf,
    pub work: PathBuf,
    pub merged: PathBuf,
    /// The image's layer directories, top first.
    pub lower_dirs: Vec<PathBuf>,
    /// The network namespace of a running container.
    pub sandbox_key: Option<PathBuf>,
}

fn strings(v: &Value) -> Option<Vec<String>> {
    v.as_array().map(|a| {
        a.iter()
            .filter_map(|s| s.as_str().map(String::from))
            .collect()
    })
}

fn nonempty_str(v: &Value) -> Option<String> {
    v.as_str().filter(|s| !s.is_empty()).map(String::from)
}

/// Docker's healthcheck JSON.
/// The string labels of an image's container config (its `config` object).
pub fn image_labels(config: &Value) -> BTreeMap<String, String> {
    config["Labels"]
        .as_object()
        .map(|o| {
            o.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

/// A container's labels as Docker shows them: its image's, then its own over them.
fn labels(c: &ContainerInspect, img: &Value) -> BTreeMap<String, String> {
    let mut labels = image_labels(img);
    labels.extend(c.config.labels.clone());
    labels
}

pub fn healthcheck_json(h: &Healthcheck) -> Value {
    json!({
        "Test": h.test,
        "Interval": h.interval_ns,
        "Timeout": h.timeout_ns,
        "StartPeriod": h.start_period_ns,
        "Retries": h.retries,
    })
}

/// A running container's health: recorded, or `starting` until the first check.
pub fn health(c: &ContainerInspect, f: &ContainerFacts) -> Option<Health> {
    f.healthcheck.as_ref()?;
    match &c.state.health {
        Some(h) => Some(h.clone()),
        None if is_running(c) => Some(Health::default()),
        None => None,
    }
}

pub fn is_running(c: &ContainerInspect) -> bool {
    matches!(
        c.state.status,
        ContainerStatus::Running | ContainerStatus::Paused
    )
}

fn health_json(h: &Health) -> Value {
    json!({
        "Status": h.status.as_str(),
        "FailingStreak": h.failing_streak,
        "Log": h.log.iter().map(|r| json!({
            "Start": r.start, "End": r.end, "ExitCode": r.exit_code, "Output": r.output,
        })).collect::<Vec<_>>(),
    })
}

/// Docker's `HumanDuration`.
pub fn human_duration(secs: i64) -> String {
    let s = secs.max(0);
    let (m, h) = (s / 60, s / 3600);
    match () {
        _ if s < 1 => "Less than a second".into(),
        _ if s == 1 => "1 second".into(),
        _ if s < 60 => format!("{s} seconds"),
        _ if m == 1 => "About a minute".into(),
        _ if m < 60 => format!("{m} minutes"),
        _ if h == 1 => "About an hour".into(),
        _ if h < 48 => format!("{h} hours"),
        _ if h < 24 * 7 * 2 => format!("{} days", h / 24),
        _ if h < 24 * 30 * 2 => format!("{} weeks", h / 24 / 7),
        _ if h < 24 * 365 * 2 => format!("{} months", h / 24 / 30),
        _ => format!("{} years", h / 24 / 365),
    }
}

/// The `STATUS` column of `docker ps`.
pub fn status_text(c: &ContainerInspect, health: Option<&Health>) -> String {
    state_status_text(&c.state, health, now_unix())
}

/// The `STATUS` column of `docker ps` for a container in state `s` at `now` (Unix
/// seconds): also what a member shows for another host's instance.
pub fn state_status_text(
    s: &crate::containers::ContainerState,
    health: Option<&Health>,
    now: i64,
) -> String {
    let ago = |t: &Option<String>| {
        human_duration(now - t.as_deref().and_then(parse_rfc3339).unwrap_or(now))
    };
    match s.status {
        ContainerStatus::Created => "Created".into(),
        ContainerStatus::Running | ContainerStatus::Paused => {
            let mut t = format!("Up {}", ago(&s.started_at));
            if s.status == ContainerStatus::Paused {
                t.push_str(" (Paused)");
            } else if let Some(h) = health {
                t.push_str(match h.status {
                    HealthStatus::Starting => " (health: starting)",
                    HealthStatus::Healthy => " (healthy)",
                    HealthStatus::Unhealthy => " (unhealthy)",
                });
            }
            t
        }
        ContainerStatus::Restarting => format!(
            "Restarting ({}) {} ago",
            s.exit_code.unwrap_or(0),
            ago(&s.finished_at)
        ),
        ContainerStatus::Exited => format!(
            "Exited ({}) {} ago",
            s.exit_code.unwrap_or(0),
            ago(&s.finished_at)
        ),
        ContainerStatus::Removing => "Removal In Progress".into(),
    }
}

/// The effective environment: the image's, then the container's, with a default PATH.
fn env(c: &ContainerInspect, img: &Value) -> Vec<String> {
    let mut env = strings(&img["Env"]).unwrap_or_default();
    if !env.iter().any(|e| e.starts_with("PATH=")) {
        env.insert(
            0,
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
        );
    }
    for e in &c.config.env {
        let k = e.split('=').next().unwrap_or("");
        env.retain(|x| x.split('=').next() != Some(k));
        env.push(e.clone());
    }
    env
}

/// Published ports asked for, by `port/proto`: (host IP, host port), as `-p` gave them.
fn port_requests(c: &ContainerInspect) -> BTreeMap<String, Vec<(String, String)>> {
    let mut out: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    for spec in &c.config.publish {
        for r in spec.requests() {
            let key = format!("{}/{}", r.container_port, proto_name(r.proto));
            let host_port = match r.host_range {
                (0, 0) => String::new(),
                (a, b) if a == b => a.to_string(),
                (a, b) => format!("{a}-{b}"),
            };
            let ip = r.host_ip.map(|i| i.to_string()).unwrap_or_default();
            out.entry(key).or_default().push((ip, host_port));
        }
    }
    out
}

fn proto_name(p: crate::ports::Proto) -> &'static str {
    match p {
        crate::ports::Proto::Udp => "udp",
        _ => "tcp",
    }
}

/// `port/proto` of every exposed port: the image's, `--expose`, and those published.
fn exposed(c: &ContainerInspect, img: &Value) -> BTreeMap<String, Value> {
    let mut out: BTreeMap<String, Value> = img["ExposedPorts"]
        .as_object()
        .map(|o| o.keys().map(|k| (k.clone(), json!({}))).collect())
        .unwrap_or_default();
    for e in &c.config.expose {
        let k = if e.contains('/') {
            e.clone()
        } else {
            format!("{e}/tcp")
        };
        out.insert(k, json!({}));
    }
    for k in port_requests(c).keys() {
        out.insert(k.clone(), json!({}));
    }
    for p in &c.ports {
        out.insert(format!("{}/{}", p.container_port, p.proto), json!({}));
    }
    out
}

/// The effective `Config` of a container.
pub fn config_json(c: &ContainerInspect, f: &ContainerFacts) -> Value {
    let img = &f.image_config;
    let entrypoint = c
        .config
        .entrypoint
        .clone()
        .or_else(|| strings(&img["Entrypoint"]));
    let cmd = match &c.config.cmd {
        Some(cmd) => Some(cmd.clone()),
        None if c.config.entrypoint.is_some() => None,
        None => strings(&img["Cmd"]),
    };
    let labels = labels(c, img);
    let mut cfg = json!({
        "Hostname": c.config.hostname.clone().unwrap_or_else(|| c.id[..12].to_string()),
        "Domainname": c.config.domainname.clone().unwrap_or_default(),
        "User": c.config.user.clone().or_else(|| nonempty_str(&img["User"])).unwrap_or_default(),
        "AttachStdin": c.config.interactive,
        "AttachStdout": true,
        "AttachStderr": true,
        "ExposedPorts": exposed(c, img),
        "Tty": c.config.tty,
        "OpenStdin": c.config.interactive,
        "StdinOnce": false,
        "Env": env(c, img),
        "Cmd": cmd,
        "Image": c.image,
        "Volumes": super::mounts::config_volumes(c, img),
        "WorkingDir": c.config.workdir.clone().or_else(|| nonempty_str(&img["WorkingDir"])).unwrap_or_default(),
        "Entrypoint": entrypoint,
        "OnBuild": null,
        "Labels": labels,
    });
    if let Some(h) = &f.healthcheck {
        cfg["Healthcheck"] = healthcheck_json(h);
    }
    if let Some(s) = c
        .config
        .stop_signal
        .clone()
        .or_else(|| nonempty_str(&img["StopSignal"]))
    {
        cfg["StopSignal"] = json!(s);
    }
    if let Some(t) = c.config.stop_timeout {
        cfg["StopTimeout"] = json!(t);
    }
    if let Some(m) = &c.config.mac_address {
        cfg["MacAddress"] = json!(m);
    }
    cfg
}

fn restart_json(p: &RestartPolicy) -> Value {
    match p {
        RestartPolicy::No => json!({"Name": "no", "MaximumRetryCount": 0}),
        RestartPolicy::Always => json!({"Name": "always", "MaximumRetryCount": 0}),
        RestartPolicy::UnlessStopped => json!({"Name": "unless-stopped", "MaximumRetryCount": 0}),
        RestartPolicy::OnFailure { max_retries } => {
            json!({"Name": "on-failure", "MaximumRetryCount": max_retries})
        }
    }
}

/// The network mode as Docker names it.
pub fn network_mode(c: &ContainerInspect) -> String {
    c.config
        .network
        .clone()
        .unwrap_or_else(|| DEFAULT_NETWORK.into())
}

fn host_config_json(c: &ContainerInspect) -> Value {
    let r = &c.config;
    let bindings: BTreeMap<String, Value> = port_requests(c)
        .into_iter()
        .map(|(k, v)| {
            let list: Vec<Value> = v
                .into_iter()
                .map(|(ip, port)| json!({"HostIp": ip, "HostPort": port}))
                .collect();
            (k, json!(list))
        })
        .collect();
    let mut log_config = BTreeMap::new();
    for (k, v) in &r.log_opts {
        log_config.insert(k.clone(), v.clone());
    }
    let cpus = r.cpus.map_or(0, |c| (c * 1e9) as i64);
    json!({
        "Binds": super::mounts::binds_json(c),
        "ContainerIDFile": "",
        "LogConfig": {"Type": r.log_driver.as_deref().unwrap_or("json-file"), "Config": log_config},
        "NetworkMode": network_mode(c),
        "PortBindings": bindings,
        "RestartPolicy": restart_json(&r.restart_policy),
        "AutoRemove": r.auto_remove,
        "VolumeDriver": r.volume_driver.clone().unwrap_or_default(),
        "VolumesFrom": (!r.volumes_from.is_empty()).then_some(&r.volumes_from),
        "ConsoleSize": [0, 0],
        "CapAdd": r.cap_add,
        "CapDrop": r.cap_drop,
        "CgroupnsMode": r.cgroupns_mode.clone().unwrap_or_else(|| "host".into()),
        "Dns": r.dns,
        "DnsOptions": r.dns_options,
        "DnsSearch": r.dns_search,
        "ExtraHosts": r.extra_hosts,
        "GroupAdd": (!r.group_add.is_empty()).then_some(&r.group_add),
        "IpcMode": r.ipc_mode.clone().unwrap_or_else(|| "private".into()),
        "Cgroup": "",
        "Links": (!r.links.is_empty()).then(|| legacy_links(c)),
        "OomScoreAdj": r.oom_score_adj.unwrap_or(0),
        "PidMode": r.pid_mode.clone().unwrap_or_default(),
        "Privileged": r.privileged,
        "PublishAllPorts": r.publish_all,
        "ReadonlyRootfs": r.read_only,
        "SecurityOpt": r.security_opt,
        "UTSMode": r.uts_mode.clone().unwrap_or_default(),
        "UsernsMode": r.userns_mode.clone().unwrap_or_default(),
        "ShmSize": crate::limits::shm_size(r),
        // Docker calls its default runtime `runc`; Pier's own is that default here.
        "Runtime": r.runtime.clone().unwrap_or_else(|| "runc".into()),
        "Isolation": r.isolation.clone().unwrap_or_default(),
        "CpuShares": r.cpu_shares.unwrap_or(0),
        "Memory": r.memory.unwrap_or(0),
        "NanoCpus": cpus,
        "CgroupParent": r.cgroup_parent.clone().unwrap_or_default(),
        "BlkioWeight": r.blkio_weight.unwrap_or(0),
        "BlkioWeightDevice": device_io_json(r, DeviceIoKind::Weight, "Weight"),
        "BlkioDeviceReadBps": device_io_json(r, DeviceIoKind::ReadBps, "Rate"),
        "BlkioDeviceWriteBps": device_io_json(r, DeviceIoKind::WriteBps, "Rate"),
        "BlkioDeviceReadIOps": device_io_json(r, DeviceIoKind::ReadIops, "Rate"),
        "BlkioDeviceWriteIOps": device_io_json(r, DeviceIoKind::WriteIops, "Rate"),
        "CpuPeriod": 0,
        "CpuQuota": 0,
        "CpuRealtimePeriod": r.cpu_rt_period.unwrap_or(0),
        "CpuRealtimeRuntime": r.cpu_rt_runtime.unwrap_or(0),
        "KernelMemory": r.kernel_memory.unwrap_or(0),
        "KernelMemoryTCP": r.kernel_memory_tcp.unwrap_or(0),
        "CpusetCpus": r.cpuset_cpus.clone().unwrap_or_default(),
        "CpusetMems": r.cpuset_mems.clone().unwrap_or_default(),
        "Devices": r.devices.iter().map(|d| serde_json::json!({"PathOnHost": d.path_on_host, "PathInContainer": d.path_in_container, "CgroupPermissions": if d.permissions.is_empty() { "rwm" } else { &d.permissions }})).collect::<Vec<_>>(),
        "Sysctls": (!r.sysctls.is_empty()).then_some(&r.sysctls),
        "DeviceCgroupRules": (!r.device_cgroup_rules.is_empty()).then_some(&r.device_cgroup_rules),
        "DeviceRequests": null,
        "MemoryReservation": r.memory_reservation.unwrap_or(0),
        "MemorySwap": r.memory_swap.unwrap_or(0),
        "MemorySwappiness": r.memory_swappiness,
        "OomKillDisable": r.oom_kill_disable,
        "PidsLimit": r.pids_limit,
        "Ulimits": r.ulimits.iter().map(|u| json!({"Name": u.name, "Soft": u.soft, "Hard": u.hard})).collect::<Vec<_>>(),
        "Init": r.init,
        "Mounts": super::mounts::host_config_mounts(c),
        "Tmpfs": super::mounts::tmpfs_json(c),
        "StorageOpt": if r.storage_opts.is_empty() { Value::Null } else { json!(r.storage_opts) },
        "MaskedPaths": [],
        "ReadonlyPaths": [],
    })
}

/// The per-device I/O limits of one kind, as Docker lists them (`[{"Path", FIELD}]`).
fn device_io_json(
    r: &crate::containers::ContainerCreate,
    kind: DeviceIoKind,
    field: &str,
) -> Value {
    let list: Vec<Value> = r
        .device_io
        .iter()
        .filter(|d| d.kind == kind)
        .map(|d| json!({"Path": d.path, field: d.value}))
        .collect();
    if list.is_empty() {
        Value::Null
    } else {
        json!(list)
    }
}

/// `--link` as Docker shows it in `HostConfig.Links`: `/NAME:/CONTAINER/ALIAS`.
fn legacy_links(c: &ContainerInspect) -> Vec<String> {
    c.config
        .links
        .iter()
        .map(|l| {
            let (name, alias) = l.split_once(':').unwrap_or((l, l));
            format!("/{name}:/{}/{alias}", c.name)
        })
        .collect()
}

/// A stable endpoint ID for a container on a network.
fn endpoint_id(c: &ContainerInspect, network_id: &str) -> String {
    derived_id(&[&c.id, network_id], 64)
}

/// An endpoint's `IPAMConfig`: the addresses asked for, null when none was.
fn ipam_config_json(ep: &Endpoint) -> Value {
    let link_local = &ep.options.link_local_ips;
    if ep.static_ip.is_none() && ep.static_ip6.is_none() && link_local.is_empty() {
        return Value::Null;
    }
    let mut v = json!({});
    if let Some(ip) = ep.static_ip {
        v["IPv4Address"] = json!(ip);
    }
    if let Some(ip) = ep.static_ip6 {
        v["IPv6Address"] = json!(ip);
    }
    if !link_local.is_empty() {
        v["LinkLocalIPs"] = json!(link_local);
    }
    v
}

pub fn endpoint_json(c: &ContainerInspect, ep: &Endpoint) -> Value {
    let up = ep.ip_address.is_some();
    let mut dns_names = vec![];
    if up {
        dns_names.push(c.name.clone());
        dns_names.push(c.id[..12].to_string());
        dns_names.extend(ep.aliases.iter().cloned());
    }
    let o = &ep.options;
    json!({
        "IPAMConfig": ipam_config_json(ep),
        "Links": (!o.links.is_empty()).then_some(&o.links),
        "Aliases": if ep.aliases.is_empty() { Value::Null } else { json!(ep.aliases) },
        "MacAddress": ep.mac_address.or(ep.static_mac).map(|m| m.to_string()).unwrap_or_default(),
        "DriverOpts": (!o.driver_opts.is_empty()).then_some(&o.driver_opts),
        "NetworkID": ep.network_id,
        "EndpointID": if up { endpoint_id(c, &ep.network_id) } else { String::new() },
        "Gateway": ep.gateway.map(|g| g.to_string()).unwrap_or_default(),
        "IPAddress": ep.ip_address.map(|ip| ip.to_string()).unwrap_or_default(),
        "IPPrefixLen": ep.prefix_len.unwrap_or(0),
        "IPv6Gateway": ep.gateway6.map(|g| g.to_string()).unwrap_or_default(),
        "GlobalIPv6Address": ep.ip6_address.map(|ip| ip.to_string()).unwrap_or_default(),
        "GlobalIPv6PrefixLen": ep.prefix6_len.unwrap_or(0),
        "DNSNames": if dns_names.is_empty() { Value::Null } else { json!(dns_names) },
    })
}

fn networks_json(c: &ContainerInspect) -> BTreeMap<String, Value> {
    let mode = network_mode(c);
    if mode == "host" || mode == "none" {
        let ep = Endpoint::default();
        return BTreeMap::from([(mode, endpoint_json(c, &ep))]);
    }
    c.networks
        .iter()
        .map(|(name, ep)| (name.clone(), endpoint_json(c, ep)))
        .collect()
}

fn ports_json(c: &ContainerInspect, img: &Value) -> Value {
    if !is_running(c) {
        return json!({});
    }
    let mut out: BTreeMap<String, Value> = exposed(c, img)
        .into_keys()
        .map(|k| (k, Value::Null))
        .collect();
    for p in &c.ports {
        let key = format!("{}/{}", p.container_port, p.proto);
        let ip = if p.host_ip.is_empty() {
            "0.0.0.0"
        } else {
            p.host_ip.as_str()
        };
        let entry = out.entry(key).or_insert(Value::Null);
        if !entry.is_array() {
            *entry = json!([]);
        }
        if let Some(a) = entry.as_array_mut() {
            a.push(json!({"HostIp": ip, "HostPort": p.host_port.to_string()}));
        }
    }
    json!(out)
}

/// `docker inspect CONTAINER`.
pub fn inspect(c: &ContainerInspect, f: &ContainerFacts, paths: &HostPaths) -> Value {
    let img = &f.image_config;
    let s = &c.state;
    let health = health(c, f);
    let mut state = json!({
        "Status": s.status.as_str(),
        "Running": is_running(c),
        "Paused": s.status == ContainerStatus::Paused,
        "Restarting": s.status == ContainerStatus::Restarting,
        "OOMKilled": s.oom_killed,
        "Dead": false,
        "Pid": s.pid.unwrap_or(0),
        "ExitCode": s.exit_code.unwrap_or(0),
        "Error": s.error.clone().unwrap_or_default(),
        "StartedAt": s.started_at.clone().unwrap_or_else(|| ZERO_TIME.into()),
        "FinishedAt": s.finished_at.clone().unwrap_or_else(|| ZERO_TIME.into()),
    });
    if let Some(h) = &health {
        state["Health"] = health_json(h);
    }
    let bridge = c.networks.get(DEFAULT_NETWORK);
    let lowers: Vec<String> = paths
        .lower_dirs
        .iter()
        .map(|l| l.display().to_string())
        .collect();
    json!({
        "Id": c.id,
        "Created": c.created,
        "Path": c.command.first().cloned().unwrap_or_default(),
        "Args": c.command.iter().skip(1).collect::<Vec<_>>(),
        "State": state,
        "Image": c.image_id.as_str(),
        "ResolvConfPath": paths.resolv_conf,
        "HostnamePath": paths.hostname,
        "HostsPath": paths.hosts,
        "LogPath": c.log_path,
        "Name": format!("/{}", c.name),
        "RestartCount": s.restart_count,
        "Driver": "overlay",
        "Platform": "linux",
        "MountLabel": "",
        "ProcessLabel": "",
        "AppArmorProfile": "",
        "ExecIDs": null,
        "HostConfig": host_config_json(c),
        "GraphDriver": {
            "Name": "overlay",
            "Data": {
                "LowerDir": lowers.join(":"),
                "UpperDir": paths.upper,
                "WorkDir": paths.work,
                "MergedDir": paths.merged,
            },
        },
        "Mounts": mounts_of(c, f),
        "Config": config_json(c, f),
        "NetworkSettings": {
            "Bridge": "",
            "SandboxID": if is_running(c) { endpoint_id(c, "sandbox") } else { String::new() },
            "HairpinMode": false,
            "LinkLocalIPv6Address": "",
            "LinkLocalIPv6PrefixLen": 0,
            "Ports": ports_json(c, img),
            "SandboxKey": match &paths.sandbox_key { Some(k) if is_running(c) => k.display().to_string(), _ => String::new() },
            "SecondaryIPAddresses": null,
            "SecondaryIPv6Addresses": null,
            "EndpointID": bridge.filter(|e| e.ip_address.is_some()).map(|e| endpoint_id(c, &e.network_id)).unwrap_or_default(),
            "Gateway": bridge.and_then(|e| e.gateway).map(|g| g.to_string()).unwrap_or_default(),
            "GlobalIPv6Address": bridge.and_then(|e| e.ip6_address).map(|ip| ip.to_string()).unwrap_or_default(),
            "GlobalIPv6PrefixLen": bridge.and_then(|e| e.prefix6_len).unwrap_or(0),
            "IPAddress": bridge.and_then(|e| e.ip_address).map(|ip| ip.to_string()).unwrap_or_default(),
            "IPPrefixLen": bridge.and_then(|e| e.prefix_len).unwrap_or(0),
            "IPv6Gateway": bridge.and_then(|e| e.gateway6).map(|g| g.to_string()).unwrap_or_default(),
            "MacAddress": bridge.and_then(|e| e.mac_address).map(|m| m.to_string()).unwrap_or_default(),
            "Networks": networks_json(c),
        },
    })
}

fn mounts_of(c: &ContainerInspect, f: &ContainerFacts) -> Value {
    super::mounts::mounts_json(c, &|name| {
        f.volume_dirs.get(name).cloned().unwrap_or_default()
    })
}

/// One entry of `GET /containers/json`.
pub fn summary(c: &ContainerInspect, f: &ContainerFacts) -> Value {
    let img = &f.image_config;
    let health = health(c, f);
    let mut ports: Vec<Value> = Vec::new();
    let mut published = HashSet::new();
    if is_running(c) {
        for p in &c.ports {
            published.insert(format!("{}/{}", p.container_port, p.proto));
            let ip = if p.host_ip.is_empty() {
                "0.0.0.0"
            } else {
                p.host_ip.as_str()
            };
            ports.push(json!({"IP": ip, "PrivatePort": p.container_port, "PublicPort": p.host_port, "Type": p.proto}));
        }
    }
    let shown = if is_running(c) {
        exposed(c, img)
    } else {
        BTreeMap::new()
    };
    for k in shown.keys() {
        if published.contains(k) {
            continue;
        }
        let (port, proto) = k.split_once('/').unwrap_or((k, "tcp"));
        if let Ok(port) = port.parse::<u16>() {
            ports.push(json!({"PrivatePort": port, "Type": proto}));
        }
    }
    let labels = labels(c, img);
    json!({
        "Id": c.id,
        "Names": [format!("/{}", c.name)],
        "Image": c.image,
        "ImageID": c.image_id.as_str(),
        "Command": c.command.join(" "),
        "Created": unix(Some(&c.created)),
        "Ports": ports,
        "Labels": labels,
        "State": c.state.status.as_str(),
        "Status": status_text(c, health.as_ref()),
        "HostConfig": {"NetworkMode": network_mode(c)},
        "NetworkSettings": {"Networks": networks_json(c)},
        "Mounts": mounts_of(c, f),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_dockers() {
        assert_eq!(human_duration(0), "Less than a second");
        assert_eq!(human_duration(1), "1 second");
        assert_eq!(human_duration(59), "59 seconds");
        assert_eq!(human_duration(61), "About a minute");
        assert_eq!(human_duration(600), "10 minutes");
        assert_eq!(human_duration(3700), "About an hour");
        assert_eq!(human_duration(5 * 3600), "5 hours");
        assert_eq!(human_duration(3 * 86400), "3 days");
    }
}
