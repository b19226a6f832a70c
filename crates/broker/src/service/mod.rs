//! The protocol-neutral broker service: what every protocol head calls.
//!
//! A protocol head (STOMP today; OpenWire, AMQP and MQTT to come) decodes
//! its frames and calls this service; it never builds store records, checks
//! duplicates, admits messages or keeps transactions itself. The service is
//! where a principal is attached to a connection (and where authorization
//! will stand), where a message gets its identity, passes admission and
//! flow control, is stored and handed to its destination, and where
//! acknowledgements and transactions become store records.
//!
//! - [`Service::connect`] opens a [`Connection`] bound to a principal and,
//!   optionally, a client id.
//! - [`Connection::send`], [`Connection::subscribe`], [`Connection::ack`],
//!   [`Connection::begin`] / [`Connection::commit`] / [`Connection::abort`],
//!   [`Connection::unsubscribe`] and [`Connection::close`] do the rest.
//!   Requests whose outcome a client may wait for return [`Pending`] work;
//!   the head runs it through the connection's [`Pipeline`] so outcomes
//!   come back in request order.

mod ack;
pub(crate) mod auth;
mod commit;
mod connection;
mod copy;
pub(crate) mod directory;
mod error;
pub(crate) mod limits;
pub(crate) mod operator;
mod pipeline;
mod publish;
mod registries;
mod route;
pub(crate) mod scheduler;
mod selector;
mod send;
mod subscribe;
mod subscriptions;
pub(crate) mod temporary;
mod transaction;

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

pub(crate) use ack::AckRequest;
pub(crate) use auth::{AdminRole, Principal, Right, Security};
pub(crate) use connection::{ConnectRequest, Connection, Tracked};
pub(crate) use error::ServiceError;
pub(crate) use pipeline::Pipeline;
pub(crate) use selector::parse as parse_selector;
pub(crate) use send::NewMessage;
pub(crate) use subscribe::{SubscribeSpec, Unsubscribe};
pub(crate) use subscriptions::{AckMode, AckRef, DeliveryToken};

use crate::core::{BrokerCore, Control, DestHandle, DurableName};
use crate::model::Destination;
use crate::store::{Record, Recovered, StoreKey, StoredMessage};
use registries::{ClientIds, Durables};

/// Work a request leaves to do: resolves once its effect is complete.
pub(crate) type Work = Pin<Box<dyn Future<Output = Result<(), ServiceError>> + Send>>;

/// What a request leaves pending; `None` when its effect is complete
/// already (so a head with nothing to report need not queue anything).
pub(crate) type Pending = Option<Work>;

/// Nothing pending.
pub(crate) fn ready() -> Pending {
    None
}

/// Recovered messages handed to a destination at a time.
const RESTORE_CHUNK: usize = 4096;

/// The broker service of one master.
pub(crate) struct Service {
    pub(crate) core: Arc<BrokerCore>,
    /// Unique per boot of the broker: connection ids made from it stay
    /// unique across restarts.
    boot: String,
    next_connection: AtomicU64,
    /// Numbers connections for no-local subscriptions.
    next_number: AtomicU64,
    client_ids: ClientIds,
    durables: Durables,
    /// Users and rights.
    pub(crate) security: Arc<Security>,
    /// Connections each user holds (`limits.max-connections-per-user`).
    per_user: Arc<limits::Counts<String>>,
    /// Connections from each IP address (`limits.max-connections-per-address`),
    /// taken by the listeners before the handshake.
    pub(crate) per_address: Arc<limits::Counts<std::net::IpAddr>>,
    /// Live temporary destinations, announced as they come and go.
    pub(crate) temporaries: temporary::Temporaries,
    /// Scheduled delivery; set once, when the service starts serving.
    pub(crate) scheduler: std::sync::OnceLock<scheduler::Scheduler>,
    /// Open client connections, for operators.
    pub(crate) directory: Arc<directory::Directory>,
}

impl Service {
    pub(crate) fn new(core: Arc<BrokerCore>, boot: String, security: Arc<Security>) -> Service {
        Service {
            core,
            security,
            boot,
            next_connection: AtomicU64::new(0),
            next_number: AtomicU64::new(0),
            client_ids: ClientIds::default(),
            durables: Durables::default(),
            per_user: Arc::default(),
            per_address: Arc::default(),
            temporaries: temporary::Temporaries::default(),
            scheduler: std::sync::OnceLock::new(),
            directory: Arc::default(),
        }
    }

    /// What makes this boot of the broker unique (in connection and
    /// message ids).
    pub(crate) fn boot(&self) -> &str {
        &self.boot
    }

    /// A connection id unique across restarts of this broker (it names
    /// temporary queues, which clients may hold on to across a restart).
    pub(crate) fn next_connection_id(&self) -> String {
        let n = self.next_connection.fetch_add(1, Ordering::Relaxed) + 1;
        format!("{}-{n}", self.boot)
    }

