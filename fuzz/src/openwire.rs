//! The OpenWire codec check (`halyard-openwire`), shared by the `openwire`
//! fuzzer and its AFL target.
//!
//! An input is a 2-byte header and the bytes on the wire. The header picks
//! the negotiated format (bit 0 tight, bit 1 cache, bit 2 no size prefix,
//! bits 3-4 the version, 9 to 12) and a chunk size. The check:
//!
//! 1. nothing panics, and no length field sizes an allocation (the driver
//!    watches allocations; the frame limit here is 64 KiB);
//! 2. decoding everything at once and decoding it fed in chunks give the
//!    same commands and the same error (an incomplete frame must leave the
//!    decoder, and its marshalling cache, as it was);
//! 3. the decoded commands, encoded in order by a fresh codec of the same
//!    format and decoded by another, come back equal (the caches of the
//!    two sides stay in step).

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};

use bytes::BytesMut;
use halyard_openwire::{Codec, Command, Error, Negotiated};

/// The decoder's frame limit in the check.
pub const MAX_FRAME: u64 = 64 << 10;

/// The format a header byte selects.
pub fn format(header: u8) -> Negotiated {
    Negotiated {
        version: 9 + i32::from((header >> 3) & 3),
        stack_trace_enabled: true,
        tcp_no_delay_enabled: true,
        cache_enabled: header & 2 != 0,
        // Small, so that eviction and wrapping happen within one input.
        cache_size: 128,
        tight_encoding_enabled: header & 1 != 0,
        size_prefix_disabled: header & 4 != 0,
        max_frame_size: MAX_FRAME,
        max_inactivity_duration: 0,
        max_inactivity_duration_initial_delay: 0,
    }
}

/// Decodes `input` fed `chunk` bytes at a time (0: all at once).
fn decode_all(format: &Negotiated, input: &[u8], chunk: usize) -> (Vec<Command>, Option<String>) {
    let mut codec = Codec::with_format(format.clone());
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    let step = if chunk == 0 {
        input.len().max(1)
    } else {
        chunk
    };
    for part in input.chunks(step) {
        buf.extend_from_slice(part);
        loop {
            match codec.decode(&mut buf) {
                Ok(Some(c)) => out.push(c),
                Ok(None) => break,
                Err(e) => return (out, Some(e.to_string())),
            }
        }
    }
    (out, None)
}

fn variant(e: &Error) -> &'static str {
    match e {
        Error::UnknownCommand(_) => "UnknownCommand",
        Error::FrameTooLarge { .. } => "FrameTooLarge",
        Error::Malformed { .. } => "Malformed",
        Error::Truncated { .. } => "Truncated",
        _ => "other",
    }
}

/// Checks one input; `Ok` with a signature of the outcome.
pub fn check_openwire(data: &[u8]) -> Result<u64, String> {
    let header = data.first().copied().unwrap_or(0);
    let chunk = usize::from(data.get(1).copied().unwrap_or(0) % 32);
    let input = data.get(2..).unwrap_or_default();
    let format = format(header);

    let (whole, whole_err) = decode_all(&format, input, 0);
    let (chunked, chunked_err) = decode_all(&format, input, chunk);
    if whole != chunked || whole_err != chunked_err {
        return Err(format!(
            "chunked ({chunk}) decoding differs: {} commands / {chunked_err:?} vs {} / {whole_err:?}",
            chunked.len(),
            whole.len()
        ));
    }

    // Re-encode (without the frame limit: a Latin-1 string read from the
    // tight form may grow when written back) and decode again.
    let mut wide = format.clone();
    wide.max_frame_size = u64::MAX;
    let mut enc = Codec::with_format(wide.clone());
    let mut dec = Codec::with_format(wide);
    let mut wire = BytesMut::new();
    for c in &whole {
        enc.encode(c, &mut wire)
            .map_err(|e| format!("a decoded command does not encode: {e}: {c:?}"))?;
        let again = dec
            .decode(&mut wire)
            .map_err(|e| format!("a re-encoded command does not decode: {e}: {c:?}"))?;
        if again.as_ref() != Some(c) {
            return Err(format!("re-encoded {c:?}\n  decoded as {again:?}"));
        }
    }

    // The signature: the format, the first command's type, how many
    // distinct types and commands (capped), and how decoding ended.
    let mut h = DefaultHasher::new();
    (header & 0x1f).hash(&mut h);
    whole.first().map(Command::data_type).hash(&mut h);
    let mut types: Vec<u8> = whole.iter().map(Command::data_type).collect();
    types.sort_unstable();
    types.dedup();
    types.len().min(8).hash(&mut h);
    whole.len().min(4).hash(&mut h);
    let mut err_codec = Codec::with_format(format);
    let mut buf = BytesMut::from(input);
    loop {
        match err_codec.decode(&mut buf) {
            Ok(Some(_)) => {}
            Ok(None) => {
                buf.is_empty().hash(&mut h);
                break;
            }
            Err(e) => {
                variant(&e).hash(&mut h);
                break;
            }
        }
    }
    Ok(h.finish())
}

