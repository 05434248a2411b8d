//! The cluster listener and the joining host's client of it: HTTPS with the member's
//! certificate (signed by the pool's CA, sent with the CA's certificate), on the advertise
//! address.
//!
//! A client presenting a certificate must chain to the pool's CA (mutual TLS between
//! members) and gets the member routes; a client without one (a host joining, which has
//! none yet) gets only the join route, where the token authenticates it.
//!
//! The joining host pins the pool by the token's CA fingerprint: its verifier takes the
//! certificate the member sends whose SHA-256 is the token's, and checks the member's
//! certificate (and address) against it. Any other CA is refused before a byte of the
//! request is sent, so a join cannot be intercepted.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::Router;
use pier_cluster::admit::{JoinGrant, JoinRequest};
use pier_cluster::local::Credentials;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

/// The cluster listener's port unless the advertise address names one.
pub const DEFAULT_PORT: u16 = 7443;
/// The joining host's route.
pub const JOIN_PATH: &str = "/cluster/v1/join";

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn certs(pem: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| format!("a certificate of the pool is not PEM: {e}"))
}

/// A member's TLS identity: its certificate with the CA's after it, its key, and the CA
/// as the only root the other side's certificate may chain to.
struct Identity {
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    roots: rustls::RootCertStore,
}

fn identity(creds: &Credentials) -> Result<Identity, String> {
    let ca = certs(&creds.ca_pem)?;
    let mut chain = certs(&creds.cert_pem)?;
    chain.extend(ca.iter().cloned());
    let key = PrivateKeyDer::from_pem_slice(creds.key_pem.as_bytes())
        .map_err(|e| format!("the member's key is not PEM: {e}"))?;
    let mut roots = rustls::RootCertStore::empty();
    for c in ca {
        roots.add(c).map_err(|e| e.to_string())?;
    }
    Ok(Identity { chain, key, roots })
}

/// The listener's TLS: the member's certificate and the CA's, client certificates of the
/// pool's CA accepted (and not required).
pub fn acceptor(creds: &Credentials) -> Result<tokio_rustls::TlsAcceptor, String> {
    let Identity { chain, key, roots } = identity(creds)?;
    let verifier =
        rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
            .allow_unauthenticated()
            .build()
            .map_err(|e| e.to_string())?;
    let config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|e| format!("the member's certificate and key do not make a TLS identity: {e}"))?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// The TLS client of a member talking to another member's listener (forwarded
/// requests): the member's certificate as client certificate, the listener's checked
/// against the pool's CA (and its address).
pub fn member_client(creds: &Credentials) -> Result<rustls::ClientConfig, String> {
    let Identity { chain, key, roots } = identity(creds)?;
    rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .map_err(|e| format!("the member's certificate and key do not make a TLS identity: {e}"))
}

/// Serves the listener: `member` to clients with a certificate of the pool, `joining` to
/// the others.
pub async fn serve(
    listener: tokio::net::TcpListener,
    tls: tokio_rustls::TlsAcceptor,
    member: Router,
    joining: Router,
) {
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, "cluster listener: accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let (tls, member, joining) = (tls.clone(), member.clone(), joining.clone());
        tokio::spawn(async move {
            let stream = match tokio::time::timeout(Duration::from_secs(10), tls.accept(tcp)).await
            {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "cluster listener: TLS handshake failed");
                    return;
                }
                Err(_) => return,
            };
            let app = if stream.get_ref().1.peer_certificates().is_some() {
                member
            } else {
                joining
            };
            let service = hyper_util::service::TowerToHyperService::new(app);
            let io = hyper_util::rt::TokioIo::new(stream);
            // With upgrades: forwarded attach and exec sessions take the connection over.
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(io, service)
                .with_upgrades()
                .await
            {
                tracing::debug!(%peer, error = %e, "cluster listener: connection ended");
            }
        });
    }
}

