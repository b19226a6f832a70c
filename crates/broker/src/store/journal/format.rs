//! The on-disk format of journal segments (documented in docs/STORAGE.md).
//!
//! A segment is a header (128 bytes; 64 in format 1) followed by records:
//!
//! ```text
//! record  = len:u32le crc:u32le payload[len]      crc = crc32c(len:u32le ++ payload)
//! payload = type:u8 body
//! ```
//!
//! Everything here is pure: bytes in, values out, so the format is tested
//! without files.

use std::sync::Arc;

use bytes::Bytes;

use crate::model::{Destination, DestinationKind, Message, MessageId, Properties, Value};
use crate::store::{Record, StoreKey};

/// First bytes of every segment file.
pub(crate) const MAGIC: [u8; 8] = *b"HLYDJRNL";
/// Format version written by this code; recovery refuses newer ones and
/// reads versions 1 (no progress stamp), 2 (Adds with string headers) and
/// 3 (no declared queues) and 4 too. Headers of versions 2 to 5 are alike;
/// what changed is the records: version 3 brought the typed Add
/// ([`T_ADD_TYPED`]), version 4 the queue declarations
/// ([`T_QUEUE_DECLARED`], [`T_QUEUE_DROPPED`]), version 5 the records of
/// selectors, delayed redelivery and scheduled delivery (record types 16
/// to 18). The version keeps an older broker, which could not read them,
/// from taking such a segment for damage.
pub(crate) const VERSION: u16 = 5;
/// The part of the header every version has, checksummed once when the
/// segment is created; version 1 headers are only this.
pub(crate) const FIXED_LEN: usize = 64;
/// Size of the header this version writes: the fixed part, then the
/// progress [`Stamp`], rewritten as the segment fills.
pub(crate) const HEADER_LEN: usize = FIXED_LEN + STAMP_LEN;
/// Where the progress stamp is in a version 2 header.
pub(crate) const STAMP_AT: usize = FIXED_LEN;
/// Size of the progress stamp.
pub(crate) const STAMP_LEN: usize = 64;
/// Bytes before a record's payload: length and checksum.
pub(crate) const FRAME_LEN: usize = 8;
/// Largest payload accepted on reading. Bodies are limited to far less by
/// the broker; a larger length field is corruption.
pub(crate) const MAX_PAYLOAD: usize = 1 << 30;

const T_ADD: u8 = 1;
const T_REMOVE: u8 = 2;
const T_BATCH: u8 = 3;
const T_REDELIVERED: u8 = 4;
const T_SUB_ADD: u8 = 5;
const T_SUB_REMOVE: u8 = 6;
const T_CHECKPOINT: u8 = 7;
const T_SEAL: u8 = 8;
/// An Add with a duplicate-detection id and string headers (written by
/// formats 1.1 and 2; still read, as are plain `T_ADD` records).
const T_ADD_DEDUP: u8 = 9;
/// Duplicate-detection ids carried forward from a segment about to be
/// deleted, so the memory of recent ids outlives the Adds that brought them.
const T_DUP_IDS: u8 = 10;
/// The first record of every segment since format 2: what every other
/// segment held when this one was created (a [`T_SEAL`] with counts).
const T_MANIFEST: u8 = 11;
/// Segments about to be deleted on purpose, so recovery does not count
/// them as lost.
const T_DROPPED: u8 = 12;
/// An Add with typed properties and its destination as kind and name
/// (written since format 3). Its fields up to the timestamp are those of
/// [`T_ADD_DEDUP`]. Compaction copies older Adds into new segments as they
/// are, so every segment may hold all three kinds of Add.
const T_ADD_TYPED: u8 = 13;
/// A queue was declared (written since format 4): its place in declaration
/// order, then its canonical name. The place is the journal's own: the
/// writer gives a queue not declared yet the next one, and a queue declared
/// already the one it has, so recovery gives the queues back in the order
/// they were declared even after compaction has copied some of their
/// records forward (as it copies them, byte for byte).
const T_QUEUE_DECLARED: u8 = 14;
/// A declared queue was dropped (written since format 4): its canonical
/// name.
const T_QUEUE_DROPPED: u8 = 15;
/// A durable subscription with a message selector (written since format
/// 5): [`T_SUB_ADD`]'s fields, then the selector's text. One without a
/// selector is still written as a [`T_SUB_ADD`].
const T_SUB_ADD_SELECTOR: u8 = 16;
/// A scheduled message's progress (written since format 5): its seq, when
/// it fires next (ms since the epoch) and how often it has fired. The
/// latest one of a live message counts; compaction copies it forward with
/// the message's Add, as it does a [`T_REDELIVERED`].
const T_SCHEDULE: u8 = 18;
/// A stored message went back for a delayed redelivery (written since
/// format 5): its seq, its delivery count and when it is due (ms since the
/// epoch). Like [`T_REDELIVERED`], the latest record of a message wins.
const T_DELAYED: u8 = 17;

/// Destination kinds in a [`T_ADD_TYPED`].
const DEST_QUEUE: u8 = 1;
const DEST_TOPIC: u8 = 2;
const DEST_TEMP_QUEUE: u8 = 3;
const DEST_TEMP_TOPIC: u8 = 4;

/// Property value types in a [`T_ADD_TYPED`]: a tag, then the value.
const V_NULL: u8 = 0;
const V_BOOL: u8 = 1;
const V_I8: u8 = 2;
const V_I16: u8 = 3;
const V_I32: u8 = 4;
const V_I64: u8 = 5;
const V_F32: u8 = 6;
const V_F64: u8 = 7;
const V_STRING: u8 = 8;
const V_BYTES: u8 = 9;

const KEY_QUEUE: u8 = 1;
const KEY_DURABLE: u8 = 2;
/// The scheduler's messages (format 5): the key has no further fields.
const KEY_SCHEDULED: u8 = 3;

/// Why bytes are not a valid segment header or record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum FormatError {
    #[error("not a journal segment (bad magic)")]
    BadMagic,
    #[error("segment format version {0} is newer than this broker understands ({VERSION})")]
    Version(u16),
    #[error("segment header checksum mismatch")]
    HeaderChecksum,
    #[error("segment header length {0} does not fit format version {1}")]
    HeaderLength(u32, u16),
    #[error("progress stamp checksum mismatch")]
    StampChecksum,
    #[error("record checksum mismatch")]
    Checksum,
    #[error("record length {0} out of range")]
    Length(usize),
    #[error("unknown record type {0}")]
    UnknownType(u8),
    #[error("record truncated or malformed: {0}")]
    Malformed(&'static str),
}

/// The fixed part of a segment file's header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SegmentHeader {
    pub(crate) id: u64,
    /// The HA epoch of the broker that created the segment.
    pub(crate) epoch: u64,
    /// Every sequence number used before this segment was created is below
    /// this, so sequence numbers never repeat even after old segments go.
    pub(crate) seq_floor: u64,
    pub(crate) created_ms: u64,
    /// The format version the segment was written in ([`VERSION`] for new
    /// ones). Only version 2 has a progress stamp.
    pub(crate) version: u16,
}

impl SegmentHeader {
    /// A header for a new segment, in this version's format.
    pub(crate) fn new(id: u64, epoch: u64, seq_floor: u64, created_ms: u64) -> SegmentHeader {
        SegmentHeader {
            id,
            epoch,
            seq_floor,
            created_ms,
            version: VERSION,
        }
    }

