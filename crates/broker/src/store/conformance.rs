//! One behaviour for every durable store: the same tests run against the
//! journal (files in a temporary directory) and PostgreSQL (a database of
//! their own on a real server, see `halyard-testkit`).
//!
//! Each test writes through one backend instance, drops it without a clean
//! shutdown, and checks what a fresh instance on the same storage recovers:
//! the invariants written on [`StoreBackend`].

use std::sync::Arc;

use bytes::Bytes;
use tokio_util::sync::CancellationToken;

use super::postgres::{PostgresConfig, PostgresStore};
use super::{Batch, DurableSubscription, JournalStore, Record, Recovered, StoreBackend, StoreKey};
use crate::model::{Destination, Message, MessageId, Properties, Value};
use crate::store::journal::{JournalConfig, SyncMode};

/// Opens backend instances on one storage.
trait Harness {
    type B: StoreBackend;
    /// A new instance on the same storage, recovered.
    async fn open(&self, window: usize) -> (Self::B, Recovered);
}

struct Journal(tempfile::TempDir);

impl Harness for Journal {
    type B = JournalStore;
    async fn open(&self, window: usize) -> (JournalStore, Recovered) {
        let cfg = JournalConfig {
            segment_bytes: 64 * 1024,
            sync: SyncMode::Always,
            compact_below: 0.5,
            ..JournalConfig::default()
        };
        let mut j = JournalStore::new(self.0.path(), cfg, Arc::default(), 1)
            .duplicate_bounds(bounds(window));
        let r = j.recover().await.unwrap();
        (j, r)
    }
}

struct Postgres(String);

impl Postgres {
    /// A database of its own, migrated, with this test as the master of
    /// epoch 1.
    async fn new(hint: &str) -> Postgres {
        let hint = hint.to_owned();
        let url = tokio::task::spawn_blocking(move || halyard_testkit::database(&hint))
            .await
            .unwrap();
        PostgresStore::migrate(&url).await.unwrap();
        let c = super::postgres::connect(&url).await.unwrap();
        c.execute("UPDATE halyard_lock SET epoch = 1 WHERE id = 1", &[])
            .await
            .unwrap();
        Postgres(url)
    }
}

impl Harness for Postgres {
    type B = PostgresStore;
    async fn open(&self, window: usize) -> (PostgresStore, Recovered) {
        let config = PostgresConfig {
            url: self.0.clone(),
            readers: 2,
            duplicates: bounds(window),
        };
        let mut p = PostgresStore::connect(config, 1, CancellationToken::new(), Arc::default())
            .await
            .unwrap();
        let r = p.recover().await.unwrap();
        (p, r)
    }
}

/// Duplicate-detection bounds: `window` per queue, no other bound (the test
/// messages' timestamps are from 2023).
fn bounds(window: usize) -> crate::store::DuplicateBounds {
    crate::store::DuplicateBounds {
        per_key: window,
        total: usize::MAX,
        max_age_ms: 0,
    }
}

fn message(seq: u64, queue: &str) -> Arc<Message> {
    Arc::new(Message {
        seq,
        id: MessageId {
            prefix: "ID:conf-".into(),
            n: seq,
        },
        destination: Destination::queue(queue),
        properties: Properties::from(vec![
            ("k".into(), Value::String(format!("v{seq}:\n\\é"))),
            ("reply-to".into(), Value::from("/queue/r")),
        ]),
        body: Bytes::from(format!("body {seq}\0with a nul")),
        persistent: true,
        priority: (seq % 10) as u8,
        expires: if seq.is_multiple_of(3) {
            4_000_000_000_000
        } else {
            0
        },
        timestamp: 1_700_000_000_000 + seq,
        charge: crate::memory::Charge::none(),
    })
}

fn add(seq: u64) -> Record {
    Record::Add {
        key: StoreKey::Queue("q".into()),
        message: message(seq, "q"),
        dedup: None,
    }
}

async fn put<B: StoreBackend>(b: &mut B, batches: &[Batch]) {
    b.write(batches, true).await.unwrap();
}

fn seqs(r: &Recovered) -> Vec<(u64, u32)> {
    r.messages.summary()
}

