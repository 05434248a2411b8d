//! What a container may share with or take from the host beyond its own namespaces:
//! `--pid`/`--ipc host` or `container:NAME`, `--cgroupns host`, `--sysctl`, `--device`,
//! `--device-cgroup-rule`, `--memory-swappiness` and `--group-add`; their checks at create
//! (namespaced sysctls only, devices that are device nodes) and their forms for the
//! runtime spec.

use std::os::unix::fs::{FileTypeExt, MetadataExt};

use pier_api::containers::ContainerCreate;
use pier_runtime::spec::DeviceNode;

use crate::error::{invalid, EngineResult};

/// Whether a `--pid`/`--ipc` mode shares the host's namespace; refuses the modes Pier
/// does not do. `container:NAME` (with `shared`) is not the host's: the start joins
/// that container's namespace ([`shared_with`]).
fn host_mode(flag: &str, mode: Option<&str>, private: &[&str], shared: bool) -> EngineResult<bool> {
    match mode {
        None | Some("") => Ok(false),
        Some("host") => Ok(true),
        Some(m) if private.contains(&m) => Ok(false),
        Some(m) if shared && m.strip_prefix("container:").is_some_and(|n| !n.is_empty()) => {
            Ok(false)
        }
        Some(m) => Err(invalid(format!(
            "{flag} {m} is not supported: use {}, host{}",
            private.join(", "),
            if shared { " or container:NAME" } else { "" }
        ))),
    }
}

/// `--pid host`.
pub fn host_pid(req: &ContainerCreate) -> EngineResult<bool> {
    host_mode("--pid", req.pid_mode.as_deref(), &["private"], true)
}

/// `--ipc host`. `none` is a private namespace without `/dev/shm`; `container:NAME`
/// joins that (`shareable`) container's namespace and `/dev/shm` at the start
/// ([`shared_with`]).
pub fn host_ipc(req: &ContainerCreate) -> EngineResult<bool> {
    host_mode(
        "--ipc",
        req.ipc_mode.as_deref(),
        &["private", "shareable", "none"],
        true,
    )
}

/// `--ipc none`: no `/dev/shm` at all.
pub fn ipc_none(req: &ContainerCreate) -> bool {
    req.ipc_mode.as_deref() == Some("none")
}

/// Whether other containers may join this one's IPC namespace (`--ipc shareable`, as
/// Docker asks of the container named by `--ipc container:NAME`).
pub fn ipc_shareable(req: &ContainerCreate) -> bool {
    req.ipc_mode.as_deref() == Some("shareable")
}

/// The containers whose namespaces this one joins at each start: (`pid` or `ipc`, the
/// other container's name or ID), from `--pid`/`--ipc container:NAME`.
pub fn shared_with(req: &ContainerCreate) -> Vec<(&'static str, &str)> {
    [
        ("pid", req.pid_mode.as_deref()),
        ("ipc", req.ipc_mode.as_deref()),
    ]
    .into_iter()
    .filter_map(|(kind, mode)| Some((kind, mode?.strip_prefix("container:")?)))
    .collect()
}

/// `--uts host`: the host's hostname, which the container cannot set (no
/// `--hostname` with it, as Docker says).
pub fn host_uts(req: &ContainerCreate) -> EngineResult<bool> {
    let host = host_mode("--uts", req.uts_mode.as_deref(), &["private"], false)?;
    if host && (req.hostname.is_some() || req.domainname.is_some()) {
        return Err(invalid(
            "conflicting options: --hostname or --domainname and --uts host (the container has the host's names)",
        ));
    }
    Ok(host)
}

/// The IPC parameters of `kernel.*` an IPC namespace has of its own.
const IPC_SYSCTLS: [&str; 8] = [
    "kernel.msgmax",
    "kernel.msgmnb",
    "kernel.msgmni",
    "kernel.sem",
    "kernel.shmall",
    "kernel.shmmax",
    "kernel.shmmni",
    "kernel.shm_rmid_forced",
];