    /// Where the records start: after the header, whose length depends on
    /// the version.
    pub(crate) fn data_start(&self) -> usize {
        if self.version >= 2 {
            HEADER_LEN
        } else {
            FIXED_LEN
        }
    }

    /// Whether the header has a progress stamp.
    pub(crate) fn has_stamp(&self) -> bool {
        self.version >= 2
    }

    /// The fixed part. Its checksum (bytes 60..64) covers bytes 0..60 in
    /// every version, so the stamp after it can change without touching it.
    pub(crate) fn encode(&self) -> [u8; FIXED_LEN] {
        let mut h = [0u8; FIXED_LEN];
        h[0..8].copy_from_slice(&MAGIC);
        h[8..10].copy_from_slice(&self.version.to_le_bytes());
        // 10..12 flags, 12..16 header length
        h[12..16].copy_from_slice(&(self.data_start() as u32).to_le_bytes());
        h[16..24].copy_from_slice(&self.id.to_le_bytes());
        h[24..32].copy_from_slice(&self.epoch.to_le_bytes());
        h[32..40].copy_from_slice(&self.seq_floor.to_le_bytes());
        h[40..48].copy_from_slice(&self.created_ms.to_le_bytes());
        let crc = crc32c::crc32c(&h[..60]);
        h[60..64].copy_from_slice(&crc.to_le_bytes());
        h
    }

    /// Reads the fixed part (the first [`FIXED_LEN`] bytes of `h`).
    pub(crate) fn decode(h: &[u8]) -> Result<SegmentHeader, FormatError> {
        if h.len() < FIXED_LEN || h[0..8] != MAGIC {
            return Err(FormatError::BadMagic);
        }
        if crc32c::crc32c(&h[..60]) != u32_at(h, 60) {
            return Err(FormatError::HeaderChecksum);
        }
        let version = u16::from_le_bytes([h[8], h[9]]);
        if version > VERSION {
            return Err(FormatError::Version(version));
        }
        let header = SegmentHeader {
            id: u64_at(h, 16),
            epoch: u64_at(h, 24),
            seq_floor: u64_at(h, 32),
            created_ms: u64_at(h, 40),
            version,
        };
        let len = u32_at(h, 12);
        if len as usize != header.data_start() {
            return Err(FormatError::HeaderLength(len, version));
        }
        Ok(header)
    }
}

/// The progress stamp in a version 2 header: how far the segment's data
/// was confirmed. The writer rewrites it after each successful sync, without
/// a sync of its own, so it reaches the disk with the next one: it never
/// claims more than is durable, and lags at most one sync behind what was
/// confirmed. Recovery compares it with what it finds: records missing
/// before the stamped end were confirmed and are lost; a torn record after
/// it is the normal trace of a crash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stamp {
    /// End of the confirmed records.
    pub(crate) end: u64,
    /// Records before `end` (every record, batch markers included).
    pub(crate) records: u64,
    /// Add records (messages) among them.
    pub(crate) adds: u64,
    /// The segment was closed and a newer one created: were it the newest
    /// segment found, its successor went missing.
    pub(crate) rolled: bool,
}

impl Stamp {
    pub(crate) fn encode(&self) -> [u8; STAMP_LEN] {
        let mut b = [0u8; STAMP_LEN];
        b[0..8].copy_from_slice(&self.end.to_le_bytes());
        b[8..16].copy_from_slice(&self.records.to_le_bytes());
        b[16..24].copy_from_slice(&self.adds.to_le_bytes());
        b[24] = u8::from(self.rolled);
        // 25..60 reserved (0)
        let crc = crc32c::crc32c(&b[..60]);
        b[60..64].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Reads a stamp (the [`STAMP_LEN`] bytes at [`STAMP_AT`]).
    pub(crate) fn decode(b: &[u8]) -> Result<Stamp, FormatError> {
        if b.len() < STAMP_LEN || crc32c::crc32c(&b[..60]) != u32_at(b, 60) {
            return Err(FormatError::StampChecksum);
        }
        Ok(Stamp {
            end: u64_at(b, 0),
            records: u64_at(b, 8),
            adds: u64_at(b, 16),
            rolled: b[24] & 1 != 0,
        })
    }
}

/// One segment as a manifest lists it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Listed {
    pub(crate) id: u64,
    /// End of its records.
    pub(crate) end: u64,
    /// How many records it holds (batch markers included).
    pub(crate) records: u64,
    /// How many of them are Adds (messages).
    pub(crate) adds: u64,
}

/// Counts the records and the Adds among them in framed bytes the writer
/// just made, without checking checksums (they are fresh).
pub(crate) fn tally(buf: &[u8]) -> (u64, u64) {
    let (mut records, mut adds, mut at) = (0, 0, 0);
    while at + FRAME_LEN < buf.len() {
        let len = u32_at(buf, at) as usize;
        if len == 0 {
            break;
        }
        records += 1;
        if matches!(buf[at + FRAME_LEN], T_ADD | T_ADD_DEDUP | T_ADD_TYPED) {
            adds += 1;
        }
        at += FRAME_LEN + len;
    }
    (records, adds)
}

/// Whether a decoded record is an Add.
pub(crate) fn is_add(e: &Entry) -> bool {
    matches!(e, Entry::Add(_))
}

fn u32_at(b: &[u8], i: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[i..i + 4]);
    u32::from_le_bytes(a)
}

fn u64_at(b: &[u8], i: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[i..i + 8]);
    u64::from_le_bytes(a)
}

/// What a record frame at some offset is.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Frame {
    /// A valid record: its payload is `buf[FRAME_LEN..FRAME_LEN + len]`.
    Record { len: usize },
    /// Zeros: the unwritten end of the segment.
    End,
    /// Not enough bytes for the whole record.
    Incomplete,
    /// Damaged.
    Bad(FormatError),
}

impl Frame {
    /// Classifies the bytes at the start of `buf`.
    pub(crate) fn at(buf: &[u8]) -> Frame {
        if buf.len() < FRAME_LEN {
            return if buf.iter().all(|&b| b == 0) {
                Frame::End
            } else {
                Frame::Incomplete
            };
        }
        let len = u32_at(buf, 0) as usize;
        let crc = u32_at(buf, 4);
        if len == 0 {
            return if crc == 0 {
                Frame::End
            } else {
                Frame::Bad(FormatError::Length(0))
            };
        }
        if len > MAX_PAYLOAD {
            return Frame::Bad(FormatError::Length(len));
        }
        if buf.len() < FRAME_LEN + len {
            return Frame::Incomplete;
        }
        let payload = &buf[FRAME_LEN..FRAME_LEN + len];
        let actual = crc32c::crc32c_append(crc32c::crc32c(&buf[0..4]), payload);
        if actual != crc {
            return Frame::Bad(FormatError::Checksum);
        }
        Frame::Record { len }
    }
}

/// Appends records to a buffer.
#[derive(Default)]
pub(crate) struct Writer {
    pub(crate) buf: Vec<u8>,
}

