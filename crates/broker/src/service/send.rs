//! Sending: a new message is stamped, admitted, stored when persistent and
//! handed to its destination.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;

use super::connection::Connection;
use super::copy::{Copy, deliver};
use super::error::ServiceError;
use super::publish::{Waiting, flow_control, memory_room};
use super::scheduler::Entry;
use super::scheduler::spec::{self, Spec};
use super::{Pending, Right, Work, ready};
use crate::core::DestHandle;
use crate::memory::Charge;
use crate::model::{Destination, Message, MessageId, NamePattern, Properties, Value, now_ms};
use crate::store::{Admission, Duplicates, Record, StoreError, StoreKey, Verdict};

/// A message as a protocol head hands it over; the service gives it its
/// sequence number, id and timestamp.
#[derive(Debug)]
pub(crate) struct NewMessage {
    pub(crate) destination: Destination,
    /// Further destinations it is sent to as well (a composite destination,
    /// ActiveMQ's `/queue/a,/topic/b`); usually none.
    pub(crate) also: Vec<Destination>,
    /// Application properties (STOMP's headers become string ones).
    pub(crate) properties: Properties,
    pub(crate) body: Bytes,
    pub(crate) persistent: bool,
    /// 0 (lowest) to 9 (highest).
    pub(crate) priority: u8,
    /// Expiry in ms since the epoch; 0 means never.
    pub(crate) expires: u64,
}

/// Resolves once a store batch is durable, with the duplicates in it.
pub(super) type Stored =
    std::pin::Pin<Box<dyn Future<Output = Result<Duplicates, ServiceError>> + Send>>;

/// How a SEND's copies are being stored.
enum Storing {
    /// Not at all: no copy is persistent, or none goes to a destination
    /// that stores.
    Not,
    /// Dispatched once durable.
    Durable(Stored),
    /// Dispatched once the store's writer has checked it for duplicates,
    /// while its write is under way (`store.concurrent-dispatch`).
    Early(Stored, Verdict),
}

/// The result of a send: the work to wait for, and the body bytes it holds
/// in memory until done (which count toward the connection's in-flight
/// limit).
pub(crate) struct Sent {
    pub(crate) work: Pending,
    pub(crate) bytes: usize,
}

