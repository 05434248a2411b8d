//! A volume's stored record and the store transactions that keep volumes correct without
//! a lock: names are taken with create-if-absent, records change under a compare of their
//! revision, and the project's committed volume bytes (what its quota is checked against)
//! are a counter in `Table::Quotas` charged in the same transaction as the record, so two
//! concurrent creates cannot both pass a quota.
//!
//! A record's [`Phase`]: `creating` (reserved, the host side being made; hidden from
//! `ls`), `ready`, `removing` (the host side being taken apart; a retried `rm` or the next
//! start finishes it). Its holders are the containers that attached it.

use std::collections::BTreeSet;

use pier_api::volumes::VolumeInspect;
use pier_api::{ErrorKind, ProjectName};
use pier_store::{Batch, Expect, Revision, StoreError, StoreExt, Table};
use serde::{Deserialize, Serialize};

use super::{key, Volumes};
use crate::error::{EngineError, EngineResult};
use crate::RequestContext;

/// Where a volume is in its life; see the module doc.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    #[default]
    Ready,
    Creating,
    Removing,
}

impl Phase {
    fn is_ready(&self) -> bool {
        *self == Phase::Ready
    }
}

/// A volume as stored: the API's record, its phase and its holders. Records of an older
/// Pier (the API record alone) read as ready and unheld.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Stored {
    #[serde(flatten)]
    pub v: VolumeInspect,
    #[serde(default, skip_serializing_if = "Phase::is_ready")]
    pub phase: Phase,
    /// Container IDs that attached the volume (stale ones, whose container record is
    /// gone, do not count).
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub holders: BTreeSet<String>,
}

impl Stored {
    /// Bytes this record charges to its project's counter.
    pub fn charge(&self) -> u64 {
        self.v.size_limit.unwrap_or(0)
    }
}

/// The `Table::Quotas` key of a project's committed volume bytes.
pub fn committed_key(project: &ProjectName) -> String {
    format!("{project}/volume-bytes-committed")
}

/// The `Table::Quotas` key of how many volume records a project has (any phase).
pub fn count_key(project: &ProjectName) -> String {
    format!("{project}/volume-count-committed")
}

/// What a project's volumes commit: the sum of their size limits and how many there are.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Committed {
    pub bytes: u64,
    pub count: u64,
}

/// What a transaction changes of a project's [`Committed`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Charge {
    pub bytes: i64,
    pub count: i64,
}

impl Charge {
    /// A new record of `bytes`.
    pub(crate) fn new_record(bytes: u64) -> Charge {
        Charge {
            bytes: bytes as i64,
            count: 1,
        }
    }
}

/// How many times a transaction is retried when another change came first.
const RETRIES: usize = 200;

fn busy(what: &str) -> EngineError {
    EngineError::new(
        ErrorKind::Unavailable,
        format!("{what}: too many concurrent changes to the project's volumes; retry"),
    )
}

impl Volumes {
    /// A volume's record in any phase, and its revision.
    pub(crate) fn load(
        &self,
        project: &ProjectName,
        name: &str,
    ) -> EngineResult<Option<(Stored, Revision)>> {
        let k = key(project, name);
        let Some(kv) = self.db.get_kv(Table::Volumes, &k)? else {
            return Ok(None);
        };
        let s = serde_json::from_slice(&kv.value).map_err(|source| StoreError::Corrupt {
            table: Table::Volumes.name(),
            key: k,
            source,
        })?;
        Ok(Some((s, kv.mod_revision)))
    }

    /// Every record of the project (`None`: of every project), any phase.
    pub(crate) fn records(&self, project: Option<&ProjectName>) -> EngineResult<Vec<Stored>> {
        let prefix = project.map(|p| format!("{p}/")).unwrap_or_default();
        Ok(self
            .db
            .list_json::<Stored>(Table::Volumes, &prefix)?
            .into_iter()
            .map(|(_, s)| s)
            .collect())
    }

    /// A counter of the project's and what a transaction must expect of it (when absent,
    /// as a store of an older Pier has it, `sum` of the records).
    fn counter_now(
        &self,
        key: &str,
        project: &ProjectName,
        sum: fn(&[Stored]) -> u64,
    ) -> EngineResult<(u64, Expect)> {
        match self.db.get_kv(Table::Quotas, key)? {
            Some(kv) => {
                let n = String::from_utf8_lossy(&kv.value).parse().unwrap_or(0);
                Ok((n, Expect::ModRevision(kv.mod_revision)))
            }
            None => Ok((sum(&self.records(Some(project))?), Expect::Absent)),
        }
    }

