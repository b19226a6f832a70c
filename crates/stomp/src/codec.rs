//! A `tokio_util::codec` adapter over [`Parser`] and [`FrameWriter`].

use bytes::{BufMut, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use crate::{Frame, Item, Limits, ParseError, Parser, Version, encode_frame};

/// Errors from [`StompCodec`]: a protocol violation or an I/O failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    /// The peer sent something that is not valid STOMP.
    #[error(transparent)]
    Parse(#[from] ParseError),
    /// Reading or writing the transport failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Something to send: a frame or a heart-beat.
#[derive(Debug, Clone)]
pub enum Outbound {
    /// A whole frame.
    Frame(Frame),
    /// A single end-of-line.
    Heartbeat,
}

/// A STOMP codec for `tokio_util::codec::Framed`. Call
/// [`StompCodec::set_version`] after negotiation so that later frames are
/// escaped and unescaped for that version.
#[derive(Debug)]
pub struct StompCodec {
    parser: Parser,
}

impl StompCodec {
    /// A codec with the given parsing limits, in 1.0 mode until negotiated.
    pub fn new(limits: Limits) -> StompCodec {
        StompCodec {
            parser: Parser::new(limits),
        }
    }

    /// Sets the negotiated version for both directions.
    pub fn set_version(&mut self, version: Version) {
        self.parser.set_version(version);
    }

    /// The version in effect.
    pub fn version(&self) -> Version {
        self.parser.version()
    }

    /// The underlying parser (e.g. to ask whether a frame is in progress).
    pub fn parser(&self) -> &Parser {
        &self.parser
    }
}

impl Decoder for StompCodec {
    type Item = Item;
    type Error = CodecError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Item>, CodecError> {
        let item = self.parser.parse(src)?;
        if item.is_none()
            && let Some(more) = self.parser.bytes_needed(src)
        {
            src.reserve(more);
        }
        Ok(item)
    }
}

impl Encoder<Outbound> for StompCodec {
    type Error = CodecError;

    fn encode(&mut self, item: Outbound, dst: &mut BytesMut) -> Result<(), CodecError> {
        match item {
            Outbound::Frame(frame) => encode_frame(&frame, self.parser.version(), dst),
            Outbound::Heartbeat => dst.put_u8(b'\n'),
        }
        Ok(())
    }
}

impl Encoder<Frame> for StompCodec {
    type Error = CodecError;

    fn encode(&mut self, frame: Frame, dst: &mut BytesMut) -> Result<(), CodecError> {
        encode_frame(&frame, self.parser.version(), dst);
        Ok(())
    }
}
