//! The protocol-neutral message model, at the bottom of the crate: what a
//! message is, where it goes and what it carries, in terms every layer above
//! shares (core, store, the service, every protocol head) and none owns.
//!
//! Nothing here knows a protocol's spelling or the broker's machinery: it
//! imports from no other module of the crate but [`crate::memory`] (a
//! message holds its [`Charge`](crate::memory::Charge) on the memory
//! budget). Protocol heads translate their frames into these types at their
//! edge; stores persist them (docs/STORAGE.md gives the formats).

mod body;
mod destination;
mod message;
mod pattern;
mod properties;
mod select;
mod value;

pub use body::{BODY_KIND_PROPERTY, BodyKind};
pub use destination::{Destination, DestinationError, DestinationKind, MAX_NAME_LEN};
#[cfg(test)]
pub(crate) use message::test_message;
pub use message::{DEFAULT_PRIORITY, Message, MessageId, now_ms};
pub use pattern::{ANY_ONE, ANY_REST, NamePattern, PatternError, SEPARATOR};
pub use properties::Properties;
pub use select::Selectable;
pub use value::Value;
