//! The floor for synchronous persistent sends on PostgreSQL: a server that
//! does nothing for a receipted persistent SEND but hand it to Halyard's
//! own store writer (its group commit, its one group statement with the
//! fence, its groups sent ahead) and answer the RECEIPT once the
//! transaction has committed. No routing, no queues, no consumers, no
//! pipeline: the connection's thread waits for its message itself.
//!
//! What it shows (issue #19's goal 4): how much of PostgreSQL's own rate
//! (pgbench in the same run) the broker's store can reach with everything
//! above it taken away, and so how much of the gap the broker could still
//! close above the store, next to `bench/pg-group.sh`, which shows what
//! the database does with the store's statement without any server.
//!
//! Usage: `pg_floor ADDR DATABASE_URL` (e.g. `127.0.0.1:0
//! postgres://postgres@127.0.0.1:5432/floor`): creates the broker's schema
//! in the database if it has none, takes the master's lease, prints the
//! address it listens on, then serves until killed. `HALYARD_FLOOR_IN_FLIGHT`
//! sets the writer's groups in flight (`store.groups-in-flight`, default
//! the broker's, 2). It speaks just enough STOMP for `halyard bench` with
//! producers only.
//!
//! `HALYARD_FLOOR_REMOVE=1` also deletes each message once it is stored,
//! as bookkeeping nobody waits for, as the broker records an automatic
//! acknowledgement: the database work of scenario b (16 producers and
//! consumers that take every message at once), still with nothing above
//! the store.

#[path = "floor/stomp.rs"]
mod stomp;

use std::io::Write;
use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use halyard_broker::memory::Charge;
use halyard_broker::model::{Destination, Message, MessageId, Properties};
use halyard_broker::store::dirlock::LockOwner;
use halyard_broker::store::postgres::{Lease, LeaseConfig, PostgresConfig, PostgresStore};
use halyard_broker::store::{DuplicateBounds, Record, Store, StoreKey, WriterConfig};
use tokio_util::sync::CancellationToken;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let [_, addr, url] = &args[..] else {
        eprintln!("usage: pg_floor ADDR DATABASE_URL");
        std::process::exit(2);
    };
    let in_flight = match std::env::var("HALYARD_FLOOR_IN_FLIGHT") {
        Ok(n) => n.parse()?,
        Err(_) => WriterConfig::default().in_flight,
    };
    let remove = std::env::var("HALYARD_FLOOR_REMOVE").is_ok_and(|v| v == "1");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let (store, _writer, _lease) = runtime.block_on(open(url, in_flight))?;
    let store = Arc::new(store);
    // Every 2 s on stderr: the writer's groups and the submitters they
    // answered since the start, the group-commit factor to compare with
    // the broker's (`halyard_store_batch_messages`).
    let stats = store.clone();
    std::thread::spawn(move || {
        loop {
            std::thread::sleep(Duration::from_secs(2));
            let s = stats.stats();
            let groups = s.synced_groups.load(Ordering::Relaxed);
            let batches = s.synced_batches.load(Ordering::Relaxed);
            eprintln!(
                "pg_floor: {groups} synced groups, {batches} batches, {:.2} a group",
                batches as f64 / groups.max(1) as f64
            );
        }
    });
    let seq = Arc::new(AtomicU64::new(now_ms() * 1000));
    let prefix: Arc<str> = Arc::from("ID:pg-floor-");

    let listener = TcpListener::bind(addr)?;
    println!("{}", listener.local_addr()?);
    std::io::stdout().flush()?;
    for stream in listener.incoming() {
        let stream = stream?;
        let (store, seq, prefix) = (store.clone(), seq.clone(), prefix.clone());
        let handle = runtime.handle().clone();
        std::thread::spawn(move || {
            let _ = stomp::serve(stream, |destination, record| {
                let seq = seq.fetch_add(1, Ordering::Relaxed);
                let message = Message {
                    seq,
                    id: MessageId {
                        prefix: prefix.clone(),
                        n: seq,
                    },
                    destination: Destination::queue(destination.trim_start_matches("/queue/")),
                    properties: Properties::default(),
                    body: Bytes::from(record),
                    persistent: true,
                    priority: 4,
                    expires: 0,
                    timestamp: now_ms(),
                    charge: Charge::none(),
                };
                let add = Record::Add {
                    key: StoreKey::Queue(Arc::from(destination)),
                    message: Arc::new(message),
                    dedup: None,
                };
                handle
                    .block_on(async {
                        store.submit(vec![add]).await?.await?;
                        if remove {
                            store.record(vec![Record::Remove { seq }]).await?;
                        }
                        Ok::<_, halyard_broker::store::StoreError>(())
                    })
                    .map_err(std::io::Error::other)
            });
        });
    }
    Ok(())
}

/// Creates the schema if need be, takes the lease and starts the writer,
/// as a master broker does (without recovering anything).
async fn open(
    url: &str,
    in_flight: usize,
) -> anyhow::Result<(Store, std::thread::JoinHandle<()>, Lease)> {
    PostgresStore::migrate(url).await?;
    let lease = Lease::try_acquire(&LeaseConfig {
        url: url.to_owned(),
        lease: Duration::from_secs(3600),
        owner: LockOwner {
            name: "pg_floor".into(),
            host: "localhost".into(),
            pid: std::process::id(),
            started_at_ms: now_ms(),
            epoch: 0,
        },
    })
    .await?
    .ok_or_else(|| anyhow::anyhow!("another broker holds the database's lease"))?;
    let config = PostgresConfig {
        url: url.to_owned(),
        readers: 1,
        duplicates: DuplicateBounds::default(),
    };
    let backend = PostgresStore::connect(
        config,
        lease.epoch(),
        CancellationToken::new(),
        Arc::default(),
    )
    .await?;
    let writer = WriterConfig {
        in_flight,
        ..WriterConfig::default()
    };
    let (store, thread) = Store::spawn(backend, Arc::default(), writer, Vec::new())?;
    Ok((store, thread, lease))
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
