//! Volumes: named and anonymous volumes, their limits, snapshots, export and import, the
//! per-project storage quota, and the reconciler that remounts limited volumes and
//! removes what a crash left half-made.
//!
//! A volume is a directory `ROOT/volumes/<project>/<name>/_data`. A volume with `size` or
//! `inodes` is an ext4 image `.../<name>/disk.img` mounted on `_data` (see
//! `pier-storage`). Snapshots live in `.../<name>/snapshots/<snap>/`. Records are in
//! `Table::Volumes`; the directory is made first and the record last, so a crash leaves at
//! most a directory without a record, which the next start removes.
//!
//! Pier before 0.2 kept volumes at `ROOT/volumes/<name>`; [`Volumes::new`] moves them
//! (see `migrate_layout`), and the mount sources of the containers' bundles with them.

use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use pier_api::time::now_rfc3339;
use pier_api::volumes::{VolumeCreate, VolumeInspect, VolumeUsage};
use pier_api::ByteSize;
use pier_api::{ErrorKind, ProjectName};
use pier_storage::{ext4, tree};
use pier_store::{Batch, Store, StoreExt, Table};

use crate::containers::{conflict, internal, invalid, valid_name};
use crate::error::{EngineError, EngineResult};
use crate::projects::{Projects, Quota};

/// A pier-storage error as the engine answers it: its kind decides the status (a full disk
/// is a 507, a host failure a 500), its message carries the chain of causes.
pub(crate) fn st(e: pier_storage::Error) -> EngineError {
    use pier_storage::ErrorKind as Storage;
    let kind = match e.kind() {
        Storage::Invalid => ErrorKind::InvalidInput,
        Storage::NotFound => ErrorKind::NotFound,
        Storage::Conflict => ErrorKind::Conflict,
        Storage::Busy => ErrorKind::Unavailable,
        Storage::NoSpace => ErrorKind::InsufficientStorage,
        Storage::Host => ErrorKind::Internal,
    };
    EngineError::new(kind, e.chain())
}

fn not_found(name: &str) -> EngineError {
    EngineError::new(
        ErrorKind::NotFound,
        format!("no such volume: {name} (see `pier volume ls`)"),
    )
}

/// The `Table::Meta` key of the volume directory layout, and the layout this Pier uses.
const LAYOUT_KEY: &str = "volumes-layout";
const LAYOUT: &str = "project/name";

/// Rewrites, in each `containers/<id>/config.json`, the mount sources under an old volume
/// directory to its new one (`moved`: old, new pairs).
fn rewrite_bundles(containers: &Path, moved: &[(PathBuf, PathBuf)]) -> EngineResult<()> {
    if moved.is_empty() {
        return Ok(());
    }
    let Ok(rd) = fs::read_dir(containers) else {
        return Ok(());
    };
    for e in rd.flatten() {
        let path = e.path().join("config.json");
        let Ok(bytes) = fs::read(&path) else { continue };
        let Ok(mut spec) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
            continue;
        };
        let mut changed = false;
        for m in spec["mounts"].as_array_mut().into_iter().flatten() {
            let Some(src) = m["source"].as_str().map(PathBuf::from) else {
                continue;
            };
            for (old, new) in moved {
                if let Ok(rest) = src.strip_prefix(old) {
                    m["source"] = new.join(rest).display().to_string().into();
                    changed = true;
                    break;
                }
            }
        }
        if changed {
            let tmp = e.path().join("config.json.migrating");
            let out = serde_json::to_vec(&spec).expect("json");
            fs::write(&tmp, out).map_err(|err| EngineError::host("write", &tmp, err))?;
            fs::rename(&tmp, &path).map_err(|err| EngineError::host("replace", &path, err))?;
        }
    }
    Ok(())
}

fn key(project: &ProjectName, name: &str) -> String {
    format!("{project}/{name}")
}

/// The volume manager.
pub struct Volumes {
    db: Arc<dyn Store>,
    projects: Arc<Projects>,
    dir: PathBuf,
    /// Serializes creates and removals (names, quota totals).
    lock: std::sync::Mutex<()>,
}

impl Volumes {
    pub fn new(root: &Path, db: Arc<dyn Store>, projects: Arc<Projects>) -> EngineResult<Self> {
        let dir = root.join("volumes");
        fs::create_dir_all(&dir).map_err(|e| EngineError::host("create", &dir, e))?;
        let v = Volumes {
            db,
            projects,
            dir,
            lock: std::sync::Mutex::new(()),
        };
        v.migrate_layout(&root.join("containers"))?;
        Ok(v)
    }

