//! Docker API versions: the range served, the version a request's path names (taken off
//! the path before routing), and `/version`.

use serde_json::{json, Value};

/// The oldest API version served.
pub const MIN_API: (u32, u32) = (1, 24);
/// The newest API version served. 1.43 is what both CLIs on these machines (20.10, which
/// speaks up to 1.41, and 28, which speaks up to 1.50) negotiate down to cleanly, and the
/// last version before Docker changed the shapes of network endpoints at create (1.44).
pub const MAX_API: (u32, u32) = (1, 43);

/// The Docker-compatible daemon version reported to clients.
pub const DOCKER_VERSION: &str = "24.0.0-pier";

/// The API version a request was made with (the newest when its path had none).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ApiVersion(pub u32, pub u32);

impl ApiVersion {
    pub fn at_least(self, minor: u32) -> bool {
        self.0 > 1 || self.1 >= minor
    }
}

pub fn api_string((major, minor): (u32, u32)) -> String {
    format!("{major}.{minor}")
}

/// A request path read for its version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Versioned {
    pub version: ApiVersion,
    /// The path without `/vN.M`, when it had one.
    pub path: Option<String>,
    /// Why the version is refused (outside [`MIN_API`, `MAX_API`]).
    pub refused: Option<String>,
}

/// Reads `/v1.NN/...`: the version, the path without it, and a refusal when out of range.
pub fn strip_version(path: &str) -> Versioned {
    let mut out = Versioned {
        version: ApiVersion(MAX_API.0, MAX_API.1),
        path: None,
        refused: None,
    };
    let Some(rest) = path.strip_prefix("/v") else {
        return out;
    };
    let (v, tail) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let parsed = v
        .split_once('.')
        .and_then(|(a, b)| Some((a.parse::<u32>().ok()?, b.parse::<u32>().ok()?)));
    let Some((major, minor)) = parsed else {
        return out;
    };
    out.version = ApiVersion(major, minor);
    if (major, minor) < MIN_API {
        out.refused = Some(format!(
            "client version {v} is too old. Minimum supported API version is {}, please upgrade your client to a newer version",
            api_string(MIN_API)
        ));
    } else if (major, minor) > MAX_API {
        out.refused = Some(format!(
            "client version {v} is too new. Maximum supported API version is {}",
            api_string(MAX_API)
        ));
    }
    out.path = Some(if tail.is_empty() { "/" } else { tail }.to_string());
    out
}

/// `GET /version`, for this host's architecture and kernel.
pub fn version_json(arch: &str, kernel: &str, pier_version: &str) -> Value {
    let details = json!({
        "ApiVersion": api_string(MAX_API),
        "MinAPIVersion": api_string(MIN_API),
        "GitCommit": "pier",
        "GoVersion": "rust",
        "Os": "linux",
        "Arch": arch,
        "KernelVersion": kernel,
        "Experimental": "false",
        "BuildTime": "",
        "PierVersion": pier_version,
    });
    json!({
        "Platform": {"Name": format!("Pier {}", pier_version)},
        "Components": [{"Name": "Engine", "Version": DOCKER_VERSION, "Details": details}],
        "Version": DOCKER_VERSION,
        "ApiVersion": api_string(MAX_API),
        "MinAPIVersion": api_string(MIN_API),
        "GitCommit": "pier",
        "GoVersion": "rust",
        "Os": "linux",
        "Arch": arch,
        "KernelVersion": kernel,
        "BuildTime": "",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_lose_their_version_and_out_of_range_ones_are_refused() {
        let v = strip_version("/v1.41/containers/json");
        assert_eq!(v.version, ApiVersion(1, 41));
        assert_eq!(v.path.as_deref(), Some("/containers/json"));
        assert!(v.refused.is_none());
        assert_eq!(strip_version("/v1.43").path.as_deref(), Some("/"));
        assert!(strip_version("/v1.12/info")
            .refused
            .unwrap()
            .contains("too old"));
        assert!(strip_version("/v1.50/info")
            .refused
            .unwrap()
            .contains("too new"));
        let plain = strip_version("/volumes");
        assert_eq!((plain.version, plain.path), (ApiVersion(1, 43), None));
        assert_eq!(strip_version("/vx/info").path, None);
        assert!(ApiVersion(1, 41).at_least(40) && !ApiVersion(1, 39).at_least(40));
        let j = version_json("amd64", "6.1", "0.1.0");
        assert_eq!(j["ApiVersion"], "1.43");
        assert_eq!(j["Components"][0]["Details"]["PierVersion"], "0.1.0");
    }
}
