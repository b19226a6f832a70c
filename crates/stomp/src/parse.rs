//! The incremental frame parser.
//!
//! The parser is a small state machine over a caller-owned `BytesMut`. It
//! remembers how far it has scanned, so a frame that trickles in a byte at a
//! time costs linear, not quadratic, work, and it checks every limit before it
//! asks for more input: the buffer never grows past the limits on account of
//! one frame.

use bytes::{Buf, Bytes, BytesMut};
use memchr::memchr;

use crate::escape::{EscapeError, unescape};
use crate::{Command, Frame, Headers, Version};

/// Size limits enforced while parsing. Exceeding any of them is a fatal
/// protocol error for the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Longest command or header line, in bytes, as sent (escaped).
    pub max_line_bytes: usize,
    /// Most headers in one frame.
    pub max_headers: usize,
    /// Longest header section (command line, headers, blank line).
    pub max_header_bytes: usize,
    /// Longest body.
    pub max_body_bytes: usize,
}

impl Default for Limits {
    /// ActiveMQ's limits for lines, header counts and bodies (its 100 MiB
    /// `maxFrameSize`), and a tighter bound on the whole header section.
    fn default() -> Limits {
        Limits {
            max_line_bytes: 10 * 1024,
            max_headers: 1000,
            max_header_bytes: 256 * 1024,
            max_body_bytes: 100 * 1024 * 1024,
        }
    }
}

/// What the parser found in the input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    /// A complete frame.
    Frame(Frame),
    /// A bare end-of-line between frames: a heart-beat.
    Heartbeat,
}

/// Why the input is not a valid frame. Every variant is fatal for the
/// connection; the `Display` text is meant for the `message` header of the
/// ERROR frame sent back to the peer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseError {
    /// The command line names no STOMP command.
    #[error("unknown command '{0}'")]
    UnknownCommand(String),
    /// A command or header line is longer than allowed.
    #[error("header line longer than {limit} bytes")]
    LineTooLong {
        /// The configured limit.
        limit: usize,
    },
    /// More headers than allowed.
    #[error("more than {limit} headers")]
    TooManyHeaders {
        /// The configured limit.
        limit: usize,
    },
    /// The header section is longer than allowed.
    #[error("header section longer than {limit} bytes")]
    HeadersTooLarge {
        /// The configured limit.
        limit: usize,
    },
    /// The body is longer than allowed.
    #[error("body longer than {limit} bytes")]
    BodyTooLarge {
        /// The configured limit.
        limit: usize,
    },
    /// A command or header line is not valid UTF-8.
    #[error("invalid UTF-8 in header line {line}")]
    InvalidUtf8 {
        /// 0 is the command line, 1 the first header.
        line: usize,
    },
    /// A header line has no colon.
    #[error("header line {line} has no ':' separator")]
    MissingColon {
        /// 1 is the first header.
        line: usize,
    },
    /// An undefined escape sequence in a header (1.1+).
    #[error("undefined escape sequence '{sequence}' in header line {line}")]
    InvalidEscape {
        /// The offending sequence, e.g. `\t`.
        sequence: String,
        /// 1 is the first header.
        line: usize,
    },
    /// `content-length` is not a non-negative integer.
    #[error("invalid content-length '{0}'")]
    InvalidContentLength(String),
    /// The byte after `content-length` body bytes is not NUL.
    #[error("frame body of content-length {content_length} is not followed by a NUL octet")]
    MissingNul {
        /// The declared length.
        content_length: usize,
    },
}

#[derive(Debug)]
enum State {
    /// Scanning the header section. `line_start` is the offset of the first
    /// line not yet scanned; `lines` counts the lines scanned so far.
    Head { line_start: usize, lines: usize },
    /// The header section is parsed; waiting for the body.
    Body {
        command: Command,
        headers: Headers,
        head_len: usize,
        content_length: Option<usize>,
        scanned: usize,
    },
}

const START: State = State::Head {
    line_start: 0,
    lines: 0,
};