impl Connection {
    /// Sends a message. Without a transaction the returned work completes
    /// when the message is stored (if persistent) and its destinations have
    /// it; with `confirm`, a topic's subscribers of the moment have it too.
    /// In transaction `tx` the message waits for the commit.
    pub(crate) async fn send(
        &mut self,
        mut new: NewMessage,
        tx: Option<&str>,
        confirm: bool,
    ) -> Result<Sent, ServiceError> {
        if let Some(t) = tx
            && !self.txs.contains_key(t)
        {
            return Err(ServiceError::UnknownTransaction(t.to_owned()));
        }
        for d in std::iter::once(&new.destination).chain(&new.also) {
            self.authorize(Right::Write, d)?;
        }
        // Over the rate, the SEND waits for its turn: the session that
        // owns this connection reads no more frames meanwhile, so the
        // producer is slowed down (TCP backpressure) and loses nothing.
        if let Some(rate) = &mut self.send_rate {
            let wait = rate.take();
            if !wait.is_zero() {
                crate::metrics::Metrics::inc(&self.service.core.metrics.sends_delayed_total);
                tokio::time::sleep(wait).await;
            }
        }
        if let Some(spec) = self.schedule_of(&new)? {
            return self.send_scheduled(new, spec, tx).await;
        }
        let also = std::mem::take(&mut new.also);
        let bytes = new.body.len();
        let copies = self.route(self.stamp(new), &also).await?;
        let core = self.service.core.clone();
        // What the message holds of the memory budget (its copies share one
        // charge, as they share its body): it does not wait for room only
        // its own departure could make.
        let own = copies.first().map_or(0, |c| c.message.weight() as u64);

        if let Some(t) = tx {
            let tx = self.transaction_send(t, bytes)?;
            tx.sends.extend(copies);
            if core.memory.used().saturating_sub(own) < core.memory.limit() {
                return Ok(Sent {
                    work: ready(),
                    bytes: 0,
                });
            }
            // The message stays in memory until the commit: hold the
            // producer (the session reads nothing more from it) until
            // there is room beside it.
            let work = async move {
                flow_control(&core, "transactional SEND", memory_room(&core, own)).await?;
                Ok(())
            };
            return Ok(Sent {
                work: Some(Box::pin(work)),
                bytes,
            });
        }

        let records: Vec<Record> = copies.iter().filter_map(Copy::record).collect();
        // A message a destination must keep in memory waits for room in the
        // broker's budget; a stored one can be paged out instead.
        let pinned = copies.len() > records.len() || !core.store.pages();
        // Every copy stored, and to a queue: dispatched while being stored
        // (`store.concurrent-dispatch`; a topic's subscribers of the moment
        // get it once durable, as in ActiveMQ).
        let early = core.config.store.concurrent_dispatch
            && !records.is_empty()
            && records.len() == copies.len()
            && copies.iter().all(|c| {
                c.handle
                    .as_ref()
                    .is_some_and(|h| !h.destination().kind().is_topic())
            });
        let storing = if records.is_empty() {
            Storing::Not
        } else if early {
            self.store_early(records).await?
        } else {
            Storing::Durable(
                self.store_batch(records, true, "persistent SEND", ServiceError::NotStored)
                    .await?,
            )
        };
        // Where its copies go, to take them back if their write fails.
        let placed: Vec<(DestHandle, u64)> = if early {
            copies
                .iter()
                .filter_map(|c| Some((c.handle.clone()?, c.message.seq)))
                .collect()
        } else {
            Vec::new()
        };
        // Only a stored send can be a duplicate.
        let dropped = (!matches!(storing, Storing::Not)).then(|| self.duplicates_dropped.clone());
        let work = async move {
            let (duplicates, durable) = match storing {
                Storing::Not => (Duplicates::default(), None),
                Storing::Durable(s) => (s.await?, None),
                Storing::Early(s, verdict) => match verdict.await {
                    Some(d) => (d, Some(s)),
                    None => (s.await?, None),
                },
            };
            if let Some(d) = dropped
                && !duplicates.0.is_empty()
            {
                d.fetch_add(1, Ordering::Relaxed);
            }
            if pinned {
                flow_control(&core, "SEND", memory_room(&core, own)).await?;
            }
            // A queue has the message once it is in its channel (any later
            // consumer gets it); a topic only once it has fanned it out to
            // the subscribers of that moment.
            flow_control(&core, "SEND", deliver(&core, copies, &duplicates, confirm)).await??;
            // Dispatched while being stored: the receipt still waits for
            // the write (or for the acknowledgement that cancelled it).
            if let Some(s) = durable
                && let Err(e) = s.await
            {
                withdraw(&placed).await;
                return Err(e);
            }
            Ok(())
        };
        Ok(Sent {
            work: Some(Box::pin(work)),
            bytes,
        })
    }

    /// Whether `new` is to be scheduled (`AMQ_SCHEDULED_*`), and how.
    fn schedule_of(&self, new: &NewMessage) -> Result<Option<Spec>, ServiceError> {
        let config = &self.service.core.config.scheduler;
        if !config.enabled {
            return Ok(None);
        }
        let Some(spec) = spec::parse(&new.properties, config.max_repeat)? else {
            return Ok(None);
        };
        let held = self
            .service
            .core
            .metrics
            .scheduled_messages
            .load(Ordering::Relaxed);
        if held >= config.max_messages as u64 {
            return Err(ServiceError::TooManyScheduled(config.max_messages));
        }
        Ok(Some(spec))
    }

