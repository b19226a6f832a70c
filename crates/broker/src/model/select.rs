//! What a JMS message selector sees of a [`Message`]: its application
//! properties, and the JMS header fields under their JMS names.
//!
//! STOMP carries some JMS header fields as headers of its own spelling
//! (`correlation-id`, `type`, `reply-to`), which the model keeps as
//! properties: a selector names them the JMS way, as ActiveMQ's STOMP
//! does. Delivery counts (`JMSRedelivered`, `JMSXDeliveryCount`) belong to
//! the delivery being judged, not to the message, so the dispatcher passes
//! them in. `JMSDestination` reads as ActiveMQ writes a destination
//! (`queue://NAME`, `topic://NAME`), so selectors carry over unchanged.

use std::borrow::Cow;

use halyard_selector::{Fields, Value as Field};

use super::{Destination, DestinationKind, Message, Value};

/// A message as a selector reads it, for a delivery that would be its
/// `deliveries + 1`th.
#[derive(Debug, Clone, Copy)]
pub struct Selectable<'a> {
    /// The message.
    pub message: &'a Message,
    /// How often it has been delivered before.
    pub deliveries: u32,
}

impl Fields for Selectable<'_> {
    fn get(&self, name: &str) -> Option<Field<'_>> {
        let m = self.message;
        let long = |n: u64| Some(Field::Long(i64::try_from(n).unwrap_or(i64::MAX)));
        match name {
            "JMSPriority" => long(u64::from(m.priority)),
            "JMSTimestamp" => long(m.timestamp),
            "JMSExpiration" => long(m.expires),
            "JMSDeliveryMode" => Some(Field::Str(Cow::Borrowed(if m.persistent {
                "PERSISTENT"
            } else {
                "NON_PERSISTENT"
            }))),
            "JMSMessageID" => Some(Field::Str(Cow::Owned(m.id.to_string()))),
            "JMSDestination" => Some(Field::Str(Cow::Owned(activemq_name(&m.destination)))),
            "JMSRedelivered" => Some(Field::Bool(self.deliveries > 0)),
            "JMSXDeliveryCount" => long(u64::from(self.deliveries) + 1),
            "JMSCorrelationID" => property(m, "correlation-id"),
            "JMSType" => property(m, "type"),
            "JMSReplyTo" => property(m, "reply-to"),
            // The STOMP headers ActiveMQ turns into JMS header fields are
            // not properties there: a selector reads them by their JMS
            // names only (checked against ActiveMQ 5.17, tests/activemq).
            "type" | "priority" | "persistent" | "expires" | "timestamp" => None,
            _ => property(m, name),
        }
    }
}

/// ActiveMQ's spelling of a destination (`ActiveMQDestination.toString`).
fn activemq_name(d: &Destination) -> String {
    let scheme = match d.kind() {
        DestinationKind::Queue => "queue://",
        DestinationKind::Topic => "topic://",
        DestinationKind::TempQueue => "temp-queue://",
        DestinationKind::TempTopic => "temp-topic://",
    };
    format!("{scheme}{}", d.name())
}

fn property<'a>(m: &'a Message, name: &str) -> Option<Field<'a>> {
    Some(match m.properties.get(name)? {
        Value::Null | Value::Bytes(_) => return None,
        Value::Bool(b) => Field::Bool(*b),
        Value::I8(n) => Field::Long(i64::from(*n)),
        Value::I16(n) => Field::Long(i64::from(*n)),
        Value::I32(n) => Field::Long(i64::from(*n)),
        Value::I64(n) => Field::Long(*n),
        Value::F32(n) => Field::Double(f64::from(*n)),
        Value::F64(n) => Field::Double(*n),
        Value::String(s) => Field::Str(Cow::Borrowed(s)),
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use halyard_selector::Selector;

    use super::*;
    use crate::model::{Properties, test_message};

    fn with(props: &[(&str, Value)]) -> Message {
        let properties: Properties = props
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect();
        Message {
            properties,
            ..Arc::unwrap_or_clone(test_message(7, 6))
        }
    }

    fn sel(text: &str, m: &Message) -> bool {
        Selector::parse(text)
            .expect("valid selector")
            .matches(&Selectable {
                message: m,
                deliveries: 0,
            })
    }

    #[test]
    fn header_fields_and_typed_properties() {
        let m = with(&[
            ("color", Value::String("red".into())),
            ("n", Value::I32(5)),
            ("w", Value::F64(2.5)),
            ("ok", Value::Bool(true)),
            ("correlation-id", Value::String("c-1".into())),
            ("type", Value::String("order".into())),
        ]);
        assert!(sel("color = 'red' AND n > 4 AND w < 3 AND ok", &m));
        assert!(sel(
            "JMSPriority = 6 AND JMSDeliveryMode = 'PERSISTENT'",
            &m
        ));
        assert!(sel("JMSMessageID = 'ID:t-7'", &m));
        assert!(sel("JMSCorrelationID = 'c-1' AND JMSType = 'order'", &m));
        assert!(sel("missing IS NULL AND JMSReplyTo IS NULL", &m));
        assert!(sel("JMSDestination = 'queue://q'", &m));
        assert!(sel("NOT JMSRedelivered AND JMSXDeliveryCount = 1", &m));
        assert!(!sel("color = 'blue'", &m));
        assert!(
            !sel("type = 'order'", &m),
            "a JMS header field under its STOMP name"
        );
    }
}