/// Checks the member's certificate against the CA whose fingerprint the token carries.
#[derive(Debug)]
struct PinnedCa {
    fingerprint: String,
    /// The fingerprints the member showed, when none was the token's.
    found: Mutex<Option<String>>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PinnedCa {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let fps: Vec<String> = intermediates
            .iter()
            .map(|c| pier_cluster::ca::fingerprint_of_der(c))
            .collect();
        let Some(ca) = intermediates
            .iter()
            .zip(&fps)
            .find(|(_, fp)| **fp == self.fingerprint)
            .map(|(c, _)| c.clone().into_owned())
        else {
            let shown = if fps.is_empty() {
                "none: it sent no CA certificate".to_string()
            } else {
                fps.join(", ")
            };
            *self.found.lock().unwrap_or_else(|e| e.into_inner()) = Some(shown);
            return Err(rustls::Error::General(
                "the pool's CA is not the token's".into(),
            ));
        };
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca)?;
        let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots),
            self.provider.clone(),
        )
        .build()
        .map_err(|e| rustls::Error::General(e.to_string()))?;
        verifier.verify_server_cert(end_entity, &[], server_name, ocsp, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Why a join request failed on the way.
#[derive(Debug, thiserror::Error)]
pub enum JoinCallError {
    #[error(
        "cannot reach the pool at {addr}: {reason}; check the address and that its daemon runs"
    )]
    Unreachable { addr: SocketAddr, reason: String },
    #[error("the member at {addr} does not show the pool's CA that the token names (it shows {found}; the token says {expected}): you may be talking to another pool or an impostor; check the address and the token")]
    WrongPool {
        addr: SocketAddr,
        expected: String,
        found: String,
    },
    #[error("{message}")]
    Refused { status: u16, message: String },
    #[error("the member at {addr} answered the join with something unreadable: {reason}")]
    BadAnswer { addr: SocketAddr, reason: String },
}

/// Sends `req` to the member at `addr`, trusting only the CA with `fingerprint`.
pub async fn join(
    addr: SocketAddr,
    fingerprint: &str,
    req: &JoinRequest,
) -> Result<JoinGrant, JoinCallError> {
    let unreachable = |reason: String| JoinCallError::Unreachable { addr, reason };
    let verifier = Arc::new(PinnedCa {
        fingerprint: fingerprint.to_string(),
        found: Mutex::new(None),
        provider: provider(),
    });
    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| unreachable(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(verifier.clone())
        .with_no_client_auth();
    let tcp = tokio::time::timeout(Duration::from_secs(5), tokio::net::TcpStream::connect(addr))
        .await
        .map_err(|_| unreachable("no answer within 5 s".into()))?
        .map_err(|e| unreachable(e.to_string()))?;
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let name = ServerName::IpAddress(addr.ip().into());
    let tls =
        match tokio::time::timeout(Duration::from_secs(10), connector.connect(name, tcp)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                if let Some(found) = verifier
                    .found
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .take()
                {
                    return Err(JoinCallError::WrongPool {
                        addr,
                        expected: fingerprint.to_string(),
                        found,
                    });
                }
                return Err(unreachable(format!("TLS: {e}")));
            }
            Err(_) => return Err(unreachable("the TLS handshake took over 10 s".into())),
        };
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
            .await
            .map_err(|e| unreachable(e.to_string()))?;
    tokio::spawn(conn);
    let body = serde_json::to_vec(req).expect("a join request serializes");
    let request = hyper::Request::post(JOIN_PATH)
        .header("host", addr.to_string())
        .header("content-type", "application/json")
        .body(Body::from(body))
        .expect("a join request");
    let resp = tokio::time::timeout(Duration::from_secs(60), sender.send_request(request))
        .await
        .map_err(|_| unreachable("no answer to the join within 60 s".into()))?
        .map_err(|e| unreachable(e.to_string()))?;
    let status = resp.status();
    let bytes = axum::body::to_bytes(Body::new(resp.into_body()), 1 << 20)
        .await
        .map_err(|e| unreachable(e.to_string()))?;
    if !status.is_success() {
        let message = serde_json::from_slice::<pier_api::ErrorBody>(&bytes)
            .map(|b| b.message)
            .unwrap_or_else(|_| String::from_utf8_lossy(&bytes).into_owned());
        return Err(JoinCallError::Refused {
            status: status.as_u16(),
            message,
        });
    }
    serde_json::from_slice(&bytes).map_err(|e| JoinCallError::BadAnswer {
        addr,
        reason: e.to_string(),
    })
}
