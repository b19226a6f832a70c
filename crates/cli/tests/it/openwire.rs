//! The OpenWire head against a client of our own codec: what ActiveMQ's
//! JMS client never does on purpose (malformed, oversized or out-of-order
//! frames, old versions, silence) and the refusals it must survive. The
//! real JMS client's behaviour is tested in tests/python/test_openwire_jms.py.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::{BufMut, BytesMut};
use halyard_openwire::{self as ow, Codec, Command};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::security::users;
use crate::support::inproc::TestBroker;
use halyard_testkit::stomp::WAIT;

/// A bare OpenWire client: our codec on a socket.
struct Client {
    tcp: TcpStream,
    codec: Codec,
    buf: BytesMut,
    next_id: i32,
    connection: String,
    /// What arrived while a request waited for its answer, in order.
    pending: std::collections::VecDeque<Command>,
}

impl Client {
    /// Connects and exchanges WireFormatInfo (as `version`), then reads the
    /// broker's BrokerInfo.
    async fn handshake(addr: SocketAddr, version: i32) -> Client {
        let mut c = Client::raw(addr).await;
        let ours = ow::WireFormatOptions {
            version,
            ..ow::WireFormatOptions::default()
        };
        c.send(Command::WireFormatInfo(ours.to_info().unwrap()))
            .await;
        let Command::WireFormatInfo(theirs) = c.recv().await.expect("the broker's WireFormatInfo")
        else {
            panic!("the broker's first frame is not a WireFormatInfo");
        };
        let theirs = ow::WireFormatOptions::from_info(&theirs).unwrap();
        c.codec.renegotiate(ow::negotiate(&ours, &theirs).unwrap());
        match c.recv().await {
            Some(Command::BrokerInfo(_)) => {}
            other => panic!("expected BrokerInfo, got {other:?}"),
        }
        c
    }

    /// Connected, nothing said yet.
    async fn raw(addr: SocketAddr) -> Client {
        Client {
            tcp: TcpStream::connect(addr).await.unwrap(),
            codec: Codec::new(),
            buf: BytesMut::new(),
            next_id: 0,
            connection: format!("ID:test-{}:1", std::process::id()),
            pending: std::collections::VecDeque::new(),
        }
    }

    async fn send(&mut self, cmd: Command) {
        let mut out = BytesMut::new();
        self.codec.encode(&cmd, &mut out).unwrap();
        self.tcp.write_all(&out).await.unwrap();
    }

    /// The next command, or `None` once the broker has closed.
    async fn recv(&mut self) -> Option<Command> {
        if let Some(c) = self.pending.pop_front() {
            return Some(c);
        }
        self.read().await
    }

    /// The next command from the socket.
    async fn read(&mut self) -> Option<Command> {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(c) = self.codec.decode(&mut self.buf).unwrap() {
                return Some(c);
            }
            let n = tokio::time::timeout_at(deadline, self.tcp.read_buf(&mut self.buf))
                .await
                .expect("nothing from the broker in time")
                .unwrap_or(0);
            if n == 0 {
                return None;
            }
        }
    }

    /// Sends `cmd` as a request (its `command_id` and `response_required`
    /// set by `make`) and returns the answer to it; other traffic waits in
    /// `pending` for `recv`.
    async fn request(&mut self, make: impl FnOnce(i32) -> Command) -> Command {
        self.next_id += 1;
        let id = self.next_id;
        self.send(make(id)).await;
        loop {
            match self.read().await {
                Some(Command::Response(r)) if r.correlation_id == id => {
                    return Command::Response(r);
                }
                Some(Command::ExceptionResponse(r)) if r.correlation_id == id => {
                    return Command::ExceptionResponse(r);
                }
                Some(other) => self.pending.push_back(other),
                None => panic!("the broker closed instead of answering request {id}"),
            }
        }
    }

    async fn connect(&mut self, user: Option<&str>, password: Option<&str>) -> Command {
        let connection = self.connection.clone();
        self.request(|id| {
            Command::ConnectionInfo(ow::ConnectionInfo {
                command_id: id,
                response_required: true,
                connection_id: Some(ow::ConnectionId {
                    value: Some(connection.clone()),
                }),
                client_id: Some(format!("{connection}-client")),
                user_name: user.map(str::to_owned),
                password: password.map(str::to_owned),
                ..ow::ConnectionInfo::default()
            })
        })
        .await
    }

    /// A persistent text message to `queue`, answered once stored.
    async fn send_text(&mut self, queue: &str, text: &str) -> Command {
        let connection = self.connection.clone();
        let mut m = ow::Message {
            kind: ow::MessageKind::Text,
            destination: Some(ow::Destination::queue(queue)),
            persistent: true,
            priority: 4,
            ..ow::Message::default()
        };
        m.set_text(Some(text)).unwrap();
        self.request(|id| {
            m.command_id = id;
            m.response_required = true;
            m.producer_id = Some(ow::ProducerId {
                connection_id: Some(connection),
                value: 1,
                session_id: 1,
            });
            m.message_id = Some(ow::MessageId {
                producer_id: m.producer_id.clone(),
                producer_sequence_id: i64::from(id),
                ..ow::MessageId::default()
            });
            Command::Message(m)
        })
        .await
    }

    /// Reads until the broker closes; returns the ConnectionError it sent.
    async fn closed_with_error(&mut self) -> ow::Throwable {
        let mut error = None;
        while let Some(c) = self.recv().await {
            if let Command::ConnectionError(e) = c {
                error = e.exception;
            }
        }
        error.expect("a ConnectionError before the close")
    }
}