/// An incremental STOMP frame parser. Feed it the connection's read buffer;
/// it consumes whole frames (and heart-beat line endings) from the front.
#[derive(Debug)]
pub struct Parser {
    limits: Limits,
    version: Version,
    state: State,
}

impl Parser {
    /// A parser that unescapes as 1.0 until told the negotiated version.
    pub fn new(limits: Limits) -> Parser {
        Parser {
            limits,
            version: Version::V1_0,
            state: START,
        }
    }

    /// Sets the version whose escaping rules apply to later frames.
    pub fn set_version(&mut self, version: Version) {
        self.version = version;
    }

    /// The version in effect.
    pub fn version(&self) -> Version {
        self.version
    }

    /// The limits in effect.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Whether a frame has started but is not complete yet (used to time out
    /// peers that send partial frames and stop).
    pub fn in_frame(&self, buf: &BytesMut) -> bool {
        !buf.is_empty() || matches!(self.state, State::Body { .. })
    }

    /// How many more bytes the current frame needs, when that is known (a
    /// body with `content-length`); lets the caller reserve buffer space.
    pub fn bytes_needed(&self, buf: &BytesMut) -> Option<usize> {
        match self.state {
            State::Body {
                head_len,
                content_length: Some(n),
                ..
            } => Some(
                head_len
                    .saturating_add(n)
                    .saturating_add(1)
                    .saturating_sub(buf.len()),
            ),
            _ => None,
        }
    }

    /// Parses the next item from the front of `buf`, consuming it. Returns
    /// `Ok(None)` when more input is needed. After an error the parser is
    /// reset, but the stream is not resynchronised: close the connection.
    pub fn parse(&mut self, buf: &mut BytesMut) -> Result<Option<Item>, ParseError> {
        let result = self.step(buf);
        if result.is_err() {
            self.state = START;
        }
        result
    }

    fn step(&mut self, buf: &mut BytesMut) -> Result<Option<Item>, ParseError> {
        loop {
            match &mut self.state {
                State::Head { line_start, lines } => {
                    if *lines == 0 && *line_start == 0 {
                        match buf.first() {
                            None => return Ok(None),
                            Some(b'\n') => {
                                buf.advance(1);
                                return Ok(Some(Item::Heartbeat));
                            }
                            Some(b'\r') => match buf.get(1) {
                                None => return Ok(None),
                                Some(b'\n') => {
                                    buf.advance(2);
                                    return Ok(Some(Item::Heartbeat));
                                }
                                Some(_) => {}
                            },
                            Some(_) => {}
                        }
                    }
                    let Some(nl) = memchr(b'\n', &buf[*line_start..]) else {
                        // A trailing '\r' may be the first half of a CRLF
                        // and does not count toward the line.
                        let pending = strip_cr(&buf[*line_start..]).len();
                        if pending > self.limits.max_line_bytes {
                            return Err(ParseError::LineTooLong {
                                limit: self.limits.max_line_bytes,
                            });
                        }
                        if buf.len() > self.limits.max_header_bytes {
                            return Err(ParseError::HeadersTooLarge {
                                limit: self.limits.max_header_bytes,
                            });
                        }
                        return Ok(None);
                    };
                    let end = *line_start + nl;
                    let line_len = strip_cr(&buf[*line_start..end]).len();
                    if line_len > self.limits.max_line_bytes {
                        return Err(ParseError::LineTooLong {
                            limit: self.limits.max_line_bytes,
                        });
                    }
                    if end + 1 > self.limits.max_header_bytes {
                        return Err(ParseError::HeadersTooLarge {
                            limit: self.limits.max_header_bytes,
                        });
                    }
                    if line_len == 0 && *lines > 0 {
                        let head_len = end + 1;
                        let (command, headers) = self.parse_head(&buf[..head_len])?;
                        let content_length = content_length(&headers, &self.limits)?;
                        self.state = State::Body {
                            command,
                            headers,
                            head_len,
                            content_length,
                            scanned: 0,
                        };
                        continue;
                    }
                    *lines += 1;
                    if *lines > self.limits.max_headers.saturating_add(1) {
                        return Err(ParseError::TooManyHeaders {
                            limit: self.limits.max_headers,
                        });
                    }
                    *line_start = end + 1;
                }
                State::Body {
                    head_len,
                    content_length,
                    scanned,
                    ..
                } => {
                    let head_len = *head_len;
                    let body_end = match *content_length {
                        Some(n) => {
                            if buf.len() < head_len.saturating_add(n).saturating_add(1) {
                                return Ok(None);
                            }
                            if buf[head_len + n] != 0 {
                                return Err(ParseError::MissingNul { content_length: n });
                            }
                            head_len + n
                        }
                        None => match memchr(0, &buf[head_len + *scanned..]) {
                            Some(i) => head_len + *scanned + i,
                            None => {
                                *scanned = buf.len() - head_len;
                                if *scanned > self.limits.max_body_bytes {
                                    return Err(ParseError::BodyTooLarge {
                                        limit: self.limits.max_body_bytes,
                                    });
                                }
                                return Ok(None);
                            }
                        },
                    };
                    if body_end - head_len > self.limits.max_body_bytes {
                        return Err(ParseError::BodyTooLarge {
                            limit: self.limits.max_body_bytes,
                        });
                    }
                    let State::Body {
                        command, headers, ..
                    } = std::mem::replace(&mut self.state, START)
                    else {
                        unreachable!("state checked by the enclosing match")
                    };
                    let body = take_body(buf, head_len, body_end);
                    return Ok(Some(Item::Frame(Frame {
                        command,
                        headers,
                        body,
                    })));
                }
            }
        }
    }

