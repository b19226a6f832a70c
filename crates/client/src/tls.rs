//! The client side of `ssl://` endpoints: rustls (ring provider) with the
//! system's roots plus the endpoint's `trustCa`, an optional client
//! certificate, and failures explained in words an operator can act on.

use std::io::ErrorKind;
use std::sync::{Arc, OnceLock};

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, Error as TlsErr, RootCertStore,
    SignatureScheme,
};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::url::TlsOptions;

/// The system's root certificates, read once (reading them is slow and
/// they do not change while a program runs).
fn system_roots() -> &'static [CertificateDer<'static>] {
    static ROOTS: OnceLock<Vec<CertificateDer<'static>>> = OnceLock::new();
    ROOTS.get_or_init(|| {
        let found = rustls_native_certs::load_native_certs();
        if !found.errors.is_empty() {
            tracing::debug!(errors = ?found.errors, "some system root certificates could not be read");
        }
        found.certs
    })
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read_pem(option: &str, path: &str) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read {option} {path}: {e}"))
}

fn read_certs(option: &str, path: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let pem = read_pem(option, path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{option} {path} is not PEM: {e}"))?;
    if certs.is_empty() {
        return Err(format!("{option} {path} holds no PEM CERTIFICATE"));
    }
    Ok(certs)
}

/// The rustls configuration for one endpoint's options.
fn config(o: &TlsOptions) -> Result<ClientConfig, String> {
    let provider = provider();
    let mut roots = RootCertStore::empty();
    roots.add_parsable_certificates(system_roots().iter().cloned());
    if let Some(ca) = &o.trust_ca {
        for c in read_certs("trustCa", ca)? {
            roots
                .add(c)
                .map_err(|e| format!("trustCa {ca}: not a usable CA certificate: {e}"))?;
        }
    }
    let verifier = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| format!("no trusted CA certificates (system roots or trustCa): {e}"))?;
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let builder = if o.verify_host_name == Some(false) {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyName(verifier)))
    } else {
        builder.with_webpki_verifier(verifier)
    };
    match (&o.client_cert, &o.client_key) {
        (Some(cert), Some(key)) => {
            let certs = read_certs("clientCert", cert)?;
            let key = PrivateKeyDer::from_pem_slice(&read_pem("clientKey", key)?)
                .map_err(|e| format!("clientKey {key}: no PEM private key: {e}"))?;
            builder
                .with_client_auth_cert(certs, key)
                .map_err(|e| format!("clientCert/clientKey cannot be used: {e}"))
        }
        _ => Ok(builder.with_no_client_auth()),
    }
}

/// Runs the handshake with `host` over `tcp`. The error is a sentence for
/// `ClientError::Tls`.
pub(crate) async fn connect(
    tcp: TcpStream,
    host: &str,
    o: &TlsOptions,
) -> Result<TlsStream<TcpStream>, String> {
    let config = config(o)?;
    let name = ServerName::try_from(host.to_owned())
        .map_err(|_| format!("'{host}' is not a host name or IP address TLS can verify"))?;
    TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .map_err(|e| explain(&e, host))
}

/// If `e` is a TLS failure (in TLS 1.3 the broker refuses a client
/// certificate only after the client's handshake is done: the refusal
/// arrives with the first read), what it means, in words.
pub(crate) fn explain_read(e: &std::io::Error, host: &str) -> Option<String> {
    e.get_ref()
        .is_some_and(|i| i.is::<TlsErr>())
        .then(|| explain(e, host))
}

/// What a failed handshake means, in words.
fn explain(e: &std::io::Error, host: &str) -> String {
    let Some(tls) = e.get_ref().and_then(|i| i.downcast_ref::<TlsErr>()) else {
        return match e.kind() {
            ErrorKind::UnexpectedEof | ErrorKind::ConnectionReset => format!(
                "the broker closed the connection during the handshake ({e}): is {host}'s port a TLS (+ssl) listener, and does it want a client certificate (clientCert, clientKey)?"
            ),
            _ => format!("handshake failed: {e}"),
        };
    };
    match tls {
        TlsErr::InvalidCertificate(CertificateError::UnknownIssuer) => format!(
            "certificate not trusted (unknown issuer) for host {host}: add its CA with trustCa=PATH"
        ),
        TlsErr::InvalidCertificate(
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
        ) => format!(
            "certificate not valid for host name {host} (connect by a name it has, or set verifyHostName=false)"
        ),
        TlsErr::InvalidCertificate(
            CertificateError::Expired | CertificateError::ExpiredContext { .. },
        ) => format!("certificate of {host} has expired"),
        TlsErr::InvalidCertificate(other) => {
            format!("certificate of {host} not accepted: {other:?}")
        }
        TlsErr::AlertReceived(alert) => format!(
            "the broker refused the handshake ({alert:?}): it may require a client certificate it trusts (clientCert, clientKey)"
        ),
        other => format!("handshake with {host} failed: {other}"),
    }
}

/// `verifyHostName=false`: the chain is verified as usual; a certificate
/// that is valid but for another name is accepted.
#[derive(Debug)]
struct AnyName(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for AnyName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, TlsErr> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(TlsErr::InvalidCertificate(
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
    ) -> Result<HandshakeSignatureValid, TlsErr> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsErr> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}