fn exception(c: &Command) -> (&str, &str) {
    match c {
        Command::ExceptionResponse(r) => {
            let e = r.exception.as_ref().expect("an exception");
            (
                e.class_name.as_deref().unwrap_or_default(),
                e.message.as_deref().unwrap_or_default(),
            )
        }
        other => panic!("expected an ExceptionResponse, got {other:?}"),
    }
}

#[tokio::test]
async fn a_malformed_frame_closes_only_its_connection() {
    let b = TestBroker::start("").await;
    let addr = b.openwire.unwrap();
    let mut bystander = Client::handshake(addr, 12).await;
    assert!(matches!(
        bystander.connect(None, None).await,
        Command::Response(_)
    ));

    let mut bad = Client::handshake(addr, 12).await;
    // A frame of an unknown data type.
    bad.tcp.write_all(&[0, 0, 0, 3, 0xEE, 1, 2]).await.unwrap();
    let e = bad.closed_with_error().await;
    assert!(
        e.message
            .as_deref()
            .unwrap_or_default()
            .contains("malformed"),
        "{e:?}"
    );

    assert!(matches!(
        bystander.send_text("ow.bystander", "still here").await,
        Command::Response(_)
    ));
}

#[tokio::test]
async fn an_oversized_frame_is_refused_before_its_body_arrives() {
    let b = TestBroker::start("[openwire-options]\nmax-frame-size = 65536\n").await;
    let mut c = Client::handshake(b.openwire.unwrap(), 12).await;
    // A 1 GiB frame is announced; its body never comes.
    let mut head = BytesMut::new();
    head.put_u32(1 << 30);
    head.put_u8(ow::Message::DATA_STRUCTURE_TYPE);
    c.tcp.write_all(&head).await.unwrap();
    let started = Instant::now();
    let e = c.closed_with_error().await;
    assert!(started.elapsed() < WAIT, "refused at once");
    let message = e.message.unwrap_or_default();
    assert!(
        message.contains("65536") || message.contains("large"),
        "{message}"
    );
}

#[tokio::test]
async fn a_version_older_than_9_is_refused_by_name() {
    let b = TestBroker::start("").await;
    let mut c = Client::raw(b.openwire.unwrap()).await;
    let old = ow::WireFormatOptions {
        version: 5,
        ..ow::WireFormatOptions::default()
    };
    c.send(Command::WireFormatInfo(old.to_info().unwrap()))
        .await;
    let e = c.closed_with_error().await;
    assert!(
        e.message.as_deref().unwrap_or_default().contains('5'),
        "names the version: {e:?}"
    );
}

