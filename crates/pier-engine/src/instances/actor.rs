//! One actor task per instance. It serves a bounded queue of typed requests ([`Op`]), one
//! at a time, so that the operations that change an instance (start, stop, exit,
//! restart, remove, network changes) never interleave; and it keeps the instance's latest
//! state for those that wait on it. A request that finds the queue full is answered
//! [`EngineError::Busy`] (503) at once, not queued without bound; the engine's own
//! requests (an exit, a restart after its back-off, a reconcile) wait for room instead,
//! so that none is lost.
//!
//! The actor runs each operation to its end in a task of its own ([`Handler`], the
//! engine's instances): a client that goes away mid-start does not leave a start half
//! made, and a panic answers that request with an error without ending the actor.
//!
//! One request lends the instance instead ([`Actors::hold`]): copies into and out of an
//! instance stream an archive between the client and its files, so they run in the
//! request's own thread while the actor waits for the [`Hold`] to drop.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use pier_api::containers::{ContainerInspect, ContainerState};
use pier_api::networks::NetworkConnect;
use pier_api::ProjectName;
use tokio::sync::{mpsc, oneshot, watch};

use crate::error::{EngineError, EngineResult};
use crate::instances::driver::ExitInfo;
use crate::reconcile::BoxFuture;

/// How many requests may wait for one instance.
pub const QUEUE: usize = 16;

/// What an instance's actor is asked to do.
#[derive(Debug)]
pub enum Op {
    /// Start it (a user's request: its desired state becomes running).
    Start,
    /// Send the stop signal (`signal`, a number), recording that it is to stay stopped.
    /// Waiting for the exit is the asker's: the exit is a request of its own.
    Stop {
        signal: i32,
    },
    /// Send `signal`; SIGKILL and SIGTERM record that it is to stay stopped.
    Kill {
        signal: i32,
    },
    /// Send `signal` and nothing more (a stop's escalation to SIGKILL).
    Signal {
        signal: i32,
    },
    /// Remove it; with `volumes`, its anonymous volumes too. One that runs is refused,
    /// or with `force` killed (its asker asks again once it exited).
    Remove {
        volumes: bool,
        force: bool,
    },
    /// Its run ended (`None`: ask the driver how).
    Exited(Option<ExitInfo>),
    /// Start it again after its restart policy's back-off.
    Restart,
    Pause(bool),
    Connect {
        network: String,
        req: NetworkConnect,
    },
    Disconnect {
        network: String,
    },
    Rename(String),
    /// Change its limits and restart policy: in its spec, and in its cgroup while it runs.
    Update(Box<pier_api::containers::ContainerUpdate>),
    /// Act on a desired state not acted on yet (the instance reconciler's).
    Reconcile,
}

impl Op {
    /// Whether the engine asks it (it waits for room) rather than a client.
    fn own(&self) -> bool {
        matches!(self, Op::Exited(_) | Op::Restart | Op::Reconcile)
    }
}

/// What serves the actors' requests: the engine's instances.
pub trait Handler: Send + Sync + 'static {
    /// Serves `op` on instance `id` of `project`; what it returns is the instance after.
    fn handle(
        self: Arc<Self>,
        project: ProjectName,
        id: String,
        op: Op,
    ) -> BoxFuture<'static, EngineResult<Option<ContainerInspect>>>;
}

type Reply = oneshot::Sender<EngineResult<Option<ContainerInspect>>>;

/// A request in an actor's queue.
enum Msg {
    Op {
        project: ProjectName,
        op: Op,
        reply: Reply,
    },
    /// Lend the instance until `done` drops.
    Hold {
        granted: oneshot::Sender<()>,
        done: oneshot::Receiver<()>,
    },
}

/// What reaches an instance's actor, and what follows its state.
struct Actor {
    requests: mpsc::Sender<Msg>,
    state: watch::Sender<ContainerState>,
    /// Whether `state` was told (by a follower's record or a publish): an actor a
    /// request started does not know its instance's state yet.
    known: bool,
}

/// The instances' actors, by instance ID.
pub struct Actors {
    actors: Mutex<HashMap<String, Actor>>,
    handler: Weak<dyn Handler>,
}

/// The instance lent to its holder ([`Actors::hold`]) until this drops.
pub struct Hold {
    _done: oneshot::Sender<()>,
}

/// Whether a request may wait for room in a full queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Queue {
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

/// Serves one actor's queue until every sender is gone.
async fn serve(id: String, handler: Weak<dyn Handler>, mut rx: mpsc::Receiver<Msg>) {
    while let Some(msg) = rx.recv().await {
        match msg {
            Msg::Hold { granted, done } => {
                if granted.send(()).is_ok() {
                    let _ = done.await;
                }
            }
            Msg::Op { project, op, reply } => {
                let Some(h) = handler.upgrade() else {
                    let _ = reply.send(Err(gone(&id)));
                    continue;
                };
                let what = format!("{op:?}");
                let r = tokio::spawn(h.handle(project, id.clone(), op)).await;
                let r = r.unwrap_or_else(|e| {
                    tracing::error!(container = %id, op = %what, error = %e, "an instance operation panicked");
                    Err(EngineError::Internal(format!(
                        "the operation {what} on container {id} failed: {e}"
                    )))
                });
                let _ = reply.send(r);
            }
        }
    }
}

impl Actors {
    /// Actors whose requests `handler` serves.
    pub fn new(handler: Weak<dyn Handler>) -> Self {
        Actors {
            actors: Mutex::default(),
            handler,
        }
    }

