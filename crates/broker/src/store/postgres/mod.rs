//! The PostgreSQL [`StoreBackend`]: brokers share one database, which
//! users already run highly available, so the broker's state outlives any
//! one machine.
//!
//! Group commit carries over unchanged: the writer hands over every batch
//! that queued up while the previous group was written, and the whole group
//! goes to the database as one transaction sent in a single round trip.
//! The common group — new messages, their duplicate-detection ids and
//! acknowledged messages' deletions — is ONE prepared statement over arrays
//! ([`GROUP`]), its own implicit transaction: one Bind/Execute/Sync, no
//! BEGIN and COMMIT of its own, so the database parses, plans and commits
//! once. Any other group is pipelined prepared statements, one per kind of
//! record, between BEGIN and COMMIT. Either way the transaction runs
//! `halyard_fence`, which checks this master's epoch under a lock on the
//! lease row: after a newer master takes over, nothing this one writes can
//! commit. A group nobody waits for (bookkeeping) is committed with
//! `synchronous_commit = off`, as the journal lets such records ride on the
//! next sync.
//!
//! A statement carries at most [`ADD_CHUNK_BYTES`] of message bodies (more
//! go in further statements of the same transaction): PostgreSQL refuses a
//! message over 1 GiB, and a group of large messages can be bigger.
//!
//! A group is idempotent (inserts ignore rows already there, deletes and
//! updates set final values), so when the connection breaks mid-commit the
//! writer reconnects and sends the group again: receipts wait meanwhile,
//! for as long as the master holds its lease.

mod copy;
mod later;
mod lease;
mod properties;
mod schema;
mod target;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, NoTls, Statement};
use tokio_util::sync::CancellationToken;

pub use lease::{Lease, LeaseConfig, LeaseError, LeaseStats, LostSignal};
pub(crate) use schema::MASTER_LOCK;
pub use schema::SchemaError;
pub use target::DatabaseUrlError;
use target::Target;

use super::{
    Batch, DurableSubscription, Later, MessageReader, Record, Recovered, RecoveredMessages,
    StoreBackend, StoreError, StoreKey, Usage,
};
use crate::model::{Message, MessageId};

/// Opens a connection to `url` whose I/O runs on the current runtime.
pub(crate) async fn connect(url: &str) -> Result<Client, tokio_postgres::Error> {
    match Target::of(url) {
        Ok(target) => target.connect().await,
        Err(e) => {
            // Only reachable without the start-up check (`check_url`). Let
            // tokio-postgres refuse the URL itself: with TLS asked for and
            // none configured it fails rather than connect in the clear.
            tracing::error!(error = %e, "invalid database URL");
            let (client, connection) = url
                .parse::<tokio_postgres::Config>()?
                .connect(NoTls)
                .await?;
            tokio::spawn(connection);
            Ok(client)
        }
    }
}

/// The first and the longest wait between attempts of [`connect_when_up`].
const START_RETRY: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(5));

/// Connects to `url`, waiting with exponential backoff (100 ms doubling to
/// 5 s) while the database cannot be reached — refused, reset, unknown host
/// name (a container not started yet), or starting up — and logging each
/// failed attempt once at WARN with the reason. Gives up on those only
/// after `wait` (`None`: never, as a slave waiting for the lease never
/// does; the caller stops waiting by dropping the future). Errors that
/// waiting cannot cure (a wrong password, no such database, an untrusted
/// certificate) are returned at once.
pub(crate) async fn connect_when_up(
    url: &str,
    wait: Option<Duration>,
) -> Result<Client, tokio_postgres::Error> {
    let (mut delay, longest) = START_RETRY;
    let mut attempt: u32 = 1;
    let started = Instant::now();
    loop {
        match connect(url).await {
            Ok(client) => {
                if attempt > 1 {
                    tracing::info!(database = %redact(url), attempts = attempt, "the database is reachable");
                }
                return Ok(client);
            }
            Err(e) if is_unreachable(&e) && wait.is_none_or(|w| started.elapsed() + delay < w) => {
                tracing::warn!(
                    database = %redact(url),
                    attempt,
                    retry_in_ms = delay.as_millis() as u64,
                    reason = %describe(&e),
                    "cannot reach the database; waiting for it"
                );
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(longest);
                attempt = attempt.saturating_add(1);
            }
            Err(e) => return Err(e),
        }
    }
}

/// Whether a failed connection attempt may succeed later by itself: the
/// server could not be reached (refused, reset, unknown host name, timed
/// out), closed the connection, or said it is starting up, shutting down
/// or full. Not a TLS handshake, a password or a URL that is wrong: those
/// are configuration mistakes that waiting would hide. tokio-postgres does
/// not expose its error kinds but names each in its `Display` (the cause
/// is the error's source), which is what this reads.
fn is_unreachable(e: &tokio_postgres::Error) -> bool {
    if e.as_db_error().is_some() {
        return is_transient(e);
    }
    matches!(
        e.to_string().as_str(),
        "error connecting to server"
            | "error communicating with the server"
            | "connection closed"
            | "timeout waiting for server"
    )
}

/// A database error with the server's message, when there is one.
pub(crate) fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        None => {
            let mut s = e.to_string();
            let mut source = std::error::Error::source(e);
            while let Some(inner) = source {
                s.push_str(": ");
                s.push_str(&inner.to_string());
                source = inner.source();
            }
            if s.contains("invalid peer certificate") {
                s.push_str(
                    " (the server's certificate is not trusted: name its CA's certificate with sslrootcert=FILE in the URL)",
                );
            }
            s
        }
    }
}

/// Checks a `postgres://` URL (or key=value string) without connecting,
/// and reads the certificates it names (see [`target`]).
pub fn check_url(url: &str) -> Result<(), DatabaseUrlError> {
    Target::of(url).map(|_| ())
}

/// Whether connections to `url` use TLS.
pub fn uses_tls(url: &str) -> bool {
    Target::of(url).is_ok_and(|t| t.tls())
}

/// The URL without its password, for logs.
pub fn redact(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => match rest.split_once('@') {
            Some((cred, host)) => {
                let user = cred.split(':').next().unwrap_or_default();
                format!("{scheme}://{user}@{host}")
            }
            None => url.to_owned(),
        },
        None => "(connection string)".to_owned(),
    }
}

/// A failed database call while doing `what`, the database's message
/// spelled out and the error kept as the source.
fn db(what: &str, e: tokio_postgres::Error) -> StoreError {
    StoreError::Database {
        doing: what.into(),
        detail: describe(&e).into(),
        source: Arc::new(e),
    }
}

