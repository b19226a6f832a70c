//! One behaviour for every store: the same tests run against the journal
//! (files in a temporary directory), PostgreSQL (a database of their own on
//! a real server, see `halyard-testkit`) and, where they do not test
//! durability itself, the memory store.
//!
//! Each test writes through one backend instance, drops it without a clean
//! shutdown, and checks what a fresh instance on the same storage recovers:
//! the invariants written on [`StoreBackend`].

use std::sync::Arc;

use bytes::Bytes;
use tokio_util::sync::CancellationToken;

use super::postgres::{PostgresConfig, PostgresStore};
use super::{
    Batch, DurableSubscription, JournalStore, MemoryStore, MessageReader, Record, Recovered,
    StoreBackend, StoreError, StoreKey,
};
use crate::model::{Destination, DestinationKind, Message, MessageId, Properties, Value};
use crate::store::journal::{JournalConfig, SyncMode};

/// Opens backend instances on one storage.
trait Harness {
    type B: StoreBackend;
    /// A new instance on the same storage, recovered.
    async fn open(&self, window: usize) -> (Self::B, Recovered);

    /// Writes `batch`, which ends with declaring [`POISON`], as a crash in
    /// the middle of it would leave it, and drops the instance: after the
    /// batch's other records reached the storage, its last one did not.
    async fn interrupted(&self, b: Self::B, batch: Batch);
}

/// The queue an interrupted batch ends with.
const POISON: &str = "poison";

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

    /// Written and not synced, then the last byte of the batch is cut off
    /// the newest segment: a torn tail after everything confirmed.
    async fn interrupted(&self, mut b: JournalStore, batch: Batch) {
        b.write(&[batch], false).await.unwrap();
        drop(b);
        let dir = self.0.path().join("journal");
        let newest = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "seg"))
            .max()
            .unwrap();
        let data = std::fs::read(&newest).unwrap();
        // The records end with the poisoned queue's name; the segment's
        // preallocated zeros follow.
        let end = data.iter().rposition(|&b| b != 0).unwrap() + 1;
        assert_eq!(&data[end - POISON.len()..end], POISON.as_bytes());
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(&newest)
            .unwrap();
        f.set_len(end as u64 - 1).unwrap();
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

    /// The last record's statement fails (a check the test adds for the
    /// while), after the others ran in the same transaction.
    async fn interrupted(&self, mut b: PostgresStore, batch: Batch) {
        let c = super::postgres::connect(&self.0).await.unwrap();
        c.batch_execute(&format!(
            "ALTER TABLE halyard_queues ADD CONSTRAINT poison CHECK (name <> '{}')",
            Destination::queue(POISON)
        ))
        .await
        .unwrap();
        let e = b.write(&[batch], true).await.unwrap_err();
        assert!(e.to_string().contains("poison"), "{e}");
        drop(b);
        c.batch_execute("ALTER TABLE halyard_queues DROP CONSTRAINT poison")
            .await
            .unwrap();
    }
}

/// The memory store keeps nothing once dropped, so here a dropped instance
/// hands its state to the next one: the suite then checks what the store
/// gives back, as the reference the durable stores are held to.
#[derive(Default)]
struct Memory(Arc<std::sync::Mutex<Option<MemoryStore>>>);

/// A memory store that goes back to its [`Memory`] when dropped.
struct Kept {
    store: MemoryStore,
    home: Arc<std::sync::Mutex<Option<MemoryStore>>>,
}

impl Drop for Kept {
    fn drop(&mut self) {
        *self.home.lock().unwrap() = Some(std::mem::take(&mut self.store));
    }
}

impl StoreBackend for Kept {
    async fn recover(&mut self) -> Result<Recovered, StoreError> {
        self.store.recover().await
    }

    async fn write(&mut self, batches: &[Batch], sync: bool) -> Result<(), StoreError> {
        self.store.write(batches, sync).await
    }

    fn reader(&self) -> Arc<dyn MessageReader> {
        self.store.reader()
    }
}

impl Harness for Memory {
    type B = Kept;
    async fn open(&self, _window: usize) -> (Kept, Recovered) {
        let store = self.0.lock().unwrap().take().unwrap_or_default();
        let mut kept = Kept {
            store,
            home: self.0.clone(),
        };
        let r = kept.recover().await.unwrap();
        (kept, r)
    }

