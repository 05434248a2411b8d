//! Docker Engine API wire types: the request bodies and response shapes of Docker's API
//! (1.24 to 1.43), and the conversions between them and Pier's records that need no
//! engine state. The daemon's Docker server reads and writes these (as moby keeps its
//! `api/types` apart from the daemon); the engine only fills the facts of
//! [`container::ContainerFacts`] and shares Docker's reading of references and times.
//!
//! - [`archive`]: the stat of `docker cp`.
//! - [`create`]: the create body (`Config`, `HostConfig`, `NetworkingConfig`) as Pier's
//!   [`ContainerCreate`](crate::containers::ContainerCreate).
//! - [`mounts`]: `-v`, `--mount`, `--tmpfs` as Pier's mount specs, and back.
//! - [`container`]: a container in Docker's inspect and listing shapes.
//! - [`networks`]: networks in Docker's shape, and the create and connect bodies.
//! - [`images`]: an image in Docker's listing, inspect and history shapes.
//! - [`query`]: query strings as Docker's clients send them.
//! - [`stats`]: a container's readings in Docker's stats shape.
//! - [`system`]: the daemon's facts as `/info` shows them.
//! - [`version`]: the API versions served, a path's version, `/version`.
//!
//! A refusal ([`Refused`]) carries the HTTP status Docker answers with; the server maps
//! it onto its error response.

pub mod archive;
pub mod build;
pub mod container;
pub mod create;
pub mod exec;
pub mod images;
pub mod mounts;
pub mod networks;
pub mod query;
pub mod stats;
pub mod system;
pub mod version;

/// The network a container joins when none is named.
pub const DEFAULT_NETWORK: &str = "bridge";

/// Go's zero time, which Docker shows for times that never happened.
pub const ZERO_TIME: &str = "0001-01-01T00:00:00Z";

/// A request Docker's API refuses: the HTTP status and the message, as Docker words it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Refused {
    pub status: u16,
    pub message: String,
}

impl Refused {
    /// A request that cannot be served as given (400).
    pub fn bad_request(m: impl Into<String>) -> Self {
        Refused {
            status: 400,
            message: m.into(),
        }
    }
}

/// What the Docker conversions return.
pub type Result<T> = std::result::Result<T, Refused>;

/// The answer to an endpoint of a Docker feature Pier does not have (swarm, plugins,
/// BuildKit sessions, remote manifests), saying what to do instead.
pub fn unsupported(method: &str, path: &str) -> Refused {
    let first = path.trim_start_matches('/').split('/').next().unwrap_or("");
    let (status, message) = match first {
        "swarm" | "nodes" | "services" | "tasks" | "secrets" | "configs" => (503, "This node is not a swarm manager: pier does not do swarm mode; run services with docker-compose instead".to_string()),
        "plugins" => (501, "pier does not support Docker plugins".to_string()),
        "session" | "grpc" => (501, "BuildKit sessions are not supported by pier: build with the classic builder (DOCKER_BUILDKIT=0)".to_string()),
        "distribution" => (501, "pier does not look up remote manifests through the Docker API yet; pull the image instead".to_string()),
        _ => (501, format!("{method} {path} is not supported by pier's Docker API")),
    };
    Refused { status, message }
}

/// Unix seconds of an RFC 3339 time, 0 when absent or unreadable.
pub fn unix(t: Option<&str>) -> i64 {
    t.and_then(crate::time::parse_rfc3339).unwrap_or(0)
}

/// Docker's reading of an image reference: `bb` is `bb:latest`.
pub fn normalize_ref(r: &str) -> String {
    match r.parse::<crate::ImageRef>() {
        Ok(p) if p.tag().is_none() && p.digest().is_none() => format!("{r}:latest"),
        _ => r.to_string(),
    }
}

/// A stable hex string of `len` digits derived from `parts` (FNV-1a rounds): IDs Docker
/// has and Pier does not keep (endpoints, sandboxes, the daemon).
pub fn derived_id(parts: &[&str], len: usize) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut out = String::new();
    let mut round = 0u8;
    while out.len() < len {
        for b in parts
            .iter()
            .flat_map(|p| p.bytes().chain([0]))
            .chain([round])
        {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        out.push_str(&format!("{h:016x}"));
        round += 1;
    }
    out.truncate(len);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_ids_are_stable_hex_of_the_asked_length() {
        let a = derived_id(&["x", "y"], 64);
        assert_eq!(a.len(), 64);
        assert!(a.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(a, derived_id(&["x", "y"], 64));
        assert_ne!(a, derived_id(&["xy"], 64));
        assert_eq!(&derived_id(&["x", "y"], 12), &a[..12]);
    }

    #[test]
    fn references_and_times_read_as_dockers() {
        assert_eq!(normalize_ref("bb:1"), "bb:1");
        assert_eq!(unix(Some("1970-01-01T00:01:00Z")), 60);
        assert_eq!(unix(None), 0);
    }

    #[test]
    fn unsupported_features_say_what_to_do_instead() {
        let swarm = unsupported("GET", "/swarm");
        assert_eq!(swarm.status, 503);
        assert!(swarm.message.contains("docker-compose"), "{swarm}");
        assert_eq!(unsupported("POST", "/services/create").status, 503);
        assert!(unsupported("POST", "/session")
            .message
            .contains("DOCKER_BUILDKIT=0"));
        assert!(unsupported("GET", "/distribution/bb/json")
            .message
            .contains("pull"));
        let other = unsupported("PUT", "/nothing/here");
        assert_eq!(other.status, 501);
        assert_eq!(
            other.message,
            "PUT /nothing/here is not supported by pier's Docker API"
        );
    }
}
