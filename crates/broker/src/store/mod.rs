//! The storage seam.
//!
//! Everything that must survive a restart goes through a [`Store`]: a handle
//! to a single writer, on a thread of its own, that owns a [`StoreBackend`].
//! Callers submit a batch of [`Record`]s and get a [`Completion`] that
//! resolves once the batch is durable. The writer takes whatever batches have
//! queued up while the backend was busy and hands them over together, so a
//! backend that syncs once per call gets group commit for free: with many
//! producers waiting, one sync covers all of them.
//!
//! Invariants every backend keeps:
//! - A batch is atomic: after a crash, recovery sees all of its records or
//!   none of them.
//! - Batches become durable in submission order, and a completion resolves
//!   only after its batch (and every earlier one) is durable.
//! - Recovery returns exactly the messages that were added and not removed
//!   (sequence numbers are unique across destinations), in sequence order,
//!   with their latest delivery counts, the durable subscriptions that
//!   were added and not removed, and the queues that were declared and not
//!   dropped (each once, in the order they were declared).
//!
//! Ordering rules the broker keeps in return: a message's Add is submitted
//! before it is ever delivered (so its `Remove` is submitted after it: it
//! follows the Add, or cancels it while the Add is not yet written — see
//! [`Store::submit_early`]), and whoever
//! decides a message's fate writes its `Remove` — the consumer's session for
//! acknowledgements, the destination for expiry and dead-lettering.

#[cfg(test)]
mod ahead_tests;
#[cfg(test)]
mod conformance;
mod dedup;
pub mod dirlock;
#[cfg(test)]
mod fixtures;
pub mod journal;
mod memory;
pub(crate) mod open;
mod pending;
pub mod postgres;
mod writer;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use tokio::sync::{Notify, mpsc, oneshot};

use writer::{Failure, Parked, Request, Shared, Spin, Writer, writer};

pub use dedup::{DUPLICATE_ID_HEADER, DuplicateBounds, Duplicates, MAX_DUPLICATE_ID_LEN};
pub use journal::JournalStore;
pub use memory::MemoryStore;

use crate::model::{Destination, Message};

/// Where a stored message is queued: a queue, or one durable topic
/// subscription (each durable subscriber has its own copy).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum StoreKey {
    /// `/queue/NAME`.
    Queue(Arc<str>),
    /// A durable subscription: client id and subscription name.
    Durable {
        /// The `client-id` of the subscriber's connection.
        client_id: Arc<str>,
        /// The subscription name.
        name: Arc<str>,
    },
    /// The broker's scheduler: a message sent with `AMQ_SCHEDULED_*`
    /// properties, waiting for its firings (each firing is a new message
    /// routed to its destinations). Its progress is its latest
    /// [`Record::Schedule`].
    Scheduled,
}

#[cfg(test)]
impl Record {
    /// The Add of a small test message to the queue `q`, without a
    /// duplicate-detection id.
    pub(crate) fn test_add(seq: u64) -> Record {
        Record::Add {
            key: StoreKey::Queue("q".into()),
            message: crate::model::test_message(seq, 4),
            dedup: None,
        }
    }
}

/// One change to the stored state.
#[derive(Debug, Clone)]
pub enum Record {
    /// A persistent message was accepted.
    Add {
        /// Where it is queued.
        key: StoreKey,
        /// The message (its `seq` is its key).
        message: Arc<Message>,
        /// The SEND's duplicate-detection id: the writer drops the Add if
        /// the queue has seen the id recently, and the backend keeps it so
        /// the memory survives a restart. `None` for copies the broker
        /// makes (dead-lettering, topic subscriptions).
        dedup: Option<Arc<str>>,
    },
    /// A stored message was consumed, expired or moved.
    Remove {
        /// Its `seq`.
        seq: u64,
    },
    /// A stored message went back for redelivery.
    Redelivered {
        /// Its `seq`.
        seq: u64,
        /// How often it has been delivered.
        deliveries: u32,
    },
    /// A scheduled message's progress: when it fires next and how often it
    /// has fired. Written with the message's Add, and with each firing (in
    /// the batch that adds the firing's copies), so a crash neither loses
    /// nor repeats a firing beyond at-least-once. The latest one counts;
    /// the message's Remove ends it.
    Schedule {
        /// The scheduled message's `seq`.
        seq: u64,
        /// When it fires next, ms since the epoch.
        due: u64,
        /// How many times it has fired.
        fired: u32,
    },
    /// A stored message went back for redelivery after a delay (the
    /// destination's redelivery policy): it is not to be delivered before
    /// `until_ms`, also after a restart or a takeover. A later
    /// `Redelivered` record of the message cancels the delay.
    Delayed {
        /// Its `seq`.
        seq: u64,
        /// How often it has been delivered.
        deliveries: u32,
        /// When it may be delivered again, ms since the epoch.
        until_ms: u64,
    },
    /// A durable subscription was created.
    SubscriptionAdd {
        /// The subscriber's client id.
        client_id: String,
        /// The subscription name.
        name: String,
        /// The topic (stored by its canonical name, e.g. `/topic/prices`).
        topic: Destination,
        /// Its message selector, if it has one (kept as written).
        selector: Option<String>,
    },
    /// A durable subscription was removed.
    SubscriptionRemove {
        /// The subscriber's client id.
        client_id: String,
        /// The subscription name.
        name: String,
    },
    /// A queue was declared: it exists (and is recovered) even when empty.
    /// Declaring a queue already declared changes nothing.
    QueueDeclared {
        /// The queue (stored by its canonical name, e.g. `/queue/orders`).
        queue: Destination,
    },
    /// A declared queue was deleted. Its messages stay: the broker writes
    /// their Removes itself. Dropping a queue not declared changes nothing.
    QueueDropped {
        /// The queue.
        queue: Destination,
    },
}

/// An atomic group of records.
pub type Batch = Vec<Record>;

