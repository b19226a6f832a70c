//! PostgreSQL databases written by earlier releases.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::{PostgresConfig, PostgresStore, connect, schema};
use crate::model::{Destination, Value, test_message};
use crate::store::{DuplicateBounds, Record, StoreBackend, StoreKey};

/// A database written by the broker of schema version 2 (string headers;
/// see tests/fixtures/README.md) — its schema made by the version 2
/// migrations, its rows as that broker wrote them — is migrated to this
/// version and gives back every message, header, delivery count, duplicate
/// id and subscription; rows with typed properties (and a declared queue)
/// then sit beside the old ones, and both kinds come back together.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_written_by_schema_2_opens() {
    opens_from_schema(2).await;
}

/// The same rows in a database of schema version 3, the previous
/// release's: a version 2 row is a version 3 row as it is, and the
/// migration to version 4 (declared queues) adds a table and changes no
/// row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_written_by_schema_3_opens() {
    opens_from_schema(3).await;
}

/// The same rows in a database of schema version 5, the release before
/// messages were split in two: the migration to version 6 moves every
/// row's body, properties and the rest recovery does not read to
/// `halyard_message_bodies`, and nothing is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_written_by_schema_5_opens() {
    opens_from_schema(5).await;
}

/// Takes the lock row's epoch one further, as a new master after the old
/// one was killed; returns it.
async fn next_epoch(c: &tokio_postgres::Client) -> u64 {
    c.execute(
        "UPDATE halyard_lock SET epoch = epoch + 1 WHERE id = 1",
        &[],
    )
    .await
    .unwrap();
    let epoch: i64 = c
        .query_one("SELECT epoch FROM halyard_lock", &[])
        .await
        .unwrap()
        .get(0);
    epoch as u64
}

/// The store of the database at `url`, master of `epoch`.
async fn master_of(url: &str, epoch: u64) -> PostgresStore {
    let config = PostgresConfig {
        url: url.to_owned(),
        readers: 1,
        duplicates: DuplicateBounds {
            per_key: 100,
            total: usize::MAX,
            max_age_ms: 0,
        },
    };
    PostgresStore::connect(config, epoch, CancellationToken::new(), Arc::default())
        .await
        .unwrap()
}

