//! The broker's message: what a protocol head makes of what a producer
//! sent, what the store keeps and what subscribers receive (shared between
//! subscribers through an `Arc`).

use std::fmt;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use super::{Destination, Properties};
use crate::memory::{Charge, MemoryBudget};

/// A message id as clients see it: a per-boot prefix and a number. Kept in
/// parts so the broker never formats a string per message; the parts are
/// written straight into the outgoing frame.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MessageId {
    /// e.g. `ID:broker-1a2b3c-`.
    pub prefix: Arc<str>,
    /// The sequence number at the time the id was made.
    pub n: u64,
}

impl MessageId {
    /// Whether `s` is this id's wire form.
    pub fn matches(&self, s: &str) -> bool {
        s.strip_prefix(&*self.prefix)
            .is_some_and(|rest| rest.parse::<u64>().ok() == Some(self.n) && !rest.starts_with('+'))
    }
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.prefix, self.n)
    }
}

/// One message. Immutable once made; per-delivery state (delivery count,
/// which consumer holds it) lives with the destination, not here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Broker-wide sequence number: the message's identity in the store and
    /// its order among messages of equal priority.
    pub seq: u64,
    /// The id clients see.
    pub id: MessageId,
    /// Where it was sent.
    pub destination: Destination,
    /// Application properties, in order (STOMP: the user's headers). What
    /// the broker sets on delivery (id, destination, delivery count) is
    /// not here.
    pub properties: Properties,
    /// The body.
    pub body: Bytes,
    /// Whether it must survive a broker restart.
    pub persistent: bool,
    /// 0 (lowest) to 9 (highest); 4 by default, as in JMS.
    pub priority: u8,
    /// Expiry in ms since the epoch; 0 means never.
    pub expires: u64,
    /// When the broker accepted it, in ms since the epoch.
    pub timestamp: u64,
    /// Its share of the broker's memory budget, held as long as the
    /// message is.
    pub charge: Charge,
}

/// The priority of messages that do not state one.
pub const DEFAULT_PRIORITY: u8 = 4;

impl Message {
    /// Whether the message has expired at `now_ms`.
    pub fn is_expired(&self, now_ms: u64) -> bool {
        self.expires != 0 && now_ms >= self.expires
    }

    /// Approximate memory held by the message, for memory limits.
    pub fn weight(&self) -> usize {
        self.body.len() + self.properties.weight() + 128
    }

    /// The message, charged to `budget` for its weight.
    pub fn charged(mut self, budget: &Arc<MemoryBudget>) -> Message {
        self.charge = budget.charge(self.weight());
        self
    }

    /// The message without its body and properties, and charging nothing:
    /// what the store keeps of one consumed before it was written, to
    /// remember its duplicate-detection id.
    pub fn emptied(&self) -> Message {
        Message {
            seq: self.seq,
            id: self.id.clone(),
            destination: self.destination.clone(),
            properties: Properties::default(),
            body: Bytes::new(),
            persistent: self.persistent,
            priority: self.priority,
            expires: self.expires,
            timestamp: self.timestamp,
            charge: Charge::none(),
        }
    }

    /// A string property (e.g. the duplicate-detection id).
    pub fn string_property(&self, name: &str) -> Option<&str> {
        self.properties.get_str(name)
    }
}

/// Milliseconds since the Unix epoch, from the wall clock (message
/// timestamps and `expires` are wall-clock times chosen by clients).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A small persistent message for unit tests.
#[cfg(test)]
pub(crate) fn test_message(seq: u64, priority: u8) -> Arc<Message> {
    Arc::new(Message {
        seq,
        id: MessageId {
            prefix: "ID:t-".into(),
            n: seq,
        },
        destination: Destination::queue("q"),
        properties: Properties::new(),
        body: Bytes::from_static(b"x"),
        persistent: true,
        priority,
        expires: 0,
        timestamp: 0,
        charge: Charge::none(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_id_matching() {
        let id = MessageId {
            prefix: "ID:b-1-".into(),
            n: 42,
        };
        assert_eq!(id.to_string(), "ID:b-1-42");
        assert!(id.matches("ID:b-1-42"));
        assert!(!id.matches("ID:b-1-420"));
        assert!(!id.matches("ID:b-1-+42"));
        assert!(!id.matches("ID:b-2-42"));
        assert!(!id.matches("42"));
    }
}
