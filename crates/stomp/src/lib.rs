//! STOMP 1.0, 1.1 and 1.2 frames for Halyard: a sans-I/O parser and writer.
//!
//! Nothing in this crate touches a socket. [`Parser`] turns bytes into
//! [`Frame`]s (or heart-beats) incrementally and enforces [`Limits`] *while*
//! it scans, so a peer can never make it buffer more than the limits allow.
//! [`FrameWriter`] writes frames straight into an output buffer, which lets the
//! broker encode a MESSAGE without first building an intermediate [`Frame`].
//! The optional `codec` feature wraps both in a `tokio_util::codec` codec for
//! clients and tests.
//!
//! Escaping follows the negotiated [`Version`]: 1.0 has none, 1.1 escapes
//! `\\`, `\n` and `:`, 1.2 adds `\r`. CONNECT and CONNECTED frames are never
//! escaped, as the specification requires for backwards compatibility.
//!
//! ```
//! use bytes::BytesMut;
//! use halyard_stomp::{Command, Item, Limits, Parser, Version, FrameWriter};
//!
//! let mut out = BytesMut::new();
//! let mut w = FrameWriter::new(&mut out, Command::Send, Version::V1_2);
//! w.header("destination", "/queue/a");
//! w.finish(b"hello");
//!
//! let mut parser = Parser::new(Limits::default());
//! parser.set_version(Version::V1_2);
//! let Some(Item::Frame(frame)) = parser.parse(&mut out).unwrap() else { panic!() };
//! assert_eq!(frame.command, Command::Send);
//! assert_eq!(frame.headers.get("destination"), Some("/queue/a"));
//! assert_eq!(&frame.body[..], b"hello");
//! ```

mod ack;
mod escape;
mod frame;
mod heartbeat;
mod parse;
mod version;
mod write;

#[cfg(feature = "codec")]
mod codec;

pub use ack::{AckMode, AckModeError};
#[cfg(feature = "codec")]
pub use codec::{CodecError, Outbound, StompCodec};
pub use escape::{EscapeError, escape_into, unescape};
pub use frame::{Command, Frame, Headers};
pub use heartbeat::{HeartBeat, HeartBeatError};
pub use parse::{Item, Limits, ParseError, Parser};
pub use version::{Version, VersionError};
pub use write::{FrameWriter, encode_frame};