/// Refuses a sysctl the container's namespaces do not make its own (it would change the
/// host), as Docker does.
fn check_sysctl(req: &ContainerCreate, key: &str, value: &str) -> EngineResult<()> {
    let bad_key = key.is_empty()
        || key.starts_with('.')
        || key.ends_with('.')
        || key.contains("..")
        || !key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/'));
    if bad_key || value.contains('\n') {
        return Err(invalid(format!(
            "invalid --sysctl {key}={value}: use NAME=VALUE, e.g. net.ipv4.ip_forward=1"
        )));
    }
    let key = key.replace('/', ".");
    if IPC_SYSCTLS.contains(&key.as_str()) || key.starts_with("fs.mqueue.") {
        if host_ipc(req)? {
            return Err(invalid(format!(
                "--sysctl {key} would change the host's: the container shares the host's IPC namespace (--ipc host)"
            )));
        }
        if let Some(m) = req
            .ipc_mode
            .as_deref()
            .filter(|m| m.starts_with("container:"))
        {
            return Err(invalid(format!(
                "--sysctl {key} would change another container's: this one joins its IPC namespace (--ipc {m}); set it there"
            )));
        }
        return Ok(());
    }
    if key.starts_with("net.") {
        let net = req.network.as_deref().unwrap_or("");
        if net == "host" || net.starts_with("container:") {
            return Err(invalid(format!(
                "--sysctl {key} would change another's network namespace: set it with a network of the container's own, not --network {net}"
            )));
        }
        return Ok(());
    }
    Err(invalid(format!(
        "--sysctl {key} is not namespaced: it would change the host; only net.*, fs.mqueue.* and the IPC parameters of kernel.* (kernel.shmmax, kernel.sem, ...) can be set per container"
    )))
}

/// The checks of create.
pub fn validate(req: &ContainerCreate) -> EngineResult<()> {
    host_pid(req)?;
    host_ipc(req)?;
    host_uts(req)?;
    for (k, v) in &req.sysctls {
        check_sysctl(req, k, v)?;
    }
    for g in &req.group_add {
        if g.is_empty() || g.contains(':') {
            return Err(invalid(format!(
                "invalid --group-add {g:?}: give a group name or number"
            )));
        }
    }
    if !req.devices.is_empty() && !req.uid_maps.is_empty() {
        return Err(invalid(
            "--device needs the host's user namespace: a user namespace (--uidmap) may not make device nodes",
        ));
    }
    for d in &req.devices {
        device_node(d)?;
    }
    validate_cgroup_options(req)
}

/// `--device-cgroup-rule`s as the runtime takes them.
pub fn device_cgroup_rules(
    req: &ContainerCreate,
) -> EngineResult<Vec<pier_runtime::devices::Rule>> {
    req.device_cgroup_rules
        .iter()
        .map(|r| pier_runtime::devices::Rule::parse_allow(r).map_err(invalid))
        .collect()
}

/// The checks of create for the cgroup options: `--cgroupns`, `--device-cgroup-rule`,
/// `--cgroup-parent`, `--memory-swappiness`.
fn validate_cgroup_options(req: &ContainerCreate) -> EngineResult<()> {
    if let Some(m) = req
        .cgroupns_mode
        .as_deref()
        .filter(|m| !matches!(*m, "host" | "private"))
    {
        return Err(invalid(format!(
            "invalid --cgroupns {m}: use host or private"
        )));
    }
    if !req.device_cgroup_rules.is_empty() && !req.uid_maps.is_empty() {
        return Err(invalid(
            "--device-cgroup-rule needs the host's user namespace: leave out --uidmap",
        ));
    }
    device_cgroup_rules(req)?;
    super::cgroup_parent::check(req.cgroup_parent.as_deref().unwrap_or_default())?;
    if let Some(s) = req.memory_swappiness.filter(|s| !(0..=100).contains(s)) {
        return Err(invalid(format!(
            "Invalid value: {s}, valid memory swappiness range is 0-100"
        )));
    }
    Ok(())
}