/// A set-up step (the URL, the reader pool) that failed while doing `what`,
/// with an error of its own kind.
fn setup(what: &str, e: impl std::error::Error + Send + Sync + 'static) -> StoreError {
    StoreError::Database {
        doing: what.into(),
        detail: e.to_string().into(),
        source: Arc::new(e),
    }
}

/// The schema could not be brought up to date.
fn schema_failed(e: SchemaError) -> StoreError {
    match e {
        SchemaError::Db(e) => db("cannot migrate the database schema", e),
        other => setup("cannot use the database", other),
    }
}

/// Settings of the PostgreSQL store.
#[derive(Debug, Clone)]
pub struct PostgresConfig {
    /// `postgres://…`.
    pub url: String,
    /// Connections for reading message bodies back (deep queues).
    pub readers: usize,
    /// Duplicate-detection ids kept: per queue, in all, by age.
    pub duplicates: crate::store::DuplicateBounds,
}

/// Prepared statements of the writer's connection.
struct Statements {
    fence: Statement,
    /// The common group as one statement, which is its own transaction
    /// ([`GROUP`]).
    group: Statement,
    add: Statement,
    dedup: Statement,
    redelivered: Statement,
    schedule: Statement,
    remove: Statement,
    sub_add: Statement,
    sub_remove: Statement,
    queue_declare: Statement,
    queue_drop: Statement,
}

/// New messages ($1-$14): what recovery reads in `halyard_messages`, the
/// rest in `halyard_message_bodies` (schema version 6). Rows already there
/// (a group sent again after its commit's answer was lost) are skipped by
/// `NOT EXISTS`, not `ON CONFLICT`: only the master's one writer inserts,
/// under the fence's row lock, so no concurrent insert can race the check,
/// and a plain insert spares the speculative insertion's extra WAL record
/// and index pass per row (measured: 2 of the ~14 WAL records a message).
const ADD: &str = "WITH u AS MATERIALIZED (SELECT * FROM UNNEST($1::bigint[], \
     $2::smallint[], $3::text[], $4::text[], $5::smallint[], $6::bool[], $7::bigint[], $8::bigint[], \
     $9::text[], $10::text[], $11::bigint[], $12::text[], $13::bytea[], $14::integer[]) \
     AS u(s, kk, ka, kb, p, pe, e, t, d, ip, n, h, b, z)), \
     ab AS (INSERT INTO halyard_message_bodies (seq, persistent, timestamp, destination, id_prefix, \
       id_n, headers, body) SELECT s, pe, t, d, ip, n, h::jsonb, b FROM u \
       WHERE NOT EXISTS (SELECT 1 FROM halyard_message_bodies x WHERE x.seq = u.s)) \
     INSERT INTO halyard_messages (seq, key_kind, key_a, key_b, priority, expires, size) \
     SELECT s, kk, ka, kb, p, e, z FROM u \
     WHERE NOT EXISTS (SELECT 1 FROM halyard_messages x WHERE x.seq = u.s)";
/// The common group in one statement, its own (implicit) transaction:
/// the fence, new messages ($1-$14, in both tables as [`ADD`]), their
/// duplicate-detection ids ($17-$19) and deletions ($20, from both), with
/// `synchronous_commit` for this transaction only ($21: 'off' for bookkeeping; NULL keeps the session's
/// setting, which may be stronger than 'on', e.g. `remote_apply` with a
/// synchronous standby).
///
/// The data-modifying CTEs run exactly once whatever the main query reads
/// (PostgreSQL's rule); the main query reads the fence and the setting, so
/// they run too, even for a group without new messages. All parts see the
/// same snapshot, in no set order: so a message added and deleted in the
/// same group is left out of the adds by [`Plan::new`] rather than
/// inserted here. If the fence raises, the statement — the transaction —
/// fails as a whole.
const GROUP: &str = "WITH f AS (SELECT halyard_fence($15, $16)), \
     c AS (SELECT set_config('synchronous_commit', \
       coalesce($21::text, current_setting('synchronous_commit')), true)), \
     d AS (INSERT INTO halyard_duplicate_ids (queue, id, seq) \
       SELECT * FROM UNNEST($17::text[], $18::text[], $19::bigint[]) \
       ON CONFLICT (queue, id) DO UPDATE SET seq = EXCLUDED.seq, at = now()), \
     r AS (DELETE FROM halyard_messages WHERE seq = ANY($20::bigint[])), \
     rb AS (DELETE FROM halyard_message_bodies WHERE seq = ANY($20::bigint[])), \
     u AS MATERIALIZED (SELECT * FROM UNNEST($1::bigint[], \
       $2::smallint[], $3::text[], $4::text[], $5::smallint[], $6::bool[], $7::bigint[], $8::bigint[], \
       $9::text[], $10::text[], $11::bigint[], $12::text[], $13::bytea[], $14::integer[]) \
       AS u(s, kk, ka, kb, p, pe, e, t, d, ip, n, h, b, z)), \
     ab AS (INSERT INTO halyard_message_bodies (seq, persistent, timestamp, destination, id_prefix, \
       id_n, headers, body) SELECT s, pe, t, d, ip, n, h::jsonb, b FROM u \
       WHERE NOT EXISTS (SELECT 1 FROM halyard_message_bodies x WHERE x.seq = u.s)), \
     a AS (INSERT INTO halyard_messages (seq, key_kind, key_a, key_b, priority, expires, size) \
       SELECT s, kk, ka, kb, p, e, z FROM u \
       WHERE NOT EXISTS (SELECT 1 FROM halyard_messages x WHERE x.seq = u.s)) \
     SELECT 1 FROM f, c";
const DEDUP: &str = "INSERT INTO halyard_duplicate_ids (queue, id, seq) \
     SELECT * FROM UNNEST($1::text[], $2::text[], $3::bigint[]) \
     ON CONFLICT (queue, id) DO UPDATE SET seq = EXCLUDED.seq, at = now()";
/// Delivery counts and delayed redeliveries (`not_before`, 0: none): the
/// latest record of a message wins, as in the journal.
const REDELIVERED: &str = "UPDATE halyard_messages m SET deliveries = u.d, not_before = u.n \
     FROM UNNEST($1::bigint[], $2::integer[], $3::bigint[]) AS u(s, d, n) WHERE m.seq = u.s";
/// A scheduled message's progress (key_kind 3).
const SCHEDULE: &str = "UPDATE halyard_messages m SET sched_due = u.d, sched_fired = u.f \
     FROM UNNEST($1::bigint[], $2::bigint[], $3::integer[]) AS u(s, d, f) WHERE m.seq = u.s";
const REMOVE: &str = "WITH b AS (DELETE FROM halyard_message_bodies WHERE seq = ANY($1::bigint[])) \
     DELETE FROM halyard_messages WHERE seq = ANY($1::bigint[])";