/// Frames of every format: the golden Java frames (`crates/openwire/tests/
/// golden`) and our own encodings of a few commands, each behind the header
/// byte of its format.
pub fn openwire_seeds() -> Vec<Vec<u8>> {
    let mut seeds = Vec::new();
    for (file, header) in [
        (
            include_str!("../../crates/openwire/tests/golden/loose-nocache.hex"),
            0b11000,
        ),
        (
            include_str!("../../crates/openwire/tests/golden/loose-cache.hex"),
            0b11010,
        ),
        (
            include_str!("../../crates/openwire/tests/golden/tight-nocache.hex"),
            0b11001,
        ),
        (
            include_str!("../../crates/openwire/tests/golden/tight-cache.hex"),
            0b11011,
        ),
        (
            include_str!("../../crates/openwire/tests/golden/wireformat.hex"),
            0b11000,
        ),
    ] {
        let mut all = vec![header, 0];
        for line in file.lines() {
            let Some((_, hex)) = line.split_once(' ') else {
                continue;
            };
            let bytes: Vec<u8> = (0..hex.len() / 2)
                .filter_map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok())
                .collect();
            let mut one = vec![header, 7];
            one.extend_from_slice(&bytes);
            seeds.push(one);
            all.extend_from_slice(&bytes);
        }
        seeds.push(all);
    }
    // The same command sequences in the other formats (no size prefix,
    // older versions), encoded by the codec itself.
    let commands: Vec<Command> = {
        let mut dec = Codec::with_format(format(0b11011));
        let mut buf = BytesMut::new();
        for line in include_str!("../../crates/openwire/tests/golden/tight-cache.hex").lines() {
            if let Some((_, hex)) = line.split_once(' ') {
                buf.extend(
                    (0..hex.len() / 2)
                        .filter_map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()),
                );
            }
        }
        std::iter::from_fn(|| dec.decode(&mut buf).ok().flatten()).collect()
    };
    for header in [0b00100u8, 0b01101, 0b10110, 0b00111, 0b11111] {
        let mut enc = Codec::with_format(format(header));
        let mut input = vec![header, 3];
        let mut wire = BytesMut::new();
        for c in &commands {
            if enc.encode(c, &mut wire).is_ok() {
                input.extend_from_slice(&wire.split());
            }
        }
        seeds.push(input);
    }
    seeds
}

/// Byte strings worth inserting: type bytes, boolean-stream prefixes,
/// lengths at their limits, cache indices.
pub const OPENWIRE_TOKENS: &[&[u8]] = &[
    &[0, 0, 0, 0],
    &[0x7f, 0xff, 0xff, 0xff],
    &[0xff, 0xff, 0xff, 0xff],
    &[0x80, 0x00],
    &[0x7f, 0xff],
    &[0xff, 0xff],
    &[0xC0],
    &[0x80],
    &[1],
    &[3],
    &[21],
    &[22],
    &[28],
    &[31],
    &[100],
    &[110],
    &[123],
    b"ActiveMQ",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_seeds_decode_and_pass() {
        for seed in openwire_seeds() {
            check_openwire(&seed).unwrap();
            let (commands, err) = decode_all(&format(seed[0]), &seed[2..], 0);
            assert!(err.is_none() && !commands.is_empty(), "{err:?}");
        }
    }
}
