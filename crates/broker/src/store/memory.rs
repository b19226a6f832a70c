//! A store that keeps records in process memory. Persistent messages do not
//! survive a restart with it; it exists so the broker always runs through
//! the same seam, and to give the durable stores a reference behaviour.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::{Batch, Record, Recovered, StoreBackend, StoreError};
use crate::core::{Destination, Message};

/// In-memory [`StoreBackend`].
#[derive(Debug, Default)]
pub struct MemoryStore {
    live: BTreeMap<u64, (Destination, Arc<Message>)>,
    max_seq: u64,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }
}

impl StoreBackend for MemoryStore {
    async fn recover(&mut self) -> Result<Recovered, StoreError> {
        Ok(Recovered {
            messages: self
                .live
                .values()
                .map(|(d, m)| (d.clone(), m.clone()))
                .collect(),
            max_seq: self.max_seq,
        })
    }

    async fn write(&mut self, batches: &[Batch]) -> Result<(), StoreError> {
        for record in batches.iter().flatten() {
            match record {
                Record::Add {
                    destination,
                    message,
                } => {
                    self.max_seq = self.max_seq.max(message.seq);
                    self.live
                        .insert(message.seq, (destination.clone(), message.clone()));
                }
                Record::Remove { seq, .. } => {
                    self.live.remove(seq);
                }
            }
        }
        Ok(())
    }
}
