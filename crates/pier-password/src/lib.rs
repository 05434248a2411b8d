//! Users' passwords as the registry's auth file stores them, and their checks. A crate of
//! its own so that `pier registry hash-password` (the CLI, no daemon) hashes without
//! linking the registry server.
//!
//! A user's `password` is a hash: argon2 in PHC string form (`$argon2id$v=19$...`, what
//! `pier registry hash-password` prints) or bcrypt (`$2y$...`, what `htpasswd -B`
//! writes). Plain text is only taken as `password_plain`, an explicit opt-in the daemon
//! warns about at start. The crates compare in constant time; a plain-text password is
//! compared through HMAC tags ([`ring::hmac::verify`]), which is constant-time too.
//!
//! Checking a hash costs tens of milliseconds of CPU (and, for argon2's defaults, 19 MiB
//! of memory): callers run [`Secret::verify`] on the blocking pool, a few at a time.

use argon2::password_hash::{PasswordHash, PasswordHasher as _, PasswordVerifier as _, SaltString};
use argon2::Argon2;
use ring::hmac;

/// Why a password could not be hashed.
#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    #[error("cannot draw a random salt from the kernel")]
    Random(#[source] std::io::Error),
    #[error("argon2 failed: {0}")]
    Hash(String),
}

/// Hashes `password` with argon2id (the crate's defaults: 19 MiB, 2 passes, one lane, as
/// OWASP recommends) and a random salt; returns the PHC string.
pub fn hash(password: &str) -> Result<String, PasswordError> {
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).map_err(|e| PasswordError::Random(std::io::Error::other(e)))?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| PasswordError::Hash(e.to_string()))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| PasswordError::Hash(e.to_string()))
}

/// What a user's password is checked against.
#[derive(Clone)]
pub enum Secret {
    /// A PHC string of argon2i, argon2d or argon2id.
    Argon2(String),
    /// A bcrypt hash (`$2a$`, `$2b$`, `$2x$`, `$2y$`).
    Bcrypt(String),
    /// Plain text (`password_plain`).
    Plain(String),
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Secret::Argon2(_) => "Secret::Argon2",
            Secret::Bcrypt(_) => "Secret::Bcrypt",
            Secret::Plain(_) => "Secret::Plain",
        })
    }
}

impl Secret {
    /// The secret of user `name` from its `password` (a hash) or `password_plain`.
    pub fn of(name: &str, password: Option<&str>, plain: Option<&str>) -> Result<Secret, String> {
        let how = "make a hash with `pier registry hash-password` (it reads the password on \
                   standard input) or `htpasswd -nB USER` (the part after `USER:`), and put \
                   it in \"password\"";
        match (password, plain) {
            (Some(_), Some(_)) => Err(format!(
                "user {name:?} has both \"password\" and \"password_plain\"; keep one"
            )),
            (None, None) => Err(format!("user {name:?} has no password; {how}")),
            (None, Some(p)) => Ok(Secret::Plain(p.to_string())),
            (Some(h), None) if h.starts_with("$argon2") => {
                let parsed = PasswordHash::new(h).map_err(|e| {
                    format!("user {name:?}: the argon2 hash is malformed ({e}); {how}")
                })?;
                if !matches!(
                    parsed.algorithm.as_str(),
                    "argon2i" | "argon2d" | "argon2id"
                ) {
                    return Err(format!(
                        "user {name:?}: {} is not an argon2 variant; {how}",
                        parsed.algorithm
                    ));
                }
                Ok(Secret::Argon2(h.to_string()))
            }
            (Some(h), None) if h.starts_with("$2") => {
                h.parse::<bcrypt::HashParts>().map_err(|e| {
                    format!("user {name:?}: the bcrypt hash is malformed ({e}); {how}")
                })?;
                Ok(Secret::Bcrypt(h.to_string()))
            }
            (Some(_), None) => Err(format!(
                "user {name:?}: \"password\" must be an argon2 ($argon2id$...) or bcrypt \
                 ($2y$...) hash, not plain text; {how}. To keep a plain-text password \
                 anyway (not recommended), name it \"password_plain\""
            )),
        }
    }

    /// Whether `given` is the password. Blocks for a hash's cost; `key` serves the
    /// constant-time comparison of plain text.
    pub fn verify(&self, given: &[u8], key: &hmac::Key) -> bool {
        match self {
            Secret::Argon2(h) => PasswordHash::new(h)
                .is_ok_and(|parsed| Argon2::default().verify_password(given, &parsed).is_ok()),
            Secret::Bcrypt(h) => bcrypt::verify(given, h).unwrap_or(false),
            Secret::Plain(p) => {
                hmac::verify(key, given, hmac::sign(key, p.as_bytes()).as_ref()).is_ok()
            }
        }
    }

    pub fn is_plain(&self) -> bool {
        matches!(self, Secret::Plain(_))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> hmac::Key {
        hmac::Key::new(hmac::HMAC_SHA256, b"test key")
    }

    #[test]
    fn argon2_hashes_verify_and_refuse() {
        let h = hash("s3cret").unwrap();
        assert!(h.starts_with("$argon2id$v=19$"), "{h}");
        assert_ne!(h, hash("s3cret").unwrap(), "a fresh salt each time");
        let s = Secret::of("u", Some(&h), None).unwrap();
        assert!(s.verify(b"s3cret", &key()));
        assert!(!s.verify(b"s3cret ", &key()));
        assert!(!s.verify(b"", &key()));
    }

    #[test]
    fn bcrypt_hashes_of_htpasswd_verify() {
        // libxcrypt's crypt(3) of "s3cret" with a `$2y$04$` salt, as `htpasswd -B` writes.
        let h = "$2y$04$9Q9Qx3VLibBcrT6XdxJmn.RKo065zTiqccfohLMErYa0Ak4UIGQTW";
        let s = Secret::of("u", Some(h), None).unwrap();
        assert!(s.verify(b"s3cret", &key()));
        assert!(!s.verify(b"wrong", &key()));
    }

    #[test]
    fn plain_text_only_as_opt_in() {
        let e = Secret::of("ci", Some("hunter2"), None).unwrap_err();
        assert!(
            e.contains("not plain text") && e.contains("hash-password"),
            "{e}"
        );
        assert!(Secret::of("ci", None, None).is_err());
        assert!(Secret::of("ci", Some("$argon2id$x"), None).is_err());
        assert!(Secret::of("ci", Some("$2y$04$short"), None).is_err());
        assert!(Secret::of("ci", Some("$x"), Some("p")).is_err());
        let s = Secret::of("ci", None, Some("hunter2")).unwrap();
        assert!(s.is_plain());
        assert!(s.verify(b"hunter2", &key()));
        assert!(!s.verify(b"hunter", &key()));
    }
}
