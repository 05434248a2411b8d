//! Who may pull and push where.
//!
//! Without an [`AuthConfig`] the registry is open to every client that reaches it (the
//! default, for a registry on loopback or a private network). With one it answers as
//! Docker's registry does with token auth: the base endpoint `/v2/` answers 401 with
//! `WWW-Authenticate: Bearer realm=".../v2/token",service="pier"` to a client that
//! brings no credentials, so every client (docker, podman, skopeo, Pier's own) learns
//! the token realm before its first real request and logs in when it has credentials. A
//! client asks the realm for a token for the scopes it needs (`repository:NAME:pull,push`),
//! with HTTP basic credentials or none, and sends it as `Authorization: Bearer ...`
//! ([`crate::token`]). A request whose token lacks the access gets a 401 naming the
//! scope it needs (`error="insufficient_scope"`), as the token protocol says.
//!
//! With `anonymous_pull` on, a client without credentials gets a token with pull access
//! to every repository (and nothing else), and may also pull with no token at all.
//! Basic credentials are also taken on every endpoint (curl -u).
//!
//! Each user has `pull` and `push` lists of repository patterns: `*` (every repository),
//! `prefix/*` (every repository under `prefix/`) or an exact name; push implies pull.
//! Passwords are hashes ([`pier_password`]).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, OnceLock};

use axum::http::{header, HeaderMap};
use serde::Deserialize;

use crate::error::{RegistryError, Result};
use crate::token::{Claims, Grant, Signer};
use crate::Registry;
use pier_password::Secret;
use pier_registry_client::b64;

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

/// One user of the registry, as the auth file says.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct User {
    /// An argon2 (PHC string) or bcrypt hash of the password.
    #[serde(default)]
    pub password: Option<String>,
    /// The password as plain text: an explicit opt-in, warned about at start.
    #[serde(default)]
    pub password_plain: Option<String>,
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
    /// Reads and checks the auth file: every password must be a hash unless the user
    /// opted into plain text (`password_plain`), which is logged as a warning.
    pub fn load(path: &Path) -> std::result::Result<Self, String> {
        let bytes =
            std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let config: AuthConfig = serde_json::from_slice(&bytes)
            .map_err(|e| format!("{} is not a valid registry auth file: {e}", path.display()))?;
        for (name, secret) in config
            .secrets()
            .map_err(|e| format!("{}: {e}", path.display()))?
        {
            if secret.is_plain() {
                tracing::warn!(
                    file = %path.display(),
                    user = %name,
                    "the registry user's password is stored as plain text (password_plain); \
                     store a hash instead (pier registry hash-password)"
                );
            }
        }
        Ok(config)
    }

    fn secrets(&self) -> std::result::Result<Vec<(String, Secret)>, String> {
        self.users
            .iter()
            .map(|(name, u)| {
                Secret::of(name, u.password.as_deref(), u.password_plain.as_deref())
                    .map(|s| (name.clone(), s))
            })
            .collect()
    }
}

fn matches(pattern: &str, repo: &str) -> bool {
    pattern == "*"
        || pattern == repo
        || pattern
            .strip_suffix("/*")
            .is_some_and(|p| repo.strip_prefix(p).is_some_and(|r| r.starts_with('/')))
}

/// A user as the running registry holds it.
struct Account {
    secret: Secret,
    pull: Vec<String>,
    push: Vec<String>,
}

/// The auth state of a running registry.
pub struct Auth {
    anonymous_pull: bool,
    users: BTreeMap<String, Arc<Account>>,
    signer: Signer,
    /// Password checks running at once (each holds a core and, for argon2, 19 MiB).
    checks: tokio::sync::Semaphore,
    /// Whether the registry serves TLS (for the realm in challenges).
    pub tls: bool,
}

const TOKEN_SECS: i64 = 300;

/// A hash an unknown user's password is checked against, so that a wrong name costs
/// what a wrong password does.
fn decoy() -> &'static Secret {
    static DECOY: OnceLock<Secret> = OnceLock::new();
    DECOY.get_or_init(|| Secret::Argon2(pier_password::hash("no such user").unwrap_or_default()))
}

impl Auth {
    /// Checks every password entry and draws a fresh token-signing key.
    pub fn new(config: AuthConfig, tls: bool) -> Result<Self> {
        let secrets = config.secrets().map_err(RegistryError::AuthConfig)?;
        let signer = Signer::random().map_err(RegistryError::io(
            "draw the token-signing key from the kernel's random source",
        ))?;
        let users = secrets
            .into_iter()
            .map(|(name, secret)| {
                let u = &config.users[&name];
                let account = Account {
                    secret,
                    pull: u.pull.clone(),
                    push: u.push.clone(),
                };
                (name, Arc::new(account))
            })
            .collect();
        let parallel = std::thread::available_parallelism().map_or(2, |n| n.get().min(4));
        Ok(Auth {
            anonymous_pull: config.anonymous_pull,
            users,
            signer,
            checks: tokio::sync::Semaphore::new(parallel),
            tls,
        })
    }

