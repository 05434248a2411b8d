//! The forwarding state of one VXLAN link made to match what the pool's records ask
//! for: one pass of the overlay sync, for one network on this host. Idempotent, so it
//! runs as often as the pool changes and on a timer (kernel state drifts: a user's
//! `bridge fdb del`, a link made again).
//!
//! What to program comes from the pool's claims (`pier_cluster::networks::desired`):
//! for each endpoint on another host, its MAC tunnelled to that host and pointed at the
//! VXLAN port on the bridge, and its address answered by ARP locally; one flood entry
//! per host with endpoints. [`wanted`] turns that into the link's [`OverlayEntries`],
//! [`sync_link`] adds what is missing and deletes what is not wanted.
//!
//! [`Networks::sync_overlay`] is the whole pass over the pool's view: it mirrors the
//! pool's networks here (and removes mirrors of networks gone from the pool), programs
//! every pool network's link, gives the DNS servers the other hosts' names, releases
//! claims of this host that its journal no longer holds, and rebuilds the firewall if
//! it changed. The daemon runs it on every change of the pool's table and on a timer.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::Ipv4Addr;

use pier_api::networks::{NetworkInspect, NetworkScope};
use pier_cluster::networks::{desired, OverlayView};
use pier_store::{StoreExt, Table};

use super::create::RemoveSaga;
use super::names::RemoteName;
use super::Networks;
use crate::error::EngineResult;
use crate::host::net::{FdbEntry, NetHost, NetResult, OverlayEntries};
use crate::steps;

/// What one [`Networks::sync_overlay`] pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OverlaySync {
    /// Pool networks mirrored here, and mirrors removed.
    pub mirrored: usize,
    pub unmirrored: usize,
    /// Forwarding and neighbour entries added and deleted over all links.
    pub entries: SyncReport,
    /// Claims of this host released because its journal no longer held them.
    pub released: usize,
    /// Addresses of this host's running endpoints claimed again (their claims were gone).
    pub reclaimed: usize,
}

impl Networks {
    /// One pass of the overlay sync over `view` (the pool's table as read and watched
    /// by the caller): see the module doc. Alone against creates, removes and the
    /// reconciler's passes. What fails for one network does not stop the others; the
    /// first failure is returned after the pass (the next pass tries again).
    pub async fn sync_overlay(&self, view: &OverlayView) -> EngineResult<OverlaySync> {
        let _pass = self.host_pass.write().await;
        let mut out = OverlaySync::default();
        let Some(me) = self.identity() else {
            return Ok(out);
        };
        let mut first: Option<crate::EngineError> = None;
        let local = self.db.list_json::<NetworkInspect>(Table::Networks, "")?;
        let have: HashSet<&str> = local.iter().map(|(_, n)| n.id.as_str()).collect();
        // 1. Mirrors: the pool's networks here, and no others.
        for rec in view.networks.values() {
            if have.contains(rec.id()) {
                continue;
            }
            // Removed from the pool after `view` was read (its mirror here with it):
            // not made again.
            if self.pool_has(rec.project(), rec.id()).await != Some(true) {
                continue;
            }
            match self.mirror(rec).await {
                Ok(_) => {
                    tracing::info!(network = %rec.network.name, vni = rec.vni, "pool network mirrored on this host");
                    out.mirrored += 1;
                }
                Err(e) => {
                    tracing::warn!(network = %rec.network.name, error = %e.message(), "cannot have a pool network on this host");
                    first.get_or_insert(e);
                }
            }
        }
        let users: HashSet<String> = self
            .containers()?
            .into_iter()
            .flat_map(|c| c.networks.into_values().map(|e| e.network_id))
            .collect();
        for (_, n) in &local {
            if n.scope != NetworkScope::Pool || view.networks.contains_key(&n.id) {
                continue;
            }
            if users.contains(&n.id) {
                tracing::warn!(network = %n.name, "pool network removed from the pool but still used by containers of this host: kept until they are removed");
                continue;
            }
            // Made after `view` was read (a create, or a mirror on demand, this pass
            // waited for), or the store away: kept; the next pass decides.
            if self.pool_has(n.project.as_str(), &n.id).await != Some(false) {
                continue;
            }
            let mut saga = RemoveSaga {
                nets: self,
                n: n.clone(),
            };
            match steps::run(&mut saga).await {
                Ok(()) => {
                    tracing::info!(network = %n.name, "pool network removed from this host");
                    out.unmirrored += 1;
                }
                Err(f) => {
                    tracing::warn!(network = %n.name, error = %f.error.message(), "cannot remove a pool network's mirror");
                    first.get_or_insert(f.error);
                }
            }
        }
        // 2. Each link's entries; 3. the other hosts' names.
        let pool_nets: Vec<NetworkInspect> = self
            .db
            .list_json::<NetworkInspect>(Table::Networks, "")?
            .into_iter()
            .map(|(_, n)| n)
            .filter(|n| n.scope == NetworkScope::Pool && view.networks.contains_key(&n.id))
            .collect();
        let mut remote: HashMap<String, Vec<RemoteName>> = HashMap::new();
        for n in &pool_nets {
            let d = desired(view, &n.id, &me.host);
            if !d.skipped.is_empty() {
                tracing::warn!(network = %n.name, skipped = ?d.skipped, "endpoints of hosts with no usable pool address get no tunnel");
            }
            if let Some(vx) = self.vxlan_of(n) {
                let want = wanted(d.flood, d.fdb, d.neigh);
                let mut r = sync_link(self.host.as_ref(), &vx.name, &want).await;
                if matches!(r, Err(pier_net::Error::LinkMissing { .. })) {
                    // Deleted by someone (or its bridge): made again, then programmed.
                    if let Err(e) = self.realize(n).await {
                        first.get_or_insert(e);
                    }
                    r = sync_link(self.host.as_ref(), &vx.name, &want).await;
                }
                match r {
                    Ok(rep) => {
                        out.entries.added += rep.added;
                        out.entries.deleted += rep.deleted;
                    }
                    Err(e) => {
                        tracing::warn!(network = %n.name, error = %e.chain(), "cannot program a pool network's VXLAN link");
                        first.get_or_insert(super::net_err(e));
                    }
                }
            }
            let names = view
                .leases_of(&n.id)
                .filter(|(_, l)| l.host != me.host)
                .map(|(ip, l)| RemoteName {
                    ip,
                    lease: l.clone(),
                })
                .collect();
            remote.insert(n.id.clone(), names);
        }
        self.set_remote_names(remote);
        // 4. Claims left behind; the firewall (a mirror made or removed changes it).
        match self.repair_pool_claims(view).await {
            Ok((released, reclaimed)) => (out.released, out.reclaimed) = (released, reclaimed),
            Err(e) => {
                first.get_or_insert(e);
            }
        }
        self.rebuild_firewall(false)?;
        first.map_or(Ok(out), Err)
    }
}

