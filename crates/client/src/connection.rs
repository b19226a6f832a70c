//! The connection task: owns the socket, writes requests, routes receipts
//! and messages, keeps heart-beats.

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use halyard_stomp::{Command, Frame, HeartBeat, Item, Outbound, StompCodec, Version};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_util::codec::Framed;

use crate::{ClientError, Cmd, ConnectOptions, Endpoint, Message, ReceiptTx, ServerInfo, Shared};

type Conn = Framed<TcpStream, StompCodec>;

/// Requests written per flush.
const WRITE_BURST: usize = 64;

/// Opens the connection, negotiates, and starts the connection task.
pub(crate) async fn open(
    endpoint: &Endpoint,
    options: &ConnectOptions,
) -> Result<((mpsc::Sender<Cmd>, Arc<Shared>), ServerInfo), ClientError> {
    let address = endpoint.address();
    let timeout = options.connect_timeout;
    let connect = async {
        let stream = TcpStream::connect(&address)
            .await
            .map_err(|e| ClientError::Connect {
                address: address.clone(),
                reason: e.to_string(),
            })?;
        let _ = stream.set_nodelay(true);
        let mut conn = Framed::new(stream, StompCodec::new(options.limits));
        let mut frame = Frame::new(Command::Connect)
            .header("accept-version", "1.2")
            .header("host", endpoint.host.clone())
            .header("heart-beat", options.heartbeat.to_header());
        let login = options.login.clone().or_else(|| endpoint.login.clone());
        let passcode = options
            .passcode
            .clone()
            .or_else(|| endpoint.passcode.clone());
        if let Some(l) = login {
            frame.headers.push("login", l);
        }
        if let Some(p) = passcode {
            frame.headers.push("passcode", p);
        }
        if let Some(c) = &options.client_id {
            frame.headers.push("client-id", c.clone());
        }
        conn.send(Outbound::Frame(frame))
            .await
            .map_err(|e| ClientError::Io(e.to_string()))?;
        loop {
            match conn.next().await {
                None => {
                    return Err(ClientError::Connect {
                        address: address.clone(),
                        reason: "the broker closed the connection during CONNECT".into(),
                    });
                }
                Some(Err(e)) => return Err(ClientError::Protocol(e.to_string())),
                Some(Ok(Item::Heartbeat)) => continue,
                Some(Ok(Item::Frame(f))) => return Ok((conn, f)),
            }
        }
    };
    let (mut conn, reply) =
        tokio::time::timeout(timeout, connect)
            .await
            .map_err(|_| ClientError::Connect {
                address: address.clone(),
                reason: format!("no CONNECTED within {timeout:?}"),
            })??;
    match reply.command {
        Command::Connected => {}
        Command::Error => return Err(broker_error(&reply)),
        other => {
            return Err(ClientError::Protocol(format!(
                "expected CONNECTED, got {other}"
            )));
        }
    }
    let version = reply
        .headers
        .get("version")
        .and_then(Version::parse)
        .unwrap_or(Version::V1_0);
    conn.codec_mut().set_version(version);
    let theirs = match reply.headers.get("heart-beat") {
        Some(h) => HeartBeat::parse(h).map_err(|e| ClientError::Protocol(e.to_string()))?,
        None => HeartBeat::default(),
    };
    let info = ServerInfo {
        version,
        session: reply.headers.get("session").map(str::to_owned),
        server: reply.headers.get("server").map(str::to_owned),
    };
    let shared = Arc::new(Shared {
        closed: OnceLock::new(),
        next_id: AtomicU64::new(1),
    });
    let (tx, rx) = mpsc::channel(1024);
    let task = Task {
        conn,
        cmds: rx,
        shared: shared.clone(),
        receipts: HashMap::new(),
        subs: HashMap::new(),
        send_every: HeartBeat::send_interval(options.heartbeat, theirs),
        expect_every: HeartBeat::receive_interval(options.heartbeat, theirs),
        last_write: Instant::now(),
        last_read: Instant::now(),
        disconnecting: false,
    };
    tokio::spawn(task.run());
    Ok(((tx, shared), info))
}

fn broker_error(f: &Frame) -> ClientError {
    ClientError::Broker {
        message: f
            .headers
            .get("message")
            .unwrap_or("(no message)")
            .to_owned(),
        detail: String::from_utf8_lossy(&f.body).into_owned(),
    }
}

struct Task {
    conn: Conn,
    cmds: mpsc::Receiver<Cmd>,
    shared: Arc<Shared>,
    receipts: HashMap<String, ReceiptTx>,
    subs: HashMap<String, mpsc::Sender<Message>>,
    send_every: Option<Duration>,
    expect_every: Option<Duration>,
    last_write: Instant,
    last_read: Instant,
    disconnecting: bool,
}

