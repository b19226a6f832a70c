//! What operators do to a master's destinations and durable subscriptions
//! (the admin API's browse, purge, move, copy, dead-letter retry and
//! delete), on the same paths clients' requests take.
//!
//! - Browsing attaches a queue browser, as a client's would: it sees the
//!   queue's snapshot (bodies on disk read back a window at a time) and
//!   takes nothing.
//! - Purging and moving take ready and delayed messages out of the queue's
//!   actor a chunk at a time ([`Control::Take`]); messages in flight stay
//!   with their consumers. A move sends each message again through a
//!   connection of the broker's own, so routing, storing, flow control and
//!   limits are those of any send, waits until the copies are stored, and
//!   only then removes the originals. A crash in between leaves a message
//!   in both places (at least once, never lost). What cannot be moved goes
//!   back where it was ([`Control::GiveBack`]).
//! - Copies are sent without the duplicate-detection id (`_AMQ_DUPL_ID`):
//!   the queue they go to may have seen it when the message was first sent
//!   (a dead-letter retry always has), and would drop the copy silently.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use super::Service;
use super::connection::Connection;
use super::error::ServiceError;
use super::send::NewMessage;
use crate::core::{
    ConsumerReg, Control, DestHandle, DurableName, DurableView, FAILURE_CAUSE, Note,
    ORIGINAL_DESTINATION, Taken,
};
use crate::model::{Destination, DestinationKind, Message, Properties};
use crate::store::{DUPLICATE_ID_HEADER, Record, StoreError};

/// Messages taken out of a queue at a time by a purge or a move.
const CHUNK: usize = 512;
/// A browse's window: messages shown before the operator's side has
/// counted them.
const BROWSE_WINDOW: u32 = 256;
/// Longest an operator's browse goes on before it gives up.
const BROWSE_DEADLINE: Duration = Duration::from_secs(60);

/// Why an operator's request was refused or failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum OperatorError {
    #[error("no such destination: {0}")]
    NotFound(String),
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Conflict(String),
    #[error("the destination stopped while the request was carried out")]
    Stopped,
    #[error("after {done} message(s): {source}")]
    Send {
        done: u64,
        #[source]
        source: ServiceError,
    },
    #[error("after {done} message(s): the store failed: {source}")]
    Store {
        done: u64,
        #[source]
        source: StoreError,
    },
}

/// A message a browse showed.
#[derive(Debug)]
pub(crate) struct Browsed {
    pub(crate) message: Arc<Message>,
    /// Deliveries so far (1 means it would be a first delivery).
    pub(crate) deliveries: u32,
}

/// Which messages a move takes.
#[derive(Debug, Default)]
pub(crate) struct Selection {
    /// Message ids (as clients see them); empty: any.
    pub(crate) ids: Vec<String>,
    /// A JMS selector; `None`: any.
    pub(crate) selector: Option<String>,
    /// At most this many.
    pub(crate) limit: Option<usize>,
}

impl Selection {
    fn is_everything(&self) -> bool {
        self.ids.is_empty() && self.selector.is_none() && self.limit.is_none()
    }
}

/// Where a move sends messages.
#[derive(Debug, Clone)]
pub(crate) enum Target {
    To(Destination),
    /// Each back to the destination it was dead-lettered from.
    Origin,
}

/// What a move did.
#[derive(Debug, Default, serde::Serialize)]
pub(crate) struct Moved {
    /// Messages moved (or copied).
    pub(crate) moved: u64,
    /// Messages chosen but left where they were: in flight to a consumer,
    /// or (a retry) without an `original-destination`.
    pub(crate) skipped: u64,
}

impl Service {
    /// Writes an operator's change and waits until it is durable: an
    /// answer to an operator, like a RECEIPT, is a promise.
    async fn durably(&self, batch: Vec<Record>) -> Result<(), StoreError> {
        self.core.store.submit(batch).await?.await.map(|_| ())
    }

    /// A queue that exists.
    fn operated_queue(&self, dest: &Destination) -> Result<DestHandle, OperatorError> {
        if !matches!(
            dest.kind(),
            DestinationKind::Queue | DestinationKind::TempQueue
        ) {
            return Err(OperatorError::Invalid(format!(
                "{dest} is not a queue: only queues hold messages to browse, purge or move"
            )));
        }
        self.core
            .existing_destination(dest)
            .ok_or_else(|| OperatorError::NotFound(dest.to_string()))
    }

