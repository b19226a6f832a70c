//! What the fuzz targets in `fuzz/` need of the journal's record format,
//! and no more.
//!
//! The format (`store::journal::format`) is the crate's own business
//! (`pub(crate)`); the fuzzers are a separate crate. These thin wrappers
//! let them classify a frame, decode a payload the way recovery and paging
//! do, and write a decoded record back with the journal's own writer,
//! without making the format public. Not an API: hidden from the docs and
//! free to change with the format.

use std::sync::Arc;

use bytes::Bytes;

use crate::model::{Destination, Message, MessageId, Properties, Value};
use crate::store::journal::format::{
    self, Common, Entry, FRAME_LEN, Frame, Listed, MAX_PAYLOAD, SegmentHeader, Stamp, Writer,
};
use crate::store::{Record, StoreKey};

/// Bytes of a record frame's header (length and checksum).
pub const RECORD_FRAME_LEN: usize = FRAME_LEN;
/// The largest payload a record frame may announce.
pub const MAX_RECORD_PAYLOAD: usize = MAX_PAYLOAD;

/// What the bytes at the start of a buffer are, as recovery sees them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameKind {
    /// A record whose checksum matches: its payload is
    /// `buf[RECORD_FRAME_LEN..RECORD_FRAME_LEN + len]`.
    Record {
        /// Payload length.
        len: usize,
    },
    /// Zeros: the unwritten end of a segment.
    End,
    /// Too few bytes for the whole record.
    Incomplete,
    /// Damaged: why.
    Bad(String),
}

/// Classifies the bytes at the start of `buf` (`Frame::at`).
pub fn frame_at(buf: &[u8]) -> FrameKind {
    match Frame::at(buf) {
        Frame::Record { len } => FrameKind::Record { len },
        Frame::End => FrameKind::End,
        Frame::Incomplete => FrameKind::Incomplete,
        Frame::Bad(e) => FrameKind::Bad(e.to_string()),
    }
}

/// `payload` framed as the writer frames a record: length, checksum,
/// payload.
pub fn frame(payload: &[u8]) -> Vec<u8> {
    let len = (payload.len() as u32).to_le_bytes();
    let crc = crc32c::crc32c_append(crc32c::crc32c(&len), payload);
    let mut out = Vec::with_capacity(FRAME_LEN + payload.len());
    out.extend_from_slice(&len);
    out.extend_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(payload);
    out
}

/// A record payload decoded as recovery decodes it, and, for a message,
/// as paging a message in decodes all of it.
#[derive(Debug)]
pub struct Decoded {
    entry: Entry,
    /// An Add's whole message (its own error if only that fails: recovery
    /// reads an Add only as far as it needs).
    message: Option<Result<(StoreKey, Message), String>>,
}

/// Decodes a record payload (checksum already verified).
pub fn decode(payload: &[u8]) -> Result<Decoded, String> {
    let entry = format::decode(payload).map_err(|e| e.to_string())?;
    let message = matches!(entry, Entry::Add(_)).then(|| {
        format::decode_message_with(payload, &mut Common::default(), Bytes::copy_from_slice)
            .map_err(|e| e.to_string())
    });
    Ok(Decoded { entry, message })
}

