//! A container's volumes: [`Volumes::attach`] at create (named volumes made on first use,
//! anonymous ones made, block volumes checked, the container recorded as a holder) and
//! [`Volumes::attach_block`] at start (block volumes' devices attached or filesystems
//! mounted), each as steps with an undo, so a failure leaves nothing made or attached.
//! Also block volumes' devices, their release, and prune.

use std::path::PathBuf;

use pier_api::volumes::{MountKind, MountSpec, VolumeCreate, VolumeInspect};
use pier_api::{ErrorKind, ProjectName};
use pier_storage::block::{Disk, Format};

use super::record::Phase;
use super::{st, Volumes};
use crate::error::EngineResult;
use crate::error::{conflict, invalid};
use crate::steps::Undo;

impl Volumes {
    /// Prepares the volumes of a new container `holder`: makes named ones on first use
    /// and anonymous ones now (naming them in `mounts`), marks how each block volume is
    /// given (`block=device` under /dev, else `block=fs`), and records `holder` on each.
    /// Returns the anonymous volumes made, which [`Volumes::undo_attach`] removes if the
    /// container's create fails later. On failure nothing made here is left.
    pub fn attach(
        &self,
        project: &ProjectName,
        holder: &str,
        mounts: &mut [MountSpec],
    ) -> EngineResult<Vec<String>> {
        let mut undo = Undo::new();
        let mut made = Vec::new();
        for m in mounts.iter_mut().filter(|m| m.kind == MountKind::Volume) {
            let r = match &m.source {
                Some(n) => self.ensure_made(project, n).map(|(v, new)| (v, new, false)),
                None => self
                    .create_in(project, VolumeCreate::default(), true)
                    .map(|v| (v, true, true)),
            };
            let (v, new, anonymous) = match r {
                Ok(r) => r,
                Err(e) => return Err(undo.fail(e)),
            };
            if new {
                let name = v.name.clone();
                undo.push(move || {
                    let _ = self.remove(project, &name);
                });
            }
            if anonymous {
                made.push(v.name.clone());
                m.source = Some(v.name.clone());
            }
            if let Err(e) = Self::block_use(&v, m) {
                return Err(undo.fail(e));
            }
        }
        let names: Vec<String> = mounts
            .iter()
            .filter(|m| m.kind == MountKind::Volume)
            .filter_map(|m| m.source.clone())
            .collect();
        for name in &names {
            if let Err(e) = self.hold(project, name, holder) {
                return Err(undo.fail(e));
            }
            let name = name.clone();
            undo.push(move || {
                let _ = self.unhold(project, &name, holder);
            });
        }
        undo.commit();
        Ok(made)
    }

    /// Marks how block volume `v` is given to the container at `m`.
    fn block_use(v: &VolumeInspect, m: &mut MountSpec) -> EngineResult<()> {
        if v.driver != "block" {
            return Ok(());
        }
        let how = if m.target.starts_with("/dev/") {
            "device"
        } else if Volumes::has_fs(v) {
            "fs"
        } else {
            return Err(invalid(format!(
                "block volume {} has no filesystem: attach it as a device under /dev/ (e.g. target=/dev/vdb), or create it with --opt fs=ext4",
                v.name
            )));
        };
        m.options.insert("block".into(), how.into());
        Ok(())
    }

    /// Records `holder` on the volume.
    fn hold(&self, project: &ProjectName, name: &str, holder: &str) -> EngineResult<()> {
        self.update(project, name, &mut |s| {
            if s.phase == Phase::Removing {
                return Err(conflict(format!(
                    "volume {name} is being removed: retry `pier volume rm {name}` to finish, or use another volume"
                )));
            }
            Ok(s.holders.insert(holder.to_string()))
        })
    }

    fn unhold(&self, project: &ProjectName, name: &str, holder: &str) -> EngineResult<()> {
        self.update(project, name, &mut |s| Ok(s.holders.remove(holder)))
    }

    /// Forgets `holder` on the volumes of `mounts` (a container removed).
    pub fn detach(&self, project: &ProjectName, holder: &str, mounts: &[MountSpec]) {
        for m in mounts.iter().filter(|m| m.kind == MountKind::Volume) {
            if let Some(name) = m.source.as_deref() {
                let _ = self.unhold(project, name, holder);
            }
        }
    }

    /// Takes back [`Volumes::attach`] for a container whose create failed later: forgets
    /// it as a holder and removes the anonymous volumes `made` for it.
    pub fn undo_attach(
        &self,
        project: &ProjectName,
        holder: &str,
        mounts: &[MountSpec],
        made: &[String],
    ) {
        self.detach(project, holder, mounts);
        for name in made {
            let _ = self.remove(project, name);
        }
    }

