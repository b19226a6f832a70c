//! A small typed client of the broker's admin API (docs/OPERATIONS.md), for
//! the operator's commands (`status`, `dstat`, `browse`, `purge`, `move`,
//! `dlq retry`, `connections`).
//!
//! It speaks HTTP/1.0 by hand (one request per connection, the answer ends
//! when the broker closes it), over TCP or TLS: the admin API answers small
//! JSON documents, and an HTTP client library would be most of this
//! binary's size for that. Failures are [`AdminError`]s, whose
//! [`AdminError::exit_code`] is the command's documented exit code.

use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

/// Exit code: the command failed (unreachable broker, refused login, bad
/// answer, ...).
pub(crate) const EXIT_ERROR: u8 = 1;
/// Exit code: usage error (clap's own code), or a refusal that asks for a
/// flag (`purge` without `--yes` off a terminal).
pub(crate) const EXIT_USAGE: u8 = 2;
/// Exit code: the broker is not master (it answered 503), or a pair has no
/// single master.
pub(crate) const EXIT_NOT_MASTER: u8 = 3;
/// Exit code: no such destination, message or connection (404).
pub(crate) const EXIT_NOT_FOUND: u8 = 4;

/// How long one request may take, connect to last byte.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Why an admin API call failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum AdminError {
    /// `--http` is not an address.
    #[error(
        "invalid admin address '{0}': expected HOST:PORT, http://HOST:PORT or https://HOST:PORT"
    )]
    BadAddress(String),
    /// No TCP connection or TLS session.
    #[error("cannot reach the admin API at {addr}: {why}")]
    Unreachable { addr: String, why: String },
    /// The broker wants (other) credentials.
    #[error(
        "the admin API at {addr} wants a login: {msg}; give --user and --password \
         (or HALYARD_ADMIN_USER and HALYARD_ADMIN_PASSWORD)"
    )]
    Unauthorized { addr: String, msg: String },
    /// The user lacks the role.
    #[error(
        "the admin API at {addr} refused: {msg} (state-changing calls need a user with the admin role)"
    )]
    Forbidden { addr: String, msg: String },
    /// The broker is a slave (or otherwise not serving).
    #[error("the broker at {addr} is not master: {msg}")]
    NotMaster { addr: String, msg: String },
    /// 404.
    #[error("not found: {0}")]
    NotFound(String),
    /// A pair or group without exactly one master.
    #[error("{0}")]
    NoSingleMaster(String),
    /// Any other error status.
    #[error("the admin API at {addr} answered {code}: {msg}")]
    Status {
        addr: String,
        code: u16,
        msg: String,
    },
    /// Not HTTP, or not the JSON expected.
    #[error("unexpected answer from the admin API at {addr}: {why}")]
    BadAnswer { addr: String, why: String },
    /// A refusal the operator can lift with a flag.
    #[error("{0}")]
    Usage(String),
}

impl AdminError {
    /// The process exit code for this error (documented in
    /// docs/OPERATIONS.md, "Operator CLI").
    pub(crate) fn exit_code(&self) -> u8 {
        match self {
            AdminError::NotMaster { .. } => EXIT_NOT_MASTER,
            AdminError::NoSingleMaster(_) => EXIT_NOT_MASTER,
            AdminError::NotFound(_) => EXIT_NOT_FOUND,
            AdminError::Usage(_) | AdminError::BadAddress(_) => EXIT_USAGE,
            _ => EXIT_ERROR,
        }
    }
}

/// The exit code for an error a command returned: an [`AdminError`]'s own,
/// 1 for anything else.
pub(crate) fn exit_code(e: &anyhow::Error) -> u8 {
    e.downcast_ref::<AdminError>()
        .map_or(EXIT_ERROR, AdminError::exit_code)
}

/// Where the admin API is and how to log in: the flags every operator
/// command shares.
#[derive(clap::Args, Clone, Debug)]
pub(crate) struct Conn {
    /// The broker's admin HTTP address: HOST:PORT, http://HOST:PORT or
    /// https://HOST:PORT.
    #[arg(
        long,
        env = "HALYARD_HTTP",
        default_value = "127.0.0.1:8161",
        value_name = "ADDR"
    )]
    pub(crate) http: String,
    #[command(flatten)]
    pub(crate) login: Login,
}

/// Credentials and trust, shared by `status` (several addresses) and the
/// other operator commands (one).
#[derive(clap::Args, Clone, Debug, Default)]
pub(crate) struct Login {
    /// The user to log in to the admin API as (a broker with users asks
    /// for one in the `monitors` or `admins` group; changes need `admins`).
    #[arg(long, env = "HALYARD_ADMIN_USER", value_name = "USER")]
    pub(crate) user: Option<String>,
    /// That user's password (better given in the environment than on a
    /// command line others can see).
    #[arg(
        long,
        env = "HALYARD_ADMIN_PASSWORD",
        value_name = "PASSWORD",
        hide_env_values = true
    )]
    pub(crate) password: Option<String>,
    /// A PEM CA certificate to trust for an https:// admin address (in
    /// addition to the system's roots).
    #[arg(long, env = "HALYARD_ADMIN_CA", value_name = "PEM")]
    pub(crate) ca: Option<String>,
}

