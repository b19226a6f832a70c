//! The session's output: frames encoded into a buffer, with large bodies
//! written from the message they belong to instead of copied in.
//!
//! A message's body is shared (`Bytes`) by every subscriber it goes to;
//! copying it into each subscriber's output buffer would hold one more
//! copy per subscriber, outside the memory budget, for as long as that
//! subscriber takes to read it. So a body of [`SHARED_BODY`] bytes or more
//! is queued by reference, and the socket gets header, body and trailer in
//! one vectored write.

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::AsyncWrite;

/// Bodies at least this large are written from the message rather than
/// copied into the output buffer.
pub(super) const SHARED_BODY: usize = 64 * 1024;
/// Pieces handed to one vectored write, at most.
const MAX_SLICES: usize = 64;

/// Output waiting for the socket.
pub(super) struct Out {
    /// Written before `buf`: encoded bytes split off it, and shared
    /// bodies, in order.
    queued: VecDeque<Bytes>,
    queued_len: usize,
    /// Encoded frames, written after `queued`.
    pub(super) buf: BytesMut,
}

impl Out {
    pub(super) fn with_capacity(n: usize) -> Out {
        Out {
            queued: VecDeque::new(),
            queued_len: 0,
            buf: BytesMut::with_capacity(n),
        }
    }

    /// Bytes waiting to be written.
    pub(super) fn len(&self) -> usize {
        self.queued_len + self.buf.len()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Appends `body` without copying it; what `buf` holds so far goes
    /// before it.
    pub(super) fn push_shared(&mut self, body: Bytes) {
        if !self.buf.is_empty() {
            let encoded = self.buf.split().freeze();
            self.queued_len += encoded.len();
            self.queued.push_back(encoded);
        }
        self.queued_len += body.len();
        self.queued.push_back(body);
    }

    /// Writes everything to `w`. Fails with `TimedOut` if `idle` passes
    /// without a byte written: the peer stopped reading (one that reads a
    /// large message slowly is not cut off).
    pub(super) async fn write_to<W>(&mut self, w: &mut W, idle: Duration) -> io::Result<()>
    where
        W: AsyncWrite + Unpin + ?Sized,
    {
        while !self.is_empty() {
            // The slices are made afresh on each poll rather than kept
            // across the await: 64 of them would sit in every idle
            // connection's task (1 KiB of 10,000 connections' 100 MiB).
            let write = std::future::poll_fn(|cx| {
                let mut slices = [IoSlice::new(&[]); MAX_SLICES];
                let mut n = 0;
                let pieces = self.queued.iter().map(|b| &b[..]);
                for piece in pieces.chain([&self.buf[..]]).take(MAX_SLICES) {
                    slices[n] = IoSlice::new(piece);
                    n += 1;
                }
                std::pin::Pin::new(&mut *w).poll_write_vectored(cx, &slices[..n])
            });
            let written = match tokio::time::timeout(idle, write).await {
                Ok(r) => r?,
                Err(_) => {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "peer stopped reading",
                    ));
                }
            };
            if written == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            self.consume(written);
        }
        self.buf.clear();
        Ok(())
    }

    fn consume(&mut self, mut n: usize) {
        while n > 0 {
            let Some(front) = self.queued.front_mut() else {
                self.buf.advance(n);
                return;
            };
            let k = n.min(front.len());
            front.advance(k);
            self.queued_len -= k;
            n -= k;
            if front.is_empty() {
                self.queued.pop_front();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BufMut;
    use tokio::io::AsyncReadExt;

    #[tokio::test]
    async fn shared_bodies_go_out_in_order_between_encoded_bytes() {
        let mut out = Out::with_capacity(16);
        let body = Bytes::from(vec![7u8; 3 * SHARED_BODY]);
        out.buf.put_slice(b"head");
        out.push_shared(body.clone());
        out.buf.put_slice(b"\0tail");
        out.push_shared(Bytes::from_static(b"second"));
        assert_eq!(out.len(), 4 + body.len() + 5 + 6);
        // A pipe smaller than the output: many partial writes.
        let (mut w, mut r) = tokio::io::duplex(1000);
        let reader = tokio::spawn(async move {
            let mut all = Vec::new();
            r.read_to_end(&mut all).await.unwrap();
            all
        });
        out.write_to(&mut w, Duration::from_secs(5)).await.unwrap();
        assert!(out.is_empty());
        drop(w);
        let mut want = b"head".to_vec();
        want.extend_from_slice(&body);
        want.extend_from_slice(b"\0tailsecond");
        assert_eq!(reader.await.unwrap(), want);
    }

    #[tokio::test(start_paused = true)]
    async fn a_peer_that_stops_reading_times_out() {
        let mut out = Out::with_capacity(16);
        out.push_shared(Bytes::from(vec![1u8; 4096]));
        let (mut w, _r) = tokio::io::duplex(1000);
        let e = out
            .write_to(&mut w, Duration::from_secs(30))
            .await
            .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
    }
}
