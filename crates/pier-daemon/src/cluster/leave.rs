//! `pier cluster leave`: this host stops being a member and goes on as a host of its own.
//!
//! Checked first, while it is still a member, so that a refusal changes nothing: the
//! instances the pool placed here must have been moved or removed (`pier host drain`), a
//! host that is the last to keep the pool's CA key leaves last unless forced, and
//! a host whose etcd member is the pool's last voter leaves only as the last host. Then,
//! in an order a crash can resume from (the records before the local files): its tasks
//! stop, its heartbeat is revoked, its etcd member is removed from etcd (the client moving
//! to the other voters first), its records go from the pool (host, membership, allocation,
//! address claims, instance records; the whole table when it was the last host), its etcd
//! stops and its data goes, and `ROOT/cluster/` is removed. The instances made here
//! before or outside the pool stay, as this host's own. Other members see the host's
//! record go (a `remove` host event).
//!
//! With `--force`, a host whose pool's store cannot be reached forgets the pool alone;
//! the pool keeps its records until `pier host rm HOST --force` on another member.

use std::sync::Arc;
use std::time::Duration;

use pier_api::cluster::{ClusterLeave, Left};
use pier_api::ErrorKind;
use pier_cluster::local;
use pier_cluster::member;
use pier_store::{Op, Store};

use super::{blocking, etcd_members, member_error, store_error, Cluster, Member};
use crate::error::ApiError;

impl Cluster {
    /// `pier cluster leave`.
    pub(super) async fn leave(self: &Arc<Self>, req: ClusterLeave) -> Result<Left, ApiError> {
        let _changing = self.changing.lock().await;
        let m = self.member_or_refuse()?;
        let name = m.local.name.clone();
        // The pool's view of its hosts, which also tells whether its store answers.
        let read = match m.store() {
            Ok(store) => {
                let s = store.clone();
                blocking(move || member::hosts(s.as_ref()).map_err(member_error))
                    .await
                    .map(|hosts| (store, hosts))
            }
            Err(e) => Err(e),
        };
        let (store, hosts) = match read {
            Ok(r) => r,
            Err(e) if e.kind == ErrorKind::Unavailable && req.force => {
                self.stop_member(&m, None).await;
                stop_etcd(&m).await;
                self.forget_locally().await?;
                tracing::warn!(host = %name, pool = %m.local.cluster_id, "left the pool without telling it (its store is unreachable)");
                return Ok(Left {
                    cluster_id: m.local.cluster_id.clone(),
                    host: name,
                    dissolved: false,
                    forgotten_locally: true,
                });
            }
            Err(e) if e.kind == ErrorKind::Unavailable => {
                return Err(ApiError::new(
                    ErrorKind::Unavailable,
                    format!(
                        "this host cannot reach the pool's store at {}, through which a host leaves ({}): retry when `pier host ls` answers, or give --force to forget the pool on this host alone (then `pier host rm {name} --force` on another member)",
                        m.local.etcd_endpoints.join(","),
                        e.message
                    ),
                ));
            }
            Err(e) => return Err(e),
        };
        let Some(me) = hosts.iter().find(|h| h.record.id == name) else {
            return Err(member_error(member::MemberError::Removed(name)));
        };
        let others = hosts.len() - 1;
        let n = me.allocation.instances;
        if n > 0 {
            return Err(ApiError::new(
                ErrorKind::Conflict,
                format!(
                    "this host runs {n} instance{} the pool placed here: move them to other hosts with `pier host drain {name}` (or remove them), then leave",
                    if n == 1 { "" } else { "s" }
                ),
            ));
        }
        if m.ca.is_some() && member::last_to_sign(&hosts, &name) && !req.force {
            return Err(ApiError::new(
                ErrorKind::Conflict,
                format!(
                    "this host is the last to keep the pool's CA key, which every join goes through: with it gone no host can join the {others} others; leave it last, or give --force to leave anyway"
                ),
            ));
        }
        if let Some(e) = m.etcd_client.get().cloned().filter(|_| others > 0) {
            let (n, a) = (name.clone(), m.local.address.clone());
            let last =
                blocking(move || etcd_members::runs_last_voter(&e, &n, &a).map_err(member_error))
                    .await?;
            if last {
                return Err(last_voter());
            }
        }
        self.stop_member(&m, Some(&store)).await;
        // Its etcd member first (the client moves to the other voters), then its records.
        let etcd = m.etcd_client.get().cloned();
        let (s, n) = (store.clone(), name.clone());
        let removed = blocking(move || {
            member::remove_with(s.as_ref(), &n, true, |rec| match &etcd {
                Some(e) if others > 0 => match etcd_members::leave(e, &rec.id, &rec.address)? {
                    true => Ok(true),
                    false => Err(member::MemberError::EtcdMember(rec.id.clone())),
                },
                _ => Ok(true),
            })
            .map_err(|e| match e {
                member::MemberError::EtcdMember(_) => last_voter(),
                e => member_error(e),
            })?;
            if others == 0 {
                clear_pool(s.as_ref())?;
            }
            Ok(())
        })
        .await;
        if let Err(e) = removed {
            // The pool still has this host (what the error names aside): a member again,
            // as at a daemon start.
            tracing::error!(host = %name, error = %e.message, "cannot leave the pool; resuming as a member");
            stop_etcd(&m).await;
            if let Err(r) = self.resume().await {
                tracing::error!(error = %r, "cannot resume the membership after a failed leave; restart the daemon");
            }
            return Err(e);
        }
        stop_etcd(&m).await;
        self.forget_locally().await?;
        tracing::info!(host = %name, pool = %m.local.cluster_id, dissolved = others == 0, "left the pool");
        Ok(Left {
            cluster_id: m.local.cluster_id.clone(),
            host: name,
            dissolved: others == 0,
            forgotten_locally: false,
        })
    }