    /// Moves volumes from the layout of Pier before 0.2 (`volumes/<name>`) to
    /// `volumes/<project>/<name>`, and rewrites the mount sources in the bundles of the
    /// containers in `containers` that use them. Every step can be repeated: a crash
    /// midway leaves a state the next start finishes. Old directories go to a staging
    /// directory first, so a volume named like a project is never confused with the
    /// project's directory.
    fn migrate_layout(&self, containers: &Path) -> EngineResult<()> {
        if self.db.get(Table::Meta, LAYOUT_KEY)?.as_deref() == Some(LAYOUT.as_bytes()) {
            return Ok(());
        }
        let records = self.db.list_json::<VolumeInspect>(Table::Volumes, "")?;
        let stage = self.dir.join(".v1");
        let host = |op, p: &Path| {
            let p = p.to_path_buf();
            move |e| EngineError::host(op, p, e)
        };
        for (_, v) in &records {
            let (old, staged) = (self.dir.join(&v.name), stage.join(&v.name));
            let moved = self.vdir(&v.project, &v.name).exists() || staged.exists();
            if !moved && old.join("_data").exists() {
                fs::create_dir_all(&stage).map_err(host("create", &stage))?;
                fs::rename(&old, &staged).map_err(host("move", &old))?;
            }
        }
        let mut moved = Vec::new();
        for (_, v) in &records {
            let (staged, new) = (stage.join(&v.name), self.vdir(&v.project, &v.name));
            if staged.exists() && !new.exists() {
                let parent = self.dir.join(v.project.as_str());
                fs::create_dir_all(&parent).map_err(host("create", &parent))?;
                fs::rename(&staged, &new).map_err(host("move", &staged))?;
            }
            moved.push((self.dir.join(&v.name), new));
        }
        rewrite_bundles(containers, &moved)?;
        let _ = fs::remove_dir(&stage);
        let mut b = Batch::new();
        for (key, mut v) in records {
            v.mountpoint = self.mountpoint(&v.project, &v.name).display().to_string();
            b.put_json(Table::Volumes, key, &v);
        }
        b.ops.push(pier_store::Op::Put {
            table: Table::Meta,
            key: LAYOUT_KEY.into(),
            value: LAYOUT.as_bytes().to_vec(),
        });
        b.commit(self.db.as_ref())?;
        Ok(())
    }

    /// A volume's directory: `ROOT/volumes/<project>/<name>`.
    fn vdir(&self, project: &ProjectName, name: &str) -> PathBuf {
        self.dir.join(project.as_str()).join(name)
    }

    /// Where a volume's data is.
    pub fn mountpoint(&self, project: &ProjectName, name: &str) -> PathBuf {
        self.vdir(project, name).join("_data")
    }

    pub fn get(&self, project: &ProjectName, name: &str) -> EngineResult<VolumeInspect> {
        self.db
            .get_json::<VolumeInspect>(Table::Volumes, &key(project, name))?
            .ok_or_else(|| not_found(name))
    }

    pub fn list(&self, project: &ProjectName) -> EngineResult<Vec<VolumeInspect>> {
        Ok(self
            .db
            .list_json::<VolumeInspect>(Table::Volumes, &format!("{project}/"))?
            .into_iter()
            .map(|(_, v)| v)
            .collect())
    }

    /// The project's quota on the sum of its volumes' size limits, if one is set.
    pub fn quota(&self, project: &ProjectName) -> EngineResult<Option<u64>> {
        self.projects.quota(project, Quota::VolumeBytes)
    }

    /// Sets (or with None clears) the project's volume quota.
    pub fn set_quota(&self, project: &ProjectName, bytes: Option<u64>) -> EngineResult<()> {
        let _g = self.lock.lock().unwrap();
        let mut b = Batch::new();
        b.ops
            .push(Projects::set_quota_op(project, Quota::VolumeBytes, bytes));
        b.commit(self.db.as_ref())?;
        Ok(())
    }

    /// Bytes of the project's volumes' size limits, summed.
    pub fn committed(&self, project: &ProjectName) -> EngineResult<u64> {
        Ok(self
            .list(project)?
            .iter()
            .filter_map(|v| v.size_limit)
            .sum())
    }

