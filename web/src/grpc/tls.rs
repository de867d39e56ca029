//! Optional TLS for the gRPC face (`--grpc-tls-cert`, `--grpc-tls-key`):
//! the node presents its certificate, clients are not asked for one (API
//! tokens say who may call), HTTP/2 is negotiated by ALPN.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

/// The server side of gRPC over TLS.
#[derive(Clone)]
pub struct GrpcTls(pub(crate) TlsAcceptor);

impl std::fmt::Debug for GrpcTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("GrpcTls")
    }
}

impl GrpcTls {
    /// Reads the certificate chain and its private key (PEM); each error
    /// names the flag and says what to give.
    pub fn from_pem_files(cert: &Path, key: &Path) -> Result<Self, String> {
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
            .and_then(|iter| iter.collect::<Result<_, _>>())
            .map_err(|error| format!("cannot read --grpc-tls-cert {}: {error}; give a PEM file", cert.display()))?;
        if chain.is_empty() {
            return Err(format!("--grpc-tls-cert {} holds no PEM certificate", cert.display()));
        }
        let key = PrivateKeyDer::from_pem_file(key).map_err(|error| {
            format!(
                "cannot read --grpc-tls-key {}: {error}; give the PEM private key of the certificate",
                key.display()
            )
        })?;
        let mut config = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(|error| format!("--grpc-tls-cert and --grpc-tls-key do not make a usable pair: {error}"))?;
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Self(TlsAcceptor::from(Arc::new(config))))
    }
}
