//! The storage seam.
//!
//! Everything that must survive a restart goes through a [`Store`]: a handle
//! to a single writer task that owns a [`StoreBackend`]. Callers submit a
//! batch of [`Record`]s and get a [`Completion`] that resolves once the batch
//! is durable. The writer takes whatever batches have queued up while the
//! backend was busy and hands them over together, so a backend that syncs
//! once per call gets group commit for free: with many producers waiting,
//! one sync covers all of them.
//!
//! Invariants every backend keeps:
//! - A batch is atomic: after a crash, recovery sees all of its records or
//!   none of them.
//! - Batches become durable in submission order, and a completion resolves
//!   only after its batch (and every earlier one) is durable.
//! - Recovery returns exactly the messages that were added and not removed,
//!   in sequence order per destination.
//!
//! Ordering rules the broker keeps in return: a message is added before it is
//! ever delivered (so a `Remove` can never precede its `Add`), and whoever
//! decides a message's fate writes its `Remove` — the consumer's session for
//! acknowledgements, the destination for expiry and dead-lettering.

mod memory;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

pub use memory::MemoryStore;

use crate::core::{Destination, Message};

/// One change to the stored state.
#[derive(Debug, Clone)]
pub enum Record {
    /// A persistent message was accepted for a destination.
    Add {
        /// Where it is queued.
        destination: Destination,
        /// The message (its `seq` is its key).
        message: Arc<Message>,
    },
    /// A stored message was consumed, expired or moved.
    Remove {
        /// Where it was queued.
        destination: Destination,
        /// Its `seq`.
        seq: u64,
    },
}

/// An atomic group of records.
pub type Batch = Vec<Record>;

/// Why the store could not do what was asked. The broker treats these as
/// fatal for the operation, and reports them to the client that asked.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The writer task has stopped (broker shutting down or store failed).
    #[error("the message store is closed")]
    Closed,
    /// The backend failed to make a batch durable.
    #[error("the message store failed: {0}")]
    Failed(Arc<str>),
}

/// What recovery found.
#[derive(Debug, Default)]
pub struct Recovered {
    /// Live messages in sequence order.
    pub messages: Vec<(Destination, Arc<Message>)>,
    /// The highest sequence number ever used, so new messages sort after
    /// recovered ones.
    pub max_seq: u64,
}

/// A storage implementation, driven by the single writer task.
pub trait StoreBackend: Send + 'static {
    /// Reads the stored state. Called once, before the writer starts.
    fn recover(&mut self) -> impl Future<Output = Result<Recovered, StoreError>> + Send;

    /// Makes `batches` durable, in order, each atomically. Called with
    /// everything that queued up while the previous call ran.
    fn write(&mut self, batches: &[Batch]) -> impl Future<Output = Result<(), StoreError>> + Send;
}

enum Request {
    Write {
        batch: Batch,
        done: oneshot::Sender<Result<(), StoreError>>,
    },
    /// Finish what is queued, then stop.
    Close { done: oneshot::Sender<()> },
}

/// Resolves when a submitted batch is durable.
#[must_use = "a completion does nothing unless awaited"]
pub struct Completion(oneshot::Receiver<Result<(), StoreError>>);

impl Future for Completion {
    type Output = Result<(), StoreError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.0)
            .poll(cx)
            .map(|r| r.unwrap_or(Err(StoreError::Closed)))
    }
}

/// Handle to the store's writer task. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    tx: mpsc::Sender<Request>,
}

/// Most batches handed to the backend in one call.
const MAX_GROUP: usize = 4096;

impl Store {
    /// Starts the writer task for `backend`. `queue_depth` bounds the
    /// batches waiting for the writer; submitters wait beyond it.
    pub fn spawn<B: StoreBackend>(backend: B, queue_depth: usize) -> (Store, JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(queue_depth.max(1));
        let task = tokio::spawn(writer(backend, rx));
        (Store { tx }, task)
    }

