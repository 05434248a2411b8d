//! Projects: the tenants every resource belongs to, in `Table::Projects`, and their quotas
//! in `Table::Quotas`. `default` always exists. Background work visits every project
//! ([`Projects::list`]); a request names one that exists ([`Projects::context`]).
//!
//! Creating projects is the engine's (and its tests') for now; the tenants work gives them
//! an API, owners and members.

use std::sync::Arc;

use pier_api::time::now_rfc3339;
use pier_api::ProjectName;
use pier_store::{Batch, Op, Store, StoreExt, Table};
use serde::{Deserialize, Serialize};

use crate::context::{Caller, RequestContext};
use crate::error::{EngineError, EngineResult};

/// A project's record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProjectRecord {
    pub name: ProjectName,
    pub created: String,
}

/// A resource a project's quota limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quota {
    /// The sum of the size limits of the project's volumes, in bytes.
    VolumeBytes,
    /// How many volumes the project may have.
    VolumeCount,
}

impl Quota {
    fn name(self) -> &'static str {
        match self {
            Quota::VolumeBytes => "volume-bytes",
            Quota::VolumeCount => "volume-count",
        }
    }
    fn key(self, project: &ProjectName) -> String {
        format!("{project}/{}", self.name())
    }
}

/// The project registry.
pub struct Projects {
    db: Arc<dyn Store>,
}

impl Projects {
    /// Opens the registry: makes `default` if it is missing, and moves quotas an older
    /// Pier kept in `Table::Meta` (`quota/<project>/<resource>`) to `Table::Quotas`.
    pub fn new(db: Arc<dyn Store>) -> EngineResult<Self> {
        let p = Projects { db };
        let default = ProjectName::default_project();
        if !p.exists(&default)? {
            p.create(&default)?;
        }
        let old = p.db.list(Table::Meta, "quota/")?;
        if !old.is_empty() {
            let mut b = Batch::new();
            for (key, value) in old {
                let new_key = key.trim_start_matches("quota/").to_string();
                b.ops.push(Op::Put {
                    table: Table::Quotas,
                    key: new_key,
                    value,
                });
                b.delete(Table::Meta, key);
            }
            b.commit(p.db.as_ref())?;
        }
        Ok(p)
    }

    pub fn exists(&self, project: &ProjectName) -> EngineResult<bool> {
        Ok(self.db.get(Table::Projects, project.as_str())?.is_some())
    }

    /// Makes a project; one that exists is left as it is.
    pub fn create(&self, project: &ProjectName) -> EngineResult<()> {
        if self.exists(project)? {
            return Ok(());
        }
        let mut b = Batch::new();
        b.put_json(
            Table::Projects,
            project.as_str(),
            &ProjectRecord {
                name: project.clone(),
                created: now_rfc3339(),
            },
        );
        b.commit(self.db.as_ref())?;
        Ok(())
    }

    /// Every project, by name.
    pub fn list(&self) -> EngineResult<Vec<ProjectName>> {
        Ok(self
            .db
            .list_json::<ProjectRecord>(Table::Projects, "")?
            .into_iter()
            .map(|(_, r)| r.name)
            .collect())
    }

    /// The context of a request by `caller` in `project`, which must exist.
    pub fn context(&self, project: ProjectName, caller: Caller) -> EngineResult<RequestContext> {
        if !self.exists(&project)? {
            return Err(EngineError::NotFound(format!(
                "no such project: {project}; projects are made by an administrator (the default one is `default`)"
            )));
        }
        Ok(RequestContext::new(project, caller))
    }

    /// The project's limit on `quota`, if one is set.
    pub fn quota(&self, project: &ProjectName, quota: Quota) -> EngineResult<Option<u64>> {
        Ok(self
            .db
            .get(Table::Quotas, &quota.key(project))?
            .and_then(|b| String::from_utf8(b).ok()?.parse().ok()))
    }

    /// The batch op that sets (or with None clears) the project's limit on `quota`, for
    /// the caller to commit with the checks it makes.
    pub fn set_quota_op(project: &ProjectName, quota: Quota, limit: Option<u64>) -> Op {
        match limit {
            Some(n) => Op::Put {
                table: Table::Quotas,
                key: quota.key(project),
                value: n.to_string().into_bytes(),
            },
            None => Op::Delete {
                table: Table::Quotas,
                key: quota.key(project),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pier_store::MemStore;

    fn name(s: &str) -> ProjectName {
        ProjectName::try_from(s.to_string()).unwrap()
    }

    #[test]
    fn default_exists_and_others_are_made() {
        let db: Arc<dyn Store> = Arc::new(MemStore::default());
        let p = Projects::new(db.clone()).unwrap();
        assert_eq!(p.list().unwrap(), vec![ProjectName::default_project()]);
        let caller = Caller::System("test");
        let err = p.context(name("team-a"), caller.clone()).unwrap_err();
        assert_eq!(err.kind(), pier_api::ErrorKind::NotFound);
        p.create(&name("team-a")).unwrap();
        p.create(&name("team-a")).unwrap();
        assert_eq!(p.list().unwrap(), vec![name("default"), name("team-a")]);
        let ctx = p.context(name("team-a"), caller).unwrap();
        assert_eq!(ctx.project, name("team-a"));
        // Reopening keeps them.
        assert_eq!(Projects::new(db).unwrap().list().unwrap().len(), 2);
    }

    #[test]
    fn quotas_move_out_of_meta_and_can_be_set_and_cleared() {
        let db: Arc<dyn Store> = Arc::new(MemStore::default());
        let mut b = Batch::new();
        b.ops.push(Op::Put {
            table: Table::Meta,
            key: "quota/default/volume-bytes".into(),
            value: b"1000".to_vec(),
        });
        b.commit(db.as_ref()).unwrap();
        let p = Projects::new(db.clone()).unwrap();
        let d = ProjectName::default_project();
        assert_eq!(p.quota(&d, Quota::VolumeBytes).unwrap(), Some(1000));
        assert!(db.list(Table::Meta, "quota/").unwrap().is_empty());
        for (limit, want) in [(Some(5), Some(5)), (None, None)] {
            let mut b = Batch::new();
            b.ops
                .push(Projects::set_quota_op(&d, Quota::VolumeBytes, limit));
            b.commit(db.as_ref()).unwrap();
            assert_eq!(p.quota(&d, Quota::VolumeBytes).unwrap(), want);
        }
    }
}
