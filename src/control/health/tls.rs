//! HTTPS checks' TLS client (rustls): built once per service when the
//! configuration is validated — CA bundle, client certificate, whether the
//! backend's certificate is verified — and shared by its backends' probes.

use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

use crate::control::config::TlsSection;

/// Where the system's CA bundle is on Debian (package ca-certificates).
pub const SYSTEM_CA_FILE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// A service's TLS client for its HTTPS checks. Two are equal when made
/// from the same settings (a reload that keeps them keeps the checks'
/// schedule).
#[derive(Clone)]
pub struct TlsClient {
    settings: TlsSection,
    pub config: Arc<ClientConfig>,
}

impl PartialEq for TlsClient {
    fn eq(&self, other: &TlsClient) -> bool {
        self.settings == other.settings
    }
}
impl Eq for TlsClient {}

impl std::fmt::Debug for TlsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsClient").field("settings", &self.settings).finish()
    }
}

/// A TLS setting that cannot be used: the key (`ca_file`, `cert_file`, …)
/// and why.
pub type TlsError = (&'static str, String);

impl TlsClient {
    /// The client `t` describes; relative file names are from `dir` (the
    /// configuration file's directory).
    pub fn new(t: &TlsSection, dir: &Path) -> Result<TlsClient, TlsError> {
        // ring (deprecated in 0.23.48 for lacking post-quantum key exchange,
        // which checks inside a data centre do not need) builds with the C
        // compiler alone, where aws-lc-rs needs cmake.
        #[allow(deprecated)]
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| ("verify", e.to_string()))?;
        let builder = if t.verify {
            let path = dir.join(t.ca_file.as_deref().unwrap_or(SYSTEM_CA_FILE));
            let mut roots = RootCertStore::empty();
            let certs = CertificateDer::pem_file_iter(&path)
                .map_err(|e| ("ca_file", format!("cannot read {}: {e}", path.display())))?;
            for c in certs {
                let c = c.map_err(|e| ("ca_file", format!("{}: {e}", path.display())))?;
                roots.add(c).map_err(|e| ("ca_file", format!("{}: {e}", path.display())))?;
            }
            if roots.is_empty() {
                return Err(("ca_file", format!("{} holds no certificate", path.display())));
            }
            builder.with_root_certificates(roots)
        } else {
            builder.dangerous().with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
        };
        let config = match (&t.cert_file, &t.key_file) {
            (Some(cert), Some(key)) => {
                let (cert, key) = (dir.join(cert), dir.join(key));
                let chain = CertificateDer::pem_file_iter(&cert)
                    .and_then(|i| i.collect::<Result<Vec<_>, _>>())
                    .map_err(|e| ("cert_file", format!("{}: {e}", cert.display())))?;
                if chain.is_empty() {
                    return Err(("cert_file", format!("{} holds no certificate", cert.display())));
                }
                let key = PrivateKeyDer::from_pem_file(&key)
                    .map_err(|e| ("key_file", format!("{}: {e}", key.display())))?;
                builder.with_client_auth_cert(chain, key).map_err(|e| ("key_file", e.to_string()))?
            }
            (None, None) => builder.with_no_client_auth(),
            (Some(_), None) => return Err(("key_file", "a client certificate needs its key_file".into())),
            (None, Some(_)) => return Err(("cert_file", "a client key needs its cert_file".into())),
        };
        Ok(TlsClient { settings: t.clone(), config: Arc::new(config) })
    }

    /// The name to send by SNI and verify: `server_name`, else `host` (a
    /// name, not an address), else the backend's address (verified against
    /// the certificate's IP addresses; no SNI).
    pub fn server_name(&self, host: Option<&str>, addr: std::net::IpAddr) -> ServerName<'static> {
        let name = self.settings.server_name.as_deref().or(host);
        name.and_then(|n| {
            ServerName::try_from(n.trim_start_matches('[').trim_end_matches(']').to_owned()).ok()
        })
        .unwrap_or_else(|| ServerName::IpAddress(addr.into()))
    }
}

/// `verify = false`: any certificate is accepted; the handshake's
/// signatures are still checked, so the session is with whoever holds the
/// certificate's key.
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