    fn parse_head(&self, head: &[u8]) -> Result<(Command, Headers), ParseError> {
        let mut lines = head.split(|&b| b == b'\n').map(strip_cr);
        let command_line = lines.next().unwrap_or_default();
        let command = Command::parse(command_line).ok_or_else(|| {
            // Shown in an ERROR header: escape control characters so a NUL
            // from the peer cannot end up inside the header.
            let shown: String = String::from_utf8_lossy(command_line)
                .chars()
                .take(64)
                .collect::<String>()
                .escape_debug()
                .to_string();
            ParseError::UnknownCommand(shown)
        })?;
        let escaped = self.version.escapes() && command.escapes_headers();
        let mut headers = Headers::with_capacity(8);
        for (i, line) in lines.enumerate() {
            let n = i + 1;
            if line.is_empty() {
                break;
            }
            let line =
                std::str::from_utf8(line).map_err(|_| ParseError::InvalidUtf8 { line: n })?;
            let (k, v) = line
                .split_once(':')
                .ok_or(ParseError::MissingColon { line: n })?;
            if escaped {
                let bad = |e: EscapeError| ParseError::InvalidEscape {
                    sequence: e.sequence,
                    line: n,
                };
                let k = unescape(k, self.version).map_err(bad)?.into_owned();
                let v = unescape(v, self.version).map_err(bad)?.into_owned();
                headers.push(k, v);
            } else {
                headers.push(k, v);
            }
        }
        Ok((command, headers))
    }
}

/// Bodies at least this large, filling at least half of the read buffer,
/// are taken out of it without a copy.
const TAKE_BODY: usize = 256 * 1024;
/// A read buffer grown past this (a large frame went through) is given
/// back once the frame is parsed, so that one large frame does not pin
/// its size for the connection's life.
const KEEP_CAPACITY: usize = 4 * 1024 * 1024;
/// Room a restarted read buffer gets beyond the bytes it takes over.
const RESTART_CAPACITY: usize = 8 * 1024;

