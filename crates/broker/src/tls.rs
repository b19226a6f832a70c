//! TLS for the `+ssl` client listeners and the HTTPS admin API: the
//! `[tls]` certificate, loaded at start and re-read on SIGHUP, and the
//! handshake every TLS connection goes through.
//!
//! The current `rustls::ServerConfig` sits in a `watch` channel: each new
//! connection takes the one current at its handshake, so a reload changes
//! the certificate new connections see without touching established ones
//! (their session keys do not depend on the certificate file any more). A
//! reload that fails leaves the old certificate in place.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use crate::config::{ClientAuth, TlsConfig, TlsVersion};

/// Why the `[tls]` certificate could not be (re)loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A setting TLS needs is not set.
    #[error("TLS is used but {key} is not set (see docs/TLS.md)")]
    Missing {
        /// The setting, in config-file spelling.
        key: &'static str,
    },
    /// A file could not be read.
    #[error("cannot read {key} {path}: {source}")]
    Read {
        /// The setting that names the file.
        key: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A file is not the PEM it should be.
    #[error("{key} {path} is not usable: {message}")]
    Pem {
        /// The setting that names the file.
        key: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// The files read, but rustls refused them together (say the key does
    /// not match the certificate).
    #[error("the [tls] certificate cannot be used: {0}")]
    Config(String),
}

/// The broker's TLS state: the current server configuration, the
/// settings to rebuild it from, and its counters.
pub(crate) struct Tls {
    settings: TlsConfig,
    current: watch::Sender<Arc<ServerConfig>>,
    /// Handshakes that failed or timed out (`tls_handshake_failures_total`).
    pub(crate) handshake_failures: AtomicU64,
    /// Successful reloads (`tls_reloads_total`).
    pub(crate) reloads: AtomicU64,
    /// Failed reloads (`tls_reload_failures_total`).
    pub(crate) reload_failures: AtomicU64,
}

impl Tls {
    /// Reads the `[tls]` files.
    pub(crate) fn load(settings: &TlsConfig) -> Result<Tls, TlsError> {
        let config = build(settings)?;
        Ok(Tls {
            settings: settings.clone(),
            current: watch::Sender::new(Arc::new(config)),
            handshake_failures: AtomicU64::new(0),
            reloads: AtomicU64::new(0),
            reload_failures: AtomicU64::new(0),
        })
    }

    /// Re-reads the `[tls]` files. New connections get the new
    /// certificate; on error the old one stays.
    pub(crate) fn reload(&self) -> Result<(), TlsError> {
        match build(&self.settings) {
            Ok(config) => {
                self.current.send_replace(Arc::new(config));
                self.reloads.fetch_add(1, Ordering::Relaxed);
                tracing::info!(cert = ?self.settings.cert_file, "TLS certificate reloaded");
                Ok(())
            }
            Err(e) => {
                self.reload_failures.fetch_add(1, Ordering::Relaxed);
                tracing::error!(error = %e, "TLS certificate reload failed; keeping the old certificate");
                Err(e)
            }
        }
    }

    /// Runs the server side of a handshake (within `timeout`). A failure
    /// is counted and logged at debug level with the peer — scanners and
    /// clients that distrust the certificate are routine — and gives
    /// `None`.
    pub(crate) async fn accept(
        &self,
        stream: TcpStream,
        peer: SocketAddr,
        timeout: Duration,
        what: &str,
    ) -> Option<(TlsStream<TcpStream>, Option<String>)> {
        let acceptor = TlsAcceptor::from(self.current.borrow().clone());
        let failure = match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
            Ok(Ok(stream)) => {
                let subject = stream
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|c| c.first())
                    .and_then(|c| subject(c));
                return Some((stream, subject));
            }
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("no handshake within {timeout:?}"),
        };
        self.handshake_failures.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(%peer, listener = what, error = %failure, "TLS handshake failed");
        None
    }
}

/// A certificate's subject as an RFC 4514 string (`CN=app1,O=Acme`: most
/// specific first), or `None` if it does not parse (rustls verified it, so
/// that would be a parser gap, not an attack).
pub(crate) fn subject(der: &[u8]) -> Option<String> {
    use x509_cert::der::Decode;
    let cert = x509_cert::Certificate::from_der(der).ok()?;
    Some(cert.tbs_certificate.subject.to_string())
}

fn build(s: &TlsConfig) -> Result<ServerConfig, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let versions: &[&rustls::SupportedProtocolVersion] = match s.min_version {
        TlsVersion::V1_2 => rustls::ALL_VERSIONS,
        TlsVersion::V1_3 => &[&rustls::version::TLS13],
    };
    let cert_file = s.cert_file.as_deref().ok_or(TlsError::Missing {
        key: "tls.cert-file",
    })?;
    let key_file = s.key_file.as_deref().ok_or(TlsError::Missing {
        key: "tls.key-file",
    })?;
    let certs = read_certs("tls.cert-file", cert_file)?;
    let key_pem = read("tls.key-file", key_file)?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| TlsError::Pem {
        key: "tls.key-file",
        path: key_file.to_owned(),
        message: format!("no PEM private key (PKCS#8, RSA or EC) found: {e}"),
    })?;
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let builder = match s.client_auth {
        ClientAuth::None => builder.with_no_client_auth(),
        auth => {
            let ca_file = s.client_ca_file.as_deref().ok_or(TlsError::Missing {
                key: "tls.client-ca-file",
            })?;
            let mut roots = RootCertStore::empty();
            for c in read_certs("tls.client-ca-file", ca_file)? {
                roots.add(c).map_err(|e| TlsError::Pem {
                    key: "tls.client-ca-file",
                    path: ca_file.to_owned(),
                    message: format!("not a usable CA certificate: {e}"),
                })?;
            }
            let verifier =
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone());
            let verifier = if auth == ClientAuth::Want {
                verifier.allow_unauthenticated()
            } else {
                verifier
            };
            builder.with_client_cert_verifier(
                verifier
                    .build()
                    .map_err(|e| TlsError::Config(e.to_string()))?,
            )
        }
    };
    builder
        .with_single_cert(certs, key)
        .map_err(|e| TlsError::Config(e.to_string()))
}

fn read(key: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        key,
        path: path.to_owned(),
        source,
    })
}

fn read_certs(key: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(key, path)?;
    let bad = |message: String| TlsError::Pem {
        key,
        path: path.to_owned(),
        message,
    };
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(format!("bad PEM: {e}")))?;
    if certs.is_empty() {
        return Err(bad("no PEM CERTIFICATE block found".into()));
    }
    Ok(certs)
}