impl Task {
    async fn run(mut self) {
        let error = self.serve().await;
        let _ = self.shared.closed.set(error.clone());
        for (_, tx) in self.receipts.drain() {
            let _ = tx.send(Err(error.clone()));
        }
        self.subs.clear();
    }

    fn deadline(&self) -> Instant {
        let mut d = Instant::now() + Duration::from_secs(3600);
        if let Some(s) = self.send_every {
            d = d.min(self.last_write + s);
        }
        if let Some(r) = self.expect_every {
            d = d.min(self.last_read + r * 2);
        }
        d
    }

    async fn serve(&mut self) -> ClientError {
        loop {
            let deadline = self.deadline();
            tokio::select! {
                cmd = self.cmds.recv() => {
                    let Some(cmd) = cmd else {
                        // Every handle is gone: close quietly.
                        return ClientError::Closed;
                    };
                    // Write this request and whatever else is queued, then
                    // flush once: one syscall for a burst of sends.
                    let mut next = Some(cmd);
                    let mut written = 0;
                    while let Some(cmd) = next.take() {
                        if let Err(e) = self.feed(cmd).await {
                            return e;
                        }
                        written += 1;
                        if written < WRITE_BURST {
                            next = self.cmds.try_recv().ok();
                        }
                    }
                    if let Err(e) = SinkExt::<Outbound>::flush(&mut self.conn).await {
                        return ClientError::Io(e.to_string());
                    }
                    self.last_write = Instant::now();
                    if self.disconnecting && self.receipts.is_empty() {
                        return ClientError::Closed;
                    }
                }
                item = self.conn.next() => {
                    self.last_read = Instant::now();
                    match item {
                        None if self.disconnecting => return ClientError::Closed,
                        None => return ClientError::Io("the broker closed the connection".into()),
                        Some(Err(e)) => return ClientError::Protocol(e.to_string()),
                        Some(Ok(Item::Heartbeat)) => {}
                        Some(Ok(Item::Frame(f))) => {
                            if let Some(e) = self.frame(f).await {
                                return e;
                            }
                        }
                    }
                }
                _ = tokio::time::sleep_until(deadline.into()) => {
                    let now = Instant::now();
                    if let Some(r) = self.expect_every
                        && now.saturating_duration_since(self.last_read) >= r * 2
                    {
                        return ClientError::Io(format!(
                            "no data or heart-beat from the broker for {:?}", r * 2
                        ));
                    }
                    if let Some(s) = self.send_every
                        && now.saturating_duration_since(self.last_write) >= s
                    {
                        if let Err(e) = self.conn.send(Outbound::Heartbeat).await {
                            return ClientError::Io(e.to_string());
                        }
                        self.last_write = now;
                    }
                }
            }
        }
    }

    /// Registers what a request waits for and buffers its frame.
    async fn feed(&mut self, cmd: Cmd) -> Result<(), ClientError> {
        if let Some((id, tx)) = cmd.receipt {
            self.receipts.insert(id, tx);
        }
        if let Some((id, tx)) = cmd.subscribe {
            self.subs.insert(id, tx);
        }
        match cmd.frame.command {
            Command::Unsubscribe => {
                if let Some(id) = cmd.frame.headers.get("id") {
                    self.subs.remove(id);
                }
            }
            Command::Disconnect => self.disconnecting = true,
            _ => {}
        }
        self.conn
            .feed(Outbound::Frame(cmd.frame))
            .await
            .map_err(|e| ClientError::Io(e.to_string()))
    }

    /// Handles a frame from the broker; `Some` ends the connection.
    async fn frame(&mut self, f: Frame) -> Option<ClientError> {
        match f.command {
            Command::Message => {
                let sub = f.headers.get("subscription").unwrap_or_default().to_owned();
                if let Some(tx) = self.subs.get(&sub) {
                    let message = Message {
                        headers: f.headers,
                        body: f.body,
                    };
                    // Waits if the application is not keeping up: that
                    // stops reading the socket, which is the backpressure.
                    if tx.send(message).await.is_err() {
                        self.subs.remove(&sub);
                    }
                }
                None
            }
            Command::Receipt => {
                let id = f.headers.get("receipt-id").unwrap_or_default();
                if let Some(tx) = self.receipts.remove(id) {
                    let _ = tx.send(Ok(()));
                }
                None
            }
            Command::Error => {
                let e = broker_error(&f);
                if let Some(tx) = f
                    .headers
                    .get("receipt-id")
                    .and_then(|id| self.receipts.remove(id))
                {
                    let _ = tx.send(Err(e.clone()));
                }
                Some(e)
            }
            other => Some(ClientError::Protocol(format!(
                "unexpected {other} frame from the broker"
            ))),
        }
    }
}
