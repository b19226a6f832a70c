//! An async STOMP 1.2 client for Halyard, usable with any STOMP 1.2 broker,
//! with ActiveMQ-style failover.
//!
//! A [`Client`] is a handle to a connection task that owns the socket:
//! calls send requests to it, and it routes receipts back to the callers and
//! messages to their [`Subscription`]s. Given a `failover:` URL the task
//! outlives any one connection: when its broker goes away it reconnects to
//! another from the list (see [`url`] for the options), subscribes again,
//! resends every message the broker had not confirmed — each persistent one
//! carrying a duplicate-detection id (`_AMQ_DUPL_ID`) so that a broker that
//! had already stored it does not enqueue it twice — and carries on. What
//! cannot be carried over is reported as an error the application can act on
//! ([`ClientError::TransactionRolledBack`] and friends), and
//! [`Client::events`] tells who is interested when the connection is
//! interrupted and resumed.
//!
//! ```no_run
//! # async fn demo() -> Result<(), halyard_client::ClientError> {
//! use halyard_client::{Client, SendMessage, SubscribeOptions, AckMode};
//!
//! let client = Client::connect(
//!     "failover:(stomp://broker-a:61613,stomp://broker-b:61613)?maxReconnectAttempts=20",
//! )
//! .await?;
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
//!
//! Runnable programs are in the crate's `examples/` directory.

mod backup;
mod conn;
mod error;
mod message;
mod task;
mod tls;
pub mod url;

use std::future::Future;
use std::hash::{BuildHasher, Hasher};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::Stream;
use halyard_stomp::{Command, Frame, HeartBeat, Limits, Version};
use tokio::sync::{broadcast, mpsc, oneshot};

pub use error::ClientError;
/// How a subscription acknowledges messages: the STOMP vocabulary, shared
/// with the broker through `halyard-stomp` so both spell it the same way.
pub use halyard_stomp::{AckMode, AckModeError};
pub use message::{DUPLICATE_ID_HEADER, Message, SendMessage};
pub use url::{BrokerUrl, Endpoint, FailoverOptions, TlsOptions};

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

    /// Takes only the messages a JMS message selector selects (the
    /// `selector` header; Halyard's docs/SELECTORS.md). The broker refuses
    /// an invalid one, naming the position.
    pub fn selector(mut self, selector: impl Into<String>) -> SubscribeOptions {
        self.headers.push(("selector".to_owned(), selector.into()));
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
    /// For an ACK or NACK: the connection generation that delivered the
    /// message. Stale by the time the task takes it, it is not sent.
    pub(crate) delivered_on: Option<u64>,
}

/// What every `Client` handle and the engine task both see: whether the
/// client is closed (and why), the failover generation, events, the
/// broker's CONNECTED details, and the request-id counter.
pub(crate) struct ClientState {
    pub(crate) closed: OnceLock<ClientError>,
    pub(crate) next_id: AtomicU64,
    /// Bumped at every failover: acknowledgements only mean something on
    /// the connection that delivered the message.
    pub(crate) generation: AtomicU64,
    pub(crate) events: broadcast::Sender<ConnectionEvent>,
    /// What the broker said in the latest CONNECTED.
    pub(crate) info: std::sync::Mutex<ServerInfo>,
}

