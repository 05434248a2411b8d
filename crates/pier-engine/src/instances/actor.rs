//! One actor task per instance: it serves a bounded queue of turns, one at a time, so
//! that the operations that change an instance (start, exit, restart, remove, network
//! changes, copies into it) never interleave; and it keeps the instance's latest state for
//! those that wait on it. A request that finds the queue full is answered
//! [`EngineError::Busy`] (503) at once, not queued without bound; the engine's own
//! requests (an exit, a restart after its back-off) wait for room instead, so that none
//! is lost.
//!
//! A turn is taken with [`Actors::turn`] and lasts until its [`Turn`] drops: the
//! request's code runs in the caller's task while the actor waits for it, which keeps the
//! operations' code as it is (and their cancellation safe: a dropped request ends its
//! turn).

use std::collections::HashMap;
use std::sync::Mutex;

use pier_api::containers::ContainerState;
use tokio::sync::{mpsc, oneshot, watch};

use crate::error::{EngineError, EngineResult};

/// How many requests may wait for one instance.
pub const QUEUE: usize = 16;

/// What the actor runs: it grants the turn, then waits for its end.
struct Request {
    granted: oneshot::Sender<()>,
    done: oneshot::Receiver<()>,
}

/// What reaches an instance's actor, and what follows its state.
struct Actor {
    requests: mpsc::Sender<Request>,
    state: watch::Sender<ContainerState>,
    /// Whether `state` was told (by a follower's record or a publish): an actor a turn
    /// started does not know its instance's state yet.
    known: bool,
}

/// The instances' actors, by instance ID.
#[derive(Default)]
pub struct Actors {
    actors: Mutex<HashMap<String, Actor>>,
}

/// A turn on an instance: the holder alone changes it until this drops.
pub struct Turn {
    _done: oneshot::Sender<()>,
}

/// Whether a request may wait for room in a full queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Queue {
    /// A client's request: a full queue answers busy.
    Try,
    /// The engine's own (an exit, a restart): it waits for room.
    Wait,
}

fn busy(id: &str) -> EngineError {
    EngineError::Busy(format!(
        "container {} has {QUEUE} requests waiting already; retry shortly",
        &id[..id.len().min(12)]
    ))
}

fn gone(id: &str) -> EngineError {
    EngineError::NotFound(format!("no such container: {id}"))
}

impl Actors {
    /// The sender of `id`'s actor, started if it has none (with `state`, when given, as its
    /// state).
    fn sender(&self, id: &str, state: Option<&ContainerState>) -> mpsc::Sender<Request> {
        let mut actors = self.actors.lock().unwrap();
        let a = actors.entry(id.to_string()).or_insert_with(|| {
            let (tx, mut rx) = mpsc::channel::<Request>(QUEUE);
            tokio::spawn(async move {
                while let Some(r) = rx.recv().await {
                    if r.granted.send(()).is_ok() {
                        let _ = r.done.await;
                    }
                }
            });
            Actor {
                requests: tx,
                state: watch::channel(state.cloned().unwrap_or_default()).0,
                known: state.is_some(),
            }
        });
        if let (Some(s), false) = (state, a.known) {
            a.state.send_replace(s.clone());
            a.known = true;
        }
        a.requests.clone()
    }

    /// Waits for a turn on instance `id` (see [`Queue`]).
    pub async fn turn(&self, id: &str, queue: Queue) -> EngineResult<Turn> {
        let tx = self.sender(id, None);
        let (granted, granted_rx) = oneshot::channel();
        let (done_tx, done) = oneshot::channel();
        let r = Request { granted, done };
        match queue {
            Queue::Try => tx.try_send(r).map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => busy(id),
                mpsc::error::TrySendError::Closed(_) => gone(id),
            })?,
            Queue::Wait => tx.send(r).await.map_err(|_| gone(id))?,
        }
        granted_rx.await.map_err(|_| gone(id))?;
        Ok(Turn { _done: done_tx })
    }

    /// Follows instance `id`'s state (from `current` if its actor was not told one yet:
    /// one a turn started, for an instance adopted at daemon start, knows none).
    pub fn watch(&self, id: &str, current: &ContainerState) -> watch::Receiver<ContainerState> {
        self.sender(id, Some(current));
        let actors = self.actors.lock().unwrap();
        actors[id].state.subscribe()
    }

    /// Tells those following instance `id` its new state.
    pub fn publish(&self, id: &str, state: &ContainerState) {
        if let Some(a) = self.actors.lock().unwrap().get_mut(id) {
            a.state.send_replace(state.clone());
            a.known = true;
        }
    }

    /// Instance `id` is gone: its followers hear `last` and its actor ends once the
    /// turns queued have been served.
    pub fn forget(&self, id: &str, last: Option<ContainerState>) {
        if let Some(a) = self.actors.lock().unwrap().remove(id) {
            if let Some(s) = last {
                a.state.send_replace(s);
            }
        }
    }

    /// How many instances have an actor (for tests and metrics).
    pub fn len(&self) -> usize {
        self.actors.lock().unwrap().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use pier_api::containers::ContainerStatus;

    use super::*;

    #[tokio::test]
    async fn an_actor_a_turn_started_takes_its_followers_state() {
        let actors = Actors::default();
        // A turn first (an instance adopted at daemon start, then killed): the actor
        // knows no state, so a follower must see the record's, not a default "created".
        drop(actors.turn("c1", Queue::Try).await.unwrap());
        let running = ContainerState {
            status: ContainerStatus::Running,
            ..Default::default()
        };
        let rx = actors.watch("c1", &running);
        assert_eq!(rx.borrow().status, ContainerStatus::Running);
        // Once told, a follower's stale copy does not override it.
        let exited = ContainerState {
            status: ContainerStatus::Exited,
            ..Default::default()
        };
        actors.publish("c1", &exited);
        let rx = actors.watch("c1", &running);
        assert_eq!(rx.borrow().status, ContainerStatus::Exited);
    }
}
