//! Optional TLS for node-to-node links (`--cluster-tls-cert`,
//! `--cluster-tls-key`, `--cluster-ca`). Both ends present a certificate
//! signed by the cluster CA (mutual TLS): the node server accepts only
//! clients with such a certificate, and a dialing node checks that the peer's
//! certificate names the address it dials (an IP SAN of the advertised
//! cluster address). The cookie handshake still runs inside the tunnel.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::{TlsAcceptor, TlsConnector};

/// The TLS sides of this node's links.
#[derive(Clone)]
pub struct ClusterTls {
    pub(crate) acceptor: TlsAcceptor,
    pub(crate) connector: TlsConnector,
}

impl std::fmt::Debug for ClusterTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClusterTls")
    }
}

fn certificates(path: &Path, what: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certificates: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .and_then(|iter| iter.collect::<Result<_, _>>())
        .map_err(|error| format!("cannot read {what} {}: {error}; give a PEM file", path.display()))?;
    if certificates.is_empty() {
        return Err(format!("{what} {} holds no PEM certificate", path.display()));
    }
    Ok(certificates)
}

impl ClusterTls {
    /// Builds both sides from PEM files: this node's certificate chain, its
    /// private key, and the CA that signs every node's certificate.
    pub fn from_pem_files(cert: &Path, key: &Path, ca: &Path) -> Result<Self, String> {
        let chain = certificates(cert, "--cluster-tls-cert")?;
        let key = PrivateKeyDer::from_pem_file(key).map_err(|error| {
            format!(
                "cannot read --cluster-tls-key {}: {error}; give the PEM private key of the certificate",
                key.display()
            )
        })?;
        let mut roots = rustls::RootCertStore::empty();
        for certificate in certificates(ca, "--cluster-ca")? {
            roots.add(certificate).map_err(|error| format!("--cluster-ca {}: {error}", ca.display()))?;
        }
        let roots = Arc::new(roots);
        let verifier = rustls::server::WebPkiClientVerifier::builder(roots.clone())
            .build()
            .map_err(|error| format!("--cluster-ca {}: {error}", ca.display()))?;
        let server = rustls::ServerConfig::builder()
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain.clone(), key.clone_key())
            .map_err(|error| format!("--cluster-tls-cert and --cluster-tls-key do not make a usable pair: {error}"))?;
        let client = rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
            .map_err(|error| format!("--cluster-tls-cert and --cluster-tls-key do not make a usable pair: {error}"))?;
        Ok(Self { acceptor: TlsAcceptor::from(Arc::new(server)), connector: TlsConnector::from(Arc::new(client)) })
    }
}