    /// Shows `visit` the messages of queue `dest` a browser would see (those
    /// `selector` selects), in dispatch order, until it says stop or the
    /// queue's snapshot ends.
    pub(crate) async fn browse_each(
        &self,
        dest: &Destination,
        selector: Option<&str>,
        mut visit: impl FnMut(Browsed) -> bool,
    ) -> Result<(), OperatorError> {
        let handle = self.operated_queue(dest)?;
        let selector = match selector {
            Some(text) => self
                .selector(text)
                .map_err(|e| OperatorError::Invalid(format!("invalid selector: {e}")))?,
            None => None,
        };
        let (tx, mut rx) = mpsc::unbounded_channel();
        let mut reg = ConsumerReg::plain(0, BROWSE_WINDOW, tx).with_id(self.core.next_consumer());
        reg.selector = selector;
        let consumer = reg.id;
        let (done, attached) = oneshot::channel();
        handle
            .control(Control::Browse {
                consumer: reg,
                done,
            })
            .await
            .map_err(|_| OperatorError::Stopped)?;
        attached.await.map_err(|_| OperatorError::Stopped)?;
        let browse = async {
            while let Some(d) = rx.recv().await {
                if d.note == Note::EndOfBrowse {
                    break;
                }
                let seq = d.message.seq;
                let more = visit(Browsed {
                    message: d.message,
                    deliveries: d.deliveries,
                });
                // Counted: the browser may be shown one more.
                let _ = handle
                    .control(Control::Ack {
                        consumer,
                        seqs: vec![seq],
                    })
                    .await;
                if !more {
                    break;
                }
            }
        };
        let finished = tokio::time::timeout(BROWSE_DEADLINE, browse).await;
        let _ = handle
            .control(Control::Unsubscribe {
                consumer,
                done: None,
            })
            .await;
        finished.map_err(|_| {
            OperatorError::Conflict(format!(
                "browsing {dest} took longer than {}s",
                BROWSE_DEADLINE.as_secs()
            ))
        })
    }

    /// Up to `limit` messages of queue `dest` after the first `offset`,
    /// without consuming them.
    pub(crate) async fn browse_queue(
        &self,
        dest: &Destination,
        selector: Option<&str>,
        offset: usize,
        limit: usize,
    ) -> Result<Vec<Browsed>, OperatorError> {
        let mut seen = 0usize;
        let mut out = Vec::new();
        if limit == 0 {
            self.operated_queue(dest)?;
            return Ok(out);
        }
        self.browse_each(dest, selector, |b| {
            seen += 1;
            if seen > offset {
                out.push(b);
            }
            out.len() < limit
        })
        .await?;
        Ok(out)
    }

    /// Takes a chunk of messages out of `handle`'s queue.
    async fn take(
        handle: &DestHandle,
        only: Option<HashSet<u64>>,
        max: usize,
    ) -> Result<Vec<Taken>, OperatorError> {
        let (reply, taken) = oneshot::channel();
        handle
            .control(Control::Take { only, max, reply })
            .await
            .map_err(|_| OperatorError::Stopped)?;
        taken.await.map_err(|_| OperatorError::Stopped)
    }

    async fn give_back(handle: &DestHandle, taken: Vec<Taken>) {
        if !taken.is_empty() {
            // A destination that stopped has nowhere to put them; the
            // stored ones are still in the store and come back on restart.
            let _ = handle.control(Control::GiveBack { taken }).await;
        }
    }

    /// Removes the ready and delayed messages of queue `dest` (in-flight
    /// ones stay with their consumers). Returns how many it removed.
    pub(crate) async fn purge_queue(&self, dest: &Destination) -> Result<u64, OperatorError> {
        let handle = self.operated_queue(dest)?;
        let mut purged = 0u64;
        // What is there now: on a busy queue, messages sent meanwhile are
        // not chased.
        let mut budget = Self::waiting(&handle).await?;
        while budget > 0 {
            let taken = Self::take(&handle, None, CHUNK.min(budget)).await?;
            if taken.is_empty() {
                break;
            }
            budget -= taken.len();
            let removes: Vec<Record> = taken
                .iter()
                .filter(|t| t.stored())
                .map(|t| Record::Remove { seq: t.seq() })
                .collect();
            if !removes.is_empty()
                && let Err(source) = self.durably(removes).await
            {
                Self::give_back(&handle, taken).await;
                return Err(OperatorError::Store {
                    done: purged,
                    source,
                });
            }
            purged += taken.len() as u64;
        }
        Ok(purged)
    }

