//! The queue actor: one task per queue (or temporary queue) owning a single
//! [`Dispatcher`] that all its consumers compete on.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::MissedTickBehavior;

use super::browse::Browsers;
use super::dispatch::{Dispatcher, Effect, Policy, wake_at};
use super::paging::{Loading, next_loaded, start_loading};
use super::registry::BrokerCore;
use super::{Control, DestHandle, DestinationStats, DurableError, Publish};
use crate::model::{Destination, DestinationKind, now_ms};

/// Depth of a destination's control channel.
pub(crate) const CONTROL_DEPTH: usize = 1024;
/// Depth of a destination's publish channel. Messages waiting here are
/// beyond `limits.destination-memory-bytes`, so the limit is exceeded by at
/// most this many messages before producers wait.
pub(crate) const PUBLISH_DEPTH: usize = 32;

/// The timer on which a destination sweeps out expired messages and
/// checks whether it has been idle long enough to go.
pub(crate) fn expiry_timer(shared: &BrokerCore) -> tokio::time::Interval {
    let d = &shared.config.destinations;
    let mut every = d.expiry_check_ms;
    if d.gc_inactive_ms > 0 {
        every = every.min((d.gc_inactive_ms / 2).max(50));
    }
    let mut t = tokio::time::interval(Duration::from_millis(every));
    t.set_missed_tick_behavior(MissedTickBehavior::Delay);
    t
}

/// A dispatcher's delivery policy for `destination`: its `[[policies]]`
/// entry over the broker's defaults.
pub(crate) fn policy(shared: &BrokerCore, destination: &Destination, stores: bool) -> Policy {
    let p = shared
        .policies
        .for_destination(destination.kind(), destination.name());
    // A dead-letter queue keeps its poison messages (queues only: a topic
    // is never one).
    let is_dead_letter_queue = matches!(
        destination.kind(),
        DestinationKind::Queue | DestinationKind::TempQueue
    ) && shared.policies.is_dead_letter_queue(destination.name());
    Policy {
        max_redeliveries: p.max_redeliveries,
        redelivery: p.redelivery,
        is_dead_letter_queue,
        memory_limit: p.memory_bytes,
        pages: stores && shared.store.pages(),
        pending_limit: None,
        backlog_limit: usize::MAX,
        abort_after: None,
        groups: Some(shared.config.destinations.max_groups),
    }
}

/// A topic subscription's policy: [`policy`], with its backlog bounded.
pub(crate) fn subscription_policy(
    shared: &BrokerCore,
    topic: &Destination,
    stores: bool,
) -> Policy {
    let p = shared.policies.for_destination(topic.kind(), topic.name());
    let base = Policy {
        backlog_limit: p.subscriber_backlog_bytes,
        ..policy(shared, topic, stores)
    };
    if p.slow_subscriber == crate::config::SlowSubscriber::FlowControl {
        return base;
    }
    Policy {
        pending_limit: Some(p.subscriber_pending_limit),
        abort_after: (p.slow_subscriber_abort_ms > 0)
            .then(|| Duration::from_millis(p.slow_subscriber_abort_ms)),
        groups: None,
        ..base
    }
}

/// Starts the actor for a queue or temporary queue.
pub(crate) fn spawn_queue(shared: Arc<BrokerCore>, destination: Destination) -> DestHandle {
    let (control_tx, control) = mpsc::channel(CONTROL_DEPTH);
    let (publish_tx, publish) = mpsc::channel(PUBLISH_DEPTH);
    let id = shared.next_destination_id();
    let handle = DestHandle::new(destination.clone(), id, control_tx, publish_tx);
    let actor = QueueActor {
        dispatcher: Dispatcher::new(policy(&shared, &destination, handle.stores()))
            .with_memory(shared.memory.clone()),
        browsers: Browsers::default(),
        kept: shared.virtual_topics.topic_of(destination.name()).is_some(),
        stores: handle.stores(),
        shared,
        destination,
        loading: None,
        id,
        idleness: super::reclaim::Idleness::default(),
        deferred: Vec::new(),
        destroy_when_restored: None,
    };
    tokio::spawn(actor.run(control, publish));
    handle
}

