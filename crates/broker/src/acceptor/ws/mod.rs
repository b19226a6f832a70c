//! STOMP over WebSocket (`ws`, and `ws+ssl` for `wss://`): the HTTP
//! Upgrade handshake, then the connection is served by the STOMP head's
//! session, unchanged, through an in-memory pipe. This module only moves
//! bytes between WebSocket messages and that pipe:
//!
//! * in: each text or binary message's bytes go to the session as they
//!   are, so a message may hold one frame, several, part of one or a
//!   heart-beat EOL — the session's parser finds the frames;
//! * out: the session's output is cut back into whole frames
//!   ([`frames::next`]), one per message (browser clients such as stompjs
//!   expect that), text when UTF-8 and binary otherwise.
//!
//! Both directions are bounded: the pipe holds [`PIPE_BYTES`], so a client
//! that sends faster than the session reads waits, and a session whose
//! client does not read is held up in its writes as over TCP.
//!
//! Subprotocols as ActiveMQ: the best of `v12.stomp`, `v11.stomp`,
//! `v10.stomp`, `stomp` the client offers; none offered is plain STOMP. The
//! negotiated name does not bind the STOMP version: CONNECT's
//! `accept-version` does, as on the TCP port.

mod frames;

use std::sync::Arc;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream};
use tokio::sync::oneshot;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::{HeaderValue, StatusCode, header};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message, Utf8Bytes};
use tokio_util::sync::CancellationToken;

use super::Transport;
use crate::service::Service;

/// The STOMP subprotocols, best first (ActiveMQ's order).
const SUBPROTOCOLS: [&str; 4] = ["v12.stomp", "v11.stomp", "v10.stomp", "stomp"];
/// Bytes in flight in each direction between the WebSocket and the
/// session.
const PIPE_BYTES: usize = 64 * 1024;
/// How long the close handshake may take once the session has ended.
const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// What a connection beyond the broker's connection cap is told, before
/// the upgrade: an HTTP 503.
pub(crate) const REFUSAL: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\n\
content-type: text/plain\r\ncontent-length: 69\r\nconnection: close\r\n\r\n\
the broker has reached its connection limit (limits.max-connections)\n";

/// What a connection beyond its address's cap is told: an HTTP 503.
pub(crate) const ADDRESS_REFUSAL: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\n\
content-type: text/plain\r\ncontent-length: 109\r\nconnection: close\r\n\r\n\
this address holds as many connections as the broker allows one address (limits.max-connections-per-address)\n";

/// Runs one WebSocket connection: the upgrade (within
/// `timeouts.connect-ms`), then its STOMP session to the end and the close
/// handshake.
pub(crate) async fn run(service: Arc<Service>, t: Transport, stop: CancellationToken) {
    let config = &service.core.config;
    let limits = config.frame_limits();
    // A message may carry one whole frame: its headers, body and NUL.
    let max_message = limits
        .max_header_bytes
        .saturating_add(limits.max_body_bytes)
        .saturating_add(1);
    let ws_config = WebSocketConfig::default();
    // Room for a batch of frames the bridge feeds before flushing (the
    // library requires more than its write buffer, or it panics).
    let max_write = ws_config
        .write_buffer_size
        .saturating_add(max_message.saturating_mul(2));
    let ws_config = ws_config
        .max_message_size(Some(max_message))
        .max_frame_size(Some(max_message))
        .max_write_buffer_size(max_write);
    let peer = t.peer;
    let deadline = Duration::from_millis(config.timeouts.connect_ms);
    let stream = tokio::io::join(t.read, t.write);
    let handshake =
        tokio_tungstenite::accept_hdr_async_with_config(stream, negotiate, Some(ws_config));
    let ws = tokio::select! {
        r = tokio::time::timeout(deadline, handshake) => match r {
            Ok(Ok(ws)) => ws,
            Ok(Err(e)) => {
                tracing::debug!(%peer, error = %e, "websocket handshake failed");
                return;
            }
            Err(_) => {
                tracing::debug!(%peer, "websocket handshake timed out (timeouts.connect-ms)");
                return;
            }
        },
        _ = stop.cancelled() => return,
    };
    let (session_end, bridge_end) = tokio::io::duplex(PIPE_BYTES);
    let (read, write) = tokio::io::split(session_end);
    let transport = Transport {
        read: Box::new(read),
        write: Box::new(write),
        peer,
        tls_subject: t.tls_subject,
    };
    let session = super::stomp::run(service.clone(), transport, stop.clone());
    tokio::join!(session, bridge(ws, bridge_end, max_message, stop));
}

/// The upgrade's answer: the best STOMP subprotocol offered, none if none
/// was offered; a client that offers only others is refused (400), as
/// there is nothing it could speak here.
#[expect(
    clippy::result_large_err,
    reason = "the signature of tungstenite's handshake callback"
)]
fn negotiate(request: &Request, mut response: Response) -> Result<Response, ErrorResponse> {
    let offered: Vec<&str> = request
        .headers()
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .collect();
    if offered.is_empty() {
        return Ok(response);
    }
    let chosen = SUBPROTOCOLS
        .iter()
        .find(|p| offered.iter().any(|o| o.eq_ignore_ascii_case(p)));
    match chosen {
        Some(p) => {
            response
                .headers_mut()
                .insert(header::SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_static(p));
            Ok(response)
        }
        None => {
            let mut refusal = ErrorResponse::new(Some(format!(
                "none of the offered subprotocols is spoken here; offer one of {}\n",
                SUBPROTOCOLS.join(", ")
            )));
            *refusal.status_mut() = StatusCode::BAD_REQUEST;
            Err(refusal)
        }
    }
}

