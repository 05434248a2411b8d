//! The host agent: realises the assignments that name this host (creates their instances
//! here, with the assignment's ID) and reports each outcome at `placed/PROJECT/ID`
//! ([`Placed`]), which the member that took the request waits for.
//!
//! The agent is written over `&dyn Store` and a [`Realiser`] (what "create this instance
//! here" and "does it exist here" mean on the host), so that it is tested without a
//! daemon. The daemon feeds it: [`Agent::sweep`] at start and after its watch of
//! `assignments/` ends, then [`Agent::on_event`] for each watch event.
//!
//! Each assignment is realised once: one with a result is done; one whose instance exists
//! here already (created before a crash, the result not written) only gets its result.
//! The result is written only while the assignment is still the one realised (a compare
//! on its mod revision): if it was released meanwhile (the requester gave up), the
//! instance just made is discarded.
//!
//! Moves ([`crate::scheduler::Scheduler::relocate`]): the new host's agent realises the
//! moved assignment like any other (same ID, same create request) and starts the
//! instance when the assignment says `start`. The old host's agent fences: an instance
//! here whose assignment was moved to another host is removed (on the move's event, and
//! by every sweep, so a host that comes back after it was declared down removes its old
//! copy before anything else runs it beside the new one).

use std::collections::HashSet;

use pier_store::{Compare, Event, Expect, Op, Revision, Store, StoreError, Txn};
use serde::{Deserialize, Serialize};

use crate::scheduler::{keys, Assignment};

/// Why an instance could not be made: an error kind of the API (`not_found`,
/// `invalid_input`, ...) and its message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Failure {
    pub kind: String,
    pub message: String,
}

impl Failure {
    pub fn new(kind: impl Into<String>, message: impl Into<String>) -> Self {
        Failure {
            kind: kind.into(),
            message: message.into(),
        }
    }
}

/// The outcome of an assignment, at [`keys::placed`]: written by the chosen host's agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Placed {
    /// The host that realised it.
    pub host: String,
    /// None: the instance exists on `host`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<Failure>,
}

/// What the agent does on its host.
pub trait Realiser {
    /// Creates the instance of `a` here, with `a.id`, from `a.spec`, and starts it when
    /// `a.start` (a moved instance that was running).
    fn realise(&self, a: &Assignment) -> Result<(), Failure>;
    /// Whether the instance `project/id` exists here.
    fn exists(&self, project: &str, id: &str) -> Result<bool, Failure>;
    /// Removes an instance here (best effort, forced): one made for an assignment that
    /// was released before its result was written, or the old copy of an instance moved
    /// to another host (fencing).
    fn discard(&self, project: &str, id: &str);
}

/// Why the agent stopped.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("record {key} of the pool is corrupt; rewrite or delete it")]
    Corrupt {
        key: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("the state store failed")]
    Store(#[from] StoreError),
}

/// What a sweep found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Sweep {
    /// The revision the assignments were read at: watch `assignments/` from the next.
    pub revision: Revision,
    /// Instances (`project/id`) realised here whose instance is gone (removed while the
    /// agent was not watching): their assignments are to be released.
    pub gone: Vec<String>,
    /// Instances (`project/id`) whose old copy here was removed: their assignments name
    /// another host (moved while this host was away).
    pub fenced: Vec<String>,
}

/// The agent of one host; see the module doc.
pub struct Agent {
    host: String,
    /// Instances whose outcome this agent wrote, so that a repeated event is skipped
    /// without reading the store.
    done: HashSet<String>,
}

fn decode<T: serde::de::DeserializeOwned>(key: &str, bytes: &[u8]) -> Result<T, AgentError> {
    serde_json::from_slice(bytes).map_err(|source| AgentError::Corrupt {
        key: key.to_string(),
        source,
    })
}

impl Agent {
    pub fn new(host: &str) -> Self {
        Agent {
            host: host.to_string(),
            done: HashSet::new(),
        }
    }

