//! The invariants the fuzzers check on `halyard-stomp`, shared by the
//! self-contained mutation fuzzer (`src/main.rs`) and the AFL++ target
//! (`src/bin/afl.rs`).
//!
//! A [`Case`] is an input plus the conditions it is parsed under: a
//! version, small [`Limits`] and the chunk sizes the input arrives in. It
//! serialises to bytes ([`Case::to_bytes`], [`Case::from_bytes`]), so a
//! finding is saved as one file that `--replay` (or the AFL target) reads
//! back, and AFL can mutate the conditions along with the input.
//!
//! [`check_case`] checks:
//!
//! 1. nothing panics (the caller catches or aborts);
//! 2. whenever the parser asks for more input, the buffered part of the
//!    incomplete frame is at most `max_header_bytes + max_body_bytes + 1`,
//!    and `bytes_needed` does not promise more than that;
//! 3. every frame respects the limits, and its `content-length` (or, without
//!    one, has no NUL in its body);
//! 4. chunked and all-at-once parsing agree on the items, on the error
//!    (except which of `LineTooLong` / `HeadersTooLarge` is reported when a
//!    header section breaks both limits) and on the leftover bytes;
//! 5. every frame, re-encoded with `encode_frame` and parsed again, comes
//!    back the same (modulo `content-length`, which the writer recomputes,
//!    and the CR/LF/':' sanitising of unescaped frames).

use std::fmt;

pub mod alloc_watch;
pub mod config;
pub mod driver;
pub mod journal;
pub mod openwire;
pub mod selector;
pub mod url;

/// SplitMix64: small, fast, good enough for mutation choices (both
/// fuzzers' source of randomness).
#[derive(Debug, Clone)]
pub struct Rng(pub u64);

impl Rng {
    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in `0..n` (0 for n = 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }
    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + self.below(hi - lo + 1)
    }
    /// True one time in `one_in`.
    pub fn chance(&mut self, one_in: usize) -> bool {
        self.below(one_in) == 0
    }
}

use bytes::BytesMut;
use halyard_stomp::{
    Command, Frame, Headers, Item, Limits, ParseError, Parser, Version, encode_frame,
};

/// Fixed part of a serialised [`Case`]: version, four limits, chunk count.
pub const CASE_HEADER_LEN: usize = 9;
/// Most chunk sizes a case carries.
pub const MAX_CHUNKS: usize = 15;
/// Limit ranges (kept small so that the limits are actually reached).
pub const MAX_LINE: usize = 256;
/// Largest `max_headers` a case uses.
pub const MAX_HEADERS: usize = 15;
/// Largest `max_header_bytes` a case uses.
pub const MAX_HEADER_BYTES: usize = 1024;
/// Largest `max_body_bytes` a case uses.
pub const MAX_BODY: usize = 1023;

/// One fuzz input and the conditions it is parsed under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Case {
    /// Escaping rules in force.
    pub version: Version,
    /// Parser limits (within the ranges above).
    pub limits: Limits,
    /// Chunk sizes, cycled (1..=255 each); empty means all at once.
    pub chunks: Vec<usize>,
    /// The bytes on the wire.
    pub input: Vec<u8>,
}

impl Case {
    /// Decodes a case; any byte string is a valid case (short ones get
    /// zeros for the missing fields).
    pub fn from_bytes(data: &[u8]) -> Case {
        let byte = |i: usize| data.get(i).copied().unwrap_or(0);
        let word = |i: usize| u16::from_le_bytes([byte(i), byte(i + 1)]) as usize;
        let version = match byte(0) % 3 {
            0 => Version::V1_0,
            1 => Version::V1_1,
            _ => Version::V1_2,
        };
        let limits = Limits {
            max_line_bytes: 1 + word(1) % MAX_LINE,
            max_headers: byte(3) as usize % (MAX_HEADERS + 1),
            max_header_bytes: 1 + word(4) % MAX_HEADER_BYTES,
            max_body_bytes: word(6) % (MAX_BODY + 1),
        };
        let n = byte(8) as usize % (MAX_CHUNKS + 1);
        let chunks = (0..n)
            .map(|i| (byte(CASE_HEADER_LEN + i) as usize).max(1))
            .collect();
        let input = data.get(CASE_HEADER_LEN + n..).unwrap_or_default().to_vec();
        Case {
            version,
            limits,
            chunks,
            input,
        }
    }

