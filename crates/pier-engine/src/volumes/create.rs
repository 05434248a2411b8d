//! Creating and removing a volume, as steps with an undo each.
//!
//! Create: 1. reserve (the record as `creating`, its name taken with create-if-absent and
//! its size charged to the project in the same transaction, the quota checked there);
//! 2. the directory; 3. the filesystem image or disk; 4. the mount of a limited volume;
//! 5. the record ready, with the limits the filesystem got. A failure at any step takes
//! back the ones before: no record, directory, image, loop device, mount or charge stays.
//!
//! Remove: 1. mark `removing` (refused while a live container holds it; stale holders are
//! compared absent in the same transaction); 2. release (unmount, detach the disk);
//! 3. remove the directory; 4. delete the record and give its bytes back. A failure at 2
//! puts the record back to ready; after that the volume stays `removing`, and a retried
//! `rm` (or the next start) finishes it.

use pier_api::size::human;
use pier_api::time::now_rfc3339;
use pier_api::volumes::{VolumeCreate, VolumeInspect};
use pier_api::{ErrorKind, ProjectName};
use pier_storage::block::Disk;
use pier_store::{Batch, Expect, LeaseId, Table};

use super::options::{parse_driver, VolumeOptions};
use super::reconcile::{creating_key, CREATE_LEASE_TTL};
use super::record::{Charge, Phase, Stored};
use super::{key, not_found, st_doing, Volumes};
use crate::error::{conflict, invalid};
use crate::error::{EngineError, EngineResult};
use crate::names::valid_name;
use crate::projects::Quota;
use crate::steps::Undo;
use crate::RequestContext;

/// What the host side of a new volume got: its size and inode limits.
type Limits = (Option<u64>, Option<u64>);

impl Volumes {
    /// Creates a volume in the context's project (`pier volume create`). Anonymous
    /// volumes get a random name.
    pub fn create(
        &self,
        ctx: &RequestContext,
        req: VolumeCreate,
        anonymous: bool,
    ) -> EngineResult<VolumeInspect> {
        let v = self.create_in(ctx.project(), req, anonymous)?;
        tracing::info!(project = %ctx.project, caller = %ctx.caller, volume = %v.name, "volume created");
        Ok(v)
    }

    /// As [`Volumes::create`], for the engine's own work in `project` (a container's
    /// volumes).
    pub(crate) fn create_in(
        &self,
        project: &ProjectName,
        req: VolumeCreate,
        anonymous: bool,
    ) -> EngineResult<VolumeInspect> {
        let name = req.name.clone().unwrap_or_else(crate::names::random_id);
        if !valid_name(&name) || name.len() > 64 {
            return Err(invalid(format!("invalid volume name {name:?}: use up to 64 letters, digits, '_', '.' and '-', starting with a letter or digit")));
        }
        let block = parse_driver(req.driver.as_deref())?;
        let opts = VolumeOptions::parse(block, &req.options)?;
        self.check_free(&opts)?;
        let data = self.mountpoint(project, &name);
        let mut v = VolumeInspect {
            name: name.clone(),
            project: project.clone(),
            driver: if block { "block" } else { "local" }.into(),
            created: now_rfc3339(),
            mountpoint: data.display().to_string(),
            labels: req.labels,
            options: req.options,
            size_limit: opts.size,
            inode_limit: None,
            anonymous,
            used_by: Vec::new(),
            usage: None,
        };
        let mut undo = Undo::new();
        // The create's lease: while it lives, the reconciler leaves the record be.
        let lease = self.create_lease()?;
        undo.push(move || self.end_lease(lease));
        // 1. Reserve the name and charge the quota.
        if let Err(e) = self.reserve(&v, lease) {
            return Err(undo.fail(e));
        }
        undo.push(|| {
            let _ = self.delete_record(project, &name);
        });
        // 2-4. The host side.
        let limits = match self.make_on_host(&v, &opts, &mut undo) {
            Ok(l) => l,
            Err(e) => return Err(undo.fail(e)),
        };
        let _ = self.db.keep_alive(lease);
        // 5. Ready, with what the filesystem got.
        (v.size_limit, v.inode_limit) = limits;
        if let Err(e) = self.make_ready(project, &name, limits) {
            return Err(undo.fail(e));
        }
        undo.commit();
        self.end_lease(lease);
        Ok(v)
    }

