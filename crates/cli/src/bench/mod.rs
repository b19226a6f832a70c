//! `halyard bench`: a load generator for any STOMP 1.2 broker.
//!
//! Producers and consumers each get their own connection. Every message
//! carries the wall-clock time it was sent (`bench-sent-us`), so consumers
//! measure end-to-end latency even for messages produced by another run
//! (the drain scenario); messages sent during the warm-up are marked and
//! left out of every figure.

mod consumer;
mod producer;
mod report;
mod stats;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use halyard_client::{AckMode, Client};
use tokio::sync::watch;

use report::Report;

/// Header holding the send time, in µs since the Unix epoch.
const SENT_HEADER: &str = "bench-sent-us";
/// Header naming each message uniquely within a run: `RUN-PRODUCER-SEQ`,
/// so consumers can count a message delivered twice (after a failover).
const ID_HEADER: &str = "bench-id";
/// Header marking warm-up messages.
const WARMUP_HEADER: &str = "bench-warmup";
/// Header (a message property) that `--selectors N` sets to the message's
/// shard, and that each consumer's selector names.
const SHARD_HEADER: &str = "shard";
/// Most shards `--selectors` takes: one consumer connection each.
const MAX_SELECTORS: u32 = 10_000;

/// Measures throughput and latency of a STOMP broker.
///
/// Examples:
///   halyard bench --producers 16 --persistent --receipt-every 1 --duration 20
///   halyard bench --producers 0 --consumers 1 --count 100000 --ack client-individual
///   halyard bench -d /topic/prices --consumers 10 --count 50000
///   halyard bench --producers 4 --consumers 10 --selectors 10 --persistent --duration 15
#[derive(clap::Args)]
#[command(verbatim_doc_comment)]
pub(crate) struct Args {
    /// Broker URL, e.g. stomp://127.0.0.1:61613, or a failover list that
    /// reconnects (and resends what was not confirmed) when a broker fails:
    /// failover:(stomp://a:61613,stomp://b:61613)?maxReconnectAttempts=10
    /// (ActiveMQ's options; see docs/CLIENT.md).
    #[arg(long, env = "HALYARD_URL", default_value = "stomp://127.0.0.1:61613")]
    url: String,
    /// Destination: a /queue/NAME (consumers compete) or a /topic/NAME
    /// (every consumer gets every message).
    /// ActiveMQ's queue://NAME and topic://NAME are accepted too.
    #[arg(long, short = 'd', default_value = "/queue/halyard.bench", value_parser = crate::connect::destination)]
    destination: String,
    /// Producer connections (0: only consume, e.g. drain a filled queue).
    #[arg(long, default_value_t = 1)]
    producers: u32,
    /// Consumer connections (0: only produce, e.g. fill a queue).
    #[arg(long, default_value_t = 1)]
    consumers: u32,
    /// Body size in bytes.
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u32).range(0..=10_485_760))]
    size: u32,
    /// Messages to send in all (or, with --producers 0, to receive)
    /// [default: 10000 unless --duration is given].
    #[arg(long, short = 'n', conflicts_with = "duration")]
    count: Option<u64>,
    /// Send for this many seconds instead of a fixed count.
    #[arg(long, value_name = "SECONDS")]
    duration: Option<f64>,
    /// Send persistent messages.
    #[arg(long)]
    persistent: bool,
    /// Ask for a receipt on every Nth message and wait for it before
    /// sending more; 1 makes every send synchronous, 0 asks for none.
    /// Across a failover (a failover: URL) the client resends only what it
    /// had asked a receipt for and not yet got: a send without a receipt
    /// (the N-1 between receipts, or all with 0) is at-most-once and may
    /// be lost when a broker dies; persistent sends with receipts are
    /// at-least-once, and the broker drops the resent copies it had already
    /// stored. The report counts duplicates and redeliveries the consumers
    /// saw.
    #[arg(long, default_value_t = 0, value_name = "N")]
    receipt_every: u64,
    /// A header on every message sent, as NAME:VALUE; repeatable (e.g.
    /// `--header AMQ_SCHEDULED_DELAY:3600000` to fill the scheduler).
    #[arg(long = "header", value_name = "NAME:VALUE")]
    headers: Vec<String>,
    /// Consumers' acknowledgement mode: auto, client or client-individual.
    #[arg(long, default_value = "auto")]
    ack: AckMode,
    /// Consumers' prefetch (the broker's default if not given).
    #[arg(long)]
    prefetch: Option<u32>,
    /// Seconds of traffic before measuring starts (lets a JIT warm up).
    #[arg(long, default_value_t = 0.0, value_name = "SECONDS")]
    warmup: f64,
    /// After the producers finish, how long consumers wait for the
    /// remaining messages before counting them missing.
    #[arg(long, default_value_t = 10.0, value_name = "SECONDS")]
    drain_timeout: f64,
    /// Selective consumers: every message carries a header (a property)
    /// `shard` = i mod N, i counting each producer's messages, and consumer k
    /// subscribes with the selector `shard = 'k'`, so each of the N
    /// consumers takes 1/N of the messages and nothing is for two of
    /// them. Needs --consumers N (one consumer per shard; with
    /// --consumers 0 producers only tag their messages) and a /queue/ or
    /// /topic/ destination. The string literal matches STOMP's string
    /// headers on every broker, whether or not it converts strings to
    /// numbers.
    #[arg(long, value_name = "N")]
    selectors: Option<u32>,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
    /// No progress bar.
    #[arg(long)]
    no_progress: bool,
}

