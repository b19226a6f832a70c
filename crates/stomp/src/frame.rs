use std::fmt;

use bytes::Bytes;

/// A STOMP command: the first line of a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Command {
    /// Client opens a session (all versions).
    Connect,
    /// Client opens a session (1.1+ spelling of CONNECT).
    Stomp,
    /// Server accepts a session.
    Connected,
    /// Client publishes a message.
    Send,
    /// Client subscribes to a destination.
    Subscribe,
    /// Client ends a subscription.
    Unsubscribe,
    /// Client acknowledges a message.
    Ack,
    /// Client rejects a message (1.1+).
    Nack,
    /// Client starts a transaction.
    Begin,
    /// Client commits a transaction.
    Commit,
    /// Client aborts a transaction.
    Abort,
    /// Client ends the session.
    Disconnect,
    /// Server delivers a message.
    Message,
    /// Server confirms that a frame was processed.
    Receipt,
    /// Server reports an error; the connection closes after it.
    Error,
}

impl Command {
    /// Every command, for tests and tables.
    pub const ALL: [Command; 15] = [
        Command::Connect,
        Command::Stomp,
        Command::Connected,
        Command::Send,
        Command::Subscribe,
        Command::Unsubscribe,
        Command::Ack,
        Command::Nack,
        Command::Begin,
        Command::Commit,
        Command::Abort,
        Command::Disconnect,
        Command::Message,
        Command::Receipt,
        Command::Error,
    ];

    /// The command as it appears on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Command::Connect => "CONNECT",
            Command::Stomp => "STOMP",
            Command::Connected => "CONNECTED",
            Command::Send => "SEND",
            Command::Subscribe => "SUBSCRIBE",
            Command::Unsubscribe => "UNSUBSCRIBE",
            Command::Ack => "ACK",
            Command::Nack => "NACK",
            Command::Begin => "BEGIN",
            Command::Commit => "COMMIT",
            Command::Abort => "ABORT",
            Command::Disconnect => "DISCONNECT",
            Command::Message => "MESSAGE",
            Command::Receipt => "RECEIPT",
            Command::Error => "ERROR",
        }
    }

    /// Parses a command line (without its line ending). Commands are
    /// case-sensitive, as in the specification.
    pub fn parse(s: &[u8]) -> Option<Command> {
        Command::ALL
            .into_iter()
            .find(|c| c.as_str().as_bytes() == s)
    }

    /// CONNECT, STOMP and CONNECTED frames never escape their headers.
    pub fn escapes_headers(self) -> bool {
        !matches!(self, Command::Connect | Command::Stomp | Command::Connected)
    }
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Frame headers in wire order. Repeated names are kept, but lookups return
/// the first occurrence, as the specification requires.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers(Vec<(String, String)>);

impl Headers {
    /// An empty header list.
    pub fn new() -> Headers {
        Headers(Vec::new())
    }

    /// An empty header list with room for `n` headers.
    pub fn with_capacity(n: usize) -> Headers {
        Headers(Vec::with_capacity(n))
    }

    /// The value of the first header called `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Appends a header (even if one with the same name exists).
    pub fn push(&mut self, name: impl Into<String>, value: impl Into<String>) {
        self.0.push((name.into(), value.into()));
    }

    /// Replaces every header called `name` with one header at the position
    /// of the first (or at the end if there was none).
    pub fn set(&mut self, name: &str, value: impl Into<String>) {
        let value = value.into();
        match self.0.iter().position(|(k, _)| k == name) {
            Some(i) => {
                self.0[i].1 = value;
                let mut seen = false;
                self.0.retain(|(k, _)| {
                    if k != name {
                        return true;
                    }
                    let keep = !seen;
                    seen = true;
                    keep
                });
            }
            None => self.0.push((name.to_owned(), value)),
        }
    }

    /// Removes every header called `name`, returning the first value.
    pub fn remove(&mut self, name: &str) -> Option<String> {
        let mut first = None;
        self.0.retain_mut(|(k, v)| {
            if k != name {
                return true;
            }
            if first.is_none() {
                first = Some(std::mem::take(v));
            }
            false
        });
        first
    }

    /// Iterates over `(name, value)` pairs in wire order, repeats included.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// Number of headers, repeats included.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are no headers.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Keeps only the first occurrence of every name.
    pub fn dedup_first_wins(&mut self) {
        if self.0.len() < 2 {
            return;
        }
        let mut seen: Vec<String> = Vec::with_capacity(self.0.len());
        self.0.retain(|(k, _)| {
            if seen.iter().any(|s| s == k) {
                false
            } else {
                seen.push(k.clone());
                true
            }
        });
    }

    /// The headers as owned pairs.
    pub fn into_vec(self) -> Vec<(String, String)> {
        self.0
    }
}

impl From<Vec<(String, String)>> for Headers {
    fn from(v: Vec<(String, String)>) -> Headers {
        Headers(v)
    }
}

impl<'a> FromIterator<(&'a str, &'a str)> for Headers {
    fn from_iter<I: IntoIterator<Item = (&'a str, &'a str)>>(iter: I) -> Headers {
        Headers(
            iter.into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
        )
    }
}

/// One STOMP frame: command, headers and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// The command line.
    pub command: Command,
    /// Headers in wire order, already unescaped.
    pub headers: Headers,
    /// The body; may contain NULs when the frame carried `content-length`.
    pub body: Bytes,
}

impl Frame {
    /// A frame with no headers and no body.
    pub fn new(command: Command) -> Frame {
        Frame {
            command,
            headers: Headers::new(),
            body: Bytes::new(),
        }
    }

    /// Adds a header (builder style).
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Frame {
        self.headers.push(name, value);
        self
    }

    /// Sets the body (builder style).
    pub fn body(mut self, body: impl Into<Bytes>) -> Frame {
        self.body = body.into();
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_round_trip() {
        for c in Command::ALL {
            assert_eq!(Command::parse(c.as_str().as_bytes()), Some(c));
        }
        assert_eq!(Command::parse(b"send"), None);
        assert_eq!(Command::parse(b""), None);
    }

    #[test]
    fn first_header_wins_and_set_replaces_all() {
        let mut h: Headers = [("a", "1"), ("b", "2"), ("a", "3")].into_iter().collect();
        assert_eq!(h.get("a"), Some("1"));
        h.set("a", "x");
        assert_eq!(h.iter().collect::<Vec<_>>(), vec![("a", "x"), ("b", "2")]);
        assert_eq!(h.remove("a").as_deref(), Some("x"));
        assert_eq!(h.get("a"), None);
        let mut d: Headers = [("k", "1"), ("k", "2"), ("j", "3")].into_iter().collect();
        d.dedup_first_wins();
        assert_eq!(d.iter().collect::<Vec<_>>(), vec![("k", "1"), ("j", "3")]);
    }
}
