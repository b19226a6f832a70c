//! An async STOMP 1.2 client for Halyard, usable with any STOMP 1.2 broker.
//!
//! A [`Client`] is a handle to a connection task that owns the socket: calls
//! send commands to it, and it routes receipts back to the callers and
//! messages to their [`Subscription`]s. Failover (reconnecting to another
//! broker from a list and restoring state) builds on this in a later
//! version.
//!
//! ```no_run
//! # async fn demo() -> Result<(), halyard_client::ClientError> {
//! use halyard_client::{Client, SendMessage, SubscribeOptions, AckMode};
//!
//! let client = Client::connect("stomp://127.0.0.1:61613").await?;
//! client.send(SendMessage::new("/queue/orders", "hello").persistent(true)).await?;
//! let mut sub = client
//!     .subscribe("/queue/orders", SubscribeOptions::default().ack(AckMode::ClientIndividual))
//!     .await?;
//! if let Some(m) = sub.next().await {
//!     println!("{}", m.text().unwrap_or("<binary>"));
//!     client.ack(&m).await?;
//! }
//! client.disconnect().await?;
//! # Ok(()) }
//! ```

mod connection;
mod error;
mod message;
pub mod url;

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::Stream;
use halyard_stomp::{Command, Frame, HeartBeat, Limits, Version};
use tokio::sync::{mpsc, oneshot};

pub use error::ClientError;
pub use message::{Message, SendMessage};
pub use url::Endpoint;

/// How a subscription acknowledges messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AckMode {
    /// The broker considers a message acknowledged once it sends it.
    #[default]
    Auto,
    /// [`Client::ack`] acknowledges the message and all earlier ones.
    Client,
    /// [`Client::ack`] acknowledges just that message.
    ClientIndividual,
}

impl AckMode {
    /// The `ack` header value.
    pub fn as_str(self) -> &'static str {
        match self {
            AckMode::Auto => "auto",
            AckMode::Client => "client",
            AckMode::ClientIndividual => "client-individual",
        }
    }
}

impl std::str::FromStr for AckMode {
    type Err = String;

    fn from_str(s: &str) -> Result<AckMode, String> {
        match s {
            "auto" => Ok(AckMode::Auto),
            "client" => Ok(AckMode::Client),
            "client-individual" => Ok(AckMode::ClientIndividual),
            _ => Err(format!(
                "invalid ack mode '{s}': expected auto, client or client-individual"
            )),
        }
    }
}

/// Connection settings.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    /// Login (overrides one in the URL).
    pub login: Option<String>,
    /// Passcode (overrides one in the URL).
    pub passcode: Option<String>,
    /// Client id, for brokers that use it (durable subscriptions).
    pub client_id: Option<String>,
    /// Heart-beats offered: how often we can send, how often we want to
    /// receive (ms; 0 = never).
    pub heartbeat: HeartBeat,
    /// How long connecting (TCP plus CONNECTED) may take.
    pub connect_timeout: Duration,
    /// Limits on frames from the broker.
    pub limits: Limits,
}

impl Default for ConnectOptions {
    fn default() -> ConnectOptions {
        ConnectOptions {
            login: None,
            passcode: None,
            client_id: None,
            heartbeat: HeartBeat {
                can_send_ms: 10_000,
                want_receive_ms: 10_000,
            },
            connect_timeout: Duration::from_secs(10),
            limits: Limits::default(),
        }
    }
}

/// Subscription settings.
#[derive(Debug, Clone, Default)]
pub struct SubscribeOptions {
    /// Acknowledgement mode.
    pub ack: AckMode,
    /// Most unacknowledged messages the broker sends ahead
    /// (`activemq.prefetchSize`); the broker's default if `None`.
    pub prefetch: Option<u32>,
    /// Extra SUBSCRIBE headers.
    pub headers: Vec<(String, String)>,
}

impl SubscribeOptions {
    /// Sets the acknowledgement mode.
    pub fn ack(mut self, ack: AckMode) -> SubscribeOptions {
        self.ack = ack;
        self
    }

    /// Sets the prefetch.
    pub fn prefetch(mut self, prefetch: u32) -> SubscribeOptions {
        self.prefetch = Some(prefetch);
        self
    }
}

/// What the broker said in CONNECTED.
#[derive(Debug, Clone)]
pub struct ServerInfo {
    /// Negotiated version.
    pub version: Version,
    /// The `session` header.
    pub session: Option<String>,
    /// The `server` header.
    pub server: Option<String>,
}

pub(crate) type ReceiptTx = oneshot::Sender<Result<(), ClientError>>;

/// A request to the connection task.
pub(crate) struct Cmd {
    pub(crate) frame: Frame,
    pub(crate) receipt: Option<(String, ReceiptTx)>,
    /// Register (Some) a subscription's message channel.
    pub(crate) subscribe: Option<(String, mpsc::Sender<Message>)>,
}

