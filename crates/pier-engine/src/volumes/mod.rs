//! Volumes: named and anonymous volumes, their limits, snapshots, export and import, the
//! per-project storage quota, the attach of a container's volumes, and the reconciler that
//! remounts limited volumes and removes what a crash left half-made.
//!
//! A volume is a directory `ROOT/volumes/<project>/<name>/_data`. A volume with `size` or
//! `inodes` is an ext4 image `.../<name>/disk.img` mounted on `_data` (see
//! `pier-storage`). Snapshots live in `.../<name>/snapshots/<snap>/`. Everything done to
//! the host goes through [`VolumeBackend`] and [`Mounts`] (`crate::host::storage`), so
//! this logic runs over recording fakes in the engine test tier.
//!
//! Records are in `Table::Volumes` ([`record`]). No lock guards them: a create reserves
//! its name with create-if-absent and charges the project's quota in the same
//! transaction, makes the host side step by step with an undo for each ([`create`]), and
//! marks the record ready last; a crash leaves a `creating` record (or a directory without
//! one), which the next start removes ([`layout`]). A create holds a store lease while it
//! runs, so that [`reconcile::VolumeReconciler`] takes apart, beside the API, only the
//! creates whose owner died.
//!
//! Pier before 0.2 kept volumes at `ROOT/volumes/<name>`; [`Volumes::new`] moves them
//! (see `migrate_layout`), and the mount sources of the containers' bundles with them.

mod attach;
mod create;
mod layout;
mod options;
pub mod reconcile;
pub mod record;
mod snapshots;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use pier_api::volumes::{VolumeCreate, VolumeInspect, VolumeUsage};
use pier_api::{ErrorKind, ProjectName};
use pier_store::{Batch, Store};

use crate::error::{EngineError, EngineResult};
use crate::host::storage::{Mounts, VolumeBackend};
use crate::projects::{Projects, Quota};
use crate::RequestContext;
use record::Phase;

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

/// As [`st`], saying what was being done.
fn st_doing(doing: &str) -> impl FnOnce(pier_storage::Error) -> EngineError + '_ {
    move |e| {
        let e = st(e);
        EngineError::new(e.kind(), format!("{doing}: {}", e.message()))
    }
}

fn not_found(name: &str) -> EngineError {
    EngineError::new(
        ErrorKind::NotFound,
        format!("no such volume: {name} (see `pier volume ls`)"),
    )
}

fn key(project: &ProjectName, name: &str) -> String {
    format!("{project}/{name}")
}

/// The volume manager.
pub struct Volumes {
    db: Arc<dyn Store>,
    projects: Arc<Projects>,
    dir: PathBuf,
    backend: Arc<dyn VolumeBackend>,
    mounts: Arc<dyn Mounts>,
}

impl Volumes {
    /// Opens the volumes under `root/volumes`, moving an older layout (see
    /// `migrate_layout`), over the host's `backend` and `mounts`.
    pub fn new(
        root: &Path,
        db: Arc<dyn Store>,
        projects: Arc<Projects>,
        backend: Arc<dyn VolumeBackend>,
        mounts: Arc<dyn Mounts>,
    ) -> EngineResult<Self> {
        let dir = root.join("volumes");
        backend
            .create_dir(&dir)
            .map_err(st_doing("cannot make the volumes directory"))?;
        let v = Volumes {
            db,
            projects,
            dir,
            backend,
            mounts,
        };
        v.migrate_layout(&root.join("containers"))?;
        Ok(v)
    }

    /// A volume's directory: `ROOT/volumes/<project>/<name>`.
    fn vdir(&self, project: &ProjectName, name: &str) -> PathBuf {
        self.dir.join(project.as_str()).join(name)
    }

    /// Where a volume's data is.
    pub fn mountpoint(&self, project: &ProjectName, name: &str) -> PathBuf {
        self.vdir(project, name).join("_data")
    }

    /// A volume that exists (being created is not yet).
    pub fn get(&self, project: &ProjectName, name: &str) -> EngineResult<VolumeInspect> {
        match self.load(project, name)? {
            Some((s, _)) if s.phase != Phase::Creating => Ok(s.v),
            _ => Err(not_found(name)),
        }
    }

