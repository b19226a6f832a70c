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
/// Most a connection waits with: after a frame of up to this size, the
/// next read has room for another like it. A producer of 1 KiB messages
/// then reads each SEND with one `recv` instead of two (256 bytes, then
/// the rest), while a connection that goes idle after large frames holds
/// 2 KiB, not the 8 KiB of [`READ_CHUNK`].
const READ_KEEP: usize = 2 * 1024;

pub(super) struct SessionCodec {
    parser: Parser,
    partial_reported: bool,
    /// Bytes of the last frame read (its headers and body).
    last_frame: usize,
}

impl SessionCodec {
    pub(super) fn new(limits: Limits) -> SessionCodec {
        SessionCodec {
            parser: Parser::new(limits),
            partial_reported: false,
            last_frame: 0,
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
        let before = src.len();
        match self.parser.parse(src)? {
            Some(Item::Frame(f)) => {
                self.partial_reported = false;
                self.last_frame = before - src.len();
                Ok(Some(Inbound::Frame(f)))
            }
            Some(Item::Heartbeat) => Ok(Some(Inbound::Heartbeat)),
            None if self.parser.in_frame(src) && !self.partial_reported => {
                self.partial_reported = true;
                Ok(Some(Inbound::PartialStarted))
            }
            None if src.is_empty() && !self.parser.in_frame(src) => {
                // Everything read has been parsed: wait for the next frame
                // with room for one like the last (at most READ_KEEP),
                // giving a large buffer back (once the frames cut from it
                // are gone). With room to spare: a read that fills the
                // buffer leaves the socket marked readable, and the next
                // one only finds it empty (EAGAIN). A connection of small
                // frames, an idle one above all, keeps just READ_IDLE:
                // 10,000 of them are issue #19's budget of 100 MiB.
                let want = if self.last_frame < READ_IDLE {
                    READ_IDLE
                } else {
                    (self.last_frame + READ_IDLE).min(READ_KEEP)
                };
                if src.capacity() > READ_KEEP || src.capacity() < want {
                    *src = BytesMut::with_capacity(want);
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A SEND of `body` bytes, as a peer writes it.
    fn send(body: usize) -> BytesMut {
        let mut b = BytesMut::new();
        b.extend_from_slice(
            format!("SEND\ndestination:/queue/a\ncontent-length:{body}\n\n").as_bytes(),
        );
        b.extend_from_slice(&vec![b'x'; body]);
        b.extend_from_slice(b"\0");
        b
    }

    /// Decodes the one frame in `src`, returning the room left for the
    /// next read.
    fn room_after(codec: &mut SessionCodec, mut src: BytesMut) -> usize {
        assert!(matches!(
            codec.decode(&mut src),
            Ok(Some(Inbound::Frame(_)))
        ));
        assert!(matches!(codec.decode(&mut src), Ok(None)));
        assert!(src.is_empty());
        src.capacity()
    }

    #[test]
    fn the_next_read_has_room_for_a_frame_like_the_last_up_to_2_kib() {
        let mut codec = SessionCodec::new(Limits::default());
        // A small frame: an idle connection's READ_IDLE.
        assert_eq!(room_after(&mut codec, send(10)), READ_IDLE);
        let kib = send(1024);
        let len = kib.len();
        let room = room_after(&mut codec, kib);
        assert!(
            (len + 1..=READ_KEEP).contains(&room),
            "{room} for a {len}-byte frame"
        );
        // A large frame's buffer is given back.
        let room = room_after(&mut codec, send(100 * 1024));
        assert!(room <= READ_KEEP, "{room} kept after a 100 KiB frame");
    }
}