/// How the run ends.
#[derive(Debug, Clone, Copy)]
enum End {
    Count(u64),
    Duration(Duration),
}

/// The validated run.
#[derive(Debug, Clone)]
struct Plan {
    url: String,
    destination: String,
    producers: u32,
    consumers: u32,
    size: usize,
    end: End,
    persistent: bool,
    receipt_every: u64,
    headers: Vec<(String, String)>,
    ack: AckMode,
    prefetch: Option<u32>,
    warmup: Duration,
    drain_timeout: Duration,
    topic: bool,
    /// Shards of `--selectors`: consumer k selects `shard = 'k'`.
    selectors: Option<u32>,
    /// This run's id (its start, µs since the epoch) in `bench-id`, so
    /// messages left by another run are not taken for duplicates.
    run_id: u64,
}

fn seconds(name: &str, v: f64, allow_zero: bool) -> anyhow::Result<Duration> {
    if !v.is_finite() || v < 0.0 || (!allow_zero && v == 0.0) || v > 1e7 {
        bail!(
            "--{name} must be a {}number of seconds, got {v}",
            if allow_zero { "" } else { "positive " }
        );
    }
    Ok(Duration::from_secs_f64(v))
}

impl Plan {
    fn from_args(a: &Args) -> anyhow::Result<Plan> {
        if a.producers == 0 && a.consumers == 0 {
            bail!("nothing to do: --producers and --consumers are both 0");
        }
        let topic = a.destination.starts_with("/topic/");
        let end = match (a.count, a.duration) {
            (Some(0), _) => bail!("--count must be at least 1"),
            (Some(n), _) => End::Count(n),
            (None, Some(d)) => End::Duration(seconds("duration", d, false)?),
            (None, None) => End::Count(10_000),
        };
        if a.producers == 0 {
            if topic {
                bail!("--producers 0 (drain) needs a queue: a topic keeps nothing to drain");
            }
            if !matches!(end, End::Count(_)) || a.count.is_none() {
                bail!("--producers 0 (drain) needs --count: how many messages to receive");
            }
        }
        if a.prefetch == Some(0) {
            bail!("--prefetch must be at least 1");
        }
        let headers = a
            .headers
            .iter()
            .map(|h| match h.split_once(':') {
                Some((name, value)) if !name.is_empty() => Ok((name.to_owned(), value.to_owned())),
                _ => bail!("--header must be NAME:VALUE, got '{h}'"),
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        if let Some(n) = a.selectors {
            if n == 0 || n > MAX_SELECTORS {
                bail!("--selectors must be between 1 and {MAX_SELECTORS}, got {n}");
            }
            if !(topic || a.destination.starts_with("/queue/")) {
                bail!(
                    "--selectors needs a /queue/NAME or /topic/NAME destination, got {}",
                    a.destination
                );
            }
            if a.consumers != n && a.consumers != 0 {
                bail!(
                    "--selectors {n} needs --consumers {n} (consumer k selects shard k), got --consumers {}",
                    a.consumers
                );
            }
        }
        Ok(Plan {
            url: a.url.clone(),
            destination: a.destination.clone(),
            producers: a.producers,
            consumers: a.consumers,
            size: a.size as usize,
            end,
            persistent: a.persistent,
            receipt_every: a.receipt_every,
            headers,
            ack: a.ack,
            prefetch: a.prefetch,
            warmup: seconds("warmup", a.warmup, true)?,
            drain_timeout: seconds("drain-timeout", a.drain_timeout, true)?,
            topic,
            selectors: a.selectors,
            run_id: epoch_us(),
        })
    }
}

/// The run's counters, which every producer and consumer task updates and
/// the stop conditions and the progress bar read.
struct RunCounters {
    /// When measuring starts (after the warm-up).
    measure_from: Instant,
    /// Measured messages claimed by producers (count mode).
    claimed: AtomicU64,
    /// Measured messages sent.
    sent: AtomicU64,
    /// Measured deliveries received (for a topic, each subscriber's).
    received: AtomicU64,
    /// Deliveries expected in all, once known.
    expected: watch::Sender<Option<u64>>,
    /// Set once every expected delivery has arrived.
    all_received: watch::Sender<bool>,
    /// Deliveries of a message (for a topic: to a subscriber) already
    /// received: not counted in `received`.
    duplicates: AtomicU64,
    /// Deliveries flagged redelivered by the broker (e.g. unacknowledged
    /// when a consumer's connection failed over).
    redelivered: AtomicU64,
    /// Which messages of this run were received so far. Locked only for
    /// one insert, never across an await.
    seen: std::sync::Mutex<Seen>,
}

/// Messages per producer whose duplicates are counted (2^30: a 128 MiB
/// bitmap at most).
const MAX_TRACKED_SEQ: u64 = 1 << 30;

/// A bit per message sequence number, per (subscriber for a topic else 0,
/// producer): a long run at full speed costs an eighth of a byte per
/// message, where a set of ids would cost tens of bytes.
#[derive(Default)]
struct Seen(std::collections::HashMap<(u32, u32), Vec<u64>>);

impl Seen {
    /// Records a delivery; false if it had been received before. A
    /// sequence number beyond any real run's (a forged `bench-id`) is not
    /// tracked, so it cannot make the map huge.
    fn insert(&mut self, subscriber: u32, producer: u32, seq: u64) -> bool {
        if seq >= MAX_TRACKED_SEQ {
            return true;
        }
        let bits = self.0.entry((subscriber, producer)).or_default();
        let (word, bit) = ((seq / 64) as usize, seq % 64);
        if bits.len() <= word {
            bits.resize(word + 1, 0);
        }
        let fresh = bits[word] & (1 << bit) == 0;
        bits[word] |= 1 << bit;
        fresh
    }
}

impl RunCounters {
    /// Marks the run complete if everything expected has arrived.
    fn check_done(&self) {
        if let Some(expected) = *self.expected.borrow()
            && self.received.load(Ordering::Relaxed) >= expected
        {
            self.all_received.send_replace(true);
        }
    }
}

/// Microseconds since the Unix epoch.
fn epoch_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

async fn connect(url: &str, what: &str) -> anyhow::Result<Client> {
    crate::connect::connect(url, Some(what))
        .await
        .with_context(|| format!("{what} could not connect"))
}

pub(crate) async fn run(args: Args) -> anyhow::Result<()> {
    let plan = Plan::from_args(&args)?;
    let started_wall = epoch_us();

    // Connect and subscribe everyone first, so set-up time is not measured
    // and every topic subscriber exists before the first message.
    let mut consumers = Vec::new();
    for i in 0..plan.consumers {
        consumers.push(consumer::Consumer::connect(&plan, i).await?);
    }
    let mut producers = Vec::new();
    for i in 0..plan.producers {
        producers.push(connect(&plan.url, &format!("producer {i}")).await?);
    }

    let start = Instant::now();
    let (expected, _) = watch::channel(match (plan.producers, plan.end) {
        (0, End::Count(n)) => Some(n),
        _ => None,
    });
    let (all_received, _) = watch::channel(false);
    let counters = Arc::new(RunCounters {
        measure_from: start + plan.warmup,
        claimed: AtomicU64::new(0),
        sent: AtomicU64::new(0),
        received: AtomicU64::new(0),
        expected,
        all_received,
        duplicates: AtomicU64::new(0),
        redelivered: AtomicU64::new(0),
        seen: std::sync::Mutex::new(Seen::default()),
    });
    let progress =
        (!args.json && !args.no_progress).then(|| report::Progress::start(&plan, counters.clone()));

    let consumer_tasks: Vec<_> = consumers
        .into_iter()
        .map(|c| tokio::spawn(c.run(plan.clone(), counters.clone())))
        .collect();
    let producer_tasks: Vec<_> = producers
        .into_iter()
        .enumerate()
        .map(|(i, client)| {
            tokio::spawn(producer::run(
                client,
                i as u32,
                plan.clone(),
                counters.clone(),
            ))
        })
        .collect();

    let mut report = Report::new(&plan, started_wall);
    for t in producer_tasks {
        report.add_producer(t.await.context("producer task failed")?);
    }
    if plan.producers > 0 {
        let sent = counters.sent.load(Ordering::Relaxed);
        // With selectors, each message is for exactly one subscriber.
        let per_message = if plan.topic && plan.selectors.is_none() {
            u64::from(plan.consumers)
        } else {
            1
        };
        counters.expected.send_replace(Some(if plan.consumers == 0 {
            0
        } else {
            sent * per_message
        }));
        counters.check_done();
    }
    for t in consumer_tasks {
        report.add_consumer(t.await.context("consumer task failed")?);
    }
    if let Some(p) = progress {
        p.finish();
    }
    report.finish(&counters);
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print!("{report}");
    }
    if !report.errors.is_empty() {
        bail!("{} error(s): {}", report.errors.len(), report.errors[0]);
    }
    if report.missing > 0 {
        bail!("{} message(s) missing", report.missing);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::Seen;

    #[test]
    fn seen_tells_a_repeat_from_a_first_delivery() {
        let mut s = Seen::default();
        assert!(s.insert(0, 0, 1));
        assert!(s.insert(0, 1, 1));
        assert!(s.insert(1, 0, 1));
        assert!(!s.insert(0, 0, 1));
        assert!(s.insert(0, 0, 1000));
        assert!(!s.insert(0, 0, 1000));
        assert!(s.insert(0, 0, 63) && s.insert(0, 0, 64));
        assert!(s.insert(0, 0, u64::MAX) && s.insert(0, 0, u64::MAX));
    }
}
