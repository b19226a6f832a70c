//! What `benches/selective_dispatch.rs` needs of the core, and no more.
//!
//! The dispatcher is the crate's own business (`pub(crate)`); benchmarks
//! are a separate crate. This thin wrapper lets them drive one queue's
//! dispatcher with consumers whose selectors are parsed exactly as a
//! subscription's are (`halyard-selector` with the default `[selectors]`
//! settings), without making the core public. Not an API: hidden from the
//! docs and free to change with the dispatcher.

use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::mpsc;

use crate::config::{BrokerConfig, Redelivery};
use crate::core::dispatch::{Dispatcher, Effect, Policy};
use crate::core::{ConsumerId, ConsumerReg, Delivery};
use crate::memory::Charge;
use crate::model::{Destination, Message, MessageId, Properties, Value};

pub use halyard_selector::ParseError;

/// One queue's dispatcher with the queue defaults (message groups on,
/// default redelivery), every body in memory (no paging), and its
/// consumers' delivery channels.
pub struct QueueDispatcher {
    dispatcher: Dispatcher,
    consumers: Vec<(ConsumerId, mpsc::UnboundedReceiver<Delivery>)>,
    effects: Vec<Effect>,
    seqs: Vec<u64>,
}

impl Default for QueueDispatcher {
    fn default() -> QueueDispatcher {
        QueueDispatcher::new()
    }
}

impl QueueDispatcher {
    /// An empty queue without consumers.
    pub fn new() -> QueueDispatcher {
        let config = BrokerConfig::default();
        let policy = Policy {
            max_redeliveries: 6,
            redelivery: Redelivery::IMMEDIATE,
            is_dead_letter_queue: false,
            memory_limit: usize::MAX,
            pages: false,
            pending_limit: None,
            backlog_limit: usize::MAX,
            abort_after: None,
            groups: Some(config.destinations.max_groups),
        };
        QueueDispatcher {
            dispatcher: Dispatcher::new(policy),
            consumers: Vec::new(),
            effects: Vec::new(),
            seqs: Vec::new(),
        }
    }

    /// Adds a consumer with `prefetch` credit and an optional selector
    /// (parsed as a STOMP `selector` header is); returns its index.
    pub fn add_consumer(
        &mut self,
        prefetch: u32,
        selector: Option<&str>,
    ) -> Result<usize, ParseError> {
        let selector = match selector {
            Some(text) => crate::service::parse_selector(text, &BrokerConfig::default().selectors)?,
            None => None,
        };
        let index = self.consumers.len();
        let id = ConsumerId(index as u64 + 1);
        let (tx, rx) = mpsc::unbounded_channel();
        self.dispatcher.add_consumer(ConsumerReg {
            selector,
            ..ConsumerReg::plain(id.0, prefetch, tx)
        });
        self.consumers.push((id, rx));
        Ok(index)
    }

    /// A new message at the tail of the queue (stored: persistent).
    pub fn push(&mut self, message: Arc<Message>) {
        self.dispatcher.push(message, true);
    }

    /// Hands ready messages to consumers with credit.
    pub fn dispatch(&mut self) {
        self.dispatcher.dispatch(0, &mut self.effects);
        self.effects.clear();
    }

    /// Takes what consumer `index` was sent and acknowledges it, as a
    /// client in auto-ack mode would; returns how many, and the last seq.
    ///
    /// # Panics
    /// If there is no consumer `index`.
    pub fn ack_delivered(&mut self, index: usize) -> (usize, Option<u64>) {
        let (id, rx) = &mut self.consumers[index];
        self.seqs.clear();
        while let Ok(d) = rx.try_recv() {
            self.seqs.push(d.message.seq);
        }
        self.dispatcher.ack(*id, &self.seqs);
        (self.seqs.len(), self.seqs.last().copied())
    }

    /// Messages waiting for a consumer.
    pub fn ready(&self) -> usize {
        self.dispatcher.stats().ready
    }
}

/// A persistent 1-byte message `seq` to `/queue/bench` with these
/// properties (STOMP headers arrive as [`Value::String`]s).
pub fn message(seq: u64, properties: Vec<(String, Value)>) -> Arc<Message> {
    Arc::new(Message {
        seq,
        id: MessageId {
            prefix: "ID:bench-".into(),
            n: seq,
        },
        destination: Destination::queue("bench"),
        properties: Properties::from(properties),
        body: Bytes::from_static(b"x"),
        persistent: true,
        priority: crate::model::DEFAULT_PRIORITY,
        expires: 0,
        timestamp: 0,
        charge: Charge::none(),
    })
}
