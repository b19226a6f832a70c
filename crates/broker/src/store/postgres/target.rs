//! Where the database is and how to reach it: the store's URL as libpq
//! users write it, TLS included, turned into what tokio-postgres takes.
//!
//! tokio-postgres knows `sslmode` only as `disable`, `prefer` and `require`
//! and rejects `sslrootcert`, yet those are what a managed database's
//! instructions say to put in the URL. So both are taken out here: TLS is
//! used for `require`, `verify-ca` and `verify-full`, and then the server's
//! certificate is ALWAYS verified — against the system's trusted roots plus
//! the PEM file named by `sslrootcert` — and its name checked, as libpq's
//! `verify-full` does. A broker's messages are worth that: `require`
//! without verification would let anyone in the middle read them. The other
//! modes (and none) connect without TLS; nothing is tried opportunistically,
//! so what the URL says is what happens.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use tokio_postgres::config::SslMode;
use tokio_postgres::{Client, Config, NoTls};
use tokio_postgres_rustls::MakeRustlsConnect;

/// A database URL (or `key=value` string) the store cannot use. The
/// messages name the offending parameter and what would fix it: the
/// operator reads them at start-up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DatabaseUrlError {
    /// `sslmode` is none of libpq's modes.
    #[error("sslmode={0}: expected one of disable, allow, prefer, require, verify-ca, verify-full")]
    UnknownSslMode(String),
    /// `sslrootcert` without a mode that uses TLS.
    #[error("sslrootcert is set but sslmode does not ask for TLS (use sslmode=verify-full)")]
    RootCertWithoutTls,
    /// tokio-postgres does not accept the rest of the URL.
    #[error("{detail}")]
    Invalid {
        /// The parser's message (with its causes).
        detail: String,
        /// The parser's error.
        #[source]
        source: tokio_postgres::Error,
    },
    /// The `sslrootcert` file cannot be read as PEM certificates.
    #[error("sslrootcert={path}: cannot read certificates: {source}")]
    RootCertUnreadable {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    /// The `sslrootcert` file holds no certificate.
    #[error("sslrootcert={path}: no certificate in the file")]
    RootCertEmpty {
        /// The file.
        path: String,
    },
    /// A certificate of the `sslrootcert` file is not a usable root.
    #[error("sslrootcert={path}: {source}")]
    RootCertRejected {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: rustls::Error,
    },
    /// TLS is asked for, but nothing to verify the server against.
    #[error(
        "TLS asked for, but no trusted certificates: install the system's CA certificates or set sslrootcert"
    )]
    NoTrustedRoots,
    /// rustls cannot be set up (no protocol version in common with the
    /// crypto provider).
    #[error("TLS: {0}")]
    Tls(#[source] rustls::Error),
}

/// A parsed store URL.
pub(crate) struct Target {
    config: Config,
    tls: Option<MakeRustlsConnect>,
}

/// The `sslmode`s that turn TLS on.
const TLS_MODES: [&str; 3] = ["require", "verify-ca", "verify-full"];
/// The `sslmode`s that leave it off.
const PLAIN_MODES: [&str; 3] = ["disable", "allow", "prefer"];

impl Target {
    /// Parses `url` (a `postgres://` URL or a `key=value` string) and loads
    /// the certificates it names.
    pub(crate) fn parse(url: &str) -> Result<Target, DatabaseUrlError> {
        let url = url.trim();
        let (rest, mode, root) = if url.contains("://") {
            take_url_params(url)
        } else {
            take_keyword_params(url)
        };
        let tls = match mode.as_deref() {
            None => None,
            Some(m) if PLAIN_MODES.contains(&m) => None,
            Some(m) if TLS_MODES.contains(&m) => Some(tls_config(root.as_deref())?),
            Some(m) => return Err(DatabaseUrlError::UnknownSslMode(m.to_owned())),
        };
        if tls.is_none() && root.is_some() {
            return Err(DatabaseUrlError::RootCertWithoutTls);
        }
        let mut config: Config =
            rest.parse()
                .map_err(|source: tokio_postgres::Error| DatabaseUrlError::Invalid {
                    detail: super::describe(&source),
                    source,
                })?;
        config.ssl_mode(if tls.is_some() {
            SslMode::Require
        } else {
            SslMode::Disable
        });
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(5));
        }
        config.application_name("halyard");
        // Schema creation's "already exists, skipping" notices are not news.
        // Added to the URL's own options (say `-c search_path=group_a`).
        let ours = "-c client_min_messages=warning -c plan_cache_mode=force_generic_plan";
        let options = match config.get_options() {
            Some(theirs) if !theirs.trim().is_empty() => format!("{theirs} {ours}"),
            _ => ours.to_owned(),
        };
        config.options(&options);
        // Dead peers are noticed in seconds, not hours.
        config.keepalives_idle(Duration::from_secs(5));
        Ok(Target { config, tls })
    }

    /// The target of `url`, parsed once per process (certificates are read
    /// at the first use, which `check_url` makes the broker's start).
    pub(crate) fn of(url: &str) -> Result<Arc<Target>, DatabaseUrlError> {
        static CACHE: OnceLock<Mutex<HashMap<String, Arc<Target>>>> = OnceLock::new();
        let cache = CACHE.get_or_init(Default::default);
        if let Some(t) = lock(cache).get(url) {
            return Ok(t.clone());
        }
        let t = Arc::new(Target::parse(url)?);
        lock(cache).insert(url.to_owned(), t.clone());
        Ok(t)
    }

    /// Whether connections use TLS.
    pub(crate) fn tls(&self) -> bool {
        self.tls.is_some()
    }

    /// Opens a connection whose I/O runs on the current runtime.
    pub(crate) async fn connect(&self) -> Result<Client, tokio_postgres::Error> {
        let client = match &self.tls {
            Some(tls) => {
                let (client, connection) = self.config.connect(tls.clone()).await?;
                tokio::spawn(watch(connection));
                client
            }
            None => {
                let (client, connection) = self.config.connect(NoTls).await?;
                tokio::spawn(watch(connection));
                client
            }
        };
        Ok(client)
    }

    /// A connection pool manager for the same database.
    pub(crate) fn manager(&self) -> deadpool_postgres::Manager {
        match &self.tls {
            Some(tls) => deadpool_postgres::Manager::new(self.config.clone(), tls.clone()),
            None => deadpool_postgres::Manager::new(self.config.clone(), NoTls),
        }
    }
}

