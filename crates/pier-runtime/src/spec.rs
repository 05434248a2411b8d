//! Building the OCI runtime spec (`config.json`) of a container: Docker's defaults
//! (capabilities, mounts, masked and read-only paths, device rules) plus what the user
//! asked for. The spec is the contract between the engine and a runtime, so the same
//! bundle runs under Pier's runtime and under runc.

use pier_api::containers::DeviceIoKind;
use serde_json::{json, Value};

/// Docker's default capability set.
pub const DEFAULT_CAPS: [&str; 14] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// Paths Docker hides from containers.
pub const MASKED_PATHS: [&str; 11] = [
    "/proc/asound",
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// Paths Docker makes read-only in containers.
pub const READONLY_PATHS: [&str; 5] = [
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// Every capability the kernel knows, in number order (capability.h), for `--privileged`
/// and `--cap-add ALL`.
pub const ALL_CAPS: [&str; 41] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

/// The capability number of a `CAP_*` name.
pub fn cap_number(name: &str) -> Option<u32> {
    ALL_CAPS.iter().position(|c| *c == name).map(|i| i as u32)
}

/// Normalizes `net_admin`, `NET_ADMIN` or `CAP_NET_ADMIN` to `CAP_NET_ADMIN`.
pub fn normalize_cap(name: &str) -> Option<String> {
    let up = name.to_ascii_uppercase();
    let full = if up.starts_with("CAP_") {
        up
    } else {
        format!("CAP_{up}")
    };
    (full == "CAP_ALL" || cap_number(&full).is_some()).then_some(full)
}

/// Where the container's network namespace comes from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum NetMode {
    /// A new namespace with only loopback.
    #[default]
    None,
    /// The host's namespace.
    Host,
    /// An existing namespace (a path under /proc or /run/netns).
    Path(String),
}

/// An rlimit as the user asked for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rlimit {
    /// `RLIMIT_NOFILE`, ...
    pub kind: String,
    pub soft: u64,
    pub hard: u64,
}

/// A device node made in the container's `/dev` and allowed by its device rules
/// (`--device`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceNode {
    /// Where, in the container.
    pub path: String,
    /// `c` or `b`.
    pub kind: char,
    pub major: u32,
    pub minor: u32,
    /// Permission bits of the node.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// `r`, `w`, `m` as the device rule allows.
    pub access: String,
}

/// Everything a container's spec is made from.
#[derive(Debug, Clone, Default)]
pub struct SpecInput {
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub cwd: String,
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
    pub hostname: String,
    /// `--domainname`, set in the container's UTS namespace.
    pub domainname: Option<String>,
    pub rootfs: String,
    pub readonly_rootfs: bool,
    pub privileged: bool,
    pub cap_add: Vec<String>,
    pub cap_drop: Vec<String>,
    pub no_new_privileges: bool,
    pub rlimits: Vec<Rlimit>,
    pub net: Option<NetMode>,
    pub memory: Option<i64>,
    pub memory_swap: Option<i64>,
    pub cpu_quota: Option<i64>,
    pub cpu_period: Option<u64>,
    pub cpu_shares: Option<u64>,
    pub cpuset_cpus: Option<String>,
    pub pids_limit: Option<i64>,
    pub blkio_weight: Option<u16>,
    /// Size of the `/dev/shm` tmpfs in bytes; 0 gives Docker's default of 64 MiB.
    pub shm_size: u64,
    pub terminal: bool,
    /// Extra mounts (volumes, /etc/hosts, ...), as OCI mount objects.
    pub mounts: Vec<Value>,
    pub cgroups_path: String,
    /// The resolved `linux.seccomp` object; `None` runs unconfined.
    pub seccomp: Option<Value>,
    /// Run a minimal init as PID 1 that reaps zombies (`--init`).
    pub init: bool,
    /// A user namespace of its own with these mappings when not empty.
    pub uid_maps: Vec<pier_api::containers::IdMap>,
    pub gid_maps: Vec<pier_api::containers::IdMap>,
    /// Share the host's PID namespace (`--pid host`).
    pub host_pid: bool,
    /// Share the host's IPC namespace (`--ipc host`).
    pub host_ipc: bool,
    /// `--ipc none`: no `/dev/shm`.
    pub no_shm: bool,
    /// `--uts host`: no UTS namespace, and no hostname set (it would be the host's).
    pub host_uts: bool,
    /// Kernel parameters set in the container's namespaces (`linux.sysctl`).
    pub sysctls: std::collections::BTreeMap<String, String>,
    /// Host devices (`linux.devices`, with an allow rule each).
    pub devices: Vec<DeviceNode>,
    /// `--cgroupns host`: no cgroup namespace of its own.
    pub host_cgroupns: bool,
    /// `--device-cgroup-rule`: rules after the defaults and the devices'.
    pub device_cgroup_rules: Vec<crate::devices::Rule>,
    /// `--memory-swappiness` (cgroup v1's `memory.swappiness`).
    pub memory_swappiness: Option<u64>,
    /// Docker's other limits: memory reservation, OOM killer and score, memory nodes,
    /// per-device I/O.
    pub more: MoreLimits,
}

