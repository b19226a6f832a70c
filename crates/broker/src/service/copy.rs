//! One copy of a sent message (see `route.rs` for the copies a SEND
//! makes), and handing copies to their destinations once stored.

use std::collections::HashSet;
use std::sync::Arc;

use super::error::ServiceError;
use super::publish::{duplicate_id, publish};
use crate::core::{BrokerCore, DestHandle, Envelope};
use crate::metrics::Metrics;
use crate::model::Message;
use crate::store::{Duplicates, Record, StoreKey};

/// The copies of one or more sent messages; one, inline, in the common case
/// (a SEND to one destination allocates nothing for it).
pub(crate) type Copies = smallvec::SmallVec<[Copy; 1]>;

/// One copy of a sent message, on its way to one destination.
#[derive(Debug)]
pub(crate) struct Copy {
    /// `None` for another connection's temporary destination that is gone
    /// (the copy is dropped: replies to a requester that left are lost, not
    /// refused).
    pub(crate) handle: Option<DestHandle>,
    pub(crate) message: Arc<Message>,
    /// The copy for the first destination named: it stands for the SEND
    /// in the count of messages received.
    pub(crate) primary: bool,
    /// Who sent it and its group.
    pub(crate) envelope: Envelope,
}

impl Copy {
    /// The store record that keeps this copy, if it is kept: a persistent
    /// message in a queue.
    pub(crate) fn record(&self) -> Option<Record> {
        let h = self.handle.as_ref()?;
        (self.message.persistent && h.stores()).then(|| Record::Add {
            key: StoreKey::Queue(h.destination().name().into()),
            message: self.message.clone(),
            // Each queue remembers the ids it has seen, so a resend after a
            // failover is dropped queue by queue.
            dedup: duplicate_id(&self.message),
        })
    }
}

/// Hands stored (or unstored) copies to their destinations, in order,
/// skipping those the store found to be duplicates (stored before: a
/// resend after a failover). With `confirm`, waits until the last copy to
/// each topic has been taken in (the earlier ones are in before it).
pub(super) async fn deliver(
    core: &Arc<BrokerCore>,
    copies: Copies,
    duplicates: &Duplicates,
    confirm: bool,
) -> Result<(), ServiceError> {
    // Which copies to wait for: the last one to each topic.
    let confirms: Option<Vec<bool>> = confirm.then(|| {
        let mut last = HashSet::new();
        let mut confirms = vec![false; copies.len()];
        for (i, c) in copies.iter().enumerate().rev() {
            if let Some(h) = &c.handle {
                confirms[i] = h.destination().kind().is_topic() && last.insert(h.id());
            }
        }
        confirms
    });
    for (i, c) in copies.into_iter().enumerate() {
        let confirm = confirms.as_ref().is_some_and(|c| c[i]);
        if duplicates.contains(c.message.seq) {
            Metrics::inc(&core.metrics.duplicates_total);
            continue;
        }
        match c.handle {
            Some(h) => publish(core, &h, c.message, confirm, c.envelope).await?,
            None => Metrics::inc(&core.metrics.messages_dropped_total),
        }
        if c.primary {
            Metrics::inc(&core.metrics.messages_received_total);
        }
    }
    Ok(())
}
