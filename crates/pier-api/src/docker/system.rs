//! Docker's system shapes: `/info` from the facts the engine reports ([`Info`]).

use serde_json::{json, Value};

/// What `/info` reports, gathered by the server from the engine and the host.
#[derive(Debug, Clone, Default)]
pub struct Info {
    /// A stable ID of this daemon (from its state directory).
    pub id: String,
    pub containers: usize,
    pub running: usize,
    pub paused: usize,
    pub images: usize,
    pub root: String,
    pub kernel: String,
    pub os: String,
    pub hostname: String,
    pub cpus: u32,
    pub memory: u64,
    pub cgroup_version: u8,
    pub open_fds: usize,
    /// Clients following the event stream.
    pub listeners: usize,
    pub server_version: String,
    /// This program's path, the `pier` runtime.
    pub exe: String,
    /// Whether `runc` is there to run containers with.
    pub runc: bool,
    /// Whether VMs can run here (`--runtime pier-vm`).
    pub vm: bool,
}

/// The daemon's ID in Docker's form (`8-4-4-4-12` hex digits), from the state directory.
pub fn daemon_id(root: &str) -> String {
    let id = super::derived_id(&[root], 32);
    format!(
        "{}-{}-{}-{}-{}",
        &id[..8],
        &id[8..12],
        &id[12..16],
        &id[16..20],
        &id[20..]
    )
}

/// `GET /info`.
pub fn info_json(i: &Info) -> Value {
    let mut runtimes = json!({"pier": {"path": i.exe}});
    if i.runc {
        runtimes["runc"] = json!({"path": "runc"});
    }
    if i.vm {
        runtimes["pier-vm"] = json!({"path": i.exe});
    }
    let commit = json!({"ID": "", "Expected": ""});
    json!({
        "ID": i.id,
        "Containers": i.containers,
        "ContainersRunning": i.running,
        "ContainersPaused": i.paused,
        "ContainersStopped": i.containers - i.running - i.paused,
        "Images": i.images,
        "Driver": "overlay",
        "DriverStatus": [["Backing Filesystem", "overlay"]],
        "Plugins": {
            "Volume": ["local"],
            "Network": ["bridge", "host", "null"],
            "Authorization": null,
            "Log": ["json-file"],
        },
        "MemoryLimit": true,
        "SwapLimit": true,
        "KernelMemory": false,
        "KernelMemoryTCP": false,
        "CpuCfsPeriod": true,
        "CpuCfsQuota": true,
        "CPUShares": true,
        "CPUSet": true,
        "PidsLimit": true,
        "OomKillDisable": false,
        "IPv4Forwarding": true,
        "BridgeNfIptables": false,
        "BridgeNfIp6tables": false,
        "Debug": false,
        "NFd": i.open_fds,
        "NGoroutines": 0,
        "SystemTime": crate::time::format_rfc3339_nanos(std::time::SystemTime::now()),
        "LoggingDriver": "json-file",
        "CgroupDriver": "cgroupfs",
        "CgroupVersion": i.cgroup_version.to_string(),
        "NEventsListener": i.listeners,
        "KernelVersion": i.kernel,
        "OperatingSystem": i.os,
        "OSVersion": "",
        "OSType": "linux",
        "Architecture": std::env::consts::ARCH,
        "IndexServerAddress": "https://index.docker.io/v1/",
        "RegistryConfig": {
            "AllowNondistributableArtifactsCIDRs": [],
            "AllowNondistributableArtifactsHostnames": [],
            "InsecureRegistryCIDRs": ["127.0.0.0/8"],
            "IndexConfigs": {},
            "Mirrors": [],
        },
        "NCPU": i.cpus,
        "MemTotal": i.memory,
        "GenericResources": null,
        "DockerRootDir": i.root,
        "HttpProxy": "",
        "HttpsProxy": "",
        "NoProxy": "",
        "Name": i.hostname,
        "Labels": [],
        "ExperimentalBuild": false,
        "ServerVersion": i.server_version,
        "Runtimes": runtimes,
        "DefaultRuntime": "pier",
        "Swarm": {
            "NodeID": "",
            "NodeAddr": "",
            "LocalNodeState": "inactive",
            "ControlAvailable": false,
            "Error": "",
            "RemoteManagers": null,
        },
        "LiveRestoreEnabled": true,
        "Isolation": "",
        "InitBinary": "",
        "ContainerdCommit": commit,
        "RuncCommit": commit,
        "InitCommit": commit,
        "SecurityOptions": ["name=seccomp,profile=builtin"],
        "Warnings": [],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn info_counts_and_runtimes_are_dockers() {
        let i = Info {
            containers: 5,
            running: 2,
            paused: 1,
            exe: "/usr/bin/pier".into(),
            runc: true,
            vm: false,
            cgroup_version: 1,
            ..Default::default()
        };
        let v = info_json(&i);
        assert_eq!(v["ContainersStopped"], 2);
        assert_eq!(v["CgroupVersion"], "1");
        assert_eq!(v["Runtimes"]["pier"]["path"], "/usr/bin/pier");
        assert_eq!(v["Runtimes"]["runc"]["path"], "runc");
        let v = info_json(&Info { runc: false, ..i });
        assert!(v["Runtimes"].get("runc").is_none());
        let id = daemon_id("/var/lib/pier");
        assert_eq!(id.len(), 36);
        assert_eq!(id.matches('-').count(), 4);
    }
}