const SUB_ADD: &str = "INSERT INTO halyard_subscriptions (client_id, name, topic, selector) \
     VALUES ($1, $2, $3, $4) \
     ON CONFLICT (client_id, name) DO UPDATE SET topic = EXCLUDED.topic, selector = EXCLUDED.selector";
const SUB_REMOVE: &str = "DELETE FROM halyard_subscriptions WHERE client_id = $1 AND name = $2";
/// A queue declared again keeps its row, so its place in declaration order.
const QUEUE_DECLARE: &str =
    "INSERT INTO halyard_queues (name) VALUES ($1) ON CONFLICT (name) DO NOTHING";
const QUEUE_DROP: &str = "DELETE FROM halyard_queues WHERE name = $1";

impl Statements {
    async fn prepare(c: &Client) -> Result<Statements, tokio_postgres::Error> {
        let (fence, group, add, dedup, redelivered, remove, sub_add, sub_remove) = futures::try_join!(
            c.prepare("SELECT halyard_fence($1, $2)"),
            c.prepare(GROUP),
            c.prepare(ADD),
            c.prepare(DEDUP),
            c.prepare(REDELIVERED),
            c.prepare(REMOVE),
            c.prepare(SUB_ADD),
            c.prepare(SUB_REMOVE),
        )?;
        let (queue_declare, queue_drop, schedule) = futures::try_join!(
            c.prepare(QUEUE_DECLARE),
            c.prepare(QUEUE_DROP),
            c.prepare(SCHEDULE)
        )?;
        Ok(Statements {
            schedule,
            queue_declare,
            queue_drop,
            fence,
            group,
            add,
            dedup,
            redelivered,
            remove,
            sub_add,
            sub_remove,
        })
    }
}

/// A group of batches as column arrays, ready to send (and to send again).
#[derive(Default)]
struct Plan {
    seq: Vec<i64>,
    key_kind: Vec<i16>,
    key_a: Vec<String>,
    key_b: Vec<String>,
    priority: Vec<i16>,
    persistent: Vec<bool>,
    expires: Vec<i64>,
    timestamp: Vec<i64>,
    destination: Vec<String>,
    id_prefix: Vec<String>,
    id_n: Vec<i64>,
    headers: Vec<String>,
    body: Vec<Bytes>,
    /// Bytes of body and encoded properties: `halyard_messages.size`.
    size: Vec<i32>,
    dup_queue: Vec<String>,
    dup_id: Vec<String>,
    dup_seq: Vec<i64>,
    /// seq -> (deliveries, not before).
    redelivered: HashMap<i64, (i32, i64)>,
    /// Scheduled messages' progress: the latest (due, fired) of each.
    schedules: HashMap<i64, (i64, i32)>,
    removes: Vec<i64>,
    /// Subscription changes, in order (a remove and a re-add may meet in
    /// one group).
    /// (add, client id, name, topic, selector).
    subs: Vec<(bool, String, String, String, Option<String>)>,
    /// Queue declarations (true) and drops, in order, by canonical name.
    queues: Vec<(bool, String)>,
    max_seq: i64,
    bytes_added: u64,
}

impl Plan {
    fn new(batches: &[Batch]) -> Result<Plan, StoreError> {
        let mut p = Plan::default();
        for r in batches.iter().flatten() {
            match r {
                Record::Add {
                    key,
                    message: m,
                    dedup,
                } => {
                    let seq = m.seq as i64;
                    let (kind, a, b) = match key {
                        StoreKey::Queue(q) => (1, q.to_string(), String::new()),
                        StoreKey::Durable { client_id, name } => {
                            (2, client_id.to_string(), name.to_string())
                        }
                        StoreKey::Scheduled => (3, String::new(), String::new()),
                    };
                    if let (Some(id), StoreKey::Queue(q)) = (dedup, key) {
                        p.dup_queue.push(q.to_string());
                        p.dup_id.push(id.to_string());
                        p.dup_seq.push(seq);
                    }
                    p.seq.push(seq);
                    p.key_kind.push(kind);
                    p.key_a.push(a);
                    p.key_b.push(b);
                    p.priority.push(i16::from(m.priority));
                    p.persistent.push(m.persistent);
                    p.expires.push(m.expires as i64);
                    p.timestamp.push(m.timestamp as i64);
                    p.destination.push(m.destination.to_string());
                    p.id_prefix.push(m.id.prefix.to_string());
                    p.id_n.push(m.id.n as i64);
                    let headers = properties::encode(&m.properties).map_err(|e| {
                        StoreError::Failed(
                            format!("message {seq}: cannot encode its properties: {e}").into(),
                        )
                    })?;
                    p.size.push(
                        (m.body.len().saturating_add(headers.len())).min(i32::MAX as usize) as i32,
                    );
                    p.headers.push(headers);
                    p.body.push(m.body.clone());
                    p.max_seq = p.max_seq.max(seq);
                    p.bytes_added += m.weight() as u64;
                }
                Record::Remove { seq } => p.removes.push(*seq as i64),
                Record::Schedule { seq, due, fired } => {
                    p.schedules.insert(
                        *seq as i64,
                        (*due as i64, (*fired).min(i32::MAX as u32) as i32),
                    );
                }
                Record::Redelivered { seq, deliveries } => {
                    p.redelivered.insert(*seq as i64, (*deliveries as i32, 0));
                }
                Record::Delayed {
                    seq,
                    deliveries,
                    until_ms,
                } => {
                    p.redelivered.insert(
                        *seq as i64,
                        (
                            *deliveries as i32,
                            i64::try_from(*until_ms).unwrap_or(i64::MAX),
                        ),
                    );
                }
                Record::SubscriptionAdd {
                    client_id,
                    name,
                    topic,
                    selector,
                } => p.subs.push((
                    true,
                    client_id.clone(),
                    name.clone(),
                    topic.to_string(),
                    selector.clone(),
                )),
                Record::SubscriptionRemove { client_id, name } => {
                    p.subs
                        .push((false, client_id.clone(), name.clone(), String::new(), None))
                }
                Record::QueueDeclared { queue } => p.queues.push((true, queue.to_string())),
                Record::QueueDropped { queue } => p.queues.push((false, queue.to_string())),
            }
        }
        p.drop_added_and_removed();
        Ok(p)
    }

