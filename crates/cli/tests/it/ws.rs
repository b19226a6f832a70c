//! STOMP over WebSocket (`ws`, `ws+ssl`) with tokio-tungstenite as the
//! client, against an in-process broker: the subprotocol, whole frames per
//! message out and any cut of frames in, oversized messages, the refusal
//! before the upgrade, the handshake deadline, and `wss://` with a test CA.
//! stompjs under node is the independent client (tests/js, run from
//! tests/python/test_websocket.py).

use std::net::SocketAddr;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Bytes, Error as WsError, Message};

use crate::support::inproc::TestBroker;
use crate::tls::{Pki, raw_tls};

const WAIT: Duration = Duration::from_secs(10);

/// The upgrade over `stream`, offering `protocols` (none: no header);
/// returns the socket and the subprotocol the broker chose.
async fn upgrade<S>(
    stream: S,
    url: &str,
    protocols: &str,
) -> Result<(WebSocketStream<S>, Option<String>), WsError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut request = url.into_client_request().unwrap();
    if !protocols.is_empty() {
        request.headers_mut().insert(
            "sec-websocket-protocol",
            HeaderValue::from_str(protocols).unwrap(),
        );
    }
    let (ws, response) = tokio_tungstenite::client_async(request, stream).await?;
    let chosen = response
        .headers()
        .get("sec-websocket-protocol")
        .map(|v| v.to_str().unwrap().to_owned());
    Ok((ws, chosen))
}

async fn connect(addr: SocketAddr, protocols: &str) -> WebSocketStream<TcpStream> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    upgrade(tcp, &format!("ws://{addr}/"), protocols)
        .await
        .unwrap()
        .0
}

/// The next data message (text or binary), skipping heart-beats and
/// control messages.
async fn next_data<S>(ws: &mut WebSocketStream<S>) -> Message
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    loop {
        let m = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("no message within 10 s")
            .expect("the socket ended")
            .expect("a websocket error");
        match &m {
            Message::Text(t) if t.as_str() == "\n" => continue,
            Message::Text(_) | Message::Binary(_) | Message::Close(_) => return m,
            _ => continue,
        }
    }
}

/// The next data message's text: one whole frame.
async fn next_frame<S>(ws: &mut WebSocketStream<S>) -> String
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    match next_data(ws).await {
        Message::Text(t) => t.as_str().to_owned(),
        other => panic!("expected a text frame, got {other:?}"),
    }
}

async fn send_text<S>(ws: &mut WebSocketStream<S>, text: &str)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    ws.send(Message::text(text)).await.unwrap();
}

/// CONNECT, and the CONNECTED it gets (one message).
async fn stomp_connect<S>(ws: &mut WebSocketStream<S>)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    send_text(ws, "CONNECT\naccept-version:1.2\nhost:/\n\n\0").await;
    let connected = next_frame(ws).await;
    assert!(
        connected.starts_with("CONNECTED\n") && connected.ends_with('\0'),
        "{connected:?}"
    );
    assert!(connected.contains("version:1.2"), "{connected:?}");
}

#[tokio::test]
async fn stomp_over_websocket_sends_and_receives_whole_frames() {
    let b = TestBroker::start("").await;
    let addr = b.ws.expect("the ws listener is on by default");
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (mut ws, chosen) = upgrade(
        tcp,
        &format!("ws://{addr}/stomp"),
        "v10.stomp, v12.stomp, v11.stomp",
    )
    .await
    .unwrap();
    assert_eq!(chosen.as_deref(), Some("v12.stomp"), "the best one offered");
    stomp_connect(&mut ws).await;
    // A heart-beat EOL from the client is fine anywhere between frames.
    send_text(&mut ws, "\n").await;
    send_text(
        &mut ws,
        "SUBSCRIBE\nid:0\ndestination:/queue/ws\nack:client-individual\nreceipt:sub\n\n\0",
    )
    .await;
    let receipt = next_frame(&mut ws).await;
    assert!(
        receipt.starts_with("RECEIPT\n") && receipt.contains("receipt-id:sub"),
        "{receipt:?}"
    );

    // A frame cut in two messages, and two frames in one.
    let frame = "SEND\ndestination:/queue/ws\ncontent-type:text/plain\n\nsplit over two\0";
    let (a, rest) = frame.split_at(17);
    send_text(&mut ws, a).await;
    send_text(&mut ws, rest).await;
    send_text(
        &mut ws,
        "SEND\ndestination:/queue/ws\n\nfirst of two\0SEND\ndestination:/queue/ws\n\nsecond of two\0",
    )
    .await;
    for body in ["split over two", "first of two", "second of two"] {
        let m = next_frame(&mut ws).await;
        assert!(m.starts_with("MESSAGE\n"), "{m:?}");
        assert!(
            m.ends_with(&format!("\n\n{body}\0")),
            "one frame per message: {m:?}"
        );
        let ack = m
            .lines()
            .find_map(|l| l.strip_prefix("ack:"))
            .expect("an ack header");
        send_text(&mut ws, &format!("ACK\nid:{ack}\n\n\0")).await;
    }

    // A body that is not UTF-8 comes as a binary message.
    let mut binary = b"SEND\ndestination:/queue/ws\ncontent-length:3\n\n".to_vec();
    binary.extend_from_slice(&[0xff, 0x00, 0xfe, 0x00]);
    ws.send(Message::Binary(Bytes::from(binary))).await.unwrap();
    match next_data(&mut ws).await {
        Message::Binary(m) => assert!(m.ends_with(&[0xff, 0x00, 0xfe, 0x00]), "{m:?}"),
        other => panic!("expected a binary message, got {other:?}"),
    }

    // Pings are answered.
    ws.send(Message::Ping(Bytes::from_static(b"are you there")))
        .await
        .unwrap();
    let pong = tokio::time::timeout(WAIT, async {
        loop {
            if let Some(Ok(Message::Pong(p))) = ws.next().await {
                return p;
            }
        }
    })
    .await
    .expect("a pong");
    assert_eq!(&pong[..], b"are you there");

    // DISCONNECT: its receipt, then the close handshake from the broker.
    send_text(&mut ws, "DISCONNECT\nreceipt:bye\n\n\0").await;
    assert!(next_frame(&mut ws).await.contains("receipt-id:bye"));
    match next_data(&mut ws).await {
        Message::Close(Some(c)) => assert_eq!(c.code, CloseCode::Normal),
        other => panic!("expected the broker's close, got {other:?}"),
    }
}

