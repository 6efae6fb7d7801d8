//! TLS to PostgreSQL, with the meanings libpq gives `sslmode` so a URL that works with `psql`
//! works here: `disable` (plain), `prefer` (the default: TLS when the server offers it),
//! `require` (TLS or nothing), both without checking the certificate unless `sslrootcert`
//! names a CA file (then as `verify-ca`); `verify-ca` (the chain must lead to `sslrootcert` or
//! a CA the system trusts) and `verify-full` (that, and the name must be the host's).
//! `allow` (plain first, TLS if refused) is taken as `prefer`: the driver tries TLS first.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use tokio_postgres_rustls::MakeRustlsConnect;

/// Why a database URL's TLS settings cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    #[error("`sslmode={0}` is not one of disable, prefer, require, verify-ca, verify-full")]
    UnknownMode(String),
    #[error("cannot verify server certificates: {0}")]
    Verifier(rustls::client::VerifierBuilderError),
    #[error("TLS: {0}")]
    Protocol(rustls::Error),
    #[error("`{path}`: {source}")]
    RootCert {
        path: PathBuf,
        source: rustls::Error,
    },
    #[error("no CA certificate to verify the database server with")]
    NoRootCert,
    #[error("cannot read `{path}`: {source}")]
    Unreadable {
        path: PathBuf,
        source: rustls::pki_types::pem::Error,
    },
    #[error("`{path}` is not a PEM certificate file: {source}")]
    NotPem {
        path: PathBuf,
        source: rustls::pki_types::pem::Error,
    },
    #[error("`{0}` holds no certificate")]
    NoCertificate(PathBuf),
}

/// How much the connection trusts the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum SslMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

/// The TLS parameters of a database URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct TlsSettings {
    pub mode: SslMode,
    /// PEM file of the CA(s) the server's certificate must lead to.
    pub root_cert: Option<PathBuf>,
}

impl Default for TlsSettings {
    fn default() -> Self {
        TlsSettings {
            mode: SslMode::Prefer,
            root_cert: None,
        }
    }
}

impl TlsSettings {
    /// Reads `sslmode=` / `sslrootcert=` from a query pair; false when the pair is not one of
    /// them (the driver knows only three modes and no root file, so erpsync takes both).
    pub fn take(&mut self, pair: &str) -> Result<bool, TlsSetupError> {
        let Some((key, value)) = url::form_urlencoded::parse(pair.as_bytes()).next() else {
            return Ok(false);
        };
        match &*key {
            "sslmode" => {
                self.mode = match &*value {
                    "disable" => SslMode::Disable,
                    "prefer" | "allow" => SslMode::Prefer,
                    "require" => SslMode::Require,
                    "verify-ca" => SslMode::VerifyCa,
                    "verify-full" => SslMode::VerifyFull,
                    other => return Err(TlsSetupError::UnknownMode(other.to_string())),
                }
            }
            "sslrootcert" => self.root_cert = Some(PathBuf::from(&*value)),
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// The driver's mode: whether TLS is tried, and whether it is required.
    pub fn driver_mode(&self) -> tokio_postgres::config::SslMode {
        match self.mode {
            SslMode::Disable => tokio_postgres::config::SslMode::Disable,
            SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => {
                tokio_postgres::config::SslMode::Require
            }
        }
    }

    /// The TLS connector for these settings.
    pub fn connector(&self) -> Result<MakeRustlsConnect, TlsSetupError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let checks_chain = matches!(self.mode, SslMode::VerifyCa | SslMode::VerifyFull)
            || self.root_cert.is_some();
        let verifier: Arc<dyn ServerCertVerifier> = if !checks_chain {
            Arc::new(Lenient {
                chain: None,
                algorithms: provider.signature_verification_algorithms,
            })
        } else {
            let roots = self.roots()?;
            let webpki =
                WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                    .build()
                    .map_err(TlsSetupError::Verifier)?;
            if self.mode == SslMode::VerifyFull {
                webpki
            } else {
                Arc::new(Lenient {
                    chain: Some(webpki),
                    algorithms: provider.signature_verification_algorithms,
                })
            }
        };
        let config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(TlsSetupError::Protocol)?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        Ok(MakeRustlsConnect::new(config))
    }

    /// `sslrootcert`, or the CAs the system trusts.
    fn roots(&self) -> Result<RootCertStore, TlsSetupError> {
        let mut roots = RootCertStore::empty();
        match &self.root_cert {
            Some(path) => {
                for cert in read_pem(path)? {
                    roots.add(cert).map_err(|source| TlsSetupError::RootCert {
                        path: path.clone(),
                        source,
                    })?;
                }
            }
            None => {
                let found = rustls_native_certs::load_native_certs();
                roots.add_parsable_certificates(found.certs);
            }
        }
        if roots.is_empty() {
            return Err(TlsSetupError::NoRootCert);
        }
        Ok(roots)
    }
}

fn read_pem(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsSetupError> {
    let certs: Vec<_> = CertificateDer::pem_file_iter(path)
        .map_err(|source| TlsSetupError::Unreadable {
            path: path.to_path_buf(),
            source,
        })?
        .collect::<Result<_, _>>()
        .map_err(|source| TlsSetupError::NotPem {
            path: path.to_path_buf(),
            source,
        })?;
    if certs.is_empty() {
        return Err(TlsSetupError::NoCertificate(path.to_path_buf()));
    }
    Ok(certs)
}

/// What libpq checks short of `verify-full`: the handshake's signatures always; with a
/// `chain` (`verify-ca`, or a CA file given) that the certificate leads to a trusted CA,
/// whatever name it carries; without one (`prefer`/`require`), nothing about whose it is.
#[derive(Debug)]
struct Lenient {
    chain: Option<Arc<WebPkiServerVerifier>>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for Lenient {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(chain) = &self.chain else {
            return Ok(ServerCertVerified::assertion());
        };
        match chain.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(pairs: &[&str]) -> Result<TlsSettings, TlsSetupError> {
        let mut s = TlsSettings::default();
        for p in pairs {
            assert!(s.take(p)?, "{p} is a TLS parameter");
        }
        Ok(s)
    }

    #[test]
    fn sslmode_and_root_file_are_read_as_libpq_does() {
        assert_eq!(TlsSettings::default().mode, SslMode::Prefer);
        let s = parse(&["sslmode=verify-full", "sslrootcert=%2Fetc%2Fca%20file.pem"]).unwrap();
        assert_eq!(s.mode, SslMode::VerifyFull);
        assert_eq!(s.root_cert.as_deref(), Some(Path::new("/etc/ca file.pem")));
        assert_eq!(s.driver_mode(), tokio_postgres::config::SslMode::Require);
        assert_eq!(
            parse(&["sslmode=disable"]).unwrap().driver_mode(),
            tokio_postgres::config::SslMode::Disable
        );
        let err = parse(&["sslmode=sometimes"]).unwrap_err().to_string();
        assert!(err.contains("`sslmode=sometimes`"), "{err}");
        assert!(!TlsSettings::default().take("connect_timeout=5").unwrap());
    }

    #[test]
    fn a_missing_root_file_is_named() {
        let s = parse(&["sslmode=verify-ca", "sslrootcert=/nonexistent/ca.pem"]).unwrap();
        let err = s.connector().map(|_| ()).unwrap_err().to_string();
        assert!(err.contains("/nonexistent/ca.pem"), "{err}");
    }
}