/// The capability set for a spec: the defaults (all with `--privileged`), minus
/// `--cap-drop` (`ALL` empties it), plus `--cap-add` (`ALL` fills it), as Docker does.
/// Limits beyond the common ones, as Docker takes them.
#[derive(Debug, Clone, Default)]
pub struct MoreLimits {
    /// `--memory-reservation`: the soft limit, in bytes.
    pub memory_reservation: Option<i64>,
    /// `--oom-kill-disable`.
    pub oom_kill_disable: bool,
    /// `--oom-score-adj`, -1000 to 1000.
    pub oom_score_adj: Option<i32>,
    /// `--cpuset-mems`.
    pub cpuset_mems: Option<String>,
    /// `--device-read-bps` and friends, and `--blkio-weight-device`.
    pub device_io: Vec<DeviceIo>,
    /// `--kernel-memory` and Docker's `KernelMemoryTCP`, in bytes (cgroup v1).
    pub kernel_memory: Option<i64>,
    pub kernel_memory_tcp: Option<i64>,
    /// `--cpu-rt-period` and `--cpu-rt-runtime`, in microseconds (cgroup v1).
    pub cpu_rt_period: Option<u64>,
    pub cpu_rt_runtime: Option<i64>,
}

/// One per-device I/O limit, on the device's numbers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceIo {
    pub major: u64,
    pub minor: u64,
    pub kind: DeviceIoKind,
    pub value: u64,
}

/// The OCI spec's `blockIO` list of a kind of limit.
fn spec_list(kind: DeviceIoKind) -> &'static str {
    match kind {
        DeviceIoKind::ReadBps => "throttleReadBpsDevice",
        DeviceIoKind::WriteBps => "throttleWriteBpsDevice",
        DeviceIoKind::ReadIops => "throttleReadIOPSDevice",
        DeviceIoKind::WriteIops => "throttleWriteIOPSDevice",
        DeviceIoKind::Weight => "weightDevice",
    }
}

pub fn capabilities(input: &SpecInput) -> Vec<String> {
    let all = || ALL_CAPS.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let mut caps: Vec<String> = if input.privileged {
        all()
    } else {
        DEFAULT_CAPS.iter().map(|s| s.to_string()).collect()
    };
    if input.cap_drop.iter().any(|c| c == "CAP_ALL") {
        caps.clear();
    }
    caps.retain(|c| !input.cap_drop.contains(c));
    if input.cap_add.iter().any(|c| c == "CAP_ALL") {
        caps = all();
    }
    for c in &input.cap_add {
        if c != "CAP_ALL" && !caps.contains(c) {
            caps.push(c.clone());
        }
    }
    caps
}

