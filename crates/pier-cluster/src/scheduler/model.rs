//! The scheduler's records and requests: what the store holds about hosts, their
//! allocations and the instances assigned to them, and what a placement asks for
//! (resources, host ports, constraints, affinity, strategy), with the parsers of the
//! textual forms users give (`host.label.zone==a`, `instance.name==db`, `8080/tcp`).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Labels of hosts and instances.
pub type Labels = BTreeMap<String, String>;

/// An amount of each resource the scheduler reserves.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Resources {
    /// Thousandths of a CPU.
    pub cpu_millis: u64,
    pub memory_bytes: u64,
    pub disk_bytes: u64,
}

impl Resources {
    /// What is left of `self` after `used` (never below zero: a host whose capacity
    /// shrank under its allocation has nothing free).
    pub fn minus(&self, used: &Resources) -> Resources {
        Resources {
            cpu_millis: self.cpu_millis.saturating_sub(used.cpu_millis),
            memory_bytes: self.memory_bytes.saturating_sub(used.memory_bytes),
            disk_bytes: self.disk_bytes.saturating_sub(used.disk_bytes),
        }
    }

    /// The sum, saturating (an allocation cannot wrap around).
    pub fn plus(&self, other: &Resources) -> Resources {
        Resources {
            cpu_millis: self.cpu_millis.saturating_add(other.cpu_millis),
            memory_bytes: self.memory_bytes.saturating_add(other.memory_bytes),
            disk_bytes: self.disk_bytes.saturating_add(other.disk_bytes),
        }
    }

    /// The amounts as an array: CPU, memory, disk.
    pub fn amounts(&self) -> [u64; 3] {
        [self.cpu_millis, self.memory_bytes, self.disk_bytes]
    }

    /// Whether every resource of `self` is at most the same one of `other`.
    pub fn fits_in(&self, other: &Resources) -> bool {
        self.cpu_millis <= other.cpu_millis
            && self.memory_bytes <= other.memory_bytes
            && self.disk_bytes <= other.disk_bytes
    }
}

/// The unit of shares: a share of [`SHARE_ONE`] is the whole of a resource.
pub const SHARE_ONE: u64 = 1_000_000;

/// `part / whole` in millionths, rounded down (0 if `whole` is 0).
pub(crate) fn share(part: u64, whole: u64) -> u64 {
    if whole == 0 {
        return 0;
    }
    (u128::from(part) * u128::from(SHARE_ONE) / u128::from(whole)) as u64
}

/// The transport protocol of a host port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    Tcp,
    Udp,
    Sctp,
}

impl fmt::Display for Proto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
            Proto::Sctp => "sctp",
        })
    }
}

/// A port on the host itself (a published port), which only one instance per host holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostPort {
    pub proto: Proto,
    pub port: u16,
}

impl fmt::Display for HostPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.port, self.proto)
    }
}

impl FromStr for HostPort {
    type Err = ParseError;

    /// `PORT` (TCP) or `PORT/tcp|udp|sctp`.
    fn from_str(s: &str) -> Result<Self, ParseError> {
        let bad = || ParseError::Port(s.to_string());
        let (port, proto) = s.split_once('/').unwrap_or((s, "tcp"));
        let proto = match proto {
            "tcp" => Proto::Tcp,
            "udp" => Proto::Udp,
            "sctp" => Proto::Sctp,
            _ => return Err(bad()),
        };
        let port: u16 = port.parse().map_err(|_| bad())?;
        if port == 0 {
            return Err(bad());
        }
        Ok(HostPort { proto, port })
    }
}

/// Whether a host takes new instances.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum HostState {
    /// Heartbeating and open to placements.
    #[default]
    Up,
    /// Stopped heartbeating; its instances are to be rescheduled.
    Down,
    /// Keeps its instances but takes no new ones.
    Cordoned,
    /// Takes no new instances and is being emptied.
    Draining,
}

