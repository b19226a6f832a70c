//! Where a message goes: a kind and a name, and nothing of any protocol.
//!
//! Protocol heads spell destinations their own way and translate to and
//! from [`Destination`] at their edge: STOMP writes `/queue/NAME` and scopes
//! `/temp-queue/NAME` to the connection (`acceptor/stomp/destination.rs`);
//! OpenWire and AMQP have spellings of their own.
//!
//! One text form is defined here, the **canonical name**: what the store
//! keeps where it needs a destination as text (an Add's destination, a
//! durable subscription's topic), what the admin API, metrics labels and
//! logs show, and what a destination-valued property holds (a dead letter's
//! `original-destination`):
//!
//! | kind | canonical name |
//! |---|---|
//! | queue | `/queue/NAME` |
//! | topic | `/topic/NAME` |
//! | temporary queue | `/remote-temp-queue/NAME` (NAME is unique broker-wide) |
//! | temporary topic | `/remote-temp-topic/NAME` (likewise) |
//!
//! It is the form every store written so far holds and every name shown so
//! far has, so nothing stored or graphed changes meaning; and each is an
//! absolute name a client can use (STOMP accepts all three as they are), so
//! a name read from the admin API can be subscribed to. A new form (say
//! ActiveMQ's `queue://NAME`) would have to be added beside this one, never
//! instead of it: stored names are read back with [`Destination::from_str`].

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

/// What kind of destination a name denotes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DestinationKind {
    /// Point-to-point: consumers compete for each message.
    Queue,
    /// Publish-subscribe: every subscriber gets a copy.
    Topic,
    /// A queue owned by one connection, gone when it closes. Its name is
    /// unique broker-wide; the protocol head that creates it makes it so
    /// (STOMP prefixes the owning connection's secret scope).
    TempQueue,
    /// A topic owned by one connection, gone when it closes; named like a
    /// temporary queue.
    TempTopic,
}

impl DestinationKind {
    /// Whether destinations of this kind die with their connection.
    pub fn is_temporary(self) -> bool {
        matches!(
            self,
            DestinationKind::TempQueue | DestinationKind::TempTopic
        )
    }

    /// Whether every subscriber gets its own copy (a topic) rather than
    /// consumers competing for each message (a queue).
    pub fn is_topic(self) -> bool {
        matches!(self, DestinationKind::Topic | DestinationKind::TempTopic)
    }
}

/// A destination: a kind and a name (1 to [`MAX_NAME_LEN`] bytes, no
/// control characters).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Destination {
    kind: DestinationKind,
    name: Arc<str>,
}

/// A name the broker cannot use as a destination.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DestinationError {
    /// The name is empty, too long or contains control characters.
    #[error("invalid destination name '{0}': must be 1-{MAX_NAME_LEN} printable characters")]
    InvalidName(String),
    /// The text is not a canonical name (see the module documentation).
    #[error(
        "'{0}' is not a canonical destination name: expected /queue/NAME, /topic/NAME, /remote-temp-queue/NAME or /remote-temp-topic/NAME"
    )]
    NotCanonical(String),
}

/// Longest destination name (without any prefix), in bytes.
pub const MAX_NAME_LEN: usize = 512;

const QUEUE: &str = "/queue/";
const TOPIC: &str = "/topic/";
const TEMP_QUEUE: &str = "/remote-temp-queue/";
const TEMP_TOPIC: &str = "/remote-temp-topic/";

impl Destination {
    /// A destination of `kind` called `name`, if the name is valid.
    pub fn new(kind: DestinationKind, name: &str) -> Result<Destination, DestinationError> {
        if !valid_name(name) {
            return Err(DestinationError::InvalidName(truncate(name)));
        }
        Ok(Destination {
            kind,
            name: name.into(),
        })
    }

    /// A queue whose name the broker made or checked.
    pub fn queue(name: &str) -> Destination {
        Destination {
            kind: DestinationKind::Queue,
            name: name.into(),
        }
    }

    /// A topic whose name the broker made or checked.
    pub fn topic(name: &str) -> Destination {
        Destination {
            kind: DestinationKind::Topic,
            name: name.into(),
        }
    }

    /// Whether this is a temporary destination of the connection whose
    /// temp scope is `scope`: a temporary destination's name is
    /// `SCOPE.NAME` (STOMP, whose scope is secret, so only its owner, and
    /// those it hands the full name to, can reach it) or `SCOPE:N`
    /// (OpenWire, whose clients name them after their connection id).
    pub fn is_temp_of(&self, scope: &str) -> bool {
        self.kind.is_temporary()
            && self
                .name
                .strip_prefix(scope)
                .is_some_and(|rest| rest.starts_with(['.', ':']))
    }

    /// The kind.
    pub fn kind(&self) -> DestinationKind {
        self.kind
    }

