//! The QEMU command line, typed: a [`QemuCommand`] holds the machine, accelerator,
//! memory, kernel and typed devices ([`Chardev`], [`Device`], [`Drive`], [`Netdev`]),
//! and renders them to argv in one place ([`QemuCommand::args`]), escaping commas in
//! values as QEMU's option parser wants. [`QemuCommand::for_vm`] is the VM Pier runs:
//!
//! - `microvm` with a memfd memory backend shared with virtiofsd (`share=on`), and
//!   `virtio-mmio.force-legacy=false` (vhost-user refuses legacy virtio: the guest's
//!   virtiofs mount would hang);
//! - `-nodefaults -no-user-config -nographic -no-reboot` and the seccomp `-sandbox`;
//! - the serial console on `console.sock` (+ `console.log`), QMP on `qmp.sock` for the
//!   engine and on an inherited socket for `pier __vm`, the agent's virtio-serial port
//!   on another inherited socket;
//! - the root filesystem over vhost-user-fs (tag `rootfs`), a virtio-blk per disk, and a
//!   virtio-net per NIC on a tap `pier __vm` opened (`fd=N`).
//!
//! Socket paths are relative: QEMU runs in the instance directory (a socket address holds
//! at most 108 bytes).

use std::ffi::OsString;
use std::os::fd::RawFd;
use std::path::{Path, PathBuf};

use crate::config::{self, Accel, VmConfig};

/// The kernel command line every VM gets.
pub const CMDLINE: &str = "console=ttyS0 quiet panic=-1 pci=off";
/// Added under TCG: skips the TSC calibration that, racing the host's scheduler, hangs
/// boots under load (measured: 0 of 8 parallel boots without it, 8 of 8 with it).
pub const CMDLINE_TCG: &str = "tsc_early_khz=2000000 lpj=4000000";
/// The seccomp sandbox QEMU runs under.
pub const SANDBOX: &str = "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny";

/// `driver,key=value,...` with commas in values doubled.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Opts(String);

impl Opts {
    fn new(head: &str) -> Opts {
        Opts(head.to_owned())
    }
    fn kv(mut self, key: &str, value: impl AsRef<str>) -> Opts {
        self.0.push(',');
        self.0.push_str(key);
        self.0.push('=');
        self.0.push_str(&value.as_ref().replace(',', ",,"));
        self
    }
    fn path(self, key: &str, value: &Path) -> Opts {
        self.kv(key, value.to_string_lossy())
    }
    fn flag(self, key: &str, on: bool) -> Opts {
        self.kv(key, if on { "on" } else { "off" })
    }
}

/// Where a character device's bytes go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChardevBackend {
    /// A unix socket QEMU listens on (`server=on,wait=off`: it does not wait for a client).
    UnixServer(PathBuf),
    /// A unix socket QEMU connects to.
    UnixClient(PathBuf),
    /// A connected socket QEMU inherited (one end of a socketpair).
    Fd(RawFd),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chardev {
    pub id: String,
    pub backend: ChardevBackend,
    /// A copy of everything it carries from the guest.
    pub logfile: Option<PathBuf>,
}

impl Chardev {
    fn render(&self) -> String {
        let o = Opts::new("socket").kv("id", &self.id);
        let o = match &self.backend {
            ChardevBackend::UnixServer(p) => {
                o.path("path", p).flag("server", true).flag("wait", false)
            }
            ChardevBackend::UnixClient(p) => o.path("path", p),
            ChardevBackend::Fd(fd) => o.kv("fd", fd.to_string()),
        };
        match &self.logfile {
            Some(l) => o.path("logfile", l).0,
            None => o.0,
        }
    }
}

/// A disk image's format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiskFormat {
    Raw,
    Qcow2,
}

impl DiskFormat {
    /// Told by the file's first bytes (`QFI\xfb` is qcow2); raw when it cannot be read
    /// (QEMU then says what is wrong with it).
    pub fn probe(path: &Path) -> DiskFormat {
        use std::io::Read;
        let mut magic = [0u8; 4];
        match std::fs::File::open(path).and_then(|mut f| f.read_exact(&mut magic)) {
            Ok(()) if &magic == b"QFI\xfb" => DiskFormat::Qcow2,
            _ => DiskFormat::Raw,
        }
    }
    fn name(self) -> &'static str {
        match self {
            DiskFormat::Raw => "raw",
            DiskFormat::Qcow2 => "qcow2",
        }
    }
}

/// A block backend (`-drive if=none`), attached by a [`Device::VirtioBlk`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Drive {
    pub id: String,
    pub file: PathBuf,
    pub format: DiskFormat,
    pub read_only: bool,
}