    /// Step 5: the record ready with the limits the filesystem got, and the create's key
    /// gone with it, if the create still holds its lease (else the reconciler has taken
    /// it apart, or will).
    fn make_ready(&self, project: &ProjectName, name: &str, limits: Limits) -> EngineResult<()> {
        let alive = creating_key(project, name);
        self.commit_charged(project, name, &mut |_| {
            let Some((mut s, rev)) = self.load(project, name)? else {
                return Err(not_found(name));
            };
            if s.phase != Phase::Creating || self.db.get(Table::Meta, &alive)?.is_none() {
                return Err(EngineError::new(
                    ErrorKind::Unavailable,
                    format!(
                        "the create of volume {name} took longer than its lease ({} s) and was given up: retry",
                        CREATE_LEASE_TTL.as_secs()
                    ),
                ));
            }
            let before = s.charge() as i64;
            s.phase = Phase::Ready;
            (s.v.size_limit, s.v.inode_limit) = limits;
            let mut b = Batch::new();
            b.require(Table::Volumes, key(project, name), Expect::ModRevision(rev));
            b.require(Table::Meta, alive.clone(), Expect::Present);
            b.put_json(Table::Volumes, key(project, name), &s);
            b.delete(Table::Meta, alive.clone());
            Ok((
                b,
                Charge {
                    bytes: s.charge() as i64 - before,
                    count: 0,
                },
            ))
        })
    }

    /// The host has room for the volume's size.
    fn check_free(&self, opts: &VolumeOptions) -> EngineResult<()> {
        let Some(s) = opts.size else {
            return Ok(());
        };
        let free = self.backend.free_bytes(&self.dir);
        if s > free {
            return Err(EngineError::new(
                ErrorKind::InsufficientStorage,
                format!(
                    "volume size {s} bytes is more than the {free} bytes free under {}: free space on the host or ask for less",
                    self.dir.display()
                ),
            ));
        }
        Ok(())
    }

    /// Step 1: the record as `creating`, if the name is free and the quota allows, and the
    /// create's key attached to its `lease`.
    fn reserve(&self, v: &VolumeInspect, lease: LeaseId) -> EngineResult<()> {
        let project = &v.project;
        let quota = self.projects.quota(project, Quota::VolumeBytes)?;
        let max_count = self.projects.quota(project, Quota::VolumeCount)?;
        let stored = Stored {
            v: v.clone(),
            phase: Phase::Creating,
            holders: Default::default(),
        };
        self.commit_charged(project, &v.name, &mut |now| {
            if let Some((s, _)) = self.load(project, &v.name)? {
                return Err(match s.phase {
                    Phase::Removing => conflict(format!(
                        "volume {} is being removed: retry `pier volume rm {}` to finish, then create it again",
                        v.name, v.name
                    )),
                    _ => conflict(format!("volume {} already exists", v.name)),
                });
            }
            if let Some(q) = quota {
                let Some(s) = v.size_limit else {
                    return Err(invalid(format!(
                        "project {project} has a volume quota of {}: give the volume a size (--opt size=...)", human(q)
                    )));
                };
                let committed = now.bytes;
                if committed + s > q {
                    return Err(EngineError::new(
                        ErrorKind::InsufficientStorage,
                        format!(
                            "volume too large for project {project}'s quota: {} requested, {} of {} committed; remove volumes or raise the quota (pier quota --volume-bytes)",
                            human(s),
                            human(committed),
                            human(q)
                        ),
                    ));
                }
            }
            if let Some(max) = max_count {
                if now.count >= max {
                    return Err(EngineError::new(
                        ErrorKind::InsufficientStorage,
                        format!(
                            "project {project} has {} of its quota of {max} volumes: remove volumes or raise the quota",
                            now.count
                        ),
                    ));
                }
            }
            let mut b = Batch::new();
            b.require(Table::Volumes, key(project, &v.name), Expect::Absent);
            b.put_json(Table::Volumes, key(project, &v.name), &stored);
            b.put_json_leased(Table::Meta, creating_key(project, &v.name), &true, lease);
            Ok((b, Charge::new_record(stored.charge())))
        })
    }

