//! Messages and destinations across the OpenWire edge, with ActiveMQ's
//! mapping between JMS and STOMP (docs/OPENWIRE.md), so that a message sent
//! with one protocol reads naturally in the other:
//!
//! | JMS | broker message (STOMP header) |
//! |---|---|
//! | `TextMessage` text | the body, UTF-8, no kind property |
//! | `BytesMessage`, `MapMessage`, `StreamMessage`, `ObjectMessage` | the body as OpenWire encodes it, kind in [`BODY_KIND_PROPERTY`] |
//! | `JMSCorrelationID` | `correlation-id` |
//! | `JMSReplyTo` | `reply-to` (`/queue/NAME`, `/topic/NAME`, `/remote-temp-queue/NAME`) |
//! | `JMSType` | `type` |
//! | `JMSXGroupID`, `JMSXGroupSeq` | the same names |
//! | `JMSMessageID` | `_AMQ_DUPL_ID` (what duplicate detection keys on) |
//! | `JMSDeliveryMode`, `JMSPriority`, `JMSExpiration` | the message's own fields |
//! | typed properties | typed properties (a `char` becomes a one-letter string) |

use bytes::Bytes;
use halyard_openwire as ow;

use crate::core::{GROUP_FIRST, GROUP_ID, GROUP_SEQ};
use crate::model::{
    BODY_KIND_PROPERTY, BodyKind, Destination, DestinationKind, Message, Properties, Value,
};
use crate::service::NewMessage;
use crate::store::DUPLICATE_ID_HEADER;

/// STOMP's names for the JMS header fields that travel as properties.
const CORRELATION_ID: &str = "correlation-id";
const REPLY_TO: &str = "reply-to";
const TYPE: &str = "type";

/// Properties a JMS consumer gets as header fields (or not at all): never
/// in its property map.
const AS_FIELDS: &[&str] = &[
    BODY_KIND_PROPERTY,
    DUPLICATE_ID_HEADER,
    CORRELATION_ID,
    REPLY_TO,
    TYPE,
    GROUP_ID,
    GROUP_SEQ,
    GROUP_FIRST,
    // What a STOMP producer's SEND carried as headers and the broker keeps
    // as fields of its own.
    "persistent",
    "priority",
    "expires",
];