/// Why the store could not do what was asked.
///
/// Cloneable, because one failure is reported to every waiter of a group.
/// Errors underneath (I/O, database) are kept as the `source()`, shared by
/// `Arc`, so code can inspect them (say, an `io::ErrorKind`); their text is
/// also part of the message, because logs and ERROR frames show only that.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The writer has stopped (broker shutting down or store failed).
    #[error("the message store is closed")]
    Closed,
    /// The backend failed to make a batch durable, for a reason of its own
    /// (no error underneath: see [`Io`](Self::Io) and
    /// [`Database`](Self::Database) for those).
    #[error("the message store failed: {0}")]
    Failed(Arc<str>),
    /// An operation on the store's files failed; the store cannot go on.
    #[error("the message store failed: {doing}: {source}")]
    Io {
        /// What the store was doing, naming the file where there is one.
        doing: Arc<str>,
        /// The operating system's error.
        #[source]
        source: Arc<std::io::Error>,
    },
    /// The database failed or refused; the store cannot go on.
    #[error("the message store failed: {doing}: {detail}")]
    Database {
        /// What the store was doing.
        doing: Arc<str>,
        /// The database's own message (tokio-postgres's `Display` alone
        /// says only "db error").
        detail: Arc<str>,
        /// The client library's error.
        #[source]
        source: Arc<dyn std::error::Error + Send + Sync>,
    },
    /// The broker is no longer master (it lost the data directory's lock):
    /// nothing more may be confirmed.
    #[error("this broker is no longer master: {0}")]
    Fenced(Arc<str>),
    /// `store.max-bytes` is reached.
    #[error("the message store is full (store.max-bytes is {limit} bytes)")]
    Full {
        /// The limit.
        limit: u64,
    },
    /// The write could not be done (e.g. no space for a new segment);
    /// nothing was written, and later writes may succeed.
    #[error("the message store cannot write now: {reason}")]
    Unavailable {
        /// Why, for people.
        reason: Arc<str>,
        /// The operating system's error, when one said so (a full disk).
        #[source]
        source: Option<Arc<std::io::Error>>,
    },
    /// Recovery found records that had been confirmed missing or damaged,
    /// and was told to refuse (the journal's `on-corruption`): what is
    /// lost, and what to do.
    #[error("the message store is damaged: {0}")]
    Corrupt(Arc<str>),
    /// A stored message could not be read back: it is not there, or not
    /// what it should be.
    #[error("cannot read stored message {seq}: {reason}")]
    Read {
        /// Its `seq`.
        seq: u64,
        /// Why.
        reason: Arc<str>,
    },
    /// A stored message could not be read back because reading failed (a
    /// file or the database).
    #[error("cannot read stored message {seq}: {source}")]
    ReadFailed {
        /// Its `seq`.
        seq: u64,
        /// The error underneath.
        #[source]
        source: Arc<dyn std::error::Error + Send + Sync>,
    },
}

impl StoreError {
    /// An I/O failure while `doing` something: fatal for the store.
    pub fn io(doing: impl Into<Arc<str>>, source: std::io::Error) -> StoreError {
        StoreError::Io {
            doing: doing.into(),
            source: Arc::new(source),
        }
    }

    /// A refusal that later writes may not meet, without an error underneath.
    pub fn unavailable(reason: impl Into<Arc<str>>) -> StoreError {
        StoreError::Unavailable {
            reason: reason.into(),
            source: None,
        }
    }

    /// Whether the store cannot go on after this error: it reports itself
    /// failed, and the broker stops rather than confirm what it cannot keep.
    pub fn is_fatal(&self) -> bool {
        matches!(
            self,
            StoreError::Failed(_)
                | StoreError::Io { .. }
                | StoreError::Database { .. }
                | StoreError::Fenced(_)
        )
    }
}

/// A message found by recovery. Backends that keep bodies on disk leave
/// `message` empty; the destination loads it when it is about to deliver.
#[derive(Debug, Clone)]
pub struct StoredMessage {
    /// Where it is queued.
    pub key: StoreKey,
    /// Its sequence number.
    pub seq: u64,
    /// 0–9.
    pub priority: u8,
    /// Expiry, ms since the epoch; 0 = never.
    pub expires: u64,
    /// Approximate size in memory when loaded.
    pub weight: u32,
    /// Deliveries so far.
    pub deliveries: u32,
    /// Not to be delivered before this, ms since the epoch (a delayed
    /// redelivery, [`Record::Delayed`]); 0 = no delay.
    pub not_before: u64,
    /// The message, if the backend has it in memory.
    pub message: Option<Arc<Message>>,
    /// A scheduled message's progress (its latest [`Record::Schedule`]);
    /// `None` for every other message.
    pub schedule: Option<ScheduleState>,
}

/// A scheduled message's progress, as its latest [`Record::Schedule`] left
/// it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScheduleState {
    /// When it fires next, ms since the epoch.
    pub due: u64,
    /// How many times it has fired.
    pub fired: u32,
}

/// A durable subscription found by recovery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DurableSubscription {
    /// The subscriber's client id.
    pub client_id: String,
    /// The subscription name.
    pub name: String,
    /// The topic.
    pub topic: Destination,
    /// Its message selector, if it has one.
    pub selector: Option<String>,
}

/// Runs the future `work` makes on a thread of its own, with a
/// single-threaded runtime: for work that blocks on disk I/O, or that must
/// not take the broker's runtime from serving.
pub(crate) fn spawn_on_own_runtime<F, Fut>(
    name: &str,
    work: F,
) -> std::io::Result<std::thread::JoinHandle<()>>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = ()>,
{
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || rt.block_on(work()))
}

/// Recovered messages in sequence order, held compactly (a few bytes per
/// message plus each distinct key once): deep queues recover millions.
#[derive(Debug, Default)]
pub struct RecoveredMessages {
    keys: Vec<StoreKey>,
    key_ids: std::collections::HashMap<StoreKey, u32>,
    entries: Vec<CompactStored>,
    bodies: std::collections::HashMap<u64, Arc<Message>>,
    /// Scheduled messages' progress, by sequence (usually few).
    schedules: std::collections::HashMap<u64, ScheduleState>,
}

#[derive(Debug, Clone, Copy)]
struct CompactStored {
    seq: u64,
    expires: u64,
    key: u32,
    weight: u32,
    deliveries: u32,
    priority: u8,
    not_before: u64,
}

impl RecoveredMessages {
    /// Adds a message (in any order; iteration sorts by sequence).
    pub fn push(&mut self, m: StoredMessage) {
        let key = self.key_id(&m.key);
        if let Some(body) = m.message {
            self.bodies.insert(m.seq, body);
        }
        if let Some(s) = m.schedule {
            self.schedules.insert(m.seq, s);
        }
        self.entries.push(CompactStored {
            seq: m.seq,
            expires: m.expires,
            key,
            weight: m.weight,
            deliveries: m.deliveries,
            priority: m.priority,
            not_before: m.not_before,
        });
    }

    /// The keys known, by id.
    pub(crate) fn keys(&self) -> &[StoreKey] {
        &self.keys
    }

    /// Whether each key (by id) has a message here: the keys a set knows
    /// include those whose messages are all gone (a deleted queue's).
    pub(crate) fn keys_in_use(&self) -> Vec<bool> {
        let mut used = vec![false; self.keys.len()];
        for e in &self.entries {
            if let Some(u) = used.get_mut(e.key as usize) {
                *u = true;
            }
        }
        used
    }

    /// An empty set that knows these keys (ids in this order).
    pub(crate) fn with_keys(keys: Vec<StoreKey>) -> RecoveredMessages {
        let key_ids = keys
            .iter()
            .enumerate()
            .map(|(i, k)| (k.clone(), i as u32))
            .collect();
        RecoveredMessages {
            keys,
            key_ids,
            ..RecoveredMessages::default()
        }
    }

    /// The id of `key` in this set.
    pub fn key_id(&mut self, key: &StoreKey) -> u32 {
        if let Some(&id) = self.key_ids.get(key) {
            return id;
        }
        let id = self.keys.len() as u32;
        self.keys.push(key.clone());
        self.key_ids.insert(key.clone(), id);
        id
    }

