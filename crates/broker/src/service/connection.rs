//! One client connection as the broker service sees it, whatever protocol
//! it speaks: who it is, its subscriptions and what they have delivered, its
//! transactions and temporary queues.
//!
//! A `Connection` is owned by its protocol session's task and used through
//! `&mut self`: no locks, and its state dies with the session (see
//! [`Connection::close`]).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;

use super::error::ServiceError;
use super::limits::{SendRate, Slot};
use super::subscriptions::{AckMode, Subscriptions};
use super::transaction::Transaction;
use super::{Pending, Principal, Right, Service};
use crate::core::{ConsumerId, Control, Delivery, DeliveryTx, DestHandle, Kick, Note, Seq, SubKey};
use crate::metrics::Metrics;
use crate::model::{Destination, NamePattern};
use crate::store::Record;

/// What a protocol head knows when its client says who it is.
pub(crate) struct ConnectRequest {
    /// The connection's id (see [`Service::next_connection_id`]).
    pub(crate) id: Arc<str>,
    pub(crate) peer: SocketAddr,
    /// The client id, which durable subscriptions are named by and which
    /// only one connection at a time may have.
    pub(crate) client_id: Option<String>,
    /// The credentials offered.
    pub(crate) login: Option<String>,
    pub(crate) passcode: Option<String>,
    /// The subject of the client certificate the TLS handshake verified
    /// (mutual TLS), e.g. `CN=app1,O=Acme`.
    pub(crate) tls_subject: Option<String>,
    /// Where this connection's deliveries go.
    pub(crate) deliveries: DeliveryTx,
    /// What closes the connection when the broker must (a too slow
    /// subscriber, a client id taken over).
    pub(crate) kick: Arc<Kick>,
    /// The scope of its temporary destinations' names, when the protocol
    /// has the client name them (OpenWire: `CONNECTION-ID:N`, unique by
    /// the client's connection id); `None` for a secret random one.
    pub(crate) temp_scope: Option<String>,
    /// The protocol and version, for the operators' directory.
    pub(crate) wire: super::directory::Wire,
    /// Its requests whose outcome is pending (the head's pipeline), for
    /// the operators' directory.
    pub(crate) inflight: Arc<AtomicUsize>,
}

/// How a protocol head must treat a delivery it is about to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Tracked {
    /// An auto-acknowledged subscription: acknowledged once written (see
    /// [`Connection::written`]).
    Auto,
    /// The client acknowledges it by this token.
    Token(super::DeliveryToken),
    /// A queue browser's view of a message: nothing to acknowledge.
    Browsed,
    /// A queue browser has seen its whole snapshot: the head tells the
    /// client so (STOMP: a MESSAGE with `browser:end`); there is no message.
    EndOfBrowse,
    /// The subscription was shown this message already (through another
    /// of its destinations): the head writes nothing.
    Duplicate,
}

pub(crate) struct Connection {
    pub(super) service: Arc<Service>,
    pub(super) id: Arc<str>,
    pub(super) principal: Principal,
    /// The principal may do anything: no request needs a check.
    unrestricted: bool,
    pub(super) client_id: Option<String>,
    /// The scope of this connection's temporary queue names: 128 random
    /// bits, shown to nobody, so the broker-wide name of a temporary queue
    /// cannot be guessed — only those the owner hands it to can send to it.
    pub(super) temp_scope: Arc<str>,
    /// The client chose the scope (OpenWire's connection id), so the names
    /// are no secret and may be announced.
    pub(super) public_temp_names: bool,
    pub(super) subs: Subscriptions,
    pub(super) txs: HashMap<String, Transaction>,
    /// Temporary queues and topics this connection made (deleted when it
    /// closes).
    pub(super) temps: Vec<Destination>,
    /// Broker-wide number of this connection: what a no-local subscription
    /// compares a message's origin with.
    pub(super) number: u64,
    pub(super) deliveries: DeliveryTx,
    pub(super) kick: Arc<Kick>,
    /// Auto-acknowledged deliveries written, to acknowledge once the write
    /// to the socket has succeeded: the registration, the message and
    /// whether the store must forget it (not for what a browser saw).
    auto_acks: Vec<(ConsumerId, SubKey, Seq, bool)>,
    /// Store batches of this connection still waiting for room in a full
    /// store: later ones wait behind them.
    pub(super) waiting_for_room: Arc<AtomicUsize>,
    /// The user's connection slot (`limits.max-connections-per-user`),
    /// given back when the connection is dropped.
    _user_slot: Option<Slot<String>>,
    /// `limits.max-send-rate-per-connection`, if set.
    pub(super) send_rate: Option<SendRate>,
    /// Its place in the directory of connections (none for the broker's
    /// own connections).
    _listing: Option<super::directory::Listing>,
    /// SENDs of this connection dropped as duplicates (a failover client's
    /// replays of what it had stored already), told to the client on its
    /// receipts so it can say how many it resent for nothing.
    pub(super) duplicates_dropped: Arc<std::sync::atomic::AtomicU64>,
}

