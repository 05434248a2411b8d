//! The pool of hosts: membership, join and certificates, host agents, the scheduler and
//! request forwarding (see the architecture's crate map).
//!
//! Built so far: [`scheduler`], which places instances on hosts over an in-memory view of
//! the pool kept current by a store watch, and commits each placement with a conditional
//! write so that schedulers racing on one store never overbook a host. The pool's state
//! lives in the store's [`pier_store::Table::Cluster`] table; [`scheduler::keys`] has its
//! layout. [`ca`] makes the pool's certificate authority and signs members' certificates;
//! [`join`] issues and redeems the one-time tokens hosts join with. [`member`] keeps the
//! members' records and heartbeats in the store; [`admit`] is both sides of a join;
//! [`local`] is what a member keeps on its own disk; [`etcd`] runs and supervises the
//! etcd member a host runs for the pool; [`host_events`] reads the hosts'
//! events (join, cordon, down, ...) off a watch of the pool's table; [`agent`] realises
//! the assignments that name a host; [`instances`] keeps the pool's view of every
//! member's instances, which listing and request forwarding read, from a member's copy
//! of them in memory ([`instance_view`]) kept current by a watch; [`networks`] keeps the
//! records of networks across the pool (VNI, subnet, name) and the addresses claimed on
//! them, and the view each member programs its VXLAN links from.

pub mod admit;
pub mod agent;
pub mod ca;
pub mod etcd;
pub mod host_events;
pub mod instance_view;
pub mod instances;
pub mod join;
pub mod local;
pub mod member;
pub mod networks;
pub mod scheduler;