    /// Encodes a case so that [`Case::from_bytes`] gives it back (the
    /// fields must be within the ranges above).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(CASE_HEADER_LEN + self.chunks.len() + self.input.len());
        out.push(match self.version {
            Version::V1_0 => 0,
            Version::V1_1 => 1,
            Version::V1_2 => 2,
        });
        let l = &self.limits;
        out.extend_from_slice(&((l.max_line_bytes - 1) as u16).to_le_bytes());
        out.push(l.max_headers as u8);
        out.extend_from_slice(&((l.max_header_bytes - 1) as u16).to_le_bytes());
        out.extend_from_slice(&(l.max_body_bytes as u16).to_le_bytes());
        out.push(self.chunks.len() as u8);
        out.extend(self.chunks.iter().map(|&c| c as u8));
        out.extend_from_slice(&self.input);
        out
    }
}

/// Something the fuzzer found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finding {
    /// An invariant does not hold.
    Violation(String),
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Finding::Violation(s) => write!(f, "invariant violated: {s}"),
        }
    }
}

/// What a case did, for the fuzzer's statistics and corpus feedback.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Summary {
    /// Frames parsed (all at once).
    pub frames: usize,
    /// Heart-beats parsed.
    pub heartbeats: usize,
    /// Frames that carried a `content-length`.
    pub with_length: usize,
    /// Most headers in one frame.
    pub max_headers: usize,
    /// The error's variant, if parsing failed.
    pub error: Option<&'static str>,
    /// Whether the input ended inside a frame.
    pub incomplete: bool,
}

/// The name of an error's variant.
pub fn variant(e: &ParseError) -> &'static str {
    match e {
        ParseError::UnknownCommand(_) => "UnknownCommand",
        ParseError::LineTooLong { .. } => "LineTooLong",
        ParseError::TooManyHeaders { .. } => "TooManyHeaders",
        ParseError::HeadersTooLarge { .. } => "HeadersTooLarge",
        ParseError::BodyTooLarge { .. } => "BodyTooLarge",
        ParseError::InvalidUtf8 { .. } => "InvalidUtf8",
        ParseError::MissingColon { .. } => "MissingColon",
        ParseError::InvalidEscape { .. } => "InvalidEscape",
        ParseError::InvalidContentLength(_) => "InvalidContentLength",
        ParseError::MissingNul { .. } => "MissingNul",
        _ => "other",
    }
}

/// Everything one parser run produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// Items in order.
    pub items: Vec<Item>,
    /// The error that ended the run.
    pub error: Option<ParseError>,
    /// Bytes left in the buffer.
    pub rest: Vec<u8>,
}

fn violation(msg: String) -> Finding {
    Finding::Violation(msg)
}

/// Feeds `input` in `chunks` (cycled; all at once if empty), draining
/// items after each, checking invariants 2 and 3 on the way.
pub fn feed(
    input: &[u8],
    version: Version,
    limits: Limits,
    chunks: &[usize],
) -> Result<Outcome, Finding> {
    let mut parser = Parser::new(limits);
    parser.set_version(version);
    let bound = limits.max_header_bytes + limits.max_body_bytes + 1;
    let mut buf = BytesMut::new();
    let mut items = Vec::new();
    let mut pos = 0;
    let mut next = 0;
    loop {
        loop {
            match parser.parse(&mut buf) {
                Ok(Some(item)) => {
                    check_item(&item, &limits)?;
                    items.push(item);
                }
                Ok(None) => {
                    if buf.len() > bound {
                        return Err(violation(format!(
                            "parser buffered {} bytes of an incomplete frame; limits allow {bound} ({limits:?})",
                            buf.len()
                        )));
                    }
                    if let Some(more) = parser.bytes_needed(&buf)
                        && buf.len() + more > bound
                    {
                        return Err(violation(format!(
                            "bytes_needed = {more} on top of {} buffered; limits allow {bound}",
                            buf.len()
                        )));
                    }
                    break;
                }
                Err(error) => {
                    return Ok(Outcome {
                        items,
                        error: Some(error),
                        rest: buf.to_vec(),
                    });
                }
            }
        }
        if pos == input.len() {
            return Ok(Outcome {
                items,
                error: None,
                rest: buf.to_vec(),
            });
        }
        let n = if chunks.is_empty() {
            input.len() - pos
        } else {
            chunks[next % chunks.len()].clamp(1, input.len() - pos)
        };
        next += 1;
        buf.extend_from_slice(&input[pos..pos + n]);
        pos += n;
    }
}