    /// Creates a volume. Anonymous volumes get a random name.
    pub fn create(
        &self,
        project: &ProjectName,
        req: VolumeCreate,
        anonymous: bool,
    ) -> EngineResult<VolumeInspect> {
        let _g = self.lock.lock().unwrap();
        let name = req
            .name
            .clone()
            .unwrap_or_else(crate::containers::random_id);
        if !valid_name(&name) || name.len() > 64 {
            return Err(invalid(format!("invalid volume name {name:?}: use up to 64 letters, digits, '_', '.' and '-', starting with a letter or digit")));
        }
        let block = match req.driver.as_deref() {
            None | Some("local") => false,
            Some("block") => true,
            Some(d) => {
                return Err(invalid(format!(
                    "volume driver {d:?} is not supported; use local or block"
                )))
            }
        };
        if self.db.get(Table::Volumes, &key(project, &name))?.is_some() {
            return Err(conflict(format!("volume {name} already exists")));
        }
        let VolumeOptions {
            size,
            inodes,
            format,
            ext4_fs,
        } = VolumeOptions::parse(block, &req.options)?;
        let limited_size = self.check_room(project, size, inodes)?;
        let vdir = self.vdir(project, &name);
        let data = self.mountpoint(project, &name);
        let made = (|| -> EngineResult<(Option<u64>, Option<u64>)> {
            fs::create_dir_all(&data)
                .map_err(|e| internal(format!("cannot create {}: {e}", data.display())))?;
            if block {
                let s = size.expect("checked");
                pier_storage::block::Disk::new(&vdir, format)
                    .create(s, ext4_fs)
                    .map_err(st)?;
                return Ok((Some(s), None));
            }
            let Some(s) = limited_size else {
                return Ok((None, None));
            };
            make_ext4(&vdir, &data, s, size, inodes)
        })();
        let (size_limit, inode_limit) = match made {
            Ok(v) => v,
            Err(e) => {
                let _ = ext4::unmount(&data);
                let _ = fs::remove_dir_all(&vdir);
                return Err(e);
            }
        };
        let v = VolumeInspect {
            name: name.clone(),
            project: project.clone(),
            driver: if block { "block" } else { "local" }.into(),
            created: now_rfc3339(),
            mountpoint: data.display().to_string(),
            labels: req.labels,
            options: req.options,
            size_limit,
            inode_limit,
            anonymous,
            used_by: Vec::new(),
            usage: None,
        };
        let mut b = Batch::new();
        b.put_json(Table::Volumes, key(project, &name), &v);
        if let Err(e) = b.commit(self.db.as_ref()) {
            let _ = ext4::unmount(&data);
            let _ = fs::remove_dir_all(&vdir);
            return Err(e.into());
        }
        Ok(v)
    }

    /// Checks the project's volume quota and the free space for a volume of `size`
    /// bytes (or `inodes` alone); returns the size of the filesystem to make, if any.
    fn check_room(
        &self,
        project: &ProjectName,
        size: Option<u64>,
        inodes: Option<u64>,
    ) -> EngineResult<Option<u64>> {
        let quota = self.quota(project)?;
        if let Some(q) = quota {
            let Some(s) = size else {
                return Err(invalid(format!(
                    "project {project} has a volume quota of {q} bytes: give the volume a size (--opt size=...)"
                )));
            };
            let used = self.committed(project)?;
            if used + s > q {
                return Err(EngineError::new(
                    ErrorKind::InsufficientStorage,
                    format!(
                        "volume of {s} bytes exceeds project {project}'s quota: {used} of {q} bytes are committed"
                    ),
                ));
            }
        }
        // Inodes alone: the filesystem is as large as the free space allows, capped.
        let limited_size = match (size, inodes) {
            (Some(s), _) => Some(s),
            (None, Some(_)) => Some(1 << 30),
            (None, None) => None,
        };
        if let Some(s) = limited_size {
            let free = rustix::fs::statvfs(&self.dir)
                .map(|v| v.f_bavail * v.f_frsize)
                .unwrap_or(u64::MAX);
            if size.is_some() && s > free {
                return Err(EngineError::new(
                    ErrorKind::InsufficientStorage,
                    format!(
                        "volume size {s} bytes is more than the {free} bytes free under {}",
                        self.dir.display()
                    ),
                ));
            }
        }
        Ok(limited_size)
    }

    /// The volume named, made with default options if it does not exist (`-v name:/x`).
    pub fn ensure(&self, project: &ProjectName, name: &str) -> EngineResult<VolumeInspect> {
        match self.get(project, name) {
            Ok(v) => Ok(v),
            Err(e) if e.kind() == ErrorKind::NotFound => {
                match self.create(
                    project,
                    VolumeCreate {
                        name: Some(name.to_string()),
                        ..Default::default()
                    },
                    false,
                ) {
                    Ok(v) => Ok(v),
                    // Made meanwhile by someone else.
                    Err(e) if e.kind() == ErrorKind::Conflict => self.get(project, name),
                    Err(e) => Err(e),
                }
            }
            Err(e) => Err(e),
        }
    }

