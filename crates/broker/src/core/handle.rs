//! The handle sessions use to reach a destination actor.

use std::sync::Arc;

use serde::Serialize;
use tokio::sync::{mpsc, oneshot};

use super::groups::GroupMember;
use super::{ConsumerId, ConsumerReg, DispatchStats};
use crate::model::{Destination, DestinationKind, Message};
use crate::store::{StoreError, StoreKey, StoredMessage};

/// A durable topic subscription's identity: the subscriber's client id and
/// the subscription name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct DurableName {
    pub(crate) client_id: std::sync::Arc<str>,
    pub(crate) name: std::sync::Arc<str>,
}

impl DurableName {
    pub(crate) fn store_key(&self) -> StoreKey {
        StoreKey::Durable {
            client_id: self.client_id.clone(),
            name: self.name.clone(),
        }
    }
}

/// Why a topic could not create or remove a durable subscription.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DurableError {
    /// Another consumer is attached to it.
    #[error("durable subscription '{name}' of client '{client_id}' already has a consumer")]
    InUse { client_id: String, name: String },
    /// Removing it needs its consumer detached first.
    #[error("durable subscription '{name}' has a consumer; unsubscribe it first")]
    Attached { name: String },
    /// The topic has no such subscription.
    #[error("no durable subscription '{name}' for client '{client_id}' on {topic}")]
    NotFound {
        client_id: String,
        name: String,
        topic: String,
    },
    /// Asked of a queue (the service checks the kind first).
    #[error("durable subscriptions are for topics")]
    NotATopic,
    /// The store could not record it.
    #[error("cannot create durable subscription: {0}")]
    NotCreated(#[source] StoreError),
    /// The store could not record its removal.
    #[error("cannot remove durable subscription: {0}")]
    NotRemoved(#[source] StoreError),
}

/// Requests a destination handles ahead of new messages: a destination
/// always drains its control channel, even while producers are held back by
/// flow control, so acknowledgements can always make room.
#[derive(Debug)]
pub(crate) enum Control {
    Subscribe {
        consumer: ConsumerReg,
        done: oneshot::Sender<()>,
    },
    Unsubscribe {
        consumer: ConsumerId,
        done: Option<oneshot::Sender<()>>,
    },
    Ack {
        consumer: ConsumerId,
        seqs: Vec<u64>,
    },
    Nack {
        consumer: ConsumerId,
        seqs: Vec<u64>,
        /// The client gave up on these (a JMS client's poison
        /// acknowledgement after its own redeliveries): dead-letter them
        /// now rather than redeliver.
        poison: bool,
    },
    /// The consumer's prefetch changes.
    Prefetch { consumer: ConsumerId, prefetch: u32 },
    /// Acknowledged or rejected inside a transaction; held until it ends.
    Hold {
        consumer: ConsumerId,
        seqs: Vec<u64>,
    },
    /// The transaction acknowledging these committed.
    Commit {
        consumer: ConsumerId,
        seqs: Vec<u64>,
    },
    /// The transaction holding these rolled back, or committed a NACK.
    Rollback {
        consumer: ConsumerId,
        seqs: Vec<u64>,
    },
    Stats {
        reply: oneshot::Sender<DestinationStats>,
    },
    /// Recovery's messages for this queue (or the durable subscription
    /// `durable` names) follow, in [`Control::Restore`] chunks, while the
    /// broker serves: hold deliveries and queue new messages behind them
    /// until [`Control::RestoreEnd`].
    RestoreBegin { durable: Option<DurableName> },
    /// The last of recovery's messages for it came: deliveries start.
    RestoreEnd { durable: Option<DurableName> },
    /// Messages found by recovery (a queue's, or a durable subscription's
    /// when `durable` names one).
    Restore {
        durable: Option<DurableName>,
        messages: Vec<StoredMessage>,
    },
    /// A durable subscription found by recovery, with its selector.
    RestoreSubscription {
        name: DurableName,
        selector: Option<Arc<dyn super::dispatch::Select>>,
    },
    /// Attach a queue browser: it is shown the queue's messages of this
    /// moment without taking them, then told the end.
    Browse {
        consumer: ConsumerReg,
        done: oneshot::Sender<()>,
    },
    /// Attach a consumer to a durable subscription, creating it (and
    /// recording it in the store) if it does not exist. One asked for with
    /// another selector, or removed, while recovery's messages for it are
    /// still coming waits for the last of them.
    SubscribeDurable {
        name: DurableName,
        consumer: ConsumerReg,
        done: oneshot::Sender<Result<(), DurableError>>,
    },
    /// Remove a durable subscription and the messages kept for it.
    RemoveDurable {
        name: DurableName,
        done: oneshot::Sender<Result<(), DurableError>>,
    },
    /// Drop everything and stop (temporary queues).
    Delete,
    /// An operator takes messages out (a purge, a move): ready and delayed
    /// ones whose seq is in `only`, or any, at most `max`. A queue only; a
    /// topic answers none.
    Take {
        only: Option<std::collections::HashSet<u64>>,
        max: usize,
        reply: oneshot::Sender<Vec<super::dispatch::Taken>>,
    },
    /// Messages an operator took and could not move go back.
    GiveBack { taken: Vec<super::dispatch::Taken> },
    /// An operator deletes the destination: it answers the seqs of every
    /// stored message it held (the caller removes them from the store),
    /// drops everything and stops.
    Destroy { reply: oneshot::Sender<Vec<u64>> },
    /// A topic lists its durable subscriptions (a queue answers none).
    Durables {
        reply: oneshot::Sender<Vec<DurableView>>,
    },
    /// Look again for deliveries to make: a subscription's shared credit
    /// was freed elsewhere.
    Wake,
}

impl Control {
    /// Whether this is addressed to a consumer or subscription the
    /// destination already has (which a destination with none can ignore).
    pub(crate) fn needs_existing(&self) -> bool {
        matches!(
            self,
            Control::Unsubscribe { .. }
                | Control::Ack { .. }
                | Control::Nack { .. }
                | Control::Prefetch { .. }
                | Control::Hold { .. }
                | Control::Commit { .. }
                | Control::Rollback { .. }
                | Control::Delete
        )
    }
}

/// A destination's state, for the admin API.
#[derive(Debug, Clone, Serialize)]
pub struct DestinationStats {
    /// The destination as clients name it.
    pub destination: String,
    /// `queue`, `topic`, `temp-queue` or `temp-topic`.
    pub kind: &'static str,
    /// Its name without the kind.
    pub name: String,
    /// Messages it holds: ready, in flight and delayed.
    pub depth: usize,
    /// Producers that name it (OpenWire's; filled in by the admin API,
    /// which sees the service's directory).
    pub producers: usize,
    /// How long ago the oldest message it holds was sent, as far as it can
    /// tell cheaply (see `Dispatcher::oldest_timestamp`).
    pub oldest_age_ms: Option<u64>,
    /// Its counters (for a topic: summed over its subscriptions, with
    /// `enqueued` counting messages published).
    #[serde(flatten)]
    pub dispatch: DispatchStats,
}

impl DestinationStats {
    pub(crate) fn new(
        destination: &Destination,
        dispatch: DispatchStats,
        oldest: Option<u64>,
    ) -> DestinationStats {
        let now = crate::model::now_ms();
        DestinationStats {
            destination: destination.to_string(),
            kind: match destination.kind() {
                DestinationKind::Queue => "queue",
                DestinationKind::Topic => "topic",
                DestinationKind::TempQueue => "temp-queue",
                DestinationKind::TempTopic => "temp-topic",
            },
            name: destination.name().to_owned(),
            depth: dispatch.ready + dispatch.inflight + dispatch.delayed,
            producers: 0,
            oldest_age_ms: oldest.map(|t| now.saturating_sub(t)),
            dispatch,
        }
    }
}

/// A durable topic subscription, for the admin API.
#[derive(Debug, Clone, Serialize)]
pub struct DurableView {
    /// The subscriber's client id.
    pub client_id: String,
    /// The subscription's name.
    pub name: String,
    /// The topic, as clients name it.
    pub topic: String,
    /// Its message selector, as written.
    pub selector: Option<String>,
    /// A consumer is attached.
    pub active: bool,
    /// Messages kept for it: ready, in flight and delayed.
    pub pending: usize,
}

/// A message on its way into a destination. `accepted` is answered once the
/// destination has taken the message in (queued it, or fanned it out to the
/// topic's current subscribers), which is when a SEND's receipt is due:
/// sitting in the publish channel does not count.
#[derive(Debug)]
pub(crate) struct Publish {
    pub(crate) message: Arc<Message>,
    pub(crate) accepted: Option<oneshot::Sender<()>>,
    pub(crate) envelope: Envelope,
}

/// What a destination needs to know of a message besides the message, told
/// by whoever hands it over.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Envelope {
    /// The number of the connection that sent it (0: the broker itself),
    /// for no-local subscribers.
    pub(crate) origin: u64,
    /// Its message group, worked out when the message was made, while its
    /// properties are at hand, not by the queue's actor, which every message
    /// of the queue goes through.
    pub(crate) group: Option<GroupMember>,
}

