//! Carrying out a dispatcher's [`Effect`]s: moving messages to dead-letter
//! queues, discarding expired ones, recording delivery counts, and dropping
//! records that cannot be read — with the store records that go with each.

use std::sync::Arc;

use super::dispatch::Effect;
use super::registry::BrokerCore;
use crate::config::{DeadLetter, DeadLetterStrategy};
use crate::metrics::Metrics;
use crate::model::{Destination, Message, Properties, Value};
use crate::store::{Record, StoreKey};

/// Header naming the destination a dead-lettered message came from.
pub(crate) const ORIGINAL_DESTINATION: &str = "original-destination";
/// Header saying why a message was dead-lettered (ActiveMQ's name).
pub(crate) const FAILURE_CAUSE: &str = "dlqDeliveryFailureCause";

/// A message that could not be dead-lettered: its destination puts it
/// back in the dispatcher `tag` names.
#[derive(Debug)]
pub(crate) struct PutBack {
    pub(crate) tag: u64,
    pub(crate) message: Arc<Message>,
    pub(crate) stored: bool,
    pub(crate) deliveries: u32,
}

/// Carries out `effects` for the destination `source`. Returns the
/// messages that could not be moved to their dead-letter queue: they stay
/// where they were.
#[must_use = "messages that could not be dead-lettered must be put back"]
pub(crate) async fn settle(
    shared: &Arc<BrokerCore>,
    source: &Destination,
    effects: &mut Vec<Effect>,
) -> Vec<PutBack> {
    // Bookkeeping nobody waits for goes to the store in one batch: if it is
    // lost in a crash, the worst outcome is a message found expired again or
    // a delivery count one lower.
    let mut records = Vec::new();
    let mut put_back = Vec::new();
    // The source's dead-letter policy, looked up once and only when needed.
    let mut policy: Option<DeadLetter> = None;
    let mut policy = move || -> DeadLetter {
        policy
            .get_or_insert_with(|| {
                shared
                    .policies
                    .for_destination(source.kind(), source.name())
                    .dead_letter
            })
            .clone()
    };
    for effect in effects.drain(..) {
        match effect {
            Effect::DeadLetter {
                message,
                reason,
                stored,
                deliveries,
                tag,
            } => {
                tracing::info!(destination = %source, message_id = %message.id, %reason,
                    "dead-lettering message");
                if let Err(message) = dead_letter(shared, &policy(), stored, message, reason).await
                {
                    put_back.push(PutBack {
                        tag,
                        message,
                        stored,
                        deliveries,
                    });
                }
            }
            Effect::Expired {
                seq,
                message,
                stored,
                tag,
            } => {
                Metrics::inc(&shared.metrics.messages_expired_total);
                let policy = policy();
                if !policy.expired || policy.strategy == DeadLetterStrategy::Discard {
                    if stored {
                        records.push(Record::Remove { seq });
                    }
                    continue;
                }
                let message = match message {
                    Some(m) => Some(m),
                    None => match shared.store.load(vec![seq]).await.pop() {
                        Some((_, Ok(m))) => Some(m),
                        _ => None,
                    },
                };
                match message {
                    Some(m) => {
                        if let Err(message) =
                            dead_letter(shared, &policy, stored, m, "expired".to_owned()).await
                        {
                            put_back.push(PutBack {
                                tag,
                                message,
                                stored,
                                deliveries: 0,
                            });
                        }
                    }
                    None => {
                        tracing::error!(destination = %source, seq, "expired message unreadable; dropped");
                        records.push(Record::Remove { seq });
                    }
                }
            }
            Effect::Discarded(n) => {
                Metrics::add(&shared.metrics.messages_discarded_total, n);
            }
            Effect::SlowSubscriberClosed => {
                Metrics::inc(&shared.metrics.slow_subscribers_disconnected_total);
            }
            Effect::Deliveries { seq, deliveries } => {
                records.push(Record::Redelivered { seq, deliveries });
            }
            Effect::Delayed {
                seq,
                deliveries,
                until_ms,
            } => {
                records.push(Record::Delayed {
                    seq,
                    deliveries,
                    until_ms,
                });
            }
            Effect::Lost { seq, error } => {
                tracing::error!(destination = %source, seq, %error,
                    "A STORED MESSAGE COULD NOT BE READ BACK and is dropped");
                records.push(Record::Remove { seq });
            }
        }
    }
    if !records.is_empty()
        && let Err(e) = shared.store.record(records).await
    {
        tracing::warn!(error = %e, "could not record expiry or delivery counts");
    }
    put_back
}

