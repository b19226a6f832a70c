//! Recovered messages streamed from the database once the broker serves.
//!
//! A deep store's million rows cost a taking-over slave about a second to
//! copy out and parse, and the broker needs none of them to start serving:
//! what it needs first is the highest sequence number (the primary key's
//! end), which destinations hold messages and how many (one grouped scan
//! of the narrow `halyard_messages`), and how many bytes they are. The rows
//! themselves then come by `COPY … ORDER BY seq`, on a connection and a
//! thread of their own so the store's writer is not slowed, a chunk at a
//! time through a bounded channel. Only rows up to the sequence number
//! known at start are read: new messages are above it, and a recovered one
//! cannot be acknowledged (its row deleted) before its destination has
//! them all.

use std::collections::HashMap;

use futures::TryStreamExt;
use tokio::sync::mpsc;
use tokio_postgres::Client;

use super::copy;
use crate::store::{
    LaterChunk, LaterMessages, LaterShape, ScheduleState, StoreError, StoreKey, StoredMessage,
};

/// Chunks parsed ahead of the restore.
const AHEAD: usize = 4;
/// Messages per chunk.
const CHUNK: usize = 4096;

/// A destination's key columns.
type KeyCols = (i16, String, String);

/// The store key of a row's key columns.
pub(super) fn store_key(kind: i16, a: &str, b: &str) -> StoreKey {
    match kind {
        2 => StoreKey::Durable {
            client_id: a.into(),
            name: b.into(),
        },
        3 => StoreKey::Scheduled,
        _ => StoreKey::Queue(a.into()),
    }
}

/// One row of the recovery COPY (seq, key_kind, key_a, key_b, priority,
/// expires, deliveries, size, sched_due, sched_fired, not_before), its key
/// looked up by `key_of`.
pub(super) struct Row {
    pub(super) seq: u64,
    pub(super) key: u32,
    pub(super) priority: u8,
    pub(super) expires: u64,
    pub(super) weight: u32,
    pub(super) deliveries: u32,
    pub(super) not_before: u64,
    pub(super) schedule: Option<ScheduleState>,
}

/// The columns the recovery COPY selects, in [`Row`]'s order.
pub(super) const COLUMNS: &str = "seq, key_kind, key_a, key_b, priority, expires, deliveries, \
     size, sched_due, sched_fired, not_before";

impl Row {
    pub(super) fn parse(
        f: &[Option<&[u8]>; 11],
        key_of: &mut impl FnMut(i16, &str, &str) -> u32,
    ) -> Result<Row, copy::CopyFormatError> {
        let kind = copy::int::<2>(f[1])? as i16;
        let key = key_of(kind, copy::text(f[2])?, copy::text(f[3])?);
        let size = copy::int::<4>(f[7])?;
        Ok(Row {
            seq: copy::int::<8>(f[0])?.max(0) as u64,
            key,
            priority: copy::int::<2>(f[4])?.clamp(0, 9) as u8,
            expires: copy::int::<8>(f[5])?.max(0) as u64,
            weight: size.clamp(0, i64::from(u32::MAX - 128)) as u32 + 128,
            deliveries: copy::int::<4>(f[6])?.max(0) as u32,
            not_before: copy::int::<8>(f[10])?.max(0) as u64,
            schedule: if kind == 3 {
                Some(ScheduleState {
                    due: copy::int::<8>(f[8])?.max(0) as u64,
                    fired: copy::int::<4>(f[9])?.max(0) as u32,
                })
            } else {
                None
            },
        })
    }
}

/// Streams a binary COPY's rows to `on_row`, as they arrive, and calls
/// `after` once the rows of each piece the server sent are handled.
pub(super) async fn copy_rows(
    c: &Client,
    query: &str,
    mut on_row: impl FnMut(&[Option<&[u8]>; 11]) -> Result<(), StoreError>,
    mut after: impl AsyncFnMut() -> Result<(), StoreError>,
) -> Result<(), StoreError> {
    let what = "cannot read stored messages";
    let stream = c.copy_out(query).await.map_err(|e| super::db(what, e))?;
    futures::pin_mut!(stream);
    let bad = |e: copy::CopyFormatError| super::setup(what, e);
    let mut buf = bytes::BytesMut::new();
    let (mut header, mut ended) = (false, false);
    while let Some(chunk) = stream.try_next().await.map_err(|e| super::db(what, e))? {
        buf.extend_from_slice(&chunk);
        let mut at = 0;
        if !header {
            match copy::header(&buf).map_err(bad)? {
                Some(n) => (at, header) = (n, true),
                None => continue,
            }
        }
        loop {
            let (f, n) = match copy::tuple::<11>(&buf[at..]).map_err(bad)? {
                copy::Tuple::More => break,
                copy::Tuple::End => {
                    ended = true;
                    at = buf.len();
                    break;
                }
                copy::Tuple::Row(f, n) => (f, n),
            };
            at += n;
            on_row(&f)?;
        }
        let _ = buf.split_to(at);
        after().await?;
    }
    if !ended {
        return Err(bad(copy::CopyFormatError::truncated()));
    }
    Ok(())
}