impl Writer {
    fn frame(&mut self, payload_len: usize, fill: impl FnOnce(&mut Vec<u8>)) {
        let start = self.buf.len();
        self.buf
            .extend_from_slice(&(payload_len as u32).to_le_bytes());
        self.buf.extend_from_slice(&[0; 4]);
        fill(&mut self.buf);
        debug_assert_eq!(self.buf.len() - start - FRAME_LEN, payload_len);
        let crc = crc32c::crc32c_append(
            crc32c::crc32c(&self.buf[start..start + 4]),
            &self.buf[start + FRAME_LEN..],
        );
        self.buf[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
    }

    /// Writes a batch: several records behind a batch marker, so recovery
    /// applies all of them or none. Queue declarations get place 0 (see
    /// [`Writer::placed`]).
    #[cfg(test)]
    pub(crate) fn batch(&mut self, records: &[Record]) {
        self.batch_with_offsets(records, &mut |_| 0);
    }

    /// Like [`Writer::batch`], with each queue declaration's place in
    /// declaration order given by `place`, returning where each record's
    /// frame is in the buffer, its length, and what it means for the index.
    pub(crate) fn batch_with_offsets(
        &mut self,
        records: &[Record],
        place: &mut impl FnMut(&Record) -> u64,
    ) -> Vec<(usize, usize, Entry)> {
        if records.len() > 1 {
            self.batch_marker(records.len() as u32);
        }
        records
            .iter()
            .map(|r| {
                let start = self.buf.len();
                let order = place(r);
                self.placed(r, order);
                (start, self.buf.len() - start, placed_entry(r, order))
            })
            .collect()
    }

    /// The marker saying the next `count` records are one batch.
    pub(crate) fn batch_marker(&mut self, count: u32) {
        self.frame(5, |b| {
            b.push(T_BATCH);
            b.extend_from_slice(&count.to_le_bytes());
        });
    }

    /// Writes one record. A queue declaration gets place 0 in declaration
    /// order: the journal's writer uses [`Writer::placed`].
    pub(crate) fn record(&mut self, r: &Record) {
        self.placed(r, 0);
    }

    /// Writes one record; a queue declaration with `order`, its place in
    /// declaration order.
    pub(crate) fn placed(&mut self, r: &Record, order: u64) {
        match r {
            Record::Add {
                key,
                message,
                dedup,
            } => {
                let dedup = dedup.as_deref().unwrap_or_default();
                let len = add_len(key, message, dedup);
                self.frame(len, |b| put_add(b, key, message, dedup));
            }
            Record::Remove { seq } => self.frame(9, |b| {
                b.push(T_REMOVE);
                b.extend_from_slice(&seq.to_le_bytes());
            }),
            Record::Redelivered { seq, deliveries } => self.frame(13, |b| {
                b.push(T_REDELIVERED);
                b.extend_from_slice(&seq.to_le_bytes());
                b.extend_from_slice(&deliveries.to_le_bytes());
            }),
            Record::Schedule { seq, due, fired } => self.frame(21, |b| {
                b.push(T_SCHEDULE);
                b.extend_from_slice(&seq.to_le_bytes());
                b.extend_from_slice(&due.to_le_bytes());
                b.extend_from_slice(&fired.to_le_bytes());
            }),
            Record::Delayed {
                seq,
                deliveries,
                until_ms,
            } => self.frame(21, |b| {
                b.push(T_DELAYED);
                b.extend_from_slice(&seq.to_le_bytes());
                b.extend_from_slice(&deliveries.to_le_bytes());
                b.extend_from_slice(&until_ms.to_le_bytes());
            }),
            Record::SubscriptionAdd {
                client_id,
                name,
                topic,
                selector,
            } => {
                let topic = topic.to_string();
                let mut len = 1 + str_len(client_id) + str_len(name) + str_len(&topic);
                if let Some(selector) = selector {
                    len += str_len(selector);
                }
                self.frame(len, |b| {
                    b.push(if selector.is_some() {
                        T_SUB_ADD_SELECTOR
                    } else {
                        T_SUB_ADD
                    });
                    put_str(b, client_id);
                    put_str(b, name);
                    put_str(b, &topic);
                    if let Some(selector) = selector {
                        put_str(b, selector);
                    }
                });
            }
            Record::SubscriptionRemove { client_id, name } => {
                let len = 1 + str_len(client_id) + str_len(name);
                self.frame(len, |b| {
                    b.push(T_SUB_REMOVE);
                    put_str(b, client_id);
                    put_str(b, name);
                });
            }
            Record::QueueDeclared { queue } => {
                let queue = queue.to_string();
                self.frame(1 + 8 + str_len(&queue), |b| {
                    b.push(T_QUEUE_DECLARED);
                    b.extend_from_slice(&order.to_le_bytes());
                    put_str(b, &queue);
                });
            }
            Record::QueueDropped { queue } => {
                let queue = queue.to_string();
                self.frame(1 + str_len(&queue), |b| {
                    b.push(T_QUEUE_DROPPED);
                    put_str(b, &queue);
                });
            }
        }
    }

    /// A seal (format 1): the first record of a new master's first
    /// segment, giving the end of every older segment as it found them.
    /// Anything a stale master appends to them afterwards is ignored by
    /// recovery. Now written as a sealed [`Writer::manifest`]; kept for
    /// tests of journals written before.
    #[cfg(test)]
    pub(crate) fn seal(&mut self, segments: &[(u64, u64)]) {
        self.frame(5 + 16 * segments.len(), |b| {
            b.push(T_SEAL);
            b.extend_from_slice(&(segments.len() as u32).to_le_bytes());
            for (id, end) in segments {
                b.extend_from_slice(&id.to_le_bytes());
                b.extend_from_slice(&end.to_le_bytes());
            }
        });
    }

    /// A manifest: the first record of a new segment, listing every other
    /// segment with its end and counts. `sealed` marks a new master's first
    /// segment: its ends also limit what older masters may have written
    /// (see [`Writer::seal`]).
    pub(crate) fn manifest(&mut self, sealed: bool, segments: &[Listed]) {
        self.frame(6 + 32 * segments.len(), |b| {
            b.push(T_MANIFEST);
            b.push(u8::from(sealed));
            b.extend_from_slice(&(segments.len() as u32).to_le_bytes());
            for s in segments {
                for v in [s.id, s.end, s.records, s.adds] {
                    b.extend_from_slice(&v.to_le_bytes());
                }
            }
        });
    }

    /// Segments about to be deleted on purpose.
    pub(crate) fn dropped(&mut self, segments: &[u64]) {
        self.frame(5 + 8 * segments.len(), |b| {
            b.push(T_DROPPED);
            b.extend_from_slice(&(segments.len() as u32).to_le_bytes());
            for s in segments {
                b.extend_from_slice(&s.to_le_bytes());
            }
        });
    }

    /// Duplicate-detection ids of one queue, carried forward.
    pub(crate) fn dup_ids(&mut self, key: &StoreKey, ids: &[std::sync::Arc<str>]) {
        let len = 1 + key_len(key) + 4 + ids.iter().map(|i| str_len(i)).sum::<usize>();
        self.frame(len, |b| {
            b.push(T_DUP_IDS);
            put_key(b, key);
            b.extend_from_slice(&(ids.len() as u32).to_le_bytes());
            for id in ids {
                put_str(b, id);
            }
        });
    }

    /// A checkpoint: written on clean shutdown.
    pub(crate) fn checkpoint(&mut self, next_seq: u64, at_ms: u64) {
        self.frame(17, |b| {
            b.push(T_CHECKPOINT);
            b.extend_from_slice(&next_seq.to_le_bytes());
            b.extend_from_slice(&at_ms.to_le_bytes());
        });
    }
}

fn str_len(s: &str) -> usize {
    4 + s.len()
}

pub(crate) fn put_str(b: &mut Vec<u8>, s: &str) {
    b.extend_from_slice(&(s.len() as u32).to_le_bytes());
    b.extend_from_slice(s.as_bytes());
}

fn key_len(key: &StoreKey) -> usize {
    1 + match key {
        StoreKey::Queue(n) => str_len(n),
        StoreKey::Durable { client_id, name } => str_len(client_id) + str_len(name),
        StoreKey::Scheduled => 0,
    }
}

pub(crate) fn put_key(b: &mut Vec<u8>, key: &StoreKey) {
    match key {
        StoreKey::Queue(n) => {
            b.push(KEY_QUEUE);
            put_str(b, n);
        }
        StoreKey::Durable { client_id, name } => {
            b.push(KEY_DURABLE);
            put_str(b, client_id);
            put_str(b, name);
        }
        StoreKey::Scheduled => b.push(KEY_SCHEDULED),
    }
}

/// Fixed-size part of an Add after its key: seq, priority, persistent,
/// expires, timestamp.
const ADD_FIXED: usize = 8 + 1 + 1 + 8 + 8;

fn add_len(key: &StoreKey, m: &Message, dedup: &str) -> usize {
    1 + key_len(key)
        + ADD_FIXED
        + str_len(dedup)
        + 1
        + str_len(m.destination.name())
        + str_len(&m.id.prefix)
        + 8
        + 4
        + m.properties
            .iter()
            .map(|(k, v)| str_len(k) + value_len(v))
            .sum::<usize>()
        + 4
        + m.body.len()
}

// The fields recovery needs come first, so it can stop reading there.
fn put_add(b: &mut Vec<u8>, key: &StoreKey, m: &Message, dedup: &str) {
    b.push(T_ADD_TYPED);
    put_key(b, key);
    b.extend_from_slice(&m.seq.to_le_bytes());
    b.push(m.priority);
    b.push(u8::from(m.persistent));
    b.extend_from_slice(&m.expires.to_le_bytes());
    put_str(b, dedup);
    b.extend_from_slice(&m.timestamp.to_le_bytes());
    b.push(match m.destination.kind() {
        DestinationKind::Queue => DEST_QUEUE,
        DestinationKind::Topic => DEST_TOPIC,
        DestinationKind::TempQueue => DEST_TEMP_QUEUE,
        DestinationKind::TempTopic => DEST_TEMP_TOPIC,
    });
    put_str(b, m.destination.name());
    put_str(b, &m.id.prefix);
    b.extend_from_slice(&m.id.n.to_le_bytes());
    b.extend_from_slice(&(m.properties.len() as u32).to_le_bytes());
    for (k, v) in m.properties.iter() {
        put_str(b, k);
        put_value(b, v);
    }
    b.extend_from_slice(&(m.body.len() as u32).to_le_bytes());
    b.extend_from_slice(&m.body);
}

fn value_len(v: &Value) -> usize {
    1 + match v {
        Value::Null => 0,
        Value::Bool(_) | Value::I8(_) => 1,
        Value::I16(_) => 2,
        Value::I32(_) | Value::F32(_) => 4,
        Value::I64(_) | Value::F64(_) => 8,
        Value::String(s) => str_len(s),
        Value::Bytes(b) => 4 + b.len(),
    }
}

fn put_value(b: &mut Vec<u8>, v: &Value) {
    match v {
        Value::Null => b.push(V_NULL),
        Value::Bool(x) => b.extend_from_slice(&[V_BOOL, u8::from(*x)]),
        Value::I8(x) => b.extend_from_slice(&[V_I8, x.to_le_bytes()[0]]),
        Value::I16(x) => {
            b.push(V_I16);
            b.extend_from_slice(&x.to_le_bytes());
        }
        Value::I32(x) => {
            b.push(V_I32);
            b.extend_from_slice(&x.to_le_bytes());
        }
        Value::I64(x) => {
            b.push(V_I64);
            b.extend_from_slice(&x.to_le_bytes());
        }
        Value::F32(x) => {
            b.push(V_F32);
            b.extend_from_slice(&x.to_bits().to_le_bytes());
        }
        Value::F64(x) => {
            b.push(V_F64);
            b.extend_from_slice(&x.to_bits().to_le_bytes());
        }
        Value::String(s) => {
            b.push(V_STRING);
            put_str(b, s);
        }
        Value::Bytes(bytes) => {
            b.push(V_BYTES);
            b.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
            b.extend_from_slice(bytes);
        }
    }
}

/// A bounds-checked reader over a payload.
pub(crate) struct Cursor<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    pub(crate) fn new(b: &'a [u8]) -> Cursor<'a> {
        Cursor { b, at: 0 }
    }
    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8], FormatError> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&e| e <= self.b.len())
            .ok_or(FormatError::Malformed("field past the end of the record"))?;
        let s = &self.b[self.at..end];
        self.at = end;
        Ok(s)
    }
    pub(crate) fn u8(&mut self) -> Result<u8, FormatError> {
        Ok(self.take(1)?[0])
    }
    pub(crate) fn u16(&mut self) -> Result<u16, FormatError> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }
    pub(crate) fn u32(&mut self) -> Result<u32, FormatError> {
        Ok(u32_at(self.take(4)?, 0))
    }
    pub(crate) fn u64(&mut self) -> Result<u64, FormatError> {
        Ok(u64_at(self.take(8)?, 0))
    }
    pub(crate) fn str(&mut self) -> Result<&'a str, FormatError> {
        let n = self.u32()? as usize;
        std::str::from_utf8(self.take(n)?).map_err(|_| FormatError::Malformed("invalid UTF-8"))
    }
    pub(crate) fn done(&self) -> Result<(), FormatError> {
        if self.at == self.b.len() {
            Ok(())
        } else {
            Err(FormatError::Malformed("trailing bytes"))
        }
    }
}