/// Moves a message to its dead-letter queue as `policy` says (or drops
/// it: the discard strategy, or a non-persistent message the policy does
/// not dead-letter); gives it back if that cannot be done (the queue
/// cannot be created, the store refuses the move), so that it stays where
/// it was rather than being lost.
async fn dead_letter(
    shared: &Arc<BrokerCore>,
    policy: &DeadLetter,
    stored: bool,
    message: Arc<Message>,
    reason: String,
) -> Result<(), Arc<Message>> {
    let dlq = match policy.strategy {
        _ if !message.persistent && !policy.non_persistent => None,
        // A name too long for the prefix is shortened by a hash (see
        // `Destination::dead_letter`).
        DeadLetterStrategy::Individual => Some(message.destination.dead_letter(&policy.prefix)),
        DeadLetterStrategy::Shared => Some(Destination::queue(&policy.queue)),
        DeadLetterStrategy::Discard => None,
    };
    let Some(dlq) = dlq else {
        return discard(shared, stored, message, &reason).await;
    };
    let handle = match shared.destination(&dlq) {
        Ok(h) => h,
        Err(e) => {
            Metrics::inc(&shared.metrics.dead_letter_failures_total);
            tracing::error!(message_id = %message.id, dead_letter_queue = %dlq, error = %e,
                "cannot create the dead-letter queue: the message stays where it was");
            return Err(message);
        }
    };
    // The original destination by its canonical name (see `model`).
    let properties: Properties = message
        .properties
        .iter()
        .filter(|(k, _)| *k != ORIGINAL_DESTINATION && *k != FAILURE_CAUSE)
        .map(|(k, v)| (k.to_owned(), v.clone()))
        .chain([
            (
                ORIGINAL_DESTINATION.to_owned(),
                Value::String(message.destination.to_string()),
            ),
            (FAILURE_CAUSE.to_owned(), Value::String(reason)),
        ])
        .collect();
    let copy = Arc::new(
        Message {
            seq: shared.next_seq(),
            id: message.id.clone(),
            destination: dlq.clone(),
            properties,
            body: message.body.clone(),
            persistent: message.persistent,
            priority: message.priority,
            expires: 0,
            timestamp: message.timestamp,
            charge: crate::memory::Charge::none(),
        }
        .charged(&shared.memory),
    );
    let mut batch = Vec::with_capacity(2);
    if stored {
        batch.push(Record::Remove { seq: message.seq });
    }
    if copy.persistent && handle.stores() {
        batch.push(Record::Add {
            key: StoreKey::Queue(dlq.name().into()),
            message: copy.clone(),
            dedup: None,
        });
    }
    let completion = if batch.is_empty() {
        None
    } else {
        match shared.store.submit(batch).await {
            Ok(c) => Some(c),
            Err(e) => {
                Metrics::inc(&shared.metrics.dead_letter_failures_total);
                tracing::error!(message_id = %message.id, error = %e,
                    "cannot dead-letter the message: it stays where it was");
                return Err(message);
            }
        }
    };
    Metrics::inc(&shared.metrics.messages_dead_lettered_total);
    // The dead-letter queue may be applying flow control; never make this
    // destination wait for another one.
    let core = shared.clone();
    shared.tasks.spawn(async move {
        if let Some(c) = completion
            && let Err(e) = c.await
        {
            tracing::error!(error = %e, "cannot dead-letter message");
            return;
        }
        let _ = core
            .publish(&handle, copy.clone(), false, super::Envelope::of(&copy, 0))
            .await;
    });
    Ok(())
}

/// Drops a message that would have been dead-lettered (the discard
/// strategy, or a non-persistent message its policy does not dead-letter),
/// counting it; gives it back if the store refuses its removal.
async fn discard(
    shared: &Arc<BrokerCore>,
    stored: bool,
    message: Arc<Message>,
    reason: &str,
) -> Result<(), Arc<Message>> {
    if stored {
        // Not waited for, as a dead-lettering's move is not: a crash before
        // it is durable brings the message back, to be discarded again.
        if let Err(e) = shared
            .store
            .submit(vec![Record::Remove { seq: message.seq }])
            .await
        {
            Metrics::inc(&shared.metrics.dead_letter_failures_total);
            tracing::error!(message_id = %message.id, error = %e,
                "cannot discard the message: it stays where it was");
            return Err(message);
        }
    }
    Metrics::inc(&shared.metrics.messages_dead_letter_discarded_total);
    tracing::info!(destination = %message.destination, message_id = %message.id, %reason,
        "discarded instead of dead-lettered (its policy)");
    Ok(())
}