pub(crate) struct Shared {
    pub(crate) closed: OnceLock<ClientError>,
    next_id: AtomicU64,
}

/// A connection to a broker. Cheap to clone; the connection closes when
/// every clone (and every [`Subscription`]) is dropped, or on
/// [`Client::disconnect`].
#[derive(Clone)]
pub struct Client {
    cmds: mpsc::Sender<Cmd>,
    shared: Arc<Shared>,
    info: Arc<ServerInfo>,
}

/// Resolves when the broker confirms a frame (see [`Client::send_nowait`]).
pub struct Receipt(
    Option<oneshot::Receiver<Result<(), ClientError>>>,
    Arc<Shared>,
);

impl Future for Receipt {
    type Output = Result<(), ClientError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let shared = self.1.clone();
        match &mut self.0 {
            None => Poll::Ready(Ok(())),
            Some(rx) => Pin::new(rx).poll(cx).map(|r| {
                r.unwrap_or_else(|_| {
                    Err(shared.closed.get().cloned().unwrap_or(ClientError::Closed))
                })
            }),
        }
    }
}

impl Client {
    /// Connects with default options.
    pub async fn connect(url: &str) -> Result<Client, ClientError> {
        Client::connect_with(url, ConnectOptions::default()).await
    }

    /// Connects with the given options.
    pub async fn connect_with(url: &str, options: ConnectOptions) -> Result<Client, ClientError> {
        let endpoint = Endpoint::parse(url)?;
        let (cmds, info) = connection::open(&endpoint, &options).await?;
        Ok(Client {
            cmds: cmds.0,
            shared: cmds.1,
            info: Arc::new(info),
        })
    }

    /// What the broker said when the connection opened.
    pub fn server(&self) -> &ServerInfo {
        &self.info
    }

    /// Why the connection closed, once it has.
    pub fn close_reason(&self) -> Option<ClientError> {
        self.shared.closed.get().cloned()
    }

    fn next_id(&self, prefix: &str) -> String {
        format!(
            "{prefix}-{}",
            self.shared.next_id.fetch_add(1, Ordering::Relaxed)
        )
    }

    async fn request(
        &self,
        mut frame: Frame,
        want_receipt: bool,
        subscribe: Option<(String, mpsc::Sender<Message>)>,
    ) -> Result<Receipt, ClientError> {
        let receipt = if want_receipt {
            let id = self.next_id("r");
            frame.headers.push("receipt", id.clone());
            let (tx, rx) = oneshot::channel();
            Some((id, tx, rx))
        } else {
            None
        };
        let (cmd_receipt, rx) = match receipt {
            Some((id, tx, rx)) => (Some((id, tx)), Some(rx)),
            None => (None, None),
        };
        self.cmds
            .send(Cmd {
                frame,
                receipt: cmd_receipt,
                subscribe,
            })
            .await
            .map_err(|_| self.close_reason().unwrap_or(ClientError::Closed))?;
        Ok(Receipt(rx, self.shared.clone()))
    }

    fn send_frame(message: SendMessage, transaction: Option<&str>) -> Frame {
        let mut frame = Frame::new(Command::Send).header("destination", message.destination);
        if message.persistent {
            frame.headers.push("persistent", "true");
        }
        if let Some(t) = transaction {
            frame.headers.push("transaction", t);
        }
        for (k, v) in message.headers {
            frame.headers.push(k, v);
        }
        frame.body = message.body;
        frame
    }

    /// Sends a message. For persistent messages (or when a receipt is
    /// asked for) this returns once the broker has confirmed it — for a
    /// persistent message, once it is stored.
    pub async fn send(&self, message: SendMessage) -> Result<(), ClientError> {
        self.send_nowait(message).await?.await
    }

    /// Sends a message without waiting for its receipt; await the returned
    /// [`Receipt`] for that. Lets a producer keep many sends in flight.
    pub async fn send_nowait(&self, message: SendMessage) -> Result<Receipt, ClientError> {
        let want = message.wants_receipt();
        self.request(Client::send_frame(message, None), want, None)
            .await
    }

    /// Subscribes to a destination; returns once the broker confirms.
    pub async fn subscribe(
        &self,
        destination: &str,
        options: SubscribeOptions,
    ) -> Result<Subscription, ClientError> {
        let id = self.next_id("sub");
        let mut frame = Frame::new(Command::Subscribe)
            .header("destination", destination)
            .header("id", id.clone())
            .header("ack", options.ack.as_str());
        if let Some(p) = options.prefetch {
            frame.headers.push("activemq.prefetchSize", p.to_string());
        }
        for (k, v) in options.headers {
            frame.headers.push(k, v);
        }
        let capacity = options.prefetch.unwrap_or(1000).clamp(1, 65_536) as usize;
        let (tx, rx) = mpsc::channel(capacity);
        self.request(frame, true, Some((id.clone(), tx)))
            .await?
            .await?;
        Ok(Subscription {
            id,
            rx,
            client: self.clone(),
        })
    }

