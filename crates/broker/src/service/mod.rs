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
mod restore;
mod route;
pub(crate) mod scheduler;
mod selector;
mod send;
mod subscribe;
mod subscriptions;
pub(crate) mod temporary;
mod transaction;

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

use crate::core::BrokerCore;
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
