//! The fake host's model of VXLAN links: what the overlay sync will rely on, checked
//! against what the kernel does (`pier_net::vxlan`'s root test checks the kernel).

use super::*;

const A: Ipv4Addr = Ipv4Addr::new(10, 251, 9, 1);
const B: Ipv4Addr = Ipv4Addr::new(10, 251, 9, 2);
const C: Ipv4Addr = Ipv4Addr::new(10, 251, 9, 3);
const MAC: [u8; 6] = [2, 66, 10, 210, 0, 2];

fn bridge(name: &str) -> Bridge {
    Bridge {
        name: name.into(),
        gateway: Ipv4Addr::new(10, 210, 0, 1),
        prefix: 24,
        gateway6: None,
        mtu: 1450,
    }
}

fn vxlan(local: Ipv4Addr) -> Vxlan {
    Vxlan {
        name: "pvx-0a0a0a0a".into(),
        vni: 4096,
        local,
        mtu: 1450,
        bridge: "pier-0a0a0a0a".into(),
    }
}

const VX: &str = "pvx-0a0a0a0a";

async fn host_with_link() -> (Arc<FakeNetHost>, u32) {
    let h = FakeNetHost::new();
    h.ensure_bridge(&bridge("pier-0a0a0a0a")).await.unwrap();
    let i = h.ensure_vxlan(&vxlan(A)).await.unwrap();
    (h, i)
}

#[tokio::test]
async fn a_vxlan_link_needs_its_bridge_and_is_kept_or_made_again() {
    let h = FakeNetHost::new();
    let e = h.ensure_vxlan(&vxlan(A)).await.unwrap_err();
    assert!(
        matches!(&e, pier_net::Error::LinkMissing { name } if name == "pier-0a0a0a0a"),
        "{e:?}"
    );
    assert!(h.model().vxlans().is_empty());
    let br = h.ensure_bridge(&bridge("pier-0a0a0a0a")).await.unwrap();
    let i = h.ensure_vxlan(&vxlan(A)).await.unwrap();
    assert_eq!(h.ensure_vxlan(&vxlan(A)).await.unwrap(), i);
    let links = h.links().await.unwrap();
    let l = links.iter().find(|l| l.name == VX).unwrap();
    assert_eq!((l.index, l.controller), (i, Some(br)));
    h.fdb_add(VX, &FdbEntry::flood(B)).await.unwrap();
    // The host's pool address changed: a new link, without the old entries.
    let j = h.ensure_vxlan(&vxlan(C)).await.unwrap();
    assert_ne!(i, j);
    assert_eq!(h.model().overlay(VX).unwrap(), OverlayEntries::default());
    assert!(matches!(
        &h.model().links[VX],
        FakeLink::Vxlan { vni: 4096, local, mtu: 1450, master: Some(b), .. }
            if *local == C && b == "pier-0a0a0a0a"
    ));
    assert!(h.calls().contains(&NetCall::EnsureVxlan(vxlan(C))));
}

