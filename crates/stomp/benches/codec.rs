//! Micro-benchmarks of the STOMP codec: the sans-I/O [`Parser`], `encode_frame`
//! and the broker's hot path, a MESSAGE written header by header with
//! [`FrameWriter`].
//!
//! Run with `cargo bench -p halyard-stomp --bench codec` (add a filter such as
//! `-- parse/` to run a subset). Each benchmark reports frames/s and, where the
//! size matters, bytes/s of wire data (`Throughput::ElementsAndBytes`).
//!
//! How the parse benchmarks are measured:
//! - a single frame is parsed out of a read buffer prepared outside the timed
//!   region (`iter_batched_ref`); the parsed frame is dropped inside it;
//! - a stream is appended to a reused read buffer inside the timed region,
//!   either at once or in TCP-segment-sized chunks, so the two stream variants
//!   include the same copy of the input and differ only in how it arrives.
//!
//! The encode benchmarks write into a reused output buffer that is cleared
//! before each iteration, as the broker's write buffer is drained.

use std::hint::black_box;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use criterion::{BatchSize, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use halyard_stomp::{Command, Frame, FrameWriter, Item, Limits, Parser, Version, encode_frame};

/// The version every benchmark negotiates: 1.2 has the full escaping rules.
const V: Version = Version::V1_2;

/// Body sizes of the single-frame SEND benchmarks.
const BODY_SIZES: [(usize, &str); 4] = [
    (0, "0B"),
    (100, "100B"),
    (1024, "1KiB"),
    (64 * 1024, "64KiB"),
];

/// Frames in the stream benchmarks (each with a 1 KiB body).
const STREAM_FRAMES: usize = 1000;

/// A full-sized TCP segment on a 1500-byte MTU Ethernet link.
const TCP_SEGMENT: usize = 1460;

/// Heart-beats in the heart-beat stream.
const HEARTBEATS: usize = 1000;

/// A JSON-looking body of `len` bytes (no NUL, so it is valid either way).
fn body(len: usize) -> Bytes {
    const PATTERN: &[u8] = br#"{"order":4711,"sku":"HX-0042","qty":3,"price":"19.99"},"#;
    PATTERN
        .iter()
        .copied()
        .cycle()
        .take(len)
        .collect::<Vec<u8>>()
        .into()
}

/// A typical SEND from a client: destination, persistent, receipt,
/// content-type and three application headers.
fn send_frame(body_len: usize) -> Frame {
    Frame::new(Command::Send)
        .header("destination", "/queue/orders.eu-west")
        .header("persistent", "true")
        .header("receipt", "receipt-4711")
        .header("content-type", "application/json")
        .header("x-correlation-id", "9f2c4e1a-5b7d-4c3e-8a9f-0d1e2f3a4b5c")
        .header("x-tenant", "acme")
        .header(
            "x-trace-id",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )
        .body(body(body_len))
}

/// A SEND whose header names and values need 1.2 escaping (`\c`, `\\`,
/// `\n`, `\r`) in most headers, with a 100-byte body.
fn escaped_frame() -> Frame {
    Frame::new(Command::Send)
        .header("destination", "/queue/orders:eu-west")
        .header("persistent", "true")
        .header("receipt", "receipt:4711")
        .header("content-type", "text/plain; charset=utf-8")
        .header("x-path", "C:\\Users\\halyard\\inbox\\new")
        .header("x-note", "line one\nline two\r\nline three")
        .header("x:ns:key", "a:b:c")
        .header("x-url", "http://broker.invalid:61613/a?b=c")
        .body(body(100))
}

/// `frame` as it appears on the wire.
fn wire(frame: &Frame) -> Vec<u8> {
    let mut out = BytesMut::new();
    encode_frame(frame, V, &mut out);
    out.to_vec()
}

fn parser() -> Parser {
    let mut p = Parser::new(Limits::default());
    p.set_version(V);
    p
}

fn parse_frame(parser: &mut Parser, buf: &mut BytesMut) -> Frame {
    match parser.parse(buf) {
        Ok(Some(Item::Frame(frame))) => frame,
        other => panic!("expected a frame, got {other:?}"),
    }
}

/// Parses every item in `buf`, returning how many there were.
fn parse_all(parser: &mut Parser, buf: &mut BytesMut) -> usize {
    let mut n = 0;
    while let Some(item) = parser.parse(buf).expect("benchmark input is valid") {
        black_box(item);
        n += 1;
    }
    n
}

/// Checks that `wire` parses back to `frame` (plus `content-length`), so the
/// benchmarks measure the path they claim to.
fn check_round_trip(frame: &Frame, wire: &[u8]) {
    let got = parse_frame(&mut parser(), &mut BytesMut::from(wire));
    assert_eq!(got.command, frame.command);
    assert_eq!(got.body, frame.body);
    for (k, v) in frame.headers.iter() {
        assert_eq!(got.headers.get(k), Some(v), "header {k:?}");
    }
}

fn elements_and_bytes(elements: usize, bytes: usize) -> Throughput {
    Throughput::ElementsAndBytes {
        elements: elements as u64,
        bytes: bytes as u64,
    }
}

fn bench_parse(c: &mut Criterion) {
    let mut group = c.benchmark_group("parse");

    for (len, label) in BODY_SIZES {
        let frame = send_frame(len);
        let input = wire(&frame);
        check_round_trip(&frame, &input);
        // Batches of 64 KiB inputs must stay small in memory.
        let batch = if len > 4096 {
            BatchSize::LargeInput
        } else {
            BatchSize::SmallInput
        };
        let mut p = parser();
        group.throughput(elements_and_bytes(1, input.len()));
        group.bench_function(BenchmarkId::new("send", label), |b| {
            b.iter_batched_ref(
                || BytesMut::from(&input[..]),
                |buf| drop(black_box(parse_frame(&mut p, buf))),
                batch,
            )
        });
    }

    let frame = escaped_frame();
    let input = wire(&frame);
    assert!(input.contains(&b'\\'), "the escaped frame has no escapes");
    check_round_trip(&frame, &input);
    let mut p = parser();
    group.throughput(elements_and_bytes(1, input.len()));
    group.bench_function(BenchmarkId::new("send_escaped_1.2", "100B"), |b| {
        b.iter_batched_ref(
            || BytesMut::from(&input[..]),
            |buf| drop(black_box(parse_frame(&mut p, buf))),
            BatchSize::SmallInput,
        )
    });

    let heartbeats = vec![b'\n'; HEARTBEATS];
    let mut p = parser();
    group.throughput(Throughput::Elements(HEARTBEATS as u64));
    group.bench_function(BenchmarkId::new("heartbeats", HEARTBEATS), |b| {
        b.iter_batched_ref(
            || BytesMut::from(&heartbeats[..]),
            |buf| assert_eq!(parse_all(&mut p, buf), HEARTBEATS),
            BatchSize::SmallInput,
        )
    });

    group.finish();

    // About a millisecond per iteration: fewer samples keep the run short.
    let mut group = c.benchmark_group("parse_stream");
    group.sample_size(40);
    let stream = wire(&send_frame(1024)).repeat(STREAM_FRAMES);
    group.throughput(elements_and_bytes(STREAM_FRAMES, stream.len()));

    let mut p = parser();
    let mut buf = BytesMut::with_capacity(stream.len());
    group.bench_function(BenchmarkId::new("1000x1KiB", "at_once"), |b| {
        b.iter(|| {
            buf.extend_from_slice(&stream);
            assert_eq!(parse_all(&mut p, &mut buf), STREAM_FRAMES);
        })
    });

    // An 8 KiB read buffer, like tokio-util's `FramedRead`; a partial frame
    // left at the front is moved down when the buffer runs out of room.
    let mut p = parser();
    let mut buf = BytesMut::with_capacity(8 * 1024);
    group.bench_function(
        BenchmarkId::new("1000x1KiB", format!("chunks_{TCP_SEGMENT}")),
        |b| {
            b.iter(|| {
                let mut n = 0;
                for chunk in stream.chunks(TCP_SEGMENT) {
                    buf.extend_from_slice(chunk);
                    n += parse_all(&mut p, &mut buf);
                }
                assert_eq!(n, STREAM_FRAMES);
                assert!(buf.is_empty());
            })
        },
    );

    group.finish();
}

fn bench_encode(c: &mut Criterion) {
    let mut group = c.benchmark_group("encode");
    let mut out = BytesMut::new();

    let frames = BODY_SIZES
        .iter()
        .map(|&(len, label)| (BenchmarkId::new("send", label), send_frame(len)))
        .chain([(
            BenchmarkId::new("send_escaped_1.2", "100B"),
            escaped_frame(),
        )]);
    for (id, frame) in frames {
        group.throughput(elements_and_bytes(1, wire(&frame).len()));
        group.bench_function(id, |b| {
            b.iter(|| {
                out.clear();
                encode_frame(black_box(&frame), V, &mut out);
                black_box(&out);
            })
        });
    }

    let frame = send_frame(1024);
    group.throughput(elements_and_bytes(
        STREAM_FRAMES,
        STREAM_FRAMES * wire(&frame).len(),
    ));
    group.bench_function(BenchmarkId::new("stream", "1000x1KiB"), |b| {
        b.iter(|| {
            out.clear();
            for _ in 0..STREAM_FRAMES {
                encode_frame(black_box(&frame), V, &mut out);
            }
            black_box(&out);
        })
    });

    // The broker's delivery path: a MESSAGE for a subscriber, written straight
    // into the connection's output buffer without building a `Frame`.
    let payload = body(1024);
    let user_headers = [
        ("persistent", "true"),
        ("content-type", "application/json"),
        ("x-correlation-id", "9f2c4e1a-5b7d-4c3e-8a9f-0d1e2f3a4b5c"),
        ("x-tenant", "acme"),
        (
            "x-trace-id",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ),
    ];
    let write_message = |out: &mut BytesMut, seq: u64| {
        let mut w = FrameWriter::new(out, Command::Message, V);
        w.header("subscription", "sub-0")
            .header_parts("message-id", "ID:halyard-1-", seq)
            .header("destination", "/queue/orders.eu-west")
            .header_u64("ack", seq)
            .header_u64("timestamp", 1_767_225_600_000 + seq);
        for (k, v) in user_headers {
            w.header(k, v);
        }
        w.finish(&payload);
    };
    let mut seq: u64 = 1_000_000;
    out.clear();
    write_message(&mut out, seq);
    let message = parse_frame(&mut parser(), &mut out.clone());
    assert_eq!(message.command, Command::Message);
    assert_eq!(
        message.headers.get("message-id"),
        Some("ID:halyard-1-1000000")
    );
    assert_eq!(
        message.headers.len(),
        11,
        "5 broker + 5 user + content-length"
    );
    assert_eq!(message.body, payload);
    group.throughput(elements_and_bytes(1, out.len()));
    group.bench_function(BenchmarkId::new("message_writer", "1KiB"), |b| {
        b.iter(|| {
            out.clear();
            seq += 1;
            write_message(&mut out, black_box(seq));
            black_box(&out);
        })
    });

    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = bench_parse, bench_encode
}
criterion_main!(benches);