impl Drive {
    fn render(&self) -> String {
        let o = Opts::new("if=none")
            .kv("id", &self.id)
            .path("file", &self.file)
            .kv("format", self.format.name());
        if self.read_only {
            o.flag("readonly", true).0
        } else {
            o.0
        }
    }
}

/// A network backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Netdev {
    /// A tap QEMU inherited open (`IFF_TAP | IFF_NO_PI`, no vnet header).
    TapFd { id: String, fd: RawFd },
}

impl Netdev {
    fn render(&self) -> String {
        match self {
            Netdev::TapFd { id, fd } => Opts::new("tap").kv("id", id).kv("fd", fd.to_string()).0,
        }
    }
}

/// A device on microvm's virtio-mmio bus.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Device {
    VirtioSerial,
    VirtSerialPort { chardev: String, name: String },
    VhostUserFs { chardev: String, tag: String },
    VirtioBlk { drive: String },
    VirtioNet { netdev: String, mac: String },
}

impl Device {
    fn render(&self) -> String {
        match self {
            Device::VirtioSerial => "virtio-serial-device".to_owned(),
            Device::VirtSerialPort { chardev, name } => {
                Opts::new("virtserialport")
                    .kv("chardev", chardev)
                    .kv("name", name)
                    .0
            }
            Device::VhostUserFs { chardev, tag } => {
                Opts::new("vhost-user-fs-device")
                    .kv("chardev", chardev)
                    .kv("tag", tag)
                    .0
            }
            Device::VirtioBlk { drive } => Opts::new("virtio-blk-device").kv("drive", drive).0,
            Device::VirtioNet { netdev, mac } => {
                Opts::new("virtio-net-device")
                    .kv("netdev", netdev)
                    .kv("mac", mac)
                    .0
            }
        }
    }
}

/// One QEMU microvm invocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QemuCommand {
    pub binary: PathBuf,
    pub accel: Accel,
    pub cpus: u32,
    pub memory_mib: u64,
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    /// Added after [`CMDLINE`] (and [`CMDLINE_TCG`]).
    pub append: Option<String>,
    pub chardevs: Vec<Chardev>,
    /// The chardev id of the serial console.
    pub serial: Option<String>,
    /// Chardev ids of QMP monitors.
    pub qmp: Vec<String>,
    pub drives: Vec<Drive>,
    pub netdevs: Vec<Netdev>,
    pub devices: Vec<Device>,
}

/// The descriptors `pier __vm` hands QEMU for a VM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmFds {
    /// QEMU's end of the agent's socketpair.
    pub agent: RawFd,
    /// QEMU's end of `pier __vm`'s own QMP socketpair.
    pub qmp: RawFd,
    /// One open tap per NIC, in order.
    pub taps: Vec<RawFd>,
}

impl QemuCommand {
    /// A VM with no devices yet.
    pub fn new(
        binary: &Path,
        accel: Accel,
        cpus: u32,
        memory_mib: u64,
        kernel: &Path,
        initrd: &Path,
    ) -> QemuCommand {
        QemuCommand {
            binary: binary.to_owned(),
            accel,
            cpus,
            memory_mib,
            kernel: kernel.to_owned(),
            initrd: initrd.to_owned(),
            append: None,
            chardevs: Vec::new(),
            serial: None,
            qmp: Vec::new(),
            drives: Vec::new(),
            netdevs: Vec::new(),
            devices: Vec::new(),
        }
    }

    /// The VM of `config`, with the descriptors `fds` (see the module's doc).
    pub fn for_vm(config: &VmConfig, fds: &VmFds) -> QemuCommand {
        let mut q = QemuCommand::new(
            &config.qemu,
            config.accel,
            config.cpus,
            config.memory_mib,
            &config.kernel,
            &config.initramfs,
        );
        q.append = config.append.clone().filter(|a| !a.trim().is_empty());
        q.chardevs.push(Chardev {
            id: "con".into(),
            backend: ChardevBackend::UnixServer(config::CONSOLE_SOCKET.into()),
            logfile: Some(config::CONSOLE_LOG.into()),
        });
        q.serial = Some("con".into());
        q.chardevs.push(Chardev {
            id: "qmp".into(),
            backend: ChardevBackend::UnixServer(config::QMP_SOCKET.into()),
            logfile: None,
        });
        q.chardevs.push(Chardev {
            id: "qmp-host".into(),
            backend: ChardevBackend::Fd(fds.qmp),
            logfile: None,
        });
        q.qmp = vec!["qmp".into(), "qmp-host".into()];
        q.chardevs.push(Chardev {
            id: "agent".into(),
            backend: ChardevBackend::Fd(fds.agent),
            logfile: None,
        });
        q.devices.push(Device::VirtioSerial);
        q.devices.push(Device::VirtSerialPort {
            chardev: "agent".into(),
            name: pier_guest::PORT_NAME.into(),
        });
        q.chardevs.push(Chardev {
            id: "vfs".into(),
            backend: ChardevBackend::UnixClient(config::VIRTIOFSD_SOCKET.into()),
            logfile: None,
        });
        q.devices.push(Device::VhostUserFs {
            chardev: "vfs".into(),
            tag: pier_guest::ROOTFS_TAG.into(),
        });
        for (i, disk) in config.disks.iter().enumerate() {
            let id = format!("d{i}");
            q.drives.push(Drive {
                id: id.clone(),
                file: disk.path.clone(),
                format: DiskFormat::probe(&disk.path),
                read_only: disk.read_only,
            });
            q.devices.push(Device::VirtioBlk { drive: id });
        }
        for (i, (fd, nic)) in fds.taps.iter().zip(&config.run.nics).enumerate() {
            let id = format!("n{i}");
            q.netdevs.push(Netdev::TapFd {
                id: id.clone(),
                fd: *fd,
            });
            q.devices.push(Device::VirtioNet {
                netdev: id,
                mac: nic.mac.clone(),
            });
        }
        q
    }

