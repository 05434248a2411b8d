//! The overlay sync of a member: follows the pool's table (one read, then its watch)
//! and runs [`pier_engine::networks::Networks::sync_overlay`] after each change of the
//! pool's networks, address claims or members (changes within [`DEBOUNCE`] of each
//! other make one pass) and every [`PERIOD`] (what drifted in the kernel is put
//! back). A watch that ends (compacted, lagging, the store away) is followed by a new
//! read a second later, so a member that was cut off catches up whole.
//!
//! Stopping it (daemon shutdown) leaves the links and entries as they are: containers
//! keep their network while the daemon is down.

use std::sync::{Arc, Weak};
use std::time::Duration;

use pier_cluster::networks::{OverlayView, TABLE};
use pier_engine::Engine;
use pier_store::{Store, Watcher};

/// How long a pass waits for more changes after one.
pub const DEBOUNCE: Duration = Duration::from_millis(100);

/// How often a pass runs without a change.
pub const PERIOD: Duration = Duration::from_secs(30);

/// The pool's table as of now, and the watch that follows it.
fn follow(store: &dyn Store) -> Result<(OverlayView, Watcher), String> {
    let view = OverlayView::read(store).map_err(|e| pier_api::error::chain(&e))?;
    let watch = store
        .watch(TABLE, "", view.revision + 1)
        .map_err(|e| pier_api::error::chain(&e))?;
    Ok((view, watch))
}

/// Runs until aborted (or the engine is gone); see the module doc.
pub async fn run(engine: Weak<Engine>, store: Arc<dyn Store>) {
    match engine.upgrade() {
        Some(e) => e.networks.set_pool_store(Some(store.clone())),
        None => return,
    }
    let mut logged = false;
    loop {
        let s = store.clone();
        let followed = tokio::task::spawn_blocking(move || follow(s.as_ref())).await;
        let (mut view, mut watch) = match followed {
            Ok(Ok(f)) => {
                logged = false;
                f
            }
            Ok(Err(e)) => {
                if !logged {
                    tracing::warn!(error = %e, "cannot read the pool's networks; retrying");
                    logged = true;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
            Err(_) => return,
        };
        let mut tick = tokio::time::interval(PERIOD);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut dirty = true;
        'watch: loop {
            if dirty {
                dirty = false;
                let Some(e) = engine.upgrade() else { return };
                match e.networks.sync_overlay(&view).await {
                    Ok(r) => tracing::debug!(?r, "overlay sync"),
                    Err(err) => {
                        tracing::warn!(error = %err.message(), "overlay sync: some of the pool's networks are not as the pool says; the next pass tries again")
                    }
                }
            }
            tokio::select! {
                ev = watch.recv() => {
                    let Some(Ok(ev)) = ev else { break 'watch };
                    dirty |= apply(&mut view, &ev);
                    if dirty {
                        // More changes of the same burst make the same pass.
                        tokio::time::sleep(DEBOUNCE).await;
                        while let Some(next) = watch.try_next() {
                            let Ok(ev) = next else { break 'watch };
                            apply(&mut view, &ev);
                        }
                    }
                }
                _ = tick.tick() => dirty = true,
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

fn apply(view: &mut OverlayView, ev: &pier_store::Event) -> bool {
    view.apply(ev).unwrap_or_else(|e| {
        tracing::warn!(error = %pier_api::error::chain(&e), "a record of the pool's networks does not read; left out");
        false
    })
}
