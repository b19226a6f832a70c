//! Cuts the STOMP session's output into WebSocket messages: one frame, or
//! one heart-beat EOL, per message. Browser STOMP clients (stompjs) read a
//! message as whole frames, while the session writes a byte stream that a
//! pipe hands over in pieces of any size; this finds the boundaries again.
//!
//! The session's encoder gives every frame with a body a `content-length`
//! header and ends its header section with a bare `\n\n`, so a frame ends
//! either `content-length` bytes after its headers or at its first NUL.

use bytes::{Bytes, BytesMut};

/// The next whole frame or heart-beat at the front of `buf`, taken out of
/// it; `None` while it is incomplete. A unit that grows past `max` bytes
/// without completing (it cannot, from the session's encoder) is handed
/// out as it is, so the buffer stays bounded.
pub(super) fn next(buf: &mut BytesMut, max: usize) -> Option<Bytes> {
    match buf.first()? {
        b'\n' => return Some(buf.split_to(1).freeze()),
        b'\r' if buf.get(1) == Some(&b'\n') => return Some(buf.split_to(2).freeze()),
        _ => {}
    }
    match frame_len(buf) {
        Some(len) => Some(buf.split_to(len).freeze()),
        None if buf.len() >= max => Some(buf.split().freeze()),
        None => None,
    }
}

/// The length of the whole frame at the front of `buf` (through its NUL),
/// if it is all there.
fn frame_len(buf: &[u8]) -> Option<usize> {
    let headers_end = find(buf, b"\n\n")?;
    let body_start = headers_end + 2;
    let content_length = buf[..headers_end]
        .split(|&b| b == b'\n')
        .skip(1)
        .find_map(|line| line.strip_prefix(b"content-length:"))
        .and_then(|v| std::str::from_utf8(v).ok()?.trim().parse::<usize>().ok());
    match content_length {
        Some(len) => {
            let end = body_start.checked_add(len)?;
            (buf.len() > end).then_some(end + 1)
        }
        None => buf[body_start.min(buf.len())..]
            .iter()
            .position(|&b| b == 0)
            .map(|nul| body_start + nul + 1),
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(input: &[u8], max: usize) -> (Vec<Vec<u8>>, Vec<u8>) {
        let mut buf = BytesMut::from(input);
        let mut out = Vec::new();
        while let Some(m) = next(&mut buf, max) {
            out.push(m.to_vec());
        }
        (out, buf.to_vec())
    }

    #[test]
    fn splits_frames_and_heartbeats() {
        let input = b"\nCONNECTED\nversion:1.2\n\n\0MESSAGE\ncontent-length:3\n\na\0b\0\r\nRECEIPT\nreceipt-id:7\n\n\0";
        let (out, rest) = all(input, 1 << 20);
        assert_eq!(
            out,
            vec![
                b"\n".to_vec(),
                b"CONNECTED\nversion:1.2\n\n\0".to_vec(),
                b"MESSAGE\ncontent-length:3\n\na\0b\0".to_vec(),
                b"\r\n".to_vec(),
                b"RECEIPT\nreceipt-id:7\n\n\0".to_vec(),
            ]
        );
        assert!(rest.is_empty());
    }

    #[test]
    fn waits_for_the_rest_at_every_cut() {
        let frame = b"MESSAGE\ndestination:/queue/a\ncontent-length:5\n\nhe\0lo\0";
        for cut in 1..frame.len() {
            let mut buf = BytesMut::from(&frame[..cut]);
            assert_eq!(next(&mut buf, 1 << 20), None, "cut at {cut}");
            buf.extend_from_slice(&frame[cut..]);
            assert_eq!(next(&mut buf, 1 << 20).as_deref(), Some(&frame[..]));
            assert!(buf.is_empty());
        }
    }

    #[test]
    fn an_overlong_unit_is_handed_out_rather_than_held() {
        let (out, rest) = all(b"MESSAGE\ncontent-length:100\n\nabc", 16);
        assert_eq!(out.len(), 1);
        assert!(rest.is_empty());
    }

    #[test]
    fn a_bad_content_length_falls_back_to_the_nul() {
        let (out, _) = all(b"ERROR\ncontent-length:x\n\nab\0", 1 << 20);
        assert_eq!(out, vec![b"ERROR\ncontent-length:x\n\nab\0".to_vec()]);
    }
}