    /// How many messages a queue holds that an operator could take: ready
    /// and delayed ones.
    async fn waiting(handle: &DestHandle) -> Result<usize, OperatorError> {
        let (reply, rx) = oneshot::channel();
        handle
            .control(Control::Stats { reply })
            .await
            .map_err(|_| OperatorError::Stopped)?;
        let s = rx.await.map_err(|_| OperatorError::Stopped)?;
        Ok(s.dispatch.ready + s.dispatch.delayed)
    }

    /// The seqs of the messages of queue `dest` that `selection` chooses.
    async fn chosen(
        &self,
        dest: &Destination,
        selection: &Selection,
    ) -> Result<Vec<u64>, OperatorError> {
        let ids: HashSet<&str> = selection.ids.iter().map(String::as_str).collect();
        let limit = selection.limit.unwrap_or(usize::MAX);
        let mut seqs = Vec::new();
        if limit == 0 {
            return Ok(seqs);
        }
        self.browse_each(dest, selection.selector.as_deref(), |b| {
            let id = b.message.id.to_string();
            if ids.is_empty()
                || ids.contains(id.as_str())
                || b.message
                    .string_property(DUPLICATE_ID_HEADER)
                    .is_some_and(|d| ids.contains(d))
            {
                seqs.push(b.message.seq);
            }
            seqs.len() < limit
        })
        .await?;
        Ok(seqs)
    }

    /// Moves (or, with `copy`, copies) the messages of queue `dest` that
    /// `selection` chooses to `target`.
    pub(crate) async fn move_messages(
        self: &Arc<Self>,
        dest: &Destination,
        selection: Selection,
        target: Target,
        copy: bool,
        who: &str,
    ) -> Result<Moved, OperatorError> {
        let handle = self.operated_queue(dest)?;
        if let Target::To(to) = &target {
            if to == dest {
                return Err(OperatorError::Invalid(format!(
                    "{dest} is where the messages are already"
                )));
            }
            if crate::model::NamePattern::is_wildcard(to.name()) {
                return Err(OperatorError::Invalid(format!(
                    "cannot move messages to a wildcard ({to})"
                )));
            }
        }
        let mut conn = self.broker_connection(
            format!("{}-operator-{}", self.boot, self.next_connection_id()),
            Some(who.to_owned()),
        );
        let result = self
            .move_with(&mut conn, &handle, dest, selection, &target, copy)
            .await;
        conn.close().await;
        result
    }

    async fn move_with(
        &self,
        conn: &mut Connection,
        handle: &DestHandle,
        dest: &Destination,
        selection: Selection,
        target: &Target,
        copy: bool,
    ) -> Result<Moved, OperatorError> {
        let mut report = Moved::default();
        // Everything: chunks of whatever is ready until nothing is. A
        // choice: the chosen seqs, a chunk at a time (a copy never takes:
        // it sends what the browse showed, and the originals stay).
        let everything = selection.is_everything() && !copy && matches!(target, Target::To(_));
        let mut chosen = if everything {
            None
        } else {
            Some(self.chosen(dest, &selection).await?.into_iter())
        };
        // Everything that is there now: on a busy queue, messages sent
        // meanwhile are not chased.
        let mut budget = if everything {
            Self::waiting(handle).await?
        } else {
            usize::MAX
        };
        loop {
            let taken = match &mut chosen {
                None => {
                    if budget == 0 {
                        break;
                    }
                    let t = Self::take(handle, None, CHUNK.min(budget)).await?;
                    budget -= t.len();
                    t
                }
                Some(seqs) => {
                    let only: HashSet<u64> = seqs.by_ref().take(CHUNK).collect();
                    if only.is_empty() {
                        break;
                    }
                    let wanted = only.len();
                    let taken = Self::take(handle, Some(only), CHUNK).await?;
                    // The others went to a consumer meanwhile.
                    report.skipped += (wanted - taken.len()) as u64;
                    taken
                }
            };
            if taken.is_empty() {
                if chosen.is_none() {
                    break;
                }
                continue;
            }
            let (moved, back, error) = self.move_chunk(conn, taken, target, copy).await;
            report.moved += moved;
            if !copy {
                report.skipped += back.len() as u64;
            }
            Self::give_back(handle, back).await;
            if let Some(e) = error {
                return Err(match e {
                    Failed::Send(source) => OperatorError::Send {
                        done: report.moved,
                        source,
                    },
                    Failed::Store(source) => OperatorError::Store {
                        done: report.moved,
                        source,
                    },
                });
            }
            if chosen.is_none() && report.skipped > 0 && moved == 0 {
                // What is left cannot be moved (unreadable): taking it
                // again would find the same.
                break;
            }
        }
        Ok(report)
    }