impl Decoded {
    /// The record's kind, for a fuzzer's outcome signature.
    pub fn kind(&self) -> &'static str {
        match &self.entry {
            Entry::Add(_) => "add",
            Entry::Remove { .. } => "remove",
            Entry::Batch { .. } => "batch",
            Entry::Redelivered { .. } => "redelivered",
            Entry::Schedule { .. } => "schedule",
            Entry::Delayed { .. } => "delayed",
            Entry::SubscriptionAdd { .. } => "subscription-add",
            Entry::SubscriptionRemove { .. } => "subscription-remove",
            Entry::QueueDeclared { .. } => "queue-declared",
            Entry::QueueDropped { .. } => "queue-dropped",
            Entry::Checkpoint { .. } => "checkpoint",
            Entry::Seal { .. } => "seal",
            Entry::Manifest { .. } => "manifest",
            Entry::Dropped { .. } => "dropped",
            Entry::DupIds { .. } => "dup-ids",
        }
    }

    /// An Add's whole-message decoding failed: why.
    pub fn message_error(&self) -> Option<&str> {
        match &self.message {
            Some(Err(e)) => Some(e),
            _ => None,
        }
    }

    /// For an Add whose message decoded: whether what recovery read of it
    /// (key, seq, priority, persistence, expiry, timestamp) agrees with
    /// the whole message. `None` for other records.
    pub fn add_agrees(&self) -> Option<bool> {
        match (&self.entry, &self.message) {
            (Entry::Add(meta), Some(Ok((key, m)))) => Some(
                meta.key == *key
                    && meta.seq == m.seq
                    && meta.priority == m.priority
                    && meta.persistent == m.persistent
                    && meta.expires == m.expires
                    && meta.timestamp == m.timestamp,
            ),
            _ => None,
        }
    }

    /// The record written back by the journal's writer, framed; `None`
    /// for what today's writer does not write (format-1 seals, and Adds
    /// whose message did not decode).
    pub fn encode(&self) -> Option<Vec<u8>> {
        let mut w = Writer::default();
        match &self.entry {
            Entry::Add(meta) => {
                let (key, message) = self.message.as_ref()?.as_ref().ok()?;
                w.record(&Record::Add {
                    key: key.clone(),
                    message: Arc::new(message.clone()),
                    dedup: meta.dedup.clone(),
                });
            }
            Entry::Remove { seq } => w.record(&Record::Remove { seq: *seq }),
            Entry::Batch { count } => w.batch_marker(*count),
            Entry::Redelivered { seq, deliveries } => w.record(&Record::Redelivered {
                seq: *seq,
                deliveries: *deliveries,
            }),
            Entry::Schedule { seq, due, fired } => w.record(&Record::Schedule {
                seq: *seq,
                due: *due,
                fired: *fired,
            }),
            Entry::Delayed {
                seq,
                deliveries,
                until_ms,
            } => w.record(&Record::Delayed {
                seq: *seq,
                deliveries: *deliveries,
                until_ms: *until_ms,
            }),
            Entry::SubscriptionAdd {
                client_id,
                name,
                topic,
                selector,
            } => w.record(&Record::SubscriptionAdd {
                client_id: client_id.clone(),
                name: name.clone(),
                topic: topic.clone(),
                selector: selector.clone(),
            }),
            Entry::SubscriptionRemove { client_id, name } => {
                w.record(&Record::SubscriptionRemove {
                    client_id: client_id.clone(),
                    name: name.clone(),
                })
            }
            Entry::QueueDeclared { order, queue } => w.placed(
                &Record::QueueDeclared {
                    queue: queue.clone(),
                },
                *order,
            ),
            Entry::QueueDropped { queue } => w.record(&Record::QueueDropped {
                queue: queue.clone(),
            }),
            Entry::Checkpoint { next_seq, at_ms } => w.checkpoint(*next_seq, *at_ms),
            Entry::Seal { .. } => return None,
            Entry::Manifest { sealed, segments } => w.manifest(*sealed, segments),
            Entry::Dropped { segments } => w.dropped(segments),
            Entry::DupIds { key, ids } => w.dup_ids(key, ids),
        }
        Some(w.buf)
    }
}

/// Reads a segment header (and its progress stamp, if its version has
/// one) from the start of a segment file; a description of what it read.
pub fn segment_header(buf: &[u8]) -> Result<String, String> {
    let h = SegmentHeader::decode(buf).map_err(|e| e.to_string())?;
    let stamp = if h.has_stamp() {
        let at = format::STAMP_AT;
        let b = buf.get(at..at + format::STAMP_LEN).unwrap_or_default();
        format!("{:?}", Stamp::decode(b).map_err(|e| e.to_string()))
    } else {
        "no stamp".to_owned()
    };
    Ok(format!("{h:?} {stamp} data at {}", h.data_start()))
}