pub(crate) fn get_key(c: &mut Cursor<'_>) -> Result<StoreKey, FormatError> {
    match c.u8()? {
        KEY_QUEUE => Ok(StoreKey::Queue(c.str()?.into())),
        KEY_DURABLE => Ok(StoreKey::Durable {
            client_id: c.str()?.into(),
            name: c.str()?.into(),
        }),
        KEY_SCHEDULED => Ok(StoreKey::Scheduled),
        _ => Err(FormatError::Malformed("unknown destination kind")),
    }
}

/// A destination stored by its canonical name.
pub(crate) fn get_destination(c: &mut Cursor<'_>) -> Result<Destination, FormatError> {
    c.str()?
        .parse()
        .map_err(|_| FormatError::Malformed("invalid destination"))
}

/// What recovery needs of an Add, without its headers and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AddMeta {
    pub(crate) key: StoreKey,
    pub(crate) seq: u64,
    pub(crate) priority: u8,
    pub(crate) persistent: bool,
    pub(crate) expires: u64,
    /// Its duplicate-detection id, if it has one.
    pub(crate) dedup: Option<std::sync::Arc<str>>,
    /// When the broker accepted it (ms since the epoch): the age of its
    /// duplicate-detection id.
    pub(crate) timestamp: u64,
}