#[tokio::test]
async fn forwarding_entries_behave_as_the_kernels() {
    let (h, _) = host_with_link().await;
    // Flood entries add up, one per remote host, and repeat harmlessly.
    for dst in [B, C, B] {
        h.fdb_add(VX, &FdbEntry::flood(dst)).await.unwrap();
    }
    // A remote MAC points at one host: the second add moves it.
    h.fdb_add(VX, &FdbEntry::remote(MAC, B)).await.unwrap();
    h.fdb_add(VX, &FdbEntry::remote(MAC, C)).await.unwrap();
    h.fdb_add(VX, &FdbEntry::bridge(MAC)).await.unwrap();
    h.neigh_set(VX, Ipv4Addr::new(10, 210, 0, 2), MAC)
        .await
        .unwrap();
    let mut want = vec![
        FdbEntry::flood(B),
        FdbEntry::flood(C),
        FdbEntry::remote(MAC, C),
        FdbEntry::bridge(MAC),
    ];
    want.sort();
    let got = h.overlay_entries(VX).await.unwrap();
    assert_eq!(got.fdb, want);
    assert_eq!(got.neigh, vec![(Ipv4Addr::new(10, 210, 0, 2), MAC)]);
    assert_eq!(h.model().overlay(VX).unwrap(), got);
    // Deleting one remote's flood entry leaves the other; deleting what is not there,
    // or on a link that is gone, is done.
    h.fdb_del(VX, &FdbEntry::flood(B)).await.unwrap();
    h.fdb_del(VX, &FdbEntry::remote(MAC, B)).await.unwrap();
    h.neigh_del(VX, Ipv4Addr::new(10, 210, 0, 9)).await.unwrap();
    h.fdb_del("pvx-gone0000", &FdbEntry::flood(B))
        .await
        .unwrap();
    h.neigh_del("pvx-gone0000", B).await.unwrap();
    let got = h.overlay_entries(VX).await.unwrap();
    assert!(!got.fdb.contains(&FdbEntry::flood(B)));
    assert!(got.fdb.contains(&FdbEntry::flood(C)));
    assert!(got.fdb.contains(&FdbEntry::remote(MAC, C)));
    // Adding to or listing a link that is not there says which.
    for e in [
        h.fdb_add("pvx-gone0000", &FdbEntry::flood(B))
            .await
            .unwrap_err(),
        h.overlay_entries("pvx-gone0000").await.unwrap_err(),
        h.neigh_set("pvx-gone0000", B, MAC).await.unwrap_err(),
    ] {
        assert!(matches!(&e, pier_net::Error::LinkMissing { name } if name == "pvx-gone0000"));
    }
    // The bridge goes: the link stays, unplugged, without the bridge's entries; a
    // bridge entry cannot be added then.
    h.delete_link("pier-0a0a0a0a").await.unwrap();
    let got = h.overlay_entries(VX).await.unwrap();
    assert!(got.fdb.iter().all(|e| !e.master));
    assert!(!got.fdb.is_empty());
    let e = h.fdb_add(VX, &FdbEntry::bridge(MAC)).await.unwrap_err();
    assert_eq!(e.kind(), pier_net::ErrorKind::Host, "{e:?}");
    // The link goes: its entries with it.
    h.delete_link(VX).await.unwrap();
    assert!(h.model().vxlans().is_empty());
    assert_eq!(h.model().overlay(VX), None);
}

#[tokio::test]
async fn overlay_calls_are_recorded_and_fail_on_demand() {
    let (h, _) = host_with_link().await;
    h.clear_calls();
    h.set_fault(Some(Fault::Kind {
        kind: CallKind::FdbAdd,
        errno: libc::ENOBUFS,
    }));
    let e = h.fdb_add(VX, &FdbEntry::flood(B)).await.unwrap_err();
    assert!(e.chain().contains("add forwarding entry"), "{}", e.chain());
    // A failed call changes nothing; other kinds still work.
    assert_eq!(h.model().overlay(VX).unwrap(), OverlayEntries::default());
    h.neigh_set(VX, C, MAC).await.unwrap();
    // The n-th call fails, whatever it is.
    h.set_fault(Some(Fault::Nth {
        n: 1,
        errno: libc::EBUSY,
    }));
    h.neigh_del(VX, C).await.unwrap();
    let e = h.fdb_del(VX, &FdbEntry::flood(B)).await.unwrap_err();
    assert_eq!(e.kind(), pier_net::ErrorKind::Busy);
    h.ensure_vxlan(&vxlan(A)).await.unwrap();
    h.set_fault(Some(Fault::Kind {
        kind: CallKind::EnsureVxlan,
        errno: libc::EOPNOTSUPP,
    }));
    assert!(h.ensure_vxlan(&vxlan(B)).await.is_err());
    assert!(matches!(&h.model().links[VX], FakeLink::Vxlan { local, .. } if *local == A));
    h.set_fault(None);
    assert_eq!(
        h.calls(),
        vec![
            NetCall::FdbAdd {
                vxlan: VX.into(),
                entry: FdbEntry::flood(B)
            },
            NetCall::NeighSet {
                vxlan: VX.into(),
                ip: C,
                mac: MAC
            },
            NetCall::NeighDel {
                vxlan: VX.into(),
                ip: C
            },
            NetCall::FdbDel {
                vxlan: VX.into(),
                entry: FdbEntry::flood(B)
            },
            NetCall::EnsureVxlan(vxlan(A)),
            NetCall::EnsureVxlan(vxlan(B)),
        ]
    );
}