fn check_item(item: &Item, limits: &Limits) -> Result<(), Finding> {
    let Item::Frame(frame) = item else {
        return Ok(());
    };
    if frame.body.len() > limits.max_body_bytes {
        return Err(violation(format!(
            "body of {} bytes passed max_body_bytes {}",
            frame.body.len(),
            limits.max_body_bytes
        )));
    }
    if frame.headers.len() > limits.max_headers {
        return Err(violation(format!(
            "{} headers passed max_headers {}",
            frame.headers.len(),
            limits.max_headers
        )));
    }
    match frame.headers.get("content-length") {
        Some(cl) if cl.trim().parse::<usize>().ok() != Some(frame.body.len()) => {
            Err(violation(format!(
                "content-length {cl:?} but a body of {} bytes",
                frame.body.len()
            )))
        }
        None if frame.body.contains(&0) => Err(violation(
            "a body without content-length contains a NUL".to_owned(),
        )),
        _ => Ok(()),
    }
}

/// What `encode_frame` followed by parsing should give for `frame`:
/// `content-length` headers dropped and (for a non-empty body) a correct
/// one appended; for unescaped frames (1.0, CONNECT/STOMP/CONNECTED) CR and
/// LF become spaces and ':' in names becomes '_'.
pub fn after_encoding(frame: &Frame, version: Version) -> Frame {
    let escaped = version.escapes() && frame.command.escapes_headers();
    let sanitise = |s: &str, is_name: bool| -> String {
        if escaped {
            return s.to_owned();
        }
        s.chars()
            .map(|c| match c {
                '\n' | '\r' => ' ',
                ':' if is_name => '_',
                c => c,
            })
            .collect()
    };
    let mut headers = Headers::new();
    for (k, v) in frame.headers.iter() {
        if k != "content-length" {
            headers.push(sanitise(k, true), sanitise(v, false));
        }
    }
    if !frame.body.is_empty() {
        headers.push("content-length", frame.body.len().to_string());
    }
    Frame {
        command: frame.command,
        headers,
        body: frame.body.clone(),
    }
}

fn check_reencodes(frame: &Frame, version: Version) -> Result<(), Finding> {
    let mut wire = BytesMut::new();
    encode_frame(frame, version, &mut wire);
    let out = feed(&wire, version, Limits::default(), &[])?;
    let expected = [Item::Frame(after_encoding(frame, version))];
    if out.error.is_some() || !out.rest.is_empty() || out.items[..] != expected[..] {
        return Err(violation(format!(
            "re-encoding {frame:?} as {wire:?} parsed as {out:?}"
        )));
    }
    Ok(())
}

fn head_limit(e: &Option<ParseError>) -> bool {
    matches!(
        e,
        Some(ParseError::LineTooLong { .. } | ParseError::HeadersTooLarge { .. })
    )
}

/// Runs every check on `case`. Panics inside the parser propagate.
pub fn check_case(case: &Case) -> Result<Summary, Finding> {
    let whole = feed(&case.input, case.version, case.limits, &[])?;
    if !case.chunks.is_empty() {
        let chunked = feed(&case.input, case.version, case.limits, &case.chunks)?;
        // Which of two broken header limits is reported may depend on how
        // much has arrived (a known, benign inconsistency): tolerated.
        let same_error = chunked.error == whole.error
            || (head_limit(&chunked.error) && head_limit(&whole.error));
        let same = chunked.items == whole.items
            && same_error
            && (whole.error.is_some() || chunked.rest == whole.rest);
        if !same {
            return Err(violation(format!(
                "chunked parsing differs: chunked {:?} / {:?} after {} items, whole {:?} / {:?} after {} items",
                chunked.error,
                String::from_utf8_lossy(&chunked.rest),
                chunked.items.len(),
                whole.error,
                String::from_utf8_lossy(&whole.rest),
                whole.items.len(),
            )));
        }
    }
    let mut summary = Summary {
        frames: 0,
        heartbeats: 0,
        with_length: 0,
        max_headers: 0,
        error: whole.error.as_ref().map(variant),
        incomplete: whole.error.is_none() && !whole.rest.is_empty(),
    };
    for item in &whole.items {
        match item {
            Item::Heartbeat => summary.heartbeats += 1,
            Item::Frame(frame) => {
                summary.frames += 1;
                summary.with_length += usize::from(frame.headers.get("content-length").is_some());
                summary.max_headers = summary.max_headers.max(frame.headers.len());
                check_reencodes(frame, case.version)?;
            }
        }
    }
    Ok(summary)
}