    /// The sender of `id`'s actor, started if it has none (with `state`, when given, as its
    /// state).
    fn sender(&self, id: &str, state: Option<&ContainerState>) -> mpsc::Sender<Msg> {
        let mut actors = self.actors.lock().unwrap();
        let a = actors.entry(id.to_string()).or_insert_with(|| {
            let (tx, rx) = mpsc::channel::<Msg>(QUEUE);
            tokio::spawn(serve(id.to_string(), self.handler.clone(), rx));
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

    async fn send(&self, id: &str, msg: Msg, queue: Queue) -> EngineResult<()> {
        let tx = self.sender(id, None);
        match queue {
            Queue::Try => tx.try_send(msg).map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => busy(id),
                mpsc::error::TrySendError::Closed(_) => gone(id),
            }),
            Queue::Wait => tx.send(msg).await.map_err(|_| gone(id)),
        }
    }

    /// Asks instance `id`'s actor to do `op`, and waits for it to be done. A client's
    /// request finds a full queue busy; the engine's own waits for room.
    pub async fn ask(
        &self,
        project: &ProjectName,
        id: &str,
        op: Op,
    ) -> EngineResult<Option<ContainerInspect>> {
        let queue = if op.own() { Queue::Wait } else { Queue::Try };
        let (reply, answer) = oneshot::channel();
        let msg = Msg::Op {
            project: project.clone(),
            op,
            reply,
        };
        self.send(id, msg, queue).await?;
        answer.await.map_err(|_| gone(id))?
    }

    /// Borrows instance `id` from its actor until the [`Hold`] drops (for the copies,
    /// which stream in the request's thread).
    pub async fn hold(&self, id: &str) -> EngineResult<Hold> {
        let (granted, granted_rx) = oneshot::channel();
        let (done_tx, done) = oneshot::channel();
        self.send(id, Msg::Hold { granted, done }, Queue::Try)
            .await?;
        granted_rx.await.map_err(|_| gone(id))?;
        Ok(Hold { _done: done_tx })
    }

    /// Follows instance `id`'s state (from `current` if its actor was not told one yet:
    /// one a request started, for an instance adopted at daemon start, knows none).
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
    /// requests queued have been served.
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
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use pier_api::containers::ContainerStatus;

    use super::*;

    /// Counts what it serves; `Start` takes 50 ms, `Restart` panics.
    #[derive(Default)]
    struct Counting {
        served: AtomicUsize,
        running: AtomicUsize,
    }

    impl Handler for Counting {
        fn handle(
            self: Arc<Self>,
            _: ProjectName,
            _: String,
            op: Op,
        ) -> BoxFuture<'static, EngineResult<Option<ContainerInspect>>> {
            Box::pin(async move {
                assert_eq!(
                    self.running.fetch_add(1, Ordering::SeqCst),
                    0,
                    "one at a time"
                );
                if matches!(op, Op::Start) {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                self.running.fetch_sub(1, Ordering::SeqCst);
                if matches!(op, Op::Restart) {
                    panic!("boom");
                }
                self.served.fetch_add(1, Ordering::SeqCst);
                Ok(None)
            })
        }
    }

    fn actors(h: &Arc<Counting>) -> Arc<Actors> {
        let weak: Weak<dyn Handler> = Arc::downgrade(h) as Weak<dyn Handler>;
        Arc::new(Actors::new(weak))
    }

    #[tokio::test]
    async fn an_actor_a_request_started_takes_its_followers_state() {
        let h = Arc::new(Counting::default());
        let actors = actors(&h);
        let p = ProjectName::default_project();
        // A request first (an instance adopted at daemon start, then killed): the actor
        // knows no state, so a follower must see the record's, not a default "created".
        actors.ask(&p, "c1", Op::Pause(true)).await.unwrap();
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

    #[tokio::test]
    async fn an_operation_ends_when_its_asker_goes_away() {
        let h = Arc::new(Counting::default());
        let actors = actors(&h);
        let p = ProjectName::default_project();
        // The asker gives up after 5 ms; the start (50 ms) still completes.
        let r =
            tokio::time::timeout(Duration::from_millis(5), actors.ask(&p, "c1", Op::Start)).await;
        assert!(r.is_err());
        actors.ask(&p, "c1", Op::Pause(false)).await.unwrap();
        assert_eq!(h.served.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_panic_answers_an_error_and_the_actor_serves_on() {
        let h = Arc::new(Counting::default());
        let actors = actors(&h);
        let p = ProjectName::default_project();
        let e = actors.ask(&p, "c1", Op::Restart).await.unwrap_err();
        assert!(e.message().contains("Restart"), "{}", e.message());
        actors.ask(&p, "c1", Op::Start).await.unwrap();
        assert_eq!(h.served.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_full_queue_answers_busy_and_a_hold_blocks_the_operations() {
        let h = Arc::new(Counting::default());
        let actors = actors(&h);
        let p = ProjectName::default_project();
        let hold = actors.hold("c1").await.unwrap();
        let mut waiting = Vec::new();
        for _ in 0..QUEUE {
            let (a, p) = (actors.clone(), p.clone());
            waiting.push(tokio::spawn(
                async move { a.ask(&p, "c1", Op::Start).await },
            ));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        let e = actors.ask(&p, "c1", Op::Start).await.unwrap_err();
        assert!(matches!(e, EngineError::Busy(_)), "{e:?}");
        assert_eq!(h.served.load(Ordering::SeqCst), 0, "held: nothing served");
        drop(hold);
        for w in waiting {
            w.await.unwrap().unwrap();
        }
        assert_eq!(h.served.load(Ordering::SeqCst), QUEUE);
    }
}
