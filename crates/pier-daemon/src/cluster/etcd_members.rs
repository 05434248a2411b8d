//! The etcd members of a pool whose etcd Pier runs (made by `pier cluster init` without
//! `--etcd`): the first three hosts run one each, as k3s does with its embedded etcd.
//!
//! - A host joins etcd through the member it joins ([`admit_member`], on that member): the
//!   member adds it as a learner (a member that follows the log without a vote, so that a
//!   member added but never started costs the pool no quorum). The second host stays a
//!   learner, so that a pool of two keeps working with either host down; when the third
//!   joins, the second is promoted first, then the third is added, and promotes itself once
//!   its etcd runs ([`promote`]): three voting members, any one of which may be lost.
//!   A member added for a join that never started its etcd is removed at the next join
//!   (after a wait, in case that join is still under way).
//! - Every member's store client uses the client URLs of every voting member
//!   ([`sync_endpoints`], at resume and then periodically), kept in `member.json`.
//! - `pier host rm` of a host running an etcd member removes that member from etcd
//!   ([`leave`]), unless it is the last voting one.
//!
//! All blocking (etcd's cluster API through [`EtcdStore`]).

use std::net::IpAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use pier_cluster::admit::EtcdJoin;
use pier_cluster::etcd;
use pier_cluster::member::MemberError;
use pier_store::{EtcdMember, EtcdStore, StoreError};

/// How many etcd members the pool runs at most.
pub const MEMBERS: usize = 3;

/// How long a learner may take to catch up with the leader before its promotion fails.
const PROMOTE_WITHIN: Duration = Duration::from_secs(30);

/// The client URLs of the voting members.
pub fn voters(members: &[EtcdMember]) -> Vec<String> {
    let mut urls: Vec<String> = members
        .iter()
        .filter(|m| !m.learner)
        .flat_map(|m| m.client_urls.iter().cloned())
        .collect();
    urls.sort();
    urls.dedup();
    urls
}

/// Runs a membership change, trying again while etcd calls the cluster unhealthy: it
/// changes members only once the voting members it needs have been connected for a while
/// (5 s), which members just started, promoted or reconnected may not be yet.
fn settled<T>(change: impl Fn() -> Result<T, StoreError>) -> Result<T, StoreError> {
    let deadline = Instant::now() + PROMOTE_WITHIN;
    loop {
        match change() {
            Err(e)
                if Instant::now() < deadline
                    && pier_api::error::chain(&e).contains("unhealthy cluster") =>
            {
                std::thread::sleep(Duration::from_millis(500));
            }
            r => return r,
        }
    }
}

/// Adds a learner whose peers reach it at `peer`. etcd makes a new member's ID from its
/// peer URLs and the current second, so an add within the second a member with the same
/// URL was removed (a host leaving and joining again) gets the removed member's ID, which
/// etcd refuses ("member not found", "ID removed"): tried again in the next second.
fn add_learner(etcd: &EtcdStore, peer: &str) -> Result<EtcdMember, StoreError> {
    for _ in 0..3 {
        match settled(|| etcd.add_member(peer, true)) {
            Err(e)
                if {
                    let c = pier_api::error::chain(&e);
                    c.contains("member not found") || c.contains("ID removed")
                } =>
            {
                let now = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .unwrap_or_default();
                let next = Duration::from_secs(1) - Duration::from_nanos(now.subsec_nanos().into());
                std::thread::sleep(next + Duration::from_millis(50));
            }
            r => return r,
        }
    }
    settled(|| etcd.add_member(peer, true))
}

/// Promotes learner `id`, trying again while etcd says it has not caught up.
pub fn promote(etcd: &EtcdStore, id: u64) -> Result<(), StoreError> {
    let deadline = Instant::now() + PROMOTE_WITHIN;
    loop {
        match etcd.promote_member(id) {
            Ok(()) => return Ok(()),
            Err(e) if Instant::now() >= deadline => return Err(e),
            Err(_) => std::thread::sleep(Duration::from_millis(500)),
        }
    }
}