/// Valid (and a few deliberately broken) inputs to start from.
pub fn seed_inputs() -> Vec<Vec<u8>> {
    let mut seeds: Vec<Vec<u8>> = [
        &b"CONNECT\naccept-version:1.0,1.1,1.2\nhost:localhost\nheart-beat:1000,1000\nlogin:a\\b\n\n\0"[..],
        b"STOMP\r\naccept-version:1.2\r\nhost:h\r\n\r\n\0",
        b"CONNECTED\nversion:1.2\nserver:halyard/0.1\nheart-beat:0,0\n\n\0",
        b"SEND\ndestination:/queue/a\n\nhello\0",
        b"SEND\r\ndestination:/queue/a\r\ncontent-type:text/plain\r\n\r\nhello\0\r\n\n",
        b"SEND\ndestination:/queue/a\ncontent-length:5\n\na\0b\0c\0",
        b"SEND\ncontent-length: 007 \n\nabcdefg\0",
        b"MESSAGE\nsubscription:0\nmessage-id:ID\\cx-1\ndestination:/topic/t\\\\x\nk\\c1:a\\nb\\r\n\nbody\0",
        b"SUBSCRIBE\nid:0\ndestination:/queue/a\nack:client-individual\n\n\0",
        b"UNSUBSCRIBE\nid:0\n\n\0ACK\nid:1\n\n\0NACK\nid:2\n\n\0",
        b"BEGIN\ntransaction:tx1\n\n\0COMMIT\ntransaction:tx1\n\n\0ABORT\ntransaction:tx2\n\n\0",
        b"DISCONNECT\nreceipt:77\n\n\0RECEIPT\nreceipt-id:77\n\n\0",
        b"ERROR\nmessage:bad\ncontent-length:3\n\nx\0y\0",
        b"\n\r\n\n",
        b"SEND\nfoo:1\nfoo:2\nurl:http://x:1/\n\n\0",
        // Broken on purpose: each reaches one error path.
        b"FOO\n\n\0",
        b"SEND\nnocolon\n\n\0",
        b"SEND\nk:\xff\xfe\n\n\0",
        b"SEND\nk:a\\tb\n\n\0",
        b"SEND\ncontent-length:-1\n\n\0",
        b"SEND\ncontent-length:99999999999999999999999\n\n\0",
        b"SEND\ncontent-length:2\n\nabc\0",
    ]
    .iter()
    .map(|s| s.to_vec())
    .collect();

    // Writer output for every command and version, with headers that need
    // escaping and a body with NULs.
    for version in [Version::V1_0, Version::V1_1, Version::V1_2] {
        for (i, command) in Command::ALL.into_iter().enumerate() {
            let frame = Frame::new(command)
                .header("destination", "/queue/a")
                .header("k:e\\y", "v:a\\l\nu\re")
                .header("é", "😀")
                .body(if i % 2 == 0 { &b"b\0dy"[..] } else { &b""[..] });
            let mut out = BytesMut::new();
            encode_frame(&frame, version, &mut out);
            seeds.push(out.to_vec());
        }
    }
    seeds
}

/// [`seed_inputs`] as cases, under default-ish small limits.
pub fn seed_cases() -> Vec<Case> {
    let mut cases = Vec::new();
    for (i, input) in seed_inputs().into_iter().enumerate() {
        let version = match i % 3 {
            0 => Version::V1_0,
            1 => Version::V1_1,
            _ => Version::V1_2,
        };
        cases.push(Case {
            version,
            limits: Limits {
                max_line_bytes: 128,
                max_headers: 8,
                max_header_bytes: 512,
                max_body_bytes: 64,
            },
            chunks: if i % 2 == 0 { vec![] } else { vec![1] },
            input,
        });
    }
    cases
}