    /// Realises every assignment of this host that has no outcome yet, and finds those
    /// realised here whose instance is gone.
    pub fn sweep(&mut self, store: &dyn Store, r: &dyn Realiser) -> Result<Sweep, AgentError> {
        let listing = store.range(keys::TABLE, keys::ASSIGNMENTS)?;
        let mut sweep = Sweep {
            revision: listing.revision,
            ..Default::default()
        };
        for (key, kv) in &listing.kvs {
            let a: Assignment = decode(key, &kv.value)?;
            let instance = format!("{}/{}", a.project, a.id);
            if a.host != self.host {
                if self.fence(r, &a) {
                    sweep.fenced.push(instance);
                }
                continue;
            }
            let placed = store.get(keys::TABLE, &keys::placed(&instance))?;
            match placed {
                Some(bytes) => {
                    let p: Placed = decode(&keys::placed(&instance), &bytes)?;
                    let here = p.host == self.host && p.error.is_none();
                    if here && matches!(r.exists(&a.project, &a.id), Ok(false)) {
                        sweep.gone.push(instance);
                    }
                }
                None => self.realise(store, r, &a, kv.mod_revision)?,
            }
        }
        Ok(sweep)
    }

    /// Takes in one event of the watch of `assignments/`: realises a new assignment of
    /// this host.
    pub fn on_event(
        &mut self,
        store: &dyn Store,
        r: &dyn Realiser,
        event: &Event,
    ) -> Result<(), AgentError> {
        let Event::Put { key, kv, .. } = event else {
            if let Some(instance) = event.key().strip_prefix(keys::ASSIGNMENTS) {
                self.done.remove(instance);
            }
            return Ok(());
        };
        if event.table() != keys::TABLE || !key.starts_with(keys::ASSIGNMENTS) {
            return Ok(());
        }
        let a: Assignment = decode(key, &kv.value)?;
        let instance = format!("{}/{}", a.project, a.id);
        if a.host != self.host {
            // Moved away (or never here): realised anew if it ever comes back.
            self.done.remove(&instance);
            self.fence(r, &a);
            return Ok(());
        }
        if self.done.contains(&instance)
            || store
                .get_kv(keys::TABLE, &keys::placed(&instance))?
                .is_some()
        {
            return Ok(());
        }
        self.realise(store, r, &a, kv.mod_revision)
    }

    /// Removes this host's copy of `a`'s instance if `a` was moved and names another
    /// host; whether it did.
    fn fence(&mut self, r: &dyn Realiser, a: &Assignment) -> bool {
        if a.host == self.host || a.moved_from.is_none() {
            return false;
        }
        if !matches!(r.exists(&a.project, &a.id), Ok(true)) {
            return false;
        }
        tracing::warn!(instance = %format!("{}/{}", a.project, a.id), to = %a.host, "this instance was moved to another host; removing the copy here");
        r.discard(&a.project, &a.id);
        true
    }

    /// Realises `a` (unless its instance exists already) and writes the outcome while the
    /// assignment is still at `revision`.
    fn realise(
        &mut self,
        store: &dyn Store,
        r: &dyn Realiser,
        a: &Assignment,
        revision: Revision,
    ) -> Result<(), AgentError> {
        let instance = format!("{}/{}", a.project, a.id);
        let (made, error) = match r.exists(&a.project, &a.id) {
            // Made before a crash, its result never written.
            Ok(true) => (true, None),
            Ok(false) => match r.realise(a) {
                Ok(()) => (true, None),
                Err(f) => (false, Some(f)),
            },
            Err(f) => (false, Some(f)),
        };
        if let Some(f) = &error {
            tracing::warn!(instance = %instance, kind = %f.kind, error = %f.message, "cannot create an instance placed on this host");
        }
        let placed = Placed {
            host: self.host.clone(),
            error,
        };
        let txn = Txn {
            compares: vec![Compare {
                table: keys::TABLE,
                key: keys::assignment(&instance),
                expect: Expect::ModRevision(revision),
            }],
            ops: vec![Op::Put {
                table: keys::TABLE,
                key: keys::placed(&instance),
                value: serde_json::to_vec(&placed).expect("results serialize to JSON"),
            }],
        };
        match store.txn(txn, true) {
            Ok(_) => {
                self.done.insert(instance);
                Ok(())
            }
            Err(StoreError::Conflict { .. }) => {
                // Released (or placed anew) while it was being made: not ours to keep.
                if made {
                    tracing::info!(instance = %instance, "the placement was released while its instance was made; removing it");
                    r.discard(&a.project, &a.id);
                }
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests;