struct QueueActor {
    shared: Arc<BrokerCore>,
    destination: Destination,
    dispatcher: Dispatcher,
    browsers: Browsers,
    /// Never reclaimed when idle: a virtual topic's consumer queue must
    /// keep receiving while its consumers are away.
    kept: bool,
    stores: bool,
    loading: Loading,
    id: u64,
    idleness: super::reclaim::Idleness,
    /// Browsers and operators' takes waiting for recovery's messages.
    deferred: Vec<Control>,
    /// A deletion waiting for recovery's messages.
    destroy_when_restored: Option<tokio::sync::oneshot::Sender<Vec<u64>>>,
}

impl QueueActor {
    /// Takes a published message in.
    fn take(&mut self, m: Publish) {
        let e = m.envelope;
        self.dispatcher
            .push_from(m.accept(), self.stores, e.origin, e.group);
    }

    /// Takes in what waits in the publish channel, while there is room.
    fn take_waiting(&mut self, publish: &mut mpsc::Receiver<Publish>) {
        while self.dispatcher.accepting() {
            let Ok(m) = publish.try_recv() else { break };
            self.take(m);
        }
    }

    async fn run(
        mut self,
        mut control: mpsc::Receiver<Control>,
        mut publish: mpsc::Receiver<Publish>,
    ) {
        let mut sweep = expiry_timer(&self.shared);
        let mut effects = Vec::new();
        let stop = self.shared.stop.clone();
        loop {
            let accepting = self.dispatcher.accepting();
            // Neither traffic nor use: the sweep's tick, an admin request for
            // statistics. An idle destination is reclaimed after long enough
            // without anything else.
            let mut passive = false;
            tokio::select! {
                biased;
                _ = stop.cancelled() => break,
                cmd = control.recv() => match cmd {
                    None => break,
                    Some(Control::Delete) => {
                        self.dispatcher.clear();
                        break;
                    }
                    // Deleting it needs every recovered message in hand:
                    // one not handed over yet would stay stored and come
                    // back at the next start.
                    Some(Control::Destroy { reply }) if self.dispatcher.is_restoring() => {
                        self.destroy_when_restored = Some(reply);
                    }
                    Some(Control::Destroy { reply }) => {
                        self.take_waiting(&mut publish);
                        let _ = reply.send(self.dispatcher.stored_seqs());
                        self.dispatcher.clear();
                        break;
                    }
                    Some(cmd @ (Control::Browse { .. } | Control::Stats { .. } | Control::Take { .. })) => {
                        // A browser, and the statistics, see what senders
                        // have been told the queue has (a RECEIPT can come
                        // before the queue took the message): what waits
                        // in the publish channel too.
                        self.take_waiting(&mut publish);
                        passive = matches!(cmd, Control::Stats { .. });
                        self.control(cmd, &mut effects);
                    }
                    Some(cmd) => self.control(cmd, &mut effects),
                },
                loaded = next_loaded(&mut self.loading) => {
                    self.loading = None;
                    self.dispatcher.loaded(loaded, &mut effects);
                }
                loaded = self.browsers.next_loaded() => self.browsers.loaded(loaded),
                m = publish.recv(), if accepting => {
                    let Some(m) = m else { break };
                    self.take(m);
                    self.take_waiting(&mut publish);
                }
                _ = sweep.tick() => {
                    passive = true;
                    self.dispatcher.sweep_expired(now_ms(), &mut effects);
                }
                // A message waiting out its redelivery delay is due: the
                // dispatch below takes it.
                () = wake_at(self.dispatcher.next_due()) => {}
            }
            if let Some(reply) = self
                .destroy_when_restored
                .take_if(|_| !self.dispatcher.is_restoring())
            {
                self.take_waiting(&mut publish);
                let _ = reply.send(self.dispatcher.stored_seqs());
                self.dispatcher.clear();
                break;
            }
            self.dispatcher.dispatch(now_ms(), &mut effects);
            start_loading(&self.shared, &mut self.dispatcher, &mut self.loading);
            if !self.browsers.is_empty() {
                self.browsers.progress(&self.shared, &self.destination);
            }
            if !effects.is_empty() {
                let put_back = super::settle(&self.shared, &self.destination, &mut effects).await;
                if !put_back.is_empty() {
                    for p in put_back {
                        self.dispatcher.put_back(p.message, p.stored, p.deliveries);
                    }
                    // Back where they were: deliverable at once.
                    self.dispatcher.dispatch(now_ms(), &mut effects);
                    for p in super::settle(&self.shared, &self.destination, &mut effects).await {
                        self.dispatcher.put_back(p.message, p.stored, p.deliveries);
                    }
                }
            }
            // Temporary queues go with their connection, not by age.
            let idle = self.destination.kind() == DestinationKind::Queue
                && !self.kept
                && self.loading.is_none()
                && self.browsers.is_empty()
                && self.dispatcher.is_idle();
            if self
                .idleness
                .reclaim_if_due(
                    (idle, !passive),
                    &self.shared,
                    (&self.destination, self.id),
                    &mut control,
                    &mut publish,
                )
                .await
            {
                break;
            }
        }
        tracing::debug!(destination = %self.destination, "destination stopped");
    }