    /// Stops being a member in memory: its tasks, then its heartbeat (revoked when the
    /// store is given). Its etcd keeps running: its member leaves etcd first.
    async fn stop_member(&self, m: &Arc<Member>, store: Option<&Arc<dyn Store>>) {
        self.member.lock().unwrap_or_else(|e| e.into_inner()).take();
        for t in m.tasks.lock().unwrap_or_else(|e| e.into_inner()).drain(..) {
            t.abort();
        }
        if let Some(store) = store.cloned() {
            let hb = m.heartbeat.clone();
            let revoke = tokio::task::spawn_blocking(move || {
                hb.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .stop(store.as_ref())
            });
            let _ = tokio::time::timeout(Duration::from_secs(3), revoke).await;
        }
    }

    /// Removes what made this host a member: its etcd's data and `ROOT/cluster/`.
    async fn forget_locally(&self) -> Result<(), ApiError> {
        let root = self.root.clone();
        blocking(move || {
            pier_cluster::etcd::remove_data(&local::etcd_dir(&root));
            match std::fs::remove_dir_all(local::dir(&root)) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(ApiError::new(
                    ErrorKind::Internal,
                    format!(
                        "left the pool, but cannot remove {}: {e}; remove it by hand",
                        local::dir(&root).display()
                    ),
                )),
            }
        })
        .await
    }
}

/// Stops the etcd member this host runs, if any.
async fn stop_etcd(m: &Member) {
    let supervisor = m.etcd.lock().unwrap_or_else(|e| e.into_inner()).take();
    if let Some(s) = supervisor {
        let _ = tokio::task::spawn_blocking(move || s.stop()).await;
    }
}

/// Deletes every record of the pool (its last host left).
fn clear_pool(store: &dyn Store) -> Result<(), ApiError> {
    let table = pier_cluster::scheduler::keys::TABLE;
    let keys = store.list(table, "").map_err(|e| store_error(&e))?;
    let ops: Vec<Op> = keys
        .into_iter()
        .map(|(key, _)| Op::Delete { table, key })
        .collect();
    for chunk in ops.chunks(64) {
        store
            .commit_with(chunk.to_vec(), false)
            .map_err(|e| store_error(&e))?;
    }
    Ok(())
}

fn last_voter() -> ApiError {
    ApiError::new(
        ErrorKind::Conflict,
        "this host runs the pool's last voting etcd member: the other hosts would lose the pool's state with it; leave it last",
    )
}