/// Takes the body of the frame that ends at `body_end` (its NUL) out of
/// `buf`, and consumes the frame.
///
/// A small body is copied: a slice would pin the whole read buffer for as
/// long as the message sits in a queue. A large one that fills most of the
/// buffer is taken with the buffer's memory instead (there is little else
/// in it), and the connection goes on with a fresh buffer holding what
/// followed the frame; so a large body is never held twice, and the read
/// buffer does not stay large.
fn take_body(buf: &mut BytesMut, head_len: usize, body_end: usize) -> Bytes {
    let len = body_end - head_len;
    let capacity = buf.capacity();
    let frame_end = body_end + 1;
    if len >= TAKE_BODY && len.saturating_mul(2) >= capacity {
        let mut frame = restart(buf, frame_end);
        frame.truncate(body_end);
        frame.advance(head_len);
        return frame.freeze();
    }
    let body = Bytes::copy_from_slice(&buf[head_len..body_end]);
    if capacity > KEEP_CAPACITY && buf.len() - frame_end <= capacity / 4 {
        restart(buf, frame_end);
    } else {
        buf.advance(frame_end);
    }
    body
}

/// Replaces `buf` with a small buffer holding `buf[from..]`; returns the
/// old one.
fn restart(buf: &mut BytesMut, from: usize) -> BytesMut {
    let rest = &buf[from..];
    let mut fresh = BytesMut::with_capacity(rest.len() + RESTART_CAPACITY);
    fresh.extend_from_slice(rest);
    std::mem::replace(buf, fresh)
}

fn strip_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

