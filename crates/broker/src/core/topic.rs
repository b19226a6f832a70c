//! The topic actor. Every subscription has its own [`Dispatcher`], so each
//! subscriber has its own order, credit and redelivery.
//!
//! Non-durable subscriptions keep nothing once they end. A durable
//! subscription (a client id and a name) outlives its consumer: persistent
//! messages published while it is away are kept — stored as a copy of its
//! own, with a sequence number of its own — and delivered when it returns.
//! Those copies reach the subscription only once they are durable, so a
//! durable subscriber never sees a message a crash could take back.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use super::dispatch::{Dispatcher, Effect, Select, wake_at};
use super::handle::DurableView;
use futures::StreamExt;
use futures::stream::FuturesUnordered;

use super::queue::{CONTROL_DEPTH, PUBLISH_DEPTH, expiry_timer, subscription_policy};
use super::registry::BrokerCore;
use super::{
    ConsumerId, Control, DestHandle, DestinationStats, DispatchStats, DurableError, DurableName,
    Publish,
};
use crate::model::{Destination, Message, now_ms};
use crate::store::{Completion, Record};

/// Starts the actor for a topic.
pub(crate) fn spawn_topic(shared: Arc<BrokerCore>, destination: Destination) -> DestHandle {
    let (control_tx, control) = mpsc::channel(CONTROL_DEPTH);
    let (publish_tx, publish) = mpsc::channel(PUBLISH_DEPTH);
    let id = shared.next_destination_id();
    let handle = DestHandle::new(destination.clone(), id, control_tx, publish_tx);
    let actor = TopicActor {
        shared,
        destination,
        subs: HashMap::new(),
        selectors: HashMap::new(),
        durable: HashMap::new(),
        by_consumer: HashMap::new(),
        pending: VecDeque::new(),
        loads: FuturesUnordered::new(),
        published: 0,
        gone: DispatchStats::default(),
        id,
        idleness: super::reclaim::Idleness::default(),
        durable_tags: HashMap::new(),
        deferred: Vec::new(),
        resumed: VecDeque::new(),
    };
    tokio::spawn(actor.run(control, publish));
    handle
}

/// A durable subscription: its messages, and its consumer while one is
/// attached.
struct Durable {
    dispatcher: Dispatcher,
    /// This incarnation's tag (see [`DURABLE_TAG`]): a copy written for
    /// one that was made again since belongs to neither.
    tag: u64,
    consumer: Option<ConsumerId>,
    /// Only messages it selects are kept for it.
    selector: Option<Arc<dyn Select>>,
    /// Bodies are being read back for it.
    loading: bool,
}

type Loaded = (
    DurableName,
    Vec<(u64, Result<Arc<Message>, crate::store::StoreError>)>,
);
type Loads = FuturesUnordered<std::pin::Pin<Box<dyn std::future::Future<Output = Loaded> + Send>>>;

/// Copies for durable subscriptions waiting for the store.
struct Pending {
    completion: Completion,
    /// Each copy with the tag of the incarnation it was selected for.
    copies: Vec<(DurableName, u64, Arc<Message>)>,
    accepted: Option<oneshot::Sender<()>>,
}

struct TopicActor {
    shared: Arc<BrokerCore>,
    destination: Destination,
    subs: HashMap<ConsumerId, Dispatcher>,
    /// Selectors of subscribers in `subs`: a topic applies them as it
    /// publishes, so what a subscriber does not select is never queued
    /// for it.
    selectors: HashMap<ConsumerId, Arc<dyn Select>>,
    durable: HashMap<DurableName, Durable>,
    by_consumer: HashMap<ConsumerId, DurableName>,
    pending: VecDeque<Pending>,
    loads: Loads,
    published: u64,
    /// The counters of subscriptions that have gone, so that the topic's
    /// totals (sums over its subscriptions) never go backwards when one
    /// ends: a Prometheus counter that drops reads as a restart.
    gone: DispatchStats,
    id: u64,
    idleness: super::reclaim::Idleness,
    /// Which durable subscription each durable dispatcher's tag names.
    durable_tags: HashMap<u64, DurableName>,
    /// Removals (and makings again) of durable subscriptions whose
    /// recovered messages are still coming in: done at the subscription's
    /// `RestoreEnd`, once every message to remove is in hand. Done before,
    /// those not handed over yet would land in the new subscription, or
    /// bring a removed one back, and stay stored. Requests for counts wait
    /// here too, for the last subscription's.
    deferred: Vec<Control>,
    /// Deferred controls whose subscription's restore has ended, in the
    /// order they came.
    resumed: VecDeque<Control>,
}

