//! The journal record check (`halyard_broker::fuzz_support`, thin
//! wrappers over `store/journal/format.rs`), shared by the `journal`
//! fuzzer and its AFL target.
//!
//! Every input is used three ways:
//!
//! 1. as a record payload whose checksum matched: decoding it does not
//!    panic; an Add's whole message, when it decodes, agrees with what
//!    recovery reads of it; and a record that decodes, written back by the
//!    journal's own writer, is the same bytes as the input framed (except
//!    the older record types today's writer no longer writes, see
//!    [`LEGACY_TYPES`], flag bytes above 1, which read as true and are
//!    written as 1, and a property name listed twice, which reads as its
//!    first and is written once: then the shorter bytes written must read
//!    back the same and be written back unchanged);
//! 2. framed with its checksum: the frame reads as that record; with any
//!    one bit of it flipped (one chosen per input) it is refused, not read
//!    as some other record; cut short it is incomplete;
//! 3. as the bytes of a segment: reading the header and walking the frames
//!    as recovery does does not panic.
//!
//! No length field may make it allocate more than the driver's
//! `MAX_ALLOCATION` at once (the driver checks).

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};

use halyard_broker::fuzz_support::{
    Decoded, FrameKind, MAX_RECORD_PAYLOAD, RECORD_FRAME_LEN, decode, frame, frame_at,
    seed_records, segment_header,
};

/// Record types of older formats that today's writer writes differently
/// (the untyped Adds of formats 1 and 2 become typed ones) or not at all
/// (the format-1 seal): they decode, but cannot re-encode to themselves.
pub const LEGACY_TYPES: &[u8] = &[1, 8, 9];

/// Checks one input; `Ok` with a signature of the outcome.
pub fn check_journal(data: &[u8]) -> Result<u64, String> {
    let mut h = DefaultHasher::new();
    // 1. As a payload.
    match decode(data) {
        Ok(d) => {
            d.kind().hash(&mut h);
            d.message_error().hash(&mut h);
            if d.add_agrees() == Some(false) {
                return Err(format!(
                    "an Add's message disagrees with what recovery reads: {d:?}"
                ));
            }
            let legacy = data.first().is_some_and(|t| LEGACY_TYPES.contains(t));
            match d.encode() {
                Some(written) if !legacy && !same_record(data, &written, &d) => {
                    return Err(format!(
                        "a decoded {} record is written back differently:\n  read    {:?}\n  written {:?}\n  {d:?}",
                        d.kind(),
                        data,
                        written.get(RECORD_FRAME_LEN..).unwrap_or_default()
                    ));
                }
                Some(_) => {}
                None if !legacy && d.message_error().is_none() => {
                    return Err(format!("a decoded {} record cannot be written", d.kind()));
                }
                None => {}
            }
        }
        Err(e) => ("refused", e).hash(&mut h),
    }
    // 2. Framed.
    if !data.is_empty() && data.len() <= MAX_RECORD_PAYLOAD {
        let mut framed = frame(data);
        if frame_at(&framed) != (FrameKind::Record { len: data.len() }) {
            return Err(format!("a framed payload reads as {:?}", frame_at(&framed)));
        }
        match frame_at(&framed[..framed.len() - 1]) {
            FrameKind::Incomplete => {}
            other => return Err(format!("a frame cut short reads as {other:?}")),
        }
        let bit =
            (data.iter().map(|&b| b as usize).sum::<usize>() + data.len()) % (framed.len() * 8);
        framed[bit / 8] ^= 1 << (bit % 8);
        match frame_at(&framed) {
            FrameKind::Record { .. } => {
                return Err(format!(
                    "a frame with bit {bit} flipped still reads as a record"
                ));
            }
            // A flipped length bit may also make it longer than the bytes
            // there (incomplete), zero or out of range.
            FrameKind::Bad(_) | FrameKind::Incomplete | FrameKind::End => {}
        }
    }
    // 3. As a segment.
    segment_header(data).is_ok().hash(&mut h);
    let mut at = 0;
    let mut records = 0usize;
    while let FrameKind::Record { len } = frame_at(&data[at..]) {
        let end = at + RECORD_FRAME_LEN + len;
        let _ = decode(&data[at + RECORD_FRAME_LEN..end]);
        records += 1;
        at = end;
    }
    records.min(3).hash(&mut h);
    Ok(h.finish())
}

/// Whether `written` (framed) is `payload` framed, but for boolean bytes:
/// the decoder reads any non-zero byte as true (a flag such as an Add's
/// `persistent` or a manifest's `sealed`), the writer writes 1. Such a
/// record, never written by the writer, decodes to the same thing as its
/// re-encoding; any other difference is a finding.
fn same_record(payload: &[u8], written: &[u8], decoded: &Decoded) -> bool {
    let framed = frame(payload);
    if written == framed {
        return true;
    }
    let Some(rewritten) = written.get(RECORD_FRAME_LEN..) else {
        return false;
    };
    let flags_only = rewritten.len() == payload.len()
        && payload
            .iter()
            .zip(rewritten)
            .all(|(&a, &b)| a == b || (a > 1 && b == 1));
    // A message's properties keep the first of each name (the model's
    // rule, as STOMP's): a record listing a name twice reads as one
    // property and is written back shorter. What is written back must then
    // be the canonical form: shorter, read back the same, and written back
    // the same again.
    let canonical = || {
        rewritten.len() < payload.len()
            && decode(rewritten)
                .ok()
                .and_then(|again| again.encode())
                .is_some_and(|again| again == written)
    };
    (flags_only || canonical())
        && decode(rewritten).is_ok_and(|again| format!("{again:?}") == format!("{decoded:?}"))
}

/// Seeds: one record of every type the writer writes, as payloads and as
/// framed bytes, all of them in one buffer, and a segment header.
pub fn journal_seeds() -> Vec<Vec<u8>> {
    let framed = seed_records();
    let mut seeds: Vec<Vec<u8>> = framed
        .iter()
        .filter_map(|f| match frame_at(f) {
            FrameKind::Record { len } if f.len() == RECORD_FRAME_LEN + len => {
                Some(f[RECORD_FRAME_LEN..].to_vec())
            }
            _ => None,
        })
        .collect();
    seeds.extend(framed);
    // The legacy types, hand-made: an untyped Add (format 1) and a seal.
    let mut add = vec![1u8, 1];
    add.extend_from_slice(&1u32.to_le_bytes());
    add.push(b'q');
    add.extend_from_slice(&[0; 26]);
    seeds.push(add);
    let mut seal = vec![8u8];
    seal.extend_from_slice(&1u32.to_le_bytes());
    seal.extend_from_slice(&[7; 16]);
    seeds.push(seal);
    seeds
}

/// Byte strings worth inserting: record types, small lengths, string
/// length prefixes, destination names.
pub const JOURNAL_TOKENS: &[&[u8]] = &[
    &[0, 0, 0, 0],
    &[1, 0, 0, 0],
    &[4, 0, 0, 0],
    &[0xff, 0xff, 0xff, 0xff],
    &[0, 0, 0, 0x40],
    &[13],
    &[16],
    &[11],
    &[12],
    &[10],
    b"/queue/a",
    b"/topic/t",
    b"/remote-temp-queue/x",
    b"\xff\xfe",
    b"HLYDJRNL",
];