    /// Opens a connection for a client that has said who it is. A client id
    /// already connected is refused, unless the new connection may take it
    /// over (`clients.link-stealing`, as ActiveMQ's link stealing).
    pub(crate) async fn connect(
        self: &Arc<Self>,
        req: ConnectRequest,
    ) -> Result<Connection, ServiceError> {
        let principal = match self
            .security
            .authenticate(
                req.peer,
                req.login.as_deref(),
                req.passcode.as_deref(),
                req.tls_subject.as_deref(),
            )
            .await
        {
            Ok(p) => p,
            Err(e) => {
                crate::metrics::Metrics::inc(&self.core.metrics.login_failures_total);
                // The login is the client's claim, logged so an operator
                // can see who is being guessed; the passcode never is.
                tracing::warn!(conn = %req.id, peer = %req.peer, login = ?req.login,
                    tls_subject = ?req.tls_subject, error = %e, "login refused");
                return Err(ServiceError::Login(e));
            }
        };
        // Before the client id is claimed, so that a refusal leaves
        // nothing behind.
        let max = self.core.config.limits.max_connections_per_user;
        let user_slot = match principal.user() {
            Some(user) if max > 0 => match self.per_user.take(user.to_owned(), max) {
                Some(slot) => Some(slot),
                None => {
                    crate::metrics::Metrics::inc(
                        &self.core.metrics.connections_refused_per_user_total,
                    );
                    tracing::warn!(conn = %req.id, peer = %req.peer, user, max,
                        "connection refused: limits.max-connections-per-user reached");
                    return Err(ServiceError::TooManyUserConnections {
                        user: user.to_owned(),
                        max,
                    });
                }
            },
            _ => None,
        };
        if let Some(id) = &req.client_id {
            if id.is_empty() {
                return Err(ServiceError::EmptyClientId);
            }
            if let Err(owner) = self.client_ids.claim(id, &req.kick, principal.user()) {
                let config = &self.core.config;
                let within = Duration::from_millis(config.timeouts.shutdown_ms + 1000);
                // Only the same user may take its client id over: another
                // user cannot kick a connection off by naming its id.
                if !config.clients.link_stealing
                    || owner.user.as_deref() != principal.user()
                    || !self
                        .client_ids
                        .steal(id, &req.kick, principal.user(), within)
                        .await
                {
                    return Err(ServiceError::ClientIdInUse(id.clone()));
                }
            }
        }
        tracing::debug!(conn = %req.id, peer = %req.peer, principal = %principal.describe(),
            tls_subject = ?req.tls_subject, client_id = ?req.client_id,
            "connection bound to a principal");
        let scope = req
            .temp_scope
            .clone()
            .unwrap_or_else(|| temp_scope(&req.id));
        let number = self.next_number.fetch_add(1, Ordering::Relaxed) + 1;
        Ok(Connection::new(
            self.clone(),
            req,
            principal,
            user_slot,
            scope,
            number,
        ))
    }

    /// Hands what recovery found to the destinations, in sequence order, a
    /// chunk at a time, and the scheduled messages to the scheduler, which
    /// it starts.
    pub(crate) async fn restore(self: &Arc<Self>, recovered: Recovered) {
        let core = &self.core;
        for queue in &recovered.queues {
            core.declared(queue);
            if let Err(e) = core.destination(queue) {
                tracing::error!(error = %e, "cannot restore a declared queue");
            }
        }
        let mut topics: HashMap<DurableName, DestHandle> = HashMap::new();
        for s in recovered.subscriptions {
            let topic = s.topic;
            let selector = match s
                .selector
                .as_deref()
                .map(|t| self.stored_selector(t))
                .transpose()
            {
                Ok(selector) => selector.flatten(),
                // Only a broker that parses differently (an older one
                // accepted it) gets here: the subscription keeps its
                // messages and selects nothing out until it is made again.
                Err(e) => {
                    tracing::error!(client_id = %s.client_id, subscription = %s.name, error = %e,
                        "cannot parse a durable subscription's stored selector; it selects everything");
                    None
                }
            };
            let name = DurableName {
                client_id: s.client_id.into(),
                name: s.name.into(),
            };
            match core.destination(&topic) {
                Ok(h) => {
                    let _ = h
                        .control(Control::RestoreSubscription {
                            name: name.clone(),
                            selector,
                        })
                        .await;
                    self.durables.set(&name, Some(topic));
                    topics.insert(name, h);
                }
                Err(e) => tracing::error!(error = %e, "cannot restore durable subscription"),
            }
        }
        let mut chunks: HashMap<StoreKey, Vec<StoredMessage>> = HashMap::new();
        let mut scheduled = Vec::new();
        // Runs of one destination's messages go into one chunk without
        // looking their destination up again (a deep queue is millions).
        let mut run: Option<(StoreKey, Vec<StoredMessage>)> = None;
        for m in recovered.messages.into_sorted() {
            if m.key == StoreKey::Scheduled {
                scheduled.push(scheduler::Entry::recovered(m));
                continue;
            }
            let same = run.as_ref().is_some_and(|(k, _)| *k == m.key);
            if !same && let Some((key, mut chunk)) = run.take() {
                chunks.entry(key).or_default().append(&mut chunk);
            }
            let chunk = match &mut run {
                Some((_, chunk)) => chunk,
                None => {
                    let key = m.key.clone();
                    let chunk = chunks.remove(&key).unwrap_or_default();
                    &mut run.insert((key, chunk)).1
                }
            };
            chunk.push(m);
            if chunk.len() >= RESTORE_CHUNK {
                let full = std::mem::take(chunk);
                self.restore_chunk(&topics, full).await;
            }
        }
        if let Some((key, chunk)) = run {
            chunks.insert(key, chunk);
        }
        for (_, chunk) in chunks {
            if !chunk.is_empty() {
                self.restore_chunk(&topics, chunk).await;
            }
        }
        self.start_scheduler(scheduled);
    }

