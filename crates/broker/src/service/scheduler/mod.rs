//! Scheduled delivery, as ActiveMQ's scheduler: a message sent with
//! `AMQ_SCHEDULED_DELAY`, `_PERIOD`, `_REPEAT` or `_CRON` is kept by the
//! scheduler instead of going to its destination, and each of its firings
//! is a new message sent through the normal routing (queues, topics,
//! composite destinations, virtual topics). See `spec.rs` for what the
//! properties mean.
//!
//! One actor owns the schedule: an index ordered by (due time, sequence)
//! and one timer, armed for the earliest entry and re-armed as entries
//! come and go — not a task or a timer per message. Every scheduled
//! message is stored (as ActiveMQ's job store keeps every scheduled
//! message, persistent or not) under [`StoreKey::Scheduled`] with a
//! [`Record::Schedule`] saying when it fires next; each firing stores its
//! copies and the schedule's new state (or the message's removal) in one
//! batch, so a crash never loses a firing and repeats one at most once
//! (at-least-once, like any unacknowledged delivery).
//!
//! Memory stays bounded: an entry costs its index slot; bodies beyond
//! `scheduler.memory-bytes` are dropped and read back from the store when
//! they fire (and recovery leaves them on disk to begin with).

pub(crate) mod spec;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use super::connection::Connection;
use super::{ServiceError, Work};
use crate::core::BrokerCore;
use crate::memory::Charge;
use crate::metrics::Metrics;
use crate::model::{Destination, Message, MessageId, Properties, Value, now_ms};
use crate::store::{DUPLICATE_ID_HEADER, Record, StoreKey, StoredMessage};

/// Commands queued for the actor at most; senders wait beyond it.
const COMMANDS: usize = 1024;
/// Firings whose store batch may be pending at once before the actor
/// waits for the oldest.
const IN_FLIGHT: usize = 256;
/// Firings done in one pass before the actor looks at its commands again.
const PASS: usize = 256;

/// A scheduled message as the actor keeps it.
#[derive(Debug)]
pub(crate) struct Entry {
    pub(crate) seq: u64,
    pub(crate) due: u64,
    pub(crate) fired: u32,
    /// The message while its body is in memory; `None` once paged out (it
    /// is read back from the store when it fires).
    pub(crate) message: Option<Arc<Message>>,
}

impl Entry {
    /// A scheduled message just stored, first due at `due`.
    pub(crate) fn new(message: Arc<Message>, due: u64) -> Entry {
        Entry {
            seq: message.seq,
            due,
            fired: 0,
            message: Some(message),
        }
    }

    /// An entry recovered from the store.
    pub(crate) fn recovered(m: StoredMessage) -> Entry {
        let (due, fired) = m.schedule.map_or((now_ms(), 0), |s| (s.due, s.fired));
        Entry {
            seq: m.seq,
            due,
            fired,
            message: m.message,
        }
    }
}

/// What `GET /api/scheduled` shows.
#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct Listing {
    pub(crate) count: usize,
    /// ms since the epoch.
    pub(crate) next_due: Option<u64>,
    pub(crate) entries: Vec<Shown>,
}

/// One scheduled message in a [`Listing`]. Id and destination are known
/// while its body is in memory.
#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct Shown {
    pub(crate) seq: u64,
    pub(crate) id: Option<String>,
    pub(crate) destination: Option<String>,
    pub(crate) due: u64,
    pub(crate) fired: u32,
    /// Firings left after the next one; `None` for cron (no end) or when
    /// the body is not in memory.
    pub(crate) repeats_left: Option<u32>,
}

enum Command {
    Add(Entry),
    List {
        limit: usize,
        reply: oneshot::Sender<Listing>,
    },
}

/// The handle to the scheduler's actor.
#[derive(Clone)]
pub(crate) struct Scheduler {
    tx: mpsc::Sender<Command>,
}

