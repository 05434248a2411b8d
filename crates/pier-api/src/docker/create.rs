//! Docker's create body (`Config` with `HostConfig` and `NetworkingConfig`) and its
//! mapping onto Pier's create request. What Pier cannot do is refused with a message
//! rather than dropped: other namespaces' modes, logging drivers other
//! than json-file and none, and every resource limit it does not apply
//! ([`refuse_unapplied_limits`]). The limits it does apply are passed on as given
//! (a negative memory limit too) and checked once for both APIs by
//! `crate::limits::check_resources`.

use std::collections::BTreeMap;

use crate::containers::{ContainerCreate, Healthcheck, RestartPolicy, Ulimit};
use crate::{ByteSize, Ipv4Address, MacAddress, PortSpec};
use serde::Deserialize;
use serde_json::Value;

use super::{Refused, Result};

/// A string or a list of strings (`Cmd` and `Entrypoint` come either way).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum StrOrList {
    One(String),
    Many(Vec<String>),
}

impl StrOrList {
    fn into_vec(self) -> Vec<String> {
        match self {
            StrOrList::One(s) => vec![s],
            StrOrList::Many(v) => v,
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct DockerHealthcheck {
    test: Option<StrOrList>,
    interval: Option<u64>,
    timeout: Option<u64>,
    retries: Option<u32>,
    start_period: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct CreateBody {
    hostname: Option<String>,
    domainname: Option<String>,
    user: Option<String>,
    exposed_ports: Option<BTreeMap<String, Value>>,
    tty: Option<bool>,
    open_stdin: Option<bool>,
    env: Option<Vec<String>>,
    cmd: Option<StrOrList>,
    healthcheck: Option<DockerHealthcheck>,
    image: Option<String>,
    volumes: Option<BTreeMap<String, Value>>,
    working_dir: Option<String>,
    entrypoint: Option<StrOrList>,
    network_disabled: Option<bool>,
    mac_address: Option<String>,
    labels: Option<BTreeMap<String, String>>,
    stop_signal: Option<String>,
    stop_timeout: Option<i64>,
    host_config: Option<HostConfig>,
    networking_config: Option<NetworkingConfig>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct PortBindingBody {
    host_ip: Option<String>,
    host_port: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct RestartPolicyBody {
    name: Option<String>,
    maximum_retry_count: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct UlimitBody {
    name: String,
    soft: i64,
    hard: i64,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct LogConfigBody {
    #[serde(rename = "Type")]
    kind: Option<String>,
    config: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct HostConfig {
    pub binds: Option<Vec<String>>,
    network_mode: Option<String>,
    port_bindings: Option<BTreeMap<String, Option<Vec<PortBindingBody>>>>,
    restart_policy: Option<RestartPolicyBody>,
    auto_remove: Option<bool>,
    volumes_from: Option<Vec<String>>,
    pub mounts: Option<Vec<Value>>,
    cap_add: Option<Vec<String>>,
    cap_drop: Option<Vec<String>>,
    dns: Option<Vec<String>>,
    dns_options: Option<Vec<String>>,
    dns_search: Option<Vec<String>>,
    extra_hosts: Option<Vec<String>>,
    links: Option<Vec<String>>,
    privileged: Option<bool>,
    publish_all_ports: Option<bool>,
    readonly_rootfs: Option<bool>,
    security_opt: Option<Vec<String>>,
    pub tmpfs: Option<BTreeMap<String, String>>,
    log_config: Option<LogConfigBody>,
    init: Option<bool>,
    runtime: Option<String>,
    memory: Option<i64>,
    memory_swap: Option<i64>,
    nano_cpus: Option<i64>,
    cpu_shares: Option<i64>,
    cpu_period: Option<i64>,
    cpu_quota: Option<i64>,
    cpuset_cpus: Option<String>,
    pids_limit: Option<i64>,
    blkio_weight: Option<u16>,
    ulimits: Option<Vec<UlimitBody>>,
    shm_size: Option<i64>,
    #[serde(flatten)]
    unapplied: UnappliedLimits,
    #[serde(flatten)]
    more: MoreLimits,
    devices: Option<Vec<Value>>,
    sysctls: Option<BTreeMap<String, String>>,
    pid_mode: Option<String>,
    ipc_mode: Option<String>,
    userns_mode: Option<String>,
    /// Docker's wire name (not PascalCase's `UtsMode`, under which it was never read).
    #[serde(rename = "UTSMode")]
    uts_mode: Option<String>,
    cgroup_parent: Option<String>,
    group_add: Option<Vec<String>>,
    storage_opt: Option<BTreeMap<String, String>>,
    cgroupns_mode: Option<String>,
    isolation: Option<String>,
    volume_driver: Option<String>,
    memory_swappiness: Option<i64>,
    device_cgroup_rules: Option<Vec<String>>,
}

/// Limits of Docker's `HostConfig` that Pier does not apply; each is refused when set
/// (the CLIs send them zero, empty, null or -1 when not asked for).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct UnappliedLimits {
    cpu_count: Option<i64>,
    cpu_percent: Option<i64>,
    device_requests: Option<Vec<Value>>,
    #[serde(rename = "IOMaximumIOps")]
    io_maximum_iops: Option<i64>,
    #[serde(rename = "IOMaximumBandwidth")]
    io_maximum_bandwidth: Option<i64>,
}

/// Docker's memory reservation, OOM, memory-node and per-device I/O fields, which Pier
/// applies (`ContainerCreate`'s of the same names).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct MoreLimits {
    kernel_memory: Option<i64>,
    #[serde(rename = "KernelMemoryTCP")]
    kernel_memory_tcp: Option<i64>,
    cpu_realtime_period: Option<i64>,
    cpu_realtime_runtime: Option<i64>,
    memory_reservation: Option<i64>,
    oom_kill_disable: Option<bool>,
    oom_score_adj: Option<i64>,
    cpuset_mems: Option<String>,
    blkio_weight_device: Option<Vec<WeightDevice>>,
    blkio_device_read_bps: Option<Vec<ThrottleDevice>>,
    blkio_device_write_bps: Option<Vec<ThrottleDevice>>,
    #[serde(rename = "BlkioDeviceReadIOps")]
    blkio_device_read_iops: Option<Vec<ThrottleDevice>>,
    #[serde(rename = "BlkioDeviceWriteIOps")]
    blkio_device_write_iops: Option<Vec<ThrottleDevice>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct WeightDevice {
    path: String,
    weight: u16,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct ThrottleDevice {
    path: String,
    rate: u64,
}

/// [`MoreLimits`] checked as Docker checks them, as the create request's fields.
struct CheckedLimits {
    memory_reservation: Option<i64>,
    oom_kill_disable: bool,
    oom_score_adj: Option<i32>,
    cpuset_mems: Option<String>,
    device_io: Vec<crate::containers::DeviceIoLimit>,
    kernel_memory: Option<i64>,
    kernel_memory_tcp: Option<i64>,
    cpu_rt_period: Option<i64>,
    cpu_rt_runtime: Option<i64>,
}

fn more_limits(m: MoreLimits) -> Result<CheckedLimits> {
    use crate::containers::{DeviceIoKind, DeviceIoLimit};
    let reservation = m.memory_reservation.filter(|r| *r != 0);
    if reservation.is_some_and(|r| r < crate::limits::MIN_MEMORY) {
        return Err(Refused::bad_request(
            "Minimum memory reservation allowed is 6MB",
        ));
    }
    let adj = m.oom_score_adj.filter(|a| *a != 0);
    if let Some(a) = adj.filter(|a| !(-1000..=1000).contains(a)) {
        return Err(Refused::bad_request(format!(
            "Invalid value {a}, range for oom score adj is [-1000, 1000]"
        )));
    }
    let mut io = Vec::new();
    for w in m.blkio_weight_device.into_iter().flatten() {
        if !(10..=1000).contains(&w.weight) {
            return Err(Refused::bad_request(format!(
                "invalid weight {} for {}: give 10 to 1000",
                w.weight, w.path
            )));
        }
        io.push(DeviceIoLimit {
            path: w.path,
            kind: DeviceIoKind::Weight,
            value: u64::from(w.weight),
        });
    }
    for (list, kind) in [
        (m.blkio_device_read_bps, DeviceIoKind::ReadBps),
        (m.blkio_device_write_bps, DeviceIoKind::WriteBps),
        (m.blkio_device_read_iops, DeviceIoKind::ReadIops),
        (m.blkio_device_write_iops, DeviceIoKind::WriteIops),
    ] {
        for t in list.into_iter().flatten() {
            io.push(DeviceIoLimit {
                path: t.path,
                kind,
                value: t.rate,
            });
        }
    }
    if let Some(d) = io.iter().find(|d| !d.path.starts_with("/dev/")) {
        return Err(Refused::bad_request(format!(
            "invalid device {:?} for a per-device I/O limit: give its path under /dev",
            d.path
        )));
    }
    let kernel_memory = m.kernel_memory.filter(|k| *k > 0);
    if kernel_memory.is_some_and(|k| k < 4 << 20) {
        return Err(Refused::bad_request(
            "Minimum kernel memory limit allowed is 4MB",
        ));
    }
    let rt_period = m.cpu_realtime_period.filter(|p| *p != 0);
    let rt_runtime = m.cpu_realtime_runtime.filter(|r| *r != 0);
    if let (Some(p), Some(r)) = (rt_period, rt_runtime) {
        if r > p {
            return Err(Refused::bad_request(
                "cpu real-time runtime cannot be higher than cpu real-time period",
            ));
        }
    }
    if rt_period.is_some_and(|p| !(1..=1_000_000).contains(&p))
        || rt_runtime.is_some_and(|r| r < -1)
    {
        return Err(Refused::bad_request(
            "invalid cpu real-time limits: the period is 1 to 1000000 microseconds and the runtime at most the period (-1: no limit)",
        ));
    }
    Ok(CheckedLimits {
        memory_reservation: reservation,
        oom_kill_disable: m.oom_kill_disable.unwrap_or(false),
        oom_score_adj: adj.map(|a| a as i32),
        cpuset_mems: nonempty(m.cpuset_mems),
        device_io: io,
        kernel_memory,
        kernel_memory_tcp: m.kernel_memory_tcp.filter(|k| *k > 0),
        cpu_rt_period: rt_period,
        cpu_rt_runtime: rt_runtime,
    })
}

/// Refuses every limit of [`UnappliedLimits`] that is set: a limit asked for and not
/// applied is an error, never a silent drop.
fn refuse_unapplied_limits(u: &UnappliedLimits) -> Result<()> {
    let not_applied = |flag: &str, field: &str| {
        Refused::bad_request(format!(
            "{flag} ({field}) is not supported by pier: the limit would not be applied; leave it out"
        ))
    };
    let set = |v: Option<i64>| v.is_some_and(|v| v != 0);
    let listed = |v: &Option<Vec<Value>>| v.as_ref().is_some_and(|v| !v.is_empty());
    if set(u.cpu_count) || set(u.cpu_percent) {
        return Err(not_applied("--cpu-count/--cpu-percent", "CpuCount"));
    }
    if listed(&u.device_requests) {
        return Err(not_applied("--gpus", "DeviceRequests"));
    }
    if set(u.io_maximum_iops) || set(u.io_maximum_bandwidth) {
        return Err(not_applied(
            "--io-maxiops/--io-maxbandwidth",
            "IOMaximumIOps",
        ));
    }
    Ok(())
}

/// Docker's CPU fields as Pier's `cpus`, with Docker's rules: `NanoCpus` excludes
/// `CpuPeriod` and `CpuQuota`; a period is 1 ms to 1 s; a quota at least 1 ms (-1: none).
/// A period without a quota limits nothing and is accepted as such; with one, their ratio
/// is applied (over Pier's period of 100 ms).
fn cpus_of(nano: Option<i64>, quota: Option<i64>, period: Option<i64>) -> Result<Option<f64>> {
    let nano = nano.filter(|n| *n != 0);
    let quota = quota.filter(|q| *q != 0);
    let period = period.filter(|p| *p != 0);
    if nano.is_some() && period.is_some() {
        return Err(Refused::bad_request(
            "Conflicting options: Nano CPUs and CPU Period cannot both be set",
        ));
    }
    if nano.is_some() && quota.is_some() {
        return Err(Refused::bad_request(
            "Conflicting options: Nano CPUs and CPU Quota cannot both be set",
        ));
    }
    if let Some(p) = period {
        if !(1000..=1_000_000).contains(&p) {
            return Err(Refused::bad_request(
                "CPU cfs period can not be less than 1ms (i.e. 1000) or larger than 1s (i.e. 1000000)",
            ));
        }
    }
    if let Some(q) = quota {
        if q < -1 || (0..1000).contains(&q) {
            return Err(Refused::bad_request(
                "CPU cfs quota can not be less than 1ms (i.e. 1000); -1 means no quota",
            ));
        }
    }
    Ok(match (nano, quota) {
        // Negative or too many: checked with the native API's --cpus.
        (Some(n), _) => Some(n as f64 / 1e9),
        (_, Some(q)) if q > 0 => Some(q as f64 / period.unwrap_or(100_000) as f64),
        _ => None,
    })
}

/// A ulimit's value from Docker's body: -1 is unlimited; other negatives are refused.
fn ulimit_value(name: &str, v: i64) -> Result<u64> {
    match v {
        -1 => Ok(u64::MAX),
        v if v < 0 => Err(Refused::bad_request(format!(
            "invalid ulimit {name}={v}: give a number, or -1 for unlimited"
        ))),
        v => Ok(v as u64),
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct IpamConfigBody {
    #[serde(rename = "IPv4Address")]
    ipv4_address: Option<String>,
    #[serde(rename = "IPv6Address")]
    ipv6_address: Option<String>,
    #[serde(rename = "LinkLocalIPs")]
    link_local_ips: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct EndpointConfig {
    #[serde(rename = "IPAMConfig")]
    ipam_config: Option<IpamConfigBody>,
    aliases: Option<Vec<String>>,
    mac_address: Option<String>,
    links: Option<Vec<String>>,
    driver_opts: Option<BTreeMap<String, String>>,
}

/// A link as Docker writes it (`NAME:ALIAS`, the alias the name when absent), checked.
pub fn link_of(l: &str) -> Result<String> {
    let l = l.trim_start_matches('/');
    let (name, alias) = l.split_once(':').unwrap_or((l, l));
    let alias = alias.rsplit('/').next().unwrap_or(alias);
    let ok = |s: &str| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
    };
    if !ok(name) || !ok(alias) {
        return Err(Refused::bad_request(format!(
            "invalid link {l:?}: use NAME[:ALIAS], e.g. db:database"
        )));
    }
    Ok(format!("{name}:{alias}"))
}

impl EndpointConfig {
    /// The endpoint's MAC address, checked.
    pub fn mac(&self) -> Result<Option<MacAddress>> {
        nonempty(self.mac_address.clone())
            .map(|m| m.parse::<MacAddress>())
            .transpose()
            .map_err(|e| Refused::bad_request(format!("--mac-address {e}")))
    }

    /// Links, link-local addresses and driver options, checked (the IPv6 address is
    /// [`Self::ip6`]'s).
    pub fn options(&self) -> Result<crate::containers::EndpointOptions> {
        let ipam = self.ipam_config.as_ref();
        let link_local_ips = ipam
            .and_then(|i| i.link_local_ips.clone())
            .unwrap_or_default();
        for ip in &link_local_ips {
            let ok = ip
                .parse::<std::net::Ipv4Addr>()
                .is_ok_and(|a| a.is_link_local());
            if !ok {
                return Err(Refused::bad_request(format!(
                    "--link-local-ip {ip}: give an IPv4 link-local address (169.254.0.0/16)"
                )));
            }
        }
        Ok(crate::containers::EndpointOptions {
            links: self
                .links
                .iter()
                .flatten()
                // Checked, and kept as given, as Docker shows them.
                .map(|l| link_of(l).map(|_| l.clone()))
                .collect::<Result<_>>()?,
            link_local_ips,
            driver_opts: self.driver_opts.clone().unwrap_or_default(),
        })
    }

    /// The endpoint's `IPv4Address`, checked.
    pub fn ip(&self) -> Result<Option<Ipv4Address>> {
        self.ipam_config
            .as_ref()
            .and_then(|i| i.ipv4_address.as_deref())
            .filter(|s| !s.is_empty())
            .map(|s| s.parse::<Ipv4Address>())
            .transpose()
            .map_err(|e| Refused::bad_request(format!("--ip {e}")))
    }
    /// The endpoint's `IPv6Address`, checked.
    pub fn ip6(&self) -> Result<Option<std::net::Ipv6Addr>> {
        self.ipam_config
            .as_ref()
            .and_then(|i| i.ipv6_address.as_deref())
            .filter(|s| !s.is_empty())
            .map(|s| {
                s.parse().map_err(|_| {
                    Refused::bad_request(format!(
                        "--ip6 {s:?} is not an IPv6 address (such as fd00:1::5)"
                    ))
                })
            })
            .transpose()
    }
    pub fn aliases(&self) -> Vec<String> {
        self.aliases.clone().unwrap_or_default()
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct NetworkingConfig {
    endpoints_config: Option<BTreeMap<String, Option<EndpointConfig>>>,
}

fn nonempty(s: Option<String>) -> Option<String> {
    s.filter(|s| !s.is_empty())
}

/// Docker's create body as Pier's request, and what to do around it.
#[derive(Debug)]
pub struct Converted {
    pub request: ContainerCreate,
    /// The networks to connect after create (all but the first), with their endpoints.
    pub endpoints: Vec<(String, EndpointConfig)>,
    /// Volumes `--mount` names with labels: made before the container, so they carry them.
    pub labelled_volumes: Vec<super::mounts::LabelledVolume>,
}

/// What a conversion asks of the host and the engine.
pub struct Lookups<'a> {
    /// The gateway address of a network (for `--add-host NAME:host-gateway`).
    pub gateway: &'a dyn Fn(&str) -> Option<String>,
    /// Whether a bind mount's source exists.
    pub source_exists: &'a dyn Fn(&str) -> bool,
}

/// Maps Docker's create body onto Pier's request.
pub fn to_create(b: CreateBody, name: Option<String>, look: &Lookups<'_>) -> Result<Converted> {
    let image = nonempty(b.image).ok_or_else(|| {
        Refused::bad_request("no image given: the container config needs an Image")
    })?;
    let h = b.host_config.unwrap_or_default();
    refuse_unsupported(&h)?;
    let network_disabled = b.network_disabled.unwrap_or(false);
    let mut network = match nonempty(h.network_mode.clone()).as_deref() {
        _ if network_disabled => Some("none".to_string()),
        None | Some("default") => None,
        Some(m) => Some(m.to_string()),
    };
    let (first, endpoints) = split_endpoints(b.networking_config, &mut network)?;
    let (publish, expose) = ports_of(h.port_bindings, b.exposed_ports)?;
    let restart_policy = restart_policy_of(h.restart_policy)?;
    let auto_remove = h.auto_remove.unwrap_or(false);
    if auto_remove && restart_policy != RestartPolicy::No {
        return Err(Refused::bad_request(
            "conflicting options: cannot combine --restart and --rm (AutoRemove)",
        ));
    }
    let (log_driver, log_opts) = log_opts_of(h.log_config)?;
    let memory_swappiness = h.memory_swappiness.filter(|s| *s != -1);
    if let Some(s) = memory_swappiness.filter(|s| !(0..=100).contains(s)) {
        return Err(Refused::bad_request(format!(
            "Invalid value: {s}, valid memory swappiness range is 0-100"
        )));
    }
    let cgroupns_mode = nonempty(h.cgroupns_mode.clone());
    if let Some(m) = cgroupns_mode
        .as_deref()
        .filter(|m| !matches!(*m, "host" | "private"))
    {
        return Err(Refused::bad_request(format!(
            "invalid cgroup namespace mode: {m}"
        )));
    }
    let isolation = h.isolation.clone().filter(|i| !i.is_empty());
    if let Some(i) = isolation.as_deref().filter(|i| *i != "default") {
        return Err(Refused::bad_request(format!(
            "Invalid isolation: {i:?} - linux only supports 'default'"
        )));
    }
    let links = h
        .links
        .iter()
        .flatten()
        .map(|l| link_of(l))
        .collect::<Result<Vec<_>>>()?;
    refuse_unapplied_limits(&h.unapplied)?;
    let more = more_limits(h.more)?;
    let cpus = cpus_of(h.nano_cpus, h.cpu_quota, h.cpu_period)?;
    let ulimits = h
        .ulimits
        .unwrap_or_default()
        .into_iter()
        .map(|u| {
            Ok(Ulimit {
                soft: ulimit_value(&u.name, u.soft)?,
                hard: ulimit_value(&u.name, u.hard)?,
                name: u.name,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let extra_hosts = extra_hosts_of(look.gateway, &network, h.extra_hosts.unwrap_or_default());
    let healthcheck = b.healthcheck.map(|hc| Healthcheck {
        test: hc.test.map(StrOrList::into_vec).unwrap_or_default(),
        interval_ns: hc.interval.unwrap_or(0),
        timeout_ns: hc.timeout.unwrap_or(0),
        retries: hc.retries.unwrap_or(0),
        start_period_ns: hc.start_period.unwrap_or(0),
    });
    let entrypoint = b.entrypoint.map(|e| {
        let v = e.into_vec();
        // `--entrypoint ""` clears the image's.
        if v.len() == 1 && v[0].is_empty() {
            vec![]
        } else {
            v
        }
    });
    let mac = match first.mac()? {
        Some(m) => Some(m),
        None => nonempty(b.mac_address)
            .map(|m| m.parse::<MacAddress>())
            .transpose()
            .map_err(|e| Refused::bad_request(format!("--mac-address {e}")))?,
    };
    let mut req = ContainerCreate {
        image,
        name,
        cmd: b.cmd.map(StrOrList::into_vec),
        entrypoint,
        env: b.env.unwrap_or_default(),
        workdir: nonempty(b.working_dir),
        user: nonempty(b.user),
        hostname: nonempty(b.hostname),
        domainname: nonempty(b.domainname),
        network,
        ip: first.ip()?,
        ip6: first.ip6()?,
        mac_address: mac,
        network_aliases: first.aliases(),
        publish,
        publish_all: h.publish_all_ports.unwrap_or(false),
        dns: h.dns.unwrap_or_default(),
        dns_search: h.dns_search.unwrap_or_default(),
        dns_options: h.dns_options.unwrap_or_default(),
        extra_hosts,
        read_only: h.readonly_rootfs.unwrap_or(false),
        privileged: h.privileged.unwrap_or(false),
        cap_add: h.cap_add.unwrap_or_default(),
        cap_drop: h.cap_drop.unwrap_or_default(),
        security_opt: h.security_opt.unwrap_or_default(),
        // 0 is "not set" in Docker's body; every other value goes on to be checked.
        memory: h.memory.filter(|m| *m != 0),
        memory_swap: h.memory_swap.filter(|m| *m != 0),
        cpus,
        cpu_shares: h.cpu_shares.filter(|s| *s != 0),
        cpuset_cpus: nonempty(h.cpuset_cpus),
        pids_limit: h.pids_limit.filter(|p| *p != 0),
        blkio_weight: h.blkio_weight.filter(|w| *w != 0),
        ulimits,
        shm_size: h.shm_size.filter(|s| *s != 0),
        auto_remove,
        init: h.init.unwrap_or(false),
        // Docker's default runtime is `runc`: here that is Pier's own.
        runtime: nonempty(h.runtime).filter(|r| r != "pier" && r != "runc"),
        tty: b.tty.unwrap_or(false),
        interactive: b.open_stdin.unwrap_or(false),
        healthcheck,
        stop_signal: nonempty(b.stop_signal),
        stop_timeout: b.stop_timeout.filter(|t| *t >= 0).map(|t| t as u64),
        expose,
        restart_policy,
        labels: b.labels.unwrap_or_default(),
        log_opts,
        log_driver,
        cgroupns_mode,
        isolation,
        cgroup_parent: nonempty(h.cgroup_parent.clone()),
        device_cgroup_rules: h.device_cgroup_rules.clone().unwrap_or_default(),
        volume_driver: nonempty(h.volume_driver.clone()),
        memory_swappiness,
        userns_mode: nonempty(h.userns_mode.clone()).filter(|m| m == "host"),
        memory_reservation: more.memory_reservation,
        oom_kill_disable: more.oom_kill_disable,
        oom_score_adj: more.oom_score_adj,
        cpuset_mems: more.cpuset_mems,
        device_io: more.device_io,
        kernel_memory: more.kernel_memory,
        kernel_memory_tcp: more.kernel_memory_tcp,
        cpu_rt_period: more.cpu_rt_period,
        cpu_rt_runtime: more.cpu_rt_runtime,
        links,
        volumes_from: h.volumes_from.clone().unwrap_or_default(),
        endpoint: first.options()?,
        storage_opts: h.storage_opt.unwrap_or_default(),
        group_add: h.group_add.unwrap_or_default(),
        sysctls: h.sysctls.unwrap_or_default(),
        devices: devices_of(h.devices.unwrap_or_default())?,
        pid_mode: nonempty(h.pid_mode),
        ipc_mode: nonempty(h.ipc_mode),
        uts_mode: nonempty(h.uts_mode.clone()),
        ..Default::default()
    };
    // `-v`, `--mount`, `--tmpfs` and the image's or the body's anonymous volumes.
    let (mounts, labelled_volumes) = super::mounts::from_docker(
        h.binds.unwrap_or_default(),
        h.mounts.unwrap_or_default(),
        h.tmpfs.unwrap_or_default(),
        b.volumes.unwrap_or_default(),
        look.source_exists,
    )?;
    req.mounts = mounts;
    if req.memory_swap.is_some() && req.memory.is_none() {
        return Err(Refused::bad_request(
            "you should always set the memory limit when using the memoryswap limit, see usage",
        ));
    }
    Ok(Converted {
        request: req,
        endpoints,
        labelled_volumes,
    })
}

/// Docker's `Devices` (`{PathOnHost, PathInContainer, CgroupPermissions}`).
fn devices_of(list: Vec<Value>) -> Result<Vec<crate::containers::DeviceMapping>> {
    list.into_iter()
        .map(|d| {
            let field = |k: &str| d.get(k).and_then(Value::as_str).unwrap_or("").to_string();
            let host = field("PathOnHost");
            if host.is_empty() {
                return Err(Refused::bad_request(
                    "a device needs its PathOnHost: use --device /dev/NAME[:/dev/NAME[:rwm]]",
                ));
            }
            Ok(crate::containers::DeviceMapping {
                path_in_container: Some(field("PathInContainer"))
                    .filter(|p| !p.is_empty())
                    .unwrap_or_else(|| host.clone()),
                path_on_host: host,
                permissions: field("CgroupPermissions"),
            })
        })
        .collect()
}

/// Refuses the host options Pier does not implement (other namespaces' modes); `--pid`,
/// `--ipc` and `--cgroup-parent` the engine checks.
fn refuse_unsupported(h: &HostConfig) -> Result<()> {
    // `--userns host` is what Pier does anyway: it remaps no user IDs daemon-wide.
    for (what, mode, ok) in [
        ("--userns", &h.userns_mode, "host"),
        ("--uts", &h.uts_mode, "host"),
    ] {
        if let Some(m) = mode.as_deref() {
            if !matches!(m, "" | "private" | "shareable") && m != ok {
                return Err(Refused::bad_request(format!(
                    "{what} {m} is not supported by pier yet"
                )));
            }
        }
    }
    Ok(())
}

/// The endpoint of the first network (which takes --ip, aliases and the MAC, and names
/// the network when the mode did not), and the other endpoints, to connect after.
fn split_endpoints(
    networking: Option<NetworkingConfig>,
    network: &mut Option<String>,
) -> Result<(EndpointConfig, Vec<(String, EndpointConfig)>)> {
    let mut endpoints: Vec<(String, EndpointConfig)> = networking
        .and_then(|n| n.endpoints_config)
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, v.unwrap_or_default()))
        .collect();
    let first_name = network
        .clone()
        .unwrap_or_else(|| super::DEFAULT_NETWORK.into());
    let first_at = endpoints
        .iter()
        .position(|(k, _)| *k == first_name || (k == "default" && network.is_none()));
    let first = match first_at {
        Some(i) => Some(endpoints.remove(i).1),
        None if network.is_none() && !endpoints.is_empty() => {
            let (k, v) = endpoints.remove(0);
            *network = Some(k);
            Some(v)
        }
        None => None,
    }
    .unwrap_or_default();
    Ok((first, endpoints))
}

/// The published ports from Docker's bindings, and the exposed ports not published.
fn ports_of(
    bindings: Option<BTreeMap<String, Option<Vec<PortBindingBody>>>>,
    exposed: Option<BTreeMap<String, Value>>,
) -> Result<(Vec<PortSpec>, Vec<String>)> {
    let mut publish = Vec::new();
    for (port, bindings) in bindings.unwrap_or_default() {
        let bindings = bindings.unwrap_or_default();
        if bindings.is_empty() {
            publish.push(port.clone());
        }
        for pb in bindings {
            let ip = nonempty(pb.host_ip).filter(|ip| ip != "::" && ip != "0.0.0.0");
            let hp = nonempty(pb.host_port).unwrap_or_default();
            publish.push(match ip {
                Some(ip) if ip.contains(':') => format!("[{ip}]:{hp}:{port}"),
                Some(ip) => format!("{ip}:{hp}:{port}"),
                None if hp.is_empty() => port.clone(),
                None => format!("{hp}:{port}"),
            });
        }
    }
    publish.dedup();
    let mut expose: Vec<String> = exposed.unwrap_or_default().into_keys().collect();
    expose.retain(|e| !publish.iter().any(|p| p.ends_with(e.as_str())));
    let publish = publish
        .iter()
        .map(|p| p.parse::<PortSpec>())
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| Refused::bad_request(e.to_string()))?;
    Ok((publish, expose))
}

/// The restart policy from Docker's body.
fn restart_policy_of(body: Option<RestartPolicyBody>) -> Result<RestartPolicy> {
    Ok(match body.unwrap_or_default() {
        RestartPolicyBody { name: None, .. } => RestartPolicy::No,
        RestartPolicyBody {
            name: Some(n),
            maximum_retry_count,
        } => match n.as_str() {
            "" | "no" => RestartPolicy::No,
            "always" => RestartPolicy::Always,
            "unless-stopped" => RestartPolicy::UnlessStopped,
            "on-failure" => RestartPolicy::OnFailure {
                max_retries: maximum_retry_count.unwrap_or(0),
            },
            other => {
                return Err(Refused::bad_request(format!(
                    "invalid restart policy {other:?}: use no, always, unless-stopped or on-failure"
                )))
            }
        },
    })
}

/// Docker's own log drivers that Pier does not have.
const DOCKER_LOG_DRIVERS: [&str; 10] = [
    "syslog",
    "journald",
    "gelf",
    "fluentd",
    "awslogs",
    "splunk",
    "etwlogs",
    "gcplogs",
    "logentries",
    "loki",
];

/// The log driver (`none`, or json-file's when absent) and json-file's options, checked.
fn log_opts_of(
    config: Option<LogConfigBody>,
) -> Result<(Option<String>, BTreeMap<String, String>)> {
    let mut log_opts = BTreeMap::new();
    if let Some(lc) = config {
        match lc.kind.as_deref() {
            None | Some("") | Some("json-file") | Some("local") => {}
            Some("none") => {
                if let Some(k) = lc.config.unwrap_or_default().into_keys().next() {
                    return Err(Refused::bad_request(format!(
                        "unknown log opt '{k}' for none log driver"
                    )));
                }
                return Ok((Some("none".into()), log_opts));
            }
            Some(d) if DOCKER_LOG_DRIVERS.contains(&d) => {
                return Err(Refused::bad_request(format!(
                    "logging driver {d:?} is not supported by pier: it keeps json-file logs (or none)"
                )))
            }
            // Docker's words for a driver it does not know.
            Some(other) => {
                return Err(Refused::bad_request(format!(
                    "logger: no log driver named '{other}' is registered"
                )))
            }
        }
        for (k, v) in lc.config.unwrap_or_default() {
            match k.as_str() {
                "max-size" => {
                    // Decimal units, as Docker's json-file driver reads them.
                    let n = ByteSize::parse_decimal(&v).map_err(|e| {
                        Refused::bad_request(format!("invalid log option max-size={v}: {e}"))
                    })?;
                    log_opts.insert(k, n.to_string());
                }
                "max-file" => {
                    log_opts.insert(k, v);
                }
                // Options of the json-file driver that change nothing here.
                "compress" | "labels" | "labels-regex" | "env" | "env-regex" | "tag" | "mode"
                | "max-buffer-size" => {}
                other => {
                    return Err(Refused::bad_request(format!(
                        "unknown log option {other:?} for the json-file driver"
                    )))
                }
            }
        }
    }
    Ok((None, log_opts))
}

/// `--add-host` entries as `name:ip`, `host-gateway` resolved to the gateway of the
/// container's network.
fn extra_hosts_of(
    gateway_of: &dyn Fn(&str) -> Option<String>,
    network: &Option<String>,
    extra_hosts: Vec<String>,
) -> Vec<String> {
    let gateway = |net: &Option<String>| -> Option<String> {
        gateway_of(net.as_deref().unwrap_or(super::DEFAULT_NETWORK))
    };
    extra_hosts
        .into_iter()
        .map(|e| {
            let (name, ip) = match e.split_once('=') {
                Some(x) => x,
                None => e.split_once(':').unwrap_or((&e, "")),
            };
            let ip = if ip == "host-gateway" {
                gateway(network).unwrap_or_else(|| ip.to_string())
            } else {
                ip.trim_matches(|c| c == '[' || c == ']').to_string()
            };
            format!("{name}:{ip}")
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn convert(body: serde_json::Value) -> Result<Converted> {
        let b: CreateBody = serde_json::from_value(body).unwrap();
        let look = Lookups {
            gateway: &|net| (net == "back").then(|| "10.0.0.1".to_string()),
            source_exists: &|src| src == "/srv",
        };
        to_create(b, Some("web".into()), &look)
    }

    #[test]
    fn create_bodies_map_onto_pier_requests() {
        let c = convert(serde_json::json!({
            "Image": "bb",
            "HostConfig": {
                "ExtraHosts": ["gw:host-gateway", "db=[10.1.1.1]"],
                "Binds": ["/srv:/srv:ro"],
                "Mounts": [{"Type": "volume", "Source": "data", "Target": "/d",
                            "VolumeOptions": {"Labels": {"k": "v"}}}],
                "PortBindings": {"80/tcp": [{"HostPort": "8080"}]},
                "RestartPolicy": {"Name": "on-failure", "MaximumRetryCount": 2},
            },
            "NetworkingConfig": {"EndpointsConfig": {"front": {"Aliases": ["w"]}, "back": {}}},
        }))
        .unwrap();
        let r = &c.request;
        assert_eq!(r.extra_hosts, vec!["gw:10.0.0.1", "db:10.1.1.1"]);
        assert_eq!(r.mounts.len(), 2);
        assert_eq!(
            c.labelled_volumes,
            vec![(
                "data".to_string(),
                BTreeMap::from([("k".to_string(), "v".to_string())])
            )]
        );
        assert_eq!(r.publish.len(), 1);
        assert_eq!(
            r.restart_policy,
            RestartPolicy::OnFailure { max_retries: 2 }
        );
        assert_eq!(
            r.network.as_deref(),
            Some("back"),
            "the first endpoint names the network"
        );
        assert_eq!(c.endpoints.len(), 1);
        assert_eq!(c.endpoints[0].0, "front");
        assert_eq!(c.endpoints[0].1.aliases(), vec!["w"]);
    }

    #[test]
    fn create_bodies_pier_cannot_honour_are_refused() {
        let refused = |hc: serde_json::Value| {
            convert(serde_json::json!({"Image": "bb", "HostConfig": hc})).unwrap_err()
        };
        assert!(convert(serde_json::json!({}))
            .unwrap_err()
            .message
            .contains("no image"));
        assert!(refused(serde_json::json!({"Links": ["a b"]}))
            .message
            .contains("invalid link"));
        let c = convert(
            serde_json::json!({"Image": "bb", "HostConfig": {"Links": ["/a:/web/b", "c"]}}),
        );
        assert_eq!(c.unwrap().request.links, vec!["a:b", "c:c"]);
        assert!(refused(serde_json::json!({"LogConfig": {"Type": "asdf"}}))
            .message
            .contains("no log driver named 'asdf'"));
        // Under Docker's own field name (it was read as `UtsMode`, never sent).
        assert!(refused(serde_json::json!({"UTSMode": "container:x"}))
            .message
            .contains("--uts container:x"));
        let c = convert(serde_json::json!({"Image": "bb", "HostConfig": {"UTSMode": "host"}}));
        assert_eq!(c.unwrap().request.uts_mode.as_deref(), Some("host"));
        assert!(convert(serde_json::json!({"Image": "bb", "HostConfig": {"UTSMode": ""}})).is_ok());
        assert!(refused(serde_json::json!({"MemorySwap": 10}))
            .message
            .contains("memory limit"));
        // Applied now, and checked as Docker checks them.
        let c = convert(serde_json::json!({"Image": "bb", "HostConfig": {
            "OomKillDisable": true, "MemoryReservation": 33554432, "OomScoreAdj": -500,
            "CpusetMems": "0", "BlkioDeviceReadBps": [{"Path": "/dev/vda", "Rate": 1024}],
            "BlkioWeightDevice": [{"Path": "/dev/vda", "Weight": 300}]}}))
        .unwrap()
        .request;
        assert!(c.oom_kill_disable);
        assert_eq!(c.memory_reservation, Some(33554432));
        assert_eq!(c.oom_score_adj, Some(-500));
        assert_eq!(c.cpuset_mems.as_deref(), Some("0"));
        assert_eq!(c.device_io.len(), 2);
        assert!(refused(serde_json::json!({"OomScoreAdj": 1001}))
            .message
            .contains("range for oom score adj"));
        assert!(refused(serde_json::json!({"MemoryReservation": 1024}))
            .message
            .contains("Minimum memory reservation"));
        assert!(refused(
            serde_json::json!({"BlkioWeightDevice": [{"Path": "/dev/vda", "Weight": 5}]})
        )
        .message
        .contains("10 to 1000"));
        assert!(refused(serde_json::json!({"KernelMemory": 1048576}))
            .message
            .contains("Minimum kernel memory"));
        assert!(refused(
            serde_json::json!({"CpuRealtimePeriod": 1000, "CpuRealtimeRuntime": 2000})
        )
        .message
        .contains("cannot be higher"));
        assert!(refused(serde_json::json!({"CpuCount": 2}))
            .message
            .contains("--cpu-count"));
        assert!(refused(
            serde_json::json!({"Mounts": [{"Type": "bind", "Source": "/nope", "Target": "/x"}]})
        )
        .message
        .contains("does not exist"));
        let e =
            refused(serde_json::json!({"RestartPolicy": {"Name": "always"}, "AutoRemove": true}));
        assert_eq!(e.status, 400);
    }
}