impl Envelope {
    /// The envelope of message `m` sent by connection `origin`.
    pub(crate) fn of(m: &Message, origin: u64) -> Envelope {
        Envelope {
            origin,
            group: GroupMember::of(m),
        }
    }
}

impl Publish {
    /// Tells the publisher the message is in.
    pub(crate) fn accept(self) -> Arc<Message> {
        if let Some(a) = self.accepted {
            let _ = a.send(());
        }
        self.message
    }
}

/// The destination no longer exists (a deleted temporary queue, a
/// reclaimed idle destination, or the broker is stopping).
#[derive(Debug, Clone, thiserror::Error)]
#[error("destination {0} no longer exists")]
pub(crate) struct Gone(pub(crate) String);

/// Why a message was not published.
#[derive(Debug, Clone, thiserror::Error)]
pub(crate) enum PublishError {
    /// Never handed over: the destination had gone (safe to look it up
    /// again and retry).
    #[error(transparent)]
    Gone(Gone),
    /// Handed over, but the destination did not take it in (it stopped, or
    /// could not store copies for durable subscribers).
    #[error("destination {0} did not accept the message")]
    NotAccepted(String),
}

/// A cheap, cloneable way to talk to one destination.
#[derive(Debug, Clone)]
pub(crate) struct DestHandle {
    destination: Destination,
    /// Which actor: a destination reclaimed and made again is another.
    id: u64,
    control: mpsc::Sender<Control>,
    publish: mpsc::Sender<Publish>,
}