    /// The user whose basic credentials these are; `Ok(None)` without basic credentials.
    async fn user(&self, headers: &HeaderMap) -> Result<Option<(String, Arc<Account>)>> {
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
        let account = self.users.get(name).cloned();
        let secret = account
            .as_ref()
            .map_or_else(|| decoy().clone(), |a| a.secret.clone());
        let ok = if secret.is_plain() {
            secret.verify(pass.as_bytes(), self.signer.key())
        } else {
            let _slot = self.checks.acquire().await.map_err(|_| bad())?;
            let (pass, key) = (pass.to_string(), self.signer.key().clone());
            tokio::task::spawn_blocking(move || secret.verify(pass.as_bytes(), &key))
                .await
                .unwrap_or(false)
        };
        match account {
            Some(a) if ok => Ok(Some((name.to_string(), a))),
            _ => Err(bad()),
        }
    }

    fn allowed(&self, user: Option<&Account>, repo: &str, action: &str) -> bool {
        let listed = |l: &[String]| l.iter().any(|p| matches(p, repo));
        match (user, action) {
            (None, "pull") => self.anonymous_pull,
            (None, _) => false,
            (Some(u), "pull") => self.anonymous_pull || listed(&u.pull) || listed(&u.push),
            (Some(u), "push") => listed(&u.push),
            (Some(u), "*") => u.pull.iter().chain(&u.push).any(|p| p == "*"),
            _ => false,
        }
    }

    /// `GET /v2/token?service=...&scope=...`: grants what was asked and is allowed.
    pub async fn issue(&self, headers: &HeaderMap, scopes: &[String]) -> Result<serde_json::Value> {
        let user = self.user(headers).await?;
        let account = user.as_ref().map(|(_, a)| a.as_ref());
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
                    (repo_ok || catalog) && self.allowed(account, name, a)
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
        let token = self.signer.sign(&claims);
        Ok(serde_json::json!({
            "token": token, "access_token": token, "expires_in": TOKEN_SECS,
            "issued_at": pier_api::time::now_rfc3339(),
        }))
    }

    async fn check(&self, headers: &HeaderMap, repo: Option<&str>, access: Access) -> Result<()> {
        let (kind, name, actions) = match (repo, access) {
            (_, Access::Catalog) => ("registry", "catalog", "*"),
            // A push also reads (HEAD of blobs, mounts): ask for both, as Docker's does.
            (Some(r), Access::Push) => ("repository", r, "pull,push"),
            (Some(r), Access::Pull) => ("repository", r, "pull"),
            // The base endpoint: any valid credentials or token will do.
            (None, _) => ("", "", ""),
        };
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("localhost");
        let scheme = if self.tls { "https" } else { "http" };
        let unauthorized = |error: Option<&str>| {
            let mut challenge =
                format!("Bearer realm=\"{scheme}://{host}/v2/token\",service=\"pier\"");
            if !kind.is_empty() {
                challenge.push_str(&format!(",scope=\"{kind}:{name}:{actions}\""));
            }
            if let Some(e) = error {
                challenge.push_str(&format!(",error=\"{e}\""));
            }
            RegistryError::Unauthorized { challenge }
        };
        let bearer = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if let Some(t) = bearer {
            let claims = self
                .signer
                .verify(t.trim(), pier_api::time::now_unix())
                .ok_or_else(|| unauthorized(Some("invalid_token")))?;
            return if kind.is_empty() || claims.grants(kind, name, access.action()) {
                Ok(())
            } else {
                Err(unauthorized(Some("insufficient_scope")))
            };
        }
        match self.user(headers).await {
            Err(_) => Err(unauthorized(None)),
            Ok(Some((_, u))) => {
                if kind.is_empty() || self.allowed(Some(&u), name, access.action()) {
                    Ok(())
                } else {
                    Err(RegistryError::Denied(format!(
                        "{} on {name}",
                        access.action()
                    )))
                }
            }
            // No credentials: only a pull of a repository, and only when anonymous
            // pulls are on; `/v2/` always challenges, so clients learn the realm.
            Ok(None) if !kind.is_empty() && self.allowed(None, name, access.action()) => Ok(()),
            Ok(None) => Err(unauthorized(None)),
        }
    }
}

impl Registry {
    /// Checks that the caller may do `access` on `repo` (`None`: the registry itself).
    pub async fn authorize(
        &self,
        headers: &HeaderMap,
        repo: Option<&str>,
        access: Access,
    ) -> Result<()> {
        match &self.auth {
            None => Ok(()),
            Some(a) => a.check(headers, repo, access).await,
        }
    }

    /// A token for `scopes`; when auth is off, a placeholder (every request is allowed).
    pub async fn issue_token(
        &self,
        headers: &HeaderMap,
        scopes: &[String],
    ) -> Result<serde_json::Value> {
        match &self.auth {
            Some(a) => a.issue(headers, scopes).await,
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

    fn bearer(t: &serde_json::Value) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(&format!("Bearer {}", t["token"].as_str().unwrap())).unwrap(),
        );
        h
    }

    fn challenge(r: Result<()>) -> String {
        match r {
            Err(RegistryError::Unauthorized { challenge }) => challenge,
            other => panic!("not a challenge: {other:?}"),
        }
    }