async fn live_messages_come_back_in_order_with_their_counts<H: Harness>(h: H) {
    let (mut b, r) = h.open(100).await;
    assert!(r.messages.is_empty());
    put(
        &mut b,
        &[
            vec![add(1), add(2)],
            vec![add(3)],
            vec![Record::Remove { seq: 2 }],
            vec![add(5), Record::Remove { seq: 5 }],
            vec![Record::Redelivered {
                seq: 3,
                deliveries: 2,
            }],
            vec![Record::Redelivered {
                seq: 3,
                deliveries: 4,
            }],
            vec![Record::Redelivered {
                seq: 2,
                deliveries: 9,
            }],
        ],
    )
    .await;
    drop(b);
    let (b, r) = h.open(100).await;
    assert_eq!(seqs(&r), vec![(1, 0), (3, 4)]);
    assert!(
        r.max_seq >= 5,
        "max_seq {} below a used sequence",
        r.max_seq
    );
    let mut found = r.messages.into_sorted();
    let one = found.next().unwrap();
    assert_eq!(one.key, StoreKey::Queue("q".into()));
    assert_eq!((one.priority, one.expires), (1, 0));
    let three = found.next().unwrap();
    assert_eq!((three.priority, three.expires), (3, 4_000_000_000_000));
    // Bodies (and every field) come back exactly, when the backend pages.
    let reader = b.reader();
    if reader.pages() {
        let loaded = tokio::task::spawn_blocking(move || reader.load(&[3, 1, 2]))
            .await
            .unwrap();
        assert_eq!(*loaded[0].as_ref().unwrap().as_ref(), *message(3, "q"));
        assert_eq!(*loaded[1].as_ref().unwrap().as_ref(), *message(1, "q"));
        assert!(loaded[2].is_err(), "a removed message was loaded");
    }
}

async fn sequence_numbers_are_never_reused<H: Harness>(h: H) {
    let (mut b, _) = h.open(100).await;
    put(&mut b, &[vec![add(41), add(42)]]).await;
    put(
        &mut b,
        &[vec![Record::Remove { seq: 41 }, Record::Remove { seq: 42 }]],
    )
    .await;
    drop(b);
    let (_, r) = h.open(100).await;
    assert!(r.messages.is_empty());
    assert!(r.max_seq >= 42, "max_seq {} after removing 42", r.max_seq);
}

async fn durable_subscriptions_and_their_messages<H: Harness>(h: H) {
    let (mut b, _) = h.open(100).await;
    let sub = |name: &str| Record::SubscriptionAdd {
        client_id: "c1".into(),
        name: name.into(),
        topic: Destination::topic("t"),
    };
    let key = StoreKey::Durable {
        client_id: "c1".into(),
        name: "s1".into(),
    };
    put(
        &mut b,
        &[
            vec![sub("s1"), sub("s2"), sub("s3")],
            vec![Record::SubscriptionRemove {
                client_id: "c1".into(),
                name: "s2".into(),
            }],
            vec![
                Record::SubscriptionRemove {
                    client_id: "c1".into(),
                    name: "s3".into(),
                },
                sub("s3"),
            ],
            vec![Record::Add {
                key: key.clone(),
                message: message(7, "q"),
                dedup: None,
            }],
        ],
    )
    .await;
    drop(b);
    let (_, r) = h.open(100).await;
    let mut subs = r.subscriptions.clone();
    subs.sort_by(|a, b| a.name.cmp(&b.name));
    let want = |name: &str| DurableSubscription {
        client_id: "c1".into(),
        name: name.into(),
        topic: Destination::topic("t"),
    };
    assert_eq!(subs, vec![want("s1"), want("s3")]);
    let m: Vec<_> = r.messages.into_sorted().collect();
    assert_eq!(m.len(), 1);
    assert_eq!((m[0].seq, &m[0].key), (7, &key));
}

async fn duplicate_ids_outlive_their_messages<H: Harness>(h: H) {
    let (mut b, _) = h.open(3).await;
    let with_id = |seq: u64, queue: &str, id: &str| Record::Add {
        key: StoreKey::Queue(queue.into()),
        message: message(seq, queue),
        dedup: Some(id.into()),
    };
    put(
        &mut b,
        &[
            vec![with_id(1, "q", "a"), with_id(2, "q", "b")],
            vec![with_id(3, "other", "a")],
            vec![with_id(4, "q", "c"), with_id(5, "q", "d")],
            vec![
                Record::Remove { seq: 1 },
                Record::Remove { seq: 4 },
                Record::Remove { seq: 5 },
            ],
        ],
    )
    .await;
    drop(b);
    let (_, r) = h.open(3).await;
    let mut ids = r.duplicate_ids.clone();
    ids.sort_by(|a, b| a.0.cmp(&b.0));
    let strs = |v: &Vec<Arc<str>>| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    assert_eq!(ids.len(), 2, "{ids:?}");
    // Per queue, the newest `window` ids, oldest first.
    assert_eq!(ids[0].0, StoreKey::Queue("other".into()));
    assert_eq!(strs(&ids[0].1), vec!["a"]);
    assert_eq!(ids[1].0, StoreKey::Queue("q".into()));
    assert_eq!(strs(&ids[1].1), vec!["b", "c", "d"]);
}

