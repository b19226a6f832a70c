//! Carrying out a dispatcher's [`Effect`]s: moving messages to dead-letter
//! queues, discarding expired ones, recording delivery counts, and dropping
//! records that cannot be read — with the store records that go with each.

use std::sync::Arc;

use super::dispatch::Effect;
use super::{Destination, Message};
use crate::broker::Shared;
use crate::metrics::Metrics;
use crate::store::{Record, StoreKey};

/// Header naming the destination a dead-lettered message came from.
pub(crate) const ORIGINAL_DESTINATION: &str = "original-destination";
/// Header saying why a message was dead-lettered (ActiveMQ's name).
pub(crate) const FAILURE_CAUSE: &str = "dlqDeliveryFailureCause";

/// Carries out `effects` for the destination `source`.
pub(crate) async fn settle(shared: &Arc<Shared>, source: &Destination, effects: &mut Vec<Effect>) {
    // Bookkeeping nobody waits for goes to the store in one batch: if it is
    // lost in a crash, the worst outcome is a message found expired again or
    // a delivery count one lower.
    let mut records = Vec::new();
    for effect in effects.drain(..) {
        match effect {
            Effect::DeadLetter {
                message,
                reason,
                stored,
            } => {
                tracing::info!(destination = %source, message_id = %message.id, %reason,
                    "dead-lettering message");
                dead_letter(shared, stored, message, reason).await;
            }
            Effect::Expired {
                seq,
                message,
                stored,
            } => {
                Metrics::inc(&shared.metrics.messages_expired_total);
                if !shared.config.destinations.dead_letter_expired {
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
                    Some(m) => dead_letter(shared, stored, m, "expired".to_owned()).await,
                    None => {
                        tracing::error!(destination = %source, seq, "expired message unreadable; dropped");
                        records.push(Record::Remove { seq });
                    }
                }
            }
            Effect::Deliveries { seq, deliveries } => {
                records.push(Record::Redelivered { seq, deliveries });
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
}

async fn dead_letter(shared: &Arc<Shared>, stored: bool, message: Arc<Message>, reason: String) {
    Metrics::inc(&shared.metrics.messages_dead_lettered_total);
    let dlq = message
        .destination
        .dead_letter(&shared.config.destinations.dead_letter_prefix);
    let handle = match shared.destination(&dlq) {
        Ok(h) => h,
        Err(e) => {
            tracing::error!(message_id = %message.id, error = %e,
                "cannot create dead-letter queue; the message stays in the store but leaves memory");
            return;
        }
    };
    let mut headers: Vec<(String, String)> = message
        .headers
        .iter()
        .filter(|(k, _)| k != ORIGINAL_DESTINATION && k != FAILURE_CAUSE)
        .cloned()
        .collect();
    headers.push((
        ORIGINAL_DESTINATION.to_owned(),
        message.destination.to_string(),
    ));
    headers.push((FAILURE_CAUSE.to_owned(), reason));
    let copy = Arc::new(Message {
        seq: shared.next_seq(),
        id: message.id.clone(),
        destination: dlq.clone(),
        headers,
        body: message.body.clone(),
        persistent: message.persistent,
        priority: message.priority,
        expires: 0,
        timestamp: message.timestamp,
    });
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
                tracing::error!(error = %e, "cannot dead-letter message");
                return;
            }
        }
    };
    // The dead-letter queue may be applying flow control; never make this
    // destination wait for another one.
    tokio::spawn(async move {
        if let Some(c) = completion
            && let Err(e) = c.await
        {
            tracing::error!(error = %e, "cannot dead-letter message");
            return;
        }
        let _ = handle.publish(copy, false).await;
    });
}
