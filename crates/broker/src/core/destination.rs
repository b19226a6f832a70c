//! Destination names as clients write them, and as the broker keys them.

use std::fmt;
use std::sync::Arc;

/// What kind of destination a name denotes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DestinationKind {
    /// `/queue/NAME`: point-to-point, competing consumers.
    Queue,
    /// `/topic/NAME`: every subscriber gets a copy.
    Topic,
    /// A temporary queue owned by one connection; clients name it
    /// `/temp-queue/NAME` on the owning connection and
    /// `/remote-temp-queue/CONN.NAME` elsewhere.
    TempQueue,
}

/// A destination. For temporary queues the name is `CONN.NAME`, which makes
/// it unique broker-wide.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Destination {
    kind: DestinationKind,
    name: Arc<str>,
}

/// A destination header the broker cannot use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DestinationError {
    /// The prefix is not one the broker knows.
    #[error(
        "unsupported destination '{0}': use /queue/NAME, /topic/NAME, /temp-queue/NAME or /remote-temp-queue/NAME"
    )]
    UnknownPrefix(String),
    /// The name part is empty, too long or contains control characters.
    #[error("invalid destination name '{0}': must be 1-{MAX_NAME_LEN} printable characters")]
    InvalidName(String),
}

/// Longest destination name (after the prefix).
pub const MAX_NAME_LEN: usize = 512;

const QUEUE: &str = "/queue/";
const TOPIC: &str = "/topic/";
const TEMP_QUEUE: &str = "/temp-queue/";
const REMOTE_TEMP_QUEUE: &str = "/remote-temp-queue/";

impl Destination {
    /// A queue.
    pub fn queue(name: &str) -> Destination {
        Destination {
            kind: DestinationKind::Queue,
            name: name.into(),
        }
    }

    /// A topic.
    pub fn topic(name: &str) -> Destination {
        Destination {
            kind: DestinationKind::Topic,
            name: name.into(),
        }
    }

    /// Parses a `destination` header. `connection` is the id of the
    /// connection that wrote it, which scopes `/temp-queue/` names.
    pub fn parse(s: &str, connection: &str) -> Result<Destination, DestinationError> {
        let (kind, name) = if let Some(n) = s.strip_prefix(QUEUE) {
            (DestinationKind::Queue, n.to_owned())
        } else if let Some(n) = s.strip_prefix(TOPIC) {
            (DestinationKind::Topic, n.to_owned())
        } else if let Some(n) = s.strip_prefix(TEMP_QUEUE) {
            check_name(n, s)?;
            (DestinationKind::TempQueue, format!("{connection}.{n}"))
        } else if let Some(n) = s.strip_prefix(REMOTE_TEMP_QUEUE) {
            (DestinationKind::TempQueue, n.to_owned())
        } else {
            return Err(DestinationError::UnknownPrefix(truncate(s)));
        };
        check_name(&name, s)?;
        Ok(Destination {
            kind,
            name: name.into(),
        })
    }

    /// The kind.
    pub fn kind(&self) -> DestinationKind {
        self.kind
    }

    /// The name without prefix.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether this is a temporary queue owned by `connection`.
    pub fn is_temp_of(&self, connection: &str) -> bool {
        self.kind == DestinationKind::TempQueue
            && self
                .name
                .strip_prefix(connection)
                .is_some_and(|rest| rest.starts_with('.'))
    }

    /// The name as the given connection should see it: its own temporary
    /// queues keep the `/temp-queue/` spelling it used.
    pub fn display_for(&self, connection: &str) -> String {
        if self.is_temp_of(connection) {
            return format!("{TEMP_QUEUE}{}", &self.name[connection.len() + 1..]);
        }
        self.to_string()
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

impl fmt::Display for Destination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let prefix = match self.kind {
            DestinationKind::Queue => QUEUE,
            DestinationKind::Topic => TOPIC,
            DestinationKind::TempQueue => REMOTE_TEMP_QUEUE,
        };
        write!(f, "{prefix}{}", self.name)
    }
}

/// FNV-1a, 64 bits: a hash that is the same on every machine and release
/// (dead-letter queue names are stored and given to clients).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

fn check_name(name: &str, whole: &str) -> Result<(), DestinationError> {
    if name.is_empty() || name.len() > MAX_NAME_LEN || name.chars().any(char::is_control) {
        return Err(DestinationError::InvalidName(truncate(whole)));
    }
    Ok(())
}

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
        assert_eq!(q.to_string(), "/queue/a.b");
        let t = Destination::parse("/topic/x", "c1").unwrap();
        assert_eq!(t.kind(), DestinationKind::Topic);
        let tmp = Destination::parse("/temp-queue/r", "c1").unwrap();
        assert_eq!(tmp.to_string(), "/remote-temp-queue/c1.r");
        assert!(tmp.is_temp_of("c1"));
        assert!(!tmp.is_temp_of("c"));
        assert_eq!(tmp.display_for("c1"), "/temp-queue/r");
        assert_eq!(tmp.display_for("c2"), "/remote-temp-queue/c1.r");
        let remote = Destination::parse("/remote-temp-queue/c1.r", "c2").unwrap();
        assert_eq!(remote, tmp);
    }

    #[test]
    fn dead_letter_queues_of_long_names_are_valid_and_distinct() {
        let short = Destination::queue("orders").dead_letter("DLQ.");
        assert_eq!(short.to_string(), "/queue/DLQ.orders");
        let a = Destination::queue(&"é".repeat(256)); // 512 bytes
        let b = Destination::queue(&format!("{}x", "é".repeat(255))); // 511
        let (da, db) = (a.dead_letter("DLQ."), b.dead_letter("DLQ."));
        for d in [&da, &db] {
            let parsed = Destination::parse(&d.to_string(), "c").unwrap();
            assert_eq!(&parsed, d);
            assert!(d.name().len() <= MAX_NAME_LEN && d.name().starts_with("DLQ.é"));
        }
        assert_ne!(da, db);
        assert_eq!(da, a.dead_letter("DLQ."));
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
        assert!(Destination::parse(&long, "c").is_err());
    }
}
