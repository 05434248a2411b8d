//! The pool's vocabulary on the native API: `pier cluster init/join/token`
//! (`/v1/cluster/...`) and `pier host ls/inspect/cordon/uncordon/rm` (`/v1/hosts/...`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// `POST /v1/cluster/init`: make a pool of this host.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ClusterInit {
    /// The address other hosts reach this one at, `IP` or `IP:PORT` (the cluster
    /// listener's port, 7443 by default). Default: the address of the default route.
    #[serde(default)]
    pub advertise: Option<String>,
    /// Client URLs of an existing etcd cluster to keep the pool in; empty: this daemon
    /// runs an etcd member of its own.
    #[serde(default)]
    pub etcd: Vec<String>,
    /// This host's name in the pool. Default: the machine's host name.
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// `POST /v1/cluster/join`: make this host a member of the pool at `addr`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ClusterJoin {
    /// A member's cluster address, `IP[:PORT]` (as `pier cluster init` printed it).
    pub addr: String,
    /// The join token (`PJ1....`).
    pub token: String,
    /// As [`ClusterInit::advertise`]; default: this host's address on the way to `addr`.
    #[serde(default)]
    pub advertise: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// `POST /v1/cluster/tokens`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenRequest {
    /// How long the token works, seconds (1 to 7 days); an hour when absent.
    #[serde(default)]
    pub ttl_secs: Option<u64>,
}

/// A join command with its token (`pier cluster init`, `pier cluster token`).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct JoinCommand {
    pub cluster_id: String,
    /// This host's name in the pool.
    pub host: String,
    /// `pier cluster join ADDR TOKEN`, to run on the joining host.
    pub command: String,
    pub token: String,
    /// When the token stops working, Unix seconds.
    pub expires: u64,
}

/// What `pier cluster join` answers.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Joined {
    pub cluster_id: String,
    /// This host's name in the pool.
    pub host: String,
    pub etcd_endpoints: Vec<String>,
}

/// `POST /v1/cluster/leave`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ClusterLeave {
    /// Leave although this host keeps the pool's CA key (no host can join after), or
    /// forget the pool here alone when its store cannot be reached.
    #[serde(default)]
    pub force: bool,
}

/// What `pier cluster leave` answers.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Left {
    pub cluster_id: String,
    /// This host's name in the pool it left.
    pub host: String,
    /// It was the pool's last host: the pool is gone.
    pub dissolved: bool,
    /// The pool was not told (its store could not be reached, `--force`): remove the host
    /// from another member with `pier host rm HOST --force`.
    pub forgotten_locally: bool,
}

/// This daemon's place in a pool (`GET /v1/cluster`, the pool line of `pier info`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ClusterStatus {
    /// The pool's ID; none when this host is in no pool.
    pub cluster_id: Option<String>,
    /// This host's name in the pool.
    pub host: Option<String>,
    /// Its cluster listener, `IP:PORT`.
    pub cluster_addr: Option<String>,
    pub etcd_endpoints: Vec<String>,
    /// Whether this daemon runs an etcd member of the pool.
    pub runs_etcd: bool,
    /// Whether it has reached the pool's store since it started.
    pub connected: bool,
    /// Set when this host cannot reach a majority of the pool's store (its last check,
    /// every 2 s, found no etcd member in touch with a majority): how the etcd members
    /// answered. It places nothing until it is back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cut_off: Option<String>,
}

/// Amounts of a host's resources.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct HostResources {
    /// Thousandths of a CPU.
    pub cpu_millis: u64,
    pub memory_bytes: u64,
    pub disk_bytes: u64,
}

/// A host of the pool (`GET /v1/hosts`, `GET /v1/hosts/{id}`).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct HostInfo {
    /// Its name, unique in the pool.
    pub id: String,
    /// `up`, `down` (its heartbeat expired), `cordoned` (takes no new instances) or
    /// `draining`.
    pub state: String,
    /// Whether the scheduler may place new instances on it (its record's state is `up`).
    pub schedulable: bool,
    pub address: Option<String>,
    /// Its cluster listener, `IP:PORT`.
    pub cluster_addr: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub capacity: HostResources,
    /// What the scheduler has reserved on it.
    pub allocated: HostResources,
    /// Host ports reserved on it (`PORT/PROTO`).
    pub ports: Vec<String>,
    pub instances: u64,
    /// Its last heartbeat, Unix seconds by its clock; none when it is down.
    pub last_heartbeat: Option<u64>,
    /// Seconds its heartbeat lives without renewal.
    pub heartbeat_ttl: Option<u64>,
    /// Whether it runs an etcd member of the pool.
    pub etcd_member: bool,
    pub etcd_client_url: Option<String>,
    /// When it joined, Unix seconds.
    pub joined: Option<u64>,
    /// Whether it keeps the pool's CA key: hosts can join through it.
    #[serde(default)]
    pub keeps_ca_key: bool,
}

/// One instance moved off a host (`pier host drain`, `pier host evacuate`, and a down
/// host's failover).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct InstanceMove {
    pub project: String,
    pub id: String,
    pub name: String,
    pub from: String,
    pub to: String,
    /// Whether its new host starts it (it was running, or has a restart policy).
    pub start: bool,
    /// The named volumes it uses. Volumes are local to their host: their data stays on
    /// the old one, and the new host makes each empty unless it has one of that name
    /// (its inspect says which: the `org.pier.volumes-recreated` label).
    #[serde(default)]
    pub volumes: Vec<String>,
}

/// One instance left on a host that was drained or evacuated, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct InstanceKept {
    pub project: String,
    pub id: String,
    pub name: String,
    pub reason: String,
}

/// Answer of `POST /v1/hosts/{id}/drain` and `POST /v1/hosts/{id}/evacuate`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct HostMoves {
    pub host: String,
    pub moved: Vec<InstanceMove>,
    /// Instances left where they are: without a restart policy, with host-local named
    /// volumes, or that no other host fits.
    pub not_moved: Vec<InstanceKept>,
}
