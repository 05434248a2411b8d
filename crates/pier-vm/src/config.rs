//! What the engine tells `pier __vm` ([`VmConfig`], the file `DIR/vm.json`, written at
//! every start), what `pier __vm` reports back ([`VmState`], `DIR/vm-state.json`), and the
//! names of the files and sockets it makes in `DIR`.

use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The VM's configuration file in the instance directory.
pub const CONFIG_FILE: &str = "vm.json";
/// What `pier __vm` found out about the running VM.
pub const STATE_FILE: &str = "vm-state.json";
/// The serial console's socket (`pier vm console` connects to it).
pub const CONSOLE_SOCKET: &str = "console.sock";
/// Everything the serial console printed (the kernel's messages included).
pub const CONSOLE_LOG: &str = "console.log";
/// QEMU's QMP socket, free for the engine (`pause`/`unpause`); `pier __vm` has its own.
pub const QMP_SOCKET: &str = "qmp.sock";
/// The socket `pier __vm-exec` connects to.
pub const EXEC_SOCKET: &str = "vm-exec.sock";
/// virtiofsd's vhost-user socket.
pub const VIRTIOFSD_SOCKET: &str = "virtiofsd.sock";
/// QEMU's own standard error (its errors before the guest runs).
pub const QEMU_LOG: &str = "qemu.log";
/// virtiofsd's standard error.
pub const VIRTIOFSD_LOG: &str = "virtiofsd.log";
/// The instance's root filesystem (mounted by the engine), shared with the guest.
pub const ROOTFS: &str = "rootfs";

/// How the VM's CPU runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Accel {
    /// Hardware virtualization.
    Kvm,
    /// QEMU's emulation (no KVM needed, about 2-3 s to boot).
    Tcg,
}

impl std::fmt::Display for Accel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        })
    }
}

/// A host directory the guest sees at `target` inside its root filesystem.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Share {
    pub source: PathBuf,
    /// Where, inside the instance's root filesystem (`/data`).
    pub target: String,
    #[serde(default)]
    pub read_only: bool,
}

/// A virtio-blk disk (raw or qcow2, told apart by its first bytes).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Disk {
    pub path: PathBuf,
    #[serde(default)]
    pub read_only: bool,
}

/// `DIR/vm.json`: everything `pier __vm` needs to run the VM.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VmConfig {
    /// `/usr/bin/qemu-system-x86_64`.
    pub qemu: PathBuf,
    /// `/usr/lib/qemu/virtiofsd`.
    pub virtiofsd: PathBuf,
    pub kernel: PathBuf,
    pub initramfs: PathBuf,
    pub accel: Accel,
    pub cpus: u32,
    pub memory_mib: u64,
    /// The instance's network namespace (with eth0.. made by the engine); None: no NIC.
    pub netns: Option<PathBuf>,
    /// Host directories bound onto DIR/rootfs/<target> before virtiofsd starts.
    pub shares: Vec<Share>,
    /// virtio-blk disks, in order (/dev/vda, /dev/vdb, ...).
    pub disks: Vec<Disk>,
    /// What the guest sets up and runs (its nics: one per ethN in the netns, in order).
    pub run: pier_guest::RunConfig,
    /// Extra kernel command line (the lead passes none by default).
    #[serde(default)]
    pub append: Option<String>,
}

/// `DIR/vm-state.json`: what the running VM really is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmState {
    /// What QEMU reports it uses (QMP `query-kvm`).
    pub accel: Accel,
    pub qemu_pid: u32,
}

/// Why a configuration file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path} is not a valid VM configuration")]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("cannot write {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl VmConfig {
    /// Reads `DIR/vm.json`.
    pub fn load(dir: &Path) -> Result<VmConfig, ConfigError> {
        read_json(&dir.join(CONFIG_FILE))
    }

    /// Writes `DIR/vm.json` (whole or not at all).
    pub fn save(&self, dir: &Path) -> Result<(), ConfigError> {
        write_json(&dir.join(CONFIG_FILE), self)
    }
}

impl VmState {
    /// Reads `DIR/vm-state.json`.
    pub fn load(dir: &Path) -> Result<VmState, ConfigError> {
        read_json(&dir.join(STATE_FILE))
    }

    /// Writes `DIR/vm-state.json` (whole or not at all).
    pub fn save(&self, dir: &Path) -> Result<(), ConfigError> {
        write_json(&dir.join(STATE_FILE), self)
    }
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, ConfigError> {
    let bytes = std::fs::read(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    serde_json::from_slice(&bytes).map_err(|source| ConfigError::Parse {
        path: path.to_owned(),
        source,
    })
}

fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), ConfigError> {
    let bytes = serde_json::to_vec_pretty(value).expect("serializable");
    crate::sys::write_atomic(path, &bytes, 0o644).map_err(|source| ConfigError::Write {
        path: path.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_engines_json_reads_with_lowercase_accel_and_optional_append() {
        let json = r#"{
            "qemu": "/usr/bin/qemu-system-x86_64", "virtiofsd": "/usr/lib/qemu/virtiofsd",
            "kernel": "/k", "initramfs": "/i", "accel": "tcg", "cpus": 1, "memory_mib": 256,
            "netns": null, "shares": [{"source": "/s", "target": "/data", "read_only": true}],
            "disks": [{"path": "/d.img", "read_only": false}],
            "run": {"hostname": "h", "rootfs": "rootfs",
                    "process": {"args": ["/bin/true"], "env": [], "cwd": "/", "uid": 0, "gid": 0}}
        }"#;
        let c: VmConfig = serde_json::from_str(json).unwrap();
        assert_eq!(c.accel, Accel::Tcg);
        assert_eq!(c.append, None);
        assert!(c.shares[0].read_only);
        let back = serde_json::to_value(&c).unwrap();
        assert_eq!(back["accel"], "tcg");
        let s = serde_json::to_string(&VmState {
            accel: Accel::Kvm,
            qemu_pid: 7,
        })
        .unwrap();
        assert_eq!(s, r#"{"accel":"kvm","qemu_pid":7}"#);
    }

    #[test]
    fn save_then_load_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let st = VmState {
            accel: Accel::Tcg,
            qemu_pid: 42,
        };
        st.save(dir.path()).unwrap();
        assert_eq!(VmState::load(dir.path()).unwrap(), st);
        let e = VmConfig::load(dir.path()).unwrap_err();
        assert!(e.to_string().contains("vm.json"), "{e}");
    }
}
