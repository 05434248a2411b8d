//! A host joining the pool, both sides of it, over the transport the daemon gives (its
//! cluster listener, HTTPS; see `pier-daemon`'s `cluster` module):
//!
//! 1. the joining host connects to a member and checks, before it sends anything, that
//!    the member's certificate chains to a CA whose fingerprint is the token's;
//! 2. it sends a [`JoinRequest`] (the token, its name and address);
//! 3. the member ([`grant`]) checks the name is free, redeems the token (once, whatever
//!    races: [`crate::join::redeem`]) and signs a certificate for the host with the pool's
//!    CA: the [`JoinGrant`], with the etcd endpoints;
//! 4. the joining host ([`finish`]) opens the pool's store, registers its records, then
//!    keeps its credentials on disk ([`crate::local::save`]); a failure at any step
//!    undoes the steps before, so nothing is left half joined on it.
//!
//! The member's key is made by the pool and sent over the verified TLS channel (a
//! certificate signing request would keep it on the host; rcgen needs its `x509-parser`
//! feature to sign one, left for later).

use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

use pier_store::{Store, StoreError};
use serde::{Deserialize, Serialize};

use crate::ca::{self, ClusterCa};
use crate::join::{self, JoinError, JoinToken};
use crate::local::{self, Credentials, LocalError, LocalMember};
use crate::member::{self, MemberError, MemberRecord};
use crate::scheduler::{HostRecord, HostState, Labels, Resources};

/// What a joining host sends.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JoinRequest {
    pub token: String,
    pub name: String,
    /// The IP it advertises.
    pub address: IpAddr,
    /// Its clock when it sent this, Unix seconds: the pool refuses a host whose clock is
    /// more than [`MAX_CLOCK_SKEW`] off its own.
    pub time: u64,
}

/// How far a joining host's clock may be from the pool's. Certificates, token expiries
/// and the times `pier host inspect` shows all read clocks; etcd's leases do not.
pub const MAX_CLOCK_SKEW: std::time::Duration = std::time::Duration::from_secs(30);

/// What the pool gives a host it admits.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JoinGrant {
    pub cluster_id: String,
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
    pub etcd_endpoints: Vec<String>,
    pub etcd_prefix: String,
    /// Set when the host is to run an etcd member of the pool (one the pool added for it).
    #[serde(default)]
    pub etcd: Option<EtcdJoin>,
    /// The CA's key, given to a host that runs an etcd member of the pool (it holds the
    /// pool's whole state already), so that the pool admits hosts and signs
    /// certificates through any of them, not only through the host that made it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_key_pem: Option<String>,
}

/// The etcd member the pool added for a joining host: a learner (it follows the log
/// without a vote) until promoted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EtcdJoin {
    /// etcd's ID of the member.
    pub member_id: u64,
    /// Every member as `NAME=PEER_URL,...`, this host's included.
    pub initial_cluster: String,
    /// This host's etcd client URL.
    pub client_url: String,
    /// Whether the host promotes its member to a voting one once started (the pool's
    /// third); the second stays a learner until the third joins, so that a pool of two
    /// keeps working with either host down.
    pub promote: bool,
}