async fn opens_from_schema(version: i32) {
    let url = tokio::task::spawn_blocking(move || {
        halyard_testkit::database(&format!("schema_{version}"))
    })
    .await
    .unwrap();
    let mut c = connect(&url).await.unwrap();
    schema::migrate_to(&mut c, version).await.unwrap();
    let tables: i64 = c
        .query_one(
            "SELECT count(*) FROM pg_tables WHERE tablename = 'halyard_queues'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        tables,
        i64::from(version >= 4),
        "schema {version}: declared queues?"
    );
    c.batch_execute(include_str!("../../../tests/fixtures/postgres-v2.sql"))
        .await
        .unwrap();
    // A new master, as after the old one was killed.
    let epoch = next_epoch(&c).await;
    let open = || async {
        let mut p = master_of(&url, epoch).await;
        let r = p.recover().await.unwrap();
        (p, r)
    };
    let (mut p, r) = open().await;
    let schema: Vec<i32> = c
        .query("SELECT version FROM halyard_schema ORDER BY version", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(schema, (1..=schema::VERSION).collect::<Vec<_>>());
    // Version 6 moved everything but what recovery reads out of
    // `halyard_messages`, and stored each row's size.
    let wide: i64 = c
        .query_one(
            "SELECT count(*) FROM information_schema.columns WHERE table_schema = current_schema() \
             AND table_name = 'halyard_messages' AND column_name IN ('body', 'headers', 'destination')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(wide, 0, "halyard_messages still has the moved columns");
    let (rows, sized, bodies): (i64, i64, i64) = {
        let r = c
            .query_one(
                "SELECT count(*), count(*) FILTER (WHERE size > 0), \
                 (SELECT count(*) FROM halyard_message_bodies) FROM halyard_messages",
                &[],
            )
            .await
            .unwrap();
        (r.get(0), r.get(1), r.get(2))
    };
    assert!(rows > 0);
    assert_eq!((sized, bodies), (rows, rows));
    let reader = p.reader();
    let (max_seq, first) = tokio::task::spawn_blocking(move || {
        let mut first = None;
        let max_seq = crate::store::fixtures::check_v2(r, |seqs| {
            let loaded = reader.load(seqs);
            first = Some((seqs[0], loaded[0].as_ref().unwrap().clone()));
            loaded
        });
        (max_seq, first.unwrap())
    })
    .await
    .unwrap();
    let (first_seq, first) = first;
    assert_eq!(&first.body[..], b"one");

    let mut typed = (*test_message(max_seq + 1, 4)).clone();
    typed.properties = [
        ("n".to_owned(), Value::I32(7)),
        ("s".to_owned(), Value::from("x")),
    ]
    .into_iter()
    .collect();
    let typed = Arc::new(typed);
    p.write(
        &[vec![
            Record::Add {
                key: StoreKey::Queue("fixture.orders".into()),
                message: typed.clone(),
                dedup: None,
            },
            Record::Remove { seq: first_seq },
            Record::QueueDeclared {
                queue: Destination::queue("fixture.orders"),
            },
        ]],
        true,
    )
    .await
    .unwrap();
    drop(p);
    let (p, r) = open().await;
    assert_eq!(r.queues, vec![Destination::queue("fixture.orders")]);
    let found: Vec<u64> = r.messages.into_sorted().map(|m| m.seq).collect();
    assert_eq!(found.len(), 7);
    assert!(!found.contains(&first_seq));
    assert_eq!(found.last(), Some(&typed.seq));
    let reader = p.reader();
    let loaded = tokio::task::spawn_blocking(move || reader.load(&found))
        .await
        .unwrap();
    assert_eq!(*loaded[6].as_ref().unwrap().as_ref(), *typed);
    assert!(loaded.iter().all(Result::is_ok));
}

/// A group's new messages go to the database in statements of at most
/// ADD_CHUNK_BYTES (64 MiB) of bodies (a larger body alone), in order: PostgreSQL
/// refuses a message over 1 GiB and closes the connection, so a group of
/// eleven 100 MiB messages in one statement was sent again and again,
/// forever.
#[test]
fn new_messages_are_sent_in_statements_of_bounded_size() {
    const MIB: usize = 1 << 20;
    let body = bytes::Bytes::from(vec![0u8; 100 * MIB]);
    let batches: Vec<crate::store::Batch> = [40, 20, 4, 100, 1, 1, 63]
        .iter()
        .enumerate()
        .map(|(i, mib)| {
            let mut m = (*test_message(i as u64 + 1, 4)).clone();
            m.body = body.slice(..mib * MIB);
            vec![Record::Add {
                key: StoreKey::Queue("q".into()),
                message: Arc::new(m),
                dedup: None,
            }]
        })
        .collect();
    let plan = super::Plan::new(&batches).unwrap();
    let chunks = plan.add_chunks(64 * MIB);
    let shape: Vec<(Vec<i64>, usize)> = chunks
        .iter()
        .map(|c| (c.seq.to_vec(), c.body.iter().map(|b| b.len()).sum()))
        .collect();
    assert_eq!(
        shape,
        vec![
            (vec![1, 2, 3], 64 * MIB),
            (vec![4], 100 * MIB),
            (vec![5, 6], 2 * MIB),
            (vec![7], 63 * MIB),
        ]
    );
    for c in &chunks {
        let n = c.seq.len();
        assert!([c.key_a.len(), c.headers.len(), c.body.len(), c.id_n.len()] == [n; 4]);
    }
}

/// What recovery streams once the broker serves (`later.rs`) is what it
/// reads at once: every message with its key, details and schedule, and
/// the same highest sequence number.
#[tokio::test]
async fn messages_handed_over_later_are_those_read_at_once() {
    let url = tokio::task::spawn_blocking(|| halyard_testkit::database("handed_over_later"))
        .await
        .unwrap();
    let mut c = connect(&url).await.unwrap();
    schema::migrate_to(&mut c, 2).await.unwrap();
    c.batch_execute(include_str!("../../../tests/fixtures/postgres-v2.sql"))
        .await
        .unwrap();
    let mut found = Vec::new();
    for later in [false, true] {
        let p = master_of(&url, next_epoch(&c).await).await;
        let mut p = if later { p.hand_over_later() } else { p };
        let mut r = p.recover().await.unwrap();
        let line = |m: &crate::store::StoredMessage| {
            format!(
                "{} {:?} p{} e{} w{} d{} nb{} {:?}",
                m.seq,
                m.key,
                m.priority,
                m.expires,
                m.weight,
                m.deliveries,
                m.not_before,
                m.schedule
            )
        };
        let mut all: Vec<String> = Vec::new();
        match r.later.take() {
            Some(crate::store::Later(mut l)) => {
                assert!(later);
                let count = l.len();
                loop {
                    let chunk = l.next_chunk(10).await.unwrap();
                    if chunk.is_empty() {
                        break;
                    }
                    for (key, m) in chunk {
                        assert_eq!(l.keys()[key as usize], m.key);
                        assert!(l.in_use()[key as usize]);
                        all.push(line(&m));
                    }
                }
                assert_eq!(all.len(), count);
            }
            None => assert!(!later),
        }
        all.extend(r.messages.into_sorted().map(|m| line(&m)));
        all.sort();
        found.push((all, r.max_seq));
        p.close().await;
    }
    assert!(!found[0].0.is_empty());
    assert_eq!(found[0], found[1]);
}

/// Groups sent ahead on the writer's connection are carried out in the
/// order they were sent, whatever order they are awaited in; one sent
/// after a newer master took over is fenced; one whose connection was
/// killed says to write it again, and `write` then does on a new
/// connection.
#[tokio::test]
async fn groups_sent_ahead_are_carried_out_in_the_order_sent_and_fenced() {
    use crate::store::AheadOutcome;
    let url = tokio::task::spawn_blocking(|| halyard_testkit::database("sent_ahead"))
        .await
        .unwrap();
    PostgresStore::migrate(&url).await.unwrap();
    let c = connect(&url).await.unwrap();
    let mut p = master_of(&url, next_epoch(&c).await).await;
    p.recover().await.unwrap();
    let add = |seq| {
        vec![Record::Add {
            key: StoreKey::Queue("q".into()),
            message: test_message(seq, 4),
            dedup: None,
        }]
    };
    // The second deletes what the first adds: carried out the other way
    // round, message 1 would stay.
    let first = p.send_ahead(&[add(1)], true).expect("sent ahead");
    let second = p
        .send_ahead(&[vec![Record::Remove { seq: 1 }]], true)
        .expect("sent ahead");
    let third = p.send_ahead(&[add(2)], true).expect("sent ahead");
    for ahead in [third, second, first] {
        assert!(matches!(ahead.await, AheadOutcome::Done(Ok(()))));
    }
    assert_eq!(stored_seqs(&mut p).await, vec![2]);

    // The writer's connection killed under it.
    c.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = current_database() AND pid <> pg_backend_pid()",
        &[],
    )
    .await
    .unwrap();
    if let Some(ahead) = p.send_ahead(&[add(3)], true) {
        assert!(matches!(ahead.await, AheadOutcome::Again));
    }
    p.write(&[add(3)], true).await.unwrap();
    assert_eq!(stored_seqs(&mut p).await, vec![2, 3]);

    // A newer master: nothing this one sends ahead commits.
    next_epoch(&c).await;
    let fenced = p.send_ahead(&[add(4)], true).expect("sent ahead");
    assert!(matches!(fenced.await, AheadOutcome::Done(Err(_))));
    let mut after = master_of(&url, next_epoch(&c).await).await;
    assert_eq!(stored_seqs(&mut after).await, vec![2, 3]);
}

/// The sequence numbers of the messages `p` recovers.
async fn stored_seqs(p: &mut PostgresStore) -> Vec<u64> {
    let r = p.recover().await.unwrap();
    let mut seqs: Vec<u64> = r.messages.into_sorted().map(|m| m.seq).collect();
    seqs.sort();
    seqs
}
