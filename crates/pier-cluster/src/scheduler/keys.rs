//! Where the pool's records live: the layout of [`Table::Cluster`]. One table, so that a
//! single watch delivers hosts, allocations and assignments in revision order (on etcd it
//! is one key prefix). Other parts of the pool (membership, join tokens) may keep records
//! of their own in the table under other prefixes; the scheduler ignores them, but for
//! the members' heartbeats ([`crate::member::HEARTBEATS`]), which it reads for whether a
//! host is alive. Names ([`NAMES`]) and the agents' results ([`PLACED`]) are written and
//! deleted with assignments but not kept in the scheduler's view.

use pier_store::{Op, Table};

use super::model::HostRecord;

/// The table of the pool.
pub const TABLE: Table = Table::Cluster;
/// Host records ([`HostRecord`]) by host ID.
pub const HOSTS: &str = "hosts/";
/// Host allocations ([`Allocation`](super::Allocation)) by host ID.
pub const ALLOCATIONS: &str = "allocations/";
/// Assignments ([`Assignment`](super::Assignment)) by `project/instance-id`.
pub const ASSIGNMENTS: &str = "assignments/";

/// Instance names taken in a project, by `project/name`: the instance ID, as a JSON
/// string. Written with the assignment, so names are unique in a project across the pool.
pub const NAMES: &str = "names/";
/// What the chosen host's agent made of an assignment
/// ([`Placed`](crate::agent::Placed)), by `project/instance-id`; deleted with it.
pub const PLACED: &str = "placed/";

pub fn host(id: &str) -> String {
    format!("{HOSTS}{id}")
}

pub fn allocation(id: &str) -> String {
    format!("{ALLOCATIONS}{id}")
}

/// The key of the instance `project/instance-id`.
pub fn assignment(instance: &str) -> String {
    format!("{ASSIGNMENTS}{instance}")
}

/// The key holding the name `name` in `project`.
pub fn name(project: &str, name: &str) -> String {
    format!("{NAMES}{project}/{name}")
}

/// The key of the agent's result for the instance `project/instance-id`.
pub fn placed(instance: &str) -> String {
    format!("{PLACED}{instance}")
}

/// An unconditional write of a host record (what membership and `pier host` do).
pub fn put_host(record: &HostRecord) -> Op {
    Op::Put {
        table: TABLE,
        key: host(&record.id),
        value: serde_json::to_vec(record).expect("host records serialize to JSON"),
    }
}

/// A key of the table, as the scheduler reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Key<'a> {
    Host(&'a str),
    Allocation(&'a str),
    /// `project/instance-id`.
    Assignment(&'a str),
    /// A member's heartbeat ([`crate::member::HEARTBEATS`]), by host ID.
    Heartbeat(&'a str),
}

/// What `key` is, or None if it is not the scheduler's.
pub(crate) fn parse(key: &str) -> Option<Key<'_>> {
    if let Some(id) = key.strip_prefix(HOSTS) {
        return Some(Key::Host(id));
    }
    if let Some(id) = key.strip_prefix(ALLOCATIONS) {
        return Some(Key::Allocation(id));
    }
    if let Some(id) = key.strip_prefix(crate::member::HEARTBEATS) {
        return Some(Key::Heartbeat(id));
    }
    key.strip_prefix(ASSIGNMENTS).map(Key::Assignment)
}