impl fmt::Display for HostState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            HostState::Up => "up",
            HostState::Down => "down",
            HostState::Cordoned => "cordoned",
            HostState::Draining => "draining",
        })
    }
}

/// A member of the pool, at [`keys::host`](super::keys::host): written by membership and
/// by `pier host cordon/drain`, never by placements (so that placing does not race with
/// them needlessly). Heartbeats do not belong here: a placement compares this record's
/// revision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostRecord {
    pub id: String,
    #[serde(default)]
    pub labels: Labels,
    pub state: HostState,
    pub capacity: Resources,
}

/// What is reserved on a host, at [`keys::allocation`](super::keys::allocation): the sum
/// of the host's assignments, kept beside them so that a placement checks and updates one
/// key. Every placement on the host and every release from it rewrites it, so its mod
/// revision changes whenever the set of instances on the host does.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Allocation {
    pub used: Resources,
    #[serde(default)]
    pub ports: BTreeSet<HostPort>,
    /// How many instances are assigned to the host.
    pub instances: u64,
}

/// An instance placed on a host, at [`keys::assignment`](super::keys::assignment): what
/// the host's agent realises, and what affinity rules match against.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Assignment {
    pub project: String,
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub labels: Labels,
    pub host: String,
    pub resources: Resources,
    #[serde(default)]
    pub ports: Vec<HostPort>,
    /// What to create (the native create request, as JSON), for the host's agent;
    /// absent in records written before placements carried it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec: Option<serde_json::Value>,
    /// Whether the host's agent starts the instance once made: set when an instance is
    /// moved to another host ([`crate::scheduler::Scheduler::relocate`]) and was running
    /// or has a restart policy. A placement from a create leaves it false (the
    /// requester starts it, as `pier run` does).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub start: bool,
    /// The host the instance was moved from, when it was (for the agent's log and the
    /// move's event).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub moved_from: Option<String>,
}

/// How to choose among the hosts that fit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Strategy {
    /// The least allocated host: the one whose most used resource (CPU, memory or disk,
    /// as a share of its capacity) is least used. Instances spread out.
    #[default]
    Spread,
    /// The most allocated host that fits: the one whose most used resource is most used.
    /// Hosts fill up one by one and whole hosts stay free.
    Binpack,
}

impl FromStr for Strategy {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, ParseError> {
        match s {
            "spread" => Ok(Strategy::Spread),
            "binpack" => Ok(Strategy::Binpack),
            _ => Err(ParseError::Strategy(s.to_string())),
        }
    }
}

/// A condition on the host (`--constraint`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Constraint {
    /// `host.label.KEY==VALUE` (`equal`) or `host.label.KEY!=VALUE`; a host without the
    /// label meets `!=`.
    Label {
        key: String,
        value: String,
        equal: bool,
    },
    /// `host.id==ID` or `host.id!=ID`.
    HostId { id: String, equal: bool },
}

/// Splits `LHS==RHS` or `LHS!=RHS` at the first operator; true for `==`.
fn split_op(s: &str) -> Option<(&str, bool, &str)> {
    let eq = s.find("==");
    let ne = s.find("!=");
    let (at, equal) = match (eq, ne) {
        (Some(e), Some(n)) if n < e => (n, false),
        (Some(e), _) => (e, true),
        (None, Some(n)) => (n, false),
        (None, None) => return None,
    };
    Some((&s[..at], equal, &s[at + 2..]))
}

fn op(equal: bool) -> &'static str {
    if equal {
        "=="
    } else {
        "!="
    }
}

impl FromStr for Constraint {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, ParseError> {
        let bad = || ParseError::Constraint(s.to_string());
        let (lhs, equal, value) = split_op(s).ok_or_else(bad)?;
        if value.is_empty() {
            return Err(bad());
        }
        if lhs == "host.id" {
            return Ok(Constraint::HostId {
                id: value.to_string(),
                equal,
            });
        }
        match lhs.strip_prefix("host.label.") {
            Some(key) if !key.is_empty() => Ok(Constraint::Label {
                key: key.to_string(),
                value: value.to_string(),
                equal,
            }),
            _ => Err(bad()),
        }
    }
}