impl Connection {
    pub(super) fn new(
        service: Arc<Service>,
        req: ConnectRequest,
        principal: Principal,
        user_slot: Option<Slot<String>>,
        temp_scope: String,
        number: u64,
    ) -> Connection {
        let rate = service.core.config.limits.max_send_rate_per_connection;
        let shown = Arc::new(super::directory::Shown::default());
        let listing = (!matches!(principal, Principal::Broker)).then(|| {
            service.directory.list(super::directory::Entry {
                number,
                id: req.id.clone(),
                peer: req.peer,
                wire: req.wire.clone(),
                user: principal.user().map(str::to_owned),
                client_id: req.client_id.clone(),
                connected_at_ms: crate::model::now_ms(),
                kick: req.kick.clone(),
                shown: shown.clone(),
                inflight: req.inflight.clone(),
            })
        });
        Connection {
            _listing: listing,
            duplicates_dropped: Arc::default(),
            _user_slot: user_slot,
            // The broker's own sends (the scheduler's firings) are not
            // held back: their senders were, when they sent.
            send_rate: (rate > 0 && !matches!(principal, Principal::Broker))
                .then(|| SendRate::new(rate)),
            unrestricted: service.security.unrestricted(&principal),
            number,
            service,
            id: req.id,
            principal,
            client_id: req.client_id,
            public_temp_names: req.temp_scope.is_some(),
            temp_scope: temp_scope.into(),
            subs: Subscriptions::new(shown),
            txs: HashMap::new(),
            temps: Vec::new(),
            deliveries: req.deliveries,
            kick: req.kick,
            auto_acks: Vec::new(),
            waiting_for_room: Arc::default(),
        }
    }

    /// The scope that names this connection's temporary queues (shared,
    /// not copied: heads need it for every frame naming a destination).
    pub(crate) fn temp_scope(&self) -> Arc<str> {
        self.temp_scope.clone()
    }