    /// Adds a message whose key came from [`RecoveredMessages::key_id`];
    /// `delivery` is (deliveries so far, not before: see [`StoredMessage`]).
    pub fn push_compact(
        &mut self,
        seq: u64,
        key: u32,
        priority: u8,
        expires: u64,
        weight: u32,
        delivery: (u32, u64),
    ) {
        self.entries.push(CompactStored {
            seq,
            expires,
            key,
            weight,
            deliveries: delivery.0,
            priority,
            not_before: delivery.1,
        });
    }

    /// Notes a scheduled message's progress (for messages added by
    /// [`RecoveredMessages::push_compact`]).
    pub fn set_schedule(&mut self, seq: u64, state: ScheduleState) {
        self.schedules.insert(seq, state);
    }

    /// (seq, deliveries) of every message, in sequence order.
    #[cfg(test)]
    pub(crate) fn summary(&self) -> Vec<(u64, u32)> {
        let mut v: Vec<(u64, u32)> = self.entries.iter().map(|e| (e.seq, e.deliveries)).collect();
        v.sort_unstable();
        v
    }

    /// How many messages.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Takes out the messages of `key` (with their bodies and schedules),
    /// in one pass and without building any: the scheduler's few among a
    /// deep queue's millions.
    pub(crate) fn split_off(&mut self, key: &StoreKey) -> RecoveredMessages {
        let Some(&id) = self.key_ids.get(key) else {
            return RecoveredMessages::default();
        };
        let mut out = RecoveredMessages::with_keys(vec![key.clone()]);
        self.entries.retain(|e| {
            if e.key != id {
                return true;
            }
            out.entries.push(CompactStored { key: 0, ..*e });
            false
        });
        for e in &out.entries {
            if let Some(b) = self.bodies.remove(&e.seq) {
                out.bodies.insert(e.seq, b);
            }
            if let Some(s) = self.schedules.remove(&e.seq) {
                out.schedules.insert(e.seq, s);
            }
        }
        out
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The messages in sequence order.
    pub fn into_sorted(self) -> impl Iterator<Item = StoredMessage> {
        self.into_sorted_with_ids().map(|(_, m)| m)
    }

    /// The messages in sequence order, each with its key's id (its place in
    /// [`RecoveredMessages::keys`]).
    pub(crate) fn into_sorted_with_ids(mut self) -> impl Iterator<Item = (u32, StoredMessage)> {
        // The journal hands them over in order (its index is ordered): then
        // there is nothing to sort.
        if !self.entries.is_sorted_by_key(|e| e.seq) {
            self.entries.sort_by_key(|e| e.seq);
        }
        let keys = self.keys;
        let mut bodies = self.bodies;
        let mut schedules = self.schedules;
        self.entries.into_iter().map(move |e| {
            let m = StoredMessage {
                key: keys[e.key as usize].clone(),
                seq: e.seq,
                priority: e.priority,
                expires: e.expires,
                weight: e.weight,
                deliveries: e.deliveries,
                not_before: e.not_before,
                message: bodies.remove(&e.seq),
                schedule: schedules.remove(&e.seq),
            };
            (e.key, m)
        })
    }
}

impl Recovered {
    /// How many live messages recovery found, now and to come.
    pub fn message_count(&self) -> usize {
        self.messages.len() + self.later.as_ref().map_or(0, |l| l.0.len())
    }
}

/// Recovered messages a backend hands over a chunk at a time once the
/// broker serves, in sequence order (see [`Recovered::later`]): building a
/// deep store's whole list first would keep a taking-over slave from
/// serving for as long as that takes.
pub trait LaterMessages: Send + 'static {
    /// What is to come, known before anything is handed over.
    fn shape(&self) -> &LaterShape;
    /// The keys the messages name, by id.
    fn keys(&self) -> &[StoreKey] {
        &self.shape().keys
    }
    /// Whether each key (by id) has messages to come.
    fn in_use(&self) -> &[bool] {
        &self.shape().in_use
    }
    /// How many messages there are to come.
    fn len(&self) -> usize {
        self.shape().len
    }
    /// Whether none are to come.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The next ones, at most `max`, each with its key's id; none when
    /// all have come. A source that streams them from elsewhere (the
    /// database) may have to wait, or fail.
    fn next_chunk(&mut self, max: usize) -> LaterChunk<'_>;
}

/// A chunk of [`LaterMessages`], each message with its key's id.
pub type LaterChunk<'a> = std::pin::Pin<
    Box<dyn Future<Output = Result<Vec<(u32, StoredMessage)>, StoreError>> + Send + 'a>,
>;

/// What [`LaterMessages`] are to come: the keys they name (by id),
/// whether each has any, and how many in all.
#[derive(Debug, Default)]
pub struct LaterShape {
    /// The keys, by id.
    pub keys: Vec<StoreKey>,
    /// Whether each key has messages to come.
    pub in_use: Vec<bool>,
    /// How many messages in all.
    pub len: usize,
}

/// A [`RecoveredMessages`] handed over a chunk at a time.
pub(crate) struct EagerMessages {
    shape: LaterShape,
    rest: Box<dyn Iterator<Item = (u32, StoredMessage)> + Send>,
}

impl EagerMessages {
    pub(crate) fn new(messages: RecoveredMessages) -> EagerMessages {
        EagerMessages {
            shape: LaterShape {
                keys: messages.keys.clone(),
                in_use: messages.keys_in_use(),
                len: messages.len(),
            },
            rest: Box::new(messages.into_sorted_with_ids()),
        }
    }
}

impl LaterMessages for EagerMessages {
    fn shape(&self) -> &LaterShape {
        &self.shape
    }

    fn next_chunk(&mut self, max: usize) -> LaterChunk<'_> {
        Box::pin(std::future::ready(Ok(self
            .rest
            .by_ref()
            .take(max)
            .collect())))
    }
}

/// Messages recovery hands over once the broker serves.
pub struct Later(pub Box<dyn LaterMessages>);

impl std::fmt::Debug for Later {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Later({} messages)", self.0.len())
    }
}

/// What recovery found.
#[derive(Debug, Default)]
pub struct Recovered {
    /// Live messages (with [`Recovered::later`], only the scheduler's:
    /// what must be in place before the broker serves).
    pub messages: RecoveredMessages,
    /// The other live messages, when the backend hands them over once the
    /// broker serves.
    pub later: Option<Later>,
    /// Live durable subscriptions.
    pub subscriptions: Vec<DurableSubscription>,
    /// Declared queues: declared and not dropped since, each once, in the
    /// order they were declared (a queue dropped and declared again counts
    /// from the new declaration). They exist even without messages.
    pub queues: Vec<Destination>,
    /// The highest sequence number ever used, so new messages sort after
    /// recovered ones and no number is used twice.
    pub max_seq: u64,
    /// Recent duplicate-detection ids per queue, oldest first (at most the
    /// window the backend was given per queue).
    pub duplicate_ids: Vec<(StoreKey, Vec<Arc<str>>)>,
}

/// Reads stored messages back. Used from any task; `load` may block, so the
/// [`Store`] calls it on a blocking thread.
pub trait MessageReader: Send + Sync + 'static {
    /// Whether message bodies may be dropped from memory and loaded back
    /// (deep queues); false for stores that keep nothing on disk.
    fn pages(&self) -> bool;

    /// Loads the messages with these sequence numbers.
    fn load(&self, seqs: &[u64]) -> Vec<Result<Arc<Message>, StoreError>>;
}