    /// Leaves out of the adds the messages this group also deletes (sent
    /// and acknowledged while the previous group was written): inserting
    /// and then deleting them leaves what not inserting them does, and
    /// [`GROUP`]'s parts, which all see one snapshot, could not delete a
    /// row inserted by the same statement. Their deletion stays in the
    /// group, for a copy a previous attempt may have left.
    fn drop_added_and_removed(&mut self) {
        if self.removes.is_empty() || self.seq.is_empty() {
            return;
        }
        let removed: std::collections::HashSet<i64> = self.removes.iter().copied().collect();
        let keep: Vec<bool> = self.seq.iter().map(|s| !removed.contains(s)).collect();
        if keep.iter().all(|k| *k) {
            return;
        }
        fn retain<T>(v: &mut Vec<T>, keep: &[bool]) {
            let mut i = 0;
            v.retain(|_| {
                i += 1;
                keep[i - 1]
            });
        }
        retain(&mut self.seq, &keep);
        retain(&mut self.key_kind, &keep);
        retain(&mut self.key_a, &keep);
        retain(&mut self.key_b, &keep);
        retain(&mut self.priority, &keep);
        retain(&mut self.persistent, &keep);
        retain(&mut self.expires, &keep);
        retain(&mut self.timestamp, &keep);
        retain(&mut self.destination, &keep);
        retain(&mut self.id_prefix, &keep);
        retain(&mut self.id_n, &keep);
        retain(&mut self.headers, &keep);
        retain(&mut self.body, &keep);
        retain(&mut self.size, &keep);
    }

    /// The new messages in statements of at most `max_bytes` of bodies
    /// each (or one message, if it is larger).
    fn add_chunks(&self, max_bytes: usize) -> Vec<AddChunk<'_>> {
        let mut chunks = Vec::new();
        let (mut start, mut bytes) = (0, 0);
        for (i, body) in self.body.iter().enumerate() {
            if i > start && bytes + body.len() > max_bytes {
                chunks.push(self.add_chunk(start..i));
                (start, bytes) = (i, 0);
            }
            bytes += body.len();
        }
        if start < self.body.len() {
            chunks.push(self.add_chunk(start..self.body.len()));
        }
        chunks
    }

    fn add_chunk(&self, r: std::ops::Range<usize>) -> AddChunk<'_> {
        AddChunk {
            seq: &self.seq[r.clone()],
            key_kind: &self.key_kind[r.clone()],
            key_a: &self.key_a[r.clone()],
            key_b: &self.key_b[r.clone()],
            priority: &self.priority[r.clone()],
            persistent: &self.persistent[r.clone()],
            expires: &self.expires[r.clone()],
            timestamp: &self.timestamp[r.clone()],
            destination: &self.destination[r.clone()],
            id_prefix: &self.id_prefix[r.clone()],
            id_n: &self.id_n[r.clone()],
            headers: &self.headers[r.clone()],
            body: self.body[r.clone()].iter().map(|b| &b[..]).collect(),
            size: &self.size[r],
        }
    }

    /// Whether the group goes as the one statement [`GROUP`]: new
    /// messages (within one statement's bytes), their duplicate-detection
    /// ids and deletions, nothing else.
    fn goes_as_one_statement(&self) -> bool {
        self.redelivered.is_empty()
            && self.schedules.is_empty()
            && self.subs.is_empty()
            && self.queues.is_empty()
            && (self.body.len() <= 1
                || self.body.iter().map(Bytes::len).sum::<usize>() <= ADD_CHUNK_BYTES)
    }

    fn is_empty(&self) -> bool {
        self.seq.is_empty()
            && self.removes.is_empty()
            && self.redelivered.is_empty()
            && self.schedules.is_empty()
            && self.subs.is_empty()
            && self.queues.is_empty()
    }
}

/// Most bytes of message bodies one statement carries (a larger body goes
/// alone): PostgreSQL refuses a message of more than 1 GiB from a client,
/// and closes the connection, so a group over it would be sent again and
/// again.
const ADD_CHUNK_BYTES: usize = 64 * 1024 * 1024;

/// The parameters of one ADD statement: a slice of a [`Plan`]'s new
/// messages (the default: none).
#[derive(Default)]
struct AddChunk<'a> {
    seq: &'a [i64],
    key_kind: &'a [i16],
    key_a: &'a [String],
    key_b: &'a [String],
    priority: &'a [i16],
    persistent: &'a [bool],
    expires: &'a [i64],
    timestamp: &'a [i64],
    destination: &'a [String],
    id_prefix: &'a [String],
    id_n: &'a [i64],
    headers: &'a [String],
    body: Vec<&'a [u8]>,
    size: &'a [i32],
}

impl AddChunk<'_> {
    fn params(&self) -> [&(dyn ToSql + Sync); 14] {
        [
            &self.seq,
            &self.key_kind,
            &self.key_a,
            &self.key_b,
            &self.priority,
            &self.persistent,
            &self.expires,
            &self.timestamp,
            &self.destination,
            &self.id_prefix,
            &self.id_n,
            &self.headers,
            &self.body,
            &self.size,
        ]
    }
}

/// The PostgreSQL store.
pub struct PostgresStore {
    config: PostgresConfig,
    epoch: u64,
    /// Cancelled when this broker loses its lease: stop retrying writes.
    lost: CancellationToken,
    usage: Arc<Usage>,
    /// Shared with the groups sent ahead ([`StoreBackend::send_ahead`]).
    writer: Option<Arc<(Client, Statements)>>,
    /// The thread whose runtime runs `writer`'s connection.
    writer_thread: Option<std::thread::ThreadId>,
    reader: Arc<PgReader>,
    last_upkeep: Instant,
    /// Recovery hands the messages over once the broker serves
    /// ([`crate::store::Recovered::later`]), streamed from the database.
    later: bool,
}

/// Time between upkeep passes (pruning duplicate ids, measuring size).
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

impl PostgresStore {
    /// Has recovery hand the messages over once the broker serves,
    /// streamed from the database (`later.rs`), rather than read them all
    /// before it returns.
    pub fn hand_over_later(mut self) -> PostgresStore {
        self.later = true;
        self
    }

    /// Connects (creating or migrating the schema) as the master of
    /// `epoch`. `lost` is cancelled if the lease is lost.
    pub async fn connect(
        config: PostgresConfig,
        epoch: u64,
        lost: CancellationToken,
        usage: Arc<Usage>,
    ) -> Result<PostgresStore, StoreError> {
        let mut client = connect(&config.url).await.map_err(|e| {
            db(
                &format!("cannot connect to the database {}", redact(&config.url)),
                e,
            )
        })?;
        schema::migrate(&mut client).await.map_err(schema_failed)?;
        let statements = Statements::prepare(&client)
            .await
            .map_err(|e| db("cannot prepare statements", e))?;
        let manager = Target::of(&config.url)
            .map_err(|e| setup("invalid database URL", e))?
            .manager();
        let pool = deadpool_postgres::Pool::builder(manager)
            .max_size(config.readers.max(1))
            .build()
            .map_err(|e| setup("cannot build the reader pool", e))?;
        Ok(PostgresStore {
            reader: Arc::new(PgReader {
                pool,
                runtime: tokio::runtime::Handle::current(),
                lost: lost.clone(),
            }),
            config,
            epoch,
            lost,
            usage,
            writer: Some(Arc::new((client, statements))),
            writer_thread: Some(std::thread::current().id()),
            last_upkeep: Instant::now(),
            later: false,
        })
    }

