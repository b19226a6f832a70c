//! The topic actor: every subscription gets its own [`Dispatcher`] with one
//! consumer, so each subscriber has its own order, credit and redelivery.
//! Non-durable subscriptions keep nothing once they end.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::mpsc;

use super::dispatch::{Dispatcher, Effect, Policy};
use super::queue::{CONTROL_DEPTH, PUBLISH_DEPTH, expiry_timer};
use super::{
    ConsumerId, Control, DestHandle, Destination, DestinationStats, DispatchStats, Message,
    Publish, now_ms,
};
use crate::broker::Shared;

/// Starts the actor for a topic.
pub(crate) fn spawn_topic(shared: Arc<Shared>, destination: Destination) -> DestHandle {
    let (control_tx, control) = mpsc::channel(CONTROL_DEPTH);
    let (publish_tx, publish) = mpsc::channel(PUBLISH_DEPTH);
    let handle = DestHandle::new(destination.clone(), control_tx, publish_tx);
    let actor = TopicActor {
        policy: Policy {
            max_redeliveries: shared.config.destinations.max_redeliveries,
            is_dead_letter_queue: false,
        },
        shared,
        destination,
        subs: HashMap::new(),
        published: 0,
    };
    tokio::spawn(actor.run(control, publish));
    handle
}

struct TopicActor {
    shared: Arc<Shared>,
    destination: Destination,
    policy: Policy,
    subs: HashMap<ConsumerId, Dispatcher>,
    published: u64,
}

impl TopicActor {
    /// Publishing waits while any subscription is over the memory limit:
    /// one slow subscriber holds back producers rather than making the
    /// broker buffer without bound (ActiveMQ's producer flow control).
    fn accepting(&self, limit: usize) -> bool {
        self.subs.values().all(|d| d.ready_weight() < limit)
    }

    async fn run(
        mut self,
        mut control: mpsc::Receiver<Control>,
        mut publish: mpsc::Receiver<Publish>,
    ) {
        let limit = self.shared.config.limits.destination_memory_bytes;
        let mut sweep = expiry_timer(&self.shared);
        let mut effects = Vec::new();
        let stop = self.shared.stop.clone();
        loop {
            let accepting = self.accepting(limit);
            tokio::select! {
                biased;
                _ = stop.cancelled() => break,
                cmd = control.recv() => match cmd {
                    None | Some(Control::Delete) => break,
                    Some(cmd) => self.control(cmd, &mut effects),
                },
                m = publish.recv(), if accepting => {
                    let Some(m) = m else { break };
                    self.publish(m.accept());
                    while self.accepting(limit) {
                        let Ok(m) = publish.try_recv() else { break };
                        self.publish(m.accept());
                    }
                }
                _ = sweep.tick() => {
                    let now = now_ms();
                    for d in self.subs.values_mut() {
                        d.sweep_expired(now, &mut effects);
                    }
                }
            }
            let now = now_ms();
            for d in self.subs.values_mut() {
                d.dispatch(now, &mut effects);
            }
            if !effects.is_empty() {
                super::settle(&self.shared, &self.destination, false, &mut effects).await;
            }
        }
        tracing::debug!(destination = %self.destination, "destination stopped");
    }

    fn publish(&mut self, m: Arc<Message>) {
        self.published += 1;
        for d in self.subs.values_mut() {
            d.push(m.clone());
        }
    }

    fn control(&mut self, cmd: Control, effects: &mut Vec<Effect>) {
        match cmd {
            Control::Subscribe { consumer, done } => {
                let mut d = Dispatcher::new(self.policy, false);
                let id = consumer.id;
                d.add_consumer(consumer);
                self.subs.insert(id, d);
                let _ = done.send(());
            }
            Control::Unsubscribe { consumer, done } => {
                self.subs.remove(&consumer);
                if let Some(done) = done {
                    let _ = done.send(());
                }
            }
            Control::Ack { consumer, seqs } => self.with(consumer, |d| d.ack(consumer, &seqs)),
            Control::Nack { consumer, seqs } => {
                self.with(consumer, |d| d.nack(consumer, &seqs, effects))
            }
            Control::Hold { consumer, seqs } => self.with(consumer, |d| d.hold(consumer, &seqs)),
            Control::Commit { consumer, seqs } => self.with(consumer, |d| d.commit(&seqs)),
            Control::Rollback { consumer, seqs } => {
                self.with(consumer, |d| d.rollback(&seqs, effects))
            }
            Control::Stats { reply } => {
                let mut total = DispatchStats::default();
                for d in self.subs.values() {
                    let s = d.stats();
                    total.ready += s.ready;
                    total.inflight += s.inflight;
                    total.consumers += s.consumers;
                    total.delivered += s.delivered;
                    total.acked += s.acked;
                }
                total.enqueued = self.published;
                let _ = reply.send(DestinationStats {
                    destination: self.destination.to_string(),
                    dispatch: total,
                });
            }
            Control::Delete => {}
        }
    }

    fn with(&mut self, consumer: ConsumerId, f: impl FnOnce(&mut Dispatcher)) {
        if let Some(d) = self.subs.get_mut(&consumer) {
            debug_assert!(d.has_consumer(consumer));
            f(d);
        }
    }
}