    /// A connection of the broker's own (the scheduler's firings, an
    /// operator's moves): anything allowed, never listed among client
    /// connections, deliveries nowhere. `login` names who acts through it
    /// in its logs.
    pub(crate) fn broker_connection(
        self: &Arc<Self>,
        id: String,
        login: Option<String>,
    ) -> Connection {
        let (deliveries, _) = tokio::sync::mpsc::unbounded_channel();
        let id: Arc<str> = id.into();
        let scope = temp_scope(&id);
        let req = ConnectRequest {
            id,
            peer: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
            client_id: None,
            login,
            passcode: None,
            tls_subject: None,
            deliveries,
            kick: Arc::default(),
            temp_scope: None,
            wire: directory::Wire::new("internal", ""),
            inflight: Arc::default(),
        };
        let number = self.next_number.fetch_add(1, Ordering::Relaxed) + 1;
        Connection::new(self.clone(), req, Principal::Broker, None, scope, number)
    }

    /// Starts the scheduler (once) with the scheduled messages recovery
    /// found. Its firings go through a connection of the broker's own, as
    /// ActiveMQ's scheduler sends through an internal producer.
    pub(crate) fn start_scheduler(self: &Arc<Self>, recovered: Vec<scheduler::Entry>) {
        if self.scheduler.get().is_some() {
            return;
        }
        let conn = self.broker_connection(format!("{}-scheduler", self.boot), None);
        let _ = self.scheduler.set(scheduler::Scheduler::start(
            self.core.clone(),
            conn,
            recovered,
        ));
    }

    async fn restore_chunk(
        &self,
        topics: &HashMap<DurableName, DestHandle>,
        messages: Vec<StoredMessage>,
    ) {
        let (handle, durable) = match &messages[0].key {
            StoreKey::Queue(name) => match self.core.destination(&Destination::queue(name)) {
                Ok(h) => {
                    // A consumer queue whose declaration a crash lost (its
                    // messages were durable first) is declared again.
                    let queue = Destination::queue(name);
                    if self.core.claim_declaration(&queue) {
                        let record = Record::QueueDeclared { queue };
                        if let Err(e) = self.core.store.record(vec![record]).await {
                            tracing::error!(error = %e, "cannot declare a recovered consumer queue");
                        }
                    }
                    (h, None)
                }
                Err(e) => {
                    tracing::error!(error = %e, "cannot restore recovered messages");
                    return;
                }
            },
            StoreKey::Durable { client_id, name } => {
                let name = DurableName {
                    client_id: client_id.clone(),
                    name: name.clone(),
                };
                match topics.get(&name) {
                    Some(h) => (h.clone(), Some(name)),
                    None => {
                        tracing::error!(client_id = %name.client_id, subscription = %name.name,
                            count = messages.len(), "recovered messages of an unknown durable subscription");
                        return;
                    }
                }
            }
            StoreKey::Scheduled => return,
        };
        let _ = handle.control(Control::Restore { durable, messages }).await;
    }
}

/// 128 random bits in hex; if the system cannot give randomness (it always
/// can on Linux), a hash of the connection id with a per-process random key.
fn temp_scope(conn: &str) -> String {
    let mut bytes = [0u8; 16];
    if getrandom::fill(&mut bytes).is_err() {
        use std::hash::{BuildHasher, RandomState};
        let h = RandomState::new().hash_one(conn);
        bytes[..8].copy_from_slice(&h.to_le_bytes());
        bytes[8..].copy_from_slice(&RandomState::new().hash_one(h).to_le_bytes());
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
pub(crate) mod tests;