    /// Steps 2-4: the directory, the image or disk, the mount; each pushes its undo.
    fn make_on_host<'a>(
        &'a self,
        v: &VolumeInspect,
        opts: &VolumeOptions,
        undo: &mut Undo<'a>,
    ) -> EngineResult<Limits> {
        let vdir = self.vdir(&v.project, &v.name);
        let data = vdir.join("_data");
        let doing = format!("cannot create volume {}", v.name);
        self.backend.create_dir(&data).map_err(st_doing(&doing))?;
        let gone = vdir.clone();
        undo.push(move || {
            let _ = self.backend.remove(&gone);
        });
        if v.driver == "block" {
            let s = opts.size.expect("checked");
            let disk = Disk::new(&vdir, opts.format);
            self.backend
                .create_disk(&disk, s, opts.ext4_fs)
                .map_err(st_doing(&doing))?;
            return Ok((Some(s), None));
        }
        let Some(s) = opts.image_size() else {
            return Ok((None, None));
        };
        let img = vdir.join("disk.img");
        let cap = self
            .backend
            .make_fs_image(&img, s, opts.inodes)
            .map_err(st_doing(&doing))?;
        self.mounts
            .mount_image(&img, &data)
            .map_err(st_doing(&doing))?;
        let target = data.clone();
        undo.push(move || {
            let _ = self.mounts.unmount(&target);
        });
        // The filesystem's root belongs to root with mode 755, as a fresh directory
        // volume's does. lost+found is ext4's own: it goes, so that the volume starts
        // empty (and image content can be copied up).
        let _ = std::fs::remove_dir(data.join("lost+found"));
        Ok((
            opts.size.map(|_| cap.bytes),
            opts.inodes.map(|_| cap.inodes + 1),
        ))
    }

    /// Removes a volume no live container holds (callers check their own users too).
    pub fn remove(&self, project: &ProjectName, name: &str) -> EngineResult<()> {
        let v = self.mark_removing(project, name)?;
        if let Err(e) = self.release_all(&v) {
            let _ = self.update(project, name, &mut |s| {
                s.phase = Phase::Ready;
                Ok(true)
            });
            return Err(e);
        }
        self.finish_remove(project, name)
    }

    /// Remove, step 1.
    fn mark_removing(&self, project: &ProjectName, name: &str) -> EngineResult<VolumeInspect> {
        let mut found = None;
        self.commit_charged(project, name, &mut |_| {
            let Some((s, rev)) = self.load(project, name)? else {
                return Err(not_found(name));
            };
            if s.phase == Phase::Creating {
                return Err(not_found(name));
            }
            let live = self.live_holders(&s)?;
            if !live.is_empty() {
                return Err(conflict(format!(
                    "volume {name} is in use by container(s) {}: remove them first",
                    live.join(", ")
                )));
            }
            let mut b = Batch::new();
            b.require(Table::Volumes, key(project, name), Expect::ModRevision(rev));
            for h in &s.holders {
                b.require(Table::Containers, key(project, h), Expect::Absent);
            }
            let mut marked = s.clone();
            marked.phase = Phase::Removing;
            marked.holders.clear();
            b.put_json(Table::Volumes, key(project, name), &marked);
            found = Some(s.v);
            Ok((b, Charge::default()))
        })?;
        Ok(found.expect("set by the transaction"))
    }

    /// Remove, step 2: nothing of the volume stays mounted or attached.
    fn release_all(&self, v: &VolumeInspect) -> EngineResult<()> {
        let doing = format!("cannot release volume {}", v.name);
        if let Some(disk) = self.disk(v) {
            self.release_disk(v, &disk).map_err(st_doing(&doing))?;
        }
        self.mounts
            .unmount(&self.mountpoint(&v.project, &v.name))
            .map_err(st_doing(&doing))
    }

    /// Remove, steps 3 and 4 (what a retried `rm` or the next start finishes).
    pub(crate) fn finish_remove(&self, project: &ProjectName, name: &str) -> EngineResult<()> {
        self.backend
            .remove(&self.vdir(project, name))
            .map_err(|e| {
                st_doing(&format!(
                    "cannot remove the data of volume {name} (retry `pier volume rm {name}`)"
                ))(e)
            })?;
        self.delete_record(project, name)
    }
}