#[tokio::test]
async fn subprotocols_as_activemq_offers_none_or_only_unknown_ones() {
    let b = TestBroker::start("").await;
    let addr = b.ws.unwrap();
    // None offered: plain STOMP, no subprotocol in the answer.
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (mut ws, chosen) = upgrade(tcp, &format!("ws://{addr}/"), "").await.unwrap();
    assert_eq!(chosen, None);
    stomp_connect(&mut ws).await;
    // Only something else: refused before the upgrade.
    let tcp = TcpStream::connect(addr).await.unwrap();
    match upgrade(tcp, &format!("ws://{addr}/"), "mqtt").await {
        Err(WsError::Http(r)) => assert_eq!(r.status(), 400),
        other => panic!("expected an HTTP 400, got {:?}", other.map(|r| r.1)),
    }
}

#[tokio::test]
async fn an_oversized_message_is_closed_with_1009() {
    let b = TestBroker::start(
        "[limits]\nmax-body-bytes = 1024\nmax-header-bytes = 1024\nmax-header-line-bytes = 512\n",
    )
    .await;
    let mut ws = connect(b.ws.unwrap(), "v12.stomp").await;
    stomp_connect(&mut ws).await;
    let big = format!("SEND\ndestination:/queue/big\n\n{}\0", "x".repeat(4096));
    // The broker may close before the whole message is written.
    let _ = ws.send(Message::text(big)).await;
    match next_data(&mut ws).await {
        Message::Close(Some(c)) => {
            assert_eq!(c.code, CloseCode::Size);
            assert!(c.reason.contains("2049 bytes"), "{c:?}");
        }
        other => panic!("expected a close, got {other:?}"),
    }
    // The broker serves on.
    let mut again = connect(b.ws.unwrap(), "v12.stomp").await;
    stomp_connect(&mut again).await;
}

#[tokio::test]
async fn a_refusal_before_the_upgrade_is_an_http_503() {
    let b = TestBroker::start("[limits]\nmax-connections-per-address = 1\n").await;
    let addr = b.ws.unwrap();
    let mut first = connect(addr, "v12.stomp").await;
    stomp_connect(&mut first).await;
    let mut second = TcpStream::connect(addr).await.unwrap();
    let mut answer = String::new();
    tokio::time::timeout(WAIT, second.read_to_string(&mut answer))
        .await
        .expect("an answer and a close")
        .unwrap();
    assert!(
        answer.starts_with("HTTP/1.1 503 ") && answer.contains("max-connections-per-address"),
        "{answer:?}"
    );
}

#[tokio::test]
async fn a_silent_peer_is_closed_at_the_handshake_deadline() {
    let b = TestBroker::start("[timeouts]\nconnect-ms = 300\n").await;
    let mut tcp = TcpStream::connect(b.ws.unwrap()).await.unwrap();
    tcp.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
    let mut rest = Vec::new();
    let read = tokio::time::timeout(WAIT, tcp.read_to_end(&mut rest)).await;
    assert!(read.is_ok(), "still open after the handshake deadline");
}

#[tokio::test]
async fn wss_with_the_test_ca() {
    let pki = Pki::new(&["127.0.0.1", "localhost"]);
    let b = TestBroker::start(&format!(
        "[tls]\ncert-file = \"{}\"\nkey-file = \"{}\"\n\
         [[listeners]]\nprotocol = \"stomp\"\naddress = \"127.0.0.1:0\"\n\
         [[listeners]]\nprotocol = \"ws+ssl\"\naddress = \"127.0.0.1:0\"\n",
        pki.path("server.pem").display(),
        pki.path("server.key").display(),
    ))
    .await;
    assert_eq!(b.ws, None, "[[listeners]] without a ws entry has none");
    let addr = b.wss.expect("the ws+ssl listener");
    let (_, tls) = raw_tls(addr, &pki.ca_file()).await.unwrap();
    let (mut ws, chosen) = upgrade(
        tls,
        &format!("wss://127.0.0.1:{}/", addr.port()),
        "v12.stomp",
    )
    .await
    .unwrap();
    assert_eq!(chosen.as_deref(), Some("v12.stomp"));
    stomp_connect(&mut ws).await;
    send_text(&mut ws, "SUBSCRIBE\nid:0\ndestination:/queue/wss\n\n\0").await;
    send_text(
        &mut ws,
        "SEND\ndestination:/queue/wss\nreceipt:r\n\nover tls\0",
    )
    .await;
    let mut got = Vec::new();
    for _ in 0..2 {
        got.push(next_frame(&mut ws).await);
    }
    assert!(got.iter().any(|f| f.starts_with("RECEIPT\n")), "{got:?}");
    assert!(
        got.iter()
            .any(|f| f.starts_with("MESSAGE\n") && f.ends_with("\n\nover tls\0")),
        "{got:?}"
    );
}