    fn control(&mut self, cmd: Control, effects: &mut Vec<Effect>) {
        // A browser, an operator taking messages or asking for statistics
        // while recovery's messages are still coming in would see part of
        // the queue: they wait for the rest.
        if self.dispatcher.is_restoring()
            && matches!(
                cmd,
                Control::Browse { .. } | Control::Take { .. } | Control::Stats { .. }
            )
        {
            self.deferred.push(cmd);
            return;
        }
        if let Control::RestoreEnd { .. } = cmd {
            self.dispatcher.end_restore();
            for cmd in std::mem::take(&mut self.deferred) {
                self.control(cmd, effects);
            }
            return;
        }
        let d = &mut self.dispatcher;
        match cmd {
            Control::Subscribe { consumer, done } => {
                d.add_consumer(consumer);
                let _ = done.send(());
            }
            Control::Browse { consumer, done } => {
                self.browsers.add(consumer, d.snapshot(now_ms()));
                let _ = done.send(());
            }
            Control::Unsubscribe { consumer, done } if self.browsers.has(consumer) => {
                self.browsers.remove(consumer);
                if let Some(done) = done {
                    let _ = done.send(());
                }
            }
            Control::Ack { consumer, seqs } if self.browsers.has(consumer) => {
                self.browsers.written(consumer, seqs.len());
            }
            Control::Unsubscribe { consumer, done } => {
                d.remove_consumer(consumer, effects);
                if let Some(done) = done {
                    let _ = done.send(());
                }
            }
            Control::Ack { consumer, seqs } => d.ack(consumer, &seqs),
            Control::Nack {
                consumer,
                seqs,
                poison,
            } => d.nack(consumer, &seqs, poison, effects),
            Control::Hold { consumer, seqs } => d.hold(consumer, &seqs),
            Control::Prefetch { consumer, prefetch } => d.set_prefetch(consumer, prefetch),
            Control::Commit { seqs, .. } => d.commit(&seqs),
            Control::Rollback { seqs, .. } => d.rollback(&seqs, effects),
            Control::Stats { reply } => {
                let _ = reply.send(DestinationStats::new(
                    &self.destination,
                    d.stats(),
                    d.oldest_timestamp(),
                ));
            }
            Control::Take { only, max, reply } => {
                let _ = reply.send(d.take_for_operator(only.as_ref(), max));
            }
            Control::GiveBack { taken } => d.give_back(taken),
            Control::Durables { reply } => {
                let _ = reply.send(Vec::new());
            }
            Control::RestoreBegin { .. } => d.begin_restore(),
            Control::Restore { messages, .. } => {
                for m in messages {
                    d.restore(m);
                }
            }
            Control::SubscribeDurable { done, .. } | Control::RemoveDurable { done, .. } => {
                let _ = done.send(Err(DurableError::NotATopic));
            }
            // Every control is followed by a dispatch: that is the wake-up.
            Control::Wake
            | Control::RestoreEnd { .. }
            | Control::RestoreSubscription { .. }
            | Control::Delete
            | Control::Destroy { .. } => {}
        }
    }
}