    /// With its usage filled in.
    pub fn inspect(&self, project: &ProjectName, name: &str) -> EngineResult<VolumeInspect> {
        let mut v = self.get(project, name)?;
        let data = self.mountpoint(project, name);
        v.usage = if v.size_limit.is_some() || v.inode_limit.is_some() {
            ext4::usage(&data).ok().map(|(bytes, inodes)| VolumeUsage {
                bytes,
                // The root directory is ext4's, not the user's.
                inodes: inodes.saturating_sub(11),
            })
        } else {
            Some(dir_usage(&data))
        };
        Ok(v)
    }

    /// Removes a volume; the caller has checked that no container uses it.
    pub fn remove(&self, project: &ProjectName, name: &str) -> EngineResult<()> {
        let _g = self.lock.lock().unwrap();
        let v = self.get(project, name)?;
        let data = self.mountpoint(project, name);
        if let Some(disk) = self.disk(&v) {
            self.release_disk(&v, &disk);
        }
        ext4::unmount(&data).map_err(st)?;
        let mut b = Batch::new();
        b.delete(Table::Volumes, key(project, name));
        b.commit(self.db.as_ref())?;
        fs::remove_dir_all(self.vdir(project, name))
            .map_err(|e| internal(format!("cannot remove the data of volume {name}: {e}")))?;
        Ok(())
    }

    // ---- block volumes -------------------------------------------------------------