    /// Sends one chunk's messages to their targets, waits until stored,
    /// then removes the originals. Returns how many moved, what goes back,
    /// and the failure that stopped it.
    async fn move_chunk(
        &self,
        conn: &mut Connection,
        taken: Vec<Taken>,
        target: &Target,
        copy: bool,
    ) -> (u64, Vec<Taken>, Option<Failed>) {
        let missing: Vec<u64> = taken
            .iter()
            .filter(|t| t.message().is_none())
            .map(Taken::seq)
            .collect();
        let mut loaded: HashMap<u64, Arc<Message>> = HashMap::new();
        if !missing.is_empty() {
            for (seq, r) in self.core.store.load(missing).await {
                match r {
                    Ok(m) => {
                        loaded.insert(seq, m);
                    }
                    Err(e) => {
                        tracing::error!(seq, error = %e, "a stored message to move cannot be read; it stays");
                    }
                }
            }
        }
        let mut back = Vec::new();
        let mut sent = Vec::new();
        let mut works = Vec::new();
        let mut failure = None;
        for t in taken {
            if failure.is_some() {
                back.push(t);
                continue;
            }
            let Some(message) = t.message().cloned().or_else(|| loaded.remove(&t.seq())) else {
                back.push(t);
                continue;
            };
            let retry = matches!(target, Target::Origin);
            let to = match target {
                Target::To(d) => d.clone(),
                Target::Origin => match message
                    .string_property(ORIGINAL_DESTINATION)
                    .and_then(|s| s.parse::<Destination>().ok())
                {
                    Some(d) => d,
                    None => {
                        back.push(t);
                        continue;
                    }
                },
            };
            let new = NewMessage {
                destination: to,
                also: Vec::new(),
                properties: carried(&message.properties, retry),
                body: message.body.clone(),
                persistent: message.persistent,
                priority: message.priority,
                expires: message.expires,
            };
            match conn.send(new, None, false).await {
                Ok(s) => {
                    if let Some(w) = s.work {
                        works.push(w);
                    }
                    sent.push(t);
                }
                Err(e) => {
                    failure = Some(Failed::Send(e));
                    back.push(t);
                }
            }
        }
        // The copies are stored (a group commit for the chunk) before any
        // original goes.
        let mut stored = sent.len();
        for (i, w) in works.into_iter().enumerate() {
            if let Err(e) = w.await {
                failure.get_or_insert(Failed::Send(e));
                stored = stored.min(i);
            }
        }
        if stored < sent.len() {
            // Which copies made it is not known one by one: keep every
            // original (a copy that did get stored is then a duplicate,
            // never a loss).
            back.extend(sent);
            return (0, back, failure);
        }
        if copy {
            back.extend(sent);
            return (stored as u64, back, failure);
        }
        let removes: Vec<Record> = sent
            .iter()
            .filter(|t| t.stored())
            .map(|t| Record::Remove { seq: t.seq() })
            .collect();
        if !removes.is_empty()
            && let Err(e) = self.durably(removes).await
        {
            back.extend(sent);
            return (0, back, Some(Failed::Store(e)));
        }
        (stored as u64, back, failure)
    }