impl fmt::Display for Constraint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Constraint::Label { key, value, equal } => {
                write!(f, "host.label.{key}{}{value}", op(*equal))
            }
            Constraint::HostId { id, equal } => write!(f, "host.id{}{id}", op(*equal)),
        }
    }
}

impl Constraint {
    /// Whether the host meets the constraint.
    pub fn admits(&self, id: &str, labels: &Labels) -> bool {
        match self {
            Constraint::Label { key, value, equal } => (labels.get(key) == Some(value)) == *equal,
            Constraint::HostId { id: want, equal } => (id == want) == *equal,
        }
    }
}

/// Which instances an affinity rule is about; only instances of the placed instance's own
/// project match.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Selector {
    /// `instance.name==NAME`.
    Name(String),
    /// `instance.label.KEY==VALUE`.
    Label { key: String, value: String },
}

impl FromStr for Selector {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, ParseError> {
        let bad = || ParseError::Selector(s.to_string());
        let (lhs, value) = s.split_once("==").ok_or_else(bad)?;
        if value.is_empty() {
            return Err(bad());
        }
        if lhs == "instance.name" {
            return Ok(Selector::Name(value.to_string()));
        }
        match lhs.strip_prefix("instance.label.") {
            Some(key) if !key.is_empty() => Ok(Selector::Label {
                key: key.to_string(),
                value: value.to_string(),
            }),
            _ => Err(bad()),
        }
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Selector::Name(n) => write!(f, "instance.name=={n}"),
            Selector::Label { key, value } => write!(f, "instance.label.{key}=={value}"),
        }
    }
}

/// A hard rule about the instances already on a host: affinity requires at least one
/// matching instance there, anti-affinity none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AffinityRule {
    pub anti: bool,
    pub selector: Selector,
}

impl fmt::Display for AffinityRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = if self.anti {
            "anti-affinity"
        } else {
            "affinity"
        };
        write!(f, "{kind} {}", self.selector)
    }
}

/// What a placement asks for.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct InstanceRequest {
    pub project: String,
    pub id: String,
    pub name: String,
    pub labels: Labels,
    pub resources: Resources,
    /// Host ports the instance publishes.
    pub ports: Vec<HostPort>,
    pub constraints: Vec<Constraint>,
    pub affinity: Vec<AffinityRule>,
    pub strategy: Strategy,
    /// Carried into the assignment for the host's agent (see [`Assignment::spec`]).
    pub spec: Option<serde_json::Value>,
}

impl InstanceRequest {
    /// `project/id`, the instance's key in the pool.
    pub fn instance(&self) -> String {
        format!("{}/{}", self.project, self.id)
    }

    /// Refuses what cannot be stored or matched: empty names, `/` in a project or ID, a
    /// host port asked for twice.
    pub fn validate(&self) -> Result<(), ParseError> {
        for (what, v) in [("project", &self.project), ("instance ID", &self.id)] {
            if v.is_empty() || v.contains('/') {
                return Err(ParseError::Name {
                    what,
                    value: v.clone(),
                });
            }
        }
        if self.name.is_empty() {
            return Err(ParseError::Name {
                what: "instance name",
                value: String::new(),
            });
        }
        let mut seen = BTreeSet::new();
        for p in &self.ports {
            if !seen.insert(*p) {
                return Err(ParseError::DuplicatePort(*p));
            }
        }
        Ok(())
    }

    /// The assignment this request becomes on `host`.
    pub fn assignment(&self, host: &str) -> Assignment {
        Assignment {
            project: self.project.clone(),
            id: self.id.clone(),
            name: self.name.clone(),
            labels: self.labels.clone(),
            host: host.to_string(),
            resources: self.resources,
            ports: self.ports.clone(),
            spec: self.spec.clone(),
            start: false,
            moved_from: None,
        }
    }
}

