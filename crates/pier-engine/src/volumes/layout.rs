//! The volume directory layout: the move from Pier before 0.2's `volumes/<name>` to
//! `volumes/<project>/<name>` (with the containers' bundles), and the reconciler that
//! brings the host in line with the records at start: limited volumes remounted, volumes
//! a crash left `creating` or `removing` taken apart, directories no record owns removed.

use std::collections::HashSet;
use std::fs;
use std::path::{Path, PathBuf};

use pier_store::{Batch, Op, Table};

use super::record::Phase;
use super::{key, st, Volumes};
use crate::error::{EngineError, EngineResult};

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

impl Volumes {
    /// Moves volumes from the layout of Pier before 0.2 (`volumes/<name>`) to
    /// `volumes/<project>/<name>`, and rewrites the mount sources in the bundles of the
    /// containers in `containers` that use them. Every step can be repeated: a crash
    /// midway leaves a state the next start finishes. Old directories go to a staging
    /// directory first, so a volume named like a project is never confused with the
    /// project's directory.
    pub(super) fn migrate_layout(&self, containers: &Path) -> EngineResult<()> {
        if self.db.get(Table::Meta, LAYOUT_KEY)?.as_deref() == Some(LAYOUT.as_bytes()) {
            return Ok(());
        }
        let records = self.records(None)?;
        let stage = self.dir.join(".v1");
        let b = &self.backend;
        for s in &records {
            let v = &s.v;
            let (old, staged) = (self.dir.join(&v.name), stage.join(&v.name));
            let moved = self.vdir(&v.project, &v.name).exists() || staged.exists();
            if !moved && old.join("_data").exists() {
                b.create_dir(&stage).map_err(st)?;
                b.rename(&old, &staged).map_err(st)?;
            }
        }
        let mut moved = Vec::new();
        for s in &records {
            let v = &s.v;
            let (staged, new) = (stage.join(&v.name), self.vdir(&v.project, &v.name));
            if staged.exists() && !new.exists() {
                b.create_dir(&self.dir.join(v.project.as_str()))
                    .map_err(st)?;
                b.rename(&staged, &new).map_err(st)?;
            }
            moved.push((self.dir.join(&v.name), new));
        }
        rewrite_bundles(containers, &moved)?;
        let _ = fs::remove_dir(&stage);
        let mut batch = Batch::new();
        for mut s in records {
            s.v.mountpoint = self
                .mountpoint(&s.v.project, &s.v.name)
                .display()
                .to_string();
            batch.put_json(Table::Volumes, key(&s.v.project, &s.v.name), &s);
        }
        batch.ops.push(Op::Put {
            table: Table::Meta,
            key: LAYOUT_KEY.into(),
            value: LAYOUT.as_bytes().to_vec(),
        });
        batch.commit(self.db.as_ref())?;
        Ok(())
    }

    /// At daemon start: mounts limited volumes whose filesystem is not mounted, takes
    /// apart volumes a crash left `creating` (whose create's lease is gone, as a restarted
    /// store has dropped the leases of the process before: see [`super::reconcile`]) or
    /// `removing`, removes directories no record owns (a crash during create or remove)
    /// and half-made snapshots. It runs at open, before any request; while the daemon
    /// runs, [`super::reconcile::VolumeReconciler`] takes apart dead creates only.
    pub fn reconcile(&self) -> EngineResult<()> {
        self.reap_dead_creates()?;
        let records = self.records(None)?;
        let mut known = HashSet::new();
        for s in &records {
            let v = &s.v;
            match s.phase {
                Phase::Creating => {
                    // A create in flight (of another process on a shared store).
                    known.insert(key(&v.project, &v.name));
                    continue;
                }
                Phase::Removing => {
                    if let Err(e) = self.remove(&v.project, &v.name) {
                        tracing::warn!(volume = %v.name, error = %e.message(), "cannot finish removing a volume");
                        known.insert(key(&v.project, &v.name));
                    }
                    continue;
                }
                Phase::Ready => {}
            }
            known.insert(key(&v.project, &v.name));
            self.remount(v);
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
                    self.remove_leftover(&p.path(), &project);
                }
                continue;
            }
            for e in fs::read_dir(p.path()).into_iter().flatten().flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if !known.contains(&format!("{project}/{name}")) {
                    self.remove_leftover(&e.path(), &name);
                }
            }
        }
        Ok(())
    }

    /// Mounts a limited volume's filesystem if it is not; drops half-made snapshots.
    fn remount(&self, v: &pier_api::volumes::VolumeInspect) {
        let data = self.mountpoint(&v.project, &v.name);
        let img = self.vdir(&v.project, &v.name).join("disk.img");
        if img.exists() && !self.mounts.is_mounted(&data) {
            if let Err(e) = self.mounts.mount_image(&img, &data) {
                tracing::warn!(volume = %v.name, error = %e.chain(), "cannot mount a volume");
            }
        }
        let snaps = self.vdir(&v.project, &v.name).join("snapshots");
        if let Ok(rd) = fs::read_dir(snaps) {
            for e in rd.flatten() {
                if e.file_name().to_string_lossy().starts_with(".tmp-") {
                    let _ = self.backend.remove(&e.path());
                }
            }
        }
    }

    /// Removes a volume directory no record owns (a crash during create or remove).
    pub(super) fn remove_leftover(&self, dir: &Path, name: &str) {
        let _ = self.mounts.unmount(&dir.join("_data"));
        let _ = self.mounts.unmount(&dir.join("device"));
        let _ = self.backend.remove(dir);
        tracing::info!(volume = %name, "removed the leftovers of a volume with no record");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    use pier_api::volumes::VolumeInspect;
    use pier_api::ProjectName;

    use crate::projects::Projects;
    use pier_store::{MemStore, Store, StoreExt};

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
        let host = Arc::new(crate::host::storage::HostStorage);
        Volumes::new(root, db.clone(), projects, host.clone(), host).unwrap()
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