    /// Sends a scheduled message: it is stored for the scheduler (every
    /// scheduled message is, persistent or not, as in ActiveMQ's job
    /// store) and handed to it once durable; in a transaction, at commit.
    async fn send_scheduled(
        &mut self,
        mut new: NewMessage,
        spec: Spec,
        tx: Option<&str>,
    ) -> Result<Sent, ServiceError> {
        let also = std::mem::take(&mut new.also);
        if let Some(d) = std::iter::once(&new.destination)
            .chain(&also)
            .find(|d| NamePattern::is_wildcard(d.name()))
        {
            return Err(ServiceError::WildcardSend(d.clone()));
        }
        if !also.is_empty() {
            let list = also
                .iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join(",");
            new.properties = new
                .properties
                .iter()
                .filter(|(k, _)| *k != spec::ALSO)
                .map(|(k, v)| (k.to_owned(), v.clone()))
                .chain([(spec::ALSO.to_owned(), Value::String(list))])
                .collect();
        }
        let Some(scheduler) = self.service.scheduler.get().cloned() else {
            return Err(ServiceError::SchedulerStopped);
        };
        let zone = self.service.core.config.scheduler.time_zone;
        // Checked now, so a schedule that never fires is refused at once.
        let due = spec.first_due(now_ms(), zone)?;
        let bytes = new.body.len();
        let message = Arc::new(self.stamp(new));
        if let Some(t) = tx {
            let tx = self.transaction_send(t, bytes)?;
            tx.scheduled.push((message, spec));
            return Ok(Sent {
                work: ready(),
                bytes: 0,
            });
        }
        let records = scheduled_records(&message, due);
        let stored = self
            .store_batch(records, true, "scheduled SEND", ServiceError::NotStored)
            .await?;
        let work = async move {
            let duplicates = stored.await?;
            if duplicates.contains(message.seq) {
                return Ok(());
            }
            scheduler.add(Entry::new(message, due)).await
        };
        Ok(Sent {
            work: Some(Box::pin(work)),
            bytes,
        })
    }

    /// Sends one firing of a scheduled message (see `scheduler/`): routes
    /// it as any SEND and stores its copies together with `progress`, the
    /// schedule's new state or its removal, in one batch. The returned work
    /// completes once the batch is durable and the copies delivered.
    pub(super) async fn fire(
        &mut self,
        message: Message,
        also: &[Destination],
        progress: Record,
    ) -> Result<Work, ServiceError> {
        let copies = self.route(message, also).await?;
        let core = self.service.core.clone();
        let mut records: Vec<Record> = copies.iter().filter_map(Copy::record).collect();
        records.push(progress);
        // Admitted when it was sent: a firing does not wait for room.
        let completion = core
            .store
            .submit(records)
            .await
            .map_err(ServiceError::NotStored)?;
        Ok(Box::pin(async move {
            let duplicates = completion.await.map_err(ServiceError::NotStored)?;
            deliver(&core, copies, &duplicates, false).await
        }))
    }

    /// Gives a new message its identity and charges it to the memory budget.
    fn stamp(&self, new: NewMessage) -> Message {
        let core = &self.service.core;
        let seq = core.next_seq();
        Message {
            seq,
            id: MessageId {
                prefix: core.id_prefix.clone(),
                n: seq,
            },
            destination: new.destination,
            properties: new.properties,
            body: new.body,
            persistent: new.persistent,
            priority: new.priority,
            expires: new.expires,
            timestamp: now_ms(),
            charge: Charge::none(),
        }
        .charged(&core.memory)
    }

    /// The destination a message goes to, created on first use. `None` for
    /// a temporary destination of another connection that no longer exists:
    /// replies to a requester that has gone are dropped, not refused.
    pub(super) fn resolve_for_send(
        &mut self,
        dest: &Destination,
    ) -> Result<Option<DestHandle>, ServiceError> {
        if dest.kind().is_temporary() && !dest.is_temp_of(&self.temp_scope) {
            return Ok(self.service.core.existing_destination(dest));
        }
        self.destination(dest).map(Some)
    }

