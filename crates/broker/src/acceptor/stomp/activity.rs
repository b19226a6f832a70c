use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, ReadBuf};
// The runtime's clock, so tests can run heart-beat timeouts in virtual time.
use tokio::time::Instant;

/// Wraps the read half of a connection to remember when bytes last arrived,
/// so heart-beat enforcement counts partial frames as signs of life.
pub(super) struct ActivityReader<R> {
    inner: R,
    last_read: Instant,
}

impl<R> ActivityReader<R> {
    pub(super) fn new(inner: R) -> ActivityReader<R> {
        ActivityReader {
            inner,
            last_read: Instant::now(),
        }
    }

    pub(super) fn last_read(&self) -> Instant {
        self.last_read
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for ActivityReader<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let poll = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(poll, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.last_read = Instant::now();
        }
        poll
    }
}