/// A decoded payload. Adds are decoded only as far as recovery needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Entry {
    Add(AddMeta),
    Remove {
        seq: u64,
    },
    Batch {
        count: u32,
    },
    Redelivered {
        seq: u64,
        deliveries: u32,
    },
    Schedule {
        seq: u64,
        due: u64,
        fired: u32,
    },
    Delayed {
        seq: u64,
        deliveries: u32,
        until_ms: u64,
    },
    SubscriptionAdd {
        client_id: String,
        name: String,
        topic: Destination,
        selector: Option<String>,
    },
    SubscriptionRemove {
        client_id: String,
        name: String,
    },
    /// A queue declared, with its place in declaration order.
    QueueDeclared {
        order: u64,
        queue: Destination,
    },
    QueueDropped {
        queue: Destination,
    },
    Checkpoint {
        next_seq: u64,
        at_ms: u64,
    },
    Seal {
        segments: Vec<(u64, u64)>,
    },
    Manifest {
        sealed: bool,
        segments: Vec<Listed>,
    },
    Dropped {
        segments: Vec<u64>,
    },
    DupIds {
        key: StoreKey,
        ids: Vec<std::sync::Arc<str>>,
    },
}

/// What a record means for the index (as [`decode`] would return it),
/// a queue declaration written with place `order`.
pub(crate) fn placed_entry(r: &Record, order: u64) -> Entry {
    match r {
        Record::Add {
            key,
            message,
            dedup,
        } => Entry::Add(AddMeta {
            key: key.clone(),
            seq: message.seq,
            priority: message.priority,
            persistent: message.persistent,
            expires: message.expires,
            dedup: dedup.clone(),
            timestamp: message.timestamp,
        }),
        Record::Remove { seq } => Entry::Remove { seq: *seq },
        Record::Redelivered { seq, deliveries } => Entry::Redelivered {
            seq: *seq,
            deliveries: *deliveries,
        },
        Record::Schedule { seq, due, fired } => Entry::Schedule {
            seq: *seq,
            due: *due,
            fired: *fired,
        },
        Record::Delayed {
            seq,
            deliveries,
            until_ms,
        } => Entry::Delayed {
            seq: *seq,
            deliveries: *deliveries,
            until_ms: *until_ms,
        },
        Record::SubscriptionAdd {
            client_id,
            name,
            topic,
            selector,
        } => Entry::SubscriptionAdd {
            client_id: client_id.clone(),
            name: name.clone(),
            topic: topic.clone(),
            selector: selector.clone(),
        },
        Record::SubscriptionRemove { client_id, name } => Entry::SubscriptionRemove {
            client_id: client_id.clone(),
            name: name.clone(),
        },
        Record::QueueDeclared { queue } => Entry::QueueDeclared {
            order,
            queue: queue.clone(),
        },
        Record::QueueDropped { queue } => Entry::QueueDropped {
            queue: queue.clone(),
        },
    }
}

/// Decodes a payload (already checksum-verified).
pub(crate) fn decode(payload: &[u8]) -> Result<Entry, FormatError> {
    let mut c = Cursor { b: payload, at: 0 };
    let entry = match c.u8()? {
        t @ (T_ADD | T_ADD_DEDUP | T_ADD_TYPED) => {
            let key = get_key(&mut c)?;
            let seq = c.u64()?;
            let priority = c.u8()?;
            let persistent = c.u8()? != 0;
            let expires = c.u64()?;
            let dedup = match t {
                T_ADD_DEDUP | T_ADD_TYPED => {
                    Some(c.str()?).filter(|d| !d.is_empty()).map(Into::into)
                }
                _ => None,
            };
            let timestamp = c.u64()?;
            return Ok(Entry::Add(AddMeta {
                key,
                seq,
                priority,
                persistent,
                expires,
                dedup,
                timestamp,
            }));
        }
        T_REMOVE => Entry::Remove { seq: c.u64()? },
        T_BATCH => Entry::Batch { count: c.u32()? },
        T_REDELIVERED => Entry::Redelivered {
            seq: c.u64()?,
            deliveries: c.u32()?,
        },
        T_DELAYED => Entry::Delayed {
            seq: c.u64()?,
            deliveries: c.u32()?,
            until_ms: c.u64()?,
        },
        T_SCHEDULE => Entry::Schedule {
            seq: c.u64()?,
            due: c.u64()?,
            fired: c.u32()?,
        },
        kind @ (T_SUB_ADD | T_SUB_ADD_SELECTOR) => Entry::SubscriptionAdd {
            client_id: c.str()?.to_owned(),
            name: c.str()?.to_owned(),
            topic: c
                .str()?
                .parse()
                .map_err(|_| FormatError::Malformed("invalid topic"))?,
            selector: if kind == T_SUB_ADD_SELECTOR {
                Some(c.str()?.to_owned())
            } else {
                None
            },
        },
        T_SUB_REMOVE => Entry::SubscriptionRemove {
            client_id: c.str()?.to_owned(),
            name: c.str()?.to_owned(),
        },
        T_QUEUE_DECLARED => Entry::QueueDeclared {
            order: c.u64()?,
            queue: get_destination(&mut c)?,
        },
        T_QUEUE_DROPPED => Entry::QueueDropped {
            queue: get_destination(&mut c)?,
        },
        T_CHECKPOINT => Entry::Checkpoint {
            next_seq: c.u64()?,
            at_ms: c.u64()?,
        },
        T_SEAL => {
            let n = c.u32()? as usize;
            let mut segments = Vec::with_capacity(n.min(65_536));
            for _ in 0..n {
                segments.push((c.u64()?, c.u64()?));
            }
            Entry::Seal { segments }
        }
        T_MANIFEST => {
            let sealed = c.u8()? != 0;
            let n = c.u32()? as usize;
            let mut segments = Vec::with_capacity(n.min(65_536));
            for _ in 0..n {
                segments.push(Listed {
                    id: c.u64()?,
                    end: c.u64()?,
                    records: c.u64()?,
                    adds: c.u64()?,
                });
            }
            Entry::Manifest { sealed, segments }
        }
        T_DROPPED => {
            let n = c.u32()? as usize;
            let mut segments = Vec::with_capacity(n.min(65_536));
            for _ in 0..n {
                segments.push(c.u64()?);
            }
            Entry::Dropped { segments }
        }
        T_DUP_IDS => {
            let key = get_key(&mut c)?;
            let n = c.u32()? as usize;
            let mut ids = Vec::with_capacity(n.min(65_536));
            for _ in 0..n {
                ids.push(c.str()?.into());
            }
            Entry::DupIds { key, ids }
        }
        t => return Err(FormatError::UnknownType(t)),
    };
    c.done()?;
    Ok(entry)
}

/// What messages read back together usually have in common: their
/// destination and their id's per-boot prefix. Kept from one decode to the
/// next, so that a batch of loaded messages (a deep queue paging in) shares
/// one copy of each instead of allocating both for every message.
#[derive(Default)]
pub(crate) struct Common {
    destination: Option<Destination>,
    prefix: Option<Arc<str>>,
}

impl Common {
    fn destination(
        &mut self,
        kind: DestinationKind,
        name: &str,
    ) -> Result<Destination, FormatError> {
        if let Some(d) = &self.destination
            && d.kind() == kind
            && d.name() == name
        {
            return Ok(d.clone());
        }
        let d = Destination::new(kind, name)
            .map_err(|_| FormatError::Malformed("invalid destination"))?;
        self.destination = Some(d.clone());
        Ok(d)
    }

    fn prefix(&mut self, prefix: &str) -> Arc<str> {
        match &self.prefix {
            Some(p) if **p == *prefix => p.clone(),
            _ => self.prefix.insert(prefix.into()).clone(),
        }
    }
}

