//! The names of the host objects one daemon makes in its network namespace: bridges, the
//! host ends of veth pairs, VXLAN links and the nftables tables, and which names are its
//! own.
//!
//! Several daemons may share a host (and a network namespace), each on its own state
//! root. Every name a daemon makes carries its tag, derived from that root, and every
//! repair removes only names of its own exact shape, so that no daemon ever touches
//! another's objects.
//!
//! | | default root (`/var/lib/pier`, tag empty) | any other root (tag `3fa0`) |
//! |---|---|---|
//! | the default project's default network's bridge | `pier0` | `pier3fa0` |
//! | other networks' bridges (other projects' default networks too) | `pier-<id8>` | `pier3fa0-<id6>` |
//! | host ends of veths | `pv<id6><nonce4><n>` | `pv3fa0<id4><nonce4><n>` |
//! | VXLAN links of networks across the pool | `pvx-<id8>` | `pvx3fa0-<id7>` |
//! | nftables table | `ip pier` | `ip pier_3fa0` |
//!
//! The default root keeps the names Pier always had. A tag is four hex digits of the
//! SHA-256 of the canonical root path: a tagged name has a hex digit where an untagged
//! one of the same kind has `-` or is shorter, so the shapes never overlap. Two roots
//! whose tags collide are told apart by the owner mark in the table
//! ([`HostNames::owner_chain`]): the second daemon refuses to start.

use std::path::Path;

use sha2::{Digest, Sha256};

/// Linux's limit on interface names (IFNAMSIZ less the NUL).
pub const IFNAME_MAX: usize = 15;

const TAG_LEN: usize = 4;

/// Digits of the network ID in an untagged VXLAN link's name.
const VXLAN_ID: usize = 8;

/// One daemon's naming scheme.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostNames {
    tag: String,
    /// Names the root in the table: `root_` and 16 hex digits of its hash.
    owner: String,
}