/// What became of a group sent ahead ([`StoreBackend::send_ahead`]).
#[derive(Debug)]
pub enum AheadOutcome {
    /// The group's answer, as [`StoreBackend::write`] would have given it.
    Done(Result<(), StoreError>),
    /// The connection broke under it: it may or may not have been written.
    /// The writer writes it again with [`StoreBackend::write`] (which
    /// reconnects), safe because a group is idempotent.
    Again,
}

/// A group sent ahead: resolves with its outcome. It is polled on the
/// writer's thread.
pub type Ahead = Pin<Box<dyn Future<Output = AheadOutcome> + Send>>;

/// A storage implementation, driven by the store's writer thread.
pub trait StoreBackend: Send + 'static {
    /// Reads the stored state. Called once, before the writer starts.
    fn recover(&mut self) -> impl Future<Output = Result<Recovered, StoreError>> + Send;

    /// Writes `batches`, in order, each atomically, and with `sync` makes
    /// them (and everything before) durable before returning. Called with
    /// everything that queued up while the previous call ran.
    fn write(
        &mut self,
        batches: &[Batch],
        sync: bool,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Sends `batches` as one group and returns without waiting for the
    /// answer, for a backend that has its writes carried out in the order it
    /// sent them (PostgreSQL: one connection, each group its own
    /// transaction). The writer then gathers and sends the next group while
    /// this one commits, instead of leaving the database idle for a round
    /// trip between two commits; it still answers each group's submitters
    /// in order (see `writer.rs`). The group must be on its way when this
    /// returns: the next call's group is carried out after it.
    ///
    /// `None` when this group cannot go ahead (a backend that writes one
    /// group at a time, a kind of group it sends in several steps, no
    /// connection ready): the writer then waits for every group ahead and
    /// calls [`write`](Self::write).
    fn send_ahead(&mut self, batches: &[Batch], sync: bool) -> Option<Ahead> {
        let _ = (batches, sync);
        None
    }

    /// Background upkeep (reclaiming space) when no batch is waiting; does
    /// a bounded amount of work and says whether more is pending.
    fn maintain(&mut self) -> impl Future<Output = Result<bool, StoreError>> + Send {
        async { Ok(false) }
    }

    /// Whether [`maintain`](Self::maintain) has waited for an idle moment
    /// too long: a writer kept busy without a pause (producers outrunning
    /// the store) then runs it between two groups. For upkeep that bounds
    /// what the store holds (PostgreSQL's pruning of duplicate-detection
    /// ids), which a long saturating burst would otherwise let grow
    /// without bound.
    fn upkeep_overdue(&self) -> bool {
        false
    }

    /// Called once after the last write, on clean shutdown.
    fn close(&mut self) -> impl Future<Output = ()> + Send {
        async {}
    }

    /// The reader for this store's messages.
    fn reader(&self) -> Arc<dyn MessageReader>;
}

/// Disk (or memory) used by the store, shared between the backend, which
/// updates it, and the broker, which enforces `store.max-bytes`.
#[derive(Debug)]
pub struct Usage {
    used: AtomicU64,
    /// Bytes of live data (records still needed), where the backend tells
    /// it apart from `used`: a journal's files are preallocated, so the
    /// disk they take says little about what they hold. `u64::MAX`: not
    /// told, `used` is the data.
    data: AtomicU64,
    /// How long each synced group took to write and make durable (the
    /// journal's write and fdatasync, PostgreSQL's transaction and commit).
    pub sync_seconds: crate::metrics::Histogram,
    /// How long each batch someone waits for was queued before its group
    /// went to the backend: behind the group being written, gathering,
    /// and waiting for its cohort. With `sync_seconds`, where a
    /// confirmation's time goes.
    pub wait_seconds: crate::metrics::Histogram,
    /// Batches (SENDs, ACKs, COMMITs waiting for it) per synced group: the
    /// group-commit factor, as a distribution.
    pub group_batches: crate::metrics::Histogram,
    freed: Notify,
    /// Groups of batches written.
    pub groups: AtomicU64,
    /// Groups made durable with a sync.
    pub synced_groups: AtomicU64,
    /// Batches that waited for a sync (one per confirmed SEND, ACK or
    /// COMMIT): divided by `synced_groups`, the group-commit factor.
    pub synced_batches: AtomicU64,
    /// Batches written without anyone waiting (bookkeeping).
    pub lazy_batches: AtomicU64,
    /// Writes sent again after the connection to a database store broke.
    pub retries: AtomicU64,
    /// Duplicate-detection ids the writer remembers now.
    pub duplicate_ids: AtomicU64,
    /// Writes of new messages refused because the store's disk was short
    /// of space.
    pub no_space: AtomicU64,
    /// Adds of messages dispatched while being stored that an
    /// acknowledgement cancelled before they were written (neither was).
    pub adds_cancelled: AtomicU64,
    /// Until when (ms since the Unix epoch) new persistent messages are
    /// refused at admission because the disk is short of space; 0 if it is
    /// not.
    short_until_ms: AtomicU64,
    /// What the last recovery found missing or damaged of what had been
    /// confirmed: places (segments or stretches of one), and the records,
    /// messages and bytes lost as far as known.
    pub corruption: AtomicU64,
    /// Records lost (as far as known), by the last recovery's count.
    pub lost_records: AtomicU64,
    /// Messages lost (as far as known), by the last recovery's count.
    pub lost_messages: AtomicU64,
    /// Bytes of records lost, by the last recovery's count.
    pub lost_bytes: AtomicU64,
}

impl Default for Usage {
    fn default() -> Usage {
        Usage {
            used: AtomicU64::default(),
            data: AtomicU64::new(u64::MAX),
            sync_seconds: crate::metrics::Histogram::seconds(crate::metrics::LATENCY_BUCKETS),
            wait_seconds: crate::metrics::Histogram::seconds(crate::metrics::LATENCY_BUCKETS),
            group_batches: crate::metrics::Histogram::counts(crate::metrics::COUNT_BUCKETS),
            freed: Notify::default(),
            groups: AtomicU64::default(),
            synced_groups: AtomicU64::default(),
            synced_batches: AtomicU64::default(),
            lazy_batches: AtomicU64::default(),
            retries: AtomicU64::default(),
            duplicate_ids: AtomicU64::default(),
            no_space: AtomicU64::default(),
            adds_cancelled: AtomicU64::default(),
            short_until_ms: AtomicU64::default(),
            corruption: AtomicU64::default(),
            lost_records: AtomicU64::default(),
            lost_messages: AtomicU64::default(),
            lost_bytes: AtomicU64::default(),
        }
    }
}

impl Usage {
    /// The disk is short of space: new persistent messages are refused at
    /// admission (or wait) for `for_ms`, after which a write tries again,
    /// unless [`Usage::space_freed`] comes first. Acknowledgements are not
    /// held back: they are what frees space.
    pub fn short_of_space(&self, for_ms: u64) {
        self.short_until_ms
            .store(crate::model::now_ms() + for_ms, Ordering::Relaxed);
    }

