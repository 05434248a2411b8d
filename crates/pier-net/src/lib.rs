//! Host networking: bridge networks, IPAM, veth pairs into network namespaces, the
//! nftables tables Pier owns (egress NAT, published ports, isolation, routed mode, the
//! overlays' bridge rules), the embedded DNS server, per-container rate limits, and the
//! VXLAN links and forwarding entries of networks that span a pool (`vxlan`).
//!
//! Netlink work goes through `rtnetlink`; firewall rules through nftables' JSON
//! interface (`nft -j -f -`), always inside Pier's own table, never anyone else's.
//! What to create is decided by the daemon (`pier-daemon/src/networks.rs`), which keeps
//! networks and address leases in its store; this crate only carries it out. The names
//! of what it makes in the kernel are scoped to the daemon's state root (`names`), so
//! that several daemons share a host without touching each other's.

pub mod dns;
pub mod ipam;
pub mod names;
pub mod netlink;
pub mod nft;
pub mod qos;
pub mod vxlan;

mod error;

pub use error::{Error, ErrorKind, NetlinkError, Result, ToolFailure};
