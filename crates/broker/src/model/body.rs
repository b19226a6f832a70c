//! What a message's body is, as JMS sees it: the one fact about a body that
//! crosses protocols and is not in its bytes.
//!
//! A JMS consumer must get a `TextMessage` for what a STOMP client sent as
//! text (no `content-length`) and a `BytesMessage` otherwise, as from
//! ActiveMQ; a STOMP consumer of a JMS `MapMessage` gets its encoded map.
//! The kind travels as a property in JMS's vendor namespace
//! ([`BODY_KIND_PROPERTY`]), so that both stores keep it without a format
//! change; protocol heads hide it from their clients and refuse it from
//! them. No property means [`BodyKind::Text`] (what a STOMP SEND without
//! `content-length` is, and the common case, so it costs nothing).

use super::Value;

/// The property holding a message's [`BodyKind`] (absent: text). JMS
/// reserves the `JMS_<vendor>_` prefix for its providers, so no JMS client
/// can have meant it as its own.
pub const BODY_KIND_PROPERTY: &str = "JMS_Halyard_BodyKind";

/// The JMS message type a body is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    /// `TextMessage`: the body is UTF-8 text.
    Text,
    /// `BytesMessage`: opaque bytes.
    Bytes,
    /// `Message`: no body.
    Empty,
    /// `MapMessage`: OpenWire's encoded map.
    Map,
    /// `StreamMessage`: OpenWire's encoded value list.
    Stream,
    /// `ObjectMessage`: a serialised Java object, opaque to the broker.
    Object,
}

impl BodyKind {
    /// Its value in [`BODY_KIND_PROPERTY`].
    pub fn code(self) -> i8 {
        match self {
            BodyKind::Text => 0,
            BodyKind::Bytes => 1,
            BodyKind::Empty => 2,
            BodyKind::Map => 3,
            BodyKind::Stream => 4,
            BodyKind::Object => 5,
        }
    }

    /// The kind a [`BODY_KIND_PROPERTY`] value names; an absent or unknown
    /// one is text.
    pub fn from_property(v: Option<&Value>) -> BodyKind {
        match v {
            Some(Value::I8(1)) => BodyKind::Bytes,
            Some(Value::I8(2)) => BodyKind::Empty,
            Some(Value::I8(3)) => BodyKind::Map,
            Some(Value::I8(4)) => BodyKind::Stream,
            Some(Value::I8(5)) => BodyKind::Object,
            _ => BodyKind::Text,
        }
    }

    /// The property value to store, or `None` for text (stored as no
    /// property at all).
    pub fn property(self) -> Option<Value> {
        (self != BodyKind::Text).then(|| Value::I8(self.code()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_survives_its_property() {
        for k in [
            BodyKind::Text,
            BodyKind::Bytes,
            BodyKind::Empty,
            BodyKind::Map,
            BodyKind::Stream,
            BodyKind::Object,
        ] {
            assert_eq!(BodyKind::from_property(k.property().as_ref()), k);
        }
        assert_eq!(
            BodyKind::from_property(Some(&Value::I8(99))),
            BodyKind::Text
        );
    }
}