    /// How many of its SENDs were dropped as duplicates so far.
    pub(crate) fn duplicates_dropped(&self) -> u64 {
        self.duplicates_dropped
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    pub(crate) fn client_id(&self) -> Option<&str> {
        self.client_id.as_deref()
    }

    /// Whether this connection's principal has `right` on `dest` and, if
    /// using `dest` would create it, the admin right as well (ActiveMQ's
    /// rule: making a destination is administering it). A wildcard name
    /// creates nothing.
    pub(super) fn authorize(&self, right: Right, dest: &Destination) -> Result<(), ServiceError> {
        if self.unrestricted {
            return Ok(());
        }
        let security = &self.service.security;
        let creates = || {
            !NamePattern::is_wildcard(dest.name())
                && self.service.core.existing_destination(dest).is_none()
        };
        security
            .authorize(&self.principal, right, dest)
            .and_then(|()| {
                if creates() {
                    security.authorize(&self.principal, Right::Admin, dest)
                } else {
                    Ok(())
                }
            })
            .map_err(|denied| {
                Metrics::inc(&self.service.core.metrics.authorization_denied_total);
                tracing::info!(conn = %self.id, principal = %self.principal.describe(),
                    destination = %dest, right = denied.right.as_str(), "request refused: not authorized");
                ServiceError::Denied(denied)
            })
    }

    /// Gets or creates a destination, remembering our temporary ones.
    pub(super) fn destination(&mut self, dest: &Destination) -> Result<DestHandle, ServiceError> {
        let handle = self.service.core.destination(dest)?;
        if dest.is_temp_of(&self.temp_scope) && !self.temps.contains(dest) {
            self.temps.push(dest.clone());
            self.temporary_created(dest);
        }
        Ok(handle)
    }

    /// Asks the store to remember `dest` if it is a virtual topic's
    /// consumer queue it does not know yet, so that the queue keeps
    /// receiving its topic's messages across a restart or a takeover even
    /// while empty. Returns what resolves once the declaration is durable
    /// (batches are durable in order: anything this connection writes
    /// later is durable after it).
    pub(super) async fn declare(&self, dest: &Destination) -> Result<Pending, ServiceError> {
        let core = self.service.core.clone();
        if !core.claim_declaration(dest) {
            return Ok(None);
        }
        let record = Record::QueueDeclared {
            queue: dest.clone(),
        };
        let completion = match core.store.submit(vec![record]).await {
            Ok(c) => c,
            Err(e) => {
                core.undeclared(dest);
                return Err(ServiceError::NotStored(e));
            }
        };
        let dest = dest.clone();
        Ok(Some(Box::pin(async move {
            completion.await.map(|_| ()).map_err(|e| {
                core.undeclared(&dest);
                ServiceError::NotStored(e)
            })
        })))
    }

    /// A delivery is about to be written to the client: how to treat it,
    /// or `None` if its subscription has ended (its destination has taken
    /// the message back already, so it must not be written).
    pub(crate) fn delivering(&mut self, d: &Delivery) -> Option<Tracked> {
        let sub = self.subs.get_mut(d.sub)?;
        if sub.browser {
            if d.note == Note::EndOfBrowse {
                return Some(Tracked::EndOfBrowse);
            }
            // What a browser has seen costs it credit until written.
            sub.browsed(d.message.id.clone());
            self.auto_acks
                .push((d.consumer, d.sub, d.message.seq, false));
            return Some(Tracked::Browsed);
        }
        if let Some(recent) = &mut sub.recent
            && !recent.first_sight(d.message.seq)
        {
            // The same message through a second of its destinations: taken
            // there at once, shown once.
            self.auto_acks
                .push((d.consumer, d.sub, d.message.seq, d.stored));
            return Some(Tracked::Duplicate);
        }
        let ack = sub.ack;
        let m = &self.service.core.metrics;
        Metrics::inc(&m.messages_delivered_total);
        if d.deliveries > 1 {
            Metrics::inc(&m.messages_redelivered_total);
        }
        if ack == AckMode::Auto {
            self.auto_acks
                .push((d.consumer, d.sub, d.message.seq, d.stored));
            return Some(Tracked::Auto);
        }
        let token = self.subs.track(
            d.sub,
            d.consumer,
            d.message.seq,
            d.message.id.clone(),
            d.stored,
        );
        Some(Tracked::Token(token))
    }

    /// The client's id for subscription `key`.
    pub(crate) fn subscription_id(&self, key: SubKey) -> Option<&str> {
        self.subs.get(key).map(|s| s.id.as_str())
    }

    /// What the protocol head wrote has reached the socket: auto
    /// acknowledgements take effect.
    pub(crate) async fn written(&mut self) {
        if self.auto_acks.is_empty() {
            return;
        }
        // On the heap: every session awaits this after every step, so
        // inline its state would sit in every idle connection's task.
        Box::pin(self.take_auto_acks()).await;
    }

    async fn take_auto_acks(&mut self) {
        let mut acks = std::mem::take(&mut self.auto_acks);
        acks.sort_by_key(|(consumer, _, _, _)| *consumer);
        let mut removes = Vec::new();
        for group in acks.chunk_by(|a, b| a.0 == b.0) {
            let (consumer, key) = (group[0].0, group[0].1);
            let Some(sub) = self.subs.get(key) else {
                continue;
            };
            let Some(handle) = sub.registrations.handle_of(consumer) else {
                continue;
            };
            let seqs: Vec<Seq> = group.iter().map(|(_, _, seq, _)| *seq).collect();
            for (_, _, seq, remove) in group {
                if *remove {
                    removes.push(Record::Remove { seq: *seq });
                }
            }
            if !sub.browser {
                Metrics::add(
                    &self.service.core.metrics.messages_acked_total,
                    seqs.len() as u64,
                );
            }
            let n = seqs.len();
            let credit = sub.credit.clone();
            let _ = handle.control(Control::Ack { consumer, seqs }).await;
            if let Some(c) = credit {
                c.release(n).await;
            }
        }
        if !removes.is_empty() {
            // Nobody waits for these: after a crash before they are durable
            // the messages are redelivered, which auto mode allows.
            let _ = self.service.core.store.record(removes).await;
        }
    }

    /// Ends the connection: transactions roll back, subscriptions end
    /// (their unacknowledged messages are redelivered), temporary queues
    /// are deleted and the client id is released — before the client
    /// hears the end, so one that reconnects at once finds its client id
    /// free.
    pub(crate) async fn close(&mut self) {
        for (_, tx) in self.txs.drain() {
            tx.roll_back().await;
        }
        for sub in self.subs.drain() {
            self.end_subscription(sub, None).await;
        }
        for dest in std::mem::take(&mut self.temps) {
            self.service.core.delete_destination(&dest);
            self.temporary_deleted(&dest);
        }
        if let Some(id) = self.client_id.take() {
            self.service.client_ids.release(&id);
        }
        tracing::trace!(conn = %self.id, principal = ?self.principal, "connection state released");
    }
}