    /// The disk has room again.
    pub fn space_freed(&self) {
        if self.short_until_ms.swap(0, Ordering::Relaxed) != 0 {
            self.freed.notify_waiters();
        }
    }

    /// Whether new messages are being refused for want of disk space.
    pub fn is_short_of_space(&self) -> bool {
        self.short_wait().is_some()
    }

    /// How long new messages are still refused for want of disk space.
    fn short_wait(&self) -> Option<std::time::Duration> {
        let until = self.short_until_ms.load(Ordering::Relaxed);
        let now = crate::model::now_ms();
        (until > now).then(|| std::time::Duration::from_millis(until - now))
    }

    /// Records what recovery found lost.
    pub fn record_losses(&self, places: u64, records: u64, messages: u64, bytes: u64) {
        self.corruption.fetch_add(places, Ordering::Relaxed);
        self.lost_records.store(records, Ordering::Relaxed);
        self.lost_messages.store(messages, Ordering::Relaxed);
        self.lost_bytes.store(bytes, Ordering::Relaxed);
    }

    /// Sets the bytes in use (and wakes waiters if it went down).
    pub fn set(&self, bytes: u64) {
        let before = self.used.swap(bytes, Ordering::Relaxed);
        if bytes < before {
            self.freed.notify_waiters();
        }
    }

    /// Bytes in use.
    pub fn get(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }

    /// Sets the bytes of live data, where they differ from the bytes in use.
    pub fn set_data(&self, bytes: u64) {
        self.data.store(bytes, Ordering::Relaxed);
    }

    /// Bytes of live data the store holds (`halyard_store_bytes`).
    pub fn data(&self) -> u64 {
        match self.data.load(Ordering::Relaxed) {
            u64::MAX => self.get(),
            d => d,
        }
    }
}

/// Whether the store takes a new message now; see [`Store::try_admit`].
#[derive(Debug)]
pub enum Admission {
    /// There is room.
    Now,
    /// There is none and the store refuses (`store.when-full = "fail"`).
    Refused(StoreError),
    /// There is none; wait with [`Store::admit`].
    Wait,
}

/// Resolves when a submitted batch is durable, naming the Adds in it that
/// were duplicates and so were not stored.
#[must_use = "a completion does nothing unless awaited"]
pub struct Completion {
    answer: oneshot::Receiver<Result<Duplicates, StoreError>>,
    /// For a batch dispatched while being stored: resolves if
    /// acknowledgements cancel all its Adds, which then need no write.
    cancelled: Option<oneshot::Receiver<()>>,
}

impl Completion {
    fn of(answer: oneshot::Receiver<Result<Duplicates, StoreError>>) -> Completion {
        Completion {
            answer,
            cancelled: None,
        }
    }
}

/// The duplicates the writer found in a batch submitted with
/// [`Store::submit_early`], known before the batch is durable; `None` if
/// the writer could not tell before writing it.
pub struct Verdict(oneshot::Receiver<Duplicates>);

impl Future for Verdict {
    type Output = Option<Duplicates>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.0).poll(cx).map(Result::ok)
    }
}

impl Future for Completion {
    type Output = Result<Duplicates, StoreError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if let Some(c) = &mut self.cancelled {
            match Pin::new(c).poll(cx) {
                // Consumed before it was written: it needs no write (the
                // duplicates were told with the verdict).
                Poll::Ready(Ok(())) => return Poll::Ready(Ok(Duplicates::default())),
                Poll::Ready(Err(_)) => self.cancelled = None,
                Poll::Pending => {}
            }
        }
        Pin::new(&mut self.answer)
            .poll(cx)
            .map(|r| r.unwrap_or(Err(StoreError::Closed)))
    }
}

/// What to do with a persistent SEND when `store.max-bytes` is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum WhenFull {
    /// Refuse it with an ERROR.
    Fail,
    /// Hold the producer until space is freed (producer flow control).
    Wait,
}

/// Handle to the store's writer. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    tx: mpsc::Sender<Request>,
    lazy: Arc<Parked>,
    /// Adds dispatched before they are durable, until written.
    pending: Arc<pending::PendingAdds>,
    reader: Arc<dyn MessageReader>,
    usage: Arc<Usage>,
    limit: u64,
    when_full: WhenFull,
    failed: tokio_util::sync::CancellationToken,
    /// The error that failed the store for good.
    failure: Arc<std::sync::OnceLock<StoreError>>,
}

/// How the store's writer behaves.
#[derive(Debug, Clone, Copy)]
pub struct WriterConfig {
    /// Batches that may wait for the writer; submitters wait beyond it.
    pub queue_depth: usize,
    /// `store.max-bytes`.
    pub limit: u64,
    /// What a persistent SEND gets when the store is full.
    pub when_full: WhenFull,
    /// Duplicate-detection ids remembered: per queue (0: off), in all, by
    /// age.
    pub duplicates: DuplicateBounds,
    /// `store.writer-spin-us`: how long the idle writer polls for the next
    /// batch before it sleeps (see [`Spin`]).
    pub spin: std::time::Duration,
    /// `store.groups-in-flight`: most groups handed to a backend that sends
    /// them ahead ([`StoreBackend::send_ahead`]) and not yet answered.
    pub in_flight: usize,
    /// `store.group-wait-us`: how long a group waits for as many
    /// submitters as the last one had while a group is ahead of it.
    pub group_wait: std::time::Duration,
}

impl Default for WriterConfig {
    fn default() -> WriterConfig {
        WriterConfig {
            queue_depth: 1024,
            limit: u64::MAX,
            when_full: WhenFull::Fail,
            duplicates: DuplicateBounds::default(),
            spin: std::time::Duration::ZERO,
            in_flight: 2,
            group_wait: std::time::Duration::from_micros(400),
        }
    }
}

impl Store {
    /// Starts the writer thread for `backend`, remembering the
    /// duplicate-detection ids recovery found.
    pub fn spawn<B: StoreBackend>(
        backend: B,
        usage: Arc<Usage>,
        config: WriterConfig,
        duplicate_ids: Vec<(StoreKey, Vec<Arc<str>>)>,
    ) -> std::io::Result<(Store, std::thread::JoinHandle<()>)> {
        let WriterConfig {
            queue_depth,
            limit,
            when_full,
            duplicates,
            spin,
            in_flight,
            group_wait,
        } = config;
        let dups = dedup::DupIndex::new(duplicates, duplicate_ids);
        let (tx, rx) = mpsc::channel(queue_depth.max(1));
        let reader = backend.reader();
        let failed = tokio_util::sync::CancellationToken::new();
        let on_fail = failed.clone();
        let failure = Arc::new(std::sync::OnceLock::new());
        let failure_set = failure.clone();
        let lazy = Arc::new(Parked::default());
        let parked = lazy.clone();
        let pending = Arc::new(pending::PendingAdds::default());
        let tracked = pending.clone();
        let stats = usage.clone();
        // The writer blocks on disk I/O, so it gets a thread (and a
        // single-threaded runtime for async backends) of its own.
        let thread = spawn_on_own_runtime("halyard-store", move || {
            let fail = Failure {
                token: on_fail,
                error: failure_set,
            };
            let shared = Shared {
                stats,
                failed: fail,
                pending: tracked,
            };
            let w = Writer::new(
                backend,
                shared,
                dups,
                Spin::new(spin),
                in_flight,
                group_wait,
            );
            writer(w, rx, parked)
        })?;
        Ok((
            Store {
                tx,
                lazy,
                pending,
                reader,
                usage,
                limit,
                when_full,
                failed,
                failure,
            },
            thread,
        ))
    }