    /// Deletes destination `dest` and the messages it holds; its consumers
    /// are disconnected. A topic with durable subscriptions is refused
    /// (remove them first). Returns how many stored messages went.
    pub(crate) async fn delete_destination(
        &self,
        dest: &Destination,
        who: &str,
    ) -> Result<u64, OperatorError> {
        let handle = self
            .core
            .existing_destination(dest)
            .ok_or_else(|| OperatorError::NotFound(dest.to_string()))?;
        if dest.kind().is_topic() {
            let (reply, rx) = oneshot::channel();
            handle
                .control(Control::Durables { reply })
                .await
                .map_err(|_| OperatorError::Stopped)?;
            let durables = rx.await.map_err(|_| OperatorError::Stopped)?;
            if !durables.is_empty() {
                return Err(OperatorError::Conflict(format!(
                    "{dest} has {} durable subscription(s): remove them first",
                    durables.len()
                )));
            }
        }
        // Its consumers go first, so nobody acknowledges into the void.
        let closed = self.directory.close_subscribers(
            &dest.to_string(),
            format!("{dest} was deleted by an operator ({who})"),
        );
        let (reply, rx) = oneshot::channel();
        self.core.forget_destination(dest);
        handle
            .control(Control::Destroy { reply })
            .await
            .map_err(|_| OperatorError::Stopped)?;
        let seqs = rx.await.map_err(|_| OperatorError::Stopped)?;
        let count = seqs.len() as u64;
        let mut batch: Vec<Record> = seqs.into_iter().map(|seq| Record::Remove { seq }).collect();
        if dest.kind() == DestinationKind::Queue {
            batch.push(Record::QueueDropped {
                queue: dest.clone(),
            });
        }
        if let Err(source) = self.durably(batch).await {
            return Err(OperatorError::Store { done: 0, source });
        }
        tracing::info!(destination = %dest, messages = count, consumers_closed = closed,
            "destination deleted");
        Ok(count)
    }

    /// Every durable subscription, by topic.
    pub(crate) async fn durable_subscriptions(&self) -> Vec<DurableView> {
        let mut out = Vec::new();
        for h in self.core.destination_handles() {
            if !h.destination().kind().is_topic() {
                continue;
            }
            let (reply, rx) = oneshot::channel();
            if h.control(Control::Durables { reply }).await.is_err() {
                continue;
            }
            if let Ok(Ok(list)) = tokio::time::timeout(Duration::from_secs(1), rx).await {
                out.extend(list);
            }
        }
        out.sort_by(|a, b| (&a.client_id, &a.name).cmp(&(&b.client_id, &b.name)));
        out
    }

    /// Removes durable subscription `name` of client `client_id` and what
    /// it kept; refused while a consumer is attached.
    pub(crate) async fn remove_durable_subscription(
        &self,
        client_id: &str,
        name: &str,
    ) -> Result<(), OperatorError> {
        let durable = DurableName {
            client_id: client_id.into(),
            name: name.into(),
        };
        let topic = self.durables.topic(&durable).ok_or_else(|| {
            OperatorError::NotFound(format!(
                "durable subscription '{name}' of client '{client_id}'"
            ))
        })?;
        let handle = self
            .core
            .destination(&topic)
            .map_err(|e| OperatorError::Conflict(e.to_string()))?;
        let (done, removed) = oneshot::channel();
        handle
            .control(Control::RemoveDurable {
                name: durable.clone(),
                done,
            })
            .await
            .map_err(|_| OperatorError::Stopped)?;
        match removed.await.map_err(|_| OperatorError::Stopped)? {
            Ok(()) => {
                self.durables.set(&durable, None);
                Ok(())
            }
            Err(crate::core::DurableError::NotFound { .. }) => Err(OperatorError::NotFound(
                format!("durable subscription '{name}' of client '{client_id}'"),
            )),
            Err(e) => Err(OperatorError::Conflict(e.to_string())),
        }
    }
}

enum Failed {
    Send(ServiceError),
    Store(StoreError),
}

/// The properties a moved message keeps: all but the duplicate-detection
/// id, and for a dead-letter retry, the dead-lettering's own.
fn carried(properties: &Properties, retry: bool) -> Properties {
    properties
        .iter()
        .filter(|(k, _)| {
            *k != DUPLICATE_ID_HEADER
                && !(retry && (*k == ORIGINAL_DESTINATION || *k == FAILURE_CAUSE))
        })
        .map(|(k, v)| (k.to_owned(), v.clone()))
        .collect()
}