    pub fn list(&self, project: &ProjectName) -> EngineResult<Vec<VolumeInspect>> {
        Ok(self
            .records(Some(project))?
            .into_iter()
            .filter(|s| s.phase != Phase::Creating)
            .map(|s| s.v)
            .collect())
    }

    /// The project's quota on the sum of its volumes' size limits, if one is set.
    pub fn quota(&self, ctx: &RequestContext) -> EngineResult<Option<u64>> {
        self.projects.quota(ctx.project(), Quota::VolumeBytes)
    }

    /// Sets (or with None clears) the project's volume quota.
    pub fn set_quota(&self, ctx: &RequestContext, bytes: Option<u64>) -> EngineResult<()> {
        let project = ctx.project();
        let mut b = Batch::new();
        b.ops
            .push(Projects::set_quota_op(project, Quota::VolumeBytes, bytes));
        b.commit(self.db.as_ref())?;
        tracing::info!(project = %ctx.project, caller = %ctx.caller, ?bytes, "volume quota set");
        Ok(())
    }

    /// The project's quota on how many volumes it may have, if one is set.
    pub fn count_quota(&self, ctx: &RequestContext) -> EngineResult<Option<u64>> {
        self.projects.quota(ctx.project(), Quota::VolumeCount)
    }

    /// Sets (or with None clears) the project's quota on how many volumes it may have.
    /// Volumes it has beyond a new quota stay; creates are refused until some go.
    pub fn set_count_quota(&self, ctx: &RequestContext, count: Option<u64>) -> EngineResult<()> {
        let mut b = Batch::new();
        b.ops.push(Projects::set_quota_op(
            ctx.project(),
            Quota::VolumeCount,
            count,
        ));
        b.commit(self.db.as_ref())?;
        tracing::info!(project = %ctx.project, caller = %ctx.caller, ?count, "volume count quota set");
        Ok(())
    }

    /// The volume named, made with default options if it does not exist (`-v name:/x`).
    pub fn ensure(&self, project: &ProjectName, name: &str) -> EngineResult<VolumeInspect> {
        self.ensure_made(project, name).map(|(v, _)| v)
    }

    /// As [`Volumes::ensure`]; and whether this call made it.
    fn ensure_made(
        &self,
        project: &ProjectName,
        name: &str,
    ) -> EngineResult<(VolumeInspect, bool)> {
        // Another request may be making it: wait for it to be ready (or gone).
        for _ in 0..500 {
            match self.get(project, name) {
                Ok(v) => return Ok((v, false)),
                Err(e) if e.kind() != ErrorKind::NotFound => return Err(e),
                Err(_) => {}
            }
            let req = VolumeCreate {
                name: Some(name.to_string()),
                ..Default::default()
            };
            match self.create_in(project, req, false) {
                Ok(v) => return Ok((v, true)),
                Err(e) if e.kind() == ErrorKind::Conflict => {
                    std::thread::sleep(std::time::Duration::from_millis(10))
                }
                Err(e) => return Err(e),
            }
        }
        Err(EngineError::new(
            ErrorKind::Unavailable,
            format!("volume {name} is still being made by another request; retry"),
        ))
    }

    /// With its usage filled in.
    pub fn inspect(&self, ctx: &RequestContext, name: &str) -> EngineResult<VolumeInspect> {
        let mut v = self.get(ctx.project(), name)?;
        v.usage = self.usage(&v);
        Ok(v)
    }

    /// What a volume holds: a statfs of a limited volume's own filesystem, the host's
    /// blocks of a block volume's image, a walk of a plain volume's directory. None when
    /// a limited volume's filesystem cannot be read (not mounted).
    pub fn usage(&self, v: &VolumeInspect) -> Option<VolumeUsage> {
        let data = self.mountpoint(&v.project, &v.name);
        if let Some(disk) = self.disk(v) {
            // A block volume: what its image takes on the host (its size is size_limit);
            // its filesystem, if any, is the guest's to count.
            Some(VolumeUsage {
                bytes: self.backend.file_usage(&disk.image),
                inodes: 0,
            })
        } else if v.size_limit.is_some() || v.inode_limit.is_some() {
            self.backend
                .usage(&data)
                .ok()
                .map(|(bytes, inodes)| VolumeUsage {
                    bytes,
                    // The root directory is ext4's, not the user's.
                    inodes: inodes.saturating_sub(11),
                })
        } else {
            Some(self.backend.dir_usage(&data))
        }
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
