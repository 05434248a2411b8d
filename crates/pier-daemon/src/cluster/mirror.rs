//! The mirror: keeps this member's instance records in the pool's store
//! ([`pier_cluster::instances`]) the same as its instances, so that every member lists
//! them and forwards requests naming them here.
//!
//! It follows the engine's container events: each one (but an exec's) reads the instance
//! again and writes its record when it changed, or deletes it when the instance is gone.
//! A full resync runs when it starts (at resume, init or join), every
//! [`RESYNC_PERIOD`], and whenever it fell behind the events: events can be missed (the
//! store away for a while, the event channel lagging), and a resync also deletes the
//! records of instances this host no longer has. It stops with the member (its task is
//! the member's), and when the pool no longer has this host (`pier host rm --force` while
//! it runs): the store refuses its writes then.

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::Duration;

use pier_api::containers::ContainerInspect;
use pier_api::ProjectName;
use pier_cluster::instances::{self, InstanceRecord, RecordPort};
use pier_engine::{Engine, RequestContext};
use pier_store::Store;
use tokio::sync::broadcast;

/// How often the records are made whole again without an event.
pub const RESYNC_PERIOD: Duration = Duration::from_secs(30);

/// The record of instance `c` of host `host`.
pub fn record_of(c: &ContainerInspect, host: &str) -> InstanceRecord {
    let now = pier_api::time::now_unix();
    InstanceRecord {
        project: c.project.to_string(),
        id: c.id.clone(),
        name: c.name.clone(),
        host: host.to_string(),
        kind: pier_engine::instances::vm::kind(&c.config).to_string(),
        image: c.image.clone(),
        command: c.command.join(" "),
        state: c.state.status.as_str().to_string(),
        status: pier_engine::instances::service::status_text(&c.state, now),
        created: c.created.clone(),
        started_at: c.state.started_at.clone(),
        finished_at: c.state.finished_at.clone(),
        exit_code: c.state.exit_code,
        ports: c
            .ports
            .iter()
            .map(|p| RecordPort {
                proto: p.proto.clone(),
                host_ip: p.host_ip.clone(),
                host_port: p.host_port,
                container_port: p.container_port,
            })
            .collect(),
        labels: c.config.labels.clone().into_iter().collect(),
    }
}

/// Whether two records differ in more than their status text (which ages by itself and
/// is made again by whoever shows it).
fn changed(a: &InstanceRecord, b: &InstanceRecord) -> bool {
    let mut b = b.clone();
    b.status.clone_from(&a.status);
    *a != b
}

/// The mirror of one member: what it wrote, to write again only what changed.
struct Mirror {
    engine: Weak<Engine>,
    store: Arc<dyn Store>,
    host: String,
    /// The records as the store holds them, by key.
    written: HashMap<String, InstanceRecord>,
    /// Set when the pool refused a write because this host is no longer in it.
    removed: bool,
}

/// Why a mirror's write failed, in words; marks the mirror removed when that is why.
fn failed(removed: &mut bool, e: &instances::InstanceError) -> String {
    if matches!(e, instances::InstanceError::Removed(_)) {
        *removed = true;
    }
    pier_api::error::chain(e)
}

impl Mirror {
    /// Every local instance's record, and the store made the same; false when it failed
    /// (logged), to be tried again.
    async fn resync(&mut self) -> bool {
        let Some(engine) = self.engine.upgrade() else {
            return false;
        };
        let (store, host) = (self.store.clone(), self.host.clone());
        let r = tokio::task::spawn_blocking(move || {
            let local: Vec<InstanceRecord> = engine
                .instances
                .every()
                .map_err(|e| (false, pier_api::error::chain(&e)))?
                .iter()
                .map(|c| record_of(c, &host))
                .collect();
            let done = instances::resync(store.as_ref(), &host, &local).map_err(|e| {
                let mut removed = false;
                let message = failed(&mut removed, &e);
                (removed, message)
            })?;
            Ok::<_, (bool, String)>((local, done))
        })
        .await;
        match r {
            Ok(Ok((local, done))) => {
                if !done.put.is_empty() || !done.deleted.is_empty() {
                    tracing::debug!(
                        written = done.put.len(),
                        deleted = done.deleted.len(),
                        "instance records resynced"
                    );
                }
                self.written = local.into_iter().map(|r| (r.key(), r)).collect();
                true
            }
            Ok(Err((removed, e))) => {
                self.removed |= removed;
                if !self.removed {
                    tracing::warn!(error = %e, "cannot resync this host's instance records with the pool; trying again");
                }
                false
            }
            Err(_) => false,
        }
    }