    /// The disk image of a block volume.
    pub fn disk(&self, v: &VolumeInspect) -> Option<pier_storage::block::Disk> {
        (v.driver == "block").then(|| {
            let format = v
                .options
                .get("format")
                .and_then(|f| pier_storage::block::Format::parse(f))
                .unwrap_or(pier_storage::block::Format::Raw);
            pier_storage::block::Disk::new(&self.vdir(&v.project, &v.name), format)
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

    /// Attaches a block volume's device; returns the loop device's minor number.
    pub fn attach_device(&self, project: &ProjectName, name: &str) -> EngineResult<u32> {
        let v = self.get(project, name)?;
        let disk = self
            .disk(&v)
            .ok_or_else(|| invalid(format!("volume {name} is not a block volume")))?;
        let dev = disk.attach().map_err(st)?;
        let node = self.device_node(project, name);
        let r = (|| {
            if !ext4::is_mounted(&node) {
                fs::write(&node, b"").map_err(|e| internal(e.to_string()))?;
                rustix::mount::mount_bind(&dev, &node)
                    .map_err(|e| internal(format!("cannot bind {}: {e}", dev.display())))?;
            }
            pier_storage::loopdev::minor(&dev).map_err(st)
        })();
        if r.is_err() {
            // Nothing stays attached for a start that fails.
            self.release_disk(&v, &disk);
        }
        r
    }

    /// Mounts a block volume's filesystem on its mountpoint.
    pub fn mount_fs(&self, project: &ProjectName, name: &str) -> EngineResult<()> {
        let v = self.get(project, name)?;
        let disk = self
            .disk(&v)
            .ok_or_else(|| invalid(format!("volume {name} is not a block volume")))?;
        let data = self.mountpoint(project, name);
        if !ext4::is_mounted(&data) {
            let dev = disk.attach().map_err(st)?;
            if let Err(e) = ext4::mount_device(&dev, &data) {
                self.release_disk(&v, &disk);
                return Err(st(e));
            }
        }
        Ok(())
    }

    fn release_disk(&self, v: &VolumeInspect, disk: &pier_storage::block::Disk) {
        let _ = ext4::unmount(&self.mountpoint(&v.project, &v.name));
        let node = self.device_node(&v.project, &v.name);
        let _ = ext4::unmount(&node);
        let _ = fs::remove_file(&node);
        disk.release();
    }

    /// Releases a block volume no running container uses: unmount, loop device, export.
    pub fn release(&self, project: &ProjectName, name: &str) {
        if let Ok(v) = self.get(project, name) {
            if let Some(disk) = self.disk(&v) {
                self.release_disk(&v, &disk);
            }
        }
    }

    // ---- snapshots, export, import -------------------------------------------------

    fn snapshots_dir(&self, project: &ProjectName, name: &str) -> PathBuf {
        self.vdir(project, name).join("snapshots")
    }

    pub fn snapshots(&self, project: &ProjectName, name: &str) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(self.snapshots_dir(project, name))
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| !n.starts_with('.'))
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }

    /// A crash-consistent copy of the volume. Image volumes are frozen (the kernel
    /// flushes and blocks writers) while their image is copied; directory volumes are
    /// copied while `quiesce` holds their users paused.
    pub fn snapshot(
        &self,
        project: &ProjectName,
        name: &str,
        snap: &str,
        quiesce: &dyn Fn(bool),
    ) -> EngineResult<()> {
        let v = self.get(project, name)?;
        if !valid_name(snap) {
            return Err(invalid(format!("invalid snapshot name {snap:?}")));
        }
        let dir = self.snapshots_dir(project, name);
        let dest = dir.join(snap);
        if dest.exists() {
            return Err(conflict(format!(
                "volume {name} already has a snapshot {snap}"
            )));
        }
        // Made under a temporary name and renamed: a crash leaves no half snapshot.
        let tmp = dir.join(format!(".tmp-{snap}"));
        let _ = fs::remove_dir_all(&tmp);
        fs::create_dir_all(&tmp).map_err(|e| internal(e.to_string()))?;
        let data = self.mountpoint(project, name);
        let r = if let Some(disk) = self.disk(&v) {
            // Users paused, and the filesystem (if mounted) frozen, while the image is
            // copied.
            quiesce(true);
            let frozen = if ext4::is_mounted(&data) {
                ext4::freeze(&data).ok()
            } else {
                None
            };
            let file = disk.image.file_name().expect("a file").to_owned();
            let r = ext4::copy_sparse(&disk.image, &tmp.join(file)).map_err(st);
            drop(frozen);
            quiesce(false);
            r
        } else if v.size_limit.is_some() || v.inode_limit.is_some() {
            ext4::freeze(&data).map_err(st).and_then(|frozen| {
                let r = ext4::copy_sparse(
                    &self.vdir(project, name).join("disk.img"),
                    &tmp.join("disk.img"),
                );
                drop(frozen);
                r.map_err(st)
            })
        } else {
            fs::create_dir(tmp.join("data")).map_err(|e| internal(e.to_string()))?;
            quiesce(true);
            let r = tree::copy(&data, &tmp.join("data")).map_err(st);
            quiesce(false);
            r
        };
        if let Err(e) = r {
            let _ = fs::remove_dir_all(&tmp);
            return Err(e);
        }
        fs::rename(&tmp, &dest).map_err(|e| internal(e.to_string()))?;
        Ok(())
    }

    /// Puts a snapshot's content back; the caller has checked no running container uses
    /// the volume.
    pub fn restore(&self, project: &ProjectName, name: &str, snap: &str) -> EngineResult<()> {
        let v = self.get(project, name)?;
        let src = self.snapshots_dir(project, name).join(snap);
        if !src.is_dir() {
            return Err(EngineError::new(
                ErrorKind::NotFound,
                format!("volume {name} has no snapshot {snap}"),
            ));
        }
        let data = self.mountpoint(project, name);
        if let Some(disk) = self.disk(&v) {
            self.release_disk(&v, &disk);
            let file = disk.image.file_name().expect("a file").to_owned();
            let tmp = self.vdir(project, name).join("disk.restoring");
            ext4::copy_sparse(&src.join(file), &tmp).map_err(st)?;
            fs::rename(&tmp, &disk.image).map_err(|e| internal(e.to_string()))?;
        } else if v.size_limit.is_some() || v.inode_limit.is_some() {
            let img = self.vdir(project, name).join("disk.img");
            let tmp = self.vdir(project, name).join("disk.img.restoring");
            ext4::copy_sparse(&src.join("disk.img"), &tmp).map_err(st)?;
            ext4::unmount(&data).map_err(st)?;
            fs::rename(&tmp, &img).map_err(|e| internal(e.to_string()))?;
            ext4::mount(&img, &data).map_err(st)?;
        } else {
            tree::clear(&data).map_err(st)?;
            tree::copy(&src.join("data"), &data).map_err(st)?;
        }
        Ok(())
    }

    pub fn remove_snapshot(
        &self,
        project: &ProjectName,
        name: &str,
        snap: &str,
    ) -> EngineResult<()> {
        self.get(project, name)?;
        let p = self.snapshots_dir(project, name).join(snap);
        if !p.is_dir() || snap.starts_with('.') {
            return Err(EngineError::new(
                ErrorKind::NotFound,
                format!("volume {name} has no snapshot {snap}"),
            ));
        }
        fs::remove_dir_all(&p).map_err(|e| internal(e.to_string()))
    }

    /// Writes the volume's content as a tar (image volumes frozen meanwhile).
    pub fn export(&self, project: &ProjectName, name: &str, out: impl Write) -> EngineResult<()> {
        let v = self.get(project, name)?;
        if v.driver == "block" {
            return Err(invalid(format!(
                "volume {name} is a block volume: export works on file volumes; copy its image with qemu-img, or snapshot it"
            )));
        }
        let data = self.mountpoint(project, name);
        let _frozen = if v.size_limit.is_some() || v.inode_limit.is_some() {
            Some(ext4::freeze(&data).map_err(st)?)
        } else {
            None
        };
        // Read through descriptors: a container using the volume cannot swap in a
        // symlink that leads the export onto the host.
        crate::container_fs::export_dir(&data, out)
            .map_err(|e| internal(format!("cannot export volume {name}: {e}")))
    }

    /// Makes a volume from a tar (as `export` writes). `expect` is the archive's
    /// sha256 (hex) when the client knows it: a mismatch, or any bad entry, leaves no
    /// volume behind.
    pub fn import(
        &self,
        project: &ProjectName,
        req: VolumeCreate,
        body: impl Read,
        expect: Option<&str>,
    ) -> EngineResult<VolumeInspect> {
        let v = self.create(project, req, false)?;
        let data = self.mountpoint(&v.project, &v.name);
        let mut hashing = HashingReader {
            inner: body,
            hash: <sha2::Sha256 as sha2::Digest>::new(),
        };
        let mut limits = pier_archive::unpack::Limits::default();
        if let Some(s) = v.size_limit {
            limits.max_total_size = s;
        }
        let r = pier_archive::unpack::unpack_layer(&mut hashing, &data, &limits)
            .map_err(|e| invalid(format!("the archive cannot be imported: {e}")))
            .and_then(|_| {
                // The rest of the stream (tar padding) counts for the checksum too.
                std::io::copy(&mut hashing, &mut std::io::sink())
                    .map_err(|e| invalid(format!("reading the archive: {e}")))?;
                let got = hex(&sha2::Digest::finalize(hashing.hash.clone()));
                match expect {
                    Some(want) if want.trim_start_matches("sha256:") != got => Err(invalid(format!(
                        "the archive's checksum is sha256:{got}, not {want}: it is corrupt or not the one exported"
                    ))),
                    _ => Ok(()),
                }
            });
        if let Err(e) = r {
            let _ = self.remove(project, &v.name);
            return Err(e);
        }
        Ok(v)
    }

    // ---- reconcile -----------------------------------------------------------------

    /// At daemon start: mounts limited volumes whose filesystem is not mounted, removes
    /// directories no record owns (a crash during create or remove) and half-made
    /// snapshots.
    pub fn reconcile(&self) -> EngineResult<()> {
        let records = self.db.list_json::<VolumeInspect>(Table::Volumes, "")?;
        let known: std::collections::HashSet<String> =
            records.iter().map(|(k, _)| k.clone()).collect();
        for (_, v) in &records {
            let data = self.mountpoint(&v.project, &v.name);
            let img = self.vdir(&v.project, &v.name).join("disk.img");
            if img.exists() && !ext4::is_mounted(&data) {
                if let Err(e) = ext4::mount(&img, &data) {
                    tracing::warn!(volume = %v.name, error = %e.chain(), "cannot mount a volume");
                }
            }
            if let Ok(rd) = fs::read_dir(self.snapshots_dir(&v.project, &v.name)) {
                for e in rd.flatten() {
                    if e.file_name().to_string_lossy().starts_with(".tmp-") {
                        let _ = fs::remove_dir_all(e.path());
                    }
                }
            }
        }
        // volumes/<project>/<name>; a project directory has no `_data` (an old layout's
        // volume directory has one, and is a leftover once the layout has moved).
        let projects = self.projects.list()?;
        for p in fs::read_dir(&self.dir).into_iter().flatten().flatten() {
            let project = p.file_name().to_string_lossy().into_owned();
            if project.starts_with('.') {
                continue;
            }
            let is_project = projects.iter().any(|q| q.as_str() == project);
            if !is_project || p.path().join("_data").exists() {
                if p.path().join("_data").exists() {
                    remove_leftover(&p.path(), &project);
                }
                continue;
            }
            for e in fs::read_dir(p.path()).into_iter().flatten().flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if !known.contains(&format!("{project}/{name}")) {
                    remove_leftover(&e.path(), &name);
                }
            }
        }
        Ok(())
    }

