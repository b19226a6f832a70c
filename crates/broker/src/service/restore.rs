//! Handing what recovery found to the destinations.
//!
//! A deep store recovers millions of messages, and a slave taking over is
//! judged by how soon it serves. So the restore is split: what a client
//! could notice missing (declared queues, durable subscriptions, the
//! scheduler, and every destination told that recovered messages are
//! coming) is done before the ports open; the messages themselves follow
//! in the background, a chunk at a time. Meanwhile each such destination
//! takes new messages, queued behind the recovered ones, and delivers
//! nothing; browsers and operators' takes wait for the rest (see
//! `Dispatcher::begin_restore`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use super::{Service, scheduler};
use crate::core::{Control, DestHandle, DurableName};
use crate::model::Destination;
use crate::store::{
    EagerMessages, Later, LaterMessages, Record, Recovered, StoreKey, StoredMessage,
};

/// Messages per chunk handed to a destination: big enough that the
/// channel's cost is nothing, small enough that a send queued behind one
/// waits only a few milliseconds.
const RESTORE_CHUNK: usize = 4096;

/// Where one key's messages go.
type Target = Option<(DestHandle, Option<DurableName>)>;

impl Service {
    /// Restores everything but the messages themselves, tells their
    /// destinations they are coming, and hands them over in a task of their
    /// own. Returns once the broker may serve.
    pub(crate) async fn restore(self: &Arc<Self>, recovered: Recovered) {
        let core = &self.core;
        for queue in &recovered.queues {
            core.declared(queue);
            if let Err(e) = core.destination(queue) {
                tracing::error!(error = %e, "cannot restore a declared queue");
            }
        }
        let topics = self.restore_subscriptions(recovered.subscriptions).await;
        let mut messages = recovered.messages;
        let scheduled = messages.split_off(&StoreKey::Scheduled);
        self.start_scheduler(
            scheduled
                .into_sorted()
                .map(scheduler::Entry::recovered)
                .collect(),
        );
        let later = match recovered.later {
            Some(Later(later)) => later,
            None => Box::new(EagerMessages::new(messages)),
        };
        if later.is_empty() {
            return;
        }
        let keys = later.keys().to_vec();
        let in_use = later.in_use().to_vec();
        let mut targets = Vec::with_capacity(keys.len());
        for (key, used) in keys.iter().zip(in_use) {
            if !used {
                targets.push(None);
                continue;
            }
            let target = self.restore_target(&topics, key).await;
            if let Some((handle, durable)) = &target {
                let durable = durable.clone();
                let _ = handle.control(Control::RestoreBegin { durable }).await;
            }
            targets.push(target);
        }
        let service = self.clone();
        tokio::spawn(async move { service.restore_messages(later, targets).await });
    }

    /// Makes the durable subscriptions recovery found, with their selectors.
    async fn restore_subscriptions(
        &self,
        subscriptions: Vec<crate::store::DurableSubscription>,
    ) -> HashMap<DurableName, DestHandle> {
        let mut topics = HashMap::new();
        for s in subscriptions {
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
            match self.core.destination(&topic) {
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
        topics
    }

    /// The destination (and durable subscription) a key's messages go to.
    async fn restore_target(
        &self,
        topics: &HashMap<DurableName, DestHandle>,
        key: &StoreKey,
    ) -> Target {
        match key {
            StoreKey::Queue(name) => {
                let queue = Destination::queue(name);
                match self.core.destination(&queue) {
                    Ok(h) => {
                        // A consumer queue whose declaration a crash lost
                        // (its messages were durable first) is declared
                        // again.
                        if self.core.claim_declaration(&queue) {
                            let record = Record::QueueDeclared { queue };
                            if let Err(e) = self.core.store.record(vec![record]).await {
                                tracing::error!(error = %e, "cannot declare a recovered consumer queue");
                            }
                        }
                        Some((h, None))
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "cannot restore recovered messages");
                        None
                    }
                }
            }
            StoreKey::Durable { client_id, name } => {
                let name = DurableName {
                    client_id: client_id.clone(),
                    name: name.clone(),
                };
                match topics.get(&name) {
                    Some(h) => Some((h.clone(), Some(name))),
                    None => {
                        tracing::error!(client_id = %name.client_id, subscription = %name.name,
                            "recovered messages of an unknown durable subscription");
                        None
                    }
                }
            }
            StoreKey::Scheduled => None,
        }
    }

    /// Hands the messages over in sequence order, a chunk per destination at
    /// a time, then tells every destination the restore is over.
    async fn restore_messages(
        self: Arc<Self>,
        mut later: Box<dyn LaterMessages>,
        targets: Vec<Target>,
    ) {
        let started = Instant::now();
        let count = later.len();
        let mut chunks: Vec<Vec<StoredMessage>> = targets.iter().map(|_| Vec::new()).collect();
        loop {
            let next = match later.next_chunk(RESTORE_CHUNK).await {
                Ok(next) => next,
                Err(e) => {
                    // They stay stored: the next start (or a slave's
                    // takeover) restores them.
                    tracing::error!(error = %e,
                        "cannot read the rest of the recovered messages; those not handed over yet are delivered after the next restart");
                    break;
                }
            };
            if next.is_empty() {
                break;
            }
            for (key, m) in next {
                // The scheduler's, when the store streams them too.
                if m.key == StoreKey::Scheduled {
                    if let Some(s) = self.scheduler.get() {
                        let _ = s.add(scheduler::Entry::recovered(m)).await;
                    }
                    continue;
                }
                let key = key as usize;
                let (Some(Some((handle, durable))), Some(chunk)) =
                    (targets.get(key), chunks.get_mut(key))
                else {
                    continue;
                };
                chunk.push(m);
                if chunk.len() >= RESTORE_CHUNK {
                    let messages = std::mem::take(chunk);
                    let durable = durable.clone();
                    if handle
                        .control(Control::Restore { durable, messages })
                        .await
                        .is_err()
                        && self.core.stop.is_cancelled()
                    {
                        return;
                    }
                }
            }
        }
        for (target, messages) in targets.into_iter().zip(chunks) {
            let Some((handle, durable)) = target else {
                continue;
            };
            if !messages.is_empty() {
                let durable = durable.clone();
                let _ = handle.control(Control::Restore { durable, messages }).await;
            }
            let _ = handle.control(Control::RestoreEnd { durable }).await;
        }
        tracing::info!(
            messages = count,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "recovered messages restored to their destinations"
        );
    }
}
