//! Dispatch to selective consumers: one queue's dispatcher, driven in
//! process (no sockets, no store), with selectors parsed as a STOMP
//! subscription's are. Properties are strings, as STOMP headers arrive.
//!
//! - `drain10k/*`: a queue of 10,000 messages whose `shard` cycles 0..9,
//!   drained by 10 consumers each selecting `shard = 'k'` (prefetch 100,
//!   everything acknowledged after each dispatch); against the same drain
//!   by 10 and by 1 consumer(s) without a selector. Throughput is per
//!   message.
//! - `head_of_line/arrive/N`: N messages nobody selects sit at the head of
//!   the queue; one message the consumer selects arrives: push, dispatch,
//!   delivery, ack. The consumer's cursor resumes after what it judged, so
//!   this should not grow with N. `plain/arrive` is the same round trip
//!   for a consumer without a selector on an empty queue.
//! - `head_of_line/subscribe/N`: the one-off cost of a selective consumer
//!   arriving at such a queue and finding the match behind N others (it
//!   judges each once: grows with N).

use std::hint::black_box;

use criterion::{BatchSize, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use halyard_broker::bench_support::{QueueDispatcher, message};
use halyard_broker::model::Value;

const SHARDS: u64 = 10;
const DEPTH: u64 = 10_000;
const PREFETCH: u32 = 100;

fn shard(seq: u64, value: &str) -> std::sync::Arc<halyard_broker::model::Message> {
    message(
        seq,
        vec![("shard".to_owned(), Value::String(value.to_owned()))],
    )
}

/// A queue of `DEPTH` messages, shard = seq mod 10, and its consumers.
fn filled(selective: bool, consumers: u64) -> QueueDispatcher {
    let mut q = QueueDispatcher::new();
    for seq in 1..=DEPTH {
        q.push(shard(seq, &(seq % SHARDS).to_string()));
    }
    for k in 0..consumers {
        let selector = selective.then(|| format!("shard = '{k}'"));
        q.add_consumer(PREFETCH, selector.as_deref())
            .expect("valid selector");
    }
    q
}

/// Dispatches and acknowledges until every message is delivered.
fn drain(q: &mut QueueDispatcher, consumers: usize) -> u64 {
    let mut delivered = 0;
    let mut rounds = 0;
    while delivered < DEPTH {
        q.dispatch();
        for c in 0..consumers {
            delivered += q.ack_delivered(c).0 as u64;
        }
        rounds += 1;
        assert!(rounds <= DEPTH, "the queue does not drain");
    }
    assert_eq!(q.ready(), 0);
    delivered
}

fn drain_benches(c: &mut Criterion) {
    let mut g = c.benchmark_group("drain10k");
    g.throughput(Throughput::Elements(DEPTH));
    for (label, selective, consumers) in [
        ("selective_10x1of10", true, 10),
        ("plain_10", false, 10),
        ("plain_1", false, 1),
    ] {
        g.bench_function(label, |b| {
            b.iter_batched(
                || filled(selective, consumers),
                |mut q| black_box(drain(&mut q, consumers as usize)),
                BatchSize::LargeInput,
            )
        });
    }
    g.finish();
}

/// `depth` messages nobody selects, and a consumer that selects only
/// `shard = 'hit'`, which has already judged them all.
fn blocked(depth: u64) -> QueueDispatcher {
    let mut q = QueueDispatcher::new();
    for seq in 1..=depth {
        q.push(shard(seq, "miss"));
    }
    q.add_consumer(1000, Some("shard = 'hit'"))
        .expect("valid selector");
    q
}

fn head_of_line_benches(c: &mut Criterion) {
    let mut g = c.benchmark_group("head_of_line");
    for depth in [1_000u64, 10_000, 100_000] {
        let mut q = blocked(depth);
        q.dispatch();
        assert_eq!(q.ack_delivered(0).0, 0);
        let mut seq = depth;
        g.bench_with_input(BenchmarkId::new("arrive", depth), &depth, |b, _| {
            b.iter(|| {
                seq += 1;
                q.push(shard(seq, "hit"));
                q.dispatch();
                let (n, last) = q.ack_delivered(0);
                assert_eq!((n, last), (1, Some(seq)));
            })
        });
        assert_eq!(q.ready() as u64, depth, "the others stay queued");
    }
    let mut q = QueueDispatcher::new();
    q.add_consumer(1000, None).expect("no selector");
    let mut seq = 0;
    g.bench_function("plain/arrive", |b| {
        b.iter(|| {
            seq += 1;
            q.push(shard(seq, "hit"));
            q.dispatch();
            assert_eq!(q.ack_delivered(0), (1, Some(seq)));
        })
    });
    for depth in [1_000u64, 10_000, 100_000] {
        g.bench_with_input(BenchmarkId::new("subscribe", depth), &depth, |b, &depth| {
            b.iter_batched(
                || {
                    let mut q = QueueDispatcher::new();
                    for seq in 1..=depth {
                        q.push(shard(seq, "miss"));
                    }
                    q.push(shard(depth + 1, "hit"));
                    q
                },
                |mut q| {
                    q.add_consumer(1000, Some("shard = 'hit'"))
                        .expect("valid selector");
                    q.dispatch();
                    assert_eq!(q.ack_delivered(0), (1, Some(depth + 1)));
                    q
                },
                BatchSize::LargeInput,
            )
        });
    }
    g.finish();
}

criterion_group!(benches, drain_benches, head_of_line_benches);
criterion_main!(benches);