/// What happened to a failover client's connection (as ActiveMQ's
/// `TransportListener` reports it). See [`Client::events`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConnectionEvent {
    /// The connection to `broker` was lost (or left for a priority
    /// broker); the client is reconnecting. Requests wait meanwhile (up to
    /// the `timeout` option).
    Interrupted {
        /// `stomp://host:port` of the broker left.
        broker: String,
        /// Why.
        reason: String,
    },
    /// Connected again, state restored.
    Resumed {
        /// `stomp://host:port` of the broker now used.
        broker: String,
        /// Time from losing the old connection to restoring on the new one.
        after: Duration,
        /// Passes over the broker list it took.
        attempts: u64,
        /// Sends the broker had not confirmed when the connection was
        /// lost, sent again on the new one (persistent ones carry a
        /// duplicate-detection id, so a broker that had stored one before
        /// the loss drops the copy).
        replayed: u64,
        /// Subscriptions made again on the new connection.
        resubscribed: u64,
    },
    /// The new broker has confirmed every send replayed after a failover
    /// (after `Resumed`, when there were any).
    ReplayConfirmed {
        /// Sends replayed.
        replayed: u64,
        /// Of those, how many the broker dropped as duplicates: it had
        /// stored them before the failover (their duplicate-detection id),
        /// so they were resent for nothing and nothing is doubled. Told by
        /// Halyard on its receipts (`duplicates-dropped`); 0 from a broker
        /// that does not say.
        duplicates: u64,
    },
    /// The client gave up (`maxReconnectAttempts`) or the connection ended
    /// for good; requests fail with the reason from now on.
    Failed {
        /// Why.
        reason: String,
    },
}

/// One line a person can read, e.g. for a command-line tool to print
/// when a failover completes (the event's fields are there for programs).
impl std::fmt::Display for ConnectionEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConnectionEvent::Interrupted { broker, reason } => {
                write!(f, "lost {broker} ({reason}); failing over")
            }
            ConnectionEvent::Resumed {
                broker,
                after,
                attempts,
                replayed,
                resubscribed,
            } => write!(
                f,
                "failover complete: resumed on {broker} after {:.1} s ({attempts} pass(es) over the broker list); \
                 replayed {replayed} unconfirmed send(s), resubscribed {resubscribed} subscription(s)",
                after.as_secs_f64()
            ),
            ConnectionEvent::ReplayConfirmed {
                replayed,
                duplicates,
            } => write!(
                f,
                "{replayed} replayed send(s) confirmed; {duplicates} duplicate(s) suppressed \
                 (stored before the failover, dropped by the broker's duplicate detection)"
            ),
            ConnectionEvent::Failed { reason } => write!(f, "failover gave up: {reason}"),
        }
    }
}

/// A stream of [`ConnectionEvent`]s from [`Client::events`].
pub struct ConnectionEvents(broadcast::Receiver<ConnectionEvent>);

impl ConnectionEvents {
    /// The next event, or `None` once the client is gone. Events are
    /// buffered (64); a listener that falls further behind misses the
    /// oldest.
    pub async fn next(&mut self) -> Option<ConnectionEvent> {
        loop {
            match self.0.recv().await {
                Ok(e) => return Some(e),
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }
}

/// A connection to a broker (or, with a `failover:` URL, to whichever of a
/// list is available). Cheap to clone; the connection closes when every
/// clone (and every [`Subscription`]) is dropped, or on
/// [`Client::disconnect`].
#[derive(Clone)]
pub struct Client {
    cmds: mpsc::Sender<Cmd>,
    state: Arc<ClientState>,
    /// Prefix of the duplicate-detection ids this client gives its sends:
    /// random per client, so ids never collide across clients.
    dup_prefix: Arc<str>,
}

/// Resolves when the broker confirms a frame (see [`Client::send_nowait`]).
pub struct Receipt(
    Option<oneshot::Receiver<Result<(), ClientError>>>,
    Arc<ClientState>,
);

impl Future for Receipt {
    type Output = Result<(), ClientError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let state = self.1.clone();
        match &mut self.0 {
            None => Poll::Ready(Ok(())),
            Some(rx) => Pin::new(rx).poll(cx).map(|r| {
                r.unwrap_or_else(|_| {
                    Err(state.closed.get().cloned().unwrap_or(ClientError::Closed))
                })
            }),
        }
    }
}

/// A random 64-bit number, without a dependency: std's hasher keys are
/// seeded from the OS's random source.
fn random_u64() -> u64 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default(),
    );
    h.finish()
}

impl Client {
    /// Connects with default options. `url` is one broker
    /// (`stomp://host:61613`) or a failover list
    /// (`failover:(stomp://a:61613,stomp://b:61613)?randomize=false`); see
    /// [`url`].
    pub async fn connect(url: &str) -> Result<Client, ClientError> {
        Client::connect_with(url, ConnectOptions::default()).await
    }

