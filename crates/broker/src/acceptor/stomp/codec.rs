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

/// Spare room a read gets once a frame has started arriving: reads of
/// this size keep a streaming producer's syscalls few.
const READ_CHUNK: usize = 8 * 1024;
/// Below this much spare room, a partial frame's buffer is grown to
/// [`READ_CHUNK`] before the next read.
const READ_MIN_SPARE: usize = 1024;
/// The buffer an idle connection waits with: room for a small frame (an
/// ACK, a SEND of a short message) in one read, and only that. Thousands
/// of idle connections holding a full [`READ_CHUNK`] each would cost tens
/// of MiB for nothing.
const READ_IDLE: usize = 256;

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
            None if src.is_empty() && !self.parser.in_frame(src) => {
                // Everything read has been parsed: wait for the next frame
                // with a small buffer, giving the large one back (once the
                // frames cut from it are gone).
                if src.capacity() > READ_IDLE {
                    *src = BytesMut::with_capacity(READ_IDLE);
                }
                Ok(None)
            }
            None => {
                let more = self.parser.bytes_needed(src).unwrap_or(0);
                // A frame is arriving: read it in large chunks (the framed
                // reader itself only asks for one byte more, and a buffer
                // that began small would otherwise grow by little).
                let spare = src.capacity() - src.len();
                if spare < more.max(READ_MIN_SPARE) {
                    src.reserve(more.max(READ_CHUNK));
                }
                Ok(None)
            }
        }
    }
}