async fn watch<F: std::future::Future<Output = Result<(), tokio_postgres::Error>>>(connection: F) {
    if let Err(e) = connection.await {
        tracing::debug!(error = %e, "database connection ended");
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Takes `sslmode` and `sslrootcert` out of a URL's query.
fn take_url_params(url: &str) -> (String, Option<String>, Option<String>) {
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let (mut mode, mut root, mut kept) = (None, None, Vec::new());
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("sslmode", v)) => mode = Some(v.to_owned()),
            Some(("sslrootcert", v)) => root = Some(v.to_owned()),
            _ => kept.push(pair),
        }
    }
    let rest = if kept.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    (rest, mode, root)
}

/// Takes `sslmode` and `sslrootcert` out of a `key=value` string (values
/// with spaces must not be quoted for these two).
fn take_keyword_params(s: &str) -> (String, Option<String>, Option<String>) {
    let (mut mode, mut root, mut kept) = (None, None, Vec::new());
    for word in s.split_whitespace() {
        match word.split_once('=') {
            Some(("sslmode", v)) => mode = Some(v.to_owned()),
            Some(("sslrootcert", v)) => root = Some(v.to_owned()),
            _ => kept.push(word),
        }
    }
    (kept.join(" "), mode, root)
}

/// A TLS client that trusts the system's roots and those in `root`.
fn tls_config(root: Option<&str>) -> Result<MakeRustlsConnect, DatabaseUrlError> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;

    let mut roots = rustls::RootCertStore::empty();
    // Unreadable system certificates are not fatal: sslrootcert may be all
    // that is needed.
    for cert in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(cert);
    }
    if let Some(path) = root {
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
            .and_then(|it| it.collect::<Result<_, _>>())
            .map_err(|source| DatabaseUrlError::RootCertUnreadable {
                path: path.to_owned(),
                source,
            })?;
        if certs.is_empty() {
            return Err(DatabaseUrlError::RootCertEmpty {
                path: path.to_owned(),
            });
        }
        for cert in certs {
            roots
                .add(cert)
                .map_err(|source| DatabaseUrlError::RootCertRejected {
                    path: path.to_owned(),
                    source,
                })?;
        }
    }
    if roots.is_empty() {
        return Err(DatabaseUrlError::NoTrustedRoots);
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(DatabaseUrlError::Tls)?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(MakeRustlsConnect::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_parameters_are_taken_out_of_urls_and_strings() {
        let (rest, mode, root) = take_url_params(
            "postgres://u:p@h:5/db?sslmode=verify-full&application_name=x&sslrootcert=/ca.pem",
        );
        assert_eq!(rest, "postgres://u:p@h:5/db?application_name=x");
        assert_eq!(mode.as_deref(), Some("verify-full"));
        assert_eq!(root.as_deref(), Some("/ca.pem"));
        let (rest, mode, root) = take_url_params("postgres://h/db");
        assert_eq!((rest.as_str(), mode, root), ("postgres://h/db", None, None));
        let (rest, mode, root) = take_keyword_params("host=h sslmode=require dbname=d");
        assert_eq!(rest, "host=h dbname=d");
        assert_eq!((mode.as_deref(), root), (Some("require"), None));
    }

    #[test]
    fn plain_modes_need_no_certificates_and_bad_ones_are_named() {
        for url in [
            "postgres://h/db",
            "postgres://h/db?sslmode=disable",
            "postgres://h/db?sslmode=prefer",
            "host=h sslmode=allow",
        ] {
            let t = Target::parse(url).unwrap_or_else(|e| panic!("{url}: {e}"));
            assert!(!t.tls(), "{url}");
        }
        let e = Target::parse("postgres://h/db?sslmode=sometimes")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("sslmode=sometimes"), "{e}");
        let e = Target::parse("postgres://h/db?sslmode=require&sslrootcert=/nonexistent/ca.pem")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("/nonexistent/ca.pem"), "{e}");
        let e = Target::parse("postgres://h/db?sslrootcert=/x.pem")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("sslmode"), "{e}");
        let e = Target::parse("postgres://h/db?frobnicate=1")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("frobnicate"), "{e}");
    }
}