    /// Attaches a starting container's block volumes (devices for `block=device`,
    /// mounted filesystems for `block=fs`); returns the loop devices' minors for its
    /// device rules. On failure, what this call attached is released again.
    pub fn attach_block(
        &self,
        project: &ProjectName,
        mounts: &[MountSpec],
    ) -> EngineResult<Vec<u32>> {
        let mut undo = Undo::new();
        let mut minors = Vec::new();
        for m in mounts {
            let (Some(how), Some(name)) = (m.options.get("block"), m.source.as_deref()) else {
                continue;
            };
            let before = self.mounts.is_mounted(&self.device_node(project, name))
                || self.mounts.is_mounted(&self.mountpoint(project, name));
            let r = if how == "device" {
                self.attach_device(project, name).map(|n| minors.push(n))
            } else {
                self.mount_fs(project, name)
            };
            if let Err(e) = r {
                return Err(undo.fail(e));
            }
            if !before {
                undo.push(move || self.release(project, name));
            }
        }
        undo.commit();
        Ok(minors)
    }

    /// The disk image of a block volume.
    pub fn disk(&self, v: &VolumeInspect) -> Option<Disk> {
        (v.driver == "block").then(|| {
            let format = v
                .options
                .get("format")
                .and_then(|f| Format::parse(f))
                .unwrap_or(Format::Raw);
            Disk::new(&self.vdir(&v.project, &v.name), format)
        })
    }

    /// Whether a block volume carries a filesystem to mount.
    pub fn has_fs(v: &VolumeInspect) -> bool {
        v.options.get("fs").map(String::as_str) == Some("ext4")
    }

    /// A stable path to a block volume's device node (bind-mounted from /dev/loopN),
    /// for container specs written before the device exists.
    pub fn device_node(&self, project: &ProjectName, name: &str) -> PathBuf {
        self.vdir(project, name).join("device")
    }

    fn block_disk(&self, project: &ProjectName, name: &str) -> EngineResult<(VolumeInspect, Disk)> {
        let v = self.get(project, name)?;
        let disk = self
            .disk(&v)
            .ok_or_else(|| invalid(format!("volume {name} is not a block volume")))?;
        Ok((v, disk))
    }

    /// Attaches a block volume's device; returns the loop device's minor number.
    pub fn attach_device(&self, project: &ProjectName, name: &str) -> EngineResult<u32> {
        let (v, disk) = self.block_disk(project, name)?;
        let dev = self.backend.attach_disk(&disk).map_err(st)?;
        let node = self.device_node(project, name);
        let r = (|| {
            if !self.mounts.is_mounted(&node) {
                self.mounts.bind_device(&dev, &node).map_err(st)?;
            }
            self.backend.loop_minor(&dev).map_err(st)
        })();
        if r.is_err() {
            // Nothing stays attached for a start that fails.
            let _ = self.release_disk(&v, &disk);
        }
        r
    }

    /// Mounts a block volume's filesystem on its mountpoint.
    pub fn mount_fs(&self, project: &ProjectName, name: &str) -> EngineResult<()> {
        let (v, disk) = self.block_disk(project, name)?;
        let data = self.mountpoint(project, name);
        if !self.mounts.is_mounted(&data) {
            let dev = self.backend.attach_disk(&disk).map_err(st)?;
            if let Err(e) = self.mounts.mount_device(&dev, &data) {
                let _ = self.release_disk(&v, &disk);
                return Err(st(e));
            }
        }
        Ok(())
    }

    /// Unmounts a block volume's filesystem and device node, detaches its disk.
    pub(crate) fn release_disk(&self, v: &VolumeInspect, disk: &Disk) -> pier_storage::Result<()> {
        // Every part is tried; the first failure is the answer.
        let data = self.mounts.unmount(&self.mountpoint(&v.project, &v.name));
        let node = self.device_node(&v.project, &v.name);
        let node = self
            .mounts
            .unmount(&node)
            .and_then(|()| self.backend.remove(&node));
        self.backend.release_disk(disk);
        data.and(node)
    }

    /// Releases a block volume no running container uses: unmount, loop device, export.
    pub fn release(&self, project: &ProjectName, name: &str) {
        if let Ok(v) = self.get(project, name) {
            if let Some(disk) = self.disk(&v) {
                let _ = self.release_disk(&v, &disk);
            }
        }
    }

    /// Removes the project's volumes that no container uses (`in_use` answers for a
    /// name, and live holders count too): anonymous ones, or all with `all`. Returns the
    /// names removed.
    pub fn prune(
        &self,
        project: &ProjectName,
        all: bool,
        keep: &dyn Fn(&VolumeInspect) -> EngineResult<bool>,
    ) -> EngineResult<Vec<String>> {
        let mut removed = Vec::new();
        for v in self.list(project)? {
            if !(all || v.anonymous) || keep(&v)? {
                continue;
            }
            match self.remove(project, &v.name) {
                Ok(()) => removed.push(v.name),
                // Held by a container meanwhile: it stays.
                Err(e) if e.kind() == ErrorKind::Conflict => {}
                Err(e) => return Err(e),
            }
        }
        Ok(removed)
    }
}