    /// Creates or migrates the schema of the database at `url` (brokers do
    /// this at start; exposed for tools and tests).
    pub async fn migrate(url: &str) -> Result<(), StoreError> {
        let mut client = connect(url).await.map_err(|e| {
            db(
                &format!("cannot connect to the database {}", redact(url)),
                e,
            )
        })?;
        schema::migrate(&mut client).await.map_err(schema_failed)
    }

    /// [`migrate`](Self::migrate), first waiting for the database for as
    /// long as it cannot be reached, or at most `wait` (see
    /// [`connect_when_up`]): what a
    /// broker does at start, so that a master/slave group started before
    /// its database (a reboot, a compose file) comes up with it instead of
    /// exiting.
    pub async fn migrate_when_up(url: &str, wait: Option<Duration>) -> Result<(), StoreError> {
        let mut client = connect_when_up(url, wait).await.map_err(|e| {
            db(
                &format!("cannot connect to the database {}", redact(url)),
                e,
            )
        })?;
        schema::migrate(&mut client).await.map_err(schema_failed)
    }

    async fn writer(&mut self) -> Result<&(Client, Statements), tokio_postgres::Error> {
        // A connection's I/O runs on the runtime that opened it. The one
        // opened for recovery (on the broker's runtime) is replaced once on
        // the writer's own thread: every query then stays on that thread
        // instead of crossing to another runtime and back, which is a good
        // part of a synchronous producer's round trip.
        let here = std::thread::current().id();
        let usable = self.writer.as_ref().is_some_and(|w| !w.0.is_closed())
            && self.writer_thread == Some(here);
        if !usable {
            let client = connect(&self.config.url).await?;
            // A queue table swings between empty and deep, so its
            // statistics are usually wrong, and a plan made while it was
            // empty (prepared statements keep theirs) scans it whole for
            // every acknowledgement: measured, 40k dead rows after a burst
            // halved a synchronous producer's rate. This connection only
            // touches rows by key, so keep the planner on the indexes.
            client.batch_execute("SET enable_seqscan = off").await?;
            let statements = Statements::prepare(&client).await?;
            self.writer = Some(Arc::new((client, statements)));
            self.writer_thread = Some(here);
        }
        match &self.writer {
            Some(w) => Ok(&**w),
            None => unreachable!("set just above"),
        }
    }

    /// Sends the group as one transaction in one round trip.
    async fn send(&mut self, plan: &Plan, sync: bool) -> Result<(), tokio_postgres::Error> {
        let epoch = self.epoch as i64;
        let (c, st) = self.writer().await?;
        if plan.goes_as_one_statement() {
            return run_group(c, st, plan, epoch, sync).await;
        }
        let begin = if sync {
            "BEGIN"
        } else {
            "BEGIN; SET LOCAL synchronous_commit TO off"
        };
        let max_seq = plan.max_seq;
        let chunks = plan.add_chunks(ADD_CHUNK_BYTES);
        let add_params: Vec<[&(dyn ToSql + Sync); 14]> =
            chunks.iter().map(AddChunk::params).collect();
        let redelivered_seq: Vec<i64> = plan.redelivered.keys().copied().collect();
        let redelivered_n: Vec<i32> = redelivered_seq
            .iter()
            .map(|s| plan.redelivered[s].0)
            .collect();
        let redelivered_until: Vec<i64> = redelivered_seq
            .iter()
            .map(|s| plan.redelivered[s].1)
            .collect();
        let sched_seq: Vec<i64> = plan.schedules.keys().copied().collect();
        let sched_due: Vec<i64> = sched_seq.iter().map(|s| plan.schedules[s].0).collect();
        let sched_fired: Vec<i32> = sched_seq.iter().map(|s| plan.schedules[s].1).collect();
        // Every statement is queued before the first answer is read: one
        // round trip. A failure aborts the transaction, and COMMIT then
        // rolls it back.
        let mut steps: Vec<Step<'_>> = Vec::new();
        steps.push(Box::pin(
            async move { c.batch_execute(begin).await.map(|()| 0) },
        ));
        steps.push(Box::pin(async move {
            c.execute(&st.fence, &[&epoch, &max_seq]).await
        }));
        for params in &add_params {
            steps.push(Box::pin(async move { c.execute(&st.add, params).await }));
        }
        if !plan.dup_id.is_empty() {
            steps.push(Box::pin(async move {
                c.execute(&st.dedup, &[&plan.dup_queue, &plan.dup_id, &plan.dup_seq])
                    .await
            }));
        }
        if !redelivered_seq.is_empty() {
            let (seqs, counts, until) = (&redelivered_seq, &redelivered_n, &redelivered_until);
            steps.push(Box::pin(async move {
                c.execute(&st.redelivered, &[seqs, counts, until]).await
            }));
        }
        if !sched_seq.is_empty() {
            let (seqs, due, fired) = (&sched_seq, &sched_due, &sched_fired);
            steps.push(Box::pin(async move {
                c.execute(&st.schedule, &[seqs, due, fired]).await
            }));
        }
        if !plan.removes.is_empty() {
            steps.push(Box::pin(async move {
                c.execute(&st.remove, &[&plan.removes]).await
            }));
        }
        for (add, client_id, name, topic, selector) in &plan.subs {
            steps.push(Box::pin(async move {
                if *add {
                    c.execute(&st.sub_add, &[client_id, name, topic, selector])
                        .await
                } else {
                    c.execute(&st.sub_remove, &[client_id, name]).await
                }
            }));
        }
        for (declare, queue) in &plan.queues {
            steps.push(Box::pin(async move {
                if *declare {
                    c.execute(&st.queue_declare, &[queue]).await
                } else {
                    c.execute(&st.queue_drop, &[queue]).await
                }
            }));
        }
        steps.push(Box::pin(async move {
            c.batch_execute("COMMIT").await.map(|()| 0)
        }));
        for r in futures::future::join_all(steps).await {
            r?;
        }
        Ok(())
    }
}

