//! The pool's certificate authority. `pier cluster init` makes it once; it signs each
//! member's certificate, which members present to each other over mutual TLS (rustls).
//! Its fingerprint, the SHA-256 of its certificate's DER, travels in every join token
//! ([`crate::join`]), so a joining host checks the pool's CA before it sends its secret,
//! and a join cannot be intercepted.
//!
//! The CA's subject names the cluster (`Pier cluster CA <cluster-id>`); kept with its key
//! (PEM), it is rebuilt as an issuer from the cluster ID, so no certificate parser is
//! needed.

use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use sha2::{Digest, Sha256};

/// How long a member certificate is valid; members renew before that.
pub const MEMBER_VALIDITY: Duration = Duration::from_secs(365 * 24 * 3600);
/// How long the CA is valid.
pub const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("cannot make the cluster's certificates: {0}")]
    Rcgen(#[from] rcgen::Error),
    #[error(
        "the cluster CA's certificate is not PEM: {0}; give the file `pier cluster init` wrote"
    )]
    NotPem(String),
    #[error("invalid cluster ID {0:?}: use 1-64 letters, digits and '-'")]
    ClusterId(String),
}

/// The CA of one pool, with its key.
pub struct ClusterCa {
    pub cluster_id: String,
    pub cert_pem: String,
    cert_der: Vec<u8>,
    key: KeyPair,
}

/// A member's certificate and key (PEM), signed by the pool's CA.
pub struct MemberCert {
    pub cert_pem: String,
    pub key_pem: String,
}

fn check_id(cluster_id: &str) -> Result<(), CaError> {
    let ok = !cluster_id.is_empty()
        && cluster_id.len() <= 64
        && cluster_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(CaError::ClusterId(cluster_id.to_string()))
    }
}

/// The CA's parameters: the same for its making and its signing, so that the issuer of
/// a member certificate is exactly the CA's subject.
fn ca_params(cluster_id: &str, now: SystemTime) -> Result<CertificateParams, CaError> {
    let mut p = CertificateParams::new(Vec::<String>::new())?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, format!("Pier cluster CA {cluster_id}"));
    dn.push(DnType::OrganizationName, "Pier");
    p.distinguished_name = dn;
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    p.not_before = now.into();
    p.not_after = (now + CA_VALIDITY).into();
    Ok(p)
}

impl ClusterCa {
    /// Makes the CA of the pool `cluster_id`.
    pub fn create(cluster_id: &str) -> Result<ClusterCa, CaError> {
        check_id(cluster_id)?;
        let key = KeyPair::generate()?;
        let cert = ca_params(cluster_id, SystemTime::now())?.self_signed(&key)?;
        Ok(ClusterCa {
            cluster_id: cluster_id.to_string(),
            cert_pem: cert.pem(),
            cert_der: cert.der().to_vec(),
            key,
        })
    }

    /// The CA kept by [`ClusterCa::create`]'s caller: its certificate and key (PEM).
    pub fn load(cluster_id: &str, cert_pem: &str, key_pem: &str) -> Result<ClusterCa, CaError> {
        check_id(cluster_id)?;
        Ok(ClusterCa {
            cluster_id: cluster_id.to_string(),
            cert_pem: cert_pem.to_string(),
            cert_der: pem_der(cert_pem)?,
            key: KeyPair::from_pem(key_pem)?,
        })
    }

    /// The CA's key, to keep beside its certificate (mode 0600).
    pub fn key_pem(&self) -> String {
        self.key.serialize_pem()
    }

    /// The SHA-256 of the CA certificate's DER, in hex: what join tokens carry.
    pub fn fingerprint(&self) -> String {
        hex(&Sha256::digest(&self.cert_der))
    }

