//! Who may pull and push where.
//!
//! Without an [`AuthConfig`] the registry is open to every client that reaches it (the
//! default, for a registry on loopback or a private network). With one, a request needs
//! either HTTP basic credentials of a configured user, or a bearer token this registry
//! issued at `/v2/token` (the Docker token protocol: a client that gets a 401 with
//! `WWW-Authenticate: Bearer realm=...,service=...,scope=...` asks the realm for a token
//! for the scope, with its basic credentials or none, and retries). Pulls need no
//! credentials when `anonymous_pull` is on.
//!
//! Each user has `pull` and `push` lists of repository patterns: `*` (every repository),
//! `prefix/*` (every repository under `prefix/`) or an exact name; push implies pull.
//! Tokens are `base64(claims).base64(HMAC-SHA256(key, claims))` with a key drawn at
//! start, valid for five minutes, and carry exactly the access granted.

use std::collections::BTreeMap;
use std::path::Path;

use axum::http::{header, HeaderMap};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::b64;
use crate::error::{RegistryError, Result};
use crate::Registry;

/// What a request wants to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Pull,
    Push,
    /// List every repository.
    Catalog,
}

impl Access {
    fn action(self) -> &'static str {
        match self {
            Access::Pull => "pull",
            Access::Push => "push",
            Access::Catalog => "*",
        }
    }
}

/// One user of the registry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct User {
    pub password: String,
    #[serde(default)]
    pub pull: Vec<String>,
    #[serde(default)]
    pub push: Vec<String>,
}

/// The registry's users and policy (`pier daemon --registry-auth FILE`, JSON).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    #[serde(default)]
    pub anonymous_pull: bool,
    #[serde(default)]
    pub users: BTreeMap<String, User>,
}

impl AuthConfig {
    pub fn load(path: &Path) -> std::result::Result<Self, String> {
        let bytes =
            std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        serde_json::from_slice(&bytes)
            .map_err(|e| format!("{} is not a valid registry auth file: {e}", path.display()))
    }
}

fn matches(pattern: &str, repo: &str) -> bool {
    pattern == "*"
        || pattern == repo
        || pattern
            .strip_suffix("/*")
            .is_some_and(|p| repo.strip_prefix(p).is_some_and(|r| r.starts_with('/')))
}

/// The auth state of a running registry.
pub struct Auth {
    config: AuthConfig,
    key: [u8; 32],
    /// Whether the registry serves TLS (for the realm in challenges).
    pub tls: bool,
}

/// Access a token grants on one repository.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Grant {
    #[serde(rename = "type")]
    pub kind: String,
    pub name: String,
    pub actions: Vec<String>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    sub: String,
    exp: i64,
    access: Vec<Grant>,
}

const TOKEN_SECS: i64 = 300;

fn hmac(key: &[u8; 32], msg: &[u8]) -> [u8; 32] {
    let mut ipad = [0x36u8; 64];
    let mut opad = [0x5cu8; 64];
    for (i, k) in key.iter().enumerate() {
        ipad[i] ^= k;
        opad[i] ^= k;
    }
    let inner = Sha256::new()
        .chain_update(ipad)
        .chain_update(msg)
        .finalize();
    Sha256::new()
        .chain_update(opad)
        .chain_update(inner)
        .finalize()
        .into()
}