/// Runs the common group: one statement, one round trip, one commit
/// ([`GROUP`]).
async fn run_group(
    c: &Client,
    st: &Statements,
    plan: &Plan,
    epoch: i64,
    sync: bool,
) -> Result<(), tokio_postgres::Error> {
    let chunks = plan.add_chunks(ADD_CHUNK_BYTES);
    let none = AddChunk::default();
    let mut params: Vec<&(dyn ToSql + Sync)> = chunks.first().unwrap_or(&none).params().to_vec();
    let commit: Option<&str> = (!sync).then_some("off");
    params.extend_from_slice(&[
        &epoch,
        &plan.max_seq,
        &plan.dup_queue,
        &plan.dup_id,
        &plan.dup_seq,
        &plan.removes,
        &commit,
    ]);
    c.query_one(&st.group, &params).await.map(|_| ())
}

/// One statement of a group's transaction, queued with the others.
type Step<'a> =
    std::pin::Pin<Box<dyn Future<Output = Result<u64, tokio_postgres::Error>> + Send + 'a>>;

/// Whether the error says the connection or the server went away rather
/// than that the statement is wrong: the database restarted, crashed, is
/// starting up or is unreachable. Worth retrying on a new connection.
pub(crate) fn is_transient(e: &tokio_postgres::Error) -> bool {
    match e.as_db_error() {
        None => true,
        Some(db) => {
            let code = db.code().code();
            // 08: connection exception; 57P01-03: admin shutdown, crash
            // shutdown, cannot connect now; 53300: too many connections.
            code.starts_with("08") || matches!(code, "57P01" | "57P02" | "57P03" | "53300")
        }
    }
}

/// The duplicate-detection ids to remember: the newest `window` of each
/// queue learned within `max_age_ms`, at most `total` in all, grouped by
/// queue in the order they were learned.
async fn read_duplicate_ids(
    c: &Client,
    window: i64,
    total: i64,
    max_age_ms: i64,
) -> Result<Vec<(StoreKey, Vec<Arc<str>>)>, StoreError> {
    let mut duplicate_ids: Vec<(StoreKey, Vec<Arc<str>>)> = Vec::new();
    for r in c
        .query(
            "SELECT queue, id FROM (SELECT queue, id, seq FROM (SELECT queue, id, seq, \
             row_number() OVER (PARTITION BY queue ORDER BY seq DESC) AS rn \
             FROM halyard_duplicate_ids \
             WHERE at >= now() - $3::bigint * interval '1 millisecond') t \
             WHERE rn <= $1 ORDER BY seq DESC LIMIT $2) n ORDER BY queue, seq",
            &[&window, &total, &max_age_ms],
        )
        .await
        .map_err(|e| db("cannot read duplicate-detection ids", e))?
    {
        let queue: String = r.get(0);
        let id: String = r.get(1);
        match duplicate_ids.last_mut() {
            Some((StoreKey::Queue(q), ids)) if **q == *queue => ids.push(id.into()),
            _ => duplicate_ids.push((StoreKey::Queue(queue.into()), vec![id.into()])),
        }
    }
    Ok(duplicate_ids)
}

/// Whether the error is the fencing check's: a newer master took over.
fn is_fenced(e: &tokio_postgres::Error) -> bool {
    e.as_db_error()
        .is_some_and(|d| d.code().code() == schema::FENCED_SQLSTATE)
}

impl StoreBackend for PostgresStore {
    async fn recover(&mut self) -> Result<Recovered, StoreError> {
        let started = Instant::now();
        let bounds = self.config.duplicates;
        let window = bounds.per_key as i64;
        let total = bounds.total.min(i64::MAX as usize) as i64;
        // No age limit: a few centuries (an interval must stay in range).
        let max_age_ms = match bounds.max_age_ms {
            0 => 10_000_000_000_000,
            ms => ms.min(10_000_000_000_000) as i64,
        };
        let usage = self.usage.clone();
        let epoch = self.epoch;
        let (hand_over_later, url) = (self.later, self.config.url.clone());
        // Read on a connection of their own, meanwhile: with 1 M stored and
        // 128 k ids, reading them took ~140 ms beside the survey's ~165,
        // and a taking-over slave serves only once both are read.
        let dups_url = url.clone();
        let dups = tokio::spawn(async move {
            let c = connect(&dups_url)
                .await
                .map_err(|e| db("cannot connect to the database", e))?;
            read_duplicate_ids(&c, window, total, max_age_ms).await
        });
        let (c, _) = self
            .writer()
            .await
            .map_err(|e| db("cannot connect to the database", e))?;
        let mut messages = RecoveredMessages::default();
        let mut bytes = 0u64;
        let mut max_seq: i64 = c
            .query_one("SELECT max_seq FROM halyard_lock WHERE id = 1", &[])
            .await
            .map_err(|e| db("cannot read the lock row", e))?
            .get(0);
        let mut later = None;
        if hand_over_later {
            // What serving needs; the rows follow once it serves (`later.rs`).
            let (shape, ids, weight, last) = later::survey(c).await?;
            bytes = weight;
            max_seq = max_seq.max(last);
            later = Some(Later(Box::new(later::Stream::start(
                url, shape, ids, last,
            )?)));
        } else {
            // Streamed (rows are handled as they arrive, never all held),
            // and only what the broker needs to start: no bodies or
            // properties, which the reader loads when a consumer needs
            // them. They are in another table (`halyard_message_bodies`,
            // schema version 6), so this scan reads ~100 bytes a row rather
            // than every body; `size`, a weight for memory accounting, was
            // stored with the row for the same reason. No WHERE and no
            // ORDER BY: the whole table is wanted, in any order, and a
            // sequential scan is the cheapest way to read it (an index
            // would cost every send). Binary COPY: see `copy`.
            let mut key_ids: HashMap<(i16, String, String), u32> = HashMap::new();
            // Rows of one queue tend to come together: the last key is
            // looked up without building its strings.
            let mut last: Option<(i16, String, String, u32)> = None;
            let query = format!(
                "COPY (SELECT {} FROM halyard_messages) TO STDOUT (FORMAT binary)",
                later::COLUMNS
            );
            later::copy_rows(
                c,
                &query,
                |f| {
                    let mut key_of = |kind: i16, a: &str, b: &str| match &last {
                        Some((k, la, lb, id)) if *k == kind && la == a && lb == b => *id,
                        _ => {
                            let cols = (kind, a.to_owned(), b.to_owned());
                            let id = match key_ids.get(&cols) {
                                Some(&k) => k,
                                None => {
                                    let k = messages.key_id(&later::store_key(kind, a, b));
                                    key_ids.insert(cols.clone(), k);
                                    k
                                }
                            };
                            last = Some((cols.0, cols.1, cols.2, id));
                            id
                        }
                    };
                    let row = later::Row::parse(f, &mut key_of)
                        .map_err(|e| setup("cannot read stored messages", e))?;
                    bytes += u64::from(row.weight);
                    max_seq = max_seq.max(row.seq as i64);
                    messages.push_compact(
                        row.seq,
                        row.key,
                        row.priority,
                        row.expires,
                        row.weight,
                        (row.deliveries, row.not_before),
                    );
                    if let Some(state) = row.schedule {
                        messages.set_schedule(row.seq, state);
                    }
                    Ok(())
                },
                async || Ok(()),
            )
            .await?;
        }
        let subscriptions = c
            .query(
                "SELECT client_id, name, topic, selector FROM halyard_subscriptions",
                &[],
            )
            .await
            .map_err(|e| db("cannot read durable subscriptions", e))?
            .into_iter()
            .filter_map(|r| {
                let topic: String = r.get(2);
                match topic.parse() {
                    Ok(topic) => Some(DurableSubscription {
                        client_id: r.get(0),
                        name: r.get(1),
                        topic,
                        selector: r.get(3),
                    }),
                    // Only a broker writes these rows; one that is not a
                    // topic's canonical name cannot be restored, and
                    // should not keep the others from being restored.
                    Err(e) => {
                        tracing::error!(%topic, error = %e, "cannot restore durable subscription");
                        None
                    }
                }
            })
            .collect::<Vec<_>>();
        let queues = c
            .query("SELECT name FROM halyard_queues ORDER BY ord", &[])
            .await
            .map_err(|e| db("cannot read declared queues", e))?
            .into_iter()
            .filter_map(|r| {
                let name: String = r.get(0);
                match name.parse() {
                    Ok(queue) => Some(queue),
                    // As for subscriptions: one bad row keeps no other
                    // queue from being restored.
                    Err(e) => {
                        tracing::error!(queue = %name, error = %e, "cannot restore declared queue");
                        None
                    }
                }
            })
            .collect::<Vec<_>>();
        let duplicate_ids = dups.await.map_err(|e| {
            StoreError::Failed(format!("reading duplicate-detection ids failed: {e}").into())
        })??;
        usage.set(bytes);
        tracing::info!(
            elapsed_ms = started.elapsed().as_millis() as u64,
            messages = messages.len() + later.as_ref().map_or(0, |l| l.0.len()),
            subscriptions = subscriptions.len(),
            queues = queues.len(),
            epoch,
            "database store recovered"
        );
        Ok(Recovered {
            messages,
            later,
            subscriptions,
            queues,
            max_seq: max_seq.max(0) as u64,
            duplicate_ids,
        })
    }