/// [`decode_message_with`], the body copied.
#[cfg(test)]
pub(crate) fn decode_message(
    payload: &[u8],
    common: &mut Common,
) -> Result<(StoreKey, Message), FormatError> {
    decode_message_with(payload, common, Bytes::copy_from_slice)
}

/// Decodes a whole Add payload into the message it holds, sharing what it
/// has in common with the messages decoded before it; `body` makes the body
/// from its bytes in `payload` (a copy, or a slice of the buffer the record
/// was read into). Adds of formats 1 and 2 name their destination by its
/// canonical name and have string headers, which become string properties.
pub(crate) fn decode_message_with(
    payload: &[u8],
    common: &mut Common,
    body: impl FnOnce(&[u8]) -> Bytes,
) -> Result<(StoreKey, Message), FormatError> {
    let mut c = Cursor { b: payload, at: 0 };
    let t = c.u8()?;
    if !matches!(t, T_ADD | T_ADD_DEDUP | T_ADD_TYPED) {
        return Err(FormatError::Malformed("not an Add record"));
    }
    let typed = t == T_ADD_TYPED;
    let key = get_key(&mut c)?;
    let seq = c.u64()?;
    let priority = c.u8()?;
    let persistent = c.u8()? != 0;
    let expires = c.u64()?;
    if t != T_ADD {
        c.str()?;
    }
    let timestamp = c.u64()?;
    let destination = if typed {
        let kind = match c.u8()? {
            DEST_QUEUE => DestinationKind::Queue,
            DEST_TOPIC => DestinationKind::Topic,
            DEST_TEMP_QUEUE => DestinationKind::TempQueue,
            DEST_TEMP_TOPIC => DestinationKind::TempTopic,
            _ => return Err(FormatError::Malformed("unknown destination kind")),
        };
        common.destination(kind, c.str()?)?
    } else {
        c.str()?
            .parse()
            .map_err(|_| FormatError::Malformed("invalid destination"))?
    };
    let prefix = common.prefix(c.str()?);
    let n = c.u64()?;
    let count = c.u32()? as usize;
    let mut properties = Vec::with_capacity(count.min(1024));
    for _ in 0..count {
        let name = c.str()?.to_owned();
        let value = if typed {
            get_value(&mut c)?
        } else {
            Value::String(c.str()?.to_owned())
        };
        properties.push((name, value));
    }
    let body_len = c.u32()? as usize;
    let body = body(c.take(body_len)?);
    c.done()?;
    Ok((
        key,
        Message {
            seq,
            id: MessageId { prefix, n },
            destination,
            properties: Properties::from(properties),
            body,
            persistent,
            priority,
            expires,
            timestamp,
            charge: crate::memory::Charge::none(),
        },
    ))
}

