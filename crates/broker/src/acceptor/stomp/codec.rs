//! The session's frame decoder: the STOMP parser, plus an event when a
//! frame starts arriving, so the session can time out peers that send part
//! of a frame and stall (slow-loris) from the moment they start.

use bytes::BytesMut;
use halyard_stomp::{CodecError, Frame, Item, Limits, Parser, Version};
use tokio_util::codec::Decoder;

/// What the session reads.
#[derive(Debug)]
pub(super) enum Inbound {
    Frame(Frame),
    Heartbeat,
    /// The first bytes of a frame have arrived; the rest has not.
    PartialStarted,
}

pub(super) struct SessionCodec {
    parser: Parser,
    partial_reported: bool,
}

impl SessionCodec {
    pub(super) fn new(limits: Limits) -> SessionCodec {
        SessionCodec {
            parser: Parser::new(limits),
            partial_reported: false,
        }
    }

    pub(super) fn set_version(&mut self, version: Version) {
        self.parser.set_version(version);
    }
}

impl Decoder for SessionCodec {
    type Item = Inbound;
    type Error = CodecError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Inbound>, CodecError> {
        match self.parser.parse(src)? {
            Some(Item::Frame(f)) => {
                self.partial_reported = false;
                Ok(Some(Inbound::Frame(f)))
            }
            Some(Item::Heartbeat) => Ok(Some(Inbound::Heartbeat)),
            None if self.parser.in_frame(src) && !self.partial_reported => {
                self.partial_reported = true;
                Ok(Some(Inbound::PartialStarted))
            }
            None => {
                if let Some(more) = self.parser.bytes_needed(src) {
                    src.reserve(more);
                }
                Ok(None)
            }
        }
    }
}
