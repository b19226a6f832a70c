//! SEND: turning a frame into a message for the broker service.

use halyard_stomp::Frame;

use super::destination::StompDestination;
use super::error::{Fatal, missing};
use super::refused;
use super::session::Session;
use crate::model::{
    BODY_KIND_PROPERTY, BodyKind, DEFAULT_PRIORITY, Destination, Properties, Value,
};
use crate::service::NewMessage;
use crate::store::{DUPLICATE_ID_HEADER, MAX_DUPLICATE_ID_LEN};

/// Headers that describe the frame rather than the message, or that the
/// broker sets itself on delivery; they are not kept with the message.
const NOT_KEPT: &[&str] = &[
    "content-length",
    "receipt",
    "transaction",
    "destination",
    "message-id",
    "subscription",
    "ack",
    "redelivered",
    "delivery-count",
    "timestamp",
    // The body's JMS type is the broker's to record (from
    // `content-length`), not the client's to claim.
    BODY_KIND_PROPERTY,
];

impl Session {
    pub(super) async fn send(
        &mut self,
        frame: Frame,
        receipt: Option<String>,
    ) -> Result<(), Fatal> {
        let arrived = std::time::Instant::now();
        let conn = self.conn()?;
        let scope = conn.temp_scope();
        let dest_header = frame
            .headers
            .get("destination")
            .ok_or_else(|| missing("SEND", "destination"))?;
        let mut dests = Destination::parse_list(dest_header, &scope)
            .map_err(|e| Fatal::protocol(e.to_string()))?;
        refused::check_send(&frame.headers)?;
        let tx = frame.headers.get("transaction").map(str::to_owned);
        let first = dests.remove(0);
        let mut message = message(frame, first, &scope)?;
        message.also = dests;
        let timed = (message.persistent && tx.is_none()).then_some(arrived);
        let sent = self
            .conn()?
            .send(message, tx.as_deref(), receipt.is_some())
            .await;
        match sent {
            Ok(sent) => self.after_timed(sent.bytes, receipt, sent.work, timed),
            Err(e) => self.refuse(e, receipt),
        }
    }
}

/// The message a SEND frame describes. The user's headers become string
/// properties, in order; where a name repeats, the first value counts
/// (STOMP's rule, which is also how properties are built).
fn message(frame: Frame, destination: Destination, temp_scope: &str) -> Result<NewMessage, Fatal> {
    let headers = frame.headers;
    // As ActiveMQ maps STOMP to JMS: a SEND with `content-length` is a
    // BytesMessage, one without a TextMessage.
    let kind = if headers.get("content-length").is_some() {
        BodyKind::Bytes
    } else {
        BodyKind::Text
    };
    let persistent = match headers.get("persistent") {
        None => false,
        Some(v) if v.eq_ignore_ascii_case("true") => true,
        Some(v) if v.eq_ignore_ascii_case("false") => false,
        Some(v) => {
            return Err(Fatal::protocol(format!(
                "invalid persistent header '{v}': expected true or false"
            )));
        }
    };
    let priority = match headers.get("priority") {
        None => DEFAULT_PRIORITY,
        Some(v) => v
            .trim()
            .parse::<u8>()
            .ok()
            .filter(|p| *p <= 9)
            .ok_or_else(|| {
                Fatal::protocol(format!("invalid priority header '{v}': expected 0 to 9"))
            })?,
    };
    let expires = match headers.get("expires") {
        None => 0,
        Some(v) => v.trim().parse::<u64>().map_err(|_| {
            Fatal::protocol(format!(
                "invalid expires header '{v}': expected milliseconds since the epoch (0 for never)"
            ))
        })?,
    };
    if let Some(id) = headers.get(DUPLICATE_ID_HEADER)
        && (id.is_empty() || id.len() > MAX_DUPLICATE_ID_LEN)
    {
        return Err(Fatal::protocol(format!(
            "invalid {DUPLICATE_ID_HEADER} header: must be 1 to {MAX_DUPLICATE_ID_LEN} bytes"
        )));
    }
    let properties: Properties = headers
        .into_vec()
        .into_iter()
        .filter(|(k, _)| !NOT_KEPT.contains(&k.as_str()))
        .map(|(k, mut v)| {
            // A reply-to naming our temporary queue must mean the same queue
            // to whoever replies, so it is rewritten to the broker-wide name.
            if k == "reply-to"
                && (v.starts_with("/temp-queue/") || v.starts_with("/temp-topic/"))
                && let Ok(d) = Destination::parse(&v, temp_scope)
            {
                v = d.stomp_name();
            }
            (k, Value::String(v))
        })
        .chain(kind.property().map(|v| (BODY_KIND_PROPERTY.to_owned(), v)))
        .collect();
    Ok(NewMessage {
        destination,
        also: Vec::new(),
        properties,
        body: frame.body,
        persistent,
        priority,
        expires,
    })
}
