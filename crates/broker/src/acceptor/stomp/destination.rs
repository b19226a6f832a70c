//! STOMP's spelling of destinations, and the scope of temporary queues.
//!
//! A `destination` header names a queue `/queue/NAME`, a topic
//! `/topic/NAME`, one of the connection's own temporary queues
//! `/temp-queue/NAME`, or another connection's `/remote-temp-queue/NAME`
//! (ActiveMQ's spellings). A temporary queue's broker-wide name is
//! `SCOPE.NAME`, where SCOPE is the owning connection's secret temp scope:
//! the owner keeps writing and reading `/temp-queue/NAME`, everyone else
//! needs the full name, which the owner hands out in a rewritten `reply-to`.
//!
//! The absolute spellings are the model's canonical names (see
//! [`crate::model::Destination`]) on purpose: a name read from the admin API
//! can be used in a frame as it is.

use std::borrow::Cow;

use crate::model::{Destination, DestinationKind, MAX_NAME_LEN};

const QUEUE: &str = "/queue/";
const TOPIC: &str = "/topic/";
const TEMP_QUEUE: &str = "/temp-queue/";
const REMOTE_TEMP_QUEUE: &str = "/remote-temp-queue/";
const TEMP_TOPIC: &str = "/temp-topic/";
const REMOTE_TEMP_TOPIC: &str = "/remote-temp-topic/";
/// What separates the destinations of a composite destination.
const LIST_SEPARATOR: char = ',';

/// A `destination` header the broker cannot use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(super) enum DestinationError {
    /// The prefix is not one the broker knows.
    #[error(
        "unsupported destination '{0}': use /queue/NAME, /topic/NAME, /temp-queue/NAME, /temp-topic/NAME, /remote-temp-queue/NAME or /remote-temp-topic/NAME (or a comma-separated list of them)"
    )]
    UnknownPrefix(String),
    /// A comma-separated list with too many entries.
    #[error("a destination list may name at most {MAX_LIST} destinations")]
    TooMany,
    /// The name part is empty, too long or contains control characters.
    #[error("invalid destination name '{0}': must be 1-{MAX_NAME_LEN} printable characters")]
    InvalidName(String),
}

/// STOMP's view of a [`Destination`]: parsing and printing headers for one
/// connection, whose temp scope decides what `/temp-queue/` means. An
/// extension of the model's type, so that STOMP code reads
/// `Destination::parse(header, scope)` while the model knows no spelling.
pub(super) trait StompDestination: Sized {
    /// Parses a `destination` (or `reply-to`) header written on the
    /// connection whose temp scope is `scope`.
    fn parse(s: &str, scope: &str) -> Result<Self, DestinationError>;

    /// Parses a `destination` header that may be a composite destination:
    /// ActiveMQ's comma-separated list, each entry with its own prefix
    /// (`/queue/a,/topic/b`); an entry without one is of the kind of the
    /// entry before it (`/queue/a,b` is two queues), as in ActiveMQ.
    fn parse_list(s: &str, scope: &str) -> Result<Vec<Self>, DestinationError>;

    /// The absolute spelling, which any connection understands.
    fn stomp_name(&self) -> String;

    /// The spelling the connection with `scope` should see: its own
    /// temporary queues keep the `/temp-queue/` spelling it used.
    fn display_for(&self, scope: &str) -> String;
}

/// Most destinations one header may list.
pub(super) const MAX_LIST: usize = 64;

impl StompDestination for Destination {
    fn parse_list(s: &str, scope: &str) -> Result<Vec<Destination>, DestinationError> {
        if !s.contains(LIST_SEPARATOR) {
            return Ok(vec![Destination::parse(s, scope)?]);
        }
        let mut out: Vec<Destination> = Vec::new();
        for entry in s.split(LIST_SEPARATOR) {
            if out.len() >= MAX_LIST {
                return Err(DestinationError::TooMany);
            }
            let entry = entry.trim();
            let d = match out.last() {
                Some(prev) if !entry.starts_with('/') => Destination::new(prev.kind(), entry)
                    .map_err(|_| DestinationError::InvalidName(truncate(entry)))?,
                _ => Destination::parse(entry, scope)?,
            };
            out.push(d);
        }
        Ok(out)
    }