fn content_length(headers: &Headers, limits: &Limits) -> Result<Option<usize>, ParseError> {
    let Some(raw) = headers.get("content-length") else {
        return Ok(None);
    };
    let trimmed = raw.trim();
    if trimmed.is_empty() || !trimmed.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ParseError::InvalidContentLength(
            raw.chars().take(32).collect(),
        ));
    }
    match trimmed.parse::<usize>() {
        Ok(n) if n <= limits.max_body_bytes => Ok(Some(n)),
        _ => Err(ParseError::BodyTooLarge {
            limit: limits.max_body_bytes,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_all(input: &[u8], version: Version) -> Result<Vec<Item>, ParseError> {
        let mut p = Parser::new(Limits::default());
        p.set_version(version);
        let mut buf = BytesMut::from(input);
        let mut out = Vec::new();
        while let Some(item) = p.parse(&mut buf)? {
            out.push(item);
        }
        assert!(buf.is_empty(), "unconsumed input: {buf:?}");
        Ok(out)
    }

    fn one(input: &[u8], version: Version) -> Frame {
        match parse_all(input, version).unwrap().as_slice() {
            [Item::Frame(f)] => f.clone(),
            other => panic!("expected one frame, got {other:?}"),
        }
    }

    #[test]
    fn simple_frame() {
        let f = one(b"SEND\ndestination:/queue/a\n\nhello\0", Version::V1_2);
        assert_eq!(f.command, Command::Send);
        assert_eq!(f.headers.get("destination"), Some("/queue/a"));
        assert_eq!(&f.body[..], b"hello");
    }

    #[test]
    fn crlf_line_endings_and_heartbeats() {
        let items = parse_all(
            b"\r\n\nSEND\r\ndestination:/queue/a\r\n\r\nx\0\n\r\n",
            Version::V1_2,
        )
        .unwrap();
        assert_eq!(items.len(), 5);
        assert_eq!(items[0], Item::Heartbeat);
        assert_eq!(items[1], Item::Heartbeat);
        let Item::Frame(f) = &items[2] else { panic!() };
        assert_eq!(f.headers.get("destination"), Some("/queue/a"));
        assert_eq!(items[3], Item::Heartbeat);
        assert_eq!(items[4], Item::Heartbeat);
    }

    #[test]
    fn content_length_body_with_nuls() {
        let f = one(
            b"SEND\ndestination:/q\ncontent-length:5\n\na\0b\0c\0",
            Version::V1_2,
        );
        assert_eq!(&f.body[..], b"a\0b\0c");
    }

    #[test]
    fn content_length_without_nul_is_error() {
        let e = parse_all(b"SEND\ncontent-length:2\n\nabc\0", Version::V1_2).unwrap_err();
        assert_eq!(e, ParseError::MissingNul { content_length: 2 });
    }

    #[test]
    fn bad_content_length() {
        for cl in ["-1", "abc", "", "1e3", "99999999999999999999999"] {
            let input = format!("SEND\ncontent-length:{cl}\n\n\0");
            assert!(
                parse_all(input.as_bytes(), Version::V1_2).is_err(),
                "{cl} accepted"
            );
        }
    }

    #[test]
    fn repeated_headers_first_wins() {
        let f = one(b"SEND\nfoo:1\nfoo:2\n\n\0", Version::V1_2);
        assert_eq!(f.headers.get("foo"), Some("1"));
        assert_eq!(f.headers.len(), 2);
    }

    #[test]
    fn escaping_depends_on_version_and_command() {
        let f = one(b"SEND\nk\\c1:a\\nb\\\\c\\r\n\n\0", Version::V1_2);
        assert_eq!(f.headers.get("k:1"), Some("a\nb\\c\r"));
        let f = one(b"SEND\nk:a\\nb\n\n\0", Version::V1_0);
        assert_eq!(f.headers.get("k"), Some("a\\nb"));
        let f = one(b"CONNECT\nlogin:a\\nb\n\n\0", Version::V1_2);
        assert_eq!(f.headers.get("login"), Some("a\\nb"));
        let e = parse_all(b"SEND\nk:a\\tb\n\n\0", Version::V1_2).unwrap_err();
        assert!(matches!(e, ParseError::InvalidEscape { line: 1, .. }));
    }

    #[test]
    fn value_may_contain_colons() {
        let f = one(b"SEND\nurl:http://x:1/\n\n\0", Version::V1_0);
        assert_eq!(f.headers.get("url"), Some("http://x:1/"));
    }

    #[test]
    fn malformed_inputs() {
        type Case = (&'static [u8], fn(&ParseError) -> bool);
        let cases: &[Case] = &[
            (
                b"FOO\n\n\0",
                |e| matches!(e, ParseError::UnknownCommand(c) if c == "FOO"),
            ),
            (b"send\n\n\0", |e| {
                matches!(e, ParseError::UnknownCommand(_))
            }),
            (b"SEND\nnocolon\n\n\0", |e| {
                matches!(e, ParseError::MissingColon { line: 1 })
            }),
            (b"SEND\nk:\xff\xfe\n\n\0", |e| {
                matches!(e, ParseError::InvalidUtf8 { line: 1 })
            }),
            (b"\xff\n\n\0", |e| {
                matches!(e, ParseError::UnknownCommand(_))
            }),
        ];
        for (input, check) in cases {
            let e = parse_all(input, Version::V1_2).unwrap_err();
            assert!(check(&e), "{:?} gave {e:?}", String::from_utf8_lossy(input));
        }
    }

    #[test]
    fn limits_are_enforced_before_buffering_more() {
        let limits = Limits {
            max_line_bytes: 16,
            max_headers: 2,
            max_header_bytes: 40,
            max_body_bytes: 8,
        };
        let check = |input: &[u8]| {
            let mut p = Parser::new(limits);
            p.parse(&mut BytesMut::from(input))
        };
        // A line that never ends is refused once it passes the limit.
        assert_eq!(
            check(&[b'S'; 17]).unwrap_err(),
            ParseError::LineTooLong { limit: 16 }
        );
        assert_eq!(check(&[b'S'; 16]).unwrap(), None);
        assert_eq!(
            check(b"SEND\na:1\nb:2\nc:3\n\n\0").unwrap_err(),
            ParseError::TooManyHeaders { limit: 2 }
        );
        assert_eq!(
            check(b"SEND\naaaaaaaaaa:1\nbbbbbbbbbb:2\ncccccccccccc").unwrap_err(),
            ParseError::HeadersTooLarge { limit: 40 }
        );
        assert_eq!(
            check(b"SEND\n\n123456789").unwrap_err(),
            ParseError::BodyTooLarge { limit: 8 }
        );
        assert_eq!(check(b"SEND\n\n12345678").unwrap(), None);
        assert_eq!(
            check(b"SEND\ncontent-length:9\n\n").unwrap_err(),
            ParseError::BodyTooLarge { limit: 8 }
        );
        assert!(matches!(
            check(b"SEND\n\n12345678\0").unwrap(),
            Some(Item::Frame(_))
        ));
    }

    /// Feeds `wire` to a parser the way a framed reader does: reads of at
    /// most `chunk` bytes into the buffer's spare room, reserving what the
    /// parser asks for.
    fn read_like_a_socket(wire: &[u8], chunk: usize) -> (Vec<Item>, BytesMut, Vec<usize>) {
        let mut p = Parser::new(Limits::default());
        p.set_version(Version::V1_2);
        let mut buf = BytesMut::with_capacity(8 * 1024);
        let (mut items, mut starts) = (Vec::new(), Vec::new());
        let mut at = 0;
        while at < wire.len() {
            if buf.capacity() == buf.len() {
                buf.reserve(1);
            }
            let n = chunk.min(buf.capacity() - buf.len()).min(wire.len() - at);
            buf.extend_from_slice(&wire[at..at + n]);
            at += n;
            while let Some(item) = p.parse(&mut buf).unwrap() {
                items.push(item);
            }
            if let Some(more) = p.bytes_needed(&buf) {
                buf.reserve(more);
                starts.push(buf.as_ptr() as usize);
            }
        }
        (items, buf, starts)
    }

    #[test]
    fn a_large_body_is_taken_from_the_read_buffer_without_a_copy() {
        let body: Vec<u8> = (0..3 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
        let mut wire = format!("SEND\ncontent-length:{}\n\n", body.len()).into_bytes();
        let head_len = wire.len();
        wire.extend_from_slice(&body);
        wire.extend_from_slice(b"\0SEND\n\nnext\0");
        let (items, buf, starts) = read_like_a_socket(&wire, 64 * 1024);
        let [Item::Frame(big), Item::Frame(next)] = &items[..] else {
            panic!("{} items", items.len())
        };
        assert_eq!(&big.body[..], &body[..]);
        assert_eq!(&next.body[..], b"next");
        // The body is where the buffer was once it had room for the frame.
        let start = *starts.last().unwrap();
        assert_eq!(big.body.as_ptr() as usize, start + head_len);
        // The read buffer did not stay large.
        assert!(
            buf.is_empty() && buf.capacity() <= 64 * 1024,
            "{}",
            buf.capacity()
        );
    }

    #[test]
    fn a_read_buffer_grown_by_a_frame_is_given_back() {
        // No content-length: the buffer grows by doubling while the body
        // is scanned for its NUL, so it is more than twice the body.
        let body = vec![b'x'; 5 * 1024 * 1024];
        let mut wire = b"SEND\n\n".to_vec();
        wire.extend_from_slice(&body);
        wire.extend_from_slice(b"\0\n");
        let (items, buf, _) = read_like_a_socket(&wire, 64 * 1024);
        assert!(matches!(&items[..], [Item::Frame(f), Item::Heartbeat] if f.body == body));
        assert!(buf.capacity() <= 64 * 1024, "{}", buf.capacity());
    }

    #[test]
    fn byte_at_a_time_gives_the_same_frames() {
        let input: &[u8] =
            b"CONNECT\naccept-version:1.2\n\n\0\nSEND\ncontent-length:3\n\na\0b\0SEND\n\nxyz\0";
        let whole = parse_all(input, Version::V1_2).unwrap();
        let mut p = Parser::new(Limits::default());
        p.set_version(Version::V1_2);
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        for &b in input {
            buf.extend_from_slice(&[b]);
            while let Some(item) = p.parse(&mut buf).unwrap() {
                got.push(item);
            }
        }
        assert_eq!(got, whole);
        assert!(!p.in_frame(&buf));
    }
}