    /// Queues a batch for writing. Waits only if the writer is backlogged
    /// (backpressure); the returned completion waits for durability.
    pub async fn submit(&self, batch: Batch) -> Result<Completion, StoreError> {
        let (done, rx) = oneshot::channel();
        self.tx
            .send(Request::Write { batch, done })
            .await
            .map_err(|_| StoreError::Closed)?;
        Ok(Completion(rx))
    }

    /// Writes everything submitted so far, then stops the writer; later
    /// submissions fail with [`StoreError::Closed`].
    pub async fn close(&self) {
        let (done, rx) = oneshot::channel();
        if self.tx.send(Request::Close { done }).await.is_ok() {
            let _ = rx.await;
        }
    }
}

async fn writer<B: StoreBackend>(mut backend: B, mut rx: mpsc::Receiver<Request>) {
    let mut batches = Vec::new();
    let mut waiters = Vec::new();
    let mut closing = None;
    while closing.is_none() {
        let Some(first) = rx.recv().await else { break };
        let mut next = Some(first);
        while let Some(req) = next.take() {
            match req {
                Request::Write { batch, done } => {
                    batches.push(batch);
                    waiters.push(done);
                }
                Request::Close { done } => {
                    closing = Some(done);
                    break;
                }
            }
            if batches.len() < MAX_GROUP {
                next = rx.try_recv().ok();
            }
        }
        if !batches.is_empty() {
            let result = backend.write(&batches).await;
            if let Err(e) = &result {
                tracing::error!(error = %e, batches = batches.len(), "store write failed");
            }
            for w in waiters.drain(..) {
                // A submitter that went away no longer needs the answer.
                let _ = w.send(result.clone());
            }
            batches.clear();
        }
    }
    drop(backend);
    if let Some(done) = closing {
        let _ = done.send(());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(seq: u64) -> Arc<Message> {
        crate::core::test_message(seq, 4)
    }

    /// Records how batches were grouped, to show group commit happens.
    struct Counting {
        calls: Arc<std::sync::Mutex<Vec<usize>>>,
    }

    impl StoreBackend for Counting {
        async fn recover(&mut self) -> Result<Recovered, StoreError> {
            Ok(Recovered::default())
        }
        async fn write(&mut self, batches: &[Batch]) -> Result<(), StoreError> {
            self.calls.lock().unwrap().push(batches.len());
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            Ok(())
        }
    }

    #[tokio::test]
    async fn batches_that_arrive_during_a_write_share_the_next_one() {
        let calls = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (store, _task) = Store::spawn(
            Counting {
                calls: calls.clone(),
            },
            1024,
        );
        let first = store.submit(vec![]).await.unwrap();
        tokio::task::yield_now().await;
        let mut rest = Vec::new();
        for _ in 0..50 {
            rest.push(store.submit(vec![]).await.unwrap());
        }
        first.await.unwrap();
        for c in rest {
            c.await.unwrap();
        }
        let calls = calls.lock().unwrap().clone();
        assert_eq!(calls.iter().sum::<usize>(), 51);
        assert!(calls.len() <= 3, "no grouping: {calls:?}");
    }

    #[tokio::test]
    async fn memory_store_recovers_live_messages_in_order() {
        let mut backend = MemoryStore::new();
        let q = Destination::queue("q");
        backend
            .write(&[
                vec![
                    Record::Add {
                        destination: q.clone(),
                        message: msg(3),
                    },
                    Record::Add {
                        destination: q.clone(),
                        message: msg(1),
                    },
                ],
                vec![Record::Remove {
                    destination: q.clone(),
                    seq: 3,
                }],
                vec![Record::Add {
                    destination: q.clone(),
                    message: msg(7),
                }],
            ])
            .await
            .unwrap();
        let r = backend.recover().await.unwrap();
        let seqs: Vec<u64> = r.messages.iter().map(|(_, m)| m.seq).collect();
        assert_eq!(seqs, vec![1, 7]);
        assert_eq!(r.max_seq, 7);
    }
}