/// Bad placement input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("bad constraint {0:?}: use host.label.KEY==VALUE, host.label.KEY!=VALUE, host.id==ID or host.id!=ID")]
    Constraint(String),
    #[error("bad instance selector {0:?}: use instance.name==NAME or instance.label.KEY==VALUE")]
    Selector(String),
    #[error(
        "bad host port {0:?}: use PORT or PORT/tcp, PORT/udp, PORT/sctp with PORT from 1 to 65535"
    )]
    Port(String),
    #[error("bad placement strategy {0:?}: use spread or binpack")]
    Strategy(String),
    #[error("bad {what} {value:?}: it must be non-empty and hold no '/'")]
    Name { what: &'static str, value: String },
    #[error("host port {0} is asked for twice; ask for each once")]
    DuplicatePort(HostPort),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_constraints_and_prints_them_back() {
        for s in [
            "host.label.zone==a",
            "host.label.zone!=a",
            "host.id==h1",
            "host.id!=h1",
            "host.label.k==v==w",
        ] {
            let c: Constraint = s.parse().unwrap();
            assert_eq!(c.to_string(), s);
        }
        let c: Constraint = "host.label.disk!=a==b".parse().unwrap();
        assert_eq!(
            c,
            Constraint::Label {
                key: "disk".into(),
                value: "a==b".into(),
                equal: false
            }
        );
        for bad in [
            "",
            "zone==a",
            "host.label.==a",
            "host.label.zone==",
            "host.label.zone=a",
            "host.name==a",
        ] {
            let e = bad.parse::<Constraint>().unwrap_err();
            assert!(e.to_string().contains("host.label.KEY==VALUE"), "{e}");
        }
    }

    #[test]
    fn label_not_equal_admits_a_host_without_the_label() {
        let labels: Labels = [("zone".to_string(), "a".to_string())].into();
        let ne: Constraint = "host.label.disk!=hdd".parse().unwrap();
        assert!(ne.admits("h", &labels));
        let ne: Constraint = "host.label.zone!=a".parse().unwrap();
        assert!(!ne.admits("h", &labels));
        let eq: Constraint = "host.label.disk==hdd".parse().unwrap();
        assert!(!eq.admits("h", &labels));
        let id: Constraint = "host.id!=h".parse().unwrap();
        assert!(!id.admits("h", &labels));
        assert!(id.admits("g", &labels));
    }

    #[test]
    fn parses_selectors_ports_and_strategies() {
        let s: Selector = "instance.label.app==db".parse().unwrap();
        assert_eq!(s.to_string(), "instance.label.app==db");
        let s: Selector = "instance.name==web-1".parse().unwrap();
        assert_eq!(s, Selector::Name("web-1".into()));
        assert!("instance.name!=x".parse::<Selector>().is_err());
        assert!("instance.id==x".parse::<Selector>().is_err());
        assert_eq!(
            "53/udp".parse::<HostPort>().unwrap(),
            HostPort {
                proto: Proto::Udp,
                port: 53
            }
        );
        assert_eq!("80".parse::<HostPort>().unwrap().to_string(), "80/tcp");
        for bad in ["0", "65536", "80/icmp", "x/tcp"] {
            assert!(bad.parse::<HostPort>().is_err(), "{bad}");
        }
        assert_eq!("binpack".parse::<Strategy>().unwrap(), Strategy::Binpack);
        assert!("random".parse::<Strategy>().is_err());
    }

    #[test]
    fn validate_refuses_slashes_and_repeated_ports() {
        let mut r = InstanceRequest {
            project: "default".into(),
            id: "i1".into(),
            name: "web".into(),
            ..Default::default()
        };
        r.validate().unwrap();
        r.ports = vec!["80".parse().unwrap(), "80/tcp".parse().unwrap()];
        assert_eq!(
            r.validate().unwrap_err().to_string(),
            "host port 80/tcp is asked for twice; ask for each once"
        );
        r.ports.clear();
        r.id = "a/b".into();
        assert!(r.validate().is_err());
    }
}
