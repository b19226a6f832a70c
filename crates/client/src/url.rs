//! Broker addresses.
//!
//! - One broker: `stomp://[login:passcode@]host:port[?options]`, also
//!   `tcp://…` or plain `host:port`. Options: `login`, `passcode`,
//!   `heartbeat` (`CX,CY` in ms, or `CX:CY`), `connectTimeout` (ms).
//! - Several, with failover: `failover:(uri1,uri2,…)?options` or
//!   `failover:uri1,uri2?options`, with ActiveMQ's option names and defaults
//!   (see [`FailoverOptions`]); `nested.NAME=VALUE` sets an option on every
//!   inner URI.
//!
//! - Over TLS: `ssl://host:port` or `stomp+ssl://host:port` (ActiveMQ's
//!   schemes; inside `failover:(…)` too). The broker's certificate is
//!   verified against the system's roots plus `trustCa`, and its host name
//!   checked. Options (PEM files, where ActiveMQ takes JVM keystores):
//!   `trustCa=PATH` (CA certificates to trust besides the system's),
//!   `clientCert=PATH` and `clientKey=PATH` (a client certificate, for
//!   brokers that ask for one), `verifyHostName=false` (ActiveMQ's name,
//!   also `socket.verifyHostName`: skip the host-name check — the chain is
//!   still verified). `nested.trustCa=…` sets one for every inner URI.
//!
//! Unknown options and bad values are errors that name them.

use std::fmt;
use std::time::Duration;

use halyard_stomp::HeartBeat;

/// One broker to connect to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// Host name or IP address (IPv6 without brackets).
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// Login, if given.
    pub login: Option<String>,
    /// Passcode, if given.
    pub passcode: Option<String>,
    /// Heart-beats to offer, if given.
    pub heartbeat: Option<HeartBeat>,
    /// How long connecting may take, if given.
    pub connect_timeout: Option<Duration>,
    /// `Some` for `ssl://` and `stomp+ssl://`: connect over TLS.
    pub tls: Option<TlsOptions>,
}

/// How an `ssl://` endpoint's TLS is set up.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TlsOptions {
    /// `trustCa`: a PEM file of CA certificates trusted besides the
    /// system's roots.
    pub trust_ca: Option<String>,
    /// `clientCert`: a PEM certificate (chain) to present.
    pub client_cert: Option<String>,
    /// `clientKey`: the PEM private key of `clientCert`.
    pub client_key: Option<String>,
    /// `verifyHostName` (default true): check that the certificate names
    /// the host connected to.
    pub verify_host_name: Option<bool>,
}

/// The default STOMP port.
pub const DEFAULT_PORT: u16 = 61613;

/// A URL the client cannot use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid broker URL '{url}': {reason}")]
pub struct UrlError {
    /// The URL as given.
    pub url: String,
    /// What is wrong with it. Part of the message already, so it is not
    /// also this error's `source()` (a report would say it twice).
    pub reason: UrlProblem,
}