/// Compares without an early exit.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Auth {
    pub fn new(config: AuthConfig, tls: bool) -> Self {
        let mut key = [0u8; 32];
        let _ = std::fs::File::open("/dev/urandom")
            .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut key));
        Auth { config, key, tls }
    }

    /// The user whose basic credentials these are.
    fn user(&self, headers: &HeaderMap) -> Result<Option<(String, &User)>> {
        let Some(v) = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
        else {
            return Ok(None);
        };
        let Some(enc) = v.strip_prefix("Basic ") else {
            return Ok(None);
        };
        let bad = || RegistryError::Unauthorized {
            challenge: "Basic realm=\"pier\"".into(),
        };
        let plain = b64::decode(enc.trim())
            .and_then(|b| String::from_utf8(b).ok())
            .ok_or_else(bad)?;
        let (name, pass) = plain.split_once(':').ok_or_else(bad)?;
        match self.config.users.get(name) {
            Some(u) if same(u.password.as_bytes(), pass.as_bytes()) => {
                Ok(Some((name.to_string(), u)))
            }
            _ => Err(bad()),
        }
    }

    fn allowed(&self, user: Option<&User>, repo: &str, action: &str) -> bool {
        let pull = |u: &User| u.pull.iter().chain(&u.push).any(|p| matches(p, repo));
        match (user, action) {
            (None, "pull") => self.config.anonymous_pull,
            (None, _) => false,
            (Some(u), "pull") => pull(u),
            (Some(u), "push") => u.push.iter().any(|p| matches(p, repo)),
            (Some(u), "*") => u.pull.iter().chain(&u.push).any(|p| p == "*"),
            _ => false,
        }
    }

    fn token_claims(&self, token: &str) -> Option<Claims> {
        let (body, sig) = token.split_once('.')?;
        let expected = hmac(&self.key, body.as_bytes());
        if !same(&b64::decode(sig)?, &expected) {
            return None;
        }
        let claims: Claims = serde_json::from_slice(&b64::decode(body)?).ok()?;
        (claims.exp > pier_api::time::now_unix()).then_some(claims)
    }

    /// `GET /v2/token?service=...&scope=...`: grants what was asked and is allowed.
    pub fn issue(&self, headers: &HeaderMap, scopes: &[String]) -> Result<serde_json::Value> {
        let user = self.user(headers)?;
        let mut access = Vec::new();
        for s in scopes {
            let mut parts = s.splitn(3, ':');
            let (Some(kind), Some(name), Some(actions)) =
                (parts.next(), parts.next(), parts.next())
            else {
                continue;
            };
            let granted: Vec<String> = actions
                .split(',')
                .filter(|a| {
                    let repo_ok =
                        kind == "repository" && crate::names::check_repository(name).is_ok();
                    let catalog = kind == "registry" && name == "catalog" && *a == "*";
                    (repo_ok || catalog) && self.allowed(user.as_ref().map(|(_, u)| *u), name, a)
                })
                .map(str::to_string)
                .collect();
            if !granted.is_empty() {
                access.push(Grant {
                    kind: kind.into(),
                    name: name.into(),
                    actions: granted,
                });
            }
        }
        let claims = Claims {
            sub: user.map(|(n, _)| n).unwrap_or_default(),
            exp: pier_api::time::now_unix() + TOKEN_SECS,
            access,
        };
        let body = b64::encode(&serde_json::to_vec(&claims).expect("json"));
        let token = format!("{body}.{}", b64::encode(&hmac(&self.key, body.as_bytes())));
        Ok(serde_json::json!({
            "token": token, "access_token": token, "expires_in": TOKEN_SECS,
            "issued_at": pier_api::time::now_rfc3339(),
        }))
    }

    fn check(&self, headers: &HeaderMap, repo: Option<&str>, access: Access) -> Result<()> {
        let (kind, name) = match (repo, access) {
            (_, Access::Catalog) => ("registry", "catalog"),
            (Some(r), _) => ("repository", r),
            // The base endpoint: any valid credentials (or anonymous pull) will do.
            (None, _) => ("", ""),
        };
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("localhost");
        let scheme = if self.tls { "https" } else { "http" };
        let mut challenge = format!("Bearer realm=\"{scheme}://{host}/v2/token\",service=\"pier\"");
        if !kind.is_empty() {
            challenge.push_str(&format!(",scope=\"{kind}:{name}:{}\"", access.action()));
        }
        let unauthorized = || RegistryError::Unauthorized {
            challenge: challenge.clone(),
        };
        let bearer = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if let Some(t) = bearer {
            let claims = self.token_claims(t.trim()).ok_or_else(unauthorized)?;
            if kind.is_empty() {
                return Ok(());
            }
            let ok = claims.access.iter().any(|g| {
                g.kind == kind && g.name == name && g.actions.iter().any(|a| a == access.action())
            });
            return if ok { Ok(()) } else { Err(unauthorized()) };
        }
        match self.user(headers) {
            Err(_) => Err(unauthorized()),
            Ok(Some((_, u))) => {
                if kind.is_empty() || self.allowed(Some(u), name, access.action()) {
                    Ok(())
                } else {
                    Err(RegistryError::Denied(format!(
                        "{} on {name}",
                        access.action()
                    )))
                }
            }
            Ok(None) => {
                if access == Access::Pull && self.config.anonymous_pull {
                    Ok(())
                } else {
                    Err(unauthorized())
                }
            }
        }
    }
}

