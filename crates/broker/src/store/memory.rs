//! A store that keeps records in process memory. Persistent messages do not
//! survive a restart with it; it exists for tests and for brokers that want
//! no disk at all, and it is the reference behaviour for the other stores.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use super::{
    Batch, DurableSubscription, MessageReader, Record, Recovered, RecoveredMessages, ScheduleState,
    StoreBackend, StoreError, StoreKey, StoredMessage, Usage,
};
use crate::model::{Destination, Message};

/// A live message: its key, itself, and (deliveries, not before).
type Live = (StoreKey, Arc<Message>, (u32, u64));

/// In-memory [`StoreBackend`].
#[derive(Debug, Default)]
pub struct MemoryStore {
    live: BTreeMap<u64, Live>,
    /// Durable subscriptions: topic and selector by (client id, name).
    subscriptions: HashMap<(String, String), (Destination, Option<String>)>,
    /// Scheduled messages' progress.
    schedules: HashMap<u64, ScheduleState>,
    /// Declared queues: each one's place in declaration order, and the
    /// queues by it.
    declared: HashMap<Destination, u64>,
    queues: BTreeMap<u64, Destination>,
    declarations: u64,
    max_seq: u64,
    bytes: u64,
    usage: Option<Arc<Usage>>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }

    /// An empty store that reports its size (message bytes) to `usage`.
    pub fn with_usage(usage: Arc<Usage>) -> MemoryStore {
        MemoryStore {
            usage: Some(usage),
            ..MemoryStore::default()
        }
    }
}

struct NoPaging;

impl MessageReader for NoPaging {
    fn pages(&self) -> bool {
        false
    }

    fn load(&self, seqs: &[u64]) -> Vec<Result<Arc<Message>, StoreError>> {
        seqs.iter()
            .map(|&seq| {
                Err(StoreError::Read {
                    seq,
                    reason: "the memory store keeps messages in their destinations".into(),
                })
            })
            .collect()
    }
}

impl StoreBackend for MemoryStore {
    async fn recover(&mut self) -> Result<Recovered, StoreError> {
        let mut messages = RecoveredMessages::default();
        for (key, m, (deliveries, not_before)) in self.live.values() {
            messages.push(StoredMessage {
                key: key.clone(),
                seq: m.seq,
                priority: m.priority,
                expires: m.expires,
                weight: m.weight() as u32,
                deliveries: *deliveries,
                not_before: *not_before,
                message: Some(m.clone()),
                schedule: self.schedules.get(&m.seq).copied(),
            });
        }
        Ok(Recovered {
            messages,
            later: None,
            subscriptions: self
                .subscriptions
                .iter()
                .map(
                    |((client_id, name), (topic, selector))| DurableSubscription {
                        client_id: client_id.clone(),
                        name: name.clone(),
                        topic: topic.clone(),
                        selector: selector.clone(),
                    },
                )
                .collect(),
            queues: self.queues.values().cloned().collect(),
            max_seq: self.max_seq,
            duplicate_ids: Vec::new(),
        })
    }

    async fn write(&mut self, batches: &[Batch], _sync: bool) -> Result<(), StoreError> {
        for record in batches.iter().flatten() {
            match record {
                Record::Add { key, message, .. } => {
                    self.max_seq = self.max_seq.max(message.seq);
                    self.bytes += message.weight() as u64;
                    if let Some((_, old, _)) = self
                        .live
                        .insert(message.seq, (key.clone(), message.clone(), (0, 0)))
                    {
                        self.bytes -= old.weight() as u64;
                    }
                }
                Record::Remove { seq } => {
                    if let Some((_, m, _)) = self.live.remove(seq) {
                        self.bytes -= m.weight() as u64;
                    }
                    self.schedules.remove(seq);
                }
                Record::Schedule { seq, due, fired } => {
                    if self.live.contains_key(seq) {
                        let state = ScheduleState {
                            due: *due,
                            fired: *fired,
                        };
                        self.schedules.insert(*seq, state);
                    }
                }
                Record::Redelivered { seq, deliveries } => {
                    if let Some(entry) = self.live.get_mut(seq) {
                        entry.2 = (*deliveries, 0);
                    }
                }
                Record::Delayed {
                    seq,
                    deliveries,
                    until_ms,
                } => {
                    if let Some(entry) = self.live.get_mut(seq) {
                        entry.2 = (*deliveries, *until_ms);
                    }
                }
                Record::SubscriptionAdd {
                    client_id,
                    name,
                    topic,
                    selector,
                } => {
                    self.subscriptions.insert(
                        (client_id.clone(), name.clone()),
                        (topic.clone(), selector.clone()),
                    );
                }
                Record::SubscriptionRemove { client_id, name } => {
                    self.subscriptions
                        .remove(&(client_id.clone(), name.clone()));
                }
                Record::QueueDeclared { queue } => {
                    if !self.declared.contains_key(queue) {
                        self.declarations += 1;
                        self.declared.insert(queue.clone(), self.declarations);
                        self.queues.insert(self.declarations, queue.clone());
                    }
                }
                Record::QueueDropped { queue } => {
                    if let Some(at) = self.declared.remove(queue) {
                        self.queues.remove(&at);
                    }
                }
            }
        }
        if let Some(u) = &self.usage {
            u.set(self.bytes);
        }
        Ok(())
    }

    fn reader(&self) -> Arc<dyn MessageReader> {
        Arc::new(NoPaging)
    }
}