impl Scheduler {
    /// Starts the actor with what recovery found; it sends firings through
    /// `conn`, a connection of the broker's own.
    pub(crate) fn start(
        core: Arc<BrokerCore>,
        conn: Connection,
        recovered: Vec<Entry>,
    ) -> Scheduler {
        let (tx, rx) = mpsc::channel(COMMANDS);
        let (work_tx, work_rx) = mpsc::channel(IN_FLIGHT);
        let mut actor = Actor {
            core: core.clone(),
            conn,
            index: BTreeMap::new(),
            held: 0,
        };
        for e in recovered {
            actor.insert(e);
        }
        core.tasks.spawn(complete(work_rx));
        core.tasks.spawn(actor.run(rx, work_tx));
        Scheduler { tx }
    }

    /// Hands over a scheduled message that is stored.
    pub(crate) async fn add(&self, entry: Entry) -> Result<(), ServiceError> {
        self.tx
            .send(Command::Add(entry))
            .await
            .map_err(|_| ServiceError::SchedulerStopped)
    }

    /// The count, the next due time and the first `limit` entries.
    pub(crate) async fn list(&self, limit: usize) -> Option<Listing> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(Command::List { limit, reply }).await.ok()?;
        rx.await.ok()
    }
}

/// Waits for firings' store batches and deliveries, in order.
async fn complete(mut rx: mpsc::Receiver<Work>) {
    while let Some(work) = rx.recv().await {
        if let Err(e) = work.await {
            tracing::error!(error = %e, "a scheduled message's firing was not delivered");
        }
    }
}

struct Actor {
    core: Arc<BrokerCore>,
    conn: Connection,
    index: BTreeMap<(u64, u64), Entry>,
    /// Body bytes held in memory by entries.
    held: u64,
}