/// What is wrong with a broker URL: one variant per mistake, so a program
/// can tell them apart and every message names the offending part.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UrlProblem {
    /// A `failover:` URL given where one broker is expected.
    #[error("a failover URL names several brokers; use BrokerUrl::parse")]
    FailoverNotAllowed,
    /// A scheme other than `stomp://`, `tcp://`, `ssl://` or `stomp+ssl://`.
    #[error("unknown scheme '{0}' (expected stomp://, tcp://, ssl:// or stomp+ssl://)")]
    UnknownScheme(String),
    /// A path (`/x`) or fragment (`#x`) after the address.
    #[error("paths and fragments are not supported")]
    PathOrFragment,
    /// A port that is not 1–65535.
    #[error("invalid port '{0}' (expected 1-65535)")]
    InvalidPort(String),
    /// An IPv6 address whose `[` is never closed.
    #[error("unclosed '['")]
    UnclosedBracket,
    /// Something other than `:port` after an IPv6 address's `]`.
    #[error("unexpected text after ']'")]
    TextAfterBracket,
    /// No host before the port.
    #[error("missing host")]
    MissingHost,
    /// A host with `[` or `]` in it (`stomp:login=1]:5`): brackets only
    /// enclose a whole IPv6 address, and such a host could not be written
    /// back as a URL that names it again.
    #[error("invalid host '{0}' ('[' and ']' may only enclose an IPv6 address)")]
    InvalidHost(String),
    /// A `%` not followed by two hex digits.
    #[error("bad percent-escape in '{0}'")]
    BadPercentEscape(String),
    /// Percent-escapes that decode to bytes which are not UTF-8.
    #[error("'{0}' is not UTF-8 once decoded")]
    NotUtf8(String),
    /// An option without `=VALUE`.
    #[error("option '{0}' has no value (expected NAME=VALUE)")]
    OptionWithoutValue(String),
    /// An option whose value does not parse or is out of range.
    #[error("invalid value '{value}' for {option}: expected {expected}")]
    InvalidValue {
        /// The option's name.
        option: String,
        /// Its value as given.
        value: String,
        /// What it must be.
        expected: &'static str,
    },
    /// An option a broker URL does not take.
    #[error(
        "unknown option '{0}' (broker URLs take login, passcode, heartbeat, connectTimeout; ssl:// ones also trustCa, clientCert, clientKey, verifyHostName)"
    )]
    UnknownOption(String),
    /// An option the failover transport does not take.
    #[error("unknown failover option '{0}'")]
    UnknownFailoverOption(String),
    /// `failover:(` without its `)`.
    #[error("missing ')' after the broker list")]
    UnclosedList,
    /// Something other than `?options` after the failover list's `)`.
    #[error("unexpected text '{0}' after ')'")]
    TextAfterList(String),
    /// `failover:()` or a list of empty entries.
    #[error("the failover list names no broker")]
    NoBroker,
    /// An entry of `priorityURIs` that is not a broker URL.
    #[error("priorityURIs: {0}")]
    PriorityUri(Box<UrlProblem>),
    /// A TLS option on a URL that is not `ssl://` or `stomp+ssl://`.
    #[error("option '{0}' is for ssl:// (TLS) URLs only")]
    TlsOptionWithoutTls(String),
    /// `clientCert` without `clientKey`, or the other way round.
    #[error("clientCert and clientKey go together")]
    ClientCertWithoutKey,
    /// `maxReconnectDelay` below `initialReconnectDelay`.
    #[error("maxReconnectDelay is shorter than initialReconnectDelay")]
    DelaysReversed,
}

/// The failover transport's settings: ActiveMQ's names and defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct FailoverOptions {
    /// `initialReconnectDelay` (ms, default 10): the first wait between
    /// reconnection attempts.
    pub initial_reconnect_delay: Duration,
    /// `maxReconnectDelay` (ms, default 30000): the longest wait.
    pub max_reconnect_delay: Duration,
    /// `useExponentialBackOff` (default true): grow the wait after each
    /// failed attempt.
    pub use_exponential_back_off: bool,
    /// `reconnectDelayExponent` (default 2.0): by how much.
    pub reconnect_delay_exponent: f64,
    /// `maxReconnectAttempts` (default -1: forever; 0: never reconnect):
    /// attempts (passes over the broker list) after a connection is lost.
    pub max_reconnect_attempts: i64,
    /// `startupMaxReconnectAttempts` (default -1: forever): attempts for
    /// the first connection.
    pub startup_max_reconnect_attempts: i64,
    /// `randomize` (default true): try the brokers in random order.
    pub randomize: bool,
    /// `timeout` (ms, default -1 = `None`: forever): how long an operation
    /// may wait while the client is disconnected.
    pub timeout: Option<Duration>,
    /// `backup` (default false): keep warm connections to other brokers.
    pub backup: bool,
    /// `backupPoolSize` (default 1): how many.
    pub backup_pool_size: usize,
    /// `warnAfterReconnectAttempts` (default 10): log a warning every this
    /// many failed attempts (0: never).
    pub warn_after_reconnect_attempts: u32,
    /// `priorityBackup` (default false): prefer the priority broker(s) and
    /// go back to one when it is available again.
    pub priority_backup: bool,
    /// `priorityURIs`: the priority brokers (default: the first in the list).
    pub priority_uris: Vec<Endpoint>,
    /// `updateURIsSupported` (default true): add the brokers a broker
    /// announces (CONNECTED `peers` header) to the list.
    pub update_uris_supported: bool,
}

impl Default for FailoverOptions {
    fn default() -> FailoverOptions {
        FailoverOptions {
            initial_reconnect_delay: Duration::from_millis(10),
            max_reconnect_delay: Duration::from_millis(30_000),
            use_exponential_back_off: true,
            reconnect_delay_exponent: 2.0,
            max_reconnect_attempts: -1,
            startup_max_reconnect_attempts: -1,
            randomize: true,
            timeout: None,
            backup: false,
            backup_pool_size: 1,
            warn_after_reconnect_attempts: 10,
            priority_backup: false,
            priority_uris: Vec::new(),
            update_uris_supported: true,
        }
    }
}