    async fn write(&mut self, batches: &[Batch], sync: bool) -> Result<(), StoreError> {
        let plan = Plan::new(batches)?;
        if plan.is_empty() {
            return Ok(());
        }
        let mut delay = Duration::from_millis(20);
        let lost = self.lost.clone();
        loop {
            // Once the lease is lost nothing may wait on the database: a
            // partition can leave a query hanging for as long as TCP lets
            // it, and the broker must stop now. What was in flight is
            // abandoned with its connection (its receipts are never sent;
            // if it reached the database, epoch fencing decides).
            let sent = tokio::select! {
                r = self.send(&plan, sync) => Some(r),
                _ = lost.cancelled() => None,
            };
            let Some(sent) = sent else {
                self.writer = None;
                return Err(StoreError::Failed(
                    "lost the lease: writing nothing more".into(),
                ));
            };
            match sent {
                Ok(()) => {
                    let used = self.usage.get() + plan.bytes_added;
                    self.usage.set(used);
                    return Ok(());
                }
                Err(e) if is_fenced(&e) => {
                    return Err(db("fenced", e));
                }
                Err(e) if is_transient(&e) => {
                    // The connection broke (the database restarted, or the
                    // network failed): the group is sent again on a new
                    // one, for as long as this broker holds its lease.
                    if self.lost.is_cancelled() {
                        return Err(db("lost the lease while the database was unreachable", e));
                    }
                    tracing::warn!(error = %describe(&e), retry_in_ms = delay.as_millis() as u64,
                        "database write failed; retrying");
                    self.usage
                        .retries
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    self.writer = None;
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = self.lost.cancelled() => {}
                    }
                    delay = (delay * 2).min(Duration::from_secs(1));
                }
                Err(e) => return Err(db("database write failed", e)),
            }
        }
    }

    fn send_ahead(&mut self, batches: &[Batch], sync: bool) -> Option<super::Ahead> {
        // Only on the writer thread's own connection, up and usable (else
        // `write` makes one), and only a group that is one statement: its
        // own transaction, so that one that fails leaves the next intact,
        // exactly as when they are sent one after the other.
        let here = std::thread::current().id();
        let w = self
            .writer
            .clone()
            .filter(|w| !w.0.is_closed() && self.writer_thread == Some(here))?;
        let plan = Plan::new(batches).ok()?;
        if plan.is_empty() || !plan.goes_as_one_statement() {
            return None;
        }
        let (epoch, lost, usage) = (self.epoch as i64, self.lost.clone(), self.usage.clone());
        let mut ahead: super::Ahead = Box::pin(async move {
            let sent = tokio::select! {
                biased;
                // As in `write`: once the lease is lost nothing waits on
                // the database.
                _ = lost.cancelled() => return super::AheadOutcome::Done(Err(StoreError::Failed(
                    "lost the lease: writing nothing more".into(),
                ))),
                r = run_group(&w.0, &w.1, &plan, epoch, sync) => r,
            };
            super::AheadOutcome::Done(match sent {
                Ok(()) => {
                    usage.set(usage.get() + plan.bytes_added);
                    Ok(())
                }
                Err(e) if is_fenced(&e) => Err(db("fenced", e)),
                // The connection went: `write` sends it again on a new one.
                Err(e) if is_transient(&e) => return super::AheadOutcome::Again,
                Err(e) => Err(db("database write failed", e)),
            })
        });
        // tokio-postgres sends a request when its future is first polled,
        // and the server carries out a connection's requests in the order
        // they were sent (the crate's documented behaviour): polled once
        // here, this group is on its way before the next one is made. The
        // writer polls it again, with its own waker, to learn the outcome.
        match ahead
            .as_mut()
            .poll(&mut std::task::Context::from_waker(std::task::Waker::noop()))
        {
            std::task::Poll::Ready(outcome) => Some(Box::pin(std::future::ready(outcome))),
            std::task::Poll::Pending => Some(ahead),
        }
    }

    async fn maintain(&mut self) -> Result<bool, StoreError> {
        if self.writer_thread != Some(std::thread::current().id()) {
            // The writer thread's first idle moment: move the connection
            // here now rather than on the first write (see `writer`).
            let lost = self.lost.clone();
            tokio::select! {
                _ = self.writer() => {}
                _ = lost.cancelled() => {}
            }
        }
        if self.last_upkeep.elapsed() < UPKEEP_EVERY {
            return Ok(false);
        }
        self.last_upkeep = Instant::now();
        let lost = self.lost.clone();
        tokio::select! {
            () = self.upkeep() => {}
            _ = lost.cancelled() => self.writer = None,
        }
        Ok(false)
    }

    /// Twice the usual interval without an idle moment: producers have
    /// kept the writer busy, and the duplicate-detection ids would grow
    /// past their bounds until they stop.
    fn upkeep_overdue(&self) -> bool {
        self.last_upkeep.elapsed() >= 2 * UPKEEP_EVERY
    }

    fn reader(&self) -> Arc<dyn MessageReader> {
        self.reader.clone()
    }
}