/// What recovery needs before serving: the keys holding messages (with
/// their counts: the shape), the bytes they weigh, the highest sequence
/// number stored.
pub(super) async fn survey(
    c: &Client,
) -> Result<(LaterShape, HashMap<KeyCols, u32>, u64, i64), StoreError> {
    let what = "cannot survey stored messages";
    // This is the writer's connection, which keeps the planner off
    // sequential scans (see `PostgresStore::writer`). The grouped scan
    // needs one, and a hash of its few groups: the planner, trusting
    // statistics taken while the table was small, otherwise sorts a
    // million rows on disk. Measured with 1 M stored: 540–720 ms as the
    // writer's connection had it, 100–165 ms so (a parallel hash
    // aggregate), and a takeover's recovery 515–612 ms before.
    c.batch_execute("BEGIN; SET LOCAL enable_seqscan = on; SET LOCAL enable_sort = off")
        .await
        .map_err(|e| super::db(what, e))?;
    let surveyed = survey_rows(c).await;
    let ended = c
        .batch_execute(if surveyed.is_ok() {
            "COMMIT"
        } else {
            "ROLLBACK"
        })
        .await;
    let (max_seq, rows) = surveyed.map_err(|e| super::db(what, e))?;
    ended.map_err(|e| super::db(what, e))?;
    let mut shape = LaterShape::default();
    let mut ids = HashMap::new();
    let mut bytes = 0u64;
    for r in rows {
        let (kind, a, b): (i16, String, String) = (r.get(0), r.get(1), r.get(2));
        let count: i64 = r.get(3);
        let weight: i64 = r.get(4);
        ids.insert((kind, a.clone(), b.clone()), shape.keys.len() as u32);
        shape.keys.push(store_key(kind, &a, &b));
        shape.in_use.push(true);
        shape.len += count.max(0) as usize;
        bytes += weight.max(0) as u64;
    }
    Ok((shape, ids, bytes, max_seq))
}

/// The survey's two queries: the highest sequence number, and each key's
/// count and bytes.
async fn survey_rows(c: &Client) -> Result<(i64, Vec<tokio_postgres::Row>), tokio_postgres::Error> {
    let max_seq: i64 = c
        .query_one("SELECT coalesce(max(seq), 0) FROM halyard_messages", &[])
        .await?
        .get(0);
    let rows = c
        .query(
            "SELECT key_kind, key_a, key_b, count(*), \
             coalesce(sum(least(greatest(size, 0), 4294967167)::bigint + 128), 0)::bigint \
             FROM halyard_messages GROUP BY 1, 2, 3",
            &[],
        )
        .await?;
    Ok((max_seq, rows))
}

/// The rows up to `last`, streamed by a thread of its own.
pub(super) struct Stream {
    shape: LaterShape,
    rx: mpsc::Receiver<Result<Vec<(u32, StoredMessage)>, StoreError>>,
}

impl Stream {
    pub(super) fn start(
        url: String,
        shape: LaterShape,
        ids: HashMap<KeyCols, u32>,
        last: i64,
    ) -> Result<Stream, StoreError> {
        let (tx, rx) = mpsc::channel(AHEAD);
        let keys = shape.keys.clone();
        crate::store::spawn_on_own_runtime("pg-restore", move || async move {
            if let Err(e) = stream(&url, &keys, &ids, last, &tx).await {
                let _ = tx.send(Err(e)).await;
            }
        })
        .map_err(|e| StoreError::io("cannot start the restore stream", e))?;
        Ok(Stream { shape, rx })
    }
}

async fn stream(
    url: &str,
    keys: &[StoreKey],
    ids: &HashMap<KeyCols, u32>,
    last: i64,
    tx: &mpsc::Sender<Result<Vec<(u32, StoredMessage)>, StoreError>>,
) -> Result<(), StoreError> {
    let c = super::connect(url)
        .await
        .map_err(|e| super::db("cannot connect to the database", e))?;
    let query = format!(
        "COPY (SELECT {COLUMNS} FROM halyard_messages WHERE seq <= {last} ORDER BY seq) \
         TO STDOUT (FORMAT binary)"
    );
    let chunk = std::cell::RefCell::new(Vec::with_capacity(CHUNK));
    // Rows of a key the survey did not see cannot be (their sequence
    // numbers were in use before it): skipped, with an id past the keys.
    let unknown = keys.len() as u32;
    let send = async || {
        if chunk.borrow().len() >= CHUNK {
            let full = std::mem::replace(&mut *chunk.borrow_mut(), Vec::with_capacity(CHUNK));
            // The restore stopped (the broker is stopping): so do we.
            tx.send(Ok(full))
                .await
                .map_err(|_| StoreError::Failed("the restore stopped".into()))?;
        }
        Ok(())
    };
    copy_rows(
        &c,
        &query,
        |f| {
            let mut key_of = |kind: i16, a: &str, b: &str| {
                ids.get(&(kind, a.to_owned(), b.to_owned()))
                    .copied()
                    .unwrap_or(unknown)
            };
            let row = Row::parse(f, &mut key_of)
                .map_err(|e| super::setup("cannot read stored messages", e))?;
            let Some(key) = keys.get(row.key as usize) else {
                return Ok(());
            };
            chunk.borrow_mut().push((
                row.key,
                StoredMessage {
                    key: key.clone(),
                    seq: row.seq,
                    priority: row.priority,
                    expires: row.expires,
                    weight: row.weight,
                    deliveries: row.deliveries,
                    not_before: row.not_before,
                    message: None,
                    schedule: row.schedule,
                },
            ));
            Ok(())
        },
        send,
    )
    .await?;
    let rest = chunk.into_inner();
    if !rest.is_empty() {
        let _ = tx.send(Ok(rest)).await;
    }
    Ok(())
}

impl LaterMessages for Stream {
    fn shape(&self) -> &LaterShape {
        &self.shape
    }

    fn next_chunk(&mut self, _max: usize) -> LaterChunk<'_> {
        Box::pin(async move {
            match self.rx.recv().await {
                Some(chunk) => chunk,
                None => Ok(Vec::new()),
            }
        })
    }
}
