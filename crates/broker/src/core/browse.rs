//! Queue browsers (JMS `QueueBrowser`, ActiveMQ's `browser:true` over
//! STOMP): a view of a queue's messages that takes nothing.
//!
//! A browser is shown a snapshot of the queue at the moment it attaches —
//! the ready messages and those in flight to consumers, in dispatch order —
//! and is then told the end. Browsing never takes, locks or redelivers a
//! message: the browser is not one of the queue's consumers, its deliveries
//! are not in flight, and the queue's own consumers go on as if it were not
//! there. Messages acknowledged while the browse goes on may still be shown
//! if their body was in memory when the snapshot was taken; those whose
//! body is on disk and has been removed meanwhile are skipped.
//!
//! Deep queues: the snapshot keeps a few bytes per message (and shares the
//! bodies that were in memory); bodies on disk are read back a batch at a
//! time, just ahead of the browser's credit, so a browse of a queue far
//! larger than memory reads it through a small window.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use futures::StreamExt;
use futures::stream::FuturesUnordered;

use super::dispatch::{ConsumerId, ConsumerReg, Delivery, Note, Snap};
use super::registry::BrokerCore;
use crate::memory::Charge;
use crate::model::{Destination, Message, MessageId, Properties, now_ms};
use crate::store::StoreError;

/// Bodies read back for a browser at a time.
const LOAD_BATCH: usize = 64;

struct Browser {
    reg: ConsumerReg,
    snapshot: VecDeque<Snap>,
    /// Shown and not yet written to the client (its credit).
    inflight: u32,
    loading: bool,
    ended: bool,
}

type Loaded = (ConsumerId, Vec<(u64, Result<Arc<Message>, StoreError>)>);

/// A queue's browsers.
#[derive(Default)]
pub(crate) struct Browsers {
    list: Vec<Browser>,
    loads: FuturesUnordered<Pin<Box<dyn Future<Output = Loaded> + Send>>>,
}

impl Browsers {
    /// Attaches a browser to be shown `snapshot`.
    pub(crate) fn add(&mut self, reg: ConsumerReg, snapshot: Vec<Snap>) {
        self.list.push(Browser {
            reg,
            snapshot: snapshot.into(),
            inflight: 0,
            loading: false,
            ended: false,
        });
    }

    /// Whether `id` is one of the browsers.
    pub(crate) fn has(&self, id: ConsumerId) -> bool {
        self.list.iter().any(|b| b.reg.id == id)
    }

    /// Detaches browser `id`; `false` if it is not one.
    pub(crate) fn remove(&mut self, id: ConsumerId) -> bool {
        let before = self.list.len();
        self.list.retain(|b| b.reg.id != id);
        self.list.len() < before
    }

    /// Browser `id` has written `n` messages to its client: that much
    /// credit is back.
    pub(crate) fn written(&mut self, id: ConsumerId, n: usize) {
        if let Some(b) = self.list.iter_mut().find(|b| b.reg.id == id) {
            b.inflight = b.inflight.saturating_sub(n as u32);
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// Shows each browser what its credit allows, reads back the bodies it
    /// will need next, and tells those that have seen everything the end.
    pub(crate) fn progress(&mut self, core: &BrokerCore, queue: &Destination) {
        let now = now_ms();
        for b in &mut self.list {
            while b.inflight < b.reg.prefetch {
                let Some(front) = b.snapshot.front() else {
                    break;
                };
                let Some(message) = front.message.clone() else {
                    break;
                };
                let deliveries = front.deliveries;
                b.snapshot.pop_front();
                if message.is_expired(now) {
                    // Expired meanwhile: never shown, as never delivered.
                    continue;
                }
                if b.reg
                    .selector
                    .as_ref()
                    .is_some_and(|s| !s.selects(&message, deliveries.saturating_sub(1)))
                {
                    continue;
                }
                let d = Delivery {
                    sub: b.reg.sub,
                    consumer: b.reg.id,
                    message,
                    deliveries,
                    stored: false,
                    dropped: 0,
                    note: Note::Plain,
                };
                if b.reg.tx.send(d).is_err() {
                    // The session has gone; its unsubscribe is on the way.
                    b.snapshot.clear();
                    b.ended = true;
                    break;
                }
                b.inflight += 1;
            }
            if b.loading || b.ended {
                continue;
            }
            if b.snapshot.is_empty() {
                b.ended = true;
                let _ = b.reg.tx.send(Delivery {
                    sub: b.reg.sub,
                    consumer: b.reg.id,
                    message: end_marker(queue),
                    deliveries: 1,
                    stored: false,
                    dropped: 0,
                    note: Note::EndOfBrowse,
                });
                continue;
            }
            if b.snapshot.front().is_some_and(|s| s.message.is_none()) {
                let want: Vec<u64> = b
                    .snapshot
                    .iter()
                    .take(LOAD_BATCH)
                    .take_while(|s| s.message.is_none())
                    .map(|s| s.seq)
                    .collect();
                b.loading = true;
                let (store, memory, id) = (core.store.clone(), core.memory.clone(), b.reg.id);
                self.loads.push(Box::pin(async move {
                    let mut loaded = store.load(want).await;
                    super::paging::charge_loaded(&memory, &mut loaded);
                    (id, loaded)
                }));
            }
        }
    }

    /// Waits for bodies being read back (never resolves if none are).
    pub(crate) async fn next_loaded(&mut self) -> Loaded {
        if self.loads.is_empty() {
            return std::future::pending().await;
        }
        match self.loads.next().await {
            Some(l) => l,
            None => std::future::pending().await,
        }
    }

    /// Bodies read back for browser `id`. One that cannot be read has been
    /// consumed meanwhile (or is lost, which the queue reports when it
    /// tries to deliver it): the browser skips it.
    pub(crate) fn loaded(&mut self, (id, results): Loaded) {
        let Some(b) = self.list.iter_mut().find(|b| b.reg.id == id) else {
            return;
        };
        b.loading = false;
        let mut results: HashMap<u64, Result<Arc<Message>, StoreError>> =
            results.into_iter().collect();
        // What was asked for is at the front.
        let mut i = 0;
        while !results.is_empty() && i < b.snapshot.len() {
            let s = &mut b.snapshot[i];
            match results.remove(&s.seq) {
                Some(Ok(m)) if s.message.is_none() => s.message = Some(m),
                Some(Err(_)) if s.message.is_none() => {
                    b.snapshot.remove(i);
                    continue;
                }
                _ => {}
            }
            i += 1;
        }
    }
}

/// The placeholder a browser's end travels with (it is never shown as a
/// message).
fn end_marker(queue: &Destination) -> Arc<Message> {
    Arc::new(Message {
        seq: 0,
        id: MessageId {
            prefix: "".into(),
            n: 0,
        },
        destination: queue.clone(),
        properties: Properties::new(),
        body: bytes::Bytes::new(),
        persistent: false,
        priority: 0,
        expires: 0,
        timestamp: 0,
        charge: Charge::none(),
    })
}
