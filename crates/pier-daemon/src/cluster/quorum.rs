//! Whether this member reaches a majority of the pool's store, and what it does when it
//! does not (a network split that leaves it on the minority side, or a pool that lost
//! most of its etcd members).
//!
//! The answer is etcd's alone: [`pier_store::EtcdStore::probe_quorum`] asks each etcd
//! member for a linearizable read, which only a member in touch with a leader that still
//! leads a majority can serve. No member serving it within [`PROBE_WITHIN`] means this
//! host is cut off: the calls that change or read the pool ([`Cluster::pool_store`]:
//! placements through either API, `pier host ...`, join tokens) are refused at once with
//! a 503 that names the etcd members it cannot reach and says what still works, instead
//! of waiting for etcd's request timeout or a placement's. A task of the member probes
//! every [`PROBE_EVERY`] ([`Health`]): `pier info` says the host is cut off, the
//! listings show this host's instances alone without waiting for the store, and the
//! daemon's log says when it is cut off and when it is back. Instances running here keep
//! running, and the operations on them that do not need the pool keep working.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pier_api::ErrorKind;
use pier_store::{MemberAnswer, QuorumLost, Store};

use super::{Cluster, Member};
use crate::error::ApiError;

/// How long a probe waits for a member in touch with a majority (longer than etcd's
/// election of a new leader after one is lost, about two election timeouts).
pub const PROBE_WITHIN: Duration = Duration::from_secs(3);

/// How often the member's task probes.
const PROBE_EVERY: Duration = Duration::from_secs(2);

/// How long the task's last answer stands for the present.
const FRESH: Duration = Duration::from_secs(8);

/// The last answer of a probe, and when it came.
#[derive(Default)]
pub(super) struct Health {
    last: Mutex<Option<(Instant, Option<String>)>>,
    /// The etcd members' names by client URL (from etcd's member list).
    names: Mutex<HashMap<String, String>>,
}

impl Health {
    /// Keeps a probe's answer (`Some(why)`: cut off), logging a change.
    fn set(&self, cut_off: Option<String>) {
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        let was = last.as_ref().and_then(|(_, c)| c.clone());
        match (&was, &cut_off) {
            (None, Some(why)) => {
                tracing::warn!(reason = %why, "this host is cut off from the pool's store: it places nothing until it is back");
            }
            (Some(_), None) => tracing::info!("this host reaches the pool's store again"),
            _ => {}
        }
        *last = Some((Instant::now(), cut_off));
    }

    /// Why this host is cut off from the pool's store, as the last probe (a fresh one)
    /// found; None when it is not or no probe is fresh.
    pub(super) fn cut_off(&self) -> Option<String> {
        let last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        match last.as_ref() {
            Some((at, Some(why))) if at.elapsed() < FRESH => Some(why.clone()),
            _ => None,
        }
    }

    /// Takes the etcd members' names (client URL to name).
    pub(super) fn name_members(&self, members: &[pier_store::EtcdMember]) {
        let mut names = self.names.lock().unwrap_or_else(|e| e.into_inner());
        for m in members.iter().filter(|m| !m.name.is_empty()) {
            for url in &m.client_urls {
                names.insert(url.clone(), m.name.clone());
            }
        }
    }

    /// What the members answered, in words, each named by its host when known.
    fn describe(&self, lost: &QuorumLost) -> String {
        let names = self.names.lock().unwrap_or_else(|e| e.into_inner());
        let name = |url: &String| names.get(url).cloned().unwrap_or_else(|| url.clone());
        let (mut silent, mut leaderless, mut failed) = (Vec::new(), Vec::new(), Vec::new());
        for (url, answer) in &lost.members {
            match answer {
                MemberAnswer::NoAnswer => silent.push(name(url)),
                MemberAnswer::NoLeader => leaderless.push(name(url)),
                MemberAnswer::Failed(m) => failed.push(format!("{} refused: {m}", name(url))),
            }
        }
        let members = |v: &[String]| {
            format!(
                "etcd member{} {}",
                if v.len() == 1 { "" } else { "s" },
                v.join(", ")
            )
        };
        let mut parts = Vec::new();
        if !silent.is_empty() {
            parts.push(format!(
                "{} unreachable (no answer within {} s)",
                members(&silent),
                PROBE_WITHIN.as_secs()
            ));
        }
        if !leaderless.is_empty() {
            parts.push(format!(
                "{} reachable but without a leader (cut off from the majority too)",
                members(&leaderless)
            ));
        }
        parts.extend(failed);
        if parts.is_empty() {
            return "this host has no etcd member to ask".into();
        }
        parts.join("; ")
    }
}

