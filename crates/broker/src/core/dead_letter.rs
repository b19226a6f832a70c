//! Carrying out a dispatcher's [`Effect`]s: moving messages to dead-letter
//! queues and discarding expired ones, with the store records that go with
//! each.

use std::sync::Arc;

use super::dispatch::Effect;
use super::{Destination, Message};
use crate::broker::Shared;
use crate::metrics::Metrics;
use crate::store::Record;

/// Header naming the destination a dead-lettered message came from.
pub(crate) const ORIGINAL_DESTINATION: &str = "original-destination";
/// Header saying why a message was dead-lettered (ActiveMQ's name).
pub(crate) const FAILURE_CAUSE: &str = "dlqDeliveryFailureCause";

/// Carries out `effects` for the destination `source`, whose persistent
/// messages are in the store if `stored`.
pub(crate) async fn settle(
    shared: &Arc<Shared>,
    source: &Destination,
    stored: bool,
    effects: &mut Vec<Effect>,
) {
    for effect in effects.drain(..) {
        match effect {
            Effect::DeadLetter { message, reason } => {
                tracing::info!(destination = %source, message_id = %message.id, %reason, "dead-lettering message");
                dead_letter(shared, source, stored, message, reason).await;
            }
            Effect::Expired { message } => {
                Metrics::inc(&shared.metrics.messages_expired_total);
                if shared.config.destinations.dead_letter_expired {
                    dead_letter(shared, source, stored, message, "expired".to_owned()).await;
                } else if stored && message.persistent {
                    let remove = Record::Remove {
                        destination: source.clone(),
                        seq: message.seq,
                    };
                    // Nobody waits for this: if it is lost in a crash, the
                    // message is recovered, found expired and removed again.
                    if let Err(e) = shared.store.submit(vec![remove]).await {
                        tracing::warn!(error = %e, "could not record expiry");
                    }
                }
            }
        }
    }
}

async fn dead_letter(
    shared: &Arc<Shared>,
    source: &Destination,
    stored: bool,
    message: Arc<Message>,
    reason: String,
) {
    Metrics::inc(&shared.metrics.messages_dead_lettered_total);
    let dlq = message
        .destination
        .dead_letter(&shared.config.destinations.dead_letter_prefix);
    let handle = match shared.destination(&dlq) {
        Ok(h) => h,
        Err(e) => {
            tracing::error!(destination = %source, message_id = %message.id, error = %e,
                "cannot create dead-letter queue; message stays in the store but leaves memory");
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
    if stored && message.persistent {
        batch.push(Record::Remove {
            destination: source.clone(),
            seq: message.seq,
        });
    }
    if copy.persistent && handle.stores() {
        batch.push(Record::Add {
            destination: dlq,
            message: copy.clone(),
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
