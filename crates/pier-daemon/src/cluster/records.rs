//! This member's copy of the pool's instance records ([`InstanceView`]), which its
//! listings and its lookups of the host owning an instance ([`forward`](super::forward))
//! read instead of ranging over every record in the store.
//!
//! [`Records::run`] (a task of the member, started with its store connection) reads the
//! records once and follows the pool's table; when the watch ends (a compaction, a watcher
//! that fell behind) it reads them again. While it reads, the copy is not used.
//!
//! Freshness: a reader first asks the store for its revision (one small read) and waits,
//! at most [`FRESH_WAIT`], for the copy to have taken in every event up to it; so a
//! listing or a lookup sees what a range read at that moment would have, and a record
//! written anywhere before the request came is in it. When the copy is not followed (not
//! read yet, read again after a compaction), cannot catch up in time, or the store does
//! not answer, the reader reads the store itself ([`instances::list`], as before the
//! copy existed): the answer is never older for the copy.
//!
//! Read-your-writes for creates: a create placed on another host returns once that host
//! made the instance, which its mirror then records; [`Records::wait_for`] holds the
//! create's answer (at most [`RECORD_WAIT`]) until the record is in the store, so that a
//! listing or an operation right after it, through this member, finds it.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use pier_cluster::instance_view::InstanceView;
use pier_cluster::instances::{self, InstanceError, InstanceRecord};
use pier_store::{Event, Revision, Store, StoreError};
use tokio::sync::watch;

/// How long a reader waits for the copy to reach the store's revision before it reads
/// the store itself.
pub const FRESH_WAIT: Duration = Duration::from_millis(500);
/// How long a create placed on another host waits for its record.
pub const RECORD_WAIT: Duration = Duration::from_secs(3);
/// The most events taken in under one write lock.
const BATCH: usize = 1024;

/// The copy and whether it is followed.
#[derive(Default)]
struct State {
    view: InstanceView,
    /// Read and followed by a live watch: usable.
    live: bool,
}

/// A member's copy of the pool's instance records; see the module doc.
pub struct Records {
    state: RwLock<State>,
    /// The copy's revision, for readers waiting for it to catch up (0: not live).
    revision: watch::Sender<Revision>,
}

impl Default for Records {
    fn default() -> Self {
        Records {
            state: RwLock::default(),
            revision: watch::Sender::new(0),
        }
    }
}