impl DestHandle {
    pub(crate) fn new(
        destination: Destination,
        id: u64,
        control: mpsc::Sender<Control>,
        publish: mpsc::Sender<Publish>,
    ) -> DestHandle {
        DestHandle {
            destination,
            id,
            control,
            publish,
        }
    }

    /// The actor's id.
    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    /// Hands over a message as it is (its publisher may be waiting on
    /// `accepted`); gives it back if this destination is gone.
    pub(crate) async fn forward(&self, p: Publish) -> Result<(), Publish> {
        self.publish.send(p).await.map_err(|e| e.0)
    }

    /// Sends a control message; gives it back if this destination is gone
    /// (reclaimed: the caller looks the destination up again).
    pub(crate) async fn control_or_back(&self, c: Control) -> Result<(), Control> {
        self.control.send(c).await.map_err(|e| e.0)
    }

    pub(crate) fn destination(&self) -> &Destination {
        &self.destination
    }

    /// Whether persistent messages sent here are written to the store.
    /// Temporary destinations die with their connection, and topics keep
    /// nothing for absent subscribers, so only queues store.
    pub(crate) fn stores(&self) -> bool {
        self.destination.kind() == DestinationKind::Queue
    }

    /// Enqueues a message; waits while the destination is over its memory
    /// limit (producer flow control). With `confirm`, also waits until the
    /// destination has taken the message in; messages published earlier on
    /// the same handle are in by then too (the channel is FIFO).
    pub(crate) async fn publish(
        &self,
        message: Arc<Message>,
        confirm: bool,
        envelope: Envelope,
    ) -> Result<(), PublishError> {
        let (accepted, taken) = if confirm {
            let (tx, rx) = oneshot::channel();
            (Some(tx), Some(rx))
        } else {
            (None, None)
        };
        self.publish
            .send(Publish {
                message,
                accepted,
                envelope,
            })
            .await
            .map_err(|_| PublishError::Gone(Gone(self.destination.to_string())))?;
        if let Some(rx) = taken {
            rx.await
                .map_err(|_| PublishError::NotAccepted(self.destination.to_string()))?;
        }
        Ok(())
    }

    pub(crate) async fn control(&self, c: Control) -> Result<(), Gone> {
        self.control
            .send(c)
            .await
            .map_err(|_| Gone(self.destination.to_string()))
    }

    /// Sends a control message without waiting (used where waiting is not
    /// possible, e.g. from a synchronous context); `false` if it could not.
    pub(crate) fn try_control(&self, c: Control) -> bool {
        self.control.try_send(c).is_ok()
    }
}