    /// The name, without any prefix.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The dead-letter queue for this destination: `<prefix><name>`, or,
    /// when that would be longer than a name may be, `<prefix>` + as much
    /// of the name as fits + `~` + 16 hex digits of a hash of the whole
    /// name — still a valid name clients can subscribe to, and still the
    /// same for the same destination.
    pub fn dead_letter(&self, prefix: &str) -> Destination {
        let whole = format!("{prefix}{}", self.name);
        if whole.len() <= MAX_NAME_LEN {
            return Destination::queue(&whole);
        }
        let tag = format!("~{:016x}", fnv1a(self.name.as_bytes()));
        let room = MAX_NAME_LEN.saturating_sub(prefix.len() + tag.len());
        let mut cut = room.min(self.name.len());
        while !self.name.is_char_boundary(cut) {
            cut -= 1;
        }
        Destination::queue(&format!("{prefix}{}{tag}", &self.name[..cut]))
    }
}

/// The canonical name.
impl fmt::Display for Destination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let prefix = match self.kind {
            DestinationKind::Queue => QUEUE,
            DestinationKind::Topic => TOPIC,
            DestinationKind::TempQueue => TEMP_QUEUE,
            DestinationKind::TempTopic => TEMP_TOPIC,
        };
        write!(f, "{prefix}{}", self.name)
    }
}

/// Reads a canonical name back (what [`Display`](fmt::Display) wrote).
impl FromStr for Destination {
    type Err = DestinationError;

    fn from_str(s: &str) -> Result<Destination, DestinationError> {
        let (kind, name) = if let Some(n) = s.strip_prefix(QUEUE) {
            (DestinationKind::Queue, n)
        } else if let Some(n) = s.strip_prefix(TOPIC) {
            (DestinationKind::Topic, n)
        } else if let Some(n) = s.strip_prefix(TEMP_QUEUE) {
            (DestinationKind::TempQueue, n)
        } else if let Some(n) = s.strip_prefix(TEMP_TOPIC) {
            (DestinationKind::TempTopic, n)
        } else {
            return Err(DestinationError::NotCanonical(truncate(s)));
        };
        Destination::new(kind, name)
    }
}

/// FNV-1a, 64 bits: a hash that is the same on every machine and release
/// (dead-letter queue names are stored and given to clients).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

fn valid_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= MAX_NAME_LEN && !name.chars().any(char::is_control)
}

/// At most 80 characters of `s`, for error messages that quote a peer.
fn truncate(s: &str) -> String {
    s.chars().take(80).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_names_round_trip() {
        for (text, kind, name) in [
            ("/queue/a.b", DestinationKind::Queue, "a.b"),
            ("/topic/x", DestinationKind::Topic, "x"),
            (
                "/remote-temp-queue/c1.r",
                DestinationKind::TempQueue,
                "c1.r",
            ),
            (
                "/remote-temp-topic/c1.t",
                DestinationKind::TempTopic,
                "c1.t",
            ),
        ] {
            let d: Destination = text.parse().unwrap();
            assert_eq!((d.kind(), d.name()), (kind, name));
            assert_eq!(d.to_string(), text);
            assert_eq!(Destination::new(kind, name), Ok(d));
        }
        assert_eq!(
            "/queue/q".parse::<Destination>(),
            Ok(Destination::queue("q"))
        );
    }

    #[test]
    fn dead_letter_queues_of_long_names_are_valid_and_distinct() {
        let short = Destination::queue("orders").dead_letter("DLQ.");
        assert_eq!(short.to_string(), "/queue/DLQ.orders");
        let a = Destination::queue(&"é".repeat(256)); // 512 bytes
        let b = Destination::queue(&format!("{}x", "é".repeat(255))); // 511
        let (da, db) = (a.dead_letter("DLQ."), b.dead_letter("DLQ."));
        for d in [&da, &db] {
            let parsed: Destination = d.to_string().parse().unwrap();
            assert_eq!(&parsed, d);
            assert!(d.name().len() <= MAX_NAME_LEN && d.name().starts_with("DLQ.é"));
        }
        assert_ne!(da, db);
        assert_eq!(da, a.dead_letter("DLQ."));
    }

    #[test]
    fn rejects_what_is_not_a_canonical_name() {
        for bad in [
            "queue/a",
            "/queue/",
            "/queues/a",
            "",
            "/topic/a\nb",
            "/temp-queue/a",
            "queue://a",
        ] {
            assert!(bad.parse::<Destination>().is_err(), "{bad:?} accepted");
        }
        let long = format!("/queue/{}", "x".repeat(MAX_NAME_LEN + 1));
        assert!(long.parse::<Destination>().is_err());
        assert!(matches!(
            Destination::new(DestinationKind::Topic, ""),
            Err(DestinationError::InvalidName(_))
        ));
    }
}