/// One framed record of every type today's writer writes, plus a segment
/// header with its stamp: the fuzzers' seeds.
pub fn seed_records() -> Vec<Vec<u8>> {
    let message = |destination: Destination, properties: Vec<(String, Value)>| Message {
        seq: 42,
        id: MessageId {
            prefix: "ID:b-1-".into(),
            n: 42,
        },
        destination,
        properties: Properties::from(properties),
        body: Bytes::from_static(b"body\0with nul"),
        persistent: true,
        priority: 7,
        expires: 123,
        timestamp: 456,
        charge: crate::memory::Charge::none(),
    };
    let every_value = vec![
        ("null".into(), Value::Null),
        ("bool".into(), Value::Bool(true)),
        ("i8".into(), Value::I8(-8)),
        ("i16".into(), Value::I16(-16)),
        ("i32".into(), Value::I32(i32::MIN)),
        ("i64".into(), Value::I64(i64::MAX)),
        ("f32".into(), Value::F32(f32::NAN)),
        ("f64".into(), Value::F64(-0.0)),
        ("s\u{e9}".into(), Value::String("v:1\n".into())),
        ("bytes".into(), Value::Bytes(Bytes::from_static(b"\0\xff"))),
    ];
    let records = [
        Record::Add {
            key: StoreKey::Queue("orders".into()),
            message: Arc::new(message(Destination::queue("orders"), every_value)),
            dedup: Some("dedup-1".into()),
        },
        Record::Add {
            key: StoreKey::Durable {
                client_id: "c".into(),
                name: "s".into(),
            },
            message: Arc::new(message(Destination::topic("prices"), Vec::new())),
            dedup: None,
        },
        Record::Add {
            key: StoreKey::Scheduled,
            message: Arc::new(message(Destination::queue("later"), Vec::new())),
            dedup: None,
        },
        Record::Remove { seq: 42 },
        Record::Redelivered {
            seq: 42,
            deliveries: 3,
        },
        Record::Schedule {
            seq: 42,
            due: 1_000,
            fired: 2,
        },
        Record::Delayed {
            seq: 42,
            deliveries: 2,
            until_ms: 9_000,
        },
        Record::SubscriptionAdd {
            client_id: "c".into(),
            name: "s".into(),
            topic: Destination::topic("prices"),
            selector: None,
        },
        Record::SubscriptionAdd {
            client_id: "c".into(),
            name: "t".into(),
            topic: Destination::topic("prices"),
            selector: Some("price > 10 AND kind = 'x'".into()),
        },
        Record::SubscriptionRemove {
            client_id: "c".into(),
            name: "s".into(),
        },
        Record::QueueDeclared {
            queue: Destination::queue("orders"),
        },
        Record::QueueDropped {
            queue: Destination::queue("orders"),
        },
    ];
    let mut out: Vec<Vec<u8>> = records
        .iter()
        .map(|r| {
            let mut w = Writer::default();
            w.record(r);
            w.buf
        })
        .collect();
    let mut w = Writer::default();
    w.batch_marker(2);
    w.checkpoint(43, 1_700_000_000_000);
    w.manifest(
        true,
        &[Listed {
            id: 1,
            end: 4096,
            records: 10,
            adds: 4,
        }],
    );
    w.dropped(&[1, 2]);
    w.dup_ids(&StoreKey::Queue("orders".into()), &["a".into(), "b".into()]);
    // Each of those on its own, then all of them as one buffer.
    let mut at = 0;
    while let Frame::Record { len } = Frame::at(&w.buf[at..]) {
        out.push(w.buf[at..at + FRAME_LEN + len].to_vec());
        at += FRAME_LEN + len;
    }
    out.push(w.buf);
    let mut header = SegmentHeader::new(7, 3, 99, 5).encode().to_vec();
    header.extend_from_slice(
        &Stamp {
            end: 4096,
            records: 3,
            adds: 1,
            rolled: false,
        }
        .encode(),
    );
    out.push(header);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The seeds are what the fuzzer's invariants hold for: every framed
    /// record reads as a record, decodes, agrees with itself and is
    /// written back byte for byte.
    #[test]
    fn every_seed_record_decodes_and_is_written_back_the_same() {
        let mut records = 0;
        for seed in seed_records() {
            let mut at = 0;
            while let FrameKind::Record { len } = frame_at(&seed[at..]) {
                let framed = &seed[at..at + FRAME_LEN + len];
                let d = decode(&framed[FRAME_LEN..]).unwrap();
                assert_ne!(d.add_agrees(), Some(false), "{d:?}");
                assert_eq!(d.message_error(), None, "{d:?}");
                assert_eq!(d.encode().as_deref(), Some(framed), "{d:?}");
                assert_eq!(frame(&framed[FRAME_LEN..]), framed);
                records += 1;
                at += FRAME_LEN + len;
            }
        }
        // Twelve records, five more, those five again in one buffer.
        assert_eq!(records, 22);
        assert!(segment_header(seed_records().last().unwrap()).is_ok());
    }
}