#[test]
fn the_fake_firewall_keeps_the_overlay_of_each_network() {
    let fw = FakeFirewall::new();
    let net = FwNetwork {
        bridge: "pier-0a0a0a0a".into(),
        subnet: "10.210.0.0/24".parse().unwrap(),
        subnet6: None,
        internal: false,
        routed: false,
        masquerade: true,
        overlay: Some(VX.into()),
    };
    fw.apply(&[net], &[]).unwrap();
    let nets: Vec<FwNet> = fw.model().networks.into_iter().collect();
    assert_eq!(nets[0].overlay.as_deref(), Some(VX));
}

/// One sequence of overlay calls, and the entries it left after each step.
async fn scenario(h: &dyn NetHost) -> Vec<NetResult<OverlayEntries>> {
    let mut seen = Vec::new();
    h.ensure_bridge(&bridge("pier-0a0a0a0a")).await.unwrap();
    h.ensure_vxlan(&vxlan(A)).await.unwrap();
    h.ensure_vxlan(&vxlan(A)).await.unwrap();
    for dst in [B, C, B] {
        h.fdb_add(VX, &FdbEntry::flood(dst)).await.unwrap();
    }
    h.fdb_add(VX, &FdbEntry::remote(MAC, B)).await.unwrap();
    h.fdb_add(VX, &FdbEntry::bridge(MAC)).await.unwrap();
    h.neigh_set(VX, Ipv4Addr::new(10, 210, 0, 2), [2, 0, 0, 0, 0, 1])
        .await
        .unwrap();
    h.neigh_set(VX, Ipv4Addr::new(10, 210, 0, 2), MAC)
        .await
        .unwrap();
    seen.push(h.overlay_entries(VX).await);
    h.fdb_add(VX, &FdbEntry::remote(MAC, C)).await.unwrap();
    h.fdb_del(VX, &FdbEntry::flood(B)).await.unwrap();
    h.fdb_del(VX, &FdbEntry::remote([2, 9, 9, 9, 9, 9], B))
        .await
        .unwrap();
    h.neigh_del(VX, Ipv4Addr::new(10, 210, 0, 9)).await.unwrap();
    seen.push(h.overlay_entries(VX).await);
    // Made again elsewhere: empty.
    h.ensure_vxlan(&vxlan(C)).await.unwrap();
    seen.push(h.overlay_entries(VX).await);
    h.fdb_add(VX, &FdbEntry::flood(A)).await.unwrap();
    h.fdb_add(VX, &FdbEntry::bridge(MAC)).await.unwrap();
    h.delete_link("pier-0a0a0a0a").await.unwrap();
    seen.push(h.overlay_entries(VX).await);
    h.delete_link(VX).await.unwrap();
    seen.push(h.overlay_entries(VX).await);
    seen
}

/// The fake's answers are the kernel's: the same calls on the real host (in a network
/// namespace of its own) and on the fake leave the same entries at every step.
#[test]
#[ignore = "root tier: needs root; scripts/test.sh runs it (--run-ignored all)"]
fn the_fake_overlay_agrees_with_the_kernel() {
    std::thread::spawn(|| {
        // SAFETY: this thread is ours alone and ends with the test.
        unsafe { rustix::thread::unshare_unsafe(rustix::thread::UnshareFlags::NEWNET) }.unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let real = crate::host::net::RealNetHost::new().unwrap();
            let fake = FakeNetHost::new();
            let kernel = scenario(&real).await;
            let model = scenario(&*fake).await;
            assert_eq!(kernel.len(), model.len());
            for (step, (k, m)) in kernel.iter().zip(&model).enumerate() {
                match (k, m) {
                    (Ok(k), Ok(m)) => assert_eq!(k, m, "step {step}"),
                    (
                        Err(pier_net::Error::LinkMissing { name: a }),
                        Err(pier_net::Error::LinkMissing { name: b }),
                    ) => assert_eq!(a, b),
                    _ => panic!("step {step}: kernel {k:?}, fake {m:?}"),
                }
            }
            // The steps saw something: the first has every kind of entry.
            let first = kernel[0].as_ref().unwrap();
            assert_eq!(first.fdb.len(), 4, "{first:?}");
            assert_eq!(first.neigh, vec![(Ipv4Addr::new(10, 210, 0, 2), MAC)]);
        });
    })
    .join()
    .unwrap();
}