    /// The project's committed bytes and volume count, and what a transaction must
    /// expect of each counter.
    fn committed_now(&self, project: &ProjectName) -> EngineResult<(Committed, Expect, Expect)> {
        let (bytes, eb) = self.counter_now(&committed_key(project), project, |r| {
            r.iter().map(Stored::charge).sum()
        })?;
        let (count, ec) = self.counter_now(&count_key(project), project, |r| r.len() as u64)?;
        Ok((Committed { bytes, count }, eb, ec))
    }

    /// The project's committed volume bytes.
    pub fn committed(&self, ctx: &RequestContext) -> EngineResult<u64> {
        Ok(self.committed_now(ctx.project())?.0.bytes)
    }

    /// How many volumes the project has (those being made or removed too).
    pub fn volume_count(&self, ctx: &RequestContext) -> EngineResult<u64> {
        Ok(self.committed_now(ctx.project())?.0.count)
    }

    /// Commits what `build` makes of the project's committed bytes and count: a batch
    /// (with its own compares) and the change it makes to them, charged in the same
    /// transaction under a compare on each counter it changes. When another change came
    /// first, reads again and retries; `build` decides again.
    pub(crate) fn commit_charged(
        &self,
        project: &ProjectName,
        what: &str,
        build: &mut dyn FnMut(Committed) -> EngineResult<(Batch, Charge)>,
    ) -> EngineResult<()> {
        for _ in 0..RETRIES {
            let (committed, expect_bytes, expect_count) = self.committed_now(project)?;
            let (mut b, charge) = build(committed)?;
            for (k, now, delta, expect) in [
                (
                    committed_key(project),
                    committed.bytes,
                    charge.bytes,
                    expect_bytes,
                ),
                (
                    count_key(project),
                    committed.count,
                    charge.count,
                    expect_count,
                ),
            ] {
                if delta == 0 {
                    continue;
                }
                let new = (now as i64 + delta).max(0) as u64;
                b.require(Table::Quotas, k.clone(), expect);
                b.ops.push(pier_store::Op::Put {
                    table: Table::Quotas,
                    key: k,
                    value: new.to_string().into_bytes(),
                });
            }
            match b.commit(self.db.as_ref()) {
                Ok(()) => return Ok(()),
                Err(StoreError::Conflict { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(busy(what))
    }

    /// Rewrites a volume's record with `change` under a compare of its revision; retries
    /// when it changed meanwhile. `change` answers false to leave it as it is.
    pub(crate) fn update(
        &self,
        project: &ProjectName,
        name: &str,
        change: &mut dyn FnMut(&mut Stored) -> EngineResult<bool>,
    ) -> EngineResult<()> {
        self.commit_charged(project, name, &mut |_| {
            let mut b = Batch::new();
            let Some((mut s, rev)) = self.load(project, name)? else {
                return Err(super::not_found(name));
            };
            let before = s.charge() as i64;
            if change(&mut s)? {
                b.require(Table::Volumes, key(project, name), Expect::ModRevision(rev));
                b.put_json(Table::Volumes, key(project, name), &s);
            }
            Ok((
                b,
                Charge {
                    bytes: s.charge() as i64 - before,
                    count: 0,
                },
            ))
        })
    }

    /// Deletes a volume's record and gives its bytes back to the project.
    pub(crate) fn delete_record(&self, project: &ProjectName, name: &str) -> EngineResult<()> {
        self.commit_charged(project, name, &mut |_| {
            let mut b = Batch::new();
            let Some((s, rev)) = self.load(project, name)? else {
                return Ok((b, Charge::default()));
            };
            b.require(Table::Volumes, key(project, name), Expect::ModRevision(rev));
            b.delete(Table::Volumes, key(project, name));
            Ok((
                b,
                Charge {
                    bytes: -(s.charge() as i64),
                    count: -1,
                },
            ))
        })
    }

    /// The holders of `s` whose container still exists.
    pub(crate) fn live_holders(&self, s: &Stored) -> EngineResult<Vec<String>> {
        let mut live = Vec::new();
        for h in &s.holders {
            if self
                .db
                .get(Table::Containers, &key(&s.v.project, h))?
                .is_some()
            {
                live.push(h.clone());
            }
        }
        Ok(live)
    }
}