/// A parsed broker URL: one broker, or several with failover.
#[derive(Debug, Clone, PartialEq)]
pub struct BrokerUrl {
    /// The brokers, in the order given.
    pub endpoints: Vec<Endpoint>,
    /// `Some` for a `failover:` URL: reconnect as these options say.
    pub failover: Option<FailoverOptions>,
    /// Login given as a failover option.
    pub login: Option<String>,
    /// Passcode given as a failover option.
    pub passcode: Option<String>,
}

fn percent_decode(s: &str) -> Result<String, UrlProblem> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| UrlProblem::BadPercentEscape(s.to_owned()))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| UrlProblem::NotUtf8(s.to_owned()))
}

/// `key=value` pairs of a query string.
fn query(q: &str) -> Result<Vec<(String, String)>, UrlProblem> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p
                .split_once('=')
                .ok_or_else(|| UrlProblem::OptionWithoutValue(p.to_owned()))?;
            Ok((k.to_owned(), percent_decode(v)?))
        })
        .collect()
}

/// The error for option `name` whose value `v` is not `expected`.
fn invalid(name: &str, v: &str, expected: &'static str) -> UrlProblem {
    UrlProblem::InvalidValue {
        option: name.to_owned(),
        value: v.to_owned(),
        expected,
    }
}

fn parse_bool(name: &str, v: &str) -> Result<bool, UrlProblem> {
    match v {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(invalid(name, v, "true or false")),
    }
}

fn parse_int<T: std::str::FromStr>(
    name: &str,
    v: &str,
    expected: &'static str,
) -> Result<T, UrlProblem> {
    v.parse().map_err(|_| invalid(name, v, expected))
}

fn parse_ms(name: &str, v: &str) -> Result<Duration, UrlProblem> {
    let ms: u64 = parse_int(name, v, "milliseconds (a non-negative integer)")?;
    Ok(Duration::from_millis(ms))
}

fn parse_attempts(name: &str, v: &str) -> Result<i64, UrlProblem> {
    let n: i64 = parse_int(name, v, "an integer (-1 for unlimited)")?;
    if n < -1 {
        return Err(invalid(name, v, "-1 or more"));
    }
    Ok(n)
}