    /// Connects with the given options.
    pub async fn connect_with(url: &str, options: ConnectOptions) -> Result<Client, ClientError> {
        let url = BrokerUrl::parse(url)?;
        Client::connect_url(url, options).await
    }

    /// Connects to an already parsed [`BrokerUrl`].
    pub async fn connect_url(
        url: BrokerUrl,
        options: ConnectOptions,
    ) -> Result<Client, ClientError> {
        let BrokerUrl {
            mut endpoints,
            failover,
            login,
            passcode,
        } = url;
        // Credentials: those in ConnectOptions win, then those of the inner
        // URL, then the failover URL's.
        for e in &mut endpoints {
            if options.login.is_some() {
                e.login.clone_from(&options.login);
            } else if e.login.is_none() {
                e.login.clone_from(&login);
            }
            if options.passcode.is_some() {
                e.passcode.clone_from(&options.passcode);
            } else if e.passcode.is_none() {
                e.passcode.clone_from(&passcode);
            }
        }
        let params = conn::ConnectParams {
            client_id: options.client_id,
            heartbeat: options.heartbeat,
            connect_timeout: options.connect_timeout,
            limits: options.limits,
        };
        let (events, _) = broadcast::channel(64);
        let state = Arc::new(ClientState {
            closed: OnceLock::new(),
            next_id: AtomicU64::new(0),
            generation: AtomicU64::new(0),
            events,
            info: std::sync::Mutex::new(ServerInfo {
                version: Version::V1_2,
                session: None,
                server: None,
            }),
        });
        let (tx, rx) = mpsc::channel(1024);
        let mut engine = task::Engine::new(endpoints, failover, params, rx, state.clone());
        let first = engine.connect_first().await?;
        if let Ok(mut info) = state.info.lock() {
            *info = first.info.clone();
        }
        tokio::spawn(engine.run(first));
        Ok(Client {
            cmds: tx,
            state,
            dup_prefix: format!("{:016x}", random_u64()).into(),
        })
    }