impl PostgresStore {
    /// Prunes the duplicate-detection ids and measures the store's size.
    async fn upkeep(&mut self) {
        let bounds = self.config.duplicates;
        let window = bounds.per_key as i64;
        let total = bounds.total.min(i64::MAX as usize) as i64;
        let Ok((c, _)) = self.writer().await else {
            return;
        };
        // Forget duplicate-detection ids beyond each queue's window, beyond
        // the total (the oldest anywhere first) and past their age.
        let mut pruned = c
            .execute(
                "DELETE FROM halyard_duplicate_ids d USING (SELECT queue, id FROM (SELECT queue, id, \
                 row_number() OVER (PARTITION BY queue ORDER BY seq DESC) AS rn \
                 FROM halyard_duplicate_ids) t WHERE rn > $1) old \
                 WHERE d.queue = old.queue AND d.id = old.id",
                &[&window],
            )
            .await;
        if pruned.is_ok() {
            pruned = c
                .execute(
                    "DELETE FROM halyard_duplicate_ids d USING (SELECT queue, id FROM \
                     halyard_duplicate_ids ORDER BY seq DESC OFFSET $1) old \
                     WHERE d.queue = old.queue AND d.id = old.id",
                    &[&total],
                )
                .await;
        }
        if pruned.is_ok() && bounds.max_age_ms > 0 {
            pruned = c
                .execute(
                    "DELETE FROM halyard_duplicate_ids \
                     WHERE at < now() - $1::bigint * interval '1 millisecond'",
                    &[&(bounds.max_age_ms as i64)],
                )
                .await;
        }
        if let Err(e) = pruned {
            tracing::warn!(error = %describe(&e), "cannot prune duplicate-detection ids");
        }
        match c
            .query_one(
                "SELECT pg_total_relation_size('halyard_messages') + \
                 pg_total_relation_size('halyard_message_bodies') + \
                 pg_total_relation_size('halyard_duplicate_ids')",
                &[],
            )
            .await
        {
            Ok(r) => self.usage.set(r.get::<_, i64>(0).max(0) as u64),
            Err(e) => tracing::warn!(error = %describe(&e), "cannot measure the database store"),
        }
    }
}

/// Loads message bodies for deep queues, from a small pool of connections.
struct PgReader {
    pool: deadpool_postgres::Pool,
    runtime: tokio::runtime::Handle,
    /// As for writes: no read waits on the database once the lease is lost.
    lost: CancellationToken,
}

/// Why a reader could not fetch messages from the database.
#[derive(Debug, thiserror::Error)]
enum FetchError {
    /// No connection from the reader pool.
    #[error(transparent)]
    Pool(#[from] deadpool_postgres::PoolError),
    /// The query failed.
    #[error("{detail}")]
    Query {
        /// The database's message.
        detail: String,
        /// The error.
        #[source]
        source: tokio_postgres::Error,
    },
    /// A row that does not decode into a message.
    #[error("{0}")]
    BadRow(String),
    /// The lease was lost while waiting.
    #[error("lost the lease")]
    LeaseLost,
}

/// Row decoding reports its problems in words.
impl From<String> for FetchError {
    fn from(problem: String) -> FetchError {
        FetchError::BadRow(problem)
    }
}

impl PgReader {
    async fn fetch(&self, seqs: &[u64]) -> Result<HashMap<u64, Arc<Message>>, FetchError> {
        let client = self.pool.get().await?;
        let wanted: Vec<i64> = seqs.iter().map(|&s| s as i64).collect();
        let rows = client
            .query(
                "SELECT m.seq, m.priority, b.persistent, m.expires, b.timestamp, b.destination, \
                 b.id_prefix, b.id_n, b.headers::text, b.body FROM halyard_messages m \
                 JOIN halyard_message_bodies b ON b.seq = m.seq WHERE m.seq = ANY($1)",
                &[&wanted],
            )
            .await
            .map_err(|source| FetchError::Query {
                detail: describe(&source),
                source,
            })?;
        let mut out = HashMap::with_capacity(rows.len());
        for r in rows {
            let seq = r.get::<_, i64>(0) as u64;
            let destination: String = r.get(5);
            let headers: String = r.get(8);
            let body: Vec<u8> = r.get(9);
            let message = Message {
                seq,
                id: MessageId {
                    prefix: r.get::<_, String>(6).into(),
                    n: r.get::<_, i64>(7) as u64,
                },
                destination: destination
                    .parse()
                    .map_err(|e| format!("message {seq}: {e}"))?,
                properties: properties::decode(&headers)
                    .map_err(|e| format!("message {seq}: bad properties: {e}"))?,
                body: Bytes::from(body),
                persistent: r.get(2),
                priority: r.get::<_, i16>(1).clamp(0, 9) as u8,
                expires: r.get::<_, i64>(3).max(0) as u64,
                timestamp: r.get::<_, i64>(4).max(0) as u64,
                charge: crate::memory::Charge::none(),
            };
            out.insert(seq, Arc::new(message));
        }
        Ok(out)
    }
}

impl MessageReader for PgReader {
    fn pages(&self) -> bool {
        true
    }

    fn load(&self, seqs: &[u64]) -> Vec<Result<Arc<Message>, StoreError>> {
        // Called on a blocking thread (see `Store::load`).
        let found = self
            .runtime
            .block_on(async {
                tokio::select! {
                    r = self.fetch(seqs) => r,
                    _ = self.lost.cancelled() => Err(FetchError::LeaseLost),
                }
            })
            .map_err(Arc::new);
        seqs.iter()
            .map(|&seq| match &found {
                Ok(m) => m.get(&seq).cloned().ok_or_else(|| StoreError::Read {
                    seq,
                    reason: "not in the database".into(),
                }),
                Err(e) => Err(StoreError::ReadFailed {
                    seq,
                    source: e.clone(),
                }),
            })
            .collect()
    }
}