/// The bit that tells a durable subscription's tag from a consumer id.
const DURABLE_TAG: u64 = 1 << 63;

async fn front(pending: &mut VecDeque<Pending>) -> Result<(), crate::store::StoreError> {
    match pending.front_mut() {
        Some(p) => (&mut p.completion).await.map(|_| ()),
        None => std::future::pending().await,
    }
}

impl TopicActor {
    /// When the earliest message any subscription holds back for a
    /// redelivery delay is due.
    fn next_due(&self) -> Option<u64> {
        self.subs
            .values()
            .chain(self.durable.values().map(|d| &d.dispatcher))
            .filter_map(Dispatcher::next_due)
            .min()
    }

    /// Publishing waits while any subscription holds too much that cannot
    /// be paged out: one slow subscriber holds back producers rather than
    /// making the broker buffer without bound (ActiveMQ's producer flow
    /// control).
    fn accepting(&self) -> bool {
        self.subs.values().all(Dispatcher::accepting)
            && self.durable.values().all(|d| d.dispatcher.accepting())
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
            let accepting = self.accepting();
            let next_due = self.next_due();
            // Neither traffic nor use: the sweep's tick, an admin request for
            // statistics. An idle destination is reclaimed after long enough
            // without anything else.
            let mut passive = false;
            tokio::select! {
                biased;
                _ = stop.cancelled() => break,
                cmd = control.recv() => match cmd {
                    None | Some(Control::Delete) => break,
                    // The service refuses to delete a topic with durable
                    // subscriptions: nothing it holds is stored.
                    Some(Control::Destroy { reply }) => {
                        let _ = reply.send(Vec::new());
                        break;
                    }
                    Some(cmd) => {
                        passive = matches!(cmd, Control::Stats { .. } | Control::Durables { .. });
                        self.control(cmd, &mut effects).await;
                        while let Some(cmd) = self.resumed.pop_front() {
                            self.control(cmd, &mut effects).await;
                        }
                    }
                },
                stored = front(&mut self.pending) => self.durable_ready(stored).await,
                Some((name, loaded)) = self.loads.next(), if !self.loads.is_empty() => {
                    if let Some(d) = self.durable.get_mut(&name) {
                        d.loading = false;
                        d.dispatcher.loaded(loaded, &mut effects);
                    }
                }
                m = publish.recv(), if accepting => {
                    let Some(m) = m else { break };
                    self.publish(m, &mut effects).await;
                    while self.accepting() {
                        let Ok(m) = publish.try_recv() else { break };
                        self.publish(m, &mut effects).await;
                    }
                }
                // A message waiting out its redelivery delay is due: the
                // dispatches below take it.
                () = wake_at(next_due) => {}
                _ = sweep.tick() => {
                    passive = true;
                    let now = now_ms();
                    for d in self.subs.values_mut() {
                        d.sweep_expired(now, &mut effects);
                    }
                    for d in self.durable.values_mut() {
                        d.dispatcher.sweep_expired(now, &mut effects);
                    }
                }
            }
            let now = now_ms();
            for d in self.subs.values_mut() {
                d.dispatch(now, &mut effects);
            }
            for (name, d) in &mut self.durable {
                d.dispatcher.dispatch(now, &mut effects);
                if !d.loading {
                    let want = d.dispatcher.wanted_loads();
                    if !want.is_empty() {
                        d.loading = true;
                        let (store, name) = (self.shared.store.clone(), name.clone());
                        let memory = self.shared.memory.clone();
                        self.loads.push(Box::pin(async move {
                            let mut loaded = store.load(want).await;
                            super::paging::charge_loaded(&memory, &mut loaded);
                            (name, loaded)
                        }));
                    }
                }
            }
            if !effects.is_empty() {
                let put_back = super::settle(&self.shared, &self.destination, &mut effects).await;
                self.put_back(put_back);
            }
            let idle = self.subs.is_empty()
                && self.durable.is_empty()
                && self.pending.is_empty()
                && self.loads.is_empty();
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

    async fn publish(&mut self, p: Publish, effects: &mut Vec<Effect>) {
        self.published += 1;
        let m = p.message.clone();
        let origin = p.envelope.origin;
        for (id, d) in &mut self.subs {
            if !d.is_local(origin) && self.selectors.get(id).is_none_or(|s| s.selects(&m, 0)) {
                d.push_bounded(m.clone(), false, effects);
            }
        }
        let mut records = Vec::new();
        let mut copies = Vec::new();
        for (name, d) in &mut self.durable {
            if d.dispatcher.is_local(origin)
                || d.selector.as_ref().is_some_and(|s| !s.selects(&m, 0))
            {
                continue;
            }
            if m.persistent {
                let copy = Arc::new(Message {
                    seq: self.shared.next_seq(),
                    ..(*m).clone()
                });
                records.push(Record::Add {
                    key: name.store_key(),
                    message: copy.clone(),
                    dedup: None,
                });
                copies.push((name.clone(), d.tag, copy));
            } else if d.consumer.is_some() {
                // Non-persistent messages reach only attached subscribers.
                d.dispatcher.push_bounded(m.clone(), false, effects);
            }
        }
        if records.is_empty() {
            p.accept();
            return;
        }
        match self.shared.store.submit(records).await {
            Ok(completion) => self.pending.push_back(Pending {
                completion,
                copies,
                accepted: p.accepted,
            }),
            // Dropping `accepted` tells a waiting publisher it failed.
            Err(e) => tracing::error!(topic = %self.destination, error = %e,
                "cannot store a message for durable subscribers"),
        }
    }

    /// The oldest copies for durable subscribers are durable (or failed).
    async fn durable_ready(&mut self, stored: Result<(), crate::store::StoreError>) {
        let Some(p) = self.pending.pop_front() else {
            return;
        };
        if let Err(e) = stored {
            tracing::error!(topic = %self.destination, error = %e,
                "a message for durable subscribers was not stored");
            return;
        }
        let mut orphans = Vec::new();
        for (name, tag, copy) in p.copies {
            match self.durable.get_mut(&name) {
                Some(d) if d.tag == tag => d.dispatcher.push(copy, true),
                // Removed, or made again with another selector, while the
                // copy was being written.
                _ => orphans.push(Record::Remove { seq: copy.seq }),
            }
        }
        if !orphans.is_empty() {
            let _ = self.shared.store.record(orphans).await;
        }
        if let Some(a) = p.accepted {
            let _ = a.send(());
        }
    }

    fn dispatcher_of(&mut self, consumer: ConsumerId) -> Option<&mut Dispatcher> {
        if let Some(d) = self.subs.get_mut(&consumer) {
            return Some(d);
        }
        let name = self.by_consumer.get(&consumer)?;
        self.durable.get_mut(name).map(|d| &mut d.dispatcher)
    }

    /// The durable subscription recovery's messages are for, made (without
    /// a selector) if recovery found messages but not the subscription.
    fn restored_durable(&mut self, name: &DurableName) -> &mut Durable {
        if !self.durable.contains_key(name) {
            let d = self.new_durable(name, None);
            self.durable.insert(name.clone(), d);
        }
        self.durable
            .get_mut(name)
            .expect("inserted just above when missing")
    }

    fn new_durable(&mut self, name: &DurableName, selector: Option<Arc<dyn Select>>) -> Durable {
        // Durable dispatchers are tagged apart from consumer ids (which
        // tag the others) so a message put back finds its subscription.
        let tag = DURABLE_TAG | self.durable_tags.len() as u64;
        self.durable_tags.insert(tag, name.clone());
        Durable {
            dispatcher: Dispatcher::new(subscription_policy(&self.shared, &self.destination, true))
                .with_memory(self.shared.memory.clone())
                .with_tag(tag),
            tag,
            consumer: None,
            selector,
            loading: false,
        }
    }

    /// Puts back what could not be dead-lettered, into the subscription it
    /// came from.
    fn put_back(&mut self, put_back: Vec<super::dead_letter::PutBack>) {
        for p in put_back {
            let d = match self.durable_tags.get(&p.tag) {
                Some(name) => self.durable.get_mut(name).map(|d| &mut d.dispatcher),
                None => self.subs.get_mut(&ConsumerId(p.tag)),
            };
            match d {
                Some(d) => d.put_back(p.message, p.stored, p.deliveries),
                None => tracing::warn!(topic = %self.destination, message_id = %p.message.id,
                    "a message that could not be dead-lettered has no subscription left to go back to"),
            }
        }
    }

    /// Whether `cmd` removes (or makes again) a durable subscription whose
    /// recovered messages are still coming in, or must wait behind one that
    /// does; or asks for counts (statistics, the subscriptions' list) that
    /// would show part of what recovery found, as a queue's do.
    fn waits_for_restore(&self, cmd: &Control) -> bool {
        let (name, selector) = match cmd {
            Control::RemoveDurable { name, .. } => (name, None),
            Control::SubscribeDurable { name, consumer, .. } => (name, Some(&consumer.selector)),
            Control::Stats { .. } | Control::Durables { .. } => return self.restoring(),
            _ => return false,
        };
        let Some(d) = self.durable.get(name) else {
            return false;
        };
        if !d.dispatcher.is_restoring() {
            return false;
        }
        let behind = self.deferred.iter().any(|c| {
            matches!(c, Control::RemoveDurable { name: n, .. }
                | Control::SubscribeDurable { name: n, .. } if n == name)
        });
        behind || selector.is_none_or(|s| !same_selector(s, &d.selector))
    }

    /// Recovery's messages are still coming in for some durable
    /// subscription.
    fn restoring(&self) -> bool {
        self.durable.values().any(|d| d.dispatcher.is_restoring())
    }

    async fn control(&mut self, cmd: Control, effects: &mut Vec<Effect>) {
        if self.waits_for_restore(&cmd) {
            self.deferred.push(cmd);
            return;
        }
        match cmd {
            Control::Subscribe { mut consumer, done } => {
                let id = consumer.id;
                if let Some(selector) = consumer.selector.take() {
                    self.selectors.insert(id, selector);
                }
                let mut policy = subscription_policy(&self.shared, &self.destination, false);
                if consumer.pending_limit.is_some() {
                    policy.pending_limit = consumer.pending_limit;
                }
                let mut d = Dispatcher::new(policy)
                    .with_memory(self.shared.memory.clone())
                    .with_tag(id.0);
                d.add_consumer(consumer);
                self.subs.insert(id, d);
                let _ = done.send(());
            }
            Control::SubscribeDurable {
                name,
                consumer,
                done,
            } => {
                // Nobody waits for the answer any more (its subscriber went
                // while this waited for a restore): nothing to attach.
                if done.is_closed() {
                    return;
                }
                let _ = done.send(self.subscribe_durable(name, consumer).await);
            }
            Control::RemoveDurable { name, done } => {
                let _ = done.send(self.remove_durable(&name).await);
            }
            Control::RestoreSubscription { name, selector } => {
                if !self.durable.contains_key(&name) {
                    let d = self.new_durable(&name, selector);
                    self.durable.insert(name, d);
                }
            }
            Control::RestoreBegin {
                durable: Some(name),
            } => {
                self.restored_durable(&name).dispatcher.begin_restore();
            }
            Control::RestoreEnd {
                durable: Some(name),
            } => {
                self.restored_durable(&name).dispatcher.end_restore();
                let all_in = !self.restoring();
                let (now, still): (Vec<_>, Vec<_>) = std::mem::take(&mut self.deferred)
                    .into_iter()
                    .partition(|c| match c {
                        Control::RemoveDurable { name: n, .. }
                        | Control::SubscribeDurable { name: n, .. } => *n == name,
                        _ => all_in,
                    });
                self.deferred = still;
                self.resumed.extend(now);
            }
            Control::RestoreBegin { durable: None } | Control::RestoreEnd { durable: None } => {}
            Control::Restore { durable, messages } => {
                if let Some(name) = durable {
                    let d = self.restored_durable(&name);
                    for m in messages {
                        d.dispatcher.restore(m);
                    }
                }
            }
            Control::Unsubscribe { consumer, done } => {
                // Gone before its durable subscription was made again: it
                // must not be attached afterwards, holding the subscription
                // for a consumer nobody reads. (Its subscriber is told the
                // subscription was not made.)
                self.deferred.retain(|c| {
                    !matches!(c, Control::SubscribeDurable { consumer: waiting, .. }
                        if waiting.id == consumer)
                });
                self.selectors.remove(&consumer);
                let removed = self.subs.remove(&consumer);
                if let Some(d) = &removed {
                    retire(&mut self.gone, &d.stats());
                }
                if removed.is_none()
                    && let Some(name) = self.by_consumer.remove(&consumer)
                    && let Some(d) = self.durable.get_mut(&name)
                {
                    // The subscription stays; what its consumer held goes
                    // back for the next one.
                    d.dispatcher.remove_consumer(consumer, effects);
                    d.consumer = None;
                }
                if let Some(done) = done {
                    let _ = done.send(());
                }
            }
            Control::Ack { consumer, seqs } => {
                if let Some(d) = self.dispatcher_of(consumer) {
                    d.ack(consumer, &seqs);
                }
            }
            Control::Nack {
                consumer,
                seqs,
                poison,
            } => {
                if let Some(d) = self.dispatcher_of(consumer) {
                    d.nack(consumer, &seqs, poison, effects);
                }
            }
            Control::Prefetch { consumer, prefetch } => {
                if let Some(d) = self.dispatcher_of(consumer) {
                    d.set_prefetch(consumer, prefetch);
                }
            }
            Control::Hold { consumer, seqs } => {
                if let Some(d) = self.dispatcher_of(consumer) {
                    d.hold(consumer, &seqs);
                }
            }
            Control::Commit { consumer, seqs } => {
                if let Some(d) = self.dispatcher_of(consumer) {
                    d.commit(&seqs);
                }
            }
            Control::Rollback { consumer, seqs } => {
                if let Some(d) = self.dispatcher_of(consumer) {
                    d.rollback(&seqs, effects);
                }
            }
            Control::Stats { reply } => {
                // The counters start from those of subscriptions gone;
                // the gauges (ready, in flight...) are only the current ones'.
                let mut total = DispatchStats {
                    delivered: self.gone.delivered,
                    acked: self.gone.acked,
                    discarded: self.gone.discarded,
                    expired: self.gone.expired,
                    dead_lettered: self.gone.dead_lettered,
                    ..DispatchStats::default()
                };
                let all = self
                    .subs
                    .values()
                    .chain(self.durable.values().map(|d| &d.dispatcher));
                for d in all {
                    let s = d.stats();
                    total.ready += s.ready;
                    total.delayed += s.delayed;
                    total.inflight += s.inflight;
                    total.consumers += s.consumers;
                    total.delivered += s.delivered;
                    total.acked += s.acked;
                    total.memory_bytes += s.memory_bytes;
                    total.discarded += s.discarded;
                    total.expired += s.expired;
                    total.dead_lettered += s.dead_lettered;
                }
                total.enqueued = self.published;
                // The oldest message any subscription holds.
                let oldest = self
                    .subs
                    .values()
                    .chain(self.durable.values().map(|d| &d.dispatcher))
                    .filter_map(Dispatcher::oldest_timestamp)
                    .min();
                let _ = reply.send(DestinationStats::new(&self.destination, total, oldest));
            }
            Control::Durables { reply } => {
                let list = self
                    .durable
                    .iter()
                    .map(|(name, d)| {
                        let s = d.dispatcher.stats();
                        DurableView {
                            client_id: name.client_id.to_string(),
                            name: name.name.to_string(),
                            topic: self.destination.to_string(),
                            selector: d.selector.as_ref().map(|s| s.text().to_owned()),
                            active: d.consumer.is_some(),
                            pending: s.ready + s.inflight + s.delayed,
                        }
                    })
                    .collect();
                let _ = reply.send(list);
            }
            // Operators take messages from queues only.
            Control::Take { reply, .. } => {
                let _ = reply.send(Vec::new());
            }
            Control::GiveBack { .. } => {}
            // Topics are not browsed (the service refuses it).
            Control::Browse { .. } | Control::Delete | Control::Destroy { .. } => {}
            // Every control is followed by a dispatch: that is the wake-up.
            Control::Wake => {}
        }
    }

    /// Attaches `consumer` to the durable subscription `name`, creating
    /// it if need be. A subscription asked for with another selector than
    /// it has is made again, empty (as ActiveMQ does): what it kept was
    /// chosen by the old selector.
    async fn subscribe_durable(
        &mut self,
        name: DurableName,
        mut consumer: super::ConsumerReg,
    ) -> Result<(), DurableError> {
        let selector = consumer.selector.take();
        let mut batch = Vec::new();
        if let Some(d) = self.durable.get(&name) {
            if d.consumer.is_some() {
                return Err(DurableError::InUse {
                    client_id: name.client_id.to_string(),
                    name: name.name.to_string(),
                });
            }
            if !same_selector(&d.selector, &selector) {
                tracing::info!(topic = %self.destination, client_id = %name.client_id,
                    subscription = %name.name, "durable subscription's selector changed: made again");
                batch = removal(name.clone(), d);
            }
        }
        if !batch.is_empty() || !self.durable.contains_key(&name) {
            batch.push(Record::SubscriptionAdd {
                client_id: name.client_id.to_string(),
                name: name.name.to_string(),
                topic: self.destination.clone(),
                selector: selector.as_ref().map(|s| s.text().to_owned()),
            });
            let stored = match self.shared.store.submit(batch).await {
                Ok(c) => c.await,
                Err(e) => Err(e),
            };
            stored.map_err(DurableError::NotCreated)?;
            let d = self.new_durable(&name, selector);
            if let Some(old) = self.durable.insert(name.clone(), d) {
                retire(&mut self.gone, &old.dispatcher.stats());
            }
        }
        let id = consumer.id;
        if let Some(d) = self.durable.get_mut(&name) {
            d.dispatcher.add_consumer(consumer);
            d.consumer = Some(id);
        }
        self.by_consumer.insert(id, name);
        Ok(())
    }

    async fn remove_durable(&mut self, name: &DurableName) -> Result<(), DurableError> {
        let Some(d) = self.durable.get(name) else {
            return Err(DurableError::NotFound {
                client_id: name.client_id.to_string(),
                name: name.name.to_string(),
                topic: self.destination.to_string(),
            });
        };
        if d.consumer.is_some() {
            return Err(DurableError::Attached {
                name: name.name.to_string(),
            });
        }
        let batch = removal(name.clone(), d);
        let stored = match self.shared.store.submit(batch).await {
            Ok(c) => c.await,
            Err(e) => Err(e),
        };
        stored.map_err(DurableError::NotRemoved)?;
        if let Some(old) = self.durable.remove(name) {
            retire(&mut self.gone, &old.dispatcher.stats());
        }
        Ok(())
    }
}

/// Whether two selectors are the same text (or both absent): a durable
/// subscription asked for with another is made again.
fn same_selector(a: &Option<Arc<dyn Select>>, b: &Option<Arc<dyn Select>>) -> bool {
    a.as_ref().map(|s| s.text()) == b.as_ref().map(|s| s.text())
}

/// Adds the counters of a subscription that is going to those of the
/// subscriptions gone before it.
fn retire(gone: &mut DispatchStats, s: &DispatchStats) {
    gone.delivered += s.delivered;
    gone.acked += s.acked;
    gone.discarded += s.discarded;
    gone.expired += s.expired;
    gone.dead_lettered += s.dead_lettered;
}

/// The store records that remove durable subscription `name` and the
/// messages it keeps.
fn removal(name: DurableName, d: &Durable) -> Vec<Record> {
    let mut batch = vec![Record::SubscriptionRemove {
        client_id: name.client_id.to_string(),
        name: name.name.to_string(),
    }];
    batch.extend(
        d.dispatcher
            .stored_seqs()
            .into_iter()
            .map(|seq| Record::Remove { seq }),
    );
    batch
}