/// Why a message or destination from a client cannot be taken.
#[derive(Debug, thiserror::Error)]
pub(super) enum ConvertError {
    #[error("invalid destination: {0}")]
    Destination(String),
    #[error("malformed message: {0}")]
    Malformed(#[from] ow::Error),
    #[error("property '{0}' is a map or a list; JMS properties are single values")]
    NestedProperty(String),
    #[error("blob messages are not supported")]
    Blob,
}

/// The broker's destinations an OpenWire destination names: one, or
/// several for a composite (`a,b`, each optionally `queue://a` or
/// `topic://b`, as ActiveMQ reads them).
pub(super) fn destinations(d: &ow::Destination) -> Result<Vec<Destination>, ConvertError> {
    let kind = match d.kind {
        ow::DestinationKind::Queue => DestinationKind::Queue,
        ow::DestinationKind::Topic => DestinationKind::Topic,
        ow::DestinationKind::TempQueue => DestinationKind::TempQueue,
        ow::DestinationKind::TempTopic => DestinationKind::TempTopic,
    };
    let mut out = Vec::new();
    for part in d.physical_name.split(',') {
        let (kind, name) = if let Some(n) = part.strip_prefix("queue://") {
            (DestinationKind::Queue, n)
        } else if let Some(n) = part.strip_prefix("topic://") {
            (DestinationKind::Topic, n)
        } else {
            (kind, part)
        };
        out.push(
            Destination::new(kind, name).map_err(|e| ConvertError::Destination(e.to_string()))?,
        );
    }
    Ok(out)
}

/// The OpenWire spelling of a broker destination.
pub(super) fn destination(d: &Destination) -> ow::Destination {
    let kind = match d.kind() {
        DestinationKind::Queue => ow::DestinationKind::Queue,
        DestinationKind::Topic => ow::DestinationKind::Topic,
        DestinationKind::TempQueue => ow::DestinationKind::TempQueue,
        DestinationKind::TempTopic => ow::DestinationKind::TempTopic,
    };
    ow::Destination {
        kind,
        physical_name: d.name().to_owned(),
    }
}

/// A JMS message id's text (`ProducerId:sequence`), as the client prints it.
pub(super) fn message_id_text(id: &ow::MessageId) -> Option<String> {
    if let Some(t) = &id.text_view {
        return Some(t.clone());
    }
    let p = id.producer_id.as_ref()?;
    Some(format!(
        "{}:{}:{}:{}",
        p.connection_id.as_deref().unwrap_or_default(),
        p.session_id,
        p.value,
        id.producer_sequence_id
    ))
}

/// Parses `CONNECTION:SESSION:PRODUCER:SEQUENCE` (a JMS message id's text)
/// back into its parts, as ActiveMQ's `MessageId(String)` does.
fn parse_message_id(text: &str) -> Option<ow::MessageId> {
    let (rest, seq) = text.rsplit_once(':')?;
    let (rest, producer) = rest.rsplit_once(':')?;
    let (connection, session) = rest.rsplit_once(':')?;
    if connection.is_empty() {
        return None;
    }
    Some(ow::MessageId {
        text_view: None,
        producer_id: Some(ow::ProducerId {
            connection_id: Some(connection.to_owned()),
            value: producer.parse().ok()?,
            session_id: session.parse().ok()?,
        }),
        producer_sequence_id: seq.parse().ok()?,
        broker_sequence_id: 0,
    })
}

/// The message a producer's `Message` command describes, to `dest` (and
/// `also`, a composite's other destinations). Bodies larger than `max_body`
/// once inflated are refused.
pub(super) fn incoming(
    m: &ow::Message,
    dest: Destination,
    also: Vec<Destination>,
    max_body: usize,
) -> Result<NewMessage, ConvertError> {
    let (kind, body) = match m.kind {
        ow::MessageKind::Text => (
            BodyKind::Text,
            m.text()?
                .map(|t| Bytes::from(t.into_bytes()))
                .unwrap_or_default(),
        ),
        ow::MessageKind::Plain => (BodyKind::Empty, Bytes::new()),
        ow::MessageKind::Bytes => (BodyKind::Bytes, body(m, max_body)?),
        ow::MessageKind::Map => (BodyKind::Map, body(m, max_body)?),
        ow::MessageKind::Stream => (BodyKind::Stream, body(m, max_body)?),
        ow::MessageKind::Object => (BodyKind::Object, body(m, max_body)?),
        ow::MessageKind::Blob => return Err(ConvertError::Blob),
    };
    let mut properties: Vec<(String, Value)> = Vec::new();
    for (name, v) in m.properties()?.0 {
        // A client's own properties never pose as the broker's.
        if name == BODY_KIND_PROPERTY {
            continue;
        }
        let v = value(&name, v)?;
        properties.push((name, v));
    }
    let mut field = |name: &str, v: Value| properties.push((name.to_owned(), v));
    if let Some(c) = &m.correlation_id {
        field(CORRELATION_ID, Value::String(c.clone()));
    }
    if let Some(r) = &m.reply_to
        && let Ok(mut ds) = destinations(r)
        && ds.len() == 1
        && let Some(d) = ds.pop()
    {
        field(REPLY_TO, Value::String(d.to_string()));
    }
    if let Some(t) = &m.jms_type {
        field(TYPE, Value::String(t.clone()));
    }
    if let Some(g) = &m.group_id {
        field(GROUP_ID, Value::String(g.clone()));
        if m.group_sequence != 0 {
            field(GROUP_SEQ, Value::I32(m.group_sequence));
        }
    }
    // The producer's message id is what its resend after a failover
    // carries again: duplicate detection keys on it (ActiveMQ's producer
    // audit), and it is the JMSMessageID consumers see.
    if let Some(id) = m.message_id.as_ref().and_then(message_id_text) {
        field(DUPLICATE_ID_HEADER, Value::String(id));
    }
    if let Some(v) = kind.property() {
        field(BODY_KIND_PROPERTY, v);
    }
    Ok(NewMessage {
        destination: dest,
        also,
        properties: properties.into_iter().collect::<Properties>(),
        body,
        persistent: m.persistent,
        priority: m.priority.min(9),
        expires: u64::try_from(m.expiration).unwrap_or(0),
    })
}

/// A message's content, inflated if compressed.
fn body(m: &ow::Message, max_body: usize) -> Result<Bytes, ConvertError> {
    Ok(m.body_with_limit(max_body)?.unwrap_or_default())
}

/// A property value in the broker's terms.
fn value(name: &str, v: ow::Value) -> Result<Value, ConvertError> {
    Ok(match v {
        ow::Value::Null => Value::Null,
        ow::Value::Bool(b) => Value::Bool(b),
        ow::Value::Byte(b) => Value::I8(b),
        ow::Value::Short(n) => Value::I16(n),
        ow::Value::Int(n) => Value::I32(n),
        ow::Value::Long(n) => Value::I64(n),
        ow::Value::Float(f) => Value::F32(f),
        ow::Value::Double(f) => Value::F64(f),
        ow::Value::Char(c) => Value::String(c.to_string()),
        ow::Value::String(s) => Value::String(s),
        ow::Value::Bytes(b) => Value::Bytes(b),
        ow::Value::Map(_) | ow::Value::List(_) => {
            return Err(ConvertError::NestedProperty(name.to_owned()));
        }
    })
}

/// A property value in OpenWire's terms.
fn ow_value(v: &Value) -> ow::Value {
    match v {
        Value::Null => ow::Value::Null,
        Value::Bool(b) => ow::Value::Bool(*b),
        Value::I8(n) => ow::Value::Byte(*n),
        Value::I16(n) => ow::Value::Short(*n),
        Value::I32(n) => ow::Value::Int(*n),
        Value::I64(n) => ow::Value::Long(*n),
        Value::F32(f) => ow::Value::Float(*f),
        Value::F64(f) => ow::Value::Double(*f),
        Value::String(s) => ow::Value::String(s.clone()),
        Value::Bytes(b) => ow::Value::Bytes(b.clone()),
    }
}

/// How a delivery differs from the stored message.
pub(super) struct Delivered {
    /// Times delivered, this one included.
    pub(super) deliveries: u32,
    /// The first of its group this consumer gets.
    pub(super) first_of_group: bool,
}

/// The OpenWire form of a broker message, for a consumer.
pub(super) fn outgoing(m: &Message, how: &Delivered) -> Result<ow::Message, ow::Error> {
    let p = &m.properties;
    let kind = BodyKind::from_property(p.get(BODY_KIND_PROPERTY));
    // Text that is not UTF-8 (a STOMP SEND without content-length may carry
    // anything) reaches JMS as the bytes it is.
    let text = match kind {
        BodyKind::Text => std::str::from_utf8(&m.body).ok(),
        _ => None,
    };
    let mut out = ow::Message {
        kind: match kind {
            BodyKind::Text if text.is_some() => ow::MessageKind::Text,
            BodyKind::Text => ow::MessageKind::Bytes,
            BodyKind::Bytes => ow::MessageKind::Bytes,
            BodyKind::Empty => ow::MessageKind::Plain,
            BodyKind::Map => ow::MessageKind::Map,
            BodyKind::Stream => ow::MessageKind::Stream,
            BodyKind::Object => ow::MessageKind::Object,
        },
        destination: Some(destination(&m.destination)),
        persistent: m.persistent,
        priority: m.priority,
        expiration: i64::try_from(m.expires).unwrap_or(i64::MAX),
        timestamp: i64::try_from(m.timestamp).unwrap_or(0),
        redelivery_counter: i32::try_from(how.deliveries.saturating_sub(1)).unwrap_or(i32::MAX),
        jmsx_group_first_for_consumer: how.first_of_group,
        ..ow::Message::default()
    };
    match (out.kind, text) {
        (ow::MessageKind::Text, Some(text)) => out.set_text(Some(text))?,
        (ow::MessageKind::Plain, _) => {}
        _ => out.set_body(Some(m.body.clone())),
    }
    let mut id = p
        .get_str(DUPLICATE_ID_HEADER)
        .and_then(parse_message_id)
        .unwrap_or_else(|| broker_message_id(m));
    // What the client's acknowledgements name the message by.
    id.broker_sequence_id = i64::try_from(m.seq).unwrap_or(i64::MAX);
    out.message_id = Some(id);
    out.correlation_id = p.get_str(CORRELATION_ID).map(str::to_owned);
    out.jms_type = p.get_str(TYPE).map(str::to_owned);
    out.reply_to = p
        .get_str(REPLY_TO)
        .and_then(reply_destination)
        .map(|d| destination(&d));
    out.group_id = p.get_str(GROUP_ID).map(str::to_owned);
    out.group_sequence = match p.get(GROUP_SEQ) {
        Some(Value::I32(n)) => *n,
        Some(Value::String(s)) => s.trim().parse().unwrap_or(0),
        Some(Value::I64(n)) => i32::try_from(*n).unwrap_or(0),
        _ => 0,
    };
    let mut props = ow::Map::new();
    for (name, v) in p.iter() {
        if !AS_FIELDS.contains(&name) {
            props.0.push((name.to_owned(), ow_value(v)));
        }
    }
    if !props.is_empty() {
        out.set_properties(&props)?;
    }
    Ok(out)
}

/// The id of a message that came without a JMS one (from STOMP): its
/// broker id, shown as such (`text_view`), with a structured form unique
/// per message so the client's duplicate audit tells messages apart.
fn broker_message_id(m: &Message) -> ow::MessageId {
    ow::MessageId {
        text_view: Some(m.id.to_string()),
        producer_id: Some(ow::ProducerId {
            connection_id: Some(m.id.prefix.trim_end_matches('-').to_owned()),
            value: 0,
            session_id: 0,
        }),
        producer_sequence_id: i64::try_from(m.id.n).unwrap_or(i64::MAX),
        broker_sequence_id: 0,
    }
}

/// The temporary destination a message names as its reply-to, if any.
pub(super) fn temp_reply_to(m: &Message) -> Option<Destination> {
    m.properties
        .get_str(REPLY_TO)
        .and_then(reply_destination)
        .filter(|d| d.kind().is_temporary())
}

/// A `reply-to` as STOMP clients write it (`/queue/x`, `/topic/x`,
/// `/temp-queue/x` of the sender's, or a canonical name).
fn reply_destination(s: &str) -> Option<Destination> {
    if let Ok(d) = s.parse::<Destination>() {
        return Some(d);
    }
    let (kind, name) = if let Some(n) = s.strip_prefix("/temp-queue/") {
        (DestinationKind::TempQueue, n)
    } else if let Some(n) = s.strip_prefix("/temp-topic/") {
        (DestinationKind::TempTopic, n)
    } else {
        return None;
    };
    Destination::new(kind, name).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::Charge;
    use crate::model::MessageId;

    fn stored(new: NewMessage) -> Message {
        Message {
            seq: 7,
            id: MessageId {
                prefix: "ID:b-1-".into(),
                n: 7,
            },
            destination: new.destination,
            properties: new.properties,
            body: new.body,
            persistent: new.persistent,
            priority: new.priority,
            expires: new.expires,
            timestamp: 1,
            charge: Charge::none(),
        }
    }

    fn jms_id() -> ow::MessageId {
        ow::MessageId {
            text_view: None,
            producer_id: Some(ow::ProducerId {
                connection_id: Some("ID:host-1234-5678-0:1".into()),
                value: 3,
                session_id: 2,
            }),
            producer_sequence_id: 9,
            broker_sequence_id: 0,
        }
    }

    #[test]
    fn a_text_message_round_trips_with_its_fields_and_typed_properties() {
        let mut m = ow::Message {
            kind: ow::MessageKind::Text,
            message_id: Some(jms_id()),
            correlation_id: Some("corr".into()),
            reply_to: Some(ow::Destination::queue("replies")),
            jms_type: Some("kind".into()),
            group_id: Some("g".into()),
            group_sequence: 2,
            persistent: true,
            priority: 7,
            ..ow::Message::default()
        };
        m.set_text(Some("héllo")).unwrap();
        let mut props = ow::Map::new();
        props.insert("n", ow::Value::Int(5));
        props.insert("s", ow::Value::String("x".into()));
        props.insert(BODY_KIND_PROPERTY, ow::Value::Byte(3));
        m.set_properties(&props).unwrap();
        let new = incoming(&m, Destination::queue("q"), Vec::new(), 1 << 20).unwrap();
        assert_eq!(&new.body[..], "héllo".as_bytes());
        assert_eq!(
            new.properties.get("correlation-id").and_then(Value::as_str),
            Some("corr")
        );
        assert_eq!(
            new.properties.get("reply-to").and_then(Value::as_str),
            Some("/queue/replies")
        );
        assert_eq!(new.properties.get("n"), Some(&Value::I32(5)));
        assert_eq!(
            new.properties.get(BODY_KIND_PROPERTY),
            None,
            "a client cannot claim a kind"
        );
        let back = outgoing(
            &stored(new),
            &Delivered {
                deliveries: 2,
                first_of_group: false,
            },
        )
        .unwrap();
        assert_eq!(back.kind, ow::MessageKind::Text);
        assert_eq!(back.text().unwrap().as_deref(), Some("héllo"));
        assert_eq!(back.correlation_id.as_deref(), Some("corr"));
        assert_eq!(back.reply_to, Some(ow::Destination::queue("replies")));
        assert_eq!(back.jms_type.as_deref(), Some("kind"));
        assert_eq!(
            (back.group_id.as_deref(), back.group_sequence),
            (Some("g"), 2)
        );
        assert_eq!(back.redelivery_counter, 1);
        let id = back.message_id.clone().unwrap();
        assert_eq!(id.producer_id, jms_id().producer_id);
        assert_eq!((id.producer_sequence_id, id.broker_sequence_id), (9, 7));
        let props = back.properties().unwrap();
        assert_eq!(props.get("n"), Some(&ow::Value::Int(5)));
        assert_eq!(props.get("correlation-id"), None);
        assert_eq!(props.get(DUPLICATE_ID_HEADER), None);
    }

    #[test]
    fn stomp_bodies_map_as_activemq_maps_them() {
        let text = NewMessage {
            destination: Destination::queue("q"),
            also: Vec::new(),
            properties: [("k".to_owned(), Value::String("v".into()))]
                .into_iter()
                .collect(),
            body: Bytes::from_static(b"plain"),
            persistent: false,
            priority: 4,
            expires: 0,
        };
        let how = Delivered {
            deliveries: 1,
            first_of_group: true,
        };
        let m = outgoing(&stored(text), &how).unwrap();
        assert_eq!(m.kind, ow::MessageKind::Text);
        assert!(m.jmsx_group_first_for_consumer);
        assert_eq!(
            m.message_id.unwrap().text_view.as_deref(),
            Some("ID:b-1-7"),
            "a STOMP message keeps the id STOMP clients see"
        );
        let bytes = NewMessage {
            destination: Destination::queue("q"),
            also: Vec::new(),
            properties: [(BODY_KIND_PROPERTY.to_owned(), Value::I8(1))]
                .into_iter()
                .collect(),
            body: Bytes::from_static(b"\x00\x01"),
            persistent: false,
            priority: 4,
            expires: 0,
        };
        let m = outgoing(&stored(bytes), &how).unwrap();
        assert_eq!(m.kind, ow::MessageKind::Bytes);
        assert_eq!(m.body().unwrap().as_deref(), Some(&b"\x00\x01"[..]));
        assert_eq!(m.marshalled_properties, None);
    }

    #[test]
    fn composite_and_prefixed_destinations() {
        let d = ow::Destination::queue("a,topic://b,queue://c");
        let ds = destinations(&d).unwrap();
        assert_eq!(
            ds,
            vec![
                Destination::queue("a"),
                Destination::topic("b"),
                Destination::queue("c")
            ]
        );
        assert!(destinations(&ow::Destination::queue("")).is_err());
    }

    #[test]
    fn message_ids_parse_as_activemq_parses_them() {
        let id = parse_message_id("ID:host-1234-5678-0:1:2:3:9").unwrap();
        let p = id.producer_id.as_ref().unwrap();
        assert_eq!(p.connection_id.as_deref(), Some("ID:host-1234-5678-0:1"));
        assert_eq!((p.session_id, p.value, id.producer_sequence_id), (2, 3, 9));
        assert_eq!(
            message_id_text(&id).as_deref(),
            Some("ID:host-1234-5678-0:1:2:3:9")
        );
        assert!(parse_message_id("no-colons").is_none());
        assert!(parse_message_id("a:b:c:d").is_none());
    }
}