impl Registry {
    /// Checks that the caller may do `access` on `repo` (`None`: the registry itself).
    pub fn authorize(&self, headers: &HeaderMap, repo: Option<&str>, access: Access) -> Result<()> {
        match &self.auth {
            None => Ok(()),
            Some(a) => a.check(headers, repo, access),
        }
    }
}

impl Registry {
    /// A token for `scopes`; when auth is off, a placeholder (every request is allowed).
    pub fn issue_token(&self, headers: &HeaderMap, scopes: &[String]) -> Result<serde_json::Value> {
        match &self.auth {
            Some(a) => a.issue(headers, scopes),
            None => Ok(
                serde_json::json!({ "token": "open", "access_token": "open", "expires_in": TOKEN_SECS }),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn basic(u: &str, p: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(&format!(
                "Basic {}",
                b64::encode(format!("{u}:{p}").as_bytes())
            ))
            .unwrap(),
        );
        h
    }

    #[test]
    fn basic_tokens_and_scopes() {
        let auth = Auth::new(
            serde_json::from_value(serde_json::json!({
                "anonymous_pull": false,
                "users": {
                    "alice": { "password": "a", "push": ["team/*"] },
                    "bob": { "password": "b", "pull": ["*"] },
                }
            }))
            .unwrap(),
            false,
        );
        assert!(
            matches("team/*", "team/app")
                && !matches("team/*", "teamx/app")
                && !matches("team/*", "team")
        );
        assert!(auth
            .check(&basic("alice", "a"), Some("team/app"), Access::Push)
            .is_ok());
        assert!(matches!(
            auth.check(&basic("alice", "a"), Some("other"), Access::Pull),
            Err(RegistryError::Denied(_))
        ));
        assert!(matches!(
            auth.check(&basic("alice", "wrong"), Some("team/app"), Access::Pull),
            Err(RegistryError::Unauthorized { .. })
        ));
        assert!(matches!(
            auth.check(&HeaderMap::new(), Some("team/app"), Access::Pull),
            Err(RegistryError::Unauthorized { .. })
        ));
        assert!(auth
            .check(&basic("bob", "b"), None, Access::Catalog)
            .is_ok());

        let t = auth
            .issue(
                &basic("alice", "a"),
                &[
                    "repository:team/app:pull,push".into(),
                    "repository:other:pull".into(),
                ],
            )
            .unwrap();
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(&format!("Bearer {}", t["token"].as_str().unwrap())).unwrap(),
        );
        assert!(auth.check(&h, Some("team/app"), Access::Push).is_ok());
        assert!(auth.check(&h, Some("other"), Access::Pull).is_err());
        // A forged token is refused.
        let forged = t["token"].as_str().unwrap().replace('.', "x.");
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(&format!("Bearer {forged}")).unwrap(),
        );
        assert!(auth.check(&h, Some("team/app"), Access::Pull).is_err());
        // Anonymous tokens carry nothing unless anonymous pull is on.
        let anon = auth
            .issue(&HeaderMap::new(), &["repository:team/app:pull".into()])
            .unwrap();
        let claims = auth.token_claims(anon["token"].as_str().unwrap()).unwrap();
        assert!(claims.access.is_empty());
    }
}