    /// Labels filter for `ls`.
    pub fn matches(v: &VolumeInspect, filters: &BTreeMap<String, String>) -> bool {
        filters.iter().all(|(k, want)| match k.as_str() {
            "name" => v.name.contains(want.as_str()),
            "label" => match want.split_once('=') {
                Some((lk, lv)) => v.labels.get(lk).map(String::as_str) == Some(lv),
                None => v.labels.contains_key(want),
            },
            _ => true,
        })
    }
}

struct HashingReader<R> {
    inner: R,
    hash: sha2::Sha256,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        sha2::Digest::update(&mut self.hash, &buf[..n]);
        Ok(n)
    }
}

/// Removes a volume directory no record owns (a crash during create or remove).
fn remove_leftover(dir: &Path, name: &str) {
    let _ = ext4::unmount(&dir.join("_data"));
    let _ = fs::remove_dir_all(dir);
    tracing::info!(volume = %name, "removed the leftovers of a volume with no record");
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Bytes and inodes under a directory (a walk; directory volumes have no counter).
fn dir_usage(p: &Path) -> VolumeUsage {
    let mut u = VolumeUsage::default();
    let Ok(rd) = fs::read_dir(p) else {
        return u;
    };
    for e in rd.flatten() {
        let Ok(m) = e.path().symlink_metadata() else {
            continue;
        };
        u.inodes += 1;
        if m.is_dir() {
            let sub = dir_usage(&e.path());
            u.bytes += sub.bytes;
            u.inodes += sub.inodes;
        } else {
            u.bytes += m.len();
        }
    }
    u
}

/// A volume's driver and options, checked.
struct VolumeOptions {
    size: Option<u64>,
    inodes: Option<u64>,
    format: pier_storage::block::Format,
    ext4_fs: bool,
}

impl VolumeOptions {
    /// Reads `--opt` options for a local (or, with `block`, a block) volume.
    fn parse(block: bool, options: &BTreeMap<String, String>) -> EngineResult<Self> {
        let mut size = None;
        let mut inodes = None;
        let mut format = pier_storage::block::Format::Raw;
        let mut ext4_fs = false;
        for (k, v) in options {
            match k.as_str() {
                "format" if block => {
                    format = pier_storage::block::Format::parse(v)
                        .ok_or_else(|| invalid(format!("--opt format={v}: use raw or qcow2")))?;
                }
                "fs" if block => {
                    ext4_fs = match v.as_str() {
                        "ext4" => true,
                        "none" => false,
                        _ => return Err(invalid(format!("--opt fs={v}: use ext4 or none"))),
                    };
                }
                "size" => {
                    let n = v
                        .parse::<ByteSize>()
                        .map_err(|e| invalid(format!("--opt size: {e}")))?
                        .bytes();
                    if n < (1 << 20) {
                        return Err(invalid(format!(
                            "--opt size={v} is too small: give at least 1m"
                        )));
                    }
                    size = Some(n);
                }
                "inodes" if block => {
                    return Err(invalid("inodes= is for local volumes; a block volume's filesystem is its own"))
                }
                "inodes" => {
                    let n: u64 = v.parse().ok().filter(|n| *n > 0).ok_or_else(|| {
                        invalid(format!("--opt inodes={v}: give a positive number"))
                    })?;
                    inodes = Some(n);
                }
                _ if block => {
                    return Err(invalid(format!(
                        "unknown block volume option {k:?}: use size=BYTES, format=raw|qcow2, fs=ext4|none"
                    )))
                }
                _ => {
                    return Err(invalid(format!(
                        "unknown volume option {k:?}: use size=BYTES or inodes=N"
                    )))
                }
            }
        }
        if block && size.is_none() {
            return Err(invalid("a block volume needs a size: --opt size=1g"));
        }
        Ok(VolumeOptions {
            size,
            inodes,
            format,
            ext4_fs,
        })
    }
}

/// Makes a volume's ext4 image of `s` bytes in `vdir` and mounts it on `data`; the
/// size and inode limits it got.
fn make_ext4(
    vdir: &Path,
    data: &Path,
    s: u64,
    size: Option<u64>,
    inodes: Option<u64>,
) -> EngineResult<(Option<u64>, Option<u64>)> {
    let img = vdir.join("disk.img");
    let cap = ext4::make(&img, s, inodes).map_err(st)?;
    ext4::mount(&img, data).map_err(st)?;
    // The filesystem's root belongs to root with mode 755; a fresh directory
    // volume has the same. lost+found is ext4's own: it goes, so that the
    // volume starts empty (and image content can be copied up).
    let _ = fs::remove_dir(data.join("lost+found"));
    Ok((size.map(|_| cap.bytes), inodes.map(|_| cap.inodes + 1)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use pier_store::MemStore;

    fn record(name: &str, mountpoint: &Path) -> VolumeInspect {
        serde_json::from_value(serde_json::json!({
            "name": name,
            "project": "default",
            "driver": "local",
            "created": "2026-01-01T00:00:00Z",
            "mountpoint": mountpoint.join(name).join("_data"),
            "labels": {},
            "options": {},
        }))
        .unwrap()
    }

    /// A state directory as Pier before 0.2 left it: volumes `data` and `default` (named
    /// like the project) at `volumes/<name>`, a container binding both.
    fn old_state(root: &Path) -> Arc<dyn Store> {
        let db: Arc<dyn Store> = Arc::new(MemStore::default());
        let vols = root.join("volumes");
        let mut b = Batch::new();
        for name in ["data", "default"] {
            fs::create_dir_all(vols.join(name).join("_data")).unwrap();
            fs::write(vols.join(name).join("_data/file"), name).unwrap();
            b.put_json(
                Table::Volumes,
                format!("default/{name}"),
                &record(name, &vols),
            );
        }
        b.commit(db.as_ref()).unwrap();
        let c = root.join("containers/c1");
        fs::create_dir_all(&c).unwrap();
        let spec = serde_json::json!({"mounts": [
            {"destination": "/a", "type": "bind", "source": vols.join("data/_data")},
            {"destination": "/b", "type": "bind", "source": vols.join("default/_data")},
            {"destination": "/c", "type": "bind", "source": "/srv/elsewhere"},
        ]});
        fs::write(c.join("config.json"), serde_json::to_vec(&spec).unwrap()).unwrap();
        db
    }

    fn check_migrated(root: &Path, db: &Arc<dyn Store>) {
        let vols = root.join("volumes");
        for name in ["data", "default"] {
            let data = vols.join("default").join(name).join("_data");
            assert_eq!(fs::read_to_string(data.join("file")).unwrap(), name);
            let v: VolumeInspect = db
                .get_json(Table::Volumes, &format!("default/{name}"))
                .unwrap()
                .unwrap();
            assert_eq!(v.mountpoint, data.display().to_string());
        }
        assert!(!vols.join("data").exists());
        assert!(!vols.join(".v1").exists());
        let spec: serde_json::Value =
            serde_json::from_slice(&fs::read(root.join("containers/c1/config.json")).unwrap())
                .unwrap();
        let sources: Vec<&str> = spec["mounts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["source"].as_str().unwrap())
            .collect();
        let want = |n: &str| vols.join("default").join(n).join("_data");
        assert_eq!(
            sources,
            [
                want("data").to_str().unwrap(),
                want("default").to_str().unwrap(),
                "/srv/elsewhere"
            ]
        );
    }

    fn open(root: &Path, db: &Arc<dyn Store>) -> Volumes {
        let projects = Arc::new(Projects::new(db.clone()).unwrap());
        Volumes::new(root, db.clone(), projects).unwrap()
    }

    #[test]
    fn the_old_layout_moves_under_the_project_with_the_bundles() {
        let t = tempfile::tempdir().unwrap();
        let db = old_state(t.path());
        let v = open(t.path(), &db);
        check_migrated(t.path(), &db);
        assert_eq!(
            v.mountpoint(&ProjectName::default_project(), "data"),
            t.path().join("volumes/default/data/_data")
        );
        // Opening again changes nothing.
        open(t.path(), &db);
        check_migrated(t.path(), &db);
    }

    #[test]
    fn a_migration_cut_short_is_finished_by_the_next_start() {
        let t = tempfile::tempdir().unwrap();
        let db = old_state(t.path());
        // As if a crash came after `default` was staged, before anything else.
        let vols = t.path().join("volumes");
        fs::create_dir_all(vols.join(".v1")).unwrap();
        fs::rename(vols.join("default"), vols.join(".v1/default")).unwrap();
        open(t.path(), &db);
        check_migrated(t.path(), &db);
    }

    #[test]
    fn reconcile_removes_unowned_directories_and_keeps_the_rest() {
        let t = tempfile::tempdir().unwrap();
        let db = old_state(t.path());
        let v = open(t.path(), &db);
        let vols = t.path().join("volumes");
        // Half-made: a volume directory in the project with no record, and an old-layout
        // one; a directory that is neither stays.
        fs::create_dir_all(vols.join("default/half/_data")).unwrap();
        fs::create_dir_all(vols.join("stale/_data")).unwrap();
        fs::create_dir_all(vols.join("not-a-volume")).unwrap();
        v.reconcile().unwrap();
        assert!(!vols.join("default/half").exists());
        assert!(!vols.join("stale").exists());
        assert!(vols.join("not-a-volume").exists());
        check_migrated(t.path(), &db);
    }
}
