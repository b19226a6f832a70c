//! One port, several protocols (ActiveMQ's `auto://`): `[[listeners]]
//! protocol = "auto"` tells STOMP, OpenWire and STOMP over WebSocket apart
//! by a connection's first byte and hands it to that head, first byte
//! included.
//!
//! The first byte is enough: an OpenWire client speaks first with a
//! WireFormatInfo, whose frame starts with its size (`0x00`, frames are far
//! below 16 MiB) or, without a size prefix, its type (`0x01`); a WebSocket
//! client with `GET`; anything else is STOMP (`CONNECT`, `STOMP`, or
//! heart-beat line ends), whose parser answers garbage with an ERROR.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio_util::sync::CancellationToken;

use super::{Transport, openwire, stomp, ws};
use crate::service::Service;

/// What a connection over the connection cap is told: nothing (its
/// protocol is not known yet).
pub(crate) const REFUSAL: &[u8] = b"";

/// The protocol a connection's first byte announces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Detected {
    Stomp,
    OpenWire,
    WebSocket,
}

fn detect(first: u8) -> Detected {
    match first {
        0x00 | 0x01 => Detected::OpenWire,
        b'G' => Detected::WebSocket,
        _ => Detected::Stomp,
    }
}

/// Serves one connection with the head its first byte names.
pub(crate) async fn run(service: Arc<Service>, mut t: Transport, stop: CancellationToken) {
    let within = Duration::from_millis(service.core.config.timeouts.connect_ms);
    let mut first = [0u8; 1];
    let read = tokio::select! {
        _ = stop.cancelled() => return,
        r = tokio::time::timeout(within, t.read.read_exact(&mut first)) => r,
    };
    match read {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => {
            tracing::debug!(peer = %t.peer, error = %e, "closed before saying anything");
            return;
        }
        Err(_) => {
            tracing::info!(peer = %t.peer, within_ms = within.as_millis() as u64,
                "auto listener: the client said nothing; closed");
            return;
        }
    }
    let protocol = detect(first[0]);
    tracing::debug!(peer = %t.peer, ?protocol, "auto listener: protocol detected");
    t.read = replayed(first[0], t.read);
    match protocol {
        Detected::Stomp => stomp::run(service, t, stop).await,
        Detected::OpenWire => openwire::run(service, t, stop).await,
        Detected::WebSocket => ws::run(service, t, stop).await,
    }
}

/// `read` with `first` put back in front of it.
fn replayed(first: u8, read: super::Reader) -> super::Reader {
    let head: Box<dyn AsyncRead + Send + Unpin> = Box::new(std::io::Cursor::new(vec![first]));
    Box::new(head.chain(read))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_bytes_name_the_protocol() {
        assert_eq!(detect(0x00), Detected::OpenWire);
        assert_eq!(detect(0x01), Detected::OpenWire);
        assert_eq!(detect(b'G'), Detected::WebSocket);
        assert_eq!(detect(b'C'), Detected::Stomp);
        assert_eq!(detect(b'S'), Detected::Stomp);
        assert_eq!(detect(b'\n'), Detected::Stomp);
    }
}