/// The entries a VXLAN link should have: a flood entry per host in `flood`, and for
/// each remote endpoint (its MAC and its host's address in `fdb`) its tunnel entry and
/// its bridge entry, and each address in `neigh` answered with its MAC.
pub fn wanted(
    flood: impl IntoIterator<Item = Ipv4Addr>,
    fdb: impl IntoIterator<Item = ([u8; 6], Ipv4Addr)>,
    neigh: impl IntoIterator<Item = (Ipv4Addr, [u8; 6])>,
) -> OverlayEntries {
    let mut entries: BTreeSet<FdbEntry> = flood.into_iter().map(FdbEntry::flood).collect();
    for (mac, vtep) in fdb {
        entries.insert(FdbEntry::remote(mac, vtep));
        entries.insert(FdbEntry::bridge(mac));
    }
    let mut neigh: Vec<(Ipv4Addr, [u8; 6])> = neigh.into_iter().collect();
    neigh.sort();
    neigh.dedup_by_key(|(ip, _)| *ip);
    OverlayEntries {
        fdb: entries.into_iter().collect(),
        neigh,
    }
}

/// What one [`sync_link`] pass changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncReport {
    pub added: usize,
    pub deleted: usize,
}

/// Makes the entries of the VXLAN link `vxlan` those of `want`: adds what is missing
/// (before deleting, so that a MAC moving between hosts is pointed at its new host
/// without a gap; deleting its old tunnel entry afterwards finds it gone), then deletes
/// what is not wanted. Entries already right are not touched. Every change is tried; the
/// first failure is returned after the others (the next pass repairs what failed).
pub async fn sync_link(
    host: &dyn NetHost,
    vxlan: &str,
    want: &OverlayEntries,
) -> NetResult<SyncReport> {
    let have = host.overlay_entries(vxlan).await?;
    let have_fdb: BTreeSet<&FdbEntry> = have.fdb.iter().collect();
    let want_fdb: BTreeSet<&FdbEntry> = want.fdb.iter().collect();
    let mut report = SyncReport::default();
    let mut first_err = None;
    let mut note = |r: NetResult<()>, n: &mut usize| match r {
        Ok(()) => *n += 1,
        Err(e) => {
            first_err.get_or_insert(e);
        }
    };
    for e in want_fdb.difference(&have_fdb) {
        note(host.fdb_add(vxlan, e).await, &mut report.added);
    }
    for &(ip, mac) in &want.neigh {
        if !have.neigh.contains(&(ip, mac)) {
            note(host.neigh_set(vxlan, ip, mac).await, &mut report.added);
        }
    }
    for e in have_fdb.difference(&want_fdb) {
        note(host.fdb_del(vxlan, e).await, &mut report.deleted);
    }
    for &(ip, _) in &have.neigh {
        if !want.neigh.iter().any(|(w, _)| *w == ip) {
            note(host.neigh_del(vxlan, ip).await, &mut report.deleted);
        }
    }
    match first_err {
        Some(e) => Err(e),
        None => Ok(report),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::net::fake::{CallKind, FakeNetHost, Fault, NetCall};
    use crate::host::net::{Bridge, Vxlan};

    const VX: &str = "pvx-0a0a0a0a";
    const H2: Ipv4Addr = Ipv4Addr::new(10, 251, 0, 2);
    const H3: Ipv4Addr = Ipv4Addr::new(10, 251, 0, 3);
    const M1: [u8; 6] = [2, 0, 0, 0, 0, 1];
    const M2: [u8; 6] = [2, 0, 0, 0, 0, 2];

    fn ip(last: u8) -> Ipv4Addr {
        Ipv4Addr::new(10, 210, 0, last)
    }

    async fn host() -> std::sync::Arc<FakeNetHost> {
        let h = FakeNetHost::new();
        h.ensure_bridge(&Bridge {
            name: "pier-0a0a0a0a".into(),
            gateway: ip(1),
            prefix: 24,
            gateway6: None,
            mtu: 1450,
        })
        .await
        .unwrap();
        h.ensure_vxlan(&Vxlan {
            name: VX.into(),
            vni: 4096,
            local: Ipv4Addr::new(10, 251, 0, 1),
            mtu: 1450,
            bridge: "pier-0a0a0a0a".into(),
        })
        .await
        .unwrap();
        h
    }

    fn changes(h: &FakeNetHost) -> Vec<NetCall> {
        h.calls()
            .into_iter()
            .filter(|c| !matches!(c, NetCall::OverlayEntries(_)))
            .collect()
    }

    #[tokio::test]
    async fn a_pass_programs_what_the_pool_asks_and_a_second_changes_nothing() {
        let h = host().await;
        let want = wanted([H2], [(M1, H2)], [(ip(2), M1)]);
        assert_eq!(want.fdb.len(), 3);
        let r = sync_link(&*h, VX, &want).await.unwrap();
        assert_eq!(
            r,
            SyncReport {
                added: 4,
                deleted: 0
            }
        );
        assert_eq!(h.model().overlay(VX).unwrap(), want);
        h.clear_calls();
        let r = sync_link(&*h, VX, &want).await.unwrap();
        assert_eq!(r, SyncReport::default());
        assert_eq!(changes(&h), vec![]);
    }

    #[tokio::test]
    async fn a_move_and_a_removal_touch_only_what_changed() {
        let h = host().await;
        let before = wanted([H2], [(M1, H2), (M2, H2)], [(ip(2), M1), (ip(3), M2)]);
        sync_link(&*h, VX, &before).await.unwrap();
        // M1 moved to h3; M2 is gone; h2 has no endpoint left.
        let after = wanted([H3], [(M1, H3)], [(ip(2), M1)]);
        h.clear_calls();
        let r = sync_link(&*h, VX, &after).await.unwrap();
        assert_eq!(h.model().overlay(VX).unwrap(), after);
        // Added: h3's flood and M1's tunnel to h3 (its bridge entry and ARP answer
        // stay); deleted: h2's flood, M1's and M2's tunnels to h2, M2's bridge entry
        // and ARP answer.
        assert_eq!(
            r,
            SyncReport {
                added: 2,
                deleted: 5
            }
        );
        let calls = changes(&h);
        assert!(!calls.iter().any(|c| matches!(c, NetCall::NeighSet { .. })));
        // The move's new tunnel came before its old one went.
        let add = calls
            .iter()
            .position(|c| matches!(c, NetCall::FdbAdd { entry, .. } if *entry == FdbEntry::remote(M1, H3)))
            .unwrap();
        let del = calls
            .iter()
            .position(|c| matches!(c, NetCall::FdbDel { entry, .. } if *entry == FdbEntry::remote(M1, H2)))
            .unwrap();
        assert!(add < del);
        // Nothing wanted: nothing left.
        sync_link(&*h, VX, &OverlayEntries::default())
            .await
            .unwrap();
        assert_eq!(h.model().overlay(VX).unwrap(), OverlayEntries::default());
    }

    #[tokio::test]
    async fn a_failed_change_does_not_stop_the_others_and_the_next_pass_repairs_it() {
        let h = host().await;
        let want = wanted([H2, H3], [(M1, H2), (M2, H3)], [(ip(2), M1), (ip(3), M2)]);
        h.set_fault(Some(Fault::Nth {
            n: 2,
            errno: libc::ENOBUFS,
        }));
        let e = sync_link(&*h, VX, &want).await.unwrap_err();
        assert!(e.chain().contains("add forwarding entry"), "{}", e.chain());
        let got = h.model().overlay(VX).unwrap();
        assert_eq!(got.fdb.len(), want.fdb.len() - 1);
        assert_eq!(got.neigh, want.neigh);
        h.set_fault(None);
        let r = sync_link(&*h, VX, &want).await.unwrap();
        assert_eq!(
            r,
            SyncReport {
                added: 1,
                deleted: 0
            }
        );
        assert_eq!(h.model().overlay(VX).unwrap(), want);
        // A link that is not there: said so, nothing else tried.
        h.clear_calls();
        h.set_fault(Some(Fault::Kind {
            kind: CallKind::FdbDel,
            errno: libc::EIO,
        }));
        let e = sync_link(&*h, "pvx-gone0000", &want).await.unwrap_err();
        assert!(matches!(e, pier_net::Error::LinkMissing { .. }), "{e:?}");
        assert_eq!(changes(&h), vec![]);
    }
}
