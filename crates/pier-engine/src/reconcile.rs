//! Reconcilers: loops that bring what is (the host) in line with what was asked (the
//! store), woken by the store's watch on the records they realise and, between changes,
//! periodically, so that drift (a bridge deleted by hand, a lease whose holder died) is
//! repaired while the daemon runs, not only when it starts. This is the seam a scheduler
//! and host agents use: whoever writes the desired state, a reconciler realises it.
//!
//! Each reconciler runs in its own task: one pass at once (unless the daemon's start has
//! just done it), then a pass after each burst of
//! changes under the prefixes it watches (a burst within [`COALESCE`] is one pass, and a
//! pass always follows the last change), and one every [`Reconciler::period`] without
//! changes (which is also the retry after a failed pass). A watch that lags or is
//! compacted is opened again and followed by a full pass, so no change is missed.
//!
//! The lease tick ([`Loops::spawn_lease_tick`]) ends the store's expired leases every second: the
//! embedded store has no leader doing it (etcd's does).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use pier_store::{Revision, Store, Table};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::EngineResult;

/// A boxed future, for trait methods that must be callable through `dyn`.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// How long a pass waits after a change for more changes to join it.
pub const COALESCE: Duration = Duration::from_millis(50);

/// How often the lease tick runs.
pub const LEASE_TICK: Duration = Duration::from_secs(1);

/// One loop bringing the host in line with a part of the store.
pub trait Reconciler: Send + Sync + 'static {
    /// Its name, in logs.
    fn name(&self) -> &'static str;
    /// The (table, key prefix) pairs whose changes wake it; none for periodic only.
    fn watches(&self) -> Vec<(Table, String)>;
    /// How long it waits without a change before another pass.
    fn period(&self) -> Duration;
    /// One pass: idempotent, safe to run at any time alongside the API.
    fn reconcile(&self) -> BoxFuture<'_, EngineResult<()>>;
    /// Whether its loop makes a pass as soon as it starts (false when the daemon's start
    /// has just done the same work).
    fn pass_at_start(&self) -> bool {
        true
    }
}

/// How a reconciler's loop has gone, for `info` and tests.
#[derive(Debug, Default)]
pub struct LoopStats {
    /// Passes run, failed or not.
    pub passes: AtomicU64,
    /// Passes that failed.
    pub failures: AtomicU64,
}

/// The running loops; dropping it stops them.
#[derive(Default)]
pub struct Loops {
    tasks: Vec<JoinHandle<()>>,
}

impl Loops {
    /// Starts `r`'s loop over `store`, woken by the changes made from now on; returns its
    /// stats.
    pub fn spawn(&mut self, store: Arc<dyn Store>, r: Arc<dyn Reconciler>) -> Arc<LoopStats> {
        // Taken here, not when the watch task first runs: a change in between counts.
        let from = store.revision().map_or(0, |rev| rev + 1);
        self.spawn_from(store, r, from)
    }

    /// As [`Loops::spawn`], woken by the changes from store revision `from` on (replayed
    /// from the store's history): a caller that made `r`'s pass itself takes the
    /// revision before that pass, so no change made between the pass and the watch is
    /// missed. A revision the store has compacted away is a full pass instead.
    pub fn spawn_from(
        &mut self,
        store: Arc<dyn Store>,
        r: Arc<dyn Reconciler>,
        from: Revision,
    ) -> Arc<LoopStats> {
        let stats = Arc::new(LoopStats::default());
        let wake = Arc::new(Notify::new());
        for (table, prefix) in r.watches() {
            self.tasks.push(tokio::spawn(forward(
                store.clone(),
                table,
                prefix,
                wake.clone(),
                from,
            )));
        }
        self.tasks.push(tokio::spawn(run(r, wake, stats.clone())));
        stats
    }

    /// Keeps a task of another kind (an event follower), stopped with the loops.
    pub fn keep(&mut self, task: JoinHandle<()>) {
        self.tasks.push(task);
    }