impl Actor {
    async fn run(mut self, mut rx: mpsc::Receiver<Command>, work: mpsc::Sender<Work>) {
        let stop = self.core.stop.clone();
        loop {
            let next = self.index.keys().next().map(|(due, _)| *due);
            let timer = async {
                match next {
                    Some(due) => {
                        let wait = due.saturating_sub(now_ms());
                        tokio::time::sleep(Duration::from_millis(wait)).await;
                    }
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = stop.cancelled() => break,
                cmd = rx.recv() => match cmd {
                    None => break,
                    Some(Command::Add(e)) => self.insert(e),
                    Some(Command::List { limit, reply }) => {
                        let _ = reply.send(self.listing(limit));
                    }
                },
                () = timer => self.fire_due(&work).await,
            }
        }
        self.conn.close().await;
    }

    fn insert(&mut self, mut e: Entry) {
        if let Some(m) = &e.message {
            let w = m.weight() as u64;
            // A stored body over the budget is read back when it fires.
            if self.held + w > self.core.config.scheduler.memory_bytes && self.core.store.pages() {
                e.message = None;
            } else {
                self.held += w;
            }
        }
        Metrics::inc(&self.core.metrics.scheduled_messages);
        self.index.insert((e.due, e.seq), e);
    }

    /// Takes an entry out of the index (it fires, or is gone).
    fn take(&mut self, e: &Entry) {
        if let Some(m) = &e.message {
            self.held = self.held.saturating_sub(m.weight() as u64);
        }
        Metrics::dec(&self.core.metrics.scheduled_messages);
    }

    fn listing(&self, limit: usize) -> Listing {
        let max_repeat = self.core.config.scheduler.max_repeat;
        Listing {
            count: self.index.len(),
            next_due: self.index.keys().next().map(|(due, _)| *due),
            entries: self
                .index
                .values()
                .take(limit)
                .map(|e| {
                    let spec = e
                        .message
                        .as_ref()
                        .and_then(|m| spec::parse(&m.properties, max_repeat).ok().flatten());
                    Shown {
                        seq: e.seq,
                        id: e.message.as_ref().map(|m| m.id.to_string()),
                        destination: e.message.as_ref().map(|m| m.destination.to_string()),
                        due: e.due,
                        fired: e.fired,
                        repeats_left: spec
                            .filter(|s| s.cron.is_none())
                            .map(|s| s.repeat.saturating_sub(e.fired)),
                    }
                })
                .collect(),
        }
    }

    async fn fire_due(&mut self, work: &mpsc::Sender<Work>) {
        for _ in 0..PASS {
            let now = now_ms();
            let Some(entry) = self.index.first_entry().filter(|e| e.key().0 <= now) else {
                return;
            };
            let e = entry.remove();
            self.take(&e);
            self.fire(e, work).await;
        }
    }

    /// Sends one firing of `e` and keeps it for its next one, if any.
    async fn fire(&mut self, mut e: Entry, work: &mpsc::Sender<Work>) {
        let core = self.core.clone();
        let message = match &e.message {
            Some(m) => m.clone(),
            None => match core.store.load(vec![e.seq]).await.pop() {
                Some((_, Ok(m))) => m,
                Some((_, Err(err))) => {
                    tracing::error!(seq = e.seq, error = %err,
                        "cannot read a scheduled message back; it fires after a restart");
                    return;
                }
                None => return,
            },
        };
        let now = now_ms();
        let zone = core.config.scheduler.time_zone;
        // Checked when it was sent: a message that no longer parses (a
        // lower scheduler.max-repeat since) fires once more and ends.
        let spec = spec::parse(&message.properties, u32::MAX).ok().flatten();
        let fired = e.fired.saturating_add(1);
        let next = spec.as_ref().and_then(|s| s.next_due(fired, now, zone));
        if let Some(s) = spec.as_ref().filter(|s| s.starts_runs()) {
            self.start_run(e, &message, s.run_first_due(now), fired, next, work)
                .await;
            return;
        }
        let repeating = spec
            .as_ref()
            .is_some_and(|s| s.repeat > 0 || s.cron.is_some());
        let progress = match next {
            Some(due) => Record::Schedule {
                seq: e.seq,
                due,
                fired,
            },
            None => Record::Remove { seq: e.seq },
        };
        let (firing, also) = firing_of(&core, &message, repeating, now);
        match self.conn.fire(firing, &also, progress).await {
            Ok(w) => {
                Metrics::inc(&core.metrics.scheduled_deliveries_total);
                if work.send(w).await.is_err() {
                    return;
                }
            }
            Err(err) => {
                tracing::error!(seq = e.seq, error = %err, "a scheduled message could not fire");
                if matches!(err, ServiceError::NotStored(_)) {
                    // Neither the firing nor its progress is stored: it
                    // fires again after a restart.
                    return;
                }
            }
        }
        if let Some(due) = next {
            e.due = due;
            e.fired = fired;
            if e.message.is_none() && !core.store.pages() {
                e.message = Some(message);
            }
            self.insert(e);
        }
    }
}

impl Actor {
    /// At a cron time of a cron schedule with repeats: stores a run (a new
    /// scheduled message, the same without its cron, first due at
    /// `run_due`) together with the cron schedule's progress in one batch,
    /// so that after a crash either both are there or the cron time comes
    /// again; then keeps both. The run has an id of its own, as ActiveMQ's
    /// run has a job id of its own.
    async fn start_run(
        &mut self,
        mut e: Entry,
        cron: &Arc<Message>,
        run_due: u64,
        fired: u32,
        next: Option<u64>,
        work: &mpsc::Sender<Work>,
    ) {
        let core = self.core.clone();
        let run = Arc::new(run_of(&core, cron));
        let progress = match next {
            Some(due) => Record::Schedule {
                seq: e.seq,
                due,
                fired,
            },
            None => Record::Remove { seq: e.seq },
        };
        let records = vec![
            // No duplicate-detection id: it is the cron message's, and the
            // run would be taken for a resent copy of it.
            Record::Add {
                key: StoreKey::Scheduled,
                message: run.clone(),
                dedup: None,
            },
            Record::Schedule {
                seq: run.seq,
                due: run_due,
                fired: 0,
            },
            progress,
        ];
        let completion = match core.store.submit(records).await {
            Ok(c) => c,
            Err(err) => {
                // Neither is stored: the cron time comes again after a
                // restart.
                tracing::error!(seq = e.seq, error = %err,
                    "a scheduled message could not start its repeats");
                return;
            }
        };
        let stored: Work = Box::pin(async move {
            completion
                .await
                .map(|_| ())
                .map_err(ServiceError::NotStored)
        });
        if work.send(stored).await.is_err() {
            return;
        }
        self.insert(Entry::new(run, run_due));
        if let Some(due) = next {
            e.due = due;
            e.fired = fired;
            if e.message.is_none() && !core.store.pages() {
                e.message = Some(cron.clone());
            }
            self.insert(e);
        }
    }
}

/// A run of the cron schedule `cron` (see [`Actor::start_run`]): the same
/// message under a new sequence and id, without `AMQ_SCHEDULED_CRON`, so
/// that it is a schedule of `repeat + 1` firings `period` apart.
fn run_of(core: &BrokerCore, cron: &Message) -> Message {
    let seq = core.next_seq();
    Message {
        seq,
        id: MessageId {
            prefix: core.id_prefix.clone(),
            n: seq,
        },
        destination: cron.destination.clone(),
        properties: cron
            .properties
            .iter()
            .filter(|(k, _)| *k != spec::CRON)
            .map(|(k, v)| (k.to_owned(), v.clone()))
            .collect(),
        body: cron.body.clone(),
        persistent: cron.persistent,
        priority: cron.priority,
        expires: cron.expires,
        timestamp: cron.timestamp,
        charge: Charge::none(),
    }
    .charged(&core.memory)
}

/// The message one firing of `scheduled` sends, and the further
/// destinations of its composite destination. As ActiveMQ: a new id for
/// each firing of a repeating schedule (the one firing of a delay keeps
/// the id it was sent with), `scheduledJobId` set, the `AMQ_SCHEDULED_*`
/// properties gone (a firing is never scheduled again), a time to live
/// counted from the firing.
fn firing_of(
    core: &BrokerCore,
    scheduled: &Message,
    repeating: bool,
    now: u64,
) -> (Message, Vec<Destination>) {
    let seq = core.next_seq();
    let also: Vec<Destination> = scheduled
        .string_property(spec::ALSO)
        .map(|list| list.split(',').filter_map(|d| d.parse().ok()).collect())
        .unwrap_or_default();
    let properties: Properties = scheduled
        .properties
        .iter()
        .filter(|(k, _)| {
            // A repeat is a message of its own (its own id, as in
            // ActiveMQ): the sender's duplicate-detection id, which the
            // first copy already passed, would drop every later one.
            let own_id = repeating && *k == DUPLICATE_ID_HEADER;
            let schedule = [
                spec::DELAY,
                spec::PERIOD,
                spec::REPEAT,
                spec::CRON,
                spec::ALSO,
                spec::JOB_ID,
            ]
            .contains(k);
            !own_id && !schedule
        })
        .map(|(k, v)| (k.to_owned(), v.clone()))
        .chain([(
            spec::JOB_ID.to_owned(),
            Value::String(scheduled.id.to_string()),
        )])
        .collect();
    let id = if repeating {
        MessageId {
            prefix: core.id_prefix.clone(),
            n: seq,
        }
    } else {
        scheduled.id.clone()
    };
    let expires = if scheduled.expires > 0 {
        now.saturating_add(scheduled.expires.saturating_sub(scheduled.timestamp))
    } else {
        0
    };
    let m = Message {
        seq,
        id,
        destination: scheduled.destination.clone(),
        properties,
        body: scheduled.body.clone(),
        persistent: scheduled.persistent,
        priority: scheduled.priority,
        expires,
        timestamp: now,
        charge: Charge::none(),
    }
    .charged(&core.memory);
    (m, also)
}