impl Endpoint {
    /// Parses one broker's URL (no `failover:`).
    pub fn parse(url: &str) -> Result<Endpoint, UrlError> {
        let err = |reason: UrlProblem| UrlError {
            url: url.to_owned(),
            reason,
        };
        if url.starts_with("failover:") {
            return Err(err(UrlProblem::FailoverNotAllowed));
        }
        let (rest, tls) = if let Some((scheme, rest)) = url.split_once("://") {
            match scheme {
                "stomp" | "tcp" => (rest, None),
                "ssl" | "stomp+ssl" => (rest, Some(TlsOptions::default())),
                _ => {
                    return Err(err(UrlProblem::UnknownScheme(scheme.to_owned())));
                }
            }
        } else {
            (url, None)
        };
        let (rest, options) = match rest.split_once('?') {
            Some((r, q)) => (r, Some(q)),
            None => (rest, None),
        };
        let rest = rest.trim_end_matches('/');
        let (userinfo, hostport) = match rest.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, rest),
        };
        let (login, passcode) = match userinfo {
            None => (None, None),
            Some(u) => match u.split_once(':') {
                Some((l, p)) => (
                    Some(percent_decode(l).map_err(err)?),
                    Some(percent_decode(p).map_err(err)?),
                ),
                None => (Some(percent_decode(u).map_err(err)?), None),
            },
        };
        if hostport.contains(['/', '#']) {
            return Err(err(UrlProblem::PathOrFragment));
        }
        let bad_port = |p: &str| err(UrlProblem::InvalidPort(p.to_owned()));
        let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
            let (h, after) = v6
                .split_once(']')
                .ok_or_else(|| err(UrlProblem::UnclosedBracket))?;
            let port = match after.strip_prefix(':') {
                Some(p) => parse_port(p).ok_or_else(|| bad_port(p))?,
                None if after.is_empty() => DEFAULT_PORT,
                None => return Err(err(UrlProblem::TextAfterBracket)),
            };
            (h.to_owned(), port)
        } else {
            match hostport.rsplit_once(':') {
                Some((h, p)) => (h.to_owned(), parse_port(p).ok_or_else(|| bad_port(p))?),
                None => (hostport.to_owned(), DEFAULT_PORT),
            }
        };
        if host.is_empty() {
            return Err(err(UrlProblem::MissingHost));
        }
        if host.contains(['[', ']']) {
            return Err(err(UrlProblem::InvalidHost(host)));
        }
        let mut e = Endpoint {
            host,
            port,
            login,
            passcode,
            heartbeat: None,
            connect_timeout: None,
            tls,
        };
        for (k, v) in query(options.unwrap_or_default()).map_err(err)? {
            e.set(&k, &v, false).map_err(err)?;
        }
        e.check().map_err(err)?;
        Ok(e)
    }

    /// Settings that cannot work together.
    fn check(&self) -> Result<(), UrlProblem> {
        if let Some(t) = &self.tls
            && t.client_cert.is_some() != t.client_key.is_some()
        {
            return Err(UrlProblem::ClientCertWithoutKey);
        }
        Ok(())
    }

    /// Sets an inner-URL option. With `if_unset`, an option the URL already
    /// gives is left alone (how `nested.*` options apply).
    fn set(&mut self, name: &str, v: &str, if_unset: bool) -> Result<(), UrlProblem> {
        match name {
            "login" if !(if_unset && self.login.is_some()) => self.login = Some(v.to_owned()),
            "passcode" if !(if_unset && self.passcode.is_some()) => {
                self.passcode = Some(v.to_owned())
            }
            "heartbeat" if !(if_unset && self.heartbeat.is_some()) => {
                self.heartbeat = Some(
                    HeartBeat::parse(&v.replace(':', ","))
                        .map_err(|_| invalid(name, v, "CX,CY in milliseconds"))?,
                )
            }
            "connectTimeout" if !(if_unset && self.connect_timeout.is_some()) => {
                self.connect_timeout = Some(parse_ms(name, v)?)
            }
            "login" | "passcode" | "heartbeat" | "connectTimeout" => {}
            "trustCa" | "clientCert" | "clientKey" | "verifyHostName" | "socket.verifyHostName" => {
                let Some(t) = &mut self.tls else {
                    // `nested.trustCa` on a list that mixes plain and TLS
                    // brokers applies to the TLS ones.
                    if if_unset {
                        return Ok(());
                    }
                    return Err(UrlProblem::TlsOptionWithoutTls(name.to_owned()));
                };
                let slot = match name {
                    "trustCa" => &mut t.trust_ca,
                    "clientCert" => &mut t.client_cert,
                    "clientKey" => &mut t.client_key,
                    _ => {
                        if !(if_unset && t.verify_host_name.is_some()) {
                            t.verify_host_name = Some(parse_bool(name, v)?);
                        }
                        return Ok(());
                    }
                };
                if !(if_unset && slot.is_some()) {
                    *slot = Some(v.to_owned());
                }
            }
            _ => {
                return Err(UrlProblem::UnknownOption(name.to_owned()));
            }
        }
        Ok(())
    }

    /// `host:port`, bracketing IPv6 addresses, for connecting and messages.
    pub fn address(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// Whether two endpoints are the same broker.
    pub fn same_broker(&self, other: &Endpoint) -> bool {
        self.host == other.host && self.port == other.port
    }

    /// Whether this endpoint connects over TLS.
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }
}

fn parse_port(p: &str) -> Option<u16> {
    p.parse().ok().filter(|p| *p != 0)
}

/// The scheme and address (`stomp://h:1`, `ssl://h:1`): what logs and
/// errors name a broker by. Options are left out (a passcode must not reach
/// a log); what it shows parses back to the same broker and transport.
impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.is_tls() { "ssl" } else { "stomp" };
        write!(f, "{scheme}://{}", self.address())
    }
}

/// Splits a broker list at commas, keeping commas inside an inner URL's
/// option values (`heartbeat=1000,1000`) with their URL.
fn split_list(list: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for part in list.split(',') {
        let continues = out.last().is_some_and(|prev| prev.contains('?'))
            && !part.contains("://")
            && !part.contains(':');
        match out.last_mut() {
            Some(prev) if continues => {
                prev.push(',');
                prev.push_str(part);
            }
            _ => out.push(part.trim().to_owned()),
        }
    }
    out
}

