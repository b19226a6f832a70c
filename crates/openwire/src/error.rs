//! The codec's error type.

use crate::{MAX_VERSION, MIN_VERSION};

/// Why a frame could not be decoded or encoded.
///
/// Decoding errors carry the path of the field that failed (`at`, e.g.
/// `MessageAck.first_message_id/MessageId.producer_id`) so that a broker's
/// log line says what a misbehaving peer sent, not just that it was bad.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A data structure type byte this codec does not know (or, for the
    /// version in use, does not support).
    #[error("unknown OpenWire data structure type {0}")]
    UnknownCommand(u8),
    /// A frame larger than the negotiated maximum; raised from the size
    /// prefix, before the body is buffered.
    #[error("frame of {size} bytes exceeds the maximum frame size of {max} bytes")]
    FrameTooLarge {
        /// The frame's size (announced or encoded).
        size: u64,
        /// The limit in force.
        max: u64,
    },
    /// The bytes do not follow the OpenWire encoding.
    #[error("malformed OpenWire frame at {at}: {reason}")]
    Malformed {
        /// The field path where decoding failed.
        at: String,
        /// What was wrong.
        reason: String,
    },
    /// The frame (whose size the prefix announced) ends inside a field.
    #[error("OpenWire frame ends inside {at}")]
    Truncated {
        /// The field path that was being read.
        at: String,
    },
    /// A wire format version outside what this codec speaks.
    #[error(
        "OpenWire version {0} is not supported (this codec speaks versions {MIN_VERSION} to {MAX_VERSION})"
    )]
    UnsupportedVersion(i32),
    /// The peer's WireFormatInfo does not start with the `ActiveMQ` magic.
    #[error("not an OpenWire peer: the WireFormatInfo magic is not \"ActiveMQ\"")]
    BadMagic,
    /// A value that the wire format cannot carry (a string too long for its
    /// length prefix, an array with more than 32767 elements, ...).
    #[error("cannot encode {at}: {reason}")]
    Unencodable {
        /// The field path.
        at: String,
        /// Why.
        reason: String,
    },
    /// A compressed message body inflates past the allowed size: a
    /// decompression bomb is refused rather than buffered.
    #[error("inflated message body exceeds {max} bytes")]
    InflatedTooLarge {
        /// The limit in force.
        max: usize,
    },
    /// A compressed message body is not valid zlib data.
    #[error("compressed message body is corrupt: {0}")]
    Inflate(String),
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn malformed(reason: impl Into<String>) -> Self {
        Error::Malformed {
            at: String::new(),
            reason: reason.into(),
        }
    }

    pub(crate) fn truncated() -> Self {
        Error::Truncated { at: String::new() }
    }

    pub(crate) fn unencodable(reason: impl Into<String>) -> Self {
        Error::Unencodable {
            at: String::new(),
            reason: reason.into(),
        }
    }

    /// Prefixes the field path: errors bubble up from the innermost field,
    /// so each enclosing structure adds its own `Type.field` in front.
    pub(crate) fn within(mut self, ty: &str, field: &str) -> Self {
        if let Error::Malformed { at, .. }
        | Error::Truncated { at }
        | Error::Unencodable { at, .. } = &mut self
        {
            *at = if at.is_empty() {
                format!("{ty}.{field}")
            } else {
                format!("{ty}.{field}/{at}")
            };
        }
        self
    }

    /// Whether the error only means "more bytes needed" (used when frames
    /// carry no size prefix and the end of the buffer is not the end of the
    /// frame).
    pub(crate) fn is_truncated(&self) -> bool {
        matches!(self, Error::Truncated { .. })
    }
}