    /// Queues a batch for writing. Waits only if the writer is backlogged
    /// (backpressure); the returned completion waits for durability.
    pub async fn submit(&self, batch: Batch) -> Result<Completion, StoreError> {
        let (done, rx) = oneshot::channel();
        self.tx
            .send(Request::Write {
                batch,
                done: Some((done, std::time::Instant::now())),
                early: None,
            })
            .await
            .map_err(|_| StoreError::Closed)?;
        Ok(Completion::of(rx))
    }

    /// [`Store::submit`] for new messages to be dispatched while they are
    /// being stored (`store.concurrent-dispatch`). The verdict resolves
    /// once the writer has checked the batch for duplicates, usually well
    /// before it is durable: the copies it does not name may be dispatched
    /// then, and an acknowledgement of one before its Add is written
    /// cancels both (see `pending.rs`). A verdict of `None`: the writer
    /// could not tell before the write (a group ahead holds the same id),
    /// so dispatch waits for the completion, as for any other batch.
    pub async fn submit_early(&self, batch: Batch) -> Result<(Completion, Verdict), StoreError> {
        let (done, rx) = oneshot::channel();
        let (verdict, early) = oneshot::channel();
        let cancelled = self.pending.track(&batch);
        let seqs: Vec<u64> = pending::added(&batch).collect();
        let sent = self
            .tx
            .send(Request::Write {
                batch,
                done: Some((done, std::time::Instant::now())),
                early: Some(verdict),
            })
            .await;
        if sent.is_err() {
            self.pending.settle(seqs);
            return Err(StoreError::Closed);
        }
        Ok((
            Completion {
                answer: rx,
                cancelled: Some(cancelled),
            },
            Verdict(early),
        ))
    }

    /// [`Store::submit`] for acknowledgements outside a transaction: a
    /// batch of Removes only, each taking effect on its own. The Removes
    /// of Adds not yet written cancel them (see [`Store::submit_early`]);
    /// if that leaves nothing, the completion resolves at once.
    pub async fn submit_acks(&self, mut batch: Batch) -> Result<Completion, StoreError> {
        if self.cancel(&mut batch) {
            let (done, rx) = oneshot::channel();
            let _ = done.send(Ok(Duplicates::default()));
            return Ok(Completion::of(rx));
        }
        self.submit(batch).await
    }

    /// Drops the Removes of `batch` that cancel an Add not yet written, if
    /// the batch is Removes only (in one with other records, a Remove is
    /// part of something that must take effect whole: a message moved to
    /// the dead-letter queue); says whether that left the batch empty.
    fn cancel(&self, batch: &mut Batch) -> bool {
        if self.pending.is_empty() || !batch.iter().all(|r| matches!(r, Record::Remove { .. })) {
            return false;
        }
        let n = self.pending.cancel(batch);
        if n == 0 {
            return false;
        }
        self.usage
            .adds_cancelled
            .fetch_add(n as u64, Ordering::Relaxed);
        batch.is_empty()
    }

    /// Queues bookkeeping nobody waits for (auto-acknowledgements, expiry,
    /// delivery counts): written in order with everything else, made durable
    /// by the next sync, and never the reason for one. If a crash loses it,
    /// the worst outcome is a message delivered again. A batch of Removes
    /// only cancels the Adds not yet written that it removes.
    pub async fn record(&self, mut batch: Batch) -> Result<(), StoreError> {
        if self.cancel(&mut batch) {
            return Ok(());
        }
        // Parked for the writer's next pass rather than waking it: it goes
        // to disk with the next durable write, or within LAZY_DELAY.
        let Err(batch) = self.lazy.park(batch) else {
            return Ok(());
        };
        self.tx
            .send(Request::Write {
                batch,
                done: None,
                early: None,
            })
            .await
            .map_err(|_| StoreError::Closed)
    }

    /// Admits new persistent data under `store.max-bytes`, and while the
    /// store's disk has room: fails at once, or waits for space, as
    /// configured.
    pub async fn admit(&self) -> Result<(), StoreError> {
        loop {
            // Register for the wake-up before checking, so a release between
            // the check and the wait is not missed.
            let freed = self.usage.freed.notified();
            match self.try_admit() {
                Admission::Now => return Ok(()),
                Admission::Refused(e) => return Err(e),
                Admission::Wait => {}
            }
            match self.usage.short_wait() {
                Some(d) if self.usage.get() < self.limit => {
                    tokio::select! {
                        () = freed => {}
                        () = tokio::time::sleep(d) => {}
                    }
                }
                _ => freed.await,
            }
        }
    }

    /// [`Store::admit`] without waiting: whether a new message may be
    /// stored now, must be refused, or must wait for room
    /// (`store.when-full = "wait"`).
    pub fn try_admit(&self) -> Admission {
        let short = self.usage.short_wait();
        let full = self.usage.get() >= self.limit;
        if !full && short.is_none() {
            return Admission::Now;
        }
        match self.when_full {
            WhenFull::Fail if full => Admission::Refused(StoreError::Full { limit: self.limit }),
            WhenFull::Fail => Admission::Refused(StoreError::unavailable(
                "no space left on the store's disk; new persistent messages are accepted again once consumers free space",
            )),
            WhenFull::Wait => Admission::Wait,
        }
    }

    /// Whether stored message bodies can be dropped from memory.
    pub fn pages(&self) -> bool {
        self.reader.pages()
    }

    /// Loads stored messages back (on a blocking thread).
    pub async fn load(&self, seqs: Vec<u64>) -> Vec<(u64, Result<Arc<Message>, StoreError>)> {
        // A message dispatched while being stored may be paged out before
        // its Add is committed: read it once it is.
        self.pending.written(&seqs).await;
        let reader = self.reader.clone();
        let fallback = seqs.clone();
        match tokio::task::spawn_blocking(move || {
            let results = reader.load(&seqs);
            seqs.into_iter().zip(results).collect::<Vec<_>>()
        })
        .await
        {
            Ok(v) => v,
            Err(_) => fallback
                .into_iter()
                .map(|seq| {
                    (
                        seq,
                        Err(StoreError::Read {
                            seq,
                            reason: "reader task failed".into(),
                        }),
                    )
                })
                .collect(),
        }
    }

    /// Bytes the store uses.
    pub fn used_bytes(&self) -> u64 {
        self.usage.get()
    }

    /// The writer's counters.
    pub fn stats(&self) -> &Usage {
        &self.usage
    }

    /// Resolves if the store fails for good (a sync failed): the broker
    /// must stop, since it can no longer keep its promises.
    pub async fn failed(&self) {
        self.failed.cancelled().await;
    }

    /// Why the store failed for good, once it has.
    pub fn failure(&self) -> Option<StoreError> {
        self.failure.get().cloned()
    }