    fn ack_frame(
        &self,
        command: Command,
        m: &Message,
        tx: Option<&str>,
    ) -> Result<Frame, ClientError> {
        let mut frame = Frame::new(command);
        match (self.info.version, m.header("ack")) {
            (Version::V1_2, Some(ack)) => frame.headers.push("id", ack),
            (Version::V1_2, None) => {
                return Err(ClientError::NotAckable(
                    "the message has no ack header (auto-acknowledged subscription?)".into(),
                ));
            }
            _ => {
                frame.headers.push("message-id", m.message_id());
                frame.headers.push("subscription", m.subscription());
            }
        }
        if let Some(t) = tx {
            frame.headers.push("transaction", t);
        }
        Ok(frame)
    }

    /// Acknowledges a message; returns once the broker has recorded it.
    pub async fn ack(&self, message: &Message) -> Result<(), ClientError> {
        self.ack_nowait(message).await?.await
    }

    /// Acknowledges a message without waiting for the broker to record it;
    /// await the returned [`Receipt`] for that.
    pub async fn ack_nowait(&self, message: &Message) -> Result<Receipt, ClientError> {
        let frame = self.ack_frame(Command::Ack, message, None)?;
        self.request(frame, true, None).await
    }

    /// Acknowledges a message without asking for a receipt: cheapest, but
    /// nothing says when (or whether) the broker recorded it.
    pub async fn ack_unreceipted(&self, message: &Message) -> Result<(), ClientError> {
        let frame = self.ack_frame(Command::Ack, message, None)?;
        self.request(frame, false, None).await.map(|_| ())
    }

    /// Rejects a message: the broker redelivers it, or dead-letters it once
    /// it has been redelivered too often.
    pub async fn nack(&self, message: &Message) -> Result<(), ClientError> {
        let frame = self.ack_frame(Command::Nack, message, None)?;
        self.request(frame, true, None).await?.await
    }

    /// Starts a transaction.
    pub async fn begin(&self) -> Result<Transaction, ClientError> {
        let id = self.next_id("tx");
        let frame = Frame::new(Command::Begin).header("transaction", id.clone());
        self.request(frame, true, None).await?.await?;
        Ok(Transaction {
            id,
            client: self.clone(),
        })
    }

    /// Ends the connection politely: waits until the broker has processed
    /// everything sent before.
    pub async fn disconnect(self) -> Result<(), ClientError> {
        let receipt = self
            .request(Frame::new(Command::Disconnect), true, None)
            .await?;
        match tokio::time::timeout(Duration::from_secs(10), receipt).await {
            Ok(r) => r,
            Err(_) => Err(ClientError::Timeout(Duration::from_secs(10))),
        }
    }
}

/// A transaction: sends and acknowledgements that take effect together at
/// [`Transaction::commit`].
pub struct Transaction {
    id: String,
    client: Client,
}

impl Transaction {
    /// The transaction id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Sends a message as part of the transaction.
    pub async fn send(&self, message: SendMessage) -> Result<(), ClientError> {
        let frame = Client::send_frame(message, Some(&self.id));
        self.client.request(frame, false, None).await.map(|_| ())
    }

    /// Acknowledges a message as part of the transaction.
    pub async fn ack(&self, message: &Message) -> Result<(), ClientError> {
        let frame = self
            .client
            .ack_frame(Command::Ack, message, Some(&self.id))?;
        self.client.request(frame, false, None).await.map(|_| ())
    }

    /// Commits; returns once the broker has applied (and stored) it all.
    pub async fn commit(self) -> Result<(), ClientError> {
        let frame = Frame::new(Command::Commit).header("transaction", self.id);
        self.client.request(frame, true, None).await?.await
    }

    /// Aborts: sends are discarded, acknowledged messages redelivered.
    pub async fn abort(self) -> Result<(), ClientError> {
        let frame = Frame::new(Command::Abort).header("transaction", self.id);
        self.client.request(frame, true, None).await?.await
    }
}

/// Messages from one subscription.
pub struct Subscription {
    id: String,
    rx: mpsc::Receiver<Message>,
    client: Client,
}

impl Subscription {
    /// The subscription id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The next message, or `None` once the connection has closed (see
    /// [`Client::close_reason`]).
    pub async fn next(&mut self) -> Option<Message> {
        self.rx.recv().await
    }

    /// Ends the subscription; unacknowledged messages go back to the
    /// destination.
    pub async fn unsubscribe(self) -> Result<(), ClientError> {
        let frame = Frame::new(Command::Unsubscribe).header("id", self.id.clone());
        self.client.request(frame, true, None).await?.await
    }
}

impl Stream for Subscription {
    type Item = Message;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Message>> {
        self.rx.poll_recv(cx)
    }
}
