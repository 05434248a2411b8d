//! The host, behind traits: everything the engine asks of the kernel goes through one of
//! these, so the engine's logic (state machine, undo, leases, restore) runs over recording
//! fakes in the engine test tier, without root.
//!
//! - [`net`]: network plumbing (namespaces, links, addresses, routes, QoS) and the firewall.
//! - [`storage`]: the volume backend (directory and block volumes, limits, snapshots) and mounts.
//! - [`process`]: cgroups and the monitor spawner of container instances.
//!
//! Each trait has a real implementation over `pier-net`, `pier-storage` or `pier-runtime`
//! and a fake that records every call and can be told to fail a given one.

pub mod net;
pub mod process;
pub mod storage;
