//! Frames the broker writes, encoded straight into the session's output
//! buffer (a large body is queued there by reference, not copied).

use bytes::BufMut;
use halyard_stomp::{Command, FrameWriter, Version};

use super::error::Fatal;
use super::out::{Out, SHARED_BODY};
use crate::core::{Delivery, GROUP_FIRST, Note};
use crate::model::{BODY_KIND_PROPERTY, Value};

/// A RECEIPT. `duplicates` is how many of the connection's SENDs were
/// dropped as duplicates so far: told (as `duplicates-dropped`) once
/// there are any, so a failover client can say how many of its replays the
/// broker had stored already.
pub(super) fn receipt(out: &mut Out, version: Version, receipt_id: &str, duplicates: u64) {
    let mut w = FrameWriter::new(&mut out.buf, Command::Receipt, version);
    w.header("receipt-id", receipt_id);
    if duplicates > 0 {
        w.header("duplicates-dropped", &duplicates.to_string());
    }
    w.finish(b"");
}

pub(super) fn error(out: &mut Out, version: Version, e: &Fatal) {
    let mut w = FrameWriter::new(&mut out.buf, Command::Error, version);
    w.header("message", &printable(&e.message));
    if let Some(r) = &e.receipt {
        w.header("receipt-id", r);
    }
    for (k, v) in &e.headers {
        w.header(k, v);
    }
    w.header("content-type", "text/plain");
    let body = e.detail.as_deref().unwrap_or(&e.message);
    w.finish(body.as_bytes());
}

/// Escapes control characters other than line breaks (which header escaping
/// handles): error messages may quote what a peer sent, NULs included, and a
/// NUL in a header breaks clients that look for the end of the frame.
fn printable(s: &str) -> std::borrow::Cow<'_, str> {
    let bad = |c: char| c.is_control() && c != '\n' && c != '\r';
    if !s.chars().any(bad) {
        return s.into();
    }
    s.chars()
        .map(|c| {
            if bad(c) {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect::<String>()
        .into()
}

/// The MESSAGE that tells a queue browser it has seen every message of its
/// snapshot: ActiveMQ's headers (`browser:end`, message-id 0), no body.
pub(super) fn browse_end(out: &mut Out, version: Version, subscription: &str, dest: &str) {
    let mut w = FrameWriter::new(&mut out.buf, Command::Message, version);
    w.header("subscription", subscription);
    w.header("destination", dest);
    w.header("message-id", "0");
    w.header("browser", "end");
    w.finish(b"");
}

/// The broker-set headers of a MESSAGE frame for one subscription.
pub(super) struct MessageHeaders<'a> {
    pub(super) subscription: &'a str,
    pub(super) destination: &'a str,
    /// The `ack` header (1.2), for subscriptions that acknowledge.
    pub(super) ack: Option<u64>,
}

/// Writes a MESSAGE frame: broker headers, then the message's properties
/// (strings as they are, other values in their text form), then the body:
/// copied if small, else queued as it is, shared with the message.
pub(super) fn message(out: &mut Out, version: Version, h: &MessageHeaders<'_>, d: &Delivery) {
    let m = &d.message;
    let shared = m.body.len() >= SHARED_BODY;
    let copied = if shared { 0 } else { m.body.len() };
    out.buf.reserve(128 + copied + m.properties.len() * 32);
    let mut w = FrameWriter::new(&mut out.buf, Command::Message, version);
    w.header("subscription", h.subscription);
    w.header_parts("message-id", &m.id.prefix, m.id.n);
    w.header("destination", h.destination);
    if let Some(tag) = h.ack
        && version >= Version::V1_2
    {
        w.header_u64("ack", tag);
    }
    if d.dropped > 0 {
        // Messages this subscription lost to its overflowing backlog since
        // its previous MESSAGE (documented in docs/STOMP.md).
        w.header_u64("dropped-count", u64::from(d.dropped));
    }
    if d.deliveries > 1 {
        w.header("redelivered", "true");
        w.header_u64("delivery-count", u64::from(d.deliveries));
    }
    if d.note == Note::FirstOfGroup {
        w.header(GROUP_FIRST, "true");
    }
    w.header_u64("timestamp", m.timestamp);
    for (k, v) in m.properties.iter() {
        if k == BODY_KIND_PROPERTY {
            continue;
        }
        match v {
            Value::String(s) => w.header(k, s),
            other => w.header(k, &other.to_string()),
        };
    }
    // The message's own fields, as ActiveMQ writes them on every MESSAGE,
    // unless the producer's SEND carried them as headers (kept as
    // properties, written above): a JMS producer's priority, delivery mode
    // and expiration reach a STOMP consumer too.
    let p = &m.properties;
    if m.persistent && p.get("persistent").is_none() {
        w.header("persistent", "true");
    }
    if p.get("priority").is_none() {
        w.header_u64("priority", u64::from(m.priority));
    }
    if p.get("expires").is_none() {
        w.header_u64("expires", m.expires);
    }
    if shared {
        w.end_headers(m.body.len());
        out.push_shared(m.body.clone());
        out.buf.put_u8(0);
    } else {
        w.finish(&m.body);
    }
}