#[tokio::test]
async fn a_client_that_never_sends_connection_info_is_closed() {
    let b = TestBroker::start("[timeouts]\nconnect-ms = 300\n").await;
    let started = Instant::now();
    let mut c = Client::handshake(b.openwire.unwrap(), 12).await;
    let e = c.closed_with_error().await;
    assert!(
        e.message
            .as_deref()
            .unwrap_or_default()
            .contains("no ConnectionInfo"),
        "{e:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn commands_before_connection_info_are_refused() {
    let b = TestBroker::start("").await;
    let mut c = Client::handshake(b.openwire.unwrap(), 12).await;
    c.send(Command::SessionInfo(ow::SessionInfo::default()))
        .await;
    let e = c.closed_with_error().await;
    assert!(
        e.message
            .as_deref()
            .unwrap_or_default()
            .contains("expected ConnectionInfo"),
        "{e:?}"
    );
}

#[tokio::test]
async fn a_wrong_password_is_a_jms_security_exception() {
    let b = TestBroker::start(&users(&[("ann", &["apps"])])).await;
    let mut c = Client::handshake(b.openwire.unwrap(), 12).await;
    let answer = c.connect(Some("ann"), Some("not her password")).await;
    let (class, message) = exception(&answer);
    assert_eq!(class, "javax.jms.JMSSecurityException");
    assert!(message.contains("login failed"), "{message}");
    assert!(c.recv().await.is_none(), "the connection closes");
}

#[tokio::test]
async fn a_denied_send_is_refused_and_the_connection_goes_on() {
    let config = format!(
        "{}[[security.authorization]]\nqueue = \"ow.open.>\"\nread = [\"apps\"]\nwrite = [\"apps\"]\nadmin = [\"apps\"]\n",
        users(&[("ann", &["apps"])])
    );
    let b = TestBroker::start(&config).await;
    let mut c = Client::handshake(b.openwire.unwrap(), 12).await;
    let password = crate::security::password("ann");
    assert!(matches!(
        c.connect(Some("ann"), Some(&password)).await,
        Command::Response(_)
    ));
    let answer = c.send_text("ow.closed", "no").await;
    let (class, message) = exception(&answer);
    assert_eq!(class, "javax.jms.JMSSecurityException");
    assert!(message.contains("write right"), "{message}");
    assert!(
        matches!(c.send_text("ow.open.a", "yes").await, Command::Response(_)),
        "the same connection may still do what it may"
    );
}

#[tokio::test]
async fn xa_transactions_are_refused_clearly() {
    let b = TestBroker::start("").await;
    let mut c = Client::handshake(b.openwire.unwrap(), 12).await;
    assert!(matches!(c.connect(None, None).await, Command::Response(_)));
    let answer = c
        .request(|id| {
            Command::TransactionInfo(ow::TransactionInfo {
                command_id: id,
                response_required: true,
                transaction_id: Some(ow::TransactionId::Xa(ow::XaTransactionId::default())),
                transaction_type: 0,
                ..ow::TransactionInfo::default()
            })
        })
        .await;
    let (class, message) = exception(&answer);
    assert_eq!(class, "java.lang.UnsupportedOperationException");
    assert!(message.contains("XA"), "{message}");
}

#[tokio::test]
async fn a_commit_of_a_transaction_never_begun_rolls_back() {
    // What a client sees when its BEGIN was lost with the old master.
    let b = TestBroker::start("").await;
    let mut c = Client::handshake(b.openwire.unwrap(), 12).await;
    assert!(matches!(c.connect(None, None).await, Command::Response(_)));
    let connection = c.connection.clone();
    let answer = c
        .request(|id| {
            Command::TransactionInfo(ow::TransactionInfo {
                command_id: id,
                response_required: true,
                transaction_id: Some(ow::TransactionId::Local(ow::LocalTransactionId {
                    value: 7,
                    connection_id: Some(ow::ConnectionId {
                        value: Some(connection),
                    }),
                })),
                transaction_type: 2,
                ..ow::TransactionInfo::default()
            })
        })
        .await;
    assert_eq!(
        exception(&answer).0,
        "javax.jms.TransactionRolledBackException"
    );
}

#[tokio::test]
async fn the_auto_listener_tells_the_protocols_apart() {
    let b = TestBroker::start(
        "[[listeners]]\nprotocol = \"stomp\"\naddress = \"127.0.0.1:0\"\n\
         [[listeners]]\nprotocol = \"auto\"\naddress = \"127.0.0.1:0\"\n",
    )
    .await;
    let auto = b.auto.expect("the auto listener");
    // OpenWire.
    let mut c = Client::handshake(auto, 12).await;
    assert!(matches!(c.connect(None, None).await, Command::Response(_)));
    assert!(matches!(
        c.send_text("ow.auto", "through auto").await,
        Command::Response(_)
    ));
    // STOMP, on the same port, receives it (a TextMessage: no
    // content-length needed to read it).
    let mut s = TcpStream::connect(auto).await.unwrap();
    s.write_all(
        b"CONNECT\naccept-version:1.2\nhost:x\n\n\0SUBSCRIBE\nid:1\ndestination:/queue/ow.auto\n\n\0",
    )
    .await
    .unwrap();
    let mut got = Vec::new();
    let deadline = Instant::now() + WAIT;
    while !String::from_utf8_lossy(&got).contains("through auto") {
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout_at(deadline, s.read(&mut chunk))
            .await
            .expect("the message through the auto port")
            .unwrap();
        assert!(n > 0, "closed: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&chunk[..n]);
    }
    // WebSocket, on the same port.
    let (mut ws, response) = tokio_tungstenite::client_async(
        {
            use tokio_tungstenite::tungstenite::client::IntoClientRequest;
            let mut r = format!("ws://{auto}/").into_client_request().unwrap();
            r.headers_mut()
                .insert("Sec-WebSocket-Protocol", "v12.stomp".parse().unwrap());
            r
        },
        TcpStream::connect(auto).await.unwrap(),
    )
    .await
    .expect("a WebSocket upgrade through the auto port");
    assert_eq!(
        response
            .headers()
            .get("sec-websocket-protocol")
            .and_then(|v| v.to_str().ok()),
        Some("v12.stomp")
    );
    use futures::{SinkExt, StreamExt};
    ws.send(tokio_tungstenite::tungstenite::Message::text(
        "CONNECT\naccept-version:1.2\nhost:x\n\n\0",
    ))
    .await
    .unwrap();
    let reply = tokio::time::timeout(WAIT, ws.next())
        .await
        .expect("CONNECTED over WebSocket")
        .unwrap()
        .unwrap();
    assert!(
        reply.to_text().unwrap().starts_with("CONNECTED"),
        "{reply:?}"
    );
}

impl Client {
    /// Opens session 1 and consumer 1 on `queue` with `prefetch`.
    async fn consume(&mut self, queue: &str, prefetch: i32) -> ow::ConsumerId {
        let connection = self.connection.clone();
        let session = ow::SessionId {
            connection_id: Some(connection.clone()),
            value: 1,
        };
        assert!(matches!(
            self.request(|id| Command::SessionInfo(ow::SessionInfo {
                command_id: id,
                response_required: true,
                session_id: Some(session),
            }))
            .await,
            Command::Response(_)
        ));
        let consumer = ow::ConsumerId {
            connection_id: Some(connection),
            session_id: 1,
            value: 1,
        };
        let c = consumer.clone();
        assert!(matches!(
            self.request(|id| Command::ConsumerInfo(ow::ConsumerInfo {
                command_id: id,
                response_required: true,
                consumer_id: Some(c),
                destination: Some(ow::Destination::queue(queue)),
                prefetch_size: prefetch,
                ..ow::ConsumerInfo::default()
            }))
            .await,
            Command::Response(_)
        ));
        consumer
    }

    async fn pull(&mut self, consumer: &ow::ConsumerId, timeout: i64) {
        self.send(Command::MessagePull(ow::MessagePull {
            consumer_id: Some(consumer.clone()),
            timeout,
            ..ow::MessagePull::default()
        }))
        .await;
    }

    /// The next MessageDispatch's message (`None`: an empty dispatch).
    async fn dispatched(&mut self) -> Option<ow::Message> {
        loop {
            match self.recv().await {
                Some(Command::MessageDispatch(d)) => return d.message,
                Some(_) => {}
                None => panic!("closed while waiting for a dispatch"),
            }
        }
    }
}

#[tokio::test]
async fn a_consumer_with_prefetch_0_gets_messages_only_when_it_pulls() {
    let b = TestBroker::start("").await;
    let mut c = Client::handshake(b.openwire.unwrap(), 12).await;
    assert!(matches!(c.connect(None, None).await, Command::Response(_)));
    let consumer = c.consume("ow.pull", 0).await;
    // receiveNoWait() on an empty queue: an empty dispatch at once.
    c.pull(&consumer, -1).await;
    assert_eq!(c.dispatched().await, None);
    // receive(300) on an empty queue: an empty dispatch after its time.
    let started = Instant::now();
    c.pull(&consumer, 300).await;
    assert_eq!(c.dispatched().await, None);
    assert!(started.elapsed() >= Duration::from_millis(250));

    let mut p = Client::handshake(b.openwire.unwrap(), 12).await;
    p.connection = format!("{}-producer", p.connection);
    assert!(matches!(p.connect(None, None).await, Command::Response(_)));
    for text in ["one", "two"] {
        assert!(matches!(
            p.send_text("ow.pull", text).await,
            Command::Response(_)
        ));
    }
    // Nothing comes unasked, however long the broker has the messages.
    let quiet = tokio::time::timeout(Duration::from_millis(300), c.recv()).await;
    assert!(quiet.is_err(), "a message was pushed: {quiet:?}");
    c.pull(&consumer, 0).await;
    let m = c.dispatched().await.expect("the first message");
    assert_eq!(m.text().unwrap().as_deref(), Some("one"));
    // Acknowledged, the next one waits for the next pull.
    let last = m.message_id.clone();
    c.send(Command::MessageAck(ow::MessageAck {
        consumer_id: Some(consumer.clone()),
        destination: Some(ow::Destination::queue("ow.pull")),
        ack_type: 2,
        first_message_id: last.clone(),
        last_message_id: last,
        message_count: 1,
        ..ow::MessageAck::default()
    }))
    .await;
    c.pull(&consumer, 1000).await;
    let m = c.dispatched().await.expect("the second message");
    assert_eq!(m.text().unwrap().as_deref(), Some("two"));
}

#[tokio::test]
async fn a_consumer_control_turns_a_pulling_consumer_into_a_prefetching_one() {
    // What ActiveMQ's failover transport does after a reconnect: restore
    // the consumer with prefetch 0, then give it its prefetch back.
    let b = TestBroker::start("").await;
    let mut p = Client::handshake(b.openwire.unwrap(), 12).await;
    p.connection = format!("{}-producer", p.connection);
    assert!(matches!(p.connect(None, None).await, Command::Response(_)));
    for i in 0..3 {
        let sent = p.send_text("ow.restore", &format!("m{i}")).await;
        assert!(matches!(sent, Command::Response(_)));
    }
    let mut c = Client::handshake(b.openwire.unwrap(), 12).await;
    assert!(matches!(c.connect(None, None).await, Command::Response(_)));
    let consumer = c.consume("ow.restore", 0).await;
    let quiet = tokio::time::timeout(Duration::from_millis(200), c.recv()).await;
    assert!(
        quiet.is_err(),
        "pushed before the prefetch came back: {quiet:?}"
    );
    c.send(Command::ConsumerControl(ow::ConsumerControl {
        consumer_id: Some(consumer),
        destination: Some(ow::Destination::queue("ow.restore")),
        prefetch: 1000,
        ..ow::ConsumerControl::default()
    }))
    .await;
    let mut got = Vec::new();
    while got.len() < 3 {
        let m = c.dispatched().await.expect("a message, pushed");
        got.push(m.text().unwrap().unwrap_or_default());
    }
    assert_eq!(
        got,
        ["m0", "m1", "m2"],
        "all three in flight at once, unacknowledged"
    );
}

impl Client {
    fn local_tx(&self, value: i64) -> ow::TransactionId {
        ow::TransactionId::Local(ow::LocalTransactionId {
            value,
            connection_id: Some(ow::ConnectionId {
                value: Some(self.connection.clone()),
            }),
        })
    }

    /// Begins (0) or commits (2) local transaction `value`.
    async fn tx(&mut self, value: i64, op: u8) -> Command {
        let tx = self.local_tx(value);
        self.request(|id| {
            Command::TransactionInfo(ow::TransactionInfo {
                command_id: id,
                response_required: true,
                transaction_id: Some(tx),
                transaction_type: op,
                ..ow::TransactionInfo::default()
            })
        })
        .await
    }

    /// Acknowledges `m` (and, for a range type, every earlier message) as
    /// `ack_type`, in transaction `tx` if given.
    async fn ack(
        &mut self,
        consumer: &ow::ConsumerId,
        m: &ow::Message,
        ack_type: u8,
        tx: Option<i64>,
    ) {
        let transaction_id = tx.map(|t| self.local_tx(t));
        self.send(Command::MessageAck(ow::MessageAck {
            consumer_id: Some(consumer.clone()),
            destination: m.destination.clone(),
            transaction_id,
            ack_type,
            first_message_id: m.message_id.clone(),
            last_message_id: m.message_id.clone(),
            message_count: 1,
            ..ow::MessageAck::default()
        }))
        .await;
    }
}

/// Sends `n` messages `m0`, `m1`… to `queue` from a connection of its own.
async fn fill(addr: SocketAddr, queue: &str, n: usize) {
    let mut p = Client::handshake(addr, 12).await;
    p.connection = format!("{}-producer-{queue}", p.connection);
    assert!(matches!(p.connect(None, None).await, Command::Response(_)));
    for i in 0..n {
        let sent = p.send_text(queue, &format!("m{i}")).await;
        assert!(matches!(sent, Command::Response(_)), "{sent:?}");
    }
}

/// What is left on `queue`, taken by a fresh consumer within a short wait.
async fn left_on(addr: SocketAddr, queue: &str) -> Vec<String> {
    let mut c = Client::handshake(addr, 12).await;
    c.connection = format!("{}-check-{queue}", c.connection);
    assert!(matches!(c.connect(None, None).await, Command::Response(_)));
    c.consume(queue, 100).await;
    let mut left = Vec::new();
    while let Ok(m) = tokio::time::timeout(Duration::from_millis(300), c.dispatched()).await {
        left.push(m.and_then(|m| m.text().ok().flatten()).unwrap_or_default());
    }
    left
}

#[tokio::test]
async fn a_transacted_pulling_consumer_takes_several_messages_in_one_transaction() {
    let b = TestBroker::start("").await;
    let addr = b.openwire.unwrap();
    fill(addr, "ow.tx-pull", 3).await;
    let mut c = Client::handshake(addr, 12).await;
    assert!(matches!(c.connect(None, None).await, Command::Response(_)));
    let consumer = c.consume("ow.tx-pull", 0).await;
    assert!(matches!(c.tx(1, 0).await, Command::Response(_)));
    for want in ["m0", "m1", "m2"] {
        c.pull(&consumer, 2000).await;
        let m = c.dispatched().await.unwrap_or_else(|| {
            panic!("{want}: the pull found nothing (the transaction's held message blocked it)")
        });
        assert_eq!(m.text().unwrap().as_deref(), Some(want));
        c.ack(&consumer, &m, 2, Some(1)).await;
    }
    assert!(matches!(c.tx(1, 2).await, Command::Response(_)));
    drop(c);
    assert!(
        left_on(addr, "ow.tx-pull").await.is_empty(),
        "committed: gone"
    );
}

#[tokio::test]
async fn a_transacted_consumer_receives_beyond_its_prefetch_before_it_commits() {
    // ActiveMQ's client reports messages delivered to its application with
    // delivered acks, which extend the prefetch until the commit.
    let b = TestBroker::start("").await;
    let addr = b.openwire.unwrap();
    fill(addr, "ow.tx-extend", 5).await;
    let mut c = Client::handshake(addr, 12).await;
    assert!(matches!(c.connect(None, None).await, Command::Response(_)));
    // Begun first: a request's answer is awaited skipping other traffic,
    // and the dispatches start as soon as the consumer exists.
    assert!(matches!(c.tx(1, 0).await, Command::Response(_)));
    let consumer = c.consume("ow.tx-extend", 2).await;
    let mut last = None;
    for i in 0..5 {
        let m = tokio::time::timeout(WAIT, c.dispatched())
            .await
            .unwrap_or_else(|_| {
                panic!("message {i} never came: the prefetch of 2 was not extended")
            })
            .expect("a message");
        c.ack(&consumer, &m, 0, Some(1)).await;
        last = Some(m);
    }
    let last = last.unwrap();
    c.ack(&consumer, &last, 2, Some(1)).await;
    assert!(matches!(c.tx(1, 2).await, Command::Response(_)));
    drop(c);
    assert!(
        left_on(addr, "ow.tx-extend").await.is_empty(),
        "committed: gone"
    );
}

/// A synchronous persistent send (`responseRequired`, the JMS default) is
/// timed from its arrival to its Response in `halyard_receipt_seconds`,
/// as a STOMP SEND with a receipt is.
#[tokio::test]
async fn a_synchronous_persistent_send_is_timed_as_a_receipt() {
    use halyard_testkit::metrics::metric_at;
    let b = TestBroker::start("").await;
    let mut c = Client::handshake(b.openwire.unwrap(), 12).await;
    c.connect(None, None).await;
    let count = "halyard_receipt_seconds_count";
    let before = metric_at(b.http, count).await;
    let answer = c.send_text("ow.timed", "x").await;
    assert!(matches!(answer, Command::Response(_)), "{answer:?}");
    // Observed before the Response was written.
    assert_eq!(metric_at(b.http, count).await, before + 1);
}