    /// A write to memory is not cut short: the crash comes before it.
    async fn interrupted(&self, b: Kept, _batch: Batch) {
        drop(b);
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

/// The stored messages `seqs`, as the broker gets them back: loaded by
/// the reader of a store that pages, or handed over by recovery otherwise.
async fn stored(b: &impl StoreBackend, r: Recovered, seqs: &[u64]) -> Vec<Arc<Message>> {
    let reader = b.reader();
    if reader.pages() {
        let seqs = seqs.to_vec();
        let loaded = tokio::task::spawn_blocking(move || reader.load(&seqs))
            .await
            .unwrap();
        return loaded.into_iter().map(Result::unwrap).collect();
    }
    let mut recovered: Vec<_> = r.messages.into_sorted().collect();
    seqs.iter()
        .map(|seq| {
            let i = recovered.iter().position(|m| m.seq == *seq).unwrap();
            recovered.swap_remove(i).message.unwrap()
        })
        .collect()
}

/// Every type a property can have comes back as it went in, with its name,
/// its order and the exact value (NaN, negative zero and infinities
/// included), on a queue's message and on a durable subscription's copy of
/// a topic's.
async fn every_property_type_comes_back<H: Harness>(h: H) {
    let (mut b, _) = h.open(100).await;
    let properties: Properties = [
        ("string", Value::from("v:1\n\\é")),
        ("empty", Value::from("")),
        ("null", Value::Null),
        ("yes", Value::Bool(true)),
        ("no", Value::Bool(false)),
        ("i8", Value::I8(i8::MIN)),
        ("i16", Value::I16(i16::MAX)),
        ("i32", Value::I32(-123_456)),
        ("i64", Value::I64(i64::MAX)),
        ("f32", Value::F32(0.1)),
        ("f32-inf", Value::F32(f32::NEG_INFINITY)),
        ("f64", Value::F64(-2.5e-300)),
        ("f64-nan", Value::F64(f64::NAN)),
        ("f64-zero", Value::F64(-0.0)),
        ("bytes", Value::Bytes(Bytes::from_static(b"\0\xff\x10a"))),
        ("no-bytes", Value::Bytes(Bytes::new())),
        ("ünïcode name", Value::I32(1)),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let on_queue = Arc::new(Message {
        properties: properties.clone(),
        ..(*message(1, "q")).clone()
    });
    let on_topic = Arc::new(Message {
        destination: Destination::new(DestinationKind::Topic, "t").unwrap(),
        properties,
        ..(*message(2, "q")).clone()
    });
    put(
        &mut b,
        &[
            vec![Record::Add {
                key: StoreKey::Queue("q".into()),
                message: on_queue.clone(),
                dedup: None,
            }],
            vec![Record::Add {
                key: StoreKey::Durable {
                    client_id: "c1".into(),
                    name: "s1".into(),
                },
                message: on_topic.clone(),
                dedup: None,
            }],
        ],
    )
    .await;
    drop(b);
    let (b, r) = h.open(100).await;
    let back = stored(&b, r, &[1, 2]).await;
    assert_eq!(*back[0], *on_queue);
    assert_eq!(*back[1], *on_topic);
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
        selector: None,
    };
    // s3 is made again with a selector, which recovery gives back.
    let selected = Record::SubscriptionAdd {
        client_id: "c1".into(),
        name: "s3".into(),
        topic: Destination::topic("t"),
        selector: Some("color = 'red'".into()),
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
                selected,
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
    let want = |name: &str, selector: Option<&str>| DurableSubscription {
        client_id: "c1".into(),
        name: name.into(),
        topic: Destination::topic("t"),
        selector: selector.map(str::to_owned),
    };
    assert_eq!(
        subs,
        vec![want("s1", None), want("s3", Some("color = 'red'"))]
    );
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

fn declare(queue: &str) -> Record {
    Record::QueueDeclared {
        queue: Destination::queue(queue),
    }
}

fn drop_queue(queue: &str) -> Record {
    Record::QueueDropped {
        queue: Destination::queue(queue),
    }
}

fn queues(names: &[&str]) -> Vec<Destination> {
    names.iter().map(|n| Destination::queue(n)).collect()
}

/// A message on queue `queue`.
fn add_to(seq: u64, queue: &str) -> Record {
    Record::Add {
        key: StoreKey::Queue(queue.into()),
        message: message(seq, queue),
        dedup: None,
    }
}

/// Declared queues come back in the order they were declared, across
/// restarts, whatever their kind, and a store that never had one gives
/// back none.
async fn declared_queues_come_back_in_order<H: Harness>(h: H) {
    let (mut b, r) = h.open(100).await;
    assert!(r.queues.is_empty());
    put(
        &mut b,
        &[
            vec![declare("b")],
            vec![declare("a"), declare("Consumer.A.VirtualTopic.Orders")],
        ],
    )
    .await;
    drop(b);
    let (mut b, r) = h.open(100).await;
    assert_eq!(
        r.queues,
        queues(&["b", "a", "Consumer.A.VirtualTopic.Orders"])
    );
    assert!(r.messages.is_empty());
    let temp = Destination::new(DestinationKind::TempQueue, "c1.replies").unwrap();
    put(
        &mut b,
        &[
            vec![declare("c")],
            vec![Record::QueueDeclared {
                queue: temp.clone(),
            }],
        ],
    )
    .await;
    drop(b);
    let (_, r) = h.open(100).await;
    let mut want = queues(&["b", "a", "Consumer.A.VirtualTopic.Orders", "c"]);
    want.push(temp);
    assert_eq!(r.queues, want);
}

/// Declaring a declared queue changes nothing: it is there once, in the
/// place of its first declaration, whether declared again in the same
/// batch, the same group, or after a restart.
async fn declaring_a_queue_again_changes_nothing<H: Harness>(h: H) {
    let (mut b, _) = h.open(100).await;
    put(
        &mut b,
        &[
            vec![declare("a"), declare("b"), declare("a")],
            vec![declare("b")],
        ],
    )
    .await;
    put(&mut b, &[vec![declare("a")]]).await;
    drop(b);
    let (mut b, r) = h.open(100).await;
    assert_eq!(r.queues, queues(&["a", "b"]));
    put(&mut b, &[vec![declare("c")], vec![declare("a")]]).await;
    drop(b);
    let (_, r) = h.open(100).await;
    assert_eq!(r.queues, queues(&["a", "b", "c"]));
}

/// A dropped queue is not recovered, its messages are (the broker removes
/// them itself), and dropping a queue never declared changes nothing.
async fn a_dropped_queue_is_gone_but_not_its_messages<H: Harness>(h: H) {
    let (mut b, _) = h.open(100).await;
    put(
        &mut b,
        &[
            vec![declare("a"), declare("b"), declare("c")],
            vec![add_to(1, "a"), add_to(2, "b")],
        ],
    )
    .await;
    put(
        &mut b,
        &[
            vec![drop_queue("a")],
            vec![drop_queue("never"), drop_queue("a")],
        ],
    )
    .await;
    drop(b);
    let (mut b, r) = h.open(100).await;
    assert_eq!(r.queues, queues(&["b", "c"]));
    assert_eq!(seqs(&r), vec![(1, 0), (2, 0)]);
    put(&mut b, &[vec![drop_queue("c"), drop_queue("b")]]).await;
    drop(b);
    let (_, r) = h.open(100).await;
    assert!(r.queues.is_empty(), "{:?}", r.queues);
    assert_eq!(seqs(&r), vec![(1, 0), (2, 0)]);
}

/// A queue dropped and declared again is declared, in the place of its
/// new declaration: within a batch, between batches, across a restart.
async fn a_queue_dropped_and_declared_again_is_declared<H: Harness>(h: H) {
    let (mut b, _) = h.open(100).await;
    put(
        &mut b,
        &[
            vec![declare("a"), declare("b"), declare("c")],
            vec![drop_queue("a")],
            vec![declare("a")],
            vec![declare("d"), drop_queue("d"), declare("d")],
            vec![drop_queue("b"), declare("b"), drop_queue("b")],
        ],
    )
    .await;
    drop(b);
    let (mut b, r) = h.open(100).await;
    assert_eq!(r.queues, queues(&["c", "a", "d"]));
    put(&mut b, &[vec![drop_queue("c")]]).await;
    put(&mut b, &[vec![declare("c")]]).await;
    drop(b);
    let (_, r) = h.open(100).await;
    assert_eq!(r.queues, queues(&["a", "d", "c"]));
}

/// Declarations live beside the queue's messages, in the same batches,
/// and outlive them: a declared queue whose messages are all consumed is
/// still there.
async fn a_declaration_lives_beside_messages<H: Harness>(h: H) {
    let (mut b, _) = h.open(100).await;
    put(
        &mut b,
        &[
            vec![add_to(1, "orders")],
            vec![declare("orders"), add_to(2, "orders")],
            vec![add_to(3, "other")],
            vec![add_to(4, "orders"), Record::Remove { seq: 1 }],
            vec![Record::Redelivered {
                seq: 4,
                deliveries: 2,
            }],
        ],
    )
    .await;
    drop(b);
    let (mut b, r) = h.open(100).await;
    assert_eq!(r.queues, queues(&["orders"]));
    assert_eq!(seqs(&r), vec![(2, 0), (3, 0), (4, 2)]);
    let keys: Vec<StoreKey> = r.messages.into_sorted().map(|m| m.key).collect();
    assert_eq!(
        keys,
        vec![
            StoreKey::Queue("orders".into()),
            StoreKey::Queue("other".into()),
            StoreKey::Queue("orders".into())
        ]
    );
    put(
        &mut b,
        &[vec![
            Record::Remove { seq: 2 },
            Record::Remove { seq: 3 },
            Record::Remove { seq: 4 },
        ]],
    )
    .await;
    drop(b);
    let (_, r) = h.open(100).await;
    assert_eq!(r.queues, queues(&["orders"]));
    assert!(r.messages.is_empty());
    assert!(r.max_seq >= 4, "max_seq {}", r.max_seq);
}

/// A batch mixing declarations, drops and messages is atomic: cut short
/// by a crash, none of it is recovered; written whole, all of it is.
async fn a_batch_of_declarations_and_messages_is_atomic<H: Harness>(h: H) {
    let (mut b, _) = h.open(100).await;
    put(&mut b, &[vec![declare("c"), add_to(1, "c")]]).await;
    let batch = vec![
        declare("a"),
        add_to(10, "a"),
        declare("b"),
        drop_queue("c"),
        Record::Remove { seq: 1 },
        add_to(11, "b"),
    ];
    let mut poisoned = batch.clone();
    poisoned.push(declare(POISON));
    h.interrupted(b, poisoned).await;
    let (mut b, r) = h.open(100).await;
    assert_eq!(r.queues, queues(&["c"]), "part of a batch was recovered");
    assert_eq!(seqs(&r), vec![(1, 0)], "part of a batch was recovered");
    put(&mut b, &[batch]).await;
    drop(b);
    let (_, r) = h.open(100).await;
    assert_eq!(r.queues, queues(&["a", "b"]));
    assert_eq!(seqs(&r), vec![(10, 0), (11, 0)]);
}

/// One group of large bodies, more than PostgreSQL takes in one statement
/// (`ADD_CHUNK_BYTES`) and each larger than a journal segment (64 KiB
/// here), with small messages between them and two in one atomic batch,
/// comes back whole.
async fn a_group_of_large_bodies_comes_back_whole<H: Harness>(h: H) {
    let (mut b, _) = h.open(100).await;
    // A 251-byte pattern (prime, so it drifts against any power of two)
    // that differs from message to message.
    let body = |seq: u64, len: usize| {
        let pattern: Vec<u8> = (0..251u64).map(|i| (i * 7 + seq) as u8).collect();
        let mut v = Vec::with_capacity(len);
        while v.len() < len {
            let n = (len - v.len()).min(pattern.len());
            v.extend_from_slice(&pattern[..n]);
        }
        Bytes::from(v)
    };
    // 96 MiB: two PostgreSQL statements, the second starting inside the
    // batch.
    let sizes = [24 << 20, 10, 24 << 20, 12 << 20, 12 << 20, 10, 24 << 20];
    let messages: Vec<Arc<Message>> = (1..)
        .zip(sizes)
        .map(|(seq, len)| {
            let mut m = (*message(seq, "q")).clone();
            m.body = body(seq, len);
            Arc::new(m)
        })
        .collect();
    let add = |m: &Arc<Message>| Record::Add {
        key: StoreKey::Queue("q".into()),
        message: m.clone(),
        dedup: Some(format!("dup-{}", m.seq).into()),
    };
    let mut batches: Vec<Batch> = messages.iter().map(|m| vec![add(m)]).collect();
    // Messages 4 and 5 in one batch, as a transaction's.
    let fifth = batches.remove(4);
    batches[3].extend(fifth);
    put(&mut b, &batches).await;
    drop(b);
    let (b, r) = h.open(100).await;
    let found: Vec<u64> = seqs(&r).iter().map(|s| s.0).collect();
    assert_eq!(found, (1..=7).collect::<Vec<_>>());
    for (m, loaded) in messages.iter().zip(stored(&b, r, &found).await) {
        assert!(loaded.body == m.body, "message {} is not whole", m.seq);
        assert_eq!(*loaded, **m);
    }
}

/// Scheduled messages come back under the scheduler's key with their
/// latest progress; a firing's batch (its copies and the new progress)
/// is atomic with it; a removed schedule is gone; and compaction keeps a
/// schedule's progress with its message.
async fn scheduled_messages_come_back_with_their_progress<H: Harness>(h: H) {
    use super::ScheduleState;
    let sched = |seq: u64| Record::Add {
        key: StoreKey::Scheduled,
        message: message(seq, "q"),
        dedup: None,
    };
    let progress = |seq, due, fired| Record::Schedule { seq, due, fired };
    let (mut b, _) = h.open(100).await;
    put(
        &mut b,
        &[
            vec![sched(1), progress(1, 5_000, 0)],
            vec![sched(2), progress(2, 6_000, 0)],
            vec![sched(3), progress(3, 7_000, 0)],
            // A firing of 1: its copy (seq 4) and the schedule's progress.
            vec![add(4), progress(1, 5_200, 1)],
            // The last firing of 2: its copy and the schedule's removal.
            vec![add(5), Record::Remove { seq: 2 }],
            // A second firing of 1.
            vec![add(6), progress(1, 5_400, 2)],
        ],
    )
    .await;
    // Enough churn to fill segments, so compaction may copy records.
    for i in 0..200u64 {
        let seq = 100 + i;
        put(&mut b, &[vec![add(seq)], vec![Record::Remove { seq }]]).await;
    }
    let _ = b.maintain().await;
    drop(b);
    let (b, r) = h.open(100).await;
    let found: Vec<_> = r.messages.into_sorted().collect();
    let scheduled: Vec<(u64, Option<ScheduleState>)> = found
        .iter()
        .filter(|m| m.key == StoreKey::Scheduled)
        .map(|m| (m.seq, m.schedule))
        .collect();
    assert_eq!(
        scheduled,
        vec![
            (
                1,
                Some(ScheduleState {
                    due: 5_400,
                    fired: 2
                })
            ),
            (
                3,
                Some(ScheduleState {
                    due: 7_000,
                    fired: 0
                })
            ),
        ]
    );
    let queued: Vec<u64> = found
        .iter()
        .filter(|m| m.key == StoreKey::Queue("q".into()))
        .map(|m| m.seq)
        .collect();
    assert_eq!(queued, vec![4, 5, 6]);
    assert!(
        found
            .iter()
            .all(|m| m.key == StoreKey::Scheduled || m.schedule.is_none())
    );
    // The scheduled message's body reads back, for a firing after a restart.
    let reader = b.reader();
    if reader.pages() {
        let loaded = tokio::task::spawn_blocking(move || reader.load(&[3]))
            .await
            .unwrap();
        assert_eq!(*loaded[0].as_ref().unwrap().as_ref(), *message(3, "q"));
    }
}

/// A delayed redelivery keeps its due time across a restart (or a
/// takeover); the latest record of a message wins, so a later plain
/// redelivery cancels the delay.
async fn a_delayed_redelivery_keeps_its_due_time<H: Harness>(h: H) {
    const DUE: u64 = 4_102_444_800_000; // 2100-01-01
    let (mut b, _) = h.open(100).await;
    put(
        &mut b,
        &[
            vec![add(1), add(2), add(3), add(4)],
            vec![Record::Delayed {
                seq: 1,
                deliveries: 1,
                until_ms: DUE,
            }],
            vec![
                Record::Redelivered {
                    seq: 2,
                    deliveries: 1,
                },
                Record::Delayed {
                    seq: 2,
                    deliveries: 2,
                    until_ms: DUE + 5,
                },
            ],
            vec![
                Record::Delayed {
                    seq: 3,
                    deliveries: 1,
                    until_ms: DUE,
                },
                Record::Redelivered {
                    seq: 3,
                    deliveries: 2,
                },
            ],
            vec![Record::Delayed {
                seq: 4,
                deliveries: 1,
                until_ms: DUE,
            }],
            vec![Record::Remove { seq: 4 }],
            // Of a message no longer there: nothing.
            vec![Record::Delayed {
                seq: 4,
                deliveries: 2,
                until_ms: DUE,
            }],
        ],
    )
    .await;
    drop(b);
    let (_b, r) = h.open(100).await;
    let found: Vec<(u64, u32, u64)> = r
        .messages
        .into_sorted()
        .map(|m| (m.seq, m.deliveries, m.not_before))
        .collect();
    assert_eq!(found, vec![(1, 1, DUE), (2, 2, DUE + 5), (3, 2, 0)]);
}

macro_rules! conformance {
    (
        every store: $($test:ident),* $(,)?;
        durable stores: $($durable:ident),* $(,)?
    ) => {
        mod journal {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    let dir = tempfile::tempdir().unwrap();
                    super::$test(super::Journal(dir)).await;
                }
            )*
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $durable() {
                    let dir = tempfile::tempdir().unwrap();
                    super::$durable(super::Journal(dir)).await;
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
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $durable() {
                    super::$durable(super::Postgres::new(stringify!($durable)).await).await;
                }
            )*
        }
        mod memory {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    super::$test(super::Memory::default()).await;
                }
            )*
        }
    };
}

