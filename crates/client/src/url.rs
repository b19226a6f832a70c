//! Broker addresses: `stomp://[login:passcode@]host:port`, `tcp://host:port`
//! or plain `host:port`. (Failover URIs arrive with the failover
//! transport.)

use std::fmt;

/// One broker to connect to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// Host name or IP address (IPv6 without brackets).
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// Login from the URL, if any.
    pub login: Option<String>,
    /// Passcode from the URL, if any.
    pub passcode: Option<String>,
}

/// The default STOMP port.
pub const DEFAULT_PORT: u16 = 61613;

/// A URL the client cannot use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid broker URL '{url}': {reason}")]
pub struct UrlError {
    /// The URL as given.
    pub url: String,
    /// What is wrong with it.
    pub reason: String,
}

impl Endpoint {
    /// Parses a broker URL.
    pub fn parse(url: &str) -> Result<Endpoint, UrlError> {
        let err = |reason: &str| UrlError {
            url: url.to_owned(),
            reason: reason.to_owned(),
        };
        let rest = if let Some((scheme, rest)) = url.split_once("://") {
            match scheme {
                "stomp" | "tcp" => rest,
                "failover" => return Err(err("failover URIs are not supported yet")),
                _ => return Err(err("unknown scheme (expected stomp:// or tcp://)")),
            }
        } else if url.starts_with("failover:") {
            return Err(err("failover URIs are not supported yet"));
        } else {
            url
        };
        let rest = rest.trim_end_matches('/');
        let (userinfo, hostport) = match rest.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, rest),
        };
        let (login, passcode) = match userinfo {
            None => (None, None),
            Some(u) => match u.split_once(':') {
                Some((l, p)) => (Some(l.to_owned()), Some(p.to_owned())),
                None => (Some(u.to_owned()), None),
            },
        };
        if hostport.contains(['/', '?', '#']) {
            return Err(err("paths and query strings are not supported"));
        }
        let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
            let (h, after) = v6.split_once(']').ok_or_else(|| err("unclosed '['"))?;
            let port = match after.strip_prefix(':') {
                Some(p) => parse_port(p).ok_or_else(|| err("invalid port"))?,
                None if after.is_empty() => DEFAULT_PORT,
                None => return Err(err("unexpected text after ']'")),
            };
            (h.to_owned(), port)
        } else {
            match hostport.rsplit_once(':') {
                Some((h, p)) => (
                    h.to_owned(),
                    parse_port(p).ok_or_else(|| err("invalid port"))?,
                ),
                None => (hostport.to_owned(), DEFAULT_PORT),
            }
        };
        if host.is_empty() {
            return Err(err("missing host"));
        }
        Ok(Endpoint {
            host,
            port,
            login,
            passcode,
        })
    }

    /// `host:port`, bracketing IPv6 addresses, for connecting and messages.
    pub fn address(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

fn parse_port(p: &str) -> Option<u16> {
    p.parse().ok().filter(|p| *p != 0)
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "stomp://{}", self.address())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_forms() {
        let e = Endpoint::parse("stomp://u:p@h:1234").unwrap();
        assert_eq!((e.host.as_str(), e.port), ("h", 1234));
        assert_eq!(e.login.as_deref(), Some("u"));
        assert_eq!(e.passcode.as_deref(), Some("p"));
        assert_eq!(Endpoint::parse("tcp://h").unwrap().port, DEFAULT_PORT);
        assert_eq!(
            Endpoint::parse("127.0.0.1:5").unwrap().address(),
            "127.0.0.1:5"
        );
        let v6 = Endpoint::parse("stomp://[::1]:7").unwrap();
        assert_eq!((v6.host.as_str(), v6.port), ("::1", 7));
        assert_eq!(v6.address(), "[::1]:7");
    }

    #[test]
    fn rejects_bad_urls_with_reason() {
        for bad in [
            "http://h:1",
            "stomp://h:0",
            "stomp://h:99999",
            "stomp://h:x",
            "stomp://:1",
            "stomp://h:1/path",
            "stomp://[::1",
            "failover:(stomp://a:1)",
            "",
        ] {
            let e = Endpoint::parse(bad).unwrap_err();
            assert!(e.to_string().contains("invalid broker URL"), "{bad}: {e}");
        }
    }
}