/// The device node a `--device` names, as the spec makes it.
pub fn device_node(d: &pier_api::containers::DeviceMapping) -> EngineResult<DeviceNode> {
    let host = &d.path_on_host;
    let meta = std::fs::metadata(host)
        .map_err(|e| invalid(format!("--device {host}: cannot read the host device: {e}")))?;
    let kind = if meta.file_type().is_char_device() {
        'c'
    } else if meta.file_type().is_block_device() {
        'b'
    } else {
        return Err(invalid(format!(
            "--device {host} is not a device node: give a character or block device (a directory or file goes in with -v)"
        )));
    };
    let inside = if d.path_in_container.is_empty() {
        host.clone()
    } else {
        d.path_in_container.clone()
    };
    if !inside.starts_with("/dev/") || inside.split('/').any(|c| c == "..") {
        return Err(invalid(format!(
            "--device {host}:{inside}: the path in the container must be under /dev"
        )));
    }
    let perms = if d.permissions.is_empty() {
        "rwm".to_string()
    } else {
        d.permissions.clone()
    };
    if !perms.chars().all(|c| matches!(c, 'r' | 'w' | 'm')) {
        return Err(invalid(format!(
            "--device {host}: invalid permissions {perms:?}: use r, w and m"
        )));
    }
    let rdev = meta.rdev();
    Ok(DeviceNode {
        path: inside,
        kind,
        major: rustix::fs::major(rdev),
        minor: rustix::fs::minor(rdev),
        mode: meta.mode() & 0o7777,
        uid: meta.uid(),
        gid: meta.gid(),
        access: perms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(f: impl FnOnce(&mut ContainerCreate)) -> ContainerCreate {
        let mut r = ContainerCreate::default();
        f(&mut r);
        r
    }

    #[test]
    fn only_namespaced_sysctls_pass() {
        let ok = req(|r| {
            r.sysctls.insert("net.ipv4.ip_forward".into(), "1".into());
            r.sysctls.insert("kernel.shmmax".into(), "1000".into());
            r.sysctls.insert("fs.mqueue.msg_max".into(), "20".into());
        });
        validate(&ok).unwrap();
        let host = req(|r| {
            r.sysctls.insert("kernel.hostname".into(), "x".into());
        });
        let e = validate(&host).unwrap_err().to_string();
        assert!(e.contains("is not namespaced"), "{e}");
        let net_host = req(|r| {
            r.network = Some("host".into());
            r.sysctls.insert("net.ipv4.ip_forward".into(), "1".into());
        });
        assert!(validate(&net_host).is_err());
        let ipc_host = req(|r| {
            r.ipc_mode = Some("host".into());
            r.sysctls.insert("kernel.sem".into(), "1 2 3 4".into());
        });
        assert!(validate(&ipc_host).is_err());
        let ipc_joined = req(|r| {
            r.ipc_mode = Some("container:x".into());
            r.sysctls.insert("kernel.shmmax".into(), "1000".into());
        });
        let e = validate(&ipc_joined).unwrap_err().to_string();
        assert!(e.contains("another container's"), "{e}");
    }

    #[test]
    fn namespace_modes() {
        assert!(host_pid(&req(|r| r.pid_mode = Some("host".into()))).unwrap());
        assert!(!host_pid(&req(|r| r.pid_mode = Some("private".into()))).unwrap());
        // Another container's PID namespace is joined at the start, not the host's.
        let shared = req(|r| r.pid_mode = Some("container:x".into()));
        assert!(!host_pid(&shared).unwrap());
        assert_eq!(shared_with(&shared), vec![("pid", "x")]);
        let e = host_pid(&req(|r| r.pid_mode = Some("container:".into())))
            .unwrap_err()
            .to_string();
        assert!(e.contains("--pid container: is not supported"), "{e}");
        let joins = req(|r| r.ipc_mode = Some("container:x".into()));
        assert!(!host_ipc(&joins).unwrap());
        assert_eq!(shared_with(&joins), vec![("ipc", "x")]);
        assert!(host_ipc(&req(|r| r.ipc_mode = Some("container:".into()))).is_err());
        assert!(host_ipc(&req(|r| r.ipc_mode = Some("elsewhere".into()))).is_err());
        let none = req(|r| r.ipc_mode = Some("none".into()));
        assert!(!host_ipc(&none).unwrap() && ipc_none(&none));
        assert!(!host_ipc(&req(|r| r.ipc_mode = Some("shareable".into()))).unwrap());
        assert!(host_ipc(&req(|r| r.ipc_mode = Some("host".into()))).unwrap());
        assert!(host_uts(&req(|r| r.uts_mode = Some("host".into()))).unwrap());
        assert!(!host_uts(&req(|r| r.uts_mode = Some("private".into()))).unwrap());
        assert!(host_uts(&req(|r| r.uts_mode = Some("container:x".into()))).is_err());
        let both = host_uts(&req(|r| {
            r.uts_mode = Some("host".into());
            r.hostname = Some("x".into());
        }))
        .unwrap_err();
        assert!(both.message().contains("conflicting"), "{}", both.message());
    }

    #[test]
    fn devices_must_be_device_nodes() {
        let d = |p: &str, c: &str| pier_api::containers::DeviceMapping {
            path_on_host: p.into(),
            path_in_container: c.into(),
            permissions: String::new(),
        };
        let n = device_node(&d("/dev/null", "/dev/xnull")).unwrap();
        assert_eq!((n.kind, n.major, n.minor), ('c', 1, 3));
        assert_eq!(n.access, "rwm");
        let e = device_node(&d("/etc/hostname", ""))
            .unwrap_err()
            .to_string();
        assert!(e.contains("is not a device node"), "{e}");
        assert!(device_node(&d("/dev/null", "/etc/null")).is_err());
    }
}