impl Records {
    /// Reads the records and follows the pool's table, again after the watch ends, until
    /// the task is aborted (with its member).
    pub async fn run(self: Arc<Self>, store: Arc<dyn Store>) {
        let mut logged = false;
        loop {
            let s = store.clone();
            match tokio::task::spawn_blocking(move || InstanceView::follow(s.as_ref())).await {
                Ok(Ok((view, mut watch))) => {
                    tracing::debug!(
                        records = view.len(),
                        revision = view.revision(),
                        "read the pool's instance records"
                    );
                    logged = false;
                    self.set(view);
                    let ended = loop {
                        let first = match watch.recv().await {
                            None => break None,
                            Some(Err(e)) => break Some(e),
                            Some(Ok(e)) => e,
                        };
                        let mut batch = vec![first];
                        let mut failed = None;
                        while batch.len() < BATCH {
                            match watch.try_next() {
                                Some(Ok(e)) => batch.push(e),
                                Some(Err(e)) => {
                                    failed = Some(e);
                                    break;
                                }
                                None => break,
                            }
                        }
                        let me = self.clone();
                        if tokio::task::spawn_blocking(move || me.apply(&batch))
                            .await
                            .is_err()
                        {
                            break None;
                        }
                        if failed.is_some() {
                            break failed;
                        }
                    };
                    self.lost();
                    match ended {
                        Some(e) => {
                            tracing::info!(error = %pier_api::error::chain(&e), "the watch of the pool's instance records ended; reading them again")
                        }
                        None => tracing::debug!("the watch of the pool's instance records ended"),
                    }
                }
                Ok(Err(e)) if !logged => {
                    tracing::warn!(error = %pier_api::error::chain(&e), "cannot read the pool's instance records; listings read the store until this works");
                    logged = true;
                }
                _ => {}
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    fn set(&self, view: InstanceView) {
        let revision = view.revision();
        *self.state.write().unwrap_or_else(|e| e.into_inner()) = State { view, live: true };
        self.revision.send_replace(revision);
    }

    fn lost(&self) {
        self.state.write().unwrap_or_else(|e| e.into_inner()).live = false;
        self.revision.send_replace(0);
    }

    fn apply(&self, events: &[Event]) {
        let revision = {
            let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
            for e in events {
                state.view.apply(e);
            }
            state.view.revision()
        };
        self.revision.send_replace(revision);
    }

    /// Whether the copy is followed and at `revision` or later.
    fn at(&self, revision: Revision) -> bool {
        let state = self.state.read().unwrap_or_else(|e| e.into_inner());
        state.live && state.view.revision() >= revision
    }

    /// Waits until the copy is as fresh as the store is now; false when it is not
    /// followed, the store does not answer, or it does not catch up in [`FRESH_WAIT`].
    async fn fresh(&self, store: &Arc<dyn Store>) -> bool {
        if *self.revision.borrow() == 0 {
            return false;
        }
        let s = store.clone();
        let Ok(Ok(now)) = tokio::task::spawn_blocking(move || s.revision()).await else {
            return false;
        };
        let mut rx = self.revision.subscribe();
        let caught_up = tokio::time::timeout(FRESH_WAIT, rx.wait_for(|r| *r >= now)).await;
        matches!(caught_up, Ok(Ok(_))) && self.at(now)
    }

    /// The records of `project` of hosts other than `me` that `keep` keeps, from the copy
    /// when it is fresh, else read from the store. The copy's records are filtered where
    /// they are, in one pass, off the runtime's threads: only those kept are taken.
    pub async fn others<F>(
        self: &Arc<Self>,
        store: &Arc<dyn Store>,
        project: &str,
        me: &str,
        keep: F,
    ) -> Result<Vec<Arc<InstanceRecord>>, StoreError>
    where
        F: Fn(&InstanceRecord) -> bool + Send + 'static,
    {
        let fresh = self.fresh(store).await;
        let (this, s, p, me) = (
            self.clone(),
            store.clone(),
            project.to_string(),
            me.to_string(),
        );
        tokio::task::spawn_blocking(move || {
            let kept = |r: &InstanceRecord| r.host != me && keep(r);
            if fresh {
                let state = this.state.read().unwrap_or_else(|e| e.into_inner());
                return Ok(state
                    .view
                    .project(&p)
                    .filter(|r| kept(r))
                    .cloned()
                    .collect());
            }
            Ok(instances::list(s.as_ref(), Some(&p))?
                .into_iter()
                .filter(|r| kept(r))
                .map(Arc::new)
                .collect())
        })
        .await
        .map_err(|e| StoreError::Backend(Box::new(e)))?
    }

    /// The record of `project` that `reference` names (see
    /// [`pier_cluster::instances::find_in`]), from the copy when it is fresh, else read
    /// from the store.
    pub async fn find(
        &self,
        store: &Arc<dyn Store>,
        project: &str,
        reference: &str,
    ) -> Result<Option<Arc<InstanceRecord>>, InstanceError> {
        if self.fresh(store).await {
            let state = self.state.read().unwrap_or_else(|e| e.into_inner());
            return state.view.find(project, reference);
        }
        let (s, p, r) = (store.clone(), project.to_string(), reference.to_string());
        tokio::task::spawn_blocking(move || instances::find(s.as_ref(), &p, &r))
            .await
            .map_err(|e| InstanceError::Store(StoreError::Backend(Box::new(e))))?
            .map(|r| r.map(Arc::new))
    }

    /// Waits, at most [`RECORD_WAIT`], until the record of `project/id` is in the store:
    /// on the copy's updates while it is followed, else by reading the key. Whether it
    /// came.
    pub async fn wait_for(&self, store: &Arc<dyn Store>, project: &str, id: &str) -> bool {
        let key = instances::key(project, id);
        let until = tokio::time::Instant::now() + RECORD_WAIT;
        let mut rx = self.revision.subscribe();
        let mut pause = Duration::from_millis(10);
        loop {
            let followed = *rx.borrow_and_update() != 0;
            if self.has(&key) {
                return true;
            }
            if followed {
                if tokio::time::timeout_at(until, rx.changed()).await.is_err() {
                    return false;
                }
                continue;
            }
            // Not followed: the store itself.
            let (s, k) = (store.clone(), key.clone());
            let got = tokio::task::spawn_blocking(move || s.get_kv(instances::TABLE, &k)).await;
            if matches!(got, Ok(Ok(Some(_)))) {
                return true;
            }
            if tokio::time::timeout_at(until, tokio::time::sleep(pause))
                .await
                .is_err()
            {
                return false;
            }
            pause = (pause * 2).min(Duration::from_millis(200));
        }
    }

    fn has(&self, key: &str) -> bool {
        let state = self.state.read().unwrap_or_else(|e| e.into_inner());
        state.live && state.view.get(key).is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pier_cluster::instances::put;
    use pier_cluster::scheduler::keys;
    use pier_store::{FaultyStore, Op, Table, WATCH_BUFFER};
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn host(store: &dyn Store, h: &str) {
        store
            .commit(vec![Op::Put {
                table: keys::TABLE,
                key: keys::host(h),
                value: b"{}".to_vec(),
            }])
            .unwrap();
    }

    fn rec(id: &str, name: &str, host: &str) -> InstanceRecord {
        InstanceRecord {
            project: "default".into(),
            id: id.into(),
            name: name.into(),
            host: host.into(),
            kind: "container".into(),
            image: "bb".into(),
            command: String::new(),
            state: "running".into(),
            status: String::new(),
            created: "2026-12-07T10:00:00Z".into(),
            started_at: None,
            finished_at: None,
            exit_code: None,
            ports: Vec::new(),
            labels: Default::default(),
        }
    }

    fn ids(rs: &[Arc<InstanceRecord>]) -> Vec<&str> {
        rs.iter().map(|r| r.id.as_str()).collect()
    }

    /// A pool's store with hosts h1 and h2, and the count of the ranges of instance
    /// records read from it (not the reads of one record's key).
    fn counted_pool() -> (Arc<dyn Store>, Arc<AtomicUsize>) {
        let faulty = Arc::new(FaultyStore::default());
        let ranges = Arc::new(AtomicUsize::new(0));
        let n = ranges.clone();
        faulty.on_read(Some(Arc::new(move |t: Table, prefix: &str| {
            if t == instances::TABLE
                && prefix.starts_with(instances::INSTANCES)
                && prefix.ends_with('/')
            {
                n.fetch_add(1, Ordering::SeqCst);
            }
        })));
        let store: Arc<dyn Store> = faulty;
        host(store.as_ref(), "h1");
        host(store.as_ref(), "h2");
        (store, ranges)
    }

    /// Waits until the copy is followed.
    async fn live(r: &Records) {
        let mut rx = r.revision.subscribe();
        tokio::time::timeout(Duration::from_secs(10), rx.wait_for(|r| *r > 0))
            .await
            .expect("the copy was read")
            .unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn listings_and_lookups_read_the_copy_and_see_every_write_before_them() {
        let (store, ranges) = counted_pool();
        put(store.as_ref(), &rec("aaa1", "mine", "h1")).unwrap();
        put(store.as_ref(), &rec("bbb2", "web", "h2")).unwrap();
        let records = Arc::new(Records::default());
        // Not read yet: the store's own records, read there.
        let before = records
            .others(&store, "default", "h1", |_| true)
            .await
            .unwrap();
        assert_eq!(ids(&before), ["bbb2"]);
        assert_eq!(ranges.swap(0, Ordering::SeqCst), 1);
        let task = tokio::spawn(records.clone().run(store.clone()));
        live(&records).await;
        assert_eq!(ranges.swap(0, Ordering::SeqCst), 1, "the copy's own read");
        for i in 0..20 {
            // Written just before: listed and found at once, without a range read.
            let id = format!("ccc{i:02}");
            put(store.as_ref(), &rec(&id, &format!("n{i}"), "h2")).unwrap();
            let others = records
                .others(&store, "default", "h1", |_| true)
                .await
                .unwrap();
            assert_eq!(others.len(), 2 + i, "{:?}", ids(&others));
            assert!(ids(&others).contains(&id.as_str()));
            let found = records.find(&store, "default", &format!("n{i}")).await;
            assert_eq!(found.unwrap().unwrap().id, id);
        }
        instances::delete(store.as_ref(), "h2", "default", "bbb2").unwrap();
        let others = records
            .others(&store, "default", "h1", |_| true)
            .await
            .unwrap();
        assert!(!ids(&others).contains(&"bbb2"));
        assert!(records
            .find(&store, "default", "bbb2")
            .await
            .unwrap()
            .is_none());
        // Only what the filter keeps is taken.
        let kept = records
            .others(&store, "default", "h1", |r| r.name == "n3")
            .await
            .unwrap();
        assert_eq!(ids(&kept), ["ccc03"]);
        let e = records.find(&store, "default", "ccc").await.unwrap_err();
        assert!(matches!(e, InstanceError::Ambiguous { .. }), "{e}");
        assert_eq!(ranges.load(Ordering::SeqCst), 0, "a listing read the store");
        // A create's record, waited for on the copy.
        let (r2, s2) = (records.clone(), store.clone());
        let waiting = tokio::spawn(async move { r2.wait_for(&s2, "default", "late").await });
        tokio::time::sleep(Duration::from_millis(50)).await;
        put(store.as_ref(), &rec("late", "late", "h2")).unwrap();
        assert!(waiting.await.unwrap());
        task.abort();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_copy_whose_watch_ended_is_read_again() {
        let (store, ranges) = counted_pool();
        let records = Arc::new(Records::default());
        let task = tokio::spawn(records.clone().run(store.clone()));
        live(&records).await;
        assert_eq!(ranges.load(Ordering::SeqCst), 1);
        // More writes than a watcher may fall behind by (besides the batch the copy took
        // before it waited), while the copy cannot take them in (its lock held): the
        // watch ends, lagged, and the copy is read again.
        let (s, r) = (store.clone(), records.clone());
        tokio::task::spawn_blocking(move || {
            let _held = r.state.write().unwrap();
            for i in 0..WATCH_BUFFER + BATCH + 100 {
                put(s.as_ref(), &rec(&format!("x{:05}", i % 300), "x", "h2")).unwrap();
            }
            instances::delete(s.as_ref(), "h2", "default", "x00007").unwrap();
        })
        .await
        .unwrap();
        let want: Vec<String> = instances::list(store.as_ref(), Some("default"))
            .unwrap()
            .into_iter()
            .map(|r| r.id)
            .collect();
        assert_eq!(want.len(), 299);
        ranges.fetch_sub(1, Ordering::SeqCst);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while !records.at(store.revision().unwrap()) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the copy did not catch up"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(ranges.load(Ordering::SeqCst), 2, "read again once");
        let got: Vec<String> = {
            let state = records.state.read().unwrap();
            state
                .view
                .project("default")
                .map(|r| r.id.clone())
                .collect()
        };
        assert_eq!(got, want);
        task.abort();
    }
}