/// Moves bytes both ways until the session has ended and the close
/// handshake is done (or its grace has run out).
async fn bridge<S>(
    ws: WebSocketStream<S>,
    pipe: DuplexStream,
    max_message: usize,
    stop: CancellationToken,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (mut sink, mut stream) = ws.split();
    let (mut from_session, mut to_session) = tokio::io::split(pipe);
    // Why the client's input was refused, for the close frame.
    let (refused_tx, mut refused_rx) = oneshot::channel::<CloseFrame>();

    let inbound = async move {
        let mut session_open = true;
        let mut refused_tx = Some(refused_tx);
        loop {
            let bytes = match stream.next().await {
                Some(Ok(Message::Text(text))) => text.into(),
                Some(Ok(Message::Binary(bytes))) => bytes,
                // Pings are answered by the library as it reads.
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => continue,
                Some(Ok(Message::Close(_))) | None => break,
                Some(Err(e)) => {
                    if let (Some(frame), Some(tx)) = (refusal(&e, max_message), refused_tx.take()) {
                        let _ = tx.send(frame);
                    }
                    tracing::debug!(error = %e, "websocket read ended");
                    break;
                }
            };
            // Once the session has gone, the rest is read only to see the
            // client's close.
            if session_open && to_session.write_all(&bytes).await.is_err() {
                session_open = false;
            }
        }
        // End of input for the session.
        let _ = to_session.shutdown().await;
    };

    let outbound = async move {
        let mut buf = bytes::BytesMut::with_capacity(8 * 1024);
        let mut ws_open = true;
        loop {
            match from_session.read_buf(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
            if !ws_open {
                // Drained so the session never blocks on a dead client.
                buf.clear();
                continue;
            }
            while let Some(unit) = frames::next(&mut buf, max_message) {
                let message = match Utf8Bytes::try_from(unit.clone()) {
                    Ok(text) => Message::Text(text),
                    Err(_) => Message::Binary(unit),
                };
                if sink.feed(message).await.is_err() {
                    ws_open = false;
                    break;
                }
            }
            if ws_open && sink.flush().await.is_err() {
                ws_open = false;
            }
        }
        if ws_open {
            let frame = refused_rx.try_recv().unwrap_or_else(|_| CloseFrame {
                code: if stop.is_cancelled() {
                    CloseCode::Away
                } else {
                    CloseCode::Normal
                },
                reason: Utf8Bytes::default(),
            });
            let _ = sink.send(Message::Close(Some(frame))).await;
        }
    };

    tokio::pin!(inbound, outbound);
    tokio::select! {
        () = &mut inbound => outbound.await,
        () = &mut outbound => {
            let _ = tokio::time::timeout(CLOSE_GRACE, inbound).await;
        }
    }
}

/// The close frame for input the broker refuses, if it was the client's
/// fault.
fn refusal(e: &WsError, max_message: usize) -> Option<CloseFrame> {
    let (code, reason) = match e {
        WsError::Capacity(_) => (
            CloseCode::Size,
            format!(
                "message larger than {max_message} bytes (limits.max-body-bytes + max-header-bytes)"
            ),
        ),
        WsError::Utf8(_) => (CloseCode::Invalid, "text message is not UTF-8".to_owned()),
        WsError::Protocol(p) => (CloseCode::Protocol, p.to_string()),
        _ => return None,
    };
    Some(CloseFrame {
        code,
        reason: reason.into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn content_length_matches(response: &[u8]) {
        let text = std::str::from_utf8(response).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        let declared: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length: "))
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(declared, body.len(), "{text}");
    }

    #[test]
    fn refusals_are_well_formed_http() {
        content_length_matches(REFUSAL);
        content_length_matches(ADDRESS_REFUSAL);
    }

    fn offer(protocols: &[&str]) -> Result<Option<String>, StatusCode> {
        let mut request = Request::builder();
        for p in protocols {
            request = request.header(header::SEC_WEBSOCKET_PROTOCOL, *p);
        }
        match negotiate(&request.body(()).unwrap(), Response::new(())) {
            Ok(r) => Ok(r
                .headers()
                .get(header::SEC_WEBSOCKET_PROTOCOL)
                .map(|v| v.to_str().unwrap().to_owned())),
            Err(e) => Err(e.status()),
        }
    }

    #[test]
    fn the_best_offered_subprotocol_is_chosen() {
        assert_eq!(offer(&[]), Ok(None));
        assert_eq!(
            offer(&["v10.stomp, v12.stomp, v11.stomp"]),
            Ok(Some("v12.stomp".into()))
        );
        assert_eq!(offer(&["stomp", "v11.stomp"]), Ok(Some("v11.stomp".into())));
        assert_eq!(offer(&["mqtt, stomp"]), Ok(Some("stomp".into())));
        assert_eq!(offer(&["mqtt"]), Err(StatusCode::BAD_REQUEST));
    }
}
