use bytes::{BufMut, BytesMut};

use crate::{Command, Frame, Version, escape::escape_into};

/// Writes one frame directly into an output buffer, escaping headers for the
/// negotiated version. Used for every outgoing frame, so the hot path (a
/// MESSAGE to a subscriber) needs no intermediate [`Frame`] and no per-header
/// allocation.
pub struct FrameWriter<'a> {
    out: &'a mut BytesMut,
    version: Version,
    escapes: bool,
}

impl<'a> FrameWriter<'a> {
    /// Starts a frame: writes the command line.
    pub fn new(out: &'a mut BytesMut, command: Command, version: Version) -> FrameWriter<'a> {
        out.put_slice(command.as_str().as_bytes());
        out.put_u8(b'\n');
        // CONNECT/CONNECTED are never escaped; 1.0 has no escaping, which
        // escape_into handles by sanitising instead.
        let escapes = command.escapes_headers();
        let version = if escapes { version } else { Version::V1_0 };
        FrameWriter {
            out,
            version,
            escapes,
        }
    }

    /// Writes one header.
    pub fn header(&mut self, name: &str, value: &str) -> &mut Self {
        escape_into(self.out, name, self.version, true);
        self.out.put_u8(b':');
        escape_into(self.out, value, self.version, false);
        self.out.put_u8(b'\n');
        self
    }

    /// Writes a header whose value is an integer, without allocating.
    pub fn header_u64(&mut self, name: &str, value: u64) -> &mut Self {
        escape_into(self.out, name, self.version, true);
        self.out.put_u8(b':');
        self.out
            .put_slice(itoa::Buffer::new().format(value).as_bytes());
        self.out.put_u8(b'\n');
        self
    }

    /// Writes a header whose value is given in parts (e.g. an id prefix and
    /// a sequence number), without allocating.
    pub fn header_parts(&mut self, name: &str, prefix: &str, n: u64) -> &mut Self {
        escape_into(self.out, name, self.version, true);
        self.out.put_u8(b':');
        escape_into(self.out, prefix, self.version, false);
        self.out.put_slice(itoa::Buffer::new().format(n).as_bytes());
        self.out.put_u8(b'\n');
        self
    }

    /// Whether this frame's headers are escaped (false for CONNECT,
    /// CONNECTED and for 1.0).
    pub fn escapes(&self) -> bool {
        self.escapes && self.version.escapes()
    }

    /// Ends the headers and writes the body and the terminating NUL. A
    /// non-empty body always gets a `content-length` header, so bodies may
    /// contain NULs.
    pub fn finish(self, body: &[u8]) {
        let out = self.end_headers(body.len());
        out.put_slice(body);
        out.put_u8(0);
    }

    /// Ends the headers of a frame whose body, `body_len` bytes, the caller
    /// writes itself, followed by the terminating NUL: e.g. a large body
    /// sent from where it is rather than copied into the output buffer.
    /// As with [`FrameWriter::finish`], a non-empty body gets a
    /// `content-length` header. Returns the output buffer.
    pub fn end_headers(self, body_len: usize) -> &'a mut BytesMut {
        if body_len > 0 {
            self.out.put_slice(b"content-length:");
            self.out
                .put_slice(itoa::Buffer::new().format(body_len).as_bytes());
            self.out.put_u8(b'\n');
        }
        self.out.put_u8(b'\n');
        self.out
    }
}

/// Encodes a whole [`Frame`]. Any `content-length` header in the frame is
/// ignored and recomputed from the body.
pub fn encode_frame(frame: &Frame, version: Version, out: &mut BytesMut) {
    out.reserve(64 + frame.body.len());
    let mut w = FrameWriter::new(out, frame.command, version);
    for (k, v) in frame.headers.iter() {
        if k != "content-length" {
            w.header(k, v);
        }
    }
    w.finish(&frame.body);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_escaped_frame_with_length() {
        let mut out = BytesMut::new();
        let frame = Frame::new(Command::Message)
            .header("a:b", "x\ny")
            .header("content-length", "999")
            .body(&b"hi\0"[..]);
        encode_frame(&frame, Version::V1_2, &mut out);
        assert_eq!(
            &out[..],
            b"MESSAGE\na\\cb:x\\ny\ncontent-length:3\n\nhi\0\0"
        );
    }

    #[test]
    fn a_body_written_by_the_caller_gives_the_same_frame() {
        let mut whole = BytesMut::new();
        let mut w = FrameWriter::new(&mut whole, Command::Message, Version::V1_2);
        w.header("a", "b");
        w.finish(b"body\0");
        let mut parts = BytesMut::new();
        let mut w = FrameWriter::new(&mut parts, Command::Message, Version::V1_2);
        w.header("a", "b");
        let out = w.end_headers(5);
        out.put_slice(b"body\0");
        out.put_u8(0);
        assert_eq!(whole, parts);
    }

    #[test]
    fn connected_is_never_escaped() {
        let mut out = BytesMut::new();
        let mut w = FrameWriter::new(&mut out, Command::Connected, Version::V1_2);
        w.header("server", "a\\b");
        w.finish(b"");
        assert_eq!(&out[..], b"CONNECTED\nserver:a\\b\n\n\0");
    }

    #[test]
    fn integer_headers() {
        let mut out = BytesMut::new();
        let mut w = FrameWriter::new(&mut out, Command::Receipt, Version::V1_1);
        w.header_u64("n", 42).header_parts("message-id", "ID:x-", 7);
        w.finish(b"");
        assert_eq!(&out[..], b"RECEIPT\nn:42\nmessage-id:ID\\cx-7\n\n\0");
    }
}
