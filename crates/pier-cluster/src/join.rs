//! Join tokens. `pier cluster init` prints `pier cluster join ADDR TOKEN`; a token is
//! `PJ1.<CA fingerprint>.<id>.<secret>`:
//!
//! - the CA fingerprint ([`crate::ca::ClusterCa::fingerprint`]) lets the joining host
//!   check the pool's CA before it sends anything, so a join cannot be intercepted;
//! - the pool keeps only the secret's SHA-256 under the token's ID, with its expiry
//!   (`join-tokens/<id>` in [`Table::Cluster`]), and a redeem takes the record in one
//!   conditional delete, so a token works once, even when two hosts race with it.
//!
//! An expired, reused, unknown or wrong token is refused, each saying which and what to
//! do.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use pier_store::{Compare, Expect, Op, Store, StoreError, Table, Txn};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Where the tokens' records are in [`Table::Cluster`].
pub const TOKENS: &str = "join-tokens/";
const PREFIX: &str = "PJ1";
/// How long a token works unless told otherwise.
pub const DEFAULT_TTL: Duration = Duration::from_secs(3600);

#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    #[error("this is not a Pier join token: it has the form PJ1.<fingerprint>.<id>.<secret>; copy it whole from `pier cluster init` or `pier cluster token`")]
    Malformed,
    #[error("the pool's CA is not the one this token names (fingerprint {found}, the token says {expected}): you may be talking to another pool or an impostor; check the address")]
    WrongPool { expected: String, found: String },
    #[error("this join token is unknown to the pool: it was used already or never made; make a new one with `pier cluster token`")]
    Unknown,
    #[error("this join token expired; make a new one with `pier cluster token`")]
    Expired,
    #[error("this join token's secret is wrong; copy the token whole from `pier cluster token`")]
    BadSecret,
    #[error("cannot make a random secret: {0}")]
    Random(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A token as the joining host holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinToken {
    pub ca_fingerprint: String,
    pub id: String,
    pub secret: String,
}

impl std::fmt::Display for JoinToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{PREFIX}.{}.{}.{}",
            self.ca_fingerprint, self.id, self.secret
        )
    }
}

impl std::str::FromStr for JoinToken {
    type Err = JoinError;
    fn from_str(s: &str) -> Result<Self, JoinError> {
        let parts: Vec<&str> = s.trim().split('.').collect();
        let [PREFIX, fp, id, secret] = parts.as_slice() else {
            return Err(JoinError::Malformed);
        };
        let hexed =
            |v: &str, len: usize| v.len() == len && v.bytes().all(|b| b.is_ascii_hexdigit());
        if !hexed(fp, 64) || !hexed(id, 16) || !hexed(secret, 64) {
            return Err(JoinError::Malformed);
        }
        Ok(JoinToken {
            ca_fingerprint: fp.to_ascii_lowercase(),
            id: id.to_ascii_lowercase(),
            secret: secret.to_ascii_lowercase(),
        })
    }
}

/// What the pool keeps of a token.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct TokenRecord {
    /// SHA-256 of the secret, hex.
    secret_sha256: String,
    /// Unix seconds.
    expires: u64,
}

