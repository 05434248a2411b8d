//! Block volumes: disk images made by `qemu-img` (raw or qcow2), which VMs will boot
//! and attach as they are, and which containers get as a block device or as a mounted
//! filesystem.
//!
//! A raw image is attached through a loop device. A qcow2 image is first exported as a
//! raw view by `qemu-storage-daemon` (its FUSE export: this kernel has no nbd module
//! to lean on, and FUSE needs none), and that view is attached through a loop device.
//! The export runs while some container uses the volume; its pid file says which
//! process it is, so a restarted daemon finds and stops exports nobody needs.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::error::{io, run};
use crate::{loopdev, Result};

/// A disk image format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Raw,
    Qcow2,
}

impl Format {
    pub fn parse(s: &str) -> Option<Format> {
        match s {
            "raw" => Some(Format::Raw),
            "qcow2" => Some(Format::Qcow2),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Format::Raw => "raw",
            Format::Qcow2 => "qcow2",
        }
    }
}

/// The files a block volume keeps in its directory.
#[derive(Debug, Clone)]
pub struct Disk {
    /// The image (`disk.raw` or `disk.qcow2`).
    pub image: PathBuf,
    pub format: Format,
    /// Where a qcow2 image's raw view is exported.
    pub export: PathBuf,
    pub pidfile: PathBuf,
}

impl Disk {
    pub fn new(dir: &Path, format: Format) -> Disk {
        Disk {
            image: dir.join(format!("disk.{}", format.as_str())),
            format,
            export: dir.join("export.raw"),
            pidfile: dir.join("export.pid"),
        }
    }

    /// Makes the image, with an ext4 filesystem on it when `ext4`.
    pub fn create(&self, size: u64, ext4: bool) -> Result<()> {
        let mut cmd = Command::new("qemu-img");
        cmd.args(["create", "-q", "-f", self.format.as_str()])
            .arg(&self.image)
            .arg(size.to_string());
        run(&mut cmd, "qemu-img create", "qemu-utils", &self.image)?;
        if ext4 {
            let target = match self.format {
                Format::Raw => self.image.clone(),
                Format::Qcow2 => {
                    self.start_export()?;
                    self.export.clone()
                }
            };
            let r = run(
                Command::new("mkfs.ext4")
                    .args(["-q", "-F", "-E", "nodiscard"])
                    .arg(&target),
                "mkfs.ext4",
                "e2fsprogs",
                &target,
            );
            if self.format == Format::Qcow2 {
                self.stop_export();
            }
            r?;
        }
        Ok(())
    }

    fn export_pid(&self) -> Option<i32> {
        let pid: i32 = fs::read_to_string(&self.pidfile)
            .ok()?
            .trim()
            .parse()
            .ok()?;
        // Only if that process is still the export (a reused pid is someone else's).
        let cmdline = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        let needle = self.export.to_string_lossy();
        String::from_utf8_lossy(&cmdline)
            .contains(needle.as_ref())
            .then_some(pid)
    }

    fn start_export(&self) -> Result<()> {
        if self.export_pid().is_some() {
            return Ok(());
        }
        fs::write(&self.export, b"").map_err(io("create", &self.export))?;
        let _ = fs::remove_file(&self.pidfile);
        let mut cmd = Command::new("qemu-storage-daemon");
        cmd.arg("--blockdev")
            .arg(format!(
                "driver=file,node-name=file,filename={}",
                self.image.display()
            ))
            .arg("--blockdev")
            .arg("driver=qcow2,node-name=disk,file=file")
            .arg("--export")
            .arg(format!(
                "type=fuse,id=export,node-name=disk,mountpoint={},writable=on",
                self.export.display()
            ))
            .arg("--pidfile")
            .arg(&self.pidfile)
            .arg("--daemonize");
        run(&mut cmd, "qemu-storage-daemon", "qemu-utils", &self.image)
    }

    fn stop_export(&self) {
        if let Some(pid) = self.export_pid() {
            // SAFETY: kill(2) on a pid checked above to be our export.
            unsafe { libc::kill(pid, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(10);
            // Gone, or a zombie waiting for whoever reaps it (not us: it daemonized).
            let alive = || {
                fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|st| {
                    st.rsplit(')')
                        .next()
                        .and_then(|r| r.split_whitespace().next())
                        != Some("Z")
                })
            };
            while alive() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        // A killed export may leave its FUSE mount behind.
        let _ = rustix::mount::unmount(&self.export, rustix::mount::UnmountFlags::DETACH);
        let _ = fs::remove_file(&self.pidfile);
    }

    /// The raw file a loop device is set up on.
    fn raw(&self) -> &Path {
        match self.format {
            Format::Raw => &self.image,
            Format::Qcow2 => &self.export,
        }
    }

    /// A block device for the image, set up once: later calls return the same one.
    pub fn attach(&self) -> Result<PathBuf> {
        if self.format == Format::Qcow2 {
            self.start_export()?;
        }
        if let Some(dev) = loopdev::backed_by(self.raw()).into_iter().next() {
            return Ok(dev);
        }
        let (dev, _f) = loopdev::attach(self.raw(), false)?;
        Ok(dev)
    }

    /// Detaches every loop device on the image and stops its export. Everything written
    /// is flushed down to the image first: the loop device writes into the raw file's
    /// page cache, and for a qcow2 image those pages must reach the export before it
    /// stops.
    pub fn release(&self) {
        for dev in loopdev::backed_by(self.raw()) {
            if let Ok(f) = fs::File::open(&dev) {
                let _ = f.sync_all();
            }
            let _ = loopdev::detach(&dev);
        }
        if let Ok(f) = fs::OpenOptions::new().write(true).open(self.raw()) {
            let _ = f.sync_all();
        }
        if self.format == Format::Qcow2 {
            self.stop_export();
        }
    }
}
