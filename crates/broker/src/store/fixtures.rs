//! What the stores in `crates/broker/tests/fixtures/` hold: written by the
//! broker of the previous release (journal format 2, schema version 2) from
//! what `make_v2_fixtures.py` sent, and checked here against today's code
//! by the journal's and PostgreSQL's tests.

use std::sync::Arc;

use super::{DurableSubscription, Recovered, StoreError, StoreKey};
use crate::model::{Destination, Message, Value};

/// A stored message as the script sent it, once the broker had made it a
/// message: the headers it keeps (in order, the first of a repeated one),
/// and what was stored with it.
struct Sent {
    body: &'static [u8],
    /// `*` in a value stands for any text (a connection's secret scope).
    properties: &'static [(&'static str, &'static str)],
    priority: u8,
    expires: u64,
    /// On the topic, for the durable subscription; else on the queue.
    topic: bool,
    /// Times delivered before the broker was killed.
    deliveries: u32,
}

const QUEUE: &str = "fixture.orders";
const TOPIC: &str = "fixture.prices";
const CLIENT_ID: &str = "fixture-client";
const SUBSCRIPTION: &str = "fixture-sub";

const SENT: &[Sent] = &[
    Sent {
        body: b"one",
        properties: &[
            ("persistent", "true"),
            ("content-type", "text/plain"),
            ("k", "v"),
        ],
        priority: 4,
        expires: 0,
        topic: false,
        // Given back with a NACK, delivered again, given back on close.
        deliveries: 2,
    },
    Sent {
        body: b"two",
        properties: &[
            ("persistent", "true"),
            ("colon:and\nnewline", "back\\slash:x\ny"),
            ("\u{e9}t\u{e9}", ""),
            ("dup", "first"),
        ],
        priority: 4,
        expires: 0,
        topic: false,
        deliveries: 1,
    },
    Sent {
        body: b"three",
        properties: &[
            ("persistent", "true"),
            ("priority", "9"),
            ("expires", "4102444800000"),
            ("_AMQ_DUPL_ID", "fixture-producer:3"),
            ("reply-to", "/remote-temp-queue/*.replies"),
        ],
        priority: 9,
        expires: 4_102_444_800_000,
        topic: false,
        deliveries: 1,
    },
    Sent {
        body: b"f\0o\0r",
        properties: &[("persistent", "true")],
        priority: 4,
        expires: 0,
        topic: false,
        deliveries: 1,
    },
    Sent {
        body: &[b'z'; 2048],
        properties: &[("persistent", "true"), ("size", "2048")],
        priority: 4,
        expires: 0,
        topic: false,
        deliveries: 1,
    },
    Sent {
        body: b"tick 1",
        properties: &[
            ("persistent", "true"),
            ("symbol", "HLYD"),
            ("price", "12.50"),
        ],
        priority: 4,
        expires: 0,
        topic: true,
        deliveries: 0,
    },
    Sent {
        body: b"tick 2",
        properties: &[
            ("persistent", "true"),
            ("symbol", "HLYD"),
            ("price", "12.75"),
            ("empty", ""),
        ],
        priority: 4,
        expires: 0,
        topic: true,
        deliveries: 0,
    },
];

/// Whether `got` is `want`, where a `*` in `want` stands for any text.
fn matches(want: &str, got: &str) -> bool {
    match want.split_once('*') {
        Some((head, tail)) => {
            got.len() >= head.len() + tail.len() && got.starts_with(head) && got.ends_with(tail)
        }
        None => want == got,
    }
}

/// Checks everything recovery found in a store of the previous release,
/// and every message `load` reads back, against what was sent. Returns the
/// highest sequence number used.
pub(crate) fn check_v2(
    r: Recovered,
    load: impl FnOnce(&[u64]) -> Vec<Result<Arc<Message>, StoreError>>,
) -> u64 {
    let durable = StoreKey::Durable {
        client_id: CLIENT_ID.into(),
        name: SUBSCRIPTION.into(),
    };
    assert_eq!(
        r.subscriptions,
        vec![DurableSubscription {
            client_id: CLIENT_ID.into(),
            name: SUBSCRIPTION.into(),
            topic: Destination::topic(TOPIC),
            selector: None,
        }]
    );
    // No release before declared queues had them.
    assert!(r.queues.is_empty(), "{:?}", r.queues);
    assert_eq!(
        r.duplicate_ids,
        vec![(
            StoreKey::Queue(QUEUE.into()),
            vec!["fixture-producer:3".into()]
        )]
    );
    let max_seq = r.max_seq;
    let stored: Vec<_> = r.messages.into_sorted().collect();
    assert_eq!(
        stored.len(),
        SENT.len(),
        "the acknowledged message came back"
    );
    let seqs: Vec<u64> = stored.iter().map(|m| m.seq).collect();
    assert!(seqs.iter().all(|&s| s <= max_seq), "{seqs:?} > {max_seq}");
    let loaded = load(&seqs);
    for (s, m) in stored.iter().zip(loaded) {
        let m = m.unwrap_or_else(|e| panic!("message {}: {e}", s.seq));
        let sent = SENT
            .iter()
            .find(|x| x.body == &m.body[..])
            .unwrap_or_else(|| panic!("unexpected message {m:?}"));
        let what = String::from_utf8_lossy(sent.body);
        let (key, destination) = if sent.topic {
            (durable.clone(), Destination::topic(TOPIC))
        } else {
            (StoreKey::Queue(QUEUE.into()), Destination::queue(QUEUE))
        };
        assert_eq!(s.key, key, "{what}");
        assert_eq!(m.destination, destination, "{what}");
        assert_eq!(
            (s.priority, s.expires, s.deliveries),
            (sent.priority, sent.expires, sent.deliveries),
            "{what}"
        );
        assert_eq!(
            (m.seq, m.priority, m.expires, m.persistent),
            (s.seq, sent.priority, sent.expires, true),
            "{what}"
        );
        assert!(m.id.prefix.starts_with("ID:fixture-"), "{what}: {}", m.id);
        assert!(m.timestamp > 1_700_000_000_000, "{what}");
        let got: Vec<(&str, &Value)> = m.properties.iter().collect();
        assert_eq!(got.len(), sent.properties.len(), "{what}: {got:?}");
        for ((name, value), (want_name, want_value)) in got.iter().zip(sent.properties) {
            assert_eq!(name, want_name, "{what}");
            let text = value
                .as_str()
                .unwrap_or_else(|| panic!("{what}: {name} is not a string: {value:?}"));
            assert!(matches(want_value, text), "{what}: {name}: {text:?}");
        }
    }
    max_seq
}
