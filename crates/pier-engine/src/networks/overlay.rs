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
//! Not wired yet: the per-member task that follows the pool's table and calls this for
//! every pool network (see the architecture's "Networks across the pool").

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use crate::host::net::{FdbEntry, NetHost, NetResult, OverlayEntries};

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