/// A parsed admin address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Address {
    pub(crate) tls: bool,
    /// `host:port`, as connected to and sent in `Host`.
    pub(crate) authority: String,
    /// The host alone (the TLS server name).
    pub(crate) host: String,
}

impl Address {
    /// Parses `host:port`, `http://host:port` or `https://host:port` (a
    /// trailing `/` is allowed; without a port, 8161).
    pub(crate) fn parse(s: &str) -> Result<Address, AdminError> {
        let bad = || AdminError::BadAddress(s.to_owned());
        let t = s.trim();
        let (tls, rest) = if let Some(r) = t.strip_prefix("https://") {
            (true, r)
        } else if let Some(r) = t.strip_prefix("http://") {
            (false, r)
        } else if t.contains("://") {
            return Err(bad());
        } else {
            (false, t)
        };
        let rest = rest.trim_end_matches('/');
        if rest.is_empty() || rest.contains('/') || rest.contains('@') {
            return Err(bad());
        }
        // [v6]:port, host:port, or host alone.
        let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
            let (h, after) = v6.split_once(']').ok_or_else(bad)?;
            let port = match after.strip_prefix(':') {
                Some(p) => p,
                None if after.is_empty() => "8161",
                None => return Err(bad()),
            };
            (h.to_owned(), port)
        } else {
            match rest.rsplit_once(':') {
                Some((h, p)) => (h.to_owned(), p),
                None => (rest.to_owned(), "8161"),
            }
        };
        if host.is_empty() || port.parse::<u16>().map_or(true, |p| p == 0) {
            return Err(bad());
        }
        let authority = if host.contains(':') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        Ok(Address {
            tls,
            authority,
            host,
        })
    }
}

/// One HTTP answer.
#[derive(Debug)]
pub(crate) struct Answer {
    pub(crate) code: u16,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: String,
}

impl Answer {
    /// A header's value (names compared case-insensitively).
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A client of one broker's admin API.
pub(crate) struct AdminClient {
    addr: Address,
    /// What the operator typed, for messages.
    shown: String,
    auth: Option<String>,
    tls: Option<Arc<rustls::ClientConfig>>,
}

impl AdminClient {
    /// A client for `addr` with `login`'s credentials. Nothing is sent yet.
    pub(crate) fn new(addr: &str, login: &Login) -> Result<AdminClient, AdminError> {
        use base64::Engine;
        let parsed = Address::parse(addr)?;
        let tls = if parsed.tls {
            Some(
                tls_config(login.ca.as_deref()).map_err(|why| AdminError::Unreachable {
                    addr: addr.to_owned(),
                    why,
                })?,
            )
        } else {
            None
        };
        let auth = login.user.as_ref().map(|u| {
            base64::engine::general_purpose::STANDARD
                .encode(format!("{u}:{}", login.password.as_deref().unwrap_or("")))
        });
        Ok(AdminClient {
            addr: parsed,
            shown: addr.to_owned(),
            auth,
            tls,
        })
    }

    /// For [`Conn`]: its one address and login.
    pub(crate) fn from_conn(c: &Conn) -> Result<AdminClient, AdminError> {
        AdminClient::new(&c.http, &c.login)
    }

    /// The address as the operator gave it.
    pub(crate) fn shown(&self) -> &str {
        &self.shown
    }

    /// GET `path`, expecting 200 and JSON.
    pub(crate) async fn get_json(&self, path: &str) -> Result<Value, AdminError> {
        let a = self.request("GET", path, None).await?;
        self.json(a, path)
    }

    /// GET `path`; the answer and its JSON (for headers such as
    /// `x-total-count`).
    pub(crate) async fn get_with_headers(&self, path: &str) -> Result<(Answer, Value), AdminError> {
        let a = self.request("GET", path, None).await?;
        let a = self.check(a, path)?;
        let v = self.parse(&a.body)?;
        Ok((a, v))
    }

    /// POST `body` as JSON to `path`, expecting 200 and JSON.
    pub(crate) async fn post_json(&self, path: &str, body: &Value) -> Result<Value, AdminError> {
        let a = self.request("POST", path, Some(body)).await?;
        self.json(a, path)
    }

    /// DELETE `path`, expecting 200 and JSON.
    pub(crate) async fn delete_json(&self, path: &str) -> Result<Value, AdminError> {
        let a = self.request("DELETE", path, None).await?;
        self.json(a, path)
    }