    fn parse(s: &str, scope: &str) -> Result<Destination, DestinationError> {
        let invalid = || DestinationError::InvalidName(truncate(s));
        let (kind, name): (_, Cow<'_, str>) = if let Some(n) = s.strip_prefix(QUEUE) {
            (DestinationKind::Queue, n.into())
        } else if let Some(n) = s.strip_prefix(TOPIC) {
            (DestinationKind::Topic, n.into())
        } else if let Some(n) = s.strip_prefix(TEMP_QUEUE) {
            // An empty name would otherwise become the valid `SCOPE.`.
            if n.is_empty() {
                return Err(invalid());
            }
            (DestinationKind::TempQueue, format!("{scope}.{n}").into())
        } else if let Some(n) = s.strip_prefix(REMOTE_TEMP_QUEUE) {
            (DestinationKind::TempQueue, n.into())
        } else if let Some(n) = s.strip_prefix(TEMP_TOPIC) {
            if n.is_empty() {
                return Err(invalid());
            }
            (DestinationKind::TempTopic, format!("{scope}.{n}").into())
        } else if let Some(n) = s.strip_prefix(REMOTE_TEMP_TOPIC) {
            (DestinationKind::TempTopic, n.into())
        } else {
            return Err(DestinationError::UnknownPrefix(truncate(s)));
        };
        Destination::new(kind, &name).map_err(|_| invalid())
    }

    fn stomp_name(&self) -> String {
        // The model's canonical names are STOMP's absolute spellings.
        self.to_string()
    }

    fn display_for(&self, scope: &str) -> String {
        if self.is_temp_of(scope) {
            let prefix = match self.kind() {
                DestinationKind::TempTopic => TEMP_TOPIC,
                _ => TEMP_QUEUE,
            };
            return format!("{prefix}{}", &self.name()[scope.len() + 1..]);
        }
        self.stomp_name()
    }
}

/// At most 80 characters of what a peer sent, for error messages.
fn truncate(s: &str) -> String {
    s.chars().take(80).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_each_kind() {
        let q = Destination::parse("/queue/a.b", "c1").unwrap();
        assert_eq!(q, Destination::queue("a.b"));
        assert_eq!(q.stomp_name(), "/queue/a.b");
        let t = Destination::parse("/topic/x", "c1").unwrap();
        assert_eq!(t.kind(), DestinationKind::Topic);
        let tmp = Destination::parse("/temp-queue/r", "c1").unwrap();
        assert_eq!(tmp.stomp_name(), "/remote-temp-queue/c1.r");
        assert!(tmp.is_temp_of("c1"));
        assert!(!tmp.is_temp_of("c"));
        assert_eq!(tmp.display_for("c1"), "/temp-queue/r");
        assert_eq!(tmp.display_for("c2"), "/remote-temp-queue/c1.r");
        let remote = Destination::parse("/remote-temp-queue/c1.r", "c2").unwrap();
        assert_eq!(remote, tmp);
    }

    #[test]
    fn parses_temporary_topics_and_lists() {
        let t = Destination::parse("/temp-topic/t", "c1").unwrap();
        assert_eq!(t.kind(), DestinationKind::TempTopic);
        assert_eq!(t.stomp_name(), "/remote-temp-topic/c1.t");
        assert_eq!(t.display_for("c1"), "/temp-topic/t");
        assert_eq!(
            Destination::parse("/remote-temp-topic/c1.t", "c2").unwrap(),
            t
        );
        let list = Destination::parse_list("/queue/a, /topic/b,c", "c1").unwrap();
        assert_eq!(
            list,
            vec![
                Destination::queue("a"),
                Destination::topic("b"),
                Destination::topic("c")
            ]
        );
        assert!(Destination::parse_list("/queue/a,", "c1").is_err());
        assert!(Destination::parse_list("a,/queue/b", "c1").is_err());
        let long = vec!["/queue/x"; MAX_LIST + 1].join(",");
        assert_eq!(
            Destination::parse_list(&long, "c1"),
            Err(DestinationError::TooMany)
        );
    }

    /// What the admin API shows (canonical names) works in a frame.
    #[test]
    fn absolute_spellings_are_the_canonical_names() {
        for d in [
            Destination::queue("q"),
            Destination::topic("t"),
            Destination::parse("/temp-queue/r", "c1").unwrap(),
            Destination::parse("/temp-topic/r", "c1").unwrap(),
        ] {
            assert_eq!(d.stomp_name(), d.to_string());
            assert_eq!(Destination::parse(&d.to_string(), "other").unwrap(), d);
        }
    }

    #[test]
    fn rejects_bad_names() {
        for bad in [
            "queue/a",
            "/queue/",
            "/queues/a",
            "",
            "/topic/a\nb",
            "/temp-queue/",
        ] {
            assert!(Destination::parse(bad, "c").is_err(), "{bad:?} accepted");
        }
        let long = format!("/queue/{}", "x".repeat(MAX_NAME_LEN + 1));
        assert_eq!(
            Destination::parse(&long, "c"),
            Err(DestinationError::InvalidName(truncate(&long)))
        );
        assert!(matches!(
            Destination::parse("/nope/x", "c"),
            Err(DestinationError::UnknownPrefix(_))
        ));
    }
}