fn all_hex(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

impl HostNames {
    /// The names of the daemon on `root` (canonical); `default_root` keeps the
    /// untagged names of the default daemon.
    pub fn for_root(root: &Path, default_root: bool) -> HostNames {
        let digest = pier_api::hex(&Sha256::digest(root.as_os_str().as_encoded_bytes()));
        HostNames {
            tag: if default_root {
                String::new()
            } else {
                digest[..TAG_LEN].to_string()
            },
            owner: format!("root_{}", &digest[..16]),
        }
    }

    /// Empty for the default daemon.
    pub fn tag(&self) -> &str {
        &self.tag
    }

    /// The parent of the containers' cgroups: `pier`, or `pier-<tag>`.
    pub fn cgroup_parent(&self) -> String {
        if self.tag.is_empty() {
            "pier".into()
        } else {
            format!("pier-{}", self.tag)
        }
    }

    /// The nftables table (family `ip`).
    pub fn table(&self) -> String {
        if self.tag.is_empty() {
            "pier".into()
        } else {
            format!("pier_{}", self.tag)
        }
    }

    /// An empty chain in the table that names the daemon's root, so that a daemon whose
    /// tag collides with another's (1 in 65536 roots) finds the table taken.
    pub fn owner_chain(&self) -> &str {
        &self.owner
    }

    /// Whether `chain` is the owner mark of some daemon.
    pub fn is_owner_chain(chain: &str) -> bool {
        chain
            .strip_prefix("root_")
            .is_some_and(|h| h.len() == 16 && all_hex(h))
    }

    /// The default network's bridge.
    pub fn default_bridge(&self) -> String {
        if self.tag.is_empty() {
            "pier0".into()
        } else {
            format!("pier{}", self.tag)
        }
    }

    /// The bridge of the network with ID `network_id` (hex, 8 digits or more).
    pub fn network_bridge(&self, network_id: &str) -> String {
        if self.tag.is_empty() {
            format!("pier-{}", &network_id[..8])
        } else {
            format!("pier{}-{}", self.tag, &network_id[..10 - TAG_LEN])
        }
    }

    /// The host end of container `container_id`'s interface `i`; `nonce` (4 hex digits)
    /// lets a restart go ahead while the kernel still tears down the last run's pair.
    pub fn host_veth(&self, container_id: &str, nonce: &str, i: usize) -> String {
        // `pv`, the tag, the container's ID, the nonce and `n`: 13 or 15 characters.
        let id_len = if self.tag.is_empty() {
            6
        } else {
            IFNAME_MAX - 2 - TAG_LEN - 4 - 1
        };
        let id = &container_id[..id_len];
        format!("pv{}{id}{nonce}{:x}", self.tag, i % 16)
    }

    fn veth_len(&self) -> usize {
        if self.tag.is_empty() {
            13
        } else {
            IFNAME_MAX
        }
    }

    /// Whether `name` has the shape of this daemon's veth ends.
    pub fn owns_veth(&self, name: &str) -> bool {
        name.len() == self.veth_len()
            && name
                .strip_prefix("pv")
                .and_then(|r| r.strip_prefix(self.tag.as_str()))
                .is_some_and(all_hex)
    }

    /// Whether `name` has the shape of this daemon's bridges.
    pub fn owns_bridge(&self, name: &str) -> bool {
        if name == self.default_bridge() {
            return true;
        }
        let Some(id) = name
            .strip_prefix("pier")
            .and_then(|r| r.strip_prefix(self.tag.as_str()))
            .and_then(|r| r.strip_prefix('-'))
        else {
            return false;
        };
        let id_len = if self.tag.is_empty() { 8 } else { 10 - TAG_LEN };
        id.len() == id_len && all_hex(id)
    }

    /// The VXLAN link of the pool network with ID `network_id` (hex, 8 digits or more).
    pub fn vxlan(&self, network_id: &str) -> String {
        if self.tag.is_empty() {
            format!("pvx-{}", &network_id[..VXLAN_ID])
        } else {
            format!(
                "pvx{}-{}",
                self.tag,
                &network_id[..IFNAME_MAX - 4 - TAG_LEN]
            )
        }
    }

    /// Whether `name` has the shape of this daemon's VXLAN links.
    pub fn owns_vxlan(&self, name: &str) -> bool {
        let id_len = if self.tag.is_empty() {
            VXLAN_ID
        } else {
            IFNAME_MAX - 4 - TAG_LEN
        };
        name.strip_prefix("pvx")
            .and_then(|r| r.strip_prefix(self.tag.as_str()))
            .and_then(|r| r.strip_prefix('-'))
            .is_some_and(|id| id.len() == id_len && all_hex(id))
    }

    /// Whether `table` is the table of some Pier daemon (this one or another).
    pub fn is_pier_table(table: &str) -> bool {
        table == "pier"
            || table
                .strip_prefix("pier_")
                .is_some_and(|t| t.len() == TAG_LEN && all_hex(t))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn all_names(n: &HostNames) -> Vec<String> {
        let mut v = vec![n.default_bridge(), n.network_bridge(ID), n.vxlan(ID)];
        for i in [0, 1, 15] {
            v.push(n.host_veth(ID, "9f8e", i));
        }
        v
    }

    #[test]
    fn the_default_root_keeps_its_names() {
        let n = HostNames::for_root(Path::new("/var/lib/pier"), true);
        assert_eq!(n.table(), "pier");
        assert_eq!(n.default_bridge(), "pier0");
        assert_eq!(n.network_bridge(ID), "pier-01234567");
        assert_eq!(n.host_veth(ID, "9f8e", 1), "pv0123459f8e1");
        assert!(n.owns_veth("pvdeadbeef000"));
        assert!(n.owns_bridge("pier0") && n.owns_bridge("pier-01234567"));
        assert_eq!(n.vxlan(ID), "pvx-01234567");
        assert!(n.owns_vxlan("pvx-01234567"));
        assert!(!n.owns_vxlan("pvx-0123456") && !n.owns_vxlan("pvx-0123456g"));
        assert!(!n.owns_veth(&n.vxlan(ID)) && !n.owns_bridge(&n.vxlan(ID)));
    }

    #[test]
    fn tagged_names_fit_and_never_match_another_daemons() {
        let mut daemons = vec![HostNames::for_root(Path::new("/var/lib/pier"), true)];
        for r in [
            "/srv/a",
            "/srv/b",
            "/tmp/pier-test-x/root",
            "/var/lib/pier2",
        ] {
            daemons.push(HostNames::for_root(Path::new(r), false));
        }
        let n = &daemons[1];
        assert_eq!(n.tag().len(), TAG_LEN);
        assert_eq!(n.table(), format!("pier_{}", n.tag()));
        assert!(HostNames::is_pier_table(&n.table()) && HostNames::is_pier_table("pier"));
        assert!(!HostNames::is_pier_table("pier_nat") && !HostNames::is_pier_table("filter"));
        for (i, a) in daemons.iter().enumerate() {
            for name in all_names(a) {
                assert!(name.len() <= IFNAME_MAX, "{name} is too long");
                for (j, b) in daemons.iter().enumerate() {
                    let owned = b.owns_veth(&name) || b.owns_bridge(&name) || b.owns_vxlan(&name);
                    assert_eq!(owned, i == j, "{name} of daemon {i} seen by daemon {j}");
                }
            }
            assert!(a.owns_veth(&a.host_veth(ID, "0000", 3)));
            assert!(!a.owns_veth(&a.default_bridge()));
            // Each shape is one kind's only.
            let vx = a.vxlan(ID);
            assert!(a.owns_vxlan(&vx) && !a.owns_veth(&vx) && !a.owns_bridge(&vx));
            assert!(
                !a.owns_vxlan(&a.network_bridge(ID)) && !a.owns_vxlan(&a.host_veth(ID, "0000", 1))
            );
            assert!(!a.owns_bridge("eth0") && !a.owns_veth("pv") && !a.owns_veth("lo"));
        }
        // Same root, same names: a restart finds its own.
        assert_eq!(
            HostNames::for_root(Path::new("/srv/a"), false),
            daemons[1].clone()
        );
    }
}