impl BrokerUrl {
    /// Parses a broker URL: one broker, or `failover:` with several.
    pub fn parse(url: &str) -> Result<BrokerUrl, UrlError> {
        let err = |reason: UrlProblem| UrlError {
            url: url.to_owned(),
            reason,
        };
        let Some(rest) = url.strip_prefix("failover:") else {
            return Ok(BrokerUrl {
                endpoints: vec![Endpoint::parse(url)?],
                failover: None,
                login: None,
                passcode: None,
            });
        };
        let (list, options) = if let Some(inner) = rest.strip_prefix('(') {
            let close = inner
                .rfind(')')
                .ok_or_else(|| err(UrlProblem::UnclosedList))?;
            let after = &inner[close + 1..];
            let options = match after.strip_prefix('?') {
                Some(q) => q,
                None if after.is_empty() => "",
                None => return Err(err(UrlProblem::TextAfterList(after.to_owned()))),
            };
            (&inner[..close], options)
        } else {
            match rest.split_once('?') {
                Some((l, q)) => (l, q),
                None => (rest, ""),
            }
        };
        let mut endpoints = split_list(list)
            .iter()
            .filter(|u| !u.is_empty())
            .map(|u| Endpoint::parse(u).map_err(|e| err(e.reason)))
            .collect::<Result<Vec<_>, _>>()?;
        if endpoints.is_empty() {
            return Err(err(UrlProblem::NoBroker));
        }
        let mut o = FailoverOptions::default();
        let (mut login, mut passcode) = (None, None);
        for (k, v) in query(options).map_err(err)? {
            if let Some(inner) = k.strip_prefix("nested.") {
                for e in &mut endpoints {
                    e.set(inner, &v, true).map_err(&err)?;
                }
                continue;
            }
            let k = k.as_str();
            match k {
                "initialReconnectDelay" => {
                    o.initial_reconnect_delay = parse_ms(k, &v).map_err(err)?
                }
                "maxReconnectDelay" => o.max_reconnect_delay = parse_ms(k, &v).map_err(err)?,
                "useExponentialBackOff" => {
                    o.use_exponential_back_off = parse_bool(k, &v).map_err(err)?
                }
                "reconnectDelayExponent" => {
                    let x: f64 = parse_int(k, &v, "a number of at least 1.0").map_err(err)?;
                    if !(x.is_finite() && x >= 1.0) {
                        return Err(err(invalid(k, &v, "a number of at least 1.0")));
                    }
                    o.reconnect_delay_exponent = x;
                }
                "maxReconnectAttempts" => {
                    o.max_reconnect_attempts = parse_attempts(k, &v).map_err(err)?
                }
                "startupMaxReconnectAttempts" => {
                    o.startup_max_reconnect_attempts = parse_attempts(k, &v).map_err(err)?
                }
                "randomize" => o.randomize = parse_bool(k, &v).map_err(err)?,
                "timeout" => {
                    let t: i64 =
                        parse_int(k, &v, "milliseconds, or -1 for no limit").map_err(err)?;
                    o.timeout = match t {
                        -1 => None,
                        t if t >= 0 => Some(Duration::from_millis(t as u64)),
                        _ => return Err(err(invalid(k, &v, "-1 or more"))),
                    };
                }
                "backup" => o.backup = parse_bool(k, &v).map_err(err)?,
                "backupPoolSize" => {
                    o.backup_pool_size = parse_int(k, &v, "a non-negative integer").map_err(err)?
                }
                "warnAfterReconnectAttempts" => {
                    o.warn_after_reconnect_attempts =
                        parse_int(k, &v, "a non-negative integer").map_err(err)?
                }
                "priorityBackup" => o.priority_backup = parse_bool(k, &v).map_err(err)?,
                "priorityURIs" => {
                    o.priority_uris = v
                        .split(',')
                        .filter(|u| !u.is_empty())
                        .map(|u| {
                            Endpoint::parse(u.trim())
                                .map_err(|e| err(UrlProblem::PriorityUri(Box::new(e.reason))))
                        })
                        .collect::<Result<_, _>>()?
                }
                "updateURIsSupported" => {
                    o.update_uris_supported = parse_bool(k, &v).map_err(err)?
                }
                "login" => login = Some(v),
                "passcode" => passcode = Some(v),
                _ => return Err(err(UrlProblem::UnknownFailoverOption(k.to_owned()))),
            }
        }
        if o.max_reconnect_delay < o.initial_reconnect_delay {
            return Err(err(UrlProblem::DelaysReversed));
        }
        Ok(BrokerUrl {
            endpoints,
            failover: Some(o),
            login,
            passcode,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bad(url: &str, words: &str) {
        let e = BrokerUrl::parse(url).unwrap_err().to_string();
        assert!(
            e.contains("invalid broker URL") && e.contains(words),
            "{url}: {e}"
        );
    }

    #[test]
    fn single_broker_forms() {
        let e =
            Endpoint::parse("stomp://u:p%40ss@h:1234?heartbeat=100,200&connectTimeout=50").unwrap();
        assert_eq!((e.host.as_str(), e.port), ("h", 1234));
        assert_eq!(e.login.as_deref(), Some("u"));
        assert_eq!(e.passcode.as_deref(), Some("p@ss"));
        assert_eq!(
            e.heartbeat,
            Some(HeartBeat {
                can_send_ms: 100,
                want_receive_ms: 200
            })
        );
        assert_eq!(e.connect_timeout, Some(Duration::from_millis(50)));
        assert_eq!(Endpoint::parse("tcp://h").unwrap().port, DEFAULT_PORT);
        assert_eq!(
            Endpoint::parse("127.0.0.1:5").unwrap().address(),
            "127.0.0.1:5"
        );
        let v6 = Endpoint::parse("stomp://[::1]:7").unwrap();
        assert_eq!((v6.host.as_str(), v6.port), ("::1", 7));
        assert_eq!(v6.address(), "[::1]:7");
        let plain = BrokerUrl::parse("stomp://a:1").unwrap();
        assert!(plain.failover.is_none());
        assert_eq!(plain.endpoints.len(), 1);
    }

    #[test]
    fn failover_defaults_are_activemqs() {
        let u = BrokerUrl::parse("failover:(stomp://a:1,stomp://b:2)").unwrap();
        assert_eq!(u.endpoints.len(), 2);
        let o = u.failover.unwrap();
        assert_eq!(o, FailoverOptions::default());
        assert_eq!(o.initial_reconnect_delay, Duration::from_millis(10));
        assert_eq!(o.max_reconnect_delay, Duration::from_millis(30_000));
        assert!(o.use_exponential_back_off && o.randomize && o.update_uris_supported);
        assert_eq!(o.reconnect_delay_exponent, 2.0);
        assert_eq!(
            (o.max_reconnect_attempts, o.startup_max_reconnect_attempts),
            (-1, -1)
        );
        assert_eq!(o.timeout, None);
        assert!(!o.backup && !o.priority_backup);
        assert_eq!(
            (o.backup_pool_size, o.warn_after_reconnect_attempts),
            (1, 10)
        );
        // Without parentheses too.
        let u = BrokerUrl::parse("failover:stomp://a:1,tcp://b:2?randomize=false").unwrap();
        assert_eq!(u.endpoints[1].port, 2);
        assert!(!u.failover.unwrap().randomize);
    }

    #[test]
    fn every_option_parses() {
        let u = BrokerUrl::parse(
            "failover:(stomp://a:1?heartbeat=0,0,stomp://b:2)?initialReconnectDelay=5&maxReconnectDelay=200\
             &useExponentialBackOff=false&reconnectDelayExponent=1.5&maxReconnectAttempts=3\
             &startupMaxReconnectAttempts=0&randomize=false&timeout=250&backup=true&backupPoolSize=2\
             &warnAfterReconnectAttempts=0&priorityBackup=true&priorityURIs=stomp://b:2,stomp://a:1\
             &updateURIsSupported=false&login=me&passcode=se%26cret&nested.connectTimeout=300\
             &nested.heartbeat=500:500",
        )
        .unwrap();
        let o = u.failover.unwrap();
        assert_eq!(o.initial_reconnect_delay, Duration::from_millis(5));
        assert_eq!(o.max_reconnect_delay, Duration::from_millis(200));
        assert!(!o.use_exponential_back_off);
        assert_eq!(o.reconnect_delay_exponent, 1.5);
        assert_eq!(o.max_reconnect_attempts, 3);
        assert_eq!(o.startup_max_reconnect_attempts, 0);
        assert!(!o.randomize);
        assert_eq!(o.timeout, Some(Duration::from_millis(250)));
        assert!(o.backup);
        assert_eq!(o.backup_pool_size, 2);
        assert_eq!(o.warn_after_reconnect_attempts, 0);
        assert!(o.priority_backup);
        assert_eq!(o.priority_uris.len(), 2);
        assert_eq!(o.priority_uris[0].port, 2);
        assert!(!o.update_uris_supported);
        assert_eq!(u.login.as_deref(), Some("me"));
        assert_eq!(u.passcode.as_deref(), Some("se&cret"));
        // nested.* applies to every inner URL, without overriding its own.
        let a = &u.endpoints[0];
        let b = &u.endpoints[1];
        assert_eq!(a.heartbeat, Some(HeartBeat::default()));
        assert_eq!(
            b.heartbeat,
            Some(HeartBeat {
                can_send_ms: 500,
                want_receive_ms: 500
            })
        );
        assert_eq!(a.connect_timeout, Some(Duration::from_millis(300)));
        assert_eq!(b.connect_timeout, Some(Duration::from_millis(300)));
    }

    #[test]
    fn mistakes_are_told_apart_by_their_variant() {
        let reason = |url: &str| BrokerUrl::parse(url).unwrap_err().reason;
        assert_eq!(
            reason("failover:(stomp://a:1)?randomize=yes"),
            UrlProblem::InvalidValue {
                option: "randomize".into(),
                value: "yes".into(),
                expected: "true or false",
            }
        );
        assert_eq!(
            reason("failover:(stomp://a:1)?priorityURIs=stomp://b:0"),
            UrlProblem::PriorityUri(Box::new(UrlProblem::InvalidPort("0".into())))
        );
        assert_eq!(reason("failover:()"), UrlProblem::NoBroker);
        assert_eq!(
            reason("stomp://a:1?frob=1"),
            UrlProblem::UnknownOption("frob".into())
        );
        let e = BrokerUrl::parse("failover:(stomp://a:1)?priorityURIs=stomp://b:0").unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid broker URL 'failover:(stomp://a:1)?priorityURIs=stomp://b:0': priorityURIs: invalid port '0' (expected 1-65535)"
        );
    }

    #[test]
    fn bad_values_and_unknown_options_are_named() {
        bad(
            "failover:(stomp://a:1)?maxReconectAttempts=3",
            "unknown failover option 'maxReconectAttempts'",
        );
        bad(
            "failover:(stomp://a:1)?maxReconnectAttempts=x",
            "maxReconnectAttempts",
        );
        bad(
            "failover:(stomp://a:1)?maxReconnectAttempts=-2",
            "maxReconnectAttempts",
        );
        bad("failover:(stomp://a:1)?randomize=yes", "randomize");
        bad(
            "failover:(stomp://a:1)?initialReconnectDelay=-5",
            "initialReconnectDelay",
        );
        bad(
            "failover:(stomp://a:1)?reconnectDelayExponent=0.5",
            "reconnectDelayExponent",
        );
        bad("failover:(stomp://a:1)?timeout=-7", "timeout");
        bad("failover:(stomp://a:1)?backupPoolSize=-1", "backupPoolSize");
        bad(
            "failover:(stomp://a:1)?initialReconnectDelay=500&maxReconnectDelay=100",
            "maxReconnectDelay",
        );
        bad("failover:(stomp://a:1)?randomize", "no value");
        bad(
            "failover:(stomp://a:1)?nested.bogus=1",
            "unknown option 'bogus'",
        );
        bad(
            "failover:(stomp://a:1)?priorityURIs=http://x",
            "priorityURIs",
        );
        bad("failover:(stomp://a:1?frob=2)", "unknown option 'frob'");
        bad("failover:(stomp://a:1?heartbeat=fast)", "heartbeat");
    }

    #[test]
    fn malformed_lists_are_refused() {
        bad("failover:(stomp://a:1,stomp://b:2", "missing ')'");
        bad("failover:()", "names no broker");
        bad("failover:", "names no broker");
        bad("failover:(stomp://a:1)x", "unexpected text");
        bad("failover:(stomp://a:1,http://b:2)", "unknown scheme 'http'");
        bad("failover:(stomp://a:1,stomp://:2)", "missing host");
        bad("failover:(stomp://a:99999)", "invalid port");
        bad("failover:(stomp://a:1)?x=%zz", "percent-escape");
    }

    #[test]
    fn tls_urls_and_their_options() {
        let e = Endpoint::parse(
            "ssl://h:61612?trustCa=/etc/ca.pem&clientCert=/c.pem&clientKey=/k.pem&verifyHostName=false",
        )
        .unwrap();
        let t = e.tls.clone().unwrap();
        assert_eq!(t.trust_ca.as_deref(), Some("/etc/ca.pem"));
        assert_eq!(t.client_cert.as_deref(), Some("/c.pem"));
        assert_eq!(t.client_key.as_deref(), Some("/k.pem"));
        assert_eq!(t.verify_host_name, Some(false));
        assert_eq!(e.to_string(), "ssl://h:61612");
        let s = Endpoint::parse("stomp+ssl://h:1?socket.verifyHostName=true").unwrap();
        assert_eq!(s.tls.unwrap().verify_host_name, Some(true));
        let u = BrokerUrl::parse(
            "failover:(ssl://a:1?trustCa=/mine.pem,stomp+ssl://b:2,stomp://c:3)?nested.trustCa=/ca.pem",
        )
        .unwrap();
        let cas: Vec<_> = u
            .endpoints
            .iter()
            .map(|e| e.tls.as_ref().and_then(|t| t.trust_ca.clone()))
            .collect();
        assert_eq!(
            cas,
            [
                Some("/mine.pem".to_owned()),
                Some("/ca.pem".to_owned()),
                None
            ]
        );
        bad("stomp://h:1?trustCa=/ca.pem", "for ssl:// (TLS) URLs only");
        bad("ssl://h:1?clientCert=/c.pem", "go together");
        bad("ssl://h:1?verifyHostName=no", "verifyHostName");
    }

    proptest::proptest! {
        /// What an endpoint displays parses back to the same broker over
        /// the same transport.
        #[test]
        fn display_parses_back(
            host in "[a-z][a-z0-9.-]{0,20}|[0-9]{1,3}(\\.[0-9]{1,3}){3}|::1|fe80::[0-9a-f]{1,4}",
            port in 1u16..,
            scheme in proptest::sample::select(vec!["stomp", "tcp", "ssl", "stomp+ssl"]),
        ) {
            let shown = if host.contains(':') { format!("[{host}]") } else { host.clone() };
            let e = Endpoint::parse(&format!("{scheme}://{shown}:{port}")).unwrap();
            let back = Endpoint::parse(&e.to_string()).unwrap();
            proptest::prop_assert!(back.same_broker(&e));
            proptest::prop_assert_eq!(back.is_tls(), scheme.ends_with("ssl"));
            proptest::prop_assert_eq!(back, e);
        }
    }

    #[test]
    fn single_urls_are_refused_with_a_reason() {
        for (url, words) in [
            ("http://h:1", "unknown scheme"),
            ("stomp://h:0", "invalid port"),
            ("stomp://h:99999", "invalid port"),
            ("stomp://h:x", "invalid port"),
            ("stomp://:1", "missing host"),
            ("stomp://h:1/path", "paths"),
            ("stomp://[::1", "unclosed"),
            ("", "missing host"),
            ("stomp:login=1]:5", "invalid host"),
            ("stomp://[a[b]:5", "invalid host"),
            ("stomp://a]b:5", "invalid host"),
        ] {
            bad(url, words);
        }
    }

    /// Found by the URL fuzzer (fuzz/, `url` target): `stomp:login=1]:5`
    /// has no `://`, so all of it was `host:port` and the host was
    /// `stomp:login=1]`; written back bracketed (it has a ':') it read as
    /// `[stomp:login=1]` followed by `]:5`, which does not parse.
    #[test]
    fn a_host_with_brackets_is_refused() {
        assert_eq!(
            Endpoint::parse("stomp:login=1]:5").unwrap_err().reason,
            UrlProblem::InvalidHost("stomp:login=1]".into())
        );
        assert_eq!(
            BrokerUrl::parse("failover:(stomp://a:1,x]:2)")
                .unwrap_err()
                .reason,
            UrlProblem::InvalidHost("x]".into())
        );
    }

    /// Every endpoint that parses is written (`Display`) as a URL that
    /// parses back to the same broker: checked over hosts built from the
    /// characters that matter to the syntax. (`address()` is for
    /// connecting, not a URL: `failover:61613` is a fine address.)
    #[test]
    fn written_endpoints_parse_back_to_the_same_broker() {
        const PIECES: &[&str] = &[
            "a", "h", "1", "::", ":", "[", "]", "@", "?", "%", "%41", ".", "-", " ", "stomp", "=",
            ",", "(", ")", "failover", "//", "é",
        ];
        // Every host of up to three pieces, with and without a port and a
        // scheme: about 70,000 URLs, deterministic.
        let mut hosts = vec![String::new()];
        for _ in 0..3 {
            let longer: Vec<String> = hosts
                .iter()
                .flat_map(|h| PIECES.iter().map(move |p| format!("{h}{p}")))
                .collect();
            hosts.extend(longer);
        }
        hosts.sort();
        hosts.dedup();
        let mut parsed = 0;
        for host in &hosts {
            for url in [
                host.clone(),
                format!("{host}:7"),
                format!("stomp://{host}:7"),
                format!("stomp://[{host}]:7"),
            ] {
                let Ok(e) = Endpoint::parse(&url) else {
                    continue;
                };
                parsed += 1;
                let written = e.to_string();
                let back = Endpoint::parse(&written)
                    .unwrap_or_else(|err| panic!("{url:?} wrote {written:?}: {err}"));
                assert!(
                    back.same_broker(&e),
                    "{url:?} wrote {written:?}, which names {back:?}"
                );
            }
        }
        assert!(parsed > 1000, "only {parsed} URLs parsed");
    }
}