    /// Starts the lease tick over `store`.
    pub fn spawn_lease_tick(&mut self, store: Arc<dyn Store>, every: Duration) {
        self.tasks.push(tokio::spawn(lease_tick(store, every)));
    }
}

impl Drop for Loops {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

async fn run(r: Arc<dyn Reconciler>, wake: Arc<Notify>, stats: Arc<LoopStats>) {
    let mut pass = r.pass_at_start();
    loop {
        if pass {
            stats.passes.fetch_add(1, Ordering::Relaxed);
            if let Err(e) = r.reconcile().await {
                stats.failures.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(reconciler = r.name(), error = %e.message(), "reconcile pass failed; retrying later");
            }
        }
        pass = true;
        tokio::select! {
            _ = wake.notified() => {
                // Let the rest of a burst arrive; a change after this point wakes the
                // next pass (Notify keeps one permit).
                tokio::time::sleep(COALESCE).await;
            }
            _ = tokio::time::sleep(r.period()) => {}
        }
    }
}

/// Wakes the loop on every change under `prefix` of `table` from revision `from` on,
/// opening the watch again (and waking the loop for a full pass) when it lags or the
/// store compacts past it.
async fn forward(
    store: Arc<dyn Store>,
    table: Table,
    prefix: String,
    wake: Arc<Notify>,
    mut from: Revision,
) {
    loop {
        let opened = store.watch(table, &prefix, from);
        // Watched again after an end: from now on, after a full pass.
        from = 0;
        let mut w = match opened {
            Ok(w) => w,
            Err(e @ pier_store::StoreError::Compacted { .. }) => {
                tracing::debug!(table = %table, prefix, error = %e, "watching from now on, after a full pass");
                wake.notify_one();
                continue;
            }
            Err(e) => {
                tracing::warn!(table = %table, prefix, error = %e, "cannot watch the store; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        loop {
            match w.recv().await {
                Some(Ok(_)) => wake.notify_one(),
                Some(Err(e)) => {
                    tracing::debug!(table = %table, prefix, error = %e, "watch ended; watching again");
                    wake.notify_one();
                    break;
                }
                // The store is gone: nothing more to watch.
                None => return,
            }
        }
    }
}

async fn lease_tick(store: Arc<dyn Store>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let s = store.clone();
        match tokio::task::spawn_blocking(move || s.expire_leases()).await {
            Ok(Ok(ended)) if !ended.is_empty() => {
                tracing::debug!(leases = ?ended, "leases expired");
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "cannot expire the store's leases"),
            Err(e) => tracing::warn!(error = %e, "the lease tick failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::time::Instant;

    use pier_store::{Batch, ManualClock, MemStore, StoreExt};

    use super::*;
    use crate::EngineError;

    /// Records the value of `meta/wanted` it saw at each pass; fails while told to.
    struct Mirror {
        store: Arc<dyn Store>,
        seen: Mutex<Vec<Option<u64>>>,
        fail: std::sync::atomic::AtomicBool,
        period: Duration,
        at_start: bool,
    }

    impl Mirror {
        fn new(store: Arc<dyn Store>, period: Duration) -> Arc<Mirror> {
            Arc::new(Mirror {
                store,
                seen: Mutex::new(Vec::new()),
                fail: false.into(),
                period,
                at_start: true,
            })
        }
        fn passes(&self) -> usize {
            self.seen.lock().unwrap().len()
        }
        fn last(&self) -> Option<Option<u64>> {
            self.seen.lock().unwrap().last().copied()
        }
    }

    impl Reconciler for Mirror {
        fn name(&self) -> &'static str {
            "mirror"
        }
        fn watches(&self) -> Vec<(Table, String)> {
            vec![(Table::Meta, "wanted".into())]
        }
        fn period(&self) -> Duration {
            self.period
        }
        fn pass_at_start(&self) -> bool {
            self.at_start
        }
        fn reconcile(&self) -> BoxFuture<'_, EngineResult<()>> {
            Box::pin(async move {
                let v = self.store.get_json::<u64>(Table::Meta, "wanted")?;
                self.seen.lock().unwrap().push(v);
                if self.fail.load(Ordering::Relaxed) {
                    return Err(EngineError::new(
                        pier_api::ErrorKind::Internal,
                        "told to fail",
                    ));
                }
                Ok(())
            })
        }
    }

    fn put(store: &dyn Store, key: &str, v: u64) {
        let mut b = Batch::new();
        b.put_json(Table::Meta, key, &v);
        b.commit(store).unwrap();
    }

    async fn until(what: &str, f: impl Fn() -> bool) {
        let t0 = Instant::now();
        while !f() {
            assert!(
                t0.elapsed() < Duration::from_secs(5),
                "timed out waiting for {what}"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    const LONG: Duration = Duration::from_secs(3600);

    #[tokio::test]
    async fn a_pass_runs_at_once_and_after_a_watched_change() {
        let store: Arc<dyn Store> = Arc::new(MemStore::default());
        let m = Mirror::new(store.clone(), LONG);
        let mut loops = Loops::default();
        let stats = loops.spawn(store.clone(), m.clone());
        until("the first pass", || m.passes() == 1).await;
        assert_eq!(m.last(), Some(None));
        put(store.as_ref(), "wanted", 7);
        until("a pass after the change", || m.last() == Some(Some(7))).await;
        assert_eq!(stats.passes.load(Ordering::Relaxed) as usize, m.passes());
        assert_eq!(stats.failures.load(Ordering::Relaxed), 0);
    }

    #[tokio::test]
    async fn a_loop_told_so_waits_for_the_first_change() {
        let store: Arc<dyn Store> = Arc::new(MemStore::default());
        let m = Arc::new(Mirror {
            at_start: false,
            ..Arc::into_inner(Mirror::new(store.clone(), LONG)).unwrap()
        });
        let mut loops = Loops::default();
        loops.spawn(store.clone(), m.clone());
        tokio::time::sleep(COALESCE * 4).await;
        assert_eq!(m.passes(), 0, "a pass ran at start");
        put(store.as_ref(), "wanted", 5);
        until("a pass after the change", || m.last() == Some(Some(5))).await;
        assert_eq!(m.passes(), 1);
    }

    #[tokio::test]
    async fn a_change_between_an_outside_pass_and_the_watch_wakes_a_pass() {
        let store: Arc<dyn Store> = Arc::new(MemStore::default());
        let m = Arc::new(Mirror {
            at_start: false,
            ..Arc::into_inner(Mirror::new(store.clone(), LONG)).unwrap()
        });
        // As `Engine::start` does: the revision, then its own pass, then the loop.
        let from = store.revision().unwrap() + 1;
        put(store.as_ref(), "wanted", 9);
        let mut loops = Loops::default();
        loops.spawn_from(store.clone(), m.clone(), from);
        until("a pass for the change made before the loop", || {
            m.last() == Some(Some(9))
        })
        .await;
        assert_eq!(m.passes(), 1);
    }

    #[tokio::test]
    async fn a_change_right_after_spawn_wakes_a_pass() {
        let store: Arc<dyn Store> = Arc::new(MemStore::default());
        let m = Arc::new(Mirror {
            at_start: false,
            ..Arc::into_inner(Mirror::new(store.clone(), LONG)).unwrap()
        });
        let mut loops = Loops::default();
        loops.spawn(store.clone(), m.clone());
        // Before the watch task has had a chance to run.
        put(store.as_ref(), "wanted", 4);
        until("a pass for the change", || m.last() == Some(Some(4))).await;
    }

    #[tokio::test]
    async fn a_compacted_start_revision_is_a_full_pass() {
        let store: Arc<dyn Store> = Arc::new(MemStore::default());
        let m = Arc::new(Mirror {
            at_start: false,
            ..Arc::into_inner(Mirror::new(store.clone(), LONG)).unwrap()
        });
        for v in 0..(pier_store::HISTORY_EVENTS as u64 + 10) {
            put(store.as_ref(), "other", v);
        }
        put(store.as_ref(), "wanted", 3);
        let mut loops = Loops::default();
        loops.spawn_from(store.clone(), m.clone(), 1);
        until("a full pass", || m.last() == Some(Some(3))).await;
    }

    #[tokio::test]
    async fn changes_elsewhere_do_not_wake_it() {
        let store: Arc<dyn Store> = Arc::new(MemStore::default());
        let m = Mirror::new(store.clone(), LONG);
        let mut loops = Loops::default();
        loops.spawn(store.clone(), m.clone());
        until("the first pass", || m.passes() == 1).await;
        put(store.as_ref(), "other", 1);
        let mut b = Batch::new();
        b.put_json(Table::Networks, "wanted", &1u64);
        b.commit(store.as_ref()).unwrap();
        tokio::time::sleep(COALESCE * 4).await;
        assert_eq!(m.passes(), 1, "woken by a change it does not watch");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_burst_of_changes_is_coalesced_and_the_last_is_seen() {
        let store: Arc<dyn Store> = Arc::new(MemStore::default());
        let m = Mirror::new(store.clone(), LONG);
        let mut loops = Loops::default();
        loops.spawn(store.clone(), m.clone());
        until("the first pass", || m.passes() == 1).await;
        // 40 changes 5 ms apart: about 4 coalescing windows, where one pass per change
        // would be 40.
        for v in 1..=40 {
            put(store.as_ref(), "wanted", v);
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        until("a pass that saw the last change", || {
            m.last() == Some(Some(40))
        })
        .await;
        tokio::time::sleep(COALESCE * 4).await;
        let passes = m.passes();
        assert!(passes <= 12, "40 changes made {passes} passes");
        assert_eq!(m.last(), Some(Some(40)));
    }

    #[tokio::test]
    async fn without_changes_it_runs_every_period_and_retries_failures() {
        let store: Arc<dyn Store> = Arc::new(MemStore::default());
        let m = Mirror::new(store.clone(), Duration::from_millis(20));
        m.fail.store(true, Ordering::Relaxed);
        let mut loops = Loops::default();
        let stats = loops.spawn(store.clone(), m.clone());
        until("three failed passes", || {
            stats.failures.load(Ordering::Relaxed) >= 3
        })
        .await;
        m.fail.store(false, Ordering::Relaxed);
        let failed = stats.failures.load(Ordering::Relaxed);
        until("a pass after the failures", || {
            stats.passes.load(Ordering::Relaxed) > failed + 1
        })
        .await;
        assert!(stats.failures.load(Ordering::Relaxed) <= failed + 1);
    }

    #[tokio::test]
    async fn dropping_the_loops_stops_them() {
        let store: Arc<dyn Store> = Arc::new(MemStore::default());
        let m = Mirror::new(store.clone(), Duration::from_millis(10));
        let mut loops = Loops::default();
        loops.spawn(store.clone(), m.clone());
        until("two passes", || m.passes() >= 2).await;
        drop(loops);
        tokio::time::sleep(Duration::from_millis(30)).await;
        let after = m.passes();
        put(store.as_ref(), "wanted", 1);
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(m.passes(), after, "a pass ran after the loops were dropped");
    }

    #[tokio::test]
    async fn the_lease_tick_ends_expired_leases() {
        let clock = Arc::new(ManualClock::new());
        let store: Arc<dyn Store> = Arc::new(MemStore::with_clock(clock.clone()));
        let lease = store.grant(Duration::from_secs(10)).unwrap();
        let mut b = Batch::new();
        b.put_json_leased(Table::Meta, "held", &1u64, lease);
        b.commit(store.as_ref()).unwrap();
        let mut loops = Loops::default();
        loops.spawn_lease_tick(store.clone(), Duration::from_millis(10));
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            store.get(Table::Meta, "held").unwrap().is_some(),
            "ended early"
        );
        clock.advance(Duration::from_secs(11));
        let s = store.clone();
        until("the key of the expired lease to go", || {
            s.get(Table::Meta, "held").unwrap().is_none()
        })
        .await;
        assert!(store.keep_alive(lease).is_err(), "the lease still exists");
    }
}