conformance!(
    every store:
        live_messages_come_back_in_order_with_their_counts,
        sequence_numbers_are_never_reused,
        durable_subscriptions_and_their_messages,
        big_binary_bodies_and_many_messages,
        every_property_type_comes_back,
        declared_queues_come_back_in_order,
        declaring_a_queue_again_changes_nothing,
        a_dropped_queue_is_gone_but_not_its_messages,
        a_queue_dropped_and_declared_again_is_declared,
        a_declaration_lives_beside_messages,
        a_batch_of_declarations_and_messages_is_atomic,
        a_group_of_large_bodies_comes_back_whole,
        scheduled_messages_come_back_with_their_progress,
        a_delayed_redelivery_keeps_its_due_time;
    // The memory store's writer remembers duplicate-detection ids; the
    // store itself keeps none across a restart.
    durable stores:
        duplicate_ids_outlive_their_messages,
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
        // A group without new messages (an acknowledgement nobody waits
        // for: one statement, synchronous_commit off) and one that adds
        // and deletes are refused too: the fence runs in every group.
        let e = old
            .write(&[vec![Record::Remove { seq: 1 }]], false)
            .await
            .unwrap_err();
        assert!(e.to_string().contains("fenced"), "{e}");
        let e = old
            .write(&[vec![add(3)], vec![Record::Remove { seq: 1 }]], true)
            .await
            .unwrap_err();
        assert!(e.to_string().contains("fenced"), "{e}");
        let n: i64 = c
            .query_one("SELECT count(*) FROM halyard_messages", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(n, 1, "a fenced master's write is visible");
    }

    /// A message added and acknowledged in the same group (sent and
    /// consumed while the previous group was written) is not left behind,
    /// whether the group waits for a sync or not; the others stay.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_message_added_and_removed_in_one_group_is_gone() {
        let h = Postgres::new("add_remove").await;
        let (mut s, _) = h.open(100).await;
        for sync in [true, false] {
            let base = if sync { 10 } else { 20 };
            s.write(
                &[
                    vec![add(base), add(base + 1)],
                    vec![Record::Remove { seq: base }],
                ],
                sync,
            )
            .await
            .unwrap();
        }
        let c = super::super::postgres::connect(&h.0).await.unwrap();
        let left: Vec<i64> = c
            .query("SELECT seq FROM halyard_messages ORDER BY seq", &[])
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        assert_eq!(left, vec![11, 21]);
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
        assert_eq!(versions, vec![1, 2, 3, 4, 5, 6]);
        // A schema from a newer Halyard is refused, by name.
        c.execute("INSERT INTO halyard_schema VALUES (99)", &[])
            .await
            .unwrap();
        let e = PostgresStore::migrate(&url).await.unwrap_err().to_string();
        assert!(e.contains("version 99") && e.contains("newer"), "{e}");
    }
}