fn get_value(c: &mut Cursor<'_>) -> Result<Value, FormatError> {
    Ok(match c.u8()? {
        V_NULL => Value::Null,
        V_BOOL => match c.u8()? {
            0 => Value::Bool(false),
            1 => Value::Bool(true),
            _ => return Err(FormatError::Malformed("invalid boolean")),
        },
        V_I8 => Value::I8(i8::from_le_bytes([c.u8()?])),
        V_I16 => Value::I16(c.u16()? as i16),
        V_I32 => Value::I32(c.u32()? as i32),
        V_I64 => Value::I64(c.u64()? as i64),
        V_F32 => Value::F32(f32::from_bits(c.u32()?)),
        V_F64 => Value::F64(f64::from_bits(c.u64()?)),
        V_STRING => Value::String(c.str()?.to_owned()),
        V_BYTES => {
            let n = c.u32()? as usize;
            Value::Bytes(Bytes::copy_from_slice(c.take(n)?))
        }
        _ => return Err(FormatError::Malformed("unknown property type")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A message with string properties only, as formats 1 and 2 held.
    fn message(seq: u64) -> Message {
        Message {
            seq,
            id: MessageId {
                prefix: "ID:b-1-".into(),
                n: seq,
            },
            destination: Destination::queue("orders"),
            properties: Properties::from(vec![
                ("k".into(), Value::from("v:1\n")),
                ("é".into(), Value::from("")),
            ]),
            body: Bytes::from_static(b"body\0with nul"),
            persistent: true,
            priority: 7,
            expires: 123,
            timestamp: 456,
            charge: crate::memory::Charge::none(),
        }
    }

    fn frames(buf: &[u8]) -> Vec<Entry> {
        let mut out = Vec::new();
        let mut at = 0;
        while let Frame::Record { len } = Frame::at(&buf[at..]) {
            out.push(decode(&buf[at + FRAME_LEN..at + FRAME_LEN + len]).unwrap());
            at += FRAME_LEN + len;
        }
        out
    }

    #[test]
    fn header_round_trip_and_damage() {
        let h = SegmentHeader::new(7, 3, 99, 5);
        let mut bytes = h.encode();
        assert_eq!(SegmentHeader::decode(&bytes), Ok(h));
        assert_eq!((h.data_start(), h.has_stamp()), (HEADER_LEN, true));
        bytes[20] ^= 1;
        assert_eq!(
            SegmentHeader::decode(&bytes),
            Err(FormatError::HeaderChecksum)
        );
        assert_eq!(SegmentHeader::decode(b"nope"), Err(FormatError::BadMagic));
    }

    #[test]
    fn version_1_headers_are_still_read_and_have_no_stamp() {
        let v1 = SegmentHeader {
            version: 1,
            ..SegmentHeader::new(4, 1, 10, 2)
        };
        let bytes = v1.encode();
        assert_eq!(u32_at(&bytes, 12), 64);
        let back = SegmentHeader::decode(&bytes).unwrap();
        assert_eq!(back, v1);
        assert_eq!((back.data_start(), back.has_stamp()), (FIXED_LEN, false));
        // A header length that does not fit the version is damage.
        let mut bad = bytes;
        bad[12] = 128;
        let crc = crc32c::crc32c(&bad[..60]);
        bad[60..64].copy_from_slice(&crc.to_le_bytes());
        assert_eq!(
            SegmentHeader::decode(&bad),
            Err(FormatError::HeaderLength(128, 1))
        );
        let mut newer = SegmentHeader::new(1, 1, 1, 1).encode();
        newer[8..10].copy_from_slice(&(VERSION + 1).to_le_bytes());
        let crc = crc32c::crc32c(&newer[..60]);
        newer[60..64].copy_from_slice(&crc.to_le_bytes());
        assert_eq!(
            SegmentHeader::decode(&newer),
            Err(FormatError::Version(VERSION + 1))
        );
    }

    #[test]
    fn the_stamp_round_trips_and_damage_to_it_is_detected() {
        let st = Stamp {
            end: 4096,
            records: 12,
            adds: 10,
            rolled: true,
        };
        let bytes = st.encode();
        assert_eq!(Stamp::decode(&bytes), Ok(st));
        for i in 0..STAMP_LEN {
            let mut bad = bytes;
            bad[i] ^= 0x20;
            assert_eq!(Stamp::decode(&bad), Err(FormatError::StampChecksum), "{i}");
        }
        assert_eq!(
            Stamp::decode(&[0u8; STAMP_LEN]),
            Err(FormatError::StampChecksum)
        );
    }

    #[test]
    fn tally_counts_records_and_adds() {
        let mut w = Writer::default();
        w.manifest(false, &[]);
        w.batch(&[
            Record::Add {
                key: StoreKey::Queue("q".into()),
                message: Arc::new(message(1)),
                dedup: None,
            },
            Record::Remove { seq: 1 },
        ]);
        w.dropped(&[3]);
        assert_eq!(tally(&w.buf), (5, 1));
        assert_eq!(tally(&[]), (0, 0));
    }

    #[test]
    fn records_round_trip() {
        let m = Arc::new(message(42));
        let key = StoreKey::Durable {
            client_id: "c".into(),
            name: "s".into(),
        };
        let mut w = Writer::default();
        w.batch(&[
            Record::Add {
                key: key.clone(),
                message: m.clone(),
                dedup: Some("p:1".into()),
            },
            Record::Remove { seq: 41 },
        ]);
        w.record(&Record::Redelivered {
            seq: 42,
            deliveries: 3,
        });
        w.record(&Record::SubscriptionAdd {
            client_id: "c".into(),
            name: "s".into(),
            topic: Destination::topic("t"),
            selector: Some("a > 1".into()),
        });
        w.record(&Record::SubscriptionRemove {
            client_id: "c".into(),
            name: "s".into(),
        });
        w.checkpoint(43, 9);
        w.seal(&[(3, 100), (4, 64)]);
        let q = StoreKey::Queue("q".into());
        w.dup_ids(&q, &["a".into(), "b".into()]);
        let listed = [Listed {
            id: 3,
            end: 100,
            records: 2,
            adds: 1,
        }];
        w.manifest(true, &listed);
        w.dropped(&[1, 2]);
        let got = frames(&w.buf);
        assert_eq!(got.len(), 11);
        assert_eq!(
            got[9],
            Entry::Manifest {
                sealed: true,
                segments: listed.to_vec()
            }
        );
        assert_eq!(
            got[10],
            Entry::Dropped {
                segments: vec![1, 2]
            }
        );
        assert_eq!(
            got[8],
            Entry::DupIds {
                key: q,
                ids: vec!["a".into(), "b".into()]
            }
        );
        assert_eq!(
            got[7],
            Entry::Seal {
                segments: vec![(3, 100), (4, 64)]
            }
        );
        assert_eq!(got[0], Entry::Batch { count: 2 });
        assert_eq!(
            got[1],
            Entry::Add(AddMeta {
                key: key.clone(),
                seq: 42,
                priority: 7,
                persistent: true,
                expires: 123,
                dedup: Some("p:1".into()),
                timestamp: 456,
            })
        );
        assert_eq!(got[2], Entry::Remove { seq: 41 });
        assert_eq!(
            got[3],
            Entry::Redelivered {
                seq: 42,
                deliveries: 3
            }
        );
        assert_eq!(
            got[6],
            Entry::Checkpoint {
                next_seq: 43,
                at_ms: 9
            }
        );
        // The full message comes back from the Add's payload.
        let Frame::Record { .. } = Frame::at(&w.buf) else {
            panic!()
        };
        let start = FRAME_LEN + 5 + FRAME_LEN;
        let Frame::Record { len } = Frame::at(&w.buf[FRAME_LEN + 5..]) else {
            panic!()
        };
        let (k, back) = decode_message(&w.buf[start..start + len], &mut Common::default()).unwrap();
        assert_eq!(k, key);
        assert_eq!(back, *m);
    }

    #[test]
    fn queue_declarations_round_trip_with_their_place() {
        let queue = Destination::queue("Consumer.A.VirtualTopic.Orders");
        let temp = Destination::new(DestinationKind::TempQueue, "c1.r").unwrap();
        let mut w = Writer::default();
        let mut places = [7, 0, 8].into_iter();
        let records = w.batch_with_offsets(
            &[
                Record::QueueDeclared {
                    queue: queue.clone(),
                },
                Record::QueueDropped {
                    queue: queue.clone(),
                },
                Record::QueueDeclared {
                    queue: temp.clone(),
                },
            ],
            &mut |_| places.next().unwrap(),
        );
        let want = [
            Entry::QueueDeclared {
                order: 7,
                queue: queue.clone(),
            },
            Entry::QueueDropped {
                queue: queue.clone(),
            },
            Entry::QueueDeclared {
                order: 8,
                queue: temp,
            },
        ];
        // What the writer tells the index is what recovery reads.
        assert_eq!(
            records.into_iter().map(|(_, _, e)| e).collect::<Vec<_>>(),
            want
        );
        let got = frames(&w.buf);
        assert_eq!(got[0], Entry::Batch { count: 3 });
        assert_eq!(got[1..], want);
        // Not messages.
        assert_eq!(tally(&w.buf), (4, 0));
        // The queue is stored by its canonical name.
        let payload = &w.buf[FRAME_LEN + 5 + FRAME_LEN..];
        assert_eq!(payload[0], T_QUEUE_DECLARED);
        assert_eq!(
            &payload[13..13 + "/queue/Consumer.A.VirtualTopic.Orders".len()],
            b"/queue/Consumer.A.VirtualTopic.Orders"
        );
        // A name that is no destination's is malformed.
        let mut bad = vec![T_QUEUE_DROPPED];
        put_str(&mut bad, "orders");
        assert_eq!(
            decode(&bad),
            Err(FormatError::Malformed("invalid destination"))
        );
        let mut short = vec![T_QUEUE_DECLARED];
        short.extend_from_slice(&1u64.to_le_bytes());
        assert!(decode(&short).is_err());
    }

    /// An Add payload as formats 1 (type 1, no id) and 2 (type 9) wrote
    /// it: the destination by its canonical name, string headers.
    fn old_add(t: u8, key: &StoreKey, m: &Message, dedup: &str) -> Vec<u8> {
        let mut b = vec![t];
        put_key(&mut b, key);
        b.extend_from_slice(&m.seq.to_le_bytes());
        b.push(m.priority);
        b.push(u8::from(m.persistent));
        b.extend_from_slice(&m.expires.to_le_bytes());
        if t == T_ADD_DEDUP {
            put_str(&mut b, dedup);
        }
        b.extend_from_slice(&m.timestamp.to_le_bytes());
        put_str(&mut b, &m.destination.to_string());
        put_str(&mut b, &m.id.prefix);
        b.extend_from_slice(&m.id.n.to_le_bytes());
        b.extend_from_slice(&(m.properties.len() as u32).to_le_bytes());
        for (k, v) in m.properties.iter() {
            put_str(&mut b, k);
            put_str(
                &mut b,
                v.as_str()
                    .expect("formats 1 and 2 have string headers only"),
            );
        }
        b.extend_from_slice(&(m.body.len() as u32).to_le_bytes());
        b.extend_from_slice(&m.body);
        b
    }

    #[test]
    fn adds_of_formats_1_and_2_are_still_read() {
        let m = message(7);
        let key = StoreKey::Queue("orders".into());
        for (t, dedup) in [(T_ADD, None), (T_ADD_DEDUP, Some("p:7"))] {
            let old = old_add(t, &key, &m, dedup.unwrap_or_default());
            let Entry::Add(meta) = decode(&old).unwrap() else {
                panic!("not an Add")
            };
            assert_eq!((meta.seq, meta.dedup.as_deref()), (7, dedup));
            assert_eq!(
                decode_message(&old, &mut Common::default()).unwrap(),
                (key.clone(), m.clone())
            );
            assert_eq!(tally(&framed(&old)), (1, 1));
        }
    }

    /// A payload in a record frame.
    fn framed(payload: &[u8]) -> Vec<u8> {
        let mut w = Writer::default();
        w.frame(payload.len(), |b| b.extend_from_slice(payload));
        w.buf
    }

    #[test]
    fn every_property_type_and_destination_kind_round_trips() {
        let values = [
            Value::Null,
            Value::Bool(false),
            Value::Bool(true),
            Value::I8(-1),
            Value::I16(i16::MIN),
            Value::I32(0x1234_5678),
            Value::I64(i64::MIN),
            Value::F32(-0.0),
            Value::F64(f64::NAN),
            Value::F64(f64::INFINITY),
            Value::String("é:\n".into()),
            Value::String(String::new()),
            Value::Bytes(Bytes::from_static(&[0, 255, 10])),
            Value::Bytes(Bytes::new()),
        ];
        let properties: Properties = values
            .iter()
            .enumerate()
            .map(|(i, v)| (format!("p{i}"), v.clone()))
            .collect();
        // One `Common` for all, as a batch of loads: what the messages do
        // not share is never taken from the one before.
        let mut common = Common::default();
        for (i, destination) in [
            Destination::queue("q"),
            Destination::queue("q"),
            Destination::topic("q"),
            Destination::new(DestinationKind::TempQueue, "c1.r").unwrap(),
        ]
        .into_iter()
        .enumerate()
        {
            let mut m = Message {
                destination,
                properties: properties.clone(),
                ..message(9)
            };
            m.id.prefix = format!("ID:b-{}-", i / 2).into();
            let key = StoreKey::Queue("q".into());
            let mut w = Writer::default();
            w.record(&Record::Add {
                key: key.clone(),
                message: Arc::new(m.clone()),
                dedup: Some("id".into()),
            });
            let payload = &w.buf[FRAME_LEN..];
            assert_eq!(payload[0], T_ADD_TYPED);
            assert_eq!(decode_message(payload, &mut common).unwrap(), (key, m));
        }
    }

    #[test]
    fn bad_typed_values_are_errors() {
        let m = Message {
            properties: Properties::from(vec![("b".into(), Value::Bool(true))]),
            ..message(1)
        };
        let mut w = Writer::default();
        w.record(&Record::Add {
            key: StoreKey::Queue("q".into()),
            message: Arc::new(m),
            dedup: None,
        });
        let good = w.buf[FRAME_LEN..].to_vec();
        // The tag and value of the one property come right before the body.
        let body_at = good.len() - 4 - b"body\0with nul".len();
        let (tag, value) = (body_at - 2, body_at - 1);
        let dest_kind = 1 + key_len(&StoreKey::Queue("q".into())) + ADD_FIXED + str_len("");
        for (at, byte, why) in [
            (value, 2, "invalid boolean"),
            (tag, 99, "unknown property type"),
            (dest_kind, 9, "unknown destination kind"),
        ] {
            let mut bad = good.clone();
            bad[at] = byte;
            assert_eq!(
                decode_message(&bad, &mut Common::default()),
                Err(FormatError::Malformed(why)),
                "{why}"
            );
        }
    }

    #[test]
    fn damage_is_detected() {
        let mut w = Writer::default();
        w.record(&Record::Remove { seq: 1 });
        let good = w.buf.clone();
        assert_eq!(Frame::at(&good), Frame::Record { len: 9 });
        for i in 0..good.len() {
            let mut bad = good.clone();
            bad[i] ^= 0x40;
            assert!(
                !matches!(Frame::at(&bad), Frame::Record { .. }),
                "flip at {i} not detected"
            );
            assert_eq!(
                Frame::at(&good[..i]),
                if i == 0 {
                    Frame::End
                } else {
                    Frame::Incomplete
                }
            );
        }
        assert_eq!(Frame::at(&[0u8; 32]), Frame::End);
        let mut huge = good.clone();
        huge[0..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            Frame::at(&huge),
            Frame::Bad(FormatError::Length(_))
        ));
    }

    #[test]
    fn malformed_payloads_are_errors_not_panics() {
        let mut w = Writer::default();
        w.record(&Record::Add {
            key: StoreKey::Queue("q".into()),
            message: Arc::new(message(1)),
            dedup: None,
        });
        let payload = &w.buf[FRAME_LEN..];
        for cut in 0..payload.len() {
            let _ = decode(&payload[..cut]);
            assert!(decode_message(&payload[..cut], &mut Common::default()).is_err());
        }
        assert_eq!(decode(&[99]), Err(FormatError::UnknownType(99)));
    }
}

#[cfg(test)]
mod timing {
    use super::*;

    /// Encode/decode cost of an Add with five string headers (run with
    /// `cargo test --release -p halyard-broker add_codec_timing -- --ignored --nocapture`;
    /// `HALYARD_TIMING_N` sets the iterations, 1,000,000 by default).
    /// "decode (message)" reads it as the journal's reader does, in a batch
    /// of loads; "alone" is a batch of one.
    #[test]
    #[ignore = "a timing loop, not a test"]
    fn add_codec_timing() {
        let m = Arc::new(Message {
            seq: 1,
            id: MessageId {
                prefix: "ID:broker-1a2b3c-1700000000000-".into(),
                n: 123_456,
            },
            destination: Destination::queue("orders.incoming"),
            properties: Properties::from(vec![
                ("persistent".into(), Value::from("true")),
                ("content-type".into(), Value::from("application/json")),
                ("_AMQ_DUPL_ID".into(), Value::from("producer-7f3a:000123")),
                ("correlation-id".into(), Value::from("c-8d2e41")),
                ("reply-to".into(), Value::from("/queue/replies.client-42")),
            ]),
            body: Bytes::from(vec![b'x'; 256]),
            persistent: true,
            priority: 4,
            expires: 0,
            timestamp: 1_700_000_000_000,
            charge: crate::memory::Charge::none(),
        });
        let record = Record::Add {
            key: StoreKey::Queue("orders.incoming".into()),
            message: m,
            dedup: Some("producer-7f3a:000123".into()),
        };
        let n: u32 = std::env::var("HALYARD_TIMING_N")
            .ok()
            .and_then(|n| n.parse().ok())
            .unwrap_or(1_000_000);
        for round in 0..5 {
            let mut w = Writer::default();
            let t = std::time::Instant::now();
            for _ in 0..n {
                w.buf.clear();
                w.record(&record);
                std::hint::black_box(&w.buf);
            }
            let encode = t.elapsed();
            let payload = w.buf[FRAME_LEN..].to_vec();
            let t = std::time::Instant::now();
            for _ in 0..n {
                std::hint::black_box(decode(std::hint::black_box(&payload)).unwrap());
            }
            let meta = t.elapsed();
            let t = std::time::Instant::now();
            for _ in 0..n {
                let alone = decode_message(std::hint::black_box(&payload), &mut Common::default());
                std::hint::black_box(alone.unwrap());
            }
            let alone = t.elapsed();
            let t = std::time::Instant::now();
            let mut common = Common::default();
            for _ in 0..n {
                let batched = decode_message(std::hint::black_box(&payload), &mut common);
                std::hint::black_box(batched.unwrap());
            }
            let batched = t.elapsed();
            let ns = |d: std::time::Duration| d.as_nanos() as f64 / f64::from(n);
            println!(
                "round {round}: encode {:.0} ns, decode (recovery) {:.0} ns, decode (message) {:.0} ns, \
                 decode (message, alone) {:.0} ns, {} bytes",
                ns(encode),
                ns(meta),
                ns(batched),
                ns(alone),
                payload.len()
            );
        }
    }
}