/// The refusal of `what` on a host cut off from the pool's store (`why`: how the etcd
/// members answered).
pub(super) fn cut_off_error(what: &str, why: &str) -> ApiError {
    ApiError::new(
        ErrorKind::Unavailable,
        format!(
            "{what}: this host cannot reach a majority of the pool's store ({why}): it is cut off from the pool and places nothing, nor changes anything in the pool, until it is back; instances already running here keep running. Check the network between this host and the pool's other hosts, or ask a host on the other side; `pier info` says when this one is back"
        ),
    )
}

impl Member {
    /// Probes the pool's store (blocking, up to [`PROBE_WITHIN`]); keeps the answer. Err:
    /// why this host is cut off. A pool whose store is not etcd has nothing to probe.
    fn probe(&self) -> Result<(), String> {
        let Some(etcd) = self.etcd_client.get() else {
            return Ok(());
        };
        let r = etcd
            .probe_quorum(PROBE_WITHIN)
            .map(drop)
            .map_err(|lost| self.health.describe(&lost));
        self.health.set(r.clone().err());
        r
    }
}

impl Cluster {
    /// The pool's store, once a fresh probe found a majority of it reachable; else the
    /// refusal of `what` saying why (see the module doc).
    pub(super) async fn pool_store(
        &self,
        m: &Arc<Member>,
        what: &str,
    ) -> Result<Arc<dyn Store>, ApiError> {
        let store = m.store()?;
        let m2 = m.clone();
        match tokio::task::spawn_blocking(move || m2.probe()).await? {
            Ok(()) => Ok(store),
            Err(why) => Err(cut_off_error(what, &why)),
        }
    }

    /// The member's task probing the pool's store every [`PROBE_EVERY`].
    pub(super) fn start_quorum_watch(&self, m: &Arc<Member>) {
        if m.etcd_client.get().is_none() {
            return;
        }
        let m2 = m.clone();
        let task = tokio::spawn(async move {
            loop {
                let m3 = m2.clone();
                let _ = tokio::task::spawn_blocking(move || m3.probe()).await;
                tokio::time::sleep(PROBE_EVERY).await;
            }
        });
        m.tasks.lock().unwrap_or_else(|e| e.into_inner()).push(task);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lost_quorum_is_told_by_host_names() {
        let h = Health::default();
        let url = |n: u8| format!("https://10.0.0.{n}:2379");
        h.name_members(&[
            pier_store::EtcdMember {
                id: 1,
                name: "h1".into(),
                peer_urls: vec![],
                client_urls: vec![url(1)],
                learner: false,
            },
            pier_store::EtcdMember {
                id: 2,
                name: "h2".into(),
                peer_urls: vec![],
                client_urls: vec![url(2)],
                learner: false,
            },
        ]);
        let lost = QuorumLost {
            members: vec![
                (url(1), MemberAnswer::NoLeader),
                (url(2), MemberAnswer::NoAnswer),
                (url(3), MemberAnswer::NoAnswer),
            ],
        };
        let why = h.describe(&lost);
        assert_eq!(
            why,
            format!("etcd members h2, {} unreachable (no answer within 3 s); etcd member h1 reachable but without a leader (cut off from the majority too)", url(3))
        );
        let e = cut_off_error("cannot place the instance", &why);
        assert_eq!(e.kind, ErrorKind::Unavailable);
        assert!(e.message.starts_with("cannot place the instance: this host cannot reach a majority of the pool's store (etcd members h2"), "{}", e.message);
        assert!(e
            .message
            .contains("instances already running here keep running"));
        // Cut off, then back: the state follows the last probe.
        assert_eq!(h.cut_off(), None);
        h.set(Some(why.clone()));
        assert_eq!(h.cut_off(), Some(why));
        h.set(None);
        assert_eq!(h.cut_off(), None);
    }
}