    fn json(&self, a: Answer, path: &str) -> Result<Value, AdminError> {
        let a = self.check(a, path)?;
        self.parse(&a.body)
    }

    fn parse(&self, body: &str) -> Result<Value, AdminError> {
        serde_json::from_str(body).map_err(|e| AdminError::BadAnswer {
            addr: self.shown.clone(),
            why: format!("not JSON ({e})"),
        })
    }

    /// Turns an error status of the answer to `path` into its
    /// [`AdminError`].
    pub(crate) fn check(&self, a: Answer, path: &str) -> Result<Answer, AdminError> {
        let addr = self.shown.clone();
        let msg = error_text(&a.body);
        match a.code {
            200..=299 => Ok(a),
            401 => Err(AdminError::Unauthorized { addr, msg }),
            403 => Err(AdminError::Forbidden { addr, msg }),
            // An empty 404 is the router's: no such endpoint (a broker
            // older than this command), not a missing destination.
            404 if msg.is_empty() => Err(AdminError::NotFound(format!(
                "{path} at {addr} (the broker has no such endpoint: is it older than this halyard?)"
            ))),
            404 => Err(AdminError::NotFound(msg)),
            503 => {
                let master = serde_json::from_str::<Value>(&a.body)
                    .ok()
                    .and_then(|v| v["master"].as_str().map(str::to_owned));
                let msg = match master {
                    Some(m) => format!("{msg}; the master is {m}"),
                    None => msg,
                };
                Err(AdminError::NotMaster { addr, msg })
            }
            code => Err(AdminError::Status { addr, code, msg }),
        }
    }

    /// Sends one request and reads the whole answer.
    pub(crate) async fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Answer, AdminError> {
        let unreachable = |why: String| AdminError::Unreachable {
            addr: self.shown.clone(),
            why,
        };
        let body = body.map(Value::to_string).unwrap_or_default();
        let mut head = format!(
            "{method} {path} HTTP/1.0\r\nHost: {}\r\nAccept: application/json\r\n",
            self.addr.authority
        );
        if let Some(a) = &self.auth {
            head.push_str(&format!("Authorization: Basic {a}\r\n"));
        }
        if method != "GET" {
            head.push_str(&format!(
                "Content-Type: application/json\r\nContent-Length: {}\r\n",
                body.len()
            ));
        }
        head.push_str("\r\n");
        head.push_str(&body);
        let exchange = async {
            let tcp = TcpStream::connect(&self.addr.authority)
                .await
                .map_err(|e| e.to_string())?;
            match &self.tls {
                None => exchange(tcp, head.as_bytes()).await,
                Some(config) => {
                    let name = ServerName::try_from(self.addr.host.clone()).map_err(|_| {
                        format!("'{}' is not a name TLS can verify", self.addr.host)
                    })?;
                    let tls = tokio_rustls::TlsConnector::from(config.clone())
                        .connect(name, tcp)
                        .await
                        .map_err(|e| {
                            format!("TLS handshake failed: {e} (give its CA with --ca)")
                        })?;
                    exchange(tls, head.as_bytes()).await
                }
            }
        };
        let raw = tokio::time::timeout(REQUEST_TIMEOUT, exchange)
            .await
            .map_err(|_| unreachable(format!("no answer within {} s", REQUEST_TIMEOUT.as_secs())))?
            .map_err(unreachable)?;
        parse_answer(&raw).ok_or_else(|| AdminError::BadAnswer {
            addr: self.shown.clone(),
            why: "not an HTTP response".to_owned(),
        })
    }
}

/// Writes the request, reads until the peer closes. A TLS peer that closes
/// without close_notify still gave us the whole HTTP/1.0 answer, so an
/// unexpected EOF after some bytes is not an error.
async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    mut s: S,
    request: &[u8],
) -> Result<Vec<u8>, String> {
    s.write_all(request).await.map_err(|e| e.to_string())?;
    s.flush().await.map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    match s.read_to_end(&mut buf).await {
        Ok(_) => Ok(buf),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !buf.is_empty() => Ok(buf),
        Err(e) => Err(e.to_string()),
    }
}

fn parse_answer(raw: &[u8]) -> Option<Answer> {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.split("\r\n");
    let code = lines.next()?.split_whitespace().nth(1)?.parse().ok()?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    Some(Answer {
        code,
        headers,
        body: body.to_owned(),
    })
}

/// The message of an error answer: `{"error": "..."}`'s text, or the body.
fn error_text(body: &str) -> String {
    match serde_json::from_str::<Value>(body) {
        Ok(v) => match v["error"].as_str() {
            Some(e) => e.to_owned(),
            None => body.trim().to_owned(),
        },
        Err(_) => body.trim().to_owned(),
    }
}