fn random_hex(bytes: usize) -> Result<String, JoinError> {
    let mut b = vec![0u8; bytes];
    getrandom::fill(&mut b).map_err(|e| JoinError::Random(e.to_string()))?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

fn sha256_hex(s: &str) -> String {
    Sha256::digest(s.as_bytes())
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect()
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Makes a token of the pool whose CA has `ca_fingerprint`, working once until `ttl`
/// after `now`.
pub fn issue(
    store: &dyn Store,
    ca_fingerprint: &str,
    ttl: Duration,
    now: SystemTime,
) -> Result<JoinToken, JoinError> {
    let token = JoinToken {
        ca_fingerprint: ca_fingerprint.to_string(),
        id: random_hex(8)?,
        secret: random_hex(32)?,
    };
    let record = TokenRecord {
        secret_sha256: sha256_hex(&token.secret),
        expires: unix(now + ttl),
    };
    let key = format!("{TOKENS}{}", token.id);
    store.txn(
        Txn {
            compares: vec![Compare {
                table: Table::Cluster,
                key: key.clone(),
                expect: Expect::Absent,
            }],
            ops: vec![Op::Put {
                table: Table::Cluster,
                key,
                value: serde_json::to_vec(&record).expect("json"),
            }],
        },
        true,
    )?;
    Ok(token)
}

/// Checks `token` on the pool whose CA has `ca_fingerprint` and uses it up: Ok once, for
/// one caller, however many race.
pub fn redeem(
    store: &dyn Store,
    token: &JoinToken,
    ca_fingerprint: &str,
    now: SystemTime,
) -> Result<(), JoinError> {
    if token.ca_fingerprint != ca_fingerprint {
        return Err(JoinError::WrongPool {
            expected: token.ca_fingerprint.clone(),
            found: ca_fingerprint.to_string(),
        });
    }
    let key = format!("{TOKENS}{}", token.id);
    let Some(kv) = store.get_kv(Table::Cluster, &key)? else {
        return Err(JoinError::Unknown);
    };
    let record: TokenRecord =
        serde_json::from_slice(&kv.value).map_err(|source| StoreError::Corrupt {
            table: Table::Cluster.name(),
            key: key.clone(),
            source,
        })?;
    // The digests are compared whole, so the time taken says nothing of the secret.
    let given = sha256_hex(&token.secret);
    let same = given
        .bytes()
        .zip(record.secret_sha256.bytes())
        .fold(given.len() ^ record.secret_sha256.len(), |acc, (a, b)| {
            acc | usize::from(a ^ b)
        })
        == 0;
    if !same {
        return Err(JoinError::BadSecret);
    }
    // Taken (or dropped, when expired) at the revision read: a racing redeem conflicts.
    let taken = store.txn(
        Txn {
            compares: vec![Compare {
                table: Table::Cluster,
                key: key.clone(),
                expect: Expect::ModRevision(kv.mod_revision),
            }],
            ops: vec![Op::Delete {
                table: Table::Cluster,
                key,
            }],
        },
        true,
    );
    match taken {
        Err(StoreError::Conflict { .. }) => return Err(JoinError::Unknown),
        Err(e) => return Err(e.into()),
        Ok(_) => {}
    }
    if unix(now) >= record.expires {
        return Err(JoinError::Expired);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use pier_store::MemStore;
    use std::sync::Arc;

    const FP: &str = "ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12";

    #[test]
    fn a_token_works_once_for_its_pool_until_it_expires() {
        let store = MemStore::default();
        let now = SystemTime::now();
        let t = issue(&store, FP, DEFAULT_TTL, now).unwrap();
        let text = t.to_string();
        assert!(text.starts_with("PJ1."), "{text}");
        let parsed: JoinToken = text.parse().unwrap();
        assert_eq!(parsed, t);
        // Another pool's CA: refused, and the token is not used up.
        let other = "cd".repeat(32);
        assert!(matches!(
            redeem(&store, &parsed, &other, now),
            Err(JoinError::WrongPool { .. })
        ));
        // A wrong secret: refused, not used up either.
        let forged = JoinToken {
            secret: "0".repeat(64),
            ..t.clone()
        };
        assert!(matches!(
            redeem(&store, &forged, FP, now),
            Err(JoinError::BadSecret)
        ));
        redeem(&store, &parsed, FP, now).unwrap();
        assert!(matches!(
            redeem(&store, &parsed, FP, now),
            Err(JoinError::Unknown)
        ));
        // Expired: refused, and gone.
        let old = issue(&store, FP, Duration::from_secs(60), now).unwrap();
        let later = now + Duration::from_secs(61);
        assert!(matches!(
            redeem(&store, &old, FP, later),
            Err(JoinError::Expired)
        ));
        assert!(matches!(
            redeem(&store, &old, FP, now),
            Err(JoinError::Unknown)
        ));
        assert!(store.list(Table::Cluster, TOKENS).unwrap().is_empty());
    }

    #[test]
    fn racing_redeems_let_one_host_in() {
        let store: Arc<dyn Store> = Arc::new(MemStore::default());
        let now = SystemTime::now();
        for _ in 0..20 {
            let t = issue(store.as_ref(), FP, DEFAULT_TTL, now).unwrap();
            let joined: usize = std::thread::scope(|s| {
                let racers: Vec<_> = (0..4)
                    .map(|_| {
                        let (store, t) = (store.clone(), t.clone());
                        s.spawn(move || redeem(store.as_ref(), &t, FP, now).is_ok())
                    })
                    .collect();
                racers
                    .into_iter()
                    .map(|r| usize::from(r.join().unwrap()))
                    .sum()
            });
            assert_eq!(joined, 1);
        }
    }

    #[test]
    fn malformed_tokens_say_so() {
        for bad in [
            "",
            "PJ1.abc",
            "PJ2.aa.bb.cc",
            &format!("PJ1.{FP}.zz{}.{}", "0".repeat(14), "1".repeat(64)),
            &format!("PJ1.{FP}.{}.{}", "0".repeat(16), "1".repeat(63)),
        ] {
            let e = bad.parse::<JoinToken>().unwrap_err();
            assert!(matches!(e, JoinError::Malformed), "{bad}");
            assert!(e.to_string().contains("pier cluster init"), "{e}");
        }
    }
}
