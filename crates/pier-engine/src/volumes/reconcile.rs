//! Telling a create in flight from a dead one, and the volume reconciler that runs beside
//! the API.
//!
//! A create holds a store lease for as long as it runs: the transaction that reserves its
//! name also writes `Table::Meta` `volume-creating/<project>/<name>` attached to the lease,
//! and the ready step deletes that key (requiring it present) before the lease is revoked.
//! A `creating` record whose key is gone belongs to a create whose owner died: its lease
//! expired (the lease tick ends it; the store of a daemon that restarted has dropped the
//! leases of the process before), or it never had one (an older Pier's). Only those are
//! taken apart, with their directory, by [`Volumes::reap_dead_creates`], which the start
//! (`Volumes::reconcile`) and [`VolumeReconciler`] both run.
//!
//! While the daemon runs, the reconciler does only that: remounts, finishing removes,
//! directories without a record and half-made snapshots stay the start's work, since
//! restores, removes and snapshots in flight hold no lease yet that would tell them from
//! a crash's leftovers.

use std::sync::Arc;
use std::time::Duration;

use pier_api::ProjectName;
use pier_store::{Batch, Expect, LeaseId, Table};

use super::record::{Charge, Phase};
use super::{key, Volumes};
use crate::error::{EngineError, EngineResult};
use crate::reconcile::{BoxFuture, Reconciler};

/// How long a create's lease lives without being kept alive: a create that stalls longer
/// (between its reserve and its ready step) is taken apart as a dead one.
pub const CREATE_LEASE_TTL: Duration = Duration::from_secs(60);

/// The `Table::Meta` prefix of the keys of creates in flight.
pub const CREATING_PREFIX: &str = "volume-creating/";

/// The `Table::Meta` key that exists while a create of `project/name` runs.
pub fn creating_key(project: &ProjectName, name: &str) -> String {
    format!("{CREATING_PREFIX}{}", key(project, name))
}

/// Takes apart the volumes whose create died, while the daemon runs; see the module doc.
pub struct VolumeReconciler {
    pub volumes: Arc<Volumes>,
    /// How long it waits without a change before another pass.
    pub period: Duration,
}

impl Reconciler for VolumeReconciler {
    fn name(&self) -> &'static str {
        "volumes"
    }
    /// A create's key going (its ready step, or its lease ending) wakes it.
    fn watches(&self) -> Vec<(Table, String)> {
        vec![(Table::Meta, CREATING_PREFIX.into())]
    }
    fn period(&self) -> Duration {
        self.period
    }
    fn reconcile(&self) -> BoxFuture<'_, EngineResult<()>> {
        let volumes = self.volumes.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || volumes.reap_dead_creates().map(drop))
                .await
                .map_err(|e| EngineError::Internal(format!("the volume reconciler failed: {e}")))?
        })
    }
    /// `Engine::open` has just reconciled the volumes.
    fn pass_at_start(&self) -> bool {
        false
    }
}

impl Volumes {
    /// A lease for a create that starts now.
    pub(super) fn create_lease(&self) -> EngineResult<LeaseId> {
        Ok(self.db.grant(CREATE_LEASE_TTL)?)
    }

    /// Ends a create's lease (and whatever key it still holds); a failure only leaves the
    /// lease to expire.
    pub(super) fn end_lease(&self, lease: LeaseId) {
        if let Err(e) = self.db.revoke(lease) {
            tracing::debug!(%lease, error = %e, "cannot revoke a volume create's lease; it will expire");
        }
    }

    /// Takes apart every volume left `creating` by a create whose owner died (its key
    /// gone), with its directory; returns their names.
    pub fn reap_dead_creates(&self) -> EngineResult<Vec<String>> {
        let mut reaped = Vec::new();
        for s in self.records(None)? {
            if s.phase != Phase::Creating {
                continue;
            }
            let (project, name) = (&s.v.project, &s.v.name);
            if self
                .db
                .get(Table::Meta, &creating_key(project, name))?
                .is_some()
            {
                continue;
            }
            // The record first, under the same conditions read again in its transaction,
            // then the directory: the listing above may be older than the key just read (a
            // create that became ready in between), and its directory is then a live one.
            if self.delete_dead_create(project, name)? {
                self.remove_leftover(&self.vdir(project, name), name);
                tracing::info!(project = %project, volume = %name, "took apart a volume whose create died");
                reaped.push(name.clone());
            }
        }
        Ok(reaped)
    }

    /// Deletes a record still `creating` whose create's key is still gone, giving back its
    /// charge; whether it did.
    fn delete_dead_create(&self, project: &ProjectName, name: &str) -> EngineResult<bool> {
        let mut deleted = false;
        self.commit_charged(project, name, &mut |_| {
            deleted = false;
            let mut b = Batch::new();
            let Some((s, rev)) = self.load(project, name)? else {
                return Ok((b, Charge::default()));
            };
            if s.phase != Phase::Creating {
                return Ok((b, Charge::default()));
            }
            b.require(Table::Volumes, key(project, name), Expect::ModRevision(rev));
            b.require(Table::Meta, creating_key(project, name), Expect::Absent);
            b.delete(Table::Volumes, key(project, name));
            deleted = true;
            Ok((
                b,
                Charge {
                    bytes: -(s.charge() as i64),
                    count: -1,
                },
            ))
        })?;
        Ok(deleted)
    }
}