    /// The kernel's command line.
    pub fn cmdline(&self) -> String {
        let mut c = CMDLINE.to_owned();
        if self.accel == Accel::Tcg {
            c.push(' ');
            c.push_str(CMDLINE_TCG);
        }
        // Which drivers the guest agent loads.
        let mut kinds = Vec::new();
        if !self.netdevs.is_empty() {
            kinds.push("net");
        }
        if !self.drives.is_empty() {
            kinds.push("block");
        }
        if kinds.is_empty() {
            kinds.push("none");
        }
        c.push_str(&format!(
            " {}={}",
            pier_guest::DEVICES_PARAM,
            kinds.join(",")
        ));
        if let Some(a) = &self.append {
            c.push(' ');
            c.push_str(a);
        }
        c
    }

    /// The arguments after the binary.
    pub fn args(&self) -> Vec<OsString> {
        let mut a: Vec<OsString> = Vec::new();
        let mut push = |k: &str, v: String| {
            a.push(k.into());
            a.push(v.into());
        };
        push("-machine", "microvm,memory-backend=mem".into());
        match self.accel {
            Accel::Kvm => {
                push("-accel", "kvm".into());
                push("-cpu", "host".into());
            }
            Accel::Tcg => push("-accel", "tcg,tb-size=64".into()),
        }
        push("-smp", self.cpus.max(1).to_string());
        push("-m", format!("{}M", self.memory_mib));
        push(
            "-object",
            Opts::new("memory-backend-memfd")
                .kv("id", "mem")
                .kv("size", format!("{}M", self.memory_mib))
                .flag("share", true)
                .0,
        );
        push("-global", "virtio-mmio.force-legacy=false".into());
        push("-sandbox", SANDBOX.into());
        push("-kernel", self.kernel.to_string_lossy().into_owned());
        push("-initrd", self.initrd.to_string_lossy().into_owned());
        push("-append", self.cmdline());
        for c in &self.chardevs {
            push("-chardev", c.render());
        }
        match &self.serial {
            Some(id) => push("-serial", format!("chardev:{id}")),
            None => push("-serial", "none".into()),
        }
        for id in &self.qmp {
            push(
                "-mon",
                format!("chardev={},mode=control", id.replace(',', ",,")),
            );
        }
        for d in &self.drives {
            push("-drive", d.render());
        }
        for n in &self.netdevs {
            push("-netdev", n.render());
        }
        for d in &self.devices {
            push("-device", d.render());
        }
        let mut all: Vec<OsString> = ["-nodefaults", "-no-user-config", "-nographic", "-no-reboot"]
            .iter()
            .map(OsString::from)
            .collect();
        all.extend(a);
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Disk;

    fn argv(q: &QemuCommand) -> Vec<String> {
        q.args()
            .into_iter()
            .map(|s| s.into_string().unwrap())
            .collect()
    }

    /// The value after each occurrence of `flag`.
    fn values(a: &[String], flag: &str) -> Vec<String> {
        a.windows(2)
            .filter(|w| w[0] == flag)
            .map(|w| w[1].clone())
            .collect()
    }

    fn config(accel: Accel) -> VmConfig {
        VmConfig {
            qemu: "/usr/bin/qemu-system-x86_64".into(),
            virtiofsd: "/usr/lib/qemu/virtiofsd".into(),
            kernel: "/k/vmlinuz".into(),
            initramfs: "/k/initramfs".into(),
            accel,
            cpus: 2,
            memory_mib: 256,
            netns: None,
            shares: vec![],
            disks: vec![
                Disk {
                    path: "/v/a,b.img".into(),
                    read_only: false,
                },
                Disk {
                    path: "/v/c.img".into(),
                    read_only: true,
                },
            ],
            run: pier_guest::RunConfig {
                nics: vec![pier_guest::GuestNic {
                    mac: "02:42:0a:00:00:02".into(),
                    address: "10.0.0.2".into(),
                    prefix: 24,
                    gateway: None,
                    mtu: None,
                }],
                ..Default::default()
            },
            append: None,
        }
    }

    #[test]
    fn a_tcg_vm_renders_every_device_with_its_flags() {
        let fds = VmFds {
            agent: 7,
            qmp: 8,
            taps: vec![9],
        };
        let a = argv(&QemuCommand::for_vm(&config(Accel::Tcg), &fds));
        assert_eq!(
            &a[..4],
            ["-nodefaults", "-no-user-config", "-nographic", "-no-reboot"]
        );
        assert_eq!(values(&a, "-machine"), ["microvm,memory-backend=mem"]);
        assert_eq!(values(&a, "-accel"), ["tcg,tb-size=64"]);
        assert!(values(&a, "-cpu").is_empty());
        assert_eq!(values(&a, "-smp"), ["2"]);
        assert_eq!(values(&a, "-m"), ["256M"]);
        assert_eq!(
            values(&a, "-object"),
            ["memory-backend-memfd,id=mem,size=256M,share=on"]
        );
        assert_eq!(values(&a, "-global"), ["virtio-mmio.force-legacy=false"]);
        assert_eq!(values(&a, "-sandbox"), [SANDBOX]);
        assert_eq!(
            values(&a, "-append"),
            ["console=ttyS0 quiet panic=-1 pci=off tsc_early_khz=2000000 lpj=4000000 pier_devices=net,block"]
        );
        assert_eq!(
            values(&a, "-chardev"),
            [
                "socket,id=con,path=console.sock,server=on,wait=off,logfile=console.log",
                "socket,id=qmp,path=qmp.sock,server=on,wait=off",
                "socket,id=qmp-host,fd=8",
                "socket,id=agent,fd=7",
                "socket,id=vfs,path=virtiofsd.sock",
            ]
        );
        assert_eq!(values(&a, "-serial"), ["chardev:con"]);
        assert_eq!(
            values(&a, "-mon"),
            ["chardev=qmp,mode=control", "chardev=qmp-host,mode=control"]
        );
        // A comma in a path is doubled, as QEMU's option parser reads it.
        assert_eq!(
            values(&a, "-drive"),
            [
                "if=none,id=d0,file=/v/a,,b.img,format=raw",
                "if=none,id=d1,file=/v/c.img,format=raw,readonly=on"
            ]
        );
        assert_eq!(values(&a, "-netdev"), ["tap,id=n0,fd=9"]);
        assert_eq!(
            values(&a, "-device"),
            [
                "virtio-serial-device",
                "virtserialport,chardev=agent,name=pier.agent",
                "vhost-user-fs-device,chardev=vfs,tag=rootfs",
                "virtio-blk-device,drive=d0",
                "virtio-blk-device,drive=d1",
                "virtio-net-device,netdev=n0,mac=02:42:0a:00:00:02",
            ]
        );
    }

    #[test]
    fn kvm_uses_the_host_cpu_and_no_tcg_boot_workaround() {
        let mut c = config(Accel::Kvm);
        c.append = Some("pier.debug=1".into());
        c.disks.clear();
        let a = argv(&QemuCommand::for_vm(
            &c,
            &VmFds {
                agent: 3,
                qmp: 4,
                taps: vec![],
            },
        ));
        assert_eq!(values(&a, "-accel"), ["kvm"]);
        assert_eq!(values(&a, "-cpu"), ["host"]);
        assert_eq!(
            values(&a, "-append"),
            ["console=ttyS0 quiet panic=-1 pci=off pier_devices=none pier.debug=1"]
        );
        assert!(values(&a, "-netdev").is_empty());
        assert!(values(&a, "-drive").is_empty());
    }

    #[test]
    fn qcow2_is_told_from_raw_by_its_magic() {
        let dir = tempfile::tempdir().unwrap();
        let q = dir.path().join("q");
        std::fs::write(&q, b"QFI\xfb\0\0\0\x03").unwrap();
        let r = dir.path().join("r");
        std::fs::write(&r, [0u8; 16]).unwrap();
        assert_eq!(DiskFormat::probe(&q), DiskFormat::Qcow2);
        assert_eq!(DiskFormat::probe(&r), DiskFormat::Raw);
        assert_eq!(
            DiskFormat::probe(&dir.path().join("missing")),
            DiskFormat::Raw
        );
    }
}