/// rustls with the system's roots plus `ca`.
fn tls_config(ca: Option<&str>) -> Result<Arc<rustls::ClientConfig>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
    if let Some(path) = ca {
        let pem = std::fs::read(path).map_err(|e| format!("cannot read --ca {path}: {e}"))?;
        let certs = CertificateDer::pem_slice_iter(&pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("--ca {path} is not PEM: {e}"))?;
        if certs.is_empty() {
            return Err(format!("--ca {path} holds no PEM CERTIFICATE"));
        }
        for c in certs {
            roots
                .add(c)
                .map_err(|e| format!("--ca {path}: not a usable CA certificate: {e}"))?;
        }
    }
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// A destination as the API names it: `queue` or `topic`, and the name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Dest {
    pub(crate) kind: &'static str,
    pub(crate) name: String,
}

impl Dest {
    /// Parses `/queue/x`, `/topic/x`, ActiveMQ's `queue://x` and
    /// `topic://x`, or a bare name (a queue, as ActiveMQ's tools take it).
    pub(crate) fn parse(s: &str) -> Result<Dest, AdminError> {
        let s = s.trim();
        let (kind, name) = if let Some(n) = s.strip_prefix("/queue/") {
            ("queue", n)
        } else if let Some(n) = s.strip_prefix("/topic/") {
            ("topic", n)
        } else if let Some(n) = s.strip_prefix("queue://") {
            ("queue", n)
        } else if let Some(n) = s.strip_prefix("topic://") {
            ("topic", n)
        } else if s.starts_with('/') || s.contains("://") {
            return Err(AdminError::Usage(format!(
                "'{s}' is not a destination: use /queue/NAME or /topic/NAME"
            )));
        } else {
            ("queue", s)
        };
        if name.is_empty() {
            return Err(AdminError::Usage(format!("'{s}' names no destination")));
        }
        Ok(Dest {
            kind,
            name: name.to_owned(),
        })
    }

    /// `/queue/x`, as clients name it.
    pub(crate) fn stomp(&self) -> String {
        format!("/{}/{}", self.kind, self.name)
    }

    /// `/api/destinations/queue/x` (the name percent-encoded).
    pub(crate) fn api_path(&self) -> String {
        format!("/api/destinations/{}/{}", self.kind, encode(&self.name))
    }

    /// Refuses a topic where only queues hold messages to look at.
    pub(crate) fn queue_only(self, what: &str) -> Result<Dest, AdminError> {
        if self.kind == "queue" {
            Ok(self)
        } else {
            Err(AdminError::Usage(format!(
                "{what} works on queues; {} is a topic",
                self.stomp()
            )))
        }
    }
}

/// Percent-encodes a path segment or query value (everything but RFC
/// 3986's unreserved characters).
pub(crate) fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_in_every_spelling() {
        let a = Address::parse("127.0.0.1:8161").unwrap();
        assert_eq!((a.tls, a.authority.as_str()), (false, "127.0.0.1:8161"));
        let a = Address::parse("http://h:1/").unwrap();
        assert_eq!((a.tls, a.authority.as_str()), (false, "h:1"));
        let a = Address::parse("https://broker.example:8443").unwrap();
        assert_eq!((a.tls, a.host.as_str()), (true, "broker.example"));
        assert_eq!(Address::parse("h").unwrap().authority, "h:8161");
        assert_eq!(Address::parse("[::1]:9").unwrap().authority, "[::1]:9");
        for bad in [
            "",
            "ftp://h:1",
            "h:99999",
            "h:0",
            "http://h:1/api",
            "http:/h:1",
        ] {
            assert!(Address::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn destinations_in_every_spelling() {
        for (s, kind, name) in [
            ("/queue/a.b", "queue", "a.b"),
            ("/topic/t", "topic", "t"),
            ("queue://ActiveMQ.DLQ", "queue", "ActiveMQ.DLQ"),
            ("topic://x", "topic", "x"),
            ("orders", "queue", "orders"),
        ] {
            assert_eq!(
                Dest::parse(s).unwrap(),
                Dest {
                    kind,
                    name: name.to_owned()
                }
            );
        }
        assert!(Dest::parse("/temp-queue/x").is_err());
        assert!(Dest::parse("/queue/").is_err());
        assert_eq!(
            Dest::parse("/queue/a b/c").unwrap().api_path(),
            "/api/destinations/queue/a%20b%2Fc"
        );
    }

    #[test]
    fn answers_and_error_texts() {
        let a =
            parse_answer(b"HTTP/1.0 503 X\r\nx-total-count: 3\r\n\r\n{\"error\":\"not master\"}")
                .unwrap();
        assert_eq!(a.code, 503);
        assert_eq!(a.header("X-Total-Count"), Some("3"));
        assert_eq!(error_text(&a.body), "not master");
        assert_eq!(error_text("plain\n"), "plain");
        assert!(parse_answer(b"garbage").is_none());
    }
}