/// Builds the spec as JSON, then checks it against the OCI types.
pub fn build(input: &SpecInput) -> Result<oci_spec::runtime::Spec, serde_json::Error> {
    let caps = capabilities(input);
    // Like Docker: a non-root user gets the bounding set only, nothing effective.
    let (eff, perm) = if input.uid == 0 {
        (caps.clone(), caps.clone())
    } else {
        (vec![], vec![])
    };
    let mut namespaces = vec![json!({"type": "mount"})];
    if !input.host_cgroupns {
        namespaces.push(json!({"type": "cgroup"}));
    }
    if !input.host_uts {
        namespaces.insert(0, json!({"type": "uts"}));
    }
    if !input.host_pid {
        namespaces.insert(0, json!({"type": "pid"}));
    }
    if !input.host_ipc {
        namespaces.push(json!({"type": "ipc"}));
    }
    match input.net.clone().unwrap_or_default() {
        NetMode::None => namespaces.push(json!({"type": "network"})),
        NetMode::Host => {}
        NetMode::Path(p) => namespaces.push(json!({"type": "network", "path": p})),
    }
    if !input.uid_maps.is_empty() {
        namespaces.push(json!({"type": "user"}));
    }
    let sys_ro = input.net != Some(NetMode::Host) && !input.privileged;
    let shm_size = match input.shm_size {
        0 => pier_api::limits::DEFAULT_SHM_SIZE as u64,
        n => n,
    };
    let mut mounts = vec![
        json!({"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}),
        json!({"destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]}),
        json!({"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", if sys_ro { "ro" } else { "rw" }]}),
        json!({"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup", "options": ["ro", "nosuid", "noexec", "nodev"]}),
        json!({"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "noexec", "nodev", "mode=1777", format!("size={shm_size}")]}),
    ];
    if input.no_shm {
        mounts.retain(|m| m["destination"] != "/dev/shm");
    }
    mounts.extend(input.mounts.iter().cloned());
    let mut device_rules: Vec<Value> = crate::devices::DEFAULT
        .iter()
        .map(|r| r.to_spec_json())
        .collect();
    for d in &input.devices {
        device_rules.push(json!({"allow": true, "type": d.kind.to_string(), "major": d.major, "minor": d.minor, "access": d.access}));
    }
    device_rules.extend(input.device_cgroup_rules.iter().map(|r| r.to_spec_json()));
    let mut resources = json!({ "devices": device_rules });
    let more = &input.more;
    if input.memory.is_some()
        || input.memory_swap.is_some()
        || input.memory_swappiness.is_some()
        || more.memory_reservation.is_some()
        || more.oom_kill_disable
        || more.kernel_memory.is_some()
        || more.kernel_memory_tcp.is_some()
    {
        let mut m = json!({});
        if let Some(k) = more.kernel_memory {
            m["kernel"] = json!(k);
        }
        if let Some(k) = more.kernel_memory_tcp {
            m["kernelTCP"] = json!(k);
        }
        if let Some(r) = more.memory_reservation {
            m["reservation"] = json!(r);
        }
        if more.oom_kill_disable {
            m["disableOOMKiller"] = json!(true);
        }
        if let Some(s) = input.memory_swappiness {
            m["swappiness"] = json!(s);
        }
        if let Some(l) = input.memory {
            m["limit"] = json!(l);
        }
        if let Some(s) = input.memory_swap {
            m["swap"] = json!(s);
        }
        resources["memory"] = m;
    }
    if let Some(p) = input.pids_limit {
        resources["pids"] = json!({"limit": p});
    }
    let mut cpu = json!({});
    if let Some(q) = input.cpu_quota {
        cpu["quota"] = json!(q);
        cpu["period"] = json!(input.cpu_period.unwrap_or(100_000));
    }
    if let Some(s) = input.cpu_shares {
        cpu["shares"] = json!(s);
    }
    if let Some(c) = &input.cpuset_cpus {
        cpu["cpus"] = json!(c);
    }
    if let Some(m) = &more.cpuset_mems {
        cpu["mems"] = json!(m);
    }
    if let Some(p) = more.cpu_rt_period {
        cpu["realtimePeriod"] = json!(p);
    }
    if let Some(r) = more.cpu_rt_runtime {
        cpu["realtimeRuntime"] = json!(r);
    }
    if cpu.as_object().is_some_and(|o| !o.is_empty()) {
        resources["cpu"] = cpu;
    }
    if input.blkio_weight.is_some() || !more.device_io.is_empty() {
        let mut b = json!({});
        if let Some(w) = input.blkio_weight {
            b["weight"] = json!(w);
        }
        for d in &more.device_io {
            let entry = match d.kind {
                DeviceIoKind::Weight => {
                    json!({"major": d.major, "minor": d.minor, "weight": d.value})
                }
                _ => json!({"major": d.major, "minor": d.minor, "rate": d.value}),
            };
            let list = spec_list(d.kind);
            if !b[list].is_array() {
                b[list] = json!([]);
            }
            b[list].as_array_mut().expect("array").push(entry);
        }
        resources["blockIO"] = b;
    }
    let rlimits: Vec<Value> = input
        .rlimits
        .iter()
        .map(|r| json!({"type": r.kind, "soft": r.soft, "hard": r.hard}))
        .collect();
    let spec = json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": input.terminal,
            "user": {"uid": input.uid, "gid": input.gid, "additionalGids": input.additional_gids},
            "args": input.args,
            "env": input.env,
            "cwd": input.cwd,
            "capabilities": {"bounding": caps, "effective": eff, "permitted": perm},
            "rlimits": rlimits,
            "noNewPrivileges": input.no_new_privileges,
            "oomScoreAdj": more.oom_score_adj,
        },
        "root": {"path": input.rootfs, "readonly": input.readonly_rootfs},
        "hostname": (!input.host_uts).then_some(&input.hostname),
        "domainname": input.domainname.as_ref().filter(|_| !input.host_uts),
        "mounts": mounts,
        "linux": {
            "namespaces": namespaces,
            "resources": resources,
            "cgroupsPath": input.cgroups_path,
            "maskedPaths": if input.privileged { vec![] } else { MASKED_PATHS.to_vec() },
            "readonlyPaths": if input.privileged { vec![] } else { READONLY_PATHS.to_vec() },
        },
    });
    let mut spec = spec;
    if !input.uid_maps.is_empty() {
        let maps = |m: &[pier_api::containers::IdMap]| -> Vec<Value> {
            m.iter()
                .map(
                    |m| json!({"containerID": m.container_id, "hostID": m.host_id, "size": m.size}),
                )
                .collect()
        };
        let gids = if input.gid_maps.is_empty() {
            &input.uid_maps
        } else {
            &input.gid_maps
        };
        spec["linux"]["uidMappings"] = json!(maps(&input.uid_maps));
        spec["linux"]["gidMappings"] = json!(maps(gids));
    }
    if !input.sysctls.is_empty() {
        spec["linux"]["sysctl"] = json!(input.sysctls);
    }
    if !input.devices.is_empty() {
        spec["linux"]["devices"] = input
            .devices
            .iter()
            .map(|d| json!({"path": d.path, "type": d.kind.to_string(), "major": d.major, "minor": d.minor, "fileMode": d.mode, "uid": d.uid, "gid": d.gid}))
            .collect();
    }
    if input.init {
        spec["annotations"] = json!({ crate::init::INIT_ANNOTATION: "true" });
    }
    if let Some(s) = &input.seccomp {
        spec["linux"]["seccomp"] = s.clone();
    }
    serde_json::from_value(spec)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capability_numbers_and_names() {
        assert_eq!(cap_number("CAP_CHOWN"), Some(0));
        assert_eq!(cap_number("CAP_SYS_ADMIN"), Some(21));
        assert_eq!(cap_number("CAP_CHECKPOINT_RESTORE"), Some(40));
        assert_eq!(normalize_cap("net_admin").as_deref(), Some("CAP_NET_ADMIN"));
        assert_eq!(normalize_cap("ALL").as_deref(), Some("CAP_ALL"));
        assert_eq!(normalize_cap("bogus"), None);
    }

    #[test]
    fn host_namespaces_sysctls_and_devices() {
        let base = SpecInput {
            args: vec!["/bin/sh".into()],
            cwd: "/".into(),
            rootfs: "/x/rootfs".into(),
            ..Default::default()
        };
        let types = |spec: &oci_spec::runtime::Spec| -> Vec<String> {
            let l = spec.linux().as_ref().unwrap();
            l.namespaces()
                .as_ref()
                .unwrap()
                .iter()
                .map(|n| format!("{:?}", n.typ()))
                .collect()
        };
        let private = build(&base).unwrap();
        assert!(types(&private).contains(&"Pid".to_string()));
        assert!(types(&private).contains(&"Ipc".to_string()));
        let mut sysctls = std::collections::BTreeMap::new();
        sysctls.insert("net.ipv4.ip_forward".to_string(), "1".to_string());
        let host = build(&SpecInput {
            host_pid: true,
            host_ipc: true,
            host_uts: false,
            sysctls,
            devices: vec![DeviceNode {
                path: "/dev/xnull".into(),
                kind: 'c',
                major: 1,
                minor: 3,
                mode: 0o666,
                uid: 0,
                gid: 0,
                access: "rw".into(),
            }],
            ..base
        })
        .unwrap();
        assert!(!types(&host).contains(&"Pid".to_string()));
        assert!(!types(&host).contains(&"Ipc".to_string()));
        let linux = host.linux().as_ref().unwrap();
        assert_eq!(linux.sysctl().as_ref().unwrap()["net.ipv4.ip_forward"], "1");
        let dev = &linux.devices().as_ref().unwrap()[0];
        assert_eq!((dev.major(), dev.minor()), (1, 3));
        let rules = linux
            .resources()
            .as_ref()
            .unwrap()
            .devices()
            .as_ref()
            .unwrap();
        let last = rules.last().unwrap();
        assert!(last.allow());
        assert_eq!(last.access().as_deref(), Some("rw"));
    }

    #[test]
    fn builds_a_docker_like_spec() {
        let input = SpecInput {
            args: vec!["/bin/sh".into()],
            cwd: "/".into(),
            rootfs: "/x/rootfs".into(),
            cap_add: vec!["CAP_NET_ADMIN".into()],
            cap_drop: vec!["CAP_MKNOD".into()],
            memory: Some(64 << 20),
            pids_limit: Some(20),
            rlimits: vec![Rlimit {
                kind: "RLIMIT_NOFILE".into(),
                soft: 100,
                hard: 200,
            }],
            ..Default::default()
        };
        let spec = build(&input).unwrap();
        let caps = spec
            .process()
            .as_ref()
            .unwrap()
            .capabilities()
            .as_ref()
            .unwrap();
        let bounding: Vec<String> = caps
            .bounding()
            .as_ref()
            .unwrap()
            .iter()
            .map(|c| c.to_string())
            .collect();
        assert_eq!(bounding.len(), 14);
        assert!(bounding.iter().any(|c| c.contains("NET_ADMIN")));
        assert!(!bounding.iter().any(|c| c.contains("MKNOD")));
        let linux = spec.linux().as_ref().unwrap();
        assert_eq!(
            linux.masked_paths().as_ref().unwrap().len(),
            MASKED_PATHS.len()
        );
        assert_eq!(
            linux
                .resources()
                .as_ref()
                .unwrap()
                .pids()
                .as_ref()
                .unwrap()
                .limit(),
            20
        );

        let shm = |spec: &oci_spec::runtime::Spec| {
            let m = spec
                .mounts()
                .as_ref()
                .unwrap()
                .iter()
                .find(|m| m.destination() == std::path::Path::new("/dev/shm"));
            m.unwrap().options().clone().unwrap_or_default()
        };
        assert!(
            shm(&spec).contains(&"size=67108864".to_string()),
            "64 MiB by default"
        );
        let small = build(&SpecInput {
            shm_size: 1 << 20,
            ..input.clone()
        })
        .unwrap();
        assert!(shm(&small).contains(&"size=1048576".to_string()));
        let none = build(&SpecInput {
            no_shm: true,
            ..input.clone()
        })
        .unwrap();
        assert!(
            !none
                .mounts()
                .as_ref()
                .unwrap()
                .iter()
                .any(|m| m.destination() == std::path::Path::new("/dev/shm")),
            "--ipc none: no /dev/shm"
        );

        let user = SpecInput {
            uid: 1000,
            privileged: true,
            ..input
        };
        let spec = build(&user).unwrap();
        let caps = spec
            .process()
            .as_ref()
            .unwrap()
            .capabilities()
            .as_ref()
            .unwrap();
        assert_eq!(
            caps.bounding().as_ref().unwrap().len(),
            40,
            "privileged: all but the dropped one"
        );
        assert!(
            caps.effective().as_ref().unwrap().is_empty(),
            "a non-root user gets no effective caps"
        );
    }
}