    /// Submits a new message's batch to be dispatched while it is being
    /// stored, if the store admits it now; otherwise (the store is full
    /// and `store.when-full = "wait"`, or an earlier batch of this
    /// connection waits for room) it is stored before it is dispatched.
    async fn store_early(&mut self, batch: Vec<Record>) -> Result<Storing, ServiceError> {
        let core = self.service.core.clone();
        if self.waiting_for_room.load(Ordering::Acquire) == 0 {
            match core.store.try_admit() {
                Admission::Now => {
                    let (completion, verdict) = core
                        .store
                        .submit_early(batch)
                        .await
                        .map_err(ServiceError::NotStored)?;
                    let stored: Stored =
                        Box::pin(async move { completion.await.map_err(ServiceError::NotStored) });
                    return Ok(Storing::Early(stored, verdict));
                }
                Admission::Refused(e) => return Err(ServiceError::NotStored(e)),
                Admission::Wait => {}
            }
        }
        let stored = self
            .store_batch(batch, true, "persistent SEND", ServiceError::NotStored)
            .await?;
        Ok(Storing::Durable(stored))
    }

    /// Writes `batch` to the store in this connection's order. A batch with
    /// new messages (`adds`) needs room: if there is some and no earlier
    /// batch of this connection is still waiting for room, it is submitted
    /// now; if the store refuses, that is the error; otherwise
    /// (`store.when-full = "wait"`) the wait happens inside the returned
    /// future, in the connection's pipeline, so the session goes on reading
    /// the acknowledgements that may free the room.
    pub(super) async fn store_batch(
        &mut self,
        batch: Vec<Record>,
        adds: bool,
        what: &'static str,
        failed: fn(StoreError) -> ServiceError,
    ) -> Result<Stored, ServiceError> {
        let core = self.service.core.clone();
        let now = !adds
            || self.waiting_for_room.load(Ordering::Acquire) == 0 && {
                match core.store.try_admit() {
                    Admission::Now => true,
                    Admission::Refused(e) => return Err(failed(e)),
                    Admission::Wait => false,
                }
            };
        if now {
            let completion = core.store.submit(batch).await.map_err(failed)?;
            return Ok(Box::pin(async move { completion.await.map_err(failed) }));
        }
        let waiting = Waiting::start(&self.waiting_for_room);
        Ok(Box::pin(async move {
            // Held until the batch is durable: later batches of this
            // connection wait behind it, so the store sees them in order.
            let _waiting = waiting;
            flow_control(&core, what, core.store.admit())
                .await?
                .map_err(failed)?;
            let completion = core.store.submit(batch).await.map_err(failed)?;
            completion.await.map_err(failed)
        }))
    }
}

/// Takes back the copies of a message dispatched while being stored whose
/// write failed: the producer gets an ERROR, so none may stay queued.
/// (A consumer that got one meanwhile keeps it.)
async fn withdraw(placed: &[(DestHandle, u64)]) {
    for (handle, seq) in placed {
        let (reply, taken) = tokio::sync::oneshot::channel();
        let only = Some(std::collections::HashSet::from([*seq]));
        let take = crate::core::Control::Take {
            only,
            max: 1,
            reply,
        };
        if handle.control(take).await.is_ok() {
            // Dropped: it was never stored.
            let _ = taken.await;
        }
    }
}

/// The records that store a scheduled message: the message under the
/// scheduler's key (with its duplicate-detection id: a SEND resent after a
/// failover is not scheduled twice) and its first due time.
pub(super) fn scheduled_records(message: &Arc<Message>, due: u64) -> Vec<Record> {
    vec![
        Record::Add {
            key: StoreKey::Scheduled,
            message: message.clone(),
            dedup: super::publish::duplicate_id(message),
        },
        Record::Schedule {
            seq: message.seq,
            due,
            fired: 0,
        },
    ]
}
