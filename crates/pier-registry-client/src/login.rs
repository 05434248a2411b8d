//! Logging in to a registry (`docker login`, `pier login`): which host a server address
//! names, and whether the registry takes the credentials.

use crate::{ClientConfig, Credentials, Remote};

/// Why a login failed.
#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    /// The registry refused the credentials.
    #[error("login to {host} failed: {why}")]
    Refused { host: String, why: String },
    /// The registry could not be asked.
    #[error("cannot reach {host}: {why}")]
    Unreachable { host: String, why: String },
    /// The client could not be set up for this host.
    #[error("cannot log in to {host}: {why}")]
    Client { host: String, why: String },
}

/// The registry host of a login's server address (`https://index.docker.io/v1/`, the
/// Docker CLI's default, is Docker Hub's registry).
pub fn login_host(server: &str) -> String {
    let s = server
        .trim_start_matches("https://")
        .trim_start_matches("http://");
    match s.split('/').next().unwrap_or("") {
        "" | "index.docker.io" | "docker.io" | "registry-1.docker.io" => {
            "registry-1.docker.io".into()
        }
        h => h.into(),
    }
}

/// Checks `creds` against the registry at `server`: a token handshake where the registry
/// asks for one, then `GET /v2/` with them. Returns the registry host.
pub async fn login(
    server: &str,
    config: &ClientConfig,
    creds: Credentials,
) -> Result<String, LoginError> {
    let host = login_host(server);
    let refused = |why: String| LoginError::Refused {
        host: host.clone(),
        why,
    };
    let remote = Remote::new(&host, config, Some(creds)).map_err(|e| LoginError::Client {
        host: host.clone(),
        why: e.chain(),
    })?;
    remote
        .authenticate("registry:catalog:*")
        .await
        .map_err(|e| refused(e.chain()))?;
    let resp = remote
        .send(hyper::Method::GET, "/v2/", &[], crate::remote::empty())
        .await
        .map_err(|e| LoginError::Unreachable {
            host: host.clone(),
            why: e.chain(),
        })?;
    if resp.status() == hyper::StatusCode::UNAUTHORIZED {
        return Err(refused(
            "unauthorized: incorrect username or password".into(),
        ));
    }
    if !resp.status().is_success() {
        return Err(refused(format!("the registry answered {}", resp.status())));
    }
    Ok(host)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_addresses_name_their_registry_host() {
        for (server, host) in [
            ("https://index.docker.io/v1/", "registry-1.docker.io"),
            ("", "registry-1.docker.io"),
            ("docker.io", "registry-1.docker.io"),
            ("localhost:5000", "localhost:5000"),
            ("http://reg.example:8443/v2/", "reg.example:8443"),
        ] {
            assert_eq!(login_host(server), host, "{server:?}");
        }
    }
}