impl std::fmt::Debug for JoinGrant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JoinGrant")
            .field("cluster_id", &self.cluster_id)
            .field("etcd_endpoints", &self.etcd_endpoints)
            .field("etcd", &self.etcd)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AdmitError {
    #[error(transparent)]
    Token(#[from] JoinError),
    #[error(transparent)]
    Member(#[from] MemberError),
    #[error(transparent)]
    Ca(#[from] ca::CaError),
    #[error("this member cannot sign certificates (only the hosts that run the pool's etcd keep the CA's key: ETCD in `pier host ls`); join through one of their addresses")]
    NoCaKey,
    #[error("the pool's state store at {endpoints} is unreachable from this host; nothing was kept here, and the token is used up: make a new one with `pier cluster token` once the store is reachable (check the address and that etcd runs)")]
    StoreUnreachable {
        endpoints: String,
        #[source]
        source: StoreError,
    },
    #[error("cannot keep this host's membership")]
    Local(#[from] LocalError),
    #[error("this host's clock is {seconds} s {direction} the pool's (at most {max} s are allowed); set its time (e.g. with systemd-timesyncd or chrony) and join again: the token was not used", max = MAX_CLOCK_SKEW.as_secs())]
    ClockSkew {
        seconds: u64,
        direction: &'static str,
    },
}

impl AdmitError {
    /// Whether the caller asked for something wrong (as opposed to the pool failing).
    pub fn is_client_error(&self) -> bool {
        match self {
            AdmitError::Token(JoinError::Store(_)) => false,
            AdmitError::Token(_) => true,
            AdmitError::Member(MemberError::BadName(_) | MemberError::NameTaken(_)) => true,
            AdmitError::ClockSkew { .. } => true,
            _ => false,
        }
    }
}

/// The pool's side of a join (step 3 of the module doc), on a member holding the CA.
pub fn grant(
    store: &dyn Store,
    ca: Option<&ClusterCa>,
    req: &JoinRequest,
    etcd_endpoints: &[String],
    etcd_prefix: &str,
    now: SystemTime,
) -> Result<JoinGrant, AdmitError> {
    let token: JoinToken = req.token.parse()?;
    let ca = ca.ok_or(AdmitError::NoCaKey)?;
    check_clock(req.time, now)?;
    member::check_name(&req.name)?;
    // Checked before the token is used up, so a taken name costs no token.
    if member::exists(store, &req.name)? {
        return Err(MemberError::NameTaken(req.name.clone()).into());
    }
    join::redeem(store, &token, &ca.fingerprint(), now)?;
    let cert = ca.issue(&req.name, &[req.address])?;
    Ok(JoinGrant {
        cluster_id: ca.cluster_id.clone(),
        ca_pem: ca.cert_pem.clone(),
        cert_pem: cert.cert_pem,
        key_pem: cert.key_pem,
        etcd_endpoints: etcd_endpoints.to_vec(),
        etcd_prefix: etcd_prefix.to_string(),
        etcd: None,
        ca_key_pem: None,
    })
}

/// Refuses a joining host whose clock said `theirs` (Unix seconds) more than
/// [`MAX_CLOCK_SKEW`] away from `now`.
fn check_clock(theirs: u64, now: SystemTime) -> Result<(), AdmitError> {
    let ours = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let seconds = theirs.abs_diff(ours);
    if seconds <= MAX_CLOCK_SKEW.as_secs() {
        return Ok(());
    }
    let direction = if theirs > ours { "ahead of" } else { "behind" };
    Err(AdmitError::ClockSkew { seconds, direction })
}

/// This host as the pool records it.
#[derive(Debug, Clone)]
pub struct Joining {
    pub name: String,
    pub address: IpAddr,
    pub cluster_port: u16,
    pub labels: Labels,
    pub capacity: Resources,
}

impl Joining {
    /// Its records; `signs`: it keeps the CA's key.
    pub fn records(
        &self,
        etcd_client_url: Option<String>,
        signs: bool,
    ) -> (HostRecord, MemberRecord) {
        (
            HostRecord {
                id: self.name.clone(),
                labels: self.labels.clone(),
                state: HostState::Up,
                capacity: self.capacity,
            },
            MemberRecord {
                id: self.name.clone(),
                address: self.address.to_string(),
                cluster_addr: std::net::SocketAddr::new(self.address, self.cluster_port)
                    .to_string(),
                etcd_client_url,
                joined: member::unix_now(),
                signs,
            },
        )
    }
}

/// The joining host's side once granted (step 4): opens the pool's store with `open` (given
/// the grant: its endpoints, and the certificate to connect with),
/// registers this host and keeps its membership under `root`. On any failure nothing is
/// kept, here or in the pool.
pub fn finish(
    root: &Path,
    grant: JoinGrant,
    token_fingerprint: &str,
    me: &Joining,
    open: impl FnOnce(&JoinGrant) -> Result<Arc<dyn Store>, StoreError>,
) -> Result<(LocalMember, Arc<dyn Store>), AdmitError> {
    // The TLS check already held; the CA handed over must be the same one.
    let found = ca::fingerprint_of_pem(&grant.ca_pem)?;
    if found != token_fingerprint {
        return Err(JoinError::WrongPool {
            expected: token_fingerprint.to_string(),
            found,
        }
        .into());
    }
    let store = open(&grant).map_err(|source| AdmitError::StoreUnreachable {
        endpoints: grant.etcd_endpoints.join(","),
        source,
    })?;
    let (host, rec) = me.records(
        grant.etcd.as_ref().map(|e| e.client_url.clone()),
        grant.ca_key_pem.is_some(),
    );
    member::register(store.as_ref(), &host, &rec)?;
    let local_member = LocalMember {
        cluster_id: grant.cluster_id.clone(),
        name: me.name.clone(),
        address: me.address.to_string(),
        cluster_port: me.cluster_port,
        etcd_endpoints: grant.etcd_endpoints.clone(),
        etcd_prefix: grant.etcd_prefix.clone(),
        runs_etcd: grant.etcd.is_some(),
        etcd_initial_cluster: grant.etcd.as_ref().map(|e| e.initial_cluster.clone()),
    };
    let creds = Credentials {
        ca_pem: grant.ca_pem,
        ca_key_pem: grant.ca_key_pem,
        cert_pem: grant.cert_pem,
        key_pem: grant.key_pem,
    };
    if let Err(e) = local::save(root, &local_member, &creds) {
        let _ = member::remove(store.as_ref(), &me.name, true);
        return Err(e.into());
    }
    Ok((local_member, store))
}

#[cfg(test)]
mod tests {
    use super::*;
    use pier_store::{EtcdConfig, EtcdStore, MemStore};
    use std::time::Duration;

    fn me(name: &str) -> Joining {
        Joining {
            name: name.into(),
            address: "10.1.0.2".parse().unwrap(),
            cluster_port: 7443,
            labels: Labels::new(),
            capacity: Resources::default(),
        }
    }

    fn request(token: &str, name: &str) -> JoinRequest {
        JoinRequest {
            token: token.into(),
            name: name.into(),
            address: "10.1.0.2".parse().unwrap(),
            time: member::unix_now(),
        }
    }

    #[test]
    fn a_granted_host_joins_and_a_bad_request_costs_nothing() {
        let pool: Arc<dyn Store> = Arc::new(MemStore::default());
        let ca = ClusterCa::create("pool-1").unwrap();
        let now = SystemTime::now();
        let t = join::issue(pool.as_ref(), &ca.fingerprint(), join::DEFAULT_TTL, now).unwrap();
        let eps = vec!["http://10.1.0.1:2379".to_string()];
        // No CA key on this member; a bad name: refused, the token kept.
        let e = grant(
            pool.as_ref(),
            None,
            &request(&t.to_string(), "h2"),
            &eps,
            "p/",
            now,
        )
        .unwrap_err();
        assert!(matches!(e, AdmitError::NoCaKey));
        let e = grant(
            pool.as_ref(),
            Some(&ca),
            &request(&t.to_string(), "Bad"),
            &eps,
            "p/",
            now,
        )
        .unwrap_err();
        assert!(e.is_client_error(), "{e}");
        let e = grant(
            pool.as_ref(),
            Some(&ca),
            &request("PJ1.x", "h2"),
            &eps,
            "p/",
            now,
        )
        .unwrap_err();
        assert!(matches!(e, AdmitError::Token(JoinError::Malformed)));
        // A clock far off, either way: refused, the token kept.
        for (skew, direction) in [(-120i64, "behind"), (3600, "ahead of")] {
            let mut r = request(&t.to_string(), "h2");
            r.time = r.time.saturating_add_signed(skew);
            let e = grant(pool.as_ref(), Some(&ca), &r, &eps, "p/", now).unwrap_err();
            assert!(e.is_client_error(), "{e}");
            let msg = e.to_string();
            assert!(
                msg.contains(&format!("{} s {direction} the pool's", skew.unsigned_abs())),
                "{msg}"
            );
        }
        // A little off is fine (and, below, the token is still good).
        let mut r = request(&t.to_string(), "h2");
        r.time -= 20;
        check_clock(r.time, now).unwrap();
        let g = grant(
            pool.as_ref(),
            Some(&ca),
            &request(&t.to_string(), "h2"),
            &eps,
            "p/",
            now,
        )
        .unwrap();
        assert_eq!(g.etcd_endpoints, eps);
        let root = tempfile::tempdir().unwrap();
        let pool2 = pool.clone();
        let (m, _) = finish(root.path(), g, &ca.fingerprint(), &me("h2"), |_| Ok(pool2)).unwrap();
        assert_eq!(m.name, "h2");
        assert!(member::exists(pool.as_ref(), "h2").unwrap());
        let (_, creds) = local::load(root.path()).unwrap().unwrap();
        assert_eq!(creds.ca_key_pem, None, "a grant without the key keeps none");
        assert!(
            !member::host(pool.as_ref(), "h2")
                .unwrap()
                .member
                .unwrap()
                .signs
        );
        // A grant with the CA's key (to a host that runs an etcd member): kept with the
        // credentials, and the pool's record says the host signs.
        let t3 = join::issue(pool.as_ref(), &ca.fingerprint(), join::DEFAULT_TTL, now).unwrap();
        let mut g3 = grant(
            pool.as_ref(),
            Some(&ca),
            &request(&t3.to_string(), "h5"),
            &eps,
            "p/",
            now,
        )
        .unwrap();
        assert_eq!(
            g3.ca_key_pem, None,
            "the pool gives the key only with an etcd member"
        );
        g3.ca_key_pem = Some(ca.key_pem());
        assert!(
            !format!("{g3:?}").contains("PRIVATE KEY"),
            "kept out of logs"
        );
        let root3 = tempfile::tempdir().unwrap();
        let pool3 = pool.clone();
        finish(root3.path(), g3, &ca.fingerprint(), &me("h5"), |_| {
            Ok(pool3)
        })
        .unwrap();
        let (_, creds) = local::load(root3.path()).unwrap().unwrap();
        let key = creds.ca_key_pem.expect("the CA's key kept");
        let again = ClusterCa::load(&ca.cluster_id, &ca.cert_pem, &key).unwrap();
        assert_eq!(again.fingerprint(), ca.fingerprint());
        assert!(
            member::host(pool.as_ref(), "h5")
                .unwrap()
                .member
                .unwrap()
                .signs
        );
        // The same token again: used up.
        let e = grant(
            pool.as_ref(),
            Some(&ca),
            &request(&t.to_string(), "h3"),
            &eps,
            "p/",
            now,
        )
        .unwrap_err();
        assert!(matches!(e, AdmitError::Token(JoinError::Unknown)), "{e}");
    }

    #[test]
    fn a_grant_of_another_ca_is_refused_and_nothing_is_kept() {
        let ca = ClusterCa::create("pool-1").unwrap();
        let other = ClusterCa::create("pool-2").unwrap();
        let cert = other.issue("h2", &[]).unwrap();
        let g = JoinGrant {
            cluster_id: "pool-2".into(),
            ca_pem: other.cert_pem.clone(),
            cert_pem: cert.cert_pem,
            key_pem: cert.key_pem,
            etcd_endpoints: vec![],
            etcd_prefix: "p/".into(),
            etcd: None,
            ca_key_pem: None,
        };
        let root = tempfile::tempdir().unwrap();
        let Err(e) = finish(root.path(), g, &ca.fingerprint(), &me("h2"), |_| {
            panic!("the store must not be opened")
        }) else {
            panic!("joined a pool of another CA")
        };
        assert!(matches!(e, AdmitError::Token(JoinError::WrongPool { .. })));
        assert_eq!(std::fs::read_dir(root.path()).unwrap().count(), 0);
    }

    /// etcd unreachable at join: a clear error naming the endpoints, and no state kept.
    #[test]
    fn an_unreachable_store_at_join_says_so_and_keeps_nothing() {
        let ca = ClusterCa::create("pool-1").unwrap();
        let cert = ca.issue("h2", &[]).unwrap();
        // A port nothing listens on: bound, then released.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let endpoint = format!("http://127.0.0.1:{port}");
        let g = JoinGrant {
            cluster_id: "pool-1".into(),
            ca_pem: ca.cert_pem.clone(),
            cert_pem: cert.cert_pem,
            key_pem: cert.key_pem,
            etcd_endpoints: vec![endpoint.clone()],
            etcd_prefix: "p/".into(),
            etcd: None,
            ca_key_pem: None,
        };
        let root = tempfile::tempdir().unwrap();
        let Err(e) = finish(root.path(), g, &ca.fingerprint(), &me("h2"), |g| {
            let mut c = EtcdConfig::new(g.etcd_endpoints.clone(), &g.etcd_prefix);
            c.connect_timeout = Duration::from_millis(500);
            Ok(Arc::new(EtcdStore::open(c)?) as Arc<dyn Store>)
        }) else {
            panic!("joined with no store")
        };
        assert!(matches!(e, AdmitError::StoreUnreachable { .. }), "{e}");
        let text = e.to_string();
        assert!(text.contains(&endpoint), "{text}");
        assert!(text.contains("nothing was kept here"), "{text}");
        assert_eq!(std::fs::read_dir(root.path()).unwrap().count(), 0);
    }
}