    /// Signs a certificate for member `host` (its name and addresses in the subject
    /// alternative names), good as a TLS server and client.
    pub fn issue(&self, host: &str, addrs: &[IpAddr]) -> Result<MemberCert, CaError> {
        let now = SystemTime::now();
        let mut p = CertificateParams::new(vec![host.to_string()])?;
        p.subject_alt_names
            .extend(addrs.iter().map(|a| SanType::IpAddress(*a)));
        p.distinguished_name = DistinguishedName::new();
        p.distinguished_name.push(DnType::CommonName, host);
        p.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        p.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        p.not_before = now.into();
        p.not_after = (now + MEMBER_VALIDITY).into();
        let key = KeyPair::generate()?;
        let issuer = Issuer::new(ca_params(&self.cluster_id, now)?, &self.key);
        let cert = p.signed_by(&key, &issuer)?;
        Ok(MemberCert {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

/// The fingerprint of a CA certificate given as PEM (what a joining host computes of the
/// CA the pool shows it, to compare with its token's).
pub fn fingerprint_of_pem(cert_pem: &str) -> Result<String, CaError> {
    Ok(hex(&Sha256::digest(pem_der(cert_pem)?)))
}

/// The fingerprint of a certificate given as DER (what a joining host computes of each
/// certificate the pool's member sends in its TLS handshake).
pub fn fingerprint_of_der(der: &[u8]) -> String {
    hex(&Sha256::digest(der))
}

/// The DER of the one certificate in `pem`.
fn pem_der(pem: &str) -> Result<Vec<u8>, CaError> {
    use base64::Engine as _;
    let body: String = pem
        .lines()
        .map(str::trim)
        .skip_while(|l| *l != "-----BEGIN CERTIFICATE-----")
        .skip(1)
        .take_while(|l| *l != "-----END CERTIFICATE-----")
        .collect();
    if body.is_empty() {
        return Err(CaError::NotPem("no CERTIFICATE block".into()));
    }
    base64::engine::general_purpose::STANDARD
        .decode(body)
        .map_err(|e| CaError::NotPem(e.to_string()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::pki_types::{CertificateDer, UnixTime};
    use std::sync::Arc;

    fn der(pem: &str) -> CertificateDer<'static> {
        CertificateDer::from(pem_der(pem).unwrap())
    }

    /// Whether `member` chains to `ca` as a client certificate (what a member checks of
    /// another one), by rustls's own verifier.
    fn verifies(ca: &ClusterCa, member: &MemberCert) -> bool {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(der(&ca.cert_pem)).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier =
            rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .unwrap();
        verifier
            .verify_client_cert(&der(&member.cert_pem), &[], UnixTime::now())
            .is_ok()
    }

    #[test]
    fn member_certificates_chain_to_their_pool_only() {
        let ca = ClusterCa::create("pool-a").unwrap();
        let m = ca.issue("host-1", &["10.0.0.5".parse().unwrap()]).unwrap();
        assert!(verifies(&ca, &m));
        // Kept and loaded again, the CA still signs members that chain to it.
        let again = ClusterCa::load("pool-a", &ca.cert_pem, &ca.key_pem()).unwrap();
        assert_eq!(again.fingerprint(), ca.fingerprint());
        assert!(verifies(&ca, &again.issue("host-2", &[]).unwrap()));
        // Another pool's CA does not accept them.
        let other = ClusterCa::create("pool-b").unwrap();
        assert!(!verifies(&other, &m));
        assert_ne!(other.fingerprint(), ca.fingerprint());
    }

    #[test]
    fn fingerprints_are_the_sha256_of_the_der() {
        let ca = ClusterCa::create("p1").unwrap();
        let fp = ca.fingerprint();
        assert_eq!(fp.len(), 64);
        assert!(fp.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(fingerprint_of_pem(&ca.cert_pem).unwrap(), fp);
        assert!(fingerprint_of_pem("not a certificate").is_err());
        assert!(ClusterCa::create("bad id!").is_err());
        assert!(ClusterCa::create("").is_err());
    }
}