    /// Refuses every write from now on: the broker lost its lock, and a
    /// newer master owns the files.
    pub fn fence(&self) {
        let _ = self
            .failure
            .set(StoreError::Fenced("the broker was fenced".into()));
        self.failed.cancel();
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

#[cfg(test)]
mod tests {
    use super::writer::{added_bytes, adds_data};
    use super::*;

    fn msg(seq: u64) -> Arc<Message> {
        crate::model::test_message(seq, 4)
    }

    /// Records how batches were grouped (batches and bytes of new
    /// messages per write), to show group commit happens.
    struct Counting {
        calls: Arc<std::sync::Mutex<Vec<(usize, usize)>>>,
    }

    impl StoreBackend for Counting {
        async fn recover(&mut self) -> Result<Recovered, StoreError> {
            Ok(Recovered::default())
        }
        async fn write(&mut self, batches: &[Batch], _sync: bool) -> Result<(), StoreError> {
            let bytes = batches.iter().map(added_bytes).sum();
            self.calls.lock().unwrap().push((batches.len(), bytes));
            std::thread::sleep(std::time::Duration::from_millis(20));
            Ok(())
        }
        fn reader(&self) -> Arc<dyn MessageReader> {
            MemoryStore::new().reader()
        }
    }

    fn spawn<B: StoreBackend>(b: B, limit: u64, when_full: WhenFull) -> (Store, Arc<Usage>) {
        spawn_with(
            b,
            WriterConfig {
                limit,
                when_full,
                ..WriterConfig::default()
            },
        )
    }

    fn spawn_with<B: StoreBackend>(b: B, config: WriterConfig) -> (Store, Arc<Usage>) {
        let usage = Arc::new(Usage::default());
        let (store, _thread) = Store::spawn(b, usage.clone(), config, Vec::new()).unwrap();
        (store, usage)
    }

    /// Writes take 5 ms; its upkeep is overdue 50 ms after the last one,
    /// whose times it records.
    struct Busy {
        upkeeps: Arc<std::sync::Mutex<Vec<std::time::Instant>>>,
        last: std::time::Instant,
    }

    impl StoreBackend for Busy {
        async fn recover(&mut self) -> Result<Recovered, StoreError> {
            Ok(Recovered::default())
        }
        async fn write(&mut self, _batches: &[Batch], _sync: bool) -> Result<(), StoreError> {
            std::thread::sleep(std::time::Duration::from_millis(5));
            Ok(())
        }
        async fn maintain(&mut self) -> Result<bool, StoreError> {
            self.last = std::time::Instant::now();
            self.upkeeps.lock().unwrap().push(self.last);
            Ok(false)
        }
        fn upkeep_overdue(&self) -> bool {
            self.last.elapsed() >= std::time::Duration::from_millis(50)
        }
        fn reader(&self) -> Arc<dyn MessageReader> {
            MemoryStore::new().reader()
        }
    }

    /// Producers that never let the writer idle still get the backend's
    /// upkeep, once it is overdue, between two groups.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_writer_never_idle_still_runs_overdue_upkeep_between_groups() {
        let upkeeps = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (store, _) = spawn_with(
            Busy {
                upkeeps: upkeeps.clone(),
                last: std::time::Instant::now(),
            },
            WriterConfig {
                queue_depth: 16,
                ..WriterConfig::default()
            },
        );
        // Keeps the channel full: every time the writer looks, a batch
        // waits.
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let submitter = {
            let (store, stop) = (store.clone(), stop.clone());
            tokio::spawn(async move {
                let mut seq = 0;
                while !stop.load(Ordering::Relaxed) {
                    seq += 1;
                    let _ = store.submit(vec![Record::Remove { seq }]).await;
                }
            })
        };
        // Saturated from the first write on: wait for it, then watch.
        let started = loop {
            if store.stats().groups.load(Ordering::Relaxed) > 0 {
                break std::time::Instant::now();
            }
            tokio::task::yield_now().await;
        };
        let deadline = started + std::time::Duration::from_secs(10);
        let during = || {
            upkeeps
                .lock()
                .unwrap()
                .iter()
                .filter(|t| **t > started)
                .count()
        };
        while during() < 3 {
            assert!(
                std::time::Instant::now() < deadline,
                "upkeep never ran while the writer was busy"
            );
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        stop.store(true, Ordering::Relaxed);
        submitter.await.unwrap();
    }

    #[tokio::test]
    async fn a_polling_writer_writes_what_comes_while_it_polls_and_after() {
        let calls = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (store, _) = spawn_with(
            Counting {
                calls: calls.clone(),
            },
            WriterConfig {
                spin: std::time::Duration::from_millis(5),
                ..WriterConfig::default()
            },
        );
        for seq in 1..=3 {
            let done = store.submit(vec![Record::Remove { seq }]).await.unwrap();
            done.await.unwrap();
        }
        // Past the budget: the writer has gone to sleep and must be woken.
        tokio::time::sleep(std::time::Duration::from_millis(30)).await;
        let done = store.submit(vec![Record::Remove { seq: 4 }]).await.unwrap();
        done.await.unwrap();
        assert_eq!(calls.lock().unwrap().len(), 4);
    }

    #[tokio::test]
    async fn batches_that_arrive_during_a_write_share_the_next_one() {
        let calls = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (store, _) = spawn(
            Counting {
                calls: calls.clone(),
            },
            u64::MAX,
            WhenFull::Fail,
        );
        let first = store.submit(vec![]).await.unwrap();
        let mut rest = Vec::new();
        for _ in 0..50 {
            rest.push(store.submit(vec![]).await.unwrap());
        }
        first.await.unwrap();
        for c in rest {
            c.await.unwrap();
        }
        let calls = calls.lock().unwrap().clone();
        assert_eq!(calls.iter().map(|c| c.0).sum::<usize>(), 51);
        assert!(calls.len() <= 3, "no grouping: {calls:?}");
    }

    #[tokio::test]
    async fn a_group_holds_at_most_max_group_bytes_of_new_messages() {
        let calls = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (store, _) = spawn(
            Counting {
                calls: calls.clone(),
            },
            u64::MAX,
            WhenFull::Fail,
        );
        // Ten 3 MiB messages queue up while the first write goes on: one
        // group of all of them would be 30 MiB.
        let body = bytes::Bytes::from(vec![0u8; 3 << 20]);
        let big = |seq| {
            let mut m = (*msg(seq)).clone();
            m.body = body.clone();
            vec![Record::Add {
                key: StoreKey::Queue("q".into()),
                message: Arc::new(m),
                dedup: None,
            }]
        };
        let first = store.submit(vec![]).await.unwrap();
        let mut rest = Vec::new();
        for seq in 1..=10 {
            rest.push(store.submit(big(seq)).await.unwrap());
        }
        first.await.unwrap();
        for c in rest {
            c.await.unwrap();
        }
        let calls = calls.lock().unwrap().clone();
        assert_eq!(calls.iter().map(|c| c.0).sum::<usize>(), 11);
        // Batches are taken until MAX_GROUP_BYTES (8 MiB) is reached: at
        // most three of these.
        for (batches, bytes) in &calls {
            assert!(
                *bytes < 12 << 20,
                "{batches} batches of {bytes} bytes in one write: {calls:?}"
            );
        }
        assert!(calls.len() <= 6, "no grouping: {calls:?}");
    }

    #[tokio::test]
    async fn parked_bookkeeping_is_written_without_a_durable_write() {
        let calls = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (store, _) = spawn(
            Counting {
                calls: calls.clone(),
            },
            u64::MAX,
            WhenFull::Fail,
        );
        // Let the writer go idle first: that is when it used to miss it.
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        store.record(vec![Record::Remove { seq: 1 }]).await.unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
        while calls.lock().unwrap().is_empty() {
            assert!(
                std::time::Instant::now() < deadline,
                "parked bookkeeping never written"
            );
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
    }

    #[tokio::test]
    async fn bookkeeping_parked_right_after_a_write_is_written_without_a_wake_up() {
        let calls = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (store, _) = spawn(
            Counting {
                calls: calls.clone(),
            },
            u64::MAX,
            WhenFull::Fail,
        );
        // The writer has just finished a group: it waits LAZY_DELAY without
        // asking parkers to wake it, then looks at what was parked.
        let done = store.submit(vec![Record::Remove { seq: 1 }]).await.unwrap();
        done.await.unwrap();
        store.record(vec![Record::Remove { seq: 2 }]).await.unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
        // Counted once written.
        while store.stats().lazy_batches.load(Ordering::Relaxed) < 1 {
            assert!(
                std::time::Instant::now() < deadline,
                "bookkeeping parked after a write never written"
            );
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
        assert_eq!(calls.lock().unwrap().len(), 2);
        assert_eq!(store.stats().lazy_batches.load(Ordering::Relaxed), 1);
    }

    #[tokio::test]
    async fn memory_store_recovers_live_messages_in_order() {
        let mut backend = MemoryStore::new();
        let q = StoreKey::Queue("q".into());
        backend
            .write(
                &[
                    vec![
                        Record::Add {
                            key: q.clone(),
                            message: msg(3),
                            dedup: None,
                        },
                        Record::Add {
                            key: q.clone(),
                            message: msg(1),
                            dedup: None,
                        },
                    ],
                    vec![Record::Remove { seq: 3 }],
                    vec![
                        Record::Add {
                            key: q.clone(),
                            message: msg(7),
                            dedup: None,
                        },
                        Record::Redelivered {
                            seq: 7,
                            deliveries: 2,
                        },
                    ],
                ],
                true,
            )
            .await
            .unwrap();
        let r = backend.recover().await.unwrap();
        let seqs: Vec<(u64, u32)> = r
            .messages
            .into_sorted()
            .map(|m| (m.seq, m.deliveries))
            .collect();
        assert_eq!(seqs, vec![(1, 0), (7, 2)]);
        assert_eq!(r.max_seq, 7);
    }

    /// Refuses every group with new messages, as a journal on a full disk
    /// does; records what it wrote.
    struct FullDisk {
        written: Arc<std::sync::Mutex<Vec<Vec<Batch>>>>,
    }

    impl StoreBackend for FullDisk {
        async fn recover(&mut self) -> Result<Recovered, StoreError> {
            Ok(Recovered::default())
        }
        async fn write(&mut self, batches: &[Batch], _sync: bool) -> Result<(), StoreError> {
            // The first write holds the writer up, so the next ones group.
            std::thread::sleep(std::time::Duration::from_millis(20));
            if batches.iter().any(adds_data) {
                return Err(StoreError::unavailable("no space"));
            }
            self.written.lock().unwrap().push(batches.to_vec());
            Ok(())
        }
        fn reader(&self) -> Arc<dyn MessageReader> {
            MemoryStore::new().reader()
        }
    }

    #[tokio::test]
    async fn acknowledgements_go_in_when_new_messages_are_refused_for_space() {
        let written = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (store, _) = spawn(
            FullDisk {
                written: written.clone(),
            },
            u64::MAX,
            WhenFull::Fail,
        );
        let first = store.submit(vec![Record::Remove { seq: 1 }]).await.unwrap();
        let add = store
            .submit(vec![Record::Add {
                key: StoreKey::Queue("q".into()),
                message: msg(2),
                dedup: None,
            }])
            .await
            .unwrap();
        let ack = store.submit(vec![Record::Remove { seq: 3 }]).await.unwrap();
        first.await.unwrap();
        assert!(matches!(add.await, Err(StoreError::Unavailable { .. })));
        ack.await.unwrap();
        let written = written.lock().unwrap().clone();
        let removed: Vec<u64> = written
            .iter()
            .flatten()
            .flatten()
            .filter_map(|r| match r {
                Record::Remove { seq } => Some(*seq),
                _ => None,
            })
            .collect();
        assert_eq!(removed, vec![1, 3]);
    }

    /// The error underneath stays reachable through `source()`, and the
    /// message still says it for logs and ERROR frames.
    #[test]
    fn errors_underneath_are_sources() {
        use std::error::Error as _;
        let e = StoreError::io(
            "journal sync failed",
            std::io::Error::from(std::io::ErrorKind::StorageFull),
        );
        assert!(e.is_fatal());
        let text = e.to_string();
        assert!(text.starts_with("the message store failed: journal sync failed: "));
        let source = e.source().expect("a source");
        assert_eq!(
            text,
            format!("the message store failed: journal sync failed: {source}")
        );
        assert!(
            matches!(&e, StoreError::Io { source, .. } if source.kind() == std::io::ErrorKind::StorageFull)
        );
        assert!(StoreError::unavailable("no space").source().is_none());
        assert!(!StoreError::unavailable("no space").is_fatal());
    }

    #[tokio::test]
    async fn admission_refuses_or_holds_new_messages_while_the_disk_is_short() {
        let (store, usage) = spawn(MemoryStore::new(), u64::MAX, WhenFull::Fail);
        usage.short_of_space(60_000);
        let e = store.admit().await.unwrap_err();
        assert!(
            matches!(&e, StoreError::Unavailable { reason, .. } if reason.contains("space")),
            "{e}"
        );
        usage.space_freed();
        store.admit().await.unwrap();
        // The refusal lapses by itself (a write then tries again).
        usage.short_of_space(30);
        assert!(store.admit().await.is_err());
        tokio::time::sleep(std::time::Duration::from_millis(40)).await;
        store.admit().await.unwrap();

        let (store, usage) = spawn(MemoryStore::new(), u64::MAX, WhenFull::Wait);
        usage.short_of_space(60_000);
        let waiting = tokio::spawn(async move { store.admit().await });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        usage.space_freed();
        waiting.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn admission_fails_or_waits_when_full() {
        let (store, usage) = spawn(MemoryStore::new(), 100, WhenFull::Fail);
        usage.set(100);
        assert!(matches!(
            store.admit().await,
            Err(StoreError::Full { limit: 100 })
        ));
        usage.set(10);
        store.admit().await.unwrap();

        let (store, usage) = spawn(MemoryStore::new(), 100, WhenFull::Wait);
        usage.set(150);
        let waiting = tokio::spawn(async move { store.admit().await });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        usage.set(50);
        waiting.await.unwrap().unwrap();
    }
}