    fn auth(anonymous_pull: bool) -> Auth {
        Auth::new(
            serde_json::from_value(serde_json::json!({
                "anonymous_pull": anonymous_pull,
                "users": {
                    "alice": { "password": pier_password::hash("a").unwrap(), "push": ["team/*"] },
                    "bob": { "password_plain": "b", "pull": ["*"] },
                }
            }))
            .unwrap(),
            false,
        )
        .unwrap()
    }

    #[tokio::test]
    async fn basic_tokens_and_scopes() {
        let auth = auth(false);
        assert!(
            matches("team/*", "team/app")
                && !matches("team/*", "teamx/app")
                && !matches("team/*", "team")
        );
        assert!(auth
            .check(&basic("alice", "a"), Some("team/app"), Access::Push)
            .await
            .is_ok());
        assert!(matches!(
            auth.check(&basic("alice", "a"), Some("other"), Access::Pull)
                .await,
            Err(RegistryError::Denied(_))
        ));
        for (u, p) in [("alice", "wrong"), ("bob", "a"), ("nobody", "a")] {
            assert!(matches!(
                auth.check(&basic(u, p), Some("team/app"), Access::Pull)
                    .await,
                Err(RegistryError::Unauthorized { .. })
            ));
        }
        let c = challenge(
            auth.check(&HeaderMap::new(), Some("team/app"), Access::Push)
                .await,
        );
        assert!(c.contains("scope=\"repository:team/app:pull,push\""), "{c}");
        assert!(auth
            .check(&basic("bob", "b"), None, Access::Catalog)
            .await
            .is_ok());

        let t = auth
            .issue(
                &basic("alice", "a"),
                &[
                    "repository:team/app:pull,push".into(),
                    "repository:other:pull".into(),
                ],
            )
            .await
            .unwrap();
        let h = bearer(&t);
        assert!(auth.check(&h, Some("team/app"), Access::Push).await.is_ok());
        let c = challenge(auth.check(&h, Some("other"), Access::Pull).await);
        assert!(c.contains("error=\"insufficient_scope\""), "{c}");
        // A forged token is refused.
        let forged = t["token"].as_str().unwrap().replace('.', "x.");
        let c = challenge(
            auth.check(
                &bearer(&serde_json::json!({ "token": forged })),
                Some("team/app"),
                Access::Pull,
            )
            .await,
        );
        assert!(c.contains("error=\"invalid_token\""), "{c}");
        // Wrong credentials get no token at all.
        assert!(auth
            .issue(&basic("alice", "b"), &["repository:team/app:pull".into()])
            .await
            .is_err());
        // Anonymous tokens carry nothing unless anonymous pull is on.
        let anon = auth
            .issue(&HeaderMap::new(), &["repository:team/app:pull".into()])
            .await
            .unwrap();
        let claims = auth
            .signer
            .verify(anon["token"].as_str().unwrap(), 0)
            .unwrap();
        assert!(claims.access.is_empty());
    }

    #[tokio::test]
    async fn the_base_endpoint_challenges_even_with_anonymous_pull() {
        let auth = auth(true);
        // No credentials: a challenge naming the realm, so clients log in.
        let c = challenge(auth.check(&HeaderMap::new(), None, Access::Pull).await);
        assert_eq!(
            c,
            "Bearer realm=\"http://localhost/v2/token\",service=\"pier\""
        );
        // Anonymous pulls go on, with or without a token; pushes do not.
        assert!(auth
            .check(&HeaderMap::new(), Some("any/repo"), Access::Pull)
            .await
            .is_ok());
        assert!(auth
            .check(&HeaderMap::new(), Some("team/app"), Access::Push)
            .await
            .is_err());
        let anon = auth
            .issue(&HeaderMap::new(), &["repository:team/app:pull,push".into()])
            .await
            .unwrap();
        let h = bearer(&anon);
        assert!(auth.check(&h, None, Access::Pull).await.is_ok());
        assert!(auth.check(&h, Some("team/app"), Access::Pull).await.is_ok());
        assert!(auth
            .check(&h, Some("team/app"), Access::Push)
            .await
            .is_err());
        // A user's token covers what anonymous clients may pull too.
        let t = auth
            .issue(
                &basic("alice", "a"),
                &[
                    "repository:team/app:pull,push".into(),
                    "repository:other:pull".into(),
                ],
            )
            .await
            .unwrap();
        let h = bearer(&t);
        assert!(auth.check(&h, Some("team/app"), Access::Push).await.is_ok());
        assert!(auth.check(&h, Some("other"), Access::Pull).await.is_ok());
        assert!(auth.check(&h, Some("other"), Access::Push).await.is_err());
    }

    #[test]
    fn plain_text_passwords_need_the_opt_in() {
        let config: AuthConfig = serde_json::from_value(serde_json::json!({
            "users": { "ci": { "password": "hunter2", "push": ["*"] } }
        }))
        .unwrap();
        let e = Auth::new(config, false).err().unwrap().to_string();
        assert!(
            e.contains("not plain text") && e.contains("password_plain"),
            "{e}"
        );
    }
}