    /// What the broker said when the (current) connection opened.
    pub fn server(&self) -> ServerInfo {
        self.state
            .info
            .lock()
            .map(|i| i.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }

    /// Why the connection closed, once it has for good.
    pub fn close_reason(&self) -> Option<ClientError> {
        self.state.closed.get().cloned()
    }

    /// Connection events (interrupted, resumed, failed) from now on.
    pub fn events(&self) -> ConnectionEvents {
        ConnectionEvents(self.state.events.subscribe())
    }

    fn next_id(&self, prefix: &str) -> String {
        format!(
            "{prefix}-{}",
            self.state.next_id.fetch_add(1, Ordering::Relaxed)
        )
    }

    async fn request(
        &self,
        frame: Frame,
        want_receipt: bool,
        subscribe: Option<(String, mpsc::Sender<Message>)>,
    ) -> Result<Receipt, ClientError> {
        self.request_on(frame, want_receipt, subscribe, None).await
    }

    async fn request_on(
        &self,
        mut frame: Frame,
        want_receipt: bool,
        subscribe: Option<(String, mpsc::Sender<Message>)>,
        delivered_on: Option<u64>,
    ) -> Result<Receipt, ClientError> {
        if let Some(e) = self.close_reason() {
            return Err(e);
        }
        let (cmd_receipt, rx) = if want_receipt {
            let id = self.next_id("r");
            frame.headers.push("receipt", id.clone());
            let (tx, rx) = oneshot::channel();
            (Some((id, tx)), Some(rx))
        } else {
            (None, None)
        };
        self.cmds
            .send(Cmd {
                frame,
                receipt: cmd_receipt,
                subscribe,
                delivered_on,
            })
            .await
            .map_err(|_| self.close_reason().unwrap_or(ClientError::Closed))?;
        Ok(Receipt(rx, self.state.clone()))
    }

    fn send_frame(&self, message: SendMessage, transaction: Option<&str>) -> Frame {
        let mut frame = Frame::new(Command::Send).header("destination", message.destination);
        if message.persistent {
            frame.headers.push("persistent", "true");
        }
        if let Some(t) = transaction {
            frame.headers.push("transaction", t);
        }
        let has_dup_id = message
            .headers
            .iter()
            .any(|(k, _)| k == DUPLICATE_ID_HEADER);
        if message.persistent && message.duplicate_detection && !has_dup_id {
            frame.headers.push(
                DUPLICATE_ID_HEADER,
                format!(
                    "{}:{}",
                    self.dup_prefix,
                    self.state.next_id.fetch_add(1, Ordering::Relaxed)
                ),
            );
        }
        for (k, v) in message.headers {
            frame.headers.push(k, v);
        }
        frame.body = message.body;
        frame
    }

    /// Sends a message. For persistent messages (or when a receipt is
    /// asked for) this returns once the broker has confirmed it — for a
    /// persistent message, once it is stored. With failover, a send the
    /// broker had not confirmed when the connection failed is sent again to
    /// the next broker, and this returns when that one confirms.
    pub async fn send(&self, message: SendMessage) -> Result<(), ClientError> {
        self.send_nowait(message).await?.await
    }

    /// Sends a message without waiting for its receipt; await the returned
    /// [`Receipt`] for that. Lets a producer keep many sends in flight.
    pub async fn send_nowait(&self, message: SendMessage) -> Result<Receipt, ClientError> {
        let want = message.wants_receipt();
        let frame = self.send_frame(message, None);
        self.request(frame, want, None).await
    }

    /// Subscribes to a destination; returns once the broker confirms. With
    /// failover the subscription is made again (same id, headers and ack
    /// mode) on every new connection.
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
            ack: options.ack,
            rx,
            client: self.clone(),
        })
    }

    fn ack_frame(
        &self,
        command: Command,
        m: &Message,
        tx: Option<&str>,
    ) -> Result<Option<Frame>, ClientError> {
        if m.generation != self.state.generation.load(Ordering::Relaxed) {
            // Delivered on a connection that has since failed: the broker
            // has put the message back and will deliver it again, flagged
            // redelivered. An ACK on this connection would name something
            // the broker does not know.
            return Ok(None);
        }
        let mut frame = Frame::new(command);
        let version = self.server().version;
        match (version, m.header("ack")) {
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
        Ok(Some(frame))
    }

    /// Acknowledges a message; returns once the broker has recorded it.
    ///
    /// A message delivered before a failover cannot be acknowledged: the
    /// broker delivers it again (flagged redelivered), and this returns
    /// [`ClientError::AckNotConfirmed`].
    pub async fn ack(&self, message: &Message) -> Result<(), ClientError> {
        self.ack_nowait(message).await?.await
    }

    /// Acknowledges a message without waiting for the broker to record it;
    /// await the returned [`Receipt`] for that.
    pub async fn ack_nowait(&self, message: &Message) -> Result<Receipt, ClientError> {
        match self.ack_frame(Command::Ack, message, None)? {
            Some(frame) => {
                self.request_on(frame, true, None, Some(message.generation))
                    .await
            }
            None => Err(ClientError::AckNotConfirmed),
        }
    }

    /// Acknowledges a message without asking for a receipt: cheapest, but
    /// nothing says when (or whether) the broker recorded it.
    pub async fn ack_unreceipted(&self, message: &Message) -> Result<(), ClientError> {
        match self.ack_frame(Command::Ack, message, None)? {
            Some(frame) => self
                .request_on(frame, false, None, Some(message.generation))
                .await
                .map(|_| ()),
            None => Err(ClientError::AckNotConfirmed),
        }
    }

    /// Rejects a message: the broker redelivers it, or dead-letters it once
    /// it has been redelivered too often. (A message delivered before a
    /// failover is redelivered anyway; this then returns at once.)
    pub async fn nack(&self, message: &Message) -> Result<(), ClientError> {
        match self.ack_frame(Command::Nack, message, None)? {
            Some(frame) => match self
                .request_on(frame, true, None, Some(message.generation))
                .await?
                .await
            {
                // Redelivered anyway.
                Err(ClientError::AckNotConfirmed) => Ok(()),
                other => other,
            },
            None => Ok(()),
        }
    }

    /// Starts a transaction.
    pub async fn begin(&self) -> Result<Transaction, ClientError> {
        let id = self.next_id("tx");
        let generation = self.state.generation.load(Ordering::Relaxed);
        let frame = Frame::new(Command::Begin).header("transaction", id.clone());
        self.request(frame, true, None).await?.await?;
        Ok(Transaction {
            id,
            client: self.clone(),
            generation,
        })
    }

    /// Ends the connection politely: waits until the broker has processed
    /// everything sent before (at most 10 s).
    pub async fn disconnect(self) -> Result<(), ClientError> {
        if matches!(self.close_reason(), Some(ClientError::Closed)) {
            return Ok(());
        }
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
///
/// With failover, a transaction open when the connection fails is rolled
/// back by the broker: its later operations and its commit return
/// [`ClientError::TransactionRolledBack`], and nothing of it took effect.
/// If the connection fails while the COMMIT itself is on its way, commit
/// returns [`ClientError::CommitOutcomeUnknown`]: run the transaction
/// again — its persistent sends carry the same kind of duplicate-detection
/// ids, so give them your own ([`SendMessage::duplicate_id`]) to make the
/// retry safe.
pub struct Transaction {
    id: String,
    client: Client,
    /// The connection it began on: it dies with it.
    generation: u64,
}

impl Transaction {
    /// The transaction id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Fails if the connection the transaction began on has failed since:
    /// the broker rolled it back.
    fn alive(&self) -> Result<(), ClientError> {
        if self.client.state.generation.load(Ordering::Relaxed) != self.generation {
            return Err(ClientError::TransactionRolledBack(self.id.clone()));
        }
        Ok(())
    }

    /// Sends a message as part of the transaction.
    pub async fn send(&self, message: SendMessage) -> Result<(), ClientError> {
        self.alive()?;
        let frame = self.client.send_frame(message, Some(&self.id));
        self.client.request(frame, false, None).await.map(|_| ())
    }

    /// Acknowledges a message as part of the transaction.
    pub async fn ack(&self, message: &Message) -> Result<(), ClientError> {
        self.alive()?;
        match self
            .client
            .ack_frame(Command::Ack, message, Some(&self.id))?
        {
            Some(frame) => self
                .client
                .request_on(frame, false, None, Some(message.generation))
                .await
                .map(|_| ()),
            None => Err(ClientError::TransactionRolledBack(self.id.clone())),
        }
    }

    /// Commits; returns once the broker has applied (and stored) it all.
    pub async fn commit(self) -> Result<(), ClientError> {
        // Not checked here: the engine answers a rolled-back transaction's
        // COMMIT itself (and forgets it).
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
    ack: AckMode,
    rx: mpsc::Receiver<Message>,
    client: Client,
}

impl Subscription {
    /// The subscription id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Whether a message still awaits the application from a connection
    /// that has failed since: the broker delivers those again, so they are
    /// skipped (for acknowledging subscriptions; an auto-ack message is
    /// the application's once sent).
    fn stale(&self, m: &Message) -> bool {
        self.ack != AckMode::Auto
            && m.generation != self.client.state.generation.load(Ordering::Relaxed)
    }

    /// The next message, or `None` once the connection has closed for good
    /// (see [`Client::close_reason`]).
    pub async fn next(&mut self) -> Option<Message> {
        loop {
            let m = self.rx.recv().await?;
            if !self.stale(&m) {
                return Some(m);
            }
        }
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
        loop {
            match self.rx.poll_recv(cx) {
                Poll::Ready(Some(m)) if self.stale(&m) => continue,
                other => return other,
            }
        }
    }
}