async fn big_binary_bodies_and_many_messages<H: Harness>(h: H) {
    let (mut b, _) = h.open(100).await;
    let mut big = (*message(1, "q")).clone();
    big.body = Bytes::from(
        (0..1_048_576u32)
            .map(|i| (i % 251) as u8)
            .collect::<Vec<_>>(),
    );
    let big = Arc::new(big);
    put(
        &mut b,
        &[vec![Record::Add {
            key: StoreKey::Queue("q".into()),
            message: big.clone(),
            dedup: None,
        }]],
    )
    .await;
    let batches: Vec<Batch> = (2..=3001u64).map(|s| vec![add(s)]).collect();
    for chunk in batches.chunks(500) {
        put(&mut b, chunk).await;
    }
    drop(b);
    let (b, r) = h.open(100).await;
    let found = seqs(&r);
    assert_eq!(found.len(), 3001);
    assert!(found.windows(2).all(|w| w[0].0 < w[1].0));
    let reader = b.reader();
    if reader.pages() {
        let loaded = tokio::task::spawn_blocking(move || reader.load(&[1]))
            .await
            .unwrap();
        assert_eq!(*loaded[0].as_ref().unwrap().as_ref(), *big);
    }
}

macro_rules! conformance {
    ($($test:ident),* $(,)?) => {
        mod journal {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    let dir = tempfile::tempdir().unwrap();
                    super::$test(super::Journal(dir)).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    super::$test(super::Postgres::new(stringify!($test)).await).await;
                }
            )*
        }
    };
}

conformance!(
    live_messages_come_back_in_order_with_their_counts,
    sequence_numbers_are_never_reused,
    durable_subscriptions_and_their_messages,
    duplicate_ids_outlive_their_messages,
    big_binary_bodies_and_many_messages,
);

/// PostgreSQL only: what the journal gets from the file lock.
mod postgres_only {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_fenced_master_cannot_write() {
        let h = Postgres::new("fenced").await;
        let (mut old, _) = h.open(100).await;
        put(&mut old, &[vec![add(1)]]).await;
        // A newer master takes over (as the lease does: epoch + 1).
        let c = super::super::postgres::connect(&h.0).await.unwrap();
        c.execute("UPDATE halyard_lock SET epoch = 2 WHERE id = 1", &[])
            .await
            .unwrap();
        let e = old.write(&[vec![add(2)]], true).await.unwrap_err();
        assert!(e.to_string().contains("fenced"), "{e}");
        let n: i64 = c
            .query_one("SELECT count(*) FROM halyard_messages", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(n, 1, "a fenced master's write is visible");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn migration_is_idempotent_and_safe_when_brokers_start_together() {
        let url = tokio::task::spawn_blocking(|| halyard_testkit::database("migrate"))
            .await
            .unwrap();
        let runs: Vec<_> = (0..4)
            .map(|_| {
                let url = url.clone();
                tokio::spawn(async move { PostgresStore::migrate(&url).await })
            })
            .collect();
        for r in runs {
            r.await.unwrap().unwrap();
        }
        PostgresStore::migrate(&url).await.unwrap();
        let c = super::super::postgres::connect(&url).await.unwrap();
        let versions: Vec<i32> = c
            .query("SELECT version FROM halyard_schema ORDER BY version", &[])
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        assert_eq!(versions, vec![1, 2, 3]);
        // A schema from a newer Halyard is refused, by name.
        c.execute("INSERT INTO halyard_schema VALUES (99)", &[])
            .await
            .unwrap();
        let e = PostgresStore::migrate(&url).await.unwrap_err().to_string();
        assert!(e.contains("version 99") && e.contains("newer"), "{e}");
    }
}