    /// Writes the record of instance `project/id` as it is now, or deletes it when the
    /// instance is gone.
    async fn update(&mut self, project: ProjectName, id: String) {
        let Some(engine) = self.engine.upgrade() else {
            return;
        };
        let key = instances::key(project.as_str(), &id);
        let before = self.written.get(&key).cloned();
        let (store, host) = (self.store.clone(), self.host.clone());
        let r = tokio::task::spawn_blocking(move || {
            let ctx = RequestContext::system(project.clone(), "cluster");
            let now = engine.instances.get(&ctx, &id).ok().filter(|c| c.id == id);
            match now {
                Some(c) => {
                    let rec = record_of(&c, &host);
                    if before.as_ref().is_none_or(|b| changed(b, &rec)) {
                        instances::put(store.as_ref(), &rec)?;
                    }
                    Ok(Some(rec))
                }
                None => {
                    instances::delete(store.as_ref(), &host, project.as_str(), &id)?;
                    Ok(None)
                }
            }
        })
        .await;
        match r {
            Ok(Ok(Some(rec))) => {
                self.written.insert(key, rec);
            }
            Ok(Ok(None)) => {
                self.written.remove(&key);
            }
            Ok(Err(e)) => {
                // The next resync writes it.
                self.written.remove(&key);
                let e = failed(&mut self.removed, &e);
                if !self.removed {
                    tracing::warn!(key = %key, error = %e, "cannot write an instance record to the pool");
                }
            }
            Err(_) => {}
        }
    }
}

/// Keeps `host`'s instance records in `store` until the engine goes (or the task is
/// aborted with the member).
pub async fn run(engine: Weak<Engine>, store: Arc<dyn Store>, host: String) {
    let mut m = Mirror {
        engine,
        store,
        host,
        written: HashMap::new(),
        removed: false,
    };
    loop {
        if m.removed {
            tracing::error!(host = %m.host, "this host was removed from the pool; its instance records are no longer kept");
            return;
        }
        // Subscribed before the resync reads: no event falls between the two.
        let mut rx = match m.engine.upgrade() {
            Some(e) => e.instances.events.subscribe(),
            None => return,
        };
        if !m.resync().await {
            tokio::time::sleep(Duration::from_secs(2)).await;
            continue;
        }
        let mut tick =
            tokio::time::interval_at(tokio::time::Instant::now() + RESYNC_PERIOD, RESYNC_PERIOD);
        loop {
            tokio::select! {
                ev = rx.recv() => match ev {
                    Ok(ev) => {
                        let e = &ev.event;
                        if e.kind == "container" && !e.action.starts_with("exec_") {
                            m.update(ev.project, e.id.clone()).await;
                        }
                        if m.removed {
                            break;
                        }
                    }
                    // Behind: what was missed is read whole again.
                    Err(broadcast::error::RecvError::Lagged(_)) => break,
                    Err(broadcast::error::RecvError::Closed) => return,
                },
                _ = tick.tick() => {
                    if !m.resync().await && m.removed {
                        break;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_status_that_only_aged_is_no_change() {
        let c: ContainerInspect = serde_json::from_value(serde_json::json!({
            "id": "abc", "name": "web", "project": "default", "image": "bb",
            "image_id": format!("sha256:{}", "0".repeat(64)),
            "created": "2026-12-07T10:00:00Z", "command": ["sleep", "9"],
            "config": {"image": "bb", "labels": {"app": "web"}},
            "state": {"status": "running", "started_at": "2026-12-07T10:00:01Z",
                "oom_killed": false, "restart_count": 0, "stopped_by_user": false},
            "log_path": "/x",
        }))
        .unwrap();
        let a = record_of(&c, "h1");
        assert_eq!(a.key(), "instances/default/abc");
        assert_eq!(a.command, "sleep 9");
        assert_eq!(a.state, "running");
        assert!(a.status.starts_with("Up "), "{}", a.status);
        assert_eq!(a.labels["app"], "web");
        assert_eq!(a.kind, "container");
        let mut b = a.clone();
        b.status = "Up 2 hours".into();
        assert!(!changed(&a, &b));
        b.state = "exited".into();
        assert!(changed(&a, &b));
    }
}