/// On the member a host joins through: adds host `name` (on `address`) to etcd when the
/// pool has fewer than [`MEMBERS`] members; what it is to start with, and the client URLs
/// of the voting members after the change. `None` when the pool has its etcd members.
pub fn admit_member(
    etcd: &EtcdStore,
    name: &str,
    address: IpAddr,
) -> Result<Option<(EtcdJoin, Vec<String>)>, StoreError> {
    let peer = etcd::peer_url_of(address);
    // A member not started yet (no name) is another host's join under way (its etcd
    // about to start), waited for; or one that never will (a join given up, or lost on its
    // way back): this host's own earlier try at once, another's once the wait is over.
    // It would count, and etcd keeps one learner at a time.
    let deadline = Instant::now() + PROMOTE_WITHIN;
    let members = loop {
        let members = etcd.members()?;
        let unstarted: Vec<&EtcdMember> = members.iter().filter(|m| m.name.is_empty()).collect();
        if unstarted.is_empty() {
            break members;
        }
        let mut waiting = false;
        for stale in unstarted {
            if stale.peer_urls.contains(&peer) || Instant::now() >= deadline {
                tracing::warn!(id = stale.id, peers = ?stale.peer_urls, "removing an etcd member that never started");
                etcd.remove_member(stale.id)?;
            } else {
                waiting = true;
            }
        }
        if waiting {
            std::thread::sleep(Duration::from_millis(500));
        }
    };
    if members.len() >= MEMBERS {
        return Ok(None);
    }
    // The second host's learner gets its vote now that a third member comes.
    for l in members.iter().filter(|m| m.learner) {
        tracing::info!(member = %l.name, "promoting the pool's etcd learner to a voting member");
        promote(etcd, l.id)?;
    }
    let promote = members.len() + 1 == MEMBERS;
    let added = add_learner(etcd, &peer)?;
    let mut cluster: Vec<String> = members
        .iter()
        .filter_map(|m| m.peer_urls.first().map(|p| format!("{}={p}", m.name)))
        .collect();
    cluster.push(format!("{name}={peer}"));
    tracing::info!(host = %name, id = added.id, promote, "added an etcd member for a joining host");
    Ok(Some((
        EtcdJoin {
            member_id: added.id,
            initial_cluster: cluster.join(","),
            client_url: etcd::client_url_of(address),
            promote,
        },
        voters(&members),
    )))
}

/// Makes the client use every voting member's client URL; the members, as etcd lists them.
pub fn sync_endpoints(etcd: &EtcdStore) -> Result<Vec<EtcdMember>, StoreError> {
    let members = etcd.members()?;
    etcd.use_endpoints(&voters(&members))?;
    Ok(members)
}

/// The etcd member of host `name` at `address`, if it has one.
fn member_of<'a>(members: &'a [EtcdMember], name: &str, address: &str) -> Option<&'a EtcdMember> {
    let peer = address
        .parse::<IpAddr>()
        .ok()
        .map(etcd::peer_url_of)
        .unwrap_or_default();
    members
        .iter()
        .find(|m| m.name == name || m.peer_urls.contains(&peer))
}

fn is_last_voter(members: &[EtcdMember], it: &EtcdMember) -> bool {
    !it.learner && members.iter().filter(|m| !m.learner).count() == 1
}

/// Whether host `name` at `address` runs the pool's only voting etcd member (its leave
/// would take the pool's state with it).
pub fn runs_last_voter(etcd: &EtcdStore, name: &str, address: &str) -> Result<bool, MemberError> {
    let members = etcd.members()?;
    Ok(member_of(&members, name, address).is_some_and(|it| is_last_voter(&members, it)))
}

/// `pier host rm` of host `name`, which runs an etcd member: removes that member from
/// etcd. `Ok(false)` when it is the last voting member (the pool's state would go with it).
pub fn leave(etcd: &EtcdStore, name: &str, address: &str) -> Result<bool, MemberError> {
    let members = etcd.members()?;
    let Some(it) = member_of(&members, name, address) else {
        // Not (or no longer) in etcd: nothing to remove.
        return Ok(true);
    };
    if is_last_voter(&members, it) {
        return Ok(false);
    }
    let it = it.clone();
    settled(|| etcd.remove_member(it.id))?;
    tracing::info!(host = %name, id = it.id, "removed the host's etcd member");
    // Its etcd stops: this client stops sending there before the records go.
    let left: Vec<EtcdMember> = members.iter().filter(|m| m.id != it.id).cloned().collect();
    etcd.use_endpoints(&voters(&left))?;
    Ok(true)
}
