//! The bearer tokens the registry issues at `/v2/token` and checks on every request:
//! `base64url(claims).base64url(HMAC-SHA256(key, the first part))`, with claims saying
//! who (`sub`), until when (`exp`, Unix seconds) and exactly which access was granted.
//!
//! The key is 32 bytes from the kernel's random source, drawn when the daemon starts (a
//! failure to draw it stops the start), so tokens do not outlive the daemon. HMAC is
//! [`ring::hmac`], whose verification is constant-time.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ring::hmac;
use serde::{Deserialize, Serialize};

/// Access a token grants on one resource (`repository:NAME` or `registry:catalog`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Grant {
    #[serde(rename = "type")]
    pub kind: String,
    pub name: String,
    pub actions: Vec<String>,
}

/// What a token says.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Claims {
    /// The user; empty for an anonymous token.
    pub sub: String,
    /// Expiry, Unix seconds.
    pub exp: i64,
    pub access: Vec<Grant>,
}

impl Claims {
    /// Whether the token grants `action` on `kind:name`.
    pub fn grants(&self, kind: &str, name: &str, action: &str) -> bool {
        self.access
            .iter()
            .any(|g| g.kind == kind && g.name == name && g.actions.iter().any(|a| a == action))
    }
}

/// Signs and checks tokens with one key.
pub struct Signer {
    key: hmac::Key,
}

impl Signer {
    /// A signer with a fresh random key.
    pub fn random() -> std::io::Result<Signer> {
        let mut key = [0u8; 32];
        getrandom::fill(&mut key).map_err(std::io::Error::other)?;
        Ok(Signer::with_key(&key))
    }

    pub fn with_key(key: &[u8]) -> Signer {
        Signer {
            key: hmac::Key::new(hmac::HMAC_SHA256, key),
        }
    }

    /// The HMAC key (also used to compare plain-text passwords in constant time).
    pub fn key(&self) -> &hmac::Key {
        &self.key
    }

    pub fn sign(&self, claims: &Claims) -> String {
        let body = URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).expect("claims are JSON"));
        let tag = hmac::sign(&self.key, body.as_bytes());
        format!("{body}.{}", URL_SAFE_NO_PAD.encode(tag.as_ref()))
    }

    /// The claims of `token` when this signer made it and it has not expired at `now`.
    pub fn verify(&self, token: &str, now: i64) -> Option<Claims> {
        let (body, tag) = token.split_once('.')?;
        let tag = URL_SAFE_NO_PAD.decode(tag).ok()?;
        hmac::verify(&self.key, body.as_bytes(), &tag).ok()?;
        let claims: Claims = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(body).ok()?).ok()?;
        (claims.exp > now).then_some(claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(exp: i64) -> Claims {
        Claims {
            sub: "alice".into(),
            exp,
            access: vec![Grant {
                kind: "repository".into(),
                name: "team/app".into(),
                actions: vec!["pull".into()],
            }],
        }
    }

    #[test]
    fn signs_and_verifies() {
        let s = Signer::random().unwrap();
        let c = claims(1_000);
        let t = s.sign(&c);
        assert_eq!(s.verify(&t, 999), Some(c.clone()));
        assert!(c.grants("repository", "team/app", "pull"));
        assert!(!c.grants("repository", "team/app", "push"));
        assert!(!c.grants("repository", "team/other", "pull"));
        // Two random keys differ: neither signer takes the other's tokens.
        assert_eq!(Signer::random().unwrap().verify(&t, 999), None);
    }

    #[test]
    fn tampering_is_refused() {
        let s = Signer::with_key(b"k");
        let t = s.sign(&claims(1_000));
        let (body, tag) = t.split_once('.').unwrap();
        // Claims rewritten to push, with the old tag.
        let mut forged = claims(1_000);
        forged.access[0].actions.push("push".into());
        let forged_body = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&forged).unwrap());
        assert_eq!(s.verify(&format!("{forged_body}.{tag}"), 0), None);
        // A later expiry, with the old tag.
        let later = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims(9_999)).unwrap());
        assert_eq!(s.verify(&format!("{later}.{tag}"), 0), None);
        // A flipped tag byte, a cut tag, no tag, another key's tag.
        let mut raw = URL_SAFE_NO_PAD.decode(tag).unwrap();
        raw[0] ^= 1;
        let flipped = URL_SAFE_NO_PAD.encode(&raw);
        assert_eq!(s.verify(&format!("{body}.{flipped}"), 0), None);
        assert_eq!(s.verify(&format!("{body}.{}", &tag[..10]), 0), None);
        assert_eq!(s.verify(body, 0), None);
        assert_eq!(s.verify(&format!("{body}."), 0), None);
        assert_eq!(Signer::with_key(b"other").verify(&t, 0), None);
        assert!(s.verify(&t, 0).is_some());
    }

    #[test]
    fn expired_tokens_are_refused() {
        let s = Signer::with_key(b"k");
        let t = s.sign(&claims(1_000));
        assert!(s.verify(&t, 999).is_some());
        assert_eq!(s.verify(&t, 1_000), None);
        assert_eq!(s.verify(&t, 5_000), None);
    }
}
